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
//! The flood plays another machine: it runs in a process of its own (this command started again
//! with `--flood-only`), so its client-side work (thousands of noise handshakes) does not slow
//! the legitimate client's process, and every one of its connections comes from `--source`
//! (127.0.0.2 by default), while the legitimate client connects from 127.0.0.1, as an attacker
//! on another address would. Earlier runs had both in one process and on one address, and
//! measured the flood's client-side work and the server's per-address bounds on the legitimate
//! client (BENCHMARKS.md, "Floods").
//!
//! Beside its long-lived connection, the legitimate client makes a new connection every round
//! during the `idle` and `handshake` floods (a new identity that connects, registers and finds
//! itself), since those floods aim at newcomers.
//!
//! Prints one JSON object: the kind, the flood's own counters, the server's peak RSS, VmData and
//! open file descriptors (about one per connection) and its CPU seconds during the flood (from
//! `/proc/PID`), and the legitimate client's
//! requests, failures and worst latency, and whether everything it registered before the flood
//! was still there after it.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::{ExitCode, Stdio},
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

/// How long the flood's process may take to stop and report after its `--seconds`.
const FLOOD_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a hostile client waits before it dials again after a failed dial.
const REDIAL_PAUSE: Duration = Duration::from_millis(100);

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
    /// The address every connection of the flood comes from (a 127.0.0.0/8 address other than
    /// 127.0.0.1, the legitimate client's).
    #[arg(long, value_name = "IP", default_value = "127.0.0.2")]
    source: Ipv4Addr,
    /// Connections (or identities) the flood uses.
    #[arg(long, value_name = "N", default_value_t = 500)]
    count: usize,
    /// How long the flood lasts.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    seconds: u64,
    /// Hostile dials in flight at once (all at once without it). An attacker who wants to hold
    /// many connections dials at the pace the server admits them: dials beyond the server's
    /// handshake queue are closed, and each dial redone costs the attacker a new identity.
    #[arg(long, value_name = "N")]
    max_dialing: Option<usize>,
    /// Run the flood alone and print its counters (the process `flood` starts for it).
    #[arg(long, hide = true)]
    flood_only: bool,
}

/// Requests (and streams) the legitimate client and each hostile one may have in flight.
const STREAMS_PER_CLIENT: usize = 8;

/// A client with its own identity and connection from `source` (the kernel's choice when
/// `None`): `rendezvous load`'s, with the flood's timeout.
async fn connect(
    server: Multiaddr,
    server_peer: PeerId,
    source: Option<IpAddr>,
) -> Result<Client, String> {
    Client::connect(
        server,
        server_peer,
        source,
        STREAMS_PER_CLIENT,
        REQUEST_TIMEOUT,
    )
    .await
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

/// The server's memory, CPU and open file descriptors, from /proc.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    vm_data_kib: u64,
    cpu_ticks: u64,
    /// About one per connection (a handshake waiting in the kernel's backlog has none yet).
    fds: u64,
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
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
    }
}

/// The legitimate client's figures.
#[derive(Debug, Default)]
struct Figures {
    requests: u64,
    failures: u64,
    worst: Duration,
    first_failure: Option<String>,
    /// Rounds of a newcomer: connect, register, find itself.
    rounds: u64,
    round_failures: u64,
    round_worst: Duration,
}

impl Figures {
    /// One request of the long-lived client, and how long it took.
    fn request(&mut self, took: Duration, outcome: Result<(), String>) {
        self.requests += 1;
        self.worst = self.worst.max(took);
        if let Err(failure) = outcome {
            self.failures += 1;
            self.first_failure.get_or_insert(failure);
        }
    }

    /// One newcomer's round, and how long it took.
    fn round(&mut self, took: Duration, outcome: Result<(), String>) {
        self.rounds += 1;
        self.round_worst = self.round_worst.max(took);
        if let Err(failure) = outcome {
            self.round_failures += 1;
            self.first_failure.get_or_insert(failure);
        }
    }
}

/// A record of `key`'s peer with one loopback address.
fn loopback_record(key: &Keypair) -> SignedRecord {
    SignedRecord::new(
        key,
        vec!["/ip4/127.0.0.1/tcp/1".parse().expect("valid")],
        RecordFormat::Standard,
    )
    .expect("ed25519 signs")
}

/// A newcomer's round: a new identity connects, registers in `namespace` and finds itself
/// there. Returns what went wrong, if anything.
async fn newcomer(
    server: Multiaddr,
    server_peer: PeerId,
    namespace: &Namespace,
) -> Result<(), String> {
    let client = connect(server, server_peer, None).await?;
    let record = loopback_record(&client.key);
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
    let server_peer = checked(&args)?;
    let server = args.server.clone();
    if args.flood_only {
        let counters = Arc::new(Counters::new(args.count));
        let target = Target {
            kind: args.kind.clone(),
            server,
            server_peer,
            source: args.source,
            max_dialing: args.max_dialing.unwrap_or(args.count).max(1),
        };
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        flood(target, args.count, deadline, counters.clone()).await;
        outln!("{}", counters.report());
        return Ok(ExitCode::SUCCESS);
    }
    let legit = Legitimate::prepare(server.clone(), server_peer).await?;
    let before = usage(args.server_pid);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let attacker = spawn_flood(&args)?;
    let newcomers = matches!(args.kind.as_str(), "idle" | "handshake");
    let (figures, peak) = legit
        .alongside(deadline, newcomers, args.server_pid, before)
        .await;
    let after = usage(args.server_pid);
    let counters = flood_report(attacker).await?;
    let kept = legit.kept().await;
    let ticks_per_second = 100.0;
    let report = json!({
        "kind": args.kind,
        "count": args.count,
        "seconds": args.seconds,
        "source": args.source.to_string(),
        "flood_ops": counters["flood_ops"],
        "flood_refused": counters["flood_refused"],
        "flood_max_dialing": args.max_dialing,
        "flood_connected": counters["flood_connected"],
        "flood_all_connected_s": counters["flood_all_connected_s"],
        "server_rss_mib_before": before.rss_kib / 1024,
        "server_rss_mib_peak": peak.rss_kib / 1024,
        "server_vmdata_mib_peak": peak.vm_data_kib / 1024,
        "server_fds_peak": peak.fds,
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

/// Starts this command again with `--flood-only`: the flood, in a process of its own (killed
/// if this one gives up on it).
fn spawn_flood(args: &Args) -> Result<tokio::process::Child, CliError> {
    let program = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find this program to run the flood: {e}")))?;
    tokio::process::Command::new(program)
        .arg("flood")
        .args(["--server", &args.server.to_string()])
        .args(["--server-pid", &args.server_pid.to_string()])
        .args(["--kind", &args.kind])
        .args(["--source", &args.source.to_string()])
        .args(["--count", &args.count.to_string()])
        .args(["--seconds", &args.seconds.to_string()])
        .args(
            args.max_dialing
                .map(|n| ["--max-dialing".to_string(), n.to_string()])
                .into_iter()
                .flatten(),
        )
        .arg("--flood-only")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError::Failed(format!("cannot start the flood's process: {e}")))
}

/// The flood process's counters, once it has stopped.
async fn flood_report(attacker: tokio::process::Child) -> Result<serde_json::Value, CliError> {
    let output = tokio::time::timeout(FLOOD_EXIT_TIMEOUT, attacker.wait_with_output())
        .await
        .map_err(|_| {
            CliError::Failed(format!(
                "the flood's process did not stop within {FLOOD_EXIT_TIMEOUT:?} of its end"
            ))
        })?
        .map_err(|e| CliError::Failed(format!("the flood's process: {e}")))?;
    if !output.status.success() {
        return Err(CliError::Failed(format!(
            "the flood's process failed ({})",
            output.status
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| CliError::Failed(format!("the flood's process printed no report: {e}")))
}

/// The server's peer id, once the flags are known to aim a bounded flood at this machine.
fn checked(args: &Args) -> Result<PeerId, CliError> {
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
    if !args.source.is_loopback() || args.source == Ipv4Addr::LOCALHOST {
        return Err(CliError::Usage(format!(
            "--source {}: expected a 127.0.0.0/8 address other than 127.0.0.1 (the legitimate \
             client's)",
            args.source
        )));
    }
    if args.count == 0 || args.count > MAX_COUNT || args.seconds == 0 || args.seconds > MAX_SECONDS
    {
        return Err(CliError::Usage(format!(
            "expected --count 1..={MAX_COUNT} and --seconds 1..={MAX_SECONDS}"
        )));
    }
    Ok(server_peer)
}

/// What the flood did, and what the server refused it; shared by the flood's tasks.
#[derive(Debug)]
struct Counters {
    done: AtomicU64,
    refused: AtomicU64,
    /// Hostile clients that got a connection (each once).
    connected: AtomicU64,
    /// The flood's clients: when `connected` reaches it, all of them are in.
    count: u64,
    started: Instant,
    /// How long after the start all `count` were connected, once they were.
    all_connected: std::sync::OnceLock<Duration>,
}

impl Counters {
    fn new(count: usize) -> Self {
        Self {
            done: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            count: count as u64,
            started: Instant::now(),
            all_connected: std::sync::OnceLock::new(),
        }
    }

    fn done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// A hostile client got its connection.
    fn connected(&self) {
        if self.connected.fetch_add(1, Ordering::Relaxed) + 1 == self.count {
            let _ = self.all_connected.set(self.started.elapsed());
        }
    }

    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// What the flood's process prints.
    fn report(&self) -> serde_json::Value {
        json!({
            "flood_ops": self.done.load(Ordering::Relaxed),
            "flood_refused": self.refused.load(Ordering::Relaxed),
            "flood_connected": self.connected.load(Ordering::Relaxed),
            "flood_all_connected_s": self.all_connected.get().map(|d| d.as_millis() as f64 / 1000.0),
        })
    }
}

/// The legitimate client: registered in [`LEGIT_NAMESPACES`] namespaces before the flood.
struct Legitimate {
    client: Client,
    record: SignedRecord,
    namespaces: Vec<Namespace>,
    server: Multiaddr,
    server_peer: PeerId,
}

impl Legitimate {
    async fn prepare(server: Multiaddr, server_peer: PeerId) -> Result<Self, CliError> {
        let client = connect(server.clone(), server_peer, None)
            .await
            .map_err(|e| CliError::Failed(format!("the legitimate client cannot connect: {e}")))?;
        let record = loopback_record(&client.key);
        let namespaces: Vec<Namespace> = (0..LEGIT_NAMESPACES)
            .map(|i| Namespace::new(format!("legit-{i}")).expect("short"))
            .collect();
        for namespace in &namespaces {
            match client.request(&register(namespace, &record)).await {
                Ok(Message::RegisterResponse(Ok(_))) => {}
                other => {
                    return Err(CliError::Failed(format!(
                        "the legitimate client cannot register before the flood: {other:?}"
                    )))
                }
            }
        }
        Ok(Self {
            client,
            record,
            namespaces,
            server,
            server_peer,
        })
    }

    /// Until `deadline`, every 200 ms: a refresh and a discover (and, with `newcomers`, a
    /// newcomer's round), while sampling the server's peak memory.
    async fn alongside(
        &self,
        deadline: Instant,
        newcomers: bool,
        server_pid: u32,
        before: Usage,
    ) -> (Figures, Usage) {
        let newcomer_namespace = Namespace::new("legit-newcomers").expect("short");
        let mut figures = Figures::default();
        let mut peak = before;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while Instant::now() < deadline {
            tick.tick().await;
            let now = usage(server_pid);
            peak.rss_kib = peak.rss_kib.max(now.rss_kib);
            peak.vm_data_kib = peak.vm_data_kib.max(now.vm_data_kib);
            peak.fds = peak.fds.max(now.fds);
            for message in [
                register(&self.namespaces[0], &self.record),
                discover(Some(self.namespaces[1].clone())),
            ] {
                let start = Instant::now();
                let outcome = self.client.request(&message).await;
                let ok = matches!(
                    outcome,
                    Ok(Message::RegisterResponse(Ok(_))) | Ok(Message::DiscoverResponse(Ok(_)))
                );
                figures.request(
                    start.elapsed(),
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("{outcome:?}"))
                    },
                );
            }
            if newcomers {
                let start = Instant::now();
                let outcome = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    newcomer(self.server.clone(), self.server_peer, &newcomer_namespace),
                )
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
                figures.round(start.elapsed(), outcome);
            }
        }
        (figures, peak)
    }

    /// How many of its registrations from before the flood the server still holds.
    async fn kept(&self) -> usize {
        let mut kept = 0;
        for namespace in &self.namespaces {
            if let Ok(Message::DiscoverResponse(Ok(DiscoverPage { registrations, .. }))) = self
                .client
                .request(&discover(Some(namespace.clone())))
                .await
            {
                kept += registrations
                    .iter()
                    .filter(|r| r.record.peer_id() == self.client.key.public().to_peer_id())
                    .count();
            }
        }
        kept
    }
}

/// What a flood aims at.
#[derive(Debug, Clone)]
struct Target {
    kind: String,
    server: Multiaddr,
    server_peer: PeerId,
    /// Where every connection of the flood comes from.
    source: Ipv4Addr,
    /// Dials in flight at once.
    max_dialing: usize,
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
    source: Ipv4Addr,
    until: tokio::time::Instant,
    counters: Arc<Counters>,
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
                counters.refused();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            counters.done(1);
            // Held until the server gives up on it.
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte).await;
            counters.refused();
        }
    };
    let _ = tokio::time::timeout_at(until, work).await;
}

/// Runs one flood until `deadline`; counts what it did and what the server refused.
async fn flood(target: Target, count: usize, deadline: Instant, counters: Arc<Counters>) {
    let mut tasks = tokio::task::JoinSet::new();
    let until = tokio::time::Instant::from_std(deadline);
    let Target {
        kind,
        server,
        server_peer,
        source,
        max_dialing,
    } = target;
    let dialing = Arc::new(tokio::sync::Semaphore::new(max_dialing));
    if kind == "handshake" {
        let Some(address) = tcp_address(&server) else {
            return;
        };
        for _ in 0..count {
            tasks.spawn(silent_connections(address, source, until, counters.clone()));
        }
        while tasks.join_next().await.is_some() {}
        return;
    }
    for i in 0..count {
        let (server, kind, counters) = (server.clone(), kind.clone(), counters.clone());
        let dialing = dialing.clone();
        tasks.spawn(async move {
            let dial = Dial {
                server,
                server_peer,
                source,
                until,
            };
            let Some(client) = dial.redial(&dialing, &counters).await else {
                return;
            };
            counters.connected();
            let work = async {
                match kind.as_str() {
                    "idle" => {
                        counters.done(1);
                        futures::future::pending::<()>().await
                    }
                    "stall" => stall(&client, &counters).await,
                    "churn" => churn(&client, &counters).await,
                    "register" => register_everywhere(&client, i, &counters).await,
                    _ => discover_everything(&client, &counters).await,
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

/// Where and until when a hostile client dials.
struct Dial {
    server: Multiaddr,
    server_peer: PeerId,
    source: Ipv4Addr,
    until: tokio::time::Instant,
}

impl Dial {
    /// Dials from `source`, holding a permit of `dialing` while a dial is in flight, until it
    /// gets in (each failure counted as refused) or `until` passes, as an attacker dials again.
    async fn redial(
        &self,
        dialing: &tokio::sync::Semaphore,
        counters: &Counters,
    ) -> Option<Client> {
        let work = async {
            loop {
                let outcome = {
                    let _permit = dialing.acquire().await.ok()?;
                    connect(
                        self.server.clone(),
                        self.server_peer,
                        Some(self.source.into()),
                    )
                    .await
                };
                match outcome {
                    Ok(client) => return Some(client),
                    Err(_) => {
                        counters.refused();
                        tokio::time::sleep(REDIAL_PAUSE).await;
                    }
                }
            }
        };
        tokio::time::timeout_at(self.until, work)
            .await
            .ok()
            .flatten()
    }
}

/// Every stream the connection may have: announce a 1 MiB frame, send 1 byte of it, hold.
async fn stall(client: &Client, counters: &Counters) {
    let mut held = Vec::new();
    for _ in 0..8 {
        let Ok(mut stream) = client.open().await else {
            counters.refused();
            break;
        };
        let ok = stream.write_all(&[0xff, 0xff, 0x3f, 0x00]).await.is_ok()
            && stream.flush().await.is_ok();
        counters.done(u64::from(ok));
        held.push(stream);
    }
    futures::future::pending::<()>().await
}

/// Streams opened, sent one byte and reset, in a loop.
async fn churn(client: &Client, counters: &Counters) {
    loop {
        let Ok(mut stream) = client.open().await else {
            counters.refused();
            return;
        };
        let _ = stream.write_all(&[0x05]).await;
        drop(stream);
        counters.done(1);
    }
}

/// Maximal records in ever new namespaces, until the connection fails.
async fn register_everywhere(client: &Client, identity: usize, counters: &Counters) {
    let record = maximal_record(&client.key);
    for n in 0.. {
        let namespace = Namespace::new(format!("flood-{identity}-{n}")).expect("short");
        match client.request(&register(&namespace, &record)).await {
            Ok(Message::RegisterResponse(Ok(_))) => counters.done(1),
            Ok(_) => counters.refused(),
            Err(_) => return,
        }
    }
}

/// DISCOVER of every namespace, 1000 a page, no cookie, until the connection fails.
async fn discover_everything(client: &Client, counters: &Counters) {
    loop {
        match client.request(&discover(None)).await {
            Ok(Message::DiscoverResponse(Ok(_))) => counters.done(1),
            Ok(_) => counters.refused(),
            Err(_) => return,
        }
    }
}
