//! `libp2p_rendezvous_client_*`: what the discovery source asked, learned and failed at.
//!
//! There is no per-server label: servers are peer ids (unbounded) and the client also uses
//! servers it learns at run time, so a configured-server index would not cover them.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::status_label;
use crate::client::{Event, RequestError};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    request: &'static str,
    kind: &'static str,
}

/// The `kind` label of a failed request: the status code's name when the server refused it,
/// else what went wrong locally or on the stream.
fn failure_kind(error: &RequestError) -> &'static str {
    match error {
        RequestError::Remote(response) => status_label(Some(&response.code)),
        RequestError::NoResponse => "no_response",
        RequestError::Timeout => "timeout",
        RequestError::UnexpectedResponse(_) => "unexpected_response",
        RequestError::Stream(_) => "stream",
        RequestError::Unsupported => "unsupported",
        RequestError::NotConnected => "not_connected",
        RequestError::TooManyPending => "too_many_pending",
        RequestError::NoAddresses => "no_addresses",
        RequestError::Stopped => "stopped",
        RequestError::Signing(_) => "signing",
    }
}

#[derive(Debug)]
pub(super) struct Metrics {
    /// `registrations_total` by outcome.
    registered: Counter,
    refused: Counter,
    register_failed: Counter,
    pages: Counter,
    records: Counter,
    discovered: Counter,
    expired: Counter,
    cookie_resets: Counter,
    failures: Family<FailureLabels, Counter>,
}

impl Metrics {
    pub(super) fn new(registry: &mut Registry) -> Self {
        let registrations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "registrations",
            "REGISTERs answered or failed, by outcome: ok, refused (the server answered with an \
             error status), failed (no answer)",
            registrations.clone(),
        );
        let outcome = |outcome| registrations.get_or_create_owned(&OutcomeLabels { outcome });
        let (registered, refused, register_failed) =
            (outcome("ok"), outcome("refused"), outcome("failed"));
        let pages = Counter::default();
        registry.register(
            "discover_pages",
            "DISCOVER_RESPONSE pages received (automatic and manual)",
            pages.clone(),
        );
        let records = Counter::default();
        registry.register(
            "discover_records",
            "Registrations received in DISCOVER_RESPONSE pages",
            records.clone(),
        );
        let discovered = Counter::default();
        registry.register(
            "discovered",
            "Peers discovered in a namespace, or seen there with new addresses",
            discovered.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "expired",
            "Discovered registrations whose TTL ended without a refresh",
            expired.clone(),
        );
        let cookie_resets = Counter::default();
        registry.register(
            "cookie_resets",
            "Cookies the server refused (E_INVALID_COOKIE), after which discovery started over",
            cookie_resets.clone(),
        );
        let failures = Family::default();
        registry.register(
            "request_failures",
            "Requests that failed, by request (register, unregister, discover) and kind (the \
             status code's name, or no_response, timeout, not_connected, ...)",
            failures.clone(),
        );
        Self {
            registered,
            refused,
            register_failed,
            pages,
            records,
            discovered,
            expired,
            cookie_resets,
            failures,
        }
    }

    fn failed(&self, request: &'static str, error: &RequestError) {
        self.failures
            .get_or_create(&FailureLabels {
                request,
                kind: failure_kind(error),
            })
            .inc();
    }

    pub(super) fn record(&self, event: &Event) {
        match event {
            Event::Registered { .. } => {
                self.registered.inc();
            }
            Event::RegisterFailed { error, .. } => {
                match error {
                    RequestError::Remote(_) => self.refused.inc(),
                    _ => self.register_failed.inc(),
                };
                self.failed("register", error);
            }
            Event::UnregisterFailed { error, .. } => self.failed("unregister", error),
            Event::DiscoverFailed { error, .. } => self.failed("discover", error),
            Event::DiscoverCompleted { registrations, .. } => {
                self.pages.inc();
                self.records.inc_by(registrations.len() as u64);
            }
            Event::DiscoverPolled { registrations, .. } => {
                self.pages.inc();
                self.records.inc_by(*registrations as u64);
            }
            Event::CookieReset { .. } => {
                self.cookie_resets.inc();
            }
            Event::Discovered { .. } => {
                self.discovered.inc();
            }
            Event::Expired { .. } => {
                self.expired.inc();
            }
            Event::Unregistered { .. }
            | Event::RecordsSkipped { .. }
            | Event::ServerAdded { .. }
            | Event::NoAddressesToRegister
            | Event::Stopped => {}
        }
    }
}
