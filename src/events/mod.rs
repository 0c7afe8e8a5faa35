//! Events for platforms: the per-app state model the bus keeps ([`state`]), and the sinks that
//! carry hub events out — the EGW WebSocket projection ([`egw`]) and NATS JetStream ([`nats`]).
//!
//! Every side publishes through [`crate::hub::EventBus::publish`]; nothing here is side-specific.

pub mod acks;
pub mod config;
pub mod egw;
pub mod nats;
pub mod rfc3339;
pub mod state;

use std::sync::Arc;

use crate::hub::{Calls, CommandRouter};
use crate::storage::Store;
use config::{BusinessConfig, EgwConfig};

/// What the platform surfaces (EGW, REST) share: their config, the store, the command router
/// the sides register with, and the call records.
#[derive(Debug, Clone)]
pub struct Platform {
    /// `[egw]`.
    pub egw: EgwConfig,
    /// `[business]`.
    pub business: BusinessConfig,
    /// Apps and call records.
    pub store: Store,
    /// Commands to the sides.
    pub commands: CommandRouter,
    /// Call records.
    pub calls: Calls,
    /// The NATS sink's counters, when it runs.
    pub nats: Option<Arc<nats::SinkStats>>,
    /// Bus events as EGW frames, serialised once for all connections.
    pub egw_feed: Arc<egw::EgwFeed>,
    /// Failed EGW logins, per developer/app id and per address.
    pub egw_failures: Arc<crate::auth::FailureLimiter<String>>,
    /// `[recording] dir`: the archive's files (its index is in `store`); `None` = no archive.
    pub recordings: Option<std::path::PathBuf>,
    /// `[customers]`: limits of the customer management's commits.
    pub customers: crate::customers::CustomersConfig,
    /// This site's usage committer (`[customers.commit]`), when it runs.
    pub commit_health: Option<Arc<crate::customers::committer::CommitHealth>>,
    /// Wrong customer commit tokens and info keys, per address.
    pub customer_failures: Arc<crate::auth::FailureLimiter<std::net::IpAddr>>,
    /// The directory read from the Totalk admin API (`[directory]`); `None` = not configured.
    pub directory: Option<crate::directory::Directory>,
}

impl Platform {
    /// A platform on `store` with no sides registered.
    pub fn new(egw: EgwConfig, business: BusinessConfig, store: Store) -> Self {
        Self {
            egw,
            business,
            calls: Calls::new(store.clone()),
            store,
            commands: CommandRouter::new(),
            egw_failures: Arc::new(crate::auth::FailureLimiter::new(
                10,
                std::time::Duration::from_secs(60),
                4096,
            )),
            nats: None,
            egw_feed: Arc::default(),
            recordings: None,
            customers: Default::default(),
            commit_health: None,
            customer_failures: Arc::new(crate::auth::FailureLimiter::new(
                10,
                std::time::Duration::from_secs(60),
                4096,
            )),
            directory: None,
        }
    }

    /// An EGW login from `addr`: refused (`None`) while that address or that id has failed
    /// too often lately; failures counted.
    pub fn authenticate_from(
        &self,
        addr: Option<std::net::IpAddr>,
        dev_id: &str,
        token: &str,
    ) -> Option<::egw::Grant> {
        let now = std::time::Instant::now();
        let keys = [
            Some(format!("id:{dev_id}")),
            addr.map(|a| format!("addr:{a}")),
        ];
        if keys
            .iter()
            .flatten()
            .any(|k| self.egw_failures.check(k, now).is_some())
        {
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "egw", "reason" => "throttled").increment(1);
            return None;
        }
        let grant = self.authenticate(dev_id, token);
        if grant.is_none() {
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "egw", "reason" => "credentials").increment(1);
            for k in keys.into_iter().flatten() {
                self.egw_failures.failed(k, now);
            }
        }
        grant
    }

    /// Decides an EGW login: a configured developer (its apps, or all), or an app's own
    /// `app_id` + `app_secret` (that app only, while online).
    pub fn authenticate(&self, dev_id: &str, token: &str) -> Option<::egw::Grant> {
        if let Some(d) = self.egw.developers.iter().find(|d| d.dev_id == dev_id) {
            return crate::auth::secret::same(&d.token, token).then(|| {
                if d.apps.is_empty() {
                    ::egw::Grant::AllApps
                } else {
                    ::egw::Grant::Apps(d.apps.iter().cloned().collect())
                }
            });
        }
        let app = self.store.app(dev_id).ok().flatten()?;
        (app.status == "online" && crate::auth::secret::verify(&app.app_secret, token))
            .then(|| ::egw::Grant::Apps([app.app_id].into()))
    }
}

/// The `events` part of `/healthz`: the NATS sink's state, when it runs.
pub fn health(platform: &Platform) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    match &platform.nats {
        None => serde_json::json!({ "nats": "off" }),
        Some(s) => serde_json::json!({ "nats": {
            "connected": s.connected.load(Relaxed),
            "stream_ready": s.stream_ready.load(Relaxed),
            "received": s.received.load(Relaxed),
            "acked": s.acked.load(Relaxed),
            "duplicates": s.duplicates.load(Relaxed),
            "retried": s.retried.load(Relaxed),
            "dropped": s.dropped.load(Relaxed),
            "queued": s.queued.load(Relaxed),
        }}),
    }
}
