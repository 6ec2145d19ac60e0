//! `rendezvous load`: a load generator for any rendezvous server.
//!
//! C clients, each with its own identity and its own connection, dial all at once as real
//! clients do (or `--max-dialing` at a time) and register in K namespaces (C*K registrations); then D discoverers connect and page through everything with cookies
//! (the connect phase counts the C clients). Each phase is
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

use std::{collections::HashMap, process::ExitCode};

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use rendezvous_discovery::{Namespace, RecordFormat, Ttl, MAX_DISCOVER_LIMIT};

use crate::{
    common::{CliError, CliResult},
    output::outln,
};

mod client;
mod phases;
mod report;
mod verify;

pub(crate) use client::Client;

use report::{Report, ServerSample, Verdict};

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
    /// Requests in flight at once, over all clients.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Connection attempts (TCP, noise, yamux) in flight at once. Without it every client dials
    /// at once, as the clients of a server do when it comes back after a restart; a failed dial
    /// is not tried again and fails the run.
    #[arg(long, value_name = "N")]
    max_dialing: Option<usize>,
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
        return verify::run(n, args.record_format, args.json);
    }
    let config = Config::from_args(&args)?;
    let report = config.run().await?;
    if args.json {
        outln!("{}", report.json());
    } else {
        outln!("{}", report.text().trim_end());
    }
    Ok(if report.exactly_once() {
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
    /// Dials in flight at once (`None`: all).
    max_dialing: Option<usize>,
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
        if let Some(n) = args.max_dialing {
            in_range("max-dialing", n, MAX_CLIENTS)?;
        }
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
            max_dialing: args.max_dialing,
            streams_per_client: args.streams_per_client,
            server_pid: args.server_pid,
        })
    }

    /// The phases in order (connect, register, discover), the server sampled between them,
    /// then the exactly-once check.
    async fn run(&self) -> Result<Report, CliError> {
        // A fresh prefix per run keeps registrations of earlier runs out of this run's namespaces.
        let run_id: u32 = rand::random();
        let namespace = |suffix: &str| {
            Namespace::new(format!("load-{run_id:08x}-{suffix}"))
                .map_err(|e| CliError::Failed(format!("cannot build namespace: {e}")))
        };
        let namespaces: Vec<Namespace> = (0..self.namespaces)
            .map(|k| namespace(&k.to_string()))
            .collect::<Result<_, _>>()?;
        let mut samples = vec![ServerSample::take(self.server_pid)];

        let (clients, connect) = phases::connect(self, self.clients).await?;
        samples.push(ServerSample::take(self.server_pid));

        let (register, register_error) = phases::register(self, &clients, &namespaces).await?;
        // The discoverers connect now, not with the clients: a server closes a connection that
        // holds no registration and asks nothing (`serve --idle-timeout`, 30 s by default), and
        // a large register phase outlasts that.
        let (discoverers, _) = phases::connect(self, self.discoverers).await?;
        if self.format == RecordFormat::Standard {
            phases::announce_format(self, &discoverers, namespace("discoverers")?).await?;
        }
        samples.push(ServerSample::take(self.server_pid));

        let scopes: Vec<Option<Namespace>> = match self.scope {
            Scope::Namespaces => namespaces.iter().cloned().map(Some).collect(),
            Scope::All => vec![None],
        };
        let (discover, walks) = phases::discover(&discoverers, &scopes, self.limit).await;
        samples.push(ServerSample::take(self.server_pid));

        // Exactly once: every (peer, namespace) registered, seen once by every discoverer.
        let expected: HashMap<(PeerId, Namespace), ()> = clients
            .iter()
            .flat_map(|c| namespaces.iter().map(move |ns| ((c.peer, ns.clone()), ())))
            .collect();
        let verdicts: Vec<Verdict> = walks.iter().map(|w| Verdict::of(w, &expected)).collect();
        let received = walks.iter().map(|w| w.received).sum();
        let first_error = register_error.or_else(|| walks.iter().find_map(|w| w.error.clone()));

        for client in clients.iter().chain(&discoverers) {
            client.task.abort();
        }
        Ok(Report::new(
            self,
            [connect, register, discover],
            &samples,
            verdicts,
            received,
            first_error,
        ))
    }
}
