//! Requests, answers and return codes of the `/ent/` interface, as the seed (§5.1.2, §5.3)
//! names them.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The path every organisation-admin call is posted to, before `?method=`.
pub const PATH: &str = "/ent/";

/// What a server's own words (`reason`) may take up in an error: they end up in logs.
const REASON_CHARS: usize = 120;

/// One call: `POST /ent/?method={method}` with `params` as form fields.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The API name (`login`, `getUsersInPage`, ...).
    pub method: &'static str,
    /// Its parameters in the seed's names and order; every value travels as text.
    pub params: Vec<(&'static str, String)>,
}

impl Request {
    /// `/ent/?method=NAME`: the path and query to post to (method names are ASCII letters).
    pub fn path(&self) -> String {
        format!("{PATH}?method={}", self.method)
    }

    /// The value of parameter `name`, if sent.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `login` (§5.3.1.1): the enterprise account (its eid) and the password, unencrypted
    /// (`encrypt=0`; RSA with `getPublicKey` is not used).
    pub fn login(account: &str, password: &str) -> Self {
        Self {
            method: "login",
            params: vec![
                ("account", account.to_owned()),
                ("encrypt", "0".to_owned()),
                ("password", password.to_owned()),
            ],
        }
    }

    /// `getUsersInPage` (§5.3.2.5): page `index` (from 0) of `size` users, no filter.
    pub fn users_page(token: &str, index: u32, size: u32) -> Self {
        Self::page("getUsersInPage", token, index, size)
    }

    /// `getChannelsInPage` (§5.3.3.4): page `index` (from 0) of `size` channels.
    pub fn channels_page(token: &str, index: u32, size: u32) -> Self {
        Self::page("getChannelsInPage", token, index, size)
    }

    fn page(method: &'static str, token: &str, index: u32, size: u32) -> Self {
        Self {
            method,
            params: vec![
                ("pageIndex", index.to_string()),
                ("pageSize", size.to_string()),
                ("token", token.to_owned()),
            ],
        }
    }

    /// `getMemberRole` (§5.3.4.5): a channel member's role (0 member, 1 deputy, 2 admin).
    pub fn member_role(token: &str, cid: i64, uid: i64) -> Self {
        Self {
            method: "getMemberRole",
            params: vec![
                ("cid", cid.to_string()),
                ("uid", uid.to_string()),
                ("token", token.to_owned()),
            ],
        }
    }

    /// `getUserProperty` (§5.3.2.7): one property (`name`, `nick`, `cid`, `role`, ...) of a user.
    pub fn user_property(token: &str, uid: i64, key: &str) -> Self {
        Self {
            method: "getUserProperty",
            params: vec![
                ("uid", uid.to_string()),
                ("key", key.to_owned()),
                ("token", token.to_owned()),
            ],
        }
    }

    /// `pushNotice` (§5.3.1.5): a text notice to a target (see [`NoticeTarget`]), spoken by
    /// the terminals when `tts`.
    pub fn push_notice(token: &str, target: &NoticeTarget, content: &str, tts: bool) -> Self {
        let (kind, id) = target.wire();
        Self {
            method: "pushNotice",
            params: vec![
                ("targetType", kind.to_string()),
                ("targetId", id),
                ("content", content.to_owned()),
                ("ttsPlay", u8::from(tts).to_string()),
                ("token", token.to_owned()),
            ],
        }
    }

    /// `getMessagesInPage` (§5.3.5.3): page `index` of a channel's messages, newest first
    /// unless `oldest_first`.
    pub fn messages_page(token: &str, cid: i64, index: u32, size: u32, oldest_first: bool) -> Self {
        Self {
            method: "getMessagesInPage",
            params: vec![
                ("pageIndex", index.to_string()),
                ("pageSize", size.to_string()),
                ("cid", cid.to_string()),
                ("sort", if oldest_first { "up" } else { "down" }.to_owned()),
                ("token", token.to_owned()),
            ],
        }
    }
}

/// The password and the token are credentials: a debug print shows neither.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        m.entry(&"method", &self.method);
        for (k, v) in &self.params {
            if matches!(*k, "password" | "token") {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// Who a `pushNotice` goes to (`targetType` / `targetId`, seed §4.3.7 and §5.3.1.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "id")]
pub enum NoticeTarget {
    /// 0: everyone in the organisation.
    Everyone,
    /// 1: every online member of a channel.
    ChannelMembers(i64),
    /// 2: one user.
    User(i64),
    /// 3: whoever is in a channel now.
    InChannel(i64),
}

impl NoticeTarget {
    /// `targetType`, `targetId` (ignored for 0; sent as 0).
    fn wire(&self) -> (u8, String) {
        match self {
            Self::Everyone => (0, "0".into()),
            Self::ChannelMembers(c) => (1, c.to_string()),
            Self::User(u) => (2, u.to_string()),
            Self::InChannel(c) => (3, c.to_string()),
        }
    }
}

/// A return code other than 200 (§5.1.2), or an answer that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdminError {
    /// 401: the URL (method, path or API name) was wrong.
    #[error("url error (401): {0}")]
    Url(String),
    /// 402: a required parameter was missing.
    #[error("parameter missed (402): {0}")]
    ParameterMissed(String),
    /// 403: a parameter was wrong (an unknown uid or cid, a bad value).
    #[error("parameter error (403): {0}")]
    ParameterError(String),
    /// 404: the account or password is wrong.
    #[error("login failed (404)")]
    LoginFailed,
    /// 405: the token is not valid.
    #[error("token invalid (405)")]
    TokenInvalid,
    /// 406: the token timed out (after an hour).
    #[error("token timeout (406)")]
    TokenTimeout,
    /// 407: the token may not call this API, or its organisation is gone.
    #[error("token error (407): {0}")]
    TokenError(String),
    /// 500: the server failed to carry it out.
    #[error("operation error (500): {0}")]
    Operation(String),
    /// A code §5.1.2 does not list.
    #[error("unknown return code {code}: {reason}")]
    UnknownCode {
        /// The code.
        code: i64,
        /// The server's words, cut short.
        reason: String,
    },
    /// Not the JSON the seed shows (not JSON, a field missing or of the wrong type).
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// More than the client takes (a page larger than asked, a directory over its bounds).
    #[error("too large: {0}")]
    TooLarge(String),
    /// No answer: the connection failed, timed out, or the HTTP status was not 200.
    #[error("transport: {0}")]
    Transport(String),
}

impl AdminError {
    /// The error for a return code and its reason.
    pub fn from_code(code: i64, reason: &str) -> Self {
        let reason: String = reason.trim().chars().take(REASON_CHARS).collect();
        match code {
            401 => Self::Url(reason),
            402 => Self::ParameterMissed(reason),
            403 => Self::ParameterError(reason),
            404 => Self::LoginFailed,
            405 => Self::TokenInvalid,
            406 => Self::TokenTimeout,
            407 => Self::TokenError(reason),
            500 => Self::Operation(reason),
            code => Self::UnknownCode { code, reason },
        }
    }

    /// The token is no good any more (405, 406, 407): log in again and retry once.
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            Self::TokenInvalid | Self::TokenTimeout | Self::TokenError(_)
        )
    }

    /// A short stable name (metric labels, API error replies).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Url(_) => "url",
            Self::ParameterMissed(_) => "parameter_missed",
            Self::ParameterError(_) => "parameter_error",
            Self::LoginFailed => "login_failed",
            Self::TokenInvalid => "token_invalid",
            Self::TokenTimeout => "token_timeout",
            Self::TokenError(_) => "token_error",
            Self::Operation(_) => "operation",
            Self::UnknownCode { .. } => "unknown_code",
            Self::Malformed(_) => "malformed",
            Self::TooLarge(_) => "too_large",
            Self::Transport(_) => "transport",
        }
    }
}

/// The envelope of every answer.
#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    reason: String,
}

/// Reads an answer body: the return code first (anything but 200 is its [`AdminError`]), then
/// the fields of `T`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| AdminError::Malformed(e.to_string()))?;
    let env = Envelope::deserialize(&value).map_err(|e| AdminError::Malformed(e.to_string()))?;
    if env.code != 200 {
        return Err(AdminError::from_code(env.code, &env.reason));
    }
    T::deserialize(value).map_err(|e| AdminError::Malformed(e.to_string()))
}

/// `login`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct LoginAnswer {
    /// The session token every other call carries.
    pub token: String,
}

/// An answer with a `data` field (`getMemberRole`, `getUsersTotal`, ...).
#[derive(Debug, Clone, Deserialize)]
pub struct DataAnswer<T> {
    /// The value.
    pub data: T,
}

/// An answer with a `value` field (`getUserProperty`, `getEntProperty`).
#[derive(Debug, Clone, Deserialize)]
pub struct ValueAnswer {
    /// The property's value, as text.
    pub value: String,
}

/// An answer with nothing but the code (`pushNotice`, `addMember`, ...).
#[derive(Debug, Clone, Deserialize)]
pub struct Done {}

/// One page of a `...InPage` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// How many match in all, not on this page.
    pub total: u64,
    /// This page.
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

/// A user of `getUsersInPage` (§5.3.2.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// User id.
    pub uid: i64,
    /// Account name (what the user logs in with).
    pub name: String,
    /// Display name.
    #[serde(default)]
    pub nick: String,
    /// 0 ordinary, 1 dispatcher.
    #[serde(default)]
    pub role: i64,
    /// 1 when blacklisted.
    #[serde(default)]
    pub ban: i64,
    /// `perm` or `month`.
    #[serde(default)]
    pub card_type: String,
    /// The channel the user is in: below 0 offline, 0 the standby channel.
    #[serde(default = "offline")]
    pub cid: i64,
    /// The device of the last login.
    #[serde(default)]
    pub device: String,
    /// When the user last logged in.
    #[serde(default)]
    pub last_login: String,
    /// When the user was registered.
    #[serde(default)]
    pub reg_time: String,
    /// When the service card runs out.
    #[serde(default)]
    pub timeout: String,
    /// `name(cid);name(cid);`: the channels the user is a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_channels: Option<String>,
}

fn offline() -> i64 {
    -1
}

/// Role 1 of a user (§5.3.2.5): a dispatcher.
pub const ROLE_DISPATCHER: i64 = 1;

impl User {
    /// Whether the admin server has the user in a channel (cid ≥ 0).
    pub fn online(&self) -> bool {
        self.cid >= 0
    }

    /// Whether the user's role is dispatcher.
    pub fn is_dispatcher(&self) -> bool {
        self.role == ROLE_DISPATCHER
    }

    /// The channel ids of `joinedChannels` (`频道 1(1001);频道 2(1002);`); entries that do not
    /// end in `(number)` are skipped.
    pub fn joined_channel_ids(&self) -> Vec<i64> {
        let Some(list) = &self.joined_channels else {
            return Vec::new();
        };
        list.split(';')
            .filter_map(|entry| {
                let inner = entry.trim().strip_suffix(')')?;
                let (_, id) = inner.rsplit_once('(')?;
                id.trim().parse().ok()
            })
            .collect()
    }
}

/// A channel of `getChannelsInPage` (§5.3.3.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// Channel id.
    pub cid: i64,
    /// How many members it has.
    #[serde(default)]
    pub member_num: i64,
    /// Its name.
    pub name: String,
}

/// A channel message of `getMessagesInPage` (§5.3.5.3), in the seed's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Channel id.
    pub cid: i64,
    /// Its sequence number in the channel.
    pub chan_seq_id: i64,
    /// Sender's user id.
    pub from_id: i64,
    /// When it was sent (the server's number, milliseconds since the epoch).
    pub time: i64,
    /// 0 text, 1 voice, 2 picture, 3 short video, 4 live, 5 location, 6 file, 7 order.
    #[serde(rename = "type")]
    pub kind: i64,
    /// The text, or the media file's path on the server.
    #[serde(default)]
    pub content: String,
    /// A file's original name (type 6).
    #[serde(default)]
    pub orig_name: String,
    /// Media size in bytes.
    #[serde(default)]
    pub size: i64,
    /// Voice/video duration in seconds.
    #[serde(default)]
    pub duration: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_and_reasons_are_cut() {
        assert_eq!(
            AdminError::from_code(406, "token timeout"),
            AdminError::TokenTimeout
        );
        assert!(AdminError::from_code(407, "token error: eid").needs_login());
        assert!(!AdminError::from_code(500, "operation error").needs_login());
        let long = "x".repeat(10_000);
        match AdminError::from_code(999, &long) {
            AdminError::UnknownCode { code, reason } => {
                assert_eq!(code, 999);
                assert_eq!(reason.len(), REASON_CHARS);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_hides_credentials() {
        let r = Request::login("10000", "s3cret-pass");
        let shown = format!("{r:?}");
        assert!(!shown.contains("s3cret-pass"), "{shown}");
        assert!(shown.contains("10000"));
        let shown = format!("{:?}", Request::users_page("tok-abc", 0, 5));
        assert!(!shown.contains("tok-abc"), "{shown}");
    }

    #[test]
    fn joined_channels_are_read() {
        let mut u: User = serde_json::from_str(r#"{"uid":1,"name":"a"}"#).unwrap();
        assert!(!u.online());
        assert!(u.joined_channel_ids().is_empty());
        u.joined_channels = Some("频道 1(1001);x(y);频道(2)(1002); ;".into());
        assert_eq!(u.joined_channel_ids(), vec![1001, 1002]);
    }
}
