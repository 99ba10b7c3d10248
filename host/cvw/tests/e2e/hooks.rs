//! The reply and failure hooks: a diverted desk leg cancelled, an unanswered call sent on.

use super::*;

/// The reply hook: the desk phone's PBX answers the desk leg with 181 (forwarded, e.g. to
/// voicemail); the policy cancels that branch so the voicemail cannot steal the call,
/// while the soft client rings on and can answer (CVW-51's goal by another route).
async fn reply_hook_cancels_a_diverted_desk_leg(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let mut c1 = w.udp("alice-udp").await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let mut forwarded = w.pbx.response_to(&desk, 181, "Call Is Being Forwarded");
    forwarded.headers.push(
        "Diversion",
        "<sip:+14255550101@pbx.corp.example>;reason=no-answer",
    );
    w.pbx.send(forwarded);

    w.pbx.expect_cancel(&desk, WAIT).await;
    client_answer_wins(
        &mut bob,
        &mut call,
        &c1,
        &i1,
        "after the diverted desk leg was cancelled",
    )
    .await;
}

/// The failure hook: nobody answers within the ring timeouts (408); the policy sends the
/// caller on to the configured no-answer destination, through the PBX trunk.
async fn failure_hook_sends_an_unanswered_call_to_voicemail(proxy: Proxy) {
    // Every leg rings 2 s; then the caller goes to sip:voicemail@pbx.corp.example.
    let mut w = World::with_directory(proxy, "directory-voicemail.toml").await;
    let mut c1 = w.udp("alice-udp").await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    w.pbx.expect_cancel(&desk, WAIT).await;
    c1.expect_cancel(&i1, WAIT).await;

    let vm = w.pbx.expect_invite(WAIT).await;
    assert_eq!(vm.headers.call_id(), call.call_id);
    assert_eq!(uri_user(&vm), "voicemail");
    assert_eq!(vm.headers.get("X-CVW-Leg"), Some("voicemail"));
    w.pbx.answer(&vm);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
}

per_proxy!(reply_hook_cancels_a_diverted_desk_leg);
per_proxy!(failure_hook_sends_an_unanswered_call_to_voicemail);
