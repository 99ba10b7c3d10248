//! The user agent core against a raw UDP socket on 127.0.0.1 playing the other side, so
//! that the exact messages are visible: 2xx retransmission until the ACK (RFC 3261
//! §13.3.1.4), the same ACK again for a retransmitted 2xx and a stray 2xx ACKed and ended
//! with BYE (§13.2.2.4), 481 for requests outside any dialog (§12.2.2), and 480 when
//! nobody takes new calls.

use std::net::SocketAddr;
use std::time::Duration;

use cvw_sip::message::{Message, Method, NameAddr, Request, Response};
use cvw_sip::transaction::Timers;
use cvw_sip::transport::Protocol;
use cvw_sip::ua::{Body, LegEvent, LegSpec, UaConfig, UserAgent};
use tokio::net::UdpSocket;
use tokio::time::timeout;

fn fast() -> UaConfig {
    UaConfig {
        timers: Timers {
            t1: Duration::from_millis(20),
            t2: Duration::from_millis(80),
            t4: Duration::from_millis(100),
        },
        ..UaConfig::default()
    }
}

async fn raw() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

async fn recv(socket: &UdpSocket) -> Message {
    let mut buf = vec![0u8; 65_535];
    let (n, _) = timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("a message within 5 s")
        .unwrap();
    Message::parse(&buf[..n]).unwrap()
}

async fn recv_response(socket: &UdpSocket) -> Response {
    loop {
        if let Message::Response(r) = recv(socket).await {
            return r;
        }
    }
}

fn request(method: &str, me: SocketAddr, to: SocketAddr, call_id: &str, extra: &str) -> String {
    format!(
        "{method} sip:phone@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}{method}\r\n\
         From: <sip:raw@{me}>;tag=raw1\r\nTo: <sip:phone@{to}>{extra}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:raw@{me}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A call from a raw socket to a fresh user agent, answered 200 with SDP by the UA.
struct Answered {
    calls: tokio::sync::mpsc::UnboundedReceiver<cvw_sip::ua::IncomingCall>,
    call: cvw_sip::ua::IncomingCall,
    socket: UdpSocket,
    me: SocketAddr,
    phone: SocketAddr,
    invite: String,
    _ua: UserAgent,
}

async fn answered(call_id: &str) -> Answered {
    let (ua, mut calls) = UserAgent::bind(fast()).await.unwrap();
    let phone = ua.local_addr(Protocol::Udp);
    let (socket, me) = raw().await;
    let invite = request("INVITE", me, phone, call_id, "");
    socket.send_to(invite.as_bytes(), phone).await.unwrap();
    let mut call = calls.recv().await.unwrap();
    let sdp = Body::sdp(b"v=0\r\n".to_vec());
    call.leg
        .respond(&call.invite, 200, "OK", Some(sdp))
        .unwrap();
    Answered {
        calls,
        call,
        socket,
        me,
        phone,
        invite,
        _ua: ua,
    }
}

#[tokio::test]
async fn uas_2xx_is_retransmitted_until_the_ack() {
    let Answered {
        calls: _calls,
        mut call,
        socket,
        me,
        phone,
        _ua,
        ..
    } = answered("c-2xx").await;
    let mut oks = Vec::new();
    while oks.len() < 3 {
        let r = recv_response(&socket).await;
        assert_eq!(r.code, 200);
        oks.push(r);
    }
    let tag = oks[0].headers.to_tag().unwrap().to_owned();
    assert!(oks.iter().all(|r| r.headers.to_tag() == Some(tag.as_str())));
    // The ACK of a 2xx is a new transaction (its own branch), matched by the dialog.
    let ack = request("ACK", me, phone, "c-2xx", &format!(";tag={tag}"));
    socket.send_to(ack.as_bytes(), phone).await.unwrap();
    assert!(matches!(
        call.leg.next().await,
        Some(cvw_sip::ua::LegEvent::Ack(_))
    ));
    // Copies sent before the ACK was seen may still be queued here; drain them.
    let mut buf = vec![0u8; 65_535];
    while timeout(Duration::from_millis(30), socket.recv_from(&mut buf))
        .await
        .is_ok()
    {}
    // After the ACK, no more 200s (T2 is 80 ms here; wait several intervals).
    let more = timeout(Duration::from_millis(400), socket.recv_from(&mut buf)).await;
    assert!(more.is_err(), "2xx still retransmitted after the ACK");
}

#[tokio::test]
async fn a_retransmitted_invite_after_the_2xx_is_absorbed_not_answered_anew() {
    let Answered {
        mut calls,
        mut call,
        socket,
        phone,
        invite,
        _ua,
        ..
    } = answered("c-again").await;
    let ok = recv_response(&socket).await;
    assert_eq!(ok.code, 200);
    let tag = ok.headers.to_tag().unwrap().to_owned();
    // The caller has not seen the 2xx yet and sends its INVITE again.
    socket.send_to(invite.as_bytes(), phone).await.unwrap();
    // Several T2 later: only copies of the same 2xx came back (§13.3.1.4), nothing else
    // (no 100, no second answer), and neither the leg nor the UA saw a request.
    let only_the_same_2xx = async {
        loop {
            let r = recv_response(&socket).await;
            assert_eq!(
                (r.code, r.headers.to_tag()),
                (200, Some(tag.as_str())),
                "the retransmitted INVITE was answered anew"
            );
        }
    };
    tokio::select! {
        event = call.leg.next() => panic!("the retransmission reached the leg: {event:?}"),
        new = calls.recv() => panic!("the retransmission made a new call: {new:?}"),
        () = only_the_same_2xx => {}
        () = tokio::time::sleep(Duration::from_millis(400)) => {}
    }
}

/// RFC 3261 §9.2: a CANCEL that crosses the 2xx still matches the INVITE's transaction,
/// so it is answered 200 and has no effect: the answered call goes on (it used to get
/// 481, which a PBX may take for a lost call).
#[tokio::test]
async fn a_cancel_after_the_2xx_gets_200_and_leaves_the_call_up() {
    let Answered {
        calls: _calls,
        mut call,
        socket,
        phone,
        invite,
        _ua,
        ..
    } = answered("c-late-cancel").await;
    assert_eq!(recv_response(&socket).await.code, 200);
    let cancel = invite.replacen("INVITE sip:", "CANCEL sip:", 1).replacen(
        "CSeq: 1 INVITE",
        "CSeq: 1 CANCEL",
        1,
    );
    socket.send_to(cancel.as_bytes(), phone).await.unwrap();
    let to_cancel = async {
        loop {
            let r = recv_response(&socket).await;
            if r.method() == Some(Method::Cancel) {
                return r;
            }
        }
    };
    let answer = tokio::select! {
        event = call.leg.next() => panic!("the late CANCEL reached the answered call: {event:?}"),
        r = to_cancel => r,
    };
    assert_eq!((answer.code, answer.reason.as_str()), (200, "OK"));
}

/// The next request of `method` and its bytes (INVITE retransmissions are skipped).
async fn recv_request(socket: &UdpSocket, method: Method) -> (Request, Vec<u8>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, _) = timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("a message within 5 s")
            .unwrap();
        if let Ok(Message::Request(r)) = Message::parse(&buf[..n])
            && r.method == method
        {
            return (r, buf[..n].to_vec());
        }
    }
}

#[tokio::test]
async fn a_2xx_retransmitted_after_our_ack_gets_the_same_ack_again() {
    let (ua, _calls) = UserAgent::bind(fast()).await.unwrap();
    let (socket, me) = raw().await;
    let mut leg = ua.leg(LegSpec {
        target: format!("sip:b@{me}"),
        from: NameAddr::new("", "sip:cvw@host"),
        to: NameAddr::new("", format!("sip:b@{me}")),
        asserted: None,
        role: None,
        headers: Vec::new(),
    });
    leg.invite(None).unwrap();
    let (invite, _) = recv_request(&socket, Method::Invite).await;
    let mut ok = invite.response(200, "OK");
    ok.headers.set("To", format!("<sip:b@{me}>;tag=theirs"));
    ok.headers.push("Contact", format!("<sip:b@{me}>"));
    ok.headers.push("Content-Type", "application/sdp");
    ok.body = b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n".to_vec();
    let ok = Message::Response(ok).to_bytes();
    socket
        .send_to(&ok, ua.local_addr(Protocol::Udp))
        .await
        .unwrap();
    assert!(matches!(leg.next().await, Some(LegEvent::Response(r)) if r.code == 200));
    let answer = b"v=0\r\nm=audio 5000 RTP/AVP 0\r\n".to_vec();
    leg.ack(Some(Body::sdp(answer.clone()))).unwrap();
    let (ack, first) = recv_request(&socket, Method::Ack).await;
    assert_eq!(ack.body, answer);
    // Our ACK was lost, as far as the phone knows: its 2xx comes again.
    socket
        .send_to(&ok, ua.local_addr(Protocol::Udp))
        .await
        .unwrap();
    // The leg absorbs it (the call never sees it) while it waits for its next event.
    let (_, again) = tokio::select! {
        event = leg.next() => panic!("a retransmitted 2xx reached the call: {event:?}"),
        ack = recv_request(&socket, Method::Ack) => ack,
    };
    assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&first),
        "the same ACK, branch and answer included"
    );
}

#[tokio::test]
async fn a_2xx_nobody_waits_for_is_acked_then_ended_with_bye() {
    let (ua, _calls) = UserAgent::bind(fast()).await.unwrap();
    let host = ua.local_addr(Protocol::Udp);
    let (socket, me) = raw().await;
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {host};branch=z9hG4bKgone\r\n\
         From: <sip:cvw@{host}>;tag=ours\r\nTo: <sip:b@{me}>;tag=theirs\r\nCall-ID: forked-1\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:b@{me}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: 5\r\n\r\nv=0\r\n"
    );
    socket.send_to(ok.as_bytes(), host).await.unwrap();
    let Message::Request(ack) = recv(&socket).await else {
        panic!("ACK expected");
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.get("CSeq"), Some("1 ACK"));
    assert_eq!(ack.headers.to_tag(), Some("theirs"));
    let Message::Request(bye) = recv(&socket).await else {
        panic!("BYE expected");
    };
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.headers.call_id(), "forked-1");
}

#[tokio::test]
async fn requests_outside_a_dialog_get_481_and_new_calls_480_when_refused() {
    let (ua, calls) = UserAgent::bind(fast()).await.unwrap();
    let host = ua.local_addr(Protocol::Udp);
    let (socket, me) = raw().await;
    let bye = request("BYE", me, host, "nodialog", ";tag=x");
    socket.send_to(bye.as_bytes(), host).await.unwrap();
    assert_eq!(recv_response(&socket).await.code, 481);
    drop(calls);
    let invite = request("INVITE", me, host, "refused", "");
    socket.send_to(invite.as_bytes(), host).await.unwrap();
    let mut r = recv_response(&socket).await;
    while r.code == 100 {
        r = recv_response(&socket).await;
    }
    assert_eq!(r.code, 480);
}

/// A 2xx that reached a leg but was never read before the leg was dropped (the call had
/// given the leg up, e.g. on Timer B, and was still clearing the other leg when the late
/// answer came) is ACKed and ended with BYE like one that came after (§13.2.2.4): the
/// answering phone is not left in a call nobody is in. Found by the 50 % loss run of
/// tests/faults.rs.
#[tokio::test]
async fn a_2xx_still_queued_when_the_leg_is_dropped_is_acked_then_ended_with_bye() {
    let (ua, _calls) = UserAgent::bind(fast()).await.unwrap();
    let (socket, me) = raw().await;
    let leg = {
        let mut leg = ua.leg(LegSpec {
            target: format!("sip:b@{me}"),
            from: NameAddr::new("", "sip:cvw@host"),
            to: NameAddr::new("", format!("sip:b@{me}")),
            asserted: None,
            role: None,
            headers: Vec::new(),
        });
        leg.invite(None).unwrap();
        leg
    };
    let (invite, _) = recv_request(&socket, Method::Invite).await;
    let mut ok = invite.response(200, "OK");
    ok.headers.set("To", format!("<sip:b@{me}>;tag=late"));
    ok.headers.push("Contact", format!("<sip:b@{me}>"));
    ok.headers.push("Content-Type", "application/sdp");
    ok.body = b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n".to_vec();
    socket
        .send_to(
            &Message::Response(ok).to_bytes(),
            ua.local_addr(Protocol::Udp),
        )
        .await
        .unwrap();
    // Queued on the leg, never read; then the leg goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(leg);
    let (ack, _) = recv_request(&socket, Method::Ack).await;
    assert_eq!(ack.headers.to_tag(), Some("late"));
    assert_eq!(
        cvw_sip::sdp::media_ports(&ack.body),
        vec![0],
        "the offer of the 2xx is answered with every stream refused"
    );
    let (bye, _) = recv_request(&socket, Method::Bye).await;
    assert_eq!(bye.headers.call_id(), invite.headers.call_id());
}
