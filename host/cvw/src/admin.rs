//! The admin API (`[control]` in the serve configuration): running policy version, swaps,
//! directory reloads, metrics — for the operator, behind the admin token. Named apart from
//! [`crate::click_to_call`], the API the users call with their own tokens.
//!
//! Owns the HTTP routes, the admin token check and the Prometheus rendering of the
//! runtime's counters. Publishing itself belongs to [`crate::deployment::Deployment`]; this
//! module only turns requests into its calls and its errors into HTTP answers.
//!
//! - `GET /v1/policy`: the running version (generation, digest, origin, info, contract).
//! - `POST /v1/policy`: swap; a JSON body `{"path": "..."}` names a module on this host,
//!   any other body is the module's bytes.
//! - `POST /v1/directory/reload`: read the directory file again and republish.
//! - `GET /metrics`: Prometheus text.
//!
//! Every route needs `Authorization: Bearer <admin token>`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::deployment::{Deployment, ReloadError};
use crate::policy::{MetricsSnapshot, PolicyVersion};

/// Largest module upload; axum's default of 2 MiB is smaller than a debug-built policy.
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// Environment variable holding the admin token.
pub const TOKEN_ENV: &str = "CVW_ADMIN_TOKEN";

/// The admin token, kept as a digest so that comparing takes the same time whatever the
/// guess.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

/// Why there is no admin token; the control API does not start without one.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin token file {} is empty", path.display())]
    EmptyFile { path: PathBuf },
    #[error("no admin token: set {TOKEN_ENV} or give a token file")]
    Missing,
}

impl AdminToken {
    /// From `file` when given, else from `CVW_ADMIN_TOKEN`.
    pub fn load(file: Option<&Path>) -> Result<Self, TokenError> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::new(text.trim()).ok_or_else(|| TokenError::EmptyFile {
                    path: path.to_path_buf(),
                })
            }
            None => std::env::var(TOKEN_ENV)
                .ok()
                .and_then(|t| Self::new(t.trim()))
                .ok_or(TokenError::Missing),
        }
    }

    /// `None` for an empty token, which would let anybody in.
    pub fn new(token: &str) -> Option<Self> {
        (!token.is_empty()).then(|| AdminToken(Sha256::digest(token.as_bytes()).into()))
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        given
            .iter()
            .zip(&self.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[derive(Clone)]
struct Api {
    deployment: Arc<Deployment>,
    token: AdminToken,
}

/// The control API's routes.
pub fn router(deployment: Arc<Deployment>, token: AdminToken) -> Router {
    Router::new()
        .route("/v1/policy", get(current_policy).post(swap_policy))
        .route("/v1/directory/reload", post(reload_directory))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_MODULE_BYTES))
        .with_state(Api { deployment, token })
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(json!({ "error": "missing or wrong admin token" })),
    )
        .into_response()
}

async fn current_policy(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !api.token.accepts(&headers) {
        return unauthorized();
    }
    match api.deployment.host().current() {
        Some(version) => axum::Json(version).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "no policy published" })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapByPath {
    path: PathBuf,
}

async fn swap_policy(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    if !api.token.accepts(&headers) {
        return unauthorized();
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let by_path = if is_json {
        match serde_json::from_slice::<SwapByPath>(&body) {
            Ok(request) => Some(request.path),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({ "error": format!("expected {{\"path\": \"...\"}}: {e}") })),
                )
                    .into_response();
            }
        }
    } else {
        None
    };
    let deployment = api.deployment.clone();
    let result = tokio::task::spawn_blocking(move || match by_path {
        Some(path) => deployment.swap_file(&path),
        None => deployment.swap_bytes(&body, "control-api upload"),
    })
    .await;
    match result {
        Ok(Ok(version)) => {
            let (generation, origin) = (version.generation, &version.origin);
            tracing::info!(generation, %origin, "policy swapped by the control API");
            axum::Json(version).into_response()
        }
        Ok(Err(e)) => refused(&api, e.step(), &e),
        Err(e) => internal(e),
    }
}

async fn reload_directory(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !api.token.accepts(&headers) {
        return unauthorized();
    }
    let deployment = api.deployment.clone();
    match tokio::task::spawn_blocking(move || deployment.reload_directory()).await {
        Ok(Ok(version)) => axum::Json(version).into_response(),
        Ok(Err(ReloadError::Policy(e))) => refused(&api, e.step(), &e),
        Ok(Err(e @ ReloadError::Directory(_))) => refused(&api, "directory", &e),
        Err(e) => internal(e),
    }
}

/// 422 with the reason and the generation that keeps serving.
fn refused(api: &Api, step: &str, error: &dyn std::error::Error) -> Response {
    tracing::warn!(step, "control API publish refused: {error}");
    let current: Option<PolicyVersion> = api.deployment.host().current();
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({
            "error": error.to_string(),
            "step": step,
            "generation": current.map(|v| v.generation),
        })),
    )
        .into_response()
}

fn internal(error: tokio::task::JoinError) -> Response {
    tracing::error!("control API task failed: {error}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({ "error": "internal error" })),
    )
        .into_response()
}

async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !api.token.accepts(&headers) {
        return unauthorized();
    }
    let generation = api.deployment.host().current().map_or(0, |v| v.generation);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus(&api.deployment.host().metrics(), generation),
    )
        .into_response()
}

/// The runtime's counters in the Prometheus text format.
pub fn prometheus(m: &MetricsSnapshot, generation: u64) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "cvw_policy_generation",
        "gauge",
        "Generation of the published policy (0: none).",
        &[(String::new(), generation)],
    );
    family(
        "cvw_policy_decisions_total",
        "counter",
        "Hook calls answered by the policy.",
        &[(String::new(), m.decisions)],
    );
    let failures: Vec<_> = m
        .failures
        .iter()
        .map(|(kind, n)| (format!("{{kind=\"{}\"}}", kind_label(*kind)), *n))
        .collect();
    family(
        "cvw_policy_failures_total",
        "counter",
        "Hook calls answered by the failure mode, by kind.",
        &failures,
    );
    family(
        "cvw_policy_swaps_total",
        "counter",
        "Policy versions published.",
        &[(String::new(), m.swaps)],
    );
    family(
        "cvw_policy_refused_loads_total",
        "counter",
        "Modules or directories refused at publish.",
        &[(String::new(), m.refused_loads)],
    );
    let guest: Vec<_> = m
        .guest
        .iter()
        .map(|(name, n)| (format!("{{name=\"{name}\"}}"), *n))
        .collect();
    family(
        "cvw_policy_guest_total",
        "counter",
        "Counters bumped by the policy.",
        &guest,
    );
    family(
        "cvw_policy_guest_dropped_total",
        "counter",
        "Policy counter updates ignored.",
        &[(String::new(), m.guest_dropped)],
    );
    out
}

/// The kind's serde name; the runtime only allows `[a-z_]` in guest names, and kinds are
/// kebab-case identifiers, so neither needs escaping in a label.
fn kind_label(kind: crate::policy::FailureKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn only_the_right_bearer_token_is_accepted() {
        let token = AdminToken::new("s3cret").unwrap();
        assert!(token.accepts(&headers("Bearer s3cret")));
        assert!(!token.accepts(&headers("Bearer s3cre")));
        assert!(!token.accepts(&headers("Basic s3cret")));
        assert!(!token.accepts(&HeaderMap::new()));
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let snapshot = MetricsSnapshot {
            decisions: 7,
            failures: [(crate::policy::FailureKind::Deadline, 2)]
                .into_iter()
                .collect(),
            swaps: 3,
            refused_loads: 1,
            guest: [("cvw_refused".to_string(), 4)].into_iter().collect(),
            guest_dropped: 0,
        };
        let text = prometheus(&snapshot, 3);
        for line in [
            "# TYPE cvw_policy_generation gauge",
            "cvw_policy_generation 3",
            "# TYPE cvw_policy_decisions_total counter",
            "cvw_policy_decisions_total 7",
            "cvw_policy_failures_total{kind=\"deadline\"} 2",
            "cvw_policy_swaps_total 3",
            "cvw_policy_refused_loads_total 1",
            "cvw_policy_guest_total{name=\"cvw_refused\"} 4",
            "cvw_policy_guest_dropped_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn an_empty_token_is_no_token() {
        assert!(AdminToken::new("").is_none());
    }
}
