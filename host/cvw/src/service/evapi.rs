//! Kamailio's evapi transport: the host connects to Kamailio's evapi listener, receives
//! each suspended INVITE as an event and answers with the transaction's `tindex`/`tlabel`
//! so the config can `t_continue` it. Owns the connection (reconnecting with back-off),
//! the event format and the readiness handshake; the hooks are [`super::hooks`]', the
//! answer layout [`crate::adapters::kamailio::EvapiAnswer`]'s.
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
//! ```
//! with every contact field base64-encoded. After connecting, the host sends
//! `{"hello":"<nonce>"}` and counts itself ready when `ready <nonce>` comes back: then
//! Kamailio has accepted the connection and tagged it, and calls reach this host.

use super::hooks::SourceParam;
use super::netstring::{self, Decoder};
use super::{DecisionService, HookError, Shutdown};
use crate::adapters::Kamailio;
use crate::adapters::kamailio::EvapiAnswer;
use crate::policy::model::{Contact, RequestContext};
use base64::Engine as _;
use serde::Deserialize;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

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

async fn connection(
    mut stream: TcpStream,
    svc: &DecisionService,
    shutdown: &mut Shutdown,
    ready: &watch::Sender<bool>,
) -> io::Result<Ended> {
    stream.set_nodelay(true)?;
    let nonce = nonce();
    let hello = format!("{{\"hello\":\"{nonce}\"}}");
    stream
        .write_all(&netstring::encode(hello.as_bytes()))
        .await?;
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let n = tokio::select! {
            n = stream.read(&mut buf) => n?,
            () = shutdown.wait() => return Ok(Ended::Shutdown),
        };
        if n == 0 {
            return Ok(Ended::Closed);
        }
        acknowledge_at_once(&stream);
        decoder.extend(&buf[..n]);
        out.clear();
        while let Some(frame) = decoder
            .next_frame()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            if let Some(r) = frame.strip_prefix(b"ready ") {
                if r == nonce.as_bytes() {
                    tracing::info!("evapi: Kamailio confirmed the connection; deciding its calls");
                    ready.send_replace(true);
                }
                continue;
            }
            if let Some(answer) = svc.answer_event(&frame) {
                out.extend_from_slice(&netstring::encode(&answer));
            }
        }
        // Whole frames only, in one write: evapi's reader is safest with whole frames,
        // and the answers to what one read brought leave together, at once.
        if !out.is_empty() {
            stream.write_all(&out).await?;
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

/// Tells this connection's `ready` apart from another host's.
fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
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

impl DecisionService {
    /// The answer frame payload for one evapi event; `None` when the event does not even
    /// name its transaction (Kamailio's decision timeout then routes the call on).
    pub fn answer_event(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let event: RouteEvent = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                let Ok(t) = serde_json::from_slice::<TransactionOnly>(payload) else {
                    tracing::warn!("evapi: unreadable event dropped: {e}");
                    return None;
                };
                let why = format!("event: {e}");
                tracing::warn!("evapi: {why}");
                return Some(EvapiAnswer::Error(why).encode(t.tindex, t.tlabel));
            }
        };
        let (tindex, tlabel) = (event.tindex, event.tlabel);
        let answer = self.route_event(event).unwrap_or_else(|e| {
            tracing::warn!("evapi: no decision: {e}");
            EvapiAnswer::Error(e.to_string())
        });
        Some(answer.encode(tindex, tlabel))
    }

    fn route_event(&self, event: RouteEvent) -> Result<EvapiAnswer, HookError> {
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
            source: event.source.into(),
            contacts,
        };
        let d = self.route_decided(msg, &ctx)?;
        Kamailio
            .evapi_answer(&d.value)
            .map_err(|source| HookError::Map {
                generation: d.generation,
                source,
            })
    }
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
    use crate::service::hooks::tests::{Fake, INVITE, b64};
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
        let answer = s.answer_event(&event(12, &contact, &b64(INVITE))).unwrap();
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("0000000012 0000000077 P "), "{text}");
        let seen = fake.seen.lock().unwrap();
        let ctx = &seen[0].1;
        assert_eq!(ctx.contacts[0].uri, "sip:alice@127.0.0.1:5071");
        assert_eq!(ctx.contacts[0].next_hop, None);
        assert_eq!(
            ctx.contacts[0].user_agent.as_deref(),
            Some("UC \"Desktop\"/1.0")
        );
    }

    #[test]
    fn bad_events_get_an_error_answer_naming_the_field_or_nothing() {
        let (s, _) = svc();
        let answer = |e: &[u8]| s.answer_event(e).map(|a| String::from_utf8(a).unwrap());
        assert_eq!(
            answer(&event(5, r#"["!!"]"#, &b64(INVITE))).unwrap(),
            "0000000005 0000000077 E 000057 contacts[0].uri: not base64: Invalid symbol 33, offset 0."
        );
        assert!(
            answer(&event(5, "", "bm90IFNJUA=="))
                .unwrap()
                .contains(" E 0000")
        );
        assert!(
            answer(br#"{"tindex":1,"tlabel":2,"hook":7}"#)
                .unwrap()
                .starts_with("0000000001 0000000002 E ")
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
            let mut d = Decoder::new();
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
            assert!(answer.starts_with(format!("{round:010} 0000000077 P ").as_bytes()));
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

    async fn read_frame(c: &mut TcpStream, d: &mut Decoder) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = d.next_frame().unwrap() {
                return f;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "host closed early");
            d.extend(&buf[..n]);
        }
    }
}
