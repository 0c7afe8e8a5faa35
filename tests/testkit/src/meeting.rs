//! A meeting participant peer: `tests/peers/meeting.py` (aiortc, a third-party WebRTC stack, and
//! the websockets client) run with the repository's venv and driven by JSON lines. It logs in to
//! the bridge's RTCPeer API, registers, and then sends what the test tells it; every frame the
//! server sends comes back as a `{"event":"ws","msg":{...}}` event. Killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::audio::{CompareOptions, Comparison, compare_with, load_wav};
use crate::bridge::Bridge;
use crate::events::is_exit;
use crate::pypeer::PyPeer;
use crate::terminal::Terminal;

/// Default wait for a server reply.
pub const REPLY: Duration = Duration::from_secs(15);

/// A running aiortc participant.
pub struct Participant {
    peer: PyPeer,
    /// Its user (from `dockingLogin`).
    pub user: Value,
}

impl Participant {
    /// Logs in to the bridge at `addr` as `account` (app `test`/`test`) and registers.
    pub fn join(addr: SocketAddr, account: &str) -> Participant {
        Self::join_url(&format!("http://{addr}"), None, account)
    }

    /// Like [`join`](Self::join) at a base URL (`https://…` with `ca`, a PEM CA file the peer
    /// checks the server's certificate with, for HTTPS and WSS).
    pub fn join_url(url: &str, ca: Option<&Path>, account: &str) -> Participant {
        let mut args = vec!["--url", url, "--account", account];
        let ca = ca.map(|c| c.display().to_string());
        if let Some(ca) = &ca {
            args.extend(["--ca", ca]);
        }
        let mut p = Participant {
            peer: PyPeer::spawn(format!("meeting peer {account}"), "meeting.py", args),
            user: Value::Null,
        };
        let ready = p.expect(
            |e| e["event"] == "ready" || e["event"] == "error",
            Duration::from_secs(30),
        );
        if ready["event"] != "ready" {
            p.fail(&format!("could not log in: {ready}"));
        }
        p.user = ready["user"].clone();
        // The registration reply was seen by the peer itself; take it off the queue.
        p.expect(
            |e| e["event"] == "ws" && e["msg"]["method"] == "doRegister",
            REPLY,
        );
        p
    }

    /// Its user id.
    pub fn id(&self) -> i64 {
        self.user["id"].as_i64().expect("user id")
    }

    /// Opens a room (`newAppRoom`) and enters it; returns the room id.
    pub fn open_room(&mut self) -> i64 {
        let r = self.request(json!({"module":"room","method":"newAppRoom","name":"ops","numberLimit":10,"roomtype":1,"userId":self.id()}));
        assert_eq!(r["result"], 0, "{r}");
        let room = r["roomId"].as_i64().expect("roomId");
        let r = self.request(
            json!({"module":"meeting","method":"enter","userId":self.id(),"roomId":room,"roomType":1}),
        );
        assert_eq!(r["result"], 0, "{r}");
        room
    }

    /// After an accepted `doInvite` of `callee` into `room`: its ringing and agreement, our
    /// `onConnected`, and the callee in the room, published (a dial-in's channel linked).
    /// Returns the callee's `EnterRoom` push. Each step is waited for at most `timeout`.
    pub fn complete_call(&mut self, callee: i64, room: i64, timeout: Duration) -> Value {
        let from = move |m: &Value| m["ownUserId"] == callee;
        let ringing = self.push("doEvent", from, timeout);
        assert_eq!(ringing["event"], "onRinging");
        let agreed = self.push("doAgree", from, timeout);
        assert_eq!(agreed["roomId"], room);
        let r = self.request(
            json!({"module":"call","method":"doEvent","ownUserId":self.id(),"targetUserId":callee,
            "event":"onConnected","roomId":room,"roomType":1}),
        );
        assert_eq!(r["result"], 0, "{r}");
        let entered = self.push("EnterRoom", |m| m["client"]["id"] == callee, timeout);
        self.push(
            "onPublished",
            |m| m["client"]["id"] == callee && m["published"] == true,
            timeout,
        );
        entered
    }

    /// Plays `client`'s stream (a dial-in's channel) and waits until its connection is up.
    pub fn play_connected(&mut self, client: i64) {
        self.cmd(json!({"cmd":"play","client":client}));
        self.expect(|e| e["event"] == "playing", REPLY);
        self.expect(
            |e| {
                e["event"] == "pc_state"
                    && e["pc"] == format!("play:{client}")
                    && e["state"] == "connected"
            },
            REPLY,
        );
    }

    /// Sends a driver command.
    pub fn cmd(&mut self, cmd: Value) {
        self.peer.cmd(cmd);
    }

    /// Sends a request and waits for the reply with the same module/method (and a `result`).
    pub fn request(&mut self, msg: Value) -> Value {
        let (module, method) = (msg["module"].clone(), msg["method"].clone());
        self.cmd(json!({ "cmd": "send", "msg": msg }));
        self.reply(&module, &method)
    }

    /// Sends a raw text frame and waits for the next error-shaped reply (any `result`).
    pub fn raw(&mut self, text: &str) -> Value {
        self.cmd(json!({ "cmd": "raw", "text": text }));
        self.expect(
            |e| e["event"] == "ws" && e["msg"].get("result").is_some(),
            REPLY,
        )["msg"]
            .clone()
    }

    /// The next reply to `module.method`.
    pub fn reply(&mut self, module: &Value, method: &Value) -> Value {
        self.expect(
            |e| {
                e["event"] == "ws"
                    && e["msg"]["module"] == *module
                    && e["msg"]["method"] == *method
                    && e["msg"].get("result").is_some()
            },
            REPLY,
        )["msg"]
            .clone()
    }

    /// Waits for a push `method` (no `result`) matching `pred`.
    pub fn push(
        &mut self,
        method: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        self.expect(
            |e| {
                e["event"] == "ws"
                    && e["msg"]["method"] == method
                    && e["msg"].get("result").is_none()
                    && pred(&e["msg"])
            },
            timeout,
        )["msg"]
            .clone()
    }

    /// Like [`push`](Self::push) but `None` on timeout.
    pub fn try_push(
        &mut self,
        method: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        self.peer
            .events
            .try_expect(
                |e| {
                    e["event"] == "ws"
                        && e["msg"]["method"] == method
                        && e["msg"].get("result").is_none()
                        && pred(&e["msg"])
                },
                timeout,
            )
            .filter(|e| !is_exit(e))
            .map(|e| e["msg"].clone())
    }

    /// Starts recording what it hears (all remote audio, mixed); returns once the peer has.
    pub fn record_start(&mut self) {
        self.cmd(json!({ "cmd": "record_start" }));
        self.expect(|e| e["event"] == "ack" && e["cmd"] == "record_start", REPLY);
    }

    /// Stops recording, writes the WAV and returns the peer's `recorded` report (rate, duration,
    /// RTP timestamp oddities).
    pub fn record_stop(&mut self, wav: &Path) -> Value {
        self.cmd(json!({ "cmd": "record_stop", "wav": wav }));
        self.expect(|e| e["event"] == "recorded", REPLY)
    }

    /// Speaks a WAV into its published stream in real time, without waiting.
    pub fn speak(&mut self, wav: &Path) {
        self.cmd(json!({ "cmd": "speak", "wav": wav }));
    }

    /// Speaks a WAV and waits until it has been sent (plus `timeout` for the peer to finish).
    pub fn speak_and_wait(&mut self, wav: &Path, timeout: Duration) -> Value {
        self.speak(wav);
        self.expect(|e| e["event"] == "speak_done", timeout)
    }

    /// Waits for an event matching `pred`; panics with its output on timeout.
    pub fn expect(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.peer.expect(pred, timeout)
    }

    /// Every event seen so far, in the order it came (taken by `expect` or not).
    pub fn history(&mut self) -> &[Value] {
        self.peer.events.history()
    }

    /// Kills the process with SIGKILL, without any goodbye (no WebSocket close frame, no DTLS
    /// alert; the kernel resets its sockets).
    pub fn kill(&mut self) {
        self.peer.kill();
    }

    /// Stops the process with SIGSTOP: it stays alive, its sockets stay open (the kernel still
    /// acknowledges TCP) but nothing answers — a client that vanished without closing anything.
    pub fn freeze(&mut self) {
        let ok = Command::new("kill")
            .args(["-STOP", &self.peer.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot SIGSTOP the meeting peer");
    }

    /// Panics with the recent events and stderr.
    pub fn fail(&mut self, what: &str) -> ! {
        self.peer.fail(what)
    }
}

/// How far (ms) each 100 ms window of a recording made through the bridge may sit from the
/// recording's overall alignment. The bridge re-times audio through a jitter buffer wherever it
/// cannot forward packets as they are (meeting → PTT; PTT → meeting when mixed, buffered or
/// transcoded to G.711): when the sender's packets come late (its machine was busy), the buffer
/// conceals without moving on, so nothing is lost and the rest of the burst plays a frame or a
/// few later — a slightly longer pause, not a gap in a word. Each window is compared where it
/// landed, within this much; the bars (correlation, duration) are unchanged.
pub const JITTER_SEARCH_MS: u32 = 100;

/// The spec's call flow to a dial-in (4.1–4.7: a room, `enter`, `doInvite`, ringing, `doAgree`,
/// `onConnected`) up to the channel's `EnterRoom` and `onPublished`; returns the room. Each step
/// is waited for at most `timeout` and asserted.
pub fn dial_in(p: &mut Participant, dial: i64, timeout: Duration) -> i64 {
    let room = p.open_room();
    let r = p.request(json!({"module":"call","method":"doInvite","ownUserId":p.id(),"targetUserId":dial,"type":1,"roomId":room}));
    assert_eq!(r["result"], 0, "{r}");
    assert_eq!(r["roomId"], room);
    let entered = p.complete_call(dial, room, timeout);
    assert_eq!(entered["client"]["mode"], "ptt");
    room
}

/// `recording` against its source `wav`, each window where it landed within
/// [`JITTER_SEARCH_MS`].
pub fn compare_through_bridge(wav: &Path, recording: &Path) -> Comparison {
    let opt = CompareOptions {
        window_search_ms: JITTER_SEARCH_MS,
        ..CompareOptions::default()
    };
    compare_with(&load_wav(wav), &load_wav(recording), &opt)
}

/// Meeting → PTT: `speaker` speaks `wav` while `listener`, a PTT terminal in the linked channel,
/// records what arrives into `recording`; returns (and prints, labelled `route`) how the
/// recording compares with `wav`. Panics unless the utterance reached PTT as one talk burst
/// from the bridge: one run of voice sequence numbers, never re-anchored on arrival time (the
/// floor was held through the speaker's pauses; nothing was dropped on the way).
pub fn speak_into_ptt(
    speaker: &mut Participant,
    listener: &mut Terminal,
    wav: &Path,
    recording: &Path,
    route: &str,
) -> Comparison {
    listener.record_start();
    speaker.speak_and_wait(wav, Duration::from_secs(30));
    // The tail of the burst is still in the jitter buffers and on its way through the server.
    std::thread::sleep(Duration::from_millis(1000));
    let summary = listener.record_stop(recording);
    let cmp = compare_through_bridge(wav, recording);
    println!("{route}: {cmp}; {summary}");
    keep_for_diagnosis(route, recording);
    let speakers = summary["speakers"].as_array().cloned().unwrap_or_default();
    let bridge: Vec<&Value> = speakers
        .iter()
        .filter(|s| s["chunks"].as_u64() > Some(0))
        .collect();
    assert_eq!(
        bridge.len(),
        1,
        "{route}: one PTT talker (the bridge) expected: {summary}"
    );
    assert!(
        bridge[0]["reanchors"] == 0 && bridge[0]["seq_jumps"] == 0,
        "{route}: the utterance did not reach PTT as one burst: {summary}"
    );
    cmp
}

/// With `KEEP_TEST_FILES` set, copies a recording and its arrival timeline (`.chunks.json`)
/// to `$TMPDIR/pttbridge-kept/` and says where.
pub fn keep_for_diagnosis(route: &str, recording: &Path) {
    if std::env::var_os("KEEP_TEST_FILES").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join("pttbridge-kept");
    let _ = std::fs::create_dir_all(&dir);
    let stem = format!(
        "{}-{}",
        std::process::id(),
        route.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let chunks = format!("{}.chunks.json", recording.display());
    for (from, ext) in [
        (recording.display().to_string(), "wav"),
        (chunks, "chunks.json"),
    ] {
        let _ = std::fs::copy(&from, dir.join(format!("{stem}.{ext}")));
    }
    println!("{route}: kept in {}", dir.join(&stem).display());
}

/// PTT → meeting check: `speaker` (a PTT terminal) plays `wav` in its channel while `listener`
/// records into `recording`; prints the comparison under `route` and returns it with the
/// participant's recording summary.
pub fn hear_from_ptt(
    listener: &mut Participant,
    speaker: &mut Terminal,
    wav: &Path,
    recording: &Path,
    route: &str,
) -> (Comparison, Value) {
    listener.record_start();
    speaker.play_and_wait(wav, Duration::from_secs(30));
    // The burst's tail is still in the bridge's and the participant's jitter buffers.
    std::thread::sleep(Duration::from_millis(800));
    let summary = listener.record_stop(recording);
    let cmp = compare_through_bridge(wav, recording);
    println!("{route}: {cmp}; {summary}");
    (cmp, summary)
}

/// Every RTP packet `bridge`'s rooms wrote to their listeners went out through the room's own
/// SRTP (issue 20's fast path), none through str0m: the listeners' keys were captured from their
/// DTLS handshakes. Audio the listener heard proves it decrypted them.
pub fn assert_own_srtp_only(bridge: &Bridge) {
    let path = |p: &str| bridge.metric("pttbridge_meeting_rtp_out_path_total", &[("path", p)]);
    assert!(
        path("own_srtp") > 100.0,
        "own SRTP path: {}",
        path("own_srtp")
    );
    assert_eq!(path("str0m"), 0.0, "packets fell back to str0m");
}
