//! `rendezvous load`: a load generator for any rendezvous server.
//!
//! C clients, each with its own identity and its own connection, register in K namespaces
//! (C*K registrations); then D discoverers page through everything with cookies. Each phase is
//! timed on its own (throughput, latency p50/p99) and the run checks that every discoverer saw
//! every registration exactly once (exit status 1 when not).
//!
//! The protocol is spoken with the crate's own framing, one stream per request, the transport
//! every server accepts (rust-libp2p's server handles one request per stream).
//!
//! `--json` prints one object: the parameters, `registrations` (C*K), `registered`,
//! `discovered` (registrations received by all discoverers), `phases.{connect,register,
//! discover}` each with `ops`, `errors`, `seconds`, `per_second`, `p50_ms`, `p99_ms` (and with
//! `--server-pid`: `server_cpu_seconds`, `server_cpu_us_per_op`, `server_rss_kib_after`,
//! `server_hwm_kib_after`), `server_rss_kib_baseline`, `server_bytes_per_registration`,
//! `discoverer_results` (`missing`, `duplicates`, `foreign`, `skipped` per discoverer),
//! `first_error` and the verdict `exactly_once`.

use std::{
    collections::HashMap,
    fmt::Write as _,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{
    channel::{mpsc, oneshot},
    stream, AsyncWriteExt, SinkExt, StreamExt,
};
use libp2p::{
    identity::Keypair, multiaddr::Protocol, noise, swarm::SwarmEvent, tcp, yamux, Multiaddr,
    PeerId, Stream,
};
use rendezvous_discovery::{
    codec::{
        read_message, write_message, DiscoverPage, Message, NewRegistration,
        DEFAULT_MAX_MESSAGE_SIZE,
    },
    Cookie, Namespace, RecordFormat, SignedRecord, Ttl, MAX_DISCOVER_LIMIT, PROTOCOL,
};
use serde_json::{json, Value};

use crate::{
    common::{CliError, CliResult},
    streams,
};

/// How long one request (stream negotiation, request, response) may take before it counts as
/// failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one connection (TCP, noise, yamux) may take to establish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Stream requests a client's swarm task can have queued: backpressure for the request window.
const STREAM_REQUEST_QUEUE: usize = 32;

/// Requests one client has in flight at once by default: below the streams per connection
/// servers accept (8 for ours by default, 100 for rust-libp2p's), which reset streams beyond.
const DEFAULT_STREAMS_PER_CLIENT: usize = 8;

/// Clients the load generator accepts: each holds a socket, and the process's descriptor limit
/// is typically a few ten thousands.
const MAX_CLIENTS: usize = 50_000;

/// Namespaces per client accepted (the spec lets a peer hold at most 1000 registrations).
const MAX_NAMESPACES: usize = 1000;

/// Discoverers accepted.
const MAX_DISCOVERERS: usize = 1000;

/// Kernel clock ticks per second for `/proc/PID/stat` CPU times (USER_HZ, 100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Flags of `rendezvous load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server to load, with its peer id: /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo...
    #[arg(long, required_unless_present = "verify_bench")]
    server: Option<Multiaddr>,
    /// Client identities, each with its own connection to the server.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Namespaces every client registers in (C*K registrations in all).
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Discoverers that each page through every registration.
    #[arg(long, default_value_t = 1)]
    discoverers: usize,
    /// Registrations asked for per DISCOVER page (1..=1000).
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// TTL asked for, in seconds; without it REGISTER carries no TTL (the server's default).
    #[arg(long)]
    ttl: Option<Ttl>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Signed peer record format of the registrants: legacy works with rust-libp2p's server too.
    #[arg(long, default_value = "legacy", value_parser = crate::common::parse_record_format)]
    record_format: RecordFormat,
    /// What discoverers page through: each namespace, or all namespaces at once.
    #[arg(long, value_enum, default_value_t = Scope::Namespaces)]
    scope: Scope,
    /// Requests (and connection attempts) in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Requests one client has in flight at once (servers reset streams over their
    /// per-connection cap).
    #[arg(long, default_value_t = DEFAULT_STREAMS_PER_CLIENT)]
    streams_per_client: usize,
    /// The server's process id, to report its CPU time and memory per phase (Linux /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Instead of a load run: time the verification of N signed peer records and exit.
    #[arg(long, value_name = "N")]
    verify_bench: Option<usize>,
}

/// What the discoverers page through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scope {
    /// Each of the K namespaces, with a cookie per namespace.
    Namespaces,
    /// All namespaces in one DISCOVER without namespace.
    All,
}

pub async fn run(args: Args) -> CliResult {
    if let Some(n) = args.verify_bench {
        return verify_bench(n, args.record_format, args.json);
    }
    let config = Config::from_args(&args)?;
    let report = config.run().await?;
    if args.json {
        println!("{}", report.json);
    } else {
        print!("{}", report.text);
    }
    Ok(if report.exactly_once {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Validated flags.
struct Config {
    server: Multiaddr,
    server_peer: PeerId,
    clients: usize,
    namespaces: usize,
    discoverers: usize,
    limit: u64,
    ttl: Option<Ttl>,
    format: RecordFormat,
    scope: Scope,
    concurrency: usize,
    streams_per_client: usize,
    server_pid: Option<u32>,
}

impl Config {
    fn from_args(args: &Args) -> Result<Self, CliError> {
        let server = args
            .server
            .clone()
            .ok_or_else(|| CliError::Usage("--server is required".into()))?;
        let Some(Protocol::P2p(server_peer)) = server.iter().last() else {
            return Err(CliError::Usage(format!(
                "--server {server}: expected a multiaddr ending in /p2p/<peer id>"
            )));
        };
        let in_range = |name: &str, value: usize, max: usize| {
            if value == 0 || value > max {
                Err(CliError::Usage(format!(
                    "--{name} {value}: expected 1 to {max}"
                )))
            } else {
                Ok(value)
            }
        };
        in_range("clients", args.clients, MAX_CLIENTS)?;
        in_range("namespaces", args.namespaces, MAX_NAMESPACES)?;
        in_range("discoverers", args.discoverers, MAX_DISCOVERERS)?;
        in_range("concurrency", args.concurrency, 100_000)?;
        in_range("streams-per-client", args.streams_per_client, 1000)?;
        if args.limit == 0 || args.limit > MAX_DISCOVER_LIMIT {
            return Err(CliError::Usage(format!(
                "--limit {}: expected 1 to {MAX_DISCOVER_LIMIT}",
                args.limit
            )));
        }
        if args.ttl == Some(0) {
            return Err(CliError::Usage(
                "--ttl 0: expected at least 1 second".into(),
            ));
        }
        Ok(Self {
            server,
            server_peer,
            clients: args.clients,
            namespaces: args.namespaces,
            discoverers: args.discoverers,
            limit: args.limit,
            ttl: args.ttl,
            format: args.record_format,
            scope: args.scope,
            concurrency: args.concurrency,
            streams_per_client: args.streams_per_client,
            server_pid: args.server_pid,
        })
    }

    async fn run(&self) -> Result<Report, CliError> {
        // A fresh prefix per run keeps registrations of earlier runs out of this run's namespaces.
        let run_id: u32 = rand::random();
        let namespaces: Vec<Namespace> = (0..self.namespaces)
            .map(|k| Namespace::new(format!("load-{run_id:08x}-{k}")))
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::Failed(format!("cannot build namespace: {e}")))?;

        let mut server_samples = vec![ServerSample::take(self.server_pid)];

        // Connect: every client and discoverer, each with its own identity.
        let total = self.clients + self.discoverers;
        let started = Instant::now();
        let results: Vec<(Result<Client, String>, Duration)> = stream::iter(0..total)
            .map(|_| async {
                let t = Instant::now();
                let client = Client::connect(
                    self.server.clone(),
                    self.server_peer,
                    self.streams_per_client,
                )
                .await;
                (client, t.elapsed())
            })
            .buffered(self.concurrency)
            .collect()
            .await;
        let mut connect = Phase::new("connect", started.elapsed());
        let mut peers = Vec::with_capacity(total);
        let mut first_error = None;
        for (result, latency) in results {
            match result {
                Ok(client) => {
                    connect.ok(latency);
                    peers.push(client);
                }
                Err(e) => {
                    connect.errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        server_samples.push(ServerSample::take(self.server_pid));
        if let Some(e) = first_error {
            return Err(CliError::Failed(format!(
                "{} of {total} connections to {} failed; first: {e}",
                connect.errors, self.server
            )));
        }
        let discoverers = peers.split_off(self.clients);
        let clients = peers;

        // A server that tailors pages to each peer's record format (ours serves peers that
        // never registered legacy records only, what rust-libp2p 0.18 clients decode) must
        // know that standard-format discoverers read standard records: they register once, in
        // a namespace of their own, before the timed phases.
        if self.format == RecordFormat::Standard {
            let namespace = Namespace::new(format!("load-{run_id:08x}-discoverers"))
                .map_err(|e| CliError::Failed(format!("cannot build namespace: {e}")))?;
            for discoverer in &discoverers {
                let record = SignedRecord::new(
                    &discoverer.key,
                    vec!["/ip4/127.0.0.1/tcp/9"
                        .parse()
                        .expect("a valid literal multiaddr")],
                    self.format,
                )
                .map_err(|e| CliError::Failed(format!("cannot sign a peer record: {e}")))?;
                let message = Message::Register(NewRegistration {
                    namespace: namespace.clone(),
                    record,
                    ttl: self.ttl,
                });
                match discoverer.request(&message).await {
                    Ok(Message::RegisterResponse(Ok(_))) => {}
                    other => {
                        return Err(CliError::Failed(format!(
                            "a discoverer could not register its record format: {other:?}"
                        )))
                    }
                }
            }
        }

        // Register: namespace-major order spreads the window over all clients' connections
        // (rust-libp2p's server takes at most 100 concurrent streams per connection).
        let records: Vec<SignedRecord> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i % 50_000)
                    .parse()
                    .expect("a valid literal multiaddr");
                SignedRecord::new(&c.key, vec![addr], self.format)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::Failed(format!("cannot sign a peer record: {e}")))?;
        let work = (0..self.namespaces).flat_map(|k| (0..self.clients).map(move |c| (c, k)));
        let started = Instant::now();
        let results: Vec<(Result<(), String>, Duration)> = stream::iter(work)
            .map(|(c, k)| {
                let message = Message::Register(NewRegistration {
                    namespace: namespaces[k].clone(),
                    record: records[c].clone(),
                    ttl: self.ttl,
                });
                let client = &clients[c];
                async move {
                    let t = Instant::now();
                    let result = match client.request(&message).await {
                        Ok(Message::RegisterResponse(Ok(_))) => Ok(()),
                        Ok(Message::RegisterResponse(Err(e))) => {
                            Err(format!("REGISTER refused: {} {}", e.code, e.text))
                        }
                        Ok(other) => Err(format!("REGISTER answered with {other:?}")),
                        Err(e) => Err(e),
                    };
                    (result, t.elapsed())
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut register = Phase::new("register", started.elapsed());
        let mut register_error = None;
        for (result, latency) in results {
            match result {
                Ok(()) => register.ok(latency),
                Err(e) => {
                    register.errors += 1;
                    register_error.get_or_insert(e);
                }
            }
        }
        server_samples.push(ServerSample::take(self.server_pid));

        // Discover: every discoverer pages through everything, concurrently.
        let scopes: Vec<Option<Namespace>> = match self.scope {
            Scope::Namespaces => namespaces.iter().cloned().map(Some).collect(),
            Scope::All => vec![None],
        };
        let started = Instant::now();
        let walks: Vec<Walk> =
            futures::future::join_all(discoverers.iter().map(|d| d.walk(&scopes, self.limit)))
                .await;
        let mut discover = Phase::new("discover", started.elapsed());
        server_samples.push(ServerSample::take(self.server_pid));

        // Exactly once: every (peer, namespace) registered, seen once by every discoverer.
        let expected: HashMap<(PeerId, Namespace), ()> = clients
            .iter()
            .flat_map(|c| namespaces.iter().map(move |ns| ((c.peer, ns.clone()), ())))
            .collect();
        let mut verdicts = Vec::new();
        let mut received = 0u64;
        let mut discover_error = None;
        for walk in &walks {
            for latency in &walk.latencies {
                discover.ok(*latency);
            }
            discover.errors += walk.errors;
            if let Some(e) = &walk.error {
                discover_error.get_or_insert(e.clone());
            }
            received += walk.received;
            let missing = expected
                .keys()
                .filter(|key| !walk.seen.contains_key(key))
                .count();
            let duplicates: u64 = walk
                .seen
                .iter()
                .filter(|(key, _)| expected.contains_key(key))
                .map(|(_, n)| u64::from(*n - 1))
                .sum();
            let foreign = walk
                .seen
                .keys()
                .filter(|key| !expected.contains_key(key))
                .count();
            verdicts.push((missing, duplicates, foreign, walk.skipped));
        }
        let exactly_once = register.errors == 0
            && discover.errors == 0
            && verdicts.iter().all(|(missing, duplicates, _, skipped)| {
                *missing == 0 && *duplicates == 0 && *skipped == 0
            });

        let registrations = (self.clients * self.namespaces) as u64;
        let phases = [&connect, &register, &discover];
        let mut phase_json = serde_json::Map::new();
        for (i, phase) in phases.iter().enumerate() {
            let mut value = phase.json();
            if let (Some(before), Some(after)) = (&server_samples[i], &server_samples[i + 1]) {
                let cpu = (after.cpu_ticks - before.cpu_ticks) as f64 / CLOCK_TICKS_PER_SECOND;
                let object = value.as_object_mut().expect("Phase::json builds an object");
                object.insert("server_cpu_seconds".into(), json!(cpu));
                object.insert(
                    "server_cpu_us_per_op".into(),
                    json!(if phase.count() > 0 {
                        cpu * 1e6 / phase.count() as f64
                    } else {
                        0.0
                    }),
                );
                object.insert("server_rss_kib_after".into(), json!(after.rss_kib));
                object.insert("server_hwm_kib_after".into(), json!(after.hwm_kib));
            }
            phase_json.insert(phase.name.into(), value);
        }
        let baseline = server_samples[0].as_ref().map(|s| s.rss_kib);
        let memory_per_registration = match (&server_samples[1], &server_samples[2]) {
            (Some(before), Some(after)) => {
                json!(
                    (after.hwm_kib.saturating_sub(before.rss_kib)) as f64 * 1024.0
                        / registrations as f64
                )
            }
            _ => Value::Null,
        };
        let json = json!({
            "server": self.server.to_string(),
            "clients": self.clients,
            "namespaces": self.namespaces,
            "discoverers": self.discoverers,
            "limit": self.limit,
            "ttl": self.ttl,
            "record_format": self.format.to_string(),
            "scope": match self.scope { Scope::Namespaces => "namespaces", Scope::All => "all" },
            "concurrency": self.concurrency,
            "registrations": registrations,
            "registered": register.count(),
            "discovered": received,
            "phases": phase_json,
            "server_rss_kib_baseline": baseline,
            "server_bytes_per_registration": memory_per_registration,
            "discoverer_results": verdicts.iter().map(|(m, d, f, s)| json!({
                "missing": m, "duplicates": d, "foreign": f, "skipped": s,
            })).collect::<Vec<_>>(),
            "first_error": register_error.clone().or(discover_error.clone()),
            "exactly_once": exactly_once,
        });

        let mut text = String::new();
        let _ = writeln!(
            text,
            "load against {}: {} clients x {} namespaces = {registrations} registrations, \
             {} discoverers, limit {}",
            self.server, self.clients, self.namespaces, self.discoverers, self.limit
        );
        for phase in phases {
            let _ = writeln!(text, "{}", phase.line());
        }
        for (i, (missing, duplicates, foreign, skipped)) in verdicts.iter().enumerate() {
            let _ = writeln!(
                text,
                "discoverer {i}: {missing} missing, {duplicates} duplicates, {skipped} \
                 undecodable, {foreign} from elsewhere"
            );
        }
        if let Some(e) = register_error.or(discover_error) {
            let _ = writeln!(text, "first error: {e}");
        }
        let _ = writeln!(
            text,
            "exactly once: {}",
            if exactly_once { "yes" } else { "NO" }
        );

        for client in clients.iter().chain(&discoverers) {
            client.task.abort();
        }
        Ok(Report {
            json,
            text,
            exactly_once,
        })
    }
}

struct Report {
    json: Value,
    text: String,
    exactly_once: bool,
}

/// One peer with its own identity and connection, driven by its own task.
struct Client {
    key: Keypair,
    peer: PeerId,
    in_flight: tokio::sync::Semaphore,
    streams: mpsc::Sender<streams::StreamReply>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn connect(
        server: Multiaddr,
        server_peer: PeerId,
        streams_per_client: usize,
    ) -> Result<Self, String> {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (streams, requests) = mpsc::channel(STREAM_REQUEST_QUEUE);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| format!("cannot set up TCP: {e}"))?
            .with_behaviour(|_| {
                streams::Behaviour::new(server_peer, PROTOCOL, REQUEST_TIMEOUT, requests)
            })
            .map_err(|e| format!("cannot build the behaviour: {e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        swarm
            .dial(server)
            .map_err(|e| format!("cannot dial: {e}"))?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Some(event) = swarm.next().await {
                match event {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(Err(error.to_string()));
                        }
                    }
                    SwarmEvent::ConnectionClosed { cause, .. } => {
                        tracing::debug!(%peer, ?cause, "connection to the server closed");
                    }
                    _ => {}
                }
            }
        });
        let outcome = tokio::time::timeout(CONNECT_TIMEOUT, ready_rx).await;
        match outcome {
            Ok(Ok(Ok(()))) => Ok(Self {
                key,
                peer,
                in_flight: tokio::sync::Semaphore::new(streams_per_client),
                streams,
                task,
            }),
            Ok(Ok(Err(e))) => {
                task.abort();
                Err(e)
            }
            Ok(Err(_)) => {
                task.abort();
                Err("the swarm ended before connecting".into())
            }
            Err(_) => {
                task.abort();
                Err(format!("no connection after {CONNECT_TIMEOUT:?}"))
            }
        }
    }

    async fn open(&self) -> Result<Stream, String> {
        let (tx, rx) = oneshot::channel();
        self.streams
            .clone()
            .send(tx)
            .await
            .map_err(|_| "the client's swarm has stopped".to_string())?;
        rx.await
            .map_err(|_| "the connection closed before the stream opened".to_string())?
    }

    /// Sends one request on a fresh stream and reads its response.
    async fn request(&self, message: &Message) -> Result<Message, String> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| "the client is shutting down".to_string())?;
        let exchange = async {
            let mut stream = self.open().await?;
            write_message(&mut stream, message, DEFAULT_MAX_MESSAGE_SIZE)
                .await
                .map_err(|e| format!("cannot send: {e}"))?;
            let response = read_message(&mut stream, DEFAULT_MAX_MESSAGE_SIZE)
                .await
                .map_err(|e| format!("cannot read the response: {e}"))?
                .ok_or_else(|| "the stream ended without a response".to_string())?
                .map_err(|e| format!("undecodable response: {e}"))?;
            // Half-close so a server waiting for a next request on this stream sees the end.
            let _ = stream.close().await;
            Ok(response)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no response after {REQUEST_TIMEOUT:?}"))?
    }

    /// Pages through each scope with cookies until a page comes back short.
    async fn walk(&self, scopes: &[Option<Namespace>], limit: u64) -> Walk {
        let mut walk = Walk::default();
        for scope in scopes {
            let mut cookie: Option<Cookie> = None;
            loop {
                let message = Message::Discover {
                    namespace: scope.clone(),
                    cookie: cookie.clone(),
                    limit: Some(limit),
                };
                let t = Instant::now();
                let page = match self.request(&message).await {
                    Ok(Message::DiscoverResponse(Ok(page))) => page,
                    Ok(Message::DiscoverResponse(Err(e))) => {
                        walk.fail(format!("DISCOVER refused: {} {}", e.code, e.text));
                        break;
                    }
                    Ok(other) => {
                        walk.fail(format!("DISCOVER answered with {other:?}"));
                        break;
                    }
                    Err(e) => {
                        walk.fail(e);
                        break;
                    }
                };
                walk.latencies.push(t.elapsed());
                let DiscoverPage {
                    registrations,
                    cookie: next,
                    skipped,
                } = page;
                let full = (registrations.len() + skipped) as u64 >= limit;
                walk.skipped += skipped;
                walk.received += registrations.len() as u64;
                for registration in registrations {
                    *walk
                        .seen
                        .entry((registration.record.peer_id(), registration.namespace))
                        .or_insert(0) += 1;
                }
                if !full {
                    break;
                }
                match next {
                    Some(next) => cookie = Some(next),
                    None => {
                        walk.fail("a full page came without a cookie".into());
                        break;
                    }
                }
            }
        }
        walk
    }
}

/// What one discoverer saw.
#[derive(Default)]
struct Walk {
    seen: HashMap<(PeerId, Namespace), u32>,
    received: u64,
    skipped: usize,
    latencies: Vec<Duration>,
    errors: u64,
    error: Option<String>,
}

impl Walk {
    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.error.get_or_insert(error);
    }
}

/// Timing of one phase.
struct Phase {
    name: &'static str,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: u64,
}

impl Phase {
    fn new(name: &'static str, elapsed: Duration) -> Self {
        Self {
            name,
            elapsed,
            latencies: Vec::new(),
            errors: 0,
        }
    }

    fn ok(&mut self, latency: Duration) {
        self.latencies.push(latency);
    }

    fn count(&self) -> usize {
        self.latencies.len()
    }

    fn throughput(&self) -> f64 {
        self.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`th percentile latency in milliseconds (nearest rank).
    fn percentile_ms(&self, p: usize) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = (p * sorted.len()).div_ceil(100).max(1) - 1;
        sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
    }

    fn json(&self) -> Value {
        json!({
            "ops": self.count(),
            "errors": self.errors,
            "seconds": self.elapsed.as_secs_f64(),
            "per_second": self.throughput(),
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
        })
    }

    fn line(&self) -> String {
        format!(
            "{:<9} {:>8} ok {:>5} errors in {:>8.3} s: {:>10.1}/s, p50 {:.3} ms, p99 {:.3} ms",
            self.name,
            self.count(),
            self.errors,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.percentile_ms(50),
            self.percentile_ms(99)
        )
    }
}

/// The server process's CPU time and memory at one moment, read from /proc.
struct ServerSample {
    cpu_ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

impl ServerSample {
    fn take(pid: Option<u32>) -> Option<Self> {
        let pid = pid?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: u64 = rest.get(11)?.parse().ok()?;
        let stime: u64 = rest.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Self {
            cpu_ticks: utime + stime,
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

/// Times the verification of `n` signed peer records (the floor of a REGISTER's cost).
fn verify_bench(n: usize, format: RecordFormat, as_json: bool) -> CliResult {
    if n == 0 || n > 10_000_000 {
        return Err(CliError::Usage(format!(
            "--verify-bench {n}: expected 1 to 10000000"
        )));
    }
    // A handful of distinct records, verified round-robin: signing is not what is measured.
    let records: Vec<Arc<[u8]>> = (0..n.min(64))
        .map(|i| {
            let key = Keypair::generate_ed25519();
            let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i)
                .parse()
                .expect("a valid literal multiaddr");
            SignedRecord::new(&key, vec![addr], format).map(|r| Arc::from(r.envelope_bytes()))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::Failed(format!("cannot sign a peer record: {e}")))?;
    let started = Instant::now();
    for i in 0..n {
        let record = SignedRecord::from_bytes(&records[i % records.len()])
            .map_err(|e| CliError::Failed(format!("a record we signed does not verify: {e}")))?;
        std::hint::black_box(record);
    }
    let per_record_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    if as_json {
        println!(
            "{}",
            json!({ "verify_records": n, "record_format": format.to_string(), "verify_us_per_record": per_record_us })
        );
    } else {
        println!("verified {n} {format} signed peer records: {per_record_us:.2} us each");
    }
    Ok(ExitCode::SUCCESS)
}
