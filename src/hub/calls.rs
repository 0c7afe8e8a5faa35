//! Call records ("CDRs") of bridged calls, for `GET /v1/consuming/records`.
//!
//! A side starts a record when a bridged call begins and finishes it when the call ends:
//!
//! ```ignore
//! let rec = calls.start(CallStart::new(app, group, [Side::Meeting, Side::Ptt]).initiator(party));
//! let counters = rec.counters();          // cheap Arc: count on the media path, lock-free
//! counters.audio(1, opus.len());          // per audio packet carried (either direction)
//! counters.signal(1);                     // per signalling message/event of the call
//! rec.finish("hangup");                   // writes the record; dropping it finishes it too
//! ```
//!
//! What a record means is the side's call: a console temporary call (`sessionId`), a meeting
//! room dialled into a PTT channel, and — on the PTT side on its own — a *conversation* of a PTT
//! channel the bridge sits in: from the first talk burst until the channel has been silent for
//! `business.ptt_call_idle_ms` (see `sides::ptt::calls`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use logsafe::esc;
use tracing::warn;

use super::event::{Party, Side};
use crate::events::state::user_id;
use crate::storage::{CallRow, RecordOp, Store};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a call starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStart {
    /// App.
    pub app: String,
    /// Group (the bridge group id of the call).
    pub group: String,
    /// Sides the call spans.
    pub sides: Vec<Side>,
    /// Who started it.
    pub initiator: Option<Party>,
}

impl CallStart {
    /// A call of `app` in `group` across `sides`.
    pub fn new(
        app: impl Into<String>,
        group: impl Into<String>,
        sides: impl IntoIterator<Item = Side>,
    ) -> Self {
        Self {
            app: app.into(),
            group: group.into(),
            sides: sides.into_iter().collect(),
            initiator: None,
        }
    }

    /// Sets who started it.
    pub fn initiator(mut self, party: Party) -> Self {
        self.initiator = Some(party);
        self
    }
}

/// Lock-free counters of a running call.
#[derive(Debug, Default)]
pub struct CallCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    signalling: AtomicU64,
}

impl CallCounters {
    /// Counts `packets` audio packets of `bytes` payload bytes in total.
    pub fn audio(&self, packets: u64, bytes: usize) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts signalling messages.
    pub fn signal(&self, n: u64) {
        self.signalling.fetch_add(n, Ordering::Relaxed);
    }

    /// `(packets, bytes, signalling)` so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.signalling.load(Ordering::Relaxed),
        )
    }
}

/// Starts call records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Calls {
    store: Store,
}

impl Calls {
    /// Records go to `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Starts a call now.
    pub fn start(&self, start: CallStart) -> CallRecorder {
        self.start_at(start, now_ms())
    }

    /// Starts a call that began at `start_ms` (ms since the epoch).
    pub fn start_at(&self, start: CallStart, start_ms: i64) -> CallRecorder {
        metrics::gauge!("pttbridge_calls_active").increment(1.0);
        CallRecorder {
            store: self.store.clone(),
            start: Some(start),
            start_ms,
            counters: Arc::new(CallCounters::default()),
        }
    }
}

/// A running call. [`CallRecorder::finish`] (or dropping it) writes the record.
#[derive(Debug)]
pub struct CallRecorder {
    store: Store,
    start: Option<CallStart>,
    start_ms: i64,
    counters: Arc<CallCounters>,
}

impl CallRecorder {
    /// The call's counters, to share with the media path.
    pub fn counters(&self) -> Arc<CallCounters> {
        self.counters.clone()
    }

    /// When it started, ms since the epoch.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// Ends the call now; returns the record id.
    pub fn finish(mut self, reason: &str) -> Option<i64> {
        self.write(now_ms(), reason)
    }

    /// Ends the call at `end_ms` (e.g. the last audio, not the idle timeout that noticed it).
    pub fn finish_at(mut self, end_ms: i64, reason: &str) -> Option<i64> {
        self.write(end_ms, reason)
    }

    fn write(&mut self, end_ms: i64, reason: &str) -> Option<i64> {
        let start = self.start.take()?;
        metrics::gauge!("pttbridge_calls_active").decrement(1.0);
        let (packets, bytes, signalling) = self.counters.totals();
        let row = CallRow {
            id: 0,
            app_id: start.app,
            group_id: start.group,
            sides: start.sides.iter().map(|s| s.as_str().to_string()).collect(),
            initiator: start.initiator.as_ref().map(user_id).unwrap_or_default(),
            start_ms: self.start_ms,
            end_ms: end_ms.max(self.start_ms),
            audio_packets: packets as i64,
            audio_bytes: bytes as i64,
            signalling: signalling as i64,
            end_reason: reason.to_string(),
        };
        if self.store.replicated() {
            // Cluster mode: the record goes through the shared log and gets its id where it
            // is applied, on every node alike.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let store = self.store.clone();
                rt.spawn(async move {
                    let group = row.group_id.clone();
                    match store.write(RecordOp::InsertCall { call: row }).await {
                        Ok(_) => metrics::counter!("pttbridge_call_records_total").increment(1),
                        Err(e) => call_record_lost(&e, &group),
                    }
                });
            }
            return None;
        }
        match self.store.insert_call(&row) {
            Ok(id) => {
                metrics::counter!("pttbridge_call_records_total").increment(1);
                Some(id)
            }
            Err(e) => {
                call_record_lost(&e, &row.group_id);
                None
            }
        }
    }
}

fn call_record_lost(e: &crate::storage::StoreError, group: &str) {
    warn!(error = %esc(e), group = %esc(group), "call record lost");
    metrics::counter!("pttbridge_errors_total", "side" => "events", "kind" => "call_record")
        .increment(1);
}

impl Drop for CallRecorder {
    fn drop(&mut self) {
        if self.start.is_some() {
            self.write(now_ms(), "dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_writes_its_counts_once() {
        let store = Store::open(None).unwrap();
        let calls = Calls::new(store.clone());
        let rec = calls.start_at(
            CallStart::new("a", "g", [Side::Meeting, Side::Ptt]).initiator(Party {
                side: Side::Meeting,
                id: "9".into(),
                name: "m".into(),
            }),
            1_000,
        );
        let c = rec.counters();
        c.audio(2, 300);
        c.signal(3);
        let id = rec.finish_at(4_500, "hangup").unwrap();
        {
            let _dropped = calls.start_at(CallStart::new("a", "g2", [Side::Ptt]), 2_000);
        }
        let (rows, total) = store.calls(0, i64::MAX, Some("a"), 1, 10).unwrap();
        assert_eq!(total, 2);
        let r = &rows[0];
        assert_eq!(r.id, id);
        assert_eq!(r.sides, vec!["meeting", "ptt"]);
        assert_eq!(r.initiator, "meeting:9");
        assert_eq!(
            (
                r.end_ms - r.start_ms,
                r.audio_packets,
                r.audio_bytes,
                r.signalling
            ),
            (3_500, 2, 300, 3)
        );
        assert_eq!(rows[1].end_reason, "dropped");
    }
}
