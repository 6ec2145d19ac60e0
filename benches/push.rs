//! Push discovery (issue 21, docs/push.md): the time from a REGISTER's acknowledgement to the
//! `Discovered` event at each subscriber, the server CPU per pushed record, and REGISTER
//! throughput with and without subscribers; beside polling at 1 s.
//!
//! `cargo bench --features redis --bench push` (needs Linux /proc and `redis-server` on the
//! PATH). Everything runs on 127.0.0.1: the real `rendezvous serve` binary (memory, SQLite with
//! `--sync full`, and a fleet of two instances on a `redis-server` of the bench's own, where
//! REGISTERs go to instance A and the subscribers are on instance B), and in this process real
//! swarms of the crate's client (TCP, noise, yamux, identify), each subscriber and each
//! registrant its own identity with its own connection.
//!
//! For each store:
//! - **throughput, none**: `PUSH_BENCH_REGISTRANTS` (100) registrants, connected first, each
//!   sending `PUSH_BENCH_ROUNDS_NONE` (50) REGISTERs one after the other, all at once, before
//!   any subscriber exists, and again after the last subscriber has left: REGISTERs per second
//!   and server CPU per REGISTER (enough of them for the CPU clock's 10 ms ticks).
//! - **latency** with 1, 100 and 1000 subscribers (`PUSH_BENCH_SUBSCRIBERS`) of the namespace
//!   (added to the ones before; the bench waits until the server reports them all subscribed):
//!   `PUSH_BENCH_SAMPLES` (100) fresh registrants register one at a time, each after every
//!   subscriber saw the one before; each subscriber stamps its `Discovered` event, and the
//!   latency is that stamp minus the moment the registrant's `Registered` event (the
//!   acknowledgement) came. Negative: the push came before the acknowledgement (the SQLite
//!   store answers a REGISTER after its group commit, and may push before it; and the
//!   acknowledgement may wait for the registrants' core when it is busy). The same stamps
//!   are also given from the moment the REGISTER was sent, and beside them the REGISTERs' own
//!   round trips (sent to acknowledged: what pushing costs the registrant). The subscribers
//!   poll once an hour, so everything they find after their first poll came by push. Server CPU
//!   per push: utime + stime of every `serve` process over the phase, divided by the pushes the
//!   pushing server counted (`libp2p_rendezvous_server_pushes_total`). Beside it, the
//!   **subscribers' floor**: how long the subscribers' thread takes, in the same run, to check
//!   as many pushed records as there are subscribers (decode the envelope and verify its
//!   signature, as each subscriber must with each push), and the p99 over that floor. The
//!   subscribers share one thread here, so the floor is what no server can take off their
//!   latency, and the ratio compares runs on machines (or days) of different speeds. And the
//!   server's own part: how long the pushing server's pushes waited, from their change
//!   reaching it to their write (`libp2p_rendezvous_server_push_delay_seconds` over the
//!   phase): the mean, and the bound of the bucket that holds the p99.
//! - **throughput, 1000 subscribers**: as the first phase, with every subscriber connected and
//!   `PUSH_BENCH_ROUNDS` (50, as many as without) REGISTERs each. Besides the ratio of
//!   REGISTERs per second, the ratio of the server's CPU per REGISTER: REGISTERs per server
//!   CPU-second. Requests come before pushes (the server's gate), so during the burst the
//!   subscribers' queues fill and their subscriptions are left behind (caught up from their
//!   cookies after the burst; a server before that change ended them, and its subscribers
//!   came back with DISCOVER); what the server still pushes, and how many subscriptions were
//!   left behind or ended, are counted until a second after the last acknowledgement.
//! - Each throughput phase is `PUSH_BENCH_BURSTS` (3) bursts, each with fresh registrants (and,
//!   with subscribers, once they are all subscribed: a burst may end their subscriptions), and
//!   each once the burst before has settled: the pushing server has written no push and the
//!   subscribers have seen nothing for [`SETTLE`] (the subscriptions it left behind caught
//!   up, the removals of the registrants that left delivered), so that a burst measures its
//!   own REGISTERs, not the tail of the one before (how long each took is printed);
//!   the table reports the burst with the median rate, and every burst's rate.
//!   Without subscribers that is the median of the bursts before and after the phases with
//!   them, so that the machine's drift over a run weighs on both sides of the ratio.
//!   One burst's rate moves from run to run by about 10% on this machine, more than most of what
//!   the ratio measures.
//!
//! `PUSH_BENCH_PIN=1` pins the servers (every `serve` process and redis-server) to CPU 0 and
//! this process (every client swarm) to CPU 1 (`taskset`), so the server's CPU per push and
//! REGISTER throughput are the server's, not what is left beside 1000 receiving swarms.
//! `PUSH_BENCH_BIN=PATH` runs another build of `rendezvous` as the servers (a baseline, run
//! with the same bench in the same session).
//! `PUSH_BENCH_SUBSCRIBER_THREADS` (1) is how many threads the subscribers' runtime has; with
//! 2 and without `PUSH_BENCH_PIN`, the subscribers may use the core the servers leave idle.
//! `PUSH_BENCH_SERVE_FLAGS` adds flags to every `serve` process (say `--push-quiet-ms 20`).
//!
//! Then polling: a memory server with push off (`--max-subscriptions 0`), `PUSH_BENCH_POLLERS`
//! (100) clients polling every second, and `PUSH_BENCH_POLL_SAMPLES` (20) registrations one at
//! a time, each after a pause drawn uniformly from 0..1 s (so that it falls anywhere between two
//! polls). Polling at the default interval (60 s) is not run: a poller finds a registration at
//! its next poll, which is uniformly 0..60 s away, so its p50, p99 and max are 30, 59.4 and 60 s
//! plus one DISCOVER (the row shown is that model; the 1 s run checks it).

#[allow(unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{swarm::SwarmEvent, PeerId};
use rendezvous_discovery::{
    client::{self, Event},
    Namespace, RecordFormat, SignedRecord,
};
use support::{
    fleet::{self, Redis},
    serve::Serve,
    WithIdentify, WithIdentifyEvent,
};
use tokio::{sync::mpsc, task::JoinHandle};

/// The one namespace every subscriber follows.
const NAMESPACE: &str = "push-bench";

/// TTL of every registration: longer than the bench.
const TTL: u64 = 7200;

/// How long every subscriber may take to see one registration before the bench counts the
/// ones that did not as missing and goes on.
const WAIT: Duration = Duration::from_secs(10);

/// How long the bench waits for subscribers to connect and subscribe.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(120);

/// How long nothing may be pushed or seen before a burst starts ([`wait_settled`]).
const SETTLE: Duration = Duration::from_millis(300);

/// Flags of every server: no request rate limit (the bench measures the server, not the rate
/// limiter), metrics for the subscription and push counts.
const COMMON_FLAGS: [&str; 4] = ["--requests-per-second", "0", "--metrics", "127.0.0.1:0"];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    if pinned() {
        // Before the runtime starts: its threads inherit the main thread's CPU.
        pin(std::process::id(), CLIENT_CPU, false);
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(run());
}

/// The CPU of the servers and the CPU of the clients, with `PUSH_BENCH_PIN=1`.
const SERVER_CPU: &str = "0";
const CLIENT_CPU: &str = "1";

/// Whether `PUSH_BENCH_PIN=1`.
fn pinned() -> bool {
    std::env::var("PUSH_BENCH_PIN").is_ok_and(|v| v == "1")
}

/// Pins process `pid` to `cpu`: with `all`, every thread it has (a child started from this
/// process inherited the clients' CPU); threads it starts later inherit it.
fn pin(pid: u32, cpu: &str, all: bool) {
    let pid = pid.to_string();
    let mut args = vec!["-p", "-c", cpu, &pid];
    if all {
        args.insert(0, "-a");
    }
    let status = std::process::Command::new("taskset")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset (util-linux) runs");
    assert!(status.success(), "taskset {args:?}: {status}");
}

/// A `rendezvous serve` with `args`: `PUSH_BENCH_BIN` or this build; on [`SERVER_CPU`] when
/// pinned.
fn serve(args: Vec<String>) -> Serve {
    let bin = std::env::var_os("PUSH_BENCH_BIN").unwrap_or(support::serve::BIN.into());
    let serve = Serve::start_bin(&bin, "/ip4/127.0.0.1/tcp/0", args);
    if pinned() {
        pin(serve.pid(), SERVER_CPU, true);
    }
    serve
}

/// What the environment asks for.
struct Plan {
    stores: Vec<Store>,
    subscribers: Vec<usize>,
    samples: usize,
    registrants: usize,
    rounds: usize,
    rounds_none: usize,
    /// Bursts per throughput phase; the median one is reported.
    bursts: usize,
    pollers: usize,
    poll_samples: usize,
}

async fn run() {
    let stores = std::env::var("PUSH_BENCH_STORES").unwrap_or("memory sqlite fleet".into());
    let plan = Plan {
        stores: stores
            .split_whitespace()
            .map(|s| Store::parse(s).unwrap_or_else(|| panic!("unknown store {s}")))
            .collect(),
        subscribers: std::env::var("PUSH_BENCH_SUBSCRIBERS")
            .unwrap_or("1 100 1000".into())
            .split_whitespace()
            .map(|n| n.parse().expect("a subscriber count"))
            .collect(),
        samples: env_or("PUSH_BENCH_SAMPLES", 100),
        registrants: env_or("PUSH_BENCH_REGISTRANTS", 100),
        rounds: env_or("PUSH_BENCH_ROUNDS", 50),
        rounds_none: env_or("PUSH_BENCH_ROUNDS_NONE", 50),
        bursts: env_or("PUSH_BENCH_BURSTS", 3).max(1),
        pollers: env_or("PUSH_BENCH_POLLERS", 100),
        poll_samples: env_or("PUSH_BENCH_POLL_SAMPLES", 20),
    };
    let mut latency_rows = Vec::new();
    let mut throughput_rows = Vec::new();
    for store in &plan.stores {
        let (latency, throughput) = bench_store(*store, &plan).await;
        latency_rows.extend(latency);
        throughput_rows.push(throughput);
    }
    let polling = if plan.pollers > 0 && plan.poll_samples > 0 {
        Some(bench_polling(&plan).await)
    } else {
        None
    };
    print_report(&latency_rows, &throughput_rows, polling.as_ref());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Sqlite,
    Fleet,
}

impl Store {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "memory" => Some(Self::Memory),
            "sqlite" => Some(Self::Sqlite),
            "fleet" => Some(Self::Fleet),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "SQLite (`--sync full`)",
            Self::Fleet => "Redis fleet (A → B)",
        }
    }
}

/// The server processes of one store: REGISTERs go to `register_at`, subscribers connect to
/// `push_from` (the same process except in the fleet).
struct Servers {
    register_at: Serve,
    other: Option<Serve>,
    redis: Option<Redis>,
    _dir: Option<tempfile::TempDir>,
}

/// `PUSH_BENCH_SERVE_FLAGS`, split at whitespace: more flags for every `serve` process.
fn serve_flags() -> Vec<String> {
    std::env::var("PUSH_BENCH_SERVE_FLAGS")
        .map(|flags| flags.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

impl Servers {
    fn start(store: Store, extra: &[&str]) -> Self {
        let more = serve_flags();
        let flags = |own: &[&str]| -> Vec<String> {
            COMMON_FLAGS
                .iter()
                .chain(own)
                .chain(extra)
                .map(|s| s.to_string())
                .chain(more.iter().cloned())
                .collect()
        };
        match store {
            Store::Memory => Self {
                register_at: serve(flags(&["--ephemeral"])),
                other: None,
                redis: None,
                _dir: None,
            },
            Store::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let data = dir.path().join("data");
                let data = data.to_str().expect("a UTF-8 temporary path");
                Self {
                    register_at: serve(flags(&["--data-dir", data, "--sync", "full"])),
                    other: None,
                    redis: None,
                    _dir: Some(dir),
                }
            }
            Store::Fleet => {
                let redis = Redis::start();
                if let (true, Some(pid)) = (pinned(), redis.pid()) {
                    pin(pid, SERVER_CPU, true);
                }
                let url = redis.url();
                Self {
                    register_at: serve(flags(&["--store", &url])),
                    other: Some(serve(flags(&["--store", &url]))),
                    redis: Some(redis),
                    _dir: None,
                }
            }
        }
    }

    fn push_from(&self) -> &Serve {
        self.other.as_ref().unwrap_or(&self.register_at)
    }

    /// CPU time of every `serve` process and of redis-server, so far.
    fn cpu(&self) -> Cpu {
        let servers = std::iter::once(&self.register_at)
            .chain(&self.other)
            .map(|s| cpu_of(s.pid()))
            .sum();
        let redis = self
            .redis
            .as_ref()
            .map_or(Duration::ZERO, |r| r.pid().map_or(Duration::ZERO, cpu_of));
        Cpu { servers, redis }
    }

    /// A sample of the pushing server's `/metrics`.
    async fn metric(&self, series: &str) -> f64 {
        self.scrape().await.get(series).copied().unwrap_or(0.0)
    }

    /// The pushing server's metrics.
    async fn scrape(&self) -> std::collections::BTreeMap<String, f64> {
        let address = self.push_from().metrics.expect("started with --metrics");
        let (_, _, body) = support::http::get(address, "/metrics").await;
        support::http::parse(&body)
    }
}

/// The pushing server's `push_delay_seconds` histogram, at one moment: the cumulative count at
/// each bucket bound (seconds, `+Inf` last), and the sum (seconds).
#[derive(Debug, Clone, Default)]
struct Delays {
    buckets: Vec<(f64, f64)>,
    sum: f64,
}

impl Delays {
    const NAME: &str = "libp2p_rendezvous_server_push_delay_seconds";

    fn parse(scraped: &std::collections::BTreeMap<String, f64>) -> Self {
        let prefix = format!("{}_bucket{{le=\"", Self::NAME);
        let mut buckets: Vec<(f64, f64)> = scraped
            .iter()
            .filter_map(|(series, n)| {
                let le = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *n))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let sum = scraped
            .get(&format!("{}_sum", Self::NAME))
            .copied()
            .unwrap_or(0.0);
        Self { buckets, sum }
    }

    /// What was counted since `before`: the mean (ms) and the bound (ms) of the bucket that holds
    /// the p99; `None` when nothing was.
    fn since(&self, before: &Delays) -> Option<(f64, f64)> {
        let earlier = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, n)| *n)
        };
        let moved: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(le, n)| (*le, n - earlier(*le)))
            .collect();
        let count = moved.last()?.1;
        if count <= 0.0 {
            return None;
        }
        let p99 = moved.iter().find(|(_, n)| *n >= 0.99 * count)?.0;
        Some(((self.sum - before.sum) / count * 1e3, p99 * 1e3))
    }
}

const SUBSCRIPTIONS: &str = "libp2p_rendezvous_server_subscriptions";
const PUSHES: &str = "libp2p_rendezvous_server_pushes_total";
const DISCOVERS: &str = "libp2p_rendezvous_server_requests_total{type=\"discover\",status=\"ok\"}";
const OVERFLOWS: &str = "libp2p_rendezvous_server_subscriptions_ended_total{reason=\"overflow\"}";
const BEHIND: &str = "libp2p_rendezvous_server_subscriptions_behind_total";

#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    servers: Duration,
    redis: Duration,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, rhs: Cpu) -> Cpu {
        Cpu {
            servers: self.servers.saturating_sub(rhs.servers),
            redis: self.redis.saturating_sub(rhs.redis),
        }
    }
}

/// utime + stime of process `pid` (Linux `/proc/PID/stat`, in clock ticks of 10 ms: Linux
/// reports USER_HZ = 100 to user space on every architecture it runs on).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("Linux /proc");
    // The command name (field 2) may hold spaces; the fields after it do not.
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of the line are the 12th and 13th after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// What each subscriber reports: which subscriber, the peer it discovered, when.
type Sighting = (usize, PeerId, Instant);

/// Subscriber swarms (or pollers), each its own swarm in its own task, on a runtime of their own
/// whose threads are `SCHED_IDLE`: they stand in for peers on other machines, so they run only
/// on cycles nothing else wants, and the servers and the registrants never wait for them (at
/// nice 19, which this used before, a waking server or registrant could still wait behind a
/// subscriber's slice). So REGISTER throughput measures the server and not 1000 swarms
/// decrypting, decoding and verifying pushes beside it; the subscribers still get every cycle
/// the others leave, on both cores unless pinned.
struct Subscribers {
    runtime: Option<tokio::runtime::Runtime>,
    tasks: Vec<JoinHandle<()>>,
    tx: mpsc::UnboundedSender<Sighting>,
    rx: mpsc::UnboundedReceiver<Sighting>,
}

impl Subscribers {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(env_or("PUSH_BENCH_SUBSCRIBER_THREADS", 1))
            .enable_all()
            .on_thread_start(|| {
                // Linux: 0 is the calling thread; taking SCHED_IDLE for oneself needs no
                // privilege.
                let param = libc::sched_param { sched_priority: 0 };
                let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
                assert_eq!(idle, 0, "SCHED_IDLE for the subscribers' thread");
            })
            .build()
            .expect("the subscribers' runtime");
        Self {
            runtime: Some(runtime),
            tasks: Vec::new(),
            tx,
            rx,
        }
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Adds clients of `server` in [`NAMESPACE`] until there are `total`, polling every
    /// `interval`.
    fn grow(&mut self, server: &Serve, total: usize, interval: Duration) {
        for index in self.len()..total {
            let config = client::Config::default()
                .with_server(server.peer, vec![server.addr.clone()])
                .with_namespace(Namespace::from_static(NAMESPACE))
                .with_registration(false)
                .with_interval(interval);
            let tx = self.tx.clone();
            let runtime = self.runtime.as_ref().expect("until dropped");
            self.tasks.push(runtime.spawn(async move {
                let mut swarm = support::tcp::swarm(|key| {
                    WithIdentify::new(key.clone(), |key| client::Behaviour::new(key, config))
                });
                loop {
                    if let SwarmEvent::Behaviour(WithIdentifyEvent::Rendezvous(
                        Event::Discovered { peer, .. },
                    )) = swarm.select_next_some().await
                    {
                        let _ = tx.send((index, peer, Instant::now()));
                    }
                }
            }));
        }
    }

    /// How long the subscribers' thread takes to check `n` pushed records: decode the signed
    /// envelope and verify its signature, as every subscriber does with every record pushed to
    /// it. `n` subscribers on that one thread spend at least this on each registration,
    /// whatever the server does: the latency's floor on this machine, measured in the same run
    /// (median of three, while the subscribers are idle).
    async fn floor(&self, n: usize) -> Duration {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let address = "/ip4/127.0.0.1/tcp/4001".parse().expect("a multiaddr");
        let record = SignedRecord::new(&key, vec![address], RecordFormat::Standard)
            .expect("an ed25519 key signs");
        let runtime = self.runtime.as_ref().expect("until dropped");
        let mut times = Vec::new();
        for _ in 0..3 {
            let bytes = record.envelope_bytes().to_vec();
            let check = runtime.spawn(async move {
                let start = Instant::now();
                for _ in 0..n {
                    SignedRecord::from_bytes(std::hint::black_box(&bytes)).expect("a valid record");
                }
                start.elapsed()
            });
            times.push(check.await.expect("the check runs"));
        }
        times.sort();
        times[1]
    }

    /// Sightings received so far, without waiting.
    fn drain(&mut self) -> usize {
        std::iter::from_fn(|| self.rx.try_recv().ok()).count()
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Dropped inside the bench's runtime, where a runtime may not block to shut down.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Waits until the pushing server reports `n` subscriptions open.
async fn wait_subscribed(servers: &Servers, n: usize) {
    wait_open(servers, |open| open >= n, "subscribed").await;
}

/// Waits until the pushing server reports no subscription open (the subscribers are gone).
async fn wait_unsubscribed(servers: &Servers) {
    wait_open(
        servers,
        |open| open == 0,
        "still open after their subscribers left",
    )
    .await;
    // Their connections closed with them; let the server finish with them.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Polls the pushing server's open subscriptions until `done`, for at most [`SUBSCRIBE_WAIT`].
async fn wait_open(servers: &Servers, done: impl Fn(usize) -> bool, what: &str) {
    let deadline = Instant::now() + SUBSCRIBE_WAIT;
    loop {
        let open = servers.metric(SUBSCRIPTIONS).await as usize;
        if done(open) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} subscriptions {what} after {SUBSCRIBE_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Registrant = support::node::Node<client::Behaviour>;

/// `n` registrants, each its own identity, connected to `server`.
async fn registrants(server: &Serve, n: usize) -> Vec<Registrant> {
    let connect = |_| async {
        let mut node = fleet::client(&[server]);
        node.dial(server.addr.clone());
        node.wait_connected(server.peer).await;
        node
    };
    futures::stream::iter(0..n)
        .map(connect)
        .buffer_unordered(32)
        .collect()
        .await
}

/// Registers `node` in [`NAMESPACE`] at `server`; panics if refused.
async fn register(node: &mut Registrant, server: PeerId) {
    fleet::register(node, server, NAMESPACE, TTL)
        .await
        .expect("REGISTER accepted");
}

/// Latency of one phase: per (registration, subscriber), the `Discovered` stamp minus the
/// acknowledgement, in milliseconds; and what the servers spent.
struct LatencyRow {
    store: &'static str,
    subscribers: usize,
    samples: Vec<f64>,
    /// The same stamps from the moment the REGISTER was sent.
    from_sent: Vec<f64>,
    /// Each REGISTER's round trip: sent to acknowledged.
    round_trips: Vec<f64>,
    missing: usize,
    cpu: Cpu,
    pushes: f64,
    /// [`Subscribers::floor`] for this many subscribers.
    floor: Duration,
    /// How long the pushing server's pushes waited, from their change to their write (its
    /// `push_delay_seconds`): the mean and the p99's bucket bound, in ms.
    written: Option<(f64, f64)>,
}

struct ThroughputRow {
    store: &'static str,
    none: Throughput,
    with: Option<(usize, Throughput)>,
}

struct Throughput {
    per_second: f64,
    /// Every burst's REGISTERs per second and DISCOVERs answered during it, this one's among
    /// them, slowest first.
    bursts: Vec<(f64, f64)>,
    cpu_per_register: Duration,
    /// The servers' CPU from the first REGISTER until the pushes were counted, per push.
    cpu_per_push: Option<Duration>,
    /// The servers' CPU over the burst, per second of it (1.0: one core busy throughout).
    busy: f64,
    pushes: f64,
    overflows: f64,
    /// Subscriptions left behind (their queues filled while their pushes waited; caught up
    /// from their cookies afterwards).
    behind: f64,
    /// DISCOVERs the pushing server answered during the burst (subscribers catching up).
    discovers: f64,
}

async fn bench_store(store: Store, plan: &Plan) -> (Vec<LatencyRow>, ThroughputRow) {
    eprintln!("{}: starting", store.name());
    let servers = Servers::start(store, &[]);
    eprintln!("{}: throughput without subscribers", store.name());
    let mut none = bursts(&servers, plan, plan.rounds_none, None).await;
    let mut subscribers = Subscribers::new();
    let mut rows = Vec::new();
    for &n in &plan.subscribers {
        eprintln!("{}: {n} subscribers", store.name());
        subscribers.grow(servers.push_from(), n, Duration::from_secs(3600));
        wait_subscribed(&servers, n).await;
        // The subscribers' first polls found the throughput phase's registrants (their
        // registrations ended when they disconnected, but may not have been removed yet).
        tokio::time::sleep(Duration::from_millis(500)).await;
        subscribers.drain();
        rows.push(
            latency(
                store,
                &servers,
                &mut subscribers,
                plan.samples,
                Pause::Fixed,
            )
            .await,
        );
    }
    let with = if subscribers.len() > 0 {
        eprintln!(
            "{}: throughput with {} subscribers",
            store.name(),
            subscribers.len()
        );
        let with = median(bursts(&servers, plan, plan.rounds, Some(&mut subscribers)).await);
        let n = subscribers.len();
        // The bursts without subscribers again, after the ones with them: this machine's rate
        // drifts over a run (by up to 2x within minutes on a busy host), and a baseline taken
        // on both sides weighs the drift on both sides of the ratio alike.
        drop(subscribers);
        wait_unsubscribed(&servers).await;
        eprintln!("{}: throughput without subscribers, again", store.name());
        none.extend(bursts(&servers, plan, plan.rounds_none, None).await);
        Some((n, with))
    } else {
        None
    };
    let none = median(none);
    (
        rows,
        ThroughputRow {
            store: store.name(),
            none,
            with,
        },
    )
}

/// What comes before each registration of a latency phase.
#[derive(Clone, Copy)]
enum Pause {
    /// 20 ms (the subscribers saw the one before).
    Fixed,
    /// Uniform in 0..the interval: a registration at any point between two polls.
    UpTo(Duration),
}

/// `samples` fresh registrants register one at a time; every subscriber's `Discovered` of each
/// is stamped against its acknowledgement.
async fn latency(
    store: Store,
    servers: &Servers,
    subscribers: &mut Subscribers,
    samples: usize,
    pause: Pause,
) -> LatencyRow {
    let server = servers.register_at.peer;
    let mut nodes = registrants(&servers.register_at, samples).await;
    let n = subscribers.len();
    let floor = subscribers.floor(n).await;
    let pushes0 = servers.metric(PUSHES).await;
    let delays0 = Delays::parse(&servers.scrape().await);
    let cpu0 = servers.cpu();
    let mut acked: HashMap<PeerId, (Instant, Instant)> = HashMap::new();
    let mut seen: HashMap<PeerId, Vec<Instant>> = HashMap::new();
    let mut missing = 0;
    for node in &mut nodes {
        let wait = match pause {
            Pause::Fixed => Duration::from_millis(20),
            Pause::UpTo(max) => max.mul_f64(rand::random::<f64>()),
        };
        tokio::time::sleep(wait).await;
        let sent = Instant::now();
        register(node, server).await;
        acked.insert(node.peer, (sent, Instant::now()));
        let deadline = tokio::time::Instant::now() + WAIT;
        while seen.get(&node.peer).map_or(0, Vec::len) < n {
            match tokio::time::timeout_at(deadline, subscribers.rx.recv()).await {
                Ok(Some((_, peer, at))) => seen.entry(peer).or_default().push(at),
                Ok(None) => unreachable!("the bench holds a sender"),
                Err(_) => {
                    missing += n - seen.get(&node.peer).map_or(0, Vec::len);
                    break;
                }
            }
        }
    }
    let cpu = servers.cpu() - cpu0;
    let pushes = servers.metric(PUSHES).await - pushes0;
    let written = Delays::parse(&servers.scrape().await).since(&delays0);
    // The registrants disconnect: their registrations are removed (and the removals pushed),
    // so the next phase's subscribers replay nothing.
    drop(nodes);
    tokio::time::sleep(Duration::from_millis(500)).await;
    subscribers.drain();
    let since = |pick: fn(&(Instant, Instant)) -> Instant| -> Vec<f64> {
        seen.iter()
            .filter_map(|(peer, stamps)| acked.get(peer).map(|times| (pick(times), stamps)))
            .flat_map(|(t0, stamps)| stamps.iter().map(move |at| signed_ms(*at, t0)))
            .collect()
    };
    LatencyRow {
        store: store.name(),
        subscribers: n,
        samples: since(|(_, acked)| *acked),
        from_sent: since(|(sent, _)| *sent),
        round_trips: acked
            .values()
            .map(|(sent, acked)| ms(*acked - *sent))
            .collect(),
        missing,
        cpu,
        pushes,
        floor,
        written,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn signed_ms(at: Instant, since: Instant) -> f64 {
    match at.checked_duration_since(since) {
        Some(d) => ms(d),
        None => -ms(since - at),
    }
}

/// [`throughput`] `plan.bursts` times, each once `subscribers` (if any) are (again)
/// subscribed and the burst before has settled: every burst's result. A burst with
/// subscribers may end their subscriptions (a server that ends those whose queues fill); the
/// next waits until they have caught up and subscribed again.
async fn bursts(
    servers: &Servers,
    plan: &Plan,
    rounds: usize,
    mut subscribers: Option<&mut Subscribers>,
) -> Vec<Throughput> {
    let mut runs = Vec::new();
    for burst in 1..=plan.bursts {
        let subscribed = subscribers.as_ref().map_or(0, |s| s.len());
        wait_subscribed(servers, subscribed).await;
        let settled = wait_settled(servers, subscribers.as_deref_mut()).await;
        eprintln!("  burst {burst}: settled in {:.1} s", settled.as_secs_f64());
        runs.push(throughput(servers, plan, rounds).await);
    }
    runs
}

/// Waits until the pushing server has written no push, and `subscribers` have seen nothing,
/// for [`SETTLE`]; at most [`SUBSCRIBE_WAIT`]. How long it took.
async fn wait_settled(servers: &Servers, mut subscribers: Option<&mut Subscribers>) -> Duration {
    let started = Instant::now();
    let mut pushes = servers.metric(PUSHES).await;
    loop {
        tokio::time::sleep(SETTLE).await;
        let now = servers.metric(PUSHES).await;
        let seen = subscribers.as_deref_mut().map_or(0, Subscribers::drain);
        if now == pushes && seen == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < SUBSCRIBE_WAIT,
            "still pushing after {SUBSCRIBE_WAIT:?}"
        );
        pushes = now;
    }
}

/// The burst with the median rate of `runs`, with every burst's rate (and DISCOVERs).
fn median(mut runs: Vec<Throughput>) -> Throughput {
    runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    let rates: Vec<(f64, f64)> = runs.iter().map(|r| (r.per_second, r.discovers)).collect();
    let mut median = runs.swap_remove(runs.len() / 2);
    median.bursts = rates;
    median
}

/// Every registrant sends its REGISTERs one after the other, all registrants at once.
async fn throughput(servers: &Servers, plan: &Plan, rounds: usize) -> Throughput {
    let server = servers.register_at.peer;
    let mut nodes = registrants(&servers.register_at, plan.registrants).await;
    let pushes0 = servers.metric(PUSHES).await;
    let overflows0 = servers.metric(OVERFLOWS).await;
    let behind0 = servers.metric(BEHIND).await;
    let discovers0 = servers.metric(DISCOVERS).await;
    let cpu0 = servers.cpu();
    let started = Instant::now();
    futures::future::join_all(nodes.iter_mut().map(|node| async move {
        for _ in 0..rounds {
            register(node, server).await;
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let cpu = servers.cpu() - cpu0;
    let total = (plan.registrants * rounds) as f64;
    let discovers = servers.metric(DISCOVERS).await - discovers0;
    // Pushes still queued when the last REGISTER was answered go out meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pushes = servers.metric(PUSHES).await - pushes0;
    let overflows = servers.metric(OVERFLOWS).await - overflows0;
    let behind = servers.metric(BEHIND).await - behind0;
    let cpu_after = servers.cpu() - cpu0;
    drop(nodes);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Throughput {
        per_second: total / elapsed.as_secs_f64(),
        bursts: Vec::new(),
        cpu_per_register: (cpu.servers + cpu.redis).div_f64(total),
        cpu_per_push: (pushes > 0.0).then(|| (cpu_after.servers + cpu_after.redis).div_f64(pushes)),
        busy: (cpu.servers + cpu.redis).as_secs_f64() / elapsed.as_secs_f64(),
        pushes,
        overflows,
        behind,
        discovers,
    }
}

async fn bench_polling(plan: &Plan) -> LatencyRow {
    eprintln!("polling every second: {} pollers", plan.pollers);
    let servers = Servers::start(Store::Memory, &["--max-subscriptions", "0"]);
    let mut pollers = Subscribers::new();
    pollers.grow(&servers.register_at, plan.pollers, Duration::from_secs(1));
    // Every poller's first poll (after identify, or two seconds without).
    tokio::time::sleep(Duration::from_secs(3)).await;
    pollers.drain();
    let mut row = latency(
        Store::Memory,
        &servers,
        &mut pollers,
        plan.poll_samples,
        Pause::UpTo(Duration::from_secs(1)),
    )
    .await;
    row.store = "memory, polling every 1 s (push off)";
    row
}

/// p50, p99 and max of `samples` (sorted in place).
fn quantiles(samples: &mut [f64]) -> Option<[f64; 3]> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Some([at(0.5), at(0.99), samples[samples.len() - 1]])
}

fn print_report(
    latency: &[LatencyRow],
    throughput: &[ThroughputRow],
    polling: Option<&LatencyRow>,
) {
    let bin = std::env::var("PUSH_BENCH_BIN").unwrap_or("this build".into());
    println!(
        "Servers: {bin} {}; pinned (servers CPU {SERVER_CPU}, clients CPU {CLIENT_CPU}): {}\n",
        serve_flags().join(" "),
        pinned()
    );
    println!("### Latency: REGISTER acknowledged → `Discovered` at each subscriber (ms)\n");
    println!("| store | subscribers | samples | missing | p50 | p99 | max | from sent: p50 | p99 | max | REGISTER round trip: p50 | p99 | server CPU / push (µs) | of which Redis | subscribers' floor | p99 / floor | server wrote the push: mean | p99 ≤ |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in latency.iter().chain(polling) {
        let [p50, p99, max] = quantiles(&mut row.samples.clone()).unwrap_or([f64::NAN; 3]);
        let [s50, s99, smax] = quantiles(&mut row.from_sent.clone()).unwrap_or([f64::NAN; 3]);
        let [r50, r99, _] = quantiles(&mut row.round_trips.clone()).unwrap_or([f64::NAN; 3]);
        let per_push = |d: Duration| {
            if row.pushes > 0.0 {
                format!("{:.1}", d.as_secs_f64() * 1e6 / row.pushes)
            } else {
                "-".into()
            }
        };
        println!(
            "| {} | {} | {} | {} | {p50:.1} | {p99:.1} | {max:.1} | {s50:.1} | {s99:.1} | {smax:.1} | {r50:.1} | {r99:.1} | {} | {} | {:.1} | {:.2}x | {} | {} |",
            row.store,
            row.subscribers,
            row.samples.len(),
            row.missing,
            per_push(row.cpu.servers + row.cpu.redis),
            per_push(row.cpu.redis),
            ms(row.floor),
            p99 / ms(row.floor),
            row.written
                .map_or("-".into(), |(mean, _)| format!("{mean:.1}")),
            row.written.map_or("-".into(), |(_, p99)| format!("{p99}")),
        );
    }
    if polling.is_some() {
        println!(
            "| polling every 60 s, the default (model: the next poll, uniform in 0..60 s) | - | - | - \
             | 30000 | 59400 | 60000 | - | - | - | - | - | - | - | - | - | - | - |"
        );
    }
    println!("\n### REGISTER throughput\n");
    println!("| store | REGISTER/s, no subscribers | with | ratio | server CPU / REGISTER (µs), none | with | ratio (none / with) | server CPU busy, with | pushes | server CPU / push (µs) | subscriptions ended by overflow / left behind | DISCOVERs during the burst | every burst (REGISTER/s, and DISCOVERs during it), none / with |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in throughput {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        match &row.with {
            Some((n, with)) => println!(
                "| {} | {:.0} | {:.0} ({n}) | {:.4}x | {:.0} | {:.0} | {:.4}x | {:.0}% | {:.0} | {} | {:.0} / {:.0} | {:.0} | {} / {} |",
                row.store,
                row.none.per_second,
                with.per_second,
                with.per_second / row.none.per_second,
                us(row.none.cpu_per_register),
                us(with.cpu_per_register),
                us(row.none.cpu_per_register) / us(with.cpu_per_register),
                with.busy * 100.0,
                with.pushes,
                with.cpu_per_push.map_or("-".into(), |d| format!("{:.1}", us(d))),
                with.overflows,
                with.behind,
                with.discovers,
                rates(&row.none.bursts),
                rates(&with.bursts),
            ),
            None => println!(
                "| {} | {:.0} | - | - | {:.0} | - | - | - | - | - | - | - | {} / - |",
                row.store,
                row.none.per_second,
                us(row.none.cpu_per_register),
                rates(&row.none.bursts),
            ),
        }
    }
}

/// Rates as `19.5k 20.1k (12) 21.0k`: a burst's DISCOVERs in brackets, where there were any.
fn rates(rates: &[(f64, f64)]) -> String {
    let each: Vec<String> = rates
        .iter()
        .map(|(rate, discovers)| {
            if *discovers > 0.0 {
                format!("{:.1}k ({discovers})", rate / 1e3)
            } else {
                format!("{:.1}k", rate / 1e3)
            }
        })
        .collect();
    each.join(" ")
}
