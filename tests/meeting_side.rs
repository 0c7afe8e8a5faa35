//! The meeting side against real peers: an aiortc meeting participant (`tests/peers/meeting.py`)
//! on the bridge's RTCPeer API and WebRTC, Debian's murmurd and pymumble terminals on the PTT side.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::meeting::{Participant, assert_own_srtp_only, hear_from_ptt, speak_into_ptt};
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const NORTH: i64 = 9001;
const REJECTS: i64 = 9002;
const BUSY: i64 = 9003;
const NEVER_ANSWERS: i64 = 9004;

fn meeting_toml() -> String {
    format!(
        r#"
[meeting]
ring_delay_ms = 100
answer_delay_ms = 300
no_answer_timeout_s = 3
[[meeting.apps]]
app_id = "test"
secret = "test"
[[meeting.dial_in]]
user_id = {NORTH}
server = "local"
account = "bridge"
name = "North"
[[meeting.dial_in]]
user_id = {REJECTS}
server = "local"
account = "bridge"
policy = "reject"
[[meeting.dial_in]]
user_id = {BUSY}
server = "local"
account = "bridge"
policy = "busy"
[[meeting.dial_in]]
user_id = {NEVER_ANSWERS}
server = "local"
account = "bridge"
policy = "ignore"
"#
    )
}

fn start(server: &Murmur) -> Bridge {
    start_with(server, "")
}

/// `extra` goes into the `[meeting]` table.
fn start_with(server: &Murmur, extra: &str) -> Bridge {
    let config = format!(
        "{}\n{}",
        ptt_server_toml("local", server, &[("bridge", "North")]),
        meeting_toml().replacen("[meeting]\n", &format!("[meeting]\n{extra}\n"), 1)
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

fn enter(p: &mut Participant, room: i64) -> Value {
    let r = p.request(
        json!({"module":"meeting","method":"enter","userId":p.id(),"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    r
}

fn invite(p: &mut Participant, target: i64, room: i64) -> Value {
    p.request(json!({"module":"call","method":"doInvite","ownUserId":p.id(),"targetUserId":target,"type":1,"roomId":room}))
}

fn from(id: i64) -> impl Fn(&Value) -> bool {
    move |m| m["ownUserId"] == id
}

/// Dials North and completes the call flow up to the link: returns the room.
fn dial_north(p: &mut Participant) -> i64 {
    testkit::meeting::dial_in(p, NORTH, T)
}

/// carol dials North into a new room and brings dave in, who enters: (carol, dave, room).
fn north_room_with_dave(bridge: &Bridge) -> (Participant, Participant, i64) {
    let mut carol = Participant::join(bridge.addr(), "carol");
    let mut dave = Participant::join(bridge.addr(), "dave");
    let room = dial_north(&mut carol);
    bring_in(&mut carol, &mut dave, room);
    enter(&mut dave, room);
    (carol, dave, room)
}

/// `p` plays North and waits until that peer connection is up.
fn play_north(p: &mut Participant) {
    p.cmd(json!({"cmd":"play","client":NORTH}));
    p.expect(
        |e| {
            e["event"] == "pc_state"
                && e["pc"] == format!("play:{NORTH}")
                && e["state"] == "connected"
        },
        T,
    );
}

#[test]
fn dial_in_call_flow_and_audio_both_ways() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut events = bridge.events();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");

    let room = dial_north(&mut carol);
    for kind in ["call.ringing", "call.answered", "link.up"] {
        events
            .try_expect(
                |e| e["type"] == kind && e["group_id"] == format!("meeting:{room}"),
                T,
            )
            .unwrap_or_else(|| panic!("no {kind} event"));
    }

    // PTT → meeting, pass-through: alice speaks in North, carol plays the channel and records.
    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(|e| e["event"] == "published", T);
    carol.cmd(json!({"cmd":"play","client":NORTH}));
    carol.expect(|e| e["event"] == "playing", T);
    carol.expect(
        |e| {
            e["event"] == "pc_state"
                && e["pc"] == format!("play:{NORTH}")
                && e["state"] == "connected"
        },
        T,
    );
    let dir = tempfile::tempdir().unwrap();
    let (cmp, _) = hear_from_ptt(
        &mut carol,
        &mut alice,
        &fixture("audio/speech.wav"),
        &dir.path().join("carol.wav"),
        "PTT → meeting",
    );
    cmp.assert_matches(0.9, 0.1);
    let talking = carol.push("memberTalking", |m| m["talking"] == true, T);
    assert_eq!(
        talking["member"]["name"], "alice",
        "memberTalking names the PTT talker: {talking}"
    );

    // meeting → PTT: carol speaks, bob (pymumble) records what the bridge sent into North.
    speak_into_ptt(
        &mut carol,
        &mut bob,
        &fixture("audio/speech.wav"),
        &dir.path().join("bob.wav"),
        "meeting → PTT",
    )
    .assert_matches(0.85, 0.1);
    events
        .try_expect(
            |e| e["type"] == "talk.started" && e["party"]["side"] == "meeting",
            T,
        )
        .expect("talk.started for the meeting speaker");

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
    let chat = carol.push("onChat", |m| m["content"] == "hello meeting", T);
    assert_eq!(chat["client"]["name"], "alice");

    // Hang-up from the meeting side tears the link down.
    let r = carol.request(
        json!({"module":"call","method":"cancel","ownUserId":carol.id(),"targetUserId":NORTH}),
    );
    assert_eq!(r["result"], 0, "{r}");
    carol.push("ExitRoom", |m| m["client"]["id"] == NORTH, T);
    let down = events
        .try_expect(|e| e["type"] == "link.down", T)
        .expect("link.down");
    assert_eq!(down["group_id"], format!("meeting:{room}"));
    let ended = events
        .try_expect(|e| e["type"] == "call.ended", T)
        .expect("call.ended");
    assert_eq!(ended["detail"]["reason"], "hangup");
    assert!(bridge.metric("pttbridge_meeting_rtp_total", &[("direction", "out")]) > 100.0);
    assert_own_srtp_only(&bridge);

    // The side's metrics: calls, links, RTP both ways, jitter buffers, errors by kind.
    let text = bridge.get("/metrics").body;
    for name in [
        "pttbridge_meeting_calls_total{kind=\"dial_in\"}",
        "pttbridge_meeting_calls_ended_total{reason=\"hangup\"}",
        "pttbridge_meeting_calls ",
        "pttbridge_meeting_links ",
        "pttbridge_meeting_links_total",
        "pttbridge_meeting_rtp_total{direction=\"in\"}",
        "pttbridge_meeting_rtp_total{direction=\"out\"}",
        "pttbridge_meeting_rtp_total{direction=\"ptt_in\"}",
        "pttbridge_meeting_rtp_total{direction=\"ptt_out\"}",
        "pttbridge_meeting_jitter_depth_seconds_bucket{direction=\"ptt_in\",le=",
        "pttbridge_meeting_jitter_depth_seconds_bucket{direction=\"meeting_in\",le=",
        "pttbridge_meeting_bridge_latency_seconds_bucket{route=\"direct\",le=",
        "pttbridge_meeting_peers_connected ",
        "pttbridge_meeting_to_ptt_gaps_total ",
        "pttbridge_meeting_to_ptt_gap_seconds_count ",
        "pttbridge_meeting_tick_delay_seconds_bucket{le=",
    ] {
        assert!(text.contains(name), "{name} not exported:\n{text}");
    }
    assert_eq!(bridge.metric("pttbridge_meeting_calls ", &[]), 0.0);
    assert_eq!(bridge.metric("pttbridge_meeting_links ", &[]), 0.0);

    // One audio-health observation per talk burst and side: alice's burst came in from PTT,
    // carol's from the meeting, both clean on loopback (under 5 % of packets lost or late).
    for side in ["ptt", "meeting"] {
        for kind in ["lost", "late"] {
            let labels = [("side", side), ("kind", kind)];
            let bursts = bridge.metric("pttbridge_talk_burst_impaired_ratio_count", &labels);
            assert!(bursts >= 1.0, "no {side} burst measured");
            let clean = bridge.metric(
                "pttbridge_talk_burst_impaired_ratio_bucket",
                &[("side", side), ("kind", kind), ("le", "0.05")],
            );
            assert_eq!(clean, bursts, "{side} bursts with over 5 % {kind}:\n{text}");
            // Ratio buckets (0 to 1), not the seconds ones.
            let fifth = bridge.metric(
                "pttbridge_talk_burst_impaired_ratio_bucket",
                &[("side", side), ("kind", kind), ("le", "0.2")],
            );
            assert_eq!(fifth, bursts, "ratio buckets missing:\n{text}");
        }
        let depth = bridge.metric(
            "pttbridge_talk_burst_jitter_depth_seconds_count",
            &[("side", side)],
        );
        assert!(depth >= 1.0, "no {side} jitter depth per burst");
    }
    // The bridge's account joined North once; the events reached this test's SSE stream.
    assert!(bridge.metric("pttbridge_ptt_join_seconds_count", &[]) >= 1.0);
    assert!(bridge.metric("pttbridge_event_delivery_seconds_count", &[("sink", "sse")]) >= 3.0);
}

#[test]
fn reject_busy_no_answer_and_cancel() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut events = bridge.events();
    let mut carol = Participant::join(bridge.addr(), "carol");
    let room = new_room(&mut carol);
    enter(&mut carol, room);

    assert_eq!(invite(&mut carol, REJECTS, room)["result"], 0);
    carol.push("reject", from(REJECTS), T);
    let e = events
        .try_expect(|e| e["type"] == "call.ended", T)
        .expect("ended");
    assert_eq!(e["detail"]["reason"], "rejected");

    assert_eq!(invite(&mut carol, BUSY, room)["result"], 0);
    let busy = carol.push("doEvent", from(BUSY), T);
    assert_eq!(busy["event"], "onBusy");
    let e = events
        .try_expect(|e| e["type"] == "call.ended", T)
        .expect("ended");
    assert_eq!(e["detail"]["reason"], "busy");

    assert_eq!(invite(&mut carol, NEVER_ANSWERS, room)["result"], 0);
    assert_eq!(
        carol.push("doEvent", from(NEVER_ANSWERS), T)["event"],
        "onRinging"
    );
    let timeout = carol.push("reject", from(NEVER_ANSWERS), Duration::from_secs(6));
    assert_eq!(timeout["reason"], "noAnswer");
    let e = events
        .try_expect(|e| e["type"] == "call.ended", T)
        .expect("ended");
    assert_eq!(e["detail"]["reason"], "no_answer");

    assert_eq!(invite(&mut carol, NEVER_ANSWERS, room)["result"], 0);
    carol.push("doEvent", from(NEVER_ANSWERS), T);
    let r = carol.request(json!({"module":"call","method":"cancel","ownUserId":carol.id(),"targetUserId":NEVER_ANSWERS}));
    assert_eq!(r["result"], 0, "{r}");
    let e = events
        .try_expect(|e| e["type"] == "call.ended", T)
        .expect("ended");
    assert_eq!(e["detail"]["reason"], "cancelled");
    assert!(
        carol
            .try_push("reject", from(NEVER_ANSWERS), Duration::from_secs(4))
            .is_none(),
        "a cancelled call does not time out later"
    );

    // Busy because the channel is already linked into another room.
    let mut dave = Participant::join(bridge.addr(), "dave");
    dial_north(&mut dave);
    let room2 = new_room(&mut carol);
    enter(&mut carol, room2);
    assert_eq!(invite(&mut carol, NORTH, room2)["result"], 0);
    assert_eq!(carol.push("doEvent", from(NORTH), T)["event"], "onBusy");
}

#[test]
fn bad_input_gets_protocol_errors_and_the_connection_stays() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut carol = Participant::join(bridge.addr(), "carol");

    let r = carol.raw("{not json");
    assert_eq!(r["result"], 400, "{r}");
    assert!(r["message"].as_str().unwrap().contains("malformed JSON"));
    let r = carol.raw(r#"{"module":"call","method":"teleport","ownUserId":1}"#);
    assert_eq!(
        (
            r["result"].as_i64(),
            r["module"].as_str(),
            r["method"].as_str()
        ),
        (Some(404), Some("call"), Some("teleport"))
    );
    let r = carol.raw(r#"{"module":"nope","method":"x"}"#);
    assert_eq!(r["result"], 404);
    let r = carol.raw(r#"{"method":"doInvite"}"#);
    assert_eq!(r["result"], 400);
    let r = carol.raw(r#"{"module":"call","method":"doInvite","ownUserId":1}"#);
    assert_eq!(r["result"], 422, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("missing field"),
        "{r}"
    );

    let room = new_room(&mut carol);
    let r = invite(&mut carol, 424242, room);
    assert_eq!(r["result"], 1, "unknown callee: {r}");
    assert!(r["message"].as_str().unwrap().contains("not online"));
    // An unknown room and someone else's answer alike (403): room ids cannot be probed.
    let r = invite(&mut carol, NORTH, 1);
    assert_eq!(r["result"], 403, "unknown room: {r}");
    let r = carol.request(json!({"module":"meeting","method":"publish","audio":true,"video":false,"sdp":"v=0\r\nthis is not sdp"}));
    assert_eq!(r["result"], 409, "publish before enter: {r}");
    enter(&mut carol, room);
    let r = carol.request(json!({"module":"meeting","method":"publish","audio":true,"video":false,"sdp":"v=0\r\nthis is not sdp"}));
    assert_eq!(r["result"], 488, "invalid SDP: {r}");
    let r = carol.request(json!({"module":"meeting","method":"play","client":{"id":5},"sdp":"x"}));
    assert_eq!(r["result"], 404, "play of nobody: {r}");
    let r = carol.request(json!({"module":"call","method":"doAgree","ownUserId":carol.id(),"targetUserId":NORTH,"roomId":room}));
    assert_eq!(r["result"], 409, "agree without a call: {r}");

    // Still up, still served: a real offer is answered after all that.
    carol.cmd(json!({"cmd":"publish"}));
    let p = carol.expect(
        |e| e["event"] == "published" || e["event"] == "publish_failed",
        T,
    );
    assert_eq!(p["event"], "published", "{p}");
    carol.expect(
        |e| e["event"] == "pc_state" && e["pc"] == "publish" && e["state"] == "connected",
        T,
    );
    assert!(bridge.metric("pttbridge_meeting_errors_total", &[]) >= 8.0);
    // An unregistered connection is refused politely too.
    assert_eq!(bridge.health()["status"], "ok");
}

/// A participant that offers video too: the answer keeps the video m-line bundled but inactive
/// (aiortc cannot take a rejected one, see `peer::keep_declined_in_bundle`), and audio flows both
/// ways as usual.
/// Also the NAT settings at work: rooms bind to every address but announce 127.0.0.1, from a
/// port range, and the aiortc client's media flows both ways through them.
#[test]
fn video_offer_is_answered_audio_only() {
    let server = Murmur::start(&["North"]);
    let min = testkit::peers::free_port();
    let max = min.saturating_add(9);
    let bridge = start_with(
        &server,
        &format!("rtc_bind_ip = \"0.0.0.0\"\nrtc_port_min = {min}\nrtc_port_max = {max}"),
    );
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    dial_north(&mut carol);
    let dir = tempfile::tempdir().unwrap();

    carol.cmd(json!({"cmd":"publish","video":true}));
    let p = carol.expect(
        |e| ["published", "publish_failed", "error"].contains(&e["event"].as_str().unwrap_or("")),
        T,
    );
    assert_eq!(p["event"], "published", "{p}");
    let answer = p["sdp_answer"].as_str().unwrap();
    assert!(
        answer.contains("m=video 9 ") && answer.contains("a=inactive"),
        "{answer}"
    );
    let candidate_port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=candidate:"))
        .and_then(|c| c.split_whitespace().nth(5)?.parse().ok())
        .unwrap_or_else(|| panic!("a host candidate: {answer}"));
    assert!(
        (min..=max).contains(&candidate_port) && answer.contains(" 127.0.0.1 "),
        "the room announces 127.0.0.1 and a port of {min}-{max}: {answer}"
    );
    carol.cmd(json!({"cmd":"play","client":NORTH,"video":true}));
    let p = carol.expect(
        |e| ["playing", "play_failed", "error"].contains(&e["event"].as_str().unwrap_or("")),
        T,
    );
    assert_eq!(p["event"], "playing", "{p}");
    for pc in ["publish".to_owned(), format!("play:{NORTH}")] {
        carol.expect(
            |e| e["event"] == "pc_state" && e["pc"] == pc.as_str() && e["state"] == "connected",
            T,
        );
    }

    speak_into_ptt(
        &mut carol,
        &mut bob,
        &fixture("audio/speech.wav"),
        &dir.path().join("bob.wav"),
        "meeting (with a video m-line) → PTT",
    )
    .assert_matches(0.85, 0.1);

    hear_from_ptt(
        &mut carol,
        &mut alice,
        &fixture("audio/speech.wav"),
        &dir.path().join("carol.wav"),
        "PTT → meeting (with a video m-line)",
    )
    .0
    .assert_matches(0.9, 0.1);
}

/// Threads that keep every core busy until dropped: a machine shared with other work.
struct Busy {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Busy {
    fn start(n: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                    x
                })
            })
            .collect();
        Busy { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A meeting speaker's utterance reaches the PTT channel in one piece while every core is busy
/// with other work (two spinning threads, on top of murmurd, pymumble and aiortc): one talk
/// burst, the floor held through the pauses between phrases, every word there.
#[test]
fn meeting_speech_reaches_ptt_in_one_piece_on_a_busy_machine() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut events = bridge.events();
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    dial_north(&mut carol);
    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(|e| e["event"] == "published", T);
    carol.expect(
        |e| e["event"] == "pc_state" && e["pc"] == "publish" && e["state"] == "connected",
        T,
    );
    let dir = tempfile::tempdir().unwrap();
    let busy = Busy::start(2);
    let cmp = speak_into_ptt(
        &mut carol,
        &mut bob,
        &fixture("audio/speech.wav"),
        &dir.path().join("bob.wav"),
        "meeting → PTT on a busy machine",
    );
    drop(busy);
    cmp.assert_matches(0.85, 0.1);
    // One burst on the meeting side too: carol started talking once and stopped once.
    std::thread::sleep(Duration::from_millis(500));
    let talk: Vec<String> = events
        .history()
        .iter()
        .filter(|e| {
            e["party"]["side"] == "meeting"
                && (e["type"] == "talk.started" || e["type"] == "talk.stopped")
        })
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(talk, ["talk.started", "talk.stopped"], "carol's talk state");
    println!(
        "busy machine: {} frames of the speaker's audio missing mid-burst (filled in without moving \
         on); room tick delay mean {:.2} ms",
        bridge.metric("pttbridge_meeting_to_ptt_gaps_total", &[]),
        bridge.metric("pttbridge_meeting_tick_delay_seconds_sum", &[]) * 1000.0
            / bridge
                .metric("pttbridge_meeting_tick_delay_seconds_count", &[])
                .max(1.0),
    );
}

/// A sine tone WAV (48 kHz mono, amplitude 0.3) in `dir`.
fn tone_wav(dir: &tempfile::TempDir, name: &str, freq: f64, secs: f64) -> std::path::PathBuf {
    let path = dir.path().join(name);
    let samples: Vec<f32> = media::signal::sine(48_000, freq, TONE, secs)
        .iter()
        .map(|s| f32::from(*s) / 32767.0)
        .collect();
    testkit::audio::write_wav(&path, &samples).unwrap();
    path
}

const TONE: f64 = 0.3;

/// Amplitude (0..1) of `freq` in each 100 ms window of a recording.
fn tone_track(path: &std::path::Path, freq: f64) -> Vec<f64> {
    let pcm: Vec<i16> = testkit::audio::load_wav(path)
        .iter()
        .map(|s| (s * 32767.0) as i16)
        .collect();
    pcm.chunks_exact(4800)
        .map(|w| media::signal::tone_amplitude(w, 48_000, freq))
        .collect()
}

/// Two PTT talkers at once: both are heard in the meeting (mixed), and the listener's RTP
/// timeline runs on without a jump through pass-through → mix → pass-through. Default
/// (direct) pass-through: the lone talker's packets are forwarded on arrival until bob starts.
#[test]
fn two_ptt_talkers_are_mixed_without_timestamp_jumps() {
    two_ptt_talkers("");
}

/// The same with `passthrough = "buffered"` (every packet through the link's jitter buffer).
#[test]
fn two_ptt_talkers_buffered_pass_through() {
    two_ptt_talkers("passthrough = \"buffered\"");
}

fn two_ptt_talkers(extra: &str) {
    let server = Murmur::start(&["North"]);
    let bridge = start_with(&server, extra);
    let dir = tempfile::tempdir().unwrap();
    let (low, high) = (440.0, 1000.0);
    let a_wav = tone_wav(&dir, "a.wav", low, 4.0);
    let b_wav = tone_wav(&dir, "b.wav", high, 2.0);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    dial_north(&mut carol);
    carol.cmd(json!({"cmd":"play","client":NORTH}));
    carol.expect(
        |e| {
            e["event"] == "pc_state"
                && e["pc"] == format!("play:{NORTH}")
                && e["state"] == "connected"
        },
        T,
    );
    carol.record_start();

    alice.play(&a_wav);
    std::thread::sleep(Duration::from_millis(1000));
    bob.play(&b_wav);
    alice.expect_event("play_done", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(800));
    let heard = dir.path().join("carol.wav");
    let rec = carol.record_stop(&heard);
    println!("recorded: {rec}");

    for who in ["alice", "bob"] {
        carol.push(
            "memberTalking",
            |m| m["talking"] == true && m["member"]["name"] == who,
            T,
        );
    }
    let a = tone_track(&heard, low);
    let b = tone_track(&heard, high);
    let on = TONE * 0.4;
    let both = a
        .iter()
        .zip(&b)
        .filter(|(a, b)| **a > on && **b > on)
        .count();
    let alice_only = a
        .iter()
        .zip(&b)
        .filter(|(a, b)| **a > on && **b < on / 4.0)
        .count();
    println!(
        "windows: {} with both tones, {alice_only} with alice alone; levels 440 Hz {a:.2?}, 1000 Hz {b:.2?}",
        both
    );
    assert!(
        both >= 14,
        "both talkers heard at once for 1.4 s of bob's 2 s"
    );
    assert!(
        alice_only >= 15,
        "alice alone before and after bob (pass-through)"
    );
    // One RTP timeline: every frame follows the previous one by exactly its length.
    assert_eq!(
        rec["pts_odd"],
        json!([]),
        "RTP timestamp jumps: {}",
        rec["pts_steps"]
    );
    assert!(rec["frames"].as_u64().unwrap() >= 190, "{rec}");
    assert!(
        bridge.metric(
            "pttbridge_meeting_bridge_latency_seconds_count",
            &[("route", "mix")]
        ) > 0.0,
        "the mix route was taken"
    );
    let lone = if extra.is_empty() {
        "direct"
    } else {
        "passthrough"
    };
    assert!(
        bridge.metric(
            "pttbridge_meeting_bridge_latency_seconds_count",
            &[("route", lone)]
        ) > 30.0,
        "alice alone went {lone}"
    );
}

/// Floor: while a PTT user talks the meeting speaker is not sent into the channel (floor.denied);
/// when the PTT user stops, the meeting speaker gets the floor and the channel hears them.
#[test]
fn ptt_talker_holds_the_floor_then_the_meeting_gets_it() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut events = bridge.events();
    let dir = tempfile::tempdir().unwrap();
    let (low, high) = (440.0, 1000.0);
    let ptt_wav = tone_wav(&dir, "ptt.wav", low, 3.0);
    let meeting_wav = tone_wav(&dir, "meeting.wav", high, 6.0);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    let room = dial_north(&mut carol);
    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(
        |e| e["event"] == "pc_state" && e["pc"] == "publish" && e["state"] == "connected",
        T,
    );

    bob.record_start();
    alice.play(&ptt_wav);
    std::thread::sleep(Duration::from_millis(500));
    carol.speak(&meeting_wav);
    let denied = events
        .try_expect(|e| e["type"] == "floor.denied", T)
        .expect("floor.denied while alice talks");
    assert_eq!(denied["group_id"], format!("meeting:{room}"));
    assert_eq!(denied["detail"]["holder"]["name"], "alice", "{denied}");
    carol.expect(|e| e["event"] == "speak_done", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000));
    let bob_wav = dir.path().join("bob.wav");
    let rec = bob.record_stop(&bob_wav);
    println!("bob heard: {rec}");
    let speaker = |name: &str| {
        rec["speakers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("bob did not hear {name}: {rec}"))
    };
    let (a, m) = (speaker("alice"), speaker("bridge"));
    let alice_end = a["last_s"].as_f64().unwrap();
    let meeting_start = m["first_s"].as_f64().unwrap();
    assert!(
        meeting_start >= alice_end - 0.05,
        "the meeting was sent over alice: it started at {meeting_start:.2} s, she stopped at {alice_end:.2} s"
    );
    assert!(
        meeting_start - alice_end < 1.5,
        "the meeting got the floor {:.2} s after alice stopped",
        meeting_start - alice_end
    );
    // What the bridge sent is the meeting speaker's tone, for the rest of their speech.
    let voice = m["voice_seconds"].as_f64().unwrap();
    assert!(voice > 2.0, "meeting voice {voice:.2} s");
    let bridge_track = tone_track(std::path::Path::new(m["wav"].as_str().unwrap()), high);
    let loud = bridge_track.iter().filter(|a| **a > TONE * 0.4).count();
    assert!(
        loud >= 20,
        "1000 Hz heard from the bridge in {loud} windows"
    );
    let alice_track = tone_track(std::path::Path::new(a["wav"].as_str().unwrap()), high);
    assert!(
        alice_track.iter().all(|a| *a < TONE * 0.1),
        "no meeting audio in alice's stream"
    );
    events
        .try_expect(
            |e| e["type"] == "talk.started" && e["party"]["side"] == "meeting",
            T,
        )
        .expect("talk.started for the meeting speaker");
    assert!(bridge.metric("pttbridge_meeting_floor_denied_total", &[]) >= 1.0);
}

/// carol dials North, publishes and speaks a long tone until the bridge holds the PTT floor for
/// her; bob records the channel. Returns when the channel hears her, with bob recording since
/// the returned instant.
fn meeting_holds_the_floor(
    bridge: &Bridge,
    events: &mut testkit::events::EventQueue,
    carol: &mut Participant,
    bob: &mut Terminal,
    dir: &tempfile::TempDir,
) -> (i64, std::time::Instant) {
    let room = dial_north(carol);
    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(
        |e| e["event"] == "pc_state" && e["pc"] == "publish" && e["state"] == "connected",
        T,
    );
    carol.cmd(json!({"cmd":"play","client":NORTH}));
    carol.expect(
        |e| {
            e["event"] == "pc_state"
                && e["pc"] == format!("play:{NORTH}")
                && e["state"] == "connected"
        },
        T,
    );
    bob.record_start();
    let since = std::time::Instant::now();
    carol.speak(&tone_wav(dir, "long.wav", 1000.0, 20.0));
    events
        .try_expect(
            |e| e["type"] == "talk.started" && e["party"]["side"] == "meeting",
            T,
        )
        .expect("the meeting speaker takes the floor");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(bridge.metric("pttbridge_meeting_rtp_total", &[("direction", "ptt_out")]) > 20.0);
    (room, since)
}

/// After the meeting side vanished at `gone` (bob recording since `since`): the link is down
/// within 10 s, the call ended, the channel stopped hearing the meeting, nothing is left over.
fn assert_released(
    bridge: &Bridge,
    events: &mut testkit::events::EventQueue,
    bob: &mut Terminal,
    dir: &tempfile::TempDir,
    room: i64,
    since: std::time::Instant,
    gone: std::time::Instant,
) {
    let down = events
        .try_expect(|e| e["type"] == "link.down", Duration::from_secs(10))
        .expect("link.down within 10 s");
    let took = gone.elapsed();
    println!("link down {took:?} after the participant vanished: {down}");
    assert_eq!(down["group_id"], format!("meeting:{room}"));
    let ended = events
        .try_expect(|e| e["type"] == "call.ended", T)
        .expect("call.ended");
    assert_eq!(ended["detail"]["reason"], "gone", "{ended}");
    let h = bridge.health();
    assert_eq!(h["sides"]["meeting"]["links"], json!([]), "{h}");
    assert_eq!(h["sides"]["meeting"]["calls"], 0, "{h}");
    assert_eq!(bridge.metric("pttbridge_meeting_links ", &[]), 0.0);
    assert_eq!(bridge.metric("pttbridge_meeting_peers ", &[]), 0.0);
    // The channel stopped hearing the meeting soon after it vanished (VAD hangover, no more).
    std::thread::sleep(Duration::from_millis(1000));
    let rec = bob.record_stop(&dir.path().join("bob.wav"));
    let bridge_voice = rec["speakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "bridge")
        .cloned()
        .unwrap_or_else(|| panic!("bob never heard the meeting: {rec}"));
    let stopped = bridge_voice["last_s"].as_f64().unwrap();
    let vanished = (gone - since).as_secs_f64();
    println!(
        "meeting voice stopped {:.2} s after the participant vanished",
        stopped - vanished
    );
    assert!(
        stopped < vanished + 1.5,
        "the bridge kept the floor: voice until {stopped:.2} s, participant gone at {vanished:.2} s"
    );
}

/// SIGKILL the meeting participant (caller, speaker, floor holder) mid-call.
#[test]
fn killed_participant_releases_floor_and_link() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut events = bridge.events();
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    let (room, since) = meeting_holds_the_floor(&bridge, &mut events, &mut carol, &mut bob, &dir);
    carol.kill();
    let gone = std::time::Instant::now();
    assert_released(&bridge, &mut events, &mut bob, &dir, room, since, gone);
    // The channel is free: a PTT user talks and nobody is denied.
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    alice.play_and_wait(&tone_wav(&dir, "short.wav", 440.0, 0.5), T);
    assert_eq!(bridge.health()["status"], "ok");
}

/// SIGSTOP the participant: its sockets stay open and silent. ICE consent checks notice the
/// WebRTC peers are gone; the signalling socket's ping timeout lets the client go; the floor and
/// the link are released within 10 s.
#[test]
fn frozen_participant_is_noticed_by_ice_and_socket_timeouts() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut events = bridge.events();
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    let (room, since) = meeting_holds_the_floor(&bridge, &mut events, &mut carol, &mut bob, &dir);
    let lost_before = bridge.metric("pttbridge_meeting_peers_lost_total", &[]);
    carol.freeze();
    let gone = std::time::Instant::now();
    assert_released(&bridge, &mut events, &mut bob, &dir, room, since, gone);
    assert_eq!(
        bridge.metric("pttbridge_meeting_peers_lost_total", &[]) - lost_before,
        2.0,
        "both WebRTC peers (publish, play) were found dead by ICE before the socket timed out"
    );
    assert_eq!(
        bridge.metric("pttbridge_meeting_errors_total", &[("kind", "ws_timeout")]),
        1.0
    );
}

/// murmurd dies mid-call while a PTT user talks: the meeting hears the talk end cleanly (no
/// noise, no clipping, nothing during the outage); the link stays, the bridge's PTT account
/// comes back after murmurd restarts, and audio flows both ways again.
#[test]
fn murmurd_killed_mid_call_then_the_link_comes_back() {
    let mut server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut events = bridge.events();
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    dial_north(&mut carol);
    carol.cmd(json!({"cmd":"publish"}));
    carol.cmd(json!({"cmd":"play","client":NORTH}));
    for pc in ["publish".to_owned(), format!("play:{NORTH}")] {
        carol.expect(
            |e| e["event"] == "pc_state" && e["pc"] == pc.as_str() && e["state"] == "connected",
            T,
        );
    }

    carol.record_start();
    alice.play(&tone_wav(&dir, "long.wav", 440.0, 8.0));
    carol.push("memberTalking", |m| m["talking"] == true, T);
    std::thread::sleep(Duration::from_millis(2000));
    server.kill();
    // pymumble would reconnect on its own and go on with the tone: this terminal is done.
    drop(alice);
    events
        .try_expect(|e| e["type"] == "side.disconnected", T)
        .expect("side.disconnected");
    carol.push("memberTalking", |m| m["talking"] == false, T);
    std::thread::sleep(Duration::from_millis(3000));
    let outage = dir.path().join("outage.wav");
    let rec = carol.record_stop(&outage);
    println!("around the outage: {rec}");

    // What the meeting heard: the tone, then it ends; no burst, no clipping, no noise after.
    let pcm = testkit::audio::load_wav(&outage);
    let peak = pcm.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(
        peak < 0.4,
        "peak {peak:.3} for a 0.3 tone: a burst or clipping"
    );
    let tone = tone_track(&outage, 440.0);
    let last = tone
        .iter()
        .rposition(|a| *a > TONE * 0.5)
        .expect("the tone was heard");
    assert!(last >= 15, "about 2 s of tone before the kill: {tone:.2?}");
    for (i, w) in pcm.chunks_exact(4800).enumerate().take(last) {
        let rms = testkit::audio::rms(w) as f64;
        let clean = (tone[i] / std::f64::consts::SQRT_2) / rms.max(1e-9);
        assert!(
            clean > 0.9,
            "window {i}: only {:.0} % of the energy is the tone",
            clean * 100.0
        );
    }
    let tail = &pcm[((last + 2) * 4800).min(pcm.len())..];
    let tail_peak = tail.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(
        tail_peak < 0.01,
        "after the talk ended: peak {tail_peak:.3} ({} samples)",
        tail.len()
    );
    assert!(
        (rec["frames"].as_u64().unwrap() as f64) < 50.0 * 3.0,
        "nothing sent while murmurd was down: {rec}"
    );
    assert_eq!(rec["pts_odd"], json!([]), "{rec}");

    // murmurd returns: the bridge's account rejoins North and the link never went down.
    server.restart();
    bridge.wait_health(
        "connected in North again",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    assert_eq!(
        bridge.health()["sides"]["meeting"]["links"][0]["dial_in"],
        NORTH
    );
    assert!(
        events.history().iter().all(|e| e["type"] != "link.down"),
        "the link stayed up"
    );

    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    carol.record_start();
    alice.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    let heard = dir.path().join("after.wav");
    carol.record_stop(&heard);
    // aiortc's audio jitter buffer (prefetch 4) may hold the last packets of the burst before
    // the outage until the next one arrives: then the tone's tail opens this recording and the
    // RTP timeline's gap (kept as zeros) follows it. On a busy machine it may have let them go
    // before this recording started: then it opens with the new speech, and no tone may be in
    // it at all. Either way what follows is compared.
    let pcm = testkit::audio::load_wav(&heard);
    let gap = pcm
        .windows(48_000)
        .position(|w| w.iter().all(|s| *s == 0.0));
    let after: Vec<f32> = match gap {
        Some(gap) => {
            assert!(gap < 12_000, "stale audio before the gap: {gap} samples");
            let stale_peak = pcm[..gap].iter().fold(0f32, |m, s| m.max(s.abs()));
            assert!(
                stale_peak < 0.4,
                "the tone's held-back tail: peak {stale_peak:.3}"
            );
            pcm[gap..].to_vec()
        }
        None => {
            // No gap means nothing from before the outage: the tone must not be there (a
            // timeline that closed the outage up would put it right before the speech).
            let tone = tone_track(&heard, 440.0);
            assert!(
                tone.iter().all(|a| *a < TONE * 0.2),
                "no gap on the RTP timeline, yet the tone from before the outage: {tone:.2?}"
            );
            pcm
        }
    };
    let cmp = testkit::audio::compare(
        &testkit::audio::load_wav(fixture("audio/speech.wav")),
        &after,
    );
    println!("PTT → meeting after the restart: {cmp}");
    cmp.assert_matches(0.9, 0.1);

    speak_into_ptt(
        &mut carol,
        &mut bob,
        &fixture("audio/speech.wav"),
        &dir.path().join("bob.wav"),
        "meeting → PTT after the restart",
    )
    .assert_matches(0.85, 0.1);
}

/// Hang-up from the bridge side: the operator's HTTP route, and `/hangup` typed in the PTT
/// channel. Either way the caller gets `cancel {reason:"hangup"}`, the channel leaves the room.
#[test]
fn hang_up_from_the_operator_and_from_the_ptt_channel() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut events = bridge.events();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");

    let expect_hung_up =
        |carol: &mut Participant, events: &mut testkit::events::EventQueue, room: i64| {
            let cancel = carol.push("cancel", from(NORTH), T);
            assert_eq!(cancel["reason"], "hangup", "{cancel}");
            carol.push(
                "ExitRoom",
                |m| m["client"]["id"] == NORTH && m["roomId"] == room,
                T,
            );
            let down = events
                .try_expect(|e| e["type"] == "link.down", T)
                .expect("link.down");
            assert_eq!(down["detail"]["reason"], "hangup");
            assert_eq!(down["group_id"], format!("meeting:{room}"));
            let ended = events
                .try_expect(|e| e["type"] == "call.ended", T)
                .expect("call.ended");
            assert_eq!(ended["detail"]["reason"], "hangup");
        };

    let room = dial_north(&mut carol);
    let links = bridge.get("/meeting/links").json();
    assert_eq!(links["links"].as_array().map(Vec::len), Some(1), "{links}");
    assert_eq!(links["links"][0]["dial_in"], NORTH, "{links}");
    assert_eq!(links["links"][0]["room"], room, "{links}");
    // How long it has been up (the page's live view ticks on from it).
    assert!(links["links"][0]["up_ms"].is_u64(), "{links}");
    let r = bridge.request("POST", &format!("/meeting/links/{NORTH}/hangup"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["code"], 0);
    expect_hung_up(&mut carol, &mut events, room);
    assert_eq!(bridge.get("/meeting/links").json()["links"], json!([]));
    let r = bridge.request("POST", &format!("/meeting/links/{NORTH}/hangup"), None);
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (404, json!(404)),
        "{}",
        r.body
    );
    let r = bridge.request("POST", "/meeting/links/north/hangup", None);
    assert_eq!(r.status, 400, "{}", r.body);

    // Called again, hung up by a PTT user in the channel.
    let room = dial_north(&mut carol);
    alice.text("/hangup");
    expect_hung_up(&mut carol, &mut events, room);
    assert_eq!(bridge.health()["sides"]["meeting"]["links"], json!([]));
}

/// A participant that only speaks G.711 µ-law (aiortc forced to PCMU): the bridge transcodes
/// both ways (PTT Opus ⇄ PCMU 8 kHz), held to the same bars as Opus (speech windows are
/// dominated by the band G.711 keeps; measured medians ≈ 0.99 and 0.98).
#[test]
fn g711_participant_is_bridged_both_ways() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    dial_north(&mut carol);
    carol.cmd(json!({"cmd":"publish","codec":"PCMU"}));
    let p = carol.expect(
        |e| e["event"] == "published" || e["event"] == "publish_failed",
        T,
    );
    let answer = p["sdp_answer"].as_str().unwrap_or_default();
    assert!(
        answer.contains("PCMU/8000") && !answer.contains("opus"),
        "{p}"
    );
    carol.cmd(json!({"cmd":"play","client":NORTH,"codec":"PCMU"}));
    let p = carol.expect(
        |e| e["event"] == "playing" || e["event"] == "play_failed",
        T,
    );
    let answer = p["sdp_answer"].as_str().unwrap_or_default();
    assert!(
        answer.contains("PCMU/8000") && !answer.contains("opus"),
        "{p}"
    );
    for pc in ["publish".to_owned(), format!("play:{NORTH}")] {
        carol.expect(
            |e| e["event"] == "pc_state" && e["pc"] == pc.as_str() && e["state"] == "connected",
            T,
        );
    }

    let (cmp, rec) = hear_from_ptt(
        &mut carol,
        &mut alice,
        &fixture("audio/speech.wav"),
        &dir.path().join("carol.wav"),
        "PTT → meeting as PCMU",
    );
    assert_eq!(rec["rate"], 8000, "{rec}");
    assert_eq!(rec["pts_odd"], json!([]), "{rec}");
    cmp.assert_matches(0.9, 0.1);
    // 8 kHz RTP from the room's own SRTP writer: the clock rescaled, and aiortc decrypts it.
    assert_own_srtp_only(&bridge);

    speak_into_ptt(
        &mut carol,
        &mut bob,
        &fixture("audio/speech.wav"),
        &dir.path().join("bob.wav"),
        "meeting as PCMU → PTT",
    )
    .assert_matches(0.85, 0.1);
}

/// `guest` is called into `host`'s room and agrees (spec 4.1, 4.2, 4.7): it may enter now.
fn bring_in(host: &mut Participant, guest: &mut Participant, room: i64) {
    let r = invite(host, guest.id(), room);
    assert_eq!(r["result"], 0, "{r}");
    guest.push("doInvite", from(host.id()), T);
    let r = guest.request(
        json!({"module":"call","method":"doAgree","ownUserId":guest.id(),
        "targetUserId":host.id(),"roomId":room}),
    );
    assert_eq!(r["result"], 0, "{r}");
    host.push("doAgree", from(guest.id()), T);
    let r = host.request(
        json!({"module":"call","method":"doEvent","ownUserId":host.id(),
        "targetUserId":guest.id(),"event":"onConnected","roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
}

/// The fixture speech after `lead_in` seconds of a quiet 440 Hz tone (-40 dBFS): one talk
/// burst whose first part is too quiet to count as speech in the comparison.
fn lead_in_wav(dir: &tempfile::TempDir, lead_in: f64) -> std::path::PathBuf {
    let mut samples: Vec<f32> = media::signal::sine(48_000, 440.0, 0.01, lead_in)
        .iter()
        .map(|s| f32::from(*s) / 32767.0)
        .collect();
    samples.extend(testkit::audio::load_wav(fixture("audio/speech.wav")));
    let path = dir.path().join("lead_in.wav");
    testkit::audio::write_wav(&path, &samples).unwrap();
    path
}

/// What `p` receives for `secs` (RMS of the recording in 16-bit units, and its frames).
fn received_level(p: &mut Participant, dir: &tempfile::TempDir, name: &str, secs: f64) -> f64 {
    p.record_start();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let rec = p.record_stop(&dir.path().join(name));
    println!("{name}: {rec}");
    rec["rms"].as_f64().expect("rms")
}

/// Issue 18, item 4 and the refusals of item 1. dave enters while alice talks on PTT: his
/// `enter` reply lists the channel (and carol as the compere), then — after the reply, never
/// before — he is told what he missed: the channel's EnterRoom, its onPublished and alice as
/// the talker. He plays the channel mid-burst and hears alice (correlation >= 0.9). He is not
/// the compere: his finish, kickOut, muteAll, muteMsg and setCompere are refused (403) and
/// change nothing (the link stays, he still hears alice). carol hands him the compere role:
/// both get onCompere, and now carol is the one refused.
#[test]
fn late_joiner_hears_the_channel_mid_talk_and_only_the_compere_moderates() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    let mut dave = Participant::join(bridge.addr(), "dave");
    let room = dial_north(&mut carol);
    bring_in(&mut carol, &mut dave, room);

    // alice's burst: a quiet lead-in, long enough for dave to enter and play, then speech.
    const LEAD_IN: f64 = 6.0;
    let wav = lead_in_wav(&dir, LEAD_IN);
    alice.play(&wav);
    let started = std::time::Instant::now();
    carol.push(
        "memberTalking",
        |m| m["talking"] == true && m["member"]["name"] == "alice",
        T,
    );

    let entered = enter(&mut dave, room);
    let members = entered["members"].as_array().expect("members");
    let north = members
        .iter()
        .find(|m| m["id"] == NORTH)
        .unwrap_or_else(|| panic!("the channel is not in members: {entered}"));
    assert_eq!(north["mode"], "ptt", "{entered}");
    assert_eq!(north["isMuted"], false, "{entered}");
    let compere = members.iter().find(|m| m["id"] == carol.id()).unwrap();
    assert_eq!(compere["isSuperModerator"], true, "{entered}");
    assert_eq!(entered["client"]["isSuperModerator"], false, "{entered}");
    assert_eq!(entered["room"]["superModeId"], carol.id(), "{entered}");
    dave.push("EnterRoom", |m| m["client"]["id"] == NORTH, T);
    dave.push(
        "onPublished",
        |m| m["client"]["id"] == NORTH && m["published"] == true && m["event"] == "play",
        T,
    );
    let talking = dave.push(
        "memberTalking",
        |m| m["member"]["id"] == NORTH && m["talking"] == true,
        T,
    );
    assert_eq!(talking["member"]["name"], "alice", "{talking}");
    // The reply came first: a client files pushes under the room its reply named.
    let order: Vec<String> = dave
        .history()
        .iter()
        .filter(|e| e["event"] == "ws" && e["msg"]["module"] == "meeting")
        .map(|e| e["msg"]["method"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        order[..4],
        ["enter", "EnterRoom", "onPublished", "memberTalking"],
        "{order:?}"
    );

    dave.cmd(json!({"cmd":"play","client":NORTH}));
    dave.expect(
        |e| {
            e["event"] == "pc_state"
                && e["pc"] == format!("play:{NORTH}")
                && e["state"] == "connected"
        },
        T,
    );
    dave.record_start();
    let ready = started.elapsed().as_secs_f64();
    assert!(
        ready < LEAD_IN - 0.5,
        "dave was ready to hear {ready:.1} s into the burst; the speech starts at {LEAD_IN} s"
    );
    alice.expect_event("play_done", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    let recording = dir.path().join("dave.wav");
    let summary = dave.record_stop(&recording);
    let cmp = testkit::meeting::compare_through_bridge(&wav, &recording);
    println!("late joiner, PTT → meeting: {cmp}; {summary}");
    cmp.assert_matches(0.9, 0.1);

    // dave is not the compere: refused, and nothing changes.
    for req in [
        json!({"module":"meeting","method":"finish"}),
        json!({"module":"meeting","method":"kickOut","userId":NORTH,"roomId":room}),
        json!({"module":"meeting","method":"muteAll","userId":dave.id(),"roomId":room,"isMute":true}),
        json!({"module":"meeting","method":"muteMsg","userId":NORTH,"roomId":room,"isMute":true}),
        json!({"module":"meeting","method":"setCompere","userId":dave.id(),"roomId":room}),
    ] {
        let r = dave.request(req.clone());
        assert_eq!(r["result"], 403, "{req}: {r}");
        assert!(
            r["message"].as_str().unwrap().contains("compere"),
            "{req}: {r}"
        );
    }
    let links = bridge.health()["sides"]["meeting"]["links"].clone();
    assert_eq!(links[0]["dial_in"], NORTH, "the link is still up: {links}");
    assert_eq!(links[0]["room"], room, "{links}");
    for method in [
        "tiren",
        "onFinish",
        "onMuteAll",
        "onMute",
        "onCompere",
        "ExitRoom",
    ] {
        assert!(
            carol
                .try_push(method, |_| true, Duration::from_millis(200))
                .is_none(),
            "a refused request still caused {method}"
        );
    }
    let (cmp, _) = hear_from_ptt(
        &mut dave,
        &mut alice,
        &fixture("audio/speech.wav"),
        &dir.path().join("dave2.wav"),
        "PTT → meeting after refused moderation",
    );
    cmp.assert_matches(0.9, 0.1);

    // The compere hands the role on: everyone is told, and the rights follow the role.
    let r = carol.request(
        json!({"module":"meeting","method":"setCompere","userId":dave.id(),"roomId":room}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let (carol_id, dave_id) = (carol.id(), dave.id());
    for p in [&mut carol, &mut dave] {
        p.push(
            "onCompere",
            |m| m["userId"] == dave_id && m["roomId"] == room,
            T,
        );
    }
    let r = carol.request(
        json!({"module":"meeting","method":"muteMsg","userId":NORTH,"roomId":room,"isMute":true}),
    );
    assert_eq!(r["result"], 403, "the former compere: {r}");
    let r = dave.request(
        json!({"module":"meeting","method":"muteMsg","userId":carol.id(),"roomId":room,"isMute":true}),
    );
    assert_eq!(r["result"], 0, "the new compere: {r}");
    carol.push(
        "onMute",
        |m| m["userId"] == carol_id && m["isMute"] == true,
        T,
    );
}

/// Issue 20, item 2: a room's fan-out spread over threads. With `fanout_shard_listeners = 1`
/// the two aiortc listeners of one room are two shards, run by the room's task and the fan-out
/// threads; both hear alice's speech as sent (correlation at least 0.9), every packet through
/// the own SRTP, and the bridge counts the shards it ran.
#[test]
fn a_spread_fan_out_reaches_every_listener_of_the_room() {
    let server = Murmur::start(&["North"]);
    let bridge = start_with(&server, "fanout_shard_listeners = 1");
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let (mut carol, mut dave, _) = north_room_with_dave(&bridge);
    play_north(&mut carol);
    play_north(&mut dave);
    let shards = |by: &str| bridge.metric("pttbridge_meeting_fanout_shards_total", &[("by", by)]);
    let before = shards("room") + shards("helper");
    let wav = fixture("audio/speech.wav");
    carol.record_start();
    dave.record_start();
    alice.play_and_wait(&wav, Duration::from_secs(30));
    // The burst's tail is still in the bridge's and the participants' jitter buffers.
    std::thread::sleep(Duration::from_millis(800));
    for (p, name) in [(&mut carol, "carol"), (&mut dave, "dave")] {
        let recording = dir.path().join(format!("{name}.wav"));
        let summary = p.record_stop(&recording);
        let cmp = testkit::meeting::compare_through_bridge(&wav, &recording);
        println!("spread fan-out, PTT → {name}: {cmp}; {summary}");
        cmp.assert_matches(0.9, 0.1);
    }
    let ran = shards("room") + shards("helper");
    println!(
        "shards: {} by the room's task, {} by helpers",
        shards("room"),
        shards("helper")
    );
    // Two shards per packet of the burst (a few seconds of 50 packets/s).
    assert!(
        ran - before >= 200.0,
        "the fan-out was spread: {ran} shards"
    );
    assert_own_srtp_only(&bridge);
}

/// Issue 18, item 1: the compere mutes the PTT channel while alice talks. dave, playing the
/// channel, receives nothing from then on (RMS of what he receives ≈ 0 against a 440 Hz tone's
/// ≈ 7000), everyone gets onMute for the channel and memberTalking says alice stopped; unmuted,
/// the tone is back at its level, alice is named again, and speech matches (correlation at
/// least 0.9). muteAll mutes the channel too: a burst that starts meanwhile is neither heard
/// nor announced; muteAll false brings both back.
#[test]
fn compere_mutes_and_unmutes_the_ptt_channel() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let (mut carol, mut dave, room) = north_room_with_dave(&bridge);
    play_north(&mut dave);
    let is_north = |talking: bool| {
        move |m: &Value| {
            m["member"]["id"] == NORTH && m["talking"] == talking && m["member"]["name"] == "alice"
        }
    };

    alice.play(&tone_wav(&dir, "long.wav", 440.0, 10.0));
    dave.push("memberTalking", is_north(true), T);
    std::thread::sleep(Duration::from_millis(500));
    let before = received_level(&mut dave, &dir, "before.wav", 1.5);
    assert!(
        before > 3000.0,
        "dave hears the tone before the mute: RMS {before}"
    );

    let r = carol.request(json!({"module":"meeting","method":"muteMsg","userId":NORTH,
        "roomId":room,"isMute":true,"super":"fromSuper"}));
    assert_eq!(r["result"], 0, "{r}");
    for p in [&mut carol, &mut dave] {
        let m = p.push("onMute", |m| m["userId"] == NORTH, T);
        assert_eq!(
            (&m["roomId"], &m["isMute"], &m["super"]),
            (&json!(room), &json!(true), &json!("fromSuper")),
            "{m}"
        );
        p.push("memberTalking", is_north(false), T);
    }
    std::thread::sleep(Duration::from_millis(300));
    let muted = received_level(&mut dave, &dir, "muted.wav", 2.0);
    assert!(
        muted < before / 100.0,
        "muted channel still heard: RMS {muted} (was {before})"
    );

    let r = carol.request(json!({"module":"meeting","method":"muteMsg","userId":NORTH,
        "roomId":room,"isMute":false}));
    assert_eq!(r["result"], 0, "{r}");
    for p in [&mut carol, &mut dave] {
        p.push(
            "onMute",
            |m| m["userId"] == NORTH && m["isMute"] == false,
            T,
        );
        p.push("memberTalking", is_north(true), T);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = received_level(&mut dave, &dir, "after.wav", 1.5);
    assert!(
        after > before / 2.0,
        "unmuted: RMS {after}, before the mute {before}"
    );
    alice.expect_event("play_done", Duration::from_secs(30));
    let (cmp, _) = hear_from_ptt(
        &mut dave,
        &mut alice,
        &fixture("audio/speech.wav"),
        &dir.path().join("speech.wav"),
        "PTT → meeting after unmute",
    );
    cmp.assert_matches(0.9, 0.1);
    // alice's talk (one burst or two) was announced as usual and is over: take those pushes.
    dave.push("memberTalking", is_north(false), T);
    while dave
        .try_push(
            "memberTalking",
            |m| m["member"]["id"] == NORTH,
            Duration::from_millis(300),
        )
        .is_some()
    {}

    // muteAll: members are told to mute themselves, the channel is muted by the bridge.
    let r = carol.request(
        json!({"module":"meeting","method":"muteAll","userId":carol.id(),
        "roomId":room,"isMute":true}),
    );
    assert_eq!(r["result"], 0, "{r}");
    dave.push("onMuteAll", |m| m["isMute"] == true, T);
    dave.push("onMute", |m| m["userId"] == NORTH && m["isMute"] == true, T);
    let short = tone_wav(&dir, "short.wav", 440.0, 1.5);
    dave.record_start();
    alice.play_and_wait(&short, T);
    assert!(
        dave.try_push("memberTalking", is_north(true), Duration::from_millis(500))
            .is_none(),
        "a muted channel's talker is not announced"
    );
    let rec = dave.record_stop(&dir.path().join("all_muted.wav"));
    let all_muted = rec["rms"].as_f64().unwrap();
    assert!(
        all_muted < before / 100.0,
        "muteAll: RMS {all_muted}: {rec}"
    );
    let r = carol.request(
        json!({"module":"meeting","method":"muteAll","userId":carol.id(),
        "roomId":room,"isMute":false}),
    );
    assert_eq!(r["result"], 0, "{r}");
    dave.push(
        "onMute",
        |m| m["userId"] == NORTH && m["isMute"] == false,
        T,
    );
    dave.record_start();
    alice.play_and_wait(&short, T);
    dave.push("memberTalking", is_north(true), T);
    std::thread::sleep(Duration::from_millis(500));
    let rec = dave.record_stop(&dir.path().join("all_unmuted.wav"));
    let back = rec["rms"].as_f64().unwrap();
    assert!(back > 3000.0, "after muteAll false: RMS {back}: {rec}");
    assert_eq!(
        bridge.health()["sides"]["meeting"]["links"][0]["dial_in"],
        NORTH
    );
}

/// setCompere, muteMsg, muteAll and kickOut with missing or ill-typed fields, an unknown
/// client, another room, the PTT channel as compere, or from outside any room: each gets the
/// protocol's error reply (422, 404, 409) and the socket keeps serving.
#[test]
fn moderation_bad_input_gets_protocol_errors() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let mut carol = Participant::join(bridge.addr(), "carol");
    let mut dave = Participant::join(bridge.addr(), "dave");
    let r = dave
        .request(json!({"module":"meeting","method":"setCompere","userId":dave.id(),"roomId":1}));
    assert_eq!(r["result"], 409, "not in a room: {r}");
    let room = dial_north(&mut carol);
    let me = carol.id();
    let other = room + 1;
    let m = |method: &str, fields: Value| {
        let mut v = json!({"module":"meeting","method":method});
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        v
    };
    for (req, code) in [
        (m("setCompere", json!({"roomId":room})), 422),
        (m("setCompere", json!({"userId":me})), 422),
        (
            m("setCompere", json!({"userId":"carol","roomId":room})),
            422,
        ),
        (m("setCompere", json!({"userId":me,"roomId":true})), 422),
        (m("setCompere", json!({"userId":424242,"roomId":room})), 404),
        (m("setCompere", json!({"userId":me,"roomId":other})), 409),
        (m("setCompere", json!({"userId":NORTH,"roomId":room})), 409),
        (m("muteMsg", json!({"userId":NORTH,"roomId":room})), 422),
        (
            m(
                "muteMsg",
                json!({"userId":NORTH,"roomId":room,"isMute":"yes"}),
            ),
            422,
        ),
        (
            m(
                "muteMsg",
                json!({"userId":424242,"roomId":room,"isMute":true}),
            ),
            404,
        ),
        (
            m(
                "muteMsg",
                json!({"userId":NORTH,"roomId":other,"isMute":true}),
            ),
            409,
        ),
        (m("muteAll", json!({"userId":me,"roomId":room})), 422),
        (
            m("muteAll", json!({"userId":me,"roomId":other,"isMute":true})),
            409,
        ),
        (m("kickOut", json!({"userId":"x","roomId":room})), 422),
        (m("kickOut", json!({"userId":424242,"roomId":room})), 404),
        (m("kickOut", json!({"userId":NORTH,"roomId":other})), 409),
    ] {
        let r = carol.request(req.clone());
        assert_eq!(r["result"], code, "{req}: {r}");
        assert_eq!(r["method"], req["method"], "{r}");
        assert!(!r["message"].as_str().unwrap_or("").is_empty(), "{r}");
    }
    // Nothing of that reached anyone, the link is up, and the socket still serves.
    assert!(
        carol
            .try_push("onMute", |_| true, Duration::from_millis(200))
            .is_none()
    );
    assert_eq!(
        bridge.health()["sides"]["meeting"]["links"][0]["dial_in"],
        NORTH
    );
    let r = carol.request(m("setCompere", json!({"userId":me,"roomId":room})));
    assert_eq!(r["result"], 0, "{r}");
    carol.push("onCompere", |v| v["userId"] == me, T);
}

/// The bridge's voice on `listener`'s recording of `secs` while `speaker` says `wav`: the
/// recorder's summary, and the bridge's chunks in it (0: the channel heard nothing of it).
fn bridge_chunks_while(
    speaker: &mut Participant,
    listener: &mut Terminal,
    wav: &std::path::Path,
    recording: &std::path::Path,
) -> (Value, u64) {
    listener.record_start();
    speaker.speak_and_wait(wav, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000));
    let rec = listener.record_stop(recording);
    let chunks = rec["speakers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == "bridge")
        .map(|s| s["chunks"].as_u64().unwrap_or(0))
        .sum();
    (rec, chunks)
}

/// Issue 18, item 2. A room with `meeting.floor = "hand"`: dave's speech does not reach bob
/// on PTT while his hand is down (no bridge audio at all). alice talks on PTT; dave raises his
/// hand: carol, the compere, sees onRaiseHand naming him, and dave is told onHandFloor
/// "queued" behind alice — and not granted while she talks. When she stops he is granted,
/// and his speech reaches bob (correlation >= 0.9, one burst). He lowers his hand: everyone
/// sees onLowerHand, he is told "ended", and his speech no longer reaches PTT.
#[test]
fn raised_hand_takes_the_ptt_floor_in_a_hand_raise_only_room() {
    let server = Murmur::start(&["North"]);
    let bridge = start_with(&server, r#"floor = "hand""#);
    let mut events = bridge.events();
    let dir = tempfile::tempdir().unwrap();
    let speech = fixture("audio/speech.wav");
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    let mut dave = Participant::join(bridge.addr(), "dave");
    let room = dial_north(&mut carol);
    bring_in(&mut carol, &mut dave, room);
    let entered = enter(&mut dave, room);
    let d = dave.id();
    assert_eq!(entered["room"]["floorMode"], "hand", "{entered}");
    dave.cmd(json!({"cmd":"publish"}));
    dave.expect(
        |e| e["event"] == "pc_state" && e["pc"] == "publish" && e["state"] == "connected",
        T,
    );

    // No hand: nothing of dave reaches the channel.
    let (rec, chunks) =
        bridge_chunks_while(&mut dave, &mut bob, &speech, &dir.path().join("before.wav"));
    assert_eq!(chunks, 0, "dave was heard on PTT without a hand: {rec}");

    // alice holds the channel; dave's hand waits for her.
    let ptt_wav = tone_wav(&dir, "ptt.wav", 440.0, 4.0);
    alice.play(&ptt_wav);
    dave.push(
        "memberTalking",
        |m| m["member"]["id"] == NORTH && m["talking"] == true,
        T,
    );
    let r = dave.request(json!({"module":"meeting","method":"raiseHand"}));
    assert_eq!(r["result"], 0, "{r}");
    let raised = carol.push("onRaiseHand", |m| m["client"]["id"] == d, T);
    assert_eq!(raised["roomId"], room, "{raised}");
    assert_eq!(raised["client"]["name"], "dave", "{raised}");
    let queued = dave.push("onHandFloor", |m| m["userId"] == d, T);
    assert_eq!(
        (&queued["floor"], &queued["holder"], &queued["roomId"]),
        (&json!("queued"), &json!("alice"), &json!(room)),
        "{queued}"
    );
    let denied = events
        .try_expect(|e| e["type"] == "floor.denied", T)
        .expect("floor.denied while alice talks");
    assert_eq!(denied["detail"]["holder"]["name"], "alice", "{denied}");
    assert!(
        dave.try_push(
            "onHandFloor",
            |m| m["floor"] == "granted",
            Duration::from_millis(1500)
        )
        .is_none(),
        "granted while alice talks"
    );
    alice.expect_event("play_done", Duration::from_secs(30));
    let stopped = std::time::Instant::now();
    let granted = dave.push("onHandFloor", |m| m["floor"] == "granted", T);
    assert_eq!(granted["userId"], d, "{granted}");
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "granted {:?} after alice stopped",
        stopped.elapsed()
    );
    carol.push(
        "onHandFloor",
        |m| m["floor"] == "granted" && m["userId"] == d,
        T,
    );

    // Granted: dave is heard on PTT.
    let cmp = speak_into_ptt(
        &mut dave,
        &mut bob,
        &speech,
        &dir.path().join("granted.wav"),
        "raised hand → PTT",
    );
    cmp.assert_matches(0.9, 0.1);

    // Lowered: the grant ends and dave is not heard any more.
    let r = dave.request(json!({"module":"meeting","method":"lowerHand"}));
    assert_eq!(r["result"], 0, "{r}");
    carol.push("onLowerHand", |m| m["client"]["id"] == d, T);
    dave.push(
        "onHandFloor",
        |m| m["floor"] == "ended" && m["userId"] == d,
        T,
    );
    std::thread::sleep(Duration::from_millis(500));
    let (rec, chunks) =
        bridge_chunks_while(&mut dave, &mut bob, &speech, &dir.path().join("after.wav"));
    assert_eq!(
        chunks, 0,
        "dave heard on PTT after lowering his hand: {rec}"
    );
    let r = dave.request(json!({"module":"meeting","method":"lowerHand"}));
    assert_eq!(r["result"], 409, "no hand to lower: {r}");
}

/// Issue 18, item 6 (names). dave renames himself: everyone gets onUpdateClient with his new
/// name, his memberTalking and his chat into the PTT channel carry it. carol (the compere)
/// renames the meeting: everyone gets onUpdateMeeting, and a member entering afterwards finds
/// it in room.appointmentName. dave may not rename carol or the meeting (403); bad input gets
/// 422 / 404 / 409, and the socket keeps serving.
#[test]
fn client_and_meeting_names_are_updated_for_everyone() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server);
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    let mut dave = Participant::join(bridge.addr(), "dave");
    let room = dial_north(&mut carol);
    bring_in(&mut carol, &mut dave, room);
    enter(&mut dave, room);
    let (me, him) = (carol.id(), dave.id());

    let r = dave.request(json!({"module":"meeting","method":"updateClientName",
        "userId":him,"roomId":room,"name":"Dave R"}));
    assert_eq!(r["result"], 0, "{r}");
    for p in [&mut carol, &mut dave] {
        let u = p.push("onUpdateClient", |m| m["userId"] == him, T);
        assert_eq!(
            (&u["roomId"], &u["client"]["id"], &u["client"]["name"]),
            (&json!(room), &json!(him), &json!("Dave R")),
            "{u}"
        );
    }
    let r = dave.request(json!({"module":"meeting","method":"chat","content":"renamed"}));
    assert_eq!(r["result"], 0, "{r}");
    alice.expect(
        |e| e["event"] == "text" && e["message"] == "Dave R: renamed",
        T,
    );
    dave.cmd(json!({"cmd":"publish"}));
    dave.expect(
        |e| e["event"] == "pc_state" && e["pc"] == "publish" && e["state"] == "connected",
        T,
    );
    dave.speak(&tone_wav(&dir, "tone.wav", 1000.0, 1.5));
    carol.push(
        "memberTalking",
        |m| m["member"]["id"] == him && m["talking"] == true && m["member"]["name"] == "Dave R",
        T,
    );

    let r = carol.request(json!({"module":"meeting","method":"updateMeetingName",
        "userId":me,"roomId":room,"appointmentName":"Night shift","appointmentId":"1"}));
    assert_eq!(r["result"], 0, "{r}");
    for p in [&mut carol, &mut dave] {
        let u = p.push("onUpdateMeeting", |m| m["roomId"] == room, T);
        assert_eq!(
            (&u["userId"], &u["appointmentName"]),
            (&json!(me), &json!("Night shift")),
            "{u}"
        );
    }
    let r = dave.request(json!({"module":"meeting","method":"exit"}));
    assert_eq!(r["result"], 0, "{r}");
    let entered = enter(&mut dave, room);
    assert_eq!(
        entered["room"]["appointmentName"], "Night shift",
        "{entered}"
    );

    let m = |method: &str, fields: Value| {
        let mut v = json!({"module":"meeting","method":method});
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        v
    };
    let other = room + 1;
    for (by_dave, req, code) in [
        (
            true,
            m(
                "updateClientName",
                json!({"userId":me,"roomId":room,"name":"x"}),
            ),
            403,
        ),
        (
            true,
            m(
                "updateMeetingName",
                json!({"userId":him,"roomId":room,"appointmentName":"x","appointmentId":"1"}),
            ),
            403,
        ),
        (
            false,
            m("updateClientName", json!({"userId":him,"roomId":room})),
            422,
        ),
        (
            false,
            m(
                "updateClientName",
                json!({"userId":him,"roomId":room,"name":5}),
            ),
            422,
        ),
        (
            false,
            m(
                "updateClientName",
                json!({"userId":him,"roomId":room,"name":"  "}),
            ),
            422,
        ),
        (
            false,
            m(
                "updateClientName",
                json!({"userId":"dave","roomId":room,"name":"x"}),
            ),
            422,
        ),
        (
            false,
            m("updateClientName", json!({"userId":him,"name":"x"})),
            422,
        ),
        (
            false,
            m(
                "updateClientName",
                json!({"userId":424242,"roomId":room,"name":"x"}),
            ),
            404,
        ),
        (
            false,
            m(
                "updateClientName",
                json!({"userId":NORTH,"roomId":room,"name":"x"}),
            ),
            409,
        ),
        (
            false,
            m(
                "updateClientName",
                json!({"userId":him,"roomId":other,"name":"x"}),
            ),
            409,
        ),
        (
            false,
            m(
                "updateMeetingName",
                json!({"userId":me,"roomId":room,"appointmentId":"1"}),
            ),
            422,
        ),
        (
            false,
            m(
                "updateMeetingName",
                json!({"userId":me,"roomId":room,"appointmentName":"x"}),
            ),
            422,
        ),
        (
            false,
            m(
                "updateMeetingName",
                json!({"userId":me,"roomId":room,"appointmentName":"x","appointmentId":true}),
            ),
            422,
        ),
        (
            false,
            m(
                "updateMeetingName",
                json!({"userId":me,"roomId":other,"appointmentName":"x","appointmentId":"1"}),
            ),
            409,
        ),
    ] {
        let p = if by_dave { &mut dave } else { &mut carol };
        let r = p.request(req.clone());
        assert_eq!(r["result"], code, "{req}: {r}");
        assert_eq!(r["method"], req["method"], "{r}");
        assert!(!r["message"].as_str().unwrap_or("").is_empty(), "{r}");
    }
    // None of it reached anyone; both sockets still serve.
    assert!(
        carol
            .try_push("onUpdateClient", |_| true, Duration::from_millis(300))
            .is_none()
    );
    let r = carol.request(json!({"module":"meeting","method":"updateClientName",
        "userId":him,"roomId":room,"name":"Dave"}));
    assert_eq!(r["result"], 0, "{r}");
    dave.push(
        "onUpdateClient",
        |m| m["client"]["name"] == "Dave" && m["userId"] == him,
        T,
    );
    let outside = Participant::join(bridge.addr(), "erin").request(
        json!({"module":"meeting","method":"updateMeetingName","userId":1,"roomId":room,
        "appointmentName":"x","appointmentId":"1"}),
    );
    assert_eq!(outside["result"], 409, "not in a room: {outside}");
}
