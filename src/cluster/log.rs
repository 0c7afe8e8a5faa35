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
//! - a record at or below the last stream sequence taken is not taken again (a consumer that
//!   re-delivers after a reconnect);
//! - each origin (`<node>/<boot id>`, one run of one process) numbers its records 1, 2, ...
//!   with no gaps (a draft the bus cannot take gets no number; one too large to send becomes
//!   a [`Control::Skip`]), and its entries are applied **in that order**: an entry that reaches
//!   the stream ahead of a missing one is **held** (a publish lost with a broken connection
//!   and sent again after later ones went through) and applied when the missing one comes;
//! - a missing sequence is **given up** when the origin's sequence reaches it + [`ORIGIN_WINDOW`]
//!   (its publisher never has more in flight, so it will not come) or at a
//!   [`Control::GiveUp`] some reader wrote after waiting `cluster.event_give_up_ms` (the origin died
//!   mid-gap): the held entries after it go on;
//! - a record whose place is already filled is **stale** and dropped: a re-send JetStream
//!   stored twice (after its duplicate window), or one that came after it was given up.
//!   Each origin's events are so applied exactly once and in the order it made them (a
//!   `talk.stopped` is never applied before its `talk.started`).
//!
//! Held entries are part of the state a snapshot carries. The origins remembered are bounded
//! ([`MAX_ORIGINS`]): the one least recently seen in the stream is forgotten first — long
//! after its process stopped.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use super::entry::LogEntry;
use super::runs::Runs;

/// Origins remembered for the stale rule.
pub const MAX_ORIGINS: usize = 1024;

/// An origin's records reach the stream at most this far out of its own order: its publisher
/// sends sequence `s + ORIGIN_WINDOW` only after `s` was acknowledged as stored (or, failing,
/// sent again), so once a reader sees `s + ORIGIN_WINDOW` a still missing `s` will never be
/// stored but as a late duplicate. Part of the log's format: every node must use the same value.
pub const ORIGIN_WINDOW: u64 = 256;

/// One record of the stream: an event entry, or a control record that tells readers about
/// missing origin sequences or a run that is over.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An event.
    Entry(LogEntry),
    /// A control record.
    Control(Control),
}

/// The control records, as stored: `{"skip":{"origin":..,"seq":..}}`,
/// `{"give_up":{"origin":..,"below":..}}` and `{"run_over":{"origin":..,"by":..,"time_ms":..}}`
/// (an entry has none of these keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// Written by the origin in place of its entry `seq`, which it could not send (too large):
    /// the place is filled, nothing is applied.
    Skip {
        /// The origin that skipped.
        origin: String,
        /// The sequence skipped.
        seq: u64,
    },
    /// Written by any reader that held entries of `origin` behind a missing one for
    /// `cluster.event_give_up_ms` (default 30 s: far longer than a re-send after a reconnect
    /// takes, its backoff at most 2 s and the ack timeout 5 s): the origin's missing sequences
    /// below `below` are given up. Its place in the stream decides, so every node gives up at
    /// the same point.
    GiveUp {
        /// Whose entries.
        origin: String,
        /// Missing sequences below this are given up.
        below: u64,
    },
    /// Written by a live node when another node's presence lapsed: that run (`origin`) is over,
    /// and what rests on its word in the shared state ends ([`super::runs`]).
    RunOver {
        /// The run that is over.
        origin: String,
        /// The run that says so (its node sends what this ends to its own sinks).
        by: String,
        /// When it said so (ms since the Unix epoch): the time of what this ends.
        time_ms: u64,
    },
}

impl From<Control> for Record {
    fn from(c: Control) -> Self {
        Record::Control(c)
    }
}

impl Record {
    /// Reads one stored record (JSON); an entry is tried first (nearly every record is one),
    /// and its error is the one reported when neither fits.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        match serde_json::from_slice::<LogEntry>(bytes) {
            Ok(e) => Ok(Record::Entry(e)),
            Err(e) => serde_json::from_slice::<Control>(bytes)
                .map(Record::Control)
                .map_err(|_| e),
        }
    }

    /// Its stored form (JSON).
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Record::Entry(e) => serde_json::to_vec(e),
            Record::Control(c) => serde_json::to_vec(c),
        }
        .unwrap_or_default()
    }

    /// Its `Nats-Msg-Id`, so JetStream drops a re-send (or a second reader's give-up) it
    /// already stored within its duplicate window; the rules cover the rest.
    pub fn message_id(&self) -> String {
        match self {
            Record::Entry(e) => e.message_id(),
            Record::Control(Control::Skip { origin, seq }) => format!("{origin}:{seq}"),
            Record::Control(Control::GiveUp { origin, below }) => {
                format!("give-up:{origin}:{below}")
            }
            Record::Control(Control::RunOver { origin, .. }) => format!("run-over:{origin}"),
        }
    }
}

/// What became of one delivered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// It took its place in its origin's order (an entry is applied, with any held entries it
    /// released; a skip or give-up fills places).
    Ready,
    /// An entry that came ahead of a missing one of its origin: held back until that one comes
    /// or is given up.
    Held,
    /// Already seen (stream sequence at or below the last one taken).
    Replayed,
    /// Its origin's place for it was already filled (a duplicate, or it came after it was
    /// given up): dropped.
    Stale,
}

/// What the sequencer hands out while deciding, in the order to act on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Apply this entry now (number it and send it out).
    Apply(LogEntry),
    /// These sequences of `origin` were given up (never stored): its entries after them go on.
    GaveUp {
        /// Whose.
        origin: String,
        /// Which.
        seqs: std::ops::Range<u64>,
    },
}

/// What the sequencer keeps about one origin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "OriginWire", into = "OriginWire")]
struct Origin {
    /// Its next sequence to take: every one below was applied, skipped or given up.
    next: u64,
    /// The stream sequence where it was seen last (the least recent is forgotten first).
    seen: u64,
    /// Records that came ahead of a missing one, by origin sequence (`None`: a skip).
    held: BTreeMap<u64, Option<LogEntry>>,
}

/// An origin as stored in a snapshot: today's form (held records as `[seq, record]` pairs:
/// an untagged enum cannot read JSON's string keys as numbers), or the one before held
/// entries existed (`[last admitted, seen]`), so a snapshot written by an older node restores.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum OriginWire {
    Now {
        next: u64,
        seen: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        held: Vec<(u64, Option<LogEntry>)>,
    },
    Before(u64, u64),
}

impl From<Origin> for OriginWire {
    fn from(o: Origin) -> Self {
        OriginWire::Now {
            next: o.next,
            seen: o.seen,
            held: o.held.into_iter().collect(),
        }
    }
}

impl From<OriginWire> for Origin {
    fn from(w: OriginWire) -> Self {
        match w {
            OriginWire::Now { next, seen, held } => Origin {
                next,
                seen,
                held: held.into_iter().collect(),
            },
            OriginWire::Before(last, seen) => Origin {
                next: last + 1,
                seen,
                held: BTreeMap::new(),
            },
        }
    }
}

impl Origin {
    /// Takes held records from `next` on while they are there, giving up every missing
    /// sequence up to `floor` on the way.
    fn release(&mut self, name: &str, floor: u64, out: &mut impl FnMut(Out)) {
        loop {
            if let Some(record) = self.held.remove(&self.next) {
                if let Some(entry) = record {
                    out(Out::Apply(entry));
                }
                self.next += 1;
            } else if self.next <= floor {
                let to = self
                    .held
                    .keys()
                    .next()
                    .map_or(floor + 1, |k| (*k).min(floor + 1));
                out(Out::GaveUp {
                    origin: name.to_string(),
                    seqs: self.next..to,
                });
                self.next = to;
            } else {
                return;
            }
        }
    }
}

/// The applying side's state: the last stream sequence taken and, per origin, its place in
/// its own order and the entries held ahead of a missing one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sequencer {
    applied: u64,
    origins: HashMap<String, Origin>,
    /// Whose word each presence rests on.
    #[serde(default)]
    runs: Runs,
}

impl Sequencer {
    /// A sequencer that has taken nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last stream sequence taken (0: none); a consumer restarts after it.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Decides on the record at `stream_seq` (see the module doc); what is to be applied, in
    /// order, and what was given up goes to `out`.
    pub fn admit(&mut self, stream_seq: u64, record: Record, out: &mut impl FnMut(Out)) -> Admit {
        if stream_seq <= self.applied {
            return Admit::Replayed;
        }
        self.applied = stream_seq;
        let Self { origins, runs, .. } = self;
        let (origin, seq, entry) = match record {
            Record::Entry(e) => (e.origin.clone(), e.seq, Some(e)),
            Record::Control(Control::Skip { origin, seq }) => (origin, seq, None),
            Record::Control(Control::RunOver {
                origin,
                by,
                time_ms,
            }) => {
                for e in runs.over(&origin, &by, time_ms) {
                    out(Out::Apply(e));
                }
                return Admit::Ready;
            }
            Record::Control(Control::GiveUp { origin, below }) => {
                if let Some(o) = origins.get_mut(&origin) {
                    o.release(&origin, below.saturating_sub(1), &mut |o| {
                        through_runs(runs, o, out)
                    });
                }
                return Admit::Ready;
            }
        };
        let out = &mut |o: Out| through_runs(runs, o, out);
        let o = origin_mut(origins, &origin, stream_seq, out);
        if seq < o.next || o.held.contains_key(&seq) {
            return Admit::Stale;
        }
        if seq == o.next {
            // The common case: in order.
            if let Some(e) = entry {
                out(Out::Apply(e));
            }
            o.next += 1;
            o.release(&origin, 0, out);
            return Admit::Ready;
        }
        o.held.insert(seq, entry);
        o.release(&origin, seq.saturating_sub(ORIGIN_WINDOW), out);
        if o.held.contains_key(&seq) {
            Admit::Held
        } else {
            Admit::Ready
        }
    }

    /// Origins with entries held behind a missing one: `(origin, its first missing sequence,
    /// its last held sequence)`; a reader that sees the same pair for `event_give_up_ms`
    /// writes a [`Control::GiveUp`] below the last held one (so every held entry goes on:
    /// an origin still alive would have re-sent long before).
    pub fn waiting(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.origins.iter().filter_map(|(name, o)| {
            o.held
                .keys()
                .next_back()
                .map(|last| (name.as_str(), o.next, *last))
        })
    }

    /// Entries held back, over all origins.
    pub fn held(&self) -> usize {
        self.origins.values().map(|o| o.held.len()).sum()
    }

    /// A stream record that is not a log record (unreadable): taken as nothing, but its place
    /// in the stream is passed.
    pub fn skip(&mut self, stream_seq: u64) {
        self.applied = self.applied.max(stream_seq);
    }
}

/// An entry to apply goes through [`Runs`] (which may add what a run's end requires around
/// it); the rest goes straight out.
fn through_runs(runs: &mut Runs, o: Out, out: &mut impl FnMut(Out)) {
    match o {
        Out::Apply(e) => runs.apply(e, &mut |e| out(Out::Apply(e))),
        other => out(other),
    }
}

/// `name`'s state, seen at `stream_seq`; a new origin starts at sequence 1. When
/// [`MAX_ORIGINS`] are known, the least recently seen is forgotten first, its held entries
/// applied as they are (it has been silent for the longest).
fn origin_mut<'a>(
    origins: &'a mut HashMap<String, Origin>,
    name: &str,
    stream_seq: u64,
    out: &mut impl FnMut(Out),
) -> &'a mut Origin {
    if !origins.contains_key(name) {
        if origins.len() >= MAX_ORIGINS
            && let Some(oldest) = origins
                .iter()
                .min_by_key(|(_, o)| o.seen)
                .map(|(n, _)| n.clone())
            && let Some(gone) = origins.remove(&oldest)
        {
            for entry in gone.held.into_values().flatten() {
                out(Out::Apply(entry));
            }
        }
        origins.insert(
            name.to_string(),
            Origin {
                next: 1,
                seen: stream_seq,
                held: BTreeMap::new(),
            },
        );
    }
    let o = origins.get_mut(name).expect("inserted above");
    o.seen = stream_seq;
    o
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
/// latest snapshot's sequence. A node that has read before reads on while the stream still
/// holds what it needs: each entry is an event its own subscribers get, which a snapshot
/// would skip (another node's snapshot is often ahead after a reconnect). A snapshot is used
/// when it is ahead of the node, nothing after it was discarded, and the node either starts
/// (less to replay) or cannot read on (entries it needs were discarded).
pub fn start(applied: u64, first_seq: u64, snapshot: Option<u64>) -> Start {
    let can_continue = applied + 1 >= first_seq;
    match snapshot {
        _ if applied > 0 && can_continue => Start::Continue,
        Some(s) if s > applied && s + 1 >= first_seq => Start::Snapshot,
        _ if can_continue => Start::Continue,
        _ => Start::Incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::bus::Stamped;
    use crate::hub::event::Draft;
    use crate::hub::{EventBus, Side};
    use crate::hub::{EventKind, Party};
    use std::sync::Arc;

    /// An entry of `origin` with sequence `seq` (the app and group say which).
    fn entry(origin: &str, seq: u64) -> LogEntry {
        LogEntry::new(
            origin,
            Stamped {
                seq,
                time_ms: seq,
                draft: Draft::new("a", EventKind::TalkStarted, format!("{origin}#{seq}")),
            },
        )
    }

    /// Admits `record` at `stream_seq`; returns the verdict and what it handed out, as
    /// `"origin#seq"` for an applied entry and `"gave up origin a..b"`.
    fn take(s: &mut Sequencer, stream_seq: u64, record: Record) -> (Admit, Vec<String>) {
        let mut out = Vec::new();
        let verdict = s.admit(stream_seq, record, &mut |o| {
            out.push(match o {
                Out::Apply(e) => e.group_id,
                Out::GaveUp { origin, seqs } => {
                    format!("gave up {origin} {}..{}", seqs.start, seqs.end)
                }
            })
        });
        (verdict, out)
    }

    fn ev(s: &mut Sequencer, stream_seq: u64, origin: &str, seq: u64) -> (Admit, Vec<String>) {
        take(s, stream_seq, Record::Entry(entry(origin, seq)))
    }

    #[test]
    fn replays_are_not_taken_and_an_entry_ahead_of_a_missing_one_waits_for_it() {
        let mut s = Sequencer::new();
        assert_eq!(
            ev(&mut s, 1, "a/1", 1),
            (Admit::Ready, vec!["a/1#1".into()])
        );
        assert_eq!(ev(&mut s, 2, "b/1", 1).0, Admit::Ready);
        assert_eq!(
            ev(&mut s, 2, "b/1", 1),
            (Admit::Replayed, vec![]),
            "redelivered"
        );
        assert_eq!(ev(&mut s, 1, "a/1", 1).0, Admit::Replayed);
        assert_eq!(
            ev(&mut s, 3, "a/1", 3),
            (Admit::Held, vec![]),
            "2 is missing"
        );
        assert_eq!(ev(&mut s, 4, "a/1", 4), (Admit::Held, vec![]));
        assert_eq!(ev(&mut s, 5, "b/1", 2).0, Admit::Ready, "b is not held up");
        assert_eq!(s.held(), 2);
        assert_eq!(s.waiting().collect::<Vec<_>>(), vec![("a/1", 2, 4)]);
        assert_eq!(
            ev(&mut s, 6, "a/1", 2),
            (
                Admit::Ready,
                vec!["a/1#2".into(), "a/1#3".into(), "a/1#4".into()]
            ),
            "the re-send releases what waited, in a's order"
        );
        assert_eq!(
            ev(&mut s, 7, "a/1", 3),
            (Admit::Stale, vec![]),
            "stored twice"
        );
        assert_eq!(ev(&mut s, 8, "a/1", 6), (Admit::Held, vec![]));
        assert_eq!(
            ev(&mut s, 9, "a/1", 6),
            (Admit::Stale, vec![]),
            "held twice"
        );
        assert_eq!(ev(&mut s, 10, "a/2", 1).0, Admit::Ready, "a restarted node");
        assert_eq!(s.applied(), 10);
        s.skip(11);
        assert_eq!(ev(&mut s, 11, "a/2", 2).0, Admit::Replayed);
    }

    #[test]
    fn a_missing_entry_is_given_up_once_its_origin_is_a_window_past_it() {
        let mut s = Sequencer::new();
        ev(&mut s, 1, "a/1", 1);
        for seq in 3..2 + ORIGIN_WINDOW {
            assert_eq!(ev(&mut s, seq, "a/1", seq).0, Admit::Held);
        }
        // Sequence 2 + W: the publisher sent it only after 2 was stored, so 2 never will be.
        let (verdict, out) = ev(&mut s, 2 + ORIGIN_WINDOW, "a/1", 2 + ORIGIN_WINDOW);
        assert_eq!(verdict, Admit::Ready);
        assert_eq!(out[0], "gave up a/1 2..3");
        let applied: Vec<String> = (3..=2 + ORIGIN_WINDOW)
            .map(|i| format!("a/1#{i}"))
            .collect();
        assert_eq!(out[1..], applied[..], "the held ones, in order");
        assert_eq!(s.held(), 0);
        assert_eq!(
            ev(&mut s, 3 + ORIGIN_WINDOW, "a/1", 2),
            (Admit::Stale, vec![]),
            "came after it was given up"
        );
    }

    #[test]
    fn a_skip_fills_its_place_and_a_give_up_releases_a_dead_origins_entries() {
        let mut s = Sequencer::new();
        ev(&mut s, 1, "a/1", 1);
        assert_eq!(ev(&mut s, 2, "a/1", 3).0, Admit::Held);
        let skip = Record::from(Control::Skip {
            origin: "a/1".into(),
            seq: 2,
        });
        assert_eq!(take(&mut s, 3, skip), (Admit::Ready, vec!["a/1#3".into()]));

        ev(&mut s, 4, "a/1", 6);
        ev(&mut s, 5, "a/1", 8);
        let give_up = |below| {
            Record::from(Control::GiveUp {
                origin: "a/1".into(),
                below,
            })
        };
        assert_eq!(
            take(&mut s, 6, give_up(6)),
            (
                Admit::Ready,
                vec!["gave up a/1 4..6".into(), "a/1#6".into()]
            ),
            "only below 6: 7 may still come"
        );
        assert_eq!(
            ev(&mut s, 7, "a/1", 7),
            (Admit::Ready, vec!["a/1#7".into(), "a/1#8".into()])
        );
        assert_eq!(
            take(&mut s, 8, give_up(6)),
            (Admit::Ready, vec![]),
            "a second reader's"
        );
        assert_eq!(
            take(&mut s, 9, give_up(3)).1,
            Vec::<String>::new(),
            "unknown origin"
        );
        assert!(s.waiting().next().is_none());
    }

    #[test]
    fn records_round_trip_and_a_stranger_is_an_entrys_error() {
        let records = [
            Record::Entry(entry("n/1", 4)),
            Record::from(Control::Skip {
                origin: "n/1".into(),
                seq: 5,
            }),
            Record::from(Control::GiveUp {
                origin: "n/1".into(),
                below: 6,
            }),
        ];
        for r in records {
            assert_eq!(Record::parse(&r.to_json()).unwrap(), r);
        }
        assert_eq!(
            String::from_utf8(
                Record::from(Control::Skip {
                    origin: "n/1".into(),
                    seq: 5
                })
                .to_json()
            )
            .unwrap(),
            r#"{"skip":{"origin":"n/1","seq":5}}"#
        );
        let err = Record::parse(br#"{"origin":"n/1","seq":1}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `time_ms`"), "{err}");
    }

    #[test]
    fn a_snapshot_written_before_held_entries_existed_still_restores() {
        let old = r#"{"applied":9,"origins":{"n/1":[4,9]}}"#;
        let mut s: Sequencer = serde_json::from_str(old).unwrap();
        assert_eq!(s.applied(), 9);
        assert_eq!(
            ev(&mut s, 10, "n/1", 5),
            (Admit::Ready, vec!["n/1#5".into()])
        );
    }

    #[test]
    fn origins_are_bounded_forgetting_the_least_recently_seen() {
        let mut s = Sequencer::new();
        // n/0 holds its entry 2 (1 never came) and is then the least recently seen.
        assert_eq!(ev(&mut s, 1, "n/0", 2).0, Admit::Held);
        for i in 1..MAX_ORIGINS as u64 {
            ev(&mut s, i + 1, &format!("n/{i}"), 1);
        }
        // n/1 seen again: n/0 stays the oldest.
        ev(&mut s, MAX_ORIGINS as u64 + 1, "n/1", 2);
        let out = ev(&mut s, MAX_ORIGINS as u64 + 2, "new/1", 1);
        assert_eq!(
            out,
            (Admit::Ready, vec!["n/0#2".into(), "new/1#1".into()]),
            "forgotten, it hands out what it held rather than lose it"
        );
        assert_eq!(s.origins.len(), MAX_ORIGINS);
        assert!(!s.origins.contains_key("n/0"));
        assert!(s.origins.contains_key("n/1"));
    }

    #[test]
    fn a_node_uses_a_snapshot_only_when_it_starts_or_cannot_read_on() {
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
            start(30, 31, Some(40)),
            Start::Continue,
            "a node that read before reads on: 31..40 are events for its subscribers"
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
        let mut next = [0u64; 2];
        let mut entries: Vec<LogEntry> = (1..=200u64)
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
                let o = (i % 2) as usize;
                next[o] += 1;
                LogEntry::new(
                    &format!("n{o}/1"),
                    Stamped {
                        seq: next[o],
                        time_ms: i,
                        draft,
                    },
                )
            })
            .collect();
        // One origin's entry stored late, across the snapshot's point: held in the snapshot.
        entries.swap(117, 123);
        let feed = |bus: &EventBus, seq: &mut Sequencer, range: std::ops::Range<usize>| {
            for i in range {
                let record = Record::Entry(entries[i].clone());
                seq.admit(i as u64 + 1, record, &mut |o| {
                    if let Out::Apply(e) = o {
                        let (d, t) = e.into_draft();
                        bus.apply_replicated(d, t, false);
                    }
                });
            }
        };
        let whole = EventBus::new();
        let mut s1 = Sequencer::new();
        feed(&whole, &mut s1, 0..200);

        let first = EventBus::new();
        let mut s2 = Sequencer::new();
        feed(&first, &mut s2, 0..120);
        assert!(s2.held() > 0, "the snapshot holds an entry");
        let snap = Snapshot {
            sequencer: s2.clone(),
            apps: first.export(),
        };
        let json = serde_json::to_vec(&snap).unwrap();
        let snap: Snapshot = serde_json::from_slice(&json).unwrap();
        assert_eq!(snap.sequencer, s2);

        let late = EventBus::new();
        late.restore(snap.apps);
        let mut s3 = snap.sequencer;
        assert_eq!(s3.applied(), 120);
        feed(&late, &mut s3, 120..200);
        assert_eq!(late.export(), whole.export());
        assert_eq!(s3, s1);
        assert_eq!(s1.held(), 0);
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
        // A stream written by three origins, with a re-send stored twice and one stored late
        // (after a later one of its origin, or of another origin).
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
                        let again = seq.admit(*s, Record::Entry(e.clone()), &mut |_| {
                            panic!("a replay hands nothing out")
                        });
                        assert_eq!(again, Admit::Replayed);
                    }
                }
                let (s, e) = &fixed[i];
                seq.admit(*s, Record::Entry(e.clone()), &mut |o| {
                    if let Out::Apply(e) = o {
                        let local = e.origin == "n0/1";
                        let (d, t) = e.into_draft();
                        bus.apply_replicated(d, t, local);
                    }
                });
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
            300,
            "the duplicate dropped, the late entry held and applied"
        );
        assert_eq!(run(17), first);
        assert_eq!(run(5), first);
    }

    /// The rules against a model of the publishers: each origin sends in order, sending `t`
    /// only once every `s <= t - ORIGIN_WINDOW` was stored, and JetStream stores what is in
    /// flight in any order (a broken connection: later ones through, the lost ones re-sent
    /// after them), some re-sends twice; one origin dies with entries in flight and a reader
    /// writes a give-up for it. Every stored entry is applied exactly once, each origin's in
    /// its own order, and a node that starts from a snapshot at any point ends as the others.
    #[test]
    fn every_stored_entry_is_applied_once_in_its_origins_order() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        const ORIGINS: usize = 3;
        const DEAD: usize = 2;
        let names: Vec<String> = (0..ORIGINS).map(|o| format!("n{o}/1")).collect();
        let mut next = [1u64; ORIGINS];
        let mut flight: Vec<Vec<u64>> = vec![Vec::new(); ORIGINS];
        let mut stored: Vec<Vec<u64>> = vec![Vec::new(); ORIGINS];
        let mut stream: Vec<Record> = Vec::new();
        let mut duplicates = 0;
        for step in 0..30_000 {
            if step == 20_000 {
                // A reader that waited long enough writes the give-up for the dead origin.
                let mut s = Sequencer::new();
                for (i, r) in stream.iter().enumerate() {
                    s.admit(i as u64 + 1, r.clone(), &mut |_| {});
                }
                let (origin, _, last_held) = s
                    .waiting()
                    .find(|(n, _, _)| *n == names[DEAD])
                    .expect("the dead origin left entries held");
                stream.push(Record::from(Control::GiveUp {
                    origin: origin.to_string(),
                    below: last_held,
                }));
            }
            let o = rand(ORIGINS as u64) as usize;
            if o == DEAD && step > 15_000 {
                continue; // died, with what it had in flight lost
            }
            let oldest = flight[o].iter().min().copied().unwrap_or(next[o]);
            if rand(2) == 0 && next[o] < oldest + ORIGIN_WINDOW {
                flight[o].push(next[o]);
                next[o] += 1;
            } else if !flight[o].is_empty() {
                // Mostly the oldest (in order), sometimes any of those in flight.
                let i = if rand(8) == 0 {
                    rand(flight[o].len() as u64) as usize
                } else {
                    let min = flight[o].iter().min().unwrap();
                    flight[o].iter().position(|s| s == min).unwrap()
                };
                let s = flight[o].swap_remove(i);
                stream.push(Record::Entry(entry(&names[o], s)));
                stored[o].push(s);
                if rand(50) == 0 {
                    let again = stored[o][rand(stored[o].len() as u64) as usize];
                    stream.push(Record::Entry(entry(&names[o], again)));
                    duplicates += 1;
                }
            }
        }
        // The live origins' last ones, in order, as a drained publisher stores them.
        for o in 0..ORIGINS {
            if o != DEAD {
                flight[o].sort();
                for s in std::mem::take(&mut flight[o]) {
                    stream.push(Record::Entry(entry(&names[o], s)));
                    stored[o].push(s);
                }
            }
        }

        // (applied and given up, stale, apps, held)
        type Read = (
            Vec<String>,
            u64,
            Vec<(String, u64, crate::events::state::AppModel)>,
            u64,
        );
        let read =
            |seq: &mut Sequencer, bus: &EventBus, range: std::ops::Range<usize>, got: &mut Read| {
                for i in range {
                    let verdict = seq.admit(i as u64 + 1, stream[i].clone(), &mut |o| match o {
                        Out::Apply(e) => {
                            got.0.push(e.group_id.clone());
                            let (d, t) = e.into_draft();
                            bus.apply_replicated(d, t, false);
                        }
                        Out::GaveUp { origin, seqs } => {
                            got.0.push(format!("gave up {origin} {seqs:?}"))
                        }
                    });
                    match verdict {
                        Admit::Stale => got.1 += 1,
                        Admit::Held => got.3 += 1,
                        _ => {}
                    }
                }
            };
        let bus = EventBus::new();
        let mut seq = Sequencer::new();
        let mut whole: Read = Default::default();
        read(&mut seq, &bus, 0..stream.len(), &mut whole);
        whole.2 = bus.export();
        assert_eq!(whole.1, duplicates, "exactly the duplicates are stale");
        assert!(whole.3 > 100, "entries were held: {}", whole.3);
        let gave_up: Vec<&String> = whole
            .0
            .iter()
            .filter(|s| s.starts_with("gave up"))
            .collect();
        assert!(
            !gave_up.is_empty() && gave_up.iter().all(|s| s.starts_with("gave up n2/1")),
            "only the dead origin's: {gave_up:?}"
        );
        assert_eq!(
            seq.held(),
            0,
            "nothing left waiting: {:?}",
            seq.waiting().collect::<Vec<_>>()
        );
        for (o, name) in names.iter().enumerate() {
            let applied: Vec<u64> = whole
                .0
                .iter()
                .filter_map(|g| g.strip_prefix(&format!("{name}#")))
                .map(|s| s.parse().unwrap())
                .collect();
            let mut expect = stored[o].clone();
            expect.sort();
            assert_eq!(applied, expect, "{name}: every stored one once, in order");
        }

        for cut in [1, 777, stream.len() / 2, stream.len() - 3] {
            let bus = EventBus::new();
            let mut s = Sequencer::new();
            let mut got: Read = Default::default();
            read(&mut s, &bus, 0..cut, &mut got);
            let snap = Snapshot {
                sequencer: s,
                apps: bus.export(),
            };
            let snap: Snapshot =
                serde_json::from_slice(&serde_json::to_vec(&snap).unwrap()).unwrap();
            let late = EventBus::new();
            late.restore(snap.apps);
            let mut s = snap.sequencer;
            read(&mut s, &late, cut..stream.len(), &mut got);
            got.2 = late.export();
            assert_eq!(got, whole, "from a snapshot at {cut}");
            assert_eq!(s, seq);
        }
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
        bus.publish(Draft::new("a", EventKind::TalkStopped, "g"));
        assert_eq!(
            rx.try_recv().unwrap().seq,
            3,
            "a dropped draft took no number: no gap for readers to wait on"
        );
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
