//! Business-gateway REST (`/v1/...`) bodies: the `{code, message, ...}` envelope, request
//! bodies with their validation, and response rows. Pure types; the bridge serves them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The response envelope: `code` 0 and `message` "OK" on success, plus per-call fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope(Map<String, Value>);

impl Envelope {
    /// `{code: 0, message: "OK"}`.
    pub fn ok() -> Self {
        Self::error(0, "OK")
    }

    /// `{code, message}`.
    pub fn error(code: i32, message: &str) -> Self {
        let mut m = Map::new();
        m.insert("code".into(), code.into());
        m.insert("message".into(), message.into());
        Self(m)
    }

    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Adds every field of a serialisable object.
    pub fn merge(mut self, fields: &impl Serialize) -> Self {
        if let Ok(Value::Object(m)) = serde_json::to_value(fields) {
            self.0.extend(m);
        }
        self
    }

    /// The JSON value.
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("JSON map serialises")
    }
}

/// `code` values of the envelope (HTTP status in parentheses).
pub mod codes {
    /// Success (200).
    pub const OK: i32 = 0;
    /// A parameter is missing, malformed or out of range (400).
    pub const BAD_REQUEST: i32 = 40000;
    /// The app secret (or admin token) is missing or wrong (401).
    pub const UNAUTHORIZED: i32 = 40100;
    /// No such app (404).
    pub const UNKNOWN_APP: i32 = 40400;
    /// No such user online (404).
    pub const UNKNOWN_USER: i32 = 40401;
    /// No such record (a recorded burst of the archive) (404).
    pub const UNKNOWN_RECORD: i32 = 40402;
    /// No customer with this code or id (customer management) (404).
    pub const UNKNOWN_CUSTOMER: i32 = 40403;
    /// Too many wrong credentials from this address lately (429).
    pub const THROTTLED: i32 = 42900;
    /// A byte range outside the file (416).
    pub const BAD_RANGE: i32 = 41600;
    /// An app with this name exists (409).
    pub const CONFLICT: i32 = 40900;
    /// The side could not carry out the command (502).
    pub const SIDE_FAILED: i32 = 50200;
    /// Internal error, e.g. storage (500).
    pub const INTERNAL: i32 = 50000;
}

/// Service ids of an app's `service` list and their names.
pub fn service_name(service_id: i64) -> Option<&'static str> {
    Some(match service_id {
        3 => "video",
        4 => "audio",
        5 => "screen_share",
        6 => "signalling",
        7 => "online",
        8 => "recording",
        9 => "wechat_mini_program",
        _ => return None,
    })
}

/// One entry of an app's `service` list (request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLimit {
    /// Service id (3..=9).
    pub service_id: i64,
    /// Usage limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_limit: Option<i64>,
}

/// One entry of an app's `service` list (response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service id.
    pub service_id: i64,
    /// Its name.
    pub service_name: String,
    /// Usage limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_limit: Option<i64>,
}

/// `POST /v1/app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    /// Name: Chinese or English letters, digits and `_`.
    pub app_name: String,
    /// `online` or `offline` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Spending limit, yuan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumption_limit: Option<i64>,
    /// Services.
    pub service: Vec<ServiceLimit>,
}

/// `PATCH /v1/app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchApp {
    /// Which app.
    pub app_id: String,
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// New status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// New limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumption_limit: Option<i64>,
    /// New services (replace the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Vec<ServiceLimit>>,
}

/// An app as returned by the app calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    /// Id.
    pub app_id: String,
    /// Secret: presented as `X-App-Secret` on the app's calls. Only in the answers that create
    /// or rotate it (shown once); never listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_secret: Option<String>,
    /// Name.
    pub app_name: String,
    /// `online` / `offline`.
    pub status: String,
    /// Spending limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumption_limit: Option<i64>,
    /// Services.
    pub service: Vec<ServiceInfo>,
}

/// `POST /v1/kickout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kickout {
    /// App.
    pub app_id: String,
    /// User (`<side>:<id>`, as in events).
    pub user_id: String,
    /// Terminal mutual-exclusion type (accepted, not used: one session per user id here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutex_type: Option<String>,
}

/// A user addressed by `trans-cmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransUser {
    /// User (`<side>:<id>`).
    pub user_id: String,
    /// Terminal mutual-exclusion type (echoed).
    #[serde(default)]
    pub mutex_type: String,
    /// Client id (echoed).
    #[serde(default)]
    pub client_guid: String,
}

/// `POST /v1/online/trans-cmd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransCmd {
    /// Recipients.
    pub user_list: Vec<TransUser>,
    /// What to deliver (caller-defined object).
    pub trans_mess: Value,
    /// App.
    pub app_id: String,
    /// Echoed.
    pub msg_id: i64,
}

/// Per-user result of `trans-cmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransResult {
    /// 0 delivered, 1 failed, 2 not online.
    pub result: i32,
    /// User.
    pub user_id: String,
    /// Terminal id (the side's session/client id when known).
    pub terminal_seq_num: String,
    /// Echoed.
    pub mutex_type: String,
}

/// `POST /v1/online/invite`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invite {
    /// App.
    pub app_id: String,
    /// Group / meeting id (a bridge group id, e.g. `ptt:site1:North`).
    pub group_id: String,
    /// Users to invite (`<side>:<id>`).
    pub user_id_list: Vec<String>,
    /// Echoed.
    pub seq_id: i64,
    /// Passed to the side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_info: Option<Value>,
}

/// One user's presence (`GET /v1/online/user/state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// 0 offline, 1 online.
    pub state: i32,
    /// User.
    pub user_id: String,
    /// Terminal id (PTT session, console connection, meeting client).
    pub terminal_seq_num: String,
    /// Terminal type: the side (`ptt`, `console`, `meeting`).
    pub mutex_type: String,
    /// Extension: the user's name — the one it is online with, or the directory's (Totalk admin
    /// API) for an offline PTT user; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One call record (`GET /v1/consuming/records`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumingRecord {
    /// Record id.
    pub record_id: i64,
    /// App.
    pub app_id: String,
    /// App name.
    pub app_name: String,
    /// 1 (audio call records; the only kind the bridge produces).
    pub charge_term: i32,
    /// Start, RFC 3339 UTC.
    pub start_time: String,
    /// End, RFC 3339 UTC.
    pub end_time: String,
    /// Start, ms since the epoch.
    pub start_time_ms: i64,
    /// End, ms since the epoch.
    pub end_time_ms: i64,
    /// Whole seconds.
    pub total_time: i64,
    /// Milliseconds.
    pub duration_ms: i64,
    /// Group.
    pub group_id: String,
    /// Sides the call spanned (`ptt`, `console`, `meeting`).
    pub sides: Vec<String>,
    /// Audio packets carried.
    pub audio_packets: i64,
    /// Audio payload bytes carried.
    pub audio_bytes: i64,
    /// Signalling messages / events of the call.
    pub total_sig_num: i64,
    /// Who started it, when known (`<side>:<id>`).
    pub client_id: String,
    /// How it ended.
    pub end_reason: String,
}

/// Whether `name` is a valid app name: Chinese characters, ASCII letters, digits, `_`.
pub fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 64
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || ('\u{4e00}'..='\u{9fff}').contains(&c)
        })
}

/// Whether `status` is `online` or `offline`.
pub fn valid_status(status: &str) -> bool {
    matches!(status, "online" | "offline")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_status() {
        assert!(valid_app_name("调度_app1"));
        assert!(!valid_app_name("bad name"));
        assert!(!valid_app_name(""));
        assert!(valid_status("online") && !valid_status("up"));
    }

    #[test]
    fn envelope_keeps_code_and_message() {
        let v = Envelope::error(codes::BAD_REQUEST, "missing app_id")
            .with("msg_id", 3)
            .into_value();
        assert_eq!(v["code"], 40000);
        assert_eq!(v["msg_id"], 3);
    }
}
