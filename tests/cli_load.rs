//! `rendezvous load` end to end: the binary against rust-libp2p's rendezvous server (0.18) on
//! loopback TCP, in this process.

mod support;

use std::process::Output;

use libp2p::{rendezvous, Multiaddr};
use serde_json::Value;

/// Starts rust-libp2p's rendezvous server on 127.0.0.1 and returns its address with `/p2p/`.
async fn reference_server() -> Multiaddr {
    let config = rendezvous::server::Config::default().with_min_ttl(1);
    support::tcp::spawn(|_| rendezvous::server::Behaviour::new(config))
        .await
        .0
}

async fn load(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .arg("load")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap()
}

/// `load --json` of 4 clients in 3 namespaces (12 registrations) and 2 discoverers, pages of 5,
/// against `server`, with `extra` flags; checks that it succeeded, that all 12 registered and
/// each discoverer saw each registration exactly once, and returns the report.
async fn load_twelve(server: &Multiaddr, extra: &[&str]) -> Value {
    let server = server.to_string();
    let mut args = vec![
        "--server",
        &server,
        "--clients",
        "4",
        "--namespaces",
        "3",
        "--discoverers",
        "2",
        "--limit",
        "5",
        "--ttl",
        "600",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = load(&args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{extra:?}: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["exactly_once"], true, "{report}");
    assert_eq!(report["registered"], 12);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_against_the_reference_server_sees_every_registration_exactly_once() {
    let report = load_twelve(&reference_server().await, &[]).await;
    assert_eq!(report["registrations"], 12);
    // Two discoverers, each receiving all 12 registrations once.
    assert_eq!(report["discovered"], 24);
    // The connect phase counts the 4 clients (the discoverers connect after registering),
    // all dialing at once by default.
    assert_eq!(report["phases"]["connect"]["ops"], 4);
    assert_eq!(report["max_dialing"], Value::Null);
    // 3 namespaces of 4 registrations with limit 5: one short page each, per discoverer.
    assert_eq!(report["phases"]["discover"]["ops"], 6);
    for result in report["discoverer_results"].as_array().unwrap() {
        assert_eq!(result["missing"], 0);
        assert_eq!(result["duplicates"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_through_all_namespaces_with_cookies_finds_each_registration_once() {
    let server = reference_server().await.to_string();

    // 3 x 2 = 6 registrations, pages of 4: one full page, a cookie, one short page.
    let out = load(&[
        "--server",
        &server,
        "--clients",
        "3",
        "--namespaces",
        "2",
        "--limit",
        "4",
        "--scope",
        "all",
        "--ttl",
        "600",
        "--json",
    ])
    .await;

    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["exactly_once"], true, "{report}");
    assert_eq!(report["discovered"], 6);
    assert_eq!(report["phases"]["discover"]["ops"], 2);
}

#[tokio::test]
async fn a_bad_flag_is_one_line_and_exit_status_2() {
    for args in [
        &["--clients", "3"][..],
        &["--server", "/ip4/127.0.0.1/tcp/1", "--clients", "3"],
        &[
            "--server",
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            "--limit",
            "0",
        ],
        &["--no-such-flag"],
        &["--record-format", "json"],
        &[
            "--server",
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            "--max-dialing",
            "0",
        ],
    ] {
        support::one_line_error(&load(args).await, &format!("{args:?}"));
    }
}

#[tokio::test]
async fn verify_bench_reports_the_cost_of_one_record() {
    let out = load(&["--verify-bench", "3", "--json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verify_records"], 3);
    assert!(report["verify_us_per_record"].as_f64().unwrap() > 0.0);
}

/// Starts our server on 127.0.0.1 and returns its address with `/p2p/`.
async fn our_server() -> Multiaddr {
    let config = rendezvous_discovery::server::Config::default().with_min_ttl(1);
    support::tcp::spawn(|_| rendezvous_discovery::server::Behaviour::new(config))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_against_our_server_sees_every_registration_exactly_once_in_both_formats() {
    for (format, scope) in [
        ("legacy", "namespaces"),
        ("standard", "all"),
        ("legacy", "all"),
    ] {
        // A fresh server each time: the previous run's registrations leave with its connections.
        let server = our_server().await;
        let report = load_twelve(&server, &["--record-format", format, "--scope", scope]).await;
        // Standard-format discoverers announce their format by registering once in a namespace
        // of their own, which "all namespaces" also returns (2 discoverers x 2 records).
        let own = if (format, scope) == ("standard", "all") {
            4
        } else {
            0
        };
        assert_eq!(report["discovered"], 24 + own, "{report}");
    }
}

/// `--max-dialing` paces the dials when asked to; the run is the same otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_dialing_paces_the_dials_and_every_client_still_connects() {
    let report = load_twelve(&reference_server().await, &["--max-dialing", "1"]).await;
    assert_eq!(report["max_dialing"], 1);
    assert_eq!(report["phases"]["connect"]["ops"], 4);
    assert_eq!(report["phases"]["connect"]["errors"], 0);
}
