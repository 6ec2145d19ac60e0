//! A real HTTP client for `serve --metrics`: `GET` (or another method) a path, scrape and parse
//! `/metrics`.

use std::{collections::BTreeMap, net::SocketAddr};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// `GET path` over HTTP/1 with hyper's client: the status, the content type and the body.
pub async fn get(address: SocketAddr, path: &str) -> (u16, String, String) {
    request(address, hyper::Method::GET, path).await
}

/// `method path` over HTTP/1 with hyper's client: the status, the content type and the body.
pub async fn request(
    address: SocketAddr,
    method: hyper::Method,
    path: &str,
) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, address.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// The samples of an exposition: `name{labels}` to value.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

pub async fn scrape(address: SocketAddr) -> BTreeMap<String, f64> {
    let (status, content_type, body) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    parse(&body)
}
