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
//! longer than the exchange that needs it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::queue::{self, Receiver, Sender};
use tokio::time::Instant;
use tracing::{debug, info_span, warn};

use crate::dialog::{Dialog, DialogError};
use crate::message::{Headers, Method, NameAddr, Request, Response};
use crate::random;
use crate::sdp;
use crate::transaction::{InviteClient, ServerTransaction, Timers, TransactionLayer, Unmatched};
use crate::transport::{BindError, Destination, Inbound, Protocol, Transport};

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
        }
    }
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
        let call_id: Arc<str> = random::call_id().into();
        let (tx, rx) = queue::queue();
        guard(&self.inner.legs).insert(call_id.clone(), tx.clone());
        let mut from = spec.from.to_header();
        from.push_str(&format!(";tag={}", random::tag()));
        Leg {
            inner: self.inner.clone(),
            call_id,
            events: rx,
            events_tx: tx,
            role: spec.role,
            state: LegState::Uac(UacState {
                spec: Some(Box::new(UacSpec {
                    target: spec.target,
                    from,
                    to: spec.to.to_header(),
                    asserted: spec.asserted.map(|a| a.to_header()),
                    headers: spec.headers,
                })),
                client: None,
            }),
            dialog: None,
            last_ack: None,
            uas_2xx: None,
            invite_cseq: 1,
            answered_cseq: None,
            pending_offer: None,
            offerless: false,
        }
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
    let call_id: Arc<str> = invite.request.headers.call_id().into();
    let (tx, rx) = queue::queue();
    guard(&inner.legs).insert(call_id.clone(), tx.clone());
    let leg = Leg {
        inner: inner.clone(),
        call_id,
        events: rx,
        events_tx: tx,
        role: None,
        state: LegState::Uas(UasState {
            local_tag: random::tag(),
        }),
        dialog: None,
        last_ack: None,
        uas_2xx: None,
        invite_cseq: 0,
        answered_cseq: None,
        pending_offer: None,
        offerless: false,
    };
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

#[derive(Debug)]
struct UacSpec {
    target: String,
    from: String,
    to: String,
    asserted: Option<String>,
    headers: Vec<(String, String)>,
}

#[derive(Debug)]
struct UacState {
    /// Boxed: needed only until the INVITE is sent.
    spec: Option<Box<UacSpec>>,
    /// The initial INVITE's transaction, while a CANCEL may still be needed.
    client: Option<InviteClient>,
}

#[derive(Debug)]
struct UasState {
    local_tag: String,
}

#[derive(Debug)]
enum LegState {
    Uac(UacState),
    Uas(UasState),
}

/// An ACK of a 2xx as what rebuilds it: its CSeq number, Via branch and body; the rest
/// comes from the dialog. Not the message itself: that was ~0.5 KB per leg for the
/// whole call (issue 4), to answer a 2xx retransmitted because the ACK was lost.
#[derive(Debug)]
struct SentAck {
    cseq: u32,
    branch: String,
    body: Option<Body>,
}

/// One side of a call: a dialog in the making or made. Owned by whoever drives the call;
/// dropping it stops routing to it (a late 2xx is then ACKed and BYEd automatically).
pub struct Leg {
    inner: Arc<Inner>,
    call_id: Arc<str>,
    events: Receiver<Box<LegEvent>>,
    events_tx: Sender<Box<LegEvent>>,
    role: Option<LegRole>,
    state: LegState,
    dialog: Option<Dialog>,
    /// The ACK of the last 2xx of INVITE, resent when the 2xx is.
    last_ack: Option<SentAck>,
    /// Stops the retransmission of our 2xx when its ACK arrives (UAS).
    uas_2xx: Option<oneshot::Sender<()>>,
    /// CSeq of our latest INVITE (initial or re-INVITE) and of the latest one answered 2xx.
    invite_cseq: u32,
    answered_cseq: Option<u32>,
    /// The offer of a 2xx to an offerless INVITE, until our ACK answers it.
    pending_offer: Option<Vec<u8>>,
    /// Whether our latest INVITE went without an offer (its 2xx then carries one).
    offerless: bool,
}

impl std::fmt::Debug for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leg")
            .field("call_id", &self.call_id)
            .field("role", &self.role)
            .field("dialog", &self.dialog)
            .finish()
    }
}

impl Drop for Leg {
    fn drop(&mut self) {
        guard(&self.inner.legs).remove(&*self.call_id);
    }
}

impl Leg {
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The Call-ID without a copy of it, for whoever keeps it as long as the leg.
    pub fn shared_call_id(&self) -> Arc<str> {
        self.call_id.clone()
    }

    pub fn dialog(&self) -> Option<&Dialog> {
        self.dialog.as_ref()
    }

    /// Whether a 2xx made the dialog (and requests like BYE can be sent).
    pub fn is_established(&self) -> bool {
        self.dialog.is_some()
    }

    pub fn timers(&self) -> Timers {
        self.inner.config.timers
    }

    /// Sends the initial INVITE, with an offer or without (then the 2xx carries the offer).
    pub fn invite(&mut self, body: Option<Body>) -> Result<(), SendError> {
        let LegState::Uac(UacState { spec, .. }) = &mut self.state else {
            return Err(SendError::AlreadyInvited);
        };
        let spec = spec.take().ok_or(SendError::AlreadyInvited)?;
        // The target goes into the start line: it must be one token.
        if spec.target.is_empty()
            || spec
                .target
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SendError::Unroutable { uri: spec.target });
        }
        let inner = &self.inner;
        let (hop, route) = match inner.proxy {
            Some(proxy) => (
                Some(proxy),
                inner
                    .config
                    .outbound_proxy
                    .clone()
                    .filter(|_| inner.config.preload_route),
            ),
            None => (resolve(&spec.target, inner.config.protocol), None),
        };
        let to = hop.ok_or_else(|| SendError::Unroutable {
            uri: spec.target.clone(),
        })?;
        let mut headers = Headers::new();
        if let Some(route) = route {
            let lr = if route.contains(";lr") { "" } else { ";lr" };
            headers.push("Route", format!("<{route}{lr}>"));
        }
        headers.push("From", spec.from);
        headers.push("To", spec.to);
        headers.push("Call-ID", &*self.call_id);
        headers.push("CSeq", "1 INVITE");
        headers.push("Max-Forwards", "70");
        if let Some(pai) = spec.asserted {
            headers.push("P-Asserted-Identity", pai);
        }
        headers.push("Allow", "INVITE, ACK, CANCEL, BYE, INFO, UPDATE");
        let mut request = Request {
            method: Method::Invite,
            uri: spec.target,
            headers,
            body: Vec::new(),
        };
        let branch = random::branch();
        inner.finish(
            &mut request,
            to.protocol,
            &branch,
            body,
            self.role,
            &spec.headers,
        );
        let _span = info_span!("sip", call_id = %self.call_id).entered();
        debug!(to = %to.addr, "INVITE");
        let sink = self.sink(request.body.is_empty());
        self.offerless = request.body.is_empty();
        let client = self.inner.layer.send_invite(request, to, sink);
        if let LegState::Uac(uac) = &mut self.state {
            uac.client = Some(client);
        }
        Ok(())
    }

    /// Responses of this leg's client transactions go to its event queue; once the leg is
    /// gone a 2xx of INVITE is ACKed and BYEd instead.
    fn sink(&self, offerless_invite: bool) -> Box<dyn FnMut(Response) + Send> {
        let tx = self.events_tx.clone();
        let inner = Arc::downgrade(&self.inner);
        let role = self.role;
        Box::new(move |response| {
            if let Err(event) = tx.send(Box::new(LegEvent::Response(response)))
                && let (Some(inner), LegEvent::Response(r)) = (inner.upgrade(), *event)
                && r.is_success()
                && r.method() == Some(Method::Invite)
            {
                ack_and_bye(&inner, &r, !offerless_invite, role);
            }
        })
    }

    /// CANCELs the initial INVITE with a Reason (RFC 3326), e.g. `SIP;cause=480;text="..."`.
    pub fn cancel(&self, reason: &str) {
        if let LegState::Uac(UacState {
            client: Some(client),
            ..
        }) = &self.state
        {
            let mut extra = vec![("Reason".to_owned(), reason.to_owned())];
            if let Some(role) = self.role {
                extra.push((LEG_HEADER.to_owned(), self.inner.marker(role)));
            }
            client.cancel(extra);
        }
    }

    /// ACKs the latest 2xx of INVITE (§13.2.2.4), with the answer when the 2xx had the offer.
    pub fn ack(&mut self, body: Option<Body>) -> Result<(), SendError> {
        let ack = SentAck {
            cseq: self.answered_cseq.unwrap_or(self.invite_cseq),
            branch: random::branch(),
            body,
        };
        self.send_ack(&ack)?;
        self.last_ack = Some(ack);
        self.pending_offer = None;
        Ok(())
    }

    fn send_ack(&mut self, ack: &SentAck) -> Result<(), SendError> {
        let dialog = self.dialog.as_mut().ok_or(SendError::NoDialog)?;
        let request = dialog.request(Method::Ack, Some(ack.cseq));
        let (request, to) = self
            .inner
            .prepare_on(
                &ack.branch,
                request,
                dialog,
                ack.body.clone(),
                self.role,
                &[],
            )
            .ok_or_else(|| SendError::Unroutable {
                uri: dialog.next_hop().to_owned(),
            })?;
        self.inner
            .layer
            .send_stateless(&crate::message::Message::Request(request), to);
        Ok(())
    }

    /// Sends a request inside the dialog; returns its CSeq number to match the response.
    pub fn request(
        &mut self,
        method: Method,
        body: Option<Body>,
        extra: &[(String, String)],
    ) -> Result<u32, SendError> {
        let dialog = self.dialog.as_mut().ok_or(SendError::NoDialog)?;
        let request = dialog.request(method.clone(), None);
        let number = dialog.local_cseq;
        if method == Method::Invite {
            self.invite_cseq = number;
            self.offerless = body.is_none();
        }
        let (request, to) = self
            .inner
            .prepare(request, dialog, body, self.role, extra)
            .ok_or_else(|| SendError::Unroutable {
                uri: dialog.next_hop().to_owned(),
            })?;
        let _span = info_span!("sip", call_id = %self.call_id).entered();
        debug!(%method, cseq = number, "in-dialog request");
        let offerless = request.body.is_empty();
        let sink = self.sink(offerless);
        if method == Method::Invite {
            // A re-INVITE's 2xx is ACKed by the TU like any other (the client is not needed:
            // re-INVITEs are never cancelled here).
            drop(self.inner.layer.send_invite(request, to, sink));
        } else {
            self.inner.layer.send_request(request, to, sink);
        }
        Ok(number)
    }

    pub fn bye(&mut self, reason: Option<&str>) -> Result<u32, SendError> {
        let extra: Vec<(String, String)> = reason
            .map(|r| vec![("Reason".to_owned(), r.to_owned())])
            .unwrap_or_default();
        self.request(Method::Bye, None, &extra)
    }

    /// Answers a request received on this leg. For the initial INVITE as UAS, a 1xx/2xx
    /// gets our tag and Contact; a 2xx makes the dialog and is retransmitted until the ACK.
    pub fn respond(
        &mut self,
        incoming: &IncomingRequest,
        code: u16,
        reason: &str,
        body: Option<Body>,
    ) -> Result<(), SendError> {
        self.respond_with(incoming, code, reason, body, &[])
    }

    /// [`Leg::respond`] with extra headers (e.g. Diversion on a test phone's 181).
    pub fn respond_with(
        &mut self,
        incoming: &IncomingRequest,
        code: u16,
        reason: &str,
        body: Option<Body>,
        extra: &[(String, String)],
    ) -> Result<(), SendError> {
        let mut response = incoming.request.response(code, reason);
        for (name, value) in extra {
            response.headers.push(name.as_str(), value.as_str());
        }
        let initial_invite = incoming.request.method == Method::Invite
            && incoming.request.headers.to_tag().is_none();
        if initial_invite
            && let LegState::Uas(uas) = &self.state
            && code > 100
        {
            let to = incoming.request.headers.get("To").unwrap_or_default();
            response
                .headers
                .set("To", format!("{to};tag={}", uas.local_tag));
            if code < 300 {
                response
                    .headers
                    .push("Contact", self.inner.contact(incoming.source.protocol));
            }
            if (200..300).contains(&code) && self.dialog.is_none() {
                let dialog = Dialog::as_uas(&incoming.request, &uas.local_tag)?;
                self.keep_dialog(dialog);
            }
        } else if incoming.request.method == Method::Invite && (200..300).contains(&code) {
            response
                .headers
                .push("Contact", self.inner.contact(incoming.source.protocol));
        }
        if let Some(body) = body {
            response.headers.push("Content-Type", body.content_type);
            response.body = body.bytes;
        }
        if incoming.request.method == Method::Invite && (200..300).contains(&code) {
            self.retransmit_2xx(&response, incoming.source);
        }
        incoming.transaction.respond(response);
        Ok(())
    }

    /// §13.3.1.4: the UAS core resends its 2xx (T1 doubling to T2) until the ACK, for 64·T1.
    fn retransmit_2xx(&mut self, response: &Response, to: Destination) {
        if to.protocol.is_reliable() {
            return;
        }
        let (stop, mut stopped) = oneshot::channel();
        self.uas_2xx = Some(stop);
        let layer = self.inner.layer.clone();
        let message = crate::message::Message::Response(response.clone());
        let timers = self.inner.config.timers;
        tokio::spawn(async move {
            let deadline = Instant::now() + timers.sixty_four_t1();
            let mut interval = timers.t1;
            loop {
                tokio::select! {
                    biased; // an ACK that arrived with the timer wins: no copy after it
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                if Instant::now() >= deadline {
                    return;
                }
                layer.send_stateless(&message, to);
                interval = (interval * 2).min(timers.t2);
            }
        });
    }

    /// The next event of this leg. Protocol chores are done here and not reported: the
    /// 2xx retransmissions are re-ACKed, a 2xx from another fork is ACKed and BYEd, and
    /// the dialog is created or its target refreshed.
    pub async fn next(&mut self) -> Option<LegEvent> {
        loop {
            let event = *self.events.recv().await?;
            if let Some(event) = self.absorb(event) {
                return Some(event);
            }
        }
    }

    fn absorb(&mut self, event: LegEvent) -> Option<LegEvent> {
        match event {
            LegEvent::Response(r) if r.method() == Some(Method::Invite) && r.is_success() => {
                self.on_invite_2xx(r)
            }
            LegEvent::Response(r) if r.method() == Some(Method::Invite) && r.code >= 300 => {
                if let LegState::Uac(uac) = &mut self.state
                    && self.dialog.is_none()
                {
                    uac.client = None;
                }
                Some(LegEvent::Response(r))
            }
            LegEvent::Request(r) => self.on_request(r),
            LegEvent::Ack(ack) => {
                if let Some(stop) = self.uas_2xx.take() {
                    let _ = stop.send(());
                }
                Some(LegEvent::Ack(ack))
            }
            other => Some(other),
        }
    }

    fn on_invite_2xx(&mut self, response: Response) -> Option<LegEvent> {
        let number = response.headers.cseq().map_or(0, |c| c.number);
        if let Some(dialog) = &mut self.dialog {
            if response.headers.to_tag() != Some(dialog.remote_tag()) {
                ack_and_bye(&self.inner, &response, !self.offerless, self.role);
                return None;
            }
            if let Some(ack) = self.last_ack.take_if(|ack| ack.cseq == number) {
                let _ = self.send_ack(&ack);
                self.last_ack = Some(ack);
                return None;
            }
            if self.answered_cseq == Some(number) {
                return None; // a retransmission before our ACK: the ACK is on its way
            }
            dialog.refresh_target(&response.headers);
            self.answered(&response, number);
            return Some(LegEvent::Response(response));
        }
        match Dialog::as_uac(&response) {
            Ok(dialog) => {
                self.keep_dialog(dialog);
                self.answered(&response, number);
                if let LegState::Uac(uac) = &mut self.state {
                    uac.client = None;
                }
                Some(LegEvent::Response(response))
            }
            Err(e) => {
                warn!(call_id = %self.call_id, error = %e, "2xx without a usable dialog");
                Some(LegEvent::Response(response))
            }
        }
    }

    /// The dialog's Call-ID is the leg's (it was routed here by it): one string for both.
    fn keep_dialog(&mut self, mut dialog: Dialog) {
        dialog.call_id = self.call_id.clone();
        self.dialog = Some(dialog);
    }

    fn answered(&mut self, response: &Response, number: u32) {
        self.answered_cseq = Some(number);
        self.pending_offer =
            (self.offerless && sdp::is_sdp(&response.body)).then(|| response.body.clone());
    }

    fn on_request(&mut self, incoming: IncomingRequest) -> Option<LegEvent> {
        if let Some(dialog) = &mut self.dialog {
            if !dialog.accept_remote_cseq(&incoming.request) {
                incoming
                    .transaction
                    .respond(incoming.request.response(500, "Server Internal Error"));
                return None;
            }
            if matches!(incoming.request.method, Method::Invite | Method::Update) {
                dialog.refresh_target(&incoming.request.headers);
            }
        }
        if incoming.request.method == Method::Bye {
            // The peer ended the dialog: nothing more may be sent in it.
            self.dialog = None;
        }
        Some(LegEvent::Request(incoming))
    }

    /// The user agent's IP, for the origin line of SDP the controller writes.
    pub fn local_ip(&self) -> String {
        self.inner.local_ip()
    }

    /// Waits for the final response to a request of this leg (by CSeq number), handing
    /// other events to `other`. Gives up after 64·T1 + T4 (the transaction's own limit).
    pub async fn final_response(
        &mut self,
        cseq: u32,
        method: Method,
        mut other: impl FnMut(LegEvent),
    ) -> Option<Response> {
        let limit = self.inner.config.timers.sixty_four_t1() + self.inner.config.timers.t4;
        let deadline = Instant::now() + limit;
        loop {
            let event = tokio::time::timeout_at(deadline, self.next())
                .await
                .ok()??;
            match event {
                LegEvent::Response(r)
                    if !r.is_provisional()
                        && r.headers
                            .cseq()
                            .is_some_and(|c| c.number == cseq && c.method == method) =>
                {
                    return Some(r);
                }
                e => other(e),
            }
        }
    }

    /// Ends this leg whatever its state: CANCEL while ringing (then ACK+BYE a crossing 2xx,
    /// with an all-port-0 answer if it carried an offer), BYE when established. Waits until
    /// the far end answered or the transaction timed out, so that "ended" means cleared.
    pub async fn clear(&mut self, reason: Option<&str>) {
        // Boxed: clearing is rare and its state is large; a call waiting in any phase
        // should not carry it (per-call memory budget).
        Box::pin(self.clear_now(reason)).await
    }

    async fn clear_now(&mut self, reason: Option<&str>) {
        if self.dialog.is_none() {
            let ringing = matches!(&self.state, LegState::Uac(u) if u.client.is_some());
            if !ringing {
                return;
            }
            self.cancel(reason.unwrap_or("SIP;cause=487;text=\"Cancelled\""));
            // A 2xx that crossed the CANCEL makes the dialog (in `next`); it is ended below.
            let answered = self
                .final_response(self.invite_cseq, Method::Invite, refuse_late)
                .await;
            if !answered.is_some_and(|r| r.is_success()) {
                return;
            }
        }
        let acked = self.last_ack.as_ref().map(|ack| ack.cseq);
        if matches!(self.state, LegState::Uac(_)) && self.answered_cseq != acked {
            let body = self
                .pending_offer
                .take()
                .map(|offer| Body::sdp(sdp::reject_all(&offer, &self.inner.local_ip())));
            let _ = self.ack(body);
        }
        if let Ok(cseq) = self.bye(reason) {
            self.final_response(cseq, Method::Bye, refuse_late).await;
        }
        self.dialog = None;
    }
}

/// While clearing, requests from the peer still get an answer (BYE crossing ours: 200).
fn refuse_late(event: LegEvent) {
    if let LegEvent::Request(r) = event {
        let code = if r.request.method == Method::Bye {
            200
        } else {
            481
        };
        let reason = if code == 200 {
            "OK"
        } else {
            "Call/Transaction Does Not Exist"
        };
        r.transaction.respond(r.request.response(code, reason));
    }
}

/// How long to wait before retrying a re-INVITE that got 491 when we own the Call-ID
/// (RFC 3261 §14.1: 2.1 to 4 s in 10 ms steps).
pub fn glare_delay() -> Duration {
    let token = random::token(2);
    let n = u64::from_str_radix(&token, 16).unwrap_or(0) % 191;
    Duration::from_millis(2100 + n * 10)
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
