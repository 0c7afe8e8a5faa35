//! Parameters of seed 002, checked one by one: what a request (query, form or a `data=[...]`
//! entry) must hold to become a [`Customer`] or a commit. Every rule is here, so the HTTP
//! handlers and the config check say the same thing; an error names the parameter.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{Customer, GroupCommit, ServerCommit, UserCommit};

/// A parameter that is missing or malformed: the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

/// A rule a parameter's text must pass.
pub type Rule = fn(&str) -> bool;

/// Longest free text (names, contacts): characters.
pub const MAX_TEXT: usize = 100;

/// Largest count accepted in a commit (far above any real site; keeps sums in range).
pub const MAX_COUNT: i64 = 1_000_000_000_000;

/// A customer number: 1–32 ASCII letters, digits, `-` or `_`.
pub fn is_code(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Free text: 1–[`MAX_TEXT`] characters, no control characters.
pub fn is_text(s: &str) -> bool {
    let n = s.chars().count();
    (1..=MAX_TEXT).contains(&n) && !s.chars().any(char::is_control)
}

/// An id of a user or group at a site: 1–64 printable ASCII characters.
pub fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// A MAC address: 5 to 8 two-digit hex octets separated by `:` or `-` (the seed's own example,
/// `56:E8:F6:23:EF`, has five; EUI-48 has six, EUI-64 eight).
pub fn is_mac(s: &str) -> bool {
    let sep = if s.contains('-') { '-' } else { ':' };
    let octets: Vec<&str> = s.split(sep).collect();
    (5..=8).contains(&octets.len())
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An IPv4 or IPv6 address.
pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// An IP address or a DNS host name (labels of letters, digits and `-`, at most 253 bytes).
pub fn is_host(s: &str) -> bool {
    is_ip(s)
        || ((1..=253).contains(&s.len())
            && s.split('.').all(|l| {
                (1..=63).contains(&l.len())
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

/// A date `YYYY-MM-DD` that exists.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y >= 1970 && (1..=days).contains(&d)
}

/// A telephone number: 3–32 digits, spaces, `+`, `-`, `(` or `)`, at least 3 digits.
pub fn is_phone(s: &str) -> bool {
    (3..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b" +-()".contains(&b))
        && s.bytes().filter(u8::is_ascii_digit).count() >= 3
}

/// A UUID in its 8-4-4-4-12 hex form (a customer's `id`).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A fresh random (version 4) UUID.
pub fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::auth::secret::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parameters of one request or one `data` entry: names to values (strings from a query or
/// form; strings or numbers from JSON).
pub struct Params<'a>(pub &'a Map<String, Value>);

impl Params<'_> {
    /// The value of `key` as text; `None` when absent, null or empty.
    fn raw(&self, key: &str) -> Result<Option<String>, ParamError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ParamError(format!("{key} must be a string or a number"))),
        }
    }

    /// A required parameter that passes `ok`, else an error saying `what` it must be.
    pub fn required(&self, key: &str, ok: Rule, what: &str) -> Result<String, ParamError> {
        self.optional(key, ok, what)?
            .ok_or_else(|| ParamError(format!("missing {key} ({what})")))
    }

    /// An optional parameter ("" when absent) that passes `ok` when given.
    pub fn optional(&self, key: &str, ok: Rule, what: &str) -> Result<Option<String>, ParamError> {
        match self.raw(key)? {
            None => Ok(None),
            Some(v) if ok(&v) => Ok(Some(v)),
            Some(v) => Err(ParamError(format!(
                "{key} must be {what}, got {:?}",
                logsafe::esc(&v).limit(40).to_string()
            ))),
        }
    }

    fn text(&self, key: &str, ok: Rule, what: &str) -> Result<String, ParamError> {
        Ok(self.optional(key, ok, what)?.unwrap_or_default())
    }

    /// An optional port, 1–65535 (0 when absent).
    pub fn port(&self, key: &str) -> Result<u16, ParamError> {
        match self.raw(key)? {
            None => Ok(0),
            Some(v) => v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                ParamError(format!(
                    "{key} must be a port from 1 to 65535, got {:?}",
                    logsafe::esc(&v).limit(20).to_string()
                ))
            }),
        }
    }

    /// An optional count, 0–[`MAX_COUNT`] (0 when absent).
    pub fn count(&self, key: &str) -> Result<i64, ParamError> {
        match self.raw(key)? {
            None => Ok(0),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (0..=MAX_COUNT).contains(n))
                .ok_or_else(|| {
                    ParamError(format!(
                        "{key} must be a whole number from 0 to {MAX_COUNT}, got {:?}",
                        logsafe::esc(&v).limit(20).to_string()
                    ))
                }),
        }
    }

    /// The customer number (`code`), required.
    pub fn code(&self) -> Result<String, ParamError> {
        self.required("code", is_code, CODE)
    }
}

const CODE: &str = "1 to 32 letters, digits, '-' or '_'";
const TEXT: &str = "1 to 100 characters without control characters";
const MAC: &str = "hex octets like 56:E8:F6:23:EF:01";
const HOST: &str = "an IP address or a host name";
const DATE: &str = "a date YYYY-MM-DD";
const ID: &str = "1 to 64 printable ASCII characters";

/// `/customer/add`: `code` and `name` required, the rest optional and checked when given.
pub fn customer(p: &Params<'_>) -> Result<Customer, ParamError> {
    Ok(Customer {
        id: new_uuid(),
        code: p.code()?,
        name: p.required("name", is_text, TEXT)?,
        mac: p.text("mac", is_mac, MAC)?,
        tcphost: p.text("tcphost", is_host, HOST)?,
        tcpport: p.port("tcpport")?,
        webhost: p.text("webhost", is_host, HOST)?,
        webport: p.port("webport")?,
        filehost: p.text("filehost", is_host, HOST)?,
        fileport: p.port("fileport")?,
        timeout: p.text("timeout", is_date, DATE)?,
        contact: p.text("contact", is_text, TEXT)?,
        ctel: p.text("ctel", is_phone, "a telephone number")?,
        server: p.text("server", is_text, TEXT)?,
        created_ms: super::now_ms(),
    })
}

/// `/api/server/commit`.
pub fn server_commit(p: &Params<'_>) -> Result<ServerCommit, ParamError> {
    Ok(ServerCommit {
        code: p.code()?,
        name: p.text("name", is_text, TEXT)?,
        mac: p.text("mac", is_mac, MAC)?,
        ip: p.text("ip", is_ip, "an IP address")?,
        timeout: p.text("timeout", is_date, DATE)?,
        count: p.count("count")?,
        updatetimes: p.count("updatetimes")?,
    })
}

fn user(p: &Params<'_>) -> Result<UserCommit, ParamError> {
    Ok(UserCommit {
        code: p.code()?,
        uuid: p.required("uuid", is_id, ID)?,
        nickname: p.text("nickname", is_text, TEXT)?,
        onlinetime: p.count("onlinetime")?,
        andtimes: p.count("andtimes")?,
        pctimes: p.count("pctimes")?,
        iostimes: p.count("iostimes")?,
        fmsgs: p.count("fmsgs")?,
        tmsgs: p.count("tmsgs")?,
    })
}

fn group(p: &Params<'_>) -> Result<GroupCommit, ParamError> {
    Ok(GroupCommit {
        code: p.code()?,
        gid: p.required("gid", is_id, ID)?,
        name: p.text("name", is_text, TEXT)?,
        createrid: p.text("createrid", is_id, ID)?,
        creatername: p.text("creatername", is_text, TEXT)?,
        ucount: p.count("ucount")?,
        msgcount: p.count("msgcount")?,
        ctime: p.text("ctime", is_date, DATE)?,
        fcount: p.count("fcount")?,
        ncount: p.count("ncount")?,
    })
}

/// The entries of `data=[...]`: a JSON array of at most `max` objects, each checked by `one`;
/// an error names the entry.
fn data<T>(
    p: &Params<'_>,
    max: usize,
    one: fn(&Params<'_>) -> Result<T, ParamError>,
) -> Result<Vec<T>, ParamError> {
    let raw = p
        .raw("data")?
        .ok_or_else(|| ParamError("missing data (a JSON array: data=[{...}, ...])".into()))?;
    let entries: Vec<Value> = serde_json::from_str(&raw)
        .map_err(|e| ParamError(format!("data must be a JSON array of objects: {e}")))?;
    if entries.len() > max {
        return Err(ParamError(format!(
            "data has {} entries; at most {max} per commit",
            entries.len()
        )));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            Value::Object(m) => {
                one(&Params(m)).map_err(|ParamError(why)| ParamError(format!("data[{i}].{why}")))
            }
            _ => Err(ParamError(format!("data[{i}] must be an object"))),
        })
        .collect()
}

/// `/api/user/commit`'s `data`.
pub fn users(p: &Params<'_>, max: usize) -> Result<Vec<UserCommit>, ParamError> {
    data(p, max, user)
}

/// `/api/group/commit`'s `data`.
pub fn groups(p: &Params<'_>, max: usize) -> Result<Vec<GroupCommit>, ParamError> {
    data(p, max, group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_seeds_examples_pass() {
        let m = map(
            json!({"code": "0513001", "name": "江苏中威科技", "mac": "56:E8:F6:23:EF",
            "tcphost": "61.155.85.77", "tcpport": "10003", "webhost": "61.155.85.77",
            "webport": "10001", "filehost": "61.155.85.77", "fileport": "10004",
            "timeout": "2016-09-21", "contact": "杨燕龙", "ctel": "15151390310", "server": "宋卫南"}),
        );
        let c = customer(&Params(&m)).unwrap();
        assert_eq!((c.tcpport, c.webport, c.fileport), (10003, 10001, 10004));
        assert!(is_uuid(&c.id) && is_uuid("616b6865-7503-4d27-92c7-c6b94e1c8cc2"));
        let s = map(
            json!({"code": "0513001", "name": "江苏中威科技", "mac": "56:E8:F6:23:EF",
            "ip": "192.168.0.7", "timeout": "2016-09-21", "count": "178", "updatetimes": "32"}),
        );
        assert_eq!(server_commit(&Params(&s)).unwrap().count, 178);
        let u = map(
            json!({"data": r#"[{"code":"0513001","uuid":"616b6865-7503-4d27-92c7-c6b94e1c8cc2","nickname":"龚超","onlinetime":345,"andtimes":45,"pctimes":120,"iostimes":180,"fmsgs":24,"tmsgs":32}]"#}),
        );
        assert_eq!(users(&Params(&u), 10).unwrap()[0].tmsgs, 32);
        let g = map(
            json!({"data": r#"[{"code":"0513001","gid":"616b6865-7503-4d27-92c7-c6b94e1c8cc2","name":"中威官方群","createrid":"36","creatername":"施东海","ucount":"178","msgcount":"1878","ctime":"2016-08-09","fcount":"32","ncount":"24"}]"#}),
        );
        assert_eq!(groups(&Params(&g), 10).unwrap()[0].msgcount, 1878);
    }

    #[test]
    fn bad_values_name_their_parameter() {
        let base = json!({"code": "0513001", "name": "x"});
        for (key, bad) in [
            ("code", json!("05 13")),
            ("code", json!("")),
            ("name", json!("a\nb")),
            ("name", json!("x".repeat(101))),
            ("mac", json!("56:E8:F6:23")),
            ("mac", json!("56:E8:F6:23:EF:GG")),
            ("tcpport", json!("0")),
            ("webport", json!("65536")),
            ("fileport", json!("80x")),
            ("tcphost", json!("bad host")),
            ("timeout", json!("2016-02-30")),
            ("timeout", json!("21-09-2016")),
            ("ctel", json!("call me")),
            ("contact", json!([1])),
        ] {
            let mut m = map(base.clone());
            m.insert(key.into(), bad.clone());
            let e = customer(&Params(&m)).unwrap_err().0;
            let named = if bad == json!("") {
                "missing code"
            } else {
                key
            };
            assert!(e.contains(named), "{key}={bad}: {e}");
        }
        let too_many = map(
            json!({"data": serde_json::to_string(&vec![json!({"code":"a","uuid":"u"}); 3]).unwrap()}),
        );
        assert!(
            users(&Params(&too_many), 2)
                .unwrap_err()
                .0
                .contains("at most 2")
        );
        let neg =
            map(json!({"data": r#"[{"code":"a","uuid":"u"},{"code":"a","uuid":"v","fmsgs":-1}]"#}));
        assert!(
            users(&Params(&neg), 9)
                .unwrap_err()
                .0
                .starts_with("data[1].fmsgs")
        );
        let not_json = map(json!({"data": "[{"}));
        assert!(
            groups(&Params(&not_json), 9)
                .unwrap_err()
                .0
                .starts_with("data must be")
        );
        assert!(!is_uuid("616b6865-7503-4d27-92c7") && !is_date("2016-13-01"));
    }
}
