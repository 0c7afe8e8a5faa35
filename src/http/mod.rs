//! The single HTTP port: health, metrics, and (as the sides land) their WebSockets and REST.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::hub::EventBus;
use crate::sides::ptt::PttSide;

mod events;

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct AppState {
    /// PTT side.
    pub ptt: PttSide,
    /// Hub events.
    pub bus: Arc<EventBus>,
    /// Meeting side (RTCPeer signalling and rooms).
    pub meeting: Arc<crate::sides::meeting::Switchboard>,
    /// When the bridge started.
    pub started: Instant,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Becomes `true` when the bridge shuts down: long-lived streams end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Installs the global Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (tests); ours then just renders empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(crate::sides::meeting::routes(state.meeting.clone()))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/events", get(events::stream))
        .with_state(state)
}

async fn healthz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let servers = state.ptt.health();
    let ptt_ok = servers.iter().all(|s| s.state == "connected");
    let status = if ptt_ok { "ok" } else { "degraded" };
    let body = json!({
        "status": status,
        "uptime_s": state.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "sides": {
            "ptt": { "state": if ptt_ok { "connected" } else { "degraded" }, "servers": servers },
            "meeting": state.meeting.health(),
        },
    });
    // Degraded is still 200: the bridge itself is alive and serving the sides that work.
    (StatusCode::OK, Json(body))
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state.ptt.export_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
