//! The `rendezvous` program as a Unix tool, run as processes: a failure is named once with an
//! exit status that tells what happened, clap's errors name what is missing, logs carry no
//! colour codes into a file, a closed stdout ends a command quietly, and SIGTERM stops every
//! long-running command as Ctrl-C does (unregistering first).

mod support;

use std::{net::SocketAddr, process::Stdio};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStderr, ChildStdout, Command},
};

const BIN: &str = env!("CARGO_BIN_EXE_rendezvous");

/// A peer id that no test process has.
const NOBODY: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

/// `rendezvous ARGS` with warnings logged, stdin closed, stdout and stderr piped, killed when
/// dropped (also when a test panics).
fn rendezvous(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A `rendezvous serve --ephemeral` process on a free loopback TCP port.
struct Serve {
    child: Child,
    /// Its TCP address with `/p2p/`.
    address: String,
    /// `--metrics`' address, when asked for.
    metrics: Option<SocketAddr>,
    stderr: Lines<BufReader<ChildStderr>>,
}

/// Starts `serve` with `extra` flags and `RUST_LOG=log`; waits for its address on stdout.
async fn serve(extra: &[&str], log: &str) -> Serve {
    let mut child = rendezvous(&["serve", "--ephemeral", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(extra)
        .env("RUST_LOG", log)
        .spawn()
        .unwrap();
    let mut stdout = lines(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut metrics = None;
    let address = loop {
        let line = next_line(&mut stdout).await;
        match line.strip_prefix("metrics http://") {
            Some(bound) => metrics = Some(bound.parse().unwrap()),
            None => break line,
        }
    };
    assert!(address.contains("/p2p/"), "{address}");
    Serve {
        child,
        address,
        metrics,
        stderr,
    }
}

fn lines(stdout: ChildStdout) -> Lines<BufReader<ChildStdout>> {
    BufReader::new(stdout).lines()
}

/// The next line, within the hang guard.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut Lines<R>) -> String {
    tokio::time::timeout(support::HANG, lines.next_line())
        .await
        .expect("a line before the hang guard")
        .unwrap()
        .expect("a line, not the end of the output")
}

/// Reads lines until one contains `needle`; returns it.
async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
    needle: &str,
) -> String {
    loop {
        let line = next_line(lines).await;
        if line.contains(needle) {
            return line;
        }
    }
}

/// Sends `signal` (`TERM`, `INT`) to `child` with kill(1).
async fn send(child: &Child, signal: &str) {
    let pid = child.id().expect("the process runs").to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
}

/// Waits for `child` to exit, within the hang guard.
async fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    tokio::time::timeout(support::HANG, child.wait())
        .await
        .expect("the process exits before the hang guard")
        .unwrap()
}

/// Runs `rendezvous ARGS` to its end, within the hang guard.
async fn run(args: &[&str]) -> std::process::Output {
    tokio::time::timeout(support::HANG, rendezvous(args).output())
        .await
        .expect("the command ends before the hang guard")
        .unwrap()
}

#[tokio::test]
async fn serve_on_a_port_in_use_exits_2_naming_the_address_and_the_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{}", taken.local_addr().unwrap().port());
    let output = Command::new(BIN)
        .args(["serve", "--ephemeral", "--listen", &listen])
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap();
    let stderr = support::one_line_error(&output, "--listen on a taken port");
    assert!(stderr.contains(&format!("--listen {listen}")), "{stderr}");
    // The OS's reason, as the OS words it (EADDRINUSE).
    let reason = std::io::Error::from_raw_os_error(98).to_string();
    assert!(stderr.contains(&reason), "{stderr} lacks {reason:?}");
}

#[tokio::test]
async fn a_missing_argument_is_named() {
    for (args, missing) in [
        (&["register"][..], &["--server", "--namespace"][..]),
        (&["register", "--namespace", "x"][..], &["--server"][..]),
        (
            &["discover", "--server", "/ip4/127.0.0.1/tcp/1"][..],
            &["--namespace"][..],
        ),
        (&["load"][..], &["--server"][..]),
    ] {
        let output = Command::new(BIN).args(args).output().await.unwrap();
        let stderr = support::one_line_error(&output, &format!("{args:?}"));
        assert!(stderr.contains("not provided"), "{args:?}: {stderr}");
        for flag in missing {
            assert!(stderr.contains(flag), "{args:?}: {stderr}");
        }
    }
}

#[tokio::test]
async fn register_with_a_ttl_the_server_refuses_exits_3_with_the_servers_status_text() {
    let server = serve(&[], "warn").await;
    let output = run(&[
        "register",
        "--server",
        &server.address,
        "--namespace",
        "short",
        "--ttl",
        "60",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let error = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(error.starts_with("error: "), "{stderr}");
    assert!(error.contains("E_INVALID_TTL"), "{error}");
    // The server's statusText, word for word.
    assert!(error.contains("ttl is 60 s; expected 7200..="), "{error}");
    assert!(error.contains("--ttl"), "what to change: {error}");
    assert_eq!(
        stderr.matches("E_INVALID_TTL").count(),
        1,
        "said once: {stderr}"
    );
}

#[tokio::test]
async fn register_and_discover_on_a_protocol_id_the_server_does_not_speak_exit_3() {
    let server = serve(&[], "warn").await;
    for command in [&["register"][..], &["discover"][..]] {
        let output = run(&[
            command,
            &["--server", &server.address, "--namespace", "x"],
            &["--protocol", "/elsewhere/rendezvous/1.0.0"],
        ]
        .concat())
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{command:?}: {stderr}");
        assert!(stderr.contains("--protocol"), "{command:?}: {stderr}");
    }
}

#[tokio::test]
async fn register_and_discover_against_a_wrong_peer_id_exit_4_naming_the_peer_found() {
    let server = serve(&[], "warn").await;
    let (at, real) = server.address.rsplit_once("/p2p/").unwrap();
    let wrong = format!("{at}/p2p/{NOBODY}");
    for args in [
        &["register", "--server", &wrong, "--namespace", "x"][..],
        &["discover", "--server", &wrong, "--namespace", "x"][..],
        &["discover", "--server", &wrong, "--namespace", "x", "--once"][..],
    ] {
        let output = run(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(stderr.contains(real), "{args:?}: {stderr}");
        assert!(stderr.contains(NOBODY), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn sigterm_stops_serve_with_status_0_and_plain_log_lines_in_a_file() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--ephemeral", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = lines(child.stdout.take().unwrap());
    next_line(&mut stdout).await;
    send(&child, "TERM").await;
    let status = exit_of(&mut child).await;
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(status.success(), "{status:?}: {logged}");
    assert!(logged.contains("stopping on SIGTERM"), "{logged}");
    assert!(logged.contains("stopped"), "{logged}");
    assert!(
        !logged.contains('\x1b'),
        "escape codes in a log file: {logged:?}"
    );
}

#[tokio::test]
async fn sigterm_makes_register_and_discover_register_unregister_and_exit_0() {
    for command in [&["register"][..], &["discover", "--register"][..]] {
        // Registrations outlive connections here: only an UNREGISTER removes one.
        let mut server = serve(
            &["--metrics", "127.0.0.1:0", "--keep-on-disconnect"],
            "warn,rendezvous::serve=debug",
        )
        .await;
        let metrics = server.metrics.unwrap();
        let mut client = rendezvous(command)
            .args(["--server", &server.address, "--namespace", "leaving"])
            .spawn()
            .unwrap();
        let mut stdout = lines(client.stdout.take().unwrap());
        line_with(&mut stdout, "registered leaving at").await;
        line_with(&mut server.stderr, " registered ").await;
        let scraped = support::http::scrape(metrics).await;
        assert_eq!(scraped["libp2p_rendezvous_server_registrations"], 1.0);

        send(&client, "TERM").await;
        let status = exit_of(&mut client).await;
        assert!(status.success(), "{command:?}: {status:?}");
        line_with(&mut stdout, "unregistered leaving at").await;
        line_with(&mut server.stderr, " unregistered ").await;
        let scraped = support::http::scrape(metrics).await;
        assert_eq!(scraped["libp2p_rendezvous_server_registrations"], 0.0);
        assert_eq!(
            scraped["libp2p_rendezvous_server_registrations_removed_total{cause=\"unregister\"}"],
            1.0,
            "{command:?}"
        );
        server.child.kill().await.unwrap();
    }
}

#[tokio::test]
async fn discover_whose_stdout_is_closed_exits_quietly() {
    let server = serve(&[], "warn").await;
    let mut registrant = rendezvous(&["register", "--server", &server.address])
        .args(["--namespace", "piped"])
        .spawn()
        .unwrap();
    let mut registered = lines(registrant.stdout.take().unwrap());
    line_with(&mut registered, "registered piped").await;
    // `discover | head -1` once head has gone: the first line written finds no reader.
    let mut discover = rendezvous(&["discover", "--server", &server.address])
        .args(["--namespace", "piped"])
        .spawn()
        .unwrap();
    drop(discover.stdout.take());
    let status = exit_of(&mut discover).await;
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut discover.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "quietly: {stderr}");
}

#[tokio::test]
async fn register_prints_its_peer_id_and_discover_names_the_namespace_or_says_it_is_empty() {
    let server = serve(&[], "warn").await;
    let mut registrant = rendezvous(&["register", "--server", &server.address])
        .args(["--namespace", "full"])
        .spawn()
        .unwrap();
    let mut registered = lines(registrant.stdout.take().unwrap());
    let first = next_line(&mut registered).await;
    let peer = first
        .strip_prefix("peer ")
        .unwrap_or_else(|| panic!("the peer id first: {first}"))
        .to_owned();
    line_with(&mut registered, "registered full").await;
    let output = tokio::time::timeout(
        support::HANG,
        rendezvous(&["discover", "--server", &server.address, "--once"])
            .args(["--namespace", "full", "--namespace", "empty"])
            .env("RUST_LOG", "info")
            .output(),
    )
    .await
    .expect("discover --once ends")
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("discovered full {peer} /ip4/127.0.0.1/tcp/")),
        "{stdout}"
    );
    assert!(
        stderr.contains("found no other peer registered in empty"),
        "{stderr}"
    );
}

#[tokio::test]
async fn server_metrics_hold_only_server_families_in_label_order_and_health_answers_head() {
    let server = serve(&["--metrics", "127.0.0.1:0"], "warn").await;
    let metrics = server.metrics.unwrap();
    let (status, _, body) = support::http::get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("libp2p_rendezvous_server_requests_total{"),
        "{body}"
    );
    assert!(!body.contains("libp2p_rendezvous_client_"), "{body}");
    assert!(!body.contains("libp2p_rendezvous_discovery_"), "{body}");
    let requests: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("libp2p_rendezvous_server_requests_total{"))
        .collect();
    let mut sorted = requests.clone();
    sorted.sort();
    assert_eq!(requests, sorted);

    let (status, content_type, body) =
        support::http::request(metrics, hyper::Method::HEAD, "/health").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert!(body.is_empty(), "{body}");
    let (status, _, _) = support::http::request(metrics, hyper::Method::POST, "/health").await;
    assert_eq!(status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_text_shows_the_servers_cpu_and_memory_when_it_knows_the_pid() {
    use libp2p::rendezvous;

    // The server runs in this process, so this process's pid is the server's.
    let config = rendezvous::server::Config::default().with_min_ttl(1);
    let (server, _) = support::tcp::spawn(|_| rendezvous::server::Behaviour::new(config)).await;
    let pid = std::process::id().to_string();
    let output = run(&[
        "load",
        "--server",
        &server.to_string(),
        "--clients",
        "2",
        "--namespaces",
        "1",
        "--discoverers",
        "1",
        "--ttl",
        "600",
        "--server-pid",
        &pid,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let usage: Vec<&str> = stdout.lines().filter(|l| l.contains("s CPU")).collect();
    assert_eq!(usage.len(), 3, "one per phase: {stdout}");
    assert!(usage.iter().all(|l| l.contains("KiB resident")), "{stdout}");
    assert!(stdout.contains("server memory: "), "{stdout}");
}
