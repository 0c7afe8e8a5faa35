//! Console side figures (issue 5, "Measure"): time from `requestMic` to the first console audio
//! at a terminal, and how many consoles with active calls one core of the bridge carries.
//!
//! Runs a real murmurd (testkit), the release `pttbridge` binary pinned to one core with one tokio
//! worker (`taskset -c 0`, `TOKIO_WORKER_THREADS=1`), Rust PTT clients (`ptt::client`) as terminals
//! and test consoles (`testkit::console`) speaking the documented protocol. murmurd and this tool
//! run on the other core.
//!
//! ```text
//! cargo build --release --bin pttbridge --example console_load
//! target/release/examples/console_load [--runs 50] [--steps 10,25,50,100] [--seconds 10] [--codec pcm16|opus]
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muicall::audio::Codec;
use ptt::client::{self, ClientConfig, ClientEvent, ClientHandle};
use ptt::session::{Event, SessionConfig};
use serde_json::{Value, json};
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::console::{Console, encode_wav};
use testkit::murmur::Murmur;
use testkit::peers::fixture;

const BASE_URL: &str = "http://load.test";
const T: Duration = Duration::from_secs(20);

struct Args {
    runs: usize,
    steps: Vec<usize>,
    seconds: u64,
    codec: Codec,
}

fn args() -> Args {
    let mut a = Args {
        runs: 50,
        steps: vec![10, 25, 50, 100],
        seconds: 10,
        codec: Codec::Pcm16(16_000),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--runs" => a.runs = v.parse().expect("--runs N"),
            "--steps" => {
                a.steps = v
                    .split(',')
                    .map(|s| s.parse().expect("--steps 10,20"))
                    .collect()
            }
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--codec" => {
                a.codec = match v {
                    "opus" => Codec::Opus,
                    "pcm16" => Codec::Pcm16(16_000),
                    other => panic!("--codec opus|pcm16, not {other}"),
                }
            }
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// A terminal: counts voice packets and notes when the first one after `arm` arrived.
#[derive(Default)]
struct Ear {
    packets: AtomicU64,
    armed: Mutex<Option<Instant>>,
    first: Mutex<Option<Instant>>,
}

fn terminal(rt: &tokio::runtime::Runtime, server: &Murmur, name: &str) -> (ClientHandle, Arc<Ear>) {
    let session = SessionConfig {
        username: name.into(),
        password: format!("pw-{name}"),
        channel: Some("Home".into()),
        ..SessionConfig::default()
    };
    let cc = ClientConfig::new(
        "127.0.0.1",
        server.port(),
        ptt::tls::ServerTrust::AcceptInvalid,
        session,
    );
    let ear = Arc::new(Ear::default());
    let (handle, mut events) = rt.block_on(async { client::spawn(cc) });
    let e = ear.clone();
    rt.spawn(async move {
        while let Some(ev) = events.recv().await {
            if let ClientEvent::Session(Event::Voice { .. }) = ev {
                e.packets.fetch_add(1, Ordering::Relaxed);
                if e.armed.lock().unwrap().is_some() {
                    let mut f = e.first.lock().unwrap();
                    f.get_or_insert_with(Instant::now);
                }
            }
        }
    });
    (handle, ear)
}

fn wait_synced(h: &ClientHandle, home: bool) -> bool {
    let deadline = Instant::now() + T;
    loop {
        let s = h.snapshot();
        let in_home = s
            .own_channel
            .and_then(|c| s.channel_path(c))
            .is_some_and(|p| p == "Home");
        if s.state == client::LinkState::Connected && (!home || in_home) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) -> Value {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let s = json!({
        "what": name, "runs": ms.len(),
        "p50_ms": (percentile(&ms, 0.5) * 10.0).round() / 10.0,
        "p99_ms": (percentile(&ms, 0.99) * 10.0).round() / 10.0,
        "min_ms": (ms[0] * 10.0).round() / 10.0,
        "max_ms": (ms[ms.len() - 1] * 10.0).round() / 10.0,
    });
    println!("{s}");
    s
}

/// Streams `frames` in real time (looping) until `stop`.
fn stream(
    console: &Console,
    frames: Arc<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let tx = console.frame_sender();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let due = start + Duration::from_millis(20 * i as u64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            let mut f = frames[i % frames.len()].clone();
            f[2] = 0; // never flag the end while looping
            if !tx.send(f) {
                return;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
    });
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 of the whole line (utime, stime) are 12 and 13 after the ')'
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn open_call(c: &mut Console, id: u32) -> String {
    c.send(json!({"type": "requestMic", "toIds": [id], "transaction": 1}));
    let created = c.expect_type("createGroup", T);
    assert_eq!(created["code"], 1, "{created}");
    let mic = c.expect_type("requestMic", T);
    assert_eq!(mic["code"], 2, "{mic}");
    created["sessionId"].as_str().unwrap().to_string()
}

fn main() {
    let a = args();
    let max = a.steps.iter().copied().max().unwrap_or(1).max(1);
    let bin: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("pttbridge");
    assert!(
        bin.is_file(),
        "build the bridge first: cargo build --release --bin pttbridge ({})",
        bin.display()
    );

    let mut b = Murmur::builder()
        .channel("Home")
        .ini("users", &(2 * max + 20).to_string());
    for i in 0..=max {
        b = b
            .user(&format!("c{i}"), &format!("pw-c{i}"))
            .user(&format!("t{i}"), &format!("pw-t{i}"));
    }
    let server = b.start();
    pin(std::process::id(), "1");
    if let Some(pid) = server.pid() {
        pin(pid, "1");
    }
    // Every console connects from 127.0.0.1: lift the per-address cap (64 by default).
    let config = format!(
        "[http]\nmax_connections_per_ip = 4096\n{}\n[console]\nrequests_per_second = 1000\nrequest_burst = 1000\nlogin_timeout_ms = 60000\nmove_timeout_ms = 30000\nsetup_wait_ms = 30000\n[[console.servers]]\nbase_url = \"{BASE_URL}\"\n\
         ptt_server = \"local\"\nadmin_username = \"SuperUser\"\nadmin_password = \"{}\"\n",
        ptt_server_toml("local", &server, &[("bridge", "Home")]),
        server.superuser_password()
    );
    // One worker thread, pinned to core 0: "one core".
    // SAFETY: set before any other thread of this process reads the environment.
    unsafe { std::env::set_var("TOKIO_WORKER_THREADS", "1") };
    let bridge = Bridge::start(&bin, &config);
    unsafe { std::env::remove_var("TOKIO_WORKER_THREADS") };
    pin(bridge.pid(), "0");
    bridge.wait_health(
        "admin up",
        |h| h["sides"]["console"]["servers"][0]["admin_connected"] == true,
        T,
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let speech = fixture("audio/speech.wav");
    let opus_frames = Arc::new(encode_wav(&speech, Codec::Opus));
    let load_frames = Arc::new(encode_wav(&speech, a.codec));
    let mut results = Vec::new();

    // ---- latency: requestMic → first console packet at the terminal ------------------------
    let (t0h, ear) = terminal(&rt, &server, "t0");
    assert!(wait_synced(&t0h, true), "t0 did not get to Home");
    let id0 = server.user_id("t0");
    let mut c = Console::connect(bridge.addr());
    login(&mut c, "c0");
    let mut new_call = Vec::new();
    let mut in_call = Vec::new();
    for _ in 0..a.runs {
        *ear.first.lock().unwrap() = None;
        let t0 = Instant::now();
        *ear.armed.lock().unwrap() = Some(t0);
        let sid = open_call(&mut c, id0);
        let stop = Arc::new(AtomicBool::new(false));
        stream(
            &c,
            opus_frames.clone(),
            stop.clone(),
            Arc::new(AtomicU64::new(0)),
        );
        let heard = wait_first(&ear);
        new_call.push(heard.duration_since(t0).as_secs_f64() * 1000.0);
        stop.store(true, Ordering::Relaxed);
        // Same call: release, then ask again.
        c.send(json!({"type": "releaseMic"}));
        c.expect_type("releaseMic", T);
        std::thread::sleep(Duration::from_millis(400));
        *ear.first.lock().unwrap() = None;
        let t1 = Instant::now();
        *ear.armed.lock().unwrap() = Some(t1);
        c.send(json!({"type": "requestMic", "sessionId": sid}));
        let mic = c.expect_type("requestMic", T);
        assert_eq!(mic["code"], 2, "{mic}");
        let stop = Arc::new(AtomicBool::new(false));
        stream(
            &c,
            opus_frames.clone(),
            stop.clone(),
            Arc::new(AtomicU64::new(0)),
        );
        let heard = wait_first(&ear);
        in_call.push(heard.duration_since(t1).as_secs_f64() * 1000.0);
        stop.store(true, Ordering::Relaxed);
        c.send(json!({"type": "tempCallHangup", "sessionId": sid}));
        c.expect(|v| v["type"] == "audioResp", T);
        *ear.armed.lock().unwrap() = None;
        if !wait_synced(&t0h, true) {
            let s = t0h.snapshot();
            panic!(
                "terminal not back Home after hang-up: in {:?}\n{}",
                s.own_channel.and_then(|c| s.channel_path(c)),
                bridge.logs_tail(60)
            );
        }
    }
    results.push(summary(
        "requestMic (new call, toIds) -> first console audio at the terminal",
        new_call,
    ));
    results.push(summary(
        "requestMic (existing call, sessionId) -> first console audio at the terminal",
        in_call,
    ));
    c.close();

    // ---- load: N consoles, each in a call with its own terminal, all talking -----------------
    let mut consoles: Vec<(Console, Arc<AtomicBool>, Arc<AtomicU64>)> = Vec::new();
    let mut ears: Vec<Arc<Ear>> = Vec::new();
    let mut clients = Vec::new();
    for &n in &a.steps {
        while consoles.len() < n {
            let i = consoles.len() + 1;
            let (h, ear) = terminal(&rt, &server, &format!("t{i}"));
            assert!(wait_synced(&h, true), "t{i} did not get to Home");
            let mut c = Console::connect(bridge.addr());
            login(&mut c, &format!("c{i}"));
            open_call(&mut c, server.user_id(&format!("t{i}")));
            let stop = Arc::new(AtomicBool::new(false));
            let sent = Arc::new(AtomicU64::new(0));
            stream(&c, load_frames.clone(), stop.clone(), sent.clone());
            consoles.push((c, stop, sent));
            ears.push(ear);
            clients.push(h);
        }
        std::thread::sleep(Duration::from_secs(2)); // let every stream settle
        let loadavg0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let sent0: u64 = consoles.iter().map(|c| c.2.load(Ordering::Relaxed)).sum();
        let heard0: u64 = ears.iter().map(|e| e.packets.load(Ordering::Relaxed)).sum();
        let cpu0 = cpu_ticks(bridge.pid());
        let w0 = Instant::now();
        std::thread::sleep(Duration::from_secs(a.seconds));
        let wall = w0.elapsed().as_secs_f64();
        let cpu = (cpu_ticks(bridge.pid()) - cpu0) as f64 / 100.0 / wall;
        let sent = consoles
            .iter()
            .map(|c| c.2.load(Ordering::Relaxed))
            .sum::<u64>()
            - sent0;
        let heard = ears
            .iter()
            .map(|e| e.packets.load(Ordering::Relaxed))
            .sum::<u64>()
            - heard0;
        let line = json!({
            "consoles_talking": n,
            "codec": format!("{:?}", a.codec),
            "bridge_cpu_percent_of_one_core": (cpu * 1000.0).round() / 10.0,
            "frames_sent_per_s": (sent as f64 / wall).round(),
            "packets_heard_per_s": (heard as f64 / wall).round(),
            "delivered_percent": ((heard as f64 / sent.max(1) as f64) * 1000.0).round() / 10.0,
            "loadavg_before": loadavg0.split_whitespace().next().unwrap_or_default(),
        });
        println!("{line}");
        results.push(line);
    }
    for c in &consoles {
        c.1.store(true, Ordering::Relaxed);
    }
    let dropped = bridge.metric("pttbridge_console_audio_dropped_total", &[]);
    println!(
        "{}",
        json!({"bridge_audio_dropped_total": dropped, "results": results.len()})
    );
}

/// Logs a console in, allowing for a PTT server slowed down by the load.
fn login(c: &mut Console, account: &str) {
    c.send(json!({"type": "initServer", "data": {"baseUrl": BASE_URL}}));
    assert_eq!(c.expect_type("initServer", T)["code"], 1);
    c.send(json!({"type": "connect", "data": {"account": account, "password": format!("pw-{account}")}}));
    let login = c.expect_type("login", Duration::from_secs(60));
    assert_eq!(login["code"], 1, "{login}");
}

fn wait_first(ear: &Ear) -> Instant {
    let deadline = Instant::now() + T;
    loop {
        if let Some(t) = *ear.first.lock().unwrap() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "the terminal never heard the console"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Pins a process (all its threads) to CPU list `cpus` when `taskset` exists.
fn pin(pid: u32, cpus: &str) {
    let _ = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status();
}
