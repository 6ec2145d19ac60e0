//! `libp2p_rendezvous_discovery_*`: what the aggregator reported, by source label.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::discovery::Event;

/// Source labels are `&'static str` chosen in code (`"mdns"`, `"rendezvous"`, ...), so their
/// number is bounded by the program, not by the network.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Debug)]
pub(super) struct Metrics {
    discovered: Family<SourceLabels, Counter>,
    expired: Family<SourceLabels, Counter>,
}

impl Metrics {
    pub(super) fn new(registry: &mut Registry) -> Self {
        let discovered = Family::default();
        registry.register(
            "discovered",
            "Peers (or new addresses of known peers) the aggregator reported, by source",
            discovered.clone(),
        );
        let expired = Family::default();
        registry.register(
            "expired",
            "Peers no source knows any more, by the source that let go last",
            expired.clone(),
        );
        Self {
            discovered,
            expired,
        }
    }

    pub(super) fn record<E>(&self, event: &Event<E>) {
        match event {
            Event::Discovered { source, .. } => {
                self.discovered
                    .get_or_create(&SourceLabels { source })
                    .inc();
            }
            Event::Expired { source, .. } => {
                self.expired.get_or_create(&SourceLabels { source }).inc();
            }
            Event::Source(_) => {}
        }
    }
}
