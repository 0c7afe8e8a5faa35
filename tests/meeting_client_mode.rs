//! Client mode: one bridge (B) registers its PTT channel as a user on another bridge's RTCPeer
//! server (A) and answers calls there. An aiortc participant on A calls B's user; audio flows
//! both ways through A's room (B is a WebRTC client of it) and B's PTT link to murmurd. A serves
//! HTTPS/WSS with a test CA's certificate: B logs in over `https://` and signals over `wss://`,
//! checking it against that CA (`ca_file`), as does the participant.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::audio::load_wav;
use testkit::bridge::{Bridge, client_mode_north_toml, ptt_server_toml};
use testkit::meeting::{Participant, hear_from_ptt, speak_into_ptt};
use testkit::murmur::Murmur;
use testkit::peers::{fixture, free_port};
use testkit::terminal::Terminal;
use testkit::tls::TestCa;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const NORTH: i64 = 9001;

fn registration(h: &Value) -> Value {
    h["sides"]["meeting"]["upstream"][0].clone()
}

fn pc_connected(p: &mut Participant, pc: &str) {
    p.expect(
        |e| e["event"] == "pc_state" && e["pc"] == pc && e["state"] == "connected",
        T,
    );
}

#[test]
fn client_mode_answers_calls_on_another_bridge() {
    let server = Murmur::start(&["North"]);
    let a_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let tls_dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pttbridge test CA");
    let ca_pem = ca.write_ca(tls_dir.path());
    let a_cert = ca.write_server(tls_dir.path(), "a");
    testkit::http::use_tls(a_addr, ca.client_config());

    // B first: its upstream is not there yet, so it retries with backoff.
    let b_config = format!(
        "{}\n{}",
        ptt_server_toml("local", &server, &[("bridge", "North")]),
        client_mode_north_toml(
            NORTH,
            &format!("https://{a_addr}"),
            &ca_pem.display().to_string()
        )
    );
    let b = Bridge::start(BIN, &b_config);
    b.wait_health(
        "B in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    let retrying = b.wait_health(
        "B retrying its upstream",
        |h| {
            registration(h)["state"] == "retrying"
                && registration(h)["reconnects"].as_u64() >= Some(2)
        },
        T,
    );
    println!("before A exists: {}", registration(&retrying));
    assert!(
        registration(&retrying)["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(
        b.get("/rtcpeer").status == 404,
        "B does not serve RTCPeer itself"
    );

    // A appears: B logs in and registers; its user id there is what callers dial.
    let _a = Bridge::start_at(
        BIN,
        &format!(
            "[http]\n{}[meeting]\n[[meeting.apps]]\napp_id = \"test\"\nsecret = \"test\"\n",
            a_cert.http_toml()
        ),
        a_addr,
    );
    let registered = b.wait_health(
        "B registered at A",
        |h| registration(h)["state"] == "registered",
        Duration::from_secs(40),
    );
    let b_user = registration(&registered)["user_id"]
        .as_i64()
        .expect("B's user id at A");
    println!("registered: {}", registration(&registered));
    let mut b_events = b.events();

    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join_url(&format!("https://{a_addr}"), Some(&ca_pem), "carol");
    let r = carol.request(json!({"module":"room","method":"newAppRoom","name":"ops","numberLimit":10,"roomtype":1,"userId":carol.id()}));
    let room = r["roomId"].as_i64().expect("roomId");
    let r = carol.request(
        json!({"module":"meeting","method":"enter","userId":carol.id(),"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    carol.cmd(json!({"cmd":"publish"}));
    pc_connected(&mut carol, "publish");

    let r = carol.request(json!({"module":"call","method":"doInvite","ownUserId":carol.id(),"targetUserId":b_user,"type":1,"roomId":room}));
    assert_eq!(r["result"], 0, "{r}");
    let from_b = move |m: &Value| m["ownUserId"] == b_user;
    assert_eq!(carol.push("doEvent", from_b, T)["event"], "onRinging");
    let agreed = carol.push("doAgree", from_b, T);
    assert_eq!(agreed["roomId"], room);
    let r = carol.request(
        json!({"module":"call","method":"doEvent","ownUserId":carol.id(),"targetUserId":b_user,
        "event":"onConnected","roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let entered = carol.push("EnterRoom", |m| m["client"]["id"] == b_user, T);
    assert_eq!(entered["client"]["name"], "North", "{entered}");
    carol.push(
        "onPublished",
        |m| m["client"]["id"] == b_user && m["published"] == true,
        T,
    );
    b_events
        .try_expect(|e| e["type"] == "link.up", T)
        .expect("link.up on B");

    // PTT → meeting: alice in North, through B's publish and A's room, to carol.
    carol.cmd(json!({"cmd":"play","client":b_user}));
    pc_connected(&mut carol, &format!("play:{b_user}"));
    let dir = tempfile::tempdir().unwrap();
    hear_from_ptt(
        &mut carol,
        &mut alice,
        &fixture("audio/speech.wav"),
        &dir.path().join("carol.wav"),
        "PTT → B → A → meeting",
    )
    .0
    .assert_matches(0.9, 0.1);

    // meeting → PTT: carol speaks, A forwards to B's play peer, B takes the floor in North.
    speak_into_ptt(
        &mut carol,
        &mut bob,
        &fixture("audio/speech.wav"),
        &dir.path().join("bob.wav"),
        "meeting → A → B → PTT",
    )
    .assert_matches(0.85, 0.1);

    // Chat both ways.
    let r = carol.request(json!({"module":"meeting","method":"chat","content":"hello North"}));
    assert_eq!(r["result"], 0);
    alice.expect(
        |e| {
            e["event"] == "text"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("hello North"))
        },
        T,
    );
    alice.text("hello meeting");
    let chat = carol.push(
        "onChat",
        |m| {
            m["content"]
                .as_str()
                .is_some_and(|c| c.ends_with("hello meeting"))
        },
        T,
    );
    assert_eq!(chat["userId"], b_user, "{chat}");

    // The caller hangs up: B leaves the room, its link goes down, the channel is free again.
    let r = carol.request(
        json!({"module":"call","method":"cancel","ownUserId":carol.id(),"targetUserId":b_user}),
    );
    assert_eq!(r["result"], 0, "{r}");
    carol.push("ExitRoom", |m| m["client"]["id"] == b_user, T);
    let down = b_events
        .try_expect(|e| e["type"] == "link.down", T)
        .expect("link.down on B");
    println!("{down}");
    let ended = b_events
        .try_expect(|e| e["type"] == "call.ended", T)
        .expect("call.ended on B");
    assert_eq!(ended["detail"]["reason"], "hangup", "{ended}");
    let h = b.health();
    assert!(registration(&h)["call"].is_null(), "{h}");
    assert_eq!(registration(&h)["state"], "registered");
    assert_eq!(b.metric("pttbridge_meeting_links ", &[]), 0.0);

    // B's call record of it: both sides, the call's signalling, the audio both ways.
    let t0 = std::time::Instant::now();
    let rec = loop {
        let r = b
            .get("/v1/consuming/records?start_time=0&end_time=99999999999999&page=1&page_size=100")
            .json();
        let found = r["record_list"].as_array().and_then(|l| {
            l.iter()
                .find(|r| r["group_id"] == format!("meeting:{a_addr}/{room}"))
                .cloned()
        });
        if let Some(rec) = found {
            break rec;
        }
        assert!(t0.elapsed() < T, "no record of the call on B: {r}");
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("B's record: {rec}");
    assert_eq!(rec["sides"], json!(["meeting", "ptt"]), "{rec}");
    assert_eq!(rec["end_reason"], "hangup", "{rec}");
    assert_eq!(rec["client_id"], format!("meeting:{}", carol.id()), "{rec}");
    // doInvite, onRinging, doAgree, onConnected, cancel.
    assert_eq!(rec["total_sig_num"], 5, "{rec}");
    let speech = load_wav(fixture("audio/speech.wav")).len() as f64 / 48_000.0 * 50.0;
    let packets = rec["audio_packets"].as_f64().unwrap_or(0.0);
    assert!(
        packets >= 2.0 * 0.8 * speech && packets <= 2.0 * 1.3 * speech + 40.0,
        "{packets} packets for ~{speech:.0} each way"
    );
}

/// Client mode against a server written from the spec alone (`tests/peers/rtcpeer_server.py`):
/// it logs in with the spec's `params` form, registers, and the server's caller invites it with
/// the spec's shapes (a doInvite without roomId; the room and its type come with onConnected).
/// The server answers only what the spec answers (doRegister, enter, publish, play, exit): never
/// the ring, the agree or the chat. Audio both ways through the server's aiortc media (the `sdp`
/// extension), mute and private chat aimed at the channel, then an onFinish with only userId —
/// and the registration is still up afterwards, well past the reply timeout.
#[test]
fn client_mode_meets_a_spec_strict_server() {
    use testkit::meeting::compare_through_bridge;
    use testkit::spec_server::SpecTls;

    const ROOM: i64 = 8801;
    // A video room: enter must carry the roomType onConnected gave, not always 1.
    const ROOM_TYPE: i64 = 2;
    const CALLER: i64 = 1;

    let murmur = Murmur::start(&["North"]);
    // The TLS files live as long as `tls`.
    let tls = SpecTls::start();
    let (mut srv, url, ca_pem) = (tls.server, tls.url, tls.ca_pem);

    let rec_dir = tempfile::tempdir().unwrap();
    let b = Bridge::start(
        BIN,
        &format!(
            r#"{}
[recording]
dir = "{}"
{}"#,
            ptt_server_toml("local", &murmur, &[("bridge", "North")]),
            rec_dir.path().display(),
            client_mode_north_toml(NORTH, &url, &ca_pem)
        ),
    );
    b.wait_health(
        "B in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    let registered = b.wait_health(
        "B registered at the spec server",
        |h| registration(h)["state"] == "registered",
        Duration::from_secs(30),
    );
    let me = registration(&registered)["user_id"]
        .as_i64()
        .expect("B's user id there");
    let reconnects = registration(&registered)["reconnects"].clone();
    let reg = srv.expect(|e| e["event"] == "registered", T);
    assert_eq!(reg["userId"], me, "{reg}");
    assert_eq!(reg["deviceType"], "pc", "{reg}");
    let login = srv.expect(|e| e["event"] == "http" && e["path"] == "/app/account", T);
    let params: Value = serde_json::from_str(login["fields"]["params"].as_str().unwrap()).unwrap();
    assert_eq!(params["appkey"], "test", "{login}");
    assert_eq!(params["method"], "dockingLogin", "{login}");
    let mut b_events = b.events();

    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(murmur.port(), "bob", Some("North"));

    // The caller invites B's user: doInvite with no roomId (4.1.3). B rings and agrees — both
    // unanswered by the server — echoing the caller's device type (4.1.4).
    srv.cmd(json!({"cmd":"invite","to":me}));
    let ring = srv.received("call", "doEvent", |m| m["event"] == "onRinging", T);
    assert_eq!(
        (
            &ring["ownUserId"],
            &ring["targetUserId"],
            &ring["targetDeviceType"]
        ),
        (&json!(me), &json!(CALLER), &json!("pc")),
        "{ring}"
    );
    let agree = srv.received("call", "doAgree", |_| true, T);
    assert_eq!(agree["targetUserId"], CALLER, "{agree}");
    assert!(agree.get("roomId").is_none(), "no room known yet: {agree}");

    // onConnected names the room and its type (4.7): B enters with that roomType, publishes,
    // and tries to play the caller (not publishing yet: refused).
    srv.cmd(json!({"cmd":"connected","to":me,"roomId":ROOM,"roomType":ROOM_TYPE}));
    let enter = srv.received("meeting", "enter", |_| true, T);
    assert_eq!(
        (&enter["userId"], &enter["roomId"], &enter["roomType"]),
        (&json!(me), &json!(ROOM), &json!(ROOM_TYPE)),
        "{enter}"
    );
    srv.published(T);
    b_events
        .try_expect(|e| e["type"] == "link.up", T)
        .expect("link.up on B");
    // The spec's onPublished (event "play", 3.23.3) brings the caller's stream: B plays it.
    srv.cmd(json!({"cmd":"publish_caller"}));
    srv.expect(
        |e| e["event"] == "pc_state" && e["pc"] == "play" && e["state"] == "connected",
        T,
    );

    let dir = tempfile::tempdir().unwrap();
    let speech = fixture("audio/speech.wav");

    // onMute aimed at the channel (3.9): its audio stops going into the room.
    srv.cmd(
        json!({"cmd":"push","to":me,"msg":{"module":"meeting","method":"onMute",
        "userId":me,"roomId":ROOM,"isMute":true,"super":"fromSuper"}}),
    );
    std::thread::sleep(Duration::from_millis(300));
    let muted = srv.record(&dir.path().join("muted.wav"), |_| {
        alice.play_and_wait(&speech, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(800));
    });
    println!("muted: {muted}");
    assert!(
        muted["rms"].as_f64().unwrap_or(0.0) < 30.0,
        "the muted channel was heard in the room: {muted}"
    );
    // Unmuted: PTT → B → the spec server's room.
    srv.cmd(
        json!({"cmd":"push","to":me,"msg":{"module":"meeting","method":"onMute",
        "userId":me,"roomId":ROOM,"isMute":false,"super":"fromSuper"}}),
    );
    std::thread::sleep(Duration::from_millis(300));
    let heard = dir.path().join("heard.wav");
    let (cmp, rec) = srv.hear_from_ptt(&mut alice, &speech, &heard);
    println!("PTT → B → spec server: {cmp}; {rec}");
    cmp.assert_matches(0.9, 0.1);

    // The caller speaks: spec server → B's play peer → the floor in North → bob.
    let on_ptt = dir.path().join("bob.wav");
    bob.record_start();
    srv.cmd(json!({"cmd":"speak","wav":speech}));
    srv.expect(|e| e["event"] == "speak_done", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000));
    let summary = bob.record_stop(&on_ptt);
    // Re-timed by B's jitter buffer on the way into PTT: each window is compared where it
    // landed (as every meeting → PTT check does).
    let cmp = compare_through_bridge(&speech, &on_ptt);
    println!("spec server → B → PTT: {cmp}; {summary}");
    cmp.assert_matches(0.9, 0.1);
    // B archived what it said into North for the room (murmurd never echoes it to B).
    let deadline = std::time::Instant::now() + T;
    let listed = loop {
        let v = b.get("/v1/archive/bursts?channel=North").json();
        if let Some(x) = v["bursts"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["side"] == "meeting"))
        {
            break x.clone();
        }
        assert!(std::time::Instant::now() < deadline, "not archived: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(listed["talker"], format!("meeting room {ROOM}"), "{listed}");
    let (status, _, file) = testkit::http::request_bytes(
        b.addr(),
        "GET",
        listed["url"].as_str().unwrap(),
        &[testkit::bridge::OPERATOR],
    )
    .unwrap();
    assert_eq!(status, 200);
    let archived = dir.path().join("archived.opus");
    std::fs::write(&archived, &file).unwrap();
    let wav = dir.path().join("archived.wav");
    testkit::audio::write_wav(&wav, &testkit::audio::read_ogg_opus(&archived).unwrap()).unwrap();
    let cmp = compare_through_bridge(&speech, &wav);
    println!("spec server → B → its archive: {cmp}");
    cmp.assert_matches(0.9, 0.1);

    // Channel text → meeting.chat with the spec's required userId and roomId (never answered).
    alice.text("hello meeting");
    let chat = srv.received(
        "meeting",
        "chat",
        |m| {
            m["content"]
                .as_str()
                .is_some_and(|c| c.ends_with("hello meeting"))
        },
        T,
    );
    assert_eq!(
        (&chat["userId"], &chat["roomId"]),
        (&json!(me), &json!(ROOM)),
        "{chat}"
    );
    // Private chat to the channel (3.27) reaches it like the room's chat.
    srv.cmd(
        json!({"cmd":"push","to":me,"msg":{"module":"meeting","method":"onPrivateChat",
        "userId":CALLER,"roomId":ROOM,"content":"psst North",
        "client":{"id":CALLER,"name":"Dispatcher"}}}),
    );
    alice.expect(
        |e| {
            e["event"] == "text"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("psst North"))
        },
        T,
    );

    // onFinish with only userId (3.3.4) ends the call: B leaves the room, its link goes down.
    srv.cmd(json!({"cmd":"push","to":me,"msg":{"module":"meeting","method":"onFinish","userId":CALLER}}));
    srv.received("meeting", "exit", |_| true, T);
    b_events
        .try_expect(|e| e["type"] == "link.down", T)
        .expect("link.down on B");
    let ended = b_events
        .try_expect(|e| e["type"] == "call.ended", T)
        .expect("call.ended on B");
    println!("{ended}");

    // Well past the reply timeout since the unanswered ring, agree and chat: still registered,
    // on the same connection.
    std::thread::sleep(Duration::from_secs(2));
    let h = b.health();
    assert_eq!(registration(&h)["state"], "registered", "{h}");
    assert_eq!(registration(&h)["reconnects"], reconnects, "{h}");
    assert!(registration(&h)["call"].is_null(), "{h}");

    let history = srv.history();
    let violations: Vec<&Value> = history
        .iter()
        .filter(|e| e["event"] == "violation")
        .collect();
    assert!(violations.is_empty(), "not to the spec: {violations:?}");
    // The server never answered the call steps or the chat (it cannot: the spec has no reply).
    let answered: Vec<&Value> = history
        .iter()
        .filter(|e| {
            e["event"] == "ws_out"
                && e["msg"].get("result").is_some()
                && matches!(
                    e["msg"]["method"].as_str(),
                    Some("doEvent" | "doAgree" | "chat" | "reject" | "cancel" | "closePlay")
                )
        })
        .collect();
    assert!(answered.is_empty(), "{answered:?}");
    assert!(
        !history.iter().any(|e| e["event"] == "unregistered"),
        "B's registration was dropped"
    );
}
