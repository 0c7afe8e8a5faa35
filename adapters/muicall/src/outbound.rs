//! Bridge → console messages: replies, `audioResp` and notifications.
//!
//! Every type also deserializes, so a console written in Rust (and the tests) can read
//! them; ids that are 64-bit come out as both the number and the `…Str` string.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::request::Transaction;

/// The reply `type` for a request `type` (the spec answers `connect` with `login` and
/// `loginOut` with `logoutResp`; member and hang-up requests with `audioResp`).
pub fn response_type(request_type: &str) -> &str {
    match request_type {
        "connect" => "login",
        "loginOut" => "logoutResp",
        "addGroupMember" | "kickGroupMember" | "tempCallHangup" => "audioResp",
        other => other,
    }
}

/// The common reply: `initServer`, `login`, `createGroup`, `requestMic`, `releaseMic`,
/// `logoutResp` (and `audioFormat`, `error` from the bridge's extensions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Echo of the request's `transaction` (`createGroup`, `requestMic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Transaction>,
    /// The call's id (`createGroup`, `requestMic`).
    #[serde(rename = "sessionId", default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Reply type.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 success (2 for a granted `requestMic`), 0 failure.
    pub code: i64,
    /// For people.
    pub message: String,
}

impl Reply {
    /// A reply of `kind` with `code` and `message`.
    pub fn new(kind: impl Into<String>, code: i64, message: impl Into<String>) -> Self {
        Self {
            transaction: None,
            session_id: None,
            kind: kind.into(),
            code,
            message: message.into(),
        }
    }

    /// Adds the echoed transaction.
    pub fn transaction(mut self, t: Option<Transaction>) -> Self {
        self.transaction = t;
        self
    }

    /// Adds the call id.
    pub fn session(mut self, id: u64) -> Self {
        self.session_id = Some(id.to_string());
        self
    }
}

/// `audioResp` for `addGroupMember` and `kickGroupMember`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberResp {
    /// Always `audioResp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `addGroupMember` or `kickGroupMember`.
    pub cmd: String,
    /// Echo of the request's transaction, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    /// Per-member results.
    pub data: MemberRespData,
    /// Bridge extension, only on a failure of the whole request: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// Bridge extension, only on a failure of the whole request: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `data` of a [`MemberResp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRespData {
    /// The call id as a number.
    #[serde(rename = "groupId")]
    pub group_id: u64,
    /// The call id, exact.
    #[serde(rename = "groupIdStr")]
    pub group_id_str: String,
    /// One per requested id.
    pub results: Vec<MemberResult>,
}

/// One member's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberResult {
    /// Terminal id.
    pub id: u64,
    /// Terminal name ("" when the terminal is not online).
    pub name: String,
    /// 0 success; see the crate README for the others.
    pub code: i64,
    /// Why, when not 0.
    pub message: String,
}

impl MemberResp {
    /// Results of `cmd` on call `call`.
    pub fn new(
        cmd: &str,
        call: u64,
        transaction: Option<String>,
        results: Vec<MemberResult>,
    ) -> Self {
        Self {
            kind: "audioResp".into(),
            cmd: cmd.into(),
            transaction,
            data: MemberRespData {
                group_id: call,
                group_id_str: call.to_string(),
                results,
            },
            code: None,
            message: None,
        }
    }

    /// The whole request failed (unknown call, not logged in, ...).
    pub fn failed(
        cmd: &str,
        call: u64,
        transaction: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut r = Self::new(cmd, call, transaction, Vec::new());
        r.code = Some(0);
        r.message = Some(message.into());
        r
    }
}

/// `audioResp` for `tempCallHangup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangupResp {
    /// Always `audioResp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always `tempCallHangup`.
    pub cmd: String,
    /// Result and call id.
    pub data: HangupRespData,
}

/// `data` of a [`HangupResp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangupRespData {
    /// 0 success, -1 failure.
    pub result: HangupResult,
    /// The call id as a number.
    #[serde(rename = "tempCallId")]
    pub temp_call_id: u64,
    /// The call id, exact.
    #[serde(rename = "tempCallIdStr")]
    pub temp_call_id_str: String,
}

/// `data.result` of a [`HangupResp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangupResult {
    /// 0 success, -1 failure.
    pub code: i64,
    /// Why it failed; "" on success.
    pub message: String,
}

impl HangupResp {
    /// The answer for call `call`: `code` 0 or -1.
    pub fn new(call: u64, code: i64, message: impl Into<String>) -> Self {
        Self {
            kind: "audioResp".into(),
            cmd: "tempCallHangup".into(),
            data: HangupRespData {
                result: HangupResult {
                    code,
                    message: message.into(),
                },
                temp_call_id: call,
                temp_call_id_str: call.to_string(),
            },
        }
    }
}

/// A member's state in a call (`callState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    /// 0: not in the call (offline, left, kicked, or after hang-up).
    Idle = 0,
    /// 1: busy in another call.
    Busy = 1,
    /// 2: being called (the bridge asked the PTT server to bring it in).
    Calling = 2,
    /// 3: ringing (the call has reached it).
    Ringing = 3,
    /// 4: answered (in the call).
    Answered = 4,
}

impl Serialize for CallState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for CallState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match u8::deserialize(d)? {
            0 => Self::Idle,
            1 => Self::Busy,
            2 => Self::Calling,
            3 => Self::Ringing,
            4 => Self::Answered,
            n => {
                return Err(serde::de::Error::custom(format!(
                    "callState {n} is not 0..=4"
                )));
            }
        })
    }
}

/// One entry of `tempCallMemberUpdate.members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMember {
    /// User id.
    #[serde(rename = "memberId")]
    pub member_id: u64,
    /// User name.
    #[serde(rename = "memberName")]
    pub member_name: String,
    /// State.
    #[serde(rename = "callState")]
    pub call_state: CallState,
}

/// `hangupReason` of a `tempCallHangup` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangupReason {
    /// See the crate README (0 normal clearing, 2 PTT server lost, ...).
    pub code: i64,
    /// For people.
    pub message: String,
}

/// A notification (`type: "notify"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    /// Always `notify`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `cmd` and `data`.
    #[serde(flatten)]
    pub body: NotifyBody,
    /// Top-level message (`tempCallRing`, `tempCallAnswer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The `cmd` of a notification with its `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "data")]
pub enum NotifyBody {
    /// A member started talking.
    #[serde(rename = "memberGetMic")]
    MemberGetMic {
        /// Call id (number).
        #[serde(rename = "groupId")]
        group_id: u64,
        /// Call id (exact).
        #[serde(rename = "groupIdStr")]
        group_id_str: String,
        /// Talker id.
        #[serde(rename = "memberId")]
        member_id: u64,
        /// Talker name.
        #[serde(rename = "memberName")]
        member_name: String,
    },
    /// A member stopped talking.
    #[serde(rename = "memberLostMic")]
    MemberLostMic {
        /// Call id (number).
        #[serde(rename = "groupId")]
        group_id: u64,
        /// Call id (exact).
        #[serde(rename = "groupIdStr")]
        group_id_str: String,
        /// Talker id.
        #[serde(rename = "memberId")]
        member_id: u64,
    },
    /// The call reached a terminal.
    #[serde(rename = "tempCallRing")]
    TempCallRing {
        /// Call id (number).
        #[serde(rename = "tempCallId")]
        temp_call_id: u64,
        /// Call id (exact).
        #[serde(rename = "tempCallIdStr")]
        temp_call_id_str: String,
        /// The terminal.
        #[serde(rename = "fromId")]
        from_id: u64,
    },
    /// A terminal is in the call.
    #[serde(rename = "tempCallAnswer")]
    TempCallAnswer {
        /// Call id (number).
        #[serde(rename = "tempCallId")]
        temp_call_id: u64,
        /// Call id (exact).
        #[serde(rename = "tempCallIdStr")]
        temp_call_id_str: String,
        /// The terminal.
        #[serde(rename = "fromId")]
        from_id: u64,
    },
    /// Every member's state.
    #[serde(rename = "tempCallMemberUpdate")]
    TempCallMemberUpdate {
        /// Call id (number).
        #[serde(rename = "tempCallId")]
        temp_call_id: u64,
        /// Call id (exact).
        #[serde(rename = "tempCallIdStr")]
        temp_call_id_str: String,
        /// The call's owner (the console's user id).
        #[serde(rename = "fromId")]
        from_id: u64,
        /// Console first, then the terminals in the order they were called.
        members: Vec<CallMember>,
    },
    /// The call ended.
    #[serde(rename = "tempCallHangup")]
    TempCallHangup {
        /// Why.
        #[serde(rename = "hangupReason")]
        hangup_reason: HangupReason,
        /// Call id (number).
        #[serde(rename = "tempCallId")]
        temp_call_id: u64,
        /// Call id (exact).
        #[serde(rename = "tempCallIdStr")]
        temp_call_id_str: String,
        /// Who ended it (a terminal id; 0 for the PTT server or the bridge).
        #[serde(rename = "fromId")]
        from_id: u64,
    },
    /// Bridge extension: the console's PTT session went down or came back.
    #[serde(rename = "serverState")]
    ServerState {
        /// `connected`, `reconnecting` or `loggedOut`.
        state: String,
        /// Why it is down.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Bridge extension: a platform's message for this console (business gateway
    /// `POST /v1/online/trans-cmd`); `data` is the caller's `trans_mess` as given.
    #[serde(rename = "transCmd")]
    TransCmd(serde_json::Value),
}

impl Notify {
    fn new(body: NotifyBody, message: Option<&str>) -> Self {
        Self {
            kind: "notify".into(),
            body,
            message: message.map(str::to_string),
        }
    }

    /// `memberGetMic`.
    pub fn member_get_mic(call: u64, member: u64, name: &str) -> Self {
        Self::new(
            NotifyBody::MemberGetMic {
                group_id: call,
                group_id_str: call.to_string(),
                member_id: member,
                member_name: name.into(),
            },
            None,
        )
    }

    /// `memberLostMic`.
    pub fn member_lost_mic(call: u64, member: u64) -> Self {
        Self::new(
            NotifyBody::MemberLostMic {
                group_id: call,
                group_id_str: call.to_string(),
                member_id: member,
            },
            None,
        )
    }

    /// `tempCallRing`.
    pub fn ring(call: u64, from: u64) -> Self {
        Self::new(
            NotifyBody::TempCallRing {
                temp_call_id: call,
                temp_call_id_str: call.to_string(),
                from_id: from,
            },
            Some("用户正在响铃"),
        )
    }

    /// `tempCallAnswer`.
    pub fn answer(call: u64, from: u64) -> Self {
        Self::new(
            NotifyBody::TempCallAnswer {
                temp_call_id: call,
                temp_call_id_str: call.to_string(),
                from_id: from,
            },
            Some("用户已接受"),
        )
    }

    /// `tempCallMemberUpdate`.
    pub fn member_update(call: u64, from: u64, members: Vec<CallMember>) -> Self {
        Self::new(
            NotifyBody::TempCallMemberUpdate {
                temp_call_id: call,
                temp_call_id_str: call.to_string(),
                from_id: from,
                members,
            },
            None,
        )
    }

    /// `tempCallHangup`.
    pub fn hangup(call: u64, from: u64, code: i64, message: impl Into<String>) -> Self {
        Self::new(
            NotifyBody::TempCallHangup {
                hangup_reason: HangupReason {
                    code,
                    message: message.into(),
                },
                temp_call_id: call,
                temp_call_id_str: call.to_string(),
                from_id: from,
            },
            None,
        )
    }

    /// `serverState` (extension).
    pub fn server_state(state: &str, reason: Option<String>) -> Self {
        Self::new(
            NotifyBody::ServerState {
                state: state.into(),
                reason,
            },
            None,
        )
    }

    /// `transCmd` (extension): a platform's message, as given.
    pub fn trans_cmd(message: serde_json::Value) -> Self {
        Self::new(NotifyBody::TransCmd(message), None)
    }

    /// The `cmd`.
    pub fn cmd(&self) -> &'static str {
        match self.body {
            NotifyBody::MemberGetMic { .. } => "memberGetMic",
            NotifyBody::MemberLostMic { .. } => "memberLostMic",
            NotifyBody::TempCallRing { .. } => "tempCallRing",
            NotifyBody::TempCallAnswer { .. } => "tempCallAnswer",
            NotifyBody::TempCallMemberUpdate { .. } => "tempCallMemberUpdate",
            NotifyBody::TempCallHangup { .. } => "tempCallHangup",
            NotifyBody::ServerState { .. } => "serverState",
            NotifyBody::TransCmd(_) => "transCmd",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_go_out_as_number_and_exact_string() {
        let n = Notify::member_get_mic(50354528800735233, 169918, "ptcs11");
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            json!({"type":"notify","cmd":"memberGetMic","data":{"groupId":50354528800735233u64,
                   "groupIdStr":"50354528800735233","memberId":169918,"memberName":"ptcs11"}})
        );
        let text = serde_json::to_string(&n).unwrap();
        assert!(text.contains("\"groupId\":50354528800735233,"), "{text}");
    }

    #[test]
    fn reply_types_follow_the_spec() {
        assert_eq!(response_type("connect"), "login");
        assert_eq!(response_type("loginOut"), "logoutResp");
        assert_eq!(response_type("kickGroupMember"), "audioResp");
        assert_eq!(response_type("requestMic"), "requestMic");
    }

    #[test]
    fn a_platform_message_is_a_notification_with_its_data_as_given() {
        let msg = json!({"text": "evacuate North", "level": 2});
        let n = Notify::trans_cmd(msg.clone());
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v, json!({"type":"notify","cmd":"transCmd","data":msg}));
        assert_eq!(n.cmd(), "transCmd");
        assert_eq!(serde_json::from_value::<Notify>(v).unwrap(), n);
    }

    #[test]
    fn call_state_is_a_number_0_to_4() {
        assert_eq!(serde_json::to_value(CallState::Ringing).unwrap(), json!(3));
        assert!(serde_json::from_value::<CallState>(json!(5)).is_err());
    }
}
