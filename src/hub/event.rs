//! Normalised events: what every side reports, in one shape.

use serde::{Deserialize, Serialize};

/// Which side of the bridge a party or group belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// PTT server users and channels.
    Ptt,
    /// Dispatch consoles (muicall).
    Console,
    /// Meeting rooms (RTCPeer/WebRTC).
    Meeting,
}

impl Side {
    /// Every side.
    pub const ALL: [Side; 3] = [Side::Ptt, Side::Console, Side::Meeting];

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ptt => "ptt",
            Self::Console => "console",
            Self::Meeting => "meeting",
        }
    }

    /// The side named `name` (as [`Side::as_str`] writes it); the one place names are read.
    pub fn parse(name: &str) -> Option<Side> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// An endpoint on any side.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Party {
    /// Its side.
    pub side: Side,
    /// Stable id on that side (PTT: registered user id, else `s<session>`).
    pub id: String,
    /// Display name.
    pub name: String,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A party entered a group.
    #[serde(rename = "party.joined")]
    PartyJoined,
    /// A party left a group.
    #[serde(rename = "party.left")]
    PartyLeft,
    /// A party started talking in a group.
    #[serde(rename = "talk.started")]
    TalkStarted,
    /// A party stopped talking.
    #[serde(rename = "talk.stopped")]
    TalkStopped,
    /// A party asked for the floor and did not get it.
    #[serde(rename = "floor.denied")]
    FloorDenied,
    /// A call is ringing.
    #[serde(rename = "call.ringing")]
    CallRinging,
    /// A call was answered.
    #[serde(rename = "call.answered")]
    CallAnswered,
    /// A call ended.
    #[serde(rename = "call.ended")]
    CallEnded,
    /// A link between groups of two sides came up.
    #[serde(rename = "link.up")]
    LinkUp,
    /// A link went down.
    #[serde(rename = "link.down")]
    LinkDown,
    /// A side (e.g. a PTT server connection) is up.
    #[serde(rename = "side.connected")]
    SideConnected,
    /// A side is down.
    #[serde(rename = "side.disconnected")]
    SideDisconnected,
    /// A text message.
    #[serde(rename = "message.text")]
    MessageText,
}

impl EventKind {
    /// The dotted name, e.g. `talk.started`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PartyJoined => "party.joined",
            Self::PartyLeft => "party.left",
            Self::TalkStarted => "talk.started",
            Self::TalkStopped => "talk.stopped",
            Self::FloorDenied => "floor.denied",
            Self::CallRinging => "call.ringing",
            Self::CallAnswered => "call.answered",
            Self::CallEnded => "call.ended",
            Self::LinkUp => "link.up",
            Self::LinkDown => "link.down",
            Self::SideConnected => "side.connected",
            Self::SideDisconnected => "side.disconnected",
            Self::MessageText => "message.text",
        }
    }
}

/// An event as published: numbered per app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Tenant.
    pub app_id: String,
    /// Increases by exactly one per event of this app.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Where (e.g. `ptt:local:North`); empty for side-wide events.
    pub group_id: String,
    /// Who, if a party is involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub party: Option<Party>,
    /// Kind-specific details (text, reason, ...).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl Event {
    /// Seconds since an event of time `time_ms` was published (to the millisecond), for
    /// `pttbridge_event_delivery_seconds`.
    pub fn age_seconds(time_ms: u64) -> f64 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        now_ms.saturating_sub(time_ms) as f64 / 1000.0
    }
}

/// An event before the bus numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Tenant.
    pub app_id: String,
    /// What happened.
    pub kind: EventKind,
    /// Where.
    pub group_id: String,
    /// Who.
    pub party: Option<Party>,
    /// Details.
    pub detail: serde_json::Value,
}

impl Draft {
    /// A draft without party or detail.
    pub fn new(app_id: impl Into<String>, kind: EventKind, group_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            kind,
            group_id: group_id.into(),
            party: None,
            detail: serde_json::Value::Null,
        }
    }

    /// Sets the party.
    pub fn party(mut self, party: Party) -> Self {
        self.party = Some(party);
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}
