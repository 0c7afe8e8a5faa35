//! Bean types (spec section 8). Every field is optional on input — servers fill what they
//! know — and absent fields are left out on output. Unknown fields are kept in `extra` so a
//! bean passes through the bridge unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{Id, de_opt_id};

/// 8.1 User.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// User id.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Id>,
    /// Account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Nickname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Avatar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<String>,
    /// Company name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// Fields not in the spec table.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// 8.2 Company.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    /// Company id.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Id>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Logo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Fields not in the spec table (the dockingLogin example has many).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// 8.3 Room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    /// Room id.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Id>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Owner user id.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub owner_id: Option<Id>,
    /// 1 audio, 2 video, 3 training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_type: Option<i64>,
    /// 1080p, 720p, 480p, 240p.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// Most members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_limit: Option<i64>,
    /// Public room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_public: Option<bool>,
    /// Has a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_has_pwd: Option<bool>,
    /// Appointment (meeting) id, in a meeting only.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub appointment_id: Option<Id>,
    /// Appointment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_name: Option<String>,
    /// Moderator's id, in a meeting only.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub super_mode_id: Option<Id>,
    /// Logo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Fields not in the spec table.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// 8.4 Client: a member's presence in a meeting ("虚拟参会人员").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    /// Client id (the bridge uses the user id; guests get one from the room).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Id>,
    /// Nickname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Avatar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pictureurl: Option<String>,
    /// Company name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// Terminal type (pc, Android, iOS, webphone, tv; the bridge's PTT links say `ptt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Stream id.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_id: Option<Id>,
    /// Media-server broadcast id.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub broad_cast_id: Option<Id>,
    /// Muted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_muted: Option<bool>,
    /// Moderator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_super_moderator: Option<bool>,
    /// Fields not in the spec table (e.g. `peerId`, see the `onPublished` note in section 3).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// 8.5 Appointment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    /// Appointment id.
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Id>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Value>,
    /// End.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Value>,
    /// Creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<User>,
    /// Minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_length: Option<i64>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Fields not in the spec table.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
