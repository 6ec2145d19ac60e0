//! `rendezvous serve` and its data directory: registrations and the peer id survive a restart
//! and a SIGKILL, a second server on the same directory is refused, bad files are named and
//! never replaced.

mod support;

use std::{
    collections::HashMap,
    ffi::OsStr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    rendezvous::{self, Namespace},
    swarm::SwarmEvent,
    PeerId, Swarm,
};
use rand::Rng;

use support::serve::{Serve, BIN};

/// The TTL every test registration asks for (the server's default minimum).
const TTL: u64 = 7200;

/// A `rendezvous serve` on the data directory `dir`, listening on a free loopback port.
fn serve(dir: &Path) -> Serve {
    let flags = ["--requests-per-second", "0", "--data-dir"].map(OsStr::new);
    Serve::start(flags.into_iter().chain([dir.as_os_str()]))
}

/// Runs `serve` on `dir` expecting it to refuse to start; returns its stderr. A server that
/// starts instead is killed after [`support::HANG`].
fn serve_fails(dir: &Path) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > support::HANG {
            let _ = child.kill();
            panic!("serve started on {} instead of refusing", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    support::one_line_error(&output, "serve")
}

fn client() -> Swarm<rendezvous::client::Behaviour> {
    let mut client = support::tcp::swarm(|key| rendezvous::client::Behaviour::new(key.clone()));
    client.add_external_address("/ip4/127.0.0.1/tcp/9".parse().unwrap());
    client
}

async fn connect(client: &mut Swarm<rendezvous::client::Behaviour>, server: &Serve) {
    client.dial(server.addr.clone()).unwrap();
    tokio::time::timeout(support::HANG, async {
        loop {
            match client.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == server.peer => {
                    return
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial: {error}"),
                _ => {}
            }
        }
    })
    .await
    .expect("connected");
}

/// Every registration the server holds, paged with cookies: (peer, namespace) -> remaining
/// TTLs seen (more than one would be a duplicate).
async fn discover_all(server: &Serve) -> HashMap<(PeerId, String), Vec<u64>> {
    let mut client = client();
    connect(&mut client, server).await;
    let mut seen: HashMap<(PeerId, String), Vec<u64>> = HashMap::new();
    let mut cookie = None;
    tokio::time::timeout(support::HANG, async {
        loop {
            client
                .behaviour_mut()
                .discover(None, cookie.take(), Some(100), server.peer);
            let (registrations, next) = loop {
                match client.select_next_some().await {
                    SwarmEvent::Behaviour(rendezvous::client::Event::Discovered {
                        registrations,
                        cookie,
                        ..
                    }) => break (registrations, cookie),
                    SwarmEvent::Behaviour(rendezvous::client::Event::DiscoverFailed {
                        error,
                        ..
                    }) => panic!("discover failed: {error:?}"),
                    _ => {}
                }
            };
            if registrations.is_empty() {
                return;
            }
            for r in registrations {
                seen.entry((r.record.peer_id(), r.namespace.to_string()))
                    .or_default()
                    .push(r.ttl);
            }
            cookie = Some(next);
        }
    })
    .await
    .expect("paged through everything");
    seen
}

/// Registers `namespaces` with at most `window` REGISTERs outstanding; returns when each was
/// sent and acknowledged. With `stop_after`, returns as soon as that many were acknowledged.
async fn register(
    client: &mut Swarm<rendezvous::client::Behaviour>,
    server: PeerId,
    namespaces: &[String],
    window: usize,
    stop_after: Option<usize>,
) -> HashMap<String, Instant> {
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut acked = HashMap::new();
    let mut next = 0;
    let mut outstanding = 0;
    tokio::time::timeout(support::HANG * 2, async {
        loop {
            while outstanding < window && next < namespaces.len() {
                let namespace = Namespace::new(namespaces[next].clone()).unwrap();
                client
                    .behaviour_mut()
                    .register(namespace, server, Some(TTL))
                    .unwrap();
                sent.insert(namespaces[next].clone(), Instant::now());
                next += 1;
                outstanding += 1;
            }
            if outstanding == 0 || stop_after.is_some_and(|n| acked.len() >= n) {
                return;
            }
            match client.select_next_some().await {
                SwarmEvent::Behaviour(rendezvous::client::Event::Registered {
                    namespace,
                    ttl,
                    ..
                }) => {
                    assert_eq!(ttl, TTL);
                    let namespace = namespace.to_string();
                    acked.insert(namespace.clone(), sent[&namespace]);
                    outstanding -= 1;
                }
                SwarmEvent::Behaviour(rendezvous::client::Event::RegisterFailed {
                    error, ..
                }) => panic!("register refused: {error:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("registrations answered");
    acked
}

fn namespaces(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ns-{i:04}")).collect()
}

#[tokio::test]
async fn a_restarted_server_keeps_its_peer_id_and_registrations_with_their_remaining_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let server = serve(&data);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the data directory is private");
    }
    let mut client = client();
    let me = *client.local_peer_id();
    connect(&mut client, &server).await;
    let names = namespaces(20);
    let acked = register(&mut client, server.peer, &names, 4, None).await;
    assert_eq!(acked.len(), 20);
    let peer = server.peer;
    server.kill();
    drop(client);

    let server = serve(&data);
    assert_eq!(server.peer, peer, "the peer id survives a restart");
    let seen = discover_all(&server).await;
    assert_eq!(seen.len(), 20);
    for (namespace, sent) in &acked {
        let ttls = &seen[&(me, namespace.clone())];
        assert_eq!(ttls.len(), 1, "{namespace} seen once");
        let elapsed = sent.elapsed().as_secs();
        assert!(
            ttls[0] <= TTL && ttls[0] + elapsed + 1 >= TTL,
            "{namespace}: remaining TTL {} after {elapsed} s",
            ttls[0]
        );
    }
}

/// The crash test: SIGKILL at a random moment while a client registers; after a restart on the
/// same directory every acknowledged registration is there, exactly once, with its remaining
/// TTL.
#[tokio::test]
async fn after_a_sigkill_during_registrations_every_acknowledged_one_is_discoverable_once() {
    const N: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let mut client = client();
    let me = *client.local_peer_id();
    connect(&mut client, &server).await;
    let names = namespaces(N);
    let kill_after = rand::thread_rng().gen_range(1..N);
    let acked = register(&mut client, server.peer, &names, 6, Some(kill_after)).await;
    server.kill();
    assert!(acked.len() >= kill_after);

    let server = serve(dir.path());
    let seen = discover_all(&server).await;
    for ((peer, namespace), ttls) in &seen {
        assert_eq!(*peer, me);
        assert_eq!(ttls.len(), 1, "{namespace} discovered {} times", ttls.len());
    }
    for (namespace, sent) in &acked {
        let Some(ttls) = seen.get(&(me, namespace.clone())) else {
            panic!(
                "{namespace} was acknowledged before the kill (after {kill_after} OKs) and is \
                 gone after the restart"
            );
        };
        let elapsed = sent.elapsed().as_secs();
        assert!(
            ttls[0] <= TTL && ttls[0] + elapsed + 1 >= TTL,
            "{namespace}: remaining TTL {} after {elapsed} s",
            ttls[0]
        );
    }
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = serve(dir.path());
    let stderr = serve_fails(dir.path());
    assert!(
        stderr.contains("in use by another rendezvous server"),
        "{stderr}"
    );
}

#[test]
fn a_corrupt_database_or_key_is_named_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(serve(dir.path()));
    let database = dir.path().join("registrations.sqlite");
    // The write-ahead log would hold the pages of a good database beside a damaged file; a
    // file damaged on its own is what is tested here.
    let _ = std::fs::remove_file(dir.path().join("registrations.sqlite-wal"));
    let garbage = b"not a database at all, just some bytes ".repeat(200);
    std::fs::write(&database, &garbage).unwrap();
    let stderr = serve_fails(dir.path());
    assert!(stderr.contains("registrations.sqlite"), "{stderr}");
    assert!(stderr.contains("restore it from a backup"), "{stderr}");
    assert_eq!(std::fs::read(&database).unwrap(), garbage, "never replaced");

    std::fs::remove_file(&database).unwrap();
    let key = dir.path().join("identity.key");
    std::fs::write(&key, b"not a key").unwrap();
    let stderr = serve_fails(dir.path());
    assert!(stderr.contains("identity.key"), "{stderr}");
    assert!(stderr.contains("not a libp2p private key"), "{stderr}");
    assert_eq!(std::fs::read(&key).unwrap(), b"not a key");
}
