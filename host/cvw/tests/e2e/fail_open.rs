//! Fail-open: a host that is stopped, or reachable but silent, never keeps a call from
//! ringing.

use super::*;

/// Fail-open: with the host's decision service stopped, calls are routed as without Call
/// via Work: the registered clients still ring.
async fn fail_open_when_the_host_is_stopped(proxy: Proxy) {
    let mut w = World::new(proxy).await;
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

/// Fail-open when the host does not answer in time: the host is reachable (it accepts the
/// proxy's connection; over evapi it connects and is confirmed) and never answers; after
/// the decision timeout the call is routed as without Call via Work, so the registered
/// client still rings.
async fn fail_open_when_the_host_does_not_answer_in_time(proxy: Proxy) {
    let mut w = World::start(proxy, Host::Silent).await;
    let mut c1 = w.udp("alice-udp").await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let i1 = c1.expect_invite(WAIT).await;
    c1.answer(&i1);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
    assert!(
        w.pbx
            .gets_request(Method::Invite, Duration::from_millis(300))
            .await
            .is_none(),
        "no desk leg without a decision"
    );
}

per_proxy!(
    fail_open_when_the_host_is_stopped,
    [kamailio_evapi, kamailio_jsonrpc, opensips]
);
per_proxy!(
    fail_open_when_the_host_does_not_answer_in_time,
    [kamailio_evapi, kamailio_jsonrpc, opensips]
);
