//! One entry of the replicated event log as stored in the stream: a node's draft with its
//! origin and sequence (the rules that order entries are [`super::log`]'s).

use serde::{Deserialize, Serialize};

use crate::hub::bus::Stamped;
use crate::hub::event::Draft;
use crate::hub::{EventKind, Party};

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
