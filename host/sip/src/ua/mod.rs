//! A small user agent core (RFC 3261 §8, §13–§15) over the transaction layer: it owns the
//! sockets, routes what arrives to the [`Leg`] it belongs to (by Call-ID), and gives each
//! leg the requests a call controller needs: INVITE with or without SDP, CANCEL, the ACK of
//! a 2xx (end to end, with a body when the 2xx carried an offer), re-INVITE, BYE, INFO and
//! UPDATE, and answers as a UAS (with 2xx retransmission until the ACK, §13.3.1.4).
//!
//! Every request of a leg carries the leg marker (`X-CVW-Origination: callback;token=...`, CVW-34)
//! so that the proxy and policy recognise the host's own calls. With an outbound proxy,
//! initial requests go to it (with a pre-loaded Route if asked); in-dialog requests follow
//! the route set. Host names are not resolved: the proxy and the legs' targets are IP addresses.
//!
//! It does not decide anything about a call (that is `third_party`) and keeps no message
//! longer than the exchange that needs it. One leg's state machine is [`leg`]; this module
//! is the core that routes to the legs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::queue::Sender;
use tokio::time::Instant;
use tracing::{debug, info_span, warn};

pub use crate::auth::Credentials;
use crate::dialog::{Dialog, DialogError};
use crate::message::{Headers, Method, NameAddr, Request, Response};
use crate::random;
use crate::sdp;
use crate::transaction::{InviteClient, ServerTransaction, Timers, TransactionLayer, Unmatched};
use crate::transport::{BindError, Destination, Inbound, Protocol, Transport};

mod leg;

pub use leg::{Leg, glare_delay, requires_100rel};

/// The marker header on every request the host originates (CVW-34). The proxy config
/// (examples/kamailio) classifies a request as `origination` when it carries this header
/// and comes from the host's address, and strips it before relaying. (`X-CVW-Leg` is
/// taken there: it labels the branches of a fork.)
pub const LEG_HEADER: &str = "X-CVW-Origination";

/// How the user agent is set up.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// Local address; port 0 picks one.
    pub bind: SocketAddr,
    /// Transport for URIs without a `transport` parameter.
    pub protocol: Protocol,
    /// Every initial request goes here, e.g. `sip:127.0.0.1:5060;transport=tcp`.
    pub outbound_proxy: Option<String>,
    /// Also put the outbound proxy in a pre-loaded `Route` header (RFC 3261 §8.1.2). Off by
    /// default: proxies route initial requests by Request-URI, and a Route to itself is
    /// only understood by a proxy config that calls `loose_route()` (or drops it) on
    /// initial requests.
    pub preload_route: bool,
    pub timers: Timers,
    /// The User-Agent header.
    pub user_agent: String,
    /// Appended to the leg marker as `;token=...`, so a proxy can tell the host's legs from
    /// a forged marker.
    pub leg_token: Option<String>,
    /// Refresh connected two-leg calls this often (UPDATE without SDP, RFC 4028 style);
    /// `None`: never.
    pub session_refresh: Option<Duration>,
    /// Digest accounts for the trunks and proxies that challenge our requests (401/407),
    /// chosen by realm; empty: a challenge fails the request.
    pub credentials: Vec<Credentials>,
}

impl Default for UaConfig {
    fn default() -> Self {
        UaConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            protocol: Protocol::Udp,
            outbound_proxy: None,
            preload_route: false,
            timers: Timers::default(),
            user_agent: "cvw".into(),
            leg_token: None,
            session_refresh: None,
            credentials: Vec::new(),
        }
    }
}

/// The session interval (Session-Expires, seconds) asked for when refreshing every
/// `interval`: twice it, so one lost refresh does not end the session (RFC 4028 §10).
pub fn session_expires(interval: Duration) -> u64 {
    interval.as_secs().max(1) * 2
}

/// Which leg of a two-leg call a request belongs to (the marker's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegRole {
    Callback,
    Callee,
}

impl LegRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LegRole::Callback => "callback",
            LegRole::Callee => "callee",
        }
    }
}

/// A message body with its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Body {
    pub fn sdp(bytes: Vec<u8>) -> Body {
        Body {
            content_type: "application/sdp".into(),
            bytes,
        }
    }

    /// The body of a message, if it has one.
    pub fn of(headers: &Headers, bytes: &[u8]) -> Option<Body> {
        (!bytes.is_empty()).then(|| Body {
            content_type: headers
                .get("Content-Type")
                .unwrap_or("application/octet-stream")
                .to_owned(),
            bytes: bytes.to_vec(),
        })
    }
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("cannot send to {uri:?}: not a sip: URI with an IP address")]
    Unroutable { uri: String },
    #[error("the leg has no confirmed dialog yet")]
    NoDialog,
    #[error("the leg already sent its initial INVITE")]
    AlreadyInvited,
    #[error("the answer cannot create a dialog: {0}")]
    Dialog(#[from] DialogError),
}

/// A request received on a leg, with the transaction that answers it.
#[derive(Debug)]
pub struct IncomingRequest {
    pub request: Request,
    pub source: Destination,
    pub transaction: ServerTransaction,
}

/// Something that happened on a leg.
#[derive(Debug)]
pub enum LegEvent {
    /// A response to a request this leg sent; a timeout arrives as `408` (§8.1.3.1).
    Response(Response),
    /// A request from the peer (BYE, INFO, re-INVITE, UPDATE, ...).
    Request(IncomingRequest),
    /// The peer cancelled its INVITE (the CANCEL, here, is answered already).
    Cancelled(Request),
    /// The ACK of our 2xx, with the answer if our 2xx carried the offer.
    Ack(Request),
}

/// A new call for this user agent (used by the test phones).
#[derive(Debug)]
pub struct IncomingCall {
    pub leg: Leg,
    pub invite: IncomingRequest,
}

/// Events travel boxed: a queued event then takes 8 bytes of the queue's buffer instead of
/// `LegEvent`'s 144, and a held call's queues are empty (cvw-load originate measured the
/// per-call memory).
///
/// Keyed by the leg's own Call-ID string, shared with the leg, its dialog and the call's
/// handle rather than copied into each (~0.3 KB per two-leg call).
type LegMap = HashMap<Arc<str>, Sender<Box<LegEvent>>>;

struct Inner {
    config: UaConfig,
    layer: TransactionLayer,
    legs: Mutex<LegMap>,
    proxy: Option<Destination>,
    _transport: Arc<Transport>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only inserts and removes happen under the lock; a poisoned map is still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors when starting the user agent.
#[derive(Debug, thiserror::Error)]
pub enum UaError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("outbound_proxy {0:?} is not a sip: URI with an IP address")]
    BadProxy(String),
}

/// The user agent: cheap to clone, stops when the last clone and leg are gone.
#[derive(Clone)]
pub struct UserAgent {
    inner: Arc<Inner>,
}

impl UserAgent {
    /// Binds the sockets and starts routing. Incoming new calls (INVITEs outside a dialog)
    /// go to the returned receiver; drop it to refuse them with 480.
    pub async fn bind(
        config: UaConfig,
    ) -> Result<(UserAgent, mpsc::UnboundedReceiver<IncomingCall>), UaError> {
        let proxy = match &config.outbound_proxy {
            Some(uri) => {
                Some(resolve(uri, config.protocol).ok_or_else(|| UaError::BadProxy(uri.clone()))?)
            }
            None => None,
        };
        let (transport, inbound) = Transport::bind(config.bind.ip(), config.bind.port()).await?;
        let layer = TransactionLayer::new(transport.clone(), config.timers);
        let inner = Arc::new(Inner {
            config,
            layer,
            legs: Mutex::default(),
            proxy,
            _transport: transport,
        });
        let (calls_tx, calls_rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(Arc::downgrade(&inner), inbound, calls_tx));
        Ok((UserAgent { inner }, calls_rx))
    }

    pub fn local_addr(&self, protocol: Protocol) -> SocketAddr {
        self.inner.layer.transmit().local_addr(protocol)
    }

    pub fn timers(&self) -> Timers {
        self.inner.config.timers
    }

    pub fn session_refresh(&self) -> Option<Duration> {
        self.inner.config.session_refresh
    }

    /// A new outgoing leg; nothing is sent until [`Leg::invite`].
    pub fn leg(&self, spec: LegSpec) -> Leg {
        Leg::outgoing(self.inner.clone(), spec)
    }
}

/// What an outgoing leg's initial INVITE looks like.
#[derive(Debug, Clone)]
pub struct LegSpec {
    /// The Request-URI.
    pub target: String,
    pub from: NameAddr,
    pub to: NameAddr,
    /// P-Asserted-Identity (RFC 3325), when the leg shows an identity.
    pub asserted: Option<NameAddr>,
    /// The leg marker (CVW-34); `None` for plain user agents such as test phones.
    pub role: Option<LegRole>,
    /// Extra headers on the initial INVITE.
    pub headers: Vec<(String, String)>,
}

/// Resolves a `sip:` URI with an IP host to where its requests go (RFC 3263 without DNS).
pub fn resolve(uri: &str, default: Protocol) -> Option<Destination> {
    let parsed = rsip::Uri::try_from(uri).ok()?;
    let rsip::Host::IpAddr(ip) = parsed.host_with_port.host else {
        return None;
    };
    let protocol = parsed
        .params
        .iter()
        .find_map(|p| match p {
            rsip::Param::Transport(rsip::Transport::Tcp) => Some(Protocol::Tcp),
            rsip::Param::Transport(rsip::Transport::Udp) => Some(Protocol::Udp),
            _ => None,
        })
        .unwrap_or(default);
    let port = parsed.host_with_port.port.map_or(5060, u16::from);
    Some(Destination {
        addr: SocketAddr::new(ip, port),
        protocol,
    })
}

async fn dispatch(
    inner: Weak<Inner>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    calls: mpsc::UnboundedSender<IncomingCall>,
) {
    while let Some(message) = inbound.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let Some(unmatched) = inner.layer.handle(message) else {
            continue;
        };
        route(&inner, unmatched, &calls);
    }
}

fn route(inner: &Arc<Inner>, unmatched: Unmatched, calls: &mpsc::UnboundedSender<IncomingCall>) {
    let call_id = match &unmatched {
        Unmatched::Request(r) => r.request.headers.call_id(),
        Unmatched::Cancel { request, .. } | Unmatched::Ack(request) => request.headers.call_id(),
        Unmatched::Response(r) => r.headers.call_id(),
    }
    .to_owned();
    let leg = guard(&inner.legs).get(call_id.as_str()).cloned();
    let event = match unmatched {
        Unmatched::Request(r) => LegEvent::Request(IncomingRequest {
            request: r.request,
            source: r.source,
            transaction: r.transaction,
        }),
        Unmatched::Cancel {
            matched: true,
            request,
        } => LegEvent::Cancelled(request),
        Unmatched::Cancel { matched: false, .. } => return,
        Unmatched::Ack(r) => LegEvent::Ack(r),
        Unmatched::Response(r) => LegEvent::Response(r),
    };
    if let Some(leg) = leg {
        match leg.send(Box::new(event)) {
            Ok(()) => return,
            Err(event) => return orphan(inner, *event, None),
        }
    }
    match event {
        LegEvent::Request(r)
            if r.request.method == Method::Invite && r.request.headers.to_tag().is_none() =>
        {
            new_call(inner, r, calls)
        }
        other => orphan(inner, other, None),
    }
}

fn new_call(
    inner: &Arc<Inner>,
    invite: IncomingRequest,
    calls: &mpsc::UnboundedSender<IncomingCall>,
) {
    let leg = Leg::incoming(inner.clone(), invite.request.headers.call_id().into());
    if let Err(e) = calls.send(IncomingCall { leg, invite }) {
        let call = e.0;
        call.invite
            .transaction
            .respond(call.invite.request.response(480, "Temporarily Unavailable"));
    }
}

/// What nobody is waiting for: requests get 481 (§12.2.2); a 2xx of INVITE is ACKed and
/// ended with BYE (§13.2.2.4) — a fork or an answer that crossed our CANCEL.
fn orphan(inner: &Arc<Inner>, event: LegEvent, invite_had_offer: Option<bool>) {
    match event {
        LegEvent::Request(r) if r.request.method != Method::Ack => r
            .transaction
            .respond(r.request.response(481, "Call/Transaction Does Not Exist")),
        LegEvent::Response(r) if r.is_success() && r.method() == Some(Method::Invite) => {
            ack_and_bye(inner, &r, invite_had_offer.unwrap_or(true), None);
        }
        _ => {}
    }
}

/// ACKs an unwanted 2xx (with an all-port-0 answer when it carried an offer) and BYEs it.
fn ack_and_bye(
    inner: &Arc<Inner>,
    response: &Response,
    invite_had_offer: bool,
    role: Option<LegRole>,
) {
    let Ok(mut dialog) = Dialog::as_uac(response) else {
        return;
    };
    let _span = info_span!("sip", call_id = %dialog.call_id).entered();
    let number = response.headers.cseq().map_or(1, |c| c.number);
    let body = (!invite_had_offer && sdp::is_sdp(&response.body))
        .then(|| Body::sdp(sdp::reject_all(&response.body, &inner.local_ip())));
    let ack = dialog.request(Method::Ack, Some(number));
    if let Some((ack, to)) = inner.prepare(ack, &dialog, body, role, &[]) {
        inner
            .layer
            .send_stateless(&crate::message::Message::Request(ack), to);
    }
    let bye = dialog.request(Method::Bye, None);
    if let Some((bye, to)) = inner.prepare(bye, &dialog, None, role, &[]) {
        debug!("unwanted 2xx: ACK and BYE");
        inner.layer.send_request(bye, to, Box::new(|_| {}));
    }
}

impl Inner {
    fn local_ip(&self) -> String {
        self.config.bind.ip().to_string()
    }

    fn marker(&self, role: LegRole) -> String {
        match &self.config.leg_token {
            Some(token) => format!("{};token={token}", role.as_str()),
            None => role.as_str().to_owned(),
        }
    }

    fn via(&self, protocol: Protocol, branch: &str) -> String {
        let addr = self.layer.transmit().local_addr(protocol);
        format!(
            "SIP/2.0/{} {addr};branch={branch};rport",
            protocol.via_name()
        )
    }

    fn contact(&self, protocol: Protocol) -> String {
        let addr = self.layer.transmit().local_addr(protocol);
        format!("<sip:cvw@{addr};transport={}>", protocol.uri_param())
    }

    /// Adds Via, Contact, marker, body and extras to an in-dialog request; finds its hop.
    fn prepare(
        &self,
        request: Request,
        dialog: &Dialog,
        body: Option<Body>,
        role: Option<LegRole>,
        extra: &[(String, String)],
    ) -> Option<(Request, Destination)> {
        self.prepare_on(&random::branch(), request, dialog, body, role, extra)
    }

    /// [`Inner::prepare`] on a given Via branch, to send the same ACK again.
    fn prepare_on(
        &self,
        branch: &str,
        mut request: Request,
        dialog: &Dialog,
        body: Option<Body>,
        role: Option<LegRole>,
        extra: &[(String, String)],
    ) -> Option<(Request, Destination)> {
        let to = resolve(dialog.next_hop(), self.config.protocol)?;
        self.finish(&mut request, to.protocol, branch, body, role, extra);
        Some((request, to))
    }

    fn finish(
        &self,
        request: &mut Request,
        protocol: Protocol,
        branch: &str,
        body: Option<Body>,
        role: Option<LegRole>,
        extra: &[(String, String)],
    ) {
        let mut headers = Headers::new();
        headers.push("Via", self.via(protocol, branch));
        for h in request.headers.iter() {
            headers.push(h.name.clone(), h.value.clone());
        }
        if matches!(request.method, Method::Invite | Method::Update) {
            headers.push("Contact", self.contact(protocol));
        }
        if let Some(role) = role {
            headers.push(LEG_HEADER, self.marker(role));
        }
        headers.push("User-Agent", self.config.user_agent.clone());
        for (name, value) in extra {
            headers.push(name.as_str(), value.as_str());
        }
        if let Some(body) = body {
            headers.push("Content-Type", body.content_type);
            request.body = body.bytes;
        }
        request.headers = headers;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_ip_uris_with_port_and_transport_and_refuses_names() {
        let d = resolve("sip:+1425@127.0.0.1:5090;transport=tcp", Protocol::Udp).unwrap();
        assert_eq!(d.addr, SocketAddr::from(([127, 0, 0, 1], 5090)));
        assert_eq!(d.protocol, Protocol::Tcp);
        let d = resolve("sip:127.0.0.1", Protocol::Udp).unwrap();
        assert_eq!(d.addr.port(), 5060);
        assert_eq!(d.protocol, Protocol::Udp);
        assert_eq!(resolve("sip:bob@pbx.corp.example", Protocol::Udp), None);
        assert_eq!(resolve("not a uri", Protocol::Udp), None);
    }

    #[test]
    fn glare_back_off_is_between_2_1_and_4_seconds() {
        for _ in 0..200 {
            let d = glare_delay();
            assert!(
                d >= Duration::from_millis(2100) && d <= Duration::from_secs(4),
                "{d:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_bad_outbound_proxy_is_refused_at_start() {
        let config = UaConfig {
            outbound_proxy: Some("sip:proxy.example".into()),
            ..UaConfig::default()
        };
        assert!(matches!(
            UserAgent::bind(config).await,
            Err(UaError::BadProxy(p)) if p == "sip:proxy.example"
        ));
    }

    #[tokio::test]
    async fn an_unroutable_target_is_an_error_not_a_hang() {
        let (ua, _) = UserAgent::bind(UaConfig::default()).await.unwrap();
        let mut leg = ua.leg(LegSpec {
            target: "sip:bob@pbx.corp.example".into(),
            from: NameAddr::new("", "sip:cvw@h"),
            to: NameAddr::new("", "sip:bob@pbx.corp.example"),
            asserted: None,
            role: Some(LegRole::Callee),
            headers: Vec::new(),
        });
        assert!(matches!(
            leg.invite(None),
            Err(SendError::Unroutable { .. })
        ));
        assert_eq!(leg.invite(None), Err(SendError::AlreadyInvited));
    }
}
