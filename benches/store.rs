//! The pure store at 1k, 100k and 1M registrations: register (a refresh, which replaces the
//! entry in every index), a discover page (limit 100, cookie in the middle, all namespaces and
//! one namespace) and expiry; plus bytes per registration, measured with a counting allocator.
//!
//! `cargo bench --bench store` (set `STORE_BENCH_SIZES=1000,100000` to skip the 1M case).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    sync::atomic::{AtomicIsize, Ordering},
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion};
use libp2p::{identity::Keypair, PeerId};
use rendezvous_discovery::{
    codec::NewRegistration, server, Cookie, Namespace, RecordFormat, SignedRecord,
};

/// Counts live heap bytes, to report what a registration costs.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peers in every store; namespaces = n / PEERS (each peer registers in every namespace, which
/// the per-peer limit of 1000 allows up to 1M registrations).
const PEERS: usize = 1000;
const START: u64 = 1_000_000;
const TTL: u64 = 2 * 60 * 60;

struct Fixture {
    records: Vec<(PeerId, SignedRecord)>,
    namespaces: Vec<Namespace>,
}

impl Fixture {
    fn new(max_namespaces: usize) -> Self {
        // One signed record per peer, reused in every namespace: the store gets verified
        // records, so signing is no part of what is measured.
        let records = (0..PEERS)
            .map(|i| {
                let key = Keypair::generate_ed25519();
                let record = SignedRecord::new(
                    &key,
                    vec![format!("/ip4/10.{}.{}.1/tcp/4001", i / 256, i % 256)
                        .parse()
                        .unwrap()],
                    RecordFormat::Standard,
                )
                .unwrap();
                (record.peer_id(), record)
            })
            .collect();
        let namespaces = (0..max_namespaces)
            .map(|i| Namespace::new(format!("app/namespace-{i:05}")).unwrap())
            .collect();
        Self {
            records,
            namespaces,
        }
    }

    /// A store of `n` registrations: namespace-major, so sequence numbers interleave peers.
    fn store(&self, n: usize, now: Instant) -> server::Registrations {
        let config = server::Config::default()
            .with_max_registrations(n)
            .with_unknown_peer_formats(server::ServedFormats::All);
        let mut store = server::Registrations::new(config, START);
        for i in 0..n {
            let (peer, record) = &self.records[i % PEERS];
            let namespace = self.namespaces[i / PEERS].clone();
            store
                .register(*peer, self.request(namespace, record, TTL), now)
                .unwrap();
        }
        store
    }

    fn request(&self, namespace: Namespace, record: &SignedRecord, ttl: u64) -> NewRegistration {
        NewRegistration {
            namespace,
            record: record.clone(),
            ttl: Some(ttl),
        }
    }
}

fn sizes() -> Vec<usize> {
    std::env::var("STORE_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000, 1_000_000])
}

fn main() {
    let sizes = sizes();
    let max = *sizes.iter().max().unwrap();
    let fixture = Fixture::new(max.div_ceil(PEERS));
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let asker = server::ServedFormats::All;
    let mut memory = Vec::new();

    for &n in &sizes {
        let now = Instant::now();
        let before = LIVE.load(Ordering::Relaxed);
        let mut store = fixture.store(n, now);
        let bytes = LIVE.load(Ordering::Relaxed) - before;
        memory.push((n, bytes as f64 / n as f64));

        let mut group = criterion.benchmark_group("store");
        // A refresh: the entry is removed from every index and inserted under a new number.
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("register", n), |b| {
            b.iter(|| {
                let (peer, record) = &fixture.records[i % PEERS];
                let namespace = fixture.namespaces[(i / PEERS) % n.div_ceil(PEERS)].clone();
                i = i.wrapping_add(7919);
                black_box(store.register(*peer, fixture.request(namespace, record, TTL), now))
            })
        });

        // Sequence numbers run from START + 1 to the counter; a cookie halfway through.
        let mid = START + (n as u64) / 2;
        let all_cookie = Cookie::new(mid.to_be_bytes().to_vec()).unwrap();
        group.bench_function(BenchmarkId::new("discover_all_page100", n), |b| {
            b.iter(|| {
                let (page, _) = store
                    .discover(asker, None, Some(&all_cookie), Some(100), now)
                    .unwrap();
                assert_eq!(page.len(), 100);
                black_box(page)
            })
        });
        let namespace = &fixture.namespaces[(n / PEERS) / 2];
        let mut ns_cookie = mid.to_be_bytes().to_vec();
        ns_cookie.extend_from_slice(namespace.as_str().as_bytes());
        let ns_cookie = Cookie::new(ns_cookie).unwrap();
        // At 1k there is one namespace: start it from its beginning instead.
        let ns_cookie = if n <= PEERS { None } else { Some(ns_cookie) };
        group.bench_function(BenchmarkId::new("discover_namespace_page100", n), |b| {
            b.iter(|| {
                let (page, _) = store
                    .discover(asker, Some(namespace), ns_cookie.as_ref(), Some(100), now)
                    .unwrap();
                assert!(!page.is_empty());
                black_box(page)
            })
        });

        // Expire the earliest registration, then (untimed) register it again so the size stays.
        let later = now + Duration::from_secs(100 * TTL);
        let mut offset = 0u64;
        group.bench_function(BenchmarkId::new("expire", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(1000);
                    let started = Instant::now();
                    let expired: Vec<_> = (0..batch)
                        .map(|_| store.poll_expired(later).unwrap())
                        .collect();
                    total += started.elapsed();
                    offset += 1;
                    for registration in expired {
                        let peer = registration.record.peer_id();
                        let request = NewRegistration {
                            namespace: registration.namespace,
                            record: registration.record,
                            ttl: Some(TTL),
                        };
                        store
                            .register(peer, request, now + Duration::from_secs(offset))
                            .unwrap();
                    }
                    left -= batch;
                }
                total
            })
        });
        group.finish();
        assert_eq!(store.len(), n);
        drop(store);
    }

    criterion.final_summary();
    println!();
    println!("bytes per registration (store indexes and entries; records shared, not counted):");
    for (n, per) in memory {
        println!("  n = {n:>9}: {per:.0} B");
    }
}
