//! The web page at `/` in real headless Chromium (Debian's `chromium`, driven over the DevTools
//! Protocol): the browser meeting client dials a PTT channel on a real bridge with Debian's
//! murmurd and pymumble terminals; audio is compared both ways; the live view shows who talks;
//! screenshots are kept; an unknown number and a bridge crash mid-call are shown plainly and the
//! call comes back without a reload; served over HTTPS, the page works the same (microphone
//! included).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::audio::{
    CompareOptions, Comparison, compare_files, compare_with, load_wav, write_wav,
};
use testkit::bridge::{Bridge, OPERATOR_TOKEN};
use testkit::browser::{Browser, Page};
use testkit::murmur::Murmur;
use testkit::peers::{fixture, free_port, repo_root};
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const NORTH: i64 = 9001;

/// The tests compare real-time audio: on a 2-core machine they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The demo's own configuration (`config/demo.toml`: the account `bridge` in North, North
/// callable as 9001, the console admin) pointed at this test's murmurd; `[http]` and `[log]` come
/// from the harness.
fn config(server: &Murmur) -> String {
    let demo = std::fs::read_to_string(repo_root().join("config/demo.toml")).unwrap();
    let mut out = String::new();
    let mut skip = false;
    for line in demo.lines() {
        if line.starts_with('[') {
            skip = line == "[http]" || line == "[log]";
        }
        if skip {
            continue;
        }
        match line {
            "port = 64740" => out.push_str(&format!("port = {}", server.port())),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    assert!(
        out.contains(&format!("port = {}", server.port())) && out.contains("user_id = 9001"),
        "config/demo.toml changed shape:\n{out}"
    );
    out
}

/// A murmurd like the demo's: North and South, the SuperUser password the demo config uses.
fn demo_server() -> Murmur {
    Murmur::builder()
        .channels(&["North", "South"])
        .superuser_password("demo-superuser")
        .start()
}

fn start_bridge(server: &Murmur, addr: Option<std::net::SocketAddr>) -> Bridge {
    let config = config(server);
    let bridge = match addr {
        Some(a) => Bridge::start_at(BIN, &config, a),
        None => Bridge::start(BIN, &config),
    };
    bridge.wait_health(
        "connected in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    bridge
}

/// The speech fixture with silence around it, as the fake microphone's file: the device
/// repeats its last 10 ms once the file ends.
fn mic_wav(dir: &Path) -> std::path::PathBuf {
    let speech = load_wav(fixture("audio/speech.wav"));
    let mut samples = vec![0.0; 48_000 / 5];
    samples.extend_from_slice(&speech);
    samples.extend(std::iter::repeat_n(0.0, 48_000 * 2));
    let path = dir.join("mic.wav");
    write_wav(&path, &samples).unwrap();
    path
}

/// The test's temp dir (screenshots, recordings); kept when `KEEP_TEST_FILES` is set.
fn test_dir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("KEEP_TEST_FILES").is_some() {
        dir.disable_cleanup(true);
        println!("test files kept in {}", dir.path().display());
    }
    dir
}

fn js(s: &str) -> String {
    Value::String(s.into()).to_string()
}

fn text_of(page: &Page, selector: &str) -> String {
    page.eval(&format!(
        "(document.querySelector({}) || {{}}).innerText || ''",
        js(selector)
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Picks `target` ("9001", or "other" with `number`) in the call form and submits it.
fn dial(page: &Page, target: &str, number: Option<&str>) {
    page.wait_for(
        &format!(
            "document.querySelector('#call-target option[value={}]') && !document.querySelector('#call-form').hidden",
            js(target)
        ),
        T,
    );
    page.eval(&format!(
        "(() => {{
            const s = document.querySelector('#call-target');
            s.value = {target};
            s.dispatchEvent(new Event('change'));
            document.querySelector('#call-number').value = {number};
            document.querySelector('#call-form').requestSubmit();
        }})()",
        target = js(target),
        number = js(number.unwrap_or(""))
    ));
}

fn wait_in_call(page: &Page, timeout: Duration) {
    page.wait_for("document.body.dataset.call === 'connected'", timeout);
    // The channel is played: the <audio> element has its track.
    page.wait_for(
        "(() => { const a = document.querySelector('#call-audio');
                  return !!a.srcObject && a.srcObject.getAudioTracks().length > 0; })()",
        T,
    );
}

/// The play connection's inbound audio counters (jitter buffer, concealment, time-stretching).
fn receiver_stats(page: &Page) -> Value {
    page.eval(
        "(async () => {
            const pc = window.pttbridge.phone.play;
            if (!pc) return null;
            for (const s of (await pc.getStats()).values()) {
                if (s.type === 'inbound-rtp' && s.kind === 'audio') {
                    const keys = ['packetsReceived', 'packetsLost', 'jitter', 'jitterBufferDelay',
                        'jitterBufferEmittedCount', 'totalSamplesReceived', 'concealedSamples',
                        'silentConcealedSamples', 'insertedSamplesForDeceleration',
                        'removedSamplesForAcceleration', 'concealmentEvents'];
                    return Object.fromEntries(keys.map((k) => [k, s[k]]));
                }
            }
            return null;
        })()",
    )
}

/// What the page played compared with the source. Chromium's jitter buffer (NetEQ) adapts its
/// delay during a burst by time-stretching (adding or removing ~10 ms pieces: see
/// `insertedSamplesForDeceleration` / `removedSamplesForAcceleration` in the receiver stats), so
/// each 100 ms window is compared at its own alignment within 80 ms of the overall one.
fn compare_played(heard: &[f32]) -> Comparison {
    let opt = CompareOptions {
        window_search_ms: 80,
        ..CompareOptions::default()
    };
    compare_with(&load_wav(fixture("audio/speech.wav")), heard, &opt)
}

fn assert_not_blank(page: &Page, png: &Path) {
    let stats = page.image_stats(png);
    println!("{}: {stats}", png.display());
    assert!(
        stats["colors"].as_u64().unwrap_or(0) >= 16
            && stats["foreground"].as_f64().unwrap_or(0.0) > 0.02
            && stats["width"].as_u64().unwrap_or(0) >= 300,
        "{} looks blank: {stats}",
        png.display()
    );
}

#[test]
fn the_page_calls_a_ptt_channel_hears_it_and_talks_into_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = demo_server();
    let bridge = start_bridge(&server, None);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let dir = test_dir();
    let browser = Browser::launch(Some(&mic_wav(dir.path())));
    let page = browser.page();
    page.navigate(&format!("http://{}/#token={OPERATOR_TOKEN}", bridge.addr()));

    // The live view shows the server's channel tree with its users.
    page.wait_for(
        "(() => { const t = document.querySelector('#servers').innerText;
                  return t.includes('North') && t.includes('alice') && t.includes('bob'); })()",
        T,
    );

    // A number nobody answers at: a plain error, and the form is back for another try.
    dial(&page, "other", Some("4242"));
    let error = page.wait_for(
        "document.body.dataset.call === 'idle' && document.querySelector('#call-status.error') &&
         document.querySelector('#call-status').textContent",
        T,
    );
    let error = error.as_str().unwrap();
    assert!(
        error.contains("4242") && error.contains("no PTT channel"),
        "unknown number: {error}"
    );

    // Dial North.
    let t0 = Instant::now();
    dial(&page, &NORTH.to_string(), None);
    wait_in_call(&page, T);
    println!("call up and playing in {:?}", t0.elapsed());
    let links = bridge.get("/meeting/links").json();
    assert_eq!(links["links"][0]["dial_in"], NORTH, "{links}");
    // The live view shows the link: North ⇄ the page's room.
    page.wait_for(
        "(() => { const t = document.querySelector('#links').innerText;
                  return t.includes('Web listener') && t.includes('North') && t.includes('9001'); })()",
        T,
    );

    // PTT → page: alice speaks; the page names her while she talks; what it plays is recorded.
    page.record_start("#call-audio");
    let seconds = alice.play(&fixture("audio/speech.wav"));
    page.wait_for(
        "document.querySelector('#call-talkers').innerText.includes('alice')",
        T,
    );
    page.wait_for(
        "document.querySelector('#on-air').innerText.includes('alice')",
        T,
    );
    // Level meters: the PTT talker's level arrives while she talks.
    page.wait_for(
        "(() => { const m = document.querySelector('#on-air .meter.measured');
                  return m && parseFloat(m.style.getPropertyValue('--fill')) > 0.2; })()",
        Duration::from_secs(3),
    );
    let live_png = dir.path().join("live-view.png");
    let call_png = dir.path().join("meeting-client.png");
    page.screenshot(&live_png, Some("#live"));
    page.screenshot(&call_png, Some("#call"));
    page.screenshot(&dir.path().join("page.png"), None);
    alice.expect_event("play_done", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    let heard = page.record_stop();
    println!("page's receiver: {}", receiver_stats(&page));
    let heard_wav = dir.path().join("page-heard.wav");
    write_wav(&heard_wav, &heard).unwrap();
    let cmp = compare_played(&heard);
    println!("PTT → page ({seconds:.2} s of speech): {cmp}");
    cmp.assert_matches(0.85, 0.15);
    // Chromium decrypted the room's own SRTP (issue 20's fast path): nothing went through str0m.
    testkit::meeting::assert_own_srtp_only(&bridge);
    // She stopped: the live view and the call say so.
    page.wait_for(
        "!document.querySelector('#on-air').innerText.includes('alice') &&
         !document.querySelector('#call-talkers').innerText.includes('alice')",
        T,
    );
    assert_not_blank(&page, &live_png);
    assert_not_blank(&page, &call_png);
    assert!(
        text_of(&page, "#events").contains("talk.started"),
        "recent events list"
    );

    // The mouse works the button too.
    page.mouse(true, "#ptt");
    page.wait_for(
        "document.querySelector('#ptt').classList.contains('active')",
        T,
    );
    page.mouse(false, "#ptt");
    page.wait_for(
        "!document.querySelector('#ptt').classList.contains('active')",
        T,
    );

    // Page → PTT: holding the space bar sends the fake microphone's WAV; bob records it. The
    // microphone opens at the first press, and the fake device starts its file then.
    let speech_s = load_wav(fixture("audio/speech.wav")).len() as f64 / 48_000.0;
    bob.record_start();
    page.key(true, " ", "Space", 32);
    page.wait_for(
        "document.querySelector('#ptt').classList.contains('active')",
        T,
    );
    // The live view shows the page's user talking in the room.
    page.wait_for(
        "document.querySelector('#on-air').innerText.includes('Web listener')",
        T,
    );
    std::thread::sleep(Duration::from_secs_f64(speech_s + 0.6));
    page.key(false, " ", "Space", 32);
    page.wait_for(
        "!document.querySelector('#ptt').classList.contains('active')",
        T,
    );
    std::thread::sleep(Duration::from_millis(1000));
    let bob_wav = dir.path().join("bob.wav");
    bob.record_stop(&bob_wav);
    let cmp = compare_files(fixture("audio/speech.wav"), &bob_wav);
    println!("page → PTT: {cmp}");
    cmp.assert_matches(0.85, 0.15);

    // Hang up: the link goes away.
    page.eval("document.querySelector('#hangup').click()");
    page.wait_for(
        "document.body.dataset.call === 'idle' && document.querySelector('#call-status').textContent === 'Call ended.'",
        T,
    );
    let deadline = Instant::now() + T;
    while bridge.get("/meeting/links").json()["links"] != Value::Array(vec![]) {
        assert!(Instant::now() < deadline, "link still up after hang-up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn over_https_the_page_loads_calls_and_its_microphone_reaches_ptt() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = demo_server();
    let dir = test_dir();
    let ca = testkit::tls::TestCa::new("pttbridge test CA");
    let cert = ca.write_server(dir.path(), "bridge");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    testkit::http::use_tls(addr, ca.client_config());
    let config = format!("{}\n[http]\n{}", config(&server), cert.http_toml());
    let bridge = Bridge::start_at(BIN, &config, addr);
    bridge.wait_health(
        "connected in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    // Chromium accepts this one certificate (by its public key), nothing else: no blanket
    // --ignore-certificate-errors.
    let browser = Browser::launch_with(
        Some(&mic_wav(dir.path())),
        &[format!(
            "--ignore-certificate-errors-spki-list={}",
            cert.spki_sha256
        )],
    );
    let page = browser.page();
    page.navigate(&format!(
        "https://127.0.0.1:{}/#token={OPERATOR_TOKEN}",
        addr.port()
    ));
    assert_eq!(page.eval("location.protocol"), "https:");
    assert_eq!(page.eval("window.isSecureContext"), true);
    // The live view follows the event stream over HTTPS.
    page.wait_for(
        "document.querySelector('#servers').innerText.includes('bob')",
        T,
    );

    // The call signals over wss:// (the page picks it from its own https: location).
    dial(&page, &NORTH.to_string(), None);
    wait_in_call(&page, T);

    // Page → PTT: push-to-talk with the fake microphone, recorded by bob.
    let speech_s = load_wav(fixture("audio/speech.wav")).len() as f64 / 48_000.0;
    bob.record_start();
    page.key(true, " ", "Space", 32);
    page.wait_for(
        "document.querySelector('#ptt').classList.contains('active')",
        T,
    );
    std::thread::sleep(Duration::from_secs_f64(speech_s + 0.6));
    page.key(false, " ", "Space", 32);
    std::thread::sleep(Duration::from_millis(1000));
    let bob_wav = dir.path().join("bob-https.wav");
    bob.record_stop(&bob_wav);
    let cmp = compare_files(fixture("audio/speech.wav"), &bob_wav);
    println!("page over HTTPS → PTT: {cmp}");
    cmp.assert_matches(0.85, 0.15);

    page.eval("document.querySelector('#hangup').click()");
    page.wait_for("document.body.dataset.call === 'idle'", T);
}

#[test]
fn a_bridge_crash_mid_call_is_shown_and_the_call_comes_back_without_a_reload() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = demo_server();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let bridge = start_bridge(&server, Some(addr));
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let browser = Browser::launch(None);
    let page = browser.page();
    page.navigate(&format!("http://{addr}/#token={OPERATOR_TOKEN}"));
    dial(&page, &NORTH.to_string(), None);
    wait_in_call(&page, T);
    // Marks the document: a reload would lose it.
    page.eval("window.__sameDocument = true");

    // The bridge dies (SIGKILL: no goodbye on any socket).
    drop(bridge);
    let status = page.wait_for(
        "document.body.dataset.call === 'reconnecting' && document.querySelector('#call-status').textContent",
        T,
    );
    println!("while down: {status}");
    assert!(
        status
            .as_str()
            .unwrap()
            .contains("Lost the connection to the bridge"),
        "{status}"
    );
    page.wait_for("!document.querySelector('#live-offline').hidden", T);

    // It comes back on the same address: the page signs in again and redials by itself.
    let t0 = Instant::now();
    let bridge = start_bridge(&server, Some(addr));
    wait_in_call(&page, Duration::from_secs(30));
    println!(
        "call restored {:?} after the bridge came back",
        t0.elapsed()
    );
    let status = text_of(&page, "#call-status");
    assert!(status.contains("restarted"), "{status}");
    assert_eq!(
        page.eval("window.__sameDocument === true"),
        true,
        "page was reloaded"
    );
    page.wait_for("document.querySelector('#live-offline').hidden", T);

    // And the call carries audio again.
    page.record_start("#call-audio");
    alice.play(&fixture("audio/speech.wav"));
    page.wait_for(
        "document.querySelector('#call-talkers').innerText.includes('alice')",
        T,
    );
    alice.expect_event("play_done", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    let heard = page.record_stop();
    println!("page's receiver: {}", receiver_stats(&page));
    let cmp = compare_played(&heard);
    println!("after the restart, PTT → page: {cmp}");
    cmp.assert_matches(0.85, 0.15);

    // The PTT side hangs up (the operator API here): the page says who ended the call.
    let r = bridge.request("POST", &format!("/meeting/links/{NORTH}/hangup"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let status = page.wait_for(
        "document.body.dataset.call === 'idle' && document.querySelector('#call-status').textContent",
        T,
    );
    assert_eq!(status, "The PTT side hung up.");
}

#[test]
fn without_the_microphone_the_page_says_so_and_keeps_listening() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = demo_server();
    let bridge = start_bridge(&server, None);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    // The user blocks the microphone: every getUserMedia is refused.
    let browser = Browser::launch_denying_microphone();
    let page = browser.page();
    page.navigate(&format!("http://{}/#token={OPERATOR_TOKEN}", bridge.addr()));
    dial(&page, &NORTH.to_string(), None);
    wait_in_call(&page, T);

    // Push-to-talk: a plain error, and the call stays up.
    page.key(true, " ", "Space", 32);
    let status = page.wait_for(
        "document.querySelector('#call-status.error') && document.querySelector('#call-status').textContent",
        T,
    );
    page.key(false, " ", "Space", 32);
    println!("push-to-talk without a microphone: {status}");
    assert!(
        status.as_str().unwrap().contains("Microphone blocked"),
        "{status}"
    );
    assert_eq!(page.eval("document.body.dataset.call"), "connected");
    assert!(
        !page
            .eval("document.querySelector('#ptt').classList.contains('active')")
            .as_bool()
            .unwrap()
    );

    // Open mic: the same, and the switch goes back off.
    page.eval("document.querySelector('#call-status').textContent = ''");
    page.eval("document.querySelector('#open-mic').click()");
    page.wait_for(
        "document.querySelector('#call-status').textContent.includes('Microphone blocked') &&
         !document.querySelector('#open-mic').checked",
        T,
    );
    assert_eq!(page.eval("document.body.dataset.call"), "connected");

    // Listening goes on: alice is heard and named.
    page.record_start("#call-audio");
    alice.play(&fixture("audio/speech.wav"));
    page.wait_for(
        "document.querySelector('#call-talkers').innerText.includes('alice')",
        T,
    );
    alice.expect_event("play_done", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    let cmp = compare_played(&page.record_stop());
    println!("PTT → page without a microphone: {cmp}");
    cmp.assert_matches(0.85, 0.15);
}

/// The event list starts with what happened before the page was opened (the bridge keeps its
/// last events), not empty however long the bridge has run.
#[test]
fn the_event_list_shows_what_happened_before_the_page_opened() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = demo_server();
    let bridge = start_bridge(&server, None);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut events = bridge.events();
    alice.text("said before the page opened");
    events
        .try_expect(|e| e["type"] == "message.text", T)
        .expect("the text reached the bridge");
    let browser = Browser::launch(None);
    let page = browser.page();
    page.navigate(&format!("http://{}/#token={OPERATOR_TOKEN}", bridge.addr()));
    page.wait_for(
        "document.querySelector('#events').innerText.includes('said before the page opened')",
        T,
    );
    let list = text_of(&page, "#events");
    for kind in ["message.text", "party.joined", "side.connected"] {
        assert!(list.contains(kind), "{kind} in the list on load:\n{list}");
    }
    // Newest first, as live events are.
    let text_at = list.find("message.text").unwrap();
    let connected_at = list.find("side.connected").unwrap();
    assert!(text_at < connected_at, "newest first:\n{list}");
    drop(alice);
}

/// The call panel follows the channel, not only the call: with its PTT server down the channel
/// is said to be unreachable (not a green "In a call"), and the call is back in the in-call look
/// when the server is — whether it was down before the call or went down during it.
#[test]
fn a_channel_whose_ptt_server_is_down_is_shown_unreachable_until_it_is_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut server = demo_server();
    let bridge = start_bridge(&server, None);
    let browser = Browser::launch(None);
    let page = browser.page();
    page.navigate(&format!("http://{}/#token={OPERATOR_TOKEN}", bridge.addr()));
    page.wait_for(
        "document.querySelector('#servers').innerText.includes('North')",
        T,
    );

    server.kill();
    bridge.wait_health(
        "without its PTT server",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["state"] != "connected",
        T,
    );
    dial(&page, &NORTH.to_string(), None);
    wait_in_call(&page, T);
    let status = page.wait_for(
        "document.body.dataset.reach === 'unreachable' && document.querySelector('#call-status').textContent",
        T,
    );
    println!("called while its server is down: {status}");
    assert!(
        status
            .as_str()
            .unwrap()
            .starts_with("North is unreachable: its PTT server is down"),
        "{status}"
    );
    assert_eq!(
        page.eval("document.querySelector('#call-status').className"),
        "status warn",
        "not the in-call look"
    );
    assert_eq!(
        page.eval("document.querySelector('#call').classList.contains('unreachable')"),
        true
    );

    // The server comes back: so does the in-call look, in the same call.
    server.restart();
    let status = page.wait_for(
        "document.body.dataset.reach === 'ok' && document.querySelector('#call-status.ok') &&
         document.querySelector('#call-status').textContent",
        Duration::from_secs(30),
    );
    assert_eq!(status, "In a call with North (9001).");
    assert_eq!(page.eval("document.body.dataset.call"), "connected");
    assert_eq!(
        page.eval("document.querySelector('#call').classList.contains('unreachable')"),
        false
    );

    // It goes down during the call: said at once, the call stays.
    server.kill();
    let status = page.wait_for(
        "document.body.dataset.reach === 'unreachable' && document.querySelector('#call-status.warn') &&
         document.querySelector('#call-status').textContent",
        T,
    );
    assert!(
        status.as_str().unwrap().starts_with("North is unreachable"),
        "{status}"
    );
    assert_eq!(page.eval("document.body.dataset.call"), "connected");
}

/// A call made while a terminal is mid-burst names the talker at once (the bridge tells a new
/// link who is talking in its channel), not at the terminal's next burst.
#[test]
fn a_call_made_mid_burst_names_the_talker_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = demo_server();
    let bridge = start_bridge(&server, None);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let dir = test_dir();
    // One long burst: the speech fixture over and over, longer than anything below waits.
    let speech = load_wav(fixture("audio/speech.wav"));
    let mut long = Vec::new();
    while long.len() < 48_000 * 60 {
        long.extend_from_slice(&speech);
    }
    let long_wav = dir.path().join("long.wav");
    write_wav(&long_wav, &long).unwrap();

    let browser = Browser::launch(None);
    let page = browser.page();
    page.navigate(&format!("http://{}/#token={OPERATOR_TOKEN}", bridge.addr()));
    page.wait_for(
        "document.querySelector('#servers').innerText.includes('alice')",
        T,
    );
    let mut events = bridge.events();
    alice.play(&long_wav);
    events
        .try_expect(
            |e| e["type"] == "talk.started" && e["party"]["name"] == "alice",
            T,
        )
        .expect("alice's burst started");

    dial(&page, &NORTH.to_string(), None);
    wait_in_call(&page, T);
    page.wait_for(
        "document.querySelector('#call-talkers').innerText.includes('alice')",
        T,
    );
    // Still her first burst: it has neither ended nor started again.
    assert!(
        !alice.history().iter().any(|e| e["event"] == "play_done"),
        "the burst ended before the call named her"
    );
    let bursts = events
        .history()
        .iter()
        .filter(|e| {
            (e["type"] == "talk.started" || e["type"] == "talk.stopped")
                && e["party"]["name"] == "alice"
        })
        .count();
    assert_eq!(bursts, 1, "one burst, still going:\n{}", events.tail(20));

    // She stops: the call says so.
    alice.stop_play();
    page.wait_for(
        "!document.querySelector('#call-talkers').innerText.includes('alice')",
        T,
    );
}

/// The live view lists each link with the channel's name first (the room number secondary), how
/// long it has been up (ticking), and a button that hangs it up through the operator route.
#[test]
fn the_live_view_times_a_link_and_hangs_it_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = demo_server();
    let bridge = start_bridge(&server, None);
    let browser = Browser::launch(None);
    let page = browser.page();
    page.navigate(&format!("http://{}/#token={OPERATOR_TOKEN}", bridge.addr()));
    dial(&page, &NORTH.to_string(), None);
    wait_in_call(&page, T);
    let room = bridge.get("/meeting/links").json()["links"][0]["room"].clone();
    assert!(room.is_i64(), "{room}");

    let row = "document.querySelector('#links li.link[data-dial=\"9001\"]')";
    let text = page.wait_for(
        &format!("{row} && {row}.querySelector('.duration[data-since]') && {row}.innerText"),
        T,
    );
    let text = text.as_str().unwrap();
    println!("link row: {text:?}");
    let name_at = text.find("North").expect("the channel's name");
    let room_at = text
        .find(&format!("room {room}"))
        .expect("the room's number");
    assert!(name_at < room_at, "channel first: {text:?}");
    // The room number is secondary text.
    assert_eq!(
        page.eval(&format!(
            "[...{row}.querySelectorAll('.sub')].some((e) => e.textContent === 'room {room}')"
        )),
        true,
        "room number in secondary text"
    );
    // The event list names the room by its channel too.
    page.wait_for(
        &format!("document.querySelector('#events').innerText.includes('North · room {room}')"),
        T,
    );

    // The duration ticks.
    let first = page.eval(&format!("{row}.querySelector('.duration').textContent"));
    let first = first.as_str().unwrap().to_string();
    assert!(
        first.len() >= 4 && first.contains(':'),
        "a duration like 0:03: {first:?}"
    );
    page.wait_for(
        &format!(
            "{row} && {row}.querySelector('.duration').textContent !== {}",
            js(&first)
        ),
        T,
    );

    // Hang up from the list: the link goes, and the call ends as a PTT-side hang-up.
    let mut events = bridge.events();
    page.eval(&format!(
        "{row}.querySelector('button[data-hangup]').click()"
    ));
    let status = page.wait_for(
        "document.body.dataset.call === 'idle' && document.querySelector('#call-status').textContent",
        T,
    );
    assert_eq!(status, "The PTT side hung up.");
    page.wait_for(&format!("!{row}"), T);
    assert_eq!(
        bridge.get("/meeting/links").json()["links"],
        Value::Array(vec![])
    );
    events
        .try_expect(
            |e| e["type"] == "link.down" && e["detail"]["reason"] == "hangup",
            T,
        )
        .expect("link.down for the hang-up");
}

#[test]
fn the_page_lists_a_recorded_burst_and_plays_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = demo_server();
    let dir = test_dir();
    let config = format!(
        "{}\n[recording]\ndir = \"{}\"\n",
        config(&server),
        dir.path().join("rec").display()
    );
    let bridge = Bridge::start(BIN, &config);
    bridge.wait_health(
        "connected in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    alice.play_and_wait(&fixture("audio/speech.wav"), T);

    let browser = Browser::launch(None);
    let page = browser.page();
    page.navigate(&format!("http://{}/#token={OPERATOR_TOKEN}", bridge.addr()));
    // Search by channel and talker until the burst is indexed.
    page.eval(
        "document.querySelector('#archive-channel').value = 'North';
         document.querySelector('#archive-talker').value = 'alice'; true",
    );
    let deadline = Instant::now() + T;
    loop {
        page.eval("document.querySelector('#archive-form').requestSubmit(); true");
        std::thread::sleep(Duration::from_millis(300));
        if text_of(&page, "#archive-list").contains("alice") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the burst is not listed: {}\n{}",
            text_of(&page, "#archive"),
            page.console_tail(20)
        );
    }
    let row = text_of(&page, "#archive-list");
    println!("listed: {row}");
    assert!(row.contains("North") && row.contains("3.9 s"), "{row}");

    // Play: the page's <audio> fetches the file (the session cookie is its credential) and plays.
    page.eval(
        "document.querySelector('#archive-list button[data-action=play]').scrollIntoView(); true",
    );
    page.mouse(true, "#archive-list button[data-action=play]");
    page.mouse(false, "#archive-list button[data-action=play]");
    let played = page.wait_for(
        "(() => { const a = document.querySelector('#archive-audio');
                  return !a.error && a.currentTime > 1 && { t: a.currentTime, d: a.duration, src: a.src }; })()",
        T,
    );
    println!("playing: {played}");
    assert!(
        (played["d"].as_f64().unwrap() - 3.85).abs() < 0.15,
        "{played}"
    );
    assert!(text_of(&page, "#archive-playing").contains("alice"));
    // What it plays is what alice said (decoded by the browser from the same URL).
    let src = played["src"].as_str().unwrap().to_string();
    let heard = page.decode_audio(&src);
    let c = compare_with(
        &load_wav(fixture("audio/speech.wav")),
        &heard,
        &CompareOptions::default(),
    );
    println!("the page's burst vs what alice said: {c}");
    c.assert_matches(0.95, 0.05);
    let shot = dir.path().join("archive.png");
    page.screenshot(&shot, Some("#archive"));
}
