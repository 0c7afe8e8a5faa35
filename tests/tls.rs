//! The bridge serving HTTPS and WSS to a real third-party client: the aiortc meeting peer
//! (`tests/peers/meeting.py`, Python's ssl + websockets) logs in over `https://`, signals over
//! `wss://` — checking the bridge's certificate against the test CA — and completes a dial-in
//! call with audio both ways through Debian's murmurd and pymumble terminals.
//! Outbound: the NATS sink connects to Debian's nats-server over TLS with a user and password.
//! (The page over HTTPS in Chromium is in `web_page.rs`; client mode at a TLS upstream in
//! `meeting_client_mode.rs`; the listener's bounds in `http_listener.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::bridge::{Bridge, meeting_north_toml, ptt_server_toml};
use testkit::meeting::{Participant, hear_from_ptt, speak_into_ptt};
use testkit::murmur::Murmur;
use testkit::nats::NatsServer;
use testkit::peers::{fixture, free_port};
use testkit::terminal::Terminal;
use testkit::tls::TestCa;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const NORTH: i64 = 9001;

fn from(id: i64) -> impl Fn(&Value) -> bool {
    move |m| m["ownUserId"] == id
}

#[test]
fn a_meeting_peer_dials_in_over_https_and_wss_with_audio_both_ways() {
    let server = Murmur::start(&["North"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pttbridge test CA");
    let ca_pem = ca.write_ca(dir.path());
    let cert = ca.write_server(dir.path(), "bridge");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    testkit::http::use_tls(addr, ca.client_config());
    let config = format!(
        "[http]\n{}\n{}\n{}",
        cert.http_toml(),
        ptt_server_toml("local", &server, &[("bridge", "North")]),
        meeting_north_toml(NORTH),
    );
    let bridge = Bridge::start_at(BIN, &config, addr);
    bridge.wait_health(
        "connected in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));

    // The peer refuses a certificate it cannot check: without the CA it never logs in.
    // (Run first so a pass below cannot be a peer that accepts anything.)
    let url = format!("https://{addr}");
    let mut refused = std::process::Command::new(testkit::peers::venv_python())
        .arg("-u")
        .arg(testkit::peers::peer_script("meeting.py"))
        .args(["--url", &url, "--account", "mallory"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("meeting peer: {e}; run {}", testkit::peers::SETUP_COMMAND));
    refused.stdout.truncate(2000);
    let out = String::from_utf8_lossy(&refused.stdout);
    println!("without the CA: {}", out.trim());
    assert!(
        out.contains("login failed") && out.contains("CERTIFICATE_VERIFY_FAILED"),
        "{out}"
    );

    let mut carol = Participant::join_url(&url, Some(&ca_pem), "carol");
    let r = carol.request(json!({"module":"room","method":"newAppRoom","name":"ops","numberLimit":10,"roomtype":1,"userId":carol.id()}));
    let room = r["roomId"].as_i64().expect("roomId");
    let r = carol.request(
        json!({"module":"meeting","method":"enter","userId":carol.id(),"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let r = carol.request(json!({"module":"call","method":"doInvite","ownUserId":carol.id(),"targetUserId":NORTH,"type":1,"roomId":room}));
    assert_eq!(r["result"], 0, "{r}");
    assert_eq!(carol.push("doEvent", from(NORTH), T)["event"], "onRinging");
    carol.push("doAgree", from(NORTH), T);
    let r = carol.request(
        json!({"module":"call","method":"doEvent","ownUserId":carol.id(),"targetUserId":NORTH,
        "event":"onConnected","roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    carol.push("EnterRoom", |m| m["client"]["id"] == NORTH, T);
    carol.push(
        "onPublished",
        |m| m["client"]["id"] == NORTH && m["published"] == true,
        T,
    );

    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(|e| e["event"] == "published", T);
    carol.cmd(json!({"cmd":"play","client":NORTH}));
    carol.expect(
        |e| {
            e["event"] == "pc_state"
                && e["pc"] == format!("play:{NORTH}")
                && e["state"] == "connected"
        },
        T,
    );
    let (cmp, _) = hear_from_ptt(
        &mut carol,
        &mut alice,
        &fixture("audio/speech.wav"),
        &dir.path().join("carol.wav"),
        "PTT → meeting (signalling over wss)",
    );
    cmp.assert_matches(0.9, 0.1);
    speak_into_ptt(
        &mut carol,
        &mut bob,
        &fixture("audio/speech.wav"),
        &dir.path().join("bob.wav"),
        "meeting → PTT (signalling over wss)",
    )
    .assert_matches(0.85, 0.1);

    let r = carol.request(
        json!({"module":"call","method":"cancel","ownUserId":carol.id(),"targetUserId":NORTH}),
    );
    assert_eq!(r["result"], 0, "{r}");
    carol.push("ExitRoom", |m| m["client"]["id"] == NORTH, T);
    // The signalling socket was a TLS connection the listener counted.
    assert!(bridge.metric("pttbridge_http_connections ", &[]) >= 1.0);
}

/// A bridge whose NATS sink goes to `nats` over TLS (`tls://`, the test CA) with `extra`.
fn nats_bridge(nats: &NatsServer, extra: &str, ca: &std::path::Path) -> Bridge {
    let config = format!(
        "[nats]\nurl = \"tls://127.0.0.1:{}\"\ntls_ca_file = \"{}\"\n{extra}",
        nats.port(),
        ca.display()
    );
    Bridge::start(BIN, &config)
}

#[test]
fn the_nats_sink_connects_over_tls_with_a_user_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pttbridge test CA");
    let ca_pem = ca.write_ca(dir.path());
    let cert = ca.write_server(dir.path(), "nats");
    let nats = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        cert.cert.to_str().unwrap(),
        "--tlskey",
        cert.key.to_str().unwrap(),
        "--user",
        "bridge",
        "--pass",
        "s3cret-pass",
    ]);

    // Wrong password: TLS works, the login is refused.
    let wrong = nats_bridge(&nats, "user = \"bridge\"\npassword = \"wrong\"\n", &ca_pem);
    let t0 = std::time::Instant::now();
    while !wrong.logs().to_lowercase().contains("authorization") {
        assert!(
            t0.elapsed() < T,
            "no authorization error\n{}",
            wrong.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let h = wrong.health()["events"]["nats"].clone();
    println!("wrong password: {h}");
    assert_eq!(h["connected"], false, "{h}");
    drop(wrong);

    let bridge = nats_bridge(
        &nats,
        "user = \"bridge\"\npassword = \"s3cret-pass\"\ntls_required = true\n",
        &ca_pem,
    );
    let h = bridge.wait_health(
        "NATS connected over TLS, stream ready",
        |h| h["events"]["nats"]["connected"] == true && h["events"]["nats"]["stream_ready"] == true,
        T,
    );
    println!("over TLS: {}", h["events"]["nats"]);
    assert!(
        nats.log().contains("TLS") || nats.log().contains("tls"),
        "nats-server runs TLS:\n{}",
        nats.log()
    );
}
