//! Time to "joined channel" against a local murmurd (Debian's, started by the testkit):
//! - `pttbridge run`: from spawning the process to `/healthz` showing the account in its
//!   channel (polled every 2 ms, so figures carry up to 2 ms of polling granularity);
//! - the library: from `ptt::client::spawn` to the `InChannel` event (TCP + TLS + auth + sync + move).
//!
//! Run: `cargo bench --bench ptt_join` (needs `scripts/setup`). Prints min/p50/p99/max.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ptt::client::{ClientConfig, ClientEvent};
use ptt::session::{Event, SessionConfig};
use ptt::tls::{ServerTrust, parse_fingerprint};
use testkit::bridge::ptt_server_toml;
use testkit::http;
use testkit::murmur::Murmur;
use testkit::peers::free_port;

const RUNS: usize = 30;

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<28} n={:<3} min {:>6.1} ms  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms",
        ms.len(),
        ms[0],
        pct(0.5),
        pct(0.99),
        ms[ms.len() - 1]
    );
}

fn bridge_run_to_joined(server: &Murmur) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for i in 0..RUNS {
        let port = free_port();
        let config = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"warn\"\n{}",
            ptt_server_toml("local", server, &[(&format!("bench{i}"), "North")])
        );
        let path = dir.path().join(format!("b{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let addr = ([127, 0, 0, 1], port).into();
        let t0 = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pttbridge"))
            .args(["run", "--config"])
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        loop {
            let joined = http::get(addr, "/healthz").ok().is_some_and(|r| {
                r.json()["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North"
            });
            if joined {
                out.push(t0.elapsed().as_secs_f64() * 1e3);
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "bridge never joined"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    out
}

fn client_spawn_to_joined(server: &Murmur) -> Vec<f64> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pin = parse_fingerprint(server.cert_sha256()).unwrap();
    let mut out = Vec::new();
    for i in 0..RUNS {
        let session = SessionConfig {
            username: format!("lib{i}"),
            channel: Some("North".into()),
            ..SessionConfig::default()
        };
        let mut cfg = ClientConfig::new(
            "127.0.0.1",
            server.port(),
            ServerTrust::Pinned(pin),
            session,
        );
        cfg.reconnect = false;
        let ms = rt.block_on(async {
            let t0 = Instant::now();
            let (handle, mut events) = ptt::client::spawn(cfg);
            while let Some(ev) = events.recv().await {
                if let ClientEvent::Session(Event::InChannel { path, .. }) = ev
                    && path == "North"
                {
                    break;
                }
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let _ = handle.command(ptt::client::Command::Shutdown).await;
            ms
        });
        out.push(ms);
    }
    out
}

fn main() {
    // `cargo bench` passes filter/flags; this bench has one mode.
    let server = Murmur::start(&["North"]);
    summary(
        "ptt::client spawn → joined",
        client_spawn_to_joined(&server),
    );
    summary("pttbridge run → joined", bridge_run_to_joined(&server));
}
