//! Hot swap of policy modules (CVW-52): versions change under load without a failed
//! decision, and a module (or directory) that fails any publish step is refused with the
//! reason while the old version keeps serving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use cvw::message::SipRequest;
use cvw::policy::model::{Decision, RequestContext, Source, User};
use cvw::policy::{LoadError, PolicyHost, RuntimeSettings, StaticDirectory, builtin};

fn user(uc: &str, line: &str, enabled: bool) -> User {
    StaticDirectory::user(uc, line, enabled)
}

fn config() -> Vec<(String, String)> {
    [
        ("global_caller_id", "+14255550000"),
        ("pbx_trunk", "sip:127.0.0.1:5090"),
        ("pbx_domain", "pbx.corp.example"),
        ("desk_ring_timeout_ms", "15000"),
        ("pbx_voicemail_timeout_ms", "20000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn directory_with(users: Vec<User>, config: Vec<(String, String)>) -> Arc<StaticDirectory> {
    Arc::new(StaticDirectory::new(users, config))
}

fn directory() -> Arc<StaticDirectory> {
    directory_with(
        vec![
            user("sip:alice@corp.example", "tel:+14255550101", true),
            user("sip:bob@corp.example", "tel:+14255550102", false),
        ],
        config(),
    )
}

fn invite() -> SipRequest {
    SipRequest::builder("INVITE", "sip:alice@corp.example")
        .from("\"Bob\" <sip:bob@corp.example>;tag=1")
        .to("<sip:alice@corp.example>")
        .call_id("swap-1@127.0.0.1")
        .build()
        .unwrap()
}

fn uc() -> RequestContext {
    RequestContext {
        source: Source::Uc,
        contacts: vec![],
    }
}

fn office_hours() -> Vec<u8> {
    std::fs::read(builtin::OFFICE_HOURS_PATH).unwrap()
}

fn host_with_default() -> PolicyHost {
    let host = PolicyHost::new(RuntimeSettings::default()).unwrap();
    host.publish(
        builtin::default_policy().unwrap(),
        builtin::DEFAULT_ORIGIN,
        directory(),
    )
    .unwrap();
    host
}

/// CVW-52: 3 threads decide in a loop while 12 swaps alternate two policies: no decision
/// fails, each names its version, and a thread never sees an older version after a newer.
#[test]
fn swap_under_load_loses_no_decision() {
    let host = host_with_default();
    let office_hours = office_hours();
    let default = builtin::default_policy().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(4));
    // Decisions made so far, per worker: the swaps wait for progress, not for a fixed time,
    // so a busy machine that deschedules a worker slows the test instead of failing it.
    let made: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let workers: Vec<_> = (0..3)
        .map(|worker| {
            let (host, stop, start, made) =
                (host.clone(), stop.clone(), start.clone(), made.clone());
            thread::spawn(move || {
                let (req, ctx) = (invite(), uc());
                let (mut calls, mut last_generation, mut failed) = (0u64, 0u64, 0u64);
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let outcome = host.on_request(&req, &ctx);
                    failed += u64::from(outcome.failure.is_some());
                    assert!(
                        outcome.generation >= last_generation,
                        "went back to an older version"
                    );
                    assert!(outcome.generation > 0, "an outcome without a version");
                    last_generation = outcome.generation;
                    calls += 1;
                    made[worker].fetch_add(1, Ordering::Relaxed);
                }
                (calls, failed, last_generation)
            })
        })
        .collect();
    start.wait();
    for swap in 0..12 {
        let (wasm, origin) = if swap % 2 == 0 {
            (&office_hours[..], "office-hours")
        } else {
            (default, "default")
        };
        let version = host.publish(wasm, origin, directory()).unwrap();
        assert_eq!(version.generation, swap + 2);
        // Two more decisions per worker: at least one of them started after the publish.
        wait_for_decisions(&made, 2);
    }
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let calls: u64 = results.iter().map(|r| r.0).sum();
    let failed: u64 = results.iter().map(|r| r.1).sum();
    eprintln!("{calls} decisions during 12 swaps, {failed} failed");
    assert_eq!(failed, 0, "failures: {:?}", host.metrics().failures);
    assert!(
        results.iter().all(|r| r.2 == 13),
        "every thread ends on the last version: {results:?}"
    );
    assert_eq!(host.metrics().total_failures(), 0);
    assert_eq!(host.metrics().swaps, 13);
}

/// Waits until every worker has made `more` decisions beyond what it had made now.
fn wait_for_decisions(made: &[AtomicU64; 3], more: u64) {
    let now: Vec<u64> = made.iter().map(|m| m.load(Ordering::Relaxed)).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while made
        .iter()
        .zip(&now)
        .any(|(m, before)| m.load(Ordering::Relaxed) < before + more)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a worker made no decision for 30 s"
        );
        thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn assert_still_serving(host: &PolicyHost, before: &cvw::policy::PolicyVersion) {
    assert_eq!(
        host.current().as_ref(),
        Some(before),
        "the old version must stay current"
    );
    let outcome = host.on_request(&invite(), &uc());
    assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
    assert_eq!(outcome.generation, before.generation);
    assert!(
        matches!(outcome.value, Decision::Fork(_)),
        "{:?}",
        outcome.value
    );
}

#[test]
fn garbage_bytes_are_refused_and_the_old_version_keeps_serving() {
    let host = host_with_default();
    let before = host.current().unwrap();
    let err = host
        .publish(b"\0asm but not really", "garbage.wasm", directory())
        .unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(
        err.to_string().starts_with("garbage.wasm: "),
        "names the module: {err}"
    );
    assert_still_serving(&host, &before);
    assert_eq!(host.metrics().refused_loads, 1);
}

#[test]
fn a_configuration_the_policy_refuses_keeps_the_old_version() {
    let host = host_with_default();
    let before = host.current().unwrap();
    let without_caller_id: Vec<_> = config()
        .into_iter()
        .filter(|(k, _)| k != "global_caller_id")
        .collect();
    let users = vec![user("sip:alice@corp.example", "tel:+14255550101", true)];
    let err = host
        .publish(
            &office_hours(),
            "office-hours",
            directory_with(users, without_caller_id),
        )
        .unwrap_err();
    assert_eq!(err.step(), "configure", "{err}");
    assert!(
        err.to_string().contains("global_caller_id"),
        "names the key: {err}"
    );
    assert_still_serving(&host, &before);
}

/// CVW-4: a user enabled for Call via Work without a desk phone number is refused at
/// load, naming the user; the running version is untouched.
#[test]
fn a_user_the_policy_refuses_keeps_the_old_version() {
    let host = host_with_default();
    let before = host.current().unwrap();
    let mut carol = user("sip:carol@corp.example", "tel:+14255550103", true);
    carol.line_uri = None;
    let err = host
        .republish_with(directory_with(vec![carol], config()))
        .unwrap_err();
    match &err {
        LoadError::CheckUser { user, .. } => assert_eq!(user, "sip:carol@corp.example"),
        other => panic!("expected a check-user refusal, got {other}"),
    }
    assert_still_serving(&host, &before);
}

#[test]
fn republishing_for_a_new_directory_keeps_the_module() {
    let host = host_with_default();
    let before = host.current().unwrap();
    let after = host.republish_with(directory()).unwrap();
    assert_eq!(after.generation, before.generation + 1);
    assert_eq!(after.digest, before.digest);
    assert_eq!(
        host.on_request(&invite(), &uc()).generation,
        after.generation
    );
}
