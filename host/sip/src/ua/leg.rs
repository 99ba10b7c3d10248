//! One leg of a call: its state machine from the initial INVITE (as UAC) or the received
//! one (as UAS) through the dialog to BYE, with the ACK of 2xx, CANCEL, re-INVITE glare
//! and 2xx retransmission (RFC 3261 §13–§15). It sends through the user agent core
//! ([`super`]), which routes what arrives to it; it does not route or own sockets.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::auth::Challenge;
use crate::queue::{self, Receiver, Sender};

use super::*;

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
    /// A CANCEL was asked for: a challenge to the INVITE is then not answered.
    cancelled: bool,
    /// The initial INVITE as last sent, while a 422 may ask to send it again with a longer
    /// Session-Expires (RFC 4028 §7.4); kept only with session refreshes on, boxed, and
    /// dropped at the final response.
    invite: Option<Box<(Request, Destination)>>,
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
    /// Requests kept to answer a digest challenge; only with credentials configured, and
    /// boxed: a leg without them pays one pointer.
    auth: Option<Box<AuthState>>,
    /// RSeq of the last reliable provisional response PRACKed (RFC 3262 §4).
    last_rseq: Option<u32>,
    /// Highest CSeq number sent before the dialog was confirmed (PRACKs go in the early
    /// dialog): the confirmed dialog's requests continue above it.
    early_cseq: u32,
    /// The largest Min-SE of a 422 to our INVITE (RFC 4028 §7.4): the session refreshes
    /// of this dialog carry it and a Session-Expires no shorter.
    min_se: Option<u32>,
}

/// A request in flight that a 401/407 may ask to send again with credentials.
#[derive(Debug)]
struct Sent {
    /// The CSeq number it went with.
    cseq: u32,
    /// The number the caller was given for it: the first try's, kept through the retries.
    asked: u32,
    request: Request,
    to: Destination,
    /// How many challenges were answered for it already.
    tries: u8,
}

#[derive(Debug, Default)]
struct AuthState {
    sent: Vec<Sent>,
    /// (CSeq sent, CSeq asked) of requests sent again with credentials, newest last.
    renumbered: Vec<(u32, u32)>,
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
        // What reached the leg but was never read is handled as if it came after the leg
        // was gone: a 2xx of an INVITE never answered here (the call gave the leg up on
        // Timer B or its ring timeout while the answer was on its way) is ACKed and ended
        // with BYE, a request gets 481. Dropped unread, the answering phone stayed in a
        // call nobody was in. Any other 2xx belongs to a dialog this leg had (a
        // retransmission, or the answer to a re-INVITE): ending it was the call's business.
        for event in self.events.close() {
            match *event {
                LegEvent::Response(r)
                    if r.is_success()
                        && r.method() == Some(Method::Invite)
                        && (self.answered_cseq.is_some()
                            || matches!(self.state, LegState::Uas(_))) => {}
                event => orphan(&self.inner, event, Some(!self.offerless)),
            }
        }
    }
}

impl Leg {
    /// A new outgoing leg, registered for routing; nothing is sent yet.
    pub(super) fn outgoing(inner: Arc<Inner>, spec: LegSpec) -> Leg {
        let call_id: Arc<str> = random::call_id().into();
        let (tx, rx) = queue::queue();
        guard(&inner.legs).insert(call_id.clone(), tx.clone());
        let mut from = spec.from.to_header();
        from.push_str(&format!(";tag={}", random::tag()));
        Leg {
            inner,
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
                cancelled: false,
                invite: None,
            }),
            dialog: None,
            last_ack: None,
            uas_2xx: None,
            invite_cseq: 1,
            answered_cseq: None,
            pending_offer: None,
            offerless: false,
            auth: None,
            last_rseq: None,
            early_cseq: 0,
            min_se: None,
        }
    }

    /// The leg of an INVITE received outside a dialog, registered for routing.
    pub(super) fn incoming(inner: Arc<Inner>, call_id: Arc<str>) -> Leg {
        let (tx, rx) = queue::queue();
        guard(&inner.legs).insert(call_id.clone(), tx.clone());
        Leg {
            inner,
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
            auth: None,
            last_rseq: None,
            early_cseq: 0,
            min_se: None,
        }
    }

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

    /// The Min-SE a 422 to our INVITE set (RFC 4028 §7.4): a session refresh in this
    /// dialog carries it, with a Session-Expires at least that long.
    pub fn min_se(&self) -> Option<u32> {
        self.min_se
    }

    /// Sends the initial INVITE, with an offer or without (then the 2xx carries the offer).
    pub fn invite(&mut self, body: Option<Body>) -> Result<(), SendError> {
        let (request, to) = self.initial_invite(body)?;
        let _span = info_span!("sip", call_id = %self.call_id).entered();
        debug!(to = %to.addr, "INVITE");
        let sink = self.sink(request.body.is_empty());
        self.offerless = request.body.is_empty();
        self.keep_for_auth(1, &request, to);
        let kept =
            (self.inner.config.session_refresh.is_some()).then(|| Box::new((request.clone(), to)));
        let client = self.inner.layer.send_invite(request, to, sink);
        if let LegState::Uac(uac) = &mut self.state {
            uac.client = Some(client);
            uac.invite = kept;
        }
        Ok(())
    }

    /// The initial INVITE [`Leg::invite`] would send, built but not sent: for the fuzz
    /// target that checks what a policy's plan can make the user agent write
    /// (`fuzz/fuzz_targets/decision_adapters.rs`). Only in builds with `--cfg fuzzing`.
    #[cfg(fuzzing)]
    pub fn invite_request(&mut self, body: Option<Body>) -> Result<Request, SendError> {
        self.initial_invite(body).map(|(request, _)| request)
    }

    /// The initial INVITE and where it goes; the leg's spec is used up.
    fn initial_invite(&mut self, body: Option<Body>) -> Result<(Request, Destination), SendError> {
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
        headers.push("Allow", "INVITE, ACK, CANCEL, BYE, INFO, UPDATE, PRACK");
        // A PBX that sends its provisionals reliably (RFC 3262) gets them PRACKed; one
        // that runs session timers (RFC 4028) may leave the refreshing to us when we do.
        //
        // Not 100rel without an offer, neither supported nor, after a 421, required: the
        // UAS must then put its offer in the first reliable provisional (RFC 3262 §5,
        // RFC 3261 §13.2.1: the first reliable non-failure message), and the PRACK must
        // carry the answer. Our answer to an offer in an INVITE's response comes from the
        // other leg, later: Flow IV's callee offer goes to the callback phone in a
        // re-INVITE only once the callee has answered (its answer then goes in the ACK,
        // `pending_offer`), and Flow I's callback offer goes to a callee not yet dialled.
        // Waiting for it would hold the PRACK past the PBX's retransmissions (64·T1), and
        // answering with a placeholder (ports 0) would reject every stream. So a PBX that
        // answers an offerless INVITE 421 `Require: 100rel` fails the leg, by name
        // (`requires_100rel`), rather than getting an offer/answer we cannot keep.
        let supported = match (body.is_some(), inner.config.session_refresh.is_some()) {
            (true, true) => Some("100rel, timer"),
            (true, false) => Some("100rel"),
            (false, true) => Some("timer"),
            (false, false) => None,
        };
        if let Some(supported) = supported {
            headers.push("Supported", supported);
        }
        // The session interval we ask for (RFC 4028 §7.1), the one our refreshes carry: a
        // PBX with a larger minimum says so with a 422, and the INVITE goes again.
        if let Some(interval) = inner.config.session_refresh {
            headers.push(
                "Session-Expires",
                format!("{};refresher=uac", session_expires(interval)),
            );
        }
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
        Ok((request, to))
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
    pub fn cancel(&mut self, reason: &str) {
        if let LegState::Uac(uac) = &mut self.state {
            uac.cancelled = true;
        }
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
        self.keep_for_auth(number, &request, to);
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
        if let LegEvent::Response(r) = &event
            && !r.is_provisional()
            && self.auth.is_some()
        {
            if matches!(r.code, 401 | 407) && self.authenticate(r) {
                return None;
            }
            self.forget_sent(r);
        }
        if let LegEvent::Response(r) = &event
            && r.code == 422
            && r.method() == Some(Method::Invite)
            && self.session_too_small(r)
        {
            return None;
        }
        match event {
            LegEvent::Response(r) if r.method() == Some(Method::Invite) && r.is_success() => {
                self.on_invite_2xx(r)
            }
            LegEvent::Response(r)
                if r.method() == Some(Method::Invite) && r.code > 100 && r.is_provisional() =>
            {
                self.on_invite_1xx(r)
            }
            LegEvent::Response(r) if r.method() == Some(Method::Invite) && r.code >= 300 => {
                if let LegState::Uac(uac) = &mut self.state
                    && self.dialog.is_none()
                {
                    uac.client = None;
                    uac.invite = None;
                    if self.offerless && requires_100rel(&r) {
                        warn!(call_id = %self.call_id, "421: the PBX requires 100rel on an INVITE without an offer, whose answer would have to go in a PRACK before the other leg gives one; the leg fails");
                    }
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
                    uac.invite = None;
                }
                Some(LegEvent::Response(response))
            }
            Err(e) => {
                warn!(call_id = %self.call_id, error = %e, "2xx without a usable dialog");
                Some(LegEvent::Response(response))
            }
        }
    }

    /// A provisional response to our INVITE. One sent reliably (`Require: 100rel` with an
    /// RSeq, RFC 3262 §4) is PRACKed in its early dialog, once: a retransmission of it, or
    /// one out of order, is discarded as the RFC says.
    fn on_invite_1xx(&mut self, response: Response) -> Option<LegEvent> {
        let reliable = response
            .headers
            .get_all("Require")
            .any(|o| o.eq_ignore_ascii_case("100rel"));
        if !reliable || self.dialog.is_some() {
            return Some(LegEvent::Response(response));
        }
        let _span = info_span!("sip", call_id = %self.call_id).entered();
        let Some(rseq) = response
            .headers
            .get("RSeq")
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            warn!(
                code = response.code,
                "reliable provisional without a valid RSeq: not PRACKed"
            );
            return Some(LegEvent::Response(response));
        };
        if let Some(last) = self.last_rseq
            && rseq != last.wrapping_add(1)
        {
            return None;
        }
        let mut early = match Dialog::as_uac(&response) {
            Ok(dialog) => dialog,
            Err(e) => {
                warn!(error = %e, "reliable provisional without an early dialog: not PRACKed");
                return Some(LegEvent::Response(response));
            }
        };
        let invite_number = response
            .headers
            .cseq()
            .map_or(self.invite_cseq, |c| c.number);
        early.local_cseq = early.local_cseq.max(self.invite_cseq).max(self.early_cseq);
        let prack = early.request(Method::Prack, None);
        let number = early.local_cseq;
        let rack = vec![("RAck".to_owned(), format!("{rseq} {invite_number} INVITE"))];
        let Some((prack, to)) = self.inner.prepare(prack, &early, None, self.role, &rack) else {
            warn!(target = %early.next_hop(), "the early dialog's target is not routable: not PRACKed");
            return Some(LegEvent::Response(response));
        };
        debug!(rseq, cseq = number, "PRACK");
        self.last_rseq = Some(rseq);
        self.early_cseq = number;
        self.keep_for_auth(number, &prack, to);
        let sink = self.sink(true);
        self.inner.layer.send_request(prack, to, sink);
        Some(LegEvent::Response(response))
    }

    /// RFC 4028 §7.4: a 422 to our initial INVITE names the shortest session interval the
    /// PBX (or a proxy) accepts in Min-SE; the INVITE goes again with that Session-Expires
    /// and the Min-SE, a new CSeq and branch, the same Call-ID and tags. Only when the
    /// Min-SE is longer than what we asked for, so a second 422 with the same or a smaller
    /// one (or one without Min-SE) is the leg's failure instead of a loop. `true` when
    /// sent again (the 422 is then not reported).
    fn session_too_small(&mut self, response: &Response) -> bool {
        let _span = info_span!("sip", call_id = %self.call_id).entered();
        let number = response.headers.cseq().map(|c| c.number);
        let LegState::Uac(uac) = &mut self.state else {
            return false;
        };
        if self.dialog.is_some() || uac.cancelled || number != Some(self.invite_cseq) {
            return false;
        }
        let Some(kept) = uac.invite.as_deref() else {
            return false;
        };
        let seconds = |value: Option<&str>| value?.split(';').next()?.trim().parse::<u32>().ok();
        let Some(min_se) = seconds(response.headers.get("Min-SE")) else {
            warn!("422 without a valid Min-SE: the INVITE fails");
            return false;
        };
        let asked = seconds(kept.0.headers.get("Session-Expires")).unwrap_or(u32::MAX);
        if min_se <= asked {
            warn!(
                min_se,
                asked, "422 asking for no more than we did: the INVITE fails"
            );
            return false;
        }
        let (old, to) = (kept.0.clone(), kept.1);
        let number = self.invite_cseq.max(self.early_cseq) + 1;
        let mut headers = Headers::new();
        headers.push("Via", self.inner.via(to.protocol, &random::branch()));
        for h in old.headers.iter() {
            let name = h.name.as_str();
            let replaced = ["Via", "CSeq", "Session-Expires", "Min-SE"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name));
            if !replaced {
                headers.push(name, h.value.as_str());
            }
        }
        headers.push("CSeq", format!("{number} INVITE"));
        headers.push("Session-Expires", format!("{min_se};refresher=uac"));
        headers.push("Min-SE", min_se.to_string());
        let request = Request { headers, ..old };
        debug!(
            min_se,
            cseq = number,
            "422: INVITE sent again with the PBX's Min-SE"
        );
        self.invite_cseq = number;
        self.min_se = Some(min_se);
        self.keep_for_auth(number, &request, to);
        let sink = self.sink(request.body.is_empty());
        let kept = Box::new((request.clone(), to));
        let client = self.inner.layer.send_invite(request, to, sink);
        if let LegState::Uac(uac) = &mut self.state {
            uac.client = Some(client);
            uac.invite = Some(kept);
        }
        true
    }

    /// The dialog's Call-ID is the leg's (it was routed here by it): one string for both.
    fn keep_dialog(&mut self, mut dialog: Dialog) {
        // Requests of the confirmed dialog go on above the PRACKs of the early one.
        dialog.local_cseq = dialog.local_cseq.max(self.early_cseq);
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

    fn keep_for_auth(&mut self, cseq: u32, request: &Request, to: Destination) {
        if self.inner.config.credentials.is_empty() {
            return;
        }
        let auth = self.auth.get_or_insert_with(Box::default);
        auth.sent.push(Sent {
            cseq,
            asked: cseq,
            request: request.clone(),
            to,
            tries: 0,
        });
    }

    fn forget_sent(&mut self, response: &Response) {
        let (Some(auth), Some(cseq)) = (self.auth.as_mut(), response.headers.cseq()) else {
            return;
        };
        auth.sent
            .retain(|s| !(s.cseq == cseq.number && s.request.method == cseq.method));
    }

    /// Sends a challenged request again with the answer to every challenge we hold
    /// credentials for (RFC 3261 §22.2, §22.3): same Call-ID, tags and route, a new CSeq
    /// and branch. Once per challenge; again only when the server says the nonce was
    /// merely stale. `false` leaves the 401/407 to the caller as the request's failure.
    fn authenticate(&mut self, response: &Response) -> bool {
        let Some(cseq) = response.headers.cseq() else {
            return false;
        };
        let Some(auth) = self.auth.as_mut() else {
            return false;
        };
        let Some(at) = auth
            .sent
            .iter()
            .position(|s| s.cseq == cseq.number && s.request.method == cseq.method)
        else {
            return false;
        };
        let _span = info_span!("sip", call_id = %self.call_id).entered();
        let mut answers = Vec::new();
        let mut all_stale = true;
        for challenge in Challenge::all_of(response) {
            match challenge {
                Ok(challenge) => {
                    all_stale &= challenge.stale;
                    let Some(credentials) = challenge.credentials(&self.inner.config.credentials)
                    else {
                        // Debug-quoted: the realm is the peer's text and must not start a log line of its own.
                        warn!(realm = ?challenge.realm, code = response.code, "no credentials for the challenge's realm");
                        continue;
                    };
                    let sent = &auth.sent[at].request;
                    let answer =
                        challenge.answer(credentials, sent.method.as_str(), &sent.uri, &sent.body);
                    answers.push((challenge.answer_header(), answer));
                }
                Err(e) => warn!(error = %e, code = response.code, "challenge not answered"),
            }
        }
        let tries = auth.sent[at].tries;
        if answers.is_empty() || !(tries == 0 || (tries == 1 && all_stale)) {
            if tries > 0 {
                warn!(
                    code = response.code,
                    "the credentials were refused; the request fails"
                );
            }
            return false;
        }
        let initial_invite = cseq.method == Method::Invite && self.dialog.is_none();
        if initial_invite && matches!(&self.state, LegState::Uac(u) if u.cancelled) {
            return false;
        }
        let number = match &mut self.dialog {
            _ if initial_invite => self.invite_cseq.max(self.early_cseq) + 1,
            Some(dialog) => {
                dialog.local_cseq += 1;
                dialog.local_cseq
            }
            None => return false,
        };
        let old = auth.sent.swap_remove(at);
        let mut request = old.request;
        let mut headers = Headers::new();
        headers.push("Via", self.inner.via(old.to.protocol, &random::branch()));
        for h in request.headers.iter() {
            let name = h.name.as_str();
            let replaced = ["Via", "CSeq", "Authorization", "Proxy-Authorization"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name));
            if !replaced {
                headers.push(name, h.value.as_str());
            }
        }
        headers.push("CSeq", format!("{number} {}", request.method));
        for (name, value) in answers {
            headers.push(name, value);
        }
        request.headers = headers;
        debug!(method = %request.method, cseq = number, code = response.code, "sent again with credentials");
        auth.sent.push(Sent {
            cseq: number,
            asked: old.asked,
            request: request.clone(),
            to: old.to,
            tries: tries + 1,
        });
        auth.renumbered.push((number, old.asked));
        if auth.renumbered.len() > 8 {
            auth.renumbered.remove(0);
        }
        if request.method == Method::Invite {
            self.invite_cseq = number;
            let sink = self.sink(request.body.is_empty());
            let kept = (initial_invite && self.inner.config.session_refresh.is_some())
                .then(|| Box::new((request.clone(), old.to)));
            let client = self.inner.layer.send_invite(request, old.to, sink);
            if initial_invite && let LegState::Uac(uac) = &mut self.state {
                uac.client = Some(client);
                uac.invite = kept;
            }
        } else {
            let sink = self.sink(true);
            self.inner.layer.send_request(request, old.to, sink);
        }
        true
    }

    /// The CSeq number [`Leg::request`] returned for the request `response` answers: a
    /// request sent again with credentials went with a new one.
    pub fn asked_cseq(&self, response: &Response) -> Option<u32> {
        let number = response.headers.cseq()?.number;
        let renumbered = self
            .auth
            .as_ref()
            .and_then(|a| a.renumbered.iter().find(|(sent, _)| *sent == number))
            .map(|(_, asked)| *asked);
        Some(renumbered.unwrap_or(number))
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
                        && r.headers.cseq().is_some_and(|c| {
                            c.method == method
                                && (c.number == cseq || self.asked_cseq(&r) == Some(cseq))
                        }) =>
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

/// A 421 naming `100rel` in its Require: the peer sends its provisionals reliably or not
/// at all. An offerless INVITE is not sent again with it (see [`Leg::invite`]).
pub fn requires_100rel(response: &Response) -> bool {
    response.code == 421
        && response
            .headers
            .get_all("Require")
            .any(|o| o.trim().eq_ignore_ascii_case("100rel"))
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
