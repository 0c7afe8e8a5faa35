//! The console side against real peers: Debian's murmurd as the PTT server, pymumble
//! terminals, and a test console (`testkit::console`) written against `docs/console.md`.

use std::time::{Duration, Instant};

use muicall::audio::Codec;
use serde_json::{Value, json};
use testkit::audio::{compare, compare_files, load_wav};
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::console::{Console, REPLY, shape};
use testkit::events::EventQueue;
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const BASE_URL: &str = "http://ptt.test:8080";

/// murmurd with North/South, the console accounts and terminals registered (ids 1..).
fn murmur() -> Murmur {
    Murmur::builder()
        .channels(&["North", "South"])
        .user("zydd", "pw-zydd")
        .user("low", "pw-low")
        .user("t1", "pw-t1")
        .user("t2", "pw-t2")
        .user("t3", "pw-t3")
        .user("plain", "pw-plain")
        .start()
}

/// The bridge with one console server mapped to `server`, its admin account being `admin`.
fn bridge_with(server: &Murmur, admin: (&str, &str), console: &str) -> Bridge {
    let config = format!(
        "{}\n[console]\n{console}\n[[console.servers]]\nbase_url = \"{BASE_URL}\"\nptt_server = \"local\"\n\
         admin_username = \"{}\"\nadmin_password = \"{}\"\n",
        ptt_server_toml("local", server, &[("bridge", "")]),
        admin.0,
        admin.1
    );
    let bridge = Bridge::start(BIN, &config);
    bridge.wait_health(
        "console admin connected",
        |h| h["sides"]["console"]["servers"][0]["admin_connected"] == true,
        T,
    );
    bridge
}

fn bridge(server: &Murmur) -> Bridge {
    bridge_with(
        server,
        ("SuperUser", server.superuser_password()),
        "account_mic_levels = { low = 1 }",
    )
}

fn terminal(server: &Murmur, name: &str, channel: &str) -> Terminal {
    Terminal::builder(server.port(), name)
        .password(&format!("pw-{name}"))
        .channel(channel)
        .connect()
}

fn spec(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("muicall/{name}"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The reply has every field of the spec example, with the same JSON types.
fn assert_shape(reply: &Value, example: &str, extra: &[&str]) {
    let want = shape(&spec(example));
    let got: Vec<String> = shape(reply)
        .into_iter()
        .filter(|k| !extra.iter().any(|e| k.starts_with(e)))
        .collect();
    assert_eq!(got, want, "{example}: bridge sent {reply}");
}

fn is_notify(cmd: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "notify" && v["cmd"] == cmd
}

fn position(history: &[Value], pred: impl Fn(&Value) -> bool) -> usize {
    history
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("not found in {history:#?}"))
}

fn settle() {
    std::thread::sleep(Duration::from_millis(800));
}

fn wait_event(events: &mut EventQueue, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
    events
        .try_expect(pred, T)
        .unwrap_or_else(|| panic!("no {what} event; saw {}", events.tail(30)))
}

#[test]
fn console_calls_two_terminals_talks_hears_and_hangs_up() {
    let server = murmur();
    let bridge = bridge(&server);
    let mut events = bridge.events();
    let mut t1 = terminal(&server, "t1", "North");
    let mut t2 = terminal(&server, "t2", "South");
    let (id1, id2) = (server.user_id("t1"), server.user_id("t2"));
    let zydd = server.user_id("zydd");

    let mut c = Console::connect(bridge.addr());
    c.send(json!({"type": "initServer", "data": {"baseUrl": BASE_URL}}));
    assert_shape(
        &c.expect_type("initServer", REPLY),
        "2.1-initServer.json",
        &[],
    );
    c.send(json!({"type": "connect", "data": {"account": "zydd", "password": "pw-zydd"}}));
    let login = c.expect_type("login", REPLY);
    assert_eq!(login["code"], 1, "{login}");
    assert_shape(&login, "2.2-login.json", &[]);

    // toIds as the spec has them (numbers) and as strings ("all parameters are strings").
    c.send(json!({"type": "requestMic", "toIds": [id1, id2.to_string()], "transaction": 1671006883842u64}));
    let created = c.expect_type("createGroup", T);
    assert_eq!(created["code"], 1, "{created}");
    assert_shape(&created, "2.3-createGroup.json", &[]);
    assert_eq!(created["transaction"], 1671006883842u64);
    let sid = created["sessionId"].as_str().unwrap().to_string();
    let granted = c.expect_type("requestMic", T);
    assert_eq!(granted["code"], 2, "{granted}");
    assert_shape(&granted, "2.3-requestMic.json", &["sessionId"]);
    assert_eq!(granted["sessionId"], sid.as_str());

    // Ring → answer per terminal, before the mic opens; member updates end with everyone at 4.
    let h = c.history();
    let created_at = position(&h, |v| v["type"] == "createGroup");
    let granted_at = position(&h, |v| v["type"] == "requestMic");
    for id in [id1, id2] {
        let ring = position(&h, |v| {
            is_notify("tempCallRing")(v) && v["data"]["fromId"] == id
        });
        let answer = position(&h, |v| {
            is_notify("tempCallAnswer")(v) && v["data"]["fromId"] == id
        });
        assert!(
            created_at < ring && ring < answer && answer < granted_at,
            "order for {id}: {h:#?}"
        );
        assert_shape(&h[ring], "3.3-tempCallRing.json", &[]);
        assert_shape(&h[answer], "3.4-tempCallAnswer.json", &[]);
        assert_eq!(h[ring]["data"]["tempCallIdStr"], sid.as_str());
    }
    let updates: Vec<&Value> = h
        .iter()
        .filter(|v| is_notify("tempCallMemberUpdate")(v))
        .collect();
    assert_shape(updates[0], "3.5-tempCallMemberUpdate.json", &[]);
    let states = |u: &Value| -> Vec<(u64, u64)> {
        u["data"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["memberId"].as_u64().unwrap(),
                    m["callState"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (z, i1, i2) = (u64::from(zydd), u64::from(id1), u64::from(id2));
    assert_eq!(
        states(updates[0]),
        vec![(z, 4), (i1, 2), (i2, 2)],
        "first update: calling"
    );
    assert_eq!(
        states(updates.last().unwrap()),
        vec![(z, 4), (i1, 4), (i2, 4)],
        "last update: answered"
    );
    assert_eq!(updates[0]["data"]["fromId"], zydd);

    // Both terminals are in the call channel now.
    let call_channel = format!("call-{sid}");
    t1.wait_in_channel(&call_channel, T);
    t2.wait_in_channel(&call_channel, T);

    // The console talks (PCM16 48 kHz); both terminals hear it.
    let dir = tempfile::tempdir().unwrap();
    let speech = fixture("audio/speech.wav");
    t1.record_start();
    t2.record_start();
    let sent = c.play(&speech, Codec::Pcm16(48_000)).join().unwrap();
    assert!(sent > 150);
    settle();
    for (t, name) in [(&mut t1, "t1"), (&mut t2, "t2")] {
        let out = dir.path().join(format!("{name}.wav"));
        let rec = t.record_stop(&out);
        let speaker = rec["speakers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "zydd")
            .unwrap_or_else(|| panic!("{name} did not hear the console: {rec}"))
            .clone();
        println!("{name} heard {speaker}");
        let cmp = compare_files(&speech, speaker["wav"].as_str().unwrap());
        println!("console → {name}: {cmp}");
        cmp.assert_matches(0.9, 0.05);
    }
    c.send(json!({"type": "releaseMic"}));
    let released = c.expect_type("releaseMic", REPLY);
    assert_eq!(released["code"], 1, "{released}");
    assert_shape(&released, "2.4-releaseMic.json", &[]);

    // A terminal answers; the console hears it (Opus pass-through) between get/lost mic.
    c.record_start();
    let speech2 = fixture("audio/speech2.wav");
    t1.play_and_wait(&speech2, Duration::from_secs(30));
    let got = c.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id1, T);
    assert_shape(&got, "3.1-memberGetMic.json", &[]);
    assert_eq!(got["data"]["memberName"], "t1");
    let lost = c.expect_notify("memberLostMic", |v| v["data"]["memberId"] == id1, T);
    assert_shape(&lost, "3.2-memberLostMic.json", &[]);
    let heard = dir.path().join("console.wav");
    let stats = c.record_stop(&heard);
    assert_eq!(stats["sources"], json!([id1]), "{stats}");
    let cmp = compare(&load_wav(&speech2), &load_wav(&heard));
    println!("t1 → console: {cmp}");
    cmp.assert_matches(0.9, 0.05);

    // Hang up: terminals back where they were.
    c.send(json!({"type": "tempCallHangup", "sessionId": sid}));
    let hung = c.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "tempCallHangup",
        REPLY,
    );
    assert_eq!(hung["data"]["result"]["code"], 0, "{hung}");
    assert_eq!(hung["data"]["tempCallIdStr"], sid.as_str());
    t1.wait_in_channel("North", T);
    t2.wait_in_channel("South", T);

    // Hub events for the whole call, in the call's group.
    let group = format!("console:{sid}");
    let in_call = |kind: &'static str| {
        let group = group.clone();
        move |e: &Value| e["type"] == kind && e["group_id"] == group
    };
    wait_event(&mut events, in_call("call.ringing"), "call.ringing");
    wait_event(&mut events, in_call("call.answered"), "call.answered");
    let talk = wait_event(&mut events, in_call("talk.started"), "talk.started");
    assert_eq!(talk["party"]["side"], "console");
    wait_event(
        &mut events,
        |e| in_call("talk.started")(e) && e["party"]["name"] == "t1",
        "terminal talk",
    );
    wait_event(&mut events, in_call("talk.stopped"), "talk.stopped");
    wait_event(&mut events, in_call("party.left"), "party.left");
    wait_event(&mut events, in_call("call.ended"), "call.ended");

    c.send(json!({"type": "loginOut"}));
    let out = c.expect_type("logoutResp", REPLY);
    assert_eq!(out["code"], 1);
    assert_shape(&out, "2.8-logoutResp.json", &[]);

    assert!(bridge.metric("pttbridge_console_calls_total", &[]) >= 1.0);
    assert!(
        bridge.metric(
            "pttbridge_console_audio_frames_total",
            &[("direction", "in")]
        ) >= 150.0
    );
    assert!(
        bridge.metric(
            "pttbridge_console_audio_frames_total",
            &[("direction", "out")]
        ) >= 100.0
    );
    assert!(
        bridge.metric(
            "pttbridge_console_talk_bursts_total",
            &[("talker", "terminal")]
        ) >= 1.0
    );
    // The console's requestMic was answered with a call whose first audio reached PTT.
    assert_eq!(
        bridge.metric("pttbridge_console_mic_to_audio_seconds_count", &[]),
        1.0
    );
    let _ = Instant::now();
}

fn member_state(update: &Value, id: u32) -> Option<u64> {
    update["data"]["members"]
        .as_array()?
        .iter()
        .find(|m| m["memberId"] == id)
        .and_then(|m| m["callState"].as_u64())
}

#[test]
fn add_and_kick_mid_call_busy_and_offline_and_everyone_goes_home() {
    let server = murmur();
    let bridge = bridge(&server);
    let mut t1 = terminal(&server, "t1", "North");
    let mut t2 = terminal(&server, "t2", "South");
    let mut t3 = terminal(&server, "t3", "North");
    let (id1, id2, id3) = (
        server.user_id("t1"),
        server.user_id("t2"),
        server.user_id("t3"),
    );
    let offline = server.user_id("plain");

    let mut c = Console::connect(bridge.addr());
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = c.call(&[id1], T);
    let channel = format!("call-{sid}");
    t1.wait_in_channel(&channel, T);

    // Another console's call holds t3.
    let mut other = Console::connect(bridge.addr());
    other.login(BASE_URL, "low", "pw-low");
    let other_sid = other.call(&[id3], T);
    assert_ne!(other_sid, sid);
    t3.wait_in_channel(&format!("call-{other_sid}"), T);

    c.send(json!({"type": "addGroupMember", "sessionId": sid, "transaction": "1671008849496",
                  "data": {"groupId": sid, "members": [{"id": id2}, {"id": offline}, {"id": id3}, {"id": 999_999}]}}));
    let added = c.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "addGroupMember",
        REPLY,
    );
    assert_shape(&added, "2.5-addGroupMember.json", &[]);
    assert_eq!(added["transaction"], "1671008849496");
    assert_eq!(added["data"]["groupIdStr"], sid.as_str());
    let results = added["data"]["results"].as_array().unwrap();
    let code = |id: u32| {
        results
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["code"].clone())
            .unwrap()
    };
    assert_eq!(
        (code(id2), code(offline), code(id3), code(999_999)),
        (json!(0), json!(1), json!(2), json!(1)),
        "{added}"
    );
    assert_eq!(results[0]["name"], "t2");
    c.expect_notify("tempCallAnswer", |v| v["data"]["fromId"] == id2, T);
    t2.wait_in_channel(&channel, T);
    let update = c.expect_notify(
        "tempCallMemberUpdate",
        |v| member_state(v, id2) == Some(4),
        T,
    );
    assert_eq!(
        member_state(&update, id3),
        Some(1),
        "t3 is busy in the other call: {update}"
    );
    assert_eq!(member_state(&update, offline), Some(0), "offline: {update}");

    // Kick t1: it goes back to North; t2 stays.
    c.send(json!({"type": "kickGroupMember", "sessionId": sid, "data": {"groupId": sid, "ids": [id1, 424242]}}));
    let kicked = c.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "kickGroupMember",
        REPLY,
    );
    let results = kicked["data"]["results"].as_array().unwrap();
    // The spec's kick request has no transaction, yet its reply requires one: the call id.
    assert_eq!(kicked["transaction"], sid.as_str(), "{kicked}");
    assert_eq!(results[0]["code"], 0, "{kicked}");
    assert_eq!(results[1]["code"], 1, "not in the call: {kicked}");
    assert_shape(
        &json!({"type": kicked["type"], "cmd": kicked["cmd"], "transaction": "x", "data": kicked["data"]}),
        "2.5-addGroupMember.json",
        &[],
    );
    c.expect_notify(
        "tempCallMemberUpdate",
        |v| member_state(v, id1) == Some(0),
        T,
    );
    t1.wait_in_channel("North", T);
    assert_eq!(t2.current_channel(), channel);

    // Hang up: t2 goes home; the other console's call is untouched.
    c.send(json!({"type": "tempCallHangup", "sessionId": sid}));
    let hung = c.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "tempCallHangup",
        REPLY,
    );
    assert_eq!(hung["data"]["result"]["code"], 0);
    t2.wait_in_channel("South", T);
    assert_eq!(t3.current_channel(), format!("call-{other_sid}"));
    assert!(
        c.try_expect(is_notify("tempCallHangup"), Duration::from_millis(300))
            .is_none(),
        "a console is not notified of its own hang-up"
    );

    // The freed terminal can be called by the other console now; its own call ends cleanly.
    other.send(json!({"type": "addGroupMember", "sessionId": other_sid, "data": {"members": [{"id": id1}]}}));
    let added = other.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "addGroupMember",
        REPLY,
    );
    assert_eq!(added["data"]["results"][0]["code"], 0, "{added}");
    t1.wait_in_channel(&format!("call-{other_sid}"), T);
    other.send(json!({"type": "tempCallHangup", "sessionId": other_sid}));
    other.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "tempCallHangup",
        REPLY,
    );
    t1.wait_in_channel("North", T);
    t3.wait_in_channel("North", T);
}

#[test]
fn terminal_leaving_by_itself_ends_a_one_terminal_call() {
    let server = murmur();
    let bridge = bridge(&server);
    let mut t1 = terminal(&server, "t1", "North");
    let id1 = server.user_id("t1");
    let mut c = Console::connect(bridge.addr());
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = c.call(&[id1], T);
    t1.wait_in_channel(&format!("call-{sid}"), T);
    t1.move_to("South");
    let hangup = c.expect_notify("tempCallHangup", |_| true, T);
    assert_shape(&hangup, "3.6-tempCallHangup.json", &[]);
    assert_eq!(hangup["data"]["fromId"], id1);
    assert_eq!(hangup["data"]["hangupReason"]["code"], 0);
    assert_eq!(hangup["data"]["tempCallIdStr"], sid.as_str());
    assert_eq!(
        t1.current_channel(),
        "South",
        "a terminal that left is not dragged back"
    );
}

#[test]
fn floor_preemption_by_the_dispatcher_and_denial_for_a_lower_level() {
    let server = murmur();
    let bridge = bridge(&server);
    let mut events = bridge.events();
    let mut t1 = terminal(&server, "t1", "North");
    let mut t2 = terminal(&server, "t2", "South");
    let mut t3 = terminal(&server, "t3", "North");
    let (id1, id2, id3) = (
        server.user_id("t1"),
        server.user_id("t2"),
        server.user_id("t3"),
    );

    let mut c = Console::connect(bridge.addr());
    c.login(BASE_URL, "zydd", "pw-zydd");
    // Receive PCM16 at 16 kHz in this test (the other tests use Opus).
    c.send(json!({"type": "audioFormat", "data": {"codec": "pcm16", "rate": 16000}}));
    assert_eq!(c.expect_type("audioFormat", REPLY)["code"], 1);
    let sid = c.call(&[id1, id2], T);
    t1.wait_in_channel(&format!("call-{sid}"), T);
    t2.wait_in_channel(&format!("call-{sid}"), T);
    c.send(json!({"type": "releaseMic", "sessionId": sid}));
    assert_eq!(c.expect_type("releaseMic", REPLY)["code"], 1);

    // t1 talks; t2 hears it; the console pre-empts after ~1.2 s.
    let dir = tempfile::tempdir().unwrap();
    t2.record_start();
    c.record_start();
    let rec_start = Instant::now();
    t1.play(&fixture("audio/speech.wav"));
    c.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id1, T);
    std::thread::sleep(Duration::from_millis(1200));
    let preempt_at = rec_start.elapsed().as_secs_f64();
    c.send(json!({"type": "requestMic", "sessionId": sid, "transaction": 7}));
    let granted = c.expect_type("requestMic", REPLY);
    assert_eq!(
        granted["code"], 2,
        "the dispatcher pre-empts a terminal: {granted}"
    );
    c.expect_notify("memberLostMic", |v| v["data"]["memberId"] == id1, T);
    let (pcm_frames, _) = c.frames_received();
    assert!(
        pcm_frames >= 30,
        "the console heard t1 before: {pcm_frames} frames"
    );
    let played = c.play(&fixture("audio/speech2.wav"), Codec::Opus);
    t1.expect_event("play_done", Duration::from_secs(30));
    played.join().unwrap();
    settle();
    let out = dir.path().join("t2.wav");
    let rec = t2.record_stop(&out);
    let speakers = rec["speakers"].as_array().unwrap();
    let t1_track = speakers
        .iter()
        .find(|s| s["name"] == "t1")
        .expect("t2 heard t1 before");
    let cut = t1_track["last_s"].as_f64().unwrap();
    println!("pre-emption at {preempt_at:.2} s; t1 last heard by t2 at {cut:.2} s");
    assert!(
        cut < preempt_at + 0.6,
        "t1's voice stopped reaching t2 at the pre-emption ({preempt_at:.2} s), last heard at {cut:.2} s of a 3.85 s burst: {rec}"
    );
    let zydd = speakers
        .iter()
        .find(|s| s["name"] == "zydd")
        .expect("t2 heard the console");
    let cmp = compare_files(fixture("audio/speech2.wav"), zydd["wav"].as_str().unwrap());
    println!("console (after pre-emption) → t2: {cmp}");
    cmp.assert_matches(0.9, 0.05);
    let heard = dir.path().join("console.wav");
    let stats = c.record_stop(&heard);
    assert_eq!(stats["codecs"], json!([2]), "PCM16 16 kHz frames: {stats}");

    // After releaseMic the terminals are unmuted: t1 is heard again.
    c.send(json!({"type": "releaseMic"}));
    assert_eq!(c.expect_type("releaseMic", REPLY)["code"], 1);
    std::thread::sleep(Duration::from_millis(300));
    t1.play(&fixture("audio/speech2.wav"));
    let again = c.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id1, T);
    assert_eq!(again["data"]["groupIdStr"], sid.as_str());

    // A console whose mic level is not above a terminal's is denied while the terminal talks.
    let mut low = Console::connect(bridge.addr());
    low.login(BASE_URL, "low", "pw-low");
    let low_sid = low.call(&[id3], T);
    t3.wait_in_channel(&format!("call-{low_sid}"), T);
    low.send(json!({"type": "releaseMic"}));
    assert_eq!(low.expect_type("releaseMic", REPLY)["code"], 1);
    t3.play(&fixture("audio/speech.wav"));
    low.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id3, T);
    low.send(json!({"type": "requestMic", "sessionId": low_sid}));
    let denied = low.expect_type("requestMic", REPLY);
    assert_eq!(denied["code"], 0, "{denied}");
    assert!(
        denied["message"].as_str().unwrap().contains("t3"),
        "{denied}"
    );
    wait_event(
        &mut events,
        |e| e["type"] == "floor.denied" && e["party"]["name"] == "low",
        "floor.denied",
    );
    // ... and granted once the terminal is done.
    low.expect_notify("memberLostMic", |v| v["data"]["memberId"] == id3, T);
    low.send(json!({"type": "requestMic", "sessionId": low_sid}));
    assert_eq!(low.expect_type("requestMic", REPLY)["code"], 2);
    assert!(bridge.metric("pttbridge_console_floor_total", &[("outcome", "preempted")]) >= 1.0);
    assert!(bridge.metric("pttbridge_console_floor_total", &[("outcome", "denied")]) >= 1.0);
    let _ = id2;
}

#[test]
fn murmurd_dies_mid_call_the_console_is_told_and_logs_in_again() {
    let mut server = murmur();
    let bridge = bridge(&server);
    let t1 = terminal(&server, "t1", "North");
    let id1 = server.user_id("t1");
    let mut c = Console::connect(bridge.addr());
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = c.call(&[id1], T);

    server.kill();
    let hangup = c.expect_notify("tempCallHangup", |_| true, T);
    assert_shape(&hangup, "3.6-tempCallHangup.json", &[]);
    assert_eq!(hangup["data"]["tempCallIdStr"], sid.as_str());
    assert_eq!(hangup["data"]["hangupReason"]["code"], 2, "{hangup}");
    let why = hangup["data"]["hangupReason"]["message"].as_str().unwrap();
    assert!(why.contains("PTT server connection lost"), "{why}");
    let state = c.expect_notify("serverState", |_| true, T);
    assert_eq!(state["data"]["state"], "reconnecting");
    c.send(json!({"type": "requestMic", "sessionId": sid}));
    let refused = c.expect_type("requestMic", REPLY);
    assert_eq!(refused["code"], 0, "{refused}");
    drop(t1);

    server.restart();
    c.send(json!({"type": "connect", "data": {"account": "zydd", "password": "pw-zydd"}}));
    let login = c.expect_type("login", T);
    assert_eq!(login["code"], 1, "{login}");
    let mut t1 = terminal(&server, "t1", "North");
    let sid2 = c.call(&[id1], T);
    assert_ne!(sid2, sid);
    t1.wait_in_channel(&format!("call-{sid2}"), T);
    assert!(bridge.metric("pttbridge_console_calls_total", &[]) >= 2.0);
}

#[test]
fn bad_input_gets_clear_errors_while_another_console_keeps_talking() {
    let server = murmur();
    let bridge = bridge(&server);
    let mut t1 = terminal(&server, "t1", "North");
    let id1 = server.user_id("t1");

    // Console A is in a call and talking the whole time.
    let mut a = Console::connect(bridge.addr());
    a.login(BASE_URL, "zydd", "pw-zydd");
    let sid = a.call(&[id1], T);
    t1.wait_in_channel(&format!("call-{sid}"), T);
    t1.record_start();
    let speech = fixture("audio/speech.wav");
    let playing = a.play(&speech, Codec::Opus);

    // Console B misbehaves in every way on the list.
    let mut b = Console::connect(bridge.addr());
    let err = |b: &mut Console, ty: &str| -> Value {
        let v = b.expect_type(ty, REPLY);
        assert_eq!(v["code"], 0, "{v}");
        assert!(!v["message"].as_str().unwrap_or_default().is_empty(), "{v}");
        v
    };
    b.send_binary(vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf8]);
    let v = err(&mut b, "audio");
    assert!(
        v["message"].as_str().unwrap().contains("not logged in"),
        "{v}"
    );
    b.send_raw("{\"type\": \"connect\", ");
    let v = err(&mut b, "error");
    assert!(
        v["message"].as_str().unwrap().starts_with("invalid JSON"),
        "{v}"
    );
    b.send(json!({"type": "dial", "to": 1}));
    let v = err(&mut b, "dial");
    assert!(
        v["message"].as_str().unwrap().contains("unknown type"),
        "{v}"
    );
    b.send(json!({"type": "initServer", "data": {"baseUrl": "http://elsewhere"}}));
    err(&mut b, "initServer");
    b.send(json!({"type": "connect", "data": {"account": "low", "password": "pw-low"}}));
    let v = err(&mut b, "login");
    assert!(v["message"].as_str().unwrap().contains("initServer"), "{v}");
    b.send(json!({"type": "initServer", "data": {"baseUrl": BASE_URL}}));
    assert_eq!(b.expect_type("initServer", REPLY)["code"], 1);
    b.send(json!({"type": "connect", "data": {"account": "zydd", "password": "pw-zydd"}}));
    let v = err(&mut b, "login");
    assert!(
        v["message"].as_str().unwrap().contains("already logged in"),
        "{v}"
    );
    b.send(json!({"type": "connect", "data": {"account": "low", "password": "wrong"}}));
    let v = err(&mut b, "login");
    assert!(v["message"].as_str().unwrap().contains("rejected"), "{v}");
    // The bridge's own accounts (its console admin, its PTT accounts) are never a console's,
    // even with the right password.
    for (account, password) in [("SuperUser", server.superuser_password()), ("bridge", "")] {
        b.send(json!({"type": "connect", "data": {"account": account, "password": password}}));
        let v = err(&mut b, "login");
        assert!(
            v["message"].as_str().unwrap().contains("bridge's own"),
            "{account}: {v}"
        );
    }
    b.login(BASE_URL, "low", "pw-low");
    b.send(json!({"type": "requestMic", "transaction": 1}));
    let v = err(&mut b, "requestMic");
    assert!(v["message"].as_str().unwrap().contains("toIds"), "{v}");
    assert_eq!(
        v["transaction"], 1,
        "a refusal names the request it answers: {v}"
    );
    b.send(json!({"type": "requestMic", "sessionId": sid, "transaction": 2}));
    let v = err(&mut b, "requestMic");
    assert!(
        v["message"].as_str().unwrap().contains("unknown sessionId"),
        "another console's call is unknown here: {v}"
    );
    assert_eq!(v["transaction"], 2, "{v}");
    assert_eq!(v["sessionId"], sid.as_str(), "{v}");
    // A call that cannot be made: its createGroup refusal carries the requestMic's transaction.
    b.send(json!({"type": "requestMic", "toIds": [999_999], "transaction": 4}));
    let v = err(&mut b, "createGroup");
    assert_eq!(v["transaction"], 4, "{v}");
    // Even a request refused for its shape is answered with what it carried.
    b.send(json!({"type": "requestMic", "toIds": {"no": 1}, "transaction": 3}));
    let v = err(&mut b, "requestMic");
    assert_eq!(v["transaction"], 3, "{v}");
    b.send(json!({"type": "tempCallHangup", "sessionId": sid}));
    let v = b.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "tempCallHangup",
        REPLY,
    );
    assert_eq!(v["data"]["result"]["code"], -1, "{v}");
    b.send(json!({"type": "kickGroupMember", "sessionId": sid, "data": {"ids": [id1]}}));
    let v = b.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "kickGroupMember",
        REPLY,
    );
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["transaction"], sid.as_str(), "{v}");
    b.send(json!({"type": "requestMic", "toIds": "x,y"}));
    err(&mut b, "requestMic");
    b.send_binary(vec![9; 40]);
    let v = err(&mut b, "audio");
    assert!(
        v["message"].as_str().unwrap().contains("mic is not open"),
        "{v}"
    );
    // A flood: every request is answered, most of them refused by the rate limit.
    let history_before = b.history().len();
    for _ in 0..300 {
        b.send(json!({"type": "requestMic", "sessionId": "1"}));
    }
    let deadline = Instant::now() + T;
    while b.history().len() < history_before + 300 && Instant::now() < deadline {
        let _ = b.try_expect(|_| false, Duration::from_millis(50));
    }
    let answers: Vec<Value> = b.history()[history_before..].to_vec();
    assert_eq!(answers.len(), 300, "one answer per request");
    assert!(
        answers
            .iter()
            .all(|v| v["type"] == "requestMic" && v["code"] == 0)
    );
    let limited = answers
        .iter()
        .filter(|v| v["message"].as_str().unwrap().contains("too many"))
        .count();
    assert!(limited >= 200, "{limited} of 300 rate-limited");
    // 10 MB in one frame: the connection is closed with 1009, nothing is buffered.
    b.send_raw(&format!(
        "{{\"type\":\"connect\",\"data\":{{\"account\":\"{}\"}}}}",
        "x".repeat(10 << 20)
    ));
    let closed = b.wait_closed(T).expect("closed after the oversize frame");
    assert_eq!(
        closed.code,
        Some(1009),
        "{closed:?}\n{}",
        bridge.logs_tail(30)
    );

    // Console A was never disturbed: t1 heard all of it.
    assert!(playing.join().unwrap() > 150);
    settle();
    let dir = tempfile::tempdir().unwrap();
    let rec = t1.record_stop(&dir.path().join("t1.wav"));
    let zydd = rec["speakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "zydd")
        .cloned()
        .expect("t1 heard A");
    let cmp = compare_files(&speech, zydd["wav"].as_str().unwrap());
    println!("console A during B's abuse → t1: {cmp}");
    cmp.assert_matches(0.9, 0.05);
    // A console pushing audio faster than real time is held to it (no CPU burnt encoding it).
    for f in testkit::console::encode_wav(&speech, Codec::Opus) {
        a.send_binary(f);
    }
    let v = a.expect_type("audio", REPLY);
    assert_eq!(v["code"], 0, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("faster than real time"),
        "{v}"
    );
    a.send(json!({"type": "releaseMic"}));
    assert_eq!(a.expect_type("releaseMic", REPLY)["code"], 1);
    // B's account was freed when its socket closed: a new console can use it.
    let mut b2 = Console::connect(bridge.addr());
    b2.login(BASE_URL, "low", "pw-low");

    for kind in [
        "invalid_json",
        "unknown_type",
        "missing_field",
        "unknown_session",
        "audio_before_login",
        "audio_without_floor",
        "rate_limited",
        "oversize_frame",
        "account_in_use",
        "login_failed",
        "reserved_account",
        "bad_value",
        "audio_too_fast",
    ] {
        assert!(
            bridge.metric("pttbridge_console_errors_total", &[("kind", kind)]) >= 1.0,
            "errors of kind {kind} counted"
        );
    }
}

/// Why the bridge needs an admin account: with murmurd's default ACL a registered user may
/// create a temporary channel (the console does) but not move other users into it.
#[test]
fn a_plain_registered_admin_cannot_move_terminals_and_the_console_is_told() {
    let server = murmur();
    let bridge = bridge_with(&server, ("plain", "pw-plain"), "");
    let mut t1 = terminal(&server, "t1", "North");
    let id1 = server.user_id("t1");
    let mut c = Console::connect(bridge.addr());
    c.login(BASE_URL, "zydd", "pw-zydd");
    c.send(json!({"type": "requestMic", "toIds": [id1], "transaction": 5}));
    let created = c.expect_type("createGroup", T);
    assert_eq!(
        created["code"], 1,
        "the console's own account made the call channel: {created}"
    );
    let mic = c.expect_type("requestMic", T);
    assert_eq!(mic["code"], 0, "{mic}");
    let hangup = c.expect_notify("tempCallHangup", |_| true, T);
    assert_eq!(hangup["data"]["hangupReason"]["code"], 1, "{hangup}");
    let why = hangup["data"]["hangupReason"]["message"].as_str().unwrap();
    println!("hang-up reason: {why}");
    assert!(
        why.contains("denied"),
        "the PTT server's refusal is passed on: {why}"
    );
    assert_eq!(t1.current_channel(), "North");
    assert!(bridge.metric("pttbridge_console_errors_total", &[("kind", "move_failed")]) >= 1.0);
}

/// The documented protocol works from a third-party WebSocket library: the example console
/// (`tests/peers/console.py`, Python `websockets`) talks PCM16 at 16 kHz and listens.
#[test]
fn the_python_example_console_talks_and_listens_at_16_khz() {
    let server = murmur();
    let bridge = bridge(&server);
    let mut t1 = terminal(&server, "t1", "North");
    let id1 = server.user_id("t1");
    let dir = tempfile::tempdir().unwrap();
    let heard = dir.path().join("python-heard.wav");
    let speech = fixture("audio/speech.wav");
    // Recording from before the console can talk: the first words cannot slip past a test
    // thread that is slow to start recording.
    t1.record_start();
    let mut py = std::process::Command::new(testkit::peers::venv_python())
        .arg(testkit::peers::peer_script("console.py"))
        .args([
            "--url",
            &format!("ws://{}/muicall", bridge.addr()),
            "--base-url",
            BASE_URL,
        ])
        .args([
            "--account",
            "zydd",
            "--password",
            "pw-zydd",
            "--call",
            &id1.to_string(),
        ])
        .args([
            "--play",
            &speech.display().to_string(),
            "--rate",
            "16000",
            "--listen",
            "30",
            "--quiet",
            "1.5",
        ])
        .args(["--record", &heard.display().to_string()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the Python console: {e}; run scripts/setup"));
    let mut out = EventQueue::from_json_lines(py.stdout.take().unwrap());
    let expect = |out: &mut EventQueue, ev: &'static str, t: Duration| -> Value {
        out.try_expect(|v| v["event"] == ev || v["event"] == "error", t)
            .filter(|v| v["event"] == ev)
            .unwrap_or_else(|| panic!("python console: no {ev}\n{}", out.tail(40)))
    };
    expect(&mut out, "talking", T);
    expect(&mut out, "released", Duration::from_secs(30));
    settle();
    let rec = t1.record_stop(&dir.path().join("t1.wav"));
    let zydd = rec["speakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "zydd")
        .cloned()
        .expect("t1 heard it");
    let cmp = compare_files(&speech, zydd["wav"].as_str().unwrap());
    println!("python console (PCM16 16 kHz) → t1: {cmp}");
    cmp.assert_matches(0.9, 0.05);
    // The admin unmutes the terminals right after releaseMic (asynchronously); the console
    // listens until t1 has finished talking.
    t1.wait_unmuted(T);
    t1.play(&fixture("audio/speech2.wav"));
    let recorded = expect(&mut out, "recorded", Duration::from_secs(30));
    assert!(recorded["frames"].as_u64().unwrap() >= 150, "{recorded}");
    let cmp = compare_files(fixture("audio/speech2.wav"), &heard);
    println!("t1 → python console (PCM16 16 kHz): {cmp}");
    cmp.assert_matches(0.9, 0.05);
    expect(&mut out, "done", T);
    assert!(py.wait().unwrap().success());
    t1.wait_in_channel("North", T);
}

#[test]
fn stopping_the_bridge_sends_terminals_home_and_closes_consoles_with_1001() {
    let server = murmur();
    let mut bridge = bridge(&server);
    let mut t1 = terminal(&server, "t1", "North");
    let id1 = server.user_id("t1");
    let mut c = Console::connect(bridge.addr());
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = c.call(&[id1], T);
    t1.wait_in_channel(&format!("call-{sid}"), T);
    assert!(
        bridge.stop(Duration::from_secs(10)).is_some(),
        "the bridge stops on SIGTERM"
    );
    let closed = c.wait_closed(T).expect("console closed");
    assert_eq!(closed.code, Some(1001), "{closed:?}");
    t1.wait_in_channel("North", T);
}

#[test]
fn on_talk_answer_mode_rings_until_the_terminal_talks() {
    let server = murmur();
    let bridge = bridge_with(
        &server,
        ("SuperUser", server.superuser_password()),
        "answer = \"on_talk\"",
    );
    let mut t1 = terminal(&server, "t1", "North");
    let id1 = server.user_id("t1");
    let mut c = Console::connect(bridge.addr());
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = c.call(&[id1], T);
    c.expect_notify("tempCallRing", |v| v["data"]["fromId"] == id1, T);
    let ringing = c.expect_notify(
        "tempCallMemberUpdate",
        |v| member_state(v, id1) == Some(3),
        T,
    );
    assert_eq!(ringing["data"]["tempCallIdStr"], sid.as_str());
    assert!(
        c.try_expect(is_notify("tempCallAnswer"), Duration::from_millis(500))
            .is_none(),
        "no answer before the terminal talks"
    );
    c.send(json!({"type": "releaseMic"}));
    assert_eq!(c.expect_type("releaseMic", REPLY)["code"], 1);
    std::thread::sleep(Duration::from_millis(300));
    t1.play(&fixture("audio/speech2.wav"));
    c.expect_notify("tempCallAnswer", |v| v["data"]["fromId"] == id1, T);
    c.expect_notify(
        "tempCallMemberUpdate",
        |v| member_state(v, id1) == Some(4),
        T,
    );
    c.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id1, T);
}

#[test]
fn a_console_that_vanishes_mid_call_sends_its_terminals_home() {
    let server = murmur();
    let bridge = bridge(&server);
    let mut t1 = terminal(&server, "t1", "North");
    let mut t2 = terminal(&server, "t2", "South");
    let (id1, id2) = (server.user_id("t1"), server.user_id("t2"));
    let mut c = Console::connect(bridge.addr());
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = c.call(&[id1, id2], T);
    t1.wait_in_channel(&format!("call-{sid}"), T);
    t2.wait_in_channel(&format!("call-{sid}"), T);
    c.close();
    t1.wait_in_channel("North", T);
    t2.wait_in_channel("South", T);
    // The account and the terminals are free again.
    let mut again = Console::connect(bridge.addr());
    again.login(BASE_URL, "zydd", "pw-zydd");
    let sid2 = again.call(&[id1], T);
    t1.wait_in_channel(&format!("call-{sid2}"), T);
    bridge.wait_health(
        "one console logged in",
        |h| h["sides"]["console"]["logged_in"] == 1,
        T,
    );
}

/// murmurd hands session numbers out again after a restart, so a request made from a view of
/// the old run (a terminal sent home as its call ended with the server) can name a session that
/// is now someone else's — it was the console itself, moved out of its next call. The admin
/// account refuses a session that belongs to another user and still moves the right one.
#[test]
fn the_admin_never_moves_a_session_that_belongs_to_another_user() {
    use ptt::client::ClientConfig;
    use ptt::session::SessionConfig;
    use ptt::tls::{ServerTrust, parse_fingerprint};
    use pttbridge::sides::console::moderator::{Action, Moderator};

    let server = murmur();
    let mut t1 = terminal(&server, "t1", "North");
    let mut t2 = terminal(&server, "t2", "North");
    let (id1, south) = (u64::from(server.user_id("t1")), server.channel_id("South"));
    let (s1, s2) = (t1.session() as u32, t2.session() as u32);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcomes = rt.block_on(async {
        let session = SessionConfig {
            username: "SuperUser".into(),
            password: server.superuser_password().into(),
            ..SessionConfig::default()
        };
        let trust = ServerTrust::Pinned(parse_fingerprint(server.cert_sha256()).unwrap());
        let admin = Moderator::spawn(
            ClientConfig::new(server.host(), server.port(), trust, session),
            Duration::from_secs(5),
            "local",
        );
        let deadline = tokio::time::Instant::now() + T;
        while !(admin.connected() && admin.snapshot().users.contains_key(&s2)) {
            assert!(tokio::time::Instant::now() < deadline, "admin never synced");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        for session in [s2, s1] {
            let move_to_south = Action::Move {
                session,
                channel: south,
            };
            admin.submit(move_to_south, id1, Some(tx.clone())).unwrap();
        }
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let o = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
            outcomes.push(o);
        }
        admin.shutdown().await;
        outcomes
    });
    let of = |s: u32| {
        outcomes
            .iter()
            .find(|o| matches!(o.action, Action::Move { session, .. } if session == s))
            .unwrap_or_else(|| panic!("no outcome for session {s}: {outcomes:?}"))
    };
    let refused = of(s2).result.as_ref().unwrap_err();
    assert!(
        refused.to_string().contains("no longer connected"),
        "{refused}"
    );
    assert_eq!(of(s1).result, Ok(()), "{outcomes:?}");
    t1.wait_in_channel("South", T);
    // murmurd answers in order: t1's move is done, so a move of t2 would have been too.
    assert_eq!(t2.current_channel(), "North");
}
