//! The HTTP/1.1 JSON endpoint: `POST /kamailio/{hook}` and `POST /opensips/{hook}` with
//! the hook's params as the body (OpenSIPS `rest_post` async, Kamailio `http_client`).
//! Owns routing by path (which picks the dialect) and HTTP status codes; each call goes
//! to [`DecisionService::handle`] as a [`HookCall`].
//!
//! Every accepted connection gets TCP_NODELAY: without it, keep-alive requests stall
//! 40 ms on delayed ACKs.

use crate::decision::dialect::{Dialect, KamailioJson, OpenSipsJson};
use crate::decision::request::Params;
use crate::decision::{DecisionService, Hook, HookCall, HookError};
use crate::shutdown::Shutdown;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::json;
use std::io;
use tokio::net::TcpListener;

/// The router, for tests and for mounting beside other routes.
pub fn router(svc: DecisionService) -> Router {
    Router::new()
        .route("/{dialect}/{hook}", post(hook))
        .with_state(svc)
}

/// Serves HTTP on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    svc: DecisionService,
    mut shutdown: Shutdown,
) -> io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(svc))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "message": message } })),
    )
        .into_response()
}

async fn hook(
    State(svc): State<DecisionService>,
    Path((dialect, hook)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let dialect: &dyn Dialect = match dialect.as_str() {
        "kamailio" => &KamailioJson,
        "opensips" => &OpenSipsJson,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("unknown proxy {other:?}: expected kamailio or opensips"),
            );
        }
    };
    let hook: Hook = match hook.parse() {
        Ok(h) => h,
        Err(e) => return error(StatusCode::NOT_FOUND, &e.to_string()),
    };
    let params: Params = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) if e.is_data() => return error(StatusCode::BAD_REQUEST, &format!("params: {e}")),
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body: not JSON: {e}")),
    };
    let answer = HookCall::from_params(hook, params).and_then(|call| svc.handle(&call, dialect));
    match answer {
        Ok(doc) => (
            [(header::CONTENT_TYPE, "application/json")],
            doc.into_string(),
        )
            .into_response(),
        // Only when even the failure decision cannot be encoded, which `cvw serve` refuses
        // at start.
        Err(e @ HookError::Map { .. }) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::fake::{Fake, INVITE, b64};
    use serde_json::Value;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, Value) {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            c.read_to_string(&mut resp),
        )
        .await
        .unwrap()
        .unwrap();
        let status = resp[9..12].parse().unwrap();
        let body = resp.split("\r\n\r\n").nth(1).unwrap();
        (status, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn opensips_and_kamailio_paths_and_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = Shutdown::new();
        let server = tokio::spawn(serve(
            listener,
            DecisionService::new(Arc::new(Fake::default())),
            shutdown,
        ));

        let body = json!({ "msg": b64(INVITE), "source": "pbx" }).to_string();
        let (status, doc) = post(addr, "/opensips/route", &body).await;
        assert_eq!(status, 200);
        assert_eq!(doc["mode"], "parallel");
        assert_eq!(doc["routes"][0]["ring_timeout_s"], 15);
        let (status, doc) = post(addr, "/kamailio/route", &body).await;
        assert_eq!(status, 200);
        assert_eq!(doc["rtjson"]["routing"], "parallel");

        // The fake's failure hook forks to nobody, which no proxy can carry out: the
        // failure decision is answered, not an HTTP error.
        let failed = json!({ "msg": b64(INVITE), "reply": { "code": 408 } }).to_string();
        let (status, doc) = post(addr, "/kamailio/failure", &failed).await;
        assert_eq!((status, &doc["action"]), (200, &json!("continue")), "{doc}");

        let (status, doc) = post(addr, "/kamailio/route", "{\"msg\":1}").await;
        assert_eq!(status, 400);
        assert!(
            doc["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("params: invalid type: integer `1`")
        );
        let (status, _) = post(addr, "/asterisk/route", &body).await;
        assert_eq!(status, 404);
        let (status, doc) = post(addr, "/opensips/route", "not json").await;
        assert_eq!(status, 400);
        assert!(
            doc["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("body: not JSON")
        );

        trigger.fire();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
