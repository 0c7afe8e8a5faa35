//! `/v1/cluster/*` (operators): drain this cluster node without stopping it, and undo that.
//! The handlers check the operator credentials themselves (as the business REST does), so a
//! stranger gets the envelope's 401 and a wrong method 405.
//! A drained node hands each PTT account over once its channel's floor is idle and takes no
//! new ones (see `docs/cluster.md`); `/healthz`'s `cluster` shows the result.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Json;
use axum::routing::post;
use egw::rest::{Envelope, codes};

use super::AppState;
use super::business::{ApiError, ApiResult, require_operator};

/// Every `(method, path)` here, for the OpenAPI sync test.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/cluster/drain"),
    ("post", "/v1/cluster/undrain"),
];

/// The routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/cluster/drain", post(drain))
        .route("/v1/cluster/undrain", post(undrain))
}

async fn drain(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult {
    set(&state, &headers, true)
}

async fn undrain(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult {
    set(&state, &headers, false)
}

fn set(state: &AppState, headers: &HeaderMap, on: bool) -> ApiResult {
    require_operator(state, headers)?;
    let cluster = state.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            codes::CONFLICT,
            "this bridge is not a cluster node ([cluster] node_id is unset): nothing to drain",
        )
    })?;
    let changed = cluster.set_drain(on);
    Ok(Json(
        Envelope::ok()
            .with("changed", changed)
            .with("cluster", cluster.to_json())
            .into_value(),
    ))
}
