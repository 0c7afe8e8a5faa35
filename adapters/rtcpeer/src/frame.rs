//! The envelope every message shares: a JSON object with `module` and `method`.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::code;

/// Most bytes accepted in one text frame; larger frames are refused unparsed.
pub const MAX_FRAME: usize = 256 * 1024;

/// A parsed envelope: `module`, `method` and the other fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `call`, `room`, `account`, `meeting`.
    pub module: String,
    /// Method (request) or event name (push).
    pub method: String,
    /// Every other field.
    pub body: Map<String, Value>,
}

/// Why a frame could not be used. Each maps to a `result` code and a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    /// Larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
    /// Not JSON at all.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("a message must be a JSON object")]
    NotObject,
    /// `module` or `method` absent or not a string.
    #[error("missing or non-string \"{0}\"")]
    MissingEnvelope(&'static str),
    /// No such module/method.
    #[error("unknown method {module}.{method}")]
    Unknown {
        /// Module.
        module: String,
        /// Method.
        method: String,
    },
    /// Known method, but a field is missing or of the wrong type.
    #[error("{module}.{method}: {reason}")]
    Fields {
        /// Module.
        module: String,
        /// Method.
        method: String,
        /// serde's description, naming the field.
        reason: String,
    },
}

impl FrameError {
    /// The `result` code for this error.
    pub fn code(&self) -> i64 {
        match self {
            Self::TooLarge(_) | Self::Json(_) | Self::NotObject | Self::MissingEnvelope(_) => {
                code::MALFORMED
            }
            Self::Unknown { .. } => code::NOT_FOUND,
            Self::Fields { .. } => code::BAD_FIELDS,
        }
    }

    /// `module`/`method` to answer with (empty when the frame had none).
    pub fn envelope(&self) -> (&str, &str) {
        match self {
            Self::Unknown { module, method } | Self::Fields { module, method, .. } => {
                (module, method)
            }
            _ => ("", ""),
        }
    }

    /// A short kind for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Json(_) => "malformed_json",
            Self::NotObject => "not_object",
            Self::MissingEnvelope(_) => "missing_envelope",
            Self::Unknown { .. } => "unknown_method",
            Self::Fields { .. } => "bad_fields",
        }
    }
}

impl Frame {
    /// Parses one text frame into its envelope.
    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        if text.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(text.len()));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
        Self::from_value(value)
    }

    /// Splits an already-parsed object into its envelope.
    pub fn from_value(value: Value) -> Result<Frame, FrameError> {
        let Value::Object(mut body) = value else {
            return Err(FrameError::NotObject);
        };
        let mut take = |k: &'static str| match body.remove(k) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(FrameError::MissingEnvelope(k)),
        };
        let module = take("module")?;
        let method = take("method")?;
        Ok(Frame {
            module,
            method,
            body,
        })
    }

    /// The body as a typed message, errors naming the method and the field.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_value(Value::Object(self.body.clone())).map_err(|e| FrameError::Fields {
            module: self.module.clone(),
            method: self.method.clone(),
            reason: e.to_string(),
        })
    }

    /// The whole frame as one JSON object again (`module`, `method` and the body).
    pub fn into_value(self) -> Value {
        let mut body = self.body;
        body.insert("module".into(), Value::String(self.module));
        body.insert("method".into(), Value::String(self.method));
        Value::Object(body)
    }

    /// `result` when present (replies have it, pushes never do).
    pub fn result(&self) -> Option<i64> {
        self.body.get("result").and_then(Value::as_i64)
    }
}

/// Serializes `body` (a struct or map) with `module` and `method` first.
pub fn encode<T: Serialize + ?Sized>(module: &str, method: &str, body: &T) -> Value {
    let mut out = Map::new();
    out.insert("module".into(), Value::String(module.into()));
    out.insert("method".into(), Value::String(method.into()));
    match serde_json::to_value(body) {
        Ok(Value::Object(fields)) => out.extend(fields),
        Ok(Value::Null) => {}
        Ok(other) => {
            out.insert("data".into(), other);
        }
        Err(e) => {
            out.insert("result".into(), code::INTERNAL.into());
            out.insert("message".into(), e.to_string().into());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_codes_and_envelopes() {
        assert_eq!(Frame::parse("{nope").unwrap_err().code(), code::MALFORMED);
        assert_eq!(Frame::parse("[1]").unwrap_err(), FrameError::NotObject);
        assert_eq!(
            Frame::parse(r#"{"module":"call"}"#).unwrap_err(),
            FrameError::MissingEnvelope("method")
        );
        assert_eq!(
            Frame::parse(r#"{"module":"call","method":3}"#).unwrap_err(),
            FrameError::MissingEnvelope("method")
        );
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_FRAME));
        assert!(matches!(Frame::parse(&big), Err(FrameError::TooLarge(_))));
        let f = Frame::parse(r#"{"module":"call","method":"doX","a":1}"#).unwrap();
        assert_eq!((f.module.as_str(), f.method.as_str()), ("call", "doX"));
        assert_eq!(f.body.len(), 1);
    }

    #[test]
    fn encode_puts_the_envelope_first() {
        let v = encode("call", "doRegister", &serde_json::json!({"result": 0}));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"module":"call","method":"doRegister","result":0}"#
        );
    }
}
