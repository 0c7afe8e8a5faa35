//! `/v1/cluster/*` (operators): drain this cluster node without stopping it, and undo that.
//! A drained node hands each PTT account over once its channel's floor is idle and takes no
//! new ones (see `docs/cluster.md`); `/healthz`'s `cluster` shows the result.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use axum::routing::post;
use egw::rest::{Envelope, codes};

use super::AppState;
use super::business::{ApiError, ApiResult};

/// Every `(method, path)` here, for the OpenAPI sync test.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/cluster/drain"),
    ("post", "/v1/cluster/undrain"),
];

/// The routes (guarded by the operator middleware in `http::router`).
pub fn operator_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/cluster/drain", post(drain))
        .route("/v1/cluster/undrain", post(undrain))
}

async fn drain(State(state): State<Arc<AppState>>) -> ApiResult {
    set(&state, true)
}

async fn undrain(State(state): State<Arc<AppState>>) -> ApiResult {
    set(&state, false)
}

fn set(state: &AppState, on: bool) -> ApiResult {
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
