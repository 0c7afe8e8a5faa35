//! What an outsider can do to the bridge's log through the meeting API (an aiortc participant,
//! `tests/peers/meeting.py`, logged in like any client): forge records with a method name
//! holding a newline, NUL and a bidi override; flood it with large chat messages; flood it with
//! bad frames. None of it works: text a peer controls is escaped and cut short, hub events are
//! DEBUG lines, and repeated warnings are rate-limited (the counters still count everything).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::bridge::Bridge;
use testkit::meeting::Participant;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");

/// The chat size cap and the request rate limit lifted as far as they go: what reaches the log
/// is under test here (`tests/security.rs` and `tests/abuse.rs` test the limits).
const MEETING: &str = r#"
[meeting]
max_chat_bytes = 131072
requests_per_second = 10000
request_burst = 100000
[[meeting.apps]]
app_id = "test"
secret = "test"
"#;

/// What follows the newline: a whole record, as the text log format writes one.
const FORGED: &str = "2025-01-01T00:00:00.000000Z ERROR pttbridge::run: FORGED admin logged in";

/// Opens a room and enters it.
fn in_a_room(p: &mut Participant) -> i64 {
    let r = p.request(json!({"module":"room","method":"newAppRoom","name":"ops","numberLimit":10,"roomtype":1,"userId":p.id()}));
    assert_eq!(r["result"], 0, "{r}");
    let room = r["roomId"].as_i64().expect("roomId");
    let r = p.request(
        json!({"module":"meeting","method":"enter","userId":p.id(),"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    room
}

/// Polls `done` on the bridge's log until it holds or `timeout` passes.
fn wait_log(bridge: &Bridge, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let logs = bridge.logs();
        if done(&logs) || Instant::now() > deadline {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn peer_text_cannot_forge_a_record_or_smuggle_control_characters() {
    // The tests' usual level (pttbridge at DEBUG): every line that could carry the text is on.
    let bridge = Bridge::start(BIN, MEETING);
    let mut carol = Participant::join(bridge.addr(), "carol");
    in_a_room(&mut carol);

    let evil = format!("x\n{FORGED}\r\n\u{0}\u{202e}\u{2028}\u{2066}gnp.exe");
    // An unknown method: the "bad request" warning names it.
    let frame = json!({"module":"meeting","method":evil}).to_string();
    let r = carol.raw(&frame);
    assert_ne!(r["result"], 0, "{r}");
    // Chat and a room name: the hub events (DEBUG) carry them.
    let r = carol.request(json!({"module":"meeting","method":"chat","content":evil}));
    assert_eq!(r["result"], 0, "{r}");
    let big = format!("{evil}{}", "A".repeat(100_000));
    let r = carol.request(json!({"module":"meeting","method":"chat","content":big}));
    assert_eq!(r["result"], 0, "{r}");

    let logs = wait_log(&bridge, Duration::from_secs(5), |l| {
        l.contains("bad request") && l.matches("FORGED").count() >= 3
    });
    assert!(
        logs.contains("bad request"),
        "the bad request is logged\n{}",
        bridge.logs_tail(40)
    );
    assert!(
        logs.matches("FORGED").count() >= 3,
        "the method name and both chat messages are in the log (escaped)\n{}",
        bridge.logs_tail(40)
    );
    for line in logs.lines() {
        assert!(
            !line.starts_with("2025-01-01T00:00:00") && !line.starts_with(FORGED),
            "a forged record: {line:?}"
        );
        assert!(line.len() < 4096, "a line of {} bytes", line.len());
    }
    for c in ['\0', '\r', '\u{202e}', '\u{2028}', '\u{2066}'] {
        assert!(!logs.contains(c), "{c:?} is in the log raw");
    }
    assert!(logs.contains("\\u{0}\\u{202e}\\u{2028}\\u{2066}gnp.exe"));
    assert!(
        logs.contains("more bytes)"),
        "the 100 KB message is cut short"
    );
}

#[test]
fn chat_messages_of_100_kb_do_not_flood_the_log_at_the_default_level() {
    let bridge = Bridge::start_with_log_level(BIN, MEETING, "info");
    let mut events = bridge.events();
    let mut carol = Participant::join(bridge.addr(), "carol");
    in_a_room(&mut carol);
    let before = bridge.logs().len();

    let text = "chat ".repeat(20_000); // 100,000 bytes
    for i in 0..200 {
        let r = carol
            .request(json!({"module":"meeting","method":"chat","content":format!("{i} {text}")}));
        assert_eq!(r["result"], 0, "message {i}: {r}");
    }
    // Every message went through the hub: the log had its chance to see them all.
    events
        .try_expect(
            |e: &Value| {
                e["type"] == "message.text"
                    && e["detail"]["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("199 "))
            },
            Duration::from_secs(15),
        )
        .expect("the last chat message reached the hub");
    std::thread::sleep(Duration::from_millis(500));
    let grown = bridge.logs().len() - before;
    assert!(
        grown < 200_000,
        "200 × 100 KB of chat wrote {grown} bytes of log (20 MB before hub events went to DEBUG)\n{}",
        bridge.logs_tail(20)
    );
}

#[test]
fn a_burst_of_bad_frames_is_counted_in_full_but_logged_a_few_times() {
    let bridge = Bridge::start_with_log_level(BIN, MEETING, "info");
    let mut carol = Participant::join(bridge.addr(), "carol");
    const BURST: usize = 1000;
    let errors = || {
        bridge.metric(
            "pttbridge_meeting_errors_total",
            &[("kind", "unknown_method")],
        )
    };
    let counted_before = errors();
    for i in 0..BURST {
        carol.cmd(json!({"cmd":"raw","text":json!({"module":"meeting","method":format!("nope{i}")}).to_string()}));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while errors() - counted_before < BURST as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        errors() - counted_before,
        BURST as f64,
        "the counter counts every bad frame"
    );

    // The summary comes when the window (10 s from the first line) ends, without another line.
    let summaries = |logs: &str| -> Vec<u64> {
        logs.lines()
            .filter(|l| l.contains("bad request: … "))
            .filter_map(|l| {
                let n = l.split("bad request: … ").nth(1)?.split(' ').next()?;
                n.parse().ok()
            })
            .collect()
    };
    let logs = wait_log(&bridge, Duration::from_secs(20), |l| {
        let warned = l
            .lines()
            .filter(|l| l.contains("unknown method meeting.nope"))
            .count();
        warned as u64 + summaries(l).iter().sum::<u64>() >= BURST as u64
    });
    let warned = logs
        .lines()
        .filter(|l| l.contains("unknown method meeting.nope"))
        .count();
    let suppressed: u64 = summaries(&logs).iter().sum();
    assert!(
        (1..=20).contains(&warned),
        "{warned} warning lines for {BURST} bad frames (at most 10 per 10 s)\n{}",
        bridge.logs_tail(40)
    );
    assert!(
        !summaries(&logs).is_empty(),
        "no '… N more suppressed' line\n{}",
        bridge.logs_tail(40)
    );
    assert_eq!(
        warned as u64 + suppressed,
        BURST as u64,
        "lines logged + suppressed = every bad frame\n{}",
        bridge.logs_tail(40)
    );
    let lines = logs.lines().filter(|l| l.contains("bad request")).count();
    assert!(lines <= 22, "{lines} lines about bad requests");
}
