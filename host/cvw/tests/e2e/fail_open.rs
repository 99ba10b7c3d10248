//! Fail-open: a host that is stopped, or connected but silent (over evapi and
//! janssonrpcc), never keeps a call from ringing.

use super::*;

/// Fail-open: with the host's decision service stopped, calls are routed as without Call
/// via Work: the registered clients still ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_the_host_is_stopped() {
    let mut w = World::new().await;
    let (mut c1, mut c2) = w.alice_clients().await;
    w.stop_service().await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let i1 = c1.expect_invite(Duration::from_secs(8)).await;
    let i2 = c2.expect_invite(Duration::from_secs(8)).await;
    bob.expect_ringing(2, WAIT).await;
    c1.answer(&i1);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
    c2.expect_cancel(&i2, WAIT).await;
    assert!(
        w.pbx
            .gets_request(Method::Invite, Duration::from_millis(300))
            .await
            .is_none(),
        "no desk leg without the host"
    );
}

/// Fail-open when the host does not answer in time: a host connects to Kamailio's evapi
/// and confirms, then never answers; after the decision timeout the call is routed as
/// without Call via Work, so the registered client still rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_the_host_does_not_answer_in_time() {
    let (kam, pbx_sock) = silent_host_setup(false).await;
    let (silent, _) = evapi_host_of_the_test(&kam, "silent").await;
    rings_without_a_decision(&kam, pbx_sock).await;
    drop(silent);
}

/// The same over JSON-RPC: the host accepts Kamailio's connection and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_the_host_does_not_answer_over_janssonrpcc() {
    let (kam, pbx_sock) = silent_host_setup(true).await;
    rings_without_a_decision(&kam, pbx_sock).await;
}

async fn rings_without_a_decision(kam: &Kamailio, pbx_sock: tokio::net::UdpSocket) {
    let mut pbx = Phone::with_udp("pbx", kam.sip, pbx_sock);
    let mut c1 = Phone::udp("alice-udp", kam.sip).await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = Phone::udp("bob", kam.sip).await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let i1 = c1.expect_invite(WAIT).await;
    c1.answer(&i1);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
    assert!(
        pbx.gets_request(Method::Invite, Duration::from_millis(300))
            .await
            .is_none(),
        "no desk leg without a decision"
    );
}
