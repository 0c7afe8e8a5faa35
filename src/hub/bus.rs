//! The in-process event bus: numbers events per app and fans them out.
//!
//! Numbering, applying the event to the app's state model ([`AppModel`]) and sending
//! happen under one lock, so every subscriber sees each app's events in version order
//! with no gaps, and a [`EventBus::snapshot`] is exactly the state after its version:
//! a subscriber that took the snapshot after subscribing skips buffered events up to
//! that version and continues without loss or double counting. Subscribers that fall
//! behind the bounded buffer are told so (`Lagged`) instead of slowing the publisher;
//! the sinks then cut them off with a reason. The last [`RECENT`] events are kept, in order, for
//! a view that opens late (the web page's event list).
//!
//! **Cluster mode** ([`EventBus::replicate`], `docs/cluster.md`): [`EventBus::publish`] does not
//! number; it stamps the draft with this node's next local sequence and hands it to the
//! replicated log. Every node feeds the log's entries, in the log's one order, to
//! [`EventBus::apply_replicated`], which numbers and applies them under the same lock as above.
//! So the invariant holds on every node, and every node holds the same versions: version `n` of
//! an app is the `n`-th entry of that app in the log.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc};

use super::event::{Draft, Event};
use crate::events::state::AppModel;

/// Events kept for [`EventBus::recent`].
pub const RECENT: usize = 60;

/// Events buffered per subscriber before it counts as lagging.
pub const SUBSCRIBER_BUFFER: usize = 8192;

/// Numbers and distributes events.
#[derive(Debug)]
pub struct EventBus {
    apps: Mutex<HashMap<String, Ledger>>,
    tx: broadcast::Sender<Event>,
    /// The last [`RECENT`] events, oldest first (taken after `apps`, never before).
    recent: Mutex<VecDeque<Event>>,
    /// Set in cluster mode: where drafts go instead of being numbered here.
    replication: OnceLock<Replication>,
}

/// A draft on its way to the replicated log, stamped by the node that made it.
#[derive(Debug, Clone)]
pub struct Stamped {
    /// This process's sequence of the draft (1, 2, ... with no repeats and no gaps: a draft
    /// the outbox cannot take is dropped before it is numbered).
    pub seq: u64,
    /// When it was published here (ms since the Unix epoch): the event's time on every node.
    pub time_ms: u64,
    /// The draft.
    pub draft: Draft,
}

#[derive(Debug)]
struct Replication {
    /// The next local sequence and the outbox, under one lock so the outbox holds drafts in
    /// sequence order (the log drops one that arrives after a later one of the same node).
    outbox: Mutex<(u64, mpsc::Sender<Stamped>)>,
    /// Events this node produced, as they come back from the log (the NATS sink's feed).
    local: broadcast::Sender<Event>,
}

/// One app's numbering and state.
#[derive(Debug, Default)]
struct Ledger {
    version: u64,
    model: AppModel,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Self {
            apps: Mutex::new(HashMap::new()),
            tx,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            replication: OnceLock::new(),
        }
    }

    /// Cluster mode: from now on [`publish`](Self::publish) stamps drafts and sends them to
    /// `outbox` (the replicated log's publisher) instead of numbering them; events come in
    /// through [`apply_replicated`](Self::apply_replicated). Call it before anything publishes
    /// or subscribes to [`subscribe_local`](Self::subscribe_local). A second call does nothing.
    pub fn replicate(&self, outbox: mpsc::Sender<Stamped>) {
        let (local, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let _ = self.replication.set(Replication {
            outbox: Mutex::new((0, outbox)),
            local,
        });
    }

    /// Whether drafts go through a replicated log ([`replicate`](Self::replicate)).
    pub fn replicated(&self) -> bool {
        self.replication.get().is_some()
    }

    /// Numbers `draft` and sends it to every subscriber; returns the event.
    ///
    /// In cluster mode the draft goes to the replicated log and is numbered when it comes back
    /// (on every node alike); the event returned then has version 0, and a full outbox drops
    /// the draft (counted in `pttbridge_cluster_log_dropped_total`) rather than block a side.
    pub fn publish(&self, draft: Draft) -> Event {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if let Some(r) = self.replication.get() {
            let event = unnumbered(&draft, time_ms);
            let mut outbox = r.outbox.lock().unwrap_or_else(|p| p.into_inner());
            let stamped = Stamped {
                seq: outbox.0 + 1,
                time_ms,
                draft,
            };
            // A dropped draft takes no number: an origin's sequence has no gaps, so readers
            // can wait for a missing one (cluster/log.rs).
            if outbox.1.try_send(stamped).is_ok() {
                outbox.0 += 1;
            } else {
                metrics::counter!("pttbridge_cluster_log_dropped_total", "reason" => "outbox_full")
                    .increment(1);
            }
            return event;
        }
        self.number(draft, time_ms, false)
    }

    /// Cluster mode: numbers and sends a draft taken from the replicated log, in the log's
    /// order (one caller, the log's consumer). `local`: this process published it.
    pub fn apply_replicated(&self, draft: Draft, time_ms: u64, local: bool) -> Event {
        self.number(draft, time_ms, local)
    }

    /// Numbering, applying and sending under the publishing lock (see the module doc).
    fn number(&self, draft: Draft, time_ms: u64, local: bool) -> Event {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let ledger = apps.entry(draft.app_id.clone()).or_default();
        ledger.version += 1;
        let event = Event {
            app_id: draft.app_id,
            version: ledger.version,
            time_ms,
            kind: draft.kind,
            group_id: draft.group_id,
            party: draft.party,
            detail: draft.detail,
        };
        ledger.model.apply(&event);
        // No subscribers is fine: the event is still numbered.
        let _ = self.tx.send(event.clone());
        if local && let Some(r) = self.replication.get() {
            let _ = r.local.send(event.clone());
        }
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        drop(apps);
        metrics::counter!("pttbridge_events_total", "type" => event.kind.as_str()).increment(1);
        event
    }

    /// A new subscriber receiving every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// A subscriber to the events this process produced: every event outside cluster mode; in
    /// cluster mode those whose draft was published here (by this run of the process), so a
    /// sink that forwards them (NATS) sends each event of the cluster once, not once per node.
    pub fn subscribe_local(&self) -> broadcast::Receiver<Event> {
        match self.replication.get() {
            Some(r) => r.local.subscribe(),
            None => self.tx.subscribe(),
        }
    }

    /// The current version of an app (0 before its first event).
    pub fn version(&self, app_id: &str) -> u64 {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app_id)
            .map_or(0, |l| l.version)
    }

    /// An app's state after its current version, limited to `groups` (all when `None`).
    /// Taken under the publishing lock: events of this app with a higher version are exactly
    /// those not in it.
    pub fn snapshot(&self, app_id: &str, groups: Option<&[String]>) -> (u64, AppModel) {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        match apps.get(app_id) {
            Some(l) => (l.version, l.model.filtered(groups)),
            None => (0, AppModel::default()),
        }
    }

    /// The last [`RECENT`] events of every app, oldest first, in publishing order.
    pub fn recent(&self) -> Vec<Event> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }

    /// Every app's version and state, for a cluster node's snapshot of the replicated log
    /// (taken by the log's one consumer between two entries, so it is the state after one).
    pub fn export(&self) -> Vec<(String, u64, AppModel)> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, u64, AppModel)> = apps
            .iter()
            .map(|(id, l)| (id.clone(), l.version, l.model.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Starts a cluster node from a snapshot ([`export`](Self::export) on another node): every
    /// app's version and state replaced, before the log's entries after it are applied.
    pub fn restore(&self, snapshot: Vec<(String, u64, AppModel)>) {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.clear();
        for (id, version, model) in snapshot {
            apps.insert(id, Ledger { version, model });
        }
    }

    /// Every app that has published an event.
    pub fn apps(&self) -> Vec<String> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<String> = apps.keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// What [`EventBus::publish`] returns in cluster mode: the draft, not numbered yet.
fn unnumbered(draft: &Draft, time_ms: u64) -> Event {
    Event {
        app_id: draft.app_id.clone(),
        version: 0,
        time_ms,
        kind: draft.kind,
        group_id: draft.group_id.clone(),
        party: draft.party.clone(),
        detail: draft.detail.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::EventKind;

    #[test]
    fn the_last_events_are_kept_in_order_and_no_more() {
        let bus = EventBus::new();
        assert!(bus.recent().is_empty());
        for _ in 0..RECENT + 5 {
            bus.publish(Draft::new("a", EventKind::TalkStarted, "g"));
        }
        let recent: Vec<u64> = bus.recent().iter().map(|e| e.version).collect();
        let expected: Vec<u64> = (6..=(RECENT as u64 + 5)).collect();
        assert_eq!(recent, expected);
    }

    #[tokio::test]
    async fn versions_are_contiguous_per_app_under_concurrency() {
        let bus = std::sync::Arc::new(EventBus::new());
        let mut rx = bus.subscribe();
        let mut tasks = Vec::new();
        for t in 0..4 {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..250 {
                    let app = if t % 2 == 0 { "a" } else { "b" };
                    bus.publish(Draft::new(app, EventKind::TalkStarted, "g"));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut last = HashMap::new();
        for _ in 0..1000 {
            let ev = rx.recv().await.unwrap();
            let prev = last.insert(ev.app_id.clone(), ev.version).unwrap_or(0);
            assert_eq!(ev.version, prev + 1, "app {}", ev.app_id);
        }
        assert_eq!(bus.version("a"), 500);
        assert_eq!(bus.version("b"), 500);
        assert_eq!(bus.version("none"), 0);
    }

    /// A subscriber that snapshots while publishers run, then applies the live events above
    /// the snapshot's version, ends with exactly the bus's final state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_plus_later_events_equals_the_final_state() {
        use crate::hub::{Party, Side};
        let bus = std::sync::Arc::new(EventBus::new());
        let party = |i: usize| Party {
            side: Side::Ptt,
            id: i.to_string(),
            name: format!("u{i}"),
        };
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for round in 0..200 {
                    for i in 0..5 {
                        let g = format!("g{}", (round + i) % 3);
                        let kind = match round % 4 {
                            0 => EventKind::PartyJoined,
                            1 => EventKind::TalkStarted,
                            2 => EventKind::TalkStopped,
                            _ => EventKind::PartyLeft,
                        };
                        bus.publish(Draft::new("a", kind, g).party(party(i)));
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut rx = bus.subscribe();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let (base, mut replica) = bus.snapshot("a", None);
        publisher.await.unwrap();
        let last = bus.version("a");
        let mut seen = base;
        while seen < last {
            let ev = rx.recv().await.unwrap();
            if ev.version <= base {
                continue;
            }
            assert_eq!(ev.version, seen + 1, "no gap after the snapshot");
            seen = ev.version;
            replica.apply(&ev);
        }
        assert_eq!(replica, bus.snapshot("a", None).1);
    }
}
