//! `[cluster]`: this node's id and the lease bucket (documented with its defaults in
//! `config/bridge.toml`). Off unless `node_id` is set.

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::events::config::NatsConfig;

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Several bridge nodes sharing the same PTT accounts through leases in a JetStream KV bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster; unset = no cluster (every account is connected).
    pub node_id: Option<String>,
    /// NATS server URL(s) for the leases, comma-separated; unset = `nats.url`. TLS and credentials are
    /// `[nats]`'s (`tls_ca_file`, `tls_required`, `creds_file`, `user`/`password`).
    pub url: Option<String>,
    /// JetStream KV bucket of the leases, created at start if missing.
    pub bucket: String,
    /// Replicas of a newly created bucket (3 in a 3-server NATS cluster).
    pub replicas: usize,
    /// Lease time: a dead owner's accounts are taken over this long after its last renewal
    /// (renewed every third of it).
    pub lease_ms: u64,
    /// JetStream stream of the replicated event log (one order of every node's events),
    /// created at start if missing with `replicas` copies.
    pub event_stream: String,
    /// Entries the event log keeps (the oldest go first); a node that starts replays it all.
    pub event_max_msgs: i64,
    /// Age after which event log entries go (seconds).
    pub event_max_age_s: u64,
    /// Drafts waiting to be sent to the event log; when full, new ones are dropped and counted.
    pub event_outbox: usize,
    /// How long a node waits for a node's missing event log entry, its later ones held back,
    /// before it writes a give-up so they go on (that node died before re-sending it).
    pub event_give_up_ms: u64,
    /// How long a request routed to another node (RTCPeer signalling, a platform command)
    /// waits for its answer before the client gets the protocol's error.
    pub route_timeout_ms: u64,
    /// A draining node (operator drain or `SIGTERM`) hands an account over once no talk burst is
    /// in progress in its channel, waiting at most this long before handing it over anyway.
    pub drain_max_wait_ms: u64,
    /// A node must have been live this long before the others hand it leases to rebalance
    /// (nodes that come and go quickly move nothing).
    pub rebalance_settle_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            url: None,
            bucket: "pttbridge_leases".into(),
            replicas: 1,
            event_stream: "pttbridge_eventlog".into(),
            event_max_msgs: 1_000_000,
            event_max_age_s: 7 * 86_400,
            event_outbox: 10_000,
            event_give_up_ms: 30_000,
            lease_ms: 3000,
            route_timeout_ms: 2000,
            drain_max_wait_ms: 2000,
            rebalance_settle_ms: 10_000,
        }
    }
}

impl ClusterConfig {
    /// Whether this bridge is a cluster node.
    pub fn enabled(&self) -> bool {
        self.node_id.is_some()
    }

    /// The lease time.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// How long a routed request waits for its answer.
    pub fn route_timeout(&self) -> Duration {
        Duration::from_millis(self.route_timeout_ms)
    }

    /// Longest wait for an idle floor before a draining node hands an account over.
    pub fn drain_max_wait(&self) -> Duration {
        Duration::from_millis(self.drain_max_wait_ms)
    }

    /// How long a node must be live before leases are handed over to it.
    pub fn rebalance_settle(&self) -> Duration {
        Duration::from_millis(self.rebalance_settle_ms)
    }

    /// The URL to connect to.
    pub fn nats_url<'a>(&'a self, nats: &'a NatsConfig) -> Option<&'a str> {
        self.url.as_deref().or(nats.url.as_deref())
    }

    /// What each of the node's NATS clients (leases, event log, records, routing) connects
    /// with: the node's id, the servers and `[nats]`'s TLS and credentials.
    pub fn connection(&self, nats: &NatsConfig) -> anyhow::Result<Connection> {
        use anyhow::Context as _;
        let node_id = self
            .node_id
            .clone()
            .context("cluster.node_id: not set (the cluster is off)")?;
        let url = self
            .nats_url(nats)
            .context("cluster.url: not set")?
            .to_string();
        let options = crate::events::nats::connect_options(nats)?;
        Ok(Connection {
            node_id,
            url,
            options,
        })
    }

    /// Checks what the types cannot.
    pub fn validate(&self, nats: &NatsConfig) -> Result<(), ConfigError> {
        let Some(id) = &self.node_id else {
            return Ok(());
        };
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "cluster.node_id",
                "1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if self.nats_url(nats).is_none() {
            return Err(invalid(
                "cluster.url",
                "set it (or nats.url): the leases live in NATS JetStream",
            ));
        }
        if self.bucket.is_empty()
            || !self
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "cluster.bucket",
                "letters, digits, '-' or '_' (a JetStream KV bucket name)",
            ));
        }
        ConfigError::check_range("cluster.replicas", self.replicas, 1..=5)?;
        ConfigError::check_range("cluster.lease_ms", self.lease_ms, 1_000..=600_000)?;
        if self.event_stream.is_empty()
            || self.event_stream.len() > 64
            || !self
                .event_stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "cluster.event_stream",
                "1 to 64 letters, digits, '-' or '_' (a JetStream stream name)",
            ));
        }
        ConfigError::check_range(
            "cluster.event_max_msgs",
            self.event_max_msgs,
            1_000..=1_000_000_000,
        )?;
        ConfigError::check_range(
            "cluster.event_max_age_s",
            self.event_max_age_s,
            60..=366 * 86_400,
        )?;
        ConfigError::check_range("cluster.event_outbox", self.event_outbox, 16..=1_000_000)?;
        ConfigError::check_range(
            "cluster.event_give_up_ms",
            self.event_give_up_ms,
            1_000..=3_600_000,
        )?;
        ConfigError::check_range(
            "cluster.route_timeout_ms",
            self.route_timeout_ms,
            100..=30_000,
        )?;
        ConfigError::check_range(
            "cluster.drain_max_wait_ms",
            self.drain_max_wait_ms,
            0..=60_000,
        )?;
        ConfigError::check_range(
            "cluster.rebalance_settle_ms",
            self.rebalance_settle_ms,
            0..=3_600_000,
        )?;
        Ok(())
    }
}

/// A cluster node's NATS connection settings ([`ClusterConfig::connection`]).
pub struct Connection {
    /// `cluster.node_id`.
    pub node_id: String,
    /// The servers (`cluster.url`, else `nats.url`; comma-separated for a NATS cluster).
    pub url: String,
    /// `[nats]`'s TLS and credentials.
    pub options: async_nats::ConnectOptions,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_name_their_key() {
        let nats = NatsConfig::default();
        let off = ClusterConfig::default();
        assert!(off.validate(&nats).is_ok(), "off needs nothing");
        let on = ClusterConfig {
            node_id: Some("a".into()),
            ..Default::default()
        };
        let key = |c: &ClusterConfig| match c.validate(&nats) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(key(&on), "cluster.url");
        let on = ClusterConfig {
            url: Some("nats://127.0.0.1:4222".into()),
            ..on
        };
        assert!(on.validate(&nats).is_ok());
        for (c, k) in [
            (
                ClusterConfig {
                    node_id: Some("a b".into()),
                    ..on.clone()
                },
                "cluster.node_id",
            ),
            (
                ClusterConfig {
                    lease_ms: 10,
                    ..on.clone()
                },
                "cluster.lease_ms",
            ),
            (
                ClusterConfig {
                    route_timeout_ms: 10,
                    ..on.clone()
                },
                "cluster.route_timeout_ms",
            ),
            (
                ClusterConfig {
                    drain_max_wait_ms: 60_001,
                    ..on.clone()
                },
                "cluster.drain_max_wait_ms",
            ),
            (
                ClusterConfig {
                    rebalance_settle_ms: 3_600_001,
                    ..on.clone()
                },
                "cluster.rebalance_settle_ms",
            ),
            (
                ClusterConfig {
                    event_give_up_ms: 999,
                    ..on.clone()
                },
                "cluster.event_give_up_ms",
            ),
            (
                ClusterConfig {
                    replicas: 0,
                    ..on.clone()
                },
                "cluster.replicas",
            ),
            (
                ClusterConfig {
                    bucket: "a.b".into(),
                    ..on.clone()
                },
                "cluster.bucket",
            ),
            (
                ClusterConfig {
                    event_stream: "a.b".into(),
                    ..on.clone()
                },
                "cluster.event_stream",
            ),
            (
                ClusterConfig {
                    event_outbox: 0,
                    ..on.clone()
                },
                "cluster.event_outbox",
            ),
        ] {
            assert_eq!(key(&c), k);
        }
    }
}
