//! How the meeting side appears on the hub: its users as parties, its rooms as groups, and a
//! publisher bound to its app.

use std::sync::Arc;

use rtcpeer::id::Id;
use serde_json::{Value, json};

use crate::bridge::Notice;
use crate::hub::event::Draft;
use crate::hub::{EventBus, EventKind, Party, Side};

/// Group id of a meeting room in hub events.
pub fn group_id(room: Id) -> String {
    format!("meeting:{room}")
}

/// Party of a meeting user.
pub fn party(id: Id, name: Option<&str>) -> Party {
    Party {
        side: Side::Meeting,
        id: id.to_string(),
        name: name.unwrap_or_default().to_owned(),
    }
}

/// Publishes the meeting side's hub events under its app.
#[derive(Debug, Clone)]
pub struct Publisher {
    bus: Arc<EventBus>,
    app: String,
}

impl Publisher {
    /// A publisher for `app` on `bus`.
    pub fn new(bus: Arc<EventBus>, app: String) -> Self {
        Self { bus, app }
    }

    /// The app (tenant) of meeting events.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The hub's bus.
    pub fn bus(&self) -> &Arc<EventBus> {
        &self.bus
    }

    /// An event in room `room` (no group when `None`).
    pub fn room(&self, kind: EventKind, room: Option<Id>, party: Option<Party>, detail: Value) {
        self.group(kind, room.map(group_id).unwrap_or_default(), party, detail);
    }

    /// An event in hub group `group` (client mode names rooms on other servers).
    pub fn group(&self, kind: EventKind, group: String, party: Option<Party>, detail: Value) {
        let mut d = Draft::new(self.app.clone(), kind, group).detail(detail);
        d.party = party;
        self.bus.publish(d);
    }
}

/// The hub event a link's notice makes, the same in a room and in client mode: a member's talk
/// state (`talk.*`, linked to the PTT group) or the group refused the PTT floor
/// (`floor.denied`, from the dial-in). `member_name` names a member; other notices make none
/// (PTT talk is the PTT side's to publish).
pub fn link_event(
    n: &Notice<Id>,
    dial: Id,
    dial_name: Option<&str>,
    ptt_group: &str,
    member_name: Option<&str>,
) -> Option<(EventKind, Party, Value)> {
    match n {
        Notice::MemberTalking { member, talking } => {
            let kind = if *talking {
                EventKind::TalkStarted
            } else {
                EventKind::TalkStopped
            };
            Some((
                kind,
                party(*member, member_name),
                json!({ "media_type": 2, "linked_to": ptt_group }),
            ))
        }
        Notice::FloorDenied { holder } => {
            metrics::counter!("pttbridge_meeting_floor_denied_total").increment(1);
            Some((
                EventKind::FloorDenied,
                party(dial, dial_name),
                json!({ "holder": holder, "ptt_group": ptt_group, "queued": true }),
            ))
        }
        _ => None,
    }
}
