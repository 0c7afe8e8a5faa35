//! Load tool: N WebRTC listeners (str0m, the bridge's own WebRTC stack) playing one dialled-in
//! PTT channel with one talker (pass-through) or two (mixing). Prints the bridge's CPU per
//! listener, listeners per core, memory per listener (RSS growth once connected and again after
//! the window; with a `--features count-allocs` bridge also its heap), packet loss, and the
//! bridge-added latency (PTT voice packet in → RTP packet out) per route from its own histogram.
//!
//! ```sh
//! cargo build --release --bin pttbridge --example meeting_load
//! target/release/examples/meeting_load 1000                 # N listeners, one talker
//! target/release/examples/meeting_load 1 --talkers 2        # latency while mixing
//! target/release/examples/meeting_load 300 --seconds 20
//! target/release/examples/meeting_load 1 --passthrough buffered   # through the jitter buffer
//! target/release/examples/meeting_load 1000 --meeting "fanout_shard_listeners = 0"   # any [meeting] key
//! target/release/examples/meeting_load 1000 --target janus-streaming     # Janus, side by side
//! target/release/examples/meeting_load 1000 --target janus-audiobridge
//! target/release/examples/meeting_load 1000 --remote 50     # 950 listeners as if across a network
//! ```
//! `--remote K`: all listeners but K (spread over the fan-out) are treated as on other
//! machines: the RTP sent to them is dropped at loopback's egress (`testkit::egress_drop`; root
//! and nftables), so the server no longer pays loopback's delivery to the receiving socket.
//! Loss, latency and the probes are then measured on the K.
//!
//! `--target janus-*` runs the same listeners against Debian's Janus instead of the bridge
//! (see `janus.rs` and `bench/janus-compare/`): the talker is then RTP Opus sent by this process,
//! and the latency is measured end to end, from this process's send to the kernel's receive
//! time stamp on the listener's socket. Against the bridge, a PTT client of this process's own
//! (the `ptt` crate, on a thread of its own) sits in the channel next to the bridge's account:
//! when it receives each voice packet from murmurd is the reference for the listeners' kernel
//! receive stamps of the same Opus payload (pass-through forwards it unchanged).
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
use testkit::terminal::Terminal;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

mod janus;
mod stamp;

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

/// What the listeners share: counters, and (when this process is the talker) the payloads'
/// send times and the latency histogram they feed.
#[derive(Clone)]
struct Shared {
    received: Arc<AtomicU64>,
    connected: Arc<AtomicU64>,
    stop: Arc<AtomicU64>,
    sent_at: Option<janus::SendTimes>,
    latency: Arc<stamp::Histogram>,
    /// Whether talkers and probes record their tapes now (the measured window).
    taping: Arc<std::sync::atomic::AtomicBool>,
}

/// One listener: its own socket and Rtc, counting received audio packets.
async fn listener(mut rtc: Rtc, socket: UdpSocket, shared: Shared, probe: Option<janus::Tape>) {
    let Shared {
        received,
        connected,
        stop,
        sent_at,
        latency,
        taping,
    } = shared;
    let mut decoder = probe
        .is_some()
        .then(|| media::opus::Decoder::new(48_000, media::Channels::Mono).unwrap());
    let mut pcm = vec![0i16; 5760];
    stamp::enable(&socket);
    let mut arrived = std::time::SystemTime::now();
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
            Ok(Output::Event(Event::MediaData(d))) => {
                received.fetch_add(1, Ordering::Relaxed);
                if let Some(sent_at) = &sent_at {
                    let sent = sent_at
                        .lock()
                        .unwrap()
                        .get(&janus::payload_key(&d.data))
                        .copied();
                    if let Some(sent) = sent
                        && let Ok(d) = arrived.duration_since(sent)
                    {
                        latency.record(d);
                    }
                }
                if let (Some(tape), Some(dec)) = (&probe, &mut decoder)
                    && taping.load(Ordering::Relaxed)
                    && let Ok(n) = dec.decode(Some(&d.data), false, &mut pcm)
                {
                    janus::record(tape, arrived, &pcm[..n]);
                }
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
            r = stamp::recv(&socket, &mut buf) => {
                if let Ok((n, from, at)) = r
                    && let Ok(contents) = buf[..n].try_into()
                {
                    arrived = at;
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
    pttbridge::metrics_catalog::histogram_buckets(metrics, name, label)
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

/// What serves the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Bridge,
    Janus(janus::Plugin),
}

struct Args {
    listeners: usize,
    talkers: usize,
    seconds: u64,
    passthrough: String,
    target: Target,
    /// `[meeting]` lines added to the bridge's config (`--meeting "key = value"`).
    meeting: Vec<String>,
    /// `--remote K`: how many listeners receive their RTP; the others' is dropped at egress.
    remote: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        listeners: 200,
        talkers: 1,
        seconds: 10,
        passthrough: "direct".into(),
        target: Target::Bridge,
        meeting: Vec::new(),
        remote: None,
    };
    let usage = "usage: meeting_load [N] [--talkers K] [--seconds S] [--passthrough direct|buffered|mix] \
                 [--target bridge|janus-streaming|janus-audiobridge] [--meeting \"key = value\"]... [--remote K]";
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--talkers" => a.talkers = it.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--passthrough" => a.passthrough = it.next().unwrap_or_default(),
            "--meeting" => a.meeting.push(it.next().expect(usage)),
            "--remote" => a.remote = Some(it.next().and_then(|v| v.parse().ok()).expect(usage)),
            "--target" => {
                a.target = match it.next().as_deref() {
                    Some("bridge") => Target::Bridge,
                    Some("janus-streaming") => Target::Janus(janus::Plugin::Streaming),
                    Some("janus-audiobridge") => Target::Janus(janus::Plugin::AudioBridge),
                    _ => panic!("{usage}"),
                }
            }
            n => a.listeners = n.parse().expect(usage),
        }
    }
    assert!(
        a.target != Target::Janus(janus::Plugin::Streaming) || a.talkers == 1,
        "a Janus Streaming mountpoint has one talker"
    );
    a
}

/// A listener's Rtc with Opus only, and its socket bound on `ip`.
async fn new_listener(ip: std::net::IpAddr) -> (Rtc, UdpSocket) {
    let socket = UdpSocket::bind((ip, 0)).await.unwrap();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
    (rtc, socket)
}

/// A recvonly audio offer from `rtc`.
fn recvonly_offer(rtc: &mut Rtc) -> (String, str0m::change::SdpPendingOffer) {
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    (offer.to_sdp_string(), pending)
}

/// A blocking call run off the listeners' thread, so they keep answering ICE meanwhile.
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The bridge under test: murmurd, the release bridge with a dial-in to North, and a meeting
/// client that opened a room and dialled the channel into it.
struct BridgeUnderTest {
    server: Murmur,
    bridge: Bridge,
    ws: Ws,
}

async fn start_bridge(passthrough: &str, meeting: &[String]) -> BridgeUnderTest {
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
    let server = Murmur::start(&["North"]);
    let config = format!(
        "{}\n[meeting]\nring_delay_ms = 10\nanswer_delay_ms = 10\npassthrough = \"{passthrough}\"\n\
         requests_per_second = 10000\nrequest_burst = 10000\n{}\n\
         [[meeting.apps]]\napp_id = \"load\"\nsecret = \"load-secret\"\n\
         [[meeting.dial_in]]\nuser_id = {DIAL}\nserver = \"local\"\naccount = \"bridge\"\n",
        ptt_server_toml("local", &server, &[("bridge", "North")]),
        meeting.join("\n"),
    );
    let bridge = Bridge::start(&bin, &config);
    bridge.wait_health(
        "linked to North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        Duration::from_secs(20),
    );
    let addr: SocketAddr = bridge.addr();
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
    BridgeUnderTest { server, bridge, ws }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    let n = a.listeners;
    str0m::crypto::from_feature_flags().install_process_default();

    let shared = Shared {
        received: Arc::new(AtomicU64::new(0)),
        connected: Arc::new(AtomicU64::new(0)),
        stop: Arc::new(AtomicU64::new(0)),
        sent_at: Some(janus::SendTimes::default()),
        latency: Arc::new(stamp::Histogram::default()),
        taping: Arc::default(),
    };
    // A few listeners spread over the fan-out decode what they hear, to find the talker's
    // speech in it (Janus only: this process is then the talker and knows when it sent what).
    let mut probes: Vec<(usize, janus::Tape)> = Vec::new();
    let talker_tape = janus::Tape::default();
    let speech = testkit::peers::fixture("audio/speech.wav");

    // The server under test, and what the RTP talker (Janus only) sends to.
    let mut bridge = None;
    let mut janus = None;
    let mut rtp_in = Vec::new();
    let mut talker_sockets: Vec<std::net::UdpSocket> = Vec::new();
    match a.target {
        Target::Bridge => bridge = Some(start_bridge(&a.passthrough, &a.meeting).await),
        Target::Janus(plugin) => {
            let mut j = off_thread(janus::Janus::start).await;
            // The talkers' sockets: Janus takes a plain-RTP participant's packets only from the
            // address it joined with (and sends it the mix there, unread).
            talker_sockets = (0..a.talkers)
                .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                .collect();
            let from: Vec<SocketAddr> = talker_sockets
                .iter()
                .map(|s: &std::net::UdpSocket| s.local_addr().unwrap())
                .collect();
            let (j, to) = off_thread(move || {
                let to = j.prepare(plugin, &from);
                (j, to)
            })
            .await;
            janus = Some(j);
            rtp_in = to;
        }
    }
    let server_pid = match (&bridge, &janus) {
        (Some(b), _) => b.bridge.pid(),
        (_, Some(j)) => j.pid(),
        _ => unreachable!(),
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib(server_pid);
    // Heap bytes live in the bridge (only a `--features count-allocs` build exports them).
    let heap = |b: Option<&Bridge>| {
        b.map_or(0.0, |b| {
            counter(&b.get("/metrics").body, "pttbridge_process_heap_live_bytes")
        })
    };
    let heap0 = heap(bridge.as_ref().map(|b| &b.bridge));
    // With `--remote K`, every `stride`-th listener (K of them) receives; the others' RTP is
    // dropped at egress once all are connected. The probes are among those that receive.
    let measured = a.remote.unwrap_or(n).clamp(1, n);
    let stride = n / measured;
    let probe_every = (measured / 10).max(1);
    let mut remote_ports = Vec::new();
    let t_setup = Instant::now();
    let mut bridge_ws = bridge.as_mut().map(|b| &mut b.ws);
    for i in 0..n {
        let (rtc, socket) = match (a.target, bridge_ws.as_deref_mut(), janus.take()) {
            (Target::Bridge, Some(ws), _) => {
                let (mut rtc, socket) = new_listener([127, 0, 0, 1].into()).await;
                let (offer, pending) = recvonly_offer(&mut rtc);
                let r = request(
                    ws,
                    json!({"module":"meeting","method":"play","client":{"id":DIAL},"sdp":offer}),
                )
                .await;
                assert_eq!(r["result"], 0, "play refused: {r}");
                let answer = SdpAnswer::from_sdp_string(r["sdp"].as_str().unwrap()).unwrap();
                rtc.sdp_api().accept_answer(pending, answer).unwrap();
                (rtc, socket)
            }
            (Target::Janus(janus::Plugin::Streaming), _, Some(mut j)) => {
                let (j, handle, offer) = off_thread(move || {
                    let (h, offer) = j.watch();
                    (j, h, offer)
                })
                .await;
                let ip = janus::candidate_ip(&offer).expect("an IPv4 candidate in Janus's offer");
                let (mut rtc, socket) = new_listener(ip).await;
                let offer = str0m::change::SdpOffer::from_sdp_string(&offer).unwrap();
                let answer = rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string();
                let mut j = j;
                let j = off_thread(move || {
                    j.start_watching(handle, &answer);
                    j
                })
                .await;
                janus = Some(j);
                (rtc, socket)
            }
            (Target::Janus(janus::Plugin::AudioBridge), _, Some(mut j)) => {
                // Listeners bind where Janus gathers its candidates: learn it from the first
                // answer, so bind on loopback and let Janus's reply pick the pair.
                let (mut rtc, socket) = new_listener(janus_ip()).await;
                let (offer, pending) = recvonly_offer(&mut rtc);
                let (j, answer) = off_thread(move || {
                    let answer = j.join_muted(&offer);
                    (j, answer)
                })
                .await;
                janus = Some(j);
                let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
                rtc.sdp_api().accept_answer(pending, answer).unwrap();
                (rtc, socket)
            }
            _ => unreachable!(),
        };
        let receives = i.is_multiple_of(stride) && i / stride < measured;
        let probe = (matches!(a.target, Target::Janus(_))
            && receives
            && (i / stride).is_multiple_of(probe_every))
        .then(|| {
            let tape = janus::Tape::default();
            probes.push((i, tape.clone()));
            tape
        });
        if !receives {
            remote_ports.push(socket.local_addr().unwrap().port());
        }
        tokio::spawn(listener(rtc, socket, shared.clone(), probe));
    }
    // Keep reading the signalling socket: pings are answered while reading, and the bridge lets a
    // client go after 8 s without a pong.
    let (bridge, server) = match bridge {
        Some(BridgeUnderTest {
            server,
            bridge,
            mut ws,
        }) => {
            tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
            (Some(bridge), Some(server))
        }
        None => (None, None),
    };
    let connected = &shared.connected;
    while (connected.load(Ordering::Relaxed) as usize) < n
        && t_setup.elapsed() < Duration::from_secs(180)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{} of {n} listeners connected in {:.1} s",
        connected.load(Ordering::Relaxed),
        t_setup.elapsed().as_secs_f64()
    );

    let egress_drop = a.remote.map(|_| {
        println!(
            "{} listeners remote: their RTP is dropped at loopback's egress; {measured} receive",
            remote_ports.len()
        );
        testkit::egress_drop::EgressDrop::install(&remote_ports)
    });
    // What share of the fan-out the listeners here should receive.
    let share = measured as f64 / n as f64;

    let rss1 = rss_kib(server_pid);
    let who = match a.target {
        Target::Bridge => "bridge",
        Target::Janus(janus::Plugin::Streaming) => "janus (streaming)",
        Target::Janus(janus::Plugin::AudioBridge) => "janus (audiobridge)",
    };
    println!(
        "{who} memory: {:.1} MiB before the listeners, {:.1} MiB with {n}: {:.1} KiB per listener",
        rss0 / 1024.0,
        rss1 / 1024.0,
        (rss1 - rss0) / n as f64
    );
    let heap1 = heap(bridge.as_ref());
    if heap1 > 0.0 {
        println!(
            "bridge heap (count-allocs): {:.1} KiB per listener",
            (heap1 - heap0) / 1024.0 / n as f64
        );
    }

    // The talkers: pymumble terminals repeating speech (continuous: 50 packets/s each), or this
    // process sending the same speech as RTP Opus to Janus.
    let mut talkers = Vec::new();
    let rtp_sent = Arc::new(AtomicU64::new(0));
    if let (Some(server), Some(sent_at)) = (&server, &shared.sent_at) {
        ptt_reference(server.port(), sent_at.clone());
        // Joined before the talkers start.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(server) = &server {
        let repeats = (a.seconds as usize + 6) / 3 + 1;
        for i in 0..a.talkers {
            let mut t = Terminal::connect(server.port(), &format!("talker{i}"), Some("North"));
            for _ in 0..repeats {
                t.play(&speech);
            }
            talkers.push(t);
        }
    }
    for (i, (to, socket)) in rtp_in.into_iter().zip(talker_sockets).enumerate() {
        let sent_at = shared.sent_at.clone().expect("send times kept for Janus");
        let pcm = pttbridge::wav::read_mono_48k(&speech).unwrap();
        tokio::spawn(janus::talk(janus::Talk {
            socket,
            pcm,
            offset_frames: i * 75,
            to,
            sent_at,
            stop: shared.stop.clone(),
            sent: rtp_sent.clone(),
            tape: (i == 0).then(|| (talker_tape.clone(), shared.taping.clone())),
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(a.seconds);
    let scrape = || {
        bridge
            .as_ref()
            .map(|b| b.get("/metrics").body)
            .unwrap_or_default()
    };
    let m0 = scrape();
    let lat0 = shared.latency.counts();
    shared.taping.store(true, Ordering::Relaxed);
    let me0 = cpu_seconds(std::process::id());
    let (cpu0, rx0, in0, t0) = (
        cpu_seconds(server_pid),
        shared.received.load(Ordering::Relaxed),
        rtp_sent.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (cpu1, rx1, in1, secs) = (
        cpu_seconds(server_pid),
        shared.received.load(Ordering::Relaxed),
        rtp_sent.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    let m1 = scrape();
    // Memory again once audio has flowed for the window: what str0m keeps per sent packet
    // (send queue, RTCP state) only shows then.
    let rss2 = rss_kib(server_pid);
    let heap2 = heap(bridge.as_ref());
    let lat1 = shared.latency.counts();
    shared.taping.store(false, Ordering::Relaxed);
    shared.stop.store(1, Ordering::Relaxed);
    let cpu = (cpu1 - cpu0) / secs;
    let me = (cpu_seconds(std::process::id()) - me0) / secs;
    let got = (rx1 - rx0) as f64;
    println!(
        "listeners {n}, talkers {}, {}: {who} CPU {:.1} % of a core, {:.2} µs of CPU per second per listener, {:.0} listeners per core",
        a.talkers,
        match a.target {
            Target::Bridge => format!("pass-through {}", a.passthrough),
            Target::Janus(_) => "RTP Opus in".into(),
        },
        cpu * 100.0,
        cpu * 1e6 / n as f64,
        n as f64 / cpu.max(1e-9)
    );
    println!(
        "the listeners (this process, one thread): {:.1} % of a core",
        me * 100.0
    );
    println!(
        "{who} memory after the window: {:.1} MiB: {:.1} KiB per listener{}",
        rss2 / 1024.0,
        (rss2 - rss0) / n as f64,
        if heap2 > 0.0 {
            format!(
                " (heap {:.1} KiB per listener)",
                (heap2 - heap0) / 1024.0 / n as f64
            )
        } else {
            String::new()
        }
    );
    if bridge.is_some() {
        // Listeners the room runs without str0m (rtc::listener), at the end of the window.
        println!(
            "lean listeners: {}",
            counter(&m1, "pttbridge_meeting_lean_listeners")
        );
    }
    match &bridge {
        Some(bridge) => report_bridge(bridge, &m0, &m1, got, n, share, secs),
        None => {
            // Streaming relays each input packet; the AudioBridge sends a mix every 20 ms
            // whatever comes in.
            let expected = match a.target {
                Target::Janus(janus::Plugin::Streaming) => (in1 - in0) as f64 * n as f64,
                _ => 50.0 * secs * n as f64,
            } * share;
            println!(
                "packets: RTP in {} ({:.1}/s), expected at the listeners {expected:.0}, received {got:.0}: loss {:.2} %",
                in1 - in0,
                (in1 - in0) as f64 / secs,
                (1.0 - got / expected.max(1.0)).max(0.0) * 100.0
            );
        }
    }
    if let Some(q) = stamp::Histogram::quantiles(&lat0, &lat1, &[0.5, 0.9, 0.99]) {
        let samples: u64 = lat1.iter().zip(&lat0).map(|(a, b)| a - b).sum();
        println!(
            "end-to-end latency ({} → listener socket, {samples} packets): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            match a.target {
                Target::Bridge => "PTT voice at the tool's own PTT client",
                Target::Janus(_) => "RTP send",
            },
            q[0].as_secs_f64() * 1e3,
            q[1].as_secs_f64() * 1e3,
            q[2].as_secs_f64() * 1e3
        );
    }
    if !probes.is_empty() {
        let sent = talker_tape.lock().unwrap().clone();
        let mut lags: Vec<(usize, Option<Duration>)> = probes
            .iter()
            .map(|(i, tape)| (*i, janus::lag(&sent, &tape.lock().unwrap())))
            .collect();
        lags.sort_by_key(|(_, l)| *l);
        // The talker's own encoder delays its speech by its look-ahead: not the server's doing.
        let lookahead = media::opus::Encoder::new(
            48_000,
            media::Channels::Mono,
            media::opus::Application::Voip,
        )
        .and_then(|mut e| e.lookahead())
        .map_or(0.0, |s| s as f64 / 48.0);
        let found: Vec<f64> = lags
            .iter()
            .filter_map(|(_, l)| Some((*l)?.as_secs_f64() * 1e3 - lookahead))
            .collect();
        if let (Some(lo), Some(hi)) = (found.first(), found.last()) {
            println!(
                "mouth-to-ear less the talker's encoder look-ahead (speech found in {} of {} sampled listeners' audio): median {:.1} ms, min {lo:.1} ms, max {hi:.1} ms",
                found.len(),
                lags.len(),
                found[found.len() / 2]
            );
        }
    }
    if let Some(rule) = &egress_drop {
        println!(
            "dropped at loopback's egress (remote listeners' RTP): {} packets",
            rule.dropped()
        );
    }
    drop(talkers);
}

/// A PTT client in North on a thread (and runtime) of its own, so the listeners' load does not
/// delay it: records when each voice packet murmurd sends it arrives, by payload.
fn ptt_reference(port: u16, sent_at: janus::SendTimes) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let session = ptt::session::SessionConfig {
                username: "stamp".into(),
                channel: Some("North".into()),
                ..Default::default()
            };
            let config = ptt::client::ClientConfig::new(
                "127.0.0.1",
                port,
                ptt::tls::ServerTrust::AcceptInvalid,
                session,
            );
            let (_handle, mut events) = ptt::client::spawn(config);
            // A payload seen twice (the repeated WAV's silence frames are identical) cannot
            // tell which of its sends a listener got: it is not used.
            let mut seen = std::collections::HashSet::new();
            while let Some(ev) = events.recv().await {
                if let ptt::client::ClientEvent::Session(ptt::session::Event::Voice {
                    opus, ..
                }) = ev
                {
                    let now = std::time::SystemTime::now();
                    let key = janus::payload_key(&opus);
                    let mut map = sent_at.lock().unwrap();
                    if seen.insert(key) {
                        map.insert(key, now);
                    } else {
                        map.remove(&key);
                    }
                }
            }
        });
    });
}

/// The address Janus gathers its ICE candidates on: the machine's first non-loopback IPv4
/// address (Janus does not gather on loopback).
fn janus_ip() -> std::net::IpAddr {
    let mut found = None;
    // SAFETY: getifaddrs' list is only read while it is alive, and freed once.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) == 0 {
            let mut p = list;
            while !p.is_null() && found.is_none() {
                let a = (*p).ifa_addr;
                if !a.is_null() && (*a).sa_family as libc::c_int == libc::AF_INET {
                    let sin: libc::sockaddr_in = std::ptr::read_unaligned(a.cast());
                    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    if !ip.is_loopback() {
                        found = Some(ip.into());
                    }
                }
                p = (*p).ifa_next;
            }
            libc::freeifaddrs(list);
        }
    }
    found.expect("a non-loopback IPv4 address for Janus's ICE (it does not gather on loopback)")
}

/// What the bridge's own metrics say about the window.
fn report_bridge(bridge: &Bridge, m0: &str, m1: &str, got: f64, n: usize, share: f64, secs: f64) {
    let sent = counter(m1, "pttbridge_meeting_rtp_total{direction=\"out\"}")
        - counter(m0, "pttbridge_meeting_rtp_total{direction=\"out\"}");
    let ptt_in = counter(m1, "pttbridge_meeting_rtp_total{direction=\"ptt_in\"}")
        - counter(m0, "pttbridge_meeting_rtp_total{direction=\"ptt_in\"}");
    let voice_in = |m: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("pttbridge_ptt_voice_packets_total{")
                    && l.contains("direction=\"in\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let ptt_voice = voice_in(m1) - voice_in(m0);
    println!(
        "PTT voice packets received by the bridge's account: {ptt_voice:.0} ({:.1}/s)",
        ptt_voice / secs
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
        "packets: PTT in {ptt_in:.0} ({:.1}/s), bridge sent {sent:.0} ({:.1}/s per listener), listeners received {got:.0}: loss {:.2} %",
        ptt_in / secs,
        sent / secs / n as f64,
        (1.0 - got / (sent * share).max(1.0)).max(0.0) * 100.0
    );
    let allocs = counter(m1, "pttbridge_process_allocations_total")
        - counter(m0, "pttbridge_process_allocations_total");
    if allocs > 0.0 {
        println!(
            "heap allocations in the bridge (built with --features count-allocs): {:.0}/s, {:.2} per RTP packet sent, {:.1} per PTT voice packet in",
            allocs / secs,
            allocs / sent.max(1.0),
            allocs / ptt_in.max(1.0)
        );
    }
    let shards = |by: &str| {
        let prefix = format!("pttbridge_meeting_fanout_shards_total{{by=\"{by}\"}}");
        counter(m1, &prefix) - counter(m0, &prefix)
    };
    let (by_room, by_helper) = (shards("room"), shards("helper"));
    if by_room + by_helper > 0.0 {
        println!(
            "fan-out shards: {by_room:.0} by the room's task, {by_helper:.0} by helpers ({:.1} per PTT packet in)",
            (by_room + by_helper) / ptt_in.max(1.0)
        );
    }
    let latency = "pttbridge_meeting_bridge_latency_seconds";
    let series = [
        (latency, "route=\"direct\"", "bridge latency direct"),
        (
            latency,
            "route=\"passthrough\"",
            "bridge latency passthrough",
        ),
        (latency, "route=\"mix\"", "bridge latency mix"),
        // What the PTT talkers' jitter buffers hold after each 20 ms was taken (sampled once
        // a second): audio that waits there beyond the wait for the mix itself.
        (
            "pttbridge_meeting_jitter_depth_seconds",
            "direction=\"ptt_in\"",
            "PTT jitter-buffer depth",
        ),
        // How late the room's 20 ms tick ran: how long the room task waited for a core or
        // was busy with something else (what a packet arriving meanwhile waits too).
        (
            "pttbridge_meeting_tick_delay_seconds",
            "le=",
            "room tick delay",
        ),
    ];
    for (name, label, what) in series {
        let Some(q) = quantiles(m0, m1, name, label, &[0.5, 0.9, 0.99]) else {
            continue;
        };
        let show: Vec<String> = ["p50", "p90", "p99"]
            .iter()
            .zip(&q)
            .map(|(name, v)| format!("{name} {:.2} ms", v * 1e3))
            .collect();
        println!("{what}: {}", show.join(", "));
    }
}
