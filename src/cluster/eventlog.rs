//! The replicated event log over NATS JetStream (issue 22, item 3): one stream that every node
//! publishes its drafts to and every node reads in order, so `/events` and EGW on any node
//! carry every node's events with the same contiguous per-app versions. The rules are
//! [`super::log`]'s; this is the IO: a publisher (bounded outbox, acks pipelined through one
//! subscription and the sans-IO [`AckWindow`] as in the single-node sink, in-order re-send
//! after a failure with the same `Nats-Msg-Id`, backoff with jitter) and a consumer (an ordered consumer from the
//! last applied stream sequence, recreated after any error).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use logsafe::esc;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::ClusterConfig;
use super::log::{self, Admit, Control, LogEntry, Out, Record, Sequencer, Snapshot};
use crate::events::acks::{AckWindow, Outcome, requeue};
use crate::events::config::NatsConfig;
use crate::events::nats::{NotSent, send_with_reply, subscribe_acks, take_acks};
use crate::hub::EventBus;
use crate::hub::bus::Stamped;

/// Acks outstanding at once on a JetStream context of [`connect`] (shared records, leases).
const IN_FLIGHT: usize = 256;

/// The event log's publishes awaiting their ack at once (its [`AckWindow`]): the log's
/// [`log::ORIGIN_WINDOW`], which readers rely on — an entry is sent only once every one that
/// many before it was stored.
const WINDOW: usize = log::ORIGIN_WINDOW as usize;

/// A publish not acked within this is failed and, with everything after it, sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest entry sent (bytes of JSON); a larger draft is sent as a skip and counted. Well under
/// NATS's default 1 MiB payload limit.
const MAX_ENTRY: usize = 64 * 1024;

/// The longest pull of the log's consumer (its idle heartbeat is half of it).
pub(super) const CONSUMER_EXPIRES: Duration = Duration::from_secs(2);

/// The snapshot's key in the `<event_stream>_snapshots` bucket.
const SNAPSHOT_KEY: &str = "latest";

/// Largest snapshot written (bytes of JSON), under NATS's default 1 MiB payload limit; a
/// larger state is not snapshotted (logged, counted), and a starting node replays instead.
const MAX_SNAPSHOT: usize = 900 * 1024;

/// A snapshot is also written this long after the last one when entries were applied since,
/// so a quiet site's entries never age out of the stream before a snapshot covers them.
const SNAPSHOT_PERIOD: Duration = Duration::from_secs(600);

/// Counters of the event log (also exported as metrics).
#[derive(Debug, Default)]
pub struct LogStats {
    /// Entries stored by JetStream (first time).
    pub published: AtomicU64,
    /// Entries JetStream acknowledged as duplicates of a re-send.
    pub duplicates: AtomicU64,
    /// Publishes that failed and were queued again.
    pub retried: AtomicU64,
    /// Entries applied to this node's bus.
    pub applied: AtomicU64,
    /// Entries dropped as stale (see `log.rs`).
    pub stale: AtomicU64,
    /// Entries held back behind a missing one of their origin, now.
    pub held: AtomicU64,
    /// Origin sequences given up (never stored).
    pub given_up: AtomicU64,
    /// Give-up records this node wrote.
    pub give_ups_written: AtomicU64,
    /// Stream entries that were not log entries.
    pub unreadable: AtomicU64,
    /// The last stream sequence applied.
    pub applied_seq: AtomicU64,
    /// Drafts taken from the bus and not acknowledged yet.
    pub unacked: AtomicU64,
    /// Whether the consumer is reading the stream.
    pub reading: AtomicBool,
}

impl LogStats {
    /// `/healthz`'s `event_log` object.
    pub fn to_json(&self) -> serde_json::Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "reading": self.reading.load(Ordering::Relaxed),
            "applied_seq": n(&self.applied_seq),
            "applied": n(&self.applied),
            "published": n(&self.published),
            "duplicates": n(&self.duplicates),
            "retried": n(&self.retried),
            "unacked": n(&self.unacked),
            "stale": n(&self.stale),
            "held": n(&self.held),
            "given_up": n(&self.given_up),
            "unreadable": n(&self.unreadable),
        })
    }
}

/// The running event log of this node.
#[derive(Debug)]
pub struct EventLog {
    /// Its counters.
    pub stats: Arc<LogStats>,
    ender: RunEnder,
}

/// Says that other nodes' runs are over (their presence lapsed): writes a
/// [`Control::RunOver`] for each, in the background, so what they reported ends everywhere
/// ([`super::runs`]).
#[derive(Debug, Clone)]
pub struct RunEnder {
    run: String,
    tx: mpsc::Sender<String>,
}

impl RunEnder {
    /// This node's own run (`<node>/<boot id>`), which its presence names.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Run `run` of another node is over. Dropped (and counted) if many are waiting already:
    /// other nodes write the same record.
    pub fn end(&self, run: String) {
        if self.tx.try_send(run).is_err() {
            metrics::counter!("pttbridge_cluster_log_dropped_total", "reason" => "run_over_full")
                .increment(1);
        }
    }
}

impl EventLog {
    /// Puts `bus` in cluster mode and starts the publisher and the consumer (connecting in the
    /// background, retrying). Call before anything publishes on `bus`.
    pub fn start(
        config: &ClusterConfig,
        nats: &NatsConfig,
        bus: Arc<EventBus>,
    ) -> anyhow::Result<Self> {
        let super::config::Connection {
            node_id,
            url,
            options,
        } = config.connection(nats)?;
        // One run of this node: a restarted node's sequence 1 is not its previous run's.
        let origin = format!("{node_id}/{:08x}", rand::random::<u32>());
        let (tx, rx) = mpsc::channel(config.event_outbox);
        bus.replicate(tx);
        let (end_tx, ends) = mpsc::channel(64);
        let stats = Arc::new(LogStats::default());
        let io = Io {
            config: config.clone(),
            url,
            options,
            stats: stats.clone(),
        };
        let span = info_span!("eventlog", node = %node_id);
        tokio::spawn(
            {
                let io = io.clone();
                let origin = origin.clone();
                let bus = bus.clone();
                async move {
                    let js = io.jetstream().await;
                    tokio::spawn(
                        io.clone()
                            .consume(js.clone(), bus, origin.clone())
                            .in_current_span(),
                    );
                    tokio::spawn(
                        io.clone()
                            .end_runs(js.clone(), origin.clone(), ends)
                            .in_current_span(),
                    );
                    io.publish(js, origin, rx).await;
                }
            }
            .instrument(span),
        );
        info!(origin = %origin, stream = %config.event_stream, "cluster event log starting");
        Ok(Self {
            stats,
            ender: RunEnder {
                run: origin,
                tx: end_tx,
            },
        })
    }

    /// The handle that ends other nodes' runs (see [`RunEnder`]).
    pub fn ender(&self) -> RunEnder {
        self.ender.clone()
    }

    /// Waits (at most `limit`) until every draft taken so far is stored in the stream.
    pub async fn flushed(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.stats.unacked.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    unacked = self.stats.unacked.load(Ordering::Relaxed),
                    "event log: drafts not stored before the process ends"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Clone)]
struct Io {
    config: ClusterConfig,
    url: String,
    options: async_nats::ConnectOptions,
    stats: Arc<LogStats>,
}

/// Backoff with jitter: half of `base` plus up to half again (no two nodes retry in step).
pub(super) fn jitter(base: Duration) -> Duration {
    let ms = base.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2))
}

pub(super) fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(Duration::from_secs(2))
}

/// A JetStream context on `url` (comma-separated servers), connecting until it works and
/// reconnecting for ever with backoff and jitter.
pub(super) async fn connect(url: &str, options: &async_nats::ConnectOptions) -> jetstream::Context {
    let client = loop {
        let urls: Vec<&str> = url.split(',').map(str::trim).collect();
        let options = options
            .clone()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| {
                jitter(Duration::from_millis(50u64 << attempt.min(6)).min(Duration::from_secs(2)))
            });
        match options.connect(urls).await {
            Ok(c) => break c,
            Err(e) => {
                warn!(error = %esc(e.to_string()), "cluster: cannot reach NATS; retrying");
                tokio::time::sleep(jitter(Duration::from_secs(1))).await;
            }
        }
    };
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .max_ack_inflight(IN_FLIGHT)
        .build(client)
}

/// An ordered consumer of `subject` in `stream`, from the entry after `applied`.
pub(super) async fn ordered_after(
    stream: &jetstream::stream::Stream,
    subject: String,
    applied: u64,
) -> anyhow::Result<consumer::pull::Ordered> {
    let deliver_policy = match applied {
        0 => consumer::DeliverPolicy::All,
        n => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: n + 1,
        },
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy,
            filter_subject: subject,
            // Pulls expire (and the server heartbeats) within this: a consumer lost with its
            // nats-server is found missing after two heartbeats (2 s), not 30 s.
            max_expires: CONSUMER_EXPIRES,
            ..Default::default()
        })
        .await
        .context("create consumer")?;
    consumer.messages().await.context("messages")
}

/// A record ready to send (kept in the window until acked: a failed one is sent again as is).
struct Outgoing {
    /// Its origin sequence.
    seq: u64,
    /// Its `Nats-Msg-Id`.
    id: String,
    body: Bytes,
}

/// Hands `out` to the client with the reply subject of its window slot; false when the client
/// did not take it (the slot then fails, and nothing more is sent until the window drained).
async fn send(
    client: &async_nats::Client,
    subject: &str,
    inbox: &str,
    window: &mut AckWindow<Outgoing>,
    out: Outgoing,
) -> bool {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_MESSAGE_ID, out.id.as_str());
    let payload = out.body.clone();
    let id = window.push(out, Instant::now());
    let reply = format!("{inbox}.{id}");
    match send_with_reply(
        client,
        subject.to_string(),
        reply,
        headers,
        payload,
        ACK_TIMEOUT,
    )
    .await
    {
        Ok(()) => true,
        Err(NotSent { why, .. }) => {
            // Too large cannot happen below MAX_ENTRY with NATS's default limit; a server set
            // lower is retried (and logged) like any other failure rather than lose the entry.
            debug!(error = %esc(&why), "event log: publish not sent");
            window.ack(id, Outcome::Failed(why));
            false
        }
    }
}

/// Since when (by this node's clock) each origin has waited behind the same missing entry.
struct Waiting(std::collections::HashMap<(String, u64), tokio::time::Instant>);

impl Waiting {
    fn new() -> Self {
        Self(std::collections::HashMap::new())
    }

    /// Takes the sequencer's `(origin, first missing, last held)` now; returns `(origin,
    /// last held)` for those waiting on the same missing one for `after` (each once per
    /// `after`: a give-up that was lost is written again).
    fn update<'a>(
        &mut self,
        now_waiting: impl Iterator<Item = (&'a str, u64, u64)>,
        now: tokio::time::Instant,
        after: Duration,
    ) -> Vec<(String, u64)> {
        let mut overdue = Vec::new();
        let mut still = std::collections::HashMap::new();
        for (origin, missing, last_held) in now_waiting {
            let key = (origin.to_string(), missing);
            let mut since = self.0.get(&key).copied().unwrap_or(now);
            if now.duration_since(since) >= after {
                overdue.push((origin.to_string(), last_held));
                since = now;
            }
            still.insert(key, since);
        }
        self.0 = still;
        overdue
    }
}

impl Io {
    fn subject(&self) -> String {
        format!("{}.entries", self.config.event_stream)
    }

    fn snapshot_bucket(&self) -> String {
        format!("{}_snapshots", self.config.event_stream)
    }

    /// Entries between two snapshots: a tenth of what the stream keeps, so a snapshot always
    /// lies inside it.
    fn snapshot_every(&self) -> u64 {
        (self.config.event_max_msgs as u64 / 10).clamp(100, 10_000)
    }

    /// Logs and counts origin sequences the rules gave up (they were never stored).
    fn gave_up(&self, origin: &str, seqs: std::ops::Range<u64>) {
        let n = seqs.end - seqs.start;
        self.stats.given_up.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("pttbridge_cluster_log_given_up_total").increment(n);
        static GAVE_UP: logsafe::RateLimit = logsafe::RateLimit::warn("event log gave up");
        if GAVE_UP.allow() {
            warn!(origin = %esc(origin), from = seqs.start, to = seqs.end, "event log: an origin's entries were never stored; given up, its later ones go on");
        }
    }

    /// Writes a [`Control::GiveUp`] for every origin whose entries have waited behind the same
    /// missing one for `event_give_up_ms` (by this node's clock; the record's place in the
    /// stream is what every node acts on). Sent in the background: reading goes on.
    fn give_up_overdue(&self, js: &jetstream::Context, seq: &Sequencer, waiting: &mut Waiting) {
        let now = tokio::time::Instant::now();
        let after = Duration::from_millis(self.config.event_give_up_ms);
        let overdue = waiting.update(seq.waiting(), now, after);
        for (origin, below) in overdue {
            let record = Record::from(Control::GiveUp { origin, below });
            tokio::spawn(
                self.clone()
                    .write_control(js.clone(), record)
                    .in_current_span(),
            );
        }
    }

    /// Writes a control record (a give-up, a run over) with its `Nats-Msg-Id`, so the copies
    /// several nodes write are stored once; a failure is logged (the next check writes it
    /// again).
    async fn write_control(self, js: jetstream::Context, record: Record) {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, record.message_id().as_str());
        let sent = js
            .publish_with_headers(self.subject(), headers, record.to_json().into())
            .await;
        let stored = match sent {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => {
                if matches!(record, Record::Control(Control::GiveUp { .. })) {
                    self.stats.give_ups_written.fetch_add(1, Ordering::Relaxed);
                }
                warn!(?record, "event log: control record written");
            }
            Err(e) => warn!(error = %esc(e), ?record, "event log: control record not stored"),
        }
    }

    /// Writes a [`Control::RunOver`] for each run [`RunEnder::end`] names, in the name of
    /// `origin` (this node's run).
    async fn end_runs(
        self,
        js: jetstream::Context,
        origin: String,
        mut ends: mpsc::Receiver<String>,
    ) {
        while let Some(run) = ends.recv().await {
            let time_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let record = Record::from(Control::RunOver {
                origin: run,
                by: origin.clone(),
                time_ms,
            });
            self.clone().write_control(js.clone(), record).await;
        }
    }

    /// The latest snapshot, if there is a readable one.
    async fn read_snapshot(&self, js: &jetstream::Context) -> Option<Snapshot> {
        let kv = js.get_key_value(self.snapshot_bucket()).await.ok()?;
        let entry = kv.get(SNAPSHOT_KEY).await.ok()??;
        match serde_json::from_slice(&entry) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %esc(e.to_string()), "event log: snapshot unreadable; not used");
                None
            }
        }
    }

    /// Writes `snap` unless the bucket holds a later one already (several nodes write them).
    async fn write_snapshot(self, js: jetstream::Context, snap: Snapshot) {
        let body = match serde_json::to_vec(&snap) {
            Ok(b) if b.len() <= MAX_SNAPSHOT => b,
            Ok(b) => {
                static BIG: logsafe::RateLimit =
                    logsafe::RateLimit::warn("event log snapshot too large");
                if BIG.allow() {
                    warn!(
                        bytes = b.len(),
                        "event log: state too large to snapshot; nodes that start replay the stream"
                    );
                }
                metrics::counter!("pttbridge_cluster_log_snapshots_total", "result" => "too_large")
                    .increment(1);
                return;
            }
            Err(_) => return,
        };
        let at = snap.sequencer.applied();
        if self
            .read_snapshot(&js)
            .await
            .is_some_and(|s| s.sequencer.applied() >= at)
        {
            return;
        }
        let written = match js.get_key_value(self.snapshot_bucket()).await {
            Ok(kv) => kv.put(SNAPSHOT_KEY, Bytes::from(body)).await.is_ok(),
            Err(_) => false,
        };
        let result = if written { "written" } else { "failed" };
        metrics::counter!("pttbridge_cluster_log_snapshots_total", "result" => result).increment(1);
        debug!(at, result, "event log snapshot");
    }

    /// Where this node reads on, at its start and after a gap in the stream (see
    /// [`log::start`]): a snapshot's state, or on from what it applied.
    async fn begin(
        &self,
        js: &jetstream::Context,
        bus: &EventBus,
        seq: &mut Sequencer,
    ) -> anyhow::Result<()> {
        let mut stream = js
            .get_stream(&self.config.event_stream)
            .await
            .context("get stream")?;
        let first = stream
            .info()
            .await
            .context("stream info")?
            .state
            .first_sequence;
        let snap = self.read_snapshot(js).await;
        let at = snap.as_ref().map(|s| s.sequencer.applied());
        match log::start(seq.applied(), first, at) {
            log::Start::Snapshot => {
                let snap = snap.expect("start chose it");
                info!(
                    at = snap.sequencer.applied(),
                    from = seq.applied(),
                    "event log: going on from a snapshot"
                );
                bus.restore(snap.apps);
                *seq = snap.sequencer;
            }
            log::Start::Continue => {}
            log::Start::Incomplete => {
                warn!(
                    first,
                    applied = seq.applied(),
                    "event log: entries this node had not read were discarded and no snapshot covers them; its versions will differ from the others'"
                );
                metrics::counter!("pttbridge_cluster_log_incomplete_total").increment(1);
                seq.skip(first.saturating_sub(1));
            }
        }
        Ok(())
    }

    /// Connects (retrying) and makes sure the stream and the snapshot bucket exist.
    async fn jetstream(&self) -> jetstream::Context {
        let js = connect(&self.url, &self.options).await;
        let mut backoff = Duration::from_millis(100);
        loop {
            let config = stream::Config {
                name: self.config.event_stream.clone(),
                description: Some("pttbridge cluster event log".into()),
                subjects: vec![self.subject()],
                storage: stream::StorageType::File,
                num_replicas: self.config.replicas,
                max_messages: self.config.event_max_msgs,
                max_age: Duration::from_secs(self.config.event_max_age_s),
                discard: stream::DiscardPolicy::Old,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            };
            // The snapshots' KV bucket, made by hand as the lease bucket is (node.rs says why).
            let snapshots = stream::Config {
                name: format!("KV_{}", self.snapshot_bucket()),
                description: Some("pttbridge cluster event log snapshots".into()),
                subjects: vec![format!("$KV.{}.>", self.snapshot_bucket())],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                allow_rollup: true,
                allow_direct: false,
                num_replicas: self.config.replicas,
                ..Default::default()
            };
            let made = match js.get_or_create_stream(config).await {
                Ok(_) => js.get_or_create_stream(snapshots).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match made {
                Ok(()) => return js,
                Err(e) => {
                    warn!(error = %esc(e.to_string()), "event log: stream not ready; retrying");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = next_backoff(backoff);
                }
            }
        }
    }

    /// Sends the bus's drafts in order with up to [`WINDOW`] acks outstanding, each with the
    /// reply subject `<inbox>.<n>` of its [`AckWindow`] slot; one subscription takes every ack.
    /// After a failure nothing new is sent until every outstanding ack resolved; then what was
    /// not acknowledged is sent again, in order, with its `Nats-Msg-Id` (JetStream drops a
    /// re-send it stored already: `duplicate`).
    async fn publish(
        self,
        js: jetstream::Context,
        origin: String,
        mut rx: mpsc::Receiver<Stamped>,
    ) {
        let client = js.client();
        let subject = self.subject();
        let inbox = client.new_inbox();
        let mut acks = subscribe_acks(&client, &inbox).await;
        let outbox_gauge = metrics::gauge!("pttbridge_cluster_log_outbox_entries");
        let stored =
            metrics::counter!("pttbridge_cluster_log_published_total", "duplicate" => "false");
        let duplicates =
            metrics::counter!("pttbridge_cluster_log_published_total", "duplicate" => "true");
        let mut queue: VecDeque<Outgoing> = VecDeque::new();
        let mut window: AckWindow<Outgoing> = AckWindow::new(ACK_TIMEOUT);
        let mut failed: Vec<Outgoing> = Vec::new();
        let mut backoff = Duration::from_millis(100);
        let mut open = true;
        let connects = client.statistics();
        // The connection the window's publishes went out on (its count of connects).
        let mut epoch = connects.connects.load(Ordering::Relaxed);
        loop {
            // A publish lost with a broken connection is best stored soon after the later ones
            // that went through (the readers hold those until it comes): after a reconnect,
            // everything still in the window fails at once and is sent again, in order, before
            // anything new; while disconnected nothing is handed to the client (it would send
            // it after the reconnect, ahead of the re-sends).
            let now_epoch = connects.connects.load(Ordering::Relaxed);
            if now_epoch != epoch {
                window.fail_all("the NATS connection was re-made");
                epoch = now_epoch;
            }
            // What has an outcome, in publish order.
            while let Some((out, outcome)) = window.pop() {
                match outcome {
                    Outcome::Stored { duplicate } => {
                        if backoff > Duration::from_millis(100) {
                            info!("event log: publishing again");
                        }
                        backoff = Duration::from_millis(100);
                        self.stats.unacked.fetch_sub(1, Ordering::Relaxed);
                        let (c, m) = if duplicate {
                            (&self.stats.duplicates, &duplicates)
                        } else {
                            (&self.stats.published, &stored)
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                        m.increment(1);
                    }
                    Outcome::Failed(why) => {
                        if failed.is_empty() {
                            warn!(error = %esc(&why), "event log: publish failed; re-sending in order");
                        }
                        failed.push(out);
                    }
                }
            }
            if window.is_empty() && !failed.is_empty() {
                self.stats
                    .retried
                    .fetch_add(failed.len() as u64, Ordering::Relaxed);
                metrics::counter!("pttbridge_cluster_log_publish_failures_total")
                    .increment(failed.len() as u64);
                requeue(&mut failed, &mut queue);
                tokio::time::sleep(jitter(backoff)).await;
                backoff = next_backoff(backoff);
                continue;
            }
            // After taking the outcomes, so the slots they freed are used now, not after the
            // next wake-up (which may be a long time coming when the bus is quiet).
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            // The readers' rule (log.rs): sequence `s + WINDOW` goes only once `s` is stored,
            // counted in sequences, not in slots (a re-send shares the window with new ones).
            while connected && failed.is_empty() && window.len() < WINDOW {
                let Some(next) = queue.front() else { break };
                if window
                    .front()
                    .is_some_and(|oldest| next.seq >= oldest.seq + log::ORIGIN_WINDOW)
                {
                    break;
                }
                let Some(out) = queue.pop_front() else { break };
                if !send(&client, &subject, &inbox, &mut window, out).await {
                    break;
                }
            }
            outbox_gauge.set((queue.len() + window.len()) as f64);
            if !open && queue.is_empty() && window.is_empty() {
                return;
            }
            let deadline = window.deadline();
            tokio::select! {
                biased;
                msg = acks.next(), if !window.is_empty() => match msg {
                    Some(msg) => take_acks(&mut window, &msg, &mut acks, WINDOW),
                    None => {
                        // The client ended the subscription: take the acks on a new one (what
                        // was in flight meanwhile times out and is re-sent).
                        warn!("event log: ack subscription ended; subscribing again");
                        acks = subscribe_acks(&client, &inbox).await;
                    }
                },
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    window.expire(Instant::now());
                }
                () = tokio::time::sleep(Duration::from_millis(50)), if !connected => {}
                s = rx.recv(), if open && queue.len() < self.config.event_outbox => match s {
                    Some(s) => {
                        self.enqueue(&origin, s, &mut queue);
                        // Take what else is ready, so it goes out in one batch.
                        while queue.len() < self.config.event_outbox {
                            match rx.try_recv() {
                                Ok(s) => self.enqueue(&origin, s, &mut queue),
                                Err(_) => break,
                            }
                        }
                    }
                    None => open = false,
                },
            }
        }
    }

    /// Makes the record of draft `s` and queues it. One too large to send goes as a
    /// [`Control::Skip`] in its place (counted), so readers do not wait for it.
    fn enqueue(&self, origin: &str, s: Stamped, queue: &mut VecDeque<Outgoing>) {
        let seq = s.seq;
        let mut record = Record::Entry(LogEntry::new(origin, s));
        let mut body = record.to_json();
        if body.len() > MAX_ENTRY {
            metrics::counter!("pttbridge_cluster_log_dropped_total", "reason" => "too_large")
                .increment(1);
            record = Record::from(Control::Skip {
                origin: origin.to_string(),
                seq,
            });
            body = record.to_json();
        }
        self.stats.unacked.fetch_add(1, Ordering::Relaxed);
        queue.push_back(Outgoing {
            seq,
            id: record.message_id(),
            body: Bytes::from(body),
        });
    }

    /// Reads the stream in order from the last applied sequence and applies what the
    /// sequencer admits to `bus`. Any error (NATS gone, consumer lost with its server) makes a
    /// new consumer from where it stopped, after a backoff.
    async fn consume(self, js: jetstream::Context, bus: Arc<EventBus>, origin: String) {
        let mut seq = Sequencer::new();
        let mut backoff = Duration::from_millis(100);
        let lag = metrics::gauge!("pttbridge_cluster_log_lag_entries");
        loop {
            // At the start, and after every stop (a gap is one): where to read on.
            let before = seq.applied();
            let read = match self.begin(&js, &bus, &mut seq).await {
                Ok(()) => self.read(&js, &bus, &origin, &mut seq, &lag).await,
                Err(e) => Err(e),
            };
            if seq.applied() > before {
                backoff = Duration::from_millis(100);
            }
            match read {
                Ok(()) => {}
                Err(e) => {
                    warn!(error = %esc(format!("{e:#}")), applied = seq.applied(), "event log: reading stopped; resuming");
                }
            }
            self.stats.reading.store(false, Ordering::Relaxed);
            metrics::counter!("pttbridge_cluster_log_consumer_restarts_total").increment(1);
            tokio::time::sleep(jitter(backoff)).await;
            backoff = next_backoff(backoff);
        }
    }

    async fn read(
        &self,
        js: &jetstream::Context,
        bus: &EventBus,
        origin: &str,
        seq: &mut Sequencer,
        lag: &metrics::Gauge,
    ) -> anyhow::Result<()> {
        let stream = js
            .get_stream(&self.config.event_stream)
            .await
            .context("get stream")?;
        let mut messages = ordered_after(&stream, self.subject(), seq.applied()).await?;
        self.stats.reading.store(true, Ordering::Relaxed);
        info!(from = seq.applied() + 1, "event log: reading");
        let mut stream = stream;
        let mut idle = tokio::time::interval(CONSUMER_EXPIRES * 2);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress = (seq.applied(), false);
        let mut since_snapshot = 0u64;
        let mut last_snapshot = tokio::time::Instant::now();
        let mut waiting = Waiting::new();
        let mut held_check = tokio::time::interval(Duration::from_secs(1));
        held_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                m = messages.next() => m,
                _ = held_check.tick() => {
                    self.give_up_overdue(js, seq, &mut waiting);
                    continue;
                }
                _ = idle.tick() => {
                    // A watchdog over the client's own recovery: the stream has entries past
                    // ours and none came for a whole period → a new consumer from here.
                    let behind = match stream.info().await {
                        Ok(info) => info.state.last_sequence > seq.applied(),
                        Err(_) => false,
                    };
                    let stuck = behind && progress.0 == seq.applied();
                    if stuck && progress.1 {
                        anyhow::bail!("no entries for {:?} while the stream has more", CONSUMER_EXPIRES * 4);
                    }
                    progress = (seq.applied(), stuck);
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            let msg = msg.context("next message")?;
            let info = msg
                .info()
                .map_err(|e| anyhow::anyhow!("message info: {e}"))?;
            let (stream_seq, pending) = (info.stream_sequence, info.pending);
            lag.set(pending as f64);
            if stream_seq > seq.applied() + 1 {
                // The stream's limits discarded entries before this node read them (also
                // between `begin` reading where the stream starts and the first delivery).
                anyhow::bail!(
                    "entries {}..{stream_seq} discarded before they were read",
                    seq.applied() + 1
                );
            }
            match Record::parse(&msg.payload) {
                Ok(record) => {
                    let entry = matches!(record, Record::Entry(_));
                    let mut applied = 0u64;
                    let verdict = seq.admit(stream_seq, record, &mut |out| match out {
                        Out::Apply(entry) => {
                            let local = entry.origin == origin;
                            let (draft, time_ms) = entry.into_draft();
                            bus.apply_replicated(draft, time_ms, local);
                            applied += 1;
                        }
                        Out::GaveUp { origin, seqs } => self.gave_up(&origin, seqs),
                    });
                    if applied > 0 {
                        self.stats.applied.fetch_add(applied, Ordering::Relaxed);
                        metrics::counter!("pttbridge_cluster_log_applied_total").increment(applied);
                        since_snapshot += applied;
                    }
                    match verdict {
                        Admit::Stale => {
                            self.stats.stale.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("pttbridge_cluster_log_stale_total").increment(1);
                        }
                        Admit::Replayed => {}
                        Admit::Held | Admit::Ready => {}
                    }
                    // Held entries change only when one is held, or released (more than the
                    // entry itself applied, or a skip or give-up).
                    if verdict == Admit::Held || applied != 1 || !entry {
                        let held = seq.held() as u64;
                        self.stats.held.store(held, Ordering::Relaxed);
                        metrics::gauge!("pttbridge_cluster_log_held_entries").set(held as f64);
                    }
                    if applied > 0
                        && (since_snapshot >= self.snapshot_every()
                            || last_snapshot.elapsed() >= SNAPSHOT_PERIOD)
                    {
                        // Between two records: the bus holds exactly the state after this one.
                        let snap = Snapshot {
                            sequencer: seq.clone(),
                            apps: bus.export(),
                        };
                        tokio::spawn(
                            self.clone()
                                .write_snapshot(js.clone(), snap)
                                .in_current_span(),
                        );
                        since_snapshot = 0;
                        last_snapshot = tokio::time::Instant::now();
                    }
                }
                Err(e) => {
                    seq.skip(stream_seq);
                    self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("pttbridge_cluster_log_unreadable_total").increment(1);
                    static BAD: logsafe::RateLimit =
                        logsafe::RateLimit::warn("bad event log entry");
                    if BAD.allow() {
                        warn!(stream_seq, error = %esc(e.to_string()), "event log entry is not a log entry; skipped");
                    }
                }
            }
            self.stats
                .applied_seq
                .store(seq.applied(), Ordering::Relaxed);
        }
        anyhow::bail!("message stream ended")
    }
}
