//! `rendezvous flood`: one hostile load against a rendezvous server, with a legitimate client
//! registering and discovering alongside. For `benches/flood.sh`; loopback servers only.
//!
//! Kinds: `idle` (many connections that never ask anything), `handshake` (TCP connections from
//! `--source` that never start their handshake, opened again whenever the server closes them),
//! `stall` (streams that announce the largest frame and then send nothing more), `churn`
//! (streams opened and reset in a loop), `register` (fresh identities registering maximal records
//! in many namespaces), `discover` (DISCOVER without a cookie, page size 1000, in a tight loop).
//! Every kind is bounded by `--count` and stops after `--seconds`.
//!
//! Beside its long-lived connection, the legitimate client makes a new connection every round
//! during the `idle` and `handshake` floods (a new identity that connects, registers and finds
//! itself), since those floods aim at newcomers.
//!
//! Prints one JSON object: the kind, the flood's own counters, the server's peak RSS and VmData
//! and its CPU seconds during the flood (from `/proc/PID`), and the legitimate client's
//! requests, failures and worst latency, and whether everything it registered before the flood
//! was still there after it.

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::AsyncWriteExt;
use libp2p::{identity::Keypair, multiaddr::Protocol, Multiaddr, PeerId};
use rendezvous_discovery::{
    codec::{DiscoverPage, Message, NewRegistration},
    Namespace, RecordFormat, SignedRecord,
};
use serde_json::json;

use crate::{
    common::{CliError, CliResult},
    load::Client,
    output::outln,
};

/// Most connections or identities one flood uses.
const MAX_COUNT: usize = 20_000;

/// Longest flood.
const MAX_SECONDS: u64 = 600;

/// How long connecting, and one request, may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Namespaces the legitimate client registers in before the flood and checks after it.
const LEGIT_NAMESPACES: usize = 10;

/// Flags of `rendezvous flood`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's address, with its `/p2p/` peer id (127.0.0.1 only).
    #[arg(long, value_name = "MULTIADDR")]
    server: Multiaddr,
    /// The server's process id, to read its memory and CPU from /proc.
    #[arg(long, value_name = "PID")]
    server_pid: u32,
    /// idle, handshake, stall, churn, register or discover.
    #[arg(long, value_name = "KIND", value_parser = ["idle", "handshake", "stall", "churn", "register", "discover"])]
    kind: String,
    /// The address the `handshake` flood connects from (a 127.0.0.0/8 address; the legitimate
    /// client connects from 127.0.0.1).
    #[arg(long, value_name = "IP", default_value = "127.0.0.2")]
    source: std::net::Ipv4Addr,
    /// Connections (or identities) the flood uses.
    #[arg(long, value_name = "N", default_value_t = 500)]
    count: usize,
    /// How long the flood lasts.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    seconds: u64,
}

/// Requests (and streams) the legitimate client and each hostile one may have in flight.
const STREAMS_PER_CLIENT: usize = 8;

/// A client with its own identity and connection: `rendezvous load`'s, with the flood's timeout.
async fn connect(server: Multiaddr, server_peer: PeerId) -> Result<Client, String> {
    Client::connect(server, server_peer, STREAMS_PER_CLIENT, REQUEST_TIMEOUT).await
}

fn register(namespace: &Namespace, record: &SignedRecord) -> Message {
    Message::Register(NewRegistration {
        namespace: namespace.clone(),
        record: record.clone(),
        ttl: None,
    })
}

fn discover(namespace: Option<Namespace>) -> Message {
    Message::Discover {
        namespace,
        cookie: None,
        limit: Some(1000),
    }
}

/// A record as large as the server's defaults allow: 64 addresses of about 120 bytes.
fn maximal_record(key: &Keypair) -> SignedRecord {
    let addresses = (0..64)
        .map(|i| {
            format!("/dns4/{i:03}-{}.example.com/tcp/4001", "x".repeat(100))
                .parse()
                .expect("a valid multiaddr")
        })
        .collect();
    SignedRecord::new(key, addresses, RecordFormat::Standard).expect("ed25519 signs")
}

/// The server's memory and CPU, from /proc.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    vm_data_kib: u64,
    cpu_ticks: u64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Usage {
        rss_kib: field("VmRSS:"),
        vm_data_kib: field("VmData:"),
        cpu_ticks: ticks(11) + ticks(12),
    }
}

/// The legitimate client's figures.
#[derive(Debug, Default)]
struct Legit {
    requests: u64,
    failures: u64,
    worst: Duration,
    first_failure: Option<String>,
    /// Rounds of a newcomer: connect, register, find itself.
    rounds: u64,
    round_failures: u64,
    round_worst: Duration,
}

/// A newcomer's round: a new identity connects, registers in `namespace` and finds itself
/// there. Returns what went wrong, if anything.
async fn newcomer(
    server: Multiaddr,
    server_peer: PeerId,
    namespace: &Namespace,
) -> Result<(), String> {
    let client = connect(server, server_peer).await?;
    let record = SignedRecord::new(
        &client.key,
        vec!["/ip4/127.0.0.1/tcp/1".parse().expect("valid")],
        RecordFormat::Standard,
    )
    .expect("ed25519 signs");
    match client.request(&register(namespace, &record)).await {
        Ok(Message::RegisterResponse(Ok(_))) => {}
        other => return Err(format!("register: {other:?}")),
    }
    match client.request(&discover(Some(namespace.clone()))).await {
        Ok(Message::DiscoverResponse(Ok(DiscoverPage { registrations, .. })))
            if registrations
                .iter()
                .any(|r| r.record.peer_id() == client.key.public().to_peer_id()) =>
        {
            Ok(())
        }
        other => Err(format!("discover: {other:?}")),
    }
}

pub async fn run(args: Args) -> CliResult {
    let Some(Protocol::P2p(server_peer)) = args.server.iter().last() else {
        return Err(CliError::Usage(format!(
            "--server {}: expected an address ending in /p2p/<peer id>",
            args.server
        )));
    };
    if !args
        .server
        .iter()
        .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback()))
    {
        return Err(CliError::Usage(format!(
            "--server {}: expected a 127.0.0.1 address (floods stay on this machine)",
            args.server
        )));
    }
    if args.count == 0 || args.count > MAX_COUNT || args.seconds == 0 || args.seconds > MAX_SECONDS
    {
        return Err(CliError::Usage(format!(
            "expected --count 1..={MAX_COUNT} and --seconds 1..={MAX_SECONDS}"
        )));
    }
    let server = args.server.clone();
    let legit = connect(server.clone(), server_peer)
        .await
        .map_err(|e| CliError::Failed(format!("the legitimate client cannot connect: {e}")))?;
    let legit_record = SignedRecord::new(
        &legit.key,
        vec!["/ip4/127.0.0.1/tcp/1".parse().expect("valid")],
        RecordFormat::Standard,
    )
    .expect("ed25519 signs");
    let namespaces: Vec<Namespace> = (0..LEGIT_NAMESPACES)
        .map(|i| Namespace::new(format!("legit-{i}")).expect("short"))
        .collect();
    for namespace in &namespaces {
        match legit.request(&register(namespace, &legit_record)).await {
            Ok(Message::RegisterResponse(Ok(_))) => {}
            other => {
                return Err(CliError::Failed(format!(
                    "the legitimate client cannot register before the flood: {other:?}"
                )))
            }
        }
    }
    let before = usage(args.server_pid);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let flooded = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let flood = tokio::spawn(flood(
        Target {
            kind: args.kind.clone(),
            server: server.clone(),
            server_peer,
            source: args.source,
        },
        args.count,
        deadline,
        flooded.clone(),
        refused.clone(),
    ));
    let newcomers = matches!(args.kind.as_str(), "idle" | "handshake");
    let newcomer_namespace = Namespace::new("legit-newcomers").expect("short");
    // The legitimate client: a refresh and a discover every 200 ms, while sampling the server.
    let mut figures = Legit::default();
    let mut peak = before;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while Instant::now() < deadline {
        tick.tick().await;
        let now = usage(args.server_pid);
        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
        peak.vm_data_kib = peak.vm_data_kib.max(now.vm_data_kib);
        for message in [
            register(&namespaces[0], &legit_record),
            discover(Some(namespaces[1].clone())),
        ] {
            let start = Instant::now();
            let outcome = legit.request(&message).await;
            figures.requests += 1;
            figures.worst = figures.worst.max(start.elapsed());
            let ok = matches!(
                outcome,
                Ok(Message::RegisterResponse(Ok(_))) | Ok(Message::DiscoverResponse(Ok(_)))
            );
            if !ok {
                figures.failures += 1;
                figures
                    .first_failure
                    .get_or_insert_with(|| format!("{outcome:?}"));
            }
        }
        if newcomers {
            let start = Instant::now();
            let outcome = tokio::time::timeout(
                REQUEST_TIMEOUT,
                newcomer(server.clone(), server_peer, &newcomer_namespace),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
            figures.rounds += 1;
            figures.round_worst = figures.round_worst.max(start.elapsed());
            if let Err(error) = outcome {
                figures.round_failures += 1;
                figures.first_failure.get_or_insert(error);
            }
        }
    }
    let after = usage(args.server_pid);
    let _ = tokio::time::timeout(Duration::from_secs(30), flood).await;
    // Nothing registered before the flood is lost.
    let mut kept = 0;
    for namespace in &namespaces {
        if let Ok(Message::DiscoverResponse(Ok(DiscoverPage { registrations, .. }))) =
            legit.request(&discover(Some(namespace.clone()))).await
        {
            kept += registrations
                .iter()
                .filter(|r| r.record.peer_id() == legit.key.public().to_peer_id())
                .count();
        }
    }
    let ticks_per_second = 100.0;
    let report = json!({
        "kind": args.kind,
        "count": args.count,
        "seconds": args.seconds,
        "flood_ops": flooded.load(Ordering::Relaxed),
        "flood_refused": refused.load(Ordering::Relaxed),
        "server_rss_mib_before": before.rss_kib / 1024,
        "server_rss_mib_peak": peak.rss_kib / 1024,
        "server_vmdata_mib_peak": peak.vm_data_kib / 1024,
        "server_cpu_seconds": (after.cpu_ticks.saturating_sub(before.cpu_ticks)) as f64 / ticks_per_second,
        "legit_requests": figures.requests,
        "legit_failures": figures.failures,
        "legit_worst_ms": figures.worst.as_millis() as u64,
        "legit_first_failure": figures.first_failure,
        "legit_newcomer_rounds": figures.rounds,
        "legit_newcomer_failures": figures.round_failures,
        "legit_newcomer_worst_ms": figures.round_worst.as_millis() as u64,
        "legit_registrations_kept": format!("{kept}/{LEGIT_NAMESPACES}"),
    });
    outln!("{report}");
    let ok = figures.failures == 0 && figures.round_failures == 0 && kept == LEGIT_NAMESPACES;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What a flood aims at.
#[derive(Debug, Clone)]
struct Target {
    kind: String,
    server: Multiaddr,
    server_peer: PeerId,
    /// Where the `handshake` flood connects from.
    source: std::net::Ipv4Addr,
}

/// The server's TCP socket address, from its multiaddr.
fn tcp_address(server: &Multiaddr) -> Option<std::net::SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for protocol in server.iter() {
        match protocol {
            Protocol::Ip4(a) => ip = Some(a),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    Some(std::net::SocketAddr::from((ip?, port?)))
}

/// One connection of the `handshake` flood, until `until`: connects from `source`, sends
/// nothing, and connects again whenever the server closes it.
async fn silent_connections(
    server: std::net::SocketAddr,
    source: std::net::Ipv4Addr,
    until: tokio::time::Instant,
    done: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
) {
    use tokio::io::AsyncReadExt;
    let work = async {
        loop {
            let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                return;
            };
            if socket.bind((source, 0).into()).is_err() {
                return;
            }
            let Ok(mut stream) = socket.connect(server).await else {
                refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            done.fetch_add(1, Ordering::Relaxed);
            // Held until the server gives up on it.
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte).await;
            refused.fetch_add(1, Ordering::Relaxed);
        }
    };
    let _ = tokio::time::timeout_at(until, work).await;
}

/// Runs one flood until `deadline`; counts what it did and what the server refused.
async fn flood(
    target: Target,
    count: usize,
    deadline: Instant,
    done: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let until = tokio::time::Instant::from_std(deadline);
    let Target {
        kind,
        server,
        server_peer,
        source,
    } = target;
    if kind == "handshake" {
        let Some(address) = tcp_address(&server) else {
            return;
        };
        for _ in 0..count {
            tasks.spawn(silent_connections(
                address,
                source,
                until,
                done.clone(),
                refused.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
        return;
    }
    for i in 0..count {
        let (server, kind) = (server.clone(), kind.clone());
        let (done, refused) = (done.clone(), refused.clone());
        tasks.spawn(async move {
            let Ok(client) = connect(server, server_peer).await else {
                refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            done.fetch_add(u64::from(kind == "idle"), Ordering::Relaxed);
            let work = async {
                match kind.as_str() {
                    "idle" => futures::future::pending::<()>().await,
                    "stall" => {
                        // Every stream the connection may have: announce 1 MiB, send 1 byte.
                        let mut held = Vec::new();
                        for _ in 0..8 {
                            let Ok(mut stream) = client.open().await else {
                                refused.fetch_add(1, Ordering::Relaxed);
                                break;
                            };
                            let ok = stream.write_all(&[0xff, 0xff, 0x3f, 0x00]).await.is_ok()
                                && stream.flush().await.is_ok();
                            done.fetch_add(u64::from(ok), Ordering::Relaxed);
                            held.push(stream);
                        }
                        futures::future::pending::<()>().await
                    }
                    "churn" => loop {
                        match client.open().await {
                            Ok(mut stream) => {
                                let _ = stream.write_all(&[0x05]).await;
                                drop(stream);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    },
                    "register" => {
                        let record = maximal_record(&client.key);
                        for n in 0.. {
                            let namespace =
                                Namespace::new(format!("flood-{i}-{n}")).expect("short");
                            match client.request(&register(&namespace, &record)).await {
                                Ok(Message::RegisterResponse(Ok(_))) => {
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(_) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => return,
                            }
                        }
                    }
                    _ => loop {
                        match client.request(&discover(None)).await {
                            Ok(Message::DiscoverResponse(Ok(_))) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => return,
                        }
                    },
                }
            };
            let _ = tokio::time::timeout_at(until, work).await;
            drop(client);
        });
        if Instant::now() >= deadline {
            break;
        }
    }
    while tasks.join_next().await.is_some() {}
}
