//! The replicated event log's rules, sans-IO: what one log entry is on the wire, and which
//! entries a node applies, in which order.
//!
//! Every node publishes its drafts to one JetStream stream (one subject), and every node reads
//! that stream in stream order. JetStream is the sequencer: the stream sequence is one total
//! order all nodes agree on, so no consensus of our own is needed. A node applies an entry when
//! [`Sequencer::admit`] says so, and numbers it per app as it applies it
//! ([`crate::hub::EventBus::apply_replicated`]): version `n` of an app is the `n`-th admitted
//! entry of that app in the stream, the same on every node.
//!
//! The rules (all of them functions of the stream's content, never of time or of which node
//! reads, so every node decides alike):
//! - an entry at or below the last applied stream sequence is not applied again (a consumer
//!   that re-delivers after a reconnect);
//! - an entry of an origin (`<node>/<boot id>`, one run of one process) whose origin sequence
//!   is at or below the last one admitted from that origin is dropped as **stale**: a re-send
//!   JetStream stored twice (after its duplicate window), or one stored after a later entry
//!   of the same origin (a publish lost while a later one went through). Dropping keeps each
//!   origin's events in the order it made them (a `talk.stopped` is never applied before its
//!   `talk.started`);
//! - everything else is applied; gaps in an origin's sequence (a draft dropped before it was
//!   sent) and in the stream (messages removed by its limits) are allowed.
//!
//! The origins remembered are bounded ([`MAX_ORIGINS`]): the one least recently seen in the
//! stream is forgotten first — long after its process stopped.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::hub::bus::Stamped;
use crate::hub::event::Draft;
use crate::hub::{EventKind, Party};

/// Origins remembered for the stale rule.
pub const MAX_ORIGINS: usize = 1024;

/// One entry of the event log as stored in the stream (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// `<node_id>/<boot id>`: one run of one node.
    pub origin: String,
    /// The origin's sequence of this entry.
    pub seq: u64,
    /// When the origin published it (ms since the Unix epoch).
    pub time_ms: u64,
    /// Tenant.
    pub app_id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Where.
    #[serde(default)]
    pub group_id: String,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub party: Option<Party>,
    /// Details.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl LogEntry {
    /// The entry of a draft stamped by `origin`.
    pub fn new(origin: &str, s: Stamped) -> Self {
        Self {
            origin: origin.to_string(),
            seq: s.seq,
            time_ms: s.time_ms,
            app_id: s.draft.app_id,
            kind: s.draft.kind,
            group_id: s.draft.group_id,
            party: s.draft.party,
            detail: s.draft.detail,
        }
    }

    /// The `Nats-Msg-Id`: `<origin>:<seq>`, so JetStream drops a re-send it already stored
    /// (within its duplicate window; the stale rule covers the rest).
    pub fn message_id(&self) -> String {
        format!("{}:{}", self.origin, self.seq)
    }

    /// The draft and its time, for the bus.
    pub fn into_draft(self) -> (Draft, u64) {
        let draft = Draft {
            app_id: self.app_id,
            kind: self.kind,
            group_id: self.group_id,
            party: self.party,
            detail: self.detail,
        };
        (draft, self.time_ms)
    }
}

/// What to do with one delivered entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Apply it (number it and send it out).
    Apply,
    /// Already applied (stream sequence at or below the last applied).
    Replayed,
    /// Its origin already had a later (or the same) entry applied: dropped.
    Stale,
}

/// The applying side's state: the last applied stream sequence and, per origin, its last
/// admitted sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequencer {
    applied: u64,
    /// origin → (its last admitted sequence, the stream sequence where it was seen last).
    origins: HashMap<String, (u64, u64)>,
}

impl Sequencer {
    /// A sequencer that has applied nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last stream sequence applied (0: none); a consumer restarts after it.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Decides on the entry at `stream_seq` of `origin` with sequence `seq` (see the module
    /// doc), and records it.
    pub fn admit(&mut self, stream_seq: u64, origin: &str, seq: u64) -> Admit {
        if stream_seq <= self.applied {
            return Admit::Replayed;
        }
        self.applied = stream_seq;
        match self.origins.get_mut(origin) {
            Some((last, seen)) => {
                *seen = stream_seq;
                if seq <= *last {
                    return Admit::Stale;
                }
                *last = seq;
            }
            None => {
                if self.origins.len() >= MAX_ORIGINS
                    && let Some(oldest) = self
                        .origins
                        .iter()
                        .min_by_key(|(_, (_, seen))| *seen)
                        .map(|(o, _)| o.clone())
                {
                    self.origins.remove(&oldest);
                }
                self.origins.insert(origin.to_string(), (seq, stream_seq));
            }
        }
        Admit::Apply
    }

    /// A stream entry that is not a log entry (unreadable): applied as nothing, but its place
    /// in the stream is passed.
    pub fn skip(&mut self, stream_seq: u64) {
        self.applied = self.applied.max(stream_seq);
    }
}

/// A node's state after one entry of the log: what a node that starts later begins from
/// instead of the entries before it (which the stream's limits may have discarded). Every node
/// that applied the same entries holds the same snapshot, so any node may write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The rules' state (its `applied` is the snapshot's stream sequence).
    pub sequencer: Sequencer,
    /// Every app's version and state: `(app, version, model)`.
    pub apps: Vec<(String, u64, crate::events::state::AppModel)>,
}

/// Where a node goes on reading the log: at its start (nothing applied), or when the stream
/// delivers an entry past a gap (its limits discarded entries this node had not read yet).
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// Restore the snapshot and read after its sequence.
    Snapshot,
    /// Read on after what it applied (from the stream's start when nothing): nothing it needs
    /// was discarded.
    Continue,
    /// Entries it needs were discarded and no snapshot covers them: it reads on from the
    /// stream's first entry, and its versions will not be the others' (logged and counted).
    Incomplete,
}

/// Decides where a node that `applied` up to that stream sequence reads on: `first_seq` is the
/// stream's first stored sequence (1 until its limits discarded something), `snapshot` the
/// latest snapshot's sequence. A snapshot is used when it is ahead of the node and nothing
/// after it was discarded.
pub fn start(applied: u64, first_seq: u64, snapshot: Option<u64>) -> Start {
    match snapshot {
        Some(s) if s > applied && s + 1 >= first_seq => Start::Snapshot,
        _ if applied + 1 >= first_seq => Start::Continue,
        _ => Start::Incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{EventBus, Side};
    use std::sync::Arc;

    #[test]
    fn replays_and_stale_entries_are_not_applied() {
        let mut s = Sequencer::new();
        assert_eq!(s.admit(1, "a/1", 1), Admit::Apply);
        assert_eq!(s.admit(2, "b/1", 1), Admit::Apply);
        assert_eq!(s.admit(2, "b/1", 1), Admit::Replayed, "redelivered");
        assert_eq!(s.admit(1, "a/1", 1), Admit::Replayed);
        assert_eq!(s.admit(3, "a/1", 3), Admit::Apply, "a gap in a's sequence");
        assert_eq!(
            s.admit(4, "a/1", 2),
            Admit::Stale,
            "stored after a later one"
        );
        assert_eq!(s.admit(5, "a/1", 3), Admit::Stale, "stored twice");
        assert_eq!(s.admit(9, "a/2", 1), Admit::Apply, "a restarted node");
        assert_eq!(s.applied(), 9);
        s.skip(10);
        assert_eq!(s.admit(10, "a/2", 2), Admit::Replayed);
    }

    #[test]
    fn origins_are_bounded_forgetting_the_least_recently_seen() {
        let mut s = Sequencer::new();
        for i in 0..MAX_ORIGINS as u64 {
            s.admit(i + 1, &format!("n/{i}"), 1);
        }
        // Origin 0 seen again: origin 1 is now the oldest.
        s.admit(MAX_ORIGINS as u64 + 1, "n/0", 2);
        s.admit(MAX_ORIGINS as u64 + 2, "new/1", 1);
        assert_eq!(s.origins.len(), MAX_ORIGINS);
        assert!(s.origins.contains_key("n/0"));
        assert!(!s.origins.contains_key("n/1"));
    }

    #[test]
    fn a_node_uses_a_snapshot_only_when_ahead_and_nothing_after_it_was_discarded() {
        assert_eq!(start(0, 1, None), Start::Continue, "from the beginning");
        assert_eq!(start(0, 0, None), Start::Continue, "an empty stream");
        assert_eq!(start(0, 1, Some(40)), Start::Snapshot, "less to replay");
        assert_eq!(start(0, 41, Some(40)), Start::Snapshot);
        assert_eq!(start(0, 42, Some(40)), Start::Incomplete, "41 is gone");
        assert_eq!(start(0, 42, None), Start::Incomplete);
        // A node that fell behind the stream's limits.
        assert_eq!(
            start(30, 35, Some(40)),
            Start::Snapshot,
            "31..35 gone, covered"
        );
        assert_eq!(
            start(30, 31, Some(20)),
            Start::Continue,
            "nothing it needs is gone"
        );
        assert_eq!(
            start(30, 35, Some(30)),
            Start::Incomplete,
            "the snapshot is not ahead"
        );
    }

    /// A node that starts from another node's snapshot numbers the rest of the stream as the
    /// nodes that read it all.
    #[test]
    fn a_snapshot_plus_the_rest_equals_the_whole_stream() {
        use crate::hub::{Party, Side};
        let entries: Vec<LogEntry> = (1..=200u64)
            .map(|i| {
                let kind = [
                    EventKind::PartyJoined,
                    EventKind::TalkStarted,
                    EventKind::PartyLeft,
                ][(i % 3) as usize];
                let draft =
                    Draft::new(if i % 4 == 0 { "b" } else { "a" }, kind, "g").party(Party {
                        side: Side::Ptt,
                        id: (i % 5).to_string(),
                        name: "u".into(),
                    });
                let origin = format!("n{}/1", i % 2);
                LogEntry::new(
                    &origin,
                    Stamped {
                        seq: i,
                        time_ms: i,
                        draft,
                    },
                )
            })
            .collect();
        let feed = |bus: &EventBus, seq: &mut Sequencer, from: usize| {
            for (i, e) in entries.iter().enumerate().skip(from) {
                if seq.admit(i as u64 + 1, &e.origin, e.seq) == Admit::Apply {
                    let (d, t) = e.clone().into_draft();
                    bus.apply_replicated(d, t, false);
                }
            }
        };
        let whole = EventBus::new();
        let mut s1 = Sequencer::new();
        feed(&whole, &mut s1, 0);

        let first = EventBus::new();
        let mut s2 = Sequencer::new();
        for (i, e) in entries.iter().enumerate().take(120) {
            s2.admit(i as u64 + 1, &e.origin, e.seq);
            let (d, t) = e.clone().into_draft();
            first.apply_replicated(d, t, false);
        }
        let snap = Snapshot {
            sequencer: s2.clone(),
            apps: first.export(),
        };
        let json = serde_json::to_vec(&snap).unwrap();
        let snap: Snapshot = serde_json::from_slice(&json).unwrap();

        let late = EventBus::new();
        late.restore(snap.apps);
        let mut s3 = snap.sequencer;
        assert_eq!(s3.applied(), 120);
        feed(&late, &mut s3, 120);
        assert_eq!(late.export(), whole.export());
        assert_eq!(s3, s1);
    }

    #[test]
    fn entries_round_trip_as_json() {
        let draft = Draft::new("app", EventKind::TalkStarted, "ptt:x:North")
            .party(Party {
                side: Side::Ptt,
                id: "3".into(),
                name: "alice".into(),
            })
            .detail(serde_json::json!({"media_type": 2}));
        let e = LogEntry::new(
            "node-a/1f",
            Stamped {
                seq: 7,
                time_ms: 5,
                draft: draft.clone(),
            },
        );
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"type\":\"talk.started\""), "{json}");
        let back: LogEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.message_id(), "node-a/1f:7");
        assert_eq!(back.into_draft(), (draft, 5));
    }

    /// The bus invariant in cluster mode: nodes that read the same stream, each from its own
    /// start and with its own re-deliveries, hold the same versions and the same state, and
    /// each node's subscribers see every app's versions contiguous.
    #[test]
    fn every_node_numbers_the_same_stream_alike() {
        // A stream written by three origins, with a re-send stored twice and one stored late.
        let mut stream: Vec<(u64, LogEntry)> = Vec::new();
        let mut next = [0u64; 3];
        for i in 0..300u64 {
            let o = (i * 7 % 3) as usize;
            next[o] += 1;
            let kind = [
                EventKind::PartyJoined,
                EventKind::TalkStarted,
                EventKind::TalkStopped,
                EventKind::PartyLeft,
            ][(next[o] % 4) as usize];
            let app = if i % 5 == 0 { "b" } else { "a" };
            let draft = Draft::new(app, kind, format!("g{o}")).party(Party {
                side: Side::Ptt,
                id: o.to_string(),
                name: format!("u{o}"),
            });
            let s = Stamped {
                seq: next[o],
                time_ms: i,
                draft,
            };
            stream.push((i + 1, LogEntry::new(&format!("n{o}/1"), s)));
        }
        let dup = stream[10].1.clone();
        stream.push((301, dup));
        stream.swap(20, 23);
        let mut fixed: Vec<(u64, LogEntry)> = Vec::new();
        for (i, (_, e)) in stream.into_iter().enumerate() {
            fixed.push((i as u64 + 1, e));
        }

        let run = |redeliver: usize| {
            let bus = Arc::new(EventBus::new());
            let (tx, _rx) = tokio::sync::mpsc::channel(1);
            bus.replicate(tx);
            let mut rx = bus.subscribe();
            let mut seq = Sequencer::new();
            let mut i = 0;
            while i < fixed.len() {
                // A consumer recreated after `redeliver` entries starts a few back.
                if redeliver > 0 && i % redeliver == 0 && i >= 3 && i < fixed.len() - 1 {
                    for (s, e) in &fixed[i - 3..i] {
                        assert_eq!(seq.admit(*s, &e.origin, e.seq), Admit::Replayed);
                    }
                }
                let (s, e) = &fixed[i];
                if seq.admit(*s, &e.origin, e.seq) == Admit::Apply {
                    let (d, t) = e.clone().into_draft();
                    bus.apply_replicated(d, t, e.origin == "n0/1");
                }
                i += 1;
            }
            let mut last: HashMap<String, u64> = HashMap::new();
            let mut events = Vec::new();
            while let Ok(ev) = rx.try_recv() {
                let prev = last.insert(ev.app_id.clone(), ev.version).unwrap_or(0);
                assert_eq!(ev.version, prev + 1, "contiguous per app");
                events.push(ev);
            }
            (events, bus.snapshot("a", None), bus.snapshot("b", None))
        };
        let first = run(0);
        assert_eq!(
            first.0.len(),
            299,
            "the duplicate and the late entry dropped"
        );
        assert_eq!(run(17), first);
        assert_eq!(run(5), first);
    }

    #[test]
    fn in_cluster_mode_publishing_goes_to_the_log_and_only_local_events_to_the_local_feed() {
        let bus = EventBus::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        bus.replicate(tx);
        let mut all = bus.subscribe();
        let mut local = bus.subscribe_local();
        for _ in 0..3 {
            bus.publish(Draft::new("a", EventKind::TalkStarted, "g"));
        }
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        assert_eq!(rx.try_recv().unwrap().seq, 2);
        assert!(rx.try_recv().is_err(), "the third did not fit: dropped");
        assert!(all.try_recv().is_err(), "nothing numbered before the log");
        assert_eq!(bus.version("a"), 0);
        bus.apply_replicated(Draft::new("a", EventKind::TalkStarted, "g"), 1, true);
        bus.apply_replicated(Draft::new("a", EventKind::TalkStopped, "g"), 2, false);
        assert_eq!(all.try_recv().unwrap().version, 1);
        assert_eq!(all.try_recv().unwrap().version, 2);
        assert_eq!(local.try_recv().unwrap().version, 1);
        assert!(local.try_recv().is_err(), "another node's event");
    }
}
