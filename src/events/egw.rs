//! The EGW projection of hub events: every event becomes exactly one pushed frame, so the
//! versions a client sees for an app are contiguous.
//!
//! | hub event | EGW push |
//! |---|---|
//! | `party.joined` | 20100 |
//! | `party.left` | 20101 (the user's media in that group end with it) |
//! | `talk.started` | 20102, `media_type` from the side (PTT talk: 2 audio), `media_id` default `audio` |
//! | `talk.stopped` | 20103 |
//! | anything else (`call.*`, `link.*`, `floor.denied`, `side.*`, `message.text`) | 20110 (extension) |
//!
//! Pushes carry `app_id` (an extension) so a client subscribed to several apps can follow each
//! app's versions. User ids are `<side>:<id>` (e.g. `ptt:3`, `ptt:s12` for an unregistered PTT session,
//! `console:1001`), group ids the bridge's (`ptt:<server>:<channel path>`, ...).

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use egw::{BridgeEvent, GroupSync, MediaInfo, Push, SyncReply, UserSync, ids};
use tokio::sync::broadcast;
use tracing::warn;

use super::state::{AppModel, media_of, user_id};
use crate::hub::bus::SUBSCRIBER_BUFFER;
use crate::hub::{Event, EventBus, EventKind};

/// One pushed frame, serialised once for every connection.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The event's app.
    pub app_id: Arc<str>,
    /// The event's version.
    pub version: u64,
    /// The frame text (shared, not copied, per connection).
    pub text: Utf8Bytes,
    /// The event's publication time (ms since the Unix epoch).
    pub time_ms: u64,
}

/// The bus projected to EGW frames by one task, so a thousand connections share one
/// serialisation per event. Started by the first connection.
///
/// Full sync stays exact: a connection subscribes here before it takes a snapshot, and every
/// event published after the snapshot is projected after that subscription.
#[derive(Debug, Default)]
pub struct EgwFeed {
    tx: OnceLock<broadcast::Sender<Frame>>,
}

impl EgwFeed {
    /// Frames from now on (starting the projection on first use).
    pub fn subscribe(&self, bus: &EventBus) -> broadcast::Receiver<Frame> {
        self.tx
            .get_or_init(|| {
                let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
                tokio::spawn(project(bus.subscribe(), tx.clone()));
                tx
            })
            .subscribe()
    }
}

async fn project(mut rx: broadcast::Receiver<Event>, tx: broadcast::Sender<Frame>) {
    loop {
        match rx.recv().await {
            Ok(ev) => {
                let _ = tx.send(Frame {
                    app_id: Arc::from(ev.app_id.as_str()),
                    version: ev.version,
                    text: Utf8Bytes::from(frame(&ev)),
                    time_ms: ev.time_ms,
                });
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Clients see the version gap and full-sync.
                warn!(missed = n, "EGW projection fell behind the bus");
                metrics::counter!("pttbridge_event_subscribers_cut_total", "sink" => "egw_feed", "reason" => "lagged")
                    .increment(1);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The frame text pushed for `event`.
pub fn frame(event: &Event) -> String {
    let user = event.party.as_ref().map(user_id);
    let push = |id: i64, media: Option<(String, u8)>| Push {
        app_id: Some(event.app_id.clone()),
        group_id: event.group_id.clone(),
        id,
        media_type: media.as_ref().map(|m| m.1),
        media_id: media.map(|m| m.0),
        user_id: user.clone().unwrap_or_default(),
        version: event.version,
    };
    match (event.kind, &user) {
        (EventKind::PartyJoined, Some(_)) => push(ids::USER_JOINED, None).to_json(),
        (EventKind::PartyLeft, Some(_)) => push(ids::USER_LEFT, None).to_json(),
        (EventKind::TalkStarted, Some(_)) => {
            push(ids::MEDIA_STARTED, Some(media_of(event))).to_json()
        }
        (EventKind::TalkStopped, Some(_)) => {
            push(ids::MEDIA_STOPPED, Some(media_of(event))).to_json()
        }
        _ => BridgeEvent {
            app_id: event.app_id.clone(),
            detail: event.detail.clone(),
            group_id: event.group_id.clone(),
            id: ids::BRIDGE_EVENT,
            time_ms: event.time_ms,
            kind: event.kind.as_str().to_string(),
            user_id: user,
            version: event.version,
        }
        .to_json(),
    }
}

/// The 20009 reply for one app's state at `version`.
pub fn sync_reply(app_id: &str, version: u64, model: &AppModel) -> SyncReply {
    let media = |m: &std::collections::BTreeMap<String, u8>| {
        m.iter()
            .map(|(id, t)| MediaInfo {
                media_id: id.clone(),
                media_type: *t,
            })
            .collect::<Vec<_>>()
    };
    let groups = model
        .groups
        .iter()
        .map(|(gid, g)| GroupSync {
            group_id: gid.clone(),
            group_media_list: media(&g.media),
            user_list: g
                .members
                .iter()
                .map(|(uid, m)| UserSync {
                    media_info: media(&m.media),
                    user_id: uid.clone(),
                })
                .collect(),
        })
        .collect();
    SyncReply::new(app_id.to_string(), version, groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Party, Side};
    use serde_json::{Value, json};

    fn event(kind: EventKind, detail: Value) -> Event {
        Event {
            app_id: "a".into(),
            version: 7,
            time_ms: 1,
            kind,
            group_id: "ptt:local:North".into(),
            party: Some(Party {
                side: Side::Ptt,
                id: "s3".into(),
                name: "alice".into(),
            }),
            detail,
        }
    }

    #[test]
    fn every_kind_projects_to_one_frame_with_its_version() {
        let all = [
            EventKind::PartyJoined,
            EventKind::PartyLeft,
            EventKind::TalkStarted,
            EventKind::TalkStopped,
            EventKind::FloorDenied,
            EventKind::CallRinging,
            EventKind::CallAnswered,
            EventKind::CallEnded,
            EventKind::LinkUp,
            EventKind::LinkDown,
            EventKind::SideConnected,
            EventKind::SideDisconnected,
            EventKind::MessageText,
        ];
        for kind in all {
            let v: Value =
                serde_json::from_str(&frame(&event(kind, json!({"media_type": 2})))).unwrap();
            assert_eq!(v["version"], 7, "{kind:?}");
            let id = v["id"].as_i64().unwrap();
            let expected = match kind {
                EventKind::PartyJoined => 20100,
                EventKind::PartyLeft => 20101,
                EventKind::TalkStarted => 20102,
                EventKind::TalkStopped => 20103,
                _ => 20110,
            };
            assert_eq!(id, expected, "{kind:?}");
            if id == 20110 {
                assert_eq!(v["type"], kind.as_str());
                assert_eq!(v["user_id"], "ptt:s3");
            }
        }
        let v: Value = serde_json::from_str(&frame(&event(
            EventKind::TalkStarted,
            json!({"media_type": 2}),
        )))
        .unwrap();
        assert_eq!(
            v,
            json!({"app_id":"a","group_id":"ptt:local:North","id":20102,"media_id":"audio","media_type":2,"user_id":"ptt:s3","version":7})
        );
    }
}
