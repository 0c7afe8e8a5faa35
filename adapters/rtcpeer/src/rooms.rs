//! Room management (spec 2.6–2.9, 2.11–2.18): standing rooms, passwords, members, look-up.
//! The spec gives these as JS calls (`rtcPeer.createRoom(...)`); on the socket they travel in
//! module `room`, like `room.newTempRoom` (2.10), with the JS parameters as fields.
//!
//! Where the spec's tables and its examples disagree the examples win: `createRoom`'s example
//! omits `pictureuri` (so `desc`, `pictureuri` and `definition` are optional), and
//! `updateRoom`'s sends `roomtype` where its table says `roomType` (both are read; `roomtype`
//! is written, as `createRoom` and `newTempRoom` spell it).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bean::{Room, User};
use crate::frame::{Frame, FrameError, encode};
use crate::id::{Id, de_id};

/// The fields of a standing room (`createRoom` 2.7; `updateRoom` 2.8 adds `roomId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomFields {
    /// 1 audio, 2 video, 3 video return.
    #[serde(rename = "roomtype", alias = "roomType")]
    pub room_type: i64,
    /// Room name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// Logo URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pictureuri: Option<String>,
    /// 1080p, 720p, 480p, 240p (kept, not used: audio only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// Most members at once.
    pub number_limit: i64,
    /// true: a public room.
    pub is_public: bool,
    /// Dial-in user ids (PTT channels) the room brings in when its first participant enters
    /// (bridge extension, not in the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_in: Option<Vec<Id>>,
    /// How members take a dialled-in channel's floor in this room, over the bridge's
    /// `[meeting] floor` (bridge extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_mode: Option<FloorMode>,
}

/// A room's floor mode (`floorMode`, bridge extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloorMode {
    /// Voice activity takes the floor (and a raised hand asks for it).
    Voice,
    /// Only a member whose raised hand holds the floor is heard on the channel.
    Hand,
}

impl FloorMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voice => "voice",
            Self::Hand => "hand",
        }
    }
}

/// `room.updateRoom` (2.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRoom {
    /// The room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// Its new fields (all of them, as the spec's table requires).
    #[serde(flatten)]
    pub fields: RoomFields,
}

/// A request naming only a room (`deleteRoom`, `checkRoomHasPwd`, `queryRoomMen`,
/// `getRoomById`, `checkActiveRoom`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRef {
    /// The room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
}

/// `room.modifyRoomPwd` / `room.checkRoomPwd` (2.11, 2.12).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomPwd {
    /// The room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// The password (`modifyRoomPwd` with `""` removes it).
    pub password: String,
}

/// `room.addRoomMan` (2.14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddRoomMan {
    /// The room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// The user to add.
    #[serde(deserialize_with = "de_id")]
    pub user_id: Id,
}

/// `room.deleteRoomMen` (2.15): the member is named `moderatorId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRoomMen {
    /// The room.
    #[serde(deserialize_with = "de_id")]
    pub room_id: Id,
    /// The member to remove.
    #[serde(deserialize_with = "de_id")]
    pub moderator_id: Id,
}

/// A room-management request.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomRequest {
    /// `room.createRoom` (2.7)
    CreateRoom(RoomFields),
    /// `room.updateRoom` (2.8)
    UpdateRoom(UpdateRoom),
    /// `room.deleteRoom` (2.9)
    DeleteRoom(RoomRef),
    /// `room.modifyRoomPwd` (2.11)
    ModifyRoomPwd(RoomPwd),
    /// `room.checkRoomPwd` (2.12)
    CheckRoomPwd(RoomPwd),
    /// `room.checkRoomHasPwd` (2.13)
    CheckRoomHasPwd(RoomRef),
    /// `room.addRoomMan` (2.14)
    AddRoomMan(AddRoomMan),
    /// `room.deleteRoomMen` (2.15)
    DeleteRoomMen(DeleteRoomMen),
    /// `room.queryRoomMen` (2.16)
    QueryRoomMen(RoomRef),
    /// `room.getRoomById` (2.6)
    GetRoomById(RoomRef),
    /// `room.queryMyRooms` (2.17, no parameters)
    QueryMyRooms,
    /// `room.checkActiveRoom` (2.18)
    CheckActiveRoom(RoomRef),
}

/// The `room` methods [`RoomRequest::from_frame`] takes.
pub const METHODS: &[&str] = &[
    "createRoom",
    "updateRoom",
    "deleteRoom",
    "modifyRoomPwd",
    "checkRoomPwd",
    "checkRoomHasPwd",
    "addRoomMan",
    "deleteRoomMen",
    "queryRoomMen",
    "getRoomById",
    "queryMyRooms",
    "checkActiveRoom",
];

impl RoomRequest {
    /// Types a `room` frame whose method is one of [`METHODS`].
    pub fn from_frame(f: &Frame) -> Result<RoomRequest, FrameError> {
        Ok(match f.method.as_str() {
            "createRoom" => Self::CreateRoom(f.decode()?),
            "updateRoom" => Self::UpdateRoom(f.decode()?),
            "deleteRoom" => Self::DeleteRoom(f.decode()?),
            "modifyRoomPwd" => Self::ModifyRoomPwd(f.decode()?),
            "checkRoomPwd" => Self::CheckRoomPwd(f.decode()?),
            "checkRoomHasPwd" => Self::CheckRoomHasPwd(f.decode()?),
            "addRoomMan" => Self::AddRoomMan(f.decode()?),
            "deleteRoomMen" => Self::DeleteRoomMen(f.decode()?),
            "queryRoomMen" => Self::QueryRoomMen(f.decode()?),
            "getRoomById" => Self::GetRoomById(f.decode()?),
            "queryMyRooms" => Self::QueryMyRooms,
            "checkActiveRoom" => Self::CheckActiveRoom(f.decode()?),
            other => {
                return Err(FrameError::Unknown {
                    module: "room".into(),
                    method: other.into(),
                });
            }
        })
    }

    /// The method name (the module is `room`).
    pub fn method(&self) -> &'static str {
        match self {
            Self::CreateRoom(_) => "createRoom",
            Self::UpdateRoom(_) => "updateRoom",
            Self::DeleteRoom(_) => "deleteRoom",
            Self::ModifyRoomPwd(_) => "modifyRoomPwd",
            Self::CheckRoomPwd(_) => "checkRoomPwd",
            Self::CheckRoomHasPwd(_) => "checkRoomHasPwd",
            Self::AddRoomMan(_) => "addRoomMan",
            Self::DeleteRoomMen(_) => "deleteRoomMen",
            Self::QueryRoomMen(_) => "queryRoomMen",
            Self::GetRoomById(_) => "getRoomById",
            Self::QueryMyRooms => "queryMyRooms",
            Self::CheckActiveRoom(_) => "checkActiveRoom",
        }
    }

    /// The request as a JSON object, envelope first.
    pub fn to_value(&self) -> Value {
        let m = self.method();
        match self {
            Self::CreateRoom(r) => encode("room", m, r),
            Self::UpdateRoom(r) => encode("room", m, r),
            Self::DeleteRoom(r)
            | Self::CheckRoomHasPwd(r)
            | Self::QueryRoomMen(r)
            | Self::GetRoomById(r)
            | Self::CheckActiveRoom(r) => encode("room", m, r),
            Self::ModifyRoomPwd(r) | Self::CheckRoomPwd(r) => encode("room", m, r),
            Self::AddRoomMan(r) => encode("room", m, r),
            Self::DeleteRoomMen(r) => encode("room", m, r),
            Self::QueryMyRooms => encode("room", m, &serde_json::Map::new()),
        }
    }
}

/// `checkRoomPwd` (2.12) and `checkActiveRoom` (2.18) answer in `result` itself: 1 right
/// password / in use, 0 wrong / not in use. `{"module","method","result":n}`.
pub fn verdict(method: &str, yes: bool) -> Value {
    encode(
        "room",
        method,
        &serde_json::json!({ "result": i64::from(yes) }),
    )
}

/// `checkRoomHasPwd` (2.13).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HasPwd {
    /// Whether a password is needed.
    pub is_has_pwd: bool,
}

/// `queryRoomMen` (2.16): the room's members (the spec's "moderator" objects; the bridge
/// sends user beans: `id`, `name` when known).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moderators {
    /// The members.
    pub moderators: Vec<User>,
}

/// `getRoomById` (2.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomFound {
    /// The room.
    pub room: Room,
}

/// `queryMyRooms` (2.17).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rooms {
    /// Rooms the user may enter.
    pub rooms: Vec<Room>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code;

    #[test]
    fn update_room_reads_both_spellings_of_room_type() {
        for key in ["roomtype", "roomType"] {
            let text = format!(
                r#"{{"module":"room","method":"updateRoom","roomId":"7","{key}":1,"name":"a","numberLimit":5,"isPublic":false}}"#
            );
            let f = Frame::parse(&text).unwrap();
            let RoomRequest::UpdateRoom(u) = RoomRequest::from_frame(&f).unwrap() else {
                panic!()
            };
            assert_eq!((u.room_id, u.fields.room_type), (7, 1));
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let f = Frame::parse(r#"{"module":"room","method":"addRoomMan","roomId":9}"#).unwrap();
        let e = RoomRequest::from_frame(&f).unwrap_err();
        assert_eq!(e.code(), code::BAD_FIELDS);
        assert!(e.to_string().contains("userId"), "{e}");
    }

    #[test]
    fn verdicts_answer_in_result() {
        assert_eq!(
            verdict("checkRoomPwd", true).to_string(),
            r#"{"module":"room","method":"checkRoomPwd","result":1}"#
        );
    }
}
