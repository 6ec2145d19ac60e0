//! `contrib/grafana-dashboard.json` queries only metrics that `serve --metrics` exports.

use std::collections::BTreeMap;

use prometheus_client::registry::Registry;
use rendezvous_discovery::{metrics::Metrics, server};

/// Metric family name to type, from the `# TYPE` lines of a registry holding ours and
/// libp2p-metrics' (as `serve --metrics` does), with the state of a server with a local store
/// recorded (the counts are absent until then, and with a store that cannot count at once).
fn exported() -> BTreeMap<String, String> {
    let mut registry = Registry::default();
    let _libp2p = libp2p::metrics::Metrics::new(&mut registry);
    let ours = Metrics::new(&mut registry);
    ours.record_server_state(&server::Behaviour::new(server::Config::default()));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// Whether a series name as queried (with `_total`, `_bucket`, `_sum` or `_count`) belongs to
/// an exported family of the matching type.
fn is_exported(families: &BTreeMap<String, String>, series: &str) -> bool {
    let of = |suffix: &str, kinds: &[&str]| {
        series.strip_suffix(suffix).is_some_and(|family| {
            families
                .get(family)
                .is_some_and(|kind| kinds.contains(&kind.as_str()))
        })
    };
    families.get(series).is_some_and(|kind| kind == "gauge")
        || of("_total", &["counter"])
        || of("_bucket", &["histogram"])
        || of("_sum", &["histogram"])
        || of("_count", &["histogram"])
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../contrib/grafana-dashboard.json")).unwrap();
    let families = exported();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            // Metric names are the identifiers starting with `libp2p_`.
            let mut rest = expr;
            while let Some(start) = rest.find("libp2p_") {
                let name: String = rest[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[start + name.len()..];
                queried.push(name);
            }
        }
    }
    assert!(
        queried.len() >= 10,
        "the dashboard queries metrics: {queried:?}"
    );
    let missing: Vec<_> = queried
        .iter()
        .filter(|q| !is_exported(&families, q))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}; exported: {families:?}"
    );
    // And the check can fail: a misspelt name is caught.
    assert!(!is_exported(
        &families,
        "libp2p_rendezvous_server_requets_total"
    ));
}
