//! Requests a client sends on the control socket (spec 5.1–5.12 for `call`, `room`, `account`
//! and `meeting.new`; 2.10 for `room.newTempRoom`; 3.1–3.27 for the other `meeting` methods,
//! whose JS parameters travel as fields of the same object).
//!
//! Required fields follow the spec tables (`是`); a missing one is a [`FrameError::Fields`].
//! Device types and other free text are kept as strings.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::appointments::AppointmentRequest;
use crate::bean::Client;
use crate::frame::{Frame, FrameError, encode};
use crate::id::{Id, de_id, de_opt_id};
use crate::rooms::RoomRequest;

/// `call.doRegister` (5.6): registers this connection as `userId`, callable from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoRegister {
    /// Session id from `dockingLogin`.
    #[serde(rename = "SID")]
    pub sid: String,
    /// This user.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// pc, Android, iOS, webphone, tv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
}

/// Fields shared by `doInvite`, `doAgree`, `reject`, `cancel` (5.1–5.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallPeers {
    /// The sender.
    #[serde(deserialize_with = "de_id")]
    pub own_user_id: Id,
    /// The other party.
    #[serde(deserialize_with = "de_id")]
    pub target_user_id: Id,
    /// Sender's device type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_device_type: Option<String>,
    /// Other party's device type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_device_type: Option<String>,
}

/// `call.reject` / `call.cancel` (5.3, 5.4): the peers, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndCall {
    /// Sender and the other party.
    #[serde(flatten)]
    pub peers: CallPeers,
    /// Why the sender ends the call (bridge extension, not in the spec; the bridge in client
    /// mode says `hangup` when it hangs up itself). Read leniently — a value that is not a
    /// string is dropped — because servers ignored the field before it was typed.
    #[serde(
        default,
        deserialize_with = "de_opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<String>,
}

/// A string, or `None` for anything else (absent, `null`, a number...).
fn de_opt_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

/// `call.doInvite` (5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoInvite {
    /// Caller and callee.
    #[serde(flatten)]
    pub peers: CallPeers,
    /// 1 audio, 2 video, 3 video return.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub call_type: Option<i64>,
    /// Room both will meet in (from `room.newAppRoom`).
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
}

/// `call.doAgree` (5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoAgree {
    /// Callee (own) and caller (target).
    #[serde(flatten)]
    pub peers: CallPeers,
    /// 1 audio, 2 video, 3 video return.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub call_type: Option<i64>,
    /// Room of the invitation (5.2; the JS `agree` of 4.2 has none: the server knows the
    /// call's room, and the caller names it in `onConnected`).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<Id>,
}

/// The `event` of `call.doEvent` (5.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallEvent {
    /// The callee is ringing.
    #[serde(rename = "onRinging")]
    Ringing,
    /// The callee is busy.
    #[serde(rename = "onBusy")]
    Busy,
    /// The caller entered the room: the callee may enter too.
    #[serde(rename = "onConnected")]
    Connected,
    /// Any other custom event, relayed as is.
    #[serde(untagged)]
    Other(String),
}

/// `call.doEvent` (5.5): ring, busy, connected, or a custom event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoEvent {
    /// Sender and receiver.
    #[serde(flatten)]
    pub peers: CallPeers,
    /// Event name.
    pub event: CallEvent,
    /// Room (onConnected, 4.7).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<Id>,
    /// Room type (onConnected, 4.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_type: Option<i64>,
}

/// `room.newAppRoom` (5.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAppRoom {
    /// Room name.
    pub name: String,
    /// At most 200.
    pub number_limit: i64,
    /// 1 audio, 2 video, 3 training (lowercase `roomtype` on the wire).
    #[serde(rename = "roomtype")]
    pub room_type: i64,
    /// Creator.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
}

/// `room.newTempRoom` (2.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTempRoom {
    /// Company (private deployments: 2).
    #[serde(deserialize_with = "de_id")]
    pub org_id: Id,
    /// Creator (private deployments: 2).
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// 1 audio, 2 video, 3 training.
    #[serde(rename = "roomtype")]
    pub room_type: i64,
    /// Room name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// Logo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pictureuri: Option<String>,
    /// Video definition (ignored: audio only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// Most members.
    pub number_limit: i64,
    /// Public room.
    pub is_public: bool,
}

/// `account.logout` (5.11).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Logout {
    /// Session id.
    #[serde(rename = "SID")]
    pub sid: String,
    /// User.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
}

/// `meeting.new` (5.12): an appointment (instant when it starts now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeetingNew {
    /// Session id.
    #[serde(rename = "SID")]
    pub sid: String,
    /// Meeting name.
    pub name: String,
    /// UTC `yyyyMMddHHmmss`.
    pub start_time: String,
    /// UTC `yyyyMMddHHmmss`.
    pub end_time: String,
    /// Hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<String>,
    /// Capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leverage: Option<String>,
    /// 1 audio, 2 video, 3 video return.
    #[serde(rename = "type")]
    pub meeting_type: i64,
    /// Public meeting.
    pub is_public: bool,
    /// Entry PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<i64>,
    /// Invitees, `"memberId,name,email,id,Etc/GMT+8,role"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    /// Template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<i64>,
    /// Poster URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_url: Option<String>,
    /// Company.
    #[serde(deserialize_with = "de_id")]
    pub org_id: Id,
    /// Existing room to use (else one is created).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<Id>,
    /// Mail link base.
    #[serde(rename = "baseURL", default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Sub-topics `{title, content}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<Value>>,
}

/// `meeting.enter` (3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enter {
    /// User (guests may omit it and give `username`).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<Id>,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// 1 audio, 2 video, 3 training.
    pub room_type: i64,
    /// Display name (guests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The room's password, for a user who is not its owner, member or invitee (bridge
    /// extension: the spec checks it with `checkRoomPwd` but never sends it on entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `meeting.publish` (3.4) plus the bridge's `sdp`: the client's offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Publish {
    /// Send microphone audio.
    pub audio: bool,
    /// Send camera video (declined: the bridge is audio only).
    pub video: bool,
    /// SDP offer (`a=sendrecv` or `a=sendonly` audio).
    pub sdp: String,
}

/// `meeting.play` (3.5) plus `sdp`: an offer to receive `client`'s audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Play {
    /// Whose stream (its `id` is what counts).
    pub client: Client,
    /// SDP offer (`a=recvonly` audio).
    pub sdp: String,
    /// Dom id (browser only, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dom_id: Option<String>,
}

/// `meeting.closePlay` (3.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosePlay {
    /// Whose stream to stop receiving.
    pub client: Client,
}

/// `meeting.updateMute` (3.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMute {
    /// true: microphone off.
    pub is_mute: bool,
}

/// `meeting.muteMsg` (3.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MuteMsg {
    /// Target client id.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// true: mute.
    pub is_mute: bool,
    /// `"fromSuper"` when the moderator sends it.
    #[serde(rename = "super", default, skip_serializing_if = "Option::is_none")]
    pub from_super: Option<String>,
}

/// `meeting.muteAll` (3.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MuteAll {
    /// Sender's client id.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// true: mute.
    pub is_mute: bool,
}

/// `meeting.kickOut` (3.11).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KickOut {
    /// Client to remove.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
}

/// `meeting.setCompere` (3.17): hand the room's compere (moderator) role to `userId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetCompere {
    /// The new compere's client id.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
}

/// `meeting.startRecord` (3.35): record the room on the server (the mix its members hear).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRecord {
    /// The recording's name; the start time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// When to start (a JS `Date`: a string or ms number as the client serializes it). The
    /// spec's default, now, is what the bridge does; the value is kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<serde_json::Value>,
}

/// `meeting.stopRecord` (3.36): stop the room's server recording `recordId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopRecord {
    /// What `startRecord` answered.
    #[serde(deserialize_with = "de_id")]
    pub record_id: Id,
}

/// `meeting.updateClientName` (3.45): rename member `userId` (oneself, or anyone for the
/// compere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateClientName {
    /// The member to rename.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// New name.
    pub name: String,
}

/// `meeting.updateMeetingName` (3.44): rename the meeting (the room's appointment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMeetingName {
    /// The sender.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
    /// Room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// New meeting name.
    pub appointment_name: String,
    /// The room's `appointmentId` (a string in the spec's table; a number is taken too).
    #[serde(deserialize_with = "de_text_or_number")]
    pub appointment_id: String,
}

/// A string, or a number kept as its text.
fn de_text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a number, got {other}"
        ))),
    }
}

/// `meeting.chat` (3.26). `userId`/`roomId` default to the sender's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    /// Sender's client id.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<Id>,
    /// Room.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<Id>,
    /// Text.
    pub content: String,
}

/// `meeting.privateChat` (3.27).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivateChat {
    /// Sender's client id.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<Id>,
    /// Recipient's client id.
    #[serde(deserialize_with = "de_id")]
    pub other_user_id: Id,
    /// Room.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<Id>,
    /// Text.
    pub content: String,
}

/// Any request the bridge understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `call.doRegister`
    DoRegister(DoRegister),
    /// `call.doInvite`
    DoInvite(DoInvite),
    /// `call.doAgree`
    DoAgree(DoAgree),
    /// `call.reject`
    Reject(EndCall),
    /// `call.cancel`
    Cancel(EndCall),
    /// `call.doEvent`
    DoEvent(DoEvent),
    /// `room.newAppRoom`
    NewAppRoom(NewAppRoom),
    /// `room.newTempRoom`
    NewTempRoom(NewTempRoom),
    /// `room.createRoom`, `updateRoom`, ... (spec 2.6–2.18, see [`crate::rooms`])
    Room(RoomRequest),
    /// `account.logout`
    Logout(Logout),
    /// `meeting.new`
    MeetingNew(Box<MeetingNew>),
    /// `meeting.createAppointment`, ... (spec 2.19–2.24, 2.33, see [`crate::appointments`])
    Appointment(Box<AppointmentRequest>),
    /// `meeting.enter`
    Enter(Enter),
    /// `meeting.exit`
    Exit,
    /// `meeting.finish`
    Finish,
    /// `meeting.publish`
    Publish(Publish),
    /// `meeting.play`
    Play(Play),
    /// `meeting.closePlay`
    ClosePlay(ClosePlay),
    /// `meeting.updateMute`
    UpdateMute(UpdateMute),
    /// `meeting.muteMsg`
    MuteMsg(MuteMsg),
    /// `meeting.muteAll`
    MuteAll(MuteAll),
    /// `meeting.kickOut`
    KickOut(KickOut),
    /// `meeting.setCompere`
    SetCompere(SetCompere),
    /// `meeting.raiseHand` (3.12, no parameters)
    RaiseHand,
    /// `meeting.lowerHand` (bridge extension: takes the sender's raised hand down)
    LowerHand,
    /// `meeting.startRecord`
    StartRecord(StartRecord),
    /// `meeting.stopRecord`
    StopRecord(StopRecord),
    /// `meeting.updateClientName`
    UpdateClientName(UpdateClientName),
    /// `meeting.updateMeetingName`
    UpdateMeetingName(UpdateMeetingName),
    /// `meeting.chat`
    Chat(Chat),
    /// `meeting.privateChat`
    PrivateChat(PrivateChat),
}

/// Every `(module, method)` pair [`Request::from_frame`] accepts.
pub const METHODS: &[(&str, &str)] = &[
    ("call", "doRegister"),
    ("call", "doInvite"),
    ("call", "doAgree"),
    ("call", "reject"),
    ("call", "cancel"),
    ("call", "doEvent"),
    ("room", "newAppRoom"),
    ("room", "newTempRoom"),
    ("room", "createRoom"),
    ("room", "updateRoom"),
    ("room", "deleteRoom"),
    ("room", "modifyRoomPwd"),
    ("room", "checkRoomPwd"),
    ("room", "checkRoomHasPwd"),
    ("room", "addRoomMan"),
    ("room", "deleteRoomMen"),
    ("room", "queryRoomMen"),
    ("room", "getRoomById"),
    ("room", "queryMyRooms"),
    ("room", "checkActiveRoom"),
    ("account", "logout"),
    ("meeting", "new"),
    ("meeting", "createAppointment"),
    ("meeting", "queryAppointmentById"),
    ("meeting", "updateAppointment"),
    ("meeting", "deleteAppointment"),
    ("meeting", "queryAppointments"),
    ("meeting", "getRoomByInviteCode"),
    ("meeting", "instantAppointment"),
    ("meeting", "enter"),
    ("meeting", "exit"),
    ("meeting", "finish"),
    ("meeting", "publish"),
    ("meeting", "play"),
    ("meeting", "closePlay"),
    ("meeting", "updateMute"),
    ("meeting", "muteMsg"),
    ("meeting", "muteAll"),
    ("meeting", "kickOut"),
    ("meeting", "setCompere"),
    ("meeting", "raiseHand"),
    ("meeting", "lowerHand"),
    ("meeting", "startRecord"),
    ("meeting", "stopRecord"),
    ("meeting", "updateClientName"),
    ("meeting", "updateMeetingName"),
    ("meeting", "chat"),
    ("meeting", "privateChat"),
];

impl Request {
    /// Parses a text frame.
    pub fn parse(text: &str) -> Result<Request, FrameError> {
        Self::from_frame(&Frame::parse(text)?)
    }

    /// Types a parsed envelope.
    pub fn from_frame(f: &Frame) -> Result<Request, FrameError> {
        Ok(match (f.module.as_str(), f.method.as_str()) {
            ("call", "doRegister") => Self::DoRegister(f.decode()?),
            ("call", "doInvite") => Self::DoInvite(f.decode()?),
            ("call", "doAgree") => Self::DoAgree(f.decode()?),
            ("call", "reject") => Self::Reject(f.decode()?),
            ("call", "cancel") => Self::Cancel(f.decode()?),
            ("call", "doEvent") => Self::DoEvent(f.decode()?),
            ("room", "newAppRoom") => Self::NewAppRoom(f.decode()?),
            ("room", "newTempRoom") => Self::NewTempRoom(f.decode()?),
            ("room", m) if crate::rooms::METHODS.contains(&m) => {
                Self::Room(RoomRequest::from_frame(f)?)
            }
            ("account", "logout") => Self::Logout(f.decode()?),
            ("meeting", "new") => Self::MeetingNew(Box::new(f.decode()?)),
            ("meeting", m) if crate::appointments::METHODS.contains(&m) => {
                Self::Appointment(Box::new(AppointmentRequest::from_frame(f)?))
            }
            ("meeting", "enter") => Self::Enter(f.decode()?),
            ("meeting", "exit") => Self::Exit,
            ("meeting", "finish") => Self::Finish,
            ("meeting", "publish") => Self::Publish(f.decode()?),
            ("meeting", "play") => Self::Play(f.decode()?),
            ("meeting", "closePlay") => Self::ClosePlay(f.decode()?),
            ("meeting", "updateMute") => Self::UpdateMute(f.decode()?),
            ("meeting", "muteMsg") => Self::MuteMsg(f.decode()?),
            ("meeting", "muteAll") => Self::MuteAll(f.decode()?),
            ("meeting", "kickOut") => Self::KickOut(f.decode()?),
            ("meeting", "setCompere") => Self::SetCompere(f.decode()?),
            ("meeting", "raiseHand") => Self::RaiseHand,
            ("meeting", "lowerHand") => Self::LowerHand,
            ("meeting", "startRecord") => Self::StartRecord(f.decode()?),
            ("meeting", "stopRecord") => Self::StopRecord(f.decode()?),
            ("meeting", "updateClientName") => Self::UpdateClientName(f.decode()?),
            ("meeting", "updateMeetingName") => Self::UpdateMeetingName(f.decode()?),
            ("meeting", "chat") => Self::Chat(f.decode()?),
            ("meeting", "privateChat") => Self::PrivateChat(f.decode()?),
            (module, method) => {
                return Err(FrameError::Unknown {
                    module: module.into(),
                    method: method.into(),
                });
            }
        })
    }

    /// `(module, method)` of this request.
    pub fn envelope(&self) -> (&'static str, &'static str) {
        match self {
            Self::DoRegister(_) => ("call", "doRegister"),
            Self::DoInvite(_) => ("call", "doInvite"),
            Self::DoAgree(_) => ("call", "doAgree"),
            Self::Reject(_) => ("call", "reject"),
            Self::Cancel(_) => ("call", "cancel"),
            Self::DoEvent(_) => ("call", "doEvent"),
            Self::NewAppRoom(_) => ("room", "newAppRoom"),
            Self::NewTempRoom(_) => ("room", "newTempRoom"),
            Self::Room(r) => ("room", r.method()),
            Self::Logout(_) => ("account", "logout"),
            Self::MeetingNew(_) => ("meeting", "new"),
            Self::Appointment(r) => ("meeting", r.method()),
            Self::Enter(_) => ("meeting", "enter"),
            Self::Exit => ("meeting", "exit"),
            Self::Finish => ("meeting", "finish"),
            Self::Publish(_) => ("meeting", "publish"),
            Self::Play(_) => ("meeting", "play"),
            Self::ClosePlay(_) => ("meeting", "closePlay"),
            Self::UpdateMute(_) => ("meeting", "updateMute"),
            Self::MuteMsg(_) => ("meeting", "muteMsg"),
            Self::MuteAll(_) => ("meeting", "muteAll"),
            Self::KickOut(_) => ("meeting", "kickOut"),
            Self::SetCompere(_) => ("meeting", "setCompere"),
            Self::RaiseHand => ("meeting", "raiseHand"),
            Self::LowerHand => ("meeting", "lowerHand"),
            Self::StartRecord(_) => ("meeting", "startRecord"),
            Self::StopRecord(_) => ("meeting", "stopRecord"),
            Self::UpdateClientName(_) => ("meeting", "updateClientName"),
            Self::UpdateMeetingName(_) => ("meeting", "updateMeetingName"),
            Self::Chat(_) => ("meeting", "chat"),
            Self::PrivateChat(_) => ("meeting", "privateChat"),
        }
    }

    /// The request as a JSON object, envelope first (for clients: the bridge in client mode, tests).
    pub fn to_value(&self) -> Value {
        let (module, method) = self.envelope();
        let empty = serde_json::Map::new();
        match self {
            Self::DoRegister(m) => encode(module, method, m),
            Self::DoInvite(m) => encode(module, method, m),
            Self::DoAgree(m) => encode(module, method, m),
            Self::Reject(m) | Self::Cancel(m) => encode(module, method, m),
            Self::DoEvent(m) => encode(module, method, m),
            Self::NewAppRoom(m) => encode(module, method, m),
            Self::NewTempRoom(m) => encode(module, method, m),
            Self::Room(r) => r.to_value(),
            Self::Logout(m) => encode(module, method, m),
            Self::MeetingNew(m) => encode(module, method, m),
            Self::Appointment(r) => r.to_value(),
            Self::Enter(m) => encode(module, method, m),
            Self::Exit | Self::Finish | Self::RaiseHand | Self::LowerHand => {
                encode(module, method, &empty)
            }
            Self::Publish(m) => encode(module, method, m),
            Self::Play(m) => encode(module, method, m),
            Self::ClosePlay(m) => encode(module, method, m),
            Self::UpdateMute(m) => encode(module, method, m),
            Self::MuteMsg(m) => encode(module, method, m),
            Self::MuteAll(m) => encode(module, method, m),
            Self::KickOut(m) => encode(module, method, m),
            Self::SetCompere(m) => encode(module, method, m),
            Self::UpdateClientName(m) => encode(module, method, m),
            Self::UpdateMeetingName(m) => encode(module, method, m),
            Self::StartRecord(m) => encode(module, method, m),
            Self::StopRecord(m) => encode(module, method, m),
            Self::Chat(m) => encode(module, method, m),
            Self::PrivateChat(m) => encode(module, method, m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code;

    #[test]
    fn missing_and_wrong_fields_name_the_field() {
        let e = Request::parse(r#"{"module":"call","method":"doInvite","ownUserId":1,"roomId":5}"#)
            .unwrap_err();
        assert_eq!(e.code(), code::BAD_FIELDS);
        assert!(e.to_string().contains("targetUserId"), "{e}");
        let e = Request::parse(
            r#"{"module":"meeting","method":"publish","audio":"yes","video":false,"sdp":""}"#,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("meeting.publish:"), "{e}");
        let e = Request::parse(r#"{"module":"call","method":"dance"}"#).unwrap_err();
        assert_eq!(e.code(), code::NOT_FOUND);
        assert_eq!(e.envelope(), ("call", "dance"));
    }

    #[test]
    fn every_listed_method_is_known() {
        for (module, method) in METHODS {
            let e = Request::parse(&format!(r#"{{"module":"{module}","method":"{method}"}}"#));
            if let Err(e) = e {
                assert!(
                    matches!(e, FrameError::Fields { .. }),
                    "{module}.{method}: {e}"
                );
            }
        }
    }

    #[test]
    fn custom_call_events_pass_through() {
        let r = Request::parse(
            r#"{"module":"call","method":"doEvent","ownUserId":1,"targetUserId":2,"event":"onWave"}"#,
        )
        .unwrap();
        let Request::DoEvent(e) = &r else { panic!() };
        assert_eq!(e.event, CallEvent::Other("onWave".into()));
        assert_eq!(r.to_value()["event"], "onWave");
    }

    #[test]
    fn reject_and_cancel_carry_a_reason() {
        for method in ["reject", "cancel"] {
            let text = format!(
                r#"{{"module":"call","method":"{method}","ownUserId":9001,"targetUserId":1001,"ownDeviceType":"ptt","reason":"hangup"}}"#
            );
            let r = Request::parse(&text).unwrap();
            let (Request::Reject(e) | Request::Cancel(e)) = &r else {
                panic!("{r:?}")
            };
            assert_eq!(e.reason.as_deref(), Some("hangup"));
            assert_eq!(e.peers.target_user_id, 1001);
            // Byte for byte: the envelope, the peers, then the reason.
            assert_eq!(r.to_value().to_string(), text);
        }
    }

    #[test]
    fn a_reason_that_is_not_text_is_ignored() {
        let r = Request::parse(
            r#"{"module":"call","method":"reject","ownUserId":1,"targetUserId":2,"reason":5}"#,
        )
        .unwrap();
        let Request::Reject(e) = &r else { panic!() };
        assert_eq!(e.reason, None);
        assert_eq!(
            r.to_value().to_string(),
            r#"{"module":"call","method":"reject","ownUserId":1,"targetUserId":2}"#
        );
    }

    #[test]
    fn exit_round_trips() {
        let r = Request::parse(r#"{"module":"meeting","method":"exit"}"#).unwrap();
        assert_eq!(r, Request::Exit);
        assert_eq!(
            r.to_value().to_string(),
            r#"{"module":"meeting","method":"exit"}"#
        );
    }
}
