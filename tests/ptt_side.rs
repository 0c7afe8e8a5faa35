//! The PTT side against real peers: Debian's murmurd as the server and pymumble
//! terminals, with the bridge (`pttbridge run`) and its probe (`pttbridge probe`)
//! as the processes under test.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::audio::{compare, compare_files, load_wav, read_ogg_opus};
use testkit::bridge::{Bridge, Probe, ptt_server_toml};
use testkit::murmur::Murmur;
use testkit::peers::{fixture, free_port};
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);

fn account(h: &Value) -> &Value {
    &h["sides"]["ptt"]["servers"][0]["accounts"][0]
}

fn connected_in(channel: &'static str) -> impl Fn(&Value) -> bool {
    move |h| account(h)["state"] == "connected" && account(h)["channel"] == channel
}

fn is(kind: &'static str, who: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == kind && e["party"]["name"] == who
}

/// Lets the last frames arrive after the sender is done.
fn settle() {
    std::thread::sleep(Duration::from_millis(700));
}

#[test]
fn bridge_joins_its_channel_and_reports_presence_talk_and_text() {
    let server = Murmur::start(&["North", "South"]);
    let bridge = Bridge::start(
        BIN,
        &ptt_server_toml("local", &server, &[("bridge", "North")]),
    );
    let mut events = bridge.events();
    bridge.wait_health("connected in North", connected_in("North"), T);

    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    assert!(
        alice.users().contains(&"bridge".to_string()),
        "a third-party client sees the bridge in North"
    );
    // A terminal lands in the root channel and then moves: both steps are reported.
    let in_north = |e: &Value| is("party.joined", "alice")(e) && e["group_id"] == "ptt:local:North";
    let joined = events.try_expect(in_north, T).expect("alice joined North");
    assert_eq!(joined["app_id"], "default");

    alice.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
    let started = events
        .try_expect(is("talk.started", "alice"), T)
        .expect("talk.started");
    let stopped = events
        .try_expect(is("talk.stopped", "alice"), T)
        .expect("talk.stopped");
    assert_eq!(started["group_id"], "ptt:local:North");
    assert_eq!(
        started["detail"]["media_type"], 2,
        "PTT talk is audio media"
    );
    let talk_ms = stopped["time_ms"].as_u64().unwrap() - started["time_ms"].as_u64().unwrap();
    // The burst lasts the WAV (3.85 s) plus the silence timeout; jitter makes it a little more or less.
    assert!(
        (3500..=4800).contains(&talk_ms),
        "talk burst of {talk_ms} ms for a 3.85 s WAV"
    );

    alice.text("hello bridge");
    let text = events
        .try_expect(
            |e| e["type"] == "message.text" && e["detail"]["text"] == "hello bridge",
            T,
        )
        .expect("text event");
    assert_eq!(text["party"]["name"], "alice");

    alice.move_to("South");
    let in_group = |kind: &'static str, group: &'static str| {
        move |e: &Value| is(kind, "alice")(e) && e["group_id"] == group
    };
    events
        .try_expect(in_group("party.left", "ptt:local:North"), T)
        .expect("left North");
    events
        .try_expect(in_group("party.joined", "ptt:local:South"), T)
        .expect("joined South");
    alice.quit();
    events
        .try_expect(in_group("party.left", "ptt:local:South"), T)
        .expect("alice left");

    // One app, one stream: every version is the previous plus one.
    let versions: Vec<u64> = events
        .history()
        .iter()
        .filter(|e| e["app_id"] == "default")
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous versions: {versions:?}"
    );

    let voice_in = bridge.metric("pttbridge_ptt_voice_packets_total", &[("direction", "in")]);
    assert!(
        voice_in >= 150.0,
        "the bridge received alice's voice packets: {voice_in}"
    );
    assert!(bridge.metric("pttbridge_ptt_talk_bursts_total", &[]) >= 1.0);
}

/// pymumble speaks → the probe records; the probe speaks → pymumble records; text both ways.
/// With `udp_blocked`, the probe's UDP goes to a port where nothing listens, as behind a
/// firewall that drops UDP: voice must use the TCP tunnel both ways and sound the same.
fn audio_and_text_both_ways(udp_blocked: bool) {
    let server = Murmur::start(&["North"]);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let dir = tempfile::tempdir().unwrap();
    let speech = fixture("audio/speech.wav");
    let dead_port = free_port().to_string();
    let mut extra: Vec<&str> = vec!["--channel", "North"];
    if udp_blocked {
        extra.extend(["--udp-port", &dead_port]);
    }
    let path = |what: &'static str| if udp_blocked { "tcp" } else { what };

    // PTT terminal → probe, and text both ways.
    let rec = dir.path().join("probe.wav");
    let rec_s = rec.display().to_string();
    let mut args = extra.clone();
    args.extend([
        "--record",
        &rec_s,
        "--seconds",
        "8",
        "--text",
        "hi from the probe",
    ]);
    let mut listener = Probe::spawn(BIN, &server, "listener", &args);
    listener.expect_event("ready", T);
    alice.expect(
        |e| e["event"] == "text" && e["message"] == "hi from the probe",
        T,
    );
    alice.text("hi from alice");
    let text = listener.expect(
        |e| e["event"] == "text" && e["message"] == "hi from alice",
        T,
    );
    assert_eq!(text["from"], "alice");
    alice.play_and_wait(&speech, Duration::from_secs(30));
    assert_eq!(listener.expect_event("talk_started", T)["name"], "alice");
    assert_eq!(listener.expect_event("talk_stopped", T)["name"], "alice");
    listener.expect_event("recorded", T);
    let stats = listener.expect_event("stats", T);
    assert!(listener.wait(T).success());
    let heard = stats["voice_in"][path("udp")].as_u64().unwrap();
    let other = stats["voice_in"][if udp_blocked { "udp" } else { "tcp" }]
        .as_u64()
        .unwrap();
    assert!(
        heard >= 150 && other == 0,
        "voice in over {}: {stats}",
        path("udp")
    );
    assert_eq!(stats["udp_working"], !udp_blocked, "{stats}");
    let c = compare_files(&speech, &rec);
    println!("pymumble → probe ({}): {c}", path("udp"));
    c.assert_matches(0.9, 0.05);

    // Probe → PTT terminal.
    bob.record_start();
    let mut args = extra.clone();
    let speech_s = speech.display().to_string();
    args.extend(["--play", &speech_s, "--seconds", "5"]);
    let mut speaker = Probe::spawn(BIN, &server, "speaker", &args);
    speaker.expect_event("play_done", Duration::from_secs(30));
    let stats = speaker.expect_event("stats", T);
    settle();
    let out = dir.path().join("bob.wav");
    bob.record_stop(&out);
    let sent = stats["voice_out"][path("udp")].as_u64().unwrap();
    assert!(
        sent >= 190 && stats["voice_out"]["dropped"] == 0,
        "voice out over {}: {stats}",
        path("udp")
    );
    if udp_blocked {
        assert_eq!(stats["voice_out"]["udp"], 0, "{stats}");
    }
    bob.expect(|e| e["event"] == "talk_start" && e["name"] == "speaker", T);
    let c = compare_files(&speech, &out);
    println!("probe → pymumble ({}): {c}", path("udp"));
    c.assert_matches(0.9, 0.05);
}

#[test]
fn audio_and_text_both_ways_over_udp() {
    audio_and_text_both_ways(false);
}

#[test]
fn audio_and_text_both_ways_over_the_tcp_tunnel_when_udp_is_blocked() {
    audio_and_text_both_ways(true);
}

#[test]
fn bridge_reconnects_after_murmurd_restarts_and_audio_flows_again() {
    let mut server = Murmur::start(&["North"]);
    let recordings = tempfile::tempdir().unwrap();
    let config = format!(
        "[recording]\ndir = \"{}\"\n{}",
        recordings.path().display(),
        ptt_server_toml("local", &server, &[("bridge", "North")])
    );
    let bridge = Bridge::start(BIN, &config);
    bridge.wait_health("connected in North", connected_in("North"), T);
    let mut events = bridge.events();
    let probes = |bridge: &Bridge| {
        ["/livez", "/readyz", "/healthz"].map(|p| bridge.request_with("GET", p, None, &[]).status)
    };
    assert_eq!(probes(&bridge), [200, 200, 200], "live, ready, healthy");

    server.kill();
    let down = bridge.wait_health(
        "reconnecting",
        |h| account(h)["state"] == "reconnecting" && h["status"] == "degraded",
        T,
    );
    let reason = account(&down)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!reason.is_empty(), "health says why: {down}");
    println!("while murmurd is down: {down}");
    assert_eq!(
        probes(&bridge),
        [200, 503, 503],
        "alive, but neither ready nor healthy"
    );
    events
        .try_expect(|e| e["type"] == "side.disconnected", T)
        .expect("side.disconnected event");

    // Stay down a while so the backoff grows to its cap before the server returns.
    std::thread::sleep(Duration::from_secs(6));
    server.restart();
    let back = Instant::now();
    bridge.wait_health("connected in North again", connected_in("North"), T);
    let took = back.elapsed();
    println!("reconnected and rejoined North {took:?} after murmurd was back");
    assert!(took < Duration::from_secs(5), "reconnect took {took:?}");
    assert!(account(&bridge.health())["reconnects"].as_u64().unwrap() >= 1);
    assert_eq!(probes(&bridge), [200, 200, 200], "ready again");
    events
        .try_expect(|e| e["type"] == "side.connected", T)
        .expect("side.connected event");

    let before = bridge.metric("pttbridge_ptt_voice_packets_total", &[("direction", "in")]);
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    alice.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
    events
        .try_expect(is("talk.started", "alice"), T)
        .expect("talk after reconnect");
    events
        .try_expect(is("talk.stopped", "alice"), T)
        .expect("talk stop after reconnect");
    let after = bridge.metric("pttbridge_ptt_voice_packets_total", &[("direction", "in")]);
    assert!(
        after - before >= 150.0,
        "voice flows again: {before} → {after}"
    );

    // What the bridge heard after the restart is the speech itself: its recording of the burst.
    let index_path = recordings.path().join("index.jsonl");
    let deadline = Instant::now() + T;
    let entry: Value = loop {
        let index = std::fs::read_to_string(&index_path).unwrap_or_default();
        if let Some(line) = index.lines().find(|l| l.contains("\"alice\"")) {
            break serde_json::from_str(line).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no recording of alice indexed: {index:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entry["group_id"], "ptt:local:North");
    let file = recordings.path().join(entry["file"].as_str().unwrap());
    let heard = read_ogg_opus(&file).unwrap();
    let c = compare(&load_wav(fixture("audio/speech.wav")), &heard);
    println!("bridge recording after reconnect: {c}");
    c.assert_matches(0.9, 0.05);
}

#[test]
fn a_bad_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[ptt.servers]]\nid = \"x\"\nhost = \"127.0.0.1\"\n[[ptt.servers.accounts]]\nusername = \"b\"\n",
    )
    .unwrap();
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["run", "--config", path.to_str().unwrap()],
    ] {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            stderr.contains("ptt.servers[0].fingerprint"),
            "{args:?}: {stderr}"
        );
    }
    // A cluster node without an operator token: each node would generate its own.
    let cluster = dir.path().join("cluster.toml");
    std::fs::write(
        &cluster,
        "[cluster]\nnode_id = \"a\"\nurl = \"nats://127.0.0.1:4222\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", cluster.to_str().unwrap()])
        .env_remove("PTTBRIDGE_OPERATOR_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a cluster node with no operator token"
    );
    assert!(
        stderr.contains("operator.token: required on a cluster node"),
        "{stderr}"
    );
    let ok = std::process::Command::new(BIN)
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/bridge.toml"),
        ])
        .output()
        .unwrap();
    assert!(ok.status.success());
    // A config that is valid but does nothing passes, with a warning that says so.
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", empty.to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("ok, with 1 warning"), "{stdout}");
    assert!(
        stderr.contains("warning: ptt.servers: none configured"),
        "{stderr}"
    );
}

/// `pttbridge probe` prints the fingerprint to pin (docs/deploy.md): with `--insecure` it says
/// what the server presents; with a wrong `--fingerprint` it says that too, and that it differs,
/// before the pinned connection fails.
#[test]
fn the_probe_prints_the_servers_fingerprint_to_pin() {
    let server = Murmur::start(&["North"]);
    let run = |trust: &[&str]| -> Vec<serde_json::Value> {
        let out = std::process::Command::new(BIN)
            .arg("probe")
            .args(["--server", &format!("127.0.0.1:{}", server.port())])
            .args(trust)
            .args(["--user", "pinner", "--seconds", "1"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let certificate = |events: &[serde_json::Value]| {
        events
            .iter()
            .find(|e| e["event"] == "certificate")
            .cloned()
            .unwrap_or_else(|| panic!("no certificate event: {events:?}"))
    };
    // Printed as the config writes it (hex pairs joined by ':'); the test server's pin is plain hex.
    let hex = |c: &serde_json::Value| c["fingerprint"].as_str().unwrap_or("").replace(':', "");
    let insecure = run(&["--insecure"]);
    let c = certificate(&insecure);
    assert_eq!(hex(&c), server.cert_sha256(), "{c}");
    assert!(c["pinned"].is_null(), "{c}");
    let wrong = "00:".repeat(31) + "00";
    let pinned_wrong = run(&["--fingerprint", &wrong]);
    let c = certificate(&pinned_wrong);
    assert_eq!(hex(&c), server.cert_sha256(), "{c}");
    assert_eq!(c["pinned"], false, "{c}");
    assert!(
        pinned_wrong.iter().any(|e| e["event"] == "error"),
        "the pinned connection fails: {pinned_wrong:?}"
    );
}
