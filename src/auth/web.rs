//! The HTTP side of operator auth: a middleware that guards operator routes, and the page's
//! sign-in (`POST /api/login` with `{"token": ...}` → a session cookie), sign-out and
//! `GET /api/session`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::operator::{COOKIE, LoginError, Operators, cookie};

/// Extractor: the address a request came from, when the server recorded it.
#[derive(Debug, Clone, Copy)]
pub struct PeerIp(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(client_ip(&parts.extensions)))
    }
}

/// The address a request came from, when the server recorded it.
pub fn client_ip(req: &axum::http::Extensions) -> Option<IpAddr> {
    // The listener (`http::listener`) records every connection's peer address.
    req.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// 401 with the reason and how to sign in, in the `{code, message}` envelope the REST
/// surfaces use.
pub fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(json!({
            "code": 401,
            "message": "operator credentials required: Authorization: Bearer <operator token>, or sign in on the page",
        })),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"pttbridge\""),
    );
    r
}

/// Middleware: lets only operators through.
pub async fn require_operator(
    State(ops): State<Arc<Operators>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    if ops.authorized(req.headers()) {
        next.run(req).await
    } else {
        metrics::counter!("pttbridge_auth_failures_total", "surface" => "operator", "reason" => "no_credentials").increment(1);
        unauthorized()
    }
}

/// Middleware for every route: a request with a wrong bearer token counts as a failed sign-in
/// from its address, and an address with too many is answered 429 until its window passes.
/// The route itself still decides what the token allows.
pub async fn throttle_bearer(
    State(ops): State<Arc<Operators>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let Some(token) = super::operator::bearer(req.headers()) else {
        return next.run(req).await;
    };
    match ops.check_from(token, client_ip(req.extensions()), Instant::now()) {
        Err(e @ LoginError::Throttled(_)) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "code": 429, "message": e.to_string() })),
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

#[derive(Debug, Deserialize)]
struct Login {
    token: String,
}

async fn login(State(ops): State<Arc<Operators>>, req: Request<Body>) -> Response {
    let addr = client_ip(req.extensions());
    let body = match axum::body::to_bytes(req.into_body(), 4096).await {
        Ok(b) => b,
        Err(_) => return bad("send {\"token\": \"...\"} (at most 4 KiB)"),
    };
    let Ok(l) = serde_json::from_slice::<Login>(&body) else {
        return bad("send {\"token\": \"...\"}");
    };
    match ops.login(&l.token, addr, Instant::now()) {
        Ok(sid) => {
            let mut r = Json(json!({ "code": 0, "message": "OK" })).into_response();
            let cookie = format!("{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e @ LoginError::Wrong) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "code": 401, "message": e.to_string() })),
        )
            .into_response(),
        Err(e @ LoginError::Throttled(_)) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "code": 429, "message": e.to_string() })),
        )
            .into_response(),
    }
}

fn bad(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "code": 400, "message": message })),
    )
        .into_response()
}

async fn logout(State(ops): State<Arc<Operators>>, req: Request<Body>) -> Response {
    if let Some(sid) = cookie(req.headers(), COOKIE) {
        ops.logout(sid);
    }
    let mut r = Json(json!({ "code": 0, "message": "OK" })).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "pttbridge_operator=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

async fn session(State(ops): State<Arc<Operators>>, req: Request<Body>) -> Response {
    let ok = ops.authorized(req.headers());
    Json(json!({ "code": 0, "message": "OK", "operator": ok })).into_response()
}

/// `/api/login`, `/api/logout`, `/api/session`.
pub fn routes(ops: Arc<Operators>) -> Router {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/session", get(session))
        .with_state(ops)
}
