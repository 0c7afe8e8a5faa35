//! The console agent (`pttbridge console-agent`) with an unmodified console: the console sends
//! the muicall spec's JSON and nothing else — no audio frames, no extensions — to the agent; the
//! agent relays it to the bridge and does the audio with the sound devices of "the PC", here a
//! real PulseAudio server with a test microphone and speaker (testkit::sound). Terminals are
//! pymumble on murmurd, as in the console tests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::audio::{Comparison, compare, load_wav, write_wav};
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::console::{Console, REPLY};
use testkit::events::capture;
use testkit::meeting::compare_through_bridge;
use testkit::murmur::Murmur;
use testkit::peers::{fixture, free_port};
use testkit::sound::Pulse;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const BASE_URL: &str = "http://ptt.test:8080";

fn murmur() -> Murmur {
    Murmur::builder()
        .channels(&["North"])
        .user("zydd", "pw-zydd")
        .user("t1", "pw-t1")
        .start()
}

fn bridge_config(server: &Murmur) -> String {
    format!(
        "{}\n[console]\n[[console.servers]]\nbase_url = \"{BASE_URL}\"\nptt_server = \"local\"\n\
         admin_username = \"SuperUser\"\nadmin_password = \"{}\"\n",
        ptt_server_toml("local", server, &[("bridge", "")]),
        server.superuser_password()
    )
}

fn start_bridge(config: &str, addr: SocketAddr) -> Bridge {
    let bridge = Bridge::start_at(BIN, config, addr);
    bridge.wait_health(
        "console admin connected",
        |h| h["sides"]["console"]["servers"][0]["admin_connected"] == true,
        T,
    );
    bridge
}

fn terminal(server: &Murmur, name: &str) -> Terminal {
    Terminal::builder(server.port(), name)
        .password(&format!("pw-{name}"))
        .channel("North")
        .connect()
}

/// The agent process, on "the PC" whose sound server is `pulse`; killed when dropped.
struct Agent {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Agent {
    fn start(pulse: &Pulse, bridge: SocketAddr) -> Agent {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut child = Command::new(BIN)
            .args(["console-agent", "--listen", &addr.to_string(), "--bridge"])
            .arg(format!("ws://{bridge}/muicall"))
            .envs(pulse.env())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the console agent");
        let log = capture(child.stderr.take().unwrap());
        let agent = Agent { child, addr, log };
        let deadline = Instant::now() + T;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "agent not listening:\n{}",
                agent.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        devices_settled("the agent", || agent.logs());
        agent
    }

    /// CPU seconds the agent has used (user + system).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // After the command name in parentheses: field 14 (utime) and 15 (stime) in clock ticks.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// Resident memory now and at its highest (KiB).
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `who` (its log read by `logs`) has opened microphone and speaker, then lets
/// them settle: a microphone just opened through ALSA-over-PulseAudio hands over its first
/// second late (measured: speech played 0.1 s after opening reached the capture callback 1 s
/// later; 3 s after opening, 10-20 ms later). The agent opens its devices at start, long before
/// a call: the figures the tests print are that steady state.
fn devices_settled(who: &str, logs: impl Fn() -> String) {
    let deadline = Instant::now() + T;
    while !(logs().contains("speaker open") && logs().contains("microphone open")) {
        assert!(
            Instant::now() < deadline,
            "{who}'s devices not open:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
}

/// Starts a call to `id` with the spec's `requestMic`; returns the call id once the mic is open.
fn call(c: &mut Console, id: u32, transaction: u64) -> String {
    c.send(json!({"type": "requestMic", "toIds": [id], "transaction": transaction}));
    let created = c.expect_type("createGroup", T);
    assert_eq!(created["code"], 1, "{created}");
    assert_eq!(created["transaction"], transaction);
    let granted = c.expect_type("requestMic", T);
    assert_eq!(granted["code"], 2, "{granted}");
    created["sessionId"].as_str().unwrap().to_string()
}

/// What `speech`, played into the PC's microphone, became at a terminal (`track`): each 100 ms
/// window compared where it landed within `testkit::meeting::JITTER_SEARCH_MS`. PulseAudio
/// plays what `paplay` hands it in real time; on a busy machine an underrun inserts silence and
/// shifts what follows by a frame or two (the agent and the bridge relay the packets as they
/// come), which an alignment fixed once for the whole utterance counts as lost speech.
fn compare_mic(speech: &Path, track: String) -> Comparison {
    compare_through_bridge(speech, Path::new(&track))
}

/// The file of what t1 recorded from the console ("zydd") in `rec` (its `record_stop` report);
/// panics with `context` when the console was not heard at all.
fn console_track(rec: &serde_json::Value, context: &str) -> String {
    rec["speakers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "zydd")
        .and_then(|s| s["wav"].as_str())
        .unwrap_or_else(|| panic!("t1 did not hear the console: {rec}\n{context}"))
        .to_string()
}

#[test]
fn an_unmodified_console_talks_and_listens_through_the_agents_sound_devices() {
    let pulse = Pulse::start();
    let server = murmur();
    let bridge_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let bridge = start_bridge(&bridge_config(&server), bridge_addr);
    let mut t1 = terminal(&server, "t1");
    let id1 = server.user_id("t1");
    let agent = Agent::start(&pulse, bridge.addr());
    let dir = tempfile::tempdir().unwrap();

    let mut c = Console::connect(agent.addr);
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = call(&mut c, id1, 1_671_006_883_842);
    t1.wait_in_channel(&format!("call-{sid}"), T);

    // The dispatcher speaks into the PC's microphone while holding the floor: t1 hears it.
    let speech = fixture("audio/speech.wav");
    t1.record_start();
    let recording_from = Instant::now();
    let (cpu0, talk0) = (agent.cpu_seconds(), Instant::now());
    pulse.play_into_mic(&speech);
    std::thread::sleep(Duration::from_millis(800));
    let rec = t1.record_stop(&dir.path().join("t1.wav"));
    let cmp = compare_mic(&speech, console_track(&rec, &agent.logs()));
    println!("PC microphone → t1: {cmp}");
    // Mouth to ear, one burst: the source's start found in t1's timeline (which starts when
    // its recording did) against when it was played into the microphone (±30 ms: paplay's
    // own start-up, the terminal's reply).
    let mouth_to_ear =
        cmp.lag_ms() as f64 / 1000.0 - talk0.duration_since(recording_from).as_secs_f64();
    println!(
        "figure: PC microphone → t1 mouth-to-ear ≈ {:.0} ms",
        mouth_to_ear * 1000.0
    );
    if cmp.median_correlation < 0.9 {
        println!("agent:\n{}", agent.logs());
    }
    cmp.assert_matches(0.9, 0.1);
    c.send(json!({"type": "releaseMic"}));
    assert_eq!(c.expect_type("releaseMic", REPLY)["code"], 1);
    let talking = talk0.elapsed().as_secs_f64();
    println!(
        "figure: agent CPU while the microphone goes out: {:.1} % of a core over {talking:.1} s",
        100.0 * (agent.cpu_seconds() - cpu0) / talking
    );

    // t1 answers: the PC's speaker plays it, between memberGetMic and memberLostMic.
    let speech2 = fixture("audio/speech2.wav");
    let heard = pulse.record_speaker(&dir.path().join("speaker.wav"));
    let speaker_from = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, play0) = (agent.cpu_seconds(), Instant::now());
    t1.play_and_wait(&speech2, Duration::from_secs(30));
    let playing = play0.elapsed().as_secs_f64();
    let cpu = agent.cpu_seconds() - cpu0;
    c.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id1, T);
    c.expect_notify("memberLostMic", |v| v["data"]["memberId"] == id1, T);
    std::thread::sleep(Duration::from_millis(500));
    let heard = heard.stop();
    let cmp = compare(&load_wav(&speech2), &load_wav(&heard));
    println!("t1 → PC speaker: {cmp}");
    cmp.assert_matches(0.9, 0.3);
    println!(
        "figure: t1 → PC speaker mouth-to-ear ≈ {:.0} ms; agent CPU while playing {:.1} % of a core",
        cmp.lag_ms() as f64 - play0.duration_since(speaker_from).as_secs_f64() * 1000.0,
        100.0 * cpu / playing
    );
    let (rss, peak) = agent.memory_kib();
    println!("figure: agent resident memory {rss} KiB (peak {peak} KiB)");

    // The console page got JSON only: the audio stayed with the agent.
    let (frames, _) = c.frames_received();
    assert_eq!(frames, 0, "the page was sent audio frames");

    // Bad input to the agent: the spec's reply shape, code 0; the agent keeps serving.
    c.send_raw("{\"type\": \"requestMic\", ");
    let v = c.expect_type("error", REPLY);
    assert_eq!(v["code"], 0, "{v}");
    c.send(json!({"type": "dial", "transaction": 9}));
    let v = c.expect_type("dial", REPLY);
    assert_eq!(
        (v["code"].as_i64(), v["transaction"].as_i64()),
        (Some(0), Some(9)),
        "{v}"
    );
    c.send_raw(&format!(
        "{{\"type\":\"requestMic\",\"pad\":\"{}\"}}",
        "x".repeat(100_000)
    ));
    let v = c.expect_type("error", REPLY);
    assert!(v["message"].as_str().unwrap().contains("too large"), "{v}");
    // Another page (or any program reaching the port) cannot take the agent over mid-call.
    let intruder = Console::connect(agent.addr);
    let closed = intruder.wait_closed(T).expect("the second page is closed");
    assert_eq!(closed.code, Some(1008), "{closed:?}");
    assert!(closed.reason.contains("another console page"), "{closed:?}");
    c.send(json!({"type": "tempCallHangup", "sessionId": sid}));
    let hung = c.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "tempCallHangup",
        REPLY,
    );
    assert_eq!(hung["data"]["result"]["code"], 0, "{hung}");
    t1.wait_in_channel("North", T);
}

#[test]
fn the_agent_rides_out_a_bridge_restart_and_its_own_death_ends_the_call() {
    let pulse = Pulse::start();
    let server = murmur();
    let bridge_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = bridge_config(&server);
    let mut bridge = start_bridge(&config, bridge_addr);
    let mut t1 = terminal(&server, "t1");
    let id1 = server.user_id("t1");
    let mut agent = Agent::start(&pulse, bridge_addr);

    let mut c = Console::connect(agent.addr);
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = call(&mut c, id1, 1);
    t1.wait_in_channel(&format!("call-{sid}"), T);

    // The bridge dies mid-call: the page is told in the spec's words.
    bridge.stop(Duration::from_millis(1));
    drop(bridge);
    let hangup = c.expect_notify("tempCallHangup", |_| true, T);
    assert_eq!(hangup["data"]["tempCallIdStr"], sid.as_str(), "{hangup}");
    assert_eq!(hangup["data"]["hangupReason"]["code"], 2, "{hangup}");
    // Meanwhile a request is refused in its own shape.
    c.send(json!({"type": "requestMic", "toIds": [id1], "transaction": 2}));
    let v = c.expect_type("createGroup", REPLY);
    assert_eq!(
        (v["code"].as_i64(), v["transaction"].as_i64()),
        (Some(0), Some(2)),
        "{v}"
    );
    t1.wait_in_channel("North", Duration::from_secs(30));

    // It comes back: the agent reconnects and logs the page in again by itself.
    let bridge = start_bridge(&config, bridge_addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let sid2 = loop {
        c.send(json!({"type": "requestMic", "toIds": [id1], "transaction": 3}));
        let created = c.expect_type("createGroup", T);
        if created["code"] == 1 {
            let granted = c.expect_type("requestMic", T);
            assert_eq!(granted["code"], 2, "{granted}");
            break created["sessionId"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no call after the bridge came back: {created}\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    t1.wait_in_channel(&format!("call-{sid2}"), T);
    assert!(agent.logs().contains("connected to the bridge"));

    // The agent dies mid-call: the bridge frees the floor and ends the call within 10 s.
    let killed = Instant::now();
    agent.kill();
    t1.wait_in_channel("North", Duration::from_secs(10));
    let deadline = killed + Duration::from_secs(10);
    while bridge.metric("pttbridge_console_calls_active", &[]) > 0.0 {
        assert!(Instant::now() < deadline, "the call outlived the agent");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("call ended {:?} after the agent died", killed.elapsed());
}

/// On a single box the bridge does the agent's job itself (`[console.agent]`): the page talks to
/// the bridge's agent address and the speech goes through this machine's sound devices.
#[test]
fn the_bridge_itself_can_be_the_agent_on_the_dispatchers_pc() {
    let pulse = Pulse::start();
    let server = murmur();
    let page_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = format!(
        "{}\n[console.agent]\nlisten = \"{page_addr}\"\n",
        bridge_config(&server)
    );
    let bridge = Bridge::start_with_env(BIN, &config, &pulse.env());
    bridge.wait_health(
        "console admin connected",
        |h| h["sides"]["console"]["servers"][0]["admin_connected"] == true,
        T,
    );
    devices_settled("the bridge's agent", || bridge.logs());
    let mut t1 = terminal(&server, "t1");
    let id1 = server.user_id("t1");

    let mut c = Console::connect(page_addr);
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = call(&mut c, id1, 7);
    t1.wait_in_channel(&format!("call-{sid}"), T);
    let speech = fixture("audio/speech.wav");
    t1.record_start();
    pulse.play_into_mic(&speech);
    std::thread::sleep(Duration::from_millis(800));
    let dir = tempfile::tempdir().unwrap();
    let rec = t1.record_stop(&dir.path().join("t1.wav"));
    let cmp = compare_mic(&speech, console_track(&rec, ""));
    println!("bridge's own microphone → t1: {cmp}");
    cmp.assert_matches(0.9, 0.1);
    assert_eq!(c.frames_received().0, 0, "the page was sent audio frames");
}

/// The PC's sound system goes away mid-call (its server killed: every device at once): the page
/// is told once, the agent keeps trying, and when it is back the dispatcher is heard again
/// without anyone doing anything. (PulseAudio itself moves a stream off a device that is
/// unplugged onto another one, so the agent never sees that case.)
#[test]
fn lost_sound_devices_are_told_and_taken_back_when_they_return() {
    let mut pulse = Pulse::start();
    let server = murmur();
    let bridge_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let bridge = start_bridge(&bridge_config(&server), bridge_addr);
    let mut t1 = terminal(&server, "t1");
    let id1 = server.user_id("t1");
    let agent = Agent::start(&pulse, bridge.addr());
    let mut c = Console::connect(agent.addr);
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = call(&mut c, id1, 1);
    t1.wait_in_channel(&format!("call-{sid}"), T);

    pulse.kill();
    let told = c.expect(|v| v["type"] == "audio" && v["code"] == 0, T);
    let why = told["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("sound device") && why.contains("retrying"),
        "{told}"
    );
    println!("told: {why}");

    pulse.restart();
    let opened = |a: &Agent| a.logs().matches("microphone open").count();
    let deadline = Instant::now() + T;
    while opened(&agent) < 2 {
        assert!(
            Instant::now() < deadline,
            "the microphone was not reopened:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let speech = fixture("audio/speech.wav");
    t1.record_start();
    pulse.play_into_mic(&speech);
    std::thread::sleep(Duration::from_millis(800));
    let dir = tempfile::tempdir().unwrap();
    let rec = t1.record_stop(&dir.path().join("t1.wav"));
    let cmp = compare_mic(&speech, console_track(&rec, &agent.logs()));
    println!("sound system back → t1: {cmp}");
    cmp.assert_matches(0.9, 0.1);
}

/// p50 and p99 of the mouth-to-ear delay through the agent, over 20 short bursts each way (a
/// 1.2 s cut of the speech fixture), printed as `figure:` lines for BENCHMARKS.md. Each burst is
/// found in the receiver's timeline by cross-correlation; the receiver's recording starts at a
/// known instant before the burst is played (±30 ms: `paplay`, `parecord` and the terminal's
/// reply are inside it). A burst counts when it is heard clean (median window correlation
/// ≥ 0.9); at most two of twenty may not be (a busy machine), or the test fails.
#[test]
fn mouth_to_ear_over_twenty_bursts_each_way() {
    const BURSTS: usize = 20;
    let pulse = Pulse::start();
    let server = murmur();
    let bridge_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let bridge = start_bridge(&bridge_config(&server), bridge_addr);
    let mut t1 = terminal(&server, "t1");
    let id1 = server.user_id("t1");
    let agent = Agent::start(&pulse, bridge.addr());
    let dir = tempfile::tempdir().unwrap();
    let speech = load_wav(fixture("audio/speech.wav"));
    let clip = dir.path().join("clip.wav");
    write_wav(&clip, &speech[..48_000 * 12 / 10]).unwrap();

    let mut c = Console::connect(agent.addr);
    c.login(BASE_URL, "zydd", "pw-zydd");
    let sid = call(&mut c, id1, 1);
    t1.wait_in_channel(&format!("call-{sid}"), T);

    let mut up = Vec::new();
    for i in 0..BURSTS {
        t1.record_start();
        let recording_from = Instant::now();
        std::thread::sleep(Duration::from_millis(100));
        let played = recording_from.elapsed().as_secs_f64() * 1000.0;
        pulse.play_into_mic(&clip);
        std::thread::sleep(Duration::from_millis(500));
        let rec = t1.record_stop(&dir.path().join(format!("t1-{i}.wav")));
        let track = console_track(&rec, &format!("burst {i}"));
        // Each window where it landed, as the audio tests compare: a PulseAudio source that
        // underruns on a busy machine shifts the alignment mid-burst without spoiling the audio.
        let cmp = compare_through_bridge(&clip, Path::new(&track));
        if cmp.median_correlation >= 0.9 {
            up.push(cmp.lag_ms() as f64 - played);
        } else {
            println!("burst {i} PC microphone → t1 not clean: {cmp}");
        }
    }
    c.send(json!({"type": "releaseMic"}));
    assert_eq!(c.expect_type("releaseMic", REPLY)["code"], 1);

    let mut down = Vec::new();
    for i in 0..BURSTS {
        let heard = pulse.record_speaker(&dir.path().join(format!("speaker-{i}.wav")));
        let recording_from = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        let played = recording_from.elapsed().as_secs_f64() * 1000.0;
        t1.play_and_wait(&clip, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
        let cmp = compare_through_bridge(&clip, Path::new(&heard.stop()));
        if cmp.median_correlation >= 0.9 {
            down.push(cmp.lag_ms() as f64 - played);
        } else {
            println!("burst {i} t1 → PC speaker not clean: {cmp}");
        }
    }
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    for (what, v) in [
        ("PC microphone → t1", &mut up),
        ("t1 → PC speaker", &mut down),
    ] {
        // A measurement, not the audio test (those are above): a burst the busy machine spoiled
        // is left out, but the path must carry nearly all of them.
        assert!(
            v.len() >= BURSTS - 2,
            "{what}: only {} of {BURSTS} bursts came through clean",
            v.len()
        );
        println!(
            "figure: {what} mouth-to-ear over {} clean bursts of {BURSTS}: p50 {:.0} ms, p99 {:.0} ms (min {:.0}, max {:.0})",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            v[0],
            v[v.len() - 1]
        );
    }
    drop(agent);
}
