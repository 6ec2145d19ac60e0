//! `rendezvous serve` as a process: it prints its listen addresses, and refuses bad flags.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use libp2p::{multiaddr::Protocol, Multiaddr};

const BIN: &str = env!("CARGO_BIN_EXE_rendezvous");

#[test]
fn serve_prints_each_listen_address_with_its_peer_id() {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    child.kill().unwrap();
    child.wait().unwrap();
    read.unwrap();
    let address: Multiaddr = line.trim().parse().expect("a multiaddr on stdout");
    let protocols: Vec<_> = address.iter().collect();
    assert!(
        matches!(protocols[0], Protocol::Ip4(ip) if ip.is_loopback()),
        "{address}"
    );
    assert!(
        matches!(protocols[1], Protocol::Tcp(port) if port != 0),
        "{address}"
    );
    assert!(
        matches!(protocols.last(), Some(Protocol::P2p(_))),
        "{address}"
    );
}

fn serve_fails(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn serve_refuses_a_bad_flag_with_one_line_and_status_2() {
    let stderr = serve_fails(&["--no-such-flag"]);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    let stderr = serve_fails(&["--listen", "not-a-multiaddr"]);
    assert!(stderr.contains("--listen"), "{stderr}");
    let stderr = serve_fails(&["--min-ttl", "100", "--max-ttl", "10"]);
    assert!(stderr.contains("expected min <= max"), "{stderr}");
}

#[test]
fn serve_refuses_an_unreadable_key_file_with_status_2() {
    let path = std::env::temp_dir().join(format!("rdv-serve-badkey-{}", std::process::id()));
    std::fs::write(&path, b"not a key").unwrap();
    let stderr = serve_fails(&["--identity", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert!(stderr.contains("--identity"), "{stderr}");
    assert!(stderr.contains("not a libp2p private key"), "{stderr}");
}
