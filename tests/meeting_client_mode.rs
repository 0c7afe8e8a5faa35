//! Client mode: one bridge (B) registers its PTT channel as a user on another bridge's RTCPeer
//! server (A) and answers calls there. An aiortc participant on A calls B's user; audio flows
//! both ways through A's room (B is a WebRTC client of it) and B's PTT link to murmurd. A serves
//! HTTPS/WSS with a test CA's certificate: B logs in over `https://` and signals over `wss://`,
//! checking it against that CA (`ca_file`), as does the participant.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::audio::load_wav;
use testkit::bridge::{Bridge, ptt_server_toml};
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
        r#"{}
[meeting]
enabled = false
ring_delay_ms = 100
answer_delay_ms = 200
[[meeting.dial_in]]
user_id = {NORTH}
server = "local"
account = "bridge"
name = "North"
[[meeting.upstream]]
url = "https://{a_addr}"
ca_file = "{}"
app_id = "test"
secret = "test"
dial_in = [{NORTH}]
"#,
        ptt_server_toml("local", &server, &[("bridge", "North")]),
        ca_pem.display()
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
