//! `rendezvous flood` end to end: every kind of flood, small and short, against a
//! `rendezvous serve` on loopback, with its legitimate client alongside.

mod support;

use serde_json::Value;
use support::serve::{Serve, BIN};

/// `rendezvous flood --kind KIND` with `count` hostile connections for one second; its report.
async fn flood(serve: &Serve, kind: &str, count: usize) -> (Option<i32>, Value, String) {
    let out = tokio::process::Command::new(BIN)
        .arg("flood")
        .args(["--server", &serve.addr.to_string()])
        .args(["--server-pid", &serve.pid().to_string()])
        .args([
            "--kind",
            kind,
            "--count",
            &count.to_string(),
            "--seconds",
            "1",
        ])
        .env("RUST_LOG", "error")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{kind}: no JSON report ({e}): {stderr}"));
    (out.status.code(), report, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flood_kind_runs_and_the_legitimate_client_is_served_throughout() {
    every_kind_served(&Serve::start(["--ephemeral"])).await;
}

/// The limits are the same over WebSocket: every kind, the flood and the legitimate client
/// dialing `/ws` (the `handshake` flood: TCP connections that never send the HTTP upgrade), on
/// a server that listens on WebSocket only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flood_kind_over_websocket_and_the_legitimate_client_is_served_throughout() {
    every_kind_served(&Serve::start_on("/ip4/127.0.0.1/tcp/0/ws", ["--ephemeral"])).await;
}

/// Every kind of flood against `serve`, one after the other: each ran, and the legitimate
/// client was served throughout and kept its registrations.
async fn every_kind_served(serve: &Serve) {
    for kind in [
        "idle",
        "handshake",
        "stall",
        "churn",
        "register",
        "discover",
    ] {
        let (status, report, stderr) = flood(serve, kind, 4).await;
        assert_eq!(status, Some(0), "{kind}: {report} {stderr}");
        assert_eq!(report["kind"], kind);
        assert_eq!(report["source"], "127.0.0.2", "{kind}: {report}");
        assert!(report["flood_ops"].as_u64() > Some(0), "{kind}: {report}");
        assert_eq!(report["legit_failures"], 0, "{kind}: {report}");
        assert!(
            report["legit_requests"].as_u64() > Some(0),
            "{kind}: {report}"
        );
        assert_eq!(
            report["legit_registrations_kept"], "10/10",
            "{kind}: {report}"
        );
        let newcomers = report["legit_newcomer_rounds"].as_u64().unwrap();
        assert_eq!(
            newcomers > 0,
            kind == "idle" || kind == "handshake",
            "{kind}: {report}"
        );
    }
}

#[tokio::test]
async fn a_flood_aimed_off_this_machine_is_refused_before_it_starts() {
    let serve = Serve::start(["--ephemeral"]);
    let remote = serve.addr.to_string().replace("127.0.0.1", "192.0.2.1");
    let out = tokio::process::Command::new(BIN)
        .args([
            "flood",
            "--server",
            &remote,
            "--server-pid",
            "1",
            "--kind",
            "idle",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected a 127.0.0.1 address"), "{stderr}");
}

#[tokio::test]
async fn a_flood_from_the_legitimate_clients_own_address_is_refused() {
    let serve = Serve::start(["--ephemeral"]);
    let out = tokio::process::Command::new(BIN)
        .arg("flood")
        .args(["--server", &serve.addr.to_string()])
        .args(["--server-pid", &serve.pid().to_string()])
        .args(["--kind", "idle", "--source", "127.0.0.1"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("other than 127.0.0.1"), "{stderr}");
}
