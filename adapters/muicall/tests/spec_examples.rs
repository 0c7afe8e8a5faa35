//! Every example of the muicall spec (`fixtures/muicall/`, copied verbatim) parses into
//! this crate's types and serializes back to the same JSON.
//!
//! "The same" compares numbers the way the spec's examples were produced, as JavaScript
//! numbers (f64): the spec shows `"groupId": 50354528800735230` next to
//! `"groupIdStr": "50354528800735233"`, i.e. the number after a browser rounded it; the
//! bridge sends the exact value, which is the same f64.

use std::path::{Path, PathBuf};

use muicall::{HangupResp, MemberResp, Notify, Reply};
use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/muicall");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Undoes what the spec's page breaks did to an example (see `fixtures/muicall/README.md`):
/// the example was cut in two; the converter closed the first part with its own brackets
/// and left the comma before the cut. The second part's unmatched closers tell how many
/// brackets the first part gained; those are dropped and the parts joined. Then trailing
/// commas before `}`/`]` are removed.
fn repair_page_break(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut depth = 0i32;
    let mut cut = None;
    for (i, line) in lines.iter().enumerate() {
        depth += bracket_balance(line);
        if depth == 0
            && line.trim().ends_with(['}', ']'])
            && lines[i + 1..].iter().any(|l| !l.trim().is_empty())
        {
            cut = Some(i + 1);
            break;
        }
    }
    let joined = match cut {
        None => text.to_string(),
        Some(cut) => {
            let second = lines[cut..].join("\n");
            let mut extra = -bracket_balance(&second);
            let mut first = lines[..cut].join("\n");
            while extra > 0 {
                let at = first.rfind(['}', ']']).expect("a closer to drop");
                first.truncate(at);
                first = first.trim_end().to_string();
                extra -= 1;
            }
            if !first.ends_with(',') {
                first.push(',');
            }
            format!("{first}\n{second}")
        }
    };
    drop_trailing_commas(&joined)
}

/// Opening minus closing brackets outside strings.
fn bracket_balance(s: &str) -> i32 {
    let (mut n, mut in_str, mut esc) = (0, false, false);
    for c in s.chars() {
        match (in_str, esc, c) {
            (true, true, _) => esc = false,
            (true, false, '\\') => esc = true,
            (true, false, '"') => in_str = false,
            (false, _, '"') => in_str = true,
            (false, _, '{' | '[') => n += 1,
            (false, _, '}' | ']') => n -= 1,
            _ => {}
        }
    }
    n
}

fn drop_trailing_commas(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let (mut in_str, mut esc) = (false, false);
    for (i, &c) in chars.iter().enumerate() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
        } else if c == ',' {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}' | ']')) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Equality of JSON values with numbers compared as JavaScript numbers (f64).
fn js_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| js_eq(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| js_eq(v, w))
        }
        _ => a == b,
    }
}

/// Parses into the matching type and serializes back.
fn round_trip(v: &Value) -> Value {
    let text = v.to_string();
    match (v["type"].as_str(), v["cmd"].as_str()) {
        (Some("notify"), _) => serde_json::to_value(serde_json::from_str::<Notify>(&text).unwrap()),
        (Some("audioResp"), Some("tempCallHangup")) => {
            serde_json::to_value(serde_json::from_str::<HangupResp>(&text).unwrap())
        }
        (Some("audioResp"), Some(_)) => {
            serde_json::to_value(serde_json::from_str::<MemberResp>(&text).unwrap())
        }
        _ => serde_json::to_value(serde_json::from_str::<Reply>(&text).unwrap()),
    }
    .unwrap()
}

#[test]
fn every_spec_example_round_trips() {
    let files = fixtures();
    assert_eq!(
        files.len(),
        14,
        "one file per example of the spec: {files:?}"
    );
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                // Only the example the page break mangled is allowed to be invalid as printed.
                assert_eq!(name, "2.7-tempCallHangup.json", "{name} is not JSON: {e}");
                serde_json::from_str(&repair_page_break(&text)).unwrap_or_else(|e| {
                    panic!("{name} after repair: {e}\n{}", repair_page_break(&text))
                })
            }
        };
        let back = round_trip(&value);
        assert!(
            js_eq(&value, &back),
            "{name}:\n spec   {value}\n ours   {back}"
        );
    }
}

#[test]
fn the_mangled_example_is_repaired_to_what_the_table_describes() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/muicall/2.7-tempCallHangup.json"),
    )
    .unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "kept verbatim, as printed"
    );
    let v: Value = serde_json::from_str(&repair_page_break(&text)).unwrap();
    let resp: HangupResp = serde_json::from_value(v).unwrap();
    let ours = HangupResp::new(50351257998589953, 0, "");
    assert_eq!(resp.data.temp_call_id_str, ours.data.temp_call_id_str);
    assert_eq!(resp.data.result, ours.data.result);
    // The printed number is the browser's rounding of the exact id.
    assert_eq!(resp.data.temp_call_id as f64, ours.data.temp_call_id as f64);
}

#[test]
fn the_bridge_constructors_produce_the_spec_examples() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/muicall");
    let load = |n: &str| -> Value {
        let t = std::fs::read_to_string(dir.join(n)).unwrap();
        serde_json::from_str(&t)
            .unwrap_or_else(|_| serde_json::from_str(&repair_page_break(&t)).unwrap())
    };
    use muicall::{CallMember, CallState::Answered, MemberResult, Transaction};
    let call = 50354528800735233;
    let cases: Vec<(&str, Value)> = vec![
        (
            "2.1-initServer.json",
            serde_json::to_value(Reply::new("initServer", 1, "服务器地址初始化成功")).unwrap(),
        ),
        (
            "2.2-login.json",
            serde_json::to_value(Reply::new("login", 1, "登录成功")).unwrap(),
        ),
        (
            "2.3-createGroup.json",
            serde_json::to_value(
                Reply::new("createGroup", 1, "建立会话组成功")
                    .transaction(Some(Transaction::Number(1671006883842)))
                    .session(50351257998589953),
            )
            .unwrap(),
        ),
        (
            "2.3-requestMic.json",
            serde_json::to_value(
                Reply::new("requestMic", 2, "麦克风打开成功")
                    .transaction(Some(Transaction::Number(1671006883842))),
            )
            .unwrap(),
        ),
        (
            "2.4-releaseMic.json",
            serde_json::to_value(Reply::new("releaseMic", 1, "麦克风关闭成功")).unwrap(),
        ),
        (
            "2.5-addGroupMember.json",
            serde_json::to_value(MemberResp::new(
                "addGroupMember",
                call,
                Some("1671008849496".into()),
                vec![MemberResult {
                    id: 169919,
                    name: "ptcs12".into(),
                    code: 0,
                    message: String::new(),
                }],
            ))
            .unwrap(),
        ),
        (
            "2.7-tempCallHangup.json",
            serde_json::to_value(HangupResp::new(50351257998589953, 0, "")).unwrap(),
        ),
        (
            "2.8-logoutResp.json",
            serde_json::to_value(Reply::new("logoutResp", 1, "登录注销成功")).unwrap(),
        ),
        (
            "3.1-memberGetMic.json",
            serde_json::to_value(Notify::member_get_mic(call, 169918, "ptcs11")).unwrap(),
        ),
        (
            "3.2-memberLostMic.json",
            serde_json::to_value(Notify::member_lost_mic(call, 169918)).unwrap(),
        ),
        (
            "3.3-tempCallRing.json",
            serde_json::to_value(Notify::ring(call, 169918)).unwrap(),
        ),
        (
            "3.4-tempCallAnswer.json",
            serde_json::to_value(Notify::answer(call, 169918)).unwrap(),
        ),
        (
            "3.5-tempCallMemberUpdate.json",
            serde_json::to_value(Notify::member_update(
                50357467464335361,
                169905,
                vec![
                    CallMember {
                        member_id: 169905,
                        member_name: "zydd".into(),
                        call_state: Answered,
                    },
                    CallMember {
                        member_id: 169918,
                        member_name: "ptcs11".into(),
                        call_state: Answered,
                    },
                ],
            ))
            .unwrap(),
        ),
        (
            "3.6-tempCallHangup.json",
            serde_json::to_value(Notify::hangup(call, 169918, 0, "")).unwrap(),
        ),
    ];
    for (name, ours) in cases {
        let spec = load(name);
        assert!(js_eq(&spec, &ours), "{name}:\n spec {spec}\n ours {ours}");
    }
}

#[test]
fn repair_handles_only_what_it_documents() {
    assert_eq!(
        drop_trailing_commas(r#"{"a": [1, 2,], "b": ",}",}"#),
        r#"{"a": [1, 2], "b": ",}"}"#
    );
    let split = "{\n \"a\": {\n  \"b\": 1,\n }\n}\n\"c\": 2\n}\n}\n";
    let v: Value = serde_json::from_str(&repair_page_break(split)).unwrap();
    assert_eq!(v, serde_json::json!({"a": {"b": 1, "c": 2}}));
}
