//! The click-to-call API (CVW-10..15, CVW-20/21, CVW-50) over real HTTP on loopback,
//! with the default policy deciding and a scripted originator standing in for the SIP
//! user agent: authentication, the own-line rule, refusals with their reason, limits, the
//! event feed, hang-up, and the call log.

use cvw_testkit as support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cvw::calllog::MemorySink;
use cvw::click_to_call::auth::Tokens;
use cvw::click_to_call::calls::Calls;
use cvw::click_to_call::limits::{LimitSettings, Limits};
use cvw::click_to_call::{Api, router};
use cvw::directory::Directory;
use cvw::origination::{CallControl, CallState, OriginateError, Originator, Side};
use cvw::policy::model::{Flow, OriginationPlan};
use cvw::policy::{PolicyHost, RuntimeSettings, builtin};
use serde_json::{Value, json};
use support::http::states;
use tokio::sync::{mpsc, oneshot};

const ALICE_TOKEN: &str = "alice-token";
const DAVE_TOKEN: &str = "dave-token";

/// Plays a call: rings the callback leg, and either ends the way the test scripted or,
/// for `Script::Connect`, connects and waits for a hang-up.
#[derive(Clone, Copy)]
enum Script {
    CallbackBusy,
    Connect,
}

struct ScriptedOriginator {
    script: Script,
    plans: Mutex<Vec<OriginationPlan>>,
}

impl Originator for ScriptedOriginator {
    fn start(&self, _id: &str, plan: &OriginationPlan) -> Result<CallControl, OriginateError> {
        self.plans.lock().unwrap().push(plan.clone());
        let (tx, states) = mpsc::channel(8);
        let (hangup, hung_up) = oneshot::channel::<()>();
        let script = self.script;
        tokio::spawn(async move {
            let _ = tx.send(CallState::RingingCallback).await;
            match script {
                Script::CallbackBusy => {
                    let _ = tx
                        .send(CallState::Ended {
                            result: "callback-busy".into(),
                            reason: "your phone was busy; the callee was not called".into(),
                            sip_code: Some(486),
                            side: Side::Callback,
                        })
                        .await;
                }
                Script::Connect => {
                    for s in [
                        CallState::CallbackAnswered,
                        CallState::RingingCallee,
                        CallState::Connected,
                    ] {
                        let _ = tx.send(s).await;
                    }
                    let _ = hung_up.await;
                    let _ = tx
                        .send(CallState::Ended {
                            result: "completed".into(),
                            reason: "hung up by the requester".into(),
                            sip_code: None,
                            side: Side::Requester,
                        })
                        .await;
                }
            }
        });
        Ok(CallControl {
            states: states.into(),
            hangup: hangup.into(),
        })
    }
}

struct Harness {
    base: String,
    originator: Arc<ScriptedOriginator>,
    log: Arc<MemorySink>,
    /// Stops the API when the test ends.
    _stop: cvw::shutdown::ShutdownTrigger,
}

impl Harness {
    async fn start(script: Script, limits: LimitSettings) -> Self {
        Self::with_call_log(script, limits, None).await
    }

    /// Logging into `call_log` instead of the harness's memory.
    async fn with_call_log(
        script: Script,
        limits: LimitSettings,
        call_log: Option<Arc<dyn cvw::calllog::CallLogSink>>,
    ) -> Self {
        let directory = Directory::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/directory.toml"),
        )
        .unwrap();
        let policy = PolicyHost::new(RuntimeSettings::default()).unwrap();
        policy
            .publish(
                builtin::default_policy().unwrap(),
                builtin::DEFAULT_ORIGIN,
                Arc::new(directory),
            )
            .unwrap();
        let originator = Arc::new(ScriptedOriginator {
            script,
            plans: Mutex::new(Vec::new()),
        });
        let log = Arc::new(MemorySink::default());
        let api = Arc::new(Api {
            policy,
            originator: originator.clone(),
            tokens: two_users(),
            throttle: cvw::click_to_call::throttle::AuthThrottle::new(Default::default()),
            limits: Arc::new(Limits::new(limits)),
            calls: Arc::new(Calls::default()),
            call_log: call_log.unwrap_or_else(|| log.clone()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = listener.local_addr().unwrap().to_string();
        // Through the API's own front door, with its default limits.
        let (stop, signal) = cvw::shutdown::Shutdown::new();
        tokio::spawn(cvw::click_to_call::transport::serve(
            listener,
            router(api),
            Default::default(),
            signal,
        ));
        Self {
            base,
            originator,
            log,
            _stop: stop,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        support::http::send(&self.base, method, path, token, body).await
    }

    /// `POST /v1/calls` to `destination` with `token`.
    async fn click_to_call(&self, token: Option<&str>, destination: &str) -> (u16, Value) {
        let body = json!({ "destination": destination });
        self.call("POST", "/v1/calls", token, Some(body)).await
    }

    /// Follow the feed until `ended`, as a requester would.
    /// Alice hangs up call `id` (202); its events to the end.
    async fn hang_up(&self, id: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                "DELETE",
                &format!("/v1/calls/{id}"),
                Some(ALICE_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 202, "hang up {id}: {body}");
        self.follow(id).await
    }

    async fn follow(&self, id: &str) -> Vec<Value> {
        support::http::follow(&self.base, ALICE_TOKEN, id).await
    }
}

/// Alice and Dave, each with their own token.
fn two_users() -> Tokens {
    let text = format!(
        "[[tokens]]\nuser = \"sip:alice@corp.example\"\nsha256 = \"{}\"\n\
         [[tokens]]\nuser = \"sip:dave@corp.example\"\nsha256 = \"{}\"\n",
        cvw::click_to_call::auth::hash_hex(ALICE_TOKEN),
        cvw::click_to_call::auth::hash_hex(DAVE_TOKEN)
    );
    Tokens::parse(&text, Path::new("tokens.toml")).unwrap()
}

#[tokio::test]
async fn without_a_valid_token_nothing_is_placed() {
    let h = Harness::start(Script::Connect, LimitSettings::default()).await;
    for token in [None, Some("wrong-token")] {
        let (status, body) = h.click_to_call(token, "+14255550142").await;
        assert_eq!(status, 401, "{body}");
    }
    assert!(h.originator.plans.lock().unwrap().is_empty());
}

// CVW-10, CVW-11, CVW-14: the call is placed from the token's user, the feed shows every
// state, hang-up ends it, and the call log has it (CVW-50).
#[tokio::test]
async fn click_to_call_follows_states_hangs_up_and_is_logged() {
    let h = Harness::start(Script::Connect, LimitSettings::default()).await;
    let (status, body) = h.click_to_call(Some(ALICE_TOKEN), "+14255550142").await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let plan = h.originator.plans.lock().unwrap()[0].clone();
    assert_eq!(plan.user, "sip:alice@corp.example");
    assert_eq!(plan.flow, Flow::FlowIv);
    // Callback leg shows the global caller ID (CVW-2), the callee sees Alice (CVW-11).
    assert!(plan.callback.shows.uri.contains("+14255550000"), "{plan:?}");
    assert!(plan.callee.shows.uri.contains("+14255550101"), "{plan:?}");

    // Wait until connected, then hang up.
    for _ in 0..50 {
        let (_, snap) = h
            .call("GET", &format!("/v1/calls/{id}"), Some(ALICE_TOKEN), None)
            .await;
        if snap["state"]["state"] == "connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = h.hang_up(&id).await;
    assert_eq!(
        states(&events),
        [
            "ringing-callback",
            "callback-answered",
            "ringing-callee",
            "connected",
            "ended"
        ]
    );
    assert_eq!(events[4]["result"], "completed");

    let records = wait_for_records(&h, 1).await;
    assert_eq!(records[0].id, id);
    assert_eq!(records[0].user, "sip:alice@corp.example");
    assert!(records[0].connected_ms.is_some());
    assert!(records[0].policy_generation >= 1);
    assert!(!records[0].policy_digest.is_empty());
}

// Issue 11: the call log's disk full (/dev/full fails every write with ENOSPC): calls go on
// being placed and ended, and each lost record is counted.
#[tokio::test]
async fn a_full_call_log_disk_loses_no_call_and_counts_the_lost_records() {
    let full = Arc::new(cvw::calllog::JsonLinesFile::open(Path::new("/dev/full")).unwrap());
    let limits = LimitSettings {
        max_concurrent: 10,
        ..LimitSettings::default()
    };
    let h = Harness::with_call_log(Script::Connect, limits, Some(full.clone())).await;
    for n in 1..=3u64 {
        let (status, body) = h.click_to_call(Some(ALICE_TOKEN), "+14255550142").await;
        assert_eq!(status, 201, "call {n}: {body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let events = h.hang_up(&id).await;
        assert_eq!(states(&events).last().copied(), Some("ended"), "call {n}");
        for _ in 0..100 {
            if full.lost() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(full.lost(), n, "call {n}'s record counted as lost");
    }
}

async fn wait_for_records(h: &Harness, n: usize) -> Vec<cvw::calllog::CallRecord> {
    for _ in 0..100 {
        let records = h.log.records();
        if records.len() >= n {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("call log has {} records, wanted {n}", h.log.records().len());
}

// CVW-13: a busy callback leg ends the call with the SIP code, visible in the feed and log.
#[tokio::test]
async fn busy_callback_ends_with_the_sip_code() {
    let h = Harness::start(Script::CallbackBusy, LimitSettings::default()).await;
    let (status, body) = h.click_to_call(Some(ALICE_TOKEN), "+14255550142").await;
    assert_eq!(status, 201, "{body}");
    let events = h.follow(body["id"].as_str().unwrap()).await;
    assert_eq!(states(&events), ["ringing-callback", "ended"]);
    assert_eq!(events[1]["sip_code"], 486);
    let records = wait_for_records(&h, 1).await;
    assert_eq!(records[0].outcome.result, "callback-busy");
    assert_eq!(records[0].legs[0].sip_code, Some(486));
    assert_eq!(
        records[0].legs[1].sip_code, None,
        "the callee was never dialled"
    );
}

// CVW-15: emergency numbers are refused with a message telling the user what to do.
#[tokio::test]
async fn emergency_number_is_refused_with_a_reason() {
    let h = Harness::start(Script::Connect, LimitSettings::default()).await;
    let (status, body) = h.click_to_call(Some(ALICE_TOKEN), "911").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "refused");
    assert_eq!(body["error"]["rule"], "CVW-15");
    let message = body["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(
        message.contains("desk phone") || message.contains("phone"),
        "{message}"
    );
    assert!(h.originator.plans.lock().unwrap().is_empty());
}

// CVW-15: the concurrency limit stops a third call while two are up, and frees the slot
// when one ends.
#[tokio::test]
async fn concurrency_limit_obeyed_and_violated() {
    let limits = LimitSettings {
        calls_per_window: 100,
        window_s: 60,
        max_concurrent: 2,
    };
    let h = Harness::start(Script::Connect, limits).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, body) = h.click_to_call(Some(ALICE_TOKEN), "+14255550142").await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = h.click_to_call(Some(ALICE_TOKEN), "+14255550142").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "limit");

    h.call(
        "DELETE",
        &format!("/v1/calls/{}", ids[0]),
        Some(ALICE_TOKEN),
        None,
    )
    .await;
    h.follow(&ids[0]).await;
    wait_for_records(&h, 1).await;
    let (status, body) = h.click_to_call(Some(ALICE_TOKEN), "+14255550142").await;
    assert_eq!(status, 201, "{body}");
}

// CVW-20: joining a meeting dials out to Alice's callback number, then the conference.
#[tokio::test]
async fn meeting_join_dials_out_to_the_callback_number() {
    let h = Harness::start(Script::CallbackBusy, LimitSettings::default()).await;
    let (status, body) = h
        .call(
            "POST",
            "/v1/meetings/join",
            Some(ALICE_TOKEN),
            Some(json!({"conference_uri": "sip:conf-1234@meet.corp.example"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let plan = h.originator.plans.lock().unwrap()[0].clone();
    assert!(
        plan.callback.uri.contains("14255550199"),
        "Alice's own callback number: {plan:?}"
    );
    assert_eq!(plan.callee.uri, "sip:conf-1234@meet.corp.example");
    assert_eq!(plan.flow, Flow::FlowI);
}

#[tokio::test]
async fn another_users_call_is_not_found() {
    let h = Harness::start(Script::Connect, LimitSettings::default()).await;
    let (_, body) = h.click_to_call(Some(ALICE_TOKEN), "+14255550142").await;
    let id = body["id"].as_str().unwrap();
    // Dave cannot see, follow or hang up Alice's call; to him it does not exist.
    for (method, path) in [
        ("GET", format!("/v1/calls/{id}")),
        ("GET", format!("/v1/calls/{id}/events")),
        ("DELETE", format!("/v1/calls/{id}")),
    ] {
        let (status, _) = h.call(method, &path, Some(DAVE_TOKEN), None).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _) = h
        .call("GET", &format!("/v1/calls/{id}"), Some(ALICE_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = h
        .call("GET", "/v1/calls/0000", Some(ALICE_TOKEN), None)
        .await;
    assert_eq!(status, 404);
}
