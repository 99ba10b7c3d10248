//! A hostile policy built against the WIT, as a proxy and an operator meet it: decisions
//! out of bounds (a fork of 10 000 targets, a 5 MB reason, a URI that adds a name-addr)
//! are answered on the HTTP decision path with the operator's failure decision, never
//! passed on; a `configure` that panics is reported as a trap of `configure`. Uses the
//! misbehaving fixture (`tests/fixtures/misbehaving-policy`).

use std::sync::Arc;

use base64::Engine as _;
use cvw::decision::DecisionService;
use cvw::policy::model::Reply;
use cvw::policy::{
    FailureKind, FailureMode, LoadError, PolicyHost, RuntimeSettings, StaticDirectory, builtin,
};
use serde_json::json;

fn closed_host() -> PolicyHost {
    let settings = RuntimeSettings {
        failure_mode: FailureMode::Closed(Reply {
            code: 503,
            reason: "Policy Unavailable".into(),
            headers: vec![],
        }),
        ..RuntimeSettings::default()
    };
    PolicyHost::new(settings).unwrap()
}

fn misbehaving() -> Vec<u8> {
    std::fs::read(builtin::MISBEHAVING_PATH).unwrap()
}

fn invite_b64(user: &str) -> String {
    let invite = format!(
        "INVITE sip:{user}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{user}\r\n\
         From: <sip:bob@corp.example>;tag=1\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: hostile-{user}\r\n\
         CSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    base64::engine::general_purpose::STANDARD.encode(invite)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_out_of_bounds_get_the_failure_decision_over_http() {
    let host = closed_host();
    host.publish(
        &misbehaving(),
        "misbehaving",
        Arc::new(StaticDirectory::default()),
    )
    .unwrap();
    let service = DecisionService::new(Arc::new(host.clone()))
        .start(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
    let http = service.http.to_string();
    for user in ["huge-fork", "long-reason", "inject"] {
        let body = json!({ "msg": invite_b64(user), "source": "uc" });
        let (status, doc) =
            cvw_testkit::http::send(&http, "POST", "/kamailio/route", None, Some(body)).await;
        assert_eq!(status, 200, "{user}: {doc}");
        assert_eq!(
            (&doc["action"], &doc["code"], &doc["reason"]),
            (&json!("reply"), &json!(503), &json!("Policy Unavailable")),
            "{user}: the failure decision, not the policy's"
        );
    }
    // The same host still serves a policy decision that is within bounds.
    let body = json!({ "msg": invite_b64("alice"), "source": "uc" });
    let (_, doc) =
        cvw_testkit::http::send(&http, "POST", "/kamailio/route", None, Some(body)).await;
    assert_eq!(doc["action"], "relay", "{doc}");
    assert_eq!(host.metrics().failures[&FailureKind::InvalidDecision], 3);
    service.stop().await;
}

/// A panic in `configure` (std's panic path calls WASI the policy is not granted) is a
/// trap of `configure`, not a refusal nor a link error about an unknown import.
#[test]
fn a_panic_in_configure_is_reported_as_a_trap() {
    let host = closed_host();
    let config = vec![("panic".to_owned(), "yes".to_owned())];
    let err = host
        .publish(
            &misbehaving(),
            "misbehaving",
            Arc::new(StaticDirectory::new(vec![], config)),
        )
        .unwrap_err();
    assert!(matches!(err, LoadError::Trap { .. }), "{err}");
    assert_eq!(err.step(), "configure");
    let text = err.to_string();
    assert!(
        text.starts_with("misbehaving: configure trapped: "),
        "{text}"
    );
    assert!(
        !text.contains("unknown import") && text.contains("when it panics"),
        "{text}"
    );
}
