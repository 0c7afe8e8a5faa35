//! Lean listeners (issue 20, memory per listener): a room drops str0m for a connected `play`
//! peer and keeps only its ICE consent (`src/sides/meeting/rtc/listener.rs`). The proof is that
//! real WebRTC stacks keep the call past their consent timeout and still hear the PTT talker:
//! an aiortc participant (aioice checks consent every 5 s ± 20 % and gives up after 6 failures,
//! ≈ 30 s) and headless Chromium (the web page; RFC 7675's 30 s), each playing North through its
//! own room, idle for longer than that, then recording alice's speech.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::audio::{CompareOptions, compare_with, load_wav, write_wav};
use testkit::bridge::{Bridge, OPERATOR_TOKEN, meeting_north_toml, ptt_server_toml};
use testkit::browser::{Browser, Page};
use testkit::meeting::{Participant, assert_own_srtp_only, compare_through_bridge, dial_in};
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
/// The page's number: the account `bridge` in North.
const PAGE_DIAL: i64 = 9001;
/// The aiortc participant's: another account in North (a dial-in links one room at a time).
const AIORTC_DIAL: i64 = 9002;
/// Longer than either stack's consent timeout (≈ 30 s) plus a check interval.
const IDLE: Duration = Duration::from_secs(36);

fn config(server: &Murmur) -> String {
    format!(
        "{}\n{}[[meeting.dial_in]]\nuser_id = {AIORTC_DIAL}\nserver = \"local\"\naccount = \"bridge2\"\n",
        ptt_server_toml(
            "local",
            server,
            &[("bridge", "North"), ("bridge2", "North")]
        ),
        meeting_north_toml(PAGE_DIAL)
    )
}

fn lean(bridge: &Bridge) -> f64 {
    bridge.metric("pttbridge_meeting_lean_listeners", &[])
}

/// The web page dials `PAGE_DIAL` and plays the channel.
fn page_dials(page: &Page) {
    page.wait_for(
        &format!(
            "document.querySelector('#call-target option[value=\"{PAGE_DIAL}\"]') && !document.querySelector('#call-form').hidden"
        ),
        T,
    );
    page.eval(&format!(
        "(() => {{
            const s = document.querySelector('#call-target');
            s.value = '{PAGE_DIAL}';
            s.dispatchEvent(new Event('change'));
            document.querySelector('#call-form').requestSubmit();
        }})()"
    ));
    page.wait_for("document.body.dataset.call === 'connected'", T);
    page.wait_for(
        "(() => { const a = document.querySelector('#call-audio');
                  return !!a.srcObject && a.srcObject.getAudioTracks().length > 0; })()",
        T,
    );
}

#[test]
fn aiortc_and_chromium_listeners_keep_hearing_past_their_consent_timeout() {
    let server = Murmur::start(&["North"]);
    let bridge = Bridge::start(BIN, &config(&server));
    bridge.wait_health(
        "both accounts in North",
        |h| {
            let a = &h["sides"]["ptt"]["servers"][0]["accounts"];
            a[0]["channel"] == "North" && a[1]["channel"] == "North"
        },
        T,
    );
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let dir = tempfile::tempdir().unwrap();

    // aiortc: dials the second number, plays the channel (no publish: a pure listener).
    let mut carol = Participant::join(bridge.addr(), "carol");
    dial_in(&mut carol, AIORTC_DIAL, T);
    carol.cmd(json!({"cmd":"play","client":AIORTC_DIAL}));
    carol.expect(|e| e["event"] == "playing", T);
    let play_pc = format!("play:{AIORTC_DIAL}");
    carol.expect(
        |e| e["event"] == "pc_state" && e["pc"] == play_pc && e["state"] == "connected",
        T,
    );

    // Chromium: the web page dials North.
    let browser = Browser::launch(None);
    let page = browser.page();
    page.navigate(&format!("http://{}/#token={OPERATOR_TOKEN}", bridge.addr()));
    page_dials(&page);

    // Both play peers become lean listeners (str0m dropped) once their handshakes are done.
    let deadline = Instant::now() + T;
    while lean(&bridge) < 2.0 {
        assert!(
            Instant::now() < deadline,
            "lean listeners: {} of 2",
            lean(&bridge)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let since = Instant::now();

    // Idle past both stacks' consent timeouts: nothing but consent checks flows.
    std::thread::sleep(IDLE);
    println!("idle {:?} as lean listeners", since.elapsed());
    assert_eq!(lean(&bridge), 2.0, "still lean, none dropped");
    assert_eq!(
        page.eval("document.body.dataset.call"),
        Value::from("connected"),
        "the page's call is still up"
    );
    let failed = carol
        .history()
        .iter()
        .filter(|e| e["event"] == "pc_state" && e["pc"] == play_pc)
        .filter(|e| {
            ["failed", "disconnected", "closed"].contains(&e["state"].as_str().unwrap_or(""))
        })
        .cloned()
        .collect::<Vec<_>>();
    assert!(failed.is_empty(), "aiortc's play connection: {failed:?}");

    // Alice speaks: both record.
    carol.record_start();
    page.record_start("#call-audio");
    alice.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
    // The burst's tail is still in the bridge's and the listeners' jitter buffers.
    std::thread::sleep(Duration::from_millis(800));
    let heard = page.record_stop();
    let carol_wav = dir.path().join("carol.wav");
    let summary = carol.record_stop(&carol_wav);
    let cmp = compare_through_bridge(&fixture("audio/speech.wav"), &carol_wav);
    println!("PTT → aiortc after {IDLE:?} idle: {cmp}; {summary}");
    cmp.assert_matches(0.9, 0.1);
    let page_wav = dir.path().join("page.wav");
    write_wav(&page_wav, &heard).unwrap();
    // Chromium's NetEQ time-stretches within a burst: windows aligned within 80 ms (as
    // tests/web_page.rs compares).
    let opt = CompareOptions {
        window_search_ms: 80,
        ..CompareOptions::default()
    };
    let cmp = compare_with(&load_wav(fixture("audio/speech.wav")), &heard, &opt);
    println!("PTT → Chromium after {IDLE:?} idle: {cmp}");
    cmp.assert_matches(0.85, 0.15);
    assert_own_srtp_only(&bridge);
    assert_eq!(lean(&bridge), 2.0, "lean to the end");
    println!(
        "{} s from lean to the last word",
        since.elapsed().as_secs_f64()
    );
}
