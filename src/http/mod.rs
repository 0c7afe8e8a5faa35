//! The single HTTP port: health, metrics, and (as the sides land) their WebSockets and REST.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::auth::{self, Operators};
use crate::events::Platform;
use crate::hub::EventBus;
use crate::sides::Side;

pub mod archive;
pub mod business;
pub mod cluster;
pub mod customers;
pub mod directory;
pub mod egw;
mod events;
pub mod listener;
pub mod web;

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Every side, PTT first.
    pub sides: Vec<Arc<dyn Side>>,
    /// Hub events.
    pub bus: Arc<EventBus>,
    /// When the bridge started.
    pub started: Instant,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Platform surfaces: EGW, business REST, store, side commands, call records.
    pub platform: Platform,
    /// Becomes `true` when the bridge shuts down: long-lived streams end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Operator credentials (the page, `/api/*`, `/events`, app management, metrics).
    pub operators: Arc<Operators>,
    /// This node's leases, when it is a cluster node (`/healthz`).
    pub cluster: Option<Arc<crate::cluster::node::ClusterStatus>>,
    /// This node's event log, when it is a cluster node (`/healthz`).
    pub event_log: Option<Arc<crate::cluster::eventlog::LogStats>>,
}

impl AppState {
    /// State for a router over `sides` (none: the platform surfaces alone, as the load
    /// tool and the API tests serve them), metrics installed, no operator token accepted
    /// (see [`AppState::with_operators`]).
    pub fn new(
        sides: Vec<Arc<dyn Side>>,
        bus: Arc<EventBus>,
        platform: Platform,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            sides,
            bus,
            started: Instant::now(),
            metrics: metrics_handle(),
            platform,
            shutdown,
            operators: Arc::new(Operators::new(Vec::new(), Duration::from_secs(3600), false)),
            cluster: None,
            event_log: None,
        }
    }

    /// The same with these operators.
    pub fn with_operators(mut self, operators: Arc<Operators>) -> Self {
        self.operators = operators;
        self
    }

    /// The same, showing this cluster node's event log in `/healthz`.
    pub fn with_event_log(mut self, log: Arc<crate::cluster::eventlog::LogStats>) -> Self {
        self.event_log = Some(log);
        self
    }

    /// The same, showing this cluster node's leases in `/healthz`.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::node::ClusterStatus>) -> Self {
        self.cluster = Some(cluster);
        self
    }
}

/// Serves `router(state)` on `listener` until `state.shutdown` (tests, the load tool): the
/// bounded listener with the default timeouts and no connection caps (their clients all come
/// from loopback).
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    let config = crate::config::HttpConfig {
        max_connections: 1_000_000,
        max_connections_per_ip: 1_000_000,
        ..Default::default()
    };
    let shutdown = state.shutdown.clone();
    listener::serve(listener, router(state), &config, shutdown).await
}

/// Installs the global Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Histograms, not summaries: buckets add up across scrapes and instances, and a
            // summary's quantiles read 0 once its window has passed.
            let recorder = PrometheusBuilder::new()
                .set_buckets(crate::metrics_catalog::BUCKETS)
                .expect("bucket bounds are given")
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_ratio".into()),
                    crate::metrics_catalog::RATIO_BUCKETS,
                )
                .expect("bucket bounds are given")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (tests); ours then just renders empty.
            let _ = metrics::set_global_recorder(recorder);
            crate::metrics_catalog::register();
            handle
        })
        .clone()
}

/// The router with every route: each side's, the platform's, the page's, health and metrics.
/// Operator routes (the live view's data, `/events`, `/metrics` unless made public, the sides'
/// operator routes) are guarded by [`auth::web::require_operator`]; the rest authenticate by
/// their own protocol, or are liveness and the page's static files.
pub fn router(state: Arc<AppState>) -> Router {
    let ops = state.operators.clone();
    let mut operator = Router::new()
        .route("/events", get(events::stream))
        .merge(web::operator_routes())
        .merge(archive::operator_routes())
        .merge(customers::operator_routes())
        .with_state(state.clone());
    let mut public = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/egw", get(egw::upgrade))
        .route("/server/address", get(egw::server_address))
        .merge(business::routes())
        .merge(cluster::routes())
        .merge(customers::routes())
        .merge(directory::routes())
        .merge(web::routes())
        .with_state(state.clone());
    let metrics = Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(state.clone());
    if ops.public_metrics {
        public = public.merge(metrics);
    } else {
        operator = operator.merge(metrics);
    }
    for side in &state.sides {
        let routes = side.routes(&state.shutdown);
        public = public.merge(routes.public);
        operator = operator.merge(routes.operator);
    }
    let guard = axum::middleware::from_fn_with_state(ops.clone(), auth::web::require_operator);
    let throttle = axum::middleware::from_fn_with_state(ops.clone(), auth::web::throttle_bearer);
    public
        .merge(operator.route_layer(guard))
        .merge(auth::web::routes(ops))
        .layer(throttle)
}

/// Whether every side works (every configured PTT server connected, and so on): what
/// `/readyz` and `/healthz` answer by.
fn ready(state: &AppState) -> bool {
    state.sides.iter().all(|s| s.healthy())
}

/// 200 for as long as the process serves HTTP: restart it only when this fails.
async fn livez() -> impl IntoResponse {
    Json(json!({ "status": "alive" }))
}

/// 200 when every side works, 503 until then and while any is degraded: send traffic (or an
/// operator's attention) by this.
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if ready(&state) {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready" })),
        )
    }
}

/// Health: 200 "ok" or 503 "degraded" for anyone; the sides' details for operators. A stale
/// directory (the admin API away too long) makes it degraded, not `/readyz` unready: voice
/// does not depend on it.
async fn healthz(State(state): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let directory = state.platform.directory.as_ref();
    let ok = ready(&state) && !directory.is_some_and(|d| d.stale());
    let (code, status) = if ok {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    };
    if !state.operators.authorized(&headers) {
        return (code, Json(json!({ "status": status })));
    }
    let mut sides = serde_json::Map::new();
    for side in &state.sides {
        sides.insert(side.kind().as_str().into(), side.health());
    }
    let body = json!({
        "status": status,
        "uptime_s": state.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "sides": sides,
        "events": crate::events::health(&state.platform),
        "customers": { "commit": state.platform.commit_health.as_ref().map(|h| h.to_json()) },
        "directory": directory.map_or_else(|| json!("off"), |d| d.health()),
    });
    let mut body = body;
    if let Some(cluster) = &state.cluster {
        body["cluster"] = cluster.to_json();
    }
    if let Some(log) = &state.event_log {
        body["event_log"] = log.to_json();
    }
    // Degraded is 503 with the details: a monitor sees it; the process is alive (/livez).
    (code, Json(body))
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    for side in &state.sides {
        side.export_metrics();
    }
    if let Some(d) = &state.platform.directory {
        d.export_metrics();
    }
    if let Some(n) = crate::alloc_count::allocations() {
        metrics::counter!("pttbridge_process_allocations_total").absolute(n);
    }
    if let Some(n) = crate::alloc_count::live_bytes() {
        metrics::gauge!("pttbridge_process_heap_live_bytes").set(n as f64);
    }
    let mut text = state.metrics.render();
    text.push_str(&crate::metrics_catalog::process_text());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
