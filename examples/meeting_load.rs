//! Load tool: N WebRTC listeners (str0m, the bridge's own WebRTC stack) playing one dialled-in
//! PTT channel with one talker. Prints the bridge's CPU per listener, listeners per core, and
//! packet loss.
//!
//! ```sh
//! cargo build --release --bin pttbridge --example meeting_load
//! target/release/examples/meeting_load 1000          # N listeners (default 200)
//! ```
//! It starts its own murmurd (channel North), a pymumble talker that repeats a speech WAV, and
//! the release `pttbridge` next to this binary; everything on 127.0.0.1.

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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("../pttbridge");
    str0m::crypto::from_feature_flags().install_process_default();

    let server = Murmur::start(&["North"]);
    let config = format!(
        "{}\n[meeting]\nring_delay_ms = 10\nanswer_delay_ms = 10\n[[meeting.dial_in]]\nuser_id = {DIAL}\nserver = \"local\"\naccount = \"bridge\"\n",
        ptt_server_toml("local", &server, &[("bridge", "North")])
    );
    let bridge = Bridge::start(&bin, &config);
    bridge.wait_health(
        "linked to North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        Duration::from_secs(20),
    );
    let addr: SocketAddr = bridge.addr();
    let bridge_pid = bridge.pid();

    let sign: Value = testkit::http::get(addr, "/app/getSign?appId=load&secret=x")
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

    // The talker: one pymumble terminal repeating speech (continuous, so 50 packets/s expected).
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let wav = fixture("audio/speech.wav");
    for _ in 0..6 {
        alice.play(&wav);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(10);
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
    stop.store(1, Ordering::Relaxed);
    let cpu = (cpu1 - cpu0) / secs;
    let expected = 50.0 * secs * n as f64;
    let got = (rx1 - rx0) as f64;
    println!(
        "listeners {n}: bridge CPU {:.1} % of a core, {:.2} µs/s per listener ({:.4} % of a core), {:.0} listeners per core",
        cpu * 100.0,
        cpu * 1e6 / n as f64,
        cpu * 100.0 / n as f64,
        n as f64 / cpu.max(1e-9)
    );
    println!(
        "packets: {got:.0} received of {expected:.0} expected at 50/s: loss {:.2} %",
        (1.0 - got / expected).max(0.0) * 100.0
    );
    let lat = bridge.get("/metrics").body;
    for l in lat
        .lines()
        .filter(|l| l.starts_with("pttbridge_meeting_bridge_latency_seconds"))
    {
        println!("{l}");
    }
    drop(alice);
}
