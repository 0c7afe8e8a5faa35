//! `pttbridge run`: starts every side and the HTTP port, runs until Ctrl-C/SIGTERM.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tracing::info;

use crate::config::Config;
use crate::http::{AppState, metrics_handle, router};
use crate::hub::EventBus;
use crate::recording::Recorder;
use crate::sides::ptt::PttSide;

/// Runs the bridge with a loaded configuration.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = metrics_handle();
    let bus = Arc::new(EventBus::new());
    log_events(&bus);
    let recorder = match &config.recording.dir {
        Some(dir) => Some(
            Recorder::start(dir)
                .with_context(|| format!("recording.dir: cannot use {}", dir.display()))?,
        ),
        None => None,
    };
    let ptt = PttSide::start(&config, bus.clone(), recorder);
    let console = crate::sides::console::ConsoleSide::start(&config, bus.clone());
    let state = Arc::new(AppState {
        ptt,
        console,
        bus,
        started: Instant::now(),
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot listen on {}", config.http.listen))?;
    info!(address = %listener.local_addr()?, "HTTP listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    info!("stopped");
    Ok(())
}

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
