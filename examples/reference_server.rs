//! The reference rendezvous server: rust-libp2p's `libp2p-rendezvous` 0.18 server with identify
//! and ping, on TCP + noise + yamux, for interop checks and the wire benchmark
//! (`benches/wire.sh`).
//!
//! ```text
//! cargo run --example reference_server -- [--listen /ip4/127.0.0.1/tcp/0] [--default-limits]
//! ```
//!
//! Prints each listen address with `/p2p/<peer id>` on stdout, one per line, then serves until
//! killed.
//!
//! Its defaults (32 registrations per peer, 10,000 in total, TTL at least 2 h) cannot hold the
//! benchmark's loads, so unless `--default-limits` is given every limit its `Config` exposes is
//! raised. What its API does not let us change is listed in [`FIXED_LIMITS`].

use std::{error::Error, time::Duration};

use futures::StreamExt;
use libp2p::{
    identify, noise, ping, rendezvous, swarm::NetworkBehaviour, swarm::SwarmEvent, tcp, yamux,
    Multiaddr,
};

/// Registrations per peer and in total when raised: far above any benchmark load, small enough
/// that nothing overflows.
const RAISED_REGISTRATIONS: usize = 100_000_000;

/// Cookies the server remembers when raised (its LRU cache of discover cursors; the default is
/// 10,000). Each cookie holds the set of every registration id it has returned.
const RAISED_COOKIES: usize = 1_000_000;

/// The lowest TTL accepted when raised, in seconds (the default minimum is 2 h).
const RAISED_MIN_TTL: u64 = 1;

/// The highest TTL accepted when raised, in seconds (the default maximum is 72 h).
const RAISED_MAX_TTL: u64 = 365 * 24 * 60 * 60;

/// How long an idle connection stays open, so benchmark clients keep their connection between
/// phases.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// What `libp2p-rendezvous` 0.18 does not let a user configure (hard-coded in its source).
pub const FIXED_LIMITS: &str = "\
fixed in libp2p-rendezvous 0.18: message size 1 MiB (codec constant MAX_MESSAGE_LEN_BYTES); \
request-response Config::default() (10 s request timeout, 100 concurrent streams per \
connection, one request per stream); namespace <= 255 bytes; no page-size cap (a DISCOVER \
without limit returns every match); the per-peer limit check scans every registration \
(O(total) per REGISTER); registrations stay after disconnect until their TTL ends";

#[derive(NetworkBehaviour)]
struct Behaviour {
    rendezvous: rendezvous::server::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn usage(message: &str) -> ! {
    eprintln!("error: {message}");
    eprintln!("usage: reference_server [--listen <multiaddr>] [--default-limits]");
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let mut default_limits = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args
                    .next()
                    .unwrap_or_else(|| usage("--listen needs a multiaddr"));
                listen = value
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("--listen {value}: not a multiaddr ({e})")));
            }
            "--default-limits" => default_limits = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }

    let config = if default_limits {
        rendezvous::server::Config::default()
    } else {
        eprintln!(
            "reference_server: limits raised: {RAISED_REGISTRATIONS} registrations per peer and \
             in total, {RAISED_COOKIES} cookies, TTL {RAISED_MIN_TTL}..={RAISED_MAX_TTL} s; \
             {FIXED_LIMITS}"
        );
        rendezvous::server::Config::default()
            .with_max_registration_per_peer(RAISED_REGISTRATIONS)
            .with_max_registration_total(RAISED_REGISTRATIONS)
            .with_max_stored_cookies(RAISED_COOKIES)
            .with_min_ttl(RAISED_MIN_TTL)
            .with_max_ttl(RAISED_MAX_TTL)
    };

    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| Behaviour {
            rendezvous: rendezvous::server::Behaviour::new(config),
            identify: identify::Behaviour::new(identify::Config::new(
                "/rendezvous-reference/0.18".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    swarm.listen_on(listen)?;
    let local = *swarm.local_peer_id();

    while let Some(event) = swarm.next().await {
        if let SwarmEvent::NewListenAddr { address, .. } = event {
            println!("{address}/p2p/{local}");
        }
    }
    Ok(())
}
