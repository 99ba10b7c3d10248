//! A minimal HTTP/1.1 JSON client for the API tests: one request per connection on
//! loopback, enough to drive the click-to-call API as a requester would.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send one request to `addr` (`127.0.0.1:port`); returns the status and the JSON body
/// (`Null` when empty).
pub async fn send(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let json = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .filter(|b| !b.is_empty())
        .map(|b| serde_json::from_str(b).unwrap_or(Value::String(b.into())))
        .unwrap_or(Value::Null);
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
