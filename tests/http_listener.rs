//! The HTTP listener's bounds and TLS, against the real binary (no PTT server needed): a
//! slowloris client is closed after the header timeout while others are served, kept-alive
//! connections after the idle timeout (WebSockets never), the per-address cap refuses the
//! connection beyond it and counts it, bad certificate files fail the start naming the key, a
//! replaced certificate is served without a restart, and plain HTTP is redirected to HTTPS.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::bridge::{Bridge, OPERATOR_TOKEN};
use testkit::peers::free_port;
use testkit::rtcpeer::tcp_from;
use testkit::tls::{ServerFiles, TestCa};

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection (EOF or reset) or `timeout`; returns what
/// arrived and how long it took, `None` if it was still open after `timeout`.
fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> Option<(Vec<u8>, Duration)> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while t0.elapsed() < timeout {
        match s.read(&mut buf) {
            Ok(0) => return Some((got, t0.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some((got, t0.elapsed())),
        }
    }
    None
}

/// Whether the server has closed `s` (EOF or reset) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    read_until_closed(s, wait).is_some()
}

#[test]
fn slowloris_is_closed_after_the_header_timeout_while_others_are_served() {
    let bridge = Bridge::start(
        BIN,
        "[http]\nheader_timeout_ms = 1000\nidle_timeout_ms = 3000\n",
    );
    let addr = bridge.addr();

    // A slowloris client: a request line and one header byte every 200 ms, never finishing.
    // (Every lower bound here is measured from before the client acts, so that the server's
    // own clock cannot have started earlier.)
    let t0 = Instant::now();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let trickle = {
        let mut s = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..150 {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(b"X").is_err() {
                    return true;
                }
            }
            false
        })
    };
    // Meanwhile a normal client is served.
    let r = bridge.get("/healthz");
    assert_eq!(r.status, 200);
    let (got, _) = read_until_closed(&mut slow, T).expect("slowloris client still connected");
    let closed_after = t0.elapsed();
    println!("slowloris closed after {closed_after:?} (header_timeout_ms = 1000)");
    assert!(got.is_empty(), "no answer for a request never finished");
    assert!(
        closed_after >= Duration::from_millis(1000),
        "closed before its deadline"
    );
    assert!(
        trickle.join().unwrap(),
        "closed while it was still sending header bytes: a trickle does not extend the deadline"
    );

    // A client that connects and sends nothing at all: the same deadline from connecting.
    let mut silent = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut silent, T),
        "silent client still connected"
    );

    // Kept alive after a request, a connection may idle for idle_timeout_ms (longer than the
    // header timeout), then it is closed.
    let mut keep = TcpStream::connect(addr).unwrap();
    let t0 = Instant::now();
    keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    keep.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let (_, _) = read_until_closed(&mut keep, T).expect("idle connection still open");
    let idle = t0.elapsed();
    println!("idle kept-alive connection closed after {idle:?} (idle_timeout_ms = 3000)");
    assert!(
        idle >= Duration::from_millis(3000),
        "closed before the idle timeout"
    );

    // A WebSocket is not timed out by the listener: quiet for longer than both timeouts, it
    // still gets answers.
    let (mut ws, _) =
        tokio_tungstenite::tungstenite::connect(format!("ws://{addr}/egw")).expect("EGW WebSocket");
    std::thread::sleep(Duration::from_millis(4000));
    ws.send(tokio_tungstenite::tungstenite::Message::text("not JSON"))
        .expect("the WebSocket is still open");
    let reply = ws.read().expect("an answer on the quiet WebSocket");
    assert!(reply.is_text(), "{reply:?}");

    assert!(bridge.metric("pttbridge_http_timeouts_total", &[("kind", "header")]) >= 2.0);
    assert!(bridge.metric("pttbridge_http_timeouts_total", &[("kind", "idle")]) >= 1.0);
}

/// `GET /healthz` on `s` (HTTP/1.0): the status line, or what went wrong.
fn healthz_on(mut s: TcpStream) -> Result<String, String> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    match s.read_to_string(&mut out) {
        Ok(0) => Err("closed without an answer".into()),
        Ok(_) => Ok(out.lines().next().unwrap_or("").to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `/metrics` fetched, as an operator, from the loopback address `from`.
fn metrics_from(from: [u8; 4], addr: SocketAddr) -> String {
    let mut s = tcp_from(IpAddr::from(from), addr, None).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut v = String::new();
    s.read_to_string(&mut v).unwrap();
    v
}

/// A sample's value in a `/metrics` text.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_per_address_cap_refuses_the_next_connection_and_counts_it() {
    const CAP: usize = 4;
    let bridge = Bridge::start(
        BIN,
        &format!("[http]\nmax_connections_per_ip = {CAP}\nmax_connections = 100\n"),
    );
    let addr = bridge.addr();
    // The start-up health checks' connections are gone: only the asking one is open.
    let deadline = Instant::now() + T;
    while sample(
        &metrics_from([127, 0, 0, 3], addr),
        "pttbridge_http_connections ",
    ) != Some(1.0)
    {
        assert!(Instant::now() < deadline, "connections never settled");
        std::thread::sleep(Duration::from_millis(50));
    }
    // CAP connections from 127.0.0.1 (each served once, then kept alive).
    let mut held: Vec<TcpStream> = (0..CAP)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200");
            s
        })
        .collect();
    // The next one from the same address is closed at once, unanswered.
    let refused = healthz_on(TcpStream::connect(addr).unwrap());
    println!("connection {} from 127.0.0.1: {refused:?}", CAP + 1);
    assert!(refused.is_err(), "{refused:?}");
    // Another address is served meanwhile.
    let other = healthz_on(
        tcp_from(IpAddr::from([127, 0, 0, 2]), addr, None).expect("connect from 127.0.0.2"),
    );
    assert_eq!(other.as_deref(), Ok("HTTP/1.0 200 OK"), "{other:?}");

    // One held connection goes away: its slot is free again.
    drop(held.pop());
    let deadline = Instant::now() + T;
    let served = loop {
        if let Ok(line) = healthz_on(TcpStream::connect(addr).unwrap()) {
            break line;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(served, "HTTP/1.0 200 OK");
    let text = metrics_from([127, 0, 0, 3], addr);
    let value = |prefix: &str| -> f64 {
        sample(&text, prefix).unwrap_or_else(|| panic!("{prefix} not in /metrics"))
    };
    let refused = value("pttbridge_http_connections_refused_total{reason=\"per_ip\"}");
    assert!(refused >= 1.0, "refusals counted: {refused}");
    let open = value("pttbridge_http_connections ");
    println!("refused per_ip: {refused}, open connections: {open}");
    assert!(open >= CAP as f64, "gauge: {open}");
}

/// `pttbridge run` with `config`: must fail at start; returns its stderr.
fn start_fails(config: &str, dir: &Path) -> String {
    let path = dir.join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the bridge kept running with {config}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{config}: exited with success");
    err
}

#[test]
fn bad_certificate_files_fail_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pttbridge test CA");
    let good = ca.write_server(dir.path(), "good");
    let other = ca.write_server(dir.path(), "other");
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    let http = |cert: &Path, key: &Path| {
        format!(
            "[http]\nlisten = \"127.0.0.1:{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            free_port(),
            cert.display(),
            key.display()
        )
    };
    for (config, key) in [
        (http(&missing, &good.key), "http.tls_cert: cannot read"),
        (http(&junk, &good.key), "http.tls_cert:"),
        (http(&good.cert, &junk), "http.tls_key:"),
        (http(&good.cert, &other.key), "http.tls_key:"),
    ] {
        let err = start_fails(&config, dir.path());
        let line = err.lines().find(|l| l.contains(key));
        println!("{key} → {}", line.unwrap_or("(not found)"));
        assert!(line.is_some(), "expected {key:?} in:\n{err}");
    }
}

/// The leaf certificate `addr` serves, through a client trusting `ca`.
fn served_certificate(addr: SocketAddr, ca: &TestCa) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut conn = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("TLS handshake");
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

/// Puts `from`'s files in place of `to`'s (each by a rename, so never half-written).
fn replace(from: &ServerFiles, to: &ServerFiles) {
    for (a, b) in [(&from.cert, &to.cert), (&from.key, &to.key)] {
        let tmp = b.with_extension("new");
        std::fs::copy(a, &tmp).unwrap();
        std::fs::rename(&tmp, b).unwrap();
    }
}

fn wait_served(addr: SocketAddr, ca: &TestCa, der: &[u8], what: &str) -> Duration {
    let t0 = Instant::now();
    while served_certificate(addr, ca) != der {
        assert!(
            t0.elapsed() < T,
            "{what}: still the old certificate after {T:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

#[test]
fn a_replaced_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pttbridge test CA");
    let live = ca.write_server(dir.path(), "live");
    let next = ca.write_server(dir.path(), "next");
    let third = ca.write_server(dir.path(), "third");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    testkit::http::use_tls(addr, ca.client_config());
    let bridge = Bridge::start_at(
        BIN,
        &format!("[http]\n{}header_timeout_ms = 2000\n", live.http_toml()),
        addr,
    );
    assert_eq!(bridge.get("/healthz").status, 200, "served over HTTPS");
    assert_eq!(served_certificate(addr, &ca), live.der);

    // A TLS client that never starts its handshake is closed after the header timeout.
    let mut silent = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut silent, T),
        "silent TLS client still open"
    );
    // Plain HTTP on the HTTPS port gets no HTTP answer (a TLS alert at most).
    let plain = healthz_on(TcpStream::connect(addr).unwrap());
    assert!(
        !plain.as_deref().is_ok_and(|l| l.starts_with("HTTP/")),
        "{plain:?}"
    );

    // Unusable new files (a key that is not the certificate's): logged, the old one stays.
    std::fs::copy(&next.cert, &live.cert).unwrap();
    let t0 = Instant::now();
    while bridge.metric("pttbridge_http_tls_reloads_total", &[("result", "failed")]) < 1.0 {
        assert!(
            t0.elapsed() < T,
            "bad files never noticed\n{}",
            bridge.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        served_certificate(addr, &ca),
        live.der,
        "still the old certificate"
    );
    assert_eq!(bridge.get("/healthz").status, 200);
    assert!(
        bridge
            .logs()
            .contains("still serving the previous certificate")
    );

    // A renewed certificate and key, put in place: served without a restart.
    replace(&next, &live);
    let took = wait_served(addr, &ca, &next.der, "files changed");
    println!("renewed certificate served {took:?} after the files changed");
    assert_eq!(bridge.get("/healthz").status, 200);

    // SIGHUP reloads at once too.
    replace(&third, &live);
    let ok = Command::new("kill")
        .args(["-HUP", &bridge.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let took = wait_served(addr, &ca, &third.der, "SIGHUP");
    println!("after SIGHUP, served in {took:?}");
    let t0 = Instant::now();
    while !bridge.logs().contains("SIGHUP") {
        assert!(
            t0.elapsed() < T,
            "no SIGHUP reload logged\n{}",
            bridge.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(bridge.metric("pttbridge_http_tls_reloads_total", &[("result", "ok")]) >= 2.0);
}

#[test]
fn plain_http_is_redirected_and_the_server_address_comes_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pttbridge test CA");
    let files = ca.write_server(dir.path(), "server");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let redirect: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    testkit::http::use_tls(addr, ca.client_config());
    let bridge = Bridge::start_at(
        BIN,
        &format!(
            "[http]\n{}redirect_listen = \"{redirect}\"\n",
            files.http_toml()
        ),
        addr,
    );
    let r = testkit::http::get(redirect, "/some/page?x=1").unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{}/some/page?x=1", addr.port()).as_str())
    );

    // /server/address names the configured address, whatever Host the request claims.
    let r = bridge.request_with(
        "GET",
        "/server/address?appType=8",
        None,
        &[("Host", "evil.example")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"], format!("wss://{addr}/egw"));

    // A configured public URL is what it gives out.
    drop(bridge);
    let addr2: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let bridge = Bridge::start_at(
        BIN,
        "[http]\npublic_url = \"https://bridge.example.net/ptt\"\n",
        addr2,
    );
    let r = bridge.get("/server/address?appType=8");
    assert_eq!(r.json()["result"], "wss://bridge.example.net/ptt/egw");
}

#[test]
fn shutdown_closes_waiting_connections_at_once_and_lets_streams_end() {
    let mut bridge = Bridge::start(BIN, "");
    let addr = bridge.addr();
    let mut events = bridge.events();
    // Kept alive after a request, and one still sending its headers.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).unwrap();
    let mut partial = TcpStream::connect(addr).unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let status = bridge.stop(T).expect("the bridge stopped on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(closed_within(&mut idle, T) && closed_within(&mut partial, T));
    assert!(
        events.try_expect(testkit::events::is_exit, T).is_some(),
        "the event stream ended"
    );
    let logs = bridge.logs();
    assert!(logs.contains("stopped"), "{logs}");
    // Nobody had to be cut off when the grace ran out.
    assert!(
        !logs.contains("connections still open"),
        "{}",
        bridge.logs_tail(20)
    );
}
