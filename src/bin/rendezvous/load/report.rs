//! What a load run reports: per-phase timing, the server's CPU and memory between phases, and
//! each discoverer's exactly-once verdict, as text or one JSON object.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use libp2p::PeerId;
use rendezvous_discovery::Namespace;
use serde_json::{json, Value};

use super::{client::Walk, Config, Scope};

/// Kernel clock ticks per second for `/proc/PID/stat` CPU times (USER_HZ, 100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// The outcome of a run.
pub(super) struct Report {
    json: Value,
    text: String,
    exactly_once: bool,
}

impl Report {
    /// `samples` holds one server sample before the first phase and one after each.
    pub(super) fn new(
        config: &Config,
        phases: [Phase; 3],
        samples: &[Option<ServerSample>],
        verdicts: Vec<Verdict>,
        received: u64,
        first_error: Option<String>,
    ) -> Self {
        let [_, register, discover] = &phases;
        let exactly_once = register.errors == 0
            && discover.errors == 0
            && verdicts.iter().all(Verdict::is_exactly_once);
        let registrations = (config.clients * config.namespaces) as u64;
        let mut phase_json = serde_json::Map::new();
        for (i, phase) in phases.iter().enumerate() {
            let mut value = phase.json();
            if let (Some(before), Some(after)) = (&samples[i], &samples[i + 1]) {
                let object = value.as_object_mut().expect("Phase::json builds an object");
                phase.add_server_usage(object, before, after);
            }
            phase_json.insert(phase.name.into(), value);
        }
        let baseline = samples[0].as_ref().map(|s| s.rss_kib);
        let memory_per_registration = match (&samples[1], &samples[2]) {
            (Some(before), Some(after)) => {
                json!(
                    (after.hwm_kib.saturating_sub(before.rss_kib)) as f64 * 1024.0
                        / registrations as f64
                )
            }
            _ => Value::Null,
        };
        let json = json!({
            "server": config.server.to_string(),
            "clients": config.clients,
            "namespaces": config.namespaces,
            "discoverers": config.discoverers,
            "limit": config.limit,
            "ttl": config.ttl,
            "record_format": config.format.to_string(),
            "scope": match config.scope { Scope::Namespaces => "namespaces", Scope::All => "all" },
            "concurrency": config.concurrency,
            "max_dialing": config.max_dialing,
            "registrations": registrations,
            "registered": register.count(),
            "discovered": received,
            "phases": phase_json,
            "server_rss_kib_baseline": baseline,
            "server_bytes_per_registration": memory_per_registration,
            "discoverer_results": verdicts.iter().map(Verdict::json).collect::<Vec<_>>(),
            "first_error": first_error,
            "exactly_once": exactly_once,
        });

        let mut text = String::new();
        let _ = writeln!(
            text,
            "load against {}: {} clients x {} namespaces = {registrations} registrations, \
             {} discoverers, limit {}",
            config.server, config.clients, config.namespaces, config.discoverers, config.limit
        );
        for (i, phase) in phases.iter().enumerate() {
            let _ = writeln!(text, "{}", phase.line());
            if let (Some(before), Some(after)) = (&samples[i], &samples[i + 1]) {
                let _ = writeln!(text, "{:<9} {}", "", phase.usage_line(before, after));
            }
        }
        if let (Some(kib), Value::Number(bytes)) = (baseline, &memory_per_registration) {
            let _ = writeln!(
                text,
                "server memory: {kib} KiB before the run, {:.0} bytes per registration",
                bytes.as_f64().unwrap_or_default()
            );
        }
        for (i, verdict) in verdicts.iter().enumerate() {
            let _ = writeln!(text, "discoverer {i}: {}", verdict.line());
        }
        if let Some(e) = first_error {
            let _ = writeln!(text, "first error: {e}");
        }
        let _ = writeln!(
            text,
            "exactly once: {}",
            if exactly_once { "yes" } else { "NO" }
        );
        Self {
            json,
            text,
            exactly_once,
        }
    }

    pub(super) fn json(&self) -> &Value {
        &self.json
    }

    pub(super) fn text(&self) -> &str {
        &self.text
    }

    /// Every registration succeeded and every discoverer saw each exactly once.
    pub(super) fn exactly_once(&self) -> bool {
        self.exactly_once
    }
}

/// What one discoverer saw against what was registered.
pub(super) struct Verdict {
    missing: usize,
    duplicates: u64,
    foreign: usize,
    skipped: usize,
}

impl Verdict {
    pub(super) fn of(walk: &Walk, expected: &HashMap<(PeerId, Namespace), ()>) -> Self {
        Self {
            missing: expected
                .keys()
                .filter(|key| !walk.seen.contains_key(key))
                .count(),
            duplicates: walk
                .seen
                .iter()
                .filter(|(key, _)| expected.contains_key(key))
                .map(|(_, n)| u64::from(*n - 1))
                .sum(),
            foreign: walk
                .seen
                .keys()
                .filter(|key| !expected.contains_key(key))
                .count(),
            skipped: walk.skipped,
        }
    }

    /// Nothing missing, nothing twice, nothing undecodable (records of other runs may be seen).
    fn is_exactly_once(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.skipped == 0
    }

    fn json(&self) -> Value {
        json!({
            "missing": self.missing,
            "duplicates": self.duplicates,
            "foreign": self.foreign,
            "skipped": self.skipped,
        })
    }

    fn line(&self) -> String {
        format!(
            "{} missing, {} duplicates, {} undecodable, {} from elsewhere",
            self.missing, self.duplicates, self.skipped, self.foreign
        )
    }
}

/// Timing of one phase.
pub(super) struct Phase {
    name: &'static str,
    elapsed: Duration,
    latencies: Vec<Duration>,
    pub(super) errors: u64,
}

impl Phase {
    pub(super) fn new(name: &'static str, elapsed: Duration) -> Self {
        Self {
            name,
            elapsed,
            latencies: Vec::new(),
            errors: 0,
        }
    }

    pub(super) fn ok(&mut self, latency: Duration) {
        self.latencies.push(latency);
    }

    fn count(&self) -> usize {
        self.latencies.len()
    }

    fn throughput(&self) -> f64 {
        self.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`th percentile latency in milliseconds (nearest rank).
    fn percentile_ms(&self, p: usize) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = (p * sorted.len()).div_ceil(100).max(1) - 1;
        sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
    }

    fn json(&self) -> Value {
        json!({
            "ops": self.count(),
            "errors": self.errors,
            "seconds": self.elapsed.as_secs_f64(),
            "per_second": self.throughput(),
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
        })
    }

    /// The server's CPU seconds over the phase, and per operation in microseconds.
    fn server_cpu(&self, before: &ServerSample, after: &ServerSample) -> (f64, f64) {
        let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / CLOCK_TICKS_PER_SECOND;
        let per_op = if self.count() > 0 {
            cpu * 1e6 / self.count() as f64
        } else {
            0.0
        };
        (cpu, per_op)
    }

    /// The server's CPU time and memory over the phase, as a line of the text report.
    fn usage_line(&self, before: &ServerSample, after: &ServerSample) -> String {
        let (cpu, per_op) = self.server_cpu(before, after);
        format!(
            "server: {cpu:.2} s CPU ({per_op:.1} us/op), {} KiB resident after (peak {} KiB)",
            after.rss_kib, after.hwm_kib
        )
    }

    /// Adds the server's CPU time and memory over the phase to its JSON object.
    fn add_server_usage(
        &self,
        object: &mut serde_json::Map<String, Value>,
        before: &ServerSample,
        after: &ServerSample,
    ) {
        let (cpu, per_op) = self.server_cpu(before, after);
        object.insert("server_cpu_seconds".into(), json!(cpu));
        object.insert("server_cpu_us_per_op".into(), json!(per_op));
        object.insert("server_rss_kib_after".into(), json!(after.rss_kib));
        object.insert("server_hwm_kib_after".into(), json!(after.hwm_kib));
    }

    fn line(&self) -> String {
        format!(
            "{:<9} {:>8} ok {:>5} errors in {:>8.3} s: {:>10.1}/s, p50 {:.3} ms, p99 {:.3} ms",
            self.name,
            self.count(),
            self.errors,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.percentile_ms(50),
            self.percentile_ms(99)
        )
    }
}

/// The server process's CPU time and memory at one moment, read from /proc.
pub(super) struct ServerSample {
    cpu_ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

impl ServerSample {
    pub(super) fn take(pid: Option<u32>) -> Option<Self> {
        let pid = pid?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: u64 = rest.get(11)?.parse().ok()?;
        let stime: u64 = rest.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Self {
            cpu_ticks: utime + stime,
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}
