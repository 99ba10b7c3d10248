//! Third-party call control (RFC 3725): the two-leg call that rings the user's callback
//! number first (A, showing the global caller ID, CVW-2/CVW-10), and only when A answers
//! the callee (B, showing the user's work identity, CVW-11), then bridges their media
//! directly while staying in both dialogs (CVW-12). Flow IV is the default; Flow I is for
//! callees that answer at once (bridges, IVRs).
//!
//! Every failure of sip-call-flows.md ends with both legs cleared and one explicit
//! [`Ended`] outcome (CVW-13); the states on the way are reported as [`CallState`]s
//! (CVW-14). In-dialog INFO (DTMF, CVW-22), re-INVITE and UPDATE are relayed between the
//! legs unchanged.
//!
//! It does not authorise, log or limit calls: the host does that around
//! [`TwoLegCall::start`], from its own `OriginationPlan`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, info, info_span};

use crate::message::{Method, NameAddr, Response};
use crate::queue::{self, Receiver, Sender};
use crate::sdp;
use crate::ua::{
    Body, IncomingRequest, Leg, LegEvent, LegRole, LegSpec, UserAgent, glare_delay,
    requires_100rel, session_expires,
};

mod connected;

/// RFC 3725 flow of a two-leg call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flow {
    /// A gets an offer without media, B is invited without SDP, B's offer goes to A in a
    /// re-INVITE. Right for people, who take time to answer.
    #[default]
    Iv,
    /// A is invited without SDP, A's offer goes to B, B's answer goes into A's ACK.
    /// Only for callees that answer within A's 2xx retransmission window (32 s).
    I,
}

/// One leg of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegPlan {
    /// Request-URI of the leg.
    pub uri: String,
    /// What the leg's phone shows: From and P-Asserted-Identity.
    pub shows: NameAddr,
    /// How long it may ring before it is CANCELled.
    pub ring_timeout: Duration,
}

/// What the host asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPlan {
    /// A: the user's callback number, called first.
    pub callback: LegPlan,
    /// B: the callee.
    pub callee: LegPlan,
    pub flow: Flow,
    /// From connection until both legs are cleared by the host (toll-fraud limit).
    pub max_duration: Duration,
    /// Extra headers on both initial INVITEs.
    pub headers: Vec<(String, String)>,
    /// Whether to go on when A's phone diverted the call (181, History-Info, Diversion):
    /// a voicemail would otherwise "answer" the callback leg. Default: stop.
    pub continue_when_diverted: bool,
}

/// Which party an outcome is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Callback,
    Callee,
    /// The host itself: a hang-up request or the maximum duration.
    Host,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The callback leg rang out (ring timeout) or timed out.
    CallbackNotAnswered,
    CallbackBusy,
    CallbackDeclined,
    /// Any other failure of the callback leg's INVITE.
    CallbackFailed,
    /// The callback leg was diverted (voicemail); the callee was not called.
    CallbackDiverted,
    CalleeNotAnswered,
    CalleeBusy,
    CalleeDeclined,
    CalleeFailed,
    /// A party answered without the SDP the flow needs.
    NoOffer,
    /// A refused the callee's media (e.g. 488 to the re-INVITE).
    MediaRejected,
    /// The re-INVITE to A kept meeting 491 until B's window closed.
    Glare,
    CallbackHungUp,
    CalleeHungUp,
    /// The callback leg stopped answering its session refresh (timeout, 481): its phone
    /// or trunk is gone (RFC 4028 §10).
    CallbackLost,
    CalleeLost,
    /// [`CallHandle::hangup`].
    HungUp,
    MaxDuration,
    /// A leg's URI (or the proxy) is not routable.
    Unroutable,
}

impl EndReason {
    /// A stable name for logs and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallbackNotAnswered => "callback-not-answered",
            EndReason::CallbackBusy => "callback-busy",
            EndReason::CallbackDeclined => "callback-declined",
            EndReason::CallbackFailed => "callback-failed",
            EndReason::CallbackDiverted => "callback-diverted",
            EndReason::CalleeNotAnswered => "callee-not-answered",
            EndReason::CalleeBusy => "callee-busy",
            EndReason::CalleeDeclined => "callee-declined",
            EndReason::CalleeFailed => "callee-failed",
            EndReason::NoOffer => "no-offer",
            EndReason::MediaRejected => "media-rejected",
            EndReason::Glare => "glare",
            EndReason::CallbackHungUp => "callback-hung-up",
            EndReason::CalleeHungUp => "callee-hung-up",
            EndReason::CallbackLost => "callback-lost",
            EndReason::CalleeLost => "callee-lost",
            EndReason::HungUp => "hung-up",
            EndReason::MaxDuration => "max-duration",
            EndReason::Unroutable => "unroutable",
        }
    }
}

/// The final outcome: why, the SIP status that caused it (if any), and whose it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub reason: EndReason,
    pub code: Option<u16>,
    pub side: Side,
}

impl Ended {
    /// Whether a leg refused the flow's SDP shape on its initial INVITE (415/488/606 to
    /// the offer without m= lines, or to the INVITE without SDP): that PBX or callee
    /// needs the other [`Flow`] (sip-call-flows.md: "fall back with a clear error").
    pub fn flow_refused(&self) -> bool {
        matches!(
            self.reason,
            EndReason::CallbackFailed | EndReason::CalleeFailed
        ) && matches!(self.code, Some(415 | 488 | 606))
    }
}

/// What the requester can follow (CVW-14). `Ended` is always last, and comes only once
/// both legs are cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    RingingCallback,
    CallbackAnswered,
    RingingCallee,
    Connected,
    Ended(Ended),
}

/// Controls a running call. Dropping it does not end the call.
#[derive(Debug, Clone)]
pub struct CallHandle {
    /// A `Notify` (~60 bytes), not a watch channel (~350): a hang-up only has to be seen
    /// once, since every phase ends the call on it.
    hangup: Arc<Notify>,
    callback_call_id: Arc<str>,
    callee_call_id: Arc<str>,
}

impl CallHandle {
    /// Ends the call from the host's side (CANCEL or BYE as each leg needs).
    pub fn hangup(&self) {
        self.hangup.notify_one();
    }

    /// Call-ID of the callback leg (for logs and the call record, CVW-50).
    pub fn callback_call_id(&self) -> &str {
        &self.callback_call_id
    }

    pub fn callee_call_id(&self) -> &str {
        &self.callee_call_id
    }
}

/// The two-leg call (RFC 3725).
pub struct TwoLegCall;

impl TwoLegCall {
    /// Starts the call in its own task. States arrive on the receiver; the last is `Ended`.
    pub fn start(ua: &UserAgent, plan: CallPlan) -> (CallHandle, Receiver<CallState>) {
        let leg = |p: &LegPlan, role| LegSpec {
            target: p.uri.clone(),
            from: p.shows.clone(),
            to: NameAddr::new("", p.uri.clone()),
            asserted: Some(p.shows.clone()),
            role: Some(role),
            headers: plan.headers.clone(),
        };
        let a = ua.leg(leg(&plan.callback, LegRole::Callback));
        let b = ua.leg(leg(&plan.callee, LegRole::Callee));
        let (states, rx) = queue::queue();
        let hangup = Arc::new(Notify::new());
        let handle = CallHandle {
            hangup: hangup.clone(),
            callback_call_id: a.shared_call_id(),
            callee_call_id: b.shared_call_id(),
        };
        let span = info_span!("two_leg_call", callback = %a.call_id(), callee = %b.call_id());
        let call = Call {
            a,
            b,
            settings: Settings {
                session_refresh: ua.session_refresh(),
                ..Settings::from(&plan)
            },
            states,
            hangup,
            relays: HashMap::new(),
            refreshes: Vec::new(),
        };
        tokio::spawn(call.run().instrument(span));
        (handle, rx)
    }
}

/// The parts of the plan still needed once the legs exist (kept small per call).
struct Settings {
    flow: Flow,
    callback_ring: Duration,
    callee_ring: Duration,
    max_duration: Duration,
    continue_when_diverted: bool,
    session_refresh: Option<Duration>,
}

impl From<&CallPlan> for Settings {
    fn from(plan: &CallPlan) -> Self {
        Settings {
            flow: plan.flow,
            callback_ring: plan.callback.ring_timeout,
            callee_ring: plan.callee.ring_timeout,
            max_duration: plan.max_duration,
            continue_when_diverted: plan.continue_when_diverted,
            session_refresh: None,
        }
    }
}

/// A request relayed to the other leg, waiting for that leg's answer.
struct Relay {
    incoming: IncomingRequest,
}

struct Call {
    a: Leg,
    b: Leg,
    settings: Settings,
    states: Sender<CallState>,
    hangup: Arc<Notify>,
    /// (leg the relayed copy went to, its CSeq) → the original request.
    relays: HashMap<(Side, u32), Relay>,
    /// Session refreshes waiting for their answer.
    refreshes: Vec<(Side, u32)>,
}

/// A connected call ends: the leg other than `from` is still to be cleared (both when
/// `from` is the host), with this Reason header (none when empty).
struct Ending {
    from: Side,
    reason: String,
    ended: Ended,
}

fn lost(side: Side) -> EndReason {
    if side == Side::Callee {
        EndReason::CalleeLost
    } else {
        EndReason::CallbackLost
    }
}

fn hung_up(side: Side) -> EndReason {
    if side == Side::Callee {
        EndReason::CalleeHungUp
    } else {
        EndReason::CallbackHungUp
    }
}

/// One thing that happened to the call.
enum Step {
    A(LegEvent),
    B(LegEvent),
    Hangup,
    Timer,
}

/// A Reason header value (RFC 3326). The text may come from a peer's reason phrase, so
/// characters that would break the quoted string are dropped.
fn reason(code: u16, text: &str) -> String {
    let text: String = text
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    format!("SIP;cause={code};text=\"{text}\"")
}

fn end(reason: EndReason, code: Option<u16>, side: Side) -> Ended {
    Ended { reason, code, side }
}

fn diverted(r: &Response) -> bool {
    r.code == 181 || r.headers.get("History-Info").is_some() || r.headers.get("Diversion").is_some()
}

fn is_invite_response(event: &LegEvent) -> Option<&Response> {
    match event {
        LegEvent::Response(r) if r.method() == Some(Method::Invite) => Some(r),
        _ => None,
    }
}

impl Call {
    /// The call's task. Not an `async fn`: that would keep the moved-in call twice in the
    /// task (argument and local). Setting up and being connected are boxed apart: the
    /// setup's larger state is freed once connected, and a held call keeps only the small
    /// state of [`Call::connected`] (issue 4: memory per connected call).
    fn run(self) -> impl std::future::Future<Output = ()> + Send {
        let mut call = Box::new(self);
        async move {
            let ended = match Box::pin(call.set_up()).await {
                Ok(()) => Box::pin(call.connected()).await,
                Err(ended) => ended,
            };
            info!(reason = ended.reason.as_str(), code = ?ended.code, side = ?ended.side, "call ended");
            call.emit(CallState::Ended(ended));
        }
    }

    fn emit(&self, state: CallState) {
        debug!(?state, "call state");
        let _ = self.states.send(state);
    }

    async fn step(&mut self, deadline: Option<Instant>) -> Step {
        let Call { a, b, hangup, .. } = self;
        tokio::select! {
            Some(e) = a.next() => Step::A(e),
            Some(e) = b.next() => Step::B(e),
            _ = hangup.notified() => Step::Hangup,
            _ = timer(deadline) => Step::Timer,
        }
    }

    /// Phases 1 to 3: both legs answered and their media joined, or the call's outcome.
    async fn set_up(&mut self) -> Result<(), Ended> {
        let offer = match self.settings.flow {
            Flow::Iv => Some(Body::sdp(sdp::media_less_offer(&self.a.local_ip(), 1))),
            Flow::I => None,
        };
        if self.a.invite(offer).is_err() {
            return Err(end(EndReason::Unroutable, None, Side::Callback));
        }
        self.emit(CallState::RingingCallback);
        let offer1 = self.callback_answered().await?;
        self.emit(CallState::CallbackAnswered);
        if self.b.invite(offer1).is_err() {
            self.a
                .clear(Some(&reason(404, "Callee not routable")))
                .await;
            return Err(end(EndReason::Unroutable, None, Side::Callee));
        }
        self.emit(CallState::RingingCallee);
        let b_answer = self.ring_callee().await?;
        self.adopt_session_expires(&b_answer);
        self.bridge(b_answer).await?;
        self.emit(CallState::Connected);
        Ok(())
    }

    /// A answered: ACKed in Flow IV; in Flow I its offer is what B gets.
    async fn callback_answered(&mut self) -> Result<Option<Body>, Ended> {
        let answer = self.ring_callback().await?;
        self.adopt_session_expires(&answer);
        match self.settings.flow {
            Flow::Iv => {
                let _ = self.a.ack(None);
                Ok(None)
            }
            Flow::I if sdp::is_sdp(&answer.body) => Ok(Some(Body::sdp(answer.body))),
            Flow::I => {
                self.a
                    .clear(Some(&reason(488, "No offer from the callback phone")))
                    .await;
                Err(end(EndReason::NoOffer, Some(answer.code), Side::Callback))
            }
        }
    }

    /// Phase 1: A rings. Ok with A's 2xx; a failure clears A and never dials B (CVW-13).
    async fn ring_callback(&mut self) -> Result<Response, Ended> {
        let deadline = Instant::now() + self.settings.callback_ring;
        loop {
            match self.step(Some(deadline)).await {
                Step::A(event) => {
                    let Some(r) = is_invite_response(&event) else {
                        refuse(event);
                        continue;
                    };
                    // A failure is reported as itself even when it names a diversion.
                    if r.code < 300 && diverted(r) && !self.settings.continue_when_diverted {
                        let code = r.code;
                        self.a.clear(Some(&reason(480, "Callback diverted"))).await;
                        return Err(end(EndReason::CallbackDiverted, Some(code), Side::Callback));
                    }
                    if r.is_provisional() {
                        continue;
                    }
                    let LegEvent::Response(r) = event else {
                        continue;
                    };
                    if r.is_success() {
                        return Ok(r);
                    }
                    let why = match r.code {
                        486 | 600 => EndReason::CallbackBusy,
                        603 => EndReason::CallbackDeclined,
                        408 | 480 | 487 => EndReason::CallbackNotAnswered,
                        _ => EndReason::CallbackFailed,
                    };
                    return Err(end(why, Some(r.code), Side::Callback));
                }
                Step::B(event) => refuse(event),
                Step::Timer => {
                    self.a
                        .clear(Some(&reason(480, "Callback not answered")))
                        .await;
                    return Err(end(
                        EndReason::CallbackNotAnswered,
                        Some(408),
                        Side::Callback,
                    ));
                }
                Step::Hangup => {
                    self.a.clear(Some(&reason(487, "Hung up"))).await;
                    return Err(end(EndReason::HungUp, None, Side::Host));
                }
            }
        }
    }

    /// Phase 2: B rings while A waits. Ok with B's 2xx; otherwise both legs are cleared,
    /// A with `Reason: SIP;cause=<B's code>`.
    async fn ring_callee(&mut self) -> Result<Response, Ended> {
        let deadline = Instant::now() + self.settings.callee_ring;
        loop {
            match self.step(Some(deadline)).await {
                Step::B(event) => {
                    let Some(r) = is_invite_response(&event) else {
                        refuse(event);
                        continue;
                    };
                    if r.is_provisional() {
                        continue;
                    }
                    let LegEvent::Response(r) = event else {
                        continue;
                    };
                    if r.is_success() {
                        return Ok(r);
                    }
                    // The callee's PBX insists on an offer/answer we cannot complete in
                    // time (see `Leg::invite`): said so, not in the PBX's own words.
                    let text = if requires_100rel(&r) {
                        "Callee requires 100rel on an INVITE without an offer"
                    } else {
                        &r.reason
                    };
                    self.a.clear(Some(&reason(r.code, text))).await;
                    let why = match r.code {
                        486 | 600 => EndReason::CalleeBusy,
                        603 => EndReason::CalleeDeclined,
                        408 | 480 | 487 => EndReason::CalleeNotAnswered,
                        _ => EndReason::CalleeFailed,
                    };
                    return Err(end(why, Some(r.code), Side::Callee));
                }
                Step::A(event) => {
                    if let Some(bye) = take_bye(event) {
                        ok(bye);
                        self.b.clear(Some(&reason(487, "Callback hung up"))).await;
                        return Err(end(EndReason::CallbackHungUp, None, Side::Callback));
                    }
                }
                Step::Timer => {
                    let why = reason(480, "Callee not answered");
                    tokio::join!(self.b.clear(Some(&why)), self.a.clear(Some(&why)));
                    return Err(end(EndReason::CalleeNotAnswered, Some(408), Side::Callee));
                }
                Step::Hangup => {
                    self.clear_both(&reason(487, "Hung up")).await;
                    return Err(end(EndReason::HungUp, None, Side::Host));
                }
            }
        }
    }

    /// RFC 4028 §7.2: we offered `timer`, so a PBX may answer with a shorter
    /// Session-Expires than we refresh at and end the call when it runs out; refreshes
    /// then come at half of it.
    fn adopt_session_expires(&mut self, response: &Response) {
        let Some(current) = self.settings.session_refresh else {
            return;
        };
        let Some(seconds) = response
            .headers
            .get("Session-Expires")
            .and_then(|v| v.split(';').next()?.trim().parse::<u64>().ok())
        else {
            return;
        };
        let half = Duration::from_secs(seconds.max(2) / 2);
        if half < current {
            debug!(
                seconds,
                "the peer's Session-Expires sets the refresh interval"
            );
            self.settings.session_refresh = Some(half);
        }
    }

    async fn clear_both(&mut self, why: &str) {
        tokio::join!(self.a.clear(Some(why)), self.b.clear(Some(why)));
    }

    /// Phase 3: join the media. Flow I: ACK B, ACK A with B's answer. Flow IV: re-INVITE A
    /// with B's offer, retrying on 491, all inside B's 2xx window (64·T1).
    async fn bridge(&mut self, b_answer: Response) -> Result<(), Ended> {
        if !sdp::is_sdp(&b_answer.body) {
            self.clear_both(&reason(488, "No SDP from the callee"))
                .await;
            return Err(end(EndReason::NoOffer, Some(b_answer.code), Side::Callee));
        }
        if self.settings.flow == Flow::I {
            let _ = self.b.ack(None);
            let _ = self.a.ack(Some(Body::sdp(b_answer.body)));
            return Ok(());
        }
        let window = Instant::now() + self.b.timers().sixty_four_t1();
        let offer2 = b_answer.body;
        loop {
            let Ok(cseq) = self
                .a
                .request(Method::Invite, Some(Body::sdp(offer2.clone())), &[])
            else {
                self.clear_both(&reason(500, "Cannot re-INVITE the callback leg"))
                    .await;
                return Err(end(EndReason::Unroutable, None, Side::Callback));
            };
            let answer = self.await_reinvite(cseq, window).await?;
            if answer.is_success() {
                if !sdp::is_sdp(&answer.body) {
                    self.clear_both(&reason(488, "No answer from the callback phone"))
                        .await;
                    return Err(end(EndReason::NoOffer, Some(answer.code), Side::Callback));
                }
                let _ = self.b.ack(Some(Body::sdp(answer.body)));
                let _ = self.a.ack(None);
                return Ok(());
            }
            if answer.code != 491 {
                // B's 2xx is ACKed with all streams refused, then both get BYE.
                self.clear_both(&reason(answer.code, &answer.reason)).await;
                return Err(end(
                    EndReason::MediaRejected,
                    Some(answer.code),
                    Side::Callback,
                ));
            }
            let retry = Instant::now() + glare_delay();
            if retry >= window {
                self.clear_both(&reason(491, "Request pending")).await;
                return Err(end(EndReason::Glare, Some(491), Side::Callback));
            }
            debug!("491 from the callback leg: re-INVITE retried");
            self.wait_until(retry, window).await?;
        }
    }

    /// Waits for A's final response to the re-INVITE, handling hang-ups on either side.
    async fn await_reinvite(&mut self, cseq: u32, window: Instant) -> Result<Response, Ended> {
        loop {
            match self.step(Some(window)).await {
                Step::A(LegEvent::Response(r))
                    if !r.is_provisional()
                        && r.method() == Some(Method::Invite)
                        && self.a.asked_cseq(&r) == Some(cseq) =>
                {
                    return Ok(r);
                }
                other => self.setup_event(other).await?,
            }
        }
    }

    async fn wait_until(&mut self, until: Instant, window: Instant) -> Result<(), Ended> {
        loop {
            match self.step(Some(until.min(window))).await {
                Step::Timer => return Ok(()),
                other => self.setup_event(other).await?,
            }
        }
    }

    /// Events while the media is being joined: a BYE from either side ends the call.
    async fn setup_event(&mut self, step: Step) -> Result<(), Ended> {
        match step {
            Step::A(event) => {
                if let Some(bye) = take_bye(event) {
                    ok(bye);
                    self.b.clear(Some(&reason(487, "Callback hung up"))).await;
                    return Err(end(EndReason::CallbackHungUp, None, Side::Callback));
                }
            }
            Step::B(event) => {
                if let Some(bye) = take_bye(event) {
                    ok(bye);
                    self.a.clear(Some(&reason(487, "Callee hung up"))).await;
                    return Err(end(EndReason::CalleeHungUp, None, Side::Callee));
                }
            }
            Step::Timer => {
                self.clear_both(&reason(408, "Media not joined in time"))
                    .await;
                return Err(end(EndReason::CallbackFailed, Some(408), Side::Callback));
            }
            Step::Hangup => {
                self.clear_both(&reason(487, "Hung up")).await;
                return Err(end(EndReason::HungUp, None, Side::Host));
            }
        }
        Ok(())
    }
}
async fn timer(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn take_bye(event: LegEvent) -> Option<IncomingRequest> {
    match event {
        LegEvent::Request(r) if r.request.method == Method::Bye => Some(r),
        other => {
            refuse(other);
            None
        }
    }
}

fn ok(incoming: IncomingRequest) {
    incoming
        .transaction
        .respond(incoming.request.response(200, "OK"));
}

/// Requests that come while the call is being set up and that it cannot serve yet.
fn refuse(event: LegEvent) {
    if let LegEvent::Request(r) = event {
        let (code, text) = match r.request.method {
            Method::Invite | Method::Update => (491, "Request Pending"),
            Method::Info | Method::Options => (200, "OK"),
            _ => (481, "Call/Transaction Does Not Exist"),
        };
        r.transaction.respond(r.request.response(code, text));
    }
}
#[cfg(test)]
mod tests;
