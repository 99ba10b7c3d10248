//! Simultaneous ring as the people on the phones hear it (CVW-30..34, CVW-51), a user
//! without Call via Work, and a hot swap while calls ring (CVW-52).

use super::*;

/// CVW-30: a UC call to Alice rings her desk phone (through the PBX trunk) and both
/// registered soft clients at the same time.
async fn cvw30_uc_call_rings_desk_and_every_soft_client(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let call = bob.invite(ALICE, BOB, &[]);

    let desk = w.pbx.expect_invite(WAIT).await;
    assert_eq!(
        uri_user(&desk),
        ALICE_DESK,
        "desk leg goes to Alice's line number"
    );
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    assert_eq!(i1.headers.call_id(), call.call_id);
    assert_eq!(i2.headers.call_id(), call.call_id);
    // Per-branch headers of a parallel fork land on their own branch only; the proxy's
    // own timer plumbing (CVW-51) does not leak to the PBX.
    assert_eq!(desk.headers.get("X-CVW-Leg"), Some("desk"));
    assert_eq!(i1.headers.get("X-CVW-Leg"), None);
    assert_eq!(desk.headers.get("X-CVW-Ring-Timeout"), None);
    assert_eq!(desk.headers.get("X-CVW-Next-Hop"), None);
    assert!(
        i2.headers.get("Via").unwrap_or("").contains("SIP/2.0/TCP"),
        "TCP client reached over TCP"
    );

    // Clean up: the caller gives up; every branch is cancelled.
    w.caller_gives_up(&mut bob, &mut c1, &mut c2, Ringing { call, desk, i1, i2 })
        .await;
}

/// CVW-31 (and CVW-32, answered in a soft client): the first answer wins; the desk phone
/// and the other client get CANCEL with Reason "Call completed elsewhere".
async fn cvw31_first_answer_wins_others_cancelled_as_completed_elsewhere(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let Ringing {
        mut call,
        desk,
        i1,
        i2,
    } = w.ring_alice(&mut bob, &mut c1, &mut c2).await;

    c2.answer(&i2);
    let ok = bob.final_response(&mut call, WAIT).await;
    assert_eq!(ok.code, 200);
    assert!(
        ok.headers.get("To").unwrap_or("").contains("tag=alice-tcp"),
        "the TCP client's answer reached the caller"
    );
    let cd = w.pbx.expect_cancel(&desk, WAIT).await;
    assert_completed_elsewhere(&cd, "desk");
    let cc = c1.expect_cancel(&i1, WAIT).await;
    assert_completed_elsewhere(&cc, "alice-udp");

    // The session stays with the client that answered: the caller's BYE reaches it.
    let bye = async { c2.expect_bye(WAIT).await };
    let (_, b) = tokio::join!(bob.bye(&call), bye);
    assert_eq!(b.headers.call_id(), call.call_id);
}

/// CVW-32: answered on the desk phone — the soft clients stop ringing (CANCEL, completed
/// elsewhere), and the call is the voice call through the PBX trunk only.
async fn cvw32_answered_on_desk_stops_the_soft_clients(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    // All three ring before the desk answers: a branch whose 180 reached Kamailio only
    // after the 2xx was seen cancelled with `Reason: SIP;cause=200` and no text.
    let Ringing {
        mut call,
        desk,
        i1,
        i2,
    } = w.ring_alice(&mut bob, &mut c1, &mut c2).await;

    w.pbx.answer(&desk);
    let ok = bob.final_response(&mut call, WAIT).await;
    assert_eq!(ok.code, 200);
    assert!(
        ok.headers.get("To").unwrap_or("").contains("tag=pbx"),
        "the desk phone's answer reached the caller"
    );
    assert_completed_elsewhere(&c1.expect_cancel(&i1, WAIT).await, "alice-udp");
    assert_completed_elsewhere(&c2.expect_cancel(&i2, WAIT).await, "alice-tcp");

    let desk_bye = async { w.pbx.expect_bye(WAIT).await };
    let (_, b) = tokio::join!(bob.bye(&call), desk_bye);
    assert_eq!(
        b.headers.call_id(),
        call.call_id,
        "the hang-up reaches the desk leg"
    );
}

/// CVW-33: a call that comes from the PBX trunk to Alice rings only her desk phone.
async fn cvw33_pbx_originated_call_rings_only_the_desk(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut call = w
        .pbx
        .invite(ALICE, "sip:+14255550142@pbx.corp.example", &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    assert_eq!(uri_user(&desk), ALICE_DESK);
    assert!(
        c1.gets_request(Method::Invite, QUIET).await.is_none(),
        "UDP client must not ring for a PBX call"
    );
    assert!(
        c2.gets_request(Method::Invite, QUIET).await.is_none(),
        "TCP client must not ring for a PBX call"
    );
    w.pbx.reject(&desk, 486, "Busy Here");
    assert_eq!(w.pbx.final_response(&mut call, WAIT).await.code, 486);
}

/// CVW-34: the host's own callback legs (from its user agent, with its mark) are never
/// forked to the soft clients; the same mark from anyone else means nothing and is removed.
async fn cvw34_host_originated_legs_are_not_forked(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let target = format!("sip:{ALICE_DESK}@pbx.corp.example;user=phone");
    let mut call = w.host_ua.invite(
        &target,
        "sip:+14255550000@corp.example",
        &[("X-CVW-Origination", "callback")],
    );
    let desk = w.pbx.expect_invite(WAIT).await;
    assert_eq!(desk.headers.call_id(), call.call_id);
    assert_eq!(
        desk.headers.get("X-CVW-Origination"),
        None,
        "the host's mark does not leak to the PBX"
    );
    assert!(
        c1.gets_request(Method::Invite, QUIET).await.is_none(),
        "callback leg must not ring a soft client"
    );
    assert!(
        c2.gets_request(Method::Invite, QUIET).await.is_none(),
        "callback leg must not ring a soft client"
    );
    w.pbx.reject(&desk, 486, "Busy Here");
    assert_eq!(w.host_ua.final_response(&mut call, WAIT).await.code, 486);

    // A forged mark from a UC client is stripped and the call is treated as a UC call.
    let mut mallory = w.udp("mallory").await;
    let mut forged = mallory.invite(ALICE, BOB, &[("X-CVW-Origination", "callback")]);
    let i1 = c1.expect_invite(WAIT).await;
    assert_eq!(i1.headers.get("X-CVW-Origination"), None);
    let i2 = c2.expect_invite(WAIT).await;
    let desk = w.pbx.expect_invite(WAIT).await;
    mallory.cancel(&forged);
    w.pbx.expect_cancel(&desk, WAIT).await;
    c1.expect_cancel(&i1, WAIT).await;
    c2.expect_cancel(&i2, WAIT).await;
    assert_eq!(mallory.final_response(&mut forged, WAIT).await.code, 487);
}

/// CVW-51: the desk leg has its own ring timeout: it is cancelled before the PBX's
/// voicemail could answer, while the soft clients keep ringing and can still answer.
async fn cvw51_desk_leg_times_out_while_clients_ring_on(proxy: Proxy) {
    // The desk leg rings 2 s.
    let mut w = World::with_directory(proxy, "directory-desk-2s.toml").await;
    let mut c1 = w.udp("alice-udp").await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;

    let started = std::time::Instant::now();
    w.pbx.expect_cancel(&desk, WAIT).await;
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "desk cancelled too early ({after:?})"
    );
    // The client is still ringing: it was not cancelled, and its answer wins the call.
    client_answer_wins(
        &mut bob,
        &mut call,
        &c1,
        &i1,
        "after the desk leg timed out",
    )
    .await;
}

/// CVW-52: a policy published while a call rings does not lose that call, and the next
/// call is decided by the new generation.
async fn policy_hot_swap_while_calls_ring_loses_no_call(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let Ringing {
        mut call,
        desk,
        i1,
        i2,
    } = w.ring_alice(&mut bob, &mut c1, &mut c2).await;
    let (before, after) = w.swap_policy().await;
    assert!(after > before, "a new generation: {before} -> {after}");

    c1.answer(&i1);
    assert_eq!(
        bob.final_response(&mut call, WAIT).await.code,
        200,
        "the ringing call survives the swap"
    );
    w.pbx.expect_cancel(&desk, WAIT).await;
    c2.expect_cancel(&i2, WAIT).await;

    let Ringing {
        call: mut call2,
        desk: desk2,
        i1: j1,
        i2: j2,
    } = w.ring_alice(&mut bob, &mut c1, &mut c2).await;
    w.pbx.answer(&desk2);
    assert_eq!(
        bob.final_response(&mut call2, WAIT).await.code,
        200,
        "the next call is forked by the new policy"
    );
    c1.expect_cancel(&j1, WAIT).await;
    c2.expect_cancel(&j2, WAIT).await;
}

/// CVW-1: a user whose policy is not enabled gets plain routing: only the soft client
/// rings, never a desk leg.
async fn user_not_enabled_gets_plain_routing(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let mut carol = w.udp("carol-udp").await;
    carol.register("carol", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(CAROL, BOB, &[]);
    let i = carol.expect_invite(WAIT).await;
    carol.answer(&i);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
    assert!(
        w.pbx
            .gets_request(Method::Invite, Duration::from_millis(500))
            .await
            .is_none(),
        "no desk leg for Carol"
    );
}

/// A UC client that dials Alice at the proxy's own address (`sip:alice@<proxy>`) reaches
/// her registered clients: the proxy's addresses are its own domain, not a next hop (a
/// loop through the proxy would end in 483 Too Many Hops).
async fn call_to_the_proxy_address_reaches_the_user(proxy: Proxy) {
    let w = World::new(proxy).await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(&format!("sip:alice@{}", w.sip), BOB, &[]);
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    // Both ring before one answers, so that the other's CANCEL can follow its 180.
    bob.expect_ringing(2, WAIT).await;
    c2.answer(&i2);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
    c1.expect_cancel(&i1, WAIT).await;
}

/// CVW-42: taking over Alice's call from the UC side (Replaces) is refused with the
/// policy's code and its explanation in a Warning, and nothing rings.
async fn cvw42_replaces_from_the_uc_side_is_refused_with_a_reason(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let (mut c1, _c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(
        ALICE,
        BOB,
        &[("Replaces", "call-1@127.0.0.1;to-tag=a;from-tag=b")],
    );
    let refused = bob.final_response(&mut call, WAIT).await;
    assert!(
        (400..700).contains(&refused.code),
        "refused, not {}",
        refused.start_line()
    );
    let warning = refused.headers.get("Warning").unwrap_or("");
    assert!(
        warning.starts_with("399 cvw \"") && warning.len() > "399 cvw \"\"".len(),
        "the caller is told why: {warning:?}"
    );
    assert!(
        c1.gets_request(Method::Invite, Duration::from_millis(300))
            .await
            .is_none(),
        "a refused call rings no client"
    );
    assert!(
        w.pbx
            .gets_request(Method::Invite, Duration::from_millis(300))
            .await
            .is_none(),
        "a refused call rings no desk"
    );
}

per_proxy!(cvw30_uc_call_rings_desk_and_every_soft_client);
per_proxy!(cvw42_replaces_from_the_uc_side_is_refused_with_a_reason);
per_proxy!(call_to_the_proxy_address_reaches_the_user);
per_proxy!(cvw31_first_answer_wins_others_cancelled_as_completed_elsewhere);
per_proxy!(cvw32_answered_on_desk_stops_the_soft_clients);
per_proxy!(cvw33_pbx_originated_call_rings_only_the_desk);
per_proxy!(cvw34_host_originated_legs_are_not_forked);
per_proxy!(cvw51_desk_leg_times_out_while_clients_ring_on);
per_proxy!(policy_hot_swap_while_calls_ring_loses_no_call);
per_proxy!(user_not_enabled_gets_plain_routing);
