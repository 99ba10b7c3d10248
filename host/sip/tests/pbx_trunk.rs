//! What a real PBX trunk asks of the user agent, against a raw UDP socket on 127.0.0.1
//! that plays the PBX so that every message on the wire is checked: digest challenges
//! (RFC 3261 §22) on the INVITE and on an in-dialog request, answered once with a new
//! CSeq on the same Call-ID and From tag, and a refused password failing the call instead
//! of looping.

use std::net::SocketAddr;
use std::time::Duration;

use cvw_sip::message::{Message, Method, NameAddr, Request};
use cvw_sip::transaction::Timers;
use cvw_sip::ua::{Credentials, LegEvent, LegRole, LegSpec, UaConfig, UserAgent};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const REALM: &str = "pbx.corp.example";

fn config(credentials: Vec<Credentials>) -> UaConfig {
    UaConfig {
        timers: Timers {
            t1: Duration::from_millis(20),
            t2: Duration::from_millis(80),
            t4: Duration::from_millis(100),
        },
        credentials,
        ..UaConfig::default()
    }
}

fn trunk_account(password: &str) -> Vec<Credentials> {
    vec![
        Credentials::new(Some("other.example".into()), "nobody", "wrong".into()),
        Credentials::new(Some(REALM.into()), "cvw-host", password.into()),
    ]
}

/// The PBX: a socket, and what it sends and receives.
struct Pbx {
    socket: UdpSocket,
    addr: SocketAddr,
}

impl Pbx {
    async fn bind() -> Pbx {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        Pbx { socket, addr }
    }

    /// The next request, skipping retransmissions of requests already seen.
    async fn request(&self, seen: &mut Vec<String>) -> (Request, SocketAddr) {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, from) = timeout(Duration::from_secs(5), self.socket.recv_from(&mut buf))
                .await
                .expect("a request within 5 s")
                .unwrap();
            let Ok(Message::Request(r)) = Message::parse(&buf[..n]) else {
                continue;
            };
            let key = format!(
                "{} {}",
                r.headers.top_branch().unwrap_or_default(),
                r.method
            );
            if !seen.contains(&key) {
                seen.push(key);
                return (r, from);
            }
        }
    }

    async fn respond(&self, request: &Request, to: SocketAddr, code: u16, extra: &[(&str, &str)]) {
        let mut r = request.response(code, "Whatever");
        for (name, value) in extra {
            r.headers.push(*name, *value);
        }
        self.socket
            .send_to(&Message::Response(r).to_bytes(), to)
            .await
            .unwrap();
    }
}

/// The PBX's next request, while the leg's own work (answering a challenge happens when
/// its events are read) goes on; what the leg reports meanwhile is kept in `events`.
async fn next_request(
    pbx: &Pbx,
    seen: &mut Vec<String>,
    leg: &mut cvw_sip::ua::Leg,
    events: &mut Vec<LegEvent>,
) -> (Request, SocketAddr) {
    loop {
        tokio::select! {
            got = pbx.request(seen) => return got,
            Some(event) = leg.next() => events.push(event),
        }
    }
}

fn md5(text: &str) -> String {
    use md5::Digest;
    format!("{:x}", md5::Md5::digest(text.as_bytes()))
}

/// A parameter of a digest answer.
fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(", ").find_map(|p| {
        let (n, v) = p.trim_start_matches("Digest ").split_once('=')?;
        (n == name).then(|| v.trim_matches('"'))
    })
}

/// What the PBX checks (RFC 2617 §3.2.2 with qop=auth): the user agent knew the password.
fn assert_answers(request: &Request, header: &str, nonce: &str, password: &str) {
    let value = request
        .headers
        .get(header)
        .unwrap_or_else(|| panic!("no {header} in {request:?}"));
    assert_eq!(param(value, "username"), Some("cvw-host"));
    assert_eq!(param(value, "realm"), Some(REALM));
    assert_eq!(param(value, "nonce"), Some(nonce));
    assert_eq!(param(value, "uri"), Some(request.uri.as_str()));
    assert_eq!(param(value, "qop"), Some("auth"));
    assert_eq!(param(value, "opaque"), Some("op1"));
    let cnonce = param(value, "cnonce").expect("cnonce");
    let nc = param(value, "nc").expect("nc");
    let ha1 = md5(&format!("cvw-host:{REALM}:{password}"));
    let ha2 = md5(&format!("{}:{}", request.method, request.uri));
    let want = md5(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    assert_eq!(param(value, "response"), Some(want.as_str()), "{value}");
}

fn challenge(nonce: &str) -> String {
    format!(
        "Digest realm=\"{REALM}\", nonce=\"{nonce}\", opaque=\"op1\", qop=\"auth,auth-int\", algorithm=MD5"
    )
}

fn leg_to(ua: &UserAgent, pbx: SocketAddr) -> cvw_sip::ua::Leg {
    let target = format!("sip:+14255550101@{pbx};user=phone");
    ua.leg(LegSpec {
        target: target.clone(),
        from: NameAddr::new("Call via Work", "tel:+14255550000"),
        to: NameAddr::new("", target),
        asserted: None,
        role: Some(LegRole::Callback),
        headers: Vec::new(),
    })
}

fn cseq(r: &Request) -> (u32, Method) {
    let c = r.headers.cseq().unwrap();
    (c.number, c.method)
}

#[tokio::test]
async fn a_challenged_invite_and_bye_are_sent_again_with_the_answer() {
    let (ua, _calls) = UserAgent::bind(config(trunk_account("trunk-pw")))
        .await
        .unwrap();
    let pbx = Pbx::bind().await;
    let mut leg = leg_to(&ua, pbx.addr);
    leg.invite(None).unwrap();
    let mut seen = Vec::new();
    let mut events = Vec::new();

    // 407 to the first INVITE: it is ACKed (hop by hop) and sent again, answered.
    let (first, from) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(cseq(&first), (1, Method::Invite));
    assert!(first.headers.get("Proxy-Authorization").is_none());
    let supported = first
        .headers
        .get("Supported")
        .unwrap_or_default()
        .to_owned();
    pbx.respond(
        &first,
        from,
        407,
        &[("Proxy-Authenticate", &challenge("n-407"))],
    )
    .await;
    let (ack, _) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(cseq(&ack), (1, Method::Ack));
    let (second, from) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(cseq(&second), (2, Method::Invite));
    assert_eq!(second.headers.call_id(), first.headers.call_id());
    assert_eq!(second.headers.from_tag(), first.headers.from_tag());
    assert_ne!(second.headers.top_branch(), first.headers.top_branch());
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.headers.get("Supported").unwrap_or_default(),
        supported
    );
    assert_answers(&second, "Proxy-Authorization", "n-407", "trunk-pw");

    // The 200 to the second INVITE makes the dialog; the 407 never reached the caller.
    let contact = format!("<sip:pbx@{}>", pbx.addr);
    let mut ok = second.response(200, "OK");
    ok.headers.set(
        "To",
        format!("{};tag=pbx1", second.headers.get("To").unwrap()),
    );
    ok.headers.push("Contact", contact.as_str());
    pbx.socket
        .send_to(&Message::Response(ok).to_bytes(), from)
        .await
        .unwrap();
    assert!(events.is_empty(), "the 407 reached the caller: {events:?}");
    match timeout(Duration::from_secs(5), leg.next()).await.unwrap() {
        Some(LegEvent::Response(r)) => assert_eq!(r.code, 200, "{r:?}"),
        other => panic!("expected the 200, got {other:?}"),
    }
    leg.ack(None).unwrap();
    let (ack, _) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(cseq(&ack), (2, Method::Ack));

    // The BYE is challenged too (401): sent again with Authorization, CSeq moved on.
    let asked = leg.bye(None).unwrap();
    let (bye, from) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(cseq(&bye), (3, Method::Bye));
    pbx.respond(
        &bye,
        from,
        401,
        &[("WWW-Authenticate", &challenge("n-401"))],
    )
    .await;
    let (bye2, from) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(cseq(&bye2), (4, Method::Bye));
    assert_eq!(bye2.headers.to_tag(), Some("pbx1"));
    assert_answers(&bye2, "Authorization", "n-401", "trunk-pw");
    pbx.respond(&bye2, from, 200, &[]).await;
    // The caller waits for the BYE it sent, by the number it was given: the 401 was
    // answered while waiting (in `next_request`), the 200 arrives now.
    let done = timeout(
        Duration::from_secs(5),
        leg.final_response(asked, Method::Bye, |e| panic!("unexpected {e:?}")),
    )
    .await
    .unwrap();
    assert_eq!(done.map(|r| r.code), Some(200));
    assert!(events.is_empty(), "the 401 reached the caller: {events:?}");
}

#[tokio::test]
async fn a_refused_password_fails_the_invite_after_one_answer() {
    let (ua, _calls) = UserAgent::bind(config(trunk_account("old-pw")))
        .await
        .unwrap();
    let pbx = Pbx::bind().await;
    let mut leg = leg_to(&ua, pbx.addr);
    leg.invite(None).unwrap();
    let mut seen = Vec::new();
    let mut invites = 0;
    let failure = loop {
        tokio::select! {
            (r, from) = pbx.request(&mut seen) => {
                if r.method == Method::Invite {
                    invites += 1;
                    pbx.respond(&r, from, 401, &[("WWW-Authenticate", &challenge(&format!("n{invites}")))]).await;
                }
            }
            event = leg.next() => match event {
                Some(LegEvent::Response(r)) if !r.is_provisional() => break r,
                _ => {}
            },
        }
    };
    assert_eq!(failure.code, 401);
    assert_eq!(
        invites, 2,
        "one answer per challenge, then the 401 is the outcome"
    );
}

#[tokio::test]
async fn without_credentials_for_the_realm_the_challenge_is_the_outcome() {
    let (ua, _calls) = UserAgent::bind(config(vec![Credentials::new(
        Some("other.example".into()),
        "x",
        "y".into(),
    )]))
    .await
    .unwrap();
    let pbx = Pbx::bind().await;
    let mut leg = leg_to(&ua, pbx.addr);
    leg.invite(None).unwrap();
    let mut seen = Vec::new();
    let (invite, from) = pbx.request(&mut seen).await;
    pbx.respond(
        &invite,
        from,
        407,
        &[("Proxy-Authenticate", &challenge("n"))],
    )
    .await;
    match timeout(Duration::from_secs(5), leg.next()).await.unwrap() {
        Some(LegEvent::Response(r)) => assert_eq!(r.code, 407),
        other => panic!("expected the 407, got {other:?}"),
    }
}

/// RFC 2617 §3.2.2.3: a PBX that offers only `qop="auth-int"` gets an answer that hashes
/// the body sent (here the INVITE's SDP offer) into it, so it proves the body too.
#[tokio::test]
async fn an_auth_int_challenge_is_answered_with_the_body_hashed_in() {
    let (ua, _calls) = UserAgent::bind(config(trunk_account("trunk-pw")))
        .await
        .unwrap();
    let pbx = Pbx::bind().await;
    let mut leg = leg_to(&ua, pbx.addr);
    let offer = cvw_sip::sdp::media_less_offer("127.0.0.1", 1);
    leg.invite(Some(cvw_sip::ua::Body::sdp(offer.clone())))
        .unwrap();
    let mut seen = Vec::new();
    let mut events = Vec::new();
    let (first, from) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    let auth_int =
        format!("Digest realm=\"{REALM}\", nonce=\"n-int\", qop=\"auth-int\", algorithm=MD5");
    pbx.respond(&first, from, 401, &[("WWW-Authenticate", &auth_int)])
        .await;
    let second = loop {
        let (r, _) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
        if r.method == Method::Invite {
            break r;
        }
    };
    assert!(events.is_empty(), "the 401 reached the caller: {events:?}");
    assert_eq!(cseq(&second), (2, Method::Invite));
    assert_eq!(second.body, offer);
    let value = second.headers.get("Authorization").expect("Authorization");
    assert_eq!(param(value, "qop"), Some("auth-int"), "{value}");
    let cnonce = param(value, "cnonce").expect("cnonce");
    let nc = param(value, "nc").expect("nc");
    let ha1 = md5(&format!("cvw-host:{REALM}:trunk-pw"));
    let body_hash = md5(std::str::from_utf8(&second.body).unwrap());
    let ha2 = md5(&format!("INVITE:{}:{body_hash}", second.uri));
    let want = md5(&format!("{ha1}:n-int:{nc}:{cnonce}:auth-int:{ha2}"));
    assert_eq!(param(value, "response"), Some(want.as_str()), "{value}");
}

/// RFC 3262: a PBX that sends its provisionals reliably gets each PRACKed once, in the
/// early dialog, with the RAck naming it; a retransmitted one is not PRACKed again, and
/// the confirmed dialog's requests continue above the PRACKs' CSeq numbers.
#[tokio::test]
async fn reliable_provisionals_are_pracked_once_each() {
    let (ua, _calls) = UserAgent::bind(config(Vec::new())).await.unwrap();
    let pbx = Pbx::bind().await;
    let mut leg = leg_to(&ua, pbx.addr);
    // The callback leg's INVITE of Flow IV: an offer without m= lines.
    let offer = cvw_sip::sdp::media_less_offer("127.0.0.1", 1);
    leg.invite(Some(cvw_sip::ua::Body::sdp(offer))).unwrap();
    let mut seen = Vec::new();
    let mut events = Vec::new();
    let (invite, from) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    let supported = invite.headers.get("Supported").unwrap_or_default();
    assert!(supported.contains("100rel"), "Supported: {supported:?}");
    let contact = format!("<sip:pbx@{}>", pbx.addr);
    let to = format!("{};tag=pbx1", invite.headers.get("To").unwrap());
    let provisional = |code: u16, rseq: &str| {
        let mut r = invite.response(code, "Ringing");
        r.headers.set("To", to.as_str());
        r.headers.push("Contact", contact.as_str());
        r.headers.push("Require", "100rel");
        r.headers.push("RSeq", rseq);
        Message::Response(r).to_bytes()
    };
    let ringing = provisional(180, "7");
    pbx.socket.send_to(&ringing, from).await.unwrap();
    let (prack, at) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(prack.method, Method::Prack);
    assert_eq!(cseq(&prack), (2, Method::Prack));
    assert_eq!(prack.headers.get("RAck"), Some("7 1 INVITE"));
    assert_eq!(prack.headers.to_tag(), Some("pbx1"));
    assert_eq!(prack.headers.call_id(), invite.headers.call_id());
    assert_eq!(prack.uri, format!("sip:pbx@{}", pbx.addr));
    pbx.respond(&prack, at, 200, &[]).await;

    // The 180 again (its PRACK "lost"): discarded. The next reliable one is PRACKed.
    pbx.socket.send_to(&ringing, from).await.unwrap();
    pbx.socket
        .send_to(&provisional(183, "8"), from)
        .await
        .unwrap();
    let (prack, at) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(prack.headers.get("RAck"), Some("8 1 INVITE"), "{prack:?}");
    assert_eq!(cseq(&prack), (3, Method::Prack));
    pbx.respond(&prack, at, 200, &[]).await;

    let mut ok = invite.response(200, "OK");
    ok.headers.set("To", to.as_str());
    ok.headers.push("Contact", contact.as_str());
    pbx.socket
        .send_to(&Message::Response(ok).to_bytes(), from)
        .await
        .unwrap();
    let answered = loop {
        match timeout(Duration::from_secs(5), leg.next()).await.unwrap() {
            Some(LegEvent::Response(r)) if r.code == 200 && r.method() == Some(Method::Invite) => {
                break r;
            }
            Some(event) => events.push(event),
            None => panic!("leg closed"),
        }
    };
    assert_eq!(answered.headers.to_tag(), Some("pbx1"));
    let codes: Vec<u16> = events
        .iter()
        .filter_map(|e| match e {
            LegEvent::Response(r) if r.method() == Some(Method::Invite) => Some(r.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [180, 183], "each provisional reported once");
    leg.ack(None).unwrap();
    let (ack, _) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(cseq(&ack), (1, Method::Ack));
    leg.bye(None).unwrap();
    let (bye, _) = next_request(&pbx, &mut seen, &mut leg, &mut events).await;
    assert_eq!(cseq(&bye), (4, Method::Bye), "above the PRACKs");
}

/// RFC 4028 as a keep-alive: a connected callee whose trunk stops answering is noticed
/// at the next refresh, both legs get BYE with the reason, and the outcome says the
/// callee side was lost (not that someone hung up).
#[tokio::test]
async fn a_callee_that_vanishes_is_noticed_by_the_session_refresh() {
    use cvw_sip::testing::{PhoneScript, TestPhone, phone_sdp};
    use cvw_sip::third_party::{
        CallPlan, CallState, EndReason, Ended, Flow, LegPlan, Side, TwoLegCall,
    };

    let ua = UserAgent::bind(UaConfig {
        timers: Timers {
            t1: Duration::from_millis(10),
            t2: Duration::from_millis(40),
            t4: Duration::from_millis(50),
        },
        session_refresh: Some(Duration::from_millis(200)),
        ..UaConfig::default()
    })
    .await
    .unwrap()
    .0;
    let a = TestPhone::start(PhoneScript::default()).await.unwrap();
    let pbx = Pbx::bind().await;
    let plan = CallPlan {
        callback: LegPlan {
            uri: a.uri("+14255550101"),
            shows: NameAddr::new("Call via Work", "tel:+14255550000"),
            ring_timeout: Duration::from_secs(2),
        },
        callee: LegPlan {
            uri: format!("sip:+14255550142@{};user=phone", pbx.addr),
            shows: NameAddr::new("Alice", "tel:+14255550101"),
            ring_timeout: Duration::from_secs(2),
        },
        flow: Flow::Iv,
        max_duration: Duration::from_secs(60),
        headers: Vec::new(),
        continue_when_diverted: false,
    };
    let (_call, mut states) = TwoLegCall::start(&ua, plan);
    let callee = tokio::spawn(async move {
        let mut seen = Vec::new();
        let (invite, from) = pbx.request(&mut seen).await;
        let supported = invite.headers.get("Supported").unwrap_or_default();
        assert!(supported.contains("timer"), "{supported}");
        // Offerless (Flow IV's callee leg): a reliable 1xx with SDP could not be answered.
        assert!(!supported.contains("100rel"), "{supported}");
        let mut ok = invite.response(200, "OK");
        ok.headers.set(
            "To",
            format!("{};tag=b1", invite.headers.get("To").unwrap()),
        );
        ok.headers.push("Contact", format!("<sip:b@{}>", pbx.addr));
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = phone_sdp(None, 50_000);
        pbx.socket
            .send_to(&Message::Response(ok).to_bytes(), from)
            .await
            .unwrap();
        loop {
            let (r, from) = pbx.request(&mut seen).await;
            if r.method == Method::Update {
                assert!(r.headers.get("Session-Expires").is_some());
                pbx.respond(&r, from, 200, &[]).await;
                break;
            }
        }
        // Gone: nothing is answered any more; the refresh is retransmitted until Timer F,
        // then the call's end still sends this leg a BYE (RFC 4028 §10).
        loop {
            let (r, _) = pbx.request(&mut seen).await;
            if r.method == Method::Bye {
                break r;
            }
        }
    });
    let ended = timeout(Duration::from_secs(10), async {
        loop {
            match states.recv().await {
                Some(CallState::Ended(e)) => break e,
                Some(_) => {}
                None => panic!("no outcome"),
            }
        }
    })
    .await
    .expect("the lost callee noticed within seconds");
    let bye = callee.await.unwrap();
    assert!(
        bye.headers
            .get("Reason")
            .is_some_and(|r| r.contains("cause=408")),
        "{bye:?}"
    );
    assert_eq!(
        ended,
        Ended {
            reason: EndReason::CalleeLost,
            code: Some(408),
            side: Side::Callee
        }
    );
    let byes = a.requests(Method::Bye);
    assert_eq!(byes.len(), 1, "the callback phone is hung up");
    let reason = byes[0].headers.get("Reason").unwrap_or_default();
    assert!(reason.contains("cause=408"), "Reason: {reason}");
}

/// RFC 4028 §7.2: the PBX's 2xx asks for a shorter session (`Session-Expires: 2`) than the
/// host refreshes at (60 s): the refreshes come at half of it, or the PBX would end the
/// call when its session expired.
#[tokio::test]
async fn a_shorter_session_expires_from_the_pbx_sets_the_refresh_pace() {
    use cvw_sip::testing::{PhoneScript, TestPhone, phone_sdp};
    use cvw_sip::third_party::{CallPlan, Flow, LegPlan, TwoLegCall};

    let ua = UserAgent::bind(UaConfig {
        session_refresh: Some(Duration::from_secs(60)),
        ..UaConfig::default()
    })
    .await
    .unwrap()
    .0;
    let a = TestPhone::start(PhoneScript::default()).await.unwrap();
    let pbx = Pbx::bind().await;
    let plan = CallPlan {
        callback: LegPlan {
            uri: a.uri("+14255550101"),
            shows: NameAddr::new("Call via Work", "tel:+14255550000"),
            ring_timeout: Duration::from_secs(2),
        },
        callee: LegPlan {
            uri: format!("sip:+14255550142@{};user=phone", pbx.addr),
            shows: NameAddr::new("Alice", "tel:+14255550101"),
            ring_timeout: Duration::from_secs(2),
        },
        flow: Flow::Iv,
        max_duration: Duration::from_secs(60),
        headers: Vec::new(),
        continue_when_diverted: false,
    };
    let (call, _states) = TwoLegCall::start(&ua, plan);
    let mut seen = Vec::new();
    let (invite, from) = pbx.request(&mut seen).await;
    let mut ok = invite.response(200, "OK");
    ok.headers.set(
        "To",
        format!("{};tag=b1", invite.headers.get("To").unwrap()),
    );
    ok.headers.push("Contact", format!("<sip:b@{}>", pbx.addr));
    ok.headers.push("Session-Expires", "2;refresher=uac");
    ok.headers.push("Content-Type", "application/sdp");
    ok.body = phone_sdp(None, 50_000);
    pbx.socket
        .send_to(&Message::Response(ok).to_bytes(), from)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let update = loop {
        let (r, from) = pbx.request(&mut seen).await;
        if r.method == Method::Update {
            pbx.respond(&r, from, 200, &[]).await;
            break r;
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refreshed after {:?}",
        started.elapsed()
    );
    assert!(update.headers.get("Session-Expires").is_some());
    call.hangup();
}

fn refreshing_every(interval: Duration) -> UaConfig {
    UaConfig {
        session_refresh: Some(interval),
        ..config(Vec::new())
    }
}

/// RFC 4028 §7.4: the PBX's minimum session interval is longer than what the INVITE asks
/// for; it answers 422 with `Min-SE: 4`, the INVITE goes again (new CSeq and branch, same
/// Call-ID and From tag) with `Session-Expires: 4` and `Min-SE: 4`, and the refreshes of
/// the call carry both too, within half of it (the host refreshes every second).
#[tokio::test]
async fn a_422_is_answered_with_the_pbx_min_se_and_the_refreshes_follow_it() {
    use cvw_sip::testing::{PhoneScript, TestPhone, phone_sdp};
    use cvw_sip::third_party::{CallPlan, Flow, LegPlan, TwoLegCall};

    let ua = UserAgent::bind(refreshing_every(Duration::from_secs(1)))
        .await
        .unwrap()
        .0;
    let a = TestPhone::start(PhoneScript::default()).await.unwrap();
    let pbx = Pbx::bind().await;
    let plan = CallPlan {
        callback: LegPlan {
            uri: a.uri("+14255550101"),
            shows: NameAddr::new("Call via Work", "tel:+14255550000"),
            ring_timeout: Duration::from_secs(2),
        },
        callee: LegPlan {
            uri: format!("sip:+14255550142@{};user=phone", pbx.addr),
            shows: NameAddr::new("Alice", "tel:+14255550101"),
            ring_timeout: Duration::from_secs(5),
        },
        flow: Flow::Iv,
        max_duration: Duration::from_secs(60),
        headers: Vec::new(),
        continue_when_diverted: false,
    };
    let (call, _states) = TwoLegCall::start(&ua, plan);
    let mut seen = Vec::new();
    let (first, from) = pbx.request(&mut seen).await;
    assert_eq!(cseq(&first), (1, Method::Invite));
    assert_eq!(
        first.headers.get("Session-Expires"),
        Some("2;refresher=uac")
    );
    assert!(first.headers.get("Min-SE").is_none());
    pbx.respond(&first, from, 422, &[("Min-SE", "4")]).await;
    let (second, from) = loop {
        let (r, from) = pbx.request(&mut seen).await;
        if r.method == Method::Invite {
            break (r, from);
        }
    };
    assert_eq!(cseq(&second), (2, Method::Invite));
    assert_eq!(second.headers.call_id(), first.headers.call_id());
    assert_eq!(second.headers.from_tag(), first.headers.from_tag());
    assert_ne!(second.headers.top_branch(), first.headers.top_branch());
    assert_eq!(
        second.headers.get("Session-Expires"),
        Some("4;refresher=uac")
    );
    assert_eq!(second.headers.get("Min-SE"), Some("4"));
    assert_eq!(
        second.headers.get("Supported"),
        first.headers.get("Supported")
    );

    let mut ok = second.response(200, "OK");
    ok.headers.set(
        "To",
        format!("{};tag=b1", second.headers.get("To").unwrap()),
    );
    ok.headers.push("Contact", format!("<sip:b@{}>", pbx.addr));
    ok.headers.push("Require", "timer");
    ok.headers.push("Session-Expires", "4;refresher=uac");
    ok.headers.push("Content-Type", "application/sdp");
    ok.body = phone_sdp(None, 50_000);
    pbx.socket
        .send_to(&Message::Response(ok).to_bytes(), from)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let update = loop {
        let (r, from) = pbx.request(&mut seen).await;
        if r.method == Method::Update {
            pbx.respond(&r, from, 200, &[]).await;
            break r;
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refreshed after {:?}, later than half the session interval",
        started.elapsed()
    );
    assert_eq!(
        update.headers.get("Session-Expires"),
        Some("4;refresher=uac")
    );
    assert_eq!(update.headers.get("Min-SE"), Some("4"));
    // The callback leg had no 422: its refreshes ask for what the host does.
    let mut a_update = a.requests(Method::Update);
    for _ in 0..50 {
        if !a_update.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        a_update = a.requests(Method::Update);
    }
    assert!(!a_update.is_empty(), "the callback leg is refreshed too");
    assert!(
        a_update.iter().all(
            |u| u.headers.get("Session-Expires") == Some("2;refresher=uac")
                && u.headers.get("Min-SE").is_none()
        ),
        "{a_update:?}"
    );
    call.hangup();
}

/// No loop and no guess: a second 422 that asks for no more than the retry did, or a 422
/// without Min-SE, is the INVITE's failure, reported as the 422.
#[tokio::test]
async fn a_422_without_a_longer_min_se_fails_the_leg() {
    for min_ses in [&["4", "4"][..], &["4", "3"], &[""]] {
        let (ua, _calls) = UserAgent::bind(refreshing_every(Duration::from_secs(1)))
            .await
            .unwrap();
        let pbx = Pbx::bind().await;
        let mut leg = leg_to(&ua, pbx.addr);
        leg.invite(None).unwrap();
        let mut seen = Vec::new();
        let mut invites = Vec::new();
        let failure = loop {
            tokio::select! {
                (r, from) = pbx.request(&mut seen) => {
                    if r.method == Method::Invite {
                        let extra: &[(&str, &str)] = match min_ses.get(invites.len()) {
                            Some(&"") => &[],
                            Some(min_se) => &[("Min-SE", min_se)],
                            None => panic!("INVITE sent again after {min_ses:?}: {r:?}"),
                        };
                        pbx.respond(&r, from, 422, extra).await;
                        invites.push(r);
                    }
                }
                event = leg.next() => match event {
                    Some(LegEvent::Response(r)) if !r.is_provisional() => break r,
                    _ => {}
                },
            }
        };
        assert_eq!(failure.code, 422, "{min_ses:?}");
        assert_eq!(invites.len(), min_ses.len(), "{min_ses:?}");
        // Give a wrongly sent retry the time to arrive.
        let late = timeout(Duration::from_millis(300), async {
            loop {
                let (r, _) = pbx.request(&mut seen).await;
                if r.method == Method::Invite {
                    break r;
                }
            }
        })
        .await;
        assert!(late.is_err(), "{min_ses:?}: {late:?}");
        if min_ses.len() == 2 {
            assert_eq!(invites[1].headers.get("Min-SE"), Some("4"));
        }
    }
}

/// RFC 3262 §5 with an offerless INVITE (Flow IV's callee leg): a PBX that requires 100rel
/// would put its offer in the first reliable provisional, whose PRACK must answer it, and
/// the answer only exists once the callback phone was re-INVITEd with that offer. So the
/// INVITE still does not offer 100rel, a 421 `Require: 100rel` is not answered by sending
/// it again with it, and the call ends saying why (the callback phone's BYE Reason).
#[tokio::test]
async fn a_pbx_requiring_100rel_on_an_offerless_invite_fails_the_leg_by_name() {
    use cvw_sip::testing::{PhoneScript, TestPhone};
    use cvw_sip::third_party::{
        CallPlan, CallState, EndReason, Ended, Flow, LegPlan, Side, TwoLegCall,
    };

    let ua = UserAgent::bind(config(Vec::new())).await.unwrap().0;
    let a = TestPhone::start(PhoneScript::default()).await.unwrap();
    let pbx = Pbx::bind().await;
    let plan = CallPlan {
        callback: LegPlan {
            uri: a.uri("+14255550101"),
            shows: NameAddr::new("Call via Work", "tel:+14255550000"),
            ring_timeout: Duration::from_secs(2),
        },
        callee: LegPlan {
            uri: format!("sip:+14255550142@{};user=phone", pbx.addr),
            shows: NameAddr::new("Alice", "tel:+14255550101"),
            ring_timeout: Duration::from_secs(5),
        },
        flow: Flow::Iv,
        max_duration: Duration::from_secs(60),
        headers: Vec::new(),
        continue_when_diverted: false,
    };
    let (_call, mut states) = TwoLegCall::start(&ua, plan);
    let mut seen = Vec::new();
    let (invite, from) = pbx.request(&mut seen).await;
    assert!(
        invite.body.is_empty(),
        "Flow IV's callee INVITE has no offer"
    );
    let supported = invite.headers.get("Supported").unwrap_or_default();
    assert!(!supported.contains("100rel"), "Supported: {supported:?}");
    pbx.respond(&invite, from, 421, &[("Require", "100rel")])
        .await;
    let ended = timeout(Duration::from_secs(5), async {
        loop {
            match states.recv().await {
                Some(CallState::Ended(e)) => break e,
                Some(_) => {}
                None => panic!("no outcome"),
            }
        }
    })
    .await
    .expect("an outcome");
    assert_eq!(
        ended,
        Ended {
            reason: EndReason::CalleeFailed,
            code: Some(421),
            side: Side::Callee
        }
    );
    let again = timeout(Duration::from_millis(300), async {
        loop {
            let (r, _) = pbx.request(&mut seen).await;
            if r.method == Method::Invite {
                break r;
            }
        }
    })
    .await;
    assert!(again.is_err(), "INVITE sent again: {again:?}");
    let byes = a.requests(Method::Bye);
    assert_eq!(byes.len(), 1, "the callback phone is hung up");
    let reason = byes[0].headers.get("Reason").unwrap_or_default();
    assert!(
        reason.contains("cause=421") && reason.contains("100rel"),
        "Reason: {reason}"
    );
}
