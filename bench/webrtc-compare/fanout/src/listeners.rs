//! The listener process: N str0m peers (recvonly Opus), one UDP socket each, all on one thread.
//! Same listener as the bridge's `examples/meeting_load.rs`. Offers go to stdout one at a time,
//! answers come back on stdin; then `stat` lines report connected peers and received packets.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;

use crate::proc_stat::cpu_seconds;
use crate::signal::{flatten, unflatten};

async fn listener(
    mut rtc: Rtc,
    socket: UdpSocket,
    received: Arc<AtomicU64>,
    connected: Arc<AtomicU64>,
) {
    let local = socket.local_addr().expect("local");
    let mut buf = vec![0u8; 2000];
    loop {
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
            Err(e) => {
                eprintln!("listener failed: {e}");
                return;
            }
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

/// Writes one `stat` line: connected peers, packets received, this process's CPU seconds.
fn stat(connected: &AtomicU64, received: &AtomicU64) {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "stat {} {} {:.3}",
        connected.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        cpu_seconds()
    )
    .expect("stdout");
    out.flush().expect("stdout");
}

/// Runs the listener process until stdin closes.
pub fn run(n: usize) {
    str0m::crypto::from_feature_flags().install_process_default();
    if std::env::var_os("FANOUT_LOG").is_some() {
        // e.g. FANOUT_LOG=str0m=debug shows the negotiated SRTP profile.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("FANOUT_LOG"))
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let received = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicU64::new(0));
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        for i in 0..n {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let mut rtc = Rtc::builder()
                .clear_codecs()
                .enable_opus(true, false)
                .build(Instant::now());
            rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
            let mut api = rtc.sdp_api();
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            let (offer, pending) = api.apply().expect("offer");
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "offer {i} {}", flatten(&offer.to_sdp_string())).expect("stdout");
                out.flush().expect("stdout");
            }
            // The sender may ask for counters while peers are still being set up.
            let line = loop {
                let l = lines.next_line().await.expect("stdin").expect("answer");
                if l != "stat" {
                    break l;
                }
                stat(&connected, &received);
            };
            let sdp = line.splitn(3, ' ').nth(2).expect("answer line");
            let answer = SdpAnswer::from_sdp_string(&unflatten(sdp)).expect("answer SDP");
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .expect("accept answer");
            tokio::spawn(listener(rtc, socket, received.clone(), connected.clone()));
        }
        while let Ok(Some(l)) = lines.next_line().await {
            if l == "stat" {
                stat(&connected, &received);
            }
        }
    });
}
