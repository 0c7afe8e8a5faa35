//! `pttbridge run`: starts every side and the HTTP port, runs until Ctrl-C/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::events::Platform;
use crate::http::{AppState, metrics_handle, router};
use crate::hub::EventBus;
use crate::recording::Recorder;
use crate::sides::SideContext;
use crate::storage::{AppRow, Store};

/// Runs the bridge with a loaded configuration.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // The recorder is installed before any side registers a metric.
    metrics_handle();
    let bus = Arc::new(EventBus::new());
    log_events(&bus);
    let recorder = match &config.recording.dir {
        Some(dir) => Some(
            Recorder::start(dir)
                .with_context(|| format!("recording.dir: cannot use {}", dir.display()))?,
        ),
        None => None,
    };
    let store = open_store(&config)?;
    let mut egw = config.egw.clone();
    // `/server/address` gives this URL, never one made from a request's Host header.
    egw.public_url = egw.public_url.or_else(|| config.http.egw_url());
    if egw.public_url.is_none() {
        warn!(
            "http.listen is a wildcard address and http.public_url is unset: /server/address cannot name the event gateway"
        );
    }
    let mut platform = Platform::new(egw, config.business.clone(), store);
    if config.nats.url.is_some() {
        // Before any side starts: the sink subscribes now and misses nothing.
        platform.nats = Some(crate::events::nats::start(&config.nats, &bus)?);
    }
    let mut ctx = SideContext {
        config: &config,
        bus: bus.clone(),
        platform: &platform,
        recorder,
        ptt: None,
    };
    let sides = crate::sides::start_all(&mut ctx)?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let state = Arc::new(AppState::new(
        sides.clone(),
        bus,
        platform,
        shutdown.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot listen on {}", config.http.listen))?;
    info!(address = %listener.local_addr()?, "HTTP listening");
    let server = crate::http::listener::serve(listener, router(state), &config.http, shutdown);
    tokio::select! {
        result = server => result.context("HTTP server failed")?,
        _ = async {
            shutdown_signal().await;
            // Long-lived streams (events, WebSockets) watch this and close; the server then
            // finishes on its own. A client that does not let go is not waited for long.
            let _ = shutdown_tx.send(true);
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown began; closing them"),
    }
    // Sides end their sessions (consoles' calls end with their terminals moved home) before
    // the process goes.
    futures_util::future::join_all(sides.iter().map(|s| s.shutdown(SHUTDOWN_GRACE))).await;
    info!("stopped");
    Ok(())
}

/// Opens the store and writes the config's apps into it.
fn open_store(config: &Config) -> anyhow::Result<Store> {
    let path = config.storage.path.as_deref();
    let store = Store::open(path).with_context(|| match path {
        Some(p) => format!("storage.path: cannot open {}", p.display()),
        None => "storage: cannot open the in-memory database".to_string(),
    })?;
    if path.is_none() {
        info!("storage.path unset: apps and call records are kept in memory only");
    }
    for (i, app) in config.business.apps.iter().enumerate() {
        store
            .upsert_app(&AppRow {
                app_id: app.app_id.clone(),
                app_secret: app.app_secret.clone(),
                app_name: app.app_name.clone().unwrap_or_else(|| app.app_id.clone()),
                status: "online".into(),
                consumption_limit: None,
                services: vec![(4, None), (7, None)],
            })
            .with_context(|| format!("business.apps[{i}]: cannot store app {:?}", app.app_id))?;
    }
    Ok(store)
}
/// How long open connections get to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Every hub event goes to the log at debug level (and `info` for the interesting ones).
fn log_events(bus: &EventBus) {
    let mut rx = bus.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    info!(target: "pttbridge::events", event = %serde_json::to_string(&ev).unwrap_or_default())
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event log fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutting down");
}
