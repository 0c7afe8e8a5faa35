//! Proves the harness on its own, before any bridge code is involved: real Debian murmurd and real
//! pymumble terminals pass speech, text and a server restart between each other, and the audio
//! comparison measures what PEERS.md says this path delivers (median window correlation ~0.99).

use std::path::Path;
use std::time::Duration;

use testkit::audio::{self, Comparison};
use testkit::murmur::{Murmur, TEST_CERT_SHA256};
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const PLAY_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Lets the last frames arrive after "play_done" before the listener stops recording.
fn settle() {
    std::thread::sleep(Duration::from_millis(600));
}

fn compare(source: &Path, recorded: &Path, what: &str) -> Comparison {
    let c = audio::compare_files(source, recorded);
    // Printed so `cargo test -- --nocapture` shows the figures the bars are set against.
    println!("{what}: {c}");
    c
}

#[test]
fn speech_through_murmurd_arrives_intact() {
    let server = Murmur::start(&["North", "South", "North/Sub"]);
    assert_eq!(server.cert_sha256(), TEST_CERT_SHA256);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    assert_eq!(alice.channel(), "North");
    assert_eq!(bob.users(), vec!["alice", "bob"]);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bob.wav");
    let speech = fixture("audio/speech.wav");
    bob.record_start();
    let done = alice.play_and_wait(&speech, PLAY_TIMEOUT);
    settle();
    let rec = bob.record_stop(&out);

    // Talk start/stop are inferred from voice and silence (pymumble never sets the terminator bit).
    let start = bob.expect(|e| e["event"] == "talk_start", EVENT_TIMEOUT);
    assert_eq!(start["name"], "alice");
    let stop = bob.expect(|e| e["event"] == "talk_stop", EVENT_TIMEOUT);
    assert_eq!(stop["name"], "alice");

    let speakers = rec["speakers"].as_array().expect("speakers");
    assert_eq!(speakers.len(), 1, "{rec}");
    assert_eq!(speakers[0]["name"], "alice");
    // One continuous burst: consecutive sequence numbers, one timeline anchor.
    assert_eq!(speakers[0]["reanchors"], 0, "{rec}");
    assert_eq!(speakers[0]["seq_jumps"], 0, "{rec}");
    println!("play_done: {done}\nrecorded: {rec}");

    let mixed = compare(&speech, &out, "murmurd, mix");
    mixed.assert_matches(0.9, 0.05);
    let alone = compare(
        &speech,
        Path::new(&format!("{}.alice.wav", out.display())),
        "murmurd, alice track",
    );
    alone.assert_matches(0.9, 0.05);
    assert!(mixed.fraction_good >= 0.8, "{mixed}");
    assert!(
        mixed.gain_db.abs() < 3.0,
        "level must survive the path: {mixed}"
    );
}

#[test]
fn two_talkers_are_recorded_on_one_timeline_and_per_speaker() {
    let server = Murmur::start(&["North"]);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut carol = Terminal::connect(server.port(), "carol", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bob.wav");
    let (s1, s2) = (fixture("audio/speech.wav"), fixture("audio/speech2.wav"));
    bob.record_start();
    alice.play(&s1);
    carol.play(&s2);
    alice.expect_event("play_done", PLAY_TIMEOUT);
    carol.expect_event("play_done", PLAY_TIMEOUT);
    settle();
    let rec = bob.record_stop(&out);
    assert_eq!(rec["speakers"].as_array().map(Vec::len), Some(2), "{rec}");

    let a = compare(
        &s1,
        Path::new(&format!("{}.alice.wav", out.display())),
        "alice track",
    );
    let c = compare(
        &s2,
        Path::new(&format!("{}.carol.wav", out.display())),
        "carol track",
    );
    a.assert_matches(0.9, 0.05);
    c.assert_matches(0.9, 0.05);
    // Both started within a few ms of each other: on the shared timeline their lags agree closely.
    assert!((a.lag_ms() - c.lag_ms()).abs() < 250.0, "{a}\n{c}");
    // In the mix each voice is still there, only partly masked by the other.
    let mix_a = compare(&s1, &out, "mix vs alice");
    assert!((mix_a.lag_ms() - a.lag_ms()).abs() < 1.0, "{mix_a}\n{a}");
}

#[test]
fn text_moves_and_users() {
    let server = Murmur::start(&["North", "South", "North/Sub"]);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North/Sub"));
    let mut dave = Terminal::connect(server.port(), "dave", Some("South"));
    assert_eq!(bob.channel(), "North/Sub");

    bob.move_to("North");
    let moved = alice.expect(
        |e| e["event"] == "user_moved" && e["name"] == "bob" && e["channel"] == "North",
        EVENT_TIMEOUT,
    );
    assert_eq!(moved["from"], "North/Sub");
    assert_eq!(alice.users(), vec!["alice", "bob"]);

    alice.text("unit 7, report");
    let t = bob.expect(|e| e["event"] == "text", EVENT_TIMEOUT);
    assert_eq!(
        (
            t["from"].as_str(),
            t["message"].as_str(),
            t["private"].as_bool()
        ),
        (Some("alice"), Some("unit 7, report"), Some(false))
    );
    assert_eq!(t["channel"], "North");

    bob.text_to("dave", "psst");
    let t = dave.expect(|e| e["event"] == "text", EVENT_TIMEOUT);
    assert_eq!(
        (
            t["from"].as_str(),
            t["message"].as_str(),
            t["private"].as_bool()
        ),
        (Some("bob"), Some("psst"), Some(true))
    );
    // dave is in South: the channel message to North must not have reached him
    assert!(
        dave.history()
            .iter()
            .all(|e| e["message"] != "unit 7, report")
    );

    let gone = alice.expect(
        |e| e["event"] == "user_joined" && e["name"] == "dave",
        EVENT_TIMEOUT,
    );
    assert_eq!(gone["channel"], "");
    dave.quit();
    alice.expect(
        |e| e["event"] == "user_left" && e["name"] == "dave",
        EVENT_TIMEOUT,
    );
}

#[test]
fn registered_user_needs_its_password() {
    let server = Murmur::builder()
        .channel("North")
        .user("dispatcher", "s3cret")
        .start();
    assert_eq!(server.user_id("dispatcher"), 1);
    let err = Terminal::builder(server.port(), "dispatcher")
        .password("wrong")
        .try_connect()
        .unwrap_err();
    assert!(err.contains("could not join"), "{err}");
    let t = Terminal::builder(server.port(), "dispatcher")
        .password("s3cret")
        .channel("North")
        .connect();
    assert_eq!(t.channel(), "North");
}

#[test]
fn restart_keeps_port_and_channels_and_terminals_reconnect() {
    let mut server = Murmur::start(&["North"]);
    let port = server.port();
    let mut alice = Terminal::connect(port, "alice", Some("North"));

    server.kill();
    assert!(!server.is_running());
    let ev = alice.expect_event("disconnected", EVENT_TIMEOUT);
    println!("alice saw: {ev}");
    assert_eq!(
        alice.wait_exit(EVENT_TIMEOUT).and_then(|s| s.code()),
        Some(2)
    );
    let refused = Terminal::builder(port, "early")
        .ready_timeout(Duration::from_secs(5))
        .try_connect();
    assert!(refused.is_err(), "nothing listens while murmurd is down");

    server.restart();
    assert_eq!(server.port(), port);
    let mut alice = Terminal::connect(port, "alice", Some("North"));
    let mut bob = Terminal::connect(port, "bob", Some("North"));
    bob.text("back");
    let t = alice.expect(|e| e["event"] == "text", EVENT_TIMEOUT);
    assert_eq!(t["message"], "back");
    assert_eq!(
        server
            .log()
            .matches("==== testkit: starting murmurd")
            .count(),
        2,
        "{}",
        server.diagnostics()
    );
}

#[test]
fn restart_on_a_taken_port_fails_naming_the_cause() {
    let mut server = Murmur::start(&[]);
    server.kill();
    // Something else grabs the port while murmurd is down: murmurd would idle without listening, and a
    // handshake on that port would reach the intruder. The restart must fail and say why.
    let intruder = std::net::TcpListener::bind(("127.0.0.1", server.port())).unwrap();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.restart()))
        .expect_err("restart must fail while the port is taken");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("port taken"), "{msg}");
    drop(intruder);
    server.restart();
    Terminal::connect(server.port(), "after", None);
}
