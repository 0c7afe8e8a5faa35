//! Abuse, as a stranger on the network would try it (`docs/security.md`, "Bounds"), against the
//! real binary with the default caps and short timeouts: slowloris, 2,000 idle sockets on each
//! WebSocket endpoint, room and sign floods, clients that never read (SSE, EGW, console, a room
//! member) while chat floods, and a PTT server flooding users and channels. Throughout, a canary
//! client keeps being served; afterwards the process gives back what the load took: descriptors
//! to the baseline and RSS within 20 % of it (the baseline: before the load, once a little of
//! everything has been served). Bounded in count and time; loopback only (the
//! attackers come from 127.0.x.y, so per-address caps see many clients).

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use testkit::bridge::{Bridge, OPERATOR_TOKEN, ptt_server_toml};
use testkit::murmur::{Murmur, TEST_CERT_SHA256, test_cert_path, test_key_path};
use testkit::rtcpeer::{Socket, User, sign_in, sign_in_over, tcp_from};

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const APP: (&str, &str) = ("abuse-app", "abuse-app-secret-0001");
const EGW: (&str, &str) = ("abuse-dev", "abuse-egw-token-0002");
/// The tenant meeting events are published under: the PTT server's (`docs/events.md`).
const MEETING_EVENTS_APP: &str = "default";
const BASE_URL: &str = "http://ptt.test:8080";
/// Connections per attacking address: under `http.max_connections_per_ip` (64).
const PER_ADDRESS: usize = 60;
/// The two tests measure one process each: run alone, so that neither's load is in the other's
/// figures.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A client that stops reading stalls the sender after this much.
const SMALL_BUFFER: usize = 4096;

/// The bridge's memory and descriptors, from `/proc`.
#[derive(Clone, Copy)]
struct Footprint {
    rss_kib: u64,
    /// Of which the process's own (heap, stacks) rather than its binary's pages.
    anon_kib: u64,
    fds: usize,
}

impl fmt::Display for Footprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB ({:.1} MiB anonymous), {} fds",
            self.rss_kib as f64 / 1024.0,
            self.anon_kib as f64 / 1024.0,
            self.fds
        )
    }
}

fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("bridge status");
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
    };
    let (rss_kib, anon_kib) = (kib("VmRSS:"), kib("RssAnon:"));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("bridge fds")
        .count();
    Footprint {
        rss_kib,
        anon_kib,
        fds,
    }
}

/// Waits up to `within` for the footprint to come back to `baseline` (descriptors no more, RSS
/// within 20 %); the last reading either way.
fn settle(pid: u32, baseline: Footprint, within: Duration) -> Footprint {
    let deadline = Instant::now() + within;
    loop {
        let now = footprint(pid);
        let back = now.fds <= baseline.fds && now.rss_kib * 5 <= baseline.rss_kib * 6;
        if back || Instant::now() > deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// The footprint once memory stops going back (the allocator returns freed pages after a
/// second or so): RSS no lower for 3 s, at most 15 s.
fn quiet(pid: u32) -> Footprint {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut low = footprint(pid);
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(3) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        let now = footprint(pid);
        if now.rss_kib < low.rss_kib {
            low = now;
            since = Instant::now();
        }
    }
    footprint(pid)
}

/// Waits up to 30 s for the descriptors to be back to `fds`.
fn fds_back(pid: u32, fds: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while footprint(pid).fds > fds {
        assert!(
            Instant::now() < deadline,
            "descriptors were not given back: {} (was {fds})",
            footprint(pid)
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// Attacking address `n` of a phase: 127.<phase>.x.y.
fn attacker(phase: u8, n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        phase,
        1 + (n / 200) as u8,
        1 + (n % 200) as u8,
    ))
}

/// One HTTP/1.1 request from `from` (`Connection: close`): status and body.
fn http_from(from: IpAddr, addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tcp_from(from, addr, None).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Whether the server has closed `s` (nonblocking; whatever it sent first is read and dropped).
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// A client that must keep being served: liveness, the operator's state, and a registered
/// meeting user chatting in its own room over a socket opened before the load (kept alive by
/// its own thread, which answers the server's pings as a real client does).
struct Canary {
    addr: SocketAddr,
    asks: mpsc::Sender<String>,
    answers: mpsc::Receiver<Value>,
}

impl Canary {
    fn new(addr: SocketAddr) -> Canary {
        let mut user = sign_in(addr, APP, "canary");
        let room = user.new_room();
        assert_eq!(user.enter(room)["result"], 0);
        let (asks, questions) = mpsc::channel::<String>();
        let (answer, answers) = mpsc::channel();
        thread::spawn(move || {
            loop {
                match questions.recv_timeout(Duration::from_millis(200)) {
                    Ok(during) => {
                        let chat = json!({"module":"meeting","method":"chat","content":format!("canary: {during}")});
                        let _ = answer.send(user.ws.request(chat));
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                match user.ws.next(Duration::from_millis(50)) {
                    Ok(_) => user.ws.seen.clear(),
                    Err(closed) => {
                        let _ = answer.send(json!({"closed": format!("{closed:?}")}));
                        return;
                    }
                }
            }
        });
        Canary {
            addr,
            asks,
            answers,
        }
    }

    fn check(&mut self, bridge: &Bridge, during: &str) {
        let h = testkit::http::get(self.addr, "/healthz")
            .unwrap_or_else(|e| panic!("{during}: /healthz unreachable: {e}"));
        assert_eq!(h.status, 200, "{during}: /healthz {}", h.body);
        let s = bridge.get("/api/state");
        assert_eq!(s.status, 200, "{during}: /api/state {}", s.body);
        self.asks
            .send(during.to_string())
            .expect("the canary is gone");
        let r = self
            .answers
            .recv_timeout(T)
            .unwrap_or_else(|_| panic!("{during}: the canary's chat went unanswered"));
        assert_eq!(r["result"], 0, "{during}: the canary's chat: {r}");
    }
}

fn config(murmur: &Murmur) -> String {
    format!(
        "[http]\nheader_timeout_ms = 2000\nidle_timeout_ms = 4000\nwrite_timeout_ms = 3000\n\
         [meeting]\nauth_timeout_ms = 3000\nempty_room_close_s = 15\n\
         [[meeting.apps]]\napp_id = \"{}\"\nsecret = \"{}\"\n\
         [console]\nauth_timeout_ms = 3000\n\
         [[console.servers]]\nbase_url = \"{BASE_URL}\"\nptt_server = \"local\"\n\
         admin_username = \"SuperUser\"\nadmin_password = \"{}\"\n\
         [egw]\nauth_timeout_ms = 3000\nsend_timeout_ms = 1000\n\
         [[egw.developers]]\ndev_id = \"{}\"\ntoken = \"{}\"\napps = [\"{MEETING_EVENTS_APP}\"]\n{}",
        APP.0,
        APP.1,
        murmur.superuser_password(),
        EGW.0,
        EGW.1,
        ptt_server_toml("local", murmur, &[("bridge", "North")]),
    )
}

/// The whole load against one bridge, phase by phase, the canary checked in each.
#[test]
fn strangers_cannot_take_the_bridge_down_or_keep_what_they_took() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let murmur = Murmur::builder()
        .channels(&["North"])
        .user("zydd", "pw-zydd")
        .start();
    let bridge = Bridge::start_with_log_level(BIN, &config(&murmur), "info");
    bridge.wait_health(
        "PTT and the console admin connected",
        |h| {
            h["sides"]["ptt"]["state"] == "connected"
                && h["sides"]["console"]["servers"][0]["admin_connected"] == true
        },
        T,
    );
    let addr = bridge.addr();
    let pid = bridge.pid();
    let mut canary = Canary::new(addr);
    canary.check(&bridge, "before the load");
    let at_start = footprint(pid);
    println!("at start: {at_start}");

    // The baseline is the bridge before the load, once it has served a little of everything
    // (a few rooms, sockets, slow heads and signs: what any bridge in service has seen), so
    // that code run for the first time — its binary's pages, the allocator's first arena of
    // each thread — is not counted as what the flood kept. Then two full rounds, and the
    // clients that never read, must give back everything they took (docs/security.md,
    // "Memory after a flood").
    Load {
        room_users: 2,
        slowloris: 20,
        idle: 50,
        signs: 20,
    }
    .run(&bridge, &mut canary, 2);
    fds_back(pid, at_start.fds);
    let baseline = quiet(pid);
    println!("baseline, after a little of everything: {baseline} (at start {at_start})");
    assert!(
        baseline.rss_kib < at_start.rss_kib + 8 * 1024,
        "a little of everything left {baseline} (at start {at_start})"
    );
    let load = Load {
        room_users: 60,
        slowloris: 1000,
        idle: 2000,
        signs: 2000,
    };
    load.run(&bridge, &mut canary, 0);
    fds_back(pid, baseline.fds);
    let after_one = quiet(pid);
    println!("after the first round: {after_one} (baseline {baseline})");
    let started = Instant::now();
    load.run(&bridge, &mut canary, 1);
    slow_consumers(&bridge, &mut canary);

    let after = settle(pid, baseline, Duration::from_secs(40));
    println!(
        "after the second round and the clients that never read ({:.0} s): {after} \
         (baseline {baseline})",
        started.elapsed().as_secs_f64()
    );
    canary.check(&bridge, "after the load");
    assert!(
        after.fds <= baseline.fds,
        "descriptors not given back: {after} vs {baseline}\n{}",
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(
        after.rss_kib * 5 <= baseline.rss_kib * 6,
        "memory not given back: {after} vs {baseline}"
    );
}

/// How much of each attack a round makes.
struct Load {
    /// Users asking for eleven rooms each.
    room_users: usize,
    /// Slow request heads.
    slowloris: usize,
    /// Idle WebSockets per endpoint.
    idle: usize,
    /// Signs asked for with the right secret.
    signs: usize,
}

impl Load {
    /// Round `round` (each from its own addresses: throttling lasts a minute).
    fn run(&self, bridge: &Bridge, canary: &mut Canary, round: u8) {
        room_flood(bridge, canary, self.room_users);
        slowloris(bridge, canary, self.slowloris);
        for (phase, path) in [(10, "/rtcpeer"), (11, "/muicall"), (12, "/egw")] {
            idle_sockets(bridge, canary, phase, path, self.idle);
        }
        sign_flood(bridge, canary, self.signs, attacker(20 + round, 0));
    }
}

/// Users each ask for eleven rooms: each gets `max_rooms_per_user` (10) until the bridge holds
/// `max_rooms` (500, the canary's included); the rest are refused with the key's name.
fn room_flood(bridge: &Bridge, canary: &mut Canary, n: usize) {
    let addr = bridge.addr();
    let before = footprint(bridge.pid());
    let mut users: Vec<User> = (0..n)
        .map(|i| sign_in(addr, APP, &format!("roomer-{i}")))
        .collect();
    let (mut made, mut per_user, mut global) = (0, 0, 0);
    for u in &mut users {
        for _ in 0..11 {
            let r = u.try_new_room();
            let message = r["message"].as_str().unwrap_or_default().to_string();
            match r["result"].as_i64() {
                Some(0) => made += 1,
                Some(429) if message.contains("meeting.max_rooms_per_user") => per_user += 1,
                Some(429) if message.contains("meeting.max_rooms)") => global += 1,
                _ => panic!("newAppRoom: {r}"),
            }
            u.ws.seen.clear();
        }
    }
    let held = footprint(bridge.pid());
    println!(
        "room flood: {made} rooms made, {per_user} refused per user, {global} refused for the \
         bridge; {held} (was {before})"
    );
    assert_eq!(
        made,
        (n * 10).min(499),
        "10 per user, 500 at most, the canary's one of them"
    );
    assert!(per_user > 0, "refused per user: {per_user}");
    assert_eq!(global > 0, n * 10 > 499, "refused for the bridge: {global}");
    assert!(
        bridge.metric("pttbridge_meeting_limited_total", &[]) >= (per_user + global) as f64,
        "counted"
    );
    canary.check(bridge, "500 rooms open");
    // The users go; their empty rooms close after `meeting.empty_room_close_s` (checked at the
    // end, with the descriptors).
}

/// Connections from many addresses each send half a request head and then a byte every half
/// second: `http.header_timeout_ms` closes every one.
fn slowloris(bridge: &Bridge, canary: &mut Canary, n: usize) {
    let addr = bridge.addr();
    let mut socks: Vec<Option<TcpStream>> = (0..n)
        .map(|i| {
            let mut s = tcp_from(attacker(2, i / PER_ADDRESS), addr, None).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s.set_nonblocking(true).unwrap();
            Some(s)
        })
        .collect();
    let opened = Instant::now();
    let held = footprint(bridge.pid());
    canary.check(bridge, "slowloris");
    let timeouts_before = bridge.metric("pttbridge_http_timeouts_total", &[("kind", "header")]);
    while socks.iter().any(Option::is_some) && opened.elapsed() < Duration::from_secs(20) {
        for slot in &mut socks {
            if let Some(s) = slot {
                if closed_by_peer(s) {
                    *slot = None;
                } else {
                    let _ = s.write(b"a");
                }
            }
        }
        thread::sleep(Duration::from_millis(500));
    }
    let open = socks.iter().filter(|s| s.is_some()).count();
    println!(
        "slowloris: {n} connections ({held} while held) all closed within {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    assert_eq!(open, 0, "slow request heads still open after 20 s");
    assert!(
        bridge.metric("pttbridge_http_timeouts_total", &[("kind", "header")]) >= timeouts_before,
        "counted"
    );
}

/// WebSockets on `path` that never sign in: each costs little while it lasts, and the login
/// window closes every one; a cap refuses with 503, never silently.
fn idle_sockets(bridge: &Bridge, canary: &mut Canary, phase: u8, path: &str, n: usize) {
    let addr = bridge.addr();
    let before = footprint(bridge.pid());
    let t0 = Instant::now();
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for i in 0..n {
        let tcp = tcp_from(attacker(phase, i / PER_ADDRESS), addr, None).expect("connect");
        match Socket::handshake(tcp, addr, path) {
            Ok(s) => open.push(s),
            Err(status) => refused.push(status),
        }
    }
    let held = footprint(bridge.pid());
    let per_socket = (held.rss_kib.saturating_sub(before.rss_kib)) as f64 / open.len() as f64;
    println!(
        "{n} idle {path} sockets in {:.1} s: {} open, {} refused; {held} (was {before}): \
         {per_socket:.1} KiB each",
        t0.elapsed().as_secs_f64(),
        open.len(),
        refused.len()
    );
    canary.check(bridge, &format!("{n} idle {path} sockets"));
    assert!(
        refused.iter().all(|s| *s == 503),
        "refused with {refused:?}"
    );
    assert!(open.len() >= n - 10, "only {} of {n} opened", open.len());
    assert!(
        per_socket < 48.0,
        "an idle {path} socket costs {per_socket:.1} KiB"
    );
    for s in &mut open {
        let c = s.closed(Duration::from_secs(10));
        assert!(
            c.code.is_some() || !c.reason.is_empty(),
            "{path}: closed without a word: {c:?}"
        );
    }
    println!(
        "{path}: all {} closed by the login window after {:.1} s",
        open.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// Wrong secrets are throttled per address; right ones are served, and the signs they leave
/// behind are small.
fn sign_flood(bridge: &Bridge, canary: &mut Canary, n: usize, guesser: IpAddr) {
    let addr = bridge.addr();
    let before = footprint(bridge.pid());
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let (_, body) = http_from(guesser, addr, "/app/getSign?appId=abuse-app&secret=guess");
        // The spec's shape: HTTP 200 with the outcome in `code`.
        let code: Value = serde_json::from_str(&body).expect("getSign answers JSON");
        *statuses
            .entry(code["code"].as_i64().unwrap_or(-1))
            .or_insert(0) += 1;
    }
    println!("200 wrong secrets: {statuses:?}");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [401, 429]);
    assert!(statuses[&401] <= 10, "throttled after 10: {statuses:?}");
    let path = format!("/app/getSign?appId={}&secret={}", APP.0, APP.1);
    for i in 0..n {
        let (status, body) = http_from(attacker(30, i / PER_ADDRESS), addr, &path);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"code\":200"), "{body}");
    }
    let after = footprint(bridge.pid());
    println!("{n} signs issued: {after} (was {before})");
    canary.check(bridge, "sign flood");
}

/// Clients that never read — an SSE subscriber, an EGW platform, a console and a room member,
/// each with a 4 KiB receive buffer — while eight users chat 4 KiB messages as fast as they are
/// let: each stalled client is cut off, the chatters and the canary keep going, and memory
/// stays bounded meanwhile.
fn slow_consumers(bridge: &Bridge, canary: &mut Canary) {
    let addr = bridge.addr();
    let pid = bridge.pid();
    // Growth is measured from here (what earlier phases freed may not be trimmed yet).
    let before = footprint(pid);
    let from = |n| attacker(40, n);
    // SSE, signed in, never read.
    let mut sse = tcp_from(from(0), addr, Some(SMALL_BUFFER)).unwrap();
    write!(
        sse,
        "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\n\r\n"
    )
    .unwrap();
    // EGW, logged in and subscribed, then never read.
    let mut egw = Socket::handshake(
        tcp_from(from(1), addr, Some(SMALL_BUFFER)).unwrap(),
        addr,
        "/egw",
    )
    .expect("EGW");
    egw.send(&json!({"business": "EGW", "dev_id": EGW.0, "token": EGW.1, "id": 20000}));
    let r = egw.wait("EGW login", |v| v["id"] == 20001);
    assert_eq!(r["result"], 0, "{r}");
    egw.send(
        &json!({"business": "EGW", "id": 20004, "app_list": [{"app_id": MEETING_EVENTS_APP}]}),
    );
    let r = egw.wait("EGW subscribe", |v| v["id"] == 20005);
    assert_eq!(r["result"], 0, "{r}");
    // A console, logged in, that floods requests and never reads the replies.
    let mut console = Socket::handshake(
        tcp_from(from(2), addr, Some(SMALL_BUFFER)).unwrap(),
        addr,
        "/muicall",
    )
    .expect("console");
    console.send(&json!({"type": "initServer", "data": {"baseUrl": BASE_URL}}));
    let r = console.wait("initServer", |v| v["type"] == "initServer");
    assert_eq!(r["code"], 1, "{r}");
    console.send(&json!({"type": "connect", "data": {"account": "zydd", "password": "pw-zydd"}}));
    let r = console.wait("login", |v| v["type"] == "login");
    assert_eq!(r["code"], 1, "{r}");
    console.set_write_timeout(Duration::from_secs(2));
    let mut sent = 0;
    while sent < 200_000 && console.send_text(r#"{"type":"noSuchRequest"}"#).is_ok() {
        sent += 1;
    }
    println!("never-reading console: {sent} requests sent before the bridge stopped taking them");
    // Eight chatters, each in its own room; the first room also holds a member that never reads.
    let mut chatters: Vec<User> = (0..8)
        .map(|i| sign_in(addr, APP, &format!("chatter-{i}")))
        .collect();
    let mut sleeper = sign_in_over(
        addr,
        APP,
        "sleeper",
        tcp_from(from(3), addr, Some(SMALL_BUFFER)).unwrap(),
    );
    let rooms: Vec<i64> = chatters
        .iter_mut()
        .map(|c| {
            let room = c.new_room();
            assert_eq!(c.enter(room)["result"], 0);
            room
        })
        .collect();
    let (room, owner) = (rooms[0], chatters[0].id);
    let r = chatters[0].ws.request(json!({"module":"call","method":"doInvite","ownUserId":owner,"targetUserId":sleeper.id,"type":1,"roomId":room}));
    assert_eq!(r["result"], 0, "{r}");
    sleeper.ws.wait("doInvite push", |v| {
        v["method"] == "doInvite" && v.get("result").is_none()
    });
    assert_eq!(sleeper.enter(room)["result"], 0);

    let text: String = (0..4096).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let text = Arc::new(text);
    let flood = Duration::from_secs(6);
    let flood_started = Instant::now();
    let threads: Vec<_> = chatters
        .into_iter()
        .map(|mut u| {
            let text = text.clone();
            thread::spawn(move || {
                let until = Instant::now() + flood;
                let (mut ok, mut limited) = (0, 0);
                while Instant::now() < until {
                    let r =
                        u.ws.request(json!({"module":"meeting","method":"chat","content": *text}));
                    match r["result"].as_i64() {
                        Some(0) => ok += 1,
                        Some(429) => {
                            limited += 1;
                            thread::sleep(Duration::from_millis(20));
                        }
                        _ => panic!("chat: {r}"),
                    }
                    u.ws.seen.clear();
                }
                (u, ok, limited)
            })
        })
        .collect();
    let mut peak = footprint(pid);
    let t0 = Instant::now();
    while t0.elapsed() < flood {
        let now = footprint(pid);
        if now.rss_kib > peak.rss_kib {
            peak = now;
        }
        thread::sleep(Duration::from_millis(200));
    }
    canary.check(bridge, "chat flood with clients that never read");
    let mut chats = 0;
    for t in threads {
        let (_u, ok, limited) = t.join().expect("chatter");
        assert!(
            ok >= 60,
            "a chatter was served {ok} chats ({limited} limited)"
        );
        chats += ok;
    }
    println!(
        "chat flood: {chats} chats of 4 KiB in {:.0} s; peak {peak} (before {before})",
        flood.as_secs_f64()
    );
    assert!(
        peak.rss_kib < before.rss_kib + 64 * 1024,
        "memory grew without bound: peak {peak} from {before}"
    );
    // Every client that stopped reading was cut off (what it had buffered is read first).
    sse.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sse_bytes = 0;
    let sse_end = loop {
        match sse.read(&mut buf) {
            Ok(0) => break "closed".to_string(),
            Ok(n) => sse_bytes += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                break format!("still open: {e}");
            }
            Err(e) => break format!("closed: {e}"),
        }
    };
    assert!(
        sse_end.starts_with("closed"),
        "SSE subscriber: {sse_end} after {sse_bytes} bytes"
    );
    // The room member: pushes it has no room for are dropped, not queued; it is let go once it
    // has answered nothing (not even pings) for the server's 8 s.
    thread::sleep(Duration::from_secs(10).saturating_sub(flood_started.elapsed()));
    for (who, s) in [
        ("EGW", &mut egw),
        ("console", &mut console),
        ("room member", &mut sleeper.ws),
    ] {
        let c = s.closed(Duration::from_secs(20));
        let received = s.seen.len();
        s.seen.clear();
        println!(
            "never-reading {who}: cut off after {received} frames ({:?} {:?})",
            c.code, c.reason
        );
    }
    assert!(
        bridge.metric("pttbridge_http_timeouts_total", &[("kind", "write")]) >= 1.0,
        "the stalled SSE write is counted"
    );
    canary.check(bridge, "after the slow consumers");
}

// ---------------------------------------------------------------------------------------------
// A hostile PTT server.

/// Mumble control message types the fake server speaks.
mod mumble {
    pub const VERSION: u16 = 0;
    pub const PING: u16 = 3;
    pub const SERVER_SYNC: u16 = 5;
    pub const CHANNEL_REMOVE: u16 = 6;
    pub const CHANNEL_STATE: u16 = 7;
    pub const USER_REMOVE: u16 = 8;
    pub const USER_STATE: u16 = 9;
}

/// Protobuf fields, hand-encoded from Mumble.proto (not the bridge's types).
fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn field_u32(out: &mut Vec<u8>, field: u64, v: u32) {
    varint(out, field << 3);
    varint(out, u64::from(v));
}

fn field_str(out: &mut Vec<u8>, field: u64, s: &str) {
    varint(out, (field << 3) | 2);
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// One control frame: type, length, payload.
fn frame(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

fn channel_state(out: &mut Vec<u8>, id: u32, parent: Option<u32>, name: &str) {
    let mut p = Vec::new();
    field_u32(&mut p, 1, id);
    if let Some(parent) = parent {
        field_u32(&mut p, 2, parent);
    }
    field_str(&mut p, 3, name);
    frame(out, mumble::CHANNEL_STATE, &p);
}

fn user_state(out: &mut Vec<u8>, session: u32, name: &str, channel: u32) {
    let mut p = Vec::new();
    field_u32(&mut p, 1, session);
    field_str(&mut p, 3, name);
    field_u32(&mut p, 5, channel);
    frame(out, mumble::USER_STATE, &p);
}

/// What the fake server is told to do next.
enum Order {
    /// Announce `n` channels and `n` users with long names.
    Flood { n: u32, name_len: usize },
    /// Remove the `n` channels and users announced.
    Remove { n: u32 },
}

/// The session id the fake server gives the bridge.
const BRIDGE_SESSION: u32 = 1;

/// Serves one TLS connection at a time with the test certificate: lets the bridge in (version,
/// root channel, its own user, sync), answers pings, and floods when told.
fn hostile_server(listener: TcpListener, orders: mpsc::Receiver<Order>) {
    let certs = vec![
        rustls::pki_types::CertificateDer::from_pem_file(test_cert_path()).expect("test cert"),
    ];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(test_key_path()).expect("test key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config"),
    );
    for tcp in listener.incoming() {
        let Ok(tcp) = tcp else { return };
        tcp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let conn = rustls::ServerConnection::new(config.clone()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut hello = Vec::new();
        let mut version = Vec::new();
        field_u32(&mut version, 1, (1 << 16) | (4 << 8));
        field_str(&mut version, 2, "hostile");
        frame(&mut hello, mumble::VERSION, &version);
        channel_state(&mut hello, 0, None, "Root");
        user_state(&mut hello, BRIDGE_SESSION, "bridge", 0);
        let mut sync = Vec::new();
        field_u32(&mut sync, 1, BRIDGE_SESSION);
        frame(&mut hello, mumble::SERVER_SYNC, &sync);
        if tls.write_all(&hello).is_err() {
            continue;
        }
        let mut inbox: Vec<u8> = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => inbox.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
            // Pings come back as they are; everything else the bridge says is ignored.
            let mut out = Vec::new();
            while inbox.len() >= 6 {
                let ty = u16::from_be_bytes([inbox[0], inbox[1]]);
                let len = u32::from_be_bytes([inbox[2], inbox[3], inbox[4], inbox[5]]) as usize;
                if inbox.len() < 6 + len {
                    break;
                }
                if ty == mumble::PING {
                    out.extend_from_slice(&inbox[..6 + len]);
                }
                inbox.drain(..6 + len);
            }
            match orders.try_recv() {
                Ok(Order::Flood { n, name_len }) => {
                    let pad = "x".repeat(name_len);
                    for i in 0..n {
                        channel_state(
                            &mut out,
                            100 + i,
                            Some(0),
                            &format!("flood-channel-{i:06}-{pad}"),
                        );
                        user_state(&mut out, 100 + i, &format!("flood-user-{i:06}-{pad}"), 0);
                        if out.len() > 256 * 1024 {
                            if tls.write_all(&out).is_err() {
                                break;
                            }
                            out.clear();
                        }
                    }
                }
                Ok(Order::Remove { n }) => {
                    for i in 0..n {
                        let mut p = Vec::new();
                        field_u32(&mut p, 1, 100 + i);
                        frame(&mut out, mumble::USER_REMOVE, &p);
                        frame(&mut out, mumble::CHANNEL_REMOVE, &p);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
            if !out.is_empty() && tls.write_all(&out).is_err() {
                break;
            }
        }
    }
}

/// The PTT servers as the live view shows them (`/api/state`'s `ptt`; its recent events may name
/// users that have left).
fn ptt_state(bridge: &Bridge) -> String {
    bridge.get("/api/state").json()["ptt"].to_string()
}

/// Whether the flood is gone from the bridge: its user count first (a small scrape), then, once
/// that is down to the bridge's own user, the state (a large response, asked for once).
fn flood_removed(bridge: &Bridge) -> bool {
    bridge.metric("pttbridge_ptt_users", &[]) <= 1.0 && !ptt_state(bridge).contains("flood-")
}

/// A PTT server that floods the bridge with 20,000 users and 20,000 channels, all with long
/// names: the bridge keeps `ptt.max_users` / `ptt.max_channels` of them, counts the rest, stays
/// connected and serving, and gives the memory back when the server removes them.
#[test]
fn a_hostile_ptt_server_cannot_grow_the_bridge_without_bound() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    const CAP: u32 = 1000;
    const N: u32 = 20_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (orders, rx) = mpsc::channel();
    thread::spawn(move || hostile_server(listener, rx));
    let config = format!(
        "[ptt]\nmax_users = {CAP}\nmax_channels = {CAP}\n\
         [[ptt.servers]]\nid = \"hostile\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         fingerprint = \"{TEST_CERT_SHA256}\"\nudp = false\n\
         [[ptt.servers.accounts]]\nusername = \"bridge\"\nchannel = \"\"\n"
    );
    let bridge = Bridge::start_with_log_level(BIN, &config, "info");
    let connected = |h: &Value| h["sides"]["ptt"]["state"] == "connected";
    bridge.wait_health("connected to the hostile server", connected, T);
    let pid = bridge.pid();
    let over_limit = || bridge.metric("pttbridge_ptt_errors_total", &[("kind", "over_limit")]);
    let state_before = bridge.get("/api/state").body.len();
    // One flood of `n`: announced, then taken in (every refusal counted) within 60 s.
    let flood = |what: &str, n: u32| {
        let before = over_limit();
        orders.send(Order::Flood { n, name_len: 400 }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while over_limit() - before < f64::from(2 * (n - CAP)) {
            assert!(
                Instant::now() < deadline,
                "{what} was not taken in within 60 s (over-limit count {})\n{}",
                over_limit() - before,
                bridge.logs_tail(20)
            );
            thread::sleep(Duration::from_millis(200));
        }
        before
    };
    // ...and removed by the server, the bridge letting go of it within 60 s.
    let remove = |what: &str, n: u32| {
        orders.send(Order::Remove { n }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !flood_removed(&bridge) {
            assert!(
                Instant::now() < deadline,
                "{what} was not removed within 60 s"
            );
            thread::sleep(Duration::from_millis(200));
        }
    };
    // A small flood first (a tenth over the caps): the baseline is taken with the code that
    // takes users and channels in, and refuses them, run once (the binary's pages count in
    // RSS as they are first run); the full flood must then give back all it takes.
    flood("a small flood", CAP + CAP / 10);
    remove("the small flood", CAP + CAP / 10);
    let baseline = quiet(pid);

    // While the flood stands, the bridge keeps no more than the caps (the root channel and its
    // own user are among them) and counts every refusal.
    let refused_before = flood("the flood", N);
    let held = footprint(pid);
    let whole = bridge.get("/api/state").body.len();
    let state = ptt_state(&bridge);
    // Distinct names (a user appears both in its channel and among the parties).
    let kept = |what: &str| {
        let mut names: Vec<&str> = state
            .match_indices(&format!("{what}-"))
            .map(|(i, _)| &state[i..i + what.len() + 7])
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    };
    let (channels, users) = (kept("flood-channel"), kept("flood-user"));
    println!(
        "flood held: {channels} channels and {users} users kept, {} refused; /api/state \
         {state_before} → {} bytes; {held}",
        over_limit() - refused_before,
        whole
    );
    assert_eq!((channels, users), (CAP as usize - 1, CAP as usize - 1));
    // Each kept entry is its 400-byte name a few times over, nothing more (plus the last 60
    // events the page starts with).
    assert!(
        whole < state_before + 2 * CAP as usize * 1200 + 60 * 1200,
        "/api/state grew to {whole} bytes"
    );
    assert!(
        held.rss_kib < baseline.rss_kib + 32 * 1024,
        "held {held} from {baseline}"
    );
    assert_eq!(
        testkit::http::get(bridge.addr(), "/healthz")
            .unwrap()
            .status,
        200
    );

    // The server removes them: the bridge lets go of them and of the memory.
    remove("the flood", N);
    let health = bridge.health();
    assert!(connected(&health), "still connected: {health}");
    let after = settle(pid, baseline, Duration::from_secs(20));
    println!("hostile PTT server gone quiet: {after} (baseline {baseline})");
    let live = bridge.metric("pttbridge_process_heap_live_bytes", &[]);
    if live > 0.0 {
        println!("live heap (count-allocs build): {live:.0} bytes");
    }
    assert!(
        after.fds <= baseline.fds,
        "descriptors: {after} vs {baseline}"
    );
    assert!(
        after.rss_kib * 5 <= baseline.rss_kib * 6,
        "memory not given back: {after} vs {baseline}"
    );
}
