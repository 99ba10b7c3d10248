//! Kamailio's evapi transport: the host connects to Kamailio's evapi listener, receives
//! each suspended INVITE as an event and answers with the transaction's `tindex`/`tlabel`
//! so the config can `t_continue` it. Owns the connection (reconnecting with back-off),
//! the event format and the readiness handshake; each event goes to
//! [`DecisionService::handle`] as a [`HookCall`], answered in the evapi layout of
//! [`KamailioEvapi`] (`docs/evapi-answer.md`).
//!
//! Why a second Kamailio transport beside JSON-RPC: janssonrpcc re-parses and
//! re-serialises the params and the answer in Kamailio, several times per call; evapi
//! hands over one string each way, so Kamailio spends much less CPU per decision.
//!
//! Events (Kamailio → host), JSON built by the config from safe tokens only (numbers,
//! fixed words, base64):
//! ```text
//! {"hook":"route","tindex":N,"tlabel":N,"source":"uc","contacts":[[uri,next_hop,user_agent,instance],...],"msg":"<base64>"}
//! ready <nonce>
//! {"call":"answered","call_id":"<base64>","branch":N}    for the call log (CVW-50):
//! {"call":"ended","call_id":"<base64>","how":"..."}       what became of a forked call,
//! {"call":"failed","call_id":"<base64>","code":N}          from the dialog module's events
//! ```
//! with every contact field base64-encoded. After connecting, the host sends
//! `{"hello":"<nonce>"}` and counts itself ready when `ready <nonce>` comes back: then
//! Kamailio has accepted the connection and tagged it, and calls reach this host. The
//! nonce is random (`getrandom`), so one host's `ready` is never taken for another's.

use super::netstring::{self, NetstringCodec};
use crate::decision::calls::CallEvent;
use crate::decision::dialect::{KamailioEvapi, ProxyAnswer};
use crate::decision::request::SourceParam;
use crate::decision::{DecisionService, HookCall, HookError};
use crate::policy::model::{Contact, RequestContext};
use crate::shutdown::Shutdown;
use base64::Engine as _;
use serde::Deserialize;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder as _, Encoder as _};

/// Reconnect back-off: quick after a Kamailio restart, gentle when it stays away.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Whether the host is connected to Kamailio and receiving calls.
#[derive(Clone)]
pub struct EvapiStatus(watch::Receiver<bool>);

impl EvapiStatus {
    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once Kamailio has confirmed the connection (or at once if it has).
    pub async fn ready(&mut self) {
        // An Err means the client task ended: nothing more to wait for.
        let _ = self.0.wait_for(|ready| *ready).await;
    }
}

/// The client that connects to Kamailio's evapi at `addr` and answers its events until
/// `shutdown` fires, reconnecting whenever the connection is lost; the caller runs the
/// future wherever it keeps its tasks.
pub fn client(
    addr: SocketAddr,
    svc: DecisionService,
    shutdown: Shutdown,
) -> (
    EvapiStatus,
    impl std::future::Future<Output = io::Result<()>> + Send + 'static,
) {
    let (tx, rx) = watch::channel(false);
    (EvapiStatus(rx), run(addr, svc, shutdown, tx))
}

async fn run(
    addr: SocketAddr,
    svc: DecisionService,
    mut shutdown: Shutdown,
    ready: watch::Sender<bool>,
) -> io::Result<()> {
    let mut backoff = MIN_BACKOFF;
    let mut warned = false;
    loop {
        let connected = tokio::select! {
            c = TcpStream::connect(addr) => c,
            () = shutdown.wait() => return Ok(()),
        };
        match connected {
            Ok(stream) => {
                backoff = MIN_BACKOFF;
                warned = false;
                tracing::info!(%addr, "evapi: connected to Kamailio");
                let ended = connection(stream, &svc, &mut shutdown, &ready).await;
                ready.send_replace(false);
                match ended {
                    Ok(Ended::Shutdown) => return Ok(()),
                    Ok(Ended::Closed) => {
                        tracing::warn!(%addr, "evapi: Kamailio closed the connection")
                    }
                    Err(e) => tracing::warn!(%addr, "evapi: connection lost: {e}"),
                }
            }
            // Kamailio not (yet) listening is normal at start-up: say it once per outage.
            Err(e) if !warned => {
                tracing::warn!(%addr, "evapi: cannot connect to Kamailio ({e}); retrying");
                warned = true;
            }
            Err(e) => tracing::debug!(%addr, "evapi: cannot connect: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.wait() => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Ended {
    Shutdown,
    Closed,
}

/// Bytes read at a time; a read brings every event that arrived, answered together.
const READ_SIZE: usize = 64 * 1024;

async fn connection(
    mut stream: TcpStream,
    svc: &DecisionService,
    shutdown: &mut Shutdown,
    ready: &watch::Sender<bool>,
) -> io::Result<Ended> {
    stream.set_nodelay(true)?;
    let nonce = nonce()?;
    let hello = format!("{{\"hello\":\"{nonce}\"}}");
    stream
        .write_all(&netstring::encode(hello.as_bytes()))
        .await?;
    let mut codec = NetstringCodec;
    let mut input = BytesMut::with_capacity(READ_SIZE);
    let mut out = BytesMut::new();
    loop {
        // `read_buf` reads nothing into a full buffer, which would look like the end.
        input.reserve(READ_SIZE / 4);
        let n = tokio::select! {
            n = stream.read_buf(&mut input) => n?,
            () = shutdown.wait() => return Ok(Ended::Shutdown),
        };
        if n == 0 {
            return Ok(Ended::Closed);
        }
        acknowledge_at_once(&stream);
        out.clear();
        let mut answers = 0usize;
        while let Some(frame) = codec
            .decode(&mut input)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            match read_frame(svc, &frame, &nonce) {
                Frame::Ready => {
                    tracing::info!("evapi: Kamailio confirmed the connection; deciding its calls");
                    ready.send_replace(true);
                }
                Frame::Answer(answer) => codec
                    .encode(answer.as_str().as_bytes(), &mut out)
                    .map_err(io::Error::other)
                    .map(|()| answers += 1)?,
                Frame::Nothing => {}
            }
        }
        // Whole frames only, in one write: evapi's reader is safest with whole frames,
        // and the answers to what one read brought leave together, at once.
        if !out.is_empty()
            && let Err(e) = stream.write_all(&out).await
        {
            // Not silent: each of these calls waits in Kamailio for its decision timeout
            // (then is routed plain), or died with a Kamailio that went away.
            tracing::warn!(
                undelivered = answers,
                "evapi: {answers} decisions not delivered ({e}); Kamailio routes those calls plain when its decision timeout fires"
            );
            return Err(e);
        }
    }
}

/// Kamailio writes events without TCP_NODELAY: while one event is unacknowledged, Nagle
/// holds the next one until our ACK, and Linux delays ACKs up to 40 ms when no answer is
/// ready to carry them. Asking for an immediate ACK after every read keeps the next event
/// from waiting (Linux clears the flag by itself, so it is set again each time).
#[cfg(target_os = "linux")]
fn acknowledge_at_once(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_quickack(true) {
        tracing::debug!("evapi: TCP_QUICKACK: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn acknowledge_at_once(_: &TcpStream) {}

/// Tells this connection's `ready` apart from another host's: 128 random bits, hex.
fn nonce() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| io::Error::other(format!("no random nonce: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What one frame from Kamailio comes to.
#[derive(Debug)]
pub enum Frame {
    /// `ready <nonce>` with this connection's nonce: Kamailio confirmed the connection.
    Ready,
    /// A route event's answer, to write back.
    Answer(ProxyAnswer),
    /// Nothing to answer: a call event (it only completes a call-log record), a `ready`
    /// with another nonce, or an event that does not even name its transaction.
    Nothing,
}

/// Reads one frame's payload: the whole of what the host does with Kamailio's bytes
/// besides the netstring framing, without I/O (the connection loop and the fuzz target
/// `evapi_event` call it).
pub fn read_frame(svc: &DecisionService, frame: &[u8], nonce: &str) -> Frame {
    if let Some(r) = frame.strip_prefix(b"ready ") {
        return if r == nonce.as_bytes() {
            Frame::Ready
        } else {
            Frame::Nothing
        };
    }
    if frame.starts_with(b"{\"call\"") {
        match call_event(frame) {
            Ok(event) => svc.call_event(event),
            Err(e) => tracing::warn!("evapi: unreadable call event dropped: {e}"),
        }
        return Frame::Nothing;
    }
    answer_event(svc, frame).map_or(Frame::Nothing, Frame::Answer)
}

/// A call event, its Call-ID base64 as the config sends it.
fn call_event(frame: &[u8]) -> Result<CallEvent, String> {
    let event: CallEvent = serde_json::from_slice(frame).map_err(|e| e.to_string())?;
    let decode = |b64: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("call_id {b64:?} is not base64 of UTF-8"))
    };
    Ok(match event {
        CallEvent::Answered { call_id, branch } => CallEvent::Answered {
            call_id: decode(&call_id)?,
            branch,
        },
        CallEvent::Ended { call_id, how } => CallEvent::Ended {
            call_id: decode(&call_id)?,
            how,
        },
        CallEvent::Failed { call_id, code } => CallEvent::Failed {
            call_id: decode(&call_id)?,
            code,
        },
    })
}

/// A route event as the example config builds it.
#[derive(Deserialize)]
struct RouteEvent {
    hook: String,
    tindex: u32,
    tlabel: u32,
    #[serde(default)]
    source: Option<SourceParam>,
    #[serde(default)]
    contacts: Vec<Vec<String>>,
    #[serde(default)]
    msg: Option<String>,
}

/// Just the transaction, to answer an event that is otherwise unreadable.
#[derive(Deserialize)]
struct TransactionOnly {
    tindex: u32,
    tlabel: u32,
}

/// The answer frame payload for one evapi event; `None` when the event does not even
/// name its transaction (Kamailio's decision timeout then routes the call on).
pub fn answer_event(svc: &DecisionService, payload: &[u8]) -> Option<ProxyAnswer> {
    // An event is a JSON object (`route[CVW]` builds one). serde would also read an array,
    // positionally, and answer for whatever transaction its elements happen to name.
    if !payload.trim_ascii_start().starts_with(b"{") {
        tracing::warn!("evapi: an event that is not a JSON object dropped");
        return None;
    }
    let event: RouteEvent = match serde_json::from_slice(payload) {
        Ok(e) => e,
        Err(e) => {
            let Ok(t) = serde_json::from_slice::<TransactionOnly>(payload) else {
                tracing::warn!("evapi: unreadable event dropped: {e}");
                return None;
            };
            let why = format!("event: {e}");
            tracing::warn!("evapi: {why}");
            return Some(KamailioEvapi::new(t.tindex, t.tlabel).error(&why));
        }
    };
    let dialect = KamailioEvapi::new(event.tindex, event.tlabel);
    let answer = route_call(event).and_then(|call| svc.handle(&call, &dialect));
    Some(answer.unwrap_or_else(|e| {
        tracing::warn!("evapi: no decision: {e}");
        dialect.error(&e.to_string())
    }))
}

/// The one request type from an event: only `route` travels over evapi.
fn route_call(event: RouteEvent) -> Result<HookCall, HookError> {
    if event.hook != "route" {
        return Err(HookError::UnknownMethod(event.hook));
    }
    let msg = event.msg.as_deref().ok_or(HookError::MissingParam("msg"))?;
    let contacts = event
        .contacts
        .iter()
        .enumerate()
        .map(|(i, c)| contact(i, c))
        .collect::<Result<_, _>>()?;
    let ctx = RequestContext {
        source: SourceParam::source(event.source),
        contacts,
    };
    HookCall::route(msg, ctx)
}

/// `[uri, next_hop, user_agent, instance]`, each base64; missing or empty ones are unknown.
fn contact(i: usize, fields: &[String]) -> Result<Contact, HookError> {
    const NAMES: [&str; 4] = ["uri", "next_hop", "user_agent", "instance"];
    let mut values: [Option<String>; 4] = Default::default();
    for (k, (name, slot)) in NAMES.iter().zip(values.iter_mut()).enumerate() {
        let Some(b64) = fields.get(k) else { continue };
        let field = || format!("contacts[{i}].{name}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| HookError::Field {
                field: field(),
                why: format!("not base64: {e}"),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| HookError::Field {
            field: field(),
            why: "not UTF-8".into(),
        })?;
        *slot = Some(text).filter(|t| !t.is_empty());
    }
    let [uri, next_hop, user_agent, instance] = values;
    Ok(Contact {
        uri: uri.ok_or_else(|| HookError::Field {
            field: format!("contacts[{i}].uri"),
            why: "missing".into(),
        })?,
        next_hop,
        instance,
        user_agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::fake::{Fake, INVITE, b64};
    use std::sync::Arc;

    fn svc() -> (DecisionService, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        (DecisionService::new(fake.clone()), fake)
    }

    fn event(tindex: u32, contacts: &str, msg: &str) -> Vec<u8> {
        format!(
            r#"{{"hook":"route","tindex":{tindex},"tlabel":77,"source":"uc","contacts":[{contacts}],"msg":"{msg}"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_route_event_is_answered_for_its_transaction_with_the_contacts_decoded() {
        let (s, fake) = svc();
        let contact = format!(
            r#"["{}","","{}",""]"#,
            b64("sip:alice@127.0.0.1:5071"),
            b64("UC \"Desktop\"/1.0")
        );
        let answer = answer_event(&s, &event(12, &contact, &b64(INVITE))).unwrap();
        let text = answer.as_str();
        assert!(text.starts_with("v1 0000000012 0000000077 P "), "{text}");
        let seen = fake.seen.lock().unwrap();
        let ctx = &seen[0].1;
        assert_eq!(ctx.contacts[0].uri, "sip:alice@127.0.0.1:5071");
        assert_eq!(ctx.contacts[0].next_hop, None);
        assert_eq!(
            ctx.contacts[0].user_agent.as_deref(),
            Some("UC \"Desktop\"/1.0")
        );
    }

    /// Found by the fuzz target `evapi_event` (fuzz/corpus/evapi_event/crash-209654a8…):
    /// `["lw", 4, 0]` was read positionally as hook, tindex and tlabel and answered for
    /// transaction 4/0.
    #[test]
    fn an_event_that_is_not_an_object_is_dropped() {
        let (s, fake) = svc();
        assert!(answer_event(&s, br#"["lw", 4, 0]"#).is_none());
        let array = format!(r#" ["route", 4, 0, "uc", [], "{}"]"#, b64(INVITE));
        assert!(answer_event(&s, array.as_bytes()).is_none());
        assert!(fake.seen.lock().unwrap().is_empty());
        assert!(answer_event(&s, &event(4, "", &b64(INVITE))).is_some());
    }

    #[test]
    fn bad_events_get_an_error_answer_naming_the_field_or_nothing() {
        let (s, _) = svc();
        let answer = |e: &[u8]| answer_event(&s, e).map(ProxyAnswer::into_string);
        assert_eq!(
            answer(&event(5, r#"["!!"]"#, &b64(INVITE))).unwrap(),
            "v1 0000000005 0000000077 E 000057 contacts[0].uri: not base64: Invalid symbol 33, offset 0."
        );
        assert!(
            answer(&event(5, "", "bm90IFNJUA=="))
                .unwrap()
                .contains(" E 0000")
        );
        assert!(
            answer(br#"{"tindex":1,"tlabel":2,"hook":7}"#)
                .unwrap()
                .starts_with("v1 0000000001 0000000002 E ")
        );
        // Without its transaction an event cannot be answered: the proxy's timer routes it.
        assert_eq!(answer(b"garbage"), None);
    }

    #[tokio::test]
    async fn ready_after_kamailio_confirms_and_reconnects_after_a_restart() {
        let kamailio = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = kamailio.local_addr().unwrap();
        let (svc, _) = svc();
        let (trigger, shutdown) = Shutdown::new();
        let (mut status, client) = client(addr, svc, shutdown);
        let task = tokio::spawn(client);

        for round in 0..2 {
            let (mut conn, _) = kamailio.accept().await.unwrap();
            let mut d = BytesMut::new();
            let hello = read_frame(&mut conn, &mut d).await;
            let hello: serde_json::Value = serde_json::from_slice(&hello).unwrap();
            assert!(
                !status.is_ready(),
                "round {round}: not ready before the confirmation"
            );
            let ready = format!("ready {}", hello["hello"].as_str().unwrap());
            conn.write_all(&netstring::encode(ready.as_bytes()))
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(5), status.ready())
                .await
                .unwrap();
            conn.write_all(&netstring::encode(&event(round, "", &b64(INVITE))))
                .await
                .unwrap();
            let answer = read_frame(&mut conn, &mut d).await;
            assert!(answer.starts_with(format!("v1 {round:010} 0000000077 P ").as_bytes()));
            // Kamailio restarts: the host notices and connects again.
            drop(conn);
        }
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    async fn read_frame(c: &mut TcpStream, pending: &mut BytesMut) -> Vec<u8> {
        loop {
            if let Some(f) = NetstringCodec.decode(pending).unwrap() {
                return f.to_vec();
            }
            let n = tokio::time::timeout(Duration::from_secs(5), c.read_buf(pending))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "host closed early");
        }
    }

    #[test]
    fn nonces_are_random_hex() {
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
