//! The API's HTTP front door: what a client may cost the host before a handler runs.
//!
//! - At most `max_connections` connections at once, and `max_connections_per_source`
//!   from one source (an IPv4 address or an IPv6 /64); one over a cap gets a `503` and is
//!   closed at once, so memory stays bounded however many sockets clients open, and one
//!   source cannot take every slot.
//! - A new connection's first byte must arrive within `header_read_timeout_ms`, and then
//!   its request head (request line and headers) within `header_read_timeout_ms` (hyper's
//!   `header_read_timeout`), as must each later head counted from the previous answer: the
//!   same timeout closes slow-header (slowloris), silent and idle keep-alive connections.
//!   Until its first byte a connection has no read buffer (hyper allocates 8 KiB).
//! - Headers over `max_header_bytes` get a JSON `431`; a head over twice that is cut off
//!   by hyper itself (a bare `431`) before it is buffered.
//! - A body over `max_body_bytes` gets a JSON `413` (from `Content-Length`, or while
//!   reading a chunked body); a body that does not arrive within `body_read_timeout_ms`
//!   gets a `408`. Both close the connection.
//!
//! Each request carries its peer address ([`axum::extract::ConnectInfo`]) for the
//! bad-token throttle ([`super::throttle`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::ApiError;
use super::throttle::{SourceKey, key};
use crate::shutdown::Shutdown;

/// `[api.http]` in the serve configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Connections open at once; more are answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one source (IPv4 address, IPv6 /64); 0: no limit.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Time to send a request's head, from the connection's start or the previous
    /// answer; also closes idle keep-alive connections.
    #[serde(default = "default_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time to send a request's body once its head has arrived.
    #[serde(default = "default_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// Request headers, names and values, at most.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Request body at most.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_source() -> usize {
    256
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_header_bytes() -> usize {
    8 * 1024
}
fn default_max_body_bytes() -> usize {
    16 * 1024
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_connections_per_source: default_max_connections_per_source(),
            header_read_timeout_ms: default_timeout_ms(),
            body_read_timeout_ms: default_timeout_ms(),
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

impl HttpSettings {
    /// What hyper buffers of a request head at most (it needs at least 8 KiB).
    fn hard_head_limit(&self) -> usize {
        self.max_header_bytes.saturating_mul(2).max(8192)
    }
}

/// The body sent with the 503 to a connection over the cap; written without waiting.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nconnection: close\r\ncontent-length: 90\r\n\r\n\
{\"error\":{\"code\":\"over-capacity\",\"message\":\"too many connections; try again in a moment\"}}";

/// Serve `router` on `listener` with the limits of `settings` until `signal` fires, then
/// let open connections finish their request and close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: HttpSettings,
    mut signal: Shutdown,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(
        Arc::new(settings),
        guard,
    ));
    let max = settings.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(
            settings.header_read_timeout_ms.max(1),
        ))
        .max_header_size(settings.hard_head_limit())
        .max_buf_size(settings.hard_head_limit());
    let per_source = Arc::new(PerSource {
        max: settings.max_connections_per_source,
        open: Mutex::new(HashMap::new()),
    });
    let header_timeout = Duration::from_millis(settings.header_read_timeout_ms.max(1));
    let mut last_warning: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = signal.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!("click-to-call API cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slots = permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| "its connection limit")
            .and_then(|permit| {
                PerSource::take(&per_source, peer.ip())
                    .map(|slot| (permit, slot))
                    .ok_or("the connection limit of one source")
            });
        let (permit, slot) = match slots {
            Ok(slots) => slots,
            Err(which) => {
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    warn!(%peer, "click-to-call API at {which}; refusing connections");
                    last_warning = Some(Instant::now());
                }
                refuse(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let http = http.clone();
        let mut signal = signal.clone();
        let task = async move {
            // Nothing is buffered for a connection until its first byte has arrived (peeked,
            // not read: `readable()` wakes at once on a fresh socket): hyper's connection
            // and its buffers are only allocated then.
            let mut probe = [0u8; 1];
            let first_byte = tokio::select! {
                peeked = tokio::time::timeout(header_timeout, stream.peek(&mut probe)) => {
                    matches!(peeked, Ok(Ok(1)))
                }
                () = signal.wait() => false,
            };
            if first_byte {
                Box::pin(serve_connection(stream, peer, router, http, signal)).await;
            } else {
                debug!(%peer, "API connection closed: nothing received");
            }
            drop((permit, slot));
        };
        tokio::spawn(task);
    }
    // Wait for the open connections to finish.
    let _ = permits.acquire_many(max as u32).await;
    Ok(())
}

/// One connection, from its first byte until it closes or `signal` fires (then its
/// request in progress is finished first).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    http: hyper::server::conn::http1::Builder,
    mut signal: Shutdown,
) {
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        tower::Service::call(&mut router, request)
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = signal.wait() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, "API connection closed: {e}");
    }
}

/// Connections open per source.
struct PerSource {
    max: usize,
    open: Mutex<HashMap<SourceKey, usize>>,
}

/// One open connection of a source, given back when dropped.
struct SourceSlot {
    table: Arc<PerSource>,
    key: SourceKey,
}

impl PerSource {
    fn take(table: &Arc<PerSource>, ip: IpAddr) -> Option<SourceSlot> {
        let key = key(Some(ip));
        if table.max > 0 {
            let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
            let count = open.entry(key).or_insert(0);
            if *count >= table.max {
                return None;
            }
            *count += 1;
        }
        Some(SourceSlot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if self.table.max == 0 {
            return;
        }
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A connection over the cap: a 503 if the socket takes it at once, then closed.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(OVER_CAPACITY);
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.shutdown()).await;
    });
}

/// Header and body limits, before any handler: the body is read here, within its limit
/// and its time, and handed on whole.
async fn guard(
    State(settings): State<Arc<HttpSettings>>,
    request: Request,
    next: Next,
) -> Response {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > settings.max_header_bytes {
        return closing(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "request headers are {header_bytes} bytes; at most {} are accepted",
                settings.max_header_bytes
            ),
        ));
    }
    let too_large = || {
        closing(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!(
                "request body over {} bytes; the API's requests are small JSON documents",
                settings.max_body_bytes
            ),
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > settings.max_body_bytes as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let wait = Duration::from_millis(settings.body_read_timeout_ms);
    let read = tokio::time::timeout(wait, Limited::new(body, settings.max_body_bytes).collect());
    let bytes = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            debug!("API request body unreadable: {e}");
            return closing(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                "the request body could not be read",
            ));
        }
        Err(_) => {
            return closing(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    settings.body_read_timeout_ms
                ),
            ));
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// An error after which the connection is not reused (its body may be unread).
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_slots_are_counted_and_given_back() {
        let table = Arc::new(PerSource {
            max: 2,
            open: Mutex::new(HashMap::new()),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = PerSource::take(&table, a).unwrap();
        let _second = PerSource::take(&table, a).unwrap();
        assert!(PerSource::take(&table, a).is_none());
        assert!(PerSource::take(&table, "192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        let _third = PerSource::take(&table, a).unwrap();
        drop(_third);
        drop(_second);
        assert!(
            table.open.lock().unwrap().is_empty(),
            "entries go with their last slot"
        );
    }

    #[test]
    fn the_over_capacity_answer_is_well_formed() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "over-capacity");
    }
}
