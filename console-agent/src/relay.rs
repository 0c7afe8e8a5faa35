//! The agent's protocol core, without IO: what the console page and the bridge say to each other
//! through the agent, and what that means for the PC's microphone and speaker.
//!
//! The page speaks the muicall spec's JSON and nothing else; the relay passes it on unchanged
//! both ways and reads, on the way, what the audio depends on:
//!
//! ```text
//!   page ── requestMic ──▶ bridge ── requestMic code 2 ──▶ page   ⇒ microphone on
//!   page ── releaseMic / tempCallHangup / loginOut ──▶            ⇒ microphone off at once
//!   bridge ── notify memberGetMic (a terminal took the floor) ──▶ ⇒ microphone off
//!   bridge ── notify tempCallHangup / logoutResp ──▶              ⇒ microphone off, speaker cleared
//! ```
//!
//! The bridge going away is told to the page in the spec's own words: the call in progress
//! ends with a `tempCallHangup` notification (code 2, "connection lost"); requests made
//! meanwhile are answered `code: 0` in their reply shape. When the bridge is back the relay
//! sends the page's `initServer` and `connect` again, so the page is logged in as before
//! without doing anything (the replies to that replay are not shown to it unless they fail).
//! `initServer`/`connect` sent while the bridge is away wait for it and get its real replies.

use std::collections::VecDeque;

use muicall::{HangupResp, MemberResp, Notify, Reply, Request, parse_request, response_type};
use serde_json::Value;

/// What the IO around the relay must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this text to the bridge.
    ToBridge(String),
    /// Send this text to the console page.
    ToConsole(String),
    /// Start (`true`) or stop sending the microphone to the bridge.
    Mic(bool),
    /// Drop what the speaker still has to play (the call ended).
    SpeakerReset,
}

/// A request the relay keeps to log the page in again after the bridge restarts.
#[derive(Debug, Clone)]
struct Kept {
    /// As the page sent it. `connect` holds the password: kept in memory only, never logged.
    text: String,
    /// The page has had its reply (so a replay's success is not shown again).
    answered: bool,
}

/// The relay of one console page.
#[derive(Debug)]
pub struct Relay {
    max_message_bytes: usize,
    bridge_up: bool,
    init_server: Option<Kept>,
    connect: Option<Kept>,
    call: Option<u64>,
    mic: bool,
    /// Replies of a replay that the page must not see when they succeed, oldest first.
    hidden: VecDeque<&'static str>,
}

/// How the page is told that a request could not reach the bridge.
const BRIDGE_AWAY: &str = "the bridge is not reachable; the agent is reconnecting";

impl Relay {
    /// A relay for a page that has just connected (the bridge not reached yet).
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            bridge_up: false,
            init_server: None,
            connect: None,
            call: None,
            mic: false,
            hidden: VecDeque::new(),
        }
    }

    /// Whether the microphone goes to the bridge.
    pub fn mic(&self) -> bool {
        self.mic
    }

    /// The call in progress, if any.
    pub fn call(&self) -> Option<u64> {
        self.call
    }

    /// A text message from the page.
    pub fn console_text(&mut self, text: &str, out: &mut Vec<Action>) {
        if text.len() > self.max_message_bytes {
            let msg = format!(
                "message too large ({} bytes; the limit is {})",
                text.len(),
                self.max_message_bytes
            );
            return out.push(to_console(&Reply::new("error", 0, msg)));
        }
        let req = match parse_request(text) {
            Ok(r) => r,
            // The bridge answers malformed requests in the spec's shapes, and counts them.
            Err(_) if self.bridge_up => return out.push(Action::ToBridge(text.to_owned())),
            Err(e) => {
                let kind = e.request_type.as_deref().map_or("error", response_type);
                let mut reply = Reply::new(kind, 0, e.message).transaction(e.echo.transaction);
                if let Some(s) = e.echo.session_id {
                    reply = reply.session(s);
                }
                return out.push(to_console(&reply));
            }
        };
        match &req {
            Request::InitServer { .. } => {
                self.init_server = Some(Kept {
                    text: text.to_owned(),
                    answered: self.bridge_up,
                });
                // A new server choice: the old login does not carry over.
                self.connect = None;
                if !self.bridge_up {
                    return;
                }
            }
            Request::Connect { .. } => {
                self.connect = Some(Kept {
                    text: text.to_owned(),
                    answered: self.bridge_up,
                });
                if !self.bridge_up {
                    return;
                }
            }
            Request::ReleaseMic { .. } | Request::TempCallHangup { .. } => self.set_mic(false, out),
            Request::LoginOut => {
                self.set_mic(false, out);
                self.connect = None;
            }
            _ => {}
        }
        if self.bridge_up {
            out.push(Action::ToBridge(text.to_owned()));
        } else {
            out.push(refusal(&req, BRIDGE_AWAY));
        }
    }

    /// A text message from the bridge.
    pub fn bridge_text(&mut self, text: &str, out: &mut Vec<Action>) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return out.push(Action::ToConsole(text.to_owned()));
        };
        let ty = v["type"].as_str().unwrap_or_default();
        let code = v["code"].as_i64();
        if let Some(pos) = self.hidden.iter().position(|t| *t == ty) {
            self.hidden.remove(pos);
            if code == Some(1) {
                return;
            }
        }
        match (ty, v["cmd"].as_str()) {
            ("initServer", _) => mark_answered(&mut self.init_server),
            ("login", _) => mark_answered(&mut self.connect),
            ("createGroup", _) if code == Some(1) => {
                self.call = id_of(&v["sessionId"]);
            }
            ("requestMic", _) if code == Some(2) => {
                if let Some(id) = id_of(&v["sessionId"]) {
                    self.call = Some(id);
                }
                self.set_mic(true, out);
            }
            ("releaseMic", _) => self.set_mic(false, out),
            ("logoutResp", _) => {
                self.call = None;
                self.set_mic(false, out);
                out.push(Action::SpeakerReset);
            }
            ("notify", Some("memberGetMic")) => self.set_mic(false, out),
            ("notify", Some("tempCallHangup")) => {
                self.call = None;
                self.set_mic(false, out);
                out.push(Action::SpeakerReset);
            }
            _ => {}
        }
        out.push(Action::ToConsole(text.to_owned()));
    }

    /// The bridge connection is up: the page's server choice and login are sent again.
    pub fn bridge_up(&mut self, out: &mut Vec<Action>) {
        self.bridge_up = true;
        self.hidden.clear();
        for (kept, reply) in [(&self.init_server, "initServer"), (&self.connect, "login")] {
            if let Some(k) = kept {
                out.push(Action::ToBridge(k.text.clone()));
                if k.answered {
                    self.hidden.push_back(reply);
                }
            }
        }
        if self.connect.as_ref().is_some_and(|k| k.answered) {
            out.push(to_console(&Notify::server_state("connected", None)));
        }
    }

    /// The bridge connection is lost: the call in progress ends for the page.
    pub fn bridge_down(&mut self, reason: &str, out: &mut Vec<Action>) {
        let was_up = std::mem::replace(&mut self.bridge_up, false);
        self.hidden.clear();
        self.set_mic(false, out);
        out.push(Action::SpeakerReset);
        if let Some(call) = self.call.take() {
            out.push(to_console(&Notify::hangup(
                call,
                0,
                2,
                format!("the bridge connection was lost: {reason}"),
            )));
        }
        if was_up && self.connect.as_ref().is_some_and(|k| k.answered) {
            out.push(to_console(&Notify::server_state(
                "reconnecting",
                Some(format!("the bridge connection was lost: {reason}")),
            )));
        }
    }

    fn set_mic(&mut self, on: bool, out: &mut Vec<Action>) {
        if self.mic != on {
            self.mic = on;
            out.push(Action::Mic(on));
        }
    }
}

fn mark_answered(kept: &mut Option<Kept>) {
    if let Some(k) = kept {
        k.answered = true;
    }
}

fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn to_console(msg: &impl serde::Serialize) -> Action {
    Action::ToConsole(serde_json::to_string(msg).unwrap_or_default())
}

/// `req` cannot be carried out: its own reply shape, `code: 0` (or -1 for a hang-up).
fn refusal(req: &Request, why: &str) -> Action {
    let echo = req.echo();
    let call = echo.session_id.unwrap_or(0);
    let message = format!("{}: {why}", req.type_name());
    match req {
        Request::AddGroupMember { .. } | Request::KickGroupMember { .. } => {
            let transaction = echo
                .transaction
                .as_ref()
                .map_or_else(|| call.to_string(), |t| t.as_text());
            to_console(&MemberResp::failed(
                req.type_name(),
                call,
                Some(transaction),
                message,
            ))
        }
        Request::TempCallHangup { session_id } => {
            to_console(&HangupResp::new(*session_id, -1, message))
        }
        _ => {
            // A requestMic that would start a call is answered by createGroup, as the bridge does.
            let kind = match req {
                Request::RequestMic {
                    session_id: None,
                    to_ids: Some(_),
                    ..
                } => "createGroup",
                _ => response_type(req.type_name()),
            };
            let mut reply = Reply::new(kind, 0, message).transaction(echo.transaction);
            if let Some(s) = echo.session_id {
                reply = reply.session(s);
            }
            to_console(&reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn console(r: &mut Relay, v: Value) -> Vec<Action> {
        let mut out = Vec::new();
        r.console_text(&v.to_string(), &mut out);
        out
    }

    fn bridge(r: &mut Relay, v: Value) -> Vec<Action> {
        let mut out = Vec::new();
        r.bridge_text(&v.to_string(), &mut out);
        out
    }

    fn to_console_json(a: &[Action]) -> Vec<Value> {
        a.iter()
            .filter_map(|a| match a {
                Action::ToConsole(t) => Some(serde_json::from_str(t).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn up(r: &mut Relay) -> Vec<Action> {
        let mut out = Vec::new();
        r.bridge_up(&mut out);
        out
    }

    fn logged_in() -> Relay {
        let mut r = Relay::new(65536);
        up(&mut r);
        console(
            &mut r,
            json!({"type":"initServer","data":{"baseUrl":"http://ptt:8080"}}),
        );
        bridge(&mut r, json!({"type":"initServer","code":1,"message":"ok"}));
        console(
            &mut r,
            json!({"type":"connect","data":{"account":"zydd","password":"pw"}}),
        );
        bridge(&mut r, json!({"type":"login","code":1,"message":"ok"}));
        r
    }

    #[test]
    fn the_mic_follows_the_floor() {
        let mut r = logged_in();
        let out = console(
            &mut r,
            json!({"type":"requestMic","toIds":[7],"transaction":1}),
        );
        assert!(matches!(&out[..], [Action::ToBridge(_)]), "{out:?}");
        assert!(!r.mic());
        bridge(
            &mut r,
            json!({"type":"createGroup","code":1,"sessionId":"42","transaction":1}),
        );
        let out = bridge(
            &mut r,
            json!({"type":"requestMic","code":2,"transaction":1}),
        );
        assert_eq!(out[0], Action::Mic(true));
        assert_eq!(r.call(), Some(42));
        // A terminal pre-empts: the mic stops; the page asks again and gets it back.
        let out = bridge(
            &mut r,
            json!({"type":"notify","cmd":"memberGetMic","data":{"memberId":7}}),
        );
        assert_eq!(out[0], Action::Mic(false));
        bridge(
            &mut r,
            json!({"type":"requestMic","code":2,"sessionId":"42"}),
        );
        assert!(r.mic());
        // releaseMic stops it before the bridge answers.
        let out = console(&mut r, json!({"type":"releaseMic"}));
        assert_eq!(out[0], Action::Mic(false));
        assert!(matches!(out[1], Action::ToBridge(_)));
    }

    #[test]
    fn a_lost_bridge_ends_the_call_in_the_specs_words_and_the_login_comes_back() {
        let mut r = logged_in();
        bridge(
            &mut r,
            json!({"type":"createGroup","code":1,"sessionId":"42"}),
        );
        bridge(&mut r, json!({"type":"requestMic","code":2}));
        let mut out = Vec::new();
        r.bridge_down("connection reset", &mut out);
        assert!(out.contains(&Action::Mic(false)));
        let told = to_console_json(&out);
        assert_eq!(told[0]["cmd"], "tempCallHangup");
        assert_eq!(told[0]["data"]["tempCallIdStr"], "42");
        assert_eq!(told[0]["data"]["hangupReason"]["code"], 2);
        // Meanwhile requests are refused in their own shapes.
        let out = console(
            &mut r,
            json!({"type":"requestMic","toIds":[7],"transaction":5}),
        );
        let v = &to_console_json(&out)[0];
        assert_eq!(
            (v["type"].as_str(), v["code"].as_i64()),
            (Some("createGroup"), Some(0))
        );
        assert_eq!(v["transaction"], 5);
        let out = console(&mut r, json!({"type":"tempCallHangup","sessionId":"42"}));
        assert_eq!(to_console_json(&out)[0]["data"]["result"]["code"], -1);
        // Back: initServer and connect go again; their successes are not shown.
        let out = up(&mut r);
        let sent: Vec<&Action> = out
            .iter()
            .filter(|a| matches!(a, Action::ToBridge(_)))
            .collect();
        assert_eq!(sent.len(), 2, "{out:?}");
        assert!(bridge(&mut r, json!({"type":"initServer","code":1})).is_empty());
        assert!(bridge(&mut r, json!({"type":"login","code":1})).is_empty());
        // A failed re-login is shown.
        let mut out = Vec::new();
        r.bridge_down("again", &mut out);
        up(&mut r);
        bridge(&mut r, json!({"type":"initServer","code":1}));
        let out = bridge(
            &mut r,
            json!({"type":"login","code":0,"message":"rejected"}),
        );
        assert_eq!(to_console_json(&out)[0]["code"], 0);
    }

    #[test]
    fn a_login_made_while_the_bridge_is_away_waits_for_it_and_gets_its_replies() {
        let mut r = Relay::new(65536);
        assert!(
            console(
                &mut r,
                json!({"type":"initServer","data":{"baseUrl":"http://ptt:8080"}})
            )
            .is_empty()
        );
        assert!(
            console(
                &mut r,
                json!({"type":"connect","data":{"account":"a","password":"b"}})
            )
            .is_empty()
        );
        let out = up(&mut r);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            bridge(&mut r, json!({"type":"initServer","code":1})).len(),
            1
        );
        assert_eq!(bridge(&mut r, json!({"type":"login","code":1})).len(), 1);
    }

    #[test]
    fn bad_input_is_answered_in_the_specs_shape() {
        let mut r = Relay::new(1024);
        let out = console(&mut r, json!({"type":"x","pad":"y".repeat(2000)}));
        let v = &to_console_json(&out)[0];
        assert_eq!(
            (v["type"].as_str(), v["code"].as_i64()),
            (Some("error"), Some(0))
        );
        assert!(v["message"].as_str().unwrap().contains("too large"));
        let mut out = Vec::new();
        r.console_text("{not json", &mut out);
        assert_eq!(to_console_json(&out)[0]["code"], 0);
        let out = console(&mut r, json!({"type":"dial"}));
        assert_eq!(to_console_json(&out)[0]["type"], "dial");
        // With the bridge up, malformed requests go to it (it answers and counts them).
        up(&mut r);
        let out = console(&mut r, json!({"type":"dial"}));
        assert!(matches!(&out[..], [Action::ToBridge(_)]));
    }
}
