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

use crate::events::Platform;
use crate::hub::EventBus;
use crate::sides::ptt::PttSide;

pub mod business;
pub mod egw;
mod events;
pub mod web;

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct AppState {
    /// PTT side.
    pub ptt: PttSide,
    /// Console side (`/muicall`).
    pub console: crate::sides::console::ConsoleSide,
    /// Hub events.
    pub bus: Arc<EventBus>,
    /// Meeting side (RTCPeer signalling and rooms).
    pub meeting: Arc<crate::sides::meeting::Switchboard>,
    /// When the bridge started.
    pub started: Instant,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Platform surfaces: EGW, business REST, store, side commands, call records.
    pub platform: Platform,
    /// Becomes `true` when the bridge shuts down: long-lived streams end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    /// State for a router without a config file: the given PTT side and platform, console and
    /// meeting sides with their defaults, metrics installed.
    /// Used by `run` and by in-process servers (tests, the load tool).
    pub fn new(
        ptt: PttSide,
        bus: Arc<EventBus>,
        platform: Platform,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let meeting =
            crate::sides::meeting::Switchboard::new(Default::default(), bus.clone(), &ptt);
        let console = crate::sides::console::ConsoleSide::start(&Default::default(), bus.clone());
        Self {
            ptt,
            console,
            bus,
            meeting,
            started: Instant::now(),
            metrics: metrics_handle(),
            platform,
            shutdown,
        }
    }
}

/// Serves `router(state)` on `listener` until the process ends (tests, the load tool).
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    axum::serve(no_delay(listener), router(state)).await
}

/// The listener with `TCP_NODELAY` on every accepted connection: WebSocket frames (events,
/// signalling) are small and must not wait for Nagle and the peer's delayed ACK (~40 ms).
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
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
        .route("/egw", get(egw::upgrade))
        .route("/server/address", get(egw::server_address))
        .merge(business::routes())
        .merge(crate::sides::console::routes(
            state.console.clone(),
            state.shutdown.clone(),
        ))
        .merge(web::routes(&state))
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
            "console": state.console.health(),
            "meeting": state.meeting.health(),
        },
        "events": crate::events::health(&state.platform),
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
