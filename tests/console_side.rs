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
    bridge_with(server, ("SuperUser", server.superuser_password()), "account_mic_levels = { low = 1 }")
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

/// Starts a call from `console` to `ids` and waits until the mic is open; returns the call id.
fn call(console: &mut Console, ids: &[u32]) -> String {
    console.send(json!({"type": "requestMic", "toIds": ids, "transaction": 1671006883842u64}));
    let created = console.expect_type("createGroup", T);
    assert_eq!(created["code"], 1, "{created}");
    let granted = console.expect_type("requestMic", T);
    assert_eq!(granted["code"], 2, "{granted}");
    created["sessionId"].as_str().unwrap().to_string()
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
    assert_shape(&c.expect_type("initServer", REPLY), "2.1-initServer.json", &[]);
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
        let ring = position(&h, |v| is_notify("tempCallRing")(v) && v["data"]["fromId"] == id);
        let answer = position(&h, |v| is_notify("tempCallAnswer")(v) && v["data"]["fromId"] == id);
        assert!(created_at < ring && ring < answer && answer < granted_at, "order for {id}: {h:#?}");
        assert_shape(&h[ring], "3.3-tempCallRing.json", &[]);
        assert_shape(&h[answer], "3.4-tempCallAnswer.json", &[]);
        assert_eq!(h[ring]["data"]["tempCallIdStr"], sid.as_str());
    }
    let updates: Vec<&Value> = h.iter().filter(|v| is_notify("tempCallMemberUpdate")(v)).collect();
    assert_shape(updates[0], "3.5-tempCallMemberUpdate.json", &[]);
    let states = |u: &Value| -> Vec<(u64, u64)> {
        u["data"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["memberId"].as_u64().unwrap(), m["callState"].as_u64().unwrap()))
            .collect()
    };
    let (z, i1, i2) = (u64::from(zydd), u64::from(id1), u64::from(id2));
    assert_eq!(states(updates[0]), vec![(z, 4), (i1, 2), (i2, 2)], "first update: calling");
    assert_eq!(states(updates.last().unwrap()), vec![(z, 4), (i1, 4), (i2, 4)], "last update: answered");
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
    let hung = c.expect(|v| v["type"] == "audioResp" && v["cmd"] == "tempCallHangup", REPLY);
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
    wait_event(&mut events, |e| in_call("talk.started")(e) && e["party"]["name"] == "t1", "terminal talk");
    wait_event(&mut events, in_call("talk.stopped"), "talk.stopped");
    wait_event(&mut events, in_call("party.left"), "party.left");
    wait_event(&mut events, in_call("call.ended"), "call.ended");

    c.send(json!({"type": "loginOut"}));
    let out = c.expect_type("logoutResp", REPLY);
    assert_eq!(out["code"], 1);
    assert_shape(&out, "2.8-logoutResp.json", &[]);

    assert!(bridge.metric("pttbridge_console_calls_total", &[]) >= 1.0);
    assert!(bridge.metric("pttbridge_console_audio_frames_total", &[("direction", "in")]) >= 150.0);
    assert!(bridge.metric("pttbridge_console_audio_frames_total", &[("direction", "out")]) >= 100.0);
    assert!(bridge.metric("pttbridge_console_talk_bursts_total", &[("talker", "terminal")]) >= 1.0);
    let _ = Instant::now();
}
