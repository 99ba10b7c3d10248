//! JSON-RPC 2.0 over TCP in netstring frames: the server Kamailio's janssonrpcc connects
//! to. Owns the accept loop, per-connection framing and the JSON-RPC envelope (ids,
//! error codes, batches); each call goes to [`DecisionService::handle`] as a
//! [`HookCall`], answered in [`KamailioJson`].
//!
//! Every answer frame goes out whole in one write with TCP_NODELAY (Kamailio drops a
//! frame whose `,` comes in a later read; Nagle adds 40 ms stalls). Requests on one
//! connection are answered in order; janssonrpcc matches answers by id anyway.

use super::netstring::{self, NetstringCodec, NetstringError};
use crate::decision::dialect::{KamailioJson, ProxyAnswer};
use crate::decision::request::Params;
use crate::decision::{DecisionService, Hook, HookCall, HookError};
use crate::shutdown::Shutdown;
use serde::Deserialize;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder as _, Encoder as _};

/// JSON-RPC 2.0 error codes (section 5.1).
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// Server error range: the host could not carry out the policy's decision.
const DECISION_ERROR: i64 = -32000;

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    jsonrpc: Option<String>,
    #[serde(default)]
    id: Option<Value>,
    method: String,
    #[serde(default)]
    params: Option<Value>,
}

/// Serves JSON-RPC on `listener` until `shutdown` fires; then every connection closes.
pub async fn serve(
    listener: TcpListener,
    svc: DecisionService,
    mut shutdown: Shutdown,
) -> io::Result<()> {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    // Per-connection failures (reset before accept, fd limits) must not
                    // stop the service for everyone else.
                    Err(e) => { tracing::warn!("jsonrpc accept: {e}"); continue; }
                };
                tracing::debug!(%peer, "jsonrpc connection");
                let svc = svc.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, svc, shutdown, PARTIAL_FRAME_TIMEOUT).await {
                        tracing::debug!(%peer, "jsonrpc connection ended: {e}");
                    }
                });
            }
            () = shutdown.wait() => return Ok(()),
        }
    }
}

/// How long the rest of a started frame may take. An idle connection between frames may
/// stay open for ever (janssonrpcc keeps one per server); half a frame may not.
const PARTIAL_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read at a time; a read brings every frame that arrived, answered together.
const READ_SIZE: usize = 64 * 1024;

async fn connection(
    mut stream: TcpStream,
    svc: DecisionService,
    mut shutdown: Shutdown,
    partial_timeout: Duration,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut codec = NetstringCodec;
    let mut input = BytesMut::with_capacity(READ_SIZE);
    let mut out = BytesMut::new();
    loop {
        let partial = !input.is_empty();
        let stalled = async {
            if partial {
                tokio::time::sleep(partial_timeout).await
            } else {
                std::future::pending().await
            }
        };
        // `read_buf` reads nothing into a full buffer, which would look like the end.
        input.reserve(READ_SIZE / 4);
        let n = tokio::select! {
            n = stream.read_buf(&mut input) => n?,
            () = stalled => {
                let message = format!("bad netstring frame: incomplete for {partial_timeout:?}");
                let frame = netstring::encode(&error_bytes(&Value::Null, PARSE_ERROR, &message));
                stream.write_all(&frame).await?;
                return Ok(());
            }
            () = shutdown.wait() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        out.clear();
        let broken = loop {
            match codec.decode(&mut input) {
                Ok(Some(frame)) => {
                    if let Some(answer) = answer_frame(&svc, &frame) {
                        codec
                            .encode(&answer[..], &mut out)
                            .map_err(io::Error::other)?;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = &broken {
            codec
                .encode(&framing_error(e)[..], &mut out)
                .map_err(io::Error::other)?;
        }
        // Whole frames only, in one write: the answers to what one read brought leave
        // together, at once.
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        if broken.is_some() {
            // Frame boundaries are lost: nothing later on this stream can be trusted.
            return Ok(());
        }
    }
}

fn framing_error(e: &NetstringError) -> Vec<u8> {
    error_bytes(
        &Value::Null,
        PARSE_ERROR,
        &format!("bad netstring frame: {e}"),
    )
}

fn error_bytes(id: &Value, code: i64, message: &str) -> Vec<u8> {
    error(id, code, message).into_bytes()
}

fn error(id: &Value, code: i64, message: &str) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }).to_string()
}

/// The common case, read in one pass: a single call whose params are well formed.
/// Anything else takes the slow path, which names precisely what is wrong.
#[derive(Deserialize)]
struct FastCall<'a> {
    #[serde(borrow)]
    jsonrpc: Cow<'a, str>,
    id: Option<Value>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(default)]
    params: Option<Params>,
}

/// The answer to one frame's payload; `None` for notifications (no id).
pub fn answer_frame(svc: &DecisionService, payload: &[u8]) -> Option<Vec<u8>> {
    if let Ok(call) = serde_json::from_slice::<FastCall>(payload)
        && call.jsonrpc == "2.0"
    {
        let result = call.method.parse::<Hook>().and_then(|hook| {
            let call = HookCall::from_params(hook, call.params.unwrap_or_default())?;
            svc.handle(&call, &KamailioJson)
        });
        return call.id.map(|id| answer(&id, result).into_bytes());
    }
    let value: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            return Some(error_bytes(
                &Value::Null,
                PARSE_ERROR,
                &format!("not JSON: {e}"),
            ));
        }
    };
    let answer = match value {
        Value::Array(calls) if calls.is_empty() => {
            Some(error(&Value::Null, INVALID_REQUEST, "empty batch"))
        }
        Value::Array(calls) => {
            let answers: Vec<String> = calls
                .into_iter()
                .filter_map(|c| answer_call(svc, c))
                .collect();
            (!answers.is_empty()).then(|| format!("[{}]", answers.join(",")))
        }
        call => answer_call(svc, call),
    };
    answer.map(String::into_bytes)
}

fn answer_call(svc: &DecisionService, call: Value) -> Option<String> {
    let env: Envelope = match serde_json::from_value(call) {
        Ok(e) => e,
        Err(e) => {
            return Some(error(
                &Value::Null,
                INVALID_REQUEST,
                &format!("not a JSON-RPC request: {e}"),
            ));
        }
    };
    let reply_id = env.id.clone().unwrap_or(Value::Null);
    if env.jsonrpc.as_deref() != Some("2.0") {
        return Some(error(
            &reply_id,
            INVALID_REQUEST,
            "jsonrpc: must be \"2.0\"",
        ));
    }
    let result = env.method.parse::<Hook>().and_then(|hook| {
        let params = Params::from_value(env.params.unwrap_or(Value::Null))?;
        svc.handle(&HookCall::from_params(hook, params)?, &KamailioJson)
    });
    // A notification gets no answer, not even an error (JSON-RPC 2.0 section 4.1).
    env.id.as_ref()?;
    Some(answer(&reply_id, result))
}

/// A response: the document goes in as the text it already is.
fn answer(id: &Value, result: Result<ProxyAnswer, HookError>) -> String {
    match result {
        Ok(doc) => format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{}}}",
            doc.as_str()
        ),
        Err(e) => error(id, error_code(&e), &e.to_string()),
    }
}

fn error_code(e: &HookError) -> i64 {
    match e {
        HookError::UnknownMethod(_) => METHOD_NOT_FOUND,
        HookError::Map { .. } => DECISION_ERROR,
        HookError::Params(_)
        | HookError::MissingParam(_)
        | HookError::Base64(_)
        | HookError::Message(_)
        | HookError::Field { .. } => INVALID_PARAMS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::fake::{Fake, INVITE, b64};
    use std::sync::Arc;

    fn svc() -> DecisionService {
        DecisionService::new(Arc::new(Fake::default()))
    }

    fn answer(payload: &str) -> Value {
        serde_json::from_slice(&answer_frame(&svc(), payload.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn route_answer_is_what_janssonrpcc_expects() {
        let req = json!({ "jsonrpc": "2.0", "id": 2, "method": "route", "params": { "msg": b64(INVITE), "source": "uc" } });
        let a = answer(&req.to_string());
        assert_eq!(a["id"], 2);
        assert_eq!(a["jsonrpc"], "2.0");
        assert_eq!(a["result"]["action"], "relay");
        assert_eq!(a["result"]["rtjson"]["routes"][0]["label"], "desk");
    }

    #[test]
    fn malformed_requests_get_named_errors() {
        assert_eq!(answer("{").get("error").unwrap()["code"], PARSE_ERROR);
        let a = answer(r#"{"jsonrpc":"2.0","id":"x","method":"hangup"}"#);
        assert_eq!(a["id"], "x");
        assert_eq!(a["error"]["code"], METHOD_NOT_FOUND);
        assert_eq!(
            a["error"]["message"],
            "unknown method \"hangup\": expected route, reply or failure"
        );
        let a = answer(r#"{"jsonrpc":"2.0","id":3,"method":"route","params":{"msg":"!!"}}"#);
        assert_eq!(a["error"]["code"], INVALID_PARAMS);
        assert!(
            a["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("params.msg: not base64")
        );
        let a = answer(r#"{"jsonrpc":"1.0","id":4,"method":"route"}"#);
        assert_eq!(a["error"]["message"], "jsonrpc: must be \"2.0\"");
        assert_eq!(answer("[]")["error"]["code"], INVALID_REQUEST);
    }

    #[test]
    fn notifications_get_no_answer_and_batches_answer_each_call() {
        let s = svc();
        assert!(answer_frame(&s, br#"{"jsonrpc":"2.0","method":"route","params":{}}"#).is_none());
        let batch = json!([
            { "jsonrpc": "2.0", "id": 1, "method": "route", "params": { "msg": b64(INVITE) } },
            { "jsonrpc": "2.0", "method": "route", "params": {} },
            { "jsonrpc": "2.0", "id": 2, "method": "nope" }
        ]);
        let a: Value =
            serde_json::from_slice(&answer_frame(&s, batch.to_string().as_bytes()).unwrap())
                .unwrap();
        assert_eq!(a.as_array().unwrap().len(), 2);
        assert_eq!(a[1]["error"]["code"], METHOD_NOT_FOUND);
    }

    #[tokio::test]
    async fn over_tcp_frames_are_whole_and_garbage_closes_with_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = Shutdown::new();
        let server = tokio::spawn(serve(listener, svc(), shutdown));

        let mut c = TcpStream::connect(addr).await.unwrap();
        let req = json!({ "jsonrpc": "2.0", "id": 9, "method": "route", "params": { "msg": b64(INVITE) } }).to_string();
        let frame = netstring::encode(req.as_bytes());
        // Split the request over two writes: the server must wait for the rest.
        c.write_all(&frame[..10]).await.unwrap();
        c.write_all(&frame[10..]).await.unwrap();
        let mut d = BytesMut::new();
        let payload = read_frame(&mut c, &mut d).await;
        let a: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(a["id"], 9);

        c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let payload = read_frame(&mut c, &mut d).await;
        let a: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            a["error"]["message"],
            "bad netstring frame: netstring length prefix has a non-digit byte 0x47"
        );
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "connection closed after a framing error");

        trigger.fire();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn half_a_frame_is_answered_with_an_error_not_waited_for() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_trigger, shutdown) = Shutdown::new();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            connection(stream, svc(), shutdown, Duration::from_millis(100)).await
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"120:{\"jsonrpc\":").await.unwrap();
        let mut d = BytesMut::new();
        let a: Value = serde_json::from_slice(&read_frame(&mut c, &mut d).await).unwrap();
        assert_eq!(
            a["error"]["message"],
            "bad netstring frame: incomplete for 100ms"
        );
        server.await.unwrap().unwrap();
    }

    async fn read_frame(c: &mut TcpStream, pending: &mut BytesMut) -> Vec<u8> {
        loop {
            if let Some(f) = NetstringCodec.decode(pending).unwrap() {
                return f.to_vec();
            }
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read_buf(pending))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "server closed early");
        }
    }
}
