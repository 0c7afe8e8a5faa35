//! EGW frames: client requests (parsed strictly, with an error reply for every failure) and
//! server replies and pushes (serialised with the spec examples' field order).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{BUSINESS, MAX_FRAME, ids};

/// Values of `result`: 0 is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ErrorCode {
    /// Success.
    Ok = 0,
    /// The frame is not a JSON object, or a field is missing or of the wrong type.
    BadRequest = 1,
    /// `id` is not a request this gateway knows.
    UnknownId = 2,
    /// The request needs a login first.
    NotLoggedIn = 3,
    /// `dev_id`/`token` were not accepted.
    AuthFailed = 4,
    /// An app in `app_list` is not one this login may see.
    AppNotAllowed = 5,
    /// The frame is larger than [`MAX_FRAME`].
    TooLarge = 6,
    /// The bridge could not carry the request out (a notice: no directory, or the admin API
    /// refused it or did not answer).
    Failed = 7,
}

impl ErrorCode {
    /// The `result` number.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// One app in an `app_list`, with the groups a full sync is limited to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AppFilter {
    /// App id.
    pub app_id: String,
    /// Only these groups (full sync); `None` = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_list: Option<Vec<String>>,
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// 20000: log in with a developer id and its token.
    Login {
        /// Developer (or app) id.
        dev_id: String,
        /// Its token (or app secret).
        token: String,
    },
    /// 20002.
    Logout,
    /// 20004: subscribe to these apps' events; `None` = every app the login may see.
    Subscribe {
        /// Apps.
        apps: Option<Vec<String>>,
    },
    /// 20006: unsubscribe from these apps; `None` = from everything.
    Unsubscribe {
        /// Apps.
        apps: Option<Vec<String>>,
    },
    /// 20008: the current state of these apps (optionally only some groups).
    FullSync {
        /// Apps; `None` = every app the login may see.
        apps: Option<Vec<AppFilter>>,
        /// Echoed `seq`, if the client sent one.
        seq: Option<Value>,
    },
    /// 20011.
    Heartbeat {
        /// Echoed `seq`, if the client sent one.
        seq: Option<Value>,
    },
    /// Extension 20013: a text notice to terminals (the Totalk admin API's `pushNotice`).
    Notice(Notice),
}

/// Extension 20013: `{"business": "EGW", "id": 20013, "app_id", "target_type", "target_id"?,
/// "content", "tts"?, "seq"?}`; answered by 20014 once the admin API has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The app it is sent for (the login must see it).
    pub app_id: String,
    /// `everyone`, `channel_members`, `user` or `in_channel`.
    pub target_type: String,
    /// The channel or user id (not for `everyone`).
    pub target_id: Option<i64>,
    /// The text.
    pub content: String,
    /// Terminals speak it too.
    pub tts: bool,
    /// Echoed `seq`, if the client sent one.
    pub seq: Option<Value>,
}

impl Request {
    /// The id of this request's response.
    pub fn reply_id(&self) -> i64 {
        match self {
            Self::Login { .. } => ids::LOGIN_REPLY,
            Self::Logout => ids::LOGOUT_REPLY,
            Self::Subscribe { .. } => ids::SUBSCRIBE_REPLY,
            Self::Unsubscribe { .. } => ids::UNSUBSCRIBE_REPLY,
            Self::FullSync { .. } => ids::FULL_SYNC_REPLY,
            Self::Heartbeat { .. } => ids::HEARTBEAT_REPLY,
            Self::Notice(_) => ids::NOTICE_REPLY,
        }
    }

    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Login { .. } => "login",
            Self::Logout => "logout",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::FullSync { .. } => "full_sync",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Notice(_) => "notice",
        }
    }
}

/// Why a frame was not a valid request; [`RequestError::reply`] is what to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Reply id: the request's response id when the request is known, else [`ids::ERROR`].
    pub reply_id: i64,
    /// Why.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

impl RequestError {
    fn new(reply_id: i64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            reply_id,
            code,
            message: message.into(),
        }
    }

    /// The error reply frame.
    pub fn reply(&self) -> Reply {
        Reply::new(self.reply_id, self.code, &self.message)
    }

    /// A short label for metrics (`bad_request`, `unknown_id`, `too_large`).
    pub fn kind(&self) -> &'static str {
        match self.code {
            ErrorCode::UnknownId => "unknown_id",
            ErrorCode::TooLarge => "too_large",
            _ => "bad_request",
        }
    }
}

/// Parses one client text frame.
pub fn parse_request(text: &str) -> Result<Request, RequestError> {
    if text.len() > MAX_FRAME {
        return Err(RequestError::new(
            ids::ERROR,
            ErrorCode::TooLarge,
            format!("frame of {} bytes exceeds {MAX_FRAME}", text.len()),
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        RequestError::new(ids::ERROR, ErrorCode::BadRequest, format!("not JSON: {e}"))
    })?;
    let Value::Object(obj) = value else {
        return Err(RequestError::new(
            ids::ERROR,
            ErrorCode::BadRequest,
            "not a JSON object",
        ));
    };
    let id = match obj.get("id") {
        Some(v) => v.as_i64().ok_or_else(|| {
            RequestError::new(ids::ERROR, ErrorCode::BadRequest, "id must be an integer")
        })?,
        None => {
            return Err(RequestError::new(
                ids::ERROR,
                ErrorCode::BadRequest,
                "missing id",
            ));
        }
    };
    let reply_id = match id {
        ids::LOGIN | ids::LOGOUT | ids::SUBSCRIBE | ids::UNSUBSCRIBE | ids::FULL_SYNC => id + 1,
        ids::HEARTBEAT => ids::HEARTBEAT_REPLY,
        ids::NOTICE => ids::NOTICE_REPLY,
        _ => {
            return Err(RequestError::new(
                ids::ERROR,
                ErrorCode::UnknownId,
                format!("unknown request id {id}"),
            ));
        }
    };
    let bad = |m: String| RequestError::new(reply_id, ErrorCode::BadRequest, m);
    match obj.get("business") {
        Some(Value::String(b)) if b == BUSINESS => {}
        Some(other) => return Err(bad(format!("business must be \"EGW\", got {other}"))),
        None => return Err(bad("missing business (must be \"EGW\")".into())),
    }
    let string = |field: &str| -> Result<String, RequestError> {
        match obj.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(bad(format!("{field} must not be empty"))),
            Some(_) => Err(bad(format!("{field} must be a string"))),
            None => Err(bad(format!("missing {field}"))),
        }
    };
    let app_list = || -> Result<Option<Vec<AppFilter>>, RequestError> {
        match obj.get("app_list") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let list: Vec<AppFilter> = serde_json::from_value(v.clone()).map_err(|e| {
                    bad(format!(
                        "app_list must be [{{\"app_id\": string, \"group_list\"?: [string]}}]: {e}"
                    ))
                })?;
                if list.iter().any(|a| a.app_id.is_empty()) {
                    return Err(bad("app_list: app_id must not be empty".into()));
                }
                Ok(Some(list))
            }
        }
    };
    let app_ids = || -> Result<Option<Vec<String>>, RequestError> {
        Ok(app_list()?.map(|l| l.into_iter().map(|a| a.app_id).collect()))
    };
    let seq = obj.get("seq").cloned();
    Ok(match id {
        ids::LOGIN => Request::Login {
            dev_id: string("dev_id")?,
            token: string("token")?,
        },
        ids::LOGOUT => Request::Logout,
        ids::SUBSCRIBE => Request::Subscribe { apps: app_ids()? },
        ids::UNSUBSCRIBE => Request::Unsubscribe { apps: app_ids()? },
        ids::FULL_SYNC => Request::FullSync {
            apps: app_list()?,
            seq,
        },
        ids::NOTICE => Request::Notice(Notice {
            app_id: string("app_id")?,
            target_type: string("target_type")?,
            target_id: match obj.get("target_id") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .ok_or_else(|| bad("target_id must be an integer".into()))?,
                ),
            },
            content: string("content")?,
            tts: match obj.get("tts") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("tts must be true or false".into())),
            },
            seq,
        }),
        _ => Request::Heartbeat { seq },
    })
}

/// A reply with `id`, `message`, `result` (login, logout, (un)subscribe, heartbeat, errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Response id.
    pub id: i64,
    /// Human-readable message.
    pub message: String,
    /// 0 on success.
    pub result: i32,
    /// Echo of the request's `seq` (heartbeat), when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Value>,
}

impl Reply {
    /// A reply.
    pub fn new(id: i64, code: ErrorCode, message: &str) -> Self {
        Self {
            id,
            message: message.to_string(),
            result: code.code(),
            seq: None,
        }
    }

    /// A success reply.
    pub fn ok(id: i64, message: &str) -> Self {
        Self::new(id, ErrorCode::Ok, message)
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// A medium a user (or a group) broadcasts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MediaInfo {
    /// Medium id.
    pub media_id: String,
    /// [`crate::media_type`].
    pub media_type: u8,
}

/// A user of a group in a full sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSync {
    /// What the user broadcasts.
    pub media_info: Vec<MediaInfo>,
    /// User id.
    pub user_id: String,
}

/// A group in a full sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSync {
    /// Group id.
    pub group_id: String,
    /// Media of the group itself (whiteboards).
    pub group_media_list: Vec<MediaInfo>,
    /// Its users.
    pub user_list: Vec<UserSync>,
}

/// Extension: a user of the organisation's directory (the Totalk admin API) in a full sync,
/// online or not, so a platform can name users who are not in any group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    /// Account name.
    pub name: String,
    /// Display name.
    pub nick: String,
    /// Whether it is online now.
    pub online: bool,
    /// 0 ordinary, 1 dispatcher.
    pub role: i64,
    /// User id, as in events (`ptt:<uid>`).
    pub user_id: String,
}

/// 20009: one app's state at `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    /// App id.
    pub app_id: String,
    /// Extension: every directory user with an online flag, when the bridge reads a directory
    /// and the sync is of the whole app (no `group_list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_user_list: Option<Vec<DirectoryUser>>,
    /// Groups (only those asked for, when a `group_list` was given).
    pub group_list: Vec<GroupSync>,
    /// Always [`ids::FULL_SYNC_REPLY`].
    pub id: i64,
    /// Human-readable message.
    pub message: String,
    /// 0 on success.
    pub result: i32,
    /// Echo of the request's `seq`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Value>,
    /// The app's event version this state is at: live events with a higher version follow.
    pub version: u64,
}

impl SyncReply {
    /// A successful sync reply.
    pub fn new(app_id: String, version: u64, group_list: Vec<GroupSync>) -> Self {
        Self {
            app_id,
            directory_user_list: None,
            group_list,
            id: ids::FULL_SYNC_REPLY,
            message: "synchronize all data successful".into(),
            result: 0,
            seq: None,
            version,
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// 20100–20103: a pushed group event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// Extension: the app the event belongs to (the spec's pushes carry none, which leaves a
    /// client subscribed to several apps unable to tell their version sequences apart). The
    /// bridge always sets it; spec clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Group id.
    pub group_id: String,
    /// [`ids::USER_JOINED`] .. [`ids::MEDIA_STOPPED`].
    pub id: i64,
    /// Medium (media events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// Medium type (media events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<u8>,
    /// User id.
    pub user_id: String,
    /// The app's event version.
    pub version: u64,
}

impl Push {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// 20110 (extension): a bridge event with no spec push (call, link, floor, side, text), so
/// that the versions a client sees stay contiguous.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeEvent {
    /// App id.
    pub app_id: String,
    /// Kind-specific detail.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    /// Group id (empty for side-wide events).
    pub group_id: String,
    /// Always [`ids::BRIDGE_EVENT`].
    pub id: i64,
    /// Event time, ms since the Unix epoch.
    pub time_ms: u64,
    /// Dotted event type (`call.ringing`, `link.up`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// User id, when a party is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The app's event version.
    pub version: u64,
}

impl BridgeEvent {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> RequestError {
        parse_request(text).unwrap_err()
    }

    #[test]
    fn bad_frames_get_an_error_reply_with_a_nonzero_result() {
        for (text, reply_id, code) in [
            ("hello", ids::ERROR, ErrorCode::BadRequest),
            ("[1,2]", ids::ERROR, ErrorCode::BadRequest),
            ("{}", ids::ERROR, ErrorCode::BadRequest),
            (r#"{"id":"20000"}"#, ids::ERROR, ErrorCode::BadRequest),
            (
                r#"{"business":"EGW","id":12345}"#,
                ids::ERROR,
                ErrorCode::UnknownId,
            ),
            (
                r#"{"id":20000,"dev_id":"a","token":"b"}"#,
                20001,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"business":"XYZ","id":20004}"#,
                20005,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"business":"EGW","id":20000,"dev_id":"a"}"#,
                20001,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"business":"EGW","id":20000,"dev_id":7,"token":"x"}"#,
                20001,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"business":"EGW","id":20004,"app_list":"x"}"#,
                20005,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"business":"EGW","id":20008,"app_list":[{"app_id":""}]}"#,
                20009,
                ErrorCode::BadRequest,
            ),
        ] {
            let e = err(text);
            assert_eq!((e.reply_id, e.code), (reply_id, code), "{text}: {e}");
            let reply = e.reply();
            assert_ne!(reply.result, 0);
            assert!(!reply.message.is_empty());
        }
        let big = format!(
            r#"{{"business":"EGW","id":20011,"pad":"{}"}}"#,
            "x".repeat(MAX_FRAME)
        );
        assert_eq!(err(&big).code, ErrorCode::TooLarge);
    }

    #[test]
    fn notices_parse_with_their_optional_fields() {
        let n = parse_request(
            r#"{"business":"EGW","id":20013,"app_id":"a","target_type":"user","target_id":7,"content":"hi","tts":true,"seq":1}"#,
        )
        .unwrap();
        assert_eq!(n.reply_id(), ids::NOTICE_REPLY);
        assert_eq!(
            n,
            Request::Notice(Notice {
                app_id: "a".into(),
                target_type: "user".into(),
                target_id: Some(7),
                content: "hi".into(),
                tts: true,
                seq: Some(Value::from(1)),
            })
        );
        let e = err(
            r#"{"business":"EGW","id":20013,"app_id":"a","target_type":"user","content":"hi","tts":"yes"}"#,
        );
        assert_eq!(
            (e.reply_id, e.code),
            (ids::NOTICE_REPLY, ErrorCode::BadRequest)
        );
        let e = err(r#"{"business":"EGW","id":20013,"app_id":"a","target_type":"everyone"}"#);
        assert!(e.message.contains("content"), "{e}");
    }

    #[test]
    fn heartbeat_echoes_seq() {
        let r = parse_request(r#"{"business":"EGW","id":20011,"seq":"7"}"#).unwrap();
        assert_eq!(
            r,
            Request::Heartbeat {
                seq: Some(Value::String("7".into()))
            }
        );
        assert_eq!(r.reply_id(), ids::HEARTBEAT_REPLY);
    }
}
