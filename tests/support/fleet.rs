//! A `redis-server` of the test's own (free loopback port, temporary directory, stopped with the
//! test) and `rendezvous serve --store redis://...` processes on it, plus our client in a task
//! asking them one request at a time. Used by `tests/fleet.rs` (feature `redis`).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use libp2p::PeerId;
use rendezvous_discovery::{
    client::{self, RequestError},
    Cookie, Namespace, RecordFormat, Registration, Ttl,
};

use super::{node::Node, HANG};

/// A `redis-server` process of the test's own, killed (and its directory removed) on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

/// A free loopback TCP port (the OS picks it; it is free once the listener is dropped).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Redis {
    /// Starts `redis-server` without persistence on a free loopback port in a new temporary
    /// directory, and waits until it answers PING.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("rdv-redis-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (its data is gone: it has no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(child);
        let start = Instant::now();
        while !self.pings() {
            assert!(start.elapsed() < HANG, "redis-server never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `rendezvous serve --store redis://...` process, killed when dropped.
pub use super::serve::Serve;

/// Starts a server on `redis` with a free loopback port, TTLs from 1 s, no request rate limit
/// (tests poll), and `extra` flags.
pub fn serve(redis: &Redis, extra: &[&str]) -> Serve {
    let url = redis.url();
    let flags = [
        "--store",
        &url,
        "--min-ttl",
        "1",
        "--requests-per-second",
        "0",
    ];
    Serve::start(flags.iter().chain(extra))
}

/// Our client in a task, knowing `servers`, with no loops of its own (the test asks), signing
/// standard records for a made-up address.
pub fn client(servers: &[&Serve]) -> Node<client::Behaviour> {
    client_with(servers, |config| {
        config.with_registration(false).with_discovery(false)
    })
}

/// Our client in a task, knowing `servers`, configured further by `configure`.
pub fn client_with(
    servers: &[&Serve],
    configure: impl FnOnce(client::Config) -> client::Config,
) -> Node<client::Behaviour> {
    let mut config = client::Config::default()
        .with_record_format(RecordFormat::Standard)
        .with_external_address("/ip4/127.0.0.1/tcp/4999".parse().expect("a multiaddr"));
    for serve in servers {
        config = config.with_server(serve.peer, vec![serve.addr.clone()]);
    }
    let config = configure(config);
    let swarm = super::tcp::swarm(|key| client::Behaviour::new(key.clone(), config));
    super::node::spawn_as_is(swarm)
}

/// Registers `node` in `namespace` at `server` with `ttl`; the server's answer.
pub async fn register(
    node: &mut Node<client::Behaviour>,
    server: PeerId,
    namespace: &str,
    ttl: Ttl,
) -> Result<Ttl, RequestError> {
    let ns = Namespace::new(namespace).expect("a namespace");
    let id = node
        .ask(move |swarm| swarm.behaviour_mut().register(server, ns, Some(ttl)))
        .await;
    node.wait_for(|event| match event {
        client::Event::Registered { ttl, request, .. } if *request == id => Some(Ok(*ttl)),
        client::Event::RegisterFailed { error, request, .. } if *request == id => {
            Some(Err(error.clone()))
        }
        _ => None,
    })
    .await
}

/// Unregisters `node` from `namespace` at `server` (written; UNREGISTER has no answer).
pub async fn unregister(node: &mut Node<client::Behaviour>, server: PeerId, namespace: &str) {
    let ns = Namespace::new(namespace).expect("a namespace");
    let id = node
        .ask(move |swarm| swarm.behaviour_mut().unregister(server, ns))
        .await;
    node.wait_for(|event| match event {
        client::Event::Unregistered { request, .. } if *request == id => Some(()),
        client::Event::UnregisterFailed { error, request, .. } if *request == id => {
            panic!("unregister failed: {error}")
        }
        _ => None,
    })
    .await
}

/// One page of a DISCOVER: the registrations and the cookie.
pub type Page = (Vec<Registration>, Option<Cookie>);

/// Asks `server` for one page of `namespace` (`None`: all) after `cookie`.
pub async fn discover(
    node: &mut Node<client::Behaviour>,
    server: PeerId,
    namespace: Option<&str>,
    cookie: Option<Cookie>,
    limit: Option<u64>,
) -> Result<Page, RequestError> {
    let ns = namespace.map(|ns| Namespace::new(ns).expect("a namespace"));
    let id = node
        .ask(move |swarm| swarm.behaviour_mut().discover(server, ns, cookie, limit))
        .await;
    node.wait_for(|event| match event {
        client::Event::DiscoverCompleted {
            registrations,
            cookie,
            request,
            ..
        } if *request == id => Some(Ok((registrations.clone(), cookie.clone()))),
        client::Event::DiscoverFailed { error, request, .. } if *request == id => {
            Some(Err(error.clone()))
        }
        _ => None,
    })
    .await
}

/// The peers in every page of `namespace` at `server`, paging until an empty page.
pub async fn discover_all(
    node: &mut Node<client::Behaviour>,
    server: PeerId,
    namespace: Option<&str>,
) -> Vec<(PeerId, Namespace)> {
    let mut cookie = None;
    let mut found = Vec::new();
    loop {
        let (page, next) = discover(node, server, namespace, cookie, Some(100))
            .await
            .expect("a page");
        if page.is_empty() {
            return found;
        }
        found.extend(page.into_iter().map(|r| (r.record.peer_id(), r.namespace)));
        cookie = next;
    }
}
