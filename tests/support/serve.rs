//! A `rendezvous serve` process of the test's own, killed when dropped (also when a test
//! panics), with the addresses it printed.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};

/// The `rendezvous` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rendezvous");

/// A running `rendezvous serve`.
pub struct Serve {
    child: Child,
    /// Its first listen address, with `/p2p/`.
    pub addr: Multiaddr,
    /// Its peer id.
    pub peer: PeerId,
    /// The `--metrics` address, when started with that flag.
    pub metrics: Option<SocketAddr>,
}

impl Serve {
    /// Starts `rendezvous serve --listen /ip4/127.0.0.1/tcp/0` with `args` (logging warnings
    /// only) and waits for the addresses it prints: the metrics address first with
    /// `--metrics`, then its listen address.
    pub fn start<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_on("/ip4/127.0.0.1/tcp/0", args)
    }

    /// [`Serve::start`] listening on `listen` (a `/ws` address, say) instead.
    pub fn start_on<I, S>(listen: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_bin(BIN.as_ref(), listen, args)
    }

    /// [`Serve::start_on`] with another build of the binary (a benchmark comparing two).
    pub fn start_bin<I, S>(bin: &OsStr, listen: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", listen])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the rendezvous binary runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut metrics = None;
        let addr: Multiaddr = loop {
            let mut line = String::new();
            let read = stdout.read_line(&mut line).expect("serve's stdout reads");
            assert!(read > 0, "serve ended before printing its address");
            match line.trim().strip_prefix("metrics http://") {
                Some(bound) => metrics = Some(bound.parse().expect("a socket address")),
                None => break line.trim().parse().expect("a multiaddr on stdout"),
            }
        };
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("no peer id in {addr}");
        };
        Self {
            child,
            addr,
            peer,
            metrics,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL): it cleans nothing up.
    pub fn kill(mut self) {
        self.child.kill().expect("the server was running");
        self.child.wait().expect("the server is reaped");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in `dir`; returns their
/// paths and the certificate (DER) for a client to trust.
pub fn self_signed(dir: &std::path::Path) -> (String, String, Vec<u8>) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("rcgen makes a certificate");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let path = |p: std::path::PathBuf| p.to_str().expect("a UTF-8 temp path").to_owned();
    (path(cert_path), path(key_path), cert.der().to_vec())
}
