//! Replays the checked-in fuzz corpus (`fuzz/seeds/<target>/`) through the fuzz targets'
//! bodies on the stable toolchain, so CI catches a regression without nightly or cargo-fuzz.
//! `fuzz/README.md` says how to fuzz further and grow the corpus.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::{fs, path::Path};

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut inputs = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        // A failing input names itself before the target's panic message.
        eprintln!("{target}: {}", path.display());
        run(&data);
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus for {target} in {}", dir.display());
}

#[test]
fn frame_corpus() {
    replay("frame", targets::frame);
}

#[test]
fn message_corpus() {
    replay("message", targets::message);
}

#[test]
fn record_corpus() {
    replay("record", targets::record);
}

#[test]
fn store_corpus() {
    replay("store", targets::store);
}
