//! What recording metrics adds to the server's work per REGISTER, in one run.
//!
//! `cargo bench --bench metrics --no-default-features --features metrics`
//!
//! Three timings: the store's REGISTER of a record it holds already (a refresh: no signature
//! check, the cheapest REGISTER there is), the same plus what `serve --metrics` does for it
//! (`Recorder::record` of the `PeerRegistered` event and `record_server_state`), and the
//! signature check a REGISTER with a new record adds. The ratio of the recording to the cheapest
//! REGISTER bounds its share of any REGISTER; over the wire each REGISTER also costs its
//! stream, framing and the swarm, so the share there is smaller still.

use std::time::{Duration, Instant};

use criterion::Criterion;
use libp2p::identity::Keypair;
use rendezvous_discovery::{
    codec::UnverifiedRegistration,
    metrics::{Metrics, Recorder, Registry},
    server, Namespace, RecordFormat, Registration, SignedRecord,
};

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let record = SignedRecord::new(
        &key,
        vec!["/ip4/10.0.0.1/tcp/4001".parse().unwrap()],
        RecordFormat::Standard,
    )
    .unwrap();
    let envelope = record.envelope_bytes().to_vec();
    let namespaces: Vec<Namespace> = (0..100)
        .map(|i| Namespace::new(format!("ns-{i}")).unwrap())
        .collect();
    // A REGISTER of the peer's one record in `namespace`.
    let request = |namespace: &Namespace| UnverifiedRegistration {
        namespace: namespace.clone(),
        envelope: envelope.clone(),
        ttl: None,
    };
    let mut store = server::Registrations::new(server::Config::default(), 1);
    let now = Instant::now();
    for ns in &namespaces {
        store.register_unverified(peer, request(ns), now).unwrap();
    }
    let mut registry = Registry::default();
    let _libp2p = libp2p::metrics::Metrics::new(&mut registry);
    let metrics = Metrics::new(&mut registry);
    let behaviour = server::Behaviour::new(server::Config::default());

    let mut group = c.benchmark_group("register");
    let mut i = 0usize;
    group.bench_function("refresh (store)", |b| {
        b.iter(|| {
            i = (i + 1) % namespaces.len();
            store.register_unverified(peer, request(&namespaces[i]), now)
        })
    });
    group.bench_function("refresh (store) + metrics", |b| {
        b.iter(|| {
            i = (i + 1) % namespaces.len();
            let (ttl, record) = store
                .register_unverified(peer, request(&namespaces[i]), now)
                .unwrap();
            let event = server::Event::PeerRegistered {
                peer,
                registration: Registration {
                    namespace: namespaces[i].clone(),
                    record,
                    ttl,
                },
                duration: Duration::from_micros(20),
            };
            metrics.record(&event);
            metrics.record_server_state(&behaviour);
            event
        })
    });
    group.bench_function("signature check of a new record", |b| {
        b.iter(|| SignedRecord::from_bytes(&envelope).unwrap())
    });
    group.finish();
    c.final_summary();
}
