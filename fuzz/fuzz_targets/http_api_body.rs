//! The bodies the HTTP APIs read: the decision endpoint (`POST /{kamailio|opensips}/{hook}`,
//! OpenSIPS rest_client and Kamailio http_client) through its real axum router, the
//! click-to-call API's JSON bodies and events query as its extractors read them, and the
//! bearer token of the `Authorization` header.
//!
//! The first byte picks the endpoint; the rest is the body (or query, or header value).
//!
//! Properties: no panic escapes; the decision endpoint answers 200 with a proxy answer
//! that obeys the line and code rules, or 400/404 with a JSON error, never 500 (the
//! failure decision is always encodable here); a bearer token is a trimmed, non-empty
//! part of the header.
#![no_main]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use cvw::click_to_call::{EventsQuery, JoinMeeting, StartCall, auth};
use cvw::decision::DecisionService;
use cvw::decision::transport::http::router;
use cvw_fuzz::Echo;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::{Arc, LazyLock};
use tower::ServiceExt as _;

static ROUTER: LazyLock<Router> = LazyLock::new(|| router(DecisionService::new(Arc::new(Echo))));

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
}

const PATHS: [&str; 8] = [
    "/kamailio/route",
    "/kamailio/reply",
    "/kamailio/failure",
    "/opensips/route",
    "/opensips/reply",
    "/opensips/failure",
    "/opensips/nothing",
    "/freeswitch/route",
];

fuzz_target!(|data: &[u8]| cvw_fuzz::run(|| check(data)));

fn check(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 | 1 => decision_endpoint(PATHS[usize::from(pick / 4) % PATHS.len()], body),
        2 => {
            let _ = axum::Json::<StartCall>::from_bytes(body);
            let _ = axum::Json::<JoinMeeting>::from_bytes(body);
        }
        _ => {
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            if let Ok(uri) = format!("/v1/calls/c1/events?{text}").parse() {
                let _ = axum::extract::Query::<EventsQuery>::try_from_uri(&uri);
            }
            if let Some(token) = auth::bearer(Some(text)) {
                assert!(!token.is_empty() && token.trim() == token, "{token:?}");
                assert!(text.contains(token));
            }
        }
    }
}

fn decision_endpoint(path: &str, body: &[u8]) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let (status, answer) = RUNTIME.with(|rt| {
        rt.block_on(async {
            let response = ROUTER.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("an in-memory body");
            (status, bytes)
        })
    });
    let text = std::str::from_utf8(&answer).expect("the answer is UTF-8");
    match status {
        StatusCode::OK => cvw_fuzz::assert_json_answer(path, text),
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => {
            let v: Value = serde_json::from_str(text).expect("an error is JSON");
            let message = v.get("error").and_then(|e| e.get("message"));
            assert!(message.and_then(Value::as_str).is_some(), "{text}");
        }
        other => panic!("{path}: status {other}: {text}"),
    }
}
