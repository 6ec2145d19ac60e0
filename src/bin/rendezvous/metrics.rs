//! `serve --metrics ADDR`: `GET /metrics` (Prometheus text: libp2p's swarm, identify and ping
//! metrics and ours, one registry) and `GET /health` (a small JSON status), on hyper's HTTP/1
//! server.

use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use libp2p::{swarm::SwarmEvent, Multiaddr, PeerId};
use prometheus_client::{encoding::text::encode, registry::Registry};
use rendezvous_discovery::metrics::{Metrics, Recorder};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    common::CliError,
    serve::{ServeEvent, ServeSwarm},
};

/// HTTP connections served at once; more are closed at once. A scraper needs one; this leaves
/// room for a few dashboards and health checks without letting a flood hold memory.
pub const MAX_HTTP_CONNECTIONS: usize = 32;

/// How long a client may take to send its request headers before the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/health` reports; updated by the swarm loop.
#[derive(Debug)]
pub struct Health {
    peer: PeerId,
    started: Instant,
    /// The swarm's listen addresses (a handful; changed only on listen events).
    listen: Mutex<Vec<Multiaddr>>,
    metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(peer: PeerId, metrics: Arc<Metrics>) -> Self {
        Self {
            peer,
            started: Instant::now(),
            listen: Mutex::new(Vec::new()),
            metrics,
        }
    }

    pub fn listening(&self, address: Multiaddr) {
        let mut listen = self.listen.lock().unwrap_or_else(|e| e.into_inner());
        if !listen.contains(&address) {
            listen.push(address);
        }
    }

    pub fn not_listening(&self, address: &Multiaddr) {
        let mut listen = self.listen.lock().unwrap_or_else(|e| e.into_inner());
        listen.retain(|a| a != address);
    }

    fn json(&self) -> String {
        let listen: Vec<String> = self
            .listen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|a| format!("{a}/p2p/{}", self.peer))
            .collect();
        let available = self.metrics.server_store_available();
        serde_json::json!({
            "status": if available { "ok" } else { "store_unavailable" },
            "store_available": available,
            "peer_id": self.peer.to_string(),
            "listen_addresses": listen,
            "registrations": self.metrics.server_registrations(),
            "uptime_seconds": self.started.elapsed().as_secs(),
        })
        .to_string()
    }
}

/// Binds `address` and serves `/metrics` and `/health` from a spawned task; returns the bound
/// address. A bind failure is a usage error (exit status 2).
pub async fn serve(
    address: SocketAddr,
    registry: Registry,
    health: Arc<Health>,
) -> Result<SocketAddr, CliError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| CliError::Usage(format!("--metrics {address}: cannot listen there ({e})")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("--metrics {address}: {e}")))?;
    let registry = Arc::new(registry);
    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "metrics listener: accept failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!("metrics listener: too many connections; closing the new one");
                continue;
            };
            let (registry, health) = (registry.clone(), health.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = respond(&request, &registry, &health);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "metrics connection failed");
                }
                drop(slot);
            });
        }
    });
    Ok(bound)
}

fn respond(
    request: &Request<Incoming>,
    registry: &Registry,
    health: &Health,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        response
    };
    // HEAD answers as GET does; hyper leaves the body out.
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD are served\n".into(),
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let mut text = String::new();
            match encode(&mut text, registry) {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    in_label_order(&text),
                ),
                Err(error) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("cannot encode the metrics: {error}\n"),
                ),
            }
        }
        // 503 while the store is unavailable, so a load balancer's health check sends new
        // clients to an instance that can serve them.
        "/health" => {
            let status = if health.metrics.server_store_available() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", health.json())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; try /metrics or /health\n".into(),
        ),
    }
}

/// `exposition` with the series of each metric family in the order of their labels.
/// prometheus-client writes a family's series in the order of its `HashMap`, which differs
/// between processes and changes as series are added; sorted, two scrapes can be compared
/// line by line. Each series keeps its lines together and in their order (a histogram's sum,
/// count and buckets, the buckets by `le` as OpenMetrics requires). A family whose lines do
/// not parse as expected is left as it is.
pub fn in_label_order(exposition: &str) -> String {
    let mut out = String::with_capacity(exposition.len());
    let mut samples: Vec<&str> = Vec::new();
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        for line in sorted_series(samples) {
            out.push_str(line);
            out.push('\n');
        }
        samples.clear();
    };
    for line in exposition.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

/// The sample lines of one family, series by series in label order (see [`in_label_order`]).
fn sorted_series<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let mut series: Vec<(String, Vec<&'a str>)> = Vec::new();
    for line in lines {
        let Some(key) = series_key(line) else {
            return lines.to_vec();
        };
        match series.last_mut() {
            Some((last, group)) if *last == key => group.push(line),
            _ => series.push((key, vec![line])),
        }
    }
    series.sort_by(|a, b| a.0.cmp(&b.0));
    series.into_iter().flat_map(|(_, group)| group).collect()
}

/// The labels of a sample line without `le` and `quantile` (which tell the lines of one
/// histogram or summary series apart); empty for a line without labels; `None` when the line
/// does not parse.
fn series_key(line: &str) -> Option<String> {
    let name_end = line.find(['{', ' '])?;
    if line[name_end..].starts_with(' ') {
        return Some(String::new());
    }
    let labels = &line[name_end + 1..];
    let mut pairs = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' | '}' if !quoted => {
                let pair = labels[start..i].trim();
                if !pair.is_empty() && !pair.starts_with("le=") && !pair.starts_with("quantile=") {
                    pairs.push(pair);
                }
                if c == '}' {
                    return Some(pairs.join(","));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// The metrics of `serve --metrics`: libp2p's (swarm, identify, ping) and ours in one registry,
/// served over HTTP, and what `/health` reports.
pub struct Exporter {
    libp2p: libp2p::metrics::Metrics,
    /// Ours, also refreshed from the server's state on a tick.
    pub ours: Arc<Metrics>,
    health: Arc<Health>,
}

impl Exporter {
    /// Serves `/metrics` and `/health` on `address` and says where on stdout.
    pub async fn start(address: SocketAddr, local: libp2p::PeerId) -> Result<Self, CliError> {
        let mut registry = Registry::default();
        let libp2p = libp2p::metrics::Metrics::new(&mut registry);
        let ours = Arc::new(Metrics::for_server(&mut registry));
        let health = Arc::new(Health::new(local, ours.clone()));
        let bound = crate::metrics::serve(address, registry, health.clone()).await?;
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the server; the address is logged too.
        let _ = writeln!(out, "metrics http://{bound}").and_then(|()| out.flush());
        tracing::info!(%bound, "serving metrics");
        Ok(Self {
            libp2p,
            ours,
            health,
        })
    }

    /// Records one swarm event of `serve`.
    pub fn record(&self, swarm: &ServeSwarm, event: &SwarmEvent<ServeEvent>) {
        use libp2p::metrics::Recorder as _;
        self.libp2p.record(event);
        // Connections open, by transport.
        Recorder::record(&*self.ours, event);
        match event {
            SwarmEvent::Behaviour(ServeEvent::Rendezvous(event)) => {
                Recorder::record(&*self.ours, event);
                self.ours.record_server_state(&swarm.behaviour().rendezvous);
            }
            SwarmEvent::Behaviour(ServeEvent::Identify(event)) => self.libp2p.record(event),
            SwarmEvent::Behaviour(ServeEvent::Ping(event)) => self.libp2p.record(event),
            SwarmEvent::NewListenAddr { address, .. } => self.health.listening(address.clone()),
            SwarmEvent::ExpiredListenAddr { address, .. } => self.health.not_listening(address),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_series_in_any_order_then_they_come_out_in_label_order_with_buckets_kept_together() {
        let text = "\
# HELP a_total A.
# TYPE a_total counter
a_total{kind=\"z\"} 1
a_total{kind=\"a,}\\\"\"} 2
a_total{kind=\"m\"} 3
# HELP h H.
# TYPE h histogram
h_sum{type=\"register\"} 1.0
h_count{type=\"register\"} 1
h_bucket{le=\"0.1\",type=\"register\"} 1
h_bucket{le=\"+Inf\",type=\"register\"} 1
h_sum{type=\"discover\"} 2.0
h_count{type=\"discover\"} 1
h_bucket{le=\"0.1\",type=\"discover\"} 0
h_bucket{le=\"+Inf\",type=\"discover\"} 1
# HELP g G.
# TYPE g gauge
g 7
# EOF
";
        let expected = "\
# HELP a_total A.
# TYPE a_total counter
a_total{kind=\"a,}\\\"\"} 2
a_total{kind=\"m\"} 3
a_total{kind=\"z\"} 1
# HELP h H.
# TYPE h histogram
h_sum{type=\"discover\"} 2.0
h_count{type=\"discover\"} 1
h_bucket{le=\"0.1\",type=\"discover\"} 0
h_bucket{le=\"+Inf\",type=\"discover\"} 1
h_sum{type=\"register\"} 1.0
h_count{type=\"register\"} 1
h_bucket{le=\"0.1\",type=\"register\"} 1
h_bucket{le=\"+Inf\",type=\"register\"} 1
# HELP g G.
# TYPE g gauge
g 7
# EOF
";
        assert_eq!(in_label_order(text), expected);
        assert_eq!(in_label_order(expected), expected);
    }

    #[test]
    fn given_a_line_that_does_not_parse_then_its_family_is_left_as_it_is() {
        let text = "# TYPE a counter\na{x=\"unterminated 1\na{x=\"b\"} 1\n";
        assert_eq!(in_label_order(text), text);
    }
}
