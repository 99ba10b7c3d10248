//! What only the in-proxy modules have: a policy that traps or loops inside a Kamailio
//! worker, swaps over Kamailio's RPC (a corrupt module refused), and a policy file
//! changed on disk, the call log; for OpenSIPS' `cvw.so`, a misbehaving and a corrupt
//! policy file put in place under it. The modules' share of the call flows is every body
//! of `ring.rs`, `hooks.rs` and `sipp.rs` (`per_proxy!`, `kamailio_module`,
//! `opensips_module`).

use super::*;

async fn module_world() -> World {
    World::new(Proxy::KamailioModule).await
}

/// A call to `user` that the policy cannot decide is routed plain: the user's registered
/// client rings and answers.
async fn routed_plain(w: &World, user: &str) {
    let mut client = w.udp(user).await;
    client.register(user, DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(&format!("sip:{user}@{DOMAIN}"), BOB, &[]);
    let invite = client.expect_invite(WAIT).await;
    client.answer(&invite);
    assert_eq!(
        bob.final_response(&mut call, WAIT).await.code,
        200,
        "{user}: the call is routed without Call via Work"
    );
}

/// A policy that traps, loops or exhausts its memory inside a Kamailio worker: each call
/// gets the failure mode's decision (open: routed plain), and Kamailio keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_traps_or_loops_never_takes_a_worker_down() {
    let w = module_world().await;
    let workers = w.kamailio().pids().len();
    let path = builtin::MISBEHAVING_PATH;
    let swapped = w.kamailio().rpc(&["cvw.swap", path]).unwrap();
    assert!(swapped.contains("published"), "{swapped}");
    for user in ["trap", "loop", "bomb", "trap"] {
        routed_plain(&w, user).await;
    }
    assert_eq!(
        w.kamailio().pids().len(),
        workers,
        "no Kamailio process died"
    );
    let log = w.kamailio().log();
    assert!(
        log.contains("Trap") || log.contains("trap"),
        "the trap is logged"
    );
}

/// A corrupt module sent with `kamcmd cvw.swap` is refused with the step that refused
/// it; the generation stays and calls are still forked by the old policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_module_is_refused_over_rpc_and_the_old_one_keeps_serving() {
    let mut w = module_world().await;
    let before = w.module_generation();
    let corrupt = w.directory().with_file_name("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x0d\0\x01\0 not a component").unwrap();
    let refused = w
        .kamailio()
        .rpc(&["cvw.swap", &corrupt.display().to_string()])
        .unwrap();
    assert!(
        refused.contains("error: 500") && refused.contains("refused at compile"),
        "kamcmd shows the fault with the step: {refused}"
    );
    assert_eq!(w.module_generation(), before, "the generation stays");

    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    w.caller_gives_up(&mut bob, &mut c1, &mut c2, Ringing { call, desk, i1, i2 })
        .await;
}

/// The policy file changed on disk (an operator copied a new version over it): the module
/// publishes it as a new generation by itself, and `cvw.status` shows the workers that
/// took a call since running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_changed_on_disk_becomes_the_next_generation() {
    let w = module_world().await;
    let before = w.module_generation();
    let office_hours = std::fs::read(builtin::OFFICE_HOURS_PATH).unwrap();
    let tmp = w.policy_file().with_extension("new");
    std::fs::write(&tmp, office_hours).unwrap();
    std::fs::rename(&tmp, w.policy_file()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.module_generation() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no new generation 10 s after the file changed:\n{}",
            w.kamailio().log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = w.module_generation();
    routed_or_forked_by(&w, after).await;
}

/// A call decided after a swap is decided by generation `generation`: the worker that took
/// it says so in `cvw.status`.
async fn routed_or_forked_by(w: &World, generation: u64) {
    let mut carol = w.udp("carol-udp").await;
    carol.register("carol", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(CAROL, BOB, &[]);
    let i = carol.expect_invite(WAIT).await;
    carol.answer(&i);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
    let status = w.kamailio().rpc(&["cvw.status"]).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.contains(&format!("generation {generation} sha256 "))
                && !l.contains("calls 0 ")),
        "a worker that took a call runs generation {generation}:\n{status}"
    );
}

/// The call log's records once there are `n` (waits up to 5 s).
async fn call_log(w: &World, n: usize) -> Vec<serde_json::Value> {
    let path = w.directory().with_file_name("calls.jsonl");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records.len() >= n {
            return records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} call records after 5 s, expected {n}:\n{}",
            records.len(),
            w.kamailio().log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A call log that cannot be written (here its path is a directory) costs no call: the
/// call rings and connects as always, and each lost record is logged, counted, never
/// silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_call_log_loses_no_call_and_says_so() {
    let mut w = module_world().await;
    std::fs::create_dir_all(w.directory().with_file_name("calls.jsonl")).unwrap();
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let Ringing {
        mut call,
        desk,
        i1,
        i2,
    } = w.ring_alice(&mut bob, &mut c1, &mut c2).await;
    w.pbx.reject(&desk, 486, "Busy Here");
    c1.reject(&i1, 486, "Busy Here");
    c2.reject(&i2, 486, "Busy Here");
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 486);
    let deadline = std::time::Instant::now() + WAIT;
    while !w
        .kamailio()
        .log()
        .contains("call record not written (1 lost")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lost record is not logged:\n{}",
            w.kamailio().log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The call log (CVW-50) has a record of each forked call, also one answered on the desk
/// phone: who rang, who answered, why the others stopped, when it connected and ended
/// (the dialog module says when), and the policy generation that decided it; written by
/// `cvw.so`, or by the host from what Kamailio tells it over evapi.
async fn the_call_log_has_calls_answered_on_the_desk_and_in_a_client(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;

    let Ringing {
        call: mut on_desk,
        desk,
        i1,
        i2,
    } = w.ring_alice(&mut bob, &mut c1, &mut c2).await;
    w.pbx.answer(&desk);
    assert_eq!(bob.final_response(&mut on_desk, WAIT).await.code, 200);
    c1.expect_cancel(&i1, WAIT).await;
    c2.expect_cancel(&i2, WAIT).await;
    let bye = async { w.pbx.expect_bye(WAIT).await };
    tokio::join!(bob.bye(&on_desk), bye);

    let Ringing {
        call: mut in_client,
        desk,
        i1,
        i2,
    } = w.ring_alice(&mut bob, &mut c1, &mut c2).await;
    c2.answer(&i2);
    assert_eq!(bob.final_response(&mut in_client, WAIT).await.code, 200);
    w.pbx.expect_cancel(&desk, WAIT).await;
    c1.expect_cancel(&i1, WAIT).await;
    // Only the first call has ended.
    let records = call_log(&w, 1).await;
    let desk_call = &records[0];
    assert_eq!(desk_call["id"], on_desk.call_id.as_str());
    assert_eq!(desk_call["kind"], "simultaneous-ring");
    assert_eq!(desk_call["user"], ALICE);
    assert_eq!(desk_call["outcome"]["result"], "answered-desk");
    assert!(
        desk_call["outcome"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("Answered on the desk phone."),
        "{desk_call}"
    );
    let legs = desk_call["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 3, "{desk_call}");
    assert_eq!(legs[0]["label"], "desk");
    assert_eq!(legs[0]["sip_code"], 200);
    for client in &legs[1..] {
        assert_eq!(client["label"], "client");
        assert_eq!(client["cancel_reason"], "Call completed elsewhere");
    }
    if proxy == Proxy::KamailioModule {
        assert_eq!(desk_call["policy_generation"], w.module_generation());
    } else {
        assert_eq!(desk_call["policy_generation"], 1);
    }
    assert!(desk_call["ended_ms"].as_u64() >= desk_call["connected_ms"].as_u64());

    // The second is logged once it ends too.
    let bye = async { c2.expect_bye(WAIT).await };
    tokio::join!(bob.bye(&in_client), bye);
    let records = call_log(&w, 2).await;
    let client_call = &records[1];
    assert_eq!(client_call["id"], in_client.call_id.as_str());
    assert_eq!(client_call["outcome"]["result"], "answered-client");
    assert!(client_call["ended_ms"].as_u64() >= client_call["connected_ms"].as_u64());
    let legs = client_call["legs"].as_array().unwrap();
    assert_eq!(legs[0]["cancel_reason"], "Call completed elsewhere");
}

per_proxy!(
    the_call_log_has_calls_answered_on_the_desk_and_in_a_client,
    [kamailio_evapi, kamailio_module]
);

/// OpenSIPS' `cvw.so` with a policy that traps, loops or exhausts its memory in its
/// workers: each call gets the failure mode's decision (open: routed plain), and no
/// OpenSIPS process dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensips_module_survives_a_policy_that_traps_or_loops() {
    let w = World::new(Proxy::OpenSipsModule).await;
    let processes = w.opensips().pids().len();
    let misbehaving = std::fs::read(builtin::MISBEHAVING_PATH).unwrap();
    let (before, after) = w.replace_policy_file(&misbehaving).await;
    assert!(after > before, "published:\n{}", w.opensips().log_tail());
    for user in ["trap", "loop", "bomb", "trap"] {
        routed_plain(&w, user).await;
    }
    assert_eq!(
        w.opensips().pids().len(),
        processes,
        "no OpenSIPS process died"
    );
    let log = w.opensips().log();
    assert!(
        log.contains("Trap") || log.contains("trap"),
        "the trap is logged"
    );
}

/// A corrupt policy file put in place under OpenSIPS' `cvw.so` is refused with the step
/// that refused it; the generation stays and calls are still forked by the old policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensips_module_refuses_a_corrupt_policy_file_and_keeps_serving() {
    let mut w = World::new(Proxy::OpenSipsModule).await;
    let (before, after) = w
        .replace_policy_file(b"\0asm\x0d\0\x01\0 not a component")
        .await;
    assert_eq!(after, before, "the generation stays");
    assert!(
        w.opensips().log().contains("refused at compile"),
        "the log names the step:\n{}",
        w.opensips().log_tail()
    );
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let ringing = w.ring_alice(&mut bob, &mut c1, &mut c2).await;
    w.caller_gives_up(&mut bob, &mut c1, &mut c2, ringing).await;
}
