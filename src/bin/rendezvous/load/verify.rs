//! `rendezvous load --verify-bench N`: the cost of verifying signed peer records alone.

use std::{process::ExitCode, sync::Arc, time::Instant};

use libp2p::{identity::Keypair, Multiaddr};
use rendezvous_discovery::{RecordFormat, SignedRecord};
use serde_json::json;

use crate::{
    common::{CliError, CliResult},
    output::outln,
};

/// Times the verification of `n` signed peer records (the floor of a REGISTER's cost).
pub(super) fn run(n: usize, format: RecordFormat, as_json: bool) -> CliResult {
    if n == 0 || n > 10_000_000 {
        return Err(CliError::Usage(format!(
            "--verify-bench {n}: expected 1 to 10000000"
        )));
    }
    // A handful of distinct records, verified round-robin: signing is not what is measured.
    let records: Vec<Arc<[u8]>> = (0..n.min(64))
        .map(|i| {
            let key = Keypair::generate_ed25519();
            let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i)
                .parse()
                .expect("a valid literal multiaddr");
            SignedRecord::new(&key, vec![addr], format).map(|r| Arc::from(r.envelope_bytes()))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::Failed(format!("cannot sign a peer record: {e}")))?;
    let started = Instant::now();
    for i in 0..n {
        let record = SignedRecord::from_bytes(&records[i % records.len()])
            .map_err(|e| CliError::Failed(format!("a record we signed does not verify: {e}")))?;
        std::hint::black_box(record);
    }
    let per_record_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    if as_json {
        outln!(
            "{}",
            json!({ "verify_records": n, "record_format": format.to_string(), "verify_us_per_record": per_record_us })
        );
    } else {
        outln!("verified {n} {format} signed peer records: {per_record_us:.2} us each");
    }
    Ok(ExitCode::SUCCESS)
}
