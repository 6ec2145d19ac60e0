//! Peers of other implementations (js-libp2p, py-libp2p) and `rendezvous serve` as child
//! processes, for the interop suite (`tests/interop_js_py.rs`, run by `interop/run`).
//!
//! A foreign peer is `interop/js/peer.mjs`, `interop/js/browser.mjs` (js-libp2p in headless
//! Chromium) or `interop/py/peer.py`: it prints a `ready` line
//! (its peer id and addresses) and answers JSON-line commands (`{"id", "op", ...}`) with one
//! line each; a server peer also prints an `event` line for every DISCOVER it answers, with the
//! cookie it received. `interop/run` installs what they need (`interop/js/node_modules`,
//! `interop/py/.venv`).

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
};

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
};

use super::HANG;

/// Lines of a child's stderr kept to explain a failure.
const STDERR_TAIL: usize = 40;

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Which implementation a [`Peer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// js-libp2p 2 with `@canvas-js/libp2p-rendezvous` (`interop/js/peer.mjs`).
    Js,
    /// The same in a page in headless Chromium, over WebSocket only (`interop/js/browser.mjs`).
    Browser,
    /// py-libp2p 0.8 with its own rendezvous (`interop/py/peer.py`).
    Py,
}

/// A foreign peer process, killed when dropped.
pub struct Peer {
    /// Its peer id.
    pub peer: PeerId,
    /// The addresses it listens on, each ending in `/p2p/<peer>`.
    pub addrs: Vec<Multiaddr>,
    name: String,
    _child: Child,
    /// The browser's temporary directory (after the child: removed once it is killed).
    _tmp: Option<tempfile::TempDir>,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Event lines read while waiting for answers, oldest first.
    events: VecDeque<Value>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    next_id: u64,
}

impl Peer {
    /// Starts a peer of `implementation` with `args` (see the scripts' headers) and waits for
    /// its `ready` line.
    pub async fn start(implementation: Impl, args: &[&str]) -> Self {
        let dir = interop_dir();
        let mut tmp = None;
        let mut command = match implementation {
            Impl::Js => {
                let mut c = Command::new("node");
                c.arg(dir.join("js/peer.mjs"));
                c
            }
            Impl::Browser => {
                let mut c = Command::new("node");
                c.arg(dir.join("js/browser.mjs"));
                // Chromium's profile goes in here: the script removes it when it stops, but
                // not when the test kills it; this directory goes with the peer.
                let profiles = tempfile::tempdir().expect("a temporary directory");
                c.env("TMPDIR", tmp.insert(profiles).path());
                c
            }
            Impl::Py => {
                let python = dir.join("py/.venv/bin/python");
                assert!(
                    python.exists(),
                    "{} is missing: run interop/run, which installs py-libp2p",
                    python.display()
                );
                let mut c = Command::new(python);
                c.arg(dir.join("py/peer.py"));
                c
            }
        };
        if implementation != Impl::Py {
            assert!(
                dir.join("js/node_modules").exists(),
                "interop/js/node_modules is missing: run interop/run, which installs js-libp2p"
            );
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {implementation:?} peer: {e}"));
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr_pipe = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        let _ = tx.send(value);
                    }
                    Err(_) => eprintln!("(not a JSON line) {line}"),
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = tail.lock().expect("not poisoned");
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let mut peer = Peer {
            peer: PeerId::random(),
            addrs: Vec::new(),
            name: format!("{implementation:?} {}", args.join(" ")),
            _child: child,
            _tmp: tmp,
            stdin,
            lines,
            events: VecDeque::new(),
            stderr,
            next_id: 0,
        };
        let ready = peer
            .next_line(|v| v["event"] == "ready")
            .await
            .unwrap_or_else(|| panic!("{}", peer.failure("exited before it was ready")));
        peer.peer = ready["peer"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("a peer id in the ready line");
        peer.addrs = addrs(&ready["addrs"]);
        peer
    }

    /// Its first address (with `/p2p/`), for others to dial.
    pub fn addr(&self) -> Multiaddr {
        self.addrs.first().cloned().expect("the peer listens")
    }

    /// Sends `{"op": op, ...fields}` and returns the answer; panics when the peer answers
    /// `ok: false` (see [`Peer::try_call`]).
    pub async fn call(&mut self, op: &str, fields: Value) -> Value {
        let answer = self.try_call(op, fields.clone()).await;
        if answer["ok"] != true {
            panic!(
                "{}",
                self.failure(&format!("{op} {fields} failed: {}", answer["error"]))
            );
        }
        answer
    }

    /// Sends `{"op": op, ...fields}` and returns the answer line, `ok` true or false.
    pub async fn try_call(&mut self, op: &str, fields: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "op": op});
        if let (Some(command), Value::Object(fields)) = (command.as_object_mut(), fields) {
            command.extend(fields);
        }
        let line = format!("{command}\n");
        if self.stdin.write_all(line.as_bytes()).await.is_err() {
            panic!("{}", self.failure("its stdin is closed"));
        }
        match self.next_line(|v| v["id"] == id).await {
            Some(answer) => answer,
            None => panic!(
                "{}",
                self.failure(&format!("exited without answering {op}"))
            ),
        }
    }

    /// Event lines (`{"event": ...}` other than `ready`) read so far, oldest first, and any
    /// that are already waiting.
    pub fn events(&mut self) -> Vec<Value> {
        while let Ok(line) = self.lines.try_recv() {
            self.events.push_back(line);
        }
        self.events.drain(..).collect()
    }

    /// The next line `wanted` picks; other lines are kept as events. `None` once the process
    /// closed its stdout. Panics after [`HANG`].
    async fn next_line(&mut self, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        let waited = tokio::time::timeout(HANG, async {
            loop {
                let line = self.lines.recv().await?;
                if wanted(&line) {
                    return Some(line);
                }
                self.events.push_back(line);
            }
        })
        .await;
        match waited {
            Ok(line) => line,
            Err(_) => panic!("{}", self.failure("did not answer in time")),
        }
    }

    fn failure(&self, what: &str) -> String {
        let tail = self.stderr.lock().expect("not poisoned");
        let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!(
            "{} peer {}: {what}; its stderr ends:\n{}",
            self.name,
            self.peer,
            tail.join("\n")
        )
    }
}

/// The peers of a `peers` array of an answer: `{peer, addrs}` each, in order.
pub fn peers(answer: &Value) -> Vec<(PeerId, Vec<Multiaddr>)> {
    answer["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no peers in {answer}"))
        .iter()
        .map(|p| {
            let peer = p["peer"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no peer id in {p}"));
            (peer, addrs(&p["addrs"]))
        })
        .collect()
}

fn addrs(value: &Value) -> Vec<Multiaddr> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an address list: {value}"))
        .iter()
        .map(|a| {
            a.as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not a multiaddr: {a}"))
        })
        .collect()
}

/// `addr` without a trailing `/p2p/<peer>`: how records list addresses (js adds the suffix to
/// its listen addresses, py strips it from what it registers).
pub fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr
}

/// A `rendezvous serve --ephemeral` process on a free 127.0.0.1 port, killed when dropped.
pub struct Serve {
    /// Its address (TCP, or what `start_on` was given), with `/p2p/`.
    pub addr: Multiaddr,
    /// Its peer id.
    pub peer: PeerId,
    _child: Child,
}

impl Serve {
    /// Starts the server with its default flags but for the listen address (one free
    /// 127.0.0.1 TCP port) and `extra`.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_on("/ip4/127.0.0.1/tcp/0", extra).await
    }

    /// [`Serve::start`] listening on `listen` only (a `/ws` address, say).
    pub async fn start_on(listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
            .args(["serve", "--ephemeral", "--listen", listen])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the rendezvous binary runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let line = tokio::time::timeout(HANG, stdout.next_line())
            .await
            .expect("serve prints its address in time")
            .expect("its stdout reads")
            .expect("serve prints its address");
        let addr: Multiaddr = line.trim().parse().expect("a multiaddr on stdout");
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("no peer id in {addr}");
        };
        // Later lines (more addresses) are not read; keep the pipe drained.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Serve {
            addr,
            peer,
            _child: child,
        }
    }
}
