//! The transaction layer's timers and state machines on virtual time, with a transport
//! that records what was sent when.

use super::*;
use crate::transport::Protocol;
use std::net::SocketAddr;

/// Records every send with its virtual time.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(Duration, String)>>,
    start: Mutex<Option<Instant>>,
}

impl Transmit for Recorder {
    fn send(&self, bytes: Vec<u8>, _to: Destination) {
        let start = *guard(&self.start).get_or_insert_with(Instant::now);
        let first_line = String::from_utf8_lossy(&bytes)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        guard(&self.sent).push((start.elapsed(), first_line));
    }
    fn local_addr(&self, _: Protocol) -> SocketAddr {
        "127.0.0.1:5060".parse().unwrap()
    }
}

impl Recorder {
    fn times_of(&self, prefix: &str) -> Vec<f64> {
        guard(&self.sent)
            .iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .map(|(t, _)| t.as_secs_f64())
            .collect()
    }
}

fn dest(protocol: Protocol) -> Destination {
    Destination {
        addr: "127.0.0.1:5070".parse().unwrap(),
        protocol,
    }
}

fn request(method: Method) -> Request {
    let mut headers = Headers::new();
    headers.push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtest");
    headers.push("From", "<sip:cvw@h>;tag=f1");
    headers.push("To", "<sip:a@h>");
    headers.push("Call-ID", "call-1");
    headers.push("CSeq", format!("1 {method}"));
    Request {
        method,
        uri: "sip:a@127.0.0.1:5070".into(),
        headers,
        body: Vec::new(),
    }
}

fn inbound(message: Message, protocol: Protocol) -> Inbound {
    Inbound {
        message,
        source: dest(protocol),
    }
}

fn layer() -> (TransactionLayer, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    (TransactionLayer::new(rec.clone(), Timers::default()), rec)
}

fn channel_sink() -> (ResponseSink, mpsc::UnboundedReceiver<Response>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
        rx,
    )
}

#[tokio::test(start_paused = true)]
async fn invite_over_udp_doubles_timer_a_and_times_out_at_timer_b() {
    let (layer, rec) = layer();
    let (sink, mut rx) = channel_sink();
    let _c = layer.send_invite(request(Method::Invite), dest(Protocol::Udp), sink);
    let timeout = rx.recv().await.unwrap();
    assert_eq!(timeout.code, 408, "Timer B reports a timeout to the TU");
    assert_eq!(
        rec.times_of("INVITE"),
        vec![0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    );
}

#[tokio::test(start_paused = true)]
async fn invite_over_tcp_is_sent_once() {
    let (layer, rec) = layer();
    let (sink, mut rx) = channel_sink();
    let _c = layer.send_invite(request(Method::Invite), dest(Protocol::Tcp), sink);
    assert_eq!(rx.recv().await.unwrap().code, 408);
    assert_eq!(rec.times_of("INVITE"), vec![0.0]);
}

#[tokio::test(start_paused = true)]
async fn non_invite_caps_timer_e_at_t2_and_times_out_at_timer_f() {
    let (layer, rec) = layer();
    let (sink, mut rx) = channel_sink();
    layer.send_request(request(Method::Bye), dest(Protocol::Udp), sink);
    assert_eq!(rx.recv().await.unwrap().code, 408);
    assert_eq!(
        rec.times_of("BYE"),
        vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
}

#[tokio::test(start_paused = true)]
async fn provisional_stops_invite_retransmission_and_non_2xx_is_acked_hop_by_hop() {
    let (layer, rec) = layer();
    let (sink, mut rx) = channel_sink();
    let invite = request(Method::Invite);
    let _c = layer.send_invite(invite.clone(), dest(Protocol::Udp), sink);
    tokio::time::sleep(Duration::from_millis(600)).await; // one retransmission
    let mut ringing = invite.response(180, "Ringing");
    ringing.headers.set("To", "<sip:a@h>;tag=t1");
    assert!(
        layer
            .handle(inbound(Message::Response(ringing.clone()), Protocol::Udp))
            .is_none()
    );
    assert_eq!(rx.recv().await.unwrap().code, 180);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        rec.times_of("INVITE"),
        vec![0.0, 0.5],
        "no Timer A once proceeding"
    );
    let mut busy = invite.response(486, "Busy Here");
    busy.headers.set("To", "<sip:a@h>;tag=t1");
    layer.handle(inbound(Message::Response(busy.clone()), Protocol::Udp));
    assert_eq!(rx.recv().await.unwrap().code, 486);
    // A retransmitted 486 is absorbed and ACKed again, not passed up (Timer D running).
    assert!(
        layer
            .handle(inbound(Message::Response(busy.clone()), Protocol::Udp))
            .is_none()
    );
    tokio::task::yield_now().await;
    assert_eq!(rec.times_of("ACK").len(), 2);
    // After Timer D (32 s) the transaction is gone: a copy is unmatched.
    tokio::time::sleep(Duration::from_secs(33)).await;
    assert!(matches!(
        layer.handle(inbound(Message::Response(busy), Protocol::Udp)),
        Some(Unmatched::Response(_))
    ));
    assert!(
        rx.recv().await.is_none(),
        "sink dropped when the transaction ends"
    );
}

#[tokio::test(start_paused = true)]
async fn timer_d_is_zero_over_tcp() {
    let (layer, _rec) = layer();
    let (sink, mut rx) = channel_sink();
    let invite = request(Method::Invite);
    let _c = layer.send_invite(invite.clone(), dest(Protocol::Tcp), sink);
    tokio::task::yield_now().await;
    let busy = invite.response(486, "Busy Here");
    layer.handle(inbound(Message::Response(busy.clone()), Protocol::Tcp));
    assert_eq!(rx.recv().await.unwrap().code, 486);
    assert!(rx.recv().await.is_none());
    assert!(
        layer
            .handle(inbound(Message::Response(busy), Protocol::Tcp))
            .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_waits_for_a_provisional_response() {
    let (layer, rec) = layer();
    let (sink, mut rx) = channel_sink();
    let invite = request(Method::Invite);
    let client = layer.send_invite(invite.clone(), dest(Protocol::Tcp), sink);
    client.cancel(vec![("Reason".into(), "SIP;cause=408".into())]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rec.times_of("CANCEL").is_empty(),
        "§9.1: no CANCEL before a 1xx"
    );
    layer.handle(inbound(
        Message::Response(invite.response(180, "Ringing")),
        Protocol::Tcp,
    ));
    assert_eq!(rx.recv().await.unwrap().code, 180);
    tokio::task::yield_now().await;
    assert_eq!(rec.times_of("CANCEL").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn non_invite_timer_k_absorbs_retransmitted_finals() {
    let (layer, _rec) = layer();
    let (sink, mut rx) = channel_sink();
    let bye = request(Method::Bye);
    layer.send_request(bye.clone(), dest(Protocol::Udp), sink);
    tokio::task::yield_now().await;
    let ok = bye.response(200, "OK");
    layer.handle(inbound(Message::Response(ok.clone()), Protocol::Udp));
    assert_eq!(rx.recv().await.unwrap().code, 200);
    assert!(
        layer
            .handle(inbound(Message::Response(ok.clone()), Protocol::Udp))
            .is_none()
    );
    tokio::time::sleep(Duration::from_secs(6)).await; // T4 = 5 s
    assert!(
        layer
            .handle(inbound(Message::Response(ok), Protocol::Udp))
            .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn invite_server_sends_trying_retransmits_non_2xx_with_timer_g_until_ack() {
    let (layer, rec) = layer();
    let invite = request(Method::Invite);
    let Some(Unmatched::Request(server)) =
        layer.handle(inbound(Message::Request(invite.clone()), Protocol::Udp))
    else {
        panic!("new INVITE goes to the TU");
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rec.times_of("SIP/2.0 100"),
        vec![0.0],
        "100 Trying after 200 ms"
    );
    // A retransmitted INVITE gets the last provisional again.
    assert!(
        layer
            .handle(inbound(Message::Request(invite.clone()), Protocol::Udp))
            .is_none()
    );
    tokio::task::yield_now().await;
    assert_eq!(rec.times_of("SIP/2.0 100").len(), 2);
    server
        .transaction
        .respond(invite.response(486, "Busy Here"));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(rec.times_of("SIP/2.0 486").len(), 3, "sent, +T1, +2T1");
    let mut ack = request(Method::Ack);
    ack.headers.set("CSeq", "1 ACK");
    assert!(
        layer
            .handle(inbound(Message::Request(ack.clone()), Protocol::Udp))
            .is_none()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rec.times_of("SIP/2.0 486").len(),
        3,
        "Timer G stops at the ACK"
    );
    // Timer I (T4) ends the transaction; a late ACK copy is then unmatched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(matches!(
        layer.handle(inbound(Message::Request(ack), Protocol::Udp)),
        Some(Unmatched::Ack(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn invite_server_timer_h_gives_up_without_ack() {
    let (layer, rec) = layer();
    let invite = request(Method::Invite);
    let Some(Unmatched::Request(server)) =
        layer.handle(inbound(Message::Request(invite.clone()), Protocol::Udp))
    else {
        panic!("new INVITE goes to the TU");
    };
    server.transaction.respond(invite.response(603, "Decline"));
    tokio::time::sleep(Duration::from_secs(40)).await;
    // 0, .5, 1.5, 3.5, 7.5, 11.5 ... 31.5 (capped at T2), nothing after Timer H at 32 s.
    assert_eq!(rec.times_of("SIP/2.0 603").len(), 11);
    assert!(
        layer
            .handle(inbound(Message::Request(invite), Protocol::Udp))
            .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_is_answered_by_the_layer() {
    let (layer, rec) = layer();
    let invite = request(Method::Invite);
    let _server = layer.handle(inbound(Message::Request(invite), Protocol::Udp));
    let cancel = request(Method::Cancel);
    let Some(Unmatched::Cancel { matched, .. }) =
        layer.handle(inbound(Message::Request(cancel), Protocol::Udp))
    else {
        panic!("CANCEL reaches the TU");
    };
    assert!(matched);
    tokio::task::yield_now().await;
    assert_eq!(rec.times_of("SIP/2.0 200").len(), 1);
    let mut stray = request(Method::Cancel);
    stray
        .headers
        .set("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother");
    layer.handle(inbound(Message::Request(stray), Protocol::Udp));
    tokio::task::yield_now().await;
    assert_eq!(rec.times_of("SIP/2.0 481").len(), 1);
}

/// §9.2: a CANCEL after the 2xx matches the accepted INVITE: 200, and the TU sees
/// nothing; once Timer L forgot the INVITE, a CANCEL is unknown (481).
#[tokio::test(start_paused = true)]
async fn cancel_after_the_2xx_gets_200_and_does_not_reach_the_tu() {
    let (layer, rec) = layer();
    let invite = request(Method::Invite);
    let Some(Unmatched::Request(server)) =
        layer.handle(inbound(Message::Request(invite.clone()), Protocol::Udp))
    else {
        panic!("new INVITE goes to the TU");
    };
    server.transaction.respond(invite.response(200, "OK"));
    tokio::task::yield_now().await;
    let cancel = || inbound(Message::Request(request(Method::Cancel)), Protocol::Udp);
    assert!(layer.handle(cancel()).is_none(), "no effect on the call");
    tokio::task::yield_now().await;
    assert_eq!(
        rec.times_of("SIP/2.0 200").len(),
        2,
        "the INVITE's and the CANCEL's"
    );
    assert_eq!(rec.times_of("SIP/2.0 481").len(), 0);
    tokio::time::sleep(Timers::default().timer_l() + Duration::from_secs(1)).await;
    assert!(matches!(
        layer.handle(cancel()),
        Some(Unmatched::Cancel { matched: false, .. })
    ));
    tokio::task::yield_now().await;
    assert_eq!(rec.times_of("SIP/2.0 481").len(), 1);
}

/// A transport that can never deliver (a TCP peer that refuses connections).
struct Unreachable;

impl Transmit for Unreachable {
    fn send(&self, _: Vec<u8>, _: Destination) {}
    fn send_or(&self, _: Vec<u8>, _: Destination, failed: crate::transport::OnFailure) {
        failed();
    }
    fn local_addr(&self, _: Protocol) -> SocketAddr {
        "127.0.0.1:5060".parse().unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn transport_failure_ends_client_transactions_with_503_at_once() {
    let layer = TransactionLayer::new(Arc::new(Unreachable), Timers::default());
    let start = Instant::now();
    let (sink, mut rx) = channel_sink();
    let _c = layer.send_invite(request(Method::Invite), dest(Protocol::Tcp), sink);
    assert_eq!(rx.recv().await.unwrap().code, 503);
    let (sink, mut rx) = channel_sink();
    layer.send_request(request(Method::Bye), dest(Protocol::Tcp), sink);
    assert_eq!(rx.recv().await.unwrap().code, 503);
    assert_eq!(start.elapsed(), Duration::ZERO, "no timer involved");
}

#[tokio::test(start_paused = true)]
async fn dropped_server_transaction_answers_500() {
    let (layer, rec) = layer();
    let info = request(Method::Info);
    let server = layer.handle(inbound(Message::Request(info), Protocol::Udp));
    drop(server);
    tokio::task::yield_now().await;
    assert_eq!(rec.times_of("SIP/2.0 500").len(), 1);
}
