//! Load tool: N WebRTC listeners (str0m, the bridge's own WebRTC stack) playing one dialled-in
//! PTT channel with one talker (pass-through) or two (mixing). Prints the bridge's CPU per
//! listener, listeners per core, memory per listener, packet loss, and the bridge-added latency
//! (PTT voice packet in → RTP packet out) per route from its own histogram.
//!
//! ```sh
//! cargo build --release --bin pttbridge --example meeting_load
//! target/release/examples/meeting_load 1000                 # N listeners, one talker
//! target/release/examples/meeting_load 1 --talkers 2        # latency while mixing
//! target/release/examples/meeting_load 300 --seconds 20
//! target/release/examples/meeting_load 1 --passthrough buffered   # through the jitter buffer
//! ```
//! It starts its own murmurd (channel North), pymumble talkers that repeat a speech WAV, and
//! the release `pttbridge` next to this binary (or `$PTTBRIDGE_BIN`); everything on 127.0.0.1.
//! A bridge built with `--features count-allocs` also gives its heap allocations per packet. The listeners run in
//! this process on one thread, so on a small machine they compete with the bridge for CPU:
//! the bridge's own CPU time is what is reported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

const DIAL: i64 = 9001;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn request(ws: &mut Ws, msg: Value) -> Value {
    let (module, method) = (msg["module"].clone(), msg["method"].clone());
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("ws send");
    loop {
        let m = ws.next().await.expect("ws open").expect("ws frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            if v["module"] == module && v["method"] == method && v.get("result").is_some() {
                return v;
            }
        }
    }
}

async fn push(ws: &mut Ws, method: &str) -> Value {
    loop {
        let m = ws.next().await.expect("ws open").expect("ws frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            if v["method"] == method && v.get("result").is_none() {
                return v;
            }
        }
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// One listener: its own socket and Rtc, counting received audio packets.
async fn listener(
    mut rtc: Rtc,
    socket: UdpSocket,
    received: Arc<AtomicU64>,
    connected: Arc<AtomicU64>,
    stop: Arc<AtomicU64>,
) {
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2000];
    loop {
        if stop.load(Ordering::Relaxed) == 1 {
            return;
        }
        let timeout = match rtc.poll_output() {
            Ok(Output::Timeout(t)) => t,
            Ok(Output::Transmit(t)) => {
                let _ = socket.send_to(&t.contents, t.destination).await;
                continue;
            }
            Ok(Output::Event(Event::MediaData(_))) => {
                received.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Output::Event(Event::Connected)) => {
                connected.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Output::Event(_)) => continue,
            Err(_) => return,
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r
                    && let Ok(contents) = buf[..n].try_into()
                {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source: from, destination: local, contents }));
                }
            }
            _ = tokio::time::sleep(wait) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// The cumulative `name_bucket{labels..., le="b"}` counts of a Prometheus histogram, by bound.
fn buckets(metrics: &str, name: &str, label: &str) -> Vec<(f64, f64)> {
    let mut b: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")) && l.contains(label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}

/// Quantiles `qs` of what a histogram recorded between two scrapes, interpolated linearly within
/// the bucket (as Prometheus' `histogram_quantile` does); `None` when nothing was recorded.
fn quantiles(before: &str, after: &str, name: &str, label: &str, qs: &[f64]) -> Option<Vec<f64>> {
    let (b0, b1) = (buckets(before, name, label), buckets(after, name, label));
    let counts: Vec<(f64, f64)> = b1
        .iter()
        .map(|(le, n)| {
            let was = b0.iter().find(|(l, _)| l == le).map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    Some(
        qs.iter()
            .map(|q| {
                let rank = q * total;
                let (mut lower, mut below) = (0.0, 0.0);
                for &(le, n) in &counts {
                    if n >= rank {
                        if le.is_infinite() {
                            return lower;
                        }
                        let share = if n > below {
                            (rank - below) / (n - below)
                        } else {
                            1.0
                        };
                        return lower + (le - lower) * share;
                    }
                    (lower, below) = (le, n);
                }
                lower
            })
            .collect(),
    )
}

fn counter(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Args {
    listeners: usize,
    talkers: usize,
    seconds: u64,
    passthrough: String,
}

fn args() -> Args {
    let mut a = Args {
        listeners: 200,
        talkers: 1,
        seconds: 10,
        passthrough: "direct".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--talkers" => a.talkers = it.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--passthrough" => a.passthrough = it.next().unwrap_or_default(),
            n => {
                a.listeners = n
                    .parse()
                    .expect("usage: meeting_load [N] [--talkers K] [--seconds S]")
            }
        }
    }
    a
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    let n = a.listeners;
    // Another build of the bridge (e.g. an earlier commit, for before/after figures) when
    // PTTBRIDGE_BIN says so.
    let bin = std::env::var_os("PTTBRIDGE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .join("../pttbridge")
        });
    str0m::crypto::from_feature_flags().install_process_default();

    let server = Murmur::start(&["North"]);
    let config = format!(
        "{}\n[meeting]\nring_delay_ms = 10\nanswer_delay_ms = 10\npassthrough = \"{}\"\n\
         requests_per_second = 10000\nrequest_burst = 10000\n\
         [[meeting.apps]]\napp_id = \"load\"\nsecret = \"load-secret\"\n\
         [[meeting.dial_in]]\nuser_id = {DIAL}\nserver = \"local\"\naccount = \"bridge\"\n",
        ptt_server_toml("local", &server, &[("bridge", "North")]),
        a.passthrough
    );
    let bridge = Bridge::start(&bin, &config);
    bridge.wait_health(
        "linked to North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        Duration::from_secs(20),
    );
    let addr: SocketAddr = bridge.addr();
    let bridge_pid = bridge.pid();

    // getSign needs the app's credentials, and one socket asks for every listener's play, far
    // over a client's request rate (docs/security.md): both are configured above.
    let sign: Value = testkit::http::get(addr, "/app/getSign?appId=load&secret=load-secret")
        .unwrap()
        .json();
    let login: Value = testkit::http::request(
        addr,
        "POST",
        "/app/account",
        Some(&json!({"method":"dockingLogin","account":"load","sign":sign["data"]}).to_string()),
    )
    .unwrap()
    .json();
    let me = login["user"]["id"].as_i64().unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/rtcpeer"))
        .await
        .expect("ws");
    request(
        &mut ws,
        json!({"module":"call","method":"doRegister","SID":login["SID"],"userId":me}),
    )
    .await;
    let room = request(&mut ws, json!({"module":"room","method":"newAppRoom","name":"load","numberLimit":200,"roomtype":1,"userId":me})).await["roomId"].as_i64().unwrap();
    request(
        &mut ws,
        json!({"module":"meeting","method":"enter","userId":me,"roomId":room,"roomType":1}),
    )
    .await;
    request(&mut ws, json!({"module":"call","method":"doInvite","ownUserId":me,"targetUserId":DIAL,"roomId":room})).await;
    push(&mut ws, "doAgree").await;
    request(&mut ws, json!({"module":"call","method":"doEvent","ownUserId":me,"targetUserId":DIAL,"event":"onConnected","roomId":room,"roomType":1})).await;

    let received = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib(bridge_pid);
    let t_setup = Instant::now();
    for _ in 0..n {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let r = request(&mut ws, json!({"module":"meeting","method":"play","client":{"id":DIAL},"sdp":offer.to_sdp_string()})).await;
        assert_eq!(r["result"], 0, "play refused: {r}");
        let answer = SdpAnswer::from_sdp_string(r["sdp"].as_str().unwrap()).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        tokio::spawn(listener(
            rtc,
            socket,
            received.clone(),
            connected.clone(),
            stop.clone(),
        ));
    }
    // Keep reading the signalling socket: pings are answered while reading, and the bridge lets a
    // client go after 8 s without a pong.
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    while (connected.load(Ordering::Relaxed) as usize) < n
        && t_setup.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{} of {n} listeners connected in {:.1} s",
        connected.load(Ordering::Relaxed),
        t_setup.elapsed().as_secs_f64()
    );

    let rss1 = rss_kib(bridge_pid);
    println!(
        "bridge memory: {:.1} MiB before the listeners, {:.1} MiB with {n}: {:.1} KiB per listener",
        rss0 / 1024.0,
        rss1 / 1024.0,
        (rss1 - rss0) / n as f64
    );

    // The talkers: pymumble terminals repeating speech (continuous: 50 packets/s each).
    let wav = fixture("audio/speech.wav");
    let repeats = (a.seconds as usize + 6) / 3 + 1;
    let mut talkers = Vec::new();
    for i in 0..a.talkers {
        let mut t = Terminal::connect(server.port(), &format!("talker{i}"), Some("North"));
        for _ in 0..repeats {
            t.play(&wav);
        }
        talkers.push(t);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(a.seconds);
    let m0 = bridge.get("/metrics").body;
    let me0 = cpu_seconds(std::process::id());
    let (cpu0, rx0, t0) = (
        cpu_seconds(bridge_pid),
        received.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (cpu1, rx1, secs) = (
        cpu_seconds(bridge_pid),
        received.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    let m1 = bridge.get("/metrics").body;
    stop.store(1, Ordering::Relaxed);
    let cpu = (cpu1 - cpu0) / secs;
    let me = (cpu_seconds(std::process::id()) - me0) / secs;
    let sent = counter(&m1, "pttbridge_meeting_rtp_total{direction=\"out\"}")
        - counter(&m0, "pttbridge_meeting_rtp_total{direction=\"out\"}");
    let got = (rx1 - rx0) as f64;
    let ptt_in = counter(&m1, "pttbridge_meeting_rtp_total{direction=\"ptt_in\"}")
        - counter(&m0, "pttbridge_meeting_rtp_total{direction=\"ptt_in\"}");
    let voice_in = |m: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("pttbridge_ptt_voice_packets_total{")
                    && l.contains("direction=\"in\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let ptt_voice = voice_in(&m1) - voice_in(&m0);
    println!(
        "PTT voice packets received by the bridge's account: {ptt_voice:.0} ({:.1}/s)",
        ptt_voice / t0.elapsed().as_secs_f64()
    );
    if std::env::var_os("LOAD_DEBUG").is_some() {
        let logs = bridge.logs();
        for pat in [
            "no STUN answer",
            "peer failed",
            "peer lost",
            "IceConnectionState",
            "Disconnected",
        ] {
            let hits: Vec<&str> = logs.lines().filter(|l| l.contains(pat)).collect();
            println!(
                "  log {pat:?}: {} lines; first: {}",
                hits.len(),
                hits.first().unwrap_or(&"")
            );
        }
        for l in m1
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_bucket") && !l.contains("_sum"))
        {
            println!("  {l}");
        }
    }
    println!(
        "listeners {n}, talkers {}, pass-through {}: bridge CPU {:.1} % of a core, {:.2} µs of CPU per second per listener, {:.0} listeners per core",
        a.talkers,
        a.passthrough,
        cpu * 100.0,
        cpu * 1e6 / n as f64,
        n as f64 / cpu.max(1e-9)
    );
    println!(
        "the listeners (this process, one thread): {:.1} % of a core",
        me * 100.0
    );
    println!(
        "packets: PTT in {ptt_in:.0} ({:.1}/s), bridge sent {sent:.0} ({:.1}/s per listener), listeners received {got:.0}: loss {:.2} %",
        ptt_in / secs,
        sent / secs / n as f64,
        (1.0 - got / sent.max(1.0)).max(0.0) * 100.0
    );
    let allocs = counter(&m1, "pttbridge_process_allocations_total")
        - counter(&m0, "pttbridge_process_allocations_total");
    if allocs > 0.0 {
        println!(
            "heap allocations in the bridge (built with --features count-allocs): {:.0}/s, {:.2} per RTP packet sent, {:.1} per PTT voice packet in",
            allocs / secs,
            allocs / sent.max(1.0),
            allocs / ptt_in.max(1.0)
        );
    }
    for route in ["direct", "passthrough", "mix"] {
        let Some(q) = quantiles(
            &m0,
            &m1,
            "pttbridge_meeting_bridge_latency_seconds",
            &format!("route=\"{route}\""),
            &[0.5, 0.9, 0.99],
        ) else {
            continue;
        };
        let show: Vec<String> = ["p50", "p90", "p99"]
            .iter()
            .zip(&q)
            .map(|(name, v)| format!("{name} {:.2} ms", v * 1e3))
            .collect();
        println!("bridge latency {route}: {}", show.join(", "));
    }
    drop(talkers);
}
