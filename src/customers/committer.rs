//! This site's usage committer: follows the hub's events into a [`Usage`] and, every
//! `[customers.commit] interval_s`, commits the server record, the users and the groups to the
//! management server (`crate::http_client`, form-encoded POSTs with `X-Commit-Token`). A
//! failure is logged and counted; the counts are cumulative, so the next interval carries it.

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tracing::{Instrument, debug, warn};

use super::CommitConfig;
use super::usage::{Usage, site_users};
use crate::http_client::{BaseUrl, Body, HttpError, form_encode, request_json};
use crate::hub::EventBus;

/// Entries per `data=[...]` request (below the server's default `max_batch`).
pub const CHUNK: usize = 500;

/// How the committer is doing, for the operators' `/healthz` (`customers.commit`).
#[derive(Debug, Default)]
pub struct CommitHealth {
    /// When an interval's commits last all went through, ms since the epoch (0 = never).
    last_ok_ms: AtomicI64,
    /// When a commit last failed (0 = never).
    last_failure_ms: AtomicI64,
    /// Intervals in a row with a failed commit.
    failing_intervals: AtomicU64,
    /// The last failure, escaped and cut short (never a token: the client errors hold none).
    last_error: Mutex<String>,
}

impl CommitHealth {
    /// The `/healthz` view.
    pub fn to_json(&self) -> Value {
        json!({
            "last_ok_ms": self.last_ok_ms.load(Relaxed),
            "last_failure_ms": self.last_failure_ms.load(Relaxed),
            "failing_intervals": self.failing_intervals.load(Relaxed),
            "last_error": *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

/// Why one commit request failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// No answer, or not a 200 with JSON.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The envelope's `code` is not 0.
    #[error("refused: {0}")]
    Refused(String),
}

/// Starts the committer if `config.url` is set: subscribes to `bus` now (so it misses no event
/// of the sides started after it) and runs until `shutdown`. Returns its health.
pub fn spawn(
    config: &CommitConfig,
    bus: &EventBus,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Arc<CommitHealth>>> {
    let Some(url) = &config.url else {
        return Ok(None);
    };
    let base = BaseUrl::parse(url).map_err(|e| anyhow::anyhow!("customers.commit.url: {e}"))?;
    let trust = if base.tls {
        Some(
            crate::tls::client_config(config.ca_file.as_deref(), &[b"http/1.1"])
                .map_err(|e| anyhow::anyhow!("customers.commit.ca_file: {e}"))?,
        )
    } else {
        None
    };
    let health = Arc::new(CommitHealth::default());
    let committer = Committer {
        config: config.clone(),
        base,
        trust,
        health: health.clone(),
    };
    let events = bus.subscribe();
    tokio::spawn(
        committer
            .run(events, shutdown)
            .instrument(tracing::info_span!("usage_commit")),
    );
    Ok(Some(health))
}

struct Committer {
    config: CommitConfig,
    base: BaseUrl,
    trust: Option<Arc<rustls::ClientConfig>>,
    health: Arc<CommitHealth>,
}

impl Committer {
    async fn run(
        self,
        mut events: broadcast::Receiver<crate::hub::Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut usage = Usage::default();
        let period = Duration::from_secs(self.config.interval_s);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) => usage.apply(&ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "usage counting fell behind the event bus; counts are short");
                        metrics::counter!("pttbridge_customer_usage_events_missed_total").increment(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => self.commit_all(&usage).await,
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The three commits of one interval; each counted as sent or failed.
    async fn commit_all(&self, usage: &Usage) {
        let c = &self.config;
        let now = super::now_ms();
        let server = [
            ("code", c.code.as_str()),
            ("name", &c.name),
            ("mac", &c.mac),
            ("ip", &c.ip),
            ("timeout", &c.timeout),
            ("count", &usage.user_count().to_string()),
            ("updatetimes", &usage.updates().to_string()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
        let mut ok = self.send("server", "/api/server/commit", &server).await;
        let users = site_users(usage, &c.code, now);
        for chunk in users.chunks(CHUNK) {
            ok &= self.send_data("user", "/api/user/commit", chunk).await;
        }
        let groups = usage.groups(&c.code);
        for chunk in groups.chunks(CHUNK) {
            ok &= self.send_data("group", "/api/group/commit", chunk).await;
        }
        if ok {
            self.health.last_ok_ms.store(super::now_ms(), Relaxed);
            self.health.failing_intervals.store(0, Relaxed);
        } else {
            self.health.failing_intervals.fetch_add(1, Relaxed);
        }
    }

    async fn send_data<T: serde::Serialize>(
        &self,
        kind: &'static str,
        path: &str,
        rows: &[T],
    ) -> bool {
        let json = serde_json::to_string(rows).unwrap_or_else(|_| "[]".into());
        self.send(kind, path, &format!("data={}", form_encode(&json)))
            .await
    }

    /// One request, counted and logged; whether it went through.
    async fn send(&self, kind: &'static str, path: &str, form: &str) -> bool {
        let result = self.post(path, form).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!("pttbridge_customer_commits_sent_total", "kind" => kind, "result" => outcome)
            .increment(1);
        match result {
            Ok(()) => {
                debug!(kind, "usage committed");
                true
            }
            Err(e) => {
                let error = logsafe::esc(&e.to_string()).limit(300).to_string();
                warn!(kind, url = %self.base.url(path), %error, "usage commit failed; the next interval carries it");
                self.health.last_failure_ms.store(super::now_ms(), Relaxed);
                *self
                    .health
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = format!("{kind}: {error}");
                false
            }
        }
    }

    async fn post(&self, path: &str, form: &str) -> Result<(), CommitError> {
        let headers = [("X-Commit-Token", self.config.token.as_str())];
        let answer: Value = request_json(
            &self.base,
            self.trust.as_ref(),
            "POST",
            path,
            &headers,
            Some(Body::form(form)),
        )
        .await?;
        match answer.get("code").and_then(Value::as_i64) {
            Some(0) => Ok(()),
            _ => Err(CommitError::Refused(
                answer
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no code 0")
                    .to_owned(),
            )),
        }
    }
}
