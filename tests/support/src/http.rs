//! A small HTTP/1.1 JSON client for the API tests and the load tool: one request per
//! connection on loopback, over hyper's client connection (hyper is in the tree through
//! axum), enough to drive the click-to-call API as a requester would. It neither pools
//! connections nor speaks TLS.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("request to {addr} is not valid HTTP: {source}")]
    Request {
        addr: String,
        source: hyper::http::Error,
    },
    #[error("HTTP exchange with {addr} failed: {source}")]
    Exchange { addr: String, source: hyper::Error },
}

/// Sends one request to `addr` (`127.0.0.1:port`) with a JSON body, as the bearer of
/// `token` if given; returns the status and the body as text.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, String), HttpError> {
    let exchange = |source| HttpError::Exchange {
        addr: addr.to_owned(),
        source,
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(exchange)?;
    // Drives the connection until the answer is read and `sender` is dropped.
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = builder
        .body(Full::<Bytes>::from(body.unwrap_or_default()))
        .map_err(|source| HttpError::Request {
            addr: addr.to_owned(),
            source,
        })?;
    let response = sender.send_request(request).await.map_err(exchange)?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(exchange)?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Send one request to `addr` (`127.0.0.1:port`); returns the status and the JSON body
/// (`Null` when empty, a JSON string when the body is not JSON). Panics when the exchange
/// fails: a test that cannot reach the API has failed.
pub async fn send(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = request(addr, method, path, token, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

/// Follow a call's event feed until `ended`; returns every event.
pub async fn follow(addr: &str, token: &str, id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut since = 0;
    for _ in 0..40 {
        let path = format!("/v1/calls/{id}/events?since={since}&wait_s=5");
        let (status, body) = send(addr, "GET", &path, Some(token), None).await;
        assert_eq!(status, 200, "{body}");
        all.extend(body["events"].as_array().unwrap().iter().cloned());
        since = body["next"].as_u64().unwrap() as usize;
        if all.last().is_some_and(|e| e["state"] == "ended") {
            return all;
        }
    }
    panic!("the call's feed never ended: {all:?}");
}

/// The `state` names of a feed.
pub fn states(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect()
}
