//! The console and meeting sides on the platform surfaces, with real peers: a test console
//! (`testkit::console`) and pymumble terminals on Debian's murmurd, an aiortc meeting participant.
//! Presence in `GET /v1/online/user/state`, `POST /v1/online/trans-cmd`, `/v1/kickout` and
//! `/v1/online/invite` carried out on each side, call records of console temporary calls and of
//! meeting dial-ins in `GET /v1/consuming/records`, and every event on `/events` with
//! contiguous versions.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use muicall::audio::Codec;
use serde_json::{Value, json};
use testkit::audio::load_wav;
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::console::Console;
use testkit::events::EventQueue;
use testkit::http::Response;
use testkit::meeting::Participant;
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

#[path = "support/egw_client.rs"]
mod egw_client;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const SECRET: &str = "default-secret";
const BASE_URL: &str = "http://ptt.test:8080";
const NORTH: i64 = 9001;

fn business_toml() -> String {
    format!("[[business.apps]]\napp_id = \"default\"\napp_secret = \"{SECRET}\"\n")
}

/// `{code, message, ...}` of a call with the app's secret.
fn api(bridge: &Bridge, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let r: Response =
        bridge.request_with(method, path, body.as_deref(), &[("X-App-Secret", SECRET)]);
    let v = r.json();
    assert!(v["code"].is_i64(), "{method} {path}: not the envelope: {v}");
    (r.status, v)
}

fn ok(r: (u16, Value)) -> Value {
    assert_eq!((r.0, &r.1["code"]), (200, &json!(0)), "{}", r.1);
    r.1
}

fn user_state(bridge: &Bridge, user: &str) -> Value {
    let r = ok(api(
        bridge,
        "GET",
        &format!("/v1/online/user/state?app_id=default&msg_id=7&user_id={user}"),
        None,
    ));
    r["user_list"][0].clone()
}

fn trans_cmd(bridge: &Bridge, users: &[&str], mess: Value) -> Vec<Value> {
    let list: Vec<Value> = users
        .iter()
        .map(|u| json!({"user_id": u, "mutex_type": "", "client_guid": ""}))
        .collect();
    let r = ok(api(
        bridge,
        "POST",
        "/v1/online/trans-cmd",
        Some(json!({"app_id": "default", "msg_id": 11, "trans_mess": mess, "user_list": list})),
    ));
    r["user_list"].as_array().unwrap().clone()
}

/// `/v1/online/invite`: the users it could not invite, or the error envelope.
fn invite(bridge: &Bridge, group: &str, users: &[&str]) -> (u16, Value) {
    api(
        bridge,
        "POST",
        "/v1/online/invite",
        Some(json!({"app_id": "default", "group_id": group, "user_id_list": users, "seq_id": 5})),
    )
}

fn kickout(bridge: &Bridge, user: &str) -> (u16, Value) {
    api(
        bridge,
        "POST",
        "/v1/kickout",
        Some(json!({"app_id": "default", "user_id": user})),
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The call record of `group`, waiting for it to be written.
fn record_of(bridge: &Bridge, group: &str, since_ms: u64) -> Value {
    let path = format!(
        "/v1/consuming/records?app_id=default&start_time={}&end_time={}&page=1&page_size=100",
        since_ms - 1000,
        now_ms() + 600_000
    );
    let t0 = Instant::now();
    loop {
        let r = ok(api(bridge, "GET", &path, None));
        if let Some(rec) = r["record_list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group_id"] == group)
        {
            return rec.clone();
        }
        assert!(t0.elapsed() < T, "no call record of {group}: {r}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wav_seconds(name: &str) -> f64 {
    load_wav(fixture(&format!("audio/{name}"))).len() as f64 / 48_000.0
}

fn wait_event(events: &mut EventQueue, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
    events
        .try_expect(pred, T)
        .unwrap_or_else(|| panic!("no {what} event; saw {}", events.tail(30)))
}

/// Every event of app `default` seen on `/events` so far has the previous one's version + 1.
fn assert_contiguous(events: &mut EventQueue, sides: &[&str]) {
    let hist: Vec<Value> = events
        .history()
        .iter()
        .filter(|e| e["app_id"] == "default")
        .cloned()
        .collect();
    let versions: Vec<u64> = hist
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert!(versions.len() > 10, "too few events: {versions:?}");
    for w in versions.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap in versions: {versions:?}");
    }
    for side in sides {
        assert!(
            hist.iter().any(|e| e["party"]["side"] == *side),
            "no {side} events among {} events",
            hist.len()
        );
    }
}

/// An EGW subscriber (app login, app `default`) on its own runtime, from a full sync on: the
/// frames it receives are collected for the end of the test.
struct EgwTap {
    base: u64,
    frames: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    _rt: tokio::runtime::Runtime,
}

impl EgwTap {
    fn start(bridge: &Bridge) -> EgwTap {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let addr = bridge.addr();
        let (tx, frames) = mpsc::channel();
        let base = rt.block_on(async move {
            let mut c = egw_client::Client::connect(addr).await;
            c.login("default", SECRET).await;
            c.subscribe(Some(&["default"])).await;
            let sync = c.full_sync(&["default"]).await;
            tokio::spawn(async move {
                while let Some(f) = c.next(Duration::from_secs(600)).await {
                    if tx.send(f).is_err() {
                        break;
                    }
                }
            });
            sync[0]["version"].as_u64().expect("sync version")
        });
        EgwTap {
            base,
            frames,
            seen: Vec::new(),
            _rt: rt,
        }
    }

    /// Waits for a frame matching `pred`.
    fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(f) = self.seen.iter().find(|f| pred(f)) {
            return f.clone();
        }
        let deadline = Instant::now() + T;
        while let Ok(f) = self
            .frames
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(f.clone());
            if pred(&f) {
                return f;
            }
        }
        panic!("EGW: no {what}; saw {:#?}", self.seen);
    }

    /// Every push so far continues the full sync's version without a gap.
    fn assert_contiguous(&mut self) {
        self.seen.extend(self.frames.try_iter());
        let versions: Vec<u64> = self
            .seen
            .iter()
            .filter(|f| f["app_id"] == "default")
            .filter_map(|f| f["version"].as_u64())
            .collect();
        assert!(versions.len() > 10, "EGW pushes: {versions:?}");
        assert_eq!(versions[0], self.base + 1, "EGW continues the full sync");
        for w in versions.windows(2) {
            assert_eq!(w[1], w[0] + 1, "EGW gap: {versions:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Console

fn console_murmur() -> Murmur {
    Murmur::builder()
        .channels(&["North", "South"])
        .user("zydd", "pw-zydd")
        .user("t1", "pw-t1")
        .user("t2", "pw-t2")
        .start()
}

fn console_bridge(server: &Murmur) -> Bridge {
    let config = format!(
        "{}\n{}\n[console]\n[[console.servers]]\nbase_url = \"{BASE_URL}\"\nptt_server = \"local\"\n\
         admin_username = \"SuperUser\"\nadmin_password = \"{}\"\n",
        business_toml(),
        ptt_server_toml("local", server, &[("bridge", "")]),
        server.superuser_password()
    );
    let bridge = Bridge::start(BIN, &config);
    bridge.wait_health(
        "console admin connected",
        |h| h["sides"]["console"]["servers"][0]["admin_connected"] == true,
        T,
    );
    bridge
}

fn terminal(server: &Murmur, name: &str, channel: &str) -> Terminal {
    Terminal::builder(server.port(), name)
        .password(&format!("pw-{name}"))
        .channel(channel)
        .connect()
}

#[test]
fn a_console_is_online_takes_platform_commands_and_its_calls_are_recorded() {
    let server = console_murmur();
    let bridge = console_bridge(&server);
    let mut events = bridge.events();
    let mut t1 = terminal(&server, "t1", "North");
    let mut t2 = terminal(&server, "t2", "South");
    let (id1, id2) = (server.user_id("t1"), server.user_id("t2"));
    let (ptt1, ptt2) = (format!("ptt:{id1}"), format!("ptt:{id2}"));
    let id2s = id2.to_string();
    assert_eq!(user_state(&bridge, "console:zydd")["state"], 0);
    let mut egw = EgwTap::start(&bridge);

    // ---- login: the console is online on the platforms ----
    let mut c = Console::connect(bridge.addr());
    c.login(BASE_URL, "zydd", "pw-zydd");
    let online = wait_event(
        &mut events,
        |e| e["type"] == "side.connected" && e["party"]["id"] == "zydd",
        "console side.connected",
    );
    assert_eq!(online["party"]["side"], "console");
    let state = user_state(&bridge, "console:zydd");
    assert_eq!(
        (&state["state"], &state["mutex_type"]),
        (&json!(1), &json!("console")),
        "{state}"
    );
    assert_eq!(state["terminal_seq_num"], online["detail"]["terminal"]);
    let all = ok(api(
        &bridge,
        "GET",
        "/v1/online/user/state?app_id=default&msg_id=1",
        None,
    ));
    assert!(
        all["user_list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user_id"] == "console:zydd" && u["state"] == 1),
        "listed among the app's online users: {all}"
    );

    // ---- trans-cmd: a transCmd notification with the platform's object ----
    let mess = json!({"text": "report to gate 3", "priority": 2});
    let results = trans_cmd(&bridge, &["console:zydd", "console:nobody"], mess.clone());
    assert_eq!(
        (results[0]["result"].clone(), results[1]["result"].clone()),
        (json!(0), json!(2)),
        "{results:?}"
    );
    assert_eq!(results[0]["terminal_seq_num"], state["terminal_seq_num"]);
    let n = c.expect_notify("transCmd", |_| true, T);
    assert_eq!(n["data"], mess, "{n}");

    // ---- a temporary call; the platform invites a second terminal into it ----
    let t_call = now_ms();
    let sid = c.call(&[id1], T);
    let group = format!("console:{sid}");
    let channel = format!("call-{sid}");
    t1.wait_in_channel(&channel, T);
    let r = ok(invite(&bridge, &group, &[&ptt2]));
    assert_eq!(r["user_id_list"], json!([]), "{r}");
    c.expect_notify("tempCallRing", |n| n["data"]["fromId"] == id2, T);
    t2.wait_in_channel(&channel, T);
    wait_event(
        &mut events,
        |e| {
            e["type"] == "party.joined"
                && e["group_id"] == group
                && e["party"]["id"] == id2s.as_str()
        },
        "invited terminal joined the console call",
    );
    // Not applicable or unknown: listed as failed, or a 400 for an unknown group.
    let r = ok(invite(&bridge, &group, &["console:zydd", "ptt:s77"]));
    assert_eq!(r["user_id_list"], json!(["console:zydd", "ptt:s77"]), "{r}");
    let (status, v) = invite(&bridge, "console:12345", &[&ptt1]);
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("group"), "{v}");

    // ---- audio both ways, then the console hangs up ----
    let frames = c
        .play(&fixture("audio/speech.wav"), Codec::Opus)
        .join()
        .unwrap();
    c.send(json!({"type": "releaseMic"}));
    assert_eq!(c.expect_type("releaseMic", T)["code"], 1);
    t1.play_and_wait(&fixture("audio/speech2.wav"), Duration::from_secs(30));
    c.expect_notify("memberLostMic", |n| n["data"]["memberId"] == id1, T);
    c.send(json!({"type": "tempCallHangup", "sessionId": sid}));
    let hung = c.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "tempCallHangup",
        T,
    );
    assert_eq!(hung["data"]["result"]["code"], 0, "{hung}");
    t1.wait_in_channel("North", T);
    t2.wait_in_channel("South", T);

    let rec = record_of(&bridge, &group, t_call);
    println!("console call record: {rec}");
    assert_eq!(rec["sides"], json!(["console", "ptt"]));
    assert_eq!(rec["client_id"], "console:zydd");
    assert_eq!(rec["end_reason"], "the console hung up");
    let talked = wav_seconds("speech.wav") + wav_seconds("speech2.wav");
    let ms = rec["duration_ms"].as_f64().unwrap();
    assert!(
        ms >= talked * 1000.0 && ms < talked * 1000.0 + 20_000.0,
        "duration {ms} ms for {talked:.2} s of talk"
    );
    let packets = rec["audio_packets"].as_u64().unwrap();
    let terminal_packets = wav_seconds("speech2.wav") * 50.0;
    assert!(
        packets as f64 >= frames as f64 + 0.8 * terminal_packets
            && (packets as f64) <= frames as f64 + 1.3 * terminal_packets,
        "{packets} packets: {frames} console frames + ~{terminal_packets:.0} from t1"
    );
    let bytes = rec["audio_bytes"].as_u64().unwrap();
    assert!(
        bytes > packets * 20 && bytes < packets * 400,
        "{bytes} Opus bytes in {packets} packets"
    );
    let signals = rec["total_sig_num"].as_u64().unwrap();
    // requestMic, createGroup, requestMic (2), member updates, ring/answer for both,
    // releaseMic and its reply, memberGetMic/LostMic, tempCallHangup and its reply.
    assert!((14..=60).contains(&signals), "signalling count {signals}");

    // ---- kickout mid-call: the call ends (code 4), the session ends with the reason ----
    let sid = c.call(&[id1], T);
    t1.wait_in_channel(&format!("call-{sid}"), T);
    ok(kickout(&bridge, "console:zydd"));
    let hangup = c.expect_notify("tempCallHangup", |_| true, T);
    assert_eq!(hangup["data"]["hangupReason"]["code"], 4, "{hangup}");
    let gone = c.expect_notify("serverState", |n| n["data"]["state"] == "loggedOut", T);
    assert!(
        gone["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("kicked out"),
        "{gone}"
    );
    t1.wait_in_channel("North", T);
    wait_event(
        &mut events,
        |e| e["type"] == "side.disconnected" && e["party"]["id"] == "zydd",
        "console side.disconnected",
    );
    let rec = record_of(&bridge, &format!("console:{sid}"), t_call);
    assert_eq!(
        rec["end_reason"], "kicked out by the business gateway",
        "{rec}"
    );
    assert_eq!(user_state(&bridge, "console:zydd")["state"], 0);
    let (status, v) = kickout(&bridge, "console:zydd");
    assert_eq!(status, 404, "{v}");
    assert_eq!(trans_cmd(&bridge, &["console:zydd"], mess)[0]["result"], 2);
    assert!(
        c.closed().is_none(),
        "the socket stays open after a kickout"
    );

    // The console can log in again on the same socket.
    c.send(json!({"type": "connect", "data": {"account": "zydd", "password": "pw-zydd"}}));
    assert_eq!(c.expect_type("login", T)["code"], 1);
    wait_event(
        &mut events,
        |e| e["type"] == "side.connected" && e["party"]["id"] == "zydd",
        "console online again",
    );
    assert_eq!(user_state(&bridge, "console:zydd")["state"], 1);

    // ---- every event of the app on one stream, versions contiguous ----
    c.close();
    wait_event(
        &mut events,
        |e| e["type"] == "side.disconnected" && e["party"]["id"] == "zydd",
        "console gone",
    );
    assert_contiguous(&mut events, &["console", "ptt"]);
    egw.wait("console online", |f| {
        f["id"] == 20110 && f["type"] == "side.connected" && f["user_id"] == "console:zydd"
    });
    egw.wait("console joins its call", |f| {
        f["id"] == 20100 && f["user_id"] == "console:zydd" && f["group_id"] == group
    });
    egw.wait("console talks", |f| {
        f["id"] == 20102 && f["user_id"] == "console:zydd" && f["media_type"] == 2
    });
    egw.wait("invited terminal joins", |f| {
        f["id"] == 20100 && f["user_id"] == ptt2.as_str() && f["group_id"] == group
    });
    egw.wait("console offline", |f| {
        f["id"] == 20110 && f["type"] == "side.disconnected" && f["user_id"] == "console:zydd"
    });
    egw.assert_contiguous();
    for kind in [
        "party.joined",
        "party.left",
        "talk.started",
        "talk.stopped",
        "call.ended",
    ] {
        assert!(
            events
                .history()
                .iter()
                .any(|e| e["type"] == kind && e["group_id"] == group),
            "no {kind} in the console call"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Meeting

fn meeting_bridge(server: &Murmur) -> Bridge {
    let config = format!(
        "{}\n{}\n[meeting]\nring_delay_ms = 100\nanswer_delay_ms = 300\nno_answer_timeout_s = 5\n\
         [[meeting.apps]]\napp_id = \"test\"\nsecret = \"test\"\n\
         [[meeting.dial_in]]\nuser_id = {NORTH}\nserver = \"local\"\naccount = \"bridge\"\nname = \"North\"\n",
        business_toml(),
        ptt_server_toml("local", server, &[("bridge", "North")]),
    );
    let bridge = Bridge::start(BIN, &config);
    bridge.wait_health(
        "connected in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    bridge
}

fn new_room(p: &mut Participant) -> i64 {
    let r = p.request(json!({"module":"room","method":"newAppRoom","name":"ops","numberLimit":10,"roomtype":1,"userId":p.id()}));
    assert_eq!(r["result"], 0, "{r}");
    r["roomId"].as_i64().expect("roomId")
}

fn enter(p: &mut Participant, room: i64) {
    let r = p.request(
        json!({"module":"meeting","method":"enter","userId":p.id(),"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
}

/// Dials North from `p` in a new room, up to the link; returns the room.
fn dial_north(p: &mut Participant) -> i64 {
    let room = new_room(p);
    enter(p, room);
    let r = p.request(json!({"module":"call","method":"doInvite","ownUserId":p.id(),"targetUserId":NORTH,"type":1,"roomId":room}));
    assert_eq!(r["result"], 0, "{r}");
    p.push("doAgree", |m| m["ownUserId"] == NORTH, T);
    let r = p.request(
        json!({"module":"call","method":"doEvent","ownUserId":p.id(),"targetUserId":NORTH,
        "event":"onConnected","roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    p.push(
        "onPublished",
        |m| m["client"]["id"] == NORTH && m["published"] == true,
        T,
    );
    room
}

#[test]
fn meeting_users_are_online_take_platform_commands_and_dial_ins_are_recorded() {
    let server = Murmur::start(&["North"]);
    let bridge = meeting_bridge(&server);
    let mut events = bridge.events();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut egw = EgwTap::start(&bridge);
    let mut carol = Participant::join(bridge.addr(), "carol");
    let carol_id = format!("meeting:{}", carol.id());

    // ---- registered: online on the platforms, in a room or not ----
    let online = wait_event(
        &mut events,
        |e| e["type"] == "side.connected" && e["party"]["side"] == "meeting",
        "meeting side.connected",
    );
    assert_eq!(online["party"]["id"], carol.id().to_string());
    let state = user_state(&bridge, &carol_id);
    assert_eq!(
        (&state["state"], &state["mutex_type"]),
        (&json!(1), &json!("meeting")),
        "{state}"
    );

    // ---- trans-cmd: a doEvent push from the platform (user 0) carrying the object ----
    let mess = json!({"text": "the drill starts at 10", "n": 1});
    let results = trans_cmd(&bridge, &[&carol_id, "meeting:424242"], mess.clone());
    assert_eq!(
        (results[0]["result"].clone(), results[1]["result"].clone()),
        (json!(0), json!(2)),
        "{results:?}"
    );
    let ev = carol.push("doEvent", |m| m["event"] == "onTransCmd", T);
    assert_eq!(
        (ev["ownUserId"].clone(), ev["data"].clone()),
        (json!(0), mess),
        "{ev}"
    );
    let custom = json!({"event": "onDrill", "level": 3});
    assert_eq!(
        trans_cmd(&bridge, &[&carol_id], custom.clone())[0]["result"],
        0
    );
    let ev = carol.push("doEvent", |m| m["event"] == "onDrill", T);
    assert_eq!(ev["data"], custom);

    // ---- a dial-in with audio both ways becomes a call record ----
    let t_call = now_ms();
    let room = dial_north(&mut carol);
    let group = format!("meeting:{room}");
    assert_eq!(user_state(&bridge, &carol_id)["state"], 1);
    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(|e| e["event"] == "published", T);
    carol.expect(
        |e| e["event"] == "pc_state" && e["pc"] == "publish" && e["state"] == "connected",
        T,
    );
    alice.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
    carol.push("memberTalking", |m| m["talking"] == false, T);
    carol.speak_and_wait(&fixture("audio/speech2.wav"), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000));
    let r = carol.request(
        json!({"module":"call","method":"cancel","ownUserId":carol.id(),"targetUserId":NORTH}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let rec = record_of(&bridge, &group, t_call);
    println!("dial-in call record: {rec}");
    assert_eq!(rec["sides"], json!(["meeting", "ptt"]));
    assert_eq!(rec["client_id"], carol_id.as_str());
    assert_eq!(rec["end_reason"], "hangup");
    let talked = wav_seconds("speech.wav") + wav_seconds("speech2.wav");
    let ms = rec["duration_ms"].as_f64().unwrap();
    assert!(
        ms >= talked * 1000.0 && ms < talked * 1000.0 + 20_000.0,
        "duration {ms} ms for {talked:.2} s of talk"
    );
    let packets = rec["audio_packets"].as_f64().unwrap();
    let (ptt_in, meeting_out) = (
        wav_seconds("speech.wav") * 50.0,
        wav_seconds("speech2.wav") * 50.0,
    );
    assert!(
        packets >= 0.8 * ptt_in + 0.5 * meeting_out
            && packets <= 1.3 * (ptt_in + meeting_out) + 50.0,
        "{packets} packets: ~{ptt_in:.0} from alice, ~{meeting_out:.0} from carol"
    );
    // doInvite, onRinging, doAgree, onConnected, cancel.
    let signals = rec["total_sig_num"].as_u64().unwrap();
    assert!((5..=12).contains(&signals), "signalling count {signals}");

    // ---- invite: the platform dials North into the room (no caller) ----
    let t_link = now_ms();
    let r = ok(invite(&bridge, &group, &[&format!("meeting:{NORTH}")]));
    assert_eq!(r["user_id_list"], json!([]), "{r}");
    carol.push("EnterRoom", |m| m["client"]["id"] == NORTH, T);
    let up = wait_event(
        &mut events,
        |e| e["type"] == "link.up" && e["group_id"] == group && e["detail"]["caller"] == 0,
        "link.up of the platform's dial",
    );
    assert_eq!(up["detail"]["dial_in"], NORTH);
    let r = ok(invite(&bridge, &group, &[&format!("meeting:{NORTH}")]));
    assert_eq!(
        r["user_id_list"],
        json!([format!("meeting:{NORTH}")]),
        "already linked: {r}"
    );
    alice.play_and_wait(&fixture("audio/speech2.wav"), Duration::from_secs(30));
    let hang = bridge.request("POST", &format!("/meeting/links/{NORTH}/hangup"), None);
    assert_eq!(hang.status, 200, "{}", hang.body);
    let path = format!(
        "/v1/consuming/records?app_id=default&start_time={t_link}&end_time={}&page=1&page_size=100",
        now_ms() + 60_000
    );
    let t0 = Instant::now();
    let rec = loop {
        let r = ok(api(&bridge, "GET", &path, None));
        if let Some(rec) = r["record_list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group_id"] == group)
        {
            break rec.clone();
        }
        assert!(t0.elapsed() < T, "no record of the platform's dial-in: {r}");
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("platform dial-in record: {rec}");
    assert_eq!(
        (
            rec["client_id"].clone(),
            rec["end_reason"].clone(),
            rec["total_sig_num"].clone()
        ),
        (json!(""), json!("hangup"), json!(1)),
        "no caller; the platform's invite is its one signal"
    );
    let packets = rec["audio_packets"].as_f64().unwrap();
    let alice2 = wav_seconds("speech2.wav") * 50.0;
    assert!(
        packets >= 0.8 * alice2 && packets <= 1.3 * alice2 + 20.0,
        "{packets} packets for ~{alice2:.0} from alice"
    );

    // ---- invite: a meeting user is called into the room by the platform ----
    let mut dave = Participant::join(bridge.addr(), "dave");
    let dave_uid = dave.id();
    let dave_s = dave_uid.to_string();
    let dave_id = format!("meeting:{dave_uid}");
    let r = ok(invite(&bridge, &group, &[&dave_id]));
    assert_eq!(r["user_id_list"], json!([]), "{r}");
    let inv = dave.push("doInvite", |m| m["roomId"] == room, T);
    assert_eq!(inv["ownUserId"], 0, "{inv}");
    let r = dave.request(json!({"module":"call","method":"doAgree","ownUserId":dave_uid,"targetUserId":0,"roomId":room}));
    assert_eq!(r["result"], 0, "{r}");
    wait_event(
        &mut events,
        |e| {
            e["type"] == "call.answered"
                && e["group_id"] == group
                && e["party"]["id"] == dave_s.as_str()
        },
        "dave answered the platform",
    );
    enter(&mut dave, room);
    wait_event(
        &mut events,
        |e| {
            e["type"] == "party.joined"
                && e["group_id"] == group
                && e["party"]["id"] == dave_s.as_str()
        },
        "dave in the room",
    );
    // Unknown room, wrong side: a 400, a failed user.
    let (status, v) = invite(&bridge, "meeting:99999", &[&dave_id]);
    assert_eq!(status, 400, "{v}");
    let r = ok(invite(&bridge, &group, &["ptt:s1", "meeting:424242"]));
    assert_eq!(
        r["user_id_list"],
        json!(["ptt:s1", "meeting:424242"]),
        "{r}"
    );

    // ---- kickout: dave is told why, leaves the room (tiren), his socket closes ----
    ok(kickout(&bridge, &dave_id));
    let bye = dave.push("doEvent", |m| m["event"] == "onKickout", T);
    assert!(
        bye["reason"].as_str().unwrap().contains("kicked out"),
        "{bye}"
    );
    dave.push("tiren", |m| m["userId"] == dave_uid, T);
    dave.expect(|e| e["event"] == "ws_closed", T);
    carol.push("tiren", |m| m["userId"] == dave.id(), T);
    carol.push("ExitRoom", |m| m["client"]["id"] == dave.id(), T);
    wait_event(
        &mut events,
        |e| e["type"] == "side.disconnected" && e["party"]["id"] == dave_s.as_str(),
        "dave offline",
    );
    assert_eq!(user_state(&bridge, &dave_id)["state"], 0);
    let (status, v) = kickout(&bridge, &dave_id);
    assert_eq!(status, 404, "{v}");

    // ---- every event of the app on one stream, versions contiguous ----
    assert_contiguous(&mut events, &["meeting", "ptt"]);
    egw.wait("carol online", |f| {
        f["id"] == 20110 && f["type"] == "side.connected" && f["user_id"] == carol_id.as_str()
    });
    egw.wait("carol in the room", |f| {
        f["id"] == 20100 && f["user_id"] == carol_id.as_str() && f["group_id"] == group
    });
    egw.wait("carol speaks", |f| {
        f["id"] == 20102 && f["user_id"] == carol_id.as_str() && f["group_id"] == group
    });
    egw.wait("dial-in link up", |f| {
        f["id"] == 20110 && f["type"] == "link.up"
    });
    egw.wait("dave offline", |f| {
        f["id"] == 20110 && f["type"] == "side.disconnected" && f["user_id"] == dave_id.as_str()
    });
    egw.assert_contiguous();
    drop(carol);
    wait_event(
        &mut events,
        |e| e["type"] == "side.disconnected" && e["party"]["side"] == "meeting",
        "carol offline",
    );
    assert_eq!(user_state(&bridge, &carol_id)["state"], 0);
}
