//! The timed phases of a load run, one function each: connect every peer, register every
//! client in every namespace, let every discoverer page through everything.

use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use libp2p::Multiaddr;
use rendezvous_discovery::{
    codec::{Message, NewRegistration},
    Namespace, SignedRecord,
};

use super::{
    client::{self, Client, Walk},
    report::Phase,
    Config,
};
use crate::common::CliError;

/// Connects `total` clients, each with its own identity: all at once, as real clients reach a
/// server (after it restarts, every client dials in the same second), or at most
/// `--max-dialing` at a time. Each dials once: a dial the server refuses is what a run must
/// show, so it fails the run. (A real client dials again after a backoff of a second or more,
/// ours included; the retry 50 ms later that `load` used to make only hid the refusals.)
pub(super) async fn connect(
    config: &Config,
    total: usize,
) -> Result<(Vec<Client>, Phase), CliError> {
    let started = Instant::now();
    let dialing = config.max_dialing.unwrap_or(total).max(1);
    let results: Vec<(Result<Client, String>, Duration)> = stream::iter(0..total)
        .map(|_| async {
            let t = Instant::now();
            let client = Client::connect(
                config.server.clone(),
                config.server_peer,
                None,
                config.streams_per_client,
                client::TIMEOUT,
            )
            .await;
            (client, t.elapsed())
        })
        .buffered(dialing)
        .collect()
        .await;
    let mut phase = Phase::new("connect", started.elapsed());
    let mut peers = Vec::with_capacity(total);
    let mut first_error = None;
    for (result, latency) in results {
        match result {
            Ok(client) => {
                phase.ok(latency);
                peers.push(client);
            }
            Err(e) => {
                phase.errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(CliError::Failed(format!(
            "{} of {total} connections to {} failed; first: {e}",
            phase.errors, config.server
        )));
    }
    Ok((peers, phase))
}

/// Registers each discoverer once in `namespace`, before the timed phases.
///
/// A server that tailors pages to each peer's record format (ours serves peers that never
/// registered legacy records only, what rust-libp2p 0.18 clients decode) must know that
/// standard-format discoverers read standard records.
pub(super) async fn announce_format(
    config: &Config,
    discoverers: &[Client],
    namespace: Namespace,
) -> Result<(), CliError> {
    for discoverer in discoverers {
        let addr = "/ip4/127.0.0.1/tcp/9"
            .parse()
            .expect("a valid literal multiaddr");
        let record = SignedRecord::new(&discoverer.key, vec![addr], config.format)
            .map_err(|e| CliError::Failed(format!("cannot sign a peer record: {e}")))?;
        let message = Message::Register(NewRegistration {
            namespace: namespace.clone(),
            record,
            ttl: config.ttl,
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
    Ok(())
}

/// Registers every client in every namespace, `concurrency` requests in flight; returns the
/// phase and the first refusal or failure.
pub(super) async fn register(
    config: &Config,
    clients: &[Client],
    namespaces: &[Namespace],
) -> Result<(Phase, Option<String>), CliError> {
    let records: Vec<SignedRecord> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i % 50_000)
                .parse()
                .expect("a valid literal multiaddr");
            SignedRecord::new(&c.key, vec![addr], config.format)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::Failed(format!("cannot sign a peer record: {e}")))?;
    // Namespace-major order spreads the window over all clients' connections (rust-libp2p's
    // server takes at most 100 concurrent streams per connection).
    let work = (0..namespaces.len()).flat_map(|k| (0..clients.len()).map(move |c| (c, k)));
    let started = Instant::now();
    let results: Vec<(Result<(), String>, Duration)> = stream::iter(work)
        .map(|(c, k)| {
            let message = Message::Register(NewRegistration {
                namespace: namespaces[k].clone(),
                record: records[c].clone(),
                ttl: config.ttl,
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
        .buffer_unordered(config.concurrency)
        .collect()
        .await;
    let mut phase = Phase::new("register", started.elapsed());
    let mut first_error = None;
    for (result, latency) in results {
        match result {
            Ok(()) => phase.ok(latency),
            Err(e) => {
                phase.errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    Ok((phase, first_error))
}

/// Every discoverer pages through every scope, all concurrently; returns the phase and what
/// each discoverer saw.
pub(super) async fn discover(
    discoverers: &[Client],
    scopes: &[Option<Namespace>],
    limit: u64,
) -> (Phase, Vec<Walk>) {
    let started = Instant::now();
    let walks: Vec<Walk> =
        futures::future::join_all(discoverers.iter().map(|d| d.walk(scopes, limit))).await;
    let mut phase = Phase::new("discover", started.elapsed());
    for walk in &walks {
        for latency in &walk.latencies {
            phase.ok(*latency);
        }
        phase.errors += walk.errors;
    }
    (phase, walks)
}
