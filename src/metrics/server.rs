//! `libp2p_rendezvous_server_*`: what the server answered, held and refused.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::{Registry, Unit},
};

use super::{gauge::KnownGauge, status_label, STATUS_LABELS};
use crate::{
    codec::RequestKind,
    server::{Event, Limit, PushDelays, Removal, SubscriptionEnd, PUSH_DELAY_BUCKETS},
    ErrorCode,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    r#type: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// The request types with a response (UNREGISTER has none, so no status).
const TYPES: [&str; 2] = ["register", "discover"];
const LIMITS: [&str; 11] = [
    "rate",
    "per_peer",
    "total",
    "bytes",
    "record",
    "message_size",
    "streams",
    "in_flight",
    "held",
    "connections",
    "subscriptions",
];

fn limit_label(limit: Limit) -> &'static str {
    match limit {
        Limit::Rate => "rate",
        Limit::PeerRegistrations => "per_peer",
        Limit::Registrations => "total",
        Limit::StoreBytes => "bytes",
        Limit::Record => "record",
        Limit::MessageSize => "message_size",
        Limit::Streams => "streams",
        Limit::InFlight => "in_flight",
        Limit::HeldDiscovers => "held",
        Limit::Connections => "connections",
        Limit::Subscriptions => "subscriptions",
    }
}

fn status_index(code: Option<&ErrorCode>) -> usize {
    let label = status_label(code);
    STATUS_LABELS
        .iter()
        .position(|l| *l == label)
        .expect("status_label returns one of STATUS_LABELS")
}

/// Page sizes: the spec's limit is 1000 per page.
const PAGE_BUCKETS: [f64; 11] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
];

#[derive(Debug)]
pub(super) struct Metrics {
    /// `requests_total` by `[type][status]`, created up front so recording is one atomic add.
    requests: [[Counter; STATUS_LABELS.len()]; 2],
    /// `request_duration_seconds` by type.
    duration: [Histogram; 2],
    /// Absent while the store cannot count at once (a shared store).
    registrations: KnownGauge,
    namespaces: KnownGauge,
    store_available: Gauge,
    /// `registrations_removed_total` by cause.
    expired: Counter,
    unregistered: Counter,
    disconnected: Counter,
    page: Histogram,
    /// `rejected_total` by limit (the order of [`LIMITS`]).
    rejected: [Counter; LIMITS.len()],
    commit_operations: Histogram,
    commit_duration: Histogram,
    /// `idle_connections_closed_total`.
    idle_closed: Counter,
    /// `subscriptions`, `pushes_total`, `subscriptions_ended_total` by reason and
    /// `subscriptions_behind_total`.
    push: Push,
}

/// The push metrics.
#[derive(Debug)]
struct Push {
    open: Gauge,
    pushes: Counter,
    /// By reason: overflow, refused, closed.
    ended: [Counter; 3],
    /// `subscriptions_behind_total`.
    behind: Counter,
    /// `push_delay_seconds`: the server's own counters, once a server was seen.
    delays: Delays,
}

/// `push_delay_seconds`, read at each scrape from the [`PushDelays`] of the server that
/// [`Metrics::set_state`] was first given (its counters are kept by its push streams, which
/// carry no metric code); empty before.
#[derive(Debug, Clone, Default)]
struct Delays(Arc<OnceLock<PushDelays>>);

impl EncodeMetric for Delays {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.get().map(PushDelays::snapshot);
        let buckets: Vec<(f64, u64)> = match &snapshot {
            Some(snapshot) => snapshot
                .buckets
                .iter()
                .map(|(bound, n)| (bucket_bound(*bound), *n))
                .collect(),
            None => PUSH_DELAY_BUCKETS
                .iter()
                .copied()
                .chain([Duration::MAX])
                .map(|bound| (bucket_bound(bound), 0))
                .collect(),
        };
        let (sum, count) = snapshot.map_or((0.0, 0), |s| (s.sum.as_secs_f64(), s.count()));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A bucket's upper bound in seconds; [`Duration::MAX`], the bucket of the slower, is `+Inf`.
fn bucket_bound(bound: Duration) -> f64 {
    if bound == Duration::MAX {
        f64::INFINITY
    } else {
        bound.as_secs_f64()
    }
}

impl Push {
    fn new(registry: &mut Registry) -> Self {
        let open = Gauge::default();
        registry.register(
            "subscriptions",
            "Push subscriptions open (replaying or live)",
            open.clone(),
        );
        let pushes = Counter::default();
        registry.register(
            "pushes",
            "Changes (a registration, or registrations ended early) queued for push subscribers, \
             one per subscriber",
            pushes.clone(),
        );
        let ended = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "subscriptions_ended",
            "Push subscriptions ended, by reason: overflow (the subscriber fell a whole queue \
             behind; it resumes with DISCOVER), refused (its replay was refused), closed (the \
             subscriber or its connection closed it)",
            ended.clone(),
        );
        let ended = ["overflow", "refused", "closed"]
            .map(|reason| ended.get_or_create_owned(&ReasonLabels { reason }));
        let behind = Counter::default();
        registry.register(
            "subscriptions_behind",
            "Times a push subscription's queue filled while its pushes waited for a quiet moment \
             (the server busy with requests): what waited was dropped and the server replayed \
             to it from its last cookie in the next quiet moment; it was not ended",
            behind.clone(),
        );
        let delays = Delays::default();
        registry.register_with_unit(
            "push_delay",
            "How long each push written waited on this server: from its change reaching the \
             server (in a fleet, this instance hearing of it) until its stream wrote it; pushes \
             wait for quiet moments between requests",
            Unit::Seconds,
            delays.clone(),
        );
        Self {
            open,
            pushes,
            behind,
            ended,
            delays,
        }
    }
}

impl Metrics {
    pub(super) fn new(registry: &mut Registry) -> Self {
        let (requests, duration) = requests(registry);
        let (registrations, namespaces, store_available) = state(registry);
        let [expired, unregistered, disconnected] = removed(registry);
        let page = Histogram::new(PAGE_BUCKETS);
        registry.register(
            "discover_page_size",
            "Registrations in each DISCOVER_RESPONSE page served",
            page.clone(),
        );
        let rejected = rejected(registry);
        let idle_closed = Counter::default();
        registry.register(
            "idle_connections_closed",
            "Connections that held nothing (no registration, no recent request) closed to make \
             room near the connection cap",
            idle_closed.clone(),
        );
        let (commit_operations, commit_duration) = commits(registry);
        let push = Push::new(registry);
        Self {
            push,
            requests,
            duration,
            registrations,
            namespaces,
            store_available,
            expired,
            unregistered,
            disconnected,
            page,
            rejected,
            commit_operations,
            commit_duration,
            idle_closed,
        }
    }

    /// Sets the state gauges; a count the store cannot give at once (`None`) is left out.
    /// The first `delays` given are the ones exported from then on.
    pub(super) fn set_state(
        &self,
        registrations: Option<usize>,
        namespaces: Option<usize>,
        available: bool,
        delays: &PushDelays,
    ) {
        self.push.delays.0.get_or_init(|| delays.clone());
        self.registrations.set(registrations);
        self.namespaces.set(namespaces);
        self.store_available.set(i64::from(available));
    }

    pub(super) fn registrations(&self) -> Option<i64> {
        self.registrations.get()
    }

    pub(super) fn store_available(&self) -> bool {
        self.store_available.get() != 0
    }

    fn answered(&self, kind: usize, code: Option<&ErrorCode>, duration: Option<&Duration>) {
        self.requests[kind][status_index(code)].inc();
        if let Some(duration) = duration {
            self.duration[kind].observe(duration.as_secs_f64());
        }
    }

    fn rejected(&self, limit: Option<&Limit>) {
        if let Some(limit) = limit {
            let label = limit_label(*limit);
            let i = LIMITS
                .iter()
                .position(|l| *l == label)
                .expect("limit_label returns one of LIMITS");
            self.rejected[i].inc();
        }
    }

    pub(super) fn record(&self, event: &Event) {
        const REGISTER: usize = 0;
        const DISCOVER: usize = 1;
        match event {
            Event::PeerRegistered { duration, .. } => self.answered(REGISTER, None, Some(duration)),
            Event::PeerNotRegistered {
                error,
                limit,
                duration,
                ..
            } => {
                self.answered(REGISTER, Some(&error.code), Some(duration));
                self.rejected(limit.as_ref());
            }
            Event::DiscoverServed {
                count, duration, ..
            } => {
                self.answered(DISCOVER, None, Some(duration));
                self.page.observe(*count as f64);
            }
            Event::DiscoverNotServed {
                error,
                limit,
                duration,
                ..
            } => {
                self.answered(DISCOVER, Some(&error.code), Some(duration));
                self.rejected(limit.as_ref());
            }
            Event::PeerUnregistered { cause, .. } => {
                match cause {
                    Removal::Unregister => self.unregistered.inc(),
                    Removal::Disconnect => self.disconnected.inc(),
                };
            }
            Event::RegistrationExpired(_) => {
                self.expired.inc();
            }
            Event::RequestRejected { kind, error, .. } => match kind {
                RequestKind::Register => self.answered(REGISTER, Some(&error.code), None),
                RequestKind::Discover => self.answered(DISCOVER, Some(&error.code), None),
                // Not answered, so no status: UNREGISTER is not in `requests_total`.
                RequestKind::Unregister => {}
            },
            Event::StreamRefused { limit, .. } | Event::ConnectionRefused { limit, .. } => {
                self.rejected(Some(limit))
            }
            Event::IdleConnectionClosed { .. } => {
                self.idle_closed.inc();
            }
            Event::Subscribed { .. } => {
                self.push.open.inc();
            }
            Event::SubscriptionRefused { limit, .. } => self.rejected(Some(limit)),
            Event::SubscriptionEnded { reason, .. } => {
                self.push.open.dec();
                let i = match reason {
                    SubscriptionEnd::Overflow => 0,
                    SubscriptionEnd::Refused => 1,
                    SubscriptionEnd::Closed => 2,
                };
                self.push.ended[i].inc();
            }
            Event::SubscriptionBehind { .. } => {
                self.push.behind.inc();
            }
            Event::Pushed { subscribers } => {
                self.push.pushes.inc_by(*subscribers as u64);
            }
            Event::StoreCommitted {
                operations,
                latency,
            } => {
                self.commit_operations.observe(*operations as f64);
                self.commit_duration.observe(latency.as_secs_f64());
            }
        }
    }
}

/// `requests_total` by type and status, and `request_duration_seconds` by type.
fn requests(registry: &mut Registry) -> ([[Counter; STATUS_LABELS.len()]; 2], [Histogram; 2]) {
    let requests = Family::<RequestLabels, Counter>::default();
    registry.register(
        "requests",
        "REGISTER and DISCOVER requests answered, by type and response status",
        requests.clone(),
    );
    let requests = TYPES.map(|r#type| {
        STATUS_LABELS.map(|status| requests.get_or_create_owned(&RequestLabels { r#type, status }))
    });
    let duration = Family::<TypeLabels, Histogram, _>::new_with_constructor(|| {
        // 10 µs .. 1.3 s.
        Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
    });
    registry.register_with_unit(
        "request_duration",
        "Time from reading a decoded REGISTER or DISCOVER to answering it, by type",
        Unit::Seconds,
        duration.clone(),
    );
    let duration = TYPES.map(|r#type| duration.get_or_create_owned(&TypeLabels { r#type }));
    (requests, duration)
}

/// `registrations`, `namespaces` (absent while the store cannot count at once) and
/// `store_available`.
fn state(registry: &mut Registry) -> (KnownGauge, KnownGauge, Gauge) {
    let registrations = KnownGauge::register(
        registry,
        "registrations",
        "Registrations the server holds (absent with a store that cannot count them at once, \
         such as Redis)",
    );
    let namespaces = KnownGauge::register(
        registry,
        "namespaces",
        "Namespaces with at least one registration (absent with a store that cannot count \
         them at once, such as Redis)",
    );
    let store_available = Gauge::default();
    store_available.set(1);
    registry.register(
        "store_available",
        "1 while the registration store answers, 0 while it cannot (a shared store that lost \
         its Redis: requests are refused with E_UNAVAILABLE meanwhile)",
        store_available.clone(),
    );
    (registrations, namespaces, store_available)
}

/// `registrations_removed_total` by cause: expired, unregister, disconnect.
fn removed(registry: &mut Registry) -> [Counter; 3] {
    let removed = Family::<CauseLabels, Counter>::default();
    registry.register(
        "registrations_removed",
        "Registrations removed before or at the end of their TTL, by cause: expired, \
         unregister (an UNREGISTER), disconnect (the peer's last connection closed)",
        removed.clone(),
    );
    ["expired", "unregister", "disconnect"]
        .map(|cause| removed.get_or_create_owned(&CauseLabels { cause }))
}

/// `rejected_total` by limit, in the order of [`LIMITS`].
fn rejected(registry: &mut Registry) -> [Counter; LIMITS.len()] {
    let rejected = Family::<LimitLabels, Counter>::default();
    registry.register(
        "rejected",
        "Requests or streams refused by a bound: rate (requests per second per peer), \
         per_peer (registrations per peer), total (registrations held), bytes (store byte \
         budget), record (record size or addresses), message_size (request too large), \
         streams (streams per connection), in_flight (requests waiting for the store), held \
         (DISCOVERs waiting for identify), connections (a new connection at the connection \
         cap, every connection holding something), subscriptions (a push subscription over \
         the cap in all or per connection)",
        rejected.clone(),
    );
    LIMITS.map(|limit| rejected.get_or_create_owned(&LimitLabels { limit }))
}

/// `store_commit_operations` and `store_commit_duration_seconds`.
fn commits(registry: &mut Registry) -> (Histogram, Histogram) {
    // 1 .. 4096 operations.
    let operations = Histogram::new(exponential_buckets(1.0, 2.0, 13));
    registry.register(
        "store_commit_operations",
        "Mutations per store commit (stores that commit in groups, such as SQLite)",
        operations.clone(),
    );
    // 100 µs .. 3.3 s.
    let duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
    registry.register_with_unit(
        "store_commit_duration",
        "Time each store commit took (with a synchronous disk, including the fsync)",
        Unit::Seconds,
        duration.clone(),
    );
    (operations, duration)
}
