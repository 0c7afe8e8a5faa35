//! Shared records (issue 22, item 4): apps and call records written through one JetStream
//! stream and applied to every node's SQLite in stream order, so every node reads and writes
//! the same data and no two drift apart. The store's writes ([`crate::storage::RecordOp`]) are
//! published here; a writer waits until its own operation is applied on its node (and gets the
//! result of applying it: a name taken by an app created a moment earlier on another node is
//! a conflict there too). The last applied sequence is kept in the database, so a node with a
//! database file catches up from where it stopped; one in memory replays the stream.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use logsafe::esc;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use super::config::ClusterConfig;
use super::eventlog::{connect, jitter, next_backoff, ordered_after};
use crate::events::config::NatsConfig;
use crate::storage::{Applied, RecordOp, RecordWriter, Store, StoreError};

/// Results of applied operations kept for their writers (by stream sequence).
const RESULTS: usize = 4096;

/// How long a writer waits for its operation to be stored and applied.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// This node's end of the shared records.
#[derive(Debug)]
pub struct RecordLog {
    name: String,
    subject: String,
    js: tokio::sync::OnceCell<jetstream::Context>,
    ready: tokio::sync::Notify,
    applied: watch::Receiver<u64>,
    results: Mutex<BTreeMap<u64, Result<Applied, String>>>,
}

impl RecordLog {
    /// Puts `store` in cluster mode and starts reading the records stream into it
    /// (connecting in the background, retrying).
    pub fn start(
        config: &ClusterConfig,
        nats: &NatsConfig,
        store: Store,
    ) -> anyhow::Result<Arc<Self>> {
        let super::config::Connection {
            node_id,
            url,
            options,
        } = config.connection(nats)?;
        let name = format!("{}_records", config.event_stream);
        let from = store
            .log_applied(&name)
            .context("storage: shared log position")?;
        let (tx, rx) = watch::channel(from);
        let log = Arc::new(Self {
            subject: format!("{name}.ops"),
            name,
            js: tokio::sync::OnceCell::new(),
            ready: tokio::sync::Notify::new(),
            applied: rx,
            results: Mutex::new(BTreeMap::new()),
        });
        store.replicate(log.clone());
        let replicas = config.replicas;
        let me = log.clone();
        tokio::spawn(
            async move {
                let js = connect(&url, &options).await;
                me.ensure_stream(&js, replicas).await;
                let _ = me.js.set(js.clone());
                me.ready.notify_waiters();
                me.read(js, store, tx).await;
            }
            .instrument(info_span!("records", node = %node_id)),
        );
        Ok(log)
    }

    async fn ensure_stream(&self, js: &jetstream::Context, replicas: usize) {
        let mut backoff = Duration::from_millis(100);
        loop {
            // No limits: the stream is the records (as the database file is); a node in
            // memory replays it all.
            let config = stream::Config {
                name: self.name.clone(),
                description: Some("pttbridge shared records".into()),
                subjects: vec![self.subject.clone()],
                storage: stream::StorageType::File,
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            };
            match js.get_or_create_stream(config).await {
                Ok(_) => return,
                Err(e) => {
                    warn!(error = %esc(e.to_string()), "records: stream not ready; retrying");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = next_backoff(backoff);
                }
            }
        }
    }

    /// Applies the stream to `store` in order from where it stopped, for ever.
    async fn read(&self, js: jetstream::Context, store: Store, tx: watch::Sender<u64>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Err(e) = self.read_once(&js, &store, &tx).await {
                warn!(error = %esc(format!("{e:#}")), applied = *tx.borrow(), "records: reading stopped; resuming");
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = next_backoff(backoff);
        }
    }

    async fn read_once(
        &self,
        js: &jetstream::Context,
        store: &Store,
        tx: &watch::Sender<u64>,
    ) -> anyhow::Result<()> {
        let stream = js.get_stream(&self.name).await.context("get stream")?;
        let applied = *tx.borrow();
        let mut messages = ordered_after(&stream, self.subject.clone(), applied).await?;
        info!(from = applied + 1, "records: reading");
        while let Some(msg) = messages.next().await {
            let msg = msg.context("next message")?;
            let seq = msg
                .info()
                .map_err(|e| anyhow::anyhow!("message info: {e}"))?
                .stream_sequence;
            if seq <= *tx.borrow() {
                continue;
            }
            let result = match serde_json::from_slice::<RecordOp>(&msg.payload) {
                Ok(op) => store
                    .apply_logged(&self.name, seq, &op)
                    .context("storage: applying a shared record")?
                    .map_err(|e| e.to_string()),
                Err(e) => {
                    store
                        .set_log_applied(&self.name, seq)
                        .context("storage: shared log position")?;
                    Err(format!("not a record operation: {e}"))
                }
            };
            if let Err(why) = &result {
                // A conflict (two nodes took one name) fails on every node alike.
                metrics::counter!("pttbridge_cluster_records_refused_total").increment(1);
                tracing::debug!(seq, error = %esc(why), "records: operation refused");
            }
            metrics::counter!("pttbridge_cluster_records_applied_total").increment(1);
            {
                let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
                results.insert(seq, result);
                while results.len() > RESULTS {
                    results.pop_first();
                }
            }
            let _ = tx.send(seq);
        }
        anyhow::bail!("message stream ended")
    }

    async fn write_op(&self, op: RecordOp) -> Result<Applied, StoreError> {
        let unavailable = |why: String| StoreError::Replication(why);
        let js = match self.js.get() {
            Some(js) => js.clone(),
            None => {
                let ready = self.ready.notified();
                match self.js.get() {
                    Some(js) => js.clone(),
                    None => {
                        tokio::time::timeout(WRITE_TIMEOUT, ready)
                            .await
                            .map_err(|_| unavailable("NATS not reached yet".into()))?;
                        self.js
                            .get()
                            .cloned()
                            .ok_or_else(|| unavailable("NATS not reached".into()))?
                    }
                }
            }
        };
        let body = serde_json::to_vec(&op).map_err(|e| unavailable(e.to_string()))?;
        let ack = js
            .publish(self.subject.clone(), Bytes::from(body))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let ack = tokio::time::timeout(WRITE_TIMEOUT, ack)
            .await
            .map_err(|_| unavailable("not stored in time".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        metrics::counter!("pttbridge_cluster_records_written_total").increment(1);
        // Read-your-writes: back only once this node applied it.
        let mut applied = self.applied.clone();
        tokio::time::timeout(WRITE_TIMEOUT, applied.wait_for(|a| *a >= ack.sequence))
            .await
            .map_err(|_| unavailable("stored, not applied here in time".into()))?
            .map_err(|_| unavailable("reader stopped".into()))?;
        let result = self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ack.sequence);
        match result {
            Some(Ok(a)) => Ok(a),
            Some(Err(why)) if why.ends_with("already exists") => Err(StoreError::Conflict(
                why.trim_end_matches(" already exists").to_string(),
            )),
            Some(Err(why)) => Err(unavailable(why)),
            None => Err(unavailable("applied, result no longer kept".into())),
        }
    }
}

impl RecordWriter for RecordLog {
    fn write(
        &self,
        op: RecordOp,
    ) -> Pin<Box<dyn Future<Output = Result<Applied, StoreError>> + Send + '_>> {
        Box::pin(self.write_op(op))
    }
}
