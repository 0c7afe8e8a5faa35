//! The lease driver over NATS JetStream KV: one [`Lease`] per configured PTT account and per
//! console admin session ([`Resource`]), its operations run against the bucket, and the
//! resource connected exactly while this node may act as its owner. Announces what it takes and
//! loses (a hub event and a log line), shows it in `/healthz`, and releases everything when the
//! bridge drains. Keeps this node's presence key in the bucket and watches the others'
//! (`share.rs`): a lease is claimed at once only while this node holds less than its fair
//! share, and the most loaded node hands leases over, one at a time and between talk bursts, to
//! a node that joined later.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use futures_util::StreamExt;
use logsafe::esc;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::ClusterConfig;
use super::eventlog::RunEnder;
use super::lease::{Change, Entry, Lease, Op, Record, Reply, View, WriteError};
use super::resource::{AdminSession, Resource};
use super::share::{Holder, Outlook, PRESENCE_PREFIX, Presence, PresenceRecord, presence_key};
use crate::events::config::NatsConfig;
use crate::hub::event::Draft;
use crate::hub::{EventBus, EventKind};
use crate::sides::ptt::PttSide;

pub use super::resource::account_key;

/// What `/healthz` shows of one lease.
#[derive(Debug, Clone)]
struct LeaseStatus {
    key: String,
    server: String,
    account: String,
    view: View,
    acquired_at: Option<Instant>,
    acting_until: Option<Instant>,
    /// Who holds it, for the fair share.
    holder: Holder,
    /// A hand-over of it waits for a taker (one at a time per node).
    awaiting_taker: bool,
}

/// The node's state for `/healthz`.
#[derive(Debug)]
pub struct ClusterStatus {
    node_id: String,
    lease: Duration,
    bucket: String,
    ready: AtomicBool,
    /// Shutting down (`SIGTERM`): leases released for good.
    draining: AtomicBool,
    /// An operator's drain (`POST /v1/cluster/drain`), undone by undrain.
    operator_drain: watch::Sender<bool>,
    leases: Mutex<Vec<LeaseStatus>>,
    /// The other nodes' presence keys as this node saw them.
    presence: Mutex<Presence>,
    /// How long a node must be live before leases are handed over to it.
    settle: Duration,
    /// A hand-over found its taker: the next one may start (wakes the lease tasks).
    taken: Notify,
    /// This node's event-log run (its presence names it), and what ends others' runs.
    run: Option<String>,
    ender: Option<RunEnder>,
    /// When the bucket's watch last delivered an entry (this node's own presence comes every
    /// third of a lease): a silent watch must not make everybody else look gone.
    watched: Mutex<Option<Instant>>,
}

impl ClusterStatus {
    /// Drains this node (`true`: hand every lease over, each once its channel's floor is idle,
    /// and take no new ones) or undoes it (`false`). Returns whether that changed anything.
    pub fn set_drain(&self, on: bool) -> bool {
        let changed = self.operator_drain.send_if_modified(|d| {
            let changed = *d != on;
            *d = on;
            changed
        });
        if changed {
            info!(node = %self.node_id, drain = on, "operator {} this node", if on { "drains" } else { "undrains" });
        }
        changed
    }

    /// Whether the node is draining (operator drain or shutdown).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || *self.operator_drain.borrow()
    }

    /// `/healthz`'s `cluster` object: this node, the leases it holds (age, expiry) and who owns
    /// the others as seen in the bucket.
    pub fn to_json(&self) -> Value {
        let now = Instant::now();
        let ms = |d: Duration| d.as_millis() as u64;
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let rows: Vec<Value> = leases
            .iter()
            .map(|l| {
                let mut row = json!({ "key": l.key, "server": l.server, "account": l.account });
                let (state, owner, extra) = match &l.view {
                    View::Mine { revision } if l.acting_until.is_some_and(|t| now < t) => (
                        "held",
                        Some(self.node_id.clone()),
                        json!({
                            "revision": revision,
                            "held_ms": l.acquired_at.map(|t| ms(now.duration_since(t))),
                            "expires_in_ms": l.acting_until.map(|t| ms(t.saturating_duration_since(now))),
                        }),
                    ),
                    View::Mine { revision } => ("renewing", None, json!({ "revision": revision })),
                    View::Theirs {
                        owner,
                        revision,
                        seen,
                        lease,
                    } => (
                        "other",
                        owner.clone(),
                        json!({
                            "revision": revision,
                            "unchanged_ms": ms(now.duration_since(*seen)),
                            "lapses_in_ms": ms((*seen + *lease).saturating_duration_since(now)),
                        }),
                    ),
                    View::Free { .. } => ("free", None, json!({})),
                    View::Unknown => ("unknown", None, json!({})),
                };
                let m = row.as_object_mut().expect("object");
                m.insert("state".into(), state.into());
                m.insert("owner".into(), owner.into());
                if let Value::Object(extra) = extra {
                    m.extend(extra);
                }
                row
            })
            .collect();
        // The nodes live now (their presence keys) and what each holds.
        let members = self.presence().live(now);
        let outlook = self.outlook(&leases, &members, now);
        let mut nodes: Vec<String> = vec![self.node_id.clone()];
        nodes.extend(members.iter().map(|m| m.node.clone()));
        let members: Vec<Value> = std::iter::once(json!({
            "node": self.node_id,
            "this": true,
            "draining": self.is_draining(),
            "held": outlook.held(&self.node_id),
        }))
        .chain(members.iter().map(|m| {
            json!({
                "node": m.node,
                "this": false,
                "draining": m.draining,
                "held": outlook.held(&m.node),
                "live_ms": ms(now.duration_since(m.since)),
            })
        }))
        .collect();
        drop(leases);
        json!({
            "node_id": self.node_id,
            "bucket": self.bucket,
            "lease_ms": ms(self.lease),
            "state": if self.is_draining() { "draining" }
                     else if self.ready.load(Ordering::Relaxed) { "ready" } else { "connecting" },
            "nodes": nodes,
            "members": members,
            "fair_share": outlook.share,
            "rebalance_settle_ms": ms(self.settle),
            "leases": rows,
        })
    }

    /// The node acting as owner of lease `key` now (this node only while it may act), or
    /// `None` when nobody is known to (free, unknown, being renewed or taken over).
    pub fn owner(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let l = leases.iter().find(|l| l.key == key)?;
        match &l.view {
            View::Mine { .. } if l.acting_until.is_some_and(|t| now < t) => {
                Some(self.node_id.clone())
            }
            View::Theirs { owner, .. } => owner.clone(),
            _ => None,
        }
    }

    /// The other nodes known: named as owners in the lease table, or live by their presence
    /// keys (a node that holds no lease has consoles and users too).
    pub fn owners(&self) -> Vec<String> {
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = leases
            .iter()
            .filter_map(|l| match &l.view {
                View::Theirs { owner, .. } => owner.clone(),
                _ => None,
            })
            .collect();
        drop(leases);
        out.extend(
            self.presence()
                .live(Instant::now())
                .into_iter()
                .map(|m| m.node),
        );
        out
    }

    fn presence(&self) -> std::sync::MutexGuard<'_, Presence> {
        self.presence.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fair-share view from the lease table and the live nodes.
    fn outlook(
        &self,
        leases: &[LeaseStatus],
        members: &[super::share::Member],
        now: Instant,
    ) -> Outlook {
        let holders: Vec<Holder> = leases.iter().map(|l| l.holder.clone()).collect();
        Outlook::new(
            &self.node_id,
            self.is_draining(),
            &holders,
            members,
            self.settle,
            now,
        )
    }

    /// Whether lease `i` (acting, its channel `idle`: no talk burst, no linked call) should be
    /// handed over now to rebalance; if so it is started here, under the table's lock, so one
    /// lease at a time is handed over.
    fn start_hand_over(&self, i: usize, lease: &mut Lease, idle: bool, now: Instant) -> bool {
        if !idle || !lease.acting(now) || self.is_draining() {
            return false;
        }
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.iter().any(|l| l.awaiting_taker) {
            return false;
        }
        let members = self.presence().live(now);
        if !self
            .outlook(&leases, &members, now)
            .hand_over(&self.node_id)
            || !lease.hand_over()
        {
            return false;
        }
        self.update_row(&mut leases, i, lease, now);
        true
    }

    /// The next operation of lease `i`, its claim held back by the fair-share rule; counted
    /// under the table's lock so that two of this node's leases never both claim as the last
    /// one under the share.
    fn poll(&self, i: usize, lease: &mut Lease, now: Instant) -> Option<Op> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(owner) = lease.lapsed_owner(now) {
            self.presence().lapsed(owner);
        }
        let members = self.presence().live(now);
        let outlook = self.outlook(&leases, &members, now);
        let mine = leases.get(i).is_some_and(|l| l.holder == Holder::Me);
        let held = outlook
            .held(&self.node_id)
            .saturating_sub(usize::from(mine));
        let owner = match lease.holder() {
            Holder::Other(o) => Some(o),
            _ => None,
        };
        lease.set_claim_delay(outlook.claim_delay(held, owner.as_deref(), self.lease));
        let op = lease.poll(now);
        self.update_row(&mut leases, i, lease, now);
        op
    }

    fn update_row(&self, leases: &mut [LeaseStatus], i: usize, lease: &Lease, now: Instant) {
        if let Some(row) = leases.get_mut(i) {
            row.view = lease.view().clone();
            row.acquired_at = lease.acquired_at();
            row.acting_until = lease.acting_until();
            row.holder = lease.holder();
            let awaiting = lease.awaiting_taker(now);
            if row.awaiting_taker && !awaiting {
                self.taken.notify_waiters();
            }
            row.awaiting_taker = awaiting;
        }
    }

    fn set(&self, i: usize, lease: &Lease) {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        self.update_row(&mut leases, i, lease, now);
        let mut counts = [0u32; 4];
        for l in leases.iter() {
            let slot = match &l.view {
                View::Mine { .. } if l.acting_until.is_some_and(|t| now < t) => 0,
                View::Theirs { .. } => 1,
                View::Free { .. } => 2,
                _ => 3,
            };
            counts[slot] += 1;
        }
        for (state, n) in ["held", "other", "free", "unknown"].iter().zip(counts) {
            metrics::gauge!("pttbridge_cluster_leases", "state" => *state).set(f64::from(n));
        }
    }
}

/// A running cluster node.
#[derive(Debug)]
pub struct ClusterNode {
    /// What `/healthz` shows.
    pub status: Arc<ClusterStatus>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ClusterNode {
    /// Starts the node: connects to NATS in the background (retrying), creates the bucket if
    /// missing, and runs one lease per account of `ptt` and per console admin session of
    /// `admins` (all started offline). When `shutdown` turns true, every lease is released and
    /// its resource taken offline first.
    pub fn start(
        config: &ClusterConfig,
        nats: &NatsConfig,
        ptt: Arc<PttSide>,
        admins: Vec<AdminSession>,
        bus: Arc<EventBus>,
        ender: Option<RunEnder>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let super::config::Connection {
            node_id,
            url,
            options,
        } = config.connection(nats)?;
        let resources: Vec<Resource> = ptt
            .accounts
            .iter()
            .cloned()
            .map(Resource::Account)
            .chain(admins.into_iter().map(Resource::ConsoleAdmin))
            .collect();
        let status = Arc::new(ClusterStatus {
            node_id: node_id.clone(),
            lease: config.lease(),
            bucket: config.bucket.clone(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            operator_drain: watch::channel(false).0,
            leases: Mutex::new(
                resources
                    .iter()
                    .map(|r| LeaseStatus {
                        key: r.key(),
                        server: r.server().to_owned(),
                        account: r.username().to_owned(),
                        view: View::Unknown,
                        acquired_at: None,
                        acting_until: None,
                        holder: Holder::Nobody,
                        awaiting_taker: false,
                    })
                    .collect(),
            ),
            presence: Mutex::new(Presence::new(node_id.clone(), config.lease())),
            settle: config.rebalance_settle(),
            taken: Notify::new(),
            run: ender.as_ref().map(|e| e.run().to_string()),
            ender,
            watched: Mutex::new(None),
        });
        let driver = Driver {
            node_id: node_id.clone(),
            config: config.clone(),
            url,
            resources,
            bus,
            status: status.clone(),
        };
        let task = tokio::spawn(
            driver
                .run(options, shutdown)
                .instrument(info_span!("cluster", node = %node_id)),
        );
        Ok(Self {
            status,
            task: Mutex::new(Some(task)),
        })
    }

    /// Waits (at most `limit`) until every lease is released after shutdown began.
    pub async fn drained(&self, limit: Duration) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && tokio::time::timeout(limit, task).await.is_err()
        {
            warn!("cluster leases not all released within {limit:?}; they lapse by themselves");
        }
    }
}

struct Driver {
    node_id: String,
    config: ClusterConfig,
    url: String,
    resources: Vec<Resource>,
    bus: Arc<EventBus>,
    status: Arc<ClusterStatus>,
}

/// Wait between attempts to reach NATS or create the bucket at start.
const START_RETRY: Duration = Duration::from_secs(1);

impl Driver {
    async fn run(self, options: async_nats::ConnectOptions, mut shutdown: watch::Receiver<bool>) {
        let op_timeout = self.op_timeout();
        let options = options
            .request_timeout(Some(op_timeout))
            .retry_on_initial_connect();
        let kv = tokio::select! {
            kv = self.bucket(options) => kv,
            _ = shutdown.wait_for(|s| *s) => {
                // Nothing taken yet, nothing to release.
                self.status.draining.store(true, Ordering::Relaxed);
                return;
            }
        };
        self.status.ready.store(true, Ordering::Relaxed);
        info!(bucket = %self.config.bucket, leases = self.resources.len(), "cluster node ready");
        let mut tasks = JoinSet::new();
        let wakers: Vec<Arc<Notify>> = self
            .resources
            .iter()
            .map(|_| Arc::new(Notify::new()))
            .collect();
        let keys: HashMap<String, Arc<Notify>> = self
            .resources
            .iter()
            .zip(&wakers)
            .map(|(r, w)| (r.key(), w.clone()))
            .collect();
        let watcher = tokio::spawn(watch(kv.clone(), keys, self.status.clone()).in_current_span());
        let beat = tokio::spawn(heartbeat(kv.clone(), self.status.clone()).in_current_span());
        for (i, resource) in self.resources.iter().enumerate() {
            let one = OneLease {
                index: i,
                key: resource.key(),
                account: resource.clone(),
                lease: Lease::new(self.node_id.clone(), self.config.lease()),
                kv: kv.clone(),
                bus: self.bus.clone(),
                status: self.status.clone(),
                online: false,
                guard: self.config.lease() / 10,
                op_timeout,
                changed: wakers[i].clone(),
                floor_wait: self.config.drain_max_wait(),
                rebalancing: false,
            };
            let span = info_span!("lease", key = %one.key);
            let drain = self.status.operator_drain.subscribe();
            tasks.spawn(one.run(shutdown.clone(), drain).instrument(span));
        }
        let _ = shutdown.wait_for(|s| *s).await;
        self.status.draining.store(true, Ordering::Relaxed);
        while tasks.join_next().await.is_some() {}
        watcher.abort();
        beat.abort();
        // Gone from the others' count at once, rather than a lease later.
        let key = presence_key(&self.node_id);
        if tokio::time::timeout(op_timeout, kv.delete(&key))
            .await
            .is_err()
        {
            debug!("cluster: presence key not deleted; it lapses by itself");
        }
        info!("cluster leases released");
    }

    /// A bounded wait for one KV operation: well inside a renewal period.
    fn op_timeout(&self) -> Duration {
        (self.config.lease() / 6).min(Duration::from_secs(2))
    }

    /// Connects and opens (or creates) the bucket, retrying until it works.
    async fn bucket(&self, options: async_nats::ConnectOptions) -> kv::Store {
        let client = loop {
            // A comma-separated list names several servers of the NATS cluster.
            let urls: Vec<&str> = self.url.split(',').map(str::trim).collect();
            match options.clone().connect(urls).await {
                Ok(c) => break c,
                Err(e) => {
                    warn!(error = %esc(e.to_string()), "cluster: cannot reach NATS; retrying");
                    tokio::time::sleep(START_RETRY).await;
                }
            }
        };
        let js = async_nats::jetstream::new(client);
        loop {
            if let Ok(kv) = js.get_key_value(&self.config.bucket).await {
                return kv;
            }
            // The bucket's stream, made as `create_key_value` makes it: that call first asks
            // for the account's limits, which async-nats cannot read from a 2.9 server.
            let stream = async_nats::jetstream::stream::Config {
                name: format!("KV_{}", self.config.bucket),
                description: Some("pttbridge node leases".into()),
                subjects: vec![format!("$KV.{}.>", self.config.bucket)],
                max_messages_per_subject: 1,
                storage: async_nats::jetstream::stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                // Reads from the stream's leader, never a replica that lags behind it: a
                // confirming read must see every write accepted before it (see lease.rs).
                allow_direct: false,
                num_replicas: self.config.replicas,
                discard: async_nats::jetstream::stream::DiscardPolicy::New,
                ..Default::default()
            };
            let created = match js.get_or_create_stream(stream).await {
                Ok(_) => js
                    .get_key_value(&self.config.bucket)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match created {
                Ok(kv) => return kv,
                Err(e) => {
                    warn!(error = %esc(e), "cluster: cannot create the lease bucket; retrying");
                    tokio::time::sleep(START_RETRY).await;
                }
            }
        }
    }
}

/// One resource's lease and the resource itself.
struct OneLease {
    index: usize,
    key: String,
    /// What the lease is for (a PTT account or a console admin session).
    account: Resource,
    lease: Lease,
    kv: kv::Store,
    bus: Arc<EventBus>,
    status: Arc<ClusterStatus>,
    /// Whether the account is (told to be) on its server.
    online: bool,
    /// The account goes offline this long before the lease's acting deadline, so its session
    /// is gone before another node can take the lease.
    guard: Duration,
    op_timeout: Duration,
    /// Woken by the bucket's watch when the key is written.
    changed: Arc<Notify>,
    /// Longest wait for an idle floor before a drain hands the account over anyway.
    floor_wait: Duration,
    /// A hand-over to rebalance was started and not announced yet.
    rebalancing: bool,
}

/// How often a drain waiting for an idle floor looks again (a burst ends on 300 ms of silence).
const FLOOR_POLL: Duration = Duration::from_millis(20);

impl OneLease {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>, mut drain: watch::Receiver<bool>) {
        // Until when a drain waits for the channel's floor to be idle.
        let mut floor_deadline: Option<Instant> = None;
        let mut drain_open = true;
        loop {
            let stopping = *shutdown.borrow();
            if stopping || *drain.borrow() {
                if !self.lease.draining() {
                    let now = Instant::now();
                    let deadline = *floor_deadline.get_or_insert(now + self.floor_wait);
                    let busy = self.lease.acting(now) && self.account.busy();
                    if !busy || now >= deadline {
                        // Between bursts (or waited long enough): nobody is cut mid-word.
                        if self.lease.acting(now) {
                            let floor = if busy { "busy" } else { "idle" };
                            metrics::counter!("pttbridge_cluster_handovers_total", "floor" => floor)
                                .increment(1);
                        }
                        if busy {
                            warn!(
                                "a talk burst is still in progress after the drain's wait; handing the account over anyway"
                            );
                        }
                        floor_deadline = None;
                        self.lease.drain();
                    }
                }
            } else {
                floor_deadline = None;
                if self.lease.draining() && !self.lease.handing_over() && self.lease.undrain() {
                    info!("undrained: taking part in this lease again");
                }
                let idle = self.account.movable();
                if self
                    .status
                    .start_hand_over(self.index, &mut self.lease, idle, Instant::now())
                {
                    metrics::counter!("pttbridge_cluster_rebalanced_total").increment(1);
                    self.rebalancing = true;
                }
            }
            self.enforce().await;
            let answered = if let Some(op) =
                self.status
                    .poll(self.index, &mut self.lease, Instant::now())
            {
                let reply = self.perform(op).await;
                self.lease.on_reply(Instant::now(), reply);
                self.enforce().await;
                true
            } else {
                false
            };
            self.announce();
            self.status.set(self.index, &self.lease);
            if stopping && self.lease.drained() {
                return;
            }
            if answered {
                // An answer can make the next step due at once (a read that found the lease
                // released → claim it): poll again rather than sleep (`poll_timeout` has no
                // time for "now"). Every step is a KV round trip, so this never spins.
                continue;
            }
            let mut wake = self
                .lease
                .poll_timeout()
                .map(|t| self.stop_at().map_or(t, |s| s.min(t)))
                .unwrap_or_else(|| Instant::now() + self.op_timeout);
            if floor_deadline.is_some() {
                wake = wake.min(Instant::now() + FLOOR_POLL);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.changed(), if !stopping => {}
                r = drain.changed(), if drain_open => drain_open = r.is_ok(),
                _ = self.changed.notified() => self.lease.changed(),
                // The previous hand-over was taken: this one may be next.
                _ = self.status.taken.notified(), if self.lease.acting(Instant::now()) => {}
            }
        }
    }

    /// When the account must be off its server.
    fn stop_at(&self) -> Option<Instant> {
        self.lease
            .acting_until()
            .map(|t| t.checked_sub(self.guard).unwrap_or(t))
    }

    /// Puts the account on its server exactly while this node may act as its owner.
    async fn enforce(&mut self) {
        let now = Instant::now();
        let should = self.lease.acting(now) && self.stop_at().is_some_and(|t| now < t);
        if should != self.online {
            self.online = should;
            if !self.account.set_online(should).await {
                warn!("PTT client stopped; cannot change its connection");
            }
            // What acts as the account besides its session (an upstream registration) leaves
            // too before anything is released or lapses: bounded, inside the guard.
            if !should && !self.account.unheld(self.guard).await {
                warn!("something still acts as the PTT account after going offline");
            }
        }
    }

    /// Runs one KV operation, bounded; while it runs, the account still goes offline on time.
    async fn perform(&mut self, op: Op) -> Reply {
        let kv = self.kv.clone();
        let key = self.key.clone();
        let fut = tokio::time::timeout(self.op_timeout, run_op(kv, key, op.clone()));
        tokio::pin!(fut);
        loop {
            let stop = self.stop_at().filter(|_| self.online);
            tokio::select! {
                r = &mut fut => {
                    return match (r, &op) {
                        (Ok(reply), _) => reply,
                        (Err(_), Op::Read) => Reply::ReadFailed,
                        (Err(_), _) => Reply::Write(Err(WriteError::Unknown)),
                    };
                }
                _ = tokio::time::sleep_until(stop.unwrap_or_else(Instant::now).into()), if stop.is_some() => {
                    self.online = false;
                    self.account.set_online(false).await;
                }
            }
        }
    }

    /// Logs and publishes what changed.
    fn announce(&mut self) {
        while let Some(change) = self.lease.poll_change() {
            let (kind, detail) = match &change {
                Change::Acquired { from } => {
                    if let Some(from) = from {
                        metrics::counter!("pttbridge_cluster_takeovers_total").increment(1);
                        info!(from = %esc(from), resource = self.account.kind(), "took over a lapsed lease; connecting the account");
                    } else {
                        info!(
                            resource = self.account.kind(),
                            "acquired the lease; connecting the account"
                        );
                    }
                    (EventKind::SideConnected, json!({ "taken_over_from": from }))
                }
                Change::Lost { reason } => {
                    warn!(
                        reason,
                        resource = self.account.kind(),
                        "lost the lease; account taken offline"
                    );
                    (EventKind::SideDisconnected, json!({ "reason": reason }))
                }
                Change::Released if std::mem::take(&mut self.rebalancing) => {
                    info!(
                        "handing the PTT account lease over to a node under its fair share (rebalance)"
                    );
                    (
                        EventKind::SideDisconnected,
                        json!({ "reason": "handed over (rebalance)" }),
                    )
                }
                Change::Released => {
                    info!(
                        resource = self.account.kind(),
                        "releasing the lease (draining)"
                    );
                    (
                        EventKind::SideDisconnected,
                        json!({ "reason": "released (draining)" }),
                    )
                }
            };
            let mut detail = detail;
            if let Value::Object(m) = &mut detail {
                m.insert("side".into(), "cluster".into());
                m.insert("node".into(), self.status.node_id.clone().into());
                m.insert("server".into(), self.account.server().into());
                m.insert("account".into(), self.account.username().into());
                m.insert("resource".into(), self.account.kind().into());
            }
            self.bus.publish(
                Draft::new(self.account.app().to_owned(), kind, String::new()).detail(detail),
            );
        }
    }
}

/// Wakes the lease of every key written in the bucket, so a released lease is read (and taken)
/// at once rather than at the next read period, and notes the nodes' presence keys. For the
/// leases only an accelerator: when the watch fails, they still read on their own, and it is
/// made again after a pause; the others' presence lapses meanwhile (each node then claims as if
/// alone, which only makes claims sooner, never two owners).
async fn watch(kv: kv::Store, keys: HashMap<String, Arc<Notify>>, status: Arc<ClusterStatus>) {
    loop {
        match kv.watch_all().await {
            Ok(mut entries) => loop {
                // This node's own presence is written every third of a lease: a watch that
                // brought nothing for a whole lease is stuck (its consumer lost with a server)
                // and is made again, or the others' presence would lapse here.
                let Ok(next) = tokio::time::timeout(status.lease, entries.next()).await else {
                    debug!("cluster: the lease bucket's watch is silent; making it again");
                    break;
                };
                match next {
                    Some(Ok(entry)) => {
                        *status.watched.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Instant::now());
                        if let Some(w) = keys.get(&entry.key) {
                            w.notify_one();
                        } else if let Some(node) = entry.key.strip_prefix(PRESENCE_PREFIX) {
                            let record = match entry.operation {
                                Operation::Put => {
                                    match serde_json::from_slice::<PresenceRecord>(&entry.value) {
                                        Ok(r) => Some(r),
                                        // Not ours to read: no presence.
                                        Err(_) => continue,
                                    }
                                }
                                Operation::Delete | Operation::Purge => None,
                            };
                            let gone = record.is_none();
                            status.presence().on_entry(
                                node,
                                entry.revision,
                                record.as_ref(),
                                Instant::now(),
                            );
                            if gone {
                                // A node left: a lease waiting for its claim may be due now.
                                keys.values().for_each(|w| w.notify_one());
                            }
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %esc(e.to_string()), "cluster: the lease bucket's watch failed");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => debug!(error = %esc(e.to_string()), "cluster: cannot watch the lease bucket"),
        }
        tokio::time::sleep(START_RETRY).await;
    }
}

/// Writes this node's presence key every third of a lease (a put: the key is this node's
/// alone), saying whether it is draining; publishes the count of live nodes.
async fn heartbeat(kv: kv::Store, status: Arc<ClusterStatus>) {
    let key = presence_key(&status.node_id);
    let mut tick = tokio::time::interval(status.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let record = PresenceRecord {
            lease_ms: status.lease.as_millis() as u64,
            draining: status.is_draining(),
            run: status.run.clone(),
        };
        let value = bytes::Bytes::from(serde_json::to_vec(&record).unwrap_or_default());
        match tokio::time::timeout(status.lease / 6, kv.put(&key, value)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(error = %esc(e.to_string()), "cluster: presence not written; next beat retries")
            }
            Err(_) => debug!("cluster: presence write timed out; next beat retries"),
        }
        let now = Instant::now();
        let live = status.presence().live(now).len() + 1;
        metrics::gauge!("pttbridge_cluster_nodes").set(live as f64);
        // Nodes gone: what they reported in the shared event state ends (cluster/runs.rs).
        if let Some(ender) = &status.ender {
            let watching = status
                .watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| now.duration_since(at) < status.lease);
            for run in status.presence().runs_over(now, watching) {
                info!(run = %esc(&run), "cluster: a node is gone; ending its run's presences");
                ender.end(run);
            }
        }
    }
}

/// A value in the bucket that is not a lease record (read every lease/6 while it stays).
static BAD_VALUE: logsafe::RateLimit = logsafe::RateLimit::warn("bad lease value");

async fn run_op(kv: kv::Store, key: String, op: Op) -> Reply {
    let encode = |r: &Record| bytes::Bytes::from(serde_json::to_vec(r).unwrap_or_default());
    match op {
        Op::Read => match kv.entry(key).await {
            Ok(entry) => Reply::Read(entry.map(|e| Entry {
                revision: e.revision,
                record: match e.operation {
                    Operation::Put => {
                        let record = serde_json::from_slice(&e.value).ok();
                        if record.is_none() {
                            // Someone else's writing in our bucket: treated as owned by an
                            // unknown node (taken over only after a whole lease), and counted.
                            metrics::counter!("pttbridge_cluster_bad_values_total").increment(1);
                            if BAD_VALUE.allow() {
                                warn!(
                                    revision = e.revision,
                                    bytes = e.value.len(),
                                    "lease value is not a lease record"
                                );
                            }
                        }
                        record
                    }
                    // A deleted key is nobody's.
                    Operation::Delete | Operation::Purge => Some(Record {
                        owner: None,
                        lease_ms: 0,
                    }),
                },
            })),
            Err(_) => Reply::ReadFailed,
        },
        Op::Create(record) => Reply::Write(match kv.create(key, encode(&record)).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Err(WriteError::Conflict),
            Err(_) => Err(WriteError::Unknown),
        }),
        Op::Update { revision, record } => {
            Reply::Write(match kv.update(key, encode(&record), revision).await {
                Ok(rev) => Ok(rev),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    Err(WriteError::Conflict)
                }
                Err(_) => Err(WriteError::Unknown),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::account_key;

    #[test]
    fn account_keys_are_valid_kv_keys_and_distinct() {
        assert_eq!(account_key("local", "bridge-1"), "ptt.local.bridge-1");
        assert_eq!(account_key("a.b", "x y"), "ptt.a=2Eb.x=20y");
        assert_ne!(account_key("a", "b=2E"), account_key("a", "b."));
        assert_eq!(account_key("", "调度"), "ptt.=.=E8=B0=83=E5=BA=A6");
    }
}
