//! Prometheus metrics for the server, the client and the discovery aggregator, on
//! [`prometheus_client`], in the conventions of `libp2p-metrics`.
//!
//! [`Metrics::new`] registers everything under `libp2p_rendezvous_*` (a `rendezvous`
//! sub-registry of the `libp2p` prefix), so one [`Registry`] can hold these beside
//! `libp2p::metrics::Metrics` (the same `prometheus-client` version). The behaviours carry no
//! metric code: the application hands each event to [`Recorder::record`], as it does for
//! `libp2p-metrics`. Labels are bounded (request type, status code, limit, failure kind, source
//! label); there is no peer id or namespace label.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use rendezvous_discovery::{metrics::{Metrics, Recorder}, server};
//!
//! let mut registry = Registry::default();
//! let metrics = Metrics::new(&mut registry);
//! # let event = server::Event::RegistrationExpired(
//! #     rendezvous_discovery::Registration {
//! #         namespace: rendezvous_discovery::Namespace::from_static("chat"),
//! #         record: rendezvous_discovery::SignedRecord::new(
//! #             &libp2p::identity::Keypair::generate_ed25519(),
//! #             vec!["/memory/1".parse().unwrap()],
//! #             rendezvous_discovery::RecordFormat::Standard,
//! #         ).unwrap(),
//! #         ttl: 60,
//! #     });
//! // In the swarm loop, for each `SwarmEvent::Behaviour(event)` of the server:
//! metrics.record(&event);
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("libp2p_rendezvous_server_registrations_removed_total{cause=\"expired\"} 1"));
//! ```
//!
//! The table of every metric is in the README ("Metrics").

mod client;
mod connections;
mod discovery;
mod gauge;
mod server;

pub use prometheus_client::registry::Registry;

/// The server's, the client's and the aggregator's metrics, fed by [`Recorder::record`].
#[derive(Debug)]
pub struct Metrics {
    server: server::Metrics,
    connections: connections::Connections,
    client: client::Metrics,
    discovery: discovery::Metrics,
}

impl Metrics {
    /// Registers every metric in `registry`, under the `libp2p_rendezvous` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let registry = registry
            .sub_registry_with_prefix("libp2p")
            .sub_registry_with_prefix("rendezvous");
        let server = registry.sub_registry_with_prefix("server");
        Self {
            connections: connections::Connections::new(server),
            server: server::Metrics::new(server),
            client: client::Metrics::new(registry.sub_registry_with_prefix("client")),
            discovery: discovery::Metrics::new(registry.sub_registry_with_prefix("discovery")),
        }
    }

    /// Registers only the server's metrics (`libp2p_rendezvous_server_*`) in `registry`, for a
    /// process that runs a server and no client or aggregator: its exposition then holds no
    /// client or discovery families stuck at 0. Client and aggregator events recorded anyway
    /// are counted where nobody reads them.
    pub fn for_server(registry: &mut Registry) -> Self {
        let mut unused = Registry::default();
        let mut metrics = Self::new(&mut unused);
        let server = registry
            .sub_registry_with_prefix("libp2p")
            .sub_registry_with_prefix("rendezvous")
            .sub_registry_with_prefix("server");
        metrics.server = server::Metrics::new(server);
        metrics.connections = connections::Connections::new(server);
        metrics
    }

    /// Sets the server's gauges (registrations held, namespaces in use, whether its store is
    /// available) from `server`. Call it after recording each of its events (the gauges are
    /// state, not events). A count the store cannot give at once (a shared store, such as
    /// Redis) is left out of the exposition rather than shown as 0. The first call also
    /// attaches `server`'s push delay counters ([`Behaviour::push_delays`]), which
    /// `libp2p_rendezvous_server_push_delay_seconds` reads at each scrape (empty until then).
    ///
    /// [`Behaviour::push_delays`]: crate::server::Behaviour::push_delays
    pub fn record_server_state(&self, server: &crate::server::Behaviour) {
        self.server.set_state(
            server.registration_count(),
            server.namespace_count(),
            server.store_available(),
            server.push_delays(),
        );
    }

    /// Registrations the server held when [`Metrics::record_server_state`] last ran; `None`
    /// before it ran, or when its store could not say at once.
    pub fn server_registrations(&self) -> Option<i64> {
        self.server.registrations()
    }

    /// Whether the server's store was available when [`Metrics::record_server_state`] last ran
    /// (`true` before it first ran).
    pub fn server_store_available(&self) -> bool {
        self.server.store_available()
    }
}

/// Records events as metrics (the shape of `libp2p::metrics::Recorder`).
pub trait Recorder<Event> {
    /// Records `event`.
    fn record(&self, event: &Event);
}

impl Recorder<crate::server::Event> for Metrics {
    fn record(&self, event: &crate::server::Event) {
        self.server.record(event)
    }
}

/// `libp2p_rendezvous_server_connections{transport}` from the swarm's connection events (every
/// other swarm event is left to `libp2p::metrics`): hand it every `SwarmEvent` of the server's
/// swarm.
impl<E> Recorder<libp2p::swarm::SwarmEvent<E>> for Metrics {
    fn record(&self, event: &libp2p::swarm::SwarmEvent<E>) {
        use libp2p::swarm::SwarmEvent;
        match event {
            SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                self.connections.established(endpoint)
            }
            SwarmEvent::ConnectionClosed { endpoint, .. } => self.connections.closed(endpoint),
            _ => {}
        }
    }
}

impl Recorder<crate::client::Event> for Metrics {
    fn record(&self, event: &crate::client::Event) {
        self.client.record(event)
    }
}

impl<E> Recorder<crate::discovery::Event<E>> for Metrics {
    fn record(&self, event: &crate::discovery::Event<E>) {
        self.discovery.record(event)
    }
}

/// The `status` label of a response: `ok`, or the spec's name of the error code in lower case.
fn status_label(code: Option<&crate::ErrorCode>) -> &'static str {
    use crate::ErrorCode::*;
    match code {
        None => "ok",
        Some(InvalidNamespace) => "e_invalid_namespace",
        Some(InvalidSignedPeerRecord) => "e_invalid_signed_peer_record",
        Some(InvalidTtl) => "e_invalid_ttl",
        Some(InvalidCookie) => "e_invalid_cookie",
        Some(NotAuthorized) => "e_not_authorized",
        Some(InternalError) => "e_internal_error",
        Some(Unavailable) => "e_unavailable",
        Some(Other(_)) => "other",
    }
}

/// Every value [`status_label`] returns, to create the series up front.
const STATUS_LABELS: [&str; 9] = [
    "ok",
    "e_invalid_namespace",
    "e_invalid_signed_peer_record",
    "e_invalid_ttl",
    "e_invalid_cookie",
    "e_not_authorized",
    "e_internal_error",
    "e_unavailable",
    "other",
];

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use libp2p::{identity::Keypair, PeerId};

    use super::*;
    use crate::{
        client,
        codec::RequestKind,
        discovery,
        server::{self, Limit, Removal},
        ErrorCode, ErrorResponse, Namespace, RecordFormat, Registration, SignedRecord,
    };

    /// Each sample line of the exposition: `name{labels}` to value.
    fn samples(registry: &Registry) -> BTreeMap<String, f64> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse().unwrap())
            })
            .collect()
    }

    fn registration() -> Registration {
        Registration {
            namespace: Namespace::from_static("chat"),
            record: SignedRecord::new(
                &Keypair::generate_ed25519(),
                vec!["/memory/1".parse().unwrap()],
                RecordFormat::Standard,
            )
            .unwrap(),
            ttl: 60,
        }
    }

    fn refused(code: ErrorCode) -> ErrorResponse {
        ErrorResponse::new(code, "no")
    }

    #[test]
    fn given_server_events_then_each_series_counts_exactly_its_events() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let peer = PeerId::random();
        let ms = Duration::from_millis(1);
        let ns = Namespace::from_static("chat");
        for event in [
            server::Event::PeerRegistered {
                peer,
                registration: registration(),
                duration: ms,
            },
            server::Event::PeerNotRegistered {
                peer,
                namespace: ns.clone(),
                error: refused(ErrorCode::Unavailable),
                limit: Some(Limit::Rate),
                duration: ms,
            },
            server::Event::PeerNotRegistered {
                peer,
                namespace: ns.clone(),
                error: refused(ErrorCode::NotAuthorized),
                limit: Some(Limit::PeerRegistrations),
                duration: ms,
            },
            server::Event::DiscoverServed {
                peer,
                namespace: None,
                count: 7,
                duration: ms,
            },
            server::Event::DiscoverNotServed {
                peer,
                namespace: None,
                error: refused(ErrorCode::InvalidCookie),
                limit: None,
                duration: ms,
            },
            server::Event::PeerUnregistered {
                peer,
                namespace: ns.clone(),
                cause: Removal::Unregister,
            },
            server::Event::PeerUnregistered {
                peer,
                namespace: ns.clone(),
                cause: Removal::Disconnect,
            },
            server::Event::RegistrationExpired(registration()),
            server::Event::RequestRejected {
                peer,
                kind: RequestKind::Register,
                error: refused(ErrorCode::InvalidSignedPeerRecord),
            },
            server::Event::RequestRejected {
                peer,
                kind: RequestKind::Unregister,
                error: refused(ErrorCode::InvalidNamespace),
            },
            server::Event::StreamRefused {
                peer,
                limit: Limit::Streams,
            },
            server::Event::StreamRefused {
                peer,
                limit: Limit::MessageSize,
            },
            server::Event::StoreCommitted {
                operations: 5,
                latency: ms,
            },
        ] {
            metrics.record(&event);
        }
        let s = samples(&registry);
        let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in {s:#?}"));
        let p = "libp2p_rendezvous_server_";
        let req = |t: &str, st: &str| {
            get(&format!(
                "{p}requests_total{{type=\"{t}\",status=\"{st}\"}}"
            ))
        };
        assert_eq!(req("register", "ok"), 1.0);
        assert_eq!(req("register", "e_unavailable"), 1.0);
        assert_eq!(req("register", "e_not_authorized"), 1.0);
        assert_eq!(req("register", "e_invalid_signed_peer_record"), 1.0);
        assert_eq!(req("discover", "ok"), 1.0);
        assert_eq!(req("discover", "e_invalid_cookie"), 1.0);
        assert_eq!(req("discover", "e_unavailable"), 0.0);
        let total: f64 = s
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{p}requests_total")))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(total, 6.0, "the undecodable UNREGISTER has no status");
        // Only the requests the core answered are timed.
        let timed = |t: &str| {
            get(&format!(
                "{p}request_duration_seconds_count{{type=\"{t}\"}}"
            ))
        };
        assert_eq!(timed("register"), 3.0);
        assert_eq!(timed("discover"), 2.0);
        let removed = |c: &str| get(&format!("{p}registrations_removed_total{{cause=\"{c}\"}}"));
        assert_eq!(removed("expired"), 1.0);
        assert_eq!(removed("unregister"), 1.0);
        assert_eq!(removed("disconnect"), 1.0);
        assert_eq!(get(&format!("{p}discover_page_size_count")), 1.0);
        assert_eq!(get(&format!("{p}discover_page_size_sum")), 7.0);
        let rejected = |l: &str| get(&format!("{p}rejected_total{{limit=\"{l}\"}}"));
        assert_eq!(rejected("rate"), 1.0);
        assert_eq!(rejected("per_peer"), 1.0);
        assert_eq!(rejected("total"), 0.0);
        assert_eq!(rejected("message_size"), 1.0);
        assert_eq!(rejected("bytes"), 0.0);
        assert_eq!(rejected("streams"), 1.0);
        assert_eq!(rejected("in_flight"), 0.0);
        assert_eq!(get(&format!("{p}store_commit_operations_sum")), 5.0);
        assert_eq!(get(&format!("{p}store_commit_operations_count")), 1.0);
        assert_eq!(get(&format!("{p}store_commit_duration_seconds_sum")), 0.001);
    }

    #[test]
    fn given_metrics_for_a_server_then_only_server_families_are_exposed() {
        let mut registry = Registry::default();
        let metrics = Metrics::for_server(&mut registry);
        metrics.record(&server::Event::RegistrationExpired(registration()));
        metrics.record(&client::Event::Expired {
            peer: PeerId::random(),
            namespace: Namespace::from_static("chat"),
        });
        let s = samples(&registry);
        assert_eq!(
            s["libp2p_rendezvous_server_registrations_removed_total{cause=\"expired\"}"],
            1.0
        );
        assert!(
            s.keys().all(|k| k.starts_with("libp2p_rendezvous_server_")),
            "{s:#?}"
        );
    }

    #[test]
    fn given_client_events_then_outcomes_pages_and_failures_are_counted_by_kind() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let server = PeerId::random();
        let ns = Namespace::from_static("chat");
        let request = client::RequestId(1);
        for event in [
            client::Event::Registered {
                server,
                namespace: ns.clone(),
                ttl: 60,
                request,
            },
            client::Event::RegisterFailed {
                server,
                namespace: ns.clone(),
                error: client::RequestError::Remote(refused(ErrorCode::InvalidTtl)),
                request,
            },
            client::Event::RegisterFailed {
                server,
                namespace: ns.clone(),
                error: client::RequestError::Timeout,
                request,
            },
            client::Event::DiscoverFailed {
                server,
                namespace: None,
                error: client::RequestError::NotConnected,
                request,
            },
            client::Event::DiscoverPolled {
                server,
                namespace: ns.clone(),
                registrations: 3,
            },
            client::Event::DiscoverCompleted {
                server,
                namespace: None,
                registrations: vec![registration()],
                skipped: 0,
                cookie: None,
                request,
            },
            client::Event::CookieReset {
                server,
                namespace: ns.clone(),
            },
            client::Event::Discovered {
                peer: PeerId::random(),
                addrs: Vec::new(),
                namespace: ns.clone(),
                server,
            },
            client::Event::Expired {
                peer: PeerId::random(),
                namespace: ns.clone(),
            },
        ] {
            metrics.record(&event);
        }
        let s = samples(&registry);
        let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in {s:#?}"));
        let p = "libp2p_rendezvous_client_";
        let outcome = |o: &str| get(&format!("{p}registrations_total{{outcome=\"{o}\"}}"));
        assert_eq!(outcome("ok"), 1.0);
        assert_eq!(outcome("refused"), 1.0);
        assert_eq!(outcome("failed"), 1.0);
        let failed = |r: &str, k: &str| {
            get(&format!(
                "{p}request_failures_total{{request=\"{r}\",kind=\"{k}\"}}"
            ))
        };
        assert_eq!(failed("register", "e_invalid_ttl"), 1.0);
        assert_eq!(failed("register", "timeout"), 1.0);
        assert_eq!(failed("discover", "not_connected"), 1.0);
        assert_eq!(get(&format!("{p}discover_pages_total")), 2.0);
        assert_eq!(get(&format!("{p}discover_records_total")), 4.0);
        assert_eq!(get(&format!("{p}cookie_resets_total")), 1.0);
        assert_eq!(get(&format!("{p}discovered_total")), 1.0);
        assert_eq!(get(&format!("{p}expired_total")), 1.0);
    }

    #[test]
    fn given_aggregator_events_then_discovered_and_expired_count_by_source() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let peer = PeerId::random();
        let events: [discovery::Event<()>; 4] = [
            discovery::Event::Discovered {
                peer,
                addrs: Vec::new(),
                source: "mdns",
            },
            discovery::Event::Discovered {
                peer,
                addrs: Vec::new(),
                source: "rendezvous",
            },
            discovery::Event::Expired {
                peer,
                source: "mdns",
            },
            discovery::Event::Source(()),
        ];
        for event in &events {
            metrics.record(event);
        }
        let s = samples(&registry);
        let p = "libp2p_rendezvous_discovery_";
        assert_eq!(s[&format!("{p}discovered_total{{source=\"mdns\"}}")], 1.0);
        assert_eq!(
            s[&format!("{p}discovered_total{{source=\"rendezvous\"}}")],
            1.0
        );
        assert_eq!(s[&format!("{p}expired_total{{source=\"mdns\"}}")], 1.0);
        assert!(!s.contains_key(&format!("{p}expired_total{{source=\"rendezvous\"}}")));
    }
}
