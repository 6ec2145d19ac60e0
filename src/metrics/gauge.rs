//! [`KnownGauge`]: a gauge that is absent from the exposition while its value is not known.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::gauge::ConstGauge,
    registry::Registry,
};

/// The value that means "not known".
const UNKNOWN: i64 = i64::MIN;

/// A gauge whose value may be unknown (a store that cannot count what it holds at once):
/// then it is left out of the exposition, so a dashboard shows no data rather than a false 0.
#[derive(Debug, Clone)]
pub(super) struct KnownGauge {
    name: &'static str,
    help: &'static str,
    value: Arc<AtomicI64>,
}

impl KnownGauge {
    /// Registers a gauge `name` in `registry`, unknown until [`set`](Self::set).
    pub(super) fn register(
        registry: &mut Registry,
        name: &'static str,
        help: &'static str,
    ) -> Self {
        let gauge = Self {
            name,
            help,
            value: Arc::new(AtomicI64::new(UNKNOWN)),
        };
        registry.register_collector(Box::new(gauge.clone()));
        gauge
    }

    /// Sets the value, or makes it unknown.
    pub(super) fn set(&self, value: Option<usize>) {
        let value = value.map_or(UNKNOWN, |v| i64::try_from(v).unwrap_or(i64::MAX));
        self.value.store(value, Ordering::Relaxed);
    }

    /// The value, if known.
    pub(super) fn get(&self) -> Option<i64> {
        Some(self.value.load(Ordering::Relaxed)).filter(|v| *v != UNKNOWN)
    }
}

impl Collector for KnownGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(value) = self.get() else {
            return Ok(());
        };
        let gauge = ConstGauge::new(value);
        let metric = encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn an_unknown_value_is_left_out_and_a_known_one_is_a_gauge_under_the_prefix() {
        let mut registry = Registry::default();
        let gauge = KnownGauge::register(
            registry.sub_registry_with_prefix("server"),
            "registrations",
            "Registrations held",
        );
        assert!(!exposition(&registry).contains("server_registrations"));
        gauge.set(Some(3));
        let text = exposition(&registry);
        assert!(text.contains("# TYPE server_registrations gauge"), "{text}");
        assert!(text.contains("\nserver_registrations 3\n"), "{text}");
        assert_eq!(gauge.get(), Some(3));
        gauge.set(None);
        assert!(!exposition(&registry).contains("server_registrations"));
    }
}
