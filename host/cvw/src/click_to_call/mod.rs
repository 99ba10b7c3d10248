//! The click-to-call and conference API (CVW-10..15, CVW-20..22), in the spirit of UCWA:
//! start a call, follow its states through a long-poll event feed, hang up.
//!
//! The users' API (`[api]` in the serve configuration, each user with a token of their
//! own), named for what it does so it is not confused with [`crate::admin`], the
//! operator's API; joining a meeting is click to call to a conference.
//!
//! Owns authentication (per-user tokens), authorisation (the user comes from the token;
//! the policy decides what they may call), limits, and the list of calls. Does not place
//! calls itself: an [`Originator`] does, and the policy decides the plan. Every call that
//! ends is written to the call log (CVW-50). The OpenAPI document is `docs/openapi.yaml`.

pub mod auth;
pub mod calls;
pub mod limits;
pub mod throttle;
pub mod transport;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::calllog::{CallKind, CallLogSink};
use crate::origination::Originator;
use crate::policy::PolicyHost;
use crate::policy::model::{ClickToCall, Decision, DialOut, MeetingKind, OriginationPlan};
use auth::Tokens;
use calls::{Call, Calls, StartedCall};
use limits::{LimitExceeded, Limits};
use throttle::AuthThrottle;

/// Everything the API handlers share.
pub struct Api {
    pub policy: PolicyHost,
    pub originator: Arc<dyn Originator>,
    pub tokens: Tokens,
    /// Slows down sources that keep presenting bad tokens.
    pub throttle: AuthThrottle,
    pub limits: Arc<Limits>,
    pub calls: Arc<Calls>,
    pub call_log: Arc<dyn CallLogSink>,
}

/// The API's routes, for `axum::serve` or a test server.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/calls", post(start_call))
        .route("/v1/calls/{id}", get(show_call).delete(hang_up))
        .route("/v1/calls/{id}/events", get(events))
        .route("/v1/meetings/join", post(join_meeting))
        .route("/v1/meetings/meet-now", post(meet_now))
        .route("/v1/openapi.yaml", get(openapi))
        .with_state(api)
}

/// `POST /v1/calls`: the user asks to call `destination` (CVW-10).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartCall {
    pub destination: String,
    /// A callback number for this call only; the policy decides whether it is allowed.
    #[serde(default)]
    pub callback: Option<String>,
}

/// `POST /v1/meetings/join` and `/v1/meetings/meet-now` (CVW-20, CVW-21).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinMeeting {
    pub conference_uri: String,
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Return events after this sequence number (0 = from the start).
    #[serde(default)]
    pub since: usize,
    /// Wait up to this many seconds for a new event (at most 30).
    #[serde(default)]
    pub wait_s: u64,
}

/// An API error: HTTP status, a stable code and a sentence for the person.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sip_code: Option<u16>,
    /// Sent as `Retry-After`.
    #[serde(skip)]
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            rule: None,
            sip_code: None,
            retry_after_s: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": &self }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Who asks: the `Authorization` header and the peer's address (set by
/// [`transport::serve`]; absent under another server, where all requests count as one
/// source).
pub struct Caller {
    authorization: Option<HeaderValue>,
    source: Option<IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            authorization: parts.headers.get(header::AUTHORIZATION).cloned(),
            source: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip()),
        })
    }
}

/// The caller's user, from their token. A source that sent too many bad tokens gets 429
/// without its token being looked at. Neither the token nor its hash is ever logged.
fn authenticate<'a>(api: &'a Api, caller: &Caller) -> Result<&'a str, ApiError> {
    let now = Instant::now();
    if let Err(retry) = api.throttle.check(caller.source, now) {
        let retry_after_s = retry.as_secs_f64().ceil().max(1.0) as u64;
        return Err(ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-bad-tokens",
                format!(
                    "too many failed authentications from your address; try again in {retry_after_s} s"
                ),
            )
        });
    }
    let value = caller.authorization.as_ref().and_then(|v| v.to_str().ok());
    match auth::bearer(value).and_then(|token| api.tokens.user_of(token)) {
        Some(user) => Ok(user),
        None => {
            if api.throttle.failed(caller.source, now) {
                let source = caller
                    .source
                    .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
                tracing::warn!(%source, "click-to-call API: too many bad tokens from one source; refusing it for a while");
            }
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid per-user bearer token is required",
            ))
        }
    }
}

async fn start_call(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Json(body): Json<StartCall>,
) -> Result<Response, ApiError> {
    let user = authenticate(&api, &caller)?.to_owned();
    let request = ClickToCall {
        user: user.clone(),
        destination: body.destination,
        callback_override: body.callback,
    };
    place(&api, &user, CallKind::ClickToCall, |policy| {
        policy.on_click_to_call(&request)
    })
}

async fn join_meeting(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Json(body): Json<JoinMeeting>,
) -> Result<Response, ApiError> {
    dial_out(&api, &caller, body, MeetingKind::Scheduled)
}

async fn meet_now(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Json(body): Json<JoinMeeting>,
) -> Result<Response, ApiError> {
    dial_out(&api, &caller, body, MeetingKind::MeetNow)
}

fn dial_out(
    api: &Api,
    caller: &Caller,
    body: JoinMeeting,
    kind: MeetingKind,
) -> Result<Response, ApiError> {
    let user = authenticate(api, caller)?.to_owned();
    let request = DialOut {
        user: user.clone(),
        conference_uri: body.conference_uri,
        kind,
    };
    place(api, &user, CallKind::DialOut, |policy| {
        policy.on_dial_out(&request)
    })
}

/// Limits, then the policy, then the originator: the order that spends nothing on a
/// request that will be refused.
fn place(
    api: &Api,
    user: &str,
    kind: CallKind,
    decide: impl FnOnce(&PolicyHost) -> crate::policy::Outcome<Decision>,
) -> Result<Response, ApiError> {
    api.limits
        .acquire(user, Instant::now())
        .map_err(limit_error)?;
    let placed = decide_and_start(api, user, kind, decide);
    if placed.is_err() {
        api.limits.release(user);
    }
    let call = placed?;
    let body = json!({
        "id": call.id,
        "plan": call.plan,
        "links": {
            "self": format!("/v1/calls/{}", call.id),
            "events": format!("/v1/calls/{}/events", call.id),
        },
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn decide_and_start(
    api: &Api,
    user: &str,
    kind: CallKind,
    decide: impl FnOnce(&PolicyHost) -> crate::policy::Outcome<Decision>,
) -> Result<StartedCall, ApiError> {
    let outcome = decide(&api.policy);
    if let Some(failure) = &outcome.failure {
        tracing::warn!(user, kind = ?failure.kind, detail = %failure.detail, "policy failed on an origination request");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "policy-failure",
            "the call policy is not answering; try again later",
        ));
    }
    let plan = plan_of(outcome.value, user)?;
    let digest = api
        .policy
        .current()
        .filter(|v| v.generation == outcome.generation)
        .map(|v| v.digest)
        .unwrap_or_default();
    api.calls.start(
        &*api.originator,
        &api.limits,
        &api.call_log,
        kind,
        plan,
        (outcome.generation, digest),
    )
}

/// The policy's answer as a plan, or the refusal the person sees.
fn plan_of(decision: Decision, user: &str) -> Result<OriginationPlan, ApiError> {
    match decision {
        // The own-line rule does not rest on the policy alone: a plan for anybody else
        // than the authenticated user is never placed.
        Decision::Originate(plan) if plan.user == user => Ok(plan),
        Decision::Originate(plan) => {
            tracing::error!(user, plan_user = %plan.user, "policy planned a call for another user");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not-own-line",
                "a call can only be placed from your own line",
            ))
        }
        Decision::Refuse(refusal) => Err(ApiError {
            rule: Some(refusal.rule),
            sip_code: Some(refusal.code),
            ..ApiError::new(StatusCode::FORBIDDEN, "refused", refusal.explanation)
        }),
        Decision::Reply(reply) => Err(ApiError {
            sip_code: Some(reply.code),
            ..ApiError::new(StatusCode::FORBIDDEN, "refused", reply.reason)
        }),
        other => {
            tracing::error!(user, decision = ?other, "policy answered an origination request without a plan");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no-plan",
                "the call policy did not return a call plan",
            ))
        }
    }
}

fn limit_error(err: LimitExceeded) -> ApiError {
    let retry_after_s = match &err {
        LimitExceeded::Rate { retry_after_s, .. } => Some(*retry_after_s),
        LimitExceeded::Concurrent { .. } => None,
    };
    ApiError {
        retry_after_s,
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "limit", err.to_string())
    }
}

/// The authenticated user's call `id`; another user's call is "not found" too.
fn own_call(api: &Api, caller: &Caller, id: &str) -> Result<Arc<Call>, ApiError> {
    let user = authenticate(api, caller)?;
    api.calls.get(id, user).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no call {id} of yours"),
        )
    })
}

async fn show_call(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let call = own_call(&api, &caller, &id)?;
    Ok(Json(call.snapshot()).into_response())
}

async fn hang_up(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let call = own_call(&api, &caller, &id)?;
    call.hang_up();
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn events(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let call = own_call(&api, &caller, &id)?;
    let wait = Duration::from_secs(query.wait_s.min(30));
    let (events, next) = call.events_after(query.since, wait).await;
    Ok(Json(json!({ "events": events, "next": next })).into_response())
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        include_str!("../../../../docs/openapi.yaml"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Flow, Leg, NameAddr};

    fn plan_for(user: &str) -> Decision {
        let leg = |uri: &str| Leg {
            uri: uri.into(),
            shows: NameAddr {
                display: String::new(),
                uri: "sip:+14255550000@corp.example".into(),
            },
            ring_timeout_ms: 15_000,
        };
        Decision::Originate(OriginationPlan {
            user: user.into(),
            callback: leg("sip:+14255550101@pbx.corp.example"),
            callee: leg("sip:+14255550142@pbx.corp.example"),
            flow: Flow::FlowIv,
            max_duration_s: 3600,
        })
    }

    /// CVW-15: the own-line rule holds even when the policy plans for somebody else.
    #[test]
    fn a_plan_for_another_user_is_never_placed() {
        let alice = "sip:alice@corp.example";
        assert!(plan_of(plan_for(alice), alice).is_ok());
        let Err(refused) = plan_of(plan_for("sip:bob@corp.example"), alice) else {
            panic!("a plan for Bob was accepted for Alice");
        };
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::FORBIDDEN, "not-own-line")
        );
    }
}
