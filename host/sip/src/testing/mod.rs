//! SIP test phones, for loopback tests here and the host's end-to-end tests through a
//! real proxy (feature `testing`).
//!
//! Two kinds of phone: a [`TestPhone`] runs a script on this crate's user agent; a
//! [`wire::Phone`] is driven step by step by the test (register, invite, ring, answer,
//! cancel, hang up, each message built by hand) over UDP or TCP through a proxy.
//!
//! Between the user agent and a phone, a [`relay::Relay`] can lose a share of the UDP
//! datagrams each way, or all of them (a phone that vanished), for fault tests.
//!
//! A [`TestPhone`] answers every INVITE it gets as its [`PhoneScript`] says (ring, answer
//! with SDP or answer a media-less offer, reject, never answer, hang up, send INFO, meet
//! a re-INVITE with 491 or 488) and records every request it received, so that tests
//! check what went over the wire. It is not a softphone: no media, no registration.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::message::{Method, Request, Response};

pub mod relay;
pub mod wire;
use crate::sdp;
use crate::ua::{Body, IncomingCall, IncomingRequest, Leg, LegEvent, UaConfig, UaError, UserAgent};

/// How a phone reacts to an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 after `ring_for`.
    Accept,
    /// This final status after `ring_for`.
    Reject(u16),
    /// Ring until cancelled.
    Never,
}

/// How a phone reacts to a re-INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reinvite {
    Accept,
    /// Answer the first `n` re-INVITEs with 491 Request Pending (glare), then accept.
    Glare(u32),
    /// Refuse with this status (e.g. 488 Not Acceptable Here).
    Reject(u16),
}

/// What a phone does; [`PhoneScript::default`] rings briefly and answers.
#[derive(Debug, Clone)]
pub struct PhoneScript {
    /// The provisional status sent at once (180; 181 for a diverted call).
    pub provisional: u16,
    /// Extra headers on the provisional and final responses (e.g. Diversion).
    pub response_headers: Vec<(String, String)>,
    pub ring_for: Duration,
    pub answer: Answer,
    pub reinvite: Reinvite,
    /// Send BYE this long after the call is up (ACK received).
    pub hang_up_after: Option<Duration>,
    /// Send this INFO body (application/dtmf-relay) this long after the call is up.
    pub info_after: Option<(Duration, String)>,
    /// Send a re-INVITE putting the call on hold (`a=sendonly`) this long after it is up.
    pub hold_after: Option<Duration>,
    /// The RTP port written in this phone's SDP (m= lines).
    pub media_port: u16,
    /// Answer 200 at `ring_for` even after a CANCEL: the 200 that crosses the CANCEL.
    pub answer_despite_cancel: bool,
}

impl Default for PhoneScript {
    fn default() -> Self {
        PhoneScript {
            provisional: 180,
            response_headers: Vec::new(),
            ring_for: Duration::from_millis(100),
            answer: Answer::Accept,
            reinvite: Reinvite::Accept,
            hang_up_after: None,
            info_after: None,
            hold_after: None,
            media_port: 40_000,
            answer_despite_cancel: false,
        }
    }
}

/// How a phone's call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneEnd {
    /// The other side sent BYE.
    HungUpByPeer,
    /// This phone sent BYE.
    HungUp,
    /// The INVITE was cancelled while ringing.
    Cancelled,
    /// This phone rejected the INVITE.
    Rejected(u16),
}

/// What a phone saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Request(Request),
    /// A CANCEL (answered by the transaction layer; the phone then sends 487).
    Cancel(Request),
    /// A final response to a request this phone sent in a call.
    Response(Response),
}

/// A phone on 127.0.0.1 with its own user agent.
pub struct TestPhone {
    ua: UserAgent,
    seen: Arc<Mutex<Vec<Seen>>>,
    ends: mpsc::UnboundedReceiver<PhoneEnd>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TestPhone {
    /// A UDP phone on 127.0.0.1 with RFC timer values.
    pub async fn start(script: PhoneScript) -> Result<TestPhone, UaError> {
        Self::start_with(UaConfig::default(), script).await
    }

    pub async fn start_with(config: UaConfig, script: PhoneScript) -> Result<TestPhone, UaError> {
        let (ua, mut calls) = UserAgent::bind(config).await?;
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (ends_tx, ends) = mpsc::unbounded_channel();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some(call) = calls.recv().await {
                tokio::spawn(run_call(call, script.clone(), log.clone(), ends_tx.clone()));
            }
        });
        Ok(TestPhone { ua, seen, ends })
    }

    /// A URI that reaches this phone directly, e.g. `sip:alice@127.0.0.1:40312`.
    pub fn uri(&self, user: &str) -> String {
        let addr = self.ua.local_addr(crate::transport::Protocol::Udp);
        format!("sip:{user}@{addr}")
    }

    /// The same over TCP, e.g. `sip:alice@127.0.0.1:40312;transport=tcp`.
    pub fn uri_tcp(&self, user: &str) -> String {
        let addr = self.ua.local_addr(crate::transport::Protocol::Tcp);
        format!("sip:{user}@{addr};transport=tcp")
    }

    pub fn user_agent(&self) -> &UserAgent {
        &self.ua
    }

    /// Every request received so far (CANCELs as [`Seen::Cancel`]).
    pub fn seen(&self) -> Vec<Seen> {
        guard(&self.seen).clone()
    }

    /// The final responses this phone received to its own in-call requests.
    pub fn responses(&self) -> Vec<Response> {
        guard(&self.seen)
            .iter()
            .filter_map(|s| match s {
                Seen::Response(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// The received requests of one method, in order (CANCEL included).
    pub fn requests(&self, method: Method) -> Vec<Request> {
        guard(&self.seen)
            .iter()
            .filter_map(|s| match s {
                Seen::Request(r) | Seen::Cancel(r) if r.method == method => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// Waits for the next call of this phone to end.
    pub async fn ended(&mut self) -> Option<PhoneEnd> {
        self.ends.recv().await
    }
}

/// This phone's SDP: an answer to `offer` (media-less if the offer has no m= lines, one
/// stream per offered m= line otherwise) or, without an offer, its own offer.
pub fn phone_sdp(offer: Option<&[u8]>, port: u16) -> Vec<u8> {
    let mut out = format!(
        "v=0\r\no=phone {port} 1 IN IP4 127.0.0.1\r\ns=phone\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    );
    let offered: Vec<String> = offer
        .map(|o| {
            String::from_utf8_lossy(o)
                .lines()
                .filter_map(|l| l.strip_prefix("m=").map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| vec!["audio 0 RTP/AVP 0 101".to_owned()]);
    for (i, media) in offered.iter().enumerate() {
        let mut fields = media.split(' ');
        let kind = fields.next().unwrap_or("audio");
        let _ = fields.next();
        let rest: Vec<&str> = fields.collect();
        let stream_port = port + 2 * i as u16;
        out.push_str(&format!("m={kind} {stream_port} {}\r\n", rest.join(" ")));
    }
    out.into_bytes()
}

async fn run_call(
    call: IncomingCall,
    script: PhoneScript,
    seen: Arc<Mutex<Vec<Seen>>>,
    ends: mpsc::UnboundedSender<PhoneEnd>,
) {
    let IncomingCall { mut leg, invite } = call;
    guard(&seen).push(Seen::Request(invite.request.clone()));
    let end = script_call(&mut leg, invite, &script, &seen).await;
    let _ = ends.send(end);
}

fn respond(
    leg: &mut Leg,
    req: &IncomingRequest,
    code: u16,
    text: &str,
    script: &PhoneScript,
    body: Option<Body>,
) {
    let _ = leg.respond_with(req, code, text, body, &script.response_headers);
}

async fn script_call(
    leg: &mut Leg,
    invite: IncomingRequest,
    script: &PhoneScript,
    seen: &Arc<Mutex<Vec<Seen>>>,
) -> PhoneEnd {
    let reason = if script.provisional == 181 {
        "Call Is Being Forwarded"
    } else {
        "Ringing"
    };
    respond(leg, &invite, script.provisional, reason, script, None);
    let answer_at = match script.answer {
        Answer::Never => None,
        _ => Some(Instant::now() + script.ring_for),
    };
    // Ringing: wait to answer, or for the CANCEL.
    loop {
        tokio::select! {
            event = leg.next() => match event {
                Some(LegEvent::Cancelled(cancel)) => {
                    guard(seen).push(Seen::Cancel(cancel));
                    if !script.answer_despite_cancel {
                        respond(leg, &invite, 487, "Request Terminated", script, None);
                        return PhoneEnd::Cancelled;
                    }
                }
                Some(LegEvent::Request(r)) => {
                    guard(seen).push(Seen::Request(r.request.clone()));
                    let _ = leg.respond(&r, 481, "Call/Transaction Does Not Exist", None);
                }
                Some(_) => {}
                None => return PhoneEnd::Cancelled,
            },
            _ = at(answer_at) => break,
        }
    }
    if let Answer::Reject(code) = script.answer {
        respond(leg, &invite, code, reject_phrase(code), script, None);
        return PhoneEnd::Rejected(code);
    }
    let offer = (!invite.request.body.is_empty()).then_some(invite.request.body.as_slice());
    let sdp = Body::sdp(phone_sdp(offer, script.media_port));
    respond(leg, &invite, 200, "OK", script, Some(sdp));
    in_call(leg, script, seen).await
}

/// The RFC 3261 §21 phrase a real phone sends, so that tests see what becomes of it.
fn reject_phrase(code: u16) -> &'static str {
    match code {
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        488 => "Not Acceptable Here",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Rejected",
    }
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn in_call(leg: &mut Leg, script: &PhoneScript, seen: &Arc<Mutex<Vec<Seen>>>) -> PhoneEnd {
    let mut up_since: Option<Instant> = None;
    let mut glare_left = match script.reinvite {
        Reinvite::Glare(n) => n,
        _ => 0,
    };
    let mut info_sent = false;
    let mut hold_sent = false;
    loop {
        let hold_at = match (script.hold_after, up_since, hold_sent) {
            (Some(d), Some(t), false) => Some(t + d),
            _ => None,
        };
        let hang_up_at = up_since.zip(script.hang_up_after).map(|(t, d)| t + d);
        let info_at = match (&script.info_after, up_since, info_sent) {
            (Some((d, _)), Some(t), false) => Some(t + *d),
            _ => None,
        };
        tokio::select! {
            event = leg.next() => {
                let Some(event) = event else { return PhoneEnd::HungUpByPeer };
                match event {
                    LegEvent::Ack(ack) => {
                        guard(seen).push(Seen::Request(ack));
                        up_since.get_or_insert_with(Instant::now);
                    }
                    LegEvent::Response(r) if !r.is_provisional() => {
                        if r.is_success() && r.method() == Some(Method::Invite) {
                            let _ = leg.ack(None);
                        }
                        guard(seen).push(Seen::Response(r));
                    }
                    LegEvent::Request(r) => {
                        guard(seen).push(Seen::Request(r.request.clone()));
                        match r.request.method {
                            Method::Bye => {
                                let _ = leg.respond(&r, 200, "OK", None);
                                return PhoneEnd::HungUpByPeer;
                            }
                            Method::Invite => match script.reinvite {
                                Reinvite::Reject(code) => {
                                    let _ = leg.respond(&r, code, "Rejected", None);
                                }
                                Reinvite::Glare(_) if glare_left > 0 => {
                                    glare_left -= 1;
                                    let _ = leg.respond(&r, 491, "Request Pending", None);
                                }
                                _ => {
                                    let offer = (!r.request.body.is_empty()).then_some(r.request.body.as_slice());
                                    let sdp = phone_sdp(offer, script.media_port);
                                    let _ = leg.respond(&r, 200, "OK", Some(Body::sdp(sdp)));
                                }
                            },
                            _ => {
                                let _ = leg.respond(&r, 200, "OK", None);
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ = at(hang_up_at) => {
                if let Ok(cseq) = leg.bye(None) {
                    leg.final_response(cseq, Method::Bye, |_| {}).await;
                }
                return PhoneEnd::HungUp;
            }
            _ = at(hold_at) => {
                hold_sent = true;
                let mut sdp = phone_sdp(None, script.media_port);
                sdp.extend_from_slice(b"a=sendonly\r\n");
                let _ = leg.request(Method::Invite, Some(Body::sdp(sdp)), &[]);
            }
            _ = at(info_at) => {
                info_sent = true;
                if let Some((_, digits)) = &script.info_after {
                    let body = Body { content_type: "application/dtmf-relay".into(), bytes: digits.clone().into_bytes() };
                    let _ = leg.request(Method::Info, Some(body), &[]);
                }
            }
        }
    }
}

/// Media ports of a body, re-exported for tests that check m= lines.
pub fn media_ports(body: &[u8]) -> Vec<u16> {
    sdp::media_ports(body)
}
