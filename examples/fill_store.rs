//! Fills a data directory's registration database with N registrations through the public
//! store API, then times reopening it (what `rendezvous serve` does on start).
//!
//! ```sh
//! cargo run --release --example fill_store -- /tmp/rdv-data 1000000
//! time rendezvous serve --data-dir /tmp/rdv-data   # until it prints its address
//! ```
//!
//! Registrations come from N/1000 peers, each in 1000 namespaces (`ns-0` … `ns-999`), with a
//! 72 h TTL and one legacy signed record per peer.

use std::{path::PathBuf, time::Instant};

use futures::executor::block_on;
use libp2p::{identity::Keypair, Multiaddr};
use rendezvous_discovery::{
    codec::{Namespace, UnverifiedRegistration},
    server::{
        store::{Operation, OperationId, Outcome, SqliteStore, Store, StoreEvent, SyncMode},
        Config, MAX_IN_FLIGHT,
    },
    RecordFormat, SignedRecord,
};

const PER_PEER: usize = 1000;
const TTL: u64 = 72 * 3600;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: fill_store DIR N");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let n: usize = n.parse().expect("N is a number");
    std::fs::create_dir_all(&dir).expect("the directory can be created");
    let path = dir.join("registrations.sqlite");
    let config = Config::default()
        .with_max_registrations(n.max(1))
        .with_max_registrations_per_peer(PER_PEER)
        .with_max_store_bytes(usize::MAX);
    let mut store = SqliteStore::open(&path, config.clone(), SyncMode::Normal).expect("opens");

    let started = Instant::now();
    let namespaces: Vec<Namespace> = (0..PER_PEER)
        .map(|i| Namespace::new(format!("ns-{i}")).unwrap())
        .collect();
    let address: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let mut submitted = 0;
    let mut done = 0;
    let mut id = 0;
    let mut record: Option<SignedRecord> = None;
    while done < n {
        while submitted < n && submitted - done < MAX_IN_FLIGHT {
            if submitted % PER_PEER == 0 {
                let key = Keypair::generate_ed25519();
                record = Some(
                    SignedRecord::new(&key, vec![address.clone()], RecordFormat::Legacy).unwrap(),
                );
            }
            let record = record.as_ref().expect("made above");
            store.submit(
                OperationId(id),
                Operation::Register {
                    peer: record.peer_id(),
                    registration: UnverifiedRegistration {
                        namespace: namespaces[submitted % PER_PEER].clone(),
                        envelope: record.envelope_bytes().to_vec(),
                        ttl: Some(TTL),
                    },
                },
                Instant::now(),
            );
            id += 1;
            submitted += 1;
        }
        let event = block_on(futures::future::poll_fn(|cx| {
            store.poll(cx, Instant::now()).map(Some)
        }));
        if let Some(StoreEvent::Completed { outcome, .. }) = event {
            match outcome {
                Outcome::Registered { result: Ok(_), .. } => done += 1,
                other => panic!("not registered: {other:?}"),
            }
        }
        if done > 0 && done % 100_000 == 0 {
            eprintln!("{done} registrations");
        }
    }
    drop(store);
    let filled = started.elapsed();
    println!("filled {n} registrations in {:.1} s", filled.as_secs_f64());

    let started = Instant::now();
    let store = SqliteStore::open(&path, config, SyncMode::Full).expect("reopens");
    let opened = started.elapsed();
    assert_eq!(store.restored(), n);
    println!(
        "reopened: {} registrations loaded in {:.2} s",
        store.restored(),
        opened.as_secs_f64()
    );
}
