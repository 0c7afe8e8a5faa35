//! Events the server pushes (JS `rtcPeer.on(...)` names, sections 3.25, 3.3, 3.9–3.12, 3.17,
//! 3.26, 3.27, 3.44, 3.45, 3.48 and 4.1–4.8, and the bridge's hand-raise extensions), in the
//! socket's shape: `module` (`call` for call events, `meeting`
//! for room events), `method` = the event name, and the event's data fields. No `result`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bean::Client;
use crate::frame::{Frame, FrameError, encode};
use crate::id::{Id, de_id, de_opt_id};
use crate::request::CallEvent;

/// Who sent a call event (4.1–4.8 "事件获取数据").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct From {
    /// The sender.
    #[serde(deserialize_with = "de_id")]
    pub own_user_id: Id,
    /// Its device type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_device_type: Option<String>,
}

/// `doInvite`: somebody calls you.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invited {
    /// Caller.
    #[serde(flatten)]
    pub from: From,
    /// 1 audio, 2 video, 3 video return.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub call_type: Option<i64>,
    /// The room to meet in.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<Id>,
}

/// `doAgree`: the callee accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreed {
    /// Callee.
    #[serde(flatten)]
    pub from: From,
    /// The room.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<Id>,
}

/// `doEvent`: onRinging / onBusy / onConnected / custom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evented {
    /// Sender.
    #[serde(flatten)]
    pub from: From,
    /// The event.
    pub event: CallEvent,
    /// Room (onConnected).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<Id>,
    /// Room type (onConnected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_type: Option<i64>,
    /// Why the server sent it itself (e.g. `noAnswer`); absent when a peer sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bridge extension: a platform's message (`onTransCmd`, business gateway trans-cmd),
    /// as the platform gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// `reject` / `cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    /// Who rejected/cancelled (the server uses the other party's id when it ends a call itself).
    #[serde(flatten)]
    pub from: From,
    /// Why the server ended it (`noAnswer`, `offline`, `hangup`); absent when a peer did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `EnterRoom` / `ExitRoom`: a member came or went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// The member.
    pub client: Client,
    /// 9: this account entered the room from another connection (3.25 example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
}

/// `onPublished`: a member's stream started or stopped. The spec (3.23.3) says so with `event`
/// (`play`, `close`, `audioMode`); the bridge's own server also sends `published` (true/false).
/// Read it with [`Published::started`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// Publisher.
    pub client: Client,
    /// Bridge extension: started (true) or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
    /// Spec 3.23.3: `play` (playable now), `close` (stopped), `audioMode` (video off, audio on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// `rePlay` when the stream was re-published: play it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v_code: Option<String>,
}

impl Published {
    /// Whether the member's audio can be played now (`Some(true)`), has stopped
    /// (`Some(false)`), or is unchanged (`None`: `audioMode` only turns video off). The spec's
    /// `event` wins over the bridge's `published`.
    pub fn started(&self) -> Option<bool> {
        match self.event.as_deref() {
            Some("play") => Some(true),
            Some("close") => Some(false),
            Some(_) => None,
            None => self.published,
        }
    }
}

/// `onFinish` (3.3.4): the spec's event data is `userId` alone; the bridge's server adds
/// `roomId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finished {
    /// Room (bridge extension).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<Id>,
    /// Who finished it.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
}

/// `onChat` / `onPrivateChat` (3.26.3, 3.27.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chatted {
    /// Sender's client id.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// Text.
    pub content: String,
    /// Sender (read as empty when a server leaves it out).
    #[serde(default)]
    pub client: Client,
}

/// `memberTalking` (3.48).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Talking {
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// The speaker (for a PTT link: a client standing for the PTT user).
    pub member: Client,
    /// Started (true) or stopped talking.
    pub talking: bool,
}

/// `onMute` / `onMuteAll` (3.9.3, 3.10.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Muted {
    /// Target (onMute) or sender (onMuteAll).
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// Mute or unmute.
    pub is_mute: bool,
    /// `fromSuper` from the moderator.
    #[serde(rename = "super", default, skip_serializing_if = "Option::is_none")]
    pub from_super: Option<String>,
}

/// `tiren` (3.11.3): a member is kicked out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kicked {
    /// The kicked client.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
}

/// `onCompere` (3.17.3): `userId` is the room's compere from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Compere {
    /// The new compere's client id.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
}

/// `onRaiseHand` (3.12.3): `client` raised its hand (the bridge's `onLowerHand`, same shape:
/// took it down).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hand {
    /// Whose hand.
    pub client: Client,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
}

/// `onHandFloor` (bridge extension): where a raised hand stands on the PTT channel's floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandFloor {
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// The member whose hand it is.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// `granted` (speak now: you are heard on the PTT channel), `queued` (wait: `holder` has
    /// the floor) or `ended` (the grant is over: lowered, or taken by a higher level).
    pub floor: String,
    /// Who holds the floor (with `queued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// `onRecord` (bridge extension): the room's server recording started or stopped, so every
/// member knows whether it is being recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// The recording (`startRecord`'s `recordId`).
    #[serde(deserialize_with = "de_id")]
    pub record_id: Id,
    /// `startRecord` or `stopRecord`, as the spec's `onLocalRecord` names its `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who started or stopped it.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
}

/// `onUpdateClient` (3.45.3): member `client.id` is now called `client.name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientRenamed {
    /// The renamed user (3.45.4: a client whose own id this is renames itself).
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// The member, renamed.
    pub client: Client,
}

/// `onUpdateMeeting` (3.44.3): the meeting is now called `appointmentName`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeetingRenamed {
    /// Who renamed it.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// The new name.
    pub appointment_name: String,
}

/// Any pushed event.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// `call.doInvite`
    Invite(Invited),
    /// `call.doAgree`
    Agree(Agreed),
    /// `call.reject`
    Reject(Ended),
    /// `call.cancel`
    Cancel(Ended),
    /// `call.doEvent`
    Event(Evented),
    /// `meeting.EnterRoom`
    EnterRoom(Presence),
    /// `meeting.ExitRoom`
    ExitRoom(Presence),
    /// `meeting.onPublished`
    Published(Published),
    /// `meeting.onFinish`
    Finish(Finished),
    /// `meeting.onChat`
    Chat(Chatted),
    /// `meeting.onPrivateChat`
    PrivateChat(Chatted),
    /// `meeting.memberTalking`
    MemberTalking(Talking),
    /// `meeting.onMute`
    Mute(Muted),
    /// `meeting.onMuteAll`
    MuteAll(Muted),
    /// `meeting.tiren`
    Kick(Kicked),
    /// `meeting.onCompere`
    Compere(Compere),
    /// `meeting.onRaiseHand`
    RaiseHand(Hand),
    /// `meeting.onLowerHand` (bridge extension)
    LowerHand(Hand),
    /// `meeting.onHandFloor` (bridge extension)
    HandFloor(HandFloor),
    /// `meeting.onRecord` (bridge extension)
    Record(Recorded),
    /// `meeting.onUpdateClient`
    UpdateClient(ClientRenamed),
    /// `meeting.onUpdateMeeting`
    UpdateMeeting(MeetingRenamed),
}

impl Push {
    /// `(module, method)` on the wire.
    pub fn envelope(&self) -> (&'static str, &'static str) {
        match self {
            Self::Invite(_) => ("call", "doInvite"),
            Self::Agree(_) => ("call", "doAgree"),
            Self::Reject(_) => ("call", "reject"),
            Self::Cancel(_) => ("call", "cancel"),
            Self::Event(_) => ("call", "doEvent"),
            Self::EnterRoom(_) => ("meeting", "EnterRoom"),
            Self::ExitRoom(_) => ("meeting", "ExitRoom"),
            Self::Published(_) => ("meeting", "onPublished"),
            Self::Finish(_) => ("meeting", "onFinish"),
            Self::Chat(_) => ("meeting", "onChat"),
            Self::PrivateChat(_) => ("meeting", "onPrivateChat"),
            Self::MemberTalking(_) => ("meeting", "memberTalking"),
            Self::Mute(_) => ("meeting", "onMute"),
            Self::MuteAll(_) => ("meeting", "onMuteAll"),
            Self::Kick(_) => ("meeting", "tiren"),
            Self::Compere(_) => ("meeting", "onCompere"),
            Self::RaiseHand(_) => ("meeting", "onRaiseHand"),
            Self::LowerHand(_) => ("meeting", "onLowerHand"),
            Self::HandFloor(_) => ("meeting", "onHandFloor"),
            Self::Record(_) => ("meeting", "onRecord"),
            Self::UpdateClient(_) => ("meeting", "onUpdateClient"),
            Self::UpdateMeeting(_) => ("meeting", "onUpdateMeeting"),
        }
    }

    /// The event as a JSON object.
    pub fn to_value(&self) -> Value {
        let (module, method) = self.envelope();
        match self {
            Self::Invite(m) => encode(module, method, m),
            Self::Agree(m) => encode(module, method, m),
            Self::Reject(m) | Self::Cancel(m) => encode(module, method, m),
            Self::Event(m) => encode(module, method, m),
            Self::EnterRoom(m) | Self::ExitRoom(m) => encode(module, method, m),
            Self::Published(m) => encode(module, method, m),
            Self::Finish(m) => encode(module, method, m),
            Self::Chat(m) | Self::PrivateChat(m) => encode(module, method, m),
            Self::MemberTalking(m) => encode(module, method, m),
            Self::Mute(m) | Self::MuteAll(m) => encode(module, method, m),
            Self::Kick(m) => encode(module, method, m),
            Self::Compere(m) => encode(module, method, m),
            Self::RaiseHand(m) | Self::LowerHand(m) => encode(module, method, m),
            Self::HandFloor(m) => encode(module, method, m),
            Self::Record(m) => encode(module, method, m),
            Self::UpdateClient(m) => encode(module, method, m),
            Self::UpdateMeeting(m) => encode(module, method, m),
        }
    }

    /// Types a pushed frame (one without `result`); `Ok(None)` for a frame that is a reply.
    pub fn from_frame(f: &Frame) -> Result<Option<Push>, FrameError> {
        if f.result().is_some() && !matches!(f.method.as_str(), "EnterRoom" | "ExitRoom") {
            return Ok(None);
        }
        Ok(Some(match (f.module.as_str(), f.method.as_str()) {
            ("call", "doInvite") => Self::Invite(f.decode()?),
            ("call", "doAgree") => Self::Agree(f.decode()?),
            ("call", "reject") => Self::Reject(f.decode()?),
            ("call", "cancel") => Self::Cancel(f.decode()?),
            ("call", "doEvent") => Self::Event(f.decode()?),
            ("meeting", "EnterRoom") => Self::EnterRoom(f.decode()?),
            ("meeting", "ExitRoom") => Self::ExitRoom(f.decode()?),
            ("meeting", "onPublished") => Self::Published(f.decode()?),
            ("meeting", "onFinish") => Self::Finish(f.decode()?),
            ("meeting", "onChat") => Self::Chat(f.decode()?),
            ("meeting", "onPrivateChat") => Self::PrivateChat(f.decode()?),
            ("meeting", "memberTalking") => Self::MemberTalking(f.decode()?),
            ("meeting", "onMute") => Self::Mute(f.decode()?),
            ("meeting", "onMuteAll") => Self::MuteAll(f.decode()?),
            ("meeting", "tiren") => Self::Kick(f.decode()?),
            ("meeting", "onCompere") => Self::Compere(f.decode()?),
            ("meeting", "onRaiseHand") => Self::RaiseHand(f.decode()?),
            ("meeting", "onLowerHand") => Self::LowerHand(f.decode()?),
            ("meeting", "onHandFloor") => Self::HandFloor(f.decode()?),
            ("meeting", "onRecord") => Self::Record(f.decode()?),
            ("meeting", "onUpdateClient") => Self::UpdateClient(f.decode()?),
            ("meeting", "onUpdateMeeting") => Self::UpdateMeeting(f.decode()?),
            (module, method) => {
                return Err(FrameError::Unknown {
                    module: module.into(),
                    method: method.into(),
                });
            }
        }))
    }
}
