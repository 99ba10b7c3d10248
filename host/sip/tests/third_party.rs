//! Two-leg calls (RFC 3725) between the controller and scripted test phones on 127.0.0.1,
//! checked on the wire and by their reported outcome (CVW-10..14, CVW-22, CVW-34).
//! They run in real time with short durations (the RFC's 2.1–4 s glare back-off is the
//! longest wait): paused time cannot know about datagrams still inside the kernel.

use std::time::Duration;

use cvw_sip::message::{Method, NameAddr, Request};
use cvw_sip::queue::Receiver;
use cvw_sip::sdp::media_ports;
use cvw_sip::testing::{Answer, PhoneEnd, PhoneScript, Reinvite, TestPhone};
use cvw_sip::third_party::{
    CallPlan, CallState, EndReason, Ended, Flow, LegPlan, Side, TwoLegCall,
};
use cvw_sip::transport::Protocol;
use cvw_sip::ua::{UaConfig, UserAgent};

const GLOBAL_CALLER_ID: &str = "sip:+14255550000@cvw.example";
const WORK_IDENTITY: &str = "sip:+14255550101@corp.example";

async fn controller(protocol: Protocol) -> UserAgent {
    let config = UaConfig {
        protocol,
        leg_token: Some("t0k".into()),
        ..UaConfig::default()
    };
    UserAgent::bind(config).await.unwrap().0
}

async fn phone(script: PhoneScript) -> TestPhone {
    TestPhone::start(script).await.unwrap()
}

fn plan(a: &TestPhone, b: &TestPhone, flow: Flow) -> CallPlan {
    CallPlan {
        callback: LegPlan {
            uri: a.uri("+14255550101"),
            shows: NameAddr::new("Call via Work", GLOBAL_CALLER_ID),
            ring_timeout: Duration::from_secs(2),
        },
        callee: LegPlan {
            uri: b.uri("+14255550142"),
            shows: NameAddr::new("Alice Smith", WORK_IDENTITY),
            ring_timeout: Duration::from_secs(2),
        },
        flow,
        max_duration: Duration::from_secs(3600),
        headers: Vec::new(),
        continue_when_diverted: false,
    }
}

/// Collects the states up to and including `Ended`.
async fn states(mut rx: Receiver<CallState>) -> (Vec<CallState>, Ended) {
    let mut all = Vec::new();
    while let Some(state) = rx.recv().await {
        all.push(state);
        if let CallState::Ended(ended) = state {
            return (all, ended);
        }
    }
    panic!("state channel closed without Ended: {all:?}");
}

/// Waits for `Connected`; anything ending the call first fails the test.
async fn connected(rx: &mut Receiver<CallState>) {
    loop {
        match rx.recv().await {
            Some(CallState::Connected) => return,
            Some(CallState::Ended(e)) => panic!("ended before connecting: {e:?}"),
            Some(_) => {}
            None => panic!("state channel closed"),
        }
    }
}

fn ended(reason: EndReason, code: Option<u16>, side: Side) -> Ended {
    Ended { reason, code, side }
}

fn header<'a>(r: &'a Request, name: &str) -> &'a str {
    r.headers.get(name).unwrap_or_default()
}

fn phone_a() -> PhoneScript {
    PhoneScript {
        media_port: 40_000,
        ..PhoneScript::default()
    }
}

fn phone_b() -> PhoneScript {
    PhoneScript {
        media_port: 50_000,
        ring_for: Duration::from_millis(300),
        ..PhoneScript::default()
    }
}

/// CVW-10/11/12/14/34, RFC 3725 Flow IV, every message checked on the wire.
#[tokio::test]
async fn flow_iv_rings_the_callback_first_then_bridges_the_callee_media() {
    let ua = controller(Protocol::Udp).await;
    let mut a = phone(PhoneScript {
        hang_up_after: Some(Duration::from_millis(500)),
        ..phone_a()
    })
    .await;
    let mut b = phone(phone_b()).await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (all, end) = states(rx).await;
    assert_eq!(
        all[..4],
        [
            CallState::RingingCallback,
            CallState::CallbackAnswered,
            CallState::RingingCallee,
            CallState::Connected
        ]
    );
    assert_eq!(end, ended(EndReason::CallbackHungUp, None, Side::Callback));
    assert_eq!(a.ended().await, Some(PhoneEnd::HungUp));
    assert_eq!(b.ended().await, Some(PhoneEnd::HungUpByPeer));

    let a_invites = a.requests(Method::Invite);
    assert_eq!(
        a_invites.len(),
        2,
        "INVITE and the re-INVITE with B's offer"
    );
    let first = &a_invites[0];
    assert!(first.body.starts_with(b"v=0"), "A gets an SDP offer");
    assert!(media_ports(&first.body).is_empty(), "with no m= lines");
    assert!(header(first, "From").contains(GLOBAL_CALLER_ID), "CVW-2");
    assert!(header(first, "P-Asserted-Identity").contains(GLOBAL_CALLER_ID));
    assert_eq!(
        header(first, "X-CVW-Origination"),
        "callback;token=t0k",
        "CVW-34"
    );

    let b_invites = b.requests(Method::Invite);
    assert_eq!(b_invites.len(), 1);
    assert!(b_invites[0].body.is_empty(), "B is invited without SDP");
    assert!(
        header(&b_invites[0], "From").contains(WORK_IDENTITY),
        "CVW-11"
    );
    assert!(header(&b_invites[0], "P-Asserted-Identity").contains(WORK_IDENTITY));
    assert!(!header(&b_invites[0], "From").contains(GLOBAL_CALLER_ID));
    assert_eq!(
        header(&b_invites[0], "X-CVW-Origination"),
        "callee;token=t0k"
    );

    let reinvite = &a_invites[1];
    assert!(reinvite.headers.to_tag().is_some(), "in A's dialog");
    assert_eq!(media_ports(&reinvite.body), vec![50_000], "B's offer");

    let b_acks = b.requests(Method::Ack);
    assert_eq!(b_acks.len(), 1);
    assert_eq!(
        media_ports(&b_acks[0].body),
        vec![40_000],
        "A's answer in B's ACK"
    );
    let a_acks = a.requests(Method::Ack);
    assert_eq!(a_acks.len(), 2, "ACK of the 200 and of the re-INVITE's 200");
    assert!(a_acks.iter().all(|ack| ack.body.is_empty()));
    assert_eq!(
        b.requests(Method::Bye).len(),
        1,
        "A's hang-up ends B (CVW-12)"
    );
}

/// RFC 3725 Flow I: A without SDP, A's offer to B, B's answer in A's ACK.
#[tokio::test]
async fn flow_i_carries_the_callback_offer_to_the_callee_and_the_answer_in_the_ack() {
    let ua = controller(Protocol::Udp).await;
    let mut a = phone(phone_a()).await;
    let mut b = phone(PhoneScript {
        ring_for: Duration::from_millis(200),
        ..phone_b()
    })
    .await;
    let (call, mut rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::I));
    connected(&mut rx).await;
    call.hangup();
    let (_, end) = states(rx).await;
    assert_eq!(end, ended(EndReason::HungUp, None, Side::Host));
    assert_eq!(a.ended().await, Some(PhoneEnd::HungUpByPeer));
    assert_eq!(b.ended().await, Some(PhoneEnd::HungUpByPeer));

    let a_invite = &a.requests(Method::Invite)[0];
    assert!(a_invite.body.is_empty(), "A is invited without SDP");
    let b_invite = &b.requests(Method::Invite)[0];
    assert_eq!(
        media_ports(&b_invite.body),
        vec![40_000],
        "A's offer goes to B"
    );
    let a_ack = &a.requests(Method::Ack)[0];
    assert_eq!(
        media_ports(&a_ack.body),
        vec![50_000],
        "B's answer in A's ACK"
    );
    assert!(b.requests(Method::Ack)[0].body.is_empty());
}

/// CVW-13: the callback leg rings out; CANCEL with a Reason, the callee is never dialled.
#[tokio::test]
async fn unanswered_callback_is_cancelled_and_the_callee_never_dialled() {
    let ua = controller(Protocol::Udp).await;
    let mut a = phone(PhoneScript {
        answer: Answer::Never,
        ..phone_a()
    })
    .await;
    let b = phone(phone_b()).await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (all, end) = states(rx).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        end,
        ended(EndReason::CallbackNotAnswered, Some(408), Side::Callback)
    );
    assert_eq!(a.ended().await, Some(PhoneEnd::Cancelled));
    let cancel = &a.requests(Method::Cancel)[0];
    assert!(
        header(cancel, "Reason").starts_with("SIP;cause=480"),
        "RFC 3326 Reason"
    );
    assert!(b.seen().is_empty(), "callee never dialled");
}

/// CVW-13 / RFC 3261 §9.1: a 200 that crosses the CANCEL is ACKed, then ended with BYE.
#[tokio::test]
async fn callback_200_crossing_the_cancel_is_acked_and_byed() {
    let ua = controller(Protocol::Udp).await;
    let a = phone(PhoneScript {
        ring_for: Duration::from_millis(2500),
        answer_despite_cancel: true,
        ..phone_a()
    })
    .await;
    let b = phone(phone_b()).await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (_, end) = states(rx).await;
    assert_eq!(
        end,
        ended(EndReason::CallbackNotAnswered, Some(408), Side::Callback)
    );
    assert_eq!(a.requests(Method::Ack).len(), 1);
    assert_eq!(a.requests(Method::Bye).len(), 1);
    assert!(b.seen().is_empty());
}

/// CVW-13: busy or declined callback: stop, never dial B.
#[tokio::test]
async fn busy_or_declined_callback_never_dials_the_callee() {
    for (code, reason) in [
        (486, EndReason::CallbackBusy),
        (603, EndReason::CallbackDeclined),
        (488, EndReason::CallbackFailed),
    ] {
        let ua = controller(Protocol::Udp).await;
        let a = phone(PhoneScript {
            answer: Answer::Reject(code),
            ..phone_a()
        })
        .await;
        let b = phone(phone_b()).await;
        let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
        let (_, end) = states(rx).await;
        assert_eq!(end, ended(reason, Some(code), Side::Callback));
        // A PBX that refuses SDP without m= lines: a clear error naming the flow.
        assert_eq!(end.flow_refused(), code == 488);
        assert!(b.seen().is_empty());
    }
}

/// A diverted callback (181, voicemail) stops by default.
#[tokio::test]
async fn diverted_callback_stops_before_the_callee() {
    let ua = controller(Protocol::Udp).await;
    let mut a = phone(PhoneScript {
        provisional: 181,
        response_headers: vec![(
            "Diversion".into(),
            "<sip:+14255550101@pbx>;reason=no-answer".into(),
        )],
        ring_for: Duration::from_secs(3),
        ..phone_a()
    })
    .await;
    let b = phone(phone_b()).await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (_, end) = states(rx).await;
    assert_eq!(
        end,
        ended(EndReason::CallbackDiverted, Some(181), Side::Callback)
    );
    assert_eq!(a.ended().await, Some(PhoneEnd::Cancelled));
    assert!(b.seen().is_empty());
}

/// CVW-13: the callee is busy: A is ended with `Reason: SIP;cause=486` and the callee's
/// reason phrase as it was sent (it used to lose its space: `text="BusyHere"`).
#[tokio::test]
async fn busy_callee_ends_the_callback_leg_with_the_callee_status() {
    let ua = controller(Protocol::Udp).await;
    let mut a = phone(phone_a()).await;
    let b = phone(PhoneScript {
        answer: Answer::Reject(486),
        ..phone_b()
    })
    .await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (all, end) = states(rx).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(end, ended(EndReason::CalleeBusy, Some(486), Side::Callee));
    assert_eq!(a.ended().await, Some(PhoneEnd::HungUpByPeer));
    let bye = &a.requests(Method::Bye)[0];
    assert_eq!(
        header(bye, "Reason"),
        "SIP;cause=486;text=\"Busy Here\"",
        "{bye:?}"
    );
}

/// CVW-13: the callee does not answer: B is cancelled, A gets BYE.
#[tokio::test]
async fn unanswered_callee_is_cancelled_and_the_callback_leg_ended() {
    let ua = controller(Protocol::Udp).await;
    let mut a = phone(phone_a()).await;
    let mut b = phone(PhoneScript {
        answer: Answer::Never,
        ..phone_b()
    })
    .await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (_, end) = states(rx).await;
    assert_eq!(
        end,
        ended(EndReason::CalleeNotAnswered, Some(408), Side::Callee)
    );
    assert_eq!(b.ended().await, Some(PhoneEnd::Cancelled));
    assert_eq!(a.ended().await, Some(PhoneEnd::HungUpByPeer));
}

/// A hangs up while B rings: CANCEL B.
#[tokio::test]
async fn callback_hang_up_while_the_callee_rings_cancels_the_callee() {
    let ua = controller(Protocol::Udp).await;
    let a = phone(PhoneScript {
        hang_up_after: Some(Duration::from_millis(300)),
        ..phone_a()
    })
    .await;
    let mut b = phone(PhoneScript {
        answer: Answer::Never,
        ..phone_b()
    })
    .await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (_, end) = states(rx).await;
    assert_eq!(end, ended(EndReason::CallbackHungUp, None, Side::Callback));
    assert_eq!(b.ended().await, Some(PhoneEnd::Cancelled));
}

/// A hangs up while B rings and B's 200 crosses the CANCEL: ACK with every stream at
/// port 0 (a valid answer to B's offer), then BYE.
#[tokio::test]
async fn callee_200_crossing_the_cancel_gets_a_port_zero_answer_and_bye() {
    let ua = controller(Protocol::Udp).await;
    let a = phone(PhoneScript {
        hang_up_after: Some(Duration::from_millis(100)),
        ..phone_a()
    })
    .await;
    let mut b = phone(PhoneScript {
        answer_despite_cancel: true,
        ring_for: Duration::from_secs(1),
        ..phone_b()
    })
    .await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (_, end) = states(rx).await;
    assert_eq!(end, ended(EndReason::CallbackHungUp, None, Side::Callback));
    assert_eq!(b.ended().await, Some(PhoneEnd::HungUpByPeer));
    let ack = &b.requests(Method::Ack)[0];
    assert_eq!(media_ports(&ack.body), vec![0]);
}

/// A answers B's offer with 488: B's 200 is ACKed with port 0, both get BYE.
#[tokio::test]
async fn callback_refusing_the_callee_media_clears_both_legs() {
    let ua = controller(Protocol::Udp).await;
    let mut a = phone(PhoneScript {
        reinvite: Reinvite::Reject(488),
        ..phone_a()
    })
    .await;
    let mut b = phone(phone_b()).await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (_, end) = states(rx).await;
    assert_eq!(
        end,
        ended(EndReason::MediaRejected, Some(488), Side::Callback)
    );
    assert_eq!(a.ended().await, Some(PhoneEnd::HungUpByPeer));
    assert_eq!(b.ended().await, Some(PhoneEnd::HungUpByPeer));
    assert_eq!(media_ports(&b.requests(Method::Ack)[0].body), vec![0]);
}

/// 491 on the re-INVITE: retried after 2.1–4 s, inside B's window (RFC 3261 §14.1).
#[tokio::test]
async fn glare_on_the_reinvite_is_retried_and_the_call_connects() {
    let ua = controller(Protocol::Udp).await;
    let a = phone(PhoneScript {
        reinvite: Reinvite::Glare(1),
        ..phone_a()
    })
    .await;
    let mut b = phone(phone_b()).await;
    let (call, mut rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let mut answered_at = None;
    loop {
        match rx.recv().await {
            Some(CallState::RingingCallee) => answered_at = Some(tokio::time::Instant::now()),
            Some(CallState::Connected) => break,
            Some(CallState::Ended(e)) => panic!("ended: {e:?}"),
            _ => {}
        }
    }
    let waited = answered_at.map(|t| t.elapsed()).unwrap_or_default();
    assert!(
        waited >= Duration::from_millis(2100),
        "back-off of {waited:?}"
    );
    call.hangup();
    let (_, end) = states(rx).await;
    assert_eq!(end.reason, EndReason::HungUp);
    assert_eq!(b.ended().await, Some(PhoneEnd::HungUpByPeer));
    assert_eq!(
        a.requests(Method::Invite).len(),
        3,
        "INVITE, re-INVITE, retry"
    );
    assert_eq!(media_ports(&b.requests(Method::Ack)[0].body), vec![40_000]);
}

/// CVW-12: the callee hangs up, the callback leg is ended.
#[tokio::test]
async fn callee_hang_up_ends_the_callback_leg() {
    let ua = controller(Protocol::Udp).await;
    let mut a = phone(phone_a()).await;
    let b = phone(PhoneScript {
        hang_up_after: Some(Duration::from_millis(300)),
        ..phone_b()
    })
    .await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (_, end) = states(rx).await;
    assert_eq!(end, ended(EndReason::CalleeHungUp, None, Side::Callee));
    assert_eq!(a.ended().await, Some(PhoneEnd::HungUpByPeer));
}

/// CVW-22: DTMF sent as INFO on the desk phone reaches the bridge unchanged.
#[tokio::test]
async fn info_dtmf_is_relayed_between_the_legs_unchanged() {
    let ua = controller(Protocol::Udp).await;
    let dtmf = "Signal=5\r\nDuration=160\r\n";
    let a = phone(PhoneScript {
        info_after: Some((Duration::from_millis(200), dtmf.into())),
        hang_up_after: Some(Duration::from_secs(1)),
        ..phone_a()
    })
    .await;
    let b = phone(phone_b()).await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::I));
    let (_, end) = states(rx).await;
    assert_eq!(end.reason, EndReason::CallbackHungUp);
    let info = &b.requests(Method::Info)[0];
    assert_eq!(info.body, dtmf.as_bytes());
    assert_eq!(header(info, "Content-Type"), "application/dtmf-relay");
    assert_eq!(header(info, "X-CVW-Origination"), "callee;token=t0k");
}

/// Toll-fraud limit: the maximum duration clears both legs.
#[tokio::test]
async fn maximum_duration_clears_both_legs() {
    let ua = controller(Protocol::Udp).await;
    let mut a = phone(phone_a()).await;
    let mut b = phone(phone_b()).await;
    let mut p = plan(&a, &b, Flow::Iv);
    p.max_duration = Duration::from_secs(1);
    let (_call, rx) = TwoLegCall::start(&ua, p);
    let (_, end) = states(rx).await;
    assert_eq!(end, ended(EndReason::MaxDuration, None, Side::Host));
    assert_eq!(a.ended().await, Some(PhoneEnd::HungUpByPeer));
    assert_eq!(b.ended().await, Some(PhoneEnd::HungUpByPeer));
}

/// The same Flow IV over TCP: no retransmissions needed, framing by Content-Length.
#[tokio::test]
async fn flow_iv_over_tcp() {
    let ua = controller(Protocol::Tcp).await;
    let mut a = phone(phone_a()).await;
    let mut b = phone(phone_b()).await;
    let mut p = plan(&a, &b, Flow::Iv);
    p.callback.uri = a.uri_tcp("+14255550101");
    p.callee.uri = b.uri_tcp("+14255550142");
    let (call, mut rx) = TwoLegCall::start(&ua, p);
    connected(&mut rx).await;
    call.hangup();
    let (_, end) = states(rx).await;
    assert_eq!(end.reason, EndReason::HungUp);
    assert_eq!(a.ended().await, Some(PhoneEnd::HungUpByPeer));
    assert_eq!(b.ended().await, Some(PhoneEnd::HungUpByPeer));
    assert!(header(&a.requests(Method::Invite)[0], "Via").starts_with("SIP/2.0/TCP"));
    assert_eq!(media_ports(&b.requests(Method::Ack)[0].body), vec![40_000]);
}

/// CVW-12: a hold re-INVITE from the desk phone reaches the callee with its SDP unchanged,
/// and the callee's answer comes back; both 200s are ACKed.
#[tokio::test]
async fn reinvite_from_one_leg_is_relayed_to_the_other() {
    let ua = controller(Protocol::Udp).await;
    let a = phone(PhoneScript {
        // Up from the first ACK; B answers 300 ms later, so hold comes once connected.
        hold_after: Some(Duration::from_secs(1)),
        hang_up_after: Some(Duration::from_millis(1500)),
        ..phone_a()
    })
    .await;
    let mut b = phone(phone_b()).await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (_, end) = states(rx).await;
    assert_eq!(end.reason, EndReason::CallbackHungUp);
    assert_eq!(b.ended().await, Some(PhoneEnd::HungUpByPeer));
    let hold = &a.responses()[0];
    assert_eq!(hold.code, 200);
    assert_eq!(media_ports(&hold.body), vec![50_000], "B's answer");
    let b_invites = b.requests(Method::Invite);
    assert_eq!(b_invites.len(), 2);
    assert!(String::from_utf8_lossy(&b_invites[1].body).contains("a=sendonly"));
    assert_eq!(
        b.requests(Method::Ack).len(),
        2,
        "B's 200 to the relayed re-INVITE ACKed"
    );
}

/// With an outbound proxy every initial INVITE goes to it (with a pre-loaded Route when
/// asked), and host names in the legs' URIs are left to the proxy. Here phone A plays the
/// proxy and both phones.
#[tokio::test]
async fn outbound_proxy_receives_both_legs() {
    for preload_route in [false, true] {
        outbound_proxy_case(preload_route).await;
    }
}

async fn outbound_proxy_case(preload_route: bool) {
    let mut a = phone(phone_a()).await;
    let proxy = a.uri("proxy").replace("proxy@", "");
    let ua = UserAgent::bind(UaConfig {
        outbound_proxy: Some(proxy.clone()),
        preload_route,
        ..UaConfig::default()
    })
    .await
    .unwrap()
    .0;
    let mut p = plan(&a, &a, Flow::Iv);
    p.callback.uri = "sip:+14255550101@pbx.corp.example;user=phone".into();
    p.callee.uri = "sip:+14255550142@corp.example".into();
    let (call, mut rx) = TwoLegCall::start(&ua, p);
    connected(&mut rx).await;
    call.hangup();
    let (_, end) = states(rx).await;
    assert_eq!(end.reason, EndReason::HungUp);
    assert_eq!(a.ended().await, Some(PhoneEnd::HungUpByPeer));
    let invites = a.requests(Method::Invite);
    assert_eq!(
        invites[0].uri,
        "sip:+14255550101@pbx.corp.example;user=phone"
    );
    assert_eq!(invites[1].uri, "sip:+14255550142@corp.example");
    for invite in &invites[..2] {
        let route = invite.headers.get("Route");
        if preload_route {
            assert_eq!(route, Some(format!("<{proxy};lr>").as_str()));
        } else {
            assert_eq!(route, None);
        }
    }
}

/// Session refresh: both legs get an UPDATE without SDP while connected.
#[tokio::test]
async fn connected_legs_get_session_refresh_updates() {
    let ua = UserAgent::bind(UaConfig {
        session_refresh: Some(Duration::from_millis(200)),
        ..UaConfig::default()
    })
    .await
    .unwrap()
    .0;
    let a = phone(PhoneScript {
        hang_up_after: Some(Duration::from_millis(900)),
        ..phone_a()
    })
    .await;
    let b = phone(phone_b()).await;
    let (_call, rx) = TwoLegCall::start(&ua, plan(&a, &b, Flow::Iv));
    let (_, end) = states(rx).await;
    assert_eq!(end.reason, EndReason::CallbackHungUp);
    for leg in [&a, &b] {
        let updates = leg.requests(Method::Update);
        assert!(!updates.is_empty(), "refreshed");
        assert!(updates[0].body.is_empty());
        assert!(header(&updates[0], "Session-Expires").ends_with(";refresher=uac"));
    }
}

/// A callback URI that cannot be routed ends the call at once, nothing sent.
#[tokio::test]
async fn unroutable_callback_ends_at_once() {
    let ua = controller(Protocol::Udp).await;
    let a = phone(phone_a()).await;
    let b = phone(phone_b()).await;
    let mut p = plan(&a, &b, Flow::Iv);
    p.callback.uri = "sip:+14255550101@pbx.corp.example".into();
    let (_call, rx) = TwoLegCall::start(&ua, p);
    let (all, end) = states(rx).await;
    assert_eq!(all.len(), 1);
    assert_eq!(end, ended(EndReason::Unroutable, None, Side::Callback));
    assert!(a.seen().is_empty() && b.seen().is_empty());
}

/// A callback leg where nobody answers at all (no provisional, so no CANCEL may be
/// sent, RFC 3261 §9.1): Timer B ends it as a timeout.
#[tokio::test]
async fn silent_callback_times_out_by_timer_b() {
    let config = UaConfig {
        timers: cvw_sip::transaction::Timers {
            t1: Duration::from_millis(10),
            ..Default::default()
        },
        ..UaConfig::default()
    };
    let ua = UserAgent::bind(config).await.unwrap().0;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = phone(phone_b()).await;
    let mut p = plan(&b, &b, Flow::Iv);
    p.callback.uri = format!("sip:+14255550101@{}", silent.local_addr().unwrap());
    let (_call, rx) = TwoLegCall::start(&ua, p);
    let (_, end) = states(rx).await;
    assert_eq!(
        end,
        ended(EndReason::CallbackNotAnswered, Some(408), Side::Callback)
    );
    assert!(b.seen().is_empty());
}

/// A callback leg over TCP to a port where nobody listens fails at once with 503
/// (RFC 3261 §8.1.3.1), not after Timer B's 32 s.
#[tokio::test]
async fn tcp_callback_that_cannot_connect_fails_at_once() {
    let ua = controller(Protocol::Tcp).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let b = phone(phone_b()).await;
    let mut p = plan(&b, &b, Flow::Iv);
    p.callback.uri = format!("sip:+14255550101@{addr};transport=tcp");
    let (_call, rx) = TwoLegCall::start(&ua, p);
    let (_, end) = tokio::time::timeout(Duration::from_secs(5), states(rx))
        .await
        .expect("ended well before Timer B");
    assert_eq!(
        end,
        ended(EndReason::CallbackFailed, Some(503), Side::Callback)
    );
    assert!(b.seen().is_empty());
}
