//! `rendezvous demo` runs to completion on loopback and shows what it promises. Its outcome is
//! what counts, not how long it took: the deadline it gives itself (9 s by default) is raised
//! far past it (a hang guard only), so a loaded machine does not fail it.

use std::process::Command;

#[test]
fn the_demo_shows_registration_discovery_and_expiry_and_exits_0() {
    let output = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(["demo", "--deadline", "120"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for line in [
        "alice   registered in \"chat\"",
        "carol   registered in \"games\"",
        "alice   discovered bob in \"chat\"",
        "bob     discovered alice in \"chat\"",
        "carol   discovered dave in \"games\"",
        "dave    discovered carol in \"games\"",
        "bob     leaves",
        "alice   saw bob expire",
        "ok: 4 peers registered",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    for (a, b) in [
        ("alice", "carol"),
        ("alice", "dave"),
        ("carol", "alice"),
        ("dave", "bob"),
    ] {
        assert!(
            !stdout.contains(&format!("{a:<7} discovered {b}")),
            "{a} discovered {b} across namespaces:\n{stdout}"
        );
    }
}
