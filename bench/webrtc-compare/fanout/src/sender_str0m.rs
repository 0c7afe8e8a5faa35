//! str0m sender, shaped like the bridge's room actor (`src/sides/meeting/room.rs`): one task, one
//! UDP socket with 4 MiB buffers for every peer, datagrams read in batches and routed by source
//! address, each peer's `Rtc` polled right after its input; a 20 ms tick writes the frame to every
//! connected peer (frame-level `writer` API) and services expired timers. Peers are configured as
//! the bridge's `peer::new_rtc` does: Opus, audio-level + mid extensions only, RTCP every 1 s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Extension;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

use crate::proc_stat::{Window, cpu_seconds, rss_kib};
use crate::signal::Signal;
use crate::{Args, FRAME, PAYLOAD};

const SOCKET_BUFFER: usize = 4 << 20;
const RECV_BATCH: usize = 64;

struct Peer {
    rtc: Rtc,
    mid: Option<Mid>,
    pt: Option<Pt>,
    connected: bool,
    dead: bool,
    next: Instant,
}

fn new_rtc(now: Instant) -> Rtc {
    let mut config = RtcConfig::new()
        .clear_extension_map()
        .set_extension(1, Extension::AudioLevel)
        .set_extension(4, Extension::RtpMid)
        .clear_codecs()
        .enable_opus(true, false)
        .set_rtcp_report_interval_audio(Duration::from_secs(1));
    config.set_initial_stun_rto(Duration::from_millis(200));
    config.set_max_stun_rto(Duration::from_millis(1000));
    config.set_max_stun_retransmits(5);
    config.build(now)
}

fn media_socket() -> UdpSocket {
    use socket2::{Domain, Protocol as P, Socket, Type};
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(P::UDP)).expect("socket");
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true).expect("nonblocking");
    s.bind(&addr.into()).expect("bind");
    UdpSocket::from_std(s.into()).expect("tokio socket")
}

/// Polls `p` until it wants a timeout; sends what it transmits.
fn drain(p: &mut Peer, socket: &UdpSocket, send_drops: &mut u64) {
    loop {
        match p.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                p.next = t;
                return;
            }
            Ok(Output::Transmit(t)) => {
                if socket.try_send_to(&t.contents, t.destination).is_err() {
                    *send_drops += 1;
                }
            }
            Ok(Output::Event(Event::Connected)) => p.connected = true,
            Ok(Output::Event(Event::MediaAdded(m))) => p.mid = Some(m.mid),
            Ok(Output::Event(Event::IceConnectionStateChange(
                IceConnectionState::Disconnected,
            ))) => p.dead = true,
            Ok(Output::Event(_)) => {}
            Err(e) => {
                eprintln!("peer failed: {e}");
                p.dead = true;
                return;
            }
        }
    }
}

/// Runs the str0m fan-out and prints the window's figures.
pub fn run(a: Args) {
    str0m::crypto::from_feature_flags().install_process_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let socket = media_socket();
        let local = socket.local_addr().expect("local");
        let (sig, mut offers) = Signal::spawn(a.n);
        let sig = Arc::new(sig);
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let rss0 = rss_kib();
        let t_setup = Instant::now();

        // The measurement runs beside the send loop on the same thread.
        let m = {
            let (sig, sent, stop, n, secs) = (sig.clone(), sent.clone(), stop.clone(), a.n, a.seconds);
            tokio::spawn(async move {
                let s0 = sig.wait_connected(n).await;
                let setup_secs = t_setup.elapsed().as_secs_f64();
                tokio::time::sleep(Duration::from_secs(2)).await;
                let rss1 = rss_kib();
                let s0 = sig.stat().await.max_connected(s0);
                let (c0, p0, t0) = (cpu_seconds(), sent.load(Ordering::Relaxed), Instant::now());
                tokio::time::sleep(Duration::from_secs(secs)).await;
                let (c1, p1, dt) = (cpu_seconds(), sent.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
                let s1 = sig.stat().await;
                stop.store(true, Ordering::Relaxed);
                Window {
                    stack: "str0m".into(),
                    n,
                    connected: s0.connected,
                    setup_secs,
                    secs: dt,
                    cpu: c1 - c0,
                    sent: p1 - p0,
                    received: s1.received - s0.received,
                    rss0,
                    rss1,
                    listener_cpu: (s1.cpu - s0.cpu) / dt,
                }
            })
        };

        let mut peers: Vec<Peer> = Vec::with_capacity(a.n);
        let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
        let mut buf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(FRAME);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 37 + 11) as u8).collect();
        let mut rtp_time: u64 = 1 << 32;
        let mut send_drops = 0u64;

        while !stop.load(Ordering::Relaxed) {
            tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    let mut next = r.ok();
                    let mut taken = 0;
                    while let Some((len, from)) = next {
                        let now = Instant::now();
                        if let Ok(contents) = buf[..len].try_into() {
                            let input = Input::Receive(now, Receive { proto: Protocol::Udp, source: from, destination: local, contents });
                            let idx = match by_addr.get(&from) {
                                Some(i) => Some(*i),
                                // A new address: only a STUN check can introduce it.
                                None => peers.iter().position(|p| p.rtc.accepts(&input)).inspect(|i| {
                                    by_addr.insert(from, *i);
                                }),
                            };
                            if let Some(i) = idx {
                                let p = &mut peers[i];
                                if p.rtc.handle_input(input).is_err() {
                                    p.dead = true;
                                }
                                drain(p, &socket, &mut send_drops);
                            }
                        }
                        taken += 1;
                        next = if taken < RECV_BATCH { socket.try_recv_from(&mut buf).ok() } else { None };
                    }
                }
                Some((i, sdp)) = offers.recv() => {
                    let now = Instant::now();
                    let offer = SdpOffer::from_sdp_string(&sdp).expect("offer SDP");
                    let mut rtc = new_rtc(now);
                    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
                    let answer = rtc.sdp_api().accept_offer(offer).expect("accept offer");
                    sig.answer(i, &answer.to_sdp_string()).await;
                    let mut p = Peer { rtc, mid: None, pt: None, connected: false, dead: false, next: now };
                    drain(&mut p, &socket, &mut send_drops);
                    peers.push(p);
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    rtp_time += 960;
                    for p in peers.iter_mut().filter(|p| !p.dead) {
                        if p.connected && let Some(mid) = p.mid {
                            if p.pt.is_none() {
                                p.pt = p.rtc.writer(mid).and_then(|w| {
                                    w.payload_params().find(|pp| pp.spec().codec == Codec::Opus).map(|pp| pp.pt())
                                });
                            }
                            if let (Some(pt), Some(w)) = (p.pt, p.rtc.writer(mid)) {
                                let t = MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ);
                                if w.write(pt, now, t, &payload[..]).is_ok() {
                                    sent.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        } else if p.next > now {
                            continue;
                        }
                        if p.next <= now && p.rtc.handle_input(Input::Timeout(now)).is_err() {
                            p.dead = true;
                        }
                        drain(p, &socket, &mut send_drops);
                    }
                }
            }
        }
        let w = m.await.expect("measurement");
        w.print();
        let dead = peers.iter().filter(|p| p.dead).count();
        println!("str0m: {dead} peers dead at the end, {send_drops} datagrams not sent (socket full)");
    });
}
