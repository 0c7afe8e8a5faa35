//! What is true now, per app, as the events say: which groups exist, who is in each, what each
//! party broadcasts, and who is online. The bus applies every event to this model under the
//! same lock that numbers it, so a snapshot is exactly "the state after version V" — the base a
//! full sync hands out, after which live events with a version above V continue it.
//!
//! [`AppModel::apply`] is also the rule a client applies to pushed events to keep its replica:
//! - `party.joined`: the party is in the group (a second join changes nothing);
//! - `party.left`: the party and everything it broadcast there are gone; a group with nobody
//!   and no group media is gone;
//! - `talk.started` (or any event with `detail.media_type` and a start meaning): the party
//!   broadcasts that medium in that group (it joins the group if it was not there);
//! - `talk.stopped`: it no longer does;
//! - `side.connected` / `side.disconnected` with a party: that party is online / offline even
//!   when in no group (a console logged in, a meeting client connected);
//! - everything else (calls, links, floor, text) leaves the model as it is.

use std::collections::BTreeMap;

use crate::hub::{Event, EventKind, Party, Side};

/// Medium type of PTT talk and meeting speech (EGW `media_type` 2).
pub const AUDIO: u8 = 2;

/// The default medium id of a party's audio when the side gives none.
pub const AUDIO_MEDIA_ID: &str = "audio";

/// The user id a party has on the event surfaces: `<side>:<id>` (unique across sides).
pub fn user_id(party: &Party) -> String {
    format!("{}:{}", party.side.as_str(), party.id)
}

/// Splits a `<side>:<id>` user id.
pub fn parse_user_id(user_id: &str) -> Option<(Side, &str)> {
    let (side, id) = user_id.split_once(':')?;
    let side = Side::parse(side)?;
    (!id.is_empty()).then_some((side, id))
}

/// The medium an event starts or stops: `detail.media_id` / `detail.media_type`, audio by default.
pub fn media_of(event: &Event) -> (String, u8) {
    let media_type = event
        .detail
        .get("media_type")
        .and_then(|v| v.as_u64())
        .and_then(|v| u8::try_from(v).ok())
        .unwrap_or(AUDIO);
    let media_id = event
        .detail
        .get("media_id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            if media_type == AUDIO {
                AUDIO_MEDIA_ID.to_string()
            } else {
                format!("media{media_type}")
            }
        });
    (media_id, media_type)
}

/// One party in one group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Who.
    pub party: Party,
    /// What it broadcasts there: media id → media type.
    pub media: BTreeMap<String, u8>,
    /// Its session/terminal id on its side, when the side gave one (`detail.terminal`).
    pub terminal: Option<String>,
}

/// One group.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Group {
    /// Members by user id.
    pub members: BTreeMap<String, Member>,
    /// Media of the group itself (whiteboards): media id → type.
    pub media: BTreeMap<String, u8>,
}

/// A party that is online without being in a group (`side.connected` with a party).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Online {
    /// Who.
    pub party: Party,
    /// Its terminal id, if any.
    pub terminal: Option<String>,
}

/// One app's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct AppModel {
    /// Groups by id.
    pub groups: BTreeMap<String, Group>,
    /// Parties online outside any group, by user id.
    pub online: BTreeMap<String, Online>,
}

/// One user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Who.
    pub party: Party,
    /// Terminal id, if known.
    pub terminal: Option<String>,
    /// Groups it is in.
    pub groups: Vec<String>,
}

fn terminal_of(event: &Event) -> Option<String> {
    match event.detail.get("terminal") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl AppModel {
    /// Applies one event (see the module doc for the rules).
    pub fn apply(&mut self, event: &Event) {
        let Some(party) = &event.party else { return };
        let uid = user_id(party);
        match event.kind {
            EventKind::PartyJoined => {
                let terminal = terminal_of(event);
                let group = self.groups.entry(event.group_id.clone()).or_default();
                let member = group.members.entry(uid).or_insert_with(|| Member {
                    party: party.clone(),
                    media: BTreeMap::new(),
                    terminal: None,
                });
                member.party = party.clone();
                if terminal.is_some() {
                    member.terminal = terminal;
                }
            }
            EventKind::PartyLeft => {
                if let Some(group) = self.groups.get_mut(&event.group_id) {
                    group.members.remove(&uid);
                    if group.members.is_empty() && group.media.is_empty() {
                        self.groups.remove(&event.group_id);
                    }
                }
            }
            EventKind::TalkStarted => {
                let (media_id, media_type) = media_of(event);
                let group = self.groups.entry(event.group_id.clone()).or_default();
                group
                    .members
                    .entry(uid)
                    .or_insert_with(|| Member {
                        party: party.clone(),
                        media: BTreeMap::new(),
                        terminal: terminal_of(event),
                    })
                    .media
                    .insert(media_id, media_type);
            }
            EventKind::TalkStopped => {
                let (media_id, _) = media_of(event);
                if let Some(m) = self
                    .groups
                    .get_mut(&event.group_id)
                    .and_then(|g| g.members.get_mut(&uid))
                {
                    m.media.remove(&media_id);
                }
            }
            EventKind::SideConnected => {
                self.online.insert(
                    uid,
                    Online {
                        party: party.clone(),
                        terminal: terminal_of(event),
                    },
                );
            }
            EventKind::SideDisconnected => {
                self.online.remove(&uid);
            }
            EventKind::FloorDenied
            | EventKind::CallRinging
            | EventKind::CallAnswered
            | EventKind::CallEnded
            | EventKind::LinkUp
            | EventKind::LinkDown
            | EventKind::MessageText => {}
        }
    }

    /// This app's state limited to `groups` (all when `None`).
    pub fn filtered(&self, groups: Option<&[String]>) -> AppModel {
        match groups {
            None => self.clone(),
            Some(wanted) => AppModel {
                groups: self
                    .groups
                    .iter()
                    .filter(|(id, _)| wanted.contains(id))
                    .map(|(id, g)| (id.clone(), g.clone()))
                    .collect(),
                online: BTreeMap::new(),
            },
        }
    }

    /// Everyone online: in a group, or online outside groups; by user id.
    pub fn presence(&self) -> BTreeMap<String, Presence> {
        let mut out: BTreeMap<String, Presence> = BTreeMap::new();
        for (gid, g) in &self.groups {
            for (uid, m) in &g.members {
                let p = out.entry(uid.clone()).or_insert_with(|| Presence {
                    party: m.party.clone(),
                    terminal: m.terminal.clone(),
                    groups: Vec::new(),
                });
                p.groups.push(gid.clone());
            }
        }
        for (uid, o) in &self.online {
            out.entry(uid.clone()).or_insert_with(|| Presence {
                party: o.party.clone(),
                terminal: o.terminal.clone(),
                groups: Vec::new(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: EventKind, group: &str, who: &str, detail: serde_json::Value) -> Event {
        Event {
            app_id: "a".into(),
            version: 1,
            time_ms: 0,
            kind,
            group_id: group.into(),
            party: Some(Party {
                side: Side::Ptt,
                id: who.into(),
                name: who.into(),
            }),
            detail,
        }
    }

    #[test]
    fn join_talk_leave() {
        let mut m = AppModel::default();
        m.apply(&ev(EventKind::PartyJoined, "g", "1", json!(null)));
        m.apply(&ev(
            EventKind::TalkStarted,
            "g",
            "1",
            json!({"media_type": 2}),
        ));
        assert_eq!(m.groups["g"].members["ptt:1"].media["audio"], 2);
        m.apply(&ev(
            EventKind::TalkStopped,
            "g",
            "1",
            json!({"media_type": 2}),
        ));
        assert!(m.groups["g"].members["ptt:1"].media.is_empty());
        m.apply(&ev(
            EventKind::TalkStarted,
            "g",
            "1",
            json!({"media_type": 2}),
        ));
        m.apply(&ev(EventKind::PartyLeft, "g", "1", json!(null)));
        assert!(
            m.groups.is_empty(),
            "leaving drops the media and the empty group"
        );
        m.apply(&ev(EventKind::MessageText, "g", "1", json!({"text": "x"})));
        assert!(m.groups.is_empty());
    }

    #[test]
    fn online_outside_groups() {
        let mut m = AppModel::default();
        let mut c = ev(EventKind::SideConnected, "", "7", json!({"terminal": 3}));
        c.party.as_mut().unwrap().side = Side::Console;
        m.apply(&c);
        assert_eq!(m.presence()["console:7"].terminal.as_deref(), Some("3"));
        c.kind = EventKind::SideDisconnected;
        m.apply(&c);
        assert!(m.presence().is_empty());
    }

    #[test]
    fn user_ids_round_trip() {
        assert_eq!(parse_user_id("ptt:s12"), Some((Side::Ptt, "s12")));
        assert_eq!(parse_user_id("meeting:a:b"), Some((Side::Meeting, "a:b")));
        assert_eq!(parse_user_id("nope:1"), None);
        assert_eq!(parse_user_id("ptt:"), None);
    }
}
