//! A signalling connection's outgoing queue. Bounded: replies wait for room, pushes are
//! `try_send` — a client that does not read loses pushes (counted) and never slows anyone else.

use serde_json::Value;
use tokio::sync::mpsc;

/// Frames queued for one client before pushes to it are dropped.
pub const OUTBOX: usize = 512;

/// Where a connection's outgoing frames go.
pub type Outbox = mpsc::Sender<Value>;

/// Queues a push; false (and counted when the queue is full) when it was not taken.
pub fn push_outbox(outbox: &Outbox, msg: Value) -> bool {
    match outbox.try_send(msg) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("pttbridge_meeting_pushes_dropped_total").increment(1);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
