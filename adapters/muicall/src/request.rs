//! Console → bridge requests: parsing and validation.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient::{id_list, text_of, u64_of};

/// A request from a console, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `initServer`: choose the PTT server by its base URL.
    InitServer {
        /// `data.baseUrl`.
        base_url: String,
    },
    /// `connect`: log in with the dispatcher's own PTT account.
    Connect {
        /// `data.account`.
        account: String,
        /// `data.password` (may be empty).
        password: String,
        /// `data.audio` (bridge extension): the audio format the console wants to receive.
        audio: Option<AudioFormat>,
    },
    /// `requestMic`: start a call with `to_ids` and take the floor, or (with a session id,
    /// or while a call exists) only ask for the floor.
    RequestMic {
        /// `toIds`; `None` when absent.
        to_ids: Option<Vec<u64>>,
        /// `transaction`, echoed in the replies.
        transaction: Option<Transaction>,
        /// `sessionId` of an existing call.
        session_id: Option<u64>,
    },
    /// `releaseMic`: give the floor back.
    ReleaseMic {
        /// `sessionId` (bridge extension, optional): must name the current call if given.
        session_id: Option<u64>,
    },
    /// `addGroupMember`: call more terminals into a call.
    AddGroupMember {
        /// `sessionId` (or `data.groupId`).
        session_id: u64,
        /// `data.members[].id`.
        ids: Vec<u64>,
        /// `transaction`, echoed in the reply if given.
        transaction: Option<Transaction>,
    },
    /// `kickGroupMember`: send terminals back out of a call.
    KickGroupMember {
        /// `sessionId` (or `data.groupId`).
        session_id: u64,
        /// `data.ids`.
        ids: Vec<u64>,
        /// `transaction`, echoed in the reply if given.
        transaction: Option<Transaction>,
    },
    /// `tempCallHangup`: end a call.
    TempCallHangup {
        /// `sessionId`.
        session_id: u64,
    },
    /// `loginOut`: log out of the PTT server (the WebSocket stays open).
    LoginOut,
    /// `audioFormat` (bridge extension): the audio format the console wants to receive.
    AudioFormat(AudioFormat),
}

impl Request {
    /// The `transaction` and call id this request carries, for its replies.
    pub fn echo(&self) -> Echo {
        let (transaction, session_id) = match self {
            Self::RequestMic {
                transaction,
                session_id,
                ..
            } => (transaction.clone(), *session_id),
            Self::AddGroupMember {
                transaction,
                session_id,
                ..
            }
            | Self::KickGroupMember {
                transaction,
                session_id,
                ..
            } => (transaction.clone(), Some(*session_id)),
            Self::ReleaseMic { session_id } => (None, *session_id),
            Self::TempCallHangup { session_id } => (None, Some(*session_id)),
            Self::InitServer { .. }
            | Self::Connect { .. }
            | Self::LoginOut
            | Self::AudioFormat(_) => (None, None),
        };
        Echo {
            transaction,
            session_id,
        }
    }

    /// The `type` this request arrived with.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::InitServer { .. } => "initServer",
            Self::Connect { .. } => "connect",
            Self::RequestMic { .. } => "requestMic",
            Self::ReleaseMic { .. } => "releaseMic",
            Self::AddGroupMember { .. } => "addGroupMember",
            Self::KickGroupMember { .. } => "kickGroupMember",
            Self::TempCallHangup { .. } => "tempCallHangup",
            Self::LoginOut => "loginOut",
            Self::AudioFormat(_) => "audioFormat",
        }
    }
}

/// A request's `transaction` (a timestamp), kept in the JSON type it came in so the
/// echo matches what the console sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Transaction {
    /// Sent as a number (the spec's form).
    Number(u64),
    /// Sent as a string.
    Text(String),
}

impl Transaction {
    /// The decimal text form (what `audioResp` carries).
    pub fn as_text(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// Codec of console audio frames the bridge sends (bridge extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodecName {
    /// Opus 48 kHz mono, passed through from the PTT side.
    Opus,
    /// 16-bit little-endian PCM, mono.
    Pcm16,
}

/// The audio a console wants to receive: `{"codec": "opus"}` or `{"codec": "pcm16", "rate": 16000}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Codec.
    pub codec: AudioCodecName,
    /// Sample rate: 48000 for Opus; 8000, 16000 or 48000 for PCM16.
    pub rate: u32,
}

impl Default for AudioFormat {
    fn default() -> Self {
        Self {
            codec: AudioCodecName::Opus,
            rate: 48_000,
        }
    }
}

/// What is wrong with a request, for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Not JSON at all.
    InvalidJson,
    /// JSON, but not an object.
    NotAnObject,
    /// No `type`.
    MissingType,
    /// A `type` this protocol does not have.
    UnknownType,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or an unusable value.
    BadValue,
}

impl ErrorKind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingType => "missing_type",
            Self::UnknownType => "unknown_type",
            Self::MissingField => "missing_field",
            Self::BadValue => "bad_value",
        }
    }
}

/// A request that cannot be carried out as sent. `message` is meant for the console operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Category.
    pub kind: ErrorKind,
    /// The `type` the request claimed, when it had one (so the reply can use its shape).
    pub request_type: Option<String>,
    /// What is wrong, naming the field.
    pub message: String,
    /// What the request carried to match its reply by (`transaction`, `sessionId`), read
    /// leniently so that even a refused request's reply can be matched to it.
    pub echo: Echo,
}

/// The fields a console matches a reply to its request by: the request's `transaction` and the
/// call (`sessionId`) it named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo {
    /// `transaction`, as sent (number or string).
    pub transaction: Option<Transaction>,
    /// `sessionId` (or `data.groupId`).
    pub session_id: Option<u64>,
}

impl Echo {
    /// Whatever of `transaction` and `sessionId` can be read from a request object, ignoring
    /// what cannot.
    fn lenient(top: &Map<String, Value>) -> Self {
        let transaction = match top.get("transaction") {
            Some(Value::String(s)) => Some(Transaction::Text(s.clone())),
            Some(v) => u64_of(v).map(Transaction::Number),
            None => None,
        };
        let session_id = ["sessionIdStr", "sessionId"]
            .iter()
            .find_map(|k| top.get(*k).and_then(u64_of))
            .or_else(|| {
                let data = top.get("data")?.as_object()?;
                ["groupIdStr", "groupId"]
                    .iter()
                    .find_map(|k| data.get(*k).and_then(u64_of))
            });
        Self {
            transaction,
            session_id,
        }
    }
}

struct Fields<'a> {
    ty: &'a str,
    top: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn err(&self, kind: ErrorKind, message: String) -> RequestError {
        RequestError {
            kind,
            request_type: Some(self.ty.to_string()),
            message: format!("{}: {message}", self.ty),
            echo: Echo::lenient(self.top),
        }
    }

    fn data(&self) -> Result<Option<&'a Map<String, Value>>, RequestError> {
        match self.top.get("data") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(self.err(ErrorKind::BadValue, "data must be an object".into())),
        }
    }

    fn need_data(&self) -> Result<&'a Map<String, Value>, RequestError> {
        self.data()?
            .ok_or_else(|| self.err(ErrorKind::MissingField, "data is required".into()))
    }

    fn need_text(
        &self,
        map: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Result<String, RequestError> {
        match map.get(key) {
            None | Some(Value::Null) => {
                Err(self.err(ErrorKind::MissingField, format!("{path} is required")))
            }
            Some(v) => text_of(v)
                .ok_or_else(|| self.err(ErrorKind::BadValue, format!("{path} must be a string"))),
        }
    }

    /// A 64-bit id from `key` and/or `keyStr`; the string wins (it is exact).
    fn id(
        &self,
        map: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Result<Option<u64>, RequestError> {
        let str_key = format!("{key}Str");
        let mut found = None;
        for k in [str_key.as_str(), key] {
            match map.get(k) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(v) => {
                    let id = u64_of(v).ok_or_else(|| {
                        self.err(
                            ErrorKind::BadValue,
                            format!("{path}{} must be a 64-bit id, got {v}", &k[key.len()..]),
                        )
                    })?;
                    found.get_or_insert(id);
                }
            }
        }
        Ok(found)
    }

    fn transaction(&self) -> Result<Option<Transaction>, RequestError> {
        match self.top.get("transaction") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(Transaction::Text(s.clone()))),
            Some(v) => u64_of(v)
                .map(|n| Some(Transaction::Number(n)))
                .ok_or_else(|| {
                    self.err(
                        ErrorKind::BadValue,
                        format!("transaction must be a number or string, got {v}"),
                    )
                }),
        }
    }

    /// The call a member request is about: `sessionId` and/or `data.groupId`, which must agree.
    fn call_id(&self, data: Option<&Map<String, Value>>) -> Result<u64, RequestError> {
        let top = self.id(self.top, "sessionId", "sessionId")?;
        let group = match data {
            Some(d) => self.id(d, "data.groupId", "groupId")?,
            None => None,
        };
        match (top, group) {
            (Some(a), Some(b)) if a != b => Err(self.err(
                ErrorKind::BadValue,
                format!("sessionId {a} and data.groupId {b} name different calls"),
            )),
            (Some(id), _) | (None, Some(id)) => Ok(id),
            (None, None) => Err(self.err(ErrorKind::MissingField, "sessionId is required".into())),
        }
    }

    fn audio_format(&self, v: &Value, path: &str) -> Result<AudioFormat, RequestError> {
        let Value::Object(m) = v else {
            return Err(self.err(ErrorKind::BadValue, format!("{path} must be an object")));
        };
        let codec = match m.get("codec").and_then(Value::as_str) {
            Some("opus") => AudioCodecName::Opus,
            Some("pcm16") => AudioCodecName::Pcm16,
            Some(other) => {
                return Err(self.err(
                    ErrorKind::BadValue,
                    format!("{path}.codec {other:?} is not \"opus\" or \"pcm16\""),
                ));
            }
            None => {
                return Err(self.err(ErrorKind::MissingField, format!("{path}.codec is required")));
            }
        };
        let rate = match m.get("rate") {
            None | Some(Value::Null) => 48_000,
            Some(v) => u64_of(v)
                .and_then(|r| u32::try_from(r).ok())
                .ok_or_else(|| {
                    self.err(ErrorKind::BadValue, format!("{path}.rate must be a number"))
                })?,
        };
        let ok = match codec {
            AudioCodecName::Opus => rate == 48_000,
            AudioCodecName::Pcm16 => matches!(rate, 8_000 | 16_000 | 48_000),
        };
        if !ok {
            return Err(self.err(
                ErrorKind::BadValue,
                format!(
                    "{path}.rate {rate} is not supported (opus: 48000; pcm16: 8000, 16000 or 48000)"
                ),
            ));
        }
        Ok(AudioFormat { codec, rate })
    }
}

pub(crate) fn parse(text: &str) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_str(text).map_err(|e| RequestError {
        kind: ErrorKind::InvalidJson,
        request_type: None,
        message: format!("invalid JSON: {e}"),
        echo: Echo::default(),
    })?;
    let Value::Object(top) = &value else {
        return Err(RequestError {
            kind: ErrorKind::NotAnObject,
            request_type: None,
            message: "a request must be a JSON object with a \"type\"".into(),
            echo: Echo::default(),
        });
    };
    let ty = match top.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(other) => {
            return Err(RequestError {
                kind: ErrorKind::MissingType,
                request_type: None,
                message: format!("\"type\" must be a string, got {other}"),
                echo: Echo::lenient(top),
            });
        }
        None => {
            return Err(RequestError {
                kind: ErrorKind::MissingType,
                request_type: None,
                message: "\"type\" is required".into(),
                echo: Echo::lenient(top),
            });
        }
    };
    let f = Fields { ty, top };
    Ok(match ty {
        "initServer" => {
            let data = f.need_data()?;
            let base_url = f.need_text(data, "data.baseUrl", "baseUrl")?;
            if base_url.trim().is_empty() {
                return Err(f.err(ErrorKind::BadValue, "data.baseUrl must not be empty".into()));
            }
            Request::InitServer { base_url }
        }
        "connect" => {
            let data = f.need_data()?;
            let account = f.need_text(data, "data.account", "account")?;
            if account.trim().is_empty() {
                return Err(f.err(ErrorKind::BadValue, "data.account must not be empty".into()));
            }
            let password = match data.get("password") {
                None | Some(Value::Null) => String::new(),
                Some(v) => text_of(v).ok_or_else(|| {
                    f.err(ErrorKind::BadValue, "data.password must be a string".into())
                })?,
            };
            let audio = match data.get("audio") {
                None | Some(Value::Null) => None,
                Some(v) => Some(f.audio_format(v, "data.audio")?),
            };
            Request::Connect {
                account,
                password,
                audio,
            }
        }
        "requestMic" => {
            let to_ids = match top.get("toIds") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    id_list(v).map_err(|e| f.err(ErrorKind::BadValue, format!("toIds: {e}")))?,
                ),
            };
            Request::RequestMic {
                to_ids,
                transaction: f.transaction()?,
                session_id: f.id(top, "sessionId", "sessionId")?,
            }
        }
        "releaseMic" => Request::ReleaseMic {
            session_id: f.id(top, "sessionId", "sessionId")?,
        },
        "addGroupMember" => {
            let data = f.need_data()?;
            let members = data
                .get("members")
                .ok_or_else(|| f.err(ErrorKind::MissingField, "data.members is required".into()))?;
            let ids = match members {
                // [{"id": 1}, ...]; plain ids are tolerated too.
                Value::Array(items) => items
                    .iter()
                    .map(|m| {
                        match m {
                            Value::Object(o) => o.get("id").and_then(u64_of),
                            other => u64_of(other),
                        }
                        .ok_or_else(|| {
                            f.err(
                                ErrorKind::BadValue,
                                format!("data.members: {m} has no usable id"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => id_list(other)
                    .map_err(|e| f.err(ErrorKind::BadValue, format!("data.members: {e}")))?,
            };
            if ids.is_empty() {
                return Err(f.err(ErrorKind::BadValue, "data.members must not be empty".into()));
            }
            Request::AddGroupMember {
                session_id: f.call_id(Some(data))?,
                ids,
                transaction: f.transaction()?,
            }
        }
        "kickGroupMember" => {
            let data = f.need_data()?;
            let ids =
                id_list(data.get("ids").ok_or_else(|| {
                    f.err(ErrorKind::MissingField, "data.ids is required".into())
                })?)
                .map_err(|e| f.err(ErrorKind::BadValue, format!("data.ids: {e}")))?;
            if ids.is_empty() {
                return Err(f.err(ErrorKind::BadValue, "data.ids must not be empty".into()));
            }
            Request::KickGroupMember {
                session_id: f.call_id(Some(data))?,
                ids,
                transaction: f.transaction()?,
            }
        }
        "tempCallHangup" => Request::TempCallHangup {
            session_id: f.call_id(f.data()?)?,
        },
        "loginOut" => Request::LoginOut,
        "audioFormat" => {
            let data = f.need_data()?;
            Request::AudioFormat(f.audio_format(&Value::Object(data.clone()), "data")?)
        }
        other => {
            return Err(RequestError {
                kind: ErrorKind::UnknownType,
                request_type: Some(other.to_string()),
                message: format!("unknown type {other:?}"),
                echo: Echo::lenient(top),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Request {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> RequestError {
        parse(text).expect_err(text)
    }

    #[test]
    fn every_request_type_parses() {
        assert_eq!(
            ok(r#"{"type":"initServer","data":{"baseUrl":"http://10.0.0.1:8080"}}"#),
            Request::InitServer {
                base_url: "http://10.0.0.1:8080".into()
            }
        );
        assert_eq!(
            ok(r#"{"type":"connect","data":{"account":"zydd","password":"pw"}}"#),
            Request::Connect {
                account: "zydd".into(),
                password: "pw".into(),
                audio: None
            }
        );
        assert_eq!(
            ok(r#"{"type":"requestMic","toIds":[169918,"169919"],"transaction":1671006883842}"#),
            Request::RequestMic {
                to_ids: Some(vec![169918, 169919]),
                transaction: Some(Transaction::Number(1671006883842)),
                session_id: None
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"requestMic","sessionId":"50351257998589953","transaction":"1671006883842"}"#
            ),
            Request::RequestMic {
                to_ids: None,
                transaction: Some(Transaction::Text("1671006883842".into())),
                session_id: Some(50351257998589953)
            }
        );
        assert_eq!(
            ok(r#"{"type":"releaseMic"}"#),
            Request::ReleaseMic { session_id: None }
        );
        assert_eq!(
            ok(
                r#"{"type":"addGroupMember","sessionId":"50354528800735233","data":{"groupId":"50354528800735233","members":[{"id":169919}]}}"#
            ),
            Request::AddGroupMember {
                session_id: 50354528800735233,
                ids: vec![169919],
                transaction: None
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"kickGroupMember","sessionId":"7","data":{"groupId":"7","ids":[1,"2"]}}"#
            ),
            Request::KickGroupMember {
                session_id: 7,
                ids: vec![1, 2],
                transaction: None
            }
        );
        assert_eq!(
            ok(r#"{"type":"tempCallHangup","sessionId":"50351257998589953"}"#),
            Request::TempCallHangup {
                session_id: 50351257998589953
            }
        );
        assert_eq!(ok(r#"{"type":"loginOut"}"#), Request::LoginOut);
        assert_eq!(
            ok(r#"{"type":"audioFormat","data":{"codec":"pcm16","rate":"16000"}}"#),
            Request::AudioFormat(AudioFormat {
                codec: AudioCodecName::Pcm16,
                rate: 16000
            })
        );
    }

    #[test]
    fn ids_as_numbers_or_strings_and_the_string_wins() {
        // A JavaScript console rounds the number; the Str form is exact.
        let r = ok(
            r#"{"type":"addGroupMember","data":{"groupId":50354528800735230,"groupIdStr":"50354528800735233","members":[169919]}}"#,
        );
        assert_eq!(
            r,
            Request::AddGroupMember {
                session_id: 50354528800735233,
                ids: vec![169919],
                transaction: None
            }
        );
        let r = ok(r#"{"type":"tempCallHangup","sessionId":50351257998589953}"#);
        assert_eq!(
            r,
            Request::TempCallHangup {
                session_id: 50351257998589953
            }
        );
    }

    #[test]
    fn errors_are_clear_and_typed() {
        let e = err("{not json");
        assert_eq!(e.kind, ErrorKind::InvalidJson);
        assert!(e.message.starts_with("invalid JSON"), "{e}");
        assert_eq!(err("[1,2]").kind, ErrorKind::NotAnObject);
        assert_eq!(err(r#"{"data":{}}"#).kind, ErrorKind::MissingType);
        assert_eq!(err(r#"{"type":7}"#).kind, ErrorKind::MissingType);
        let e = err(r#"{"type":"dial"}"#);
        assert_eq!(
            (e.kind, e.request_type.as_deref()),
            (ErrorKind::UnknownType, Some("dial"))
        );
        let e = err(r#"{"type":"connect","data":{"password":"x"}}"#);
        assert_eq!(e.kind, ErrorKind::MissingField);
        assert_eq!(e.message, "connect: data.account is required");
        let e = err(r#"{"type":"requestMic","toIds":[1,"x"]}"#);
        assert_eq!(e.kind, ErrorKind::BadValue);
        assert!(e.message.contains("toIds"), "{e}");
        let e = err(r#"{"type":"tempCallHangup"}"#);
        assert_eq!(e.message, "tempCallHangup: sessionId is required");
        let e =
            err(r#"{"type":"kickGroupMember","sessionId":"1","data":{"groupId":"2","ids":[3]}}"#);
        assert!(e.message.contains("different calls"), "{e}");
        let e = err(r#"{"type":"requestMic","sessionId":"abc"}"#);
        assert!(e.message.contains("sessionId must be a 64-bit id"), "{e}");
        let e = err(r#"{"type":"audioFormat","data":{"codec":"pcm16","rate":44100}}"#);
        assert!(e.message.contains("44100"), "{e}");
        assert_eq!(
            err(r#"{"type":"initServer","data":"x"}"#).kind,
            ErrorKind::BadValue
        );
        assert_eq!(
            err(r#"{"type":"addGroupMember","sessionId":"1","data":{"members":[]}}"#).kind,
            ErrorKind::BadValue
        );
    }

    #[test]
    fn missing_to_ids_is_left_to_the_bridge() {
        // Whether toIds is needed depends on whether a call exists: the bridge decides.
        assert_eq!(
            ok(r#"{"type":"requestMic"}"#),
            Request::RequestMic {
                to_ids: None,
                transaction: None,
                session_id: None
            }
        );
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "",
            "null",
            "\"x\"",
            "{\"type\":null}",
            "{\"type\":\"connect\",\"data\":[]}",
            "{\"type\":\"requestMic\",\"toIds\":{}}",
            "{\"type\":\"addGroupMember\",\"data\":{\"members\":7}}",
            "{\"type\":\"requestMic\",\"transaction\":-5}",
            "\u{0}\u{ffff}",
        ] {
            let _ = parse(s);
        }
    }
}
