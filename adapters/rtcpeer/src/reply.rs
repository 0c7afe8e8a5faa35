//! Replies: the request's `module`/`method`, `result` (0 = success, [`crate::code`]) and the
//! method's return fields; a failure adds `message`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bean::{Client, Company, Room, User};
use crate::frame::encode;
use crate::id::{Id, de_opt_id};

/// A failed request: `{"module","method","result":code,"message":...}`.
pub fn error(module: &str, method: &str, result: i64, message: &str) -> Value {
    encode(
        module,
        method,
        &serde_json::json!({ "result": result, "message": message }),
    )
}

/// Success without return fields: `{"module","method","result":0}`.
pub fn ok(module: &str, method: &str) -> Value {
    encode(module, method, &serde_json::json!({ "result": 0 }))
}

/// Success with the fields of `body` (a struct with the method's return fields).
pub fn ok_with<T: Serialize>(module: &str, method: &str, body: &T) -> Value {
    let mut v = encode(module, method, body);
    if let Value::Object(m) = &mut v {
        m.insert("result".into(), 0.into());
    }
    v
}

/// `room.newAppRoom` / `room.newTempRoom` (5.10, 2.10) and `call.doInvite` (4.1) return the room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomCreated {
    /// The room.
    pub room_id: Id,
}

/// `meeting.startRecord` (3.35): the recording's id, for `stopRecord` and the listings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordStarted {
    /// The recording.
    pub record_id: Id,
}

/// `meeting.new` (5.12).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeetingCreated {
    /// Appointment id.
    pub id: Id,
    /// Its room.
    pub room_id: Id,
}

/// `meeting.enter` (3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entered {
    /// This member's client.
    pub client: Client,
    /// The others already in the room.
    pub members: Vec<Client>,
    /// The room.
    pub room: Room,
}

/// `meeting.publish` / `meeting.play` (3.4, 3.5): the client and the bridge's SDP answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Negotiated {
    /// Publisher (publish: yourself; play: whose stream).
    pub client: Client,
    /// SDP answer.
    pub sdp: String,
}

/// `POST /app/account` `method=dockingLogin` (6.2.2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockingLogin {
    /// 0 success; 1 bad company; 2 appkey check failed; 3 callback failed; 4 registration failed.
    pub result: i64,
    /// Always `dockingLogin`.
    pub method: String,
    /// Always `account`.
    pub module: String,
    /// Session id for `doRegister` and the other calls.
    #[serde(rename = "SID", default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Company.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<Company>,
    /// The user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /app/getSign` (6.1.1.3): `{"code":200,"data":sign,"message":...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetSign {
    /// 200 on success.
    pub code: i64,
    /// The API signature.
    #[serde(default)]
    pub data: Option<String>,
    /// Description.
    pub message: String,
}

/// A reply read by a client: `result`, `message` and the rest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Generic {
    /// 0 success.
    pub result: i64,
    /// Failure text.
    #[serde(default)]
    pub message: Option<String>,
    /// Room, when the method returns one.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub room_id: Option<Id>,
}
