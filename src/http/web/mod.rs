//! The web page at `/`: a live view of the bridge and a browser meeting client, as plain ES
//! modules and CSS built into the binary (`web/` in the repository; no front-end build step).
//!
//! - `GET /` and `GET /web/{file}`: the page and its assets.
//! - `GET /api/state`: a snapshot for the live view (PTT servers with their channel trees,
//!   dial-in channels, links, groups and who talks in them, consoles online).
//! - `GET /api/levels`: Server-Sent Events, ten times a second while anyone talks, with the
//!   audio level of each PTT talker the bridge hears (served by the PTT side:
//!   [`crate::sides::ptt::levels`]).
//!
//! Everything else the page needs it takes from the public surfaces: `/events` (hub events),
//! `/healthz`, `/app/getSign` + `/app/account` and the `/rtcpeer` WebSocket.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

mod state;

/// The page's files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../web/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/app.js"),
    ),
    (
        "archive.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/archive.js"),
    ),
    (
        "customers.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/customers.js"),
    ),
    (
        "cluster.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/cluster.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/live.js"),
    ),
    (
        "call.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/call.js"),
    ),
    (
        "rtcpeer.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/rtcpeer.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../../web/favicon.svg"),
    ),
];

/// The live view's data: operators only (the PTT side serves `/api/levels`).
pub fn operator_routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/state", get(state::snapshot))
}

/// The page's static files: open to anyone (the page asks for operator sign-in itself).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/web/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ctype, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
                // Small files, served from memory: always revalidate so an upgraded bridge
                // never runs with a stale page.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no such file: {name}\n")).into_response(),
    }
}
