//! Heap bytes per WebRTC listener, stage by stage: one str0m `Rtc` answered the way a room
//! answers a listener's offer (`rtc::sdp::answer`), connected (ICE, DTLS, SRTP) to a str0m
//! client like the load tool's, then sent 5 s of 20 ms Opus packets as a room writes them
//! (RTP header extensions, RTCP reports, the client's receiver reports coming back). Everything
//! is in memory, on simulated time. The bytes of a stage are what dropping the bridge's peers
//! gives back, divided by their number, so the clients' own memory is not counted.
//!
//! Run: `cargo bench --bench rtc_memory --features count-allocs [-- N]` (N peers, default 200);
//! for where the bytes go, `heaptrack <bench binary> N --leak-servers` (the peers after the audio
//! are all that is left allocated at exit: its leak report is their breakdown by call site).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pttbridge::alloc_count::live_bytes;
use pttbridge::sides::meeting::rtc::sdp::{self, answer_with};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

/// A 20 ms Opus packet's size at the PTT side's ≈ 32 kbit/s.
const PAYLOAD: usize = 80;
const ROOM: &str = "127.0.0.1:5000";

struct Pair {
    client: Rtc,
    client_addr: SocketAddr,
    server: Rtc,
    mid: Mid,
    pt: Option<Pt>,
    connected: bool,
    ts: u64,
}

#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Stage {
    Answered,
    Connected,
    Audio,
}

fn pump(from: &mut Rtc, to: &mut Rtc, now: Instant, connected: &mut bool, is_server: bool) {
    while let Ok(out) = from.poll_output() {
        match out {
            Output::Transmit(t) => {
                let Ok(contents) = (&t.contents[..]).try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: t.source,
                        destination: t.destination,
                        contents,
                    },
                );
                let _ = to.handle_input(input);
            }
            Output::Event(Event::Connected) if is_server => *connected = true,
            Output::Event(_) => {}
            Output::Timeout(_) => break,
        }
    }
}

/// Both sides exchange everything they have to send at `now`.
fn exchange(p: &mut Pair, now: Instant) {
    for _ in 0..4 {
        pump(&mut p.server, &mut p.client, now, &mut p.connected, true);
        let mut ignore = false;
        pump(&mut p.client, &mut p.server, now, &mut ignore, false);
    }
}

fn tick(p: &mut Pair, now: Instant) {
    let _ = p.server.handle_input(Input::Timeout(now));
    let _ = p.client.handle_input(Input::Timeout(now));
    exchange(p, now);
}

/// Makes the bridge's side of a pair.
type Make<'a> = &'a dyn Fn(Instant) -> Rtc;
/// A named way to make the bridge's side.
type Variant<'a> = (&'static str, Box<dyn Fn(Instant) -> Rtc + 'a>);

fn pair(i: usize, now: Instant, make: Make<'_>) -> Pair {
    let client_addr: SocketAddr = format!("127.0.0.1:{}", 20_000 + i).parse().unwrap();
    let mut client = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .build(now);
    client.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
    let mut api = client.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let a = answer_with(make(now), &offer.to_sdp_string(), ROOM.parse().unwrap()).unwrap();
    client
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&a.answer).unwrap())
        .unwrap();
    Pair {
        client,
        client_addr,
        server: a.rtc,
        mid: a.mid,
        pt: None,
        connected: false,
        ts: 0,
    }
}

/// `n` pairs brought to `stage`; returns them and the simulated time reached.
fn build(n: usize, stage: Stage, start: Instant, make: Make<'_>) -> (Vec<Pair>, Instant) {
    let mut pairs: Vec<Pair> = (0..n).map(|i| pair(i, start, make)).collect();
    let mut now = start;
    if stage >= Stage::Connected {
        for p in &mut pairs {
            let mut t = now;
            while !p.connected && t < now + Duration::from_secs(10) {
                tick(p, t);
                t += Duration::from_millis(10);
            }
            assert!(p.connected, "pair {} did not connect", p.client_addr);
            p.pt = sdp::pt_for(&mut p.server, p.mid, Codec::Opus);
        }
        now += Duration::from_secs(1);
    }
    if stage >= Stage::Audio {
        let payload = [0x5a_u8; PAYLOAD];
        for _ in 0..250 {
            now += Duration::from_millis(20);
            for p in &mut pairs {
                let pt = p.pt.expect("Opus negotiated");
                p.ts += 960;
                let w = p.server.writer(p.mid).expect("writer");
                w.write(
                    pt,
                    now,
                    MediaTime::new(p.ts, Frequency::FORTY_EIGHT_KHZ),
                    &payload[..],
                )
                .unwrap();
                tick(p, now);
            }
        }
    }
    (pairs, now)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    sdp::init_crypto();
    if std::env::args().any(|a| a == "--leak-servers") {
        // For a heap profiler's leak report: the bridge's peers after the audio, and nothing
        // else, are still allocated at exit.
        let (pairs, _) = build(n, Stage::Audio, Instant::now(), &sdp::new_rtc);
        let (servers, clients): (Vec<_>, Vec<_>) =
            pairs.into_iter().map(|p| (p.server, p.client)).unzip();
        drop(clients);
        std::mem::forget(servers);
        return;
    }
    let Some(_) = live_bytes() else {
        println!("built without --features count-allocs: no heap figures");
        return;
    };
    println!(
        "size_of::<Rtc>() = {} B (inline, part of each figure below)",
        std::mem::size_of::<Rtc>()
    );
    let now = Instant::now();
    // A bare `Rtc` from the bridge's configuration (no offer yet).
    let before = live_bytes().unwrap();
    let bare: Vec<Rtc> = (0..n).map(|_| sdp::new_rtc(now)).collect();
    let per = (live_bytes().unwrap() - before) as f64 / n as f64;
    drop(bare);
    println!("{n} peers, heap per peer:");
    println!(
        "  built (sdp::new_rtc):                  {:>8.1} KiB",
        per / 1024.0
    );
    for (stage, name) in [
        (Stage::Answered, "offer answered (sdp::answer)"),
        (Stage::Connected, "connected (ICE, DTLS, SRTP)"),
        (Stage::Audio, "after 5 s of audio (250 packets)"),
    ] {
        println!(
            "  {name:<38} {:>8.1} KiB",
            per_peer(n, stage, now, &sdp::new_rtc)
        );
    }
    // Other configurations, after the audio: what the bridge's choices save against str0m's
    // defaults, and what str0m's other knobs for audio would (each on top of the bridge's).
    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .expect("a DTLS certificate");
    let variants: [Variant<'_>; 5] = [
        (
            "str0m defaults (all codecs, extensions)",
            Box::new(|now| RtcConfig::new().build(now)),
        ),
        ("bridge config (sdp::new_rtc)", Box::new(sdp::new_rtc)),
        (
            "  + one DTLS certificate for every peer",
            Box::new(|now| sdp::rtc_config().set_dtls_cert(cert.clone()).build(now)),
        ),
        (
            "  + audio send buffer 1 (default 50)",
            Box::new(|now| sdp::rtc_config().set_send_buffer_audio(1).build(now)),
        ),
        (
            "  + audio reordering size 1 (default 15)",
            Box::new(|now| sdp::rtc_config().set_reordering_size_audio(1).build(now)),
        ),
    ];
    own_srtp(n, now);
    lean_listeners(n, now);
    println!("after the audio, by configuration:");
    for (name, make) in &variants {
        println!(
            "  {name:<42} {:>8.1} KiB",
            per_peer(n, Stage::Audio, now, &**make)
        );
    }
}

/// What a listener's own SRTP sender (`rtc::fast_tx`, the room's fast path) costs: the part of
/// a listener a room would still keep if it dropped the `Rtc` once connected (with the ICE
/// consent state and the address, a few hundred bytes more).
fn own_srtp(n: usize, now: Instant) {
    use pttbridge::sides::meeting::rtc::fast_tx::{SrtpTx, Stream};
    use pttbridge::sides::meeting::rtc::srtp_keys;
    let slots = std::cell::RefCell::new(Vec::new());
    let make = |now| {
        let (rtc, slot) = srtp_keys::build(sdp::rtc_config(), now);
        slots.borrow_mut().push(slot);
        rtc
    };
    let (pairs, _) = build(n, Stage::Connected, now, &make);
    let keys: Vec<_> = slots.borrow().iter().filter_map(|s| s.take()).collect();
    assert_eq!(keys.len(), n, "every handshake's keys captured");
    let crypto = srtp_keys::provider();
    let stream = Stream {
        ssrc: 1,
        pt: 111,
        clock_rate: 48_000,
    };
    let before = live_bytes().unwrap();
    let senders: Vec<SrtpTx> = keys
        .iter()
        .map(|k| SrtpTx::new(&crypto, k, stream).unwrap())
        .collect();
    let heap = (live_bytes().unwrap() - before) as f64 / n as f64;
    println!(
        "own SRTP sender ({:?}): {:.0} B heap + {} B inline per listener",
        keys[0].profile,
        heap - std::mem::size_of::<SrtpTx>() as f64,
        std::mem::size_of::<SrtpTx>()
    );
    drop(senders);
    drop(pairs);
}

/// Heap bytes per bridge-side peer at `stage`: what dropping them gives back.
fn per_peer(n: usize, stage: Stage, now: Instant, make: Make<'_>) -> f64 {
    let (pairs, _) = build(n, stage, now, make);
    let (servers, clients): (Vec<_>, Vec<_>) =
        pairs.into_iter().map(|p| (p.server, p.client)).unzip();
    let with = live_bytes().unwrap();
    drop(servers);
    let without = live_bytes().unwrap();
    drop(clients);
    (with - without) as f64 / n as f64 / 1024.0
}

/// Heap per listener of a room's `PeerSet` whose listeners went lean (`rtc::listener`: str0m
/// dropped `LEAN_AFTER` after connecting), after 5 s of audio through the own SRTP writer, its
/// hash-table slot included: what dropping the set gives back, per peer. The str0m clients
/// answer every consent check throughout.
fn lean_listeners(n: usize, start: Instant) {
    use pttbridge::sides::meeting::rtc::peer_set::{LEAN_AFTER, Sink};
    use pttbridge::sides::meeting::rtc::{Peer, PeerSet, listener, srtp_keys};
    use str0m::net::Transmit;

    /// Datagrams for the clients, by destination.
    #[derive(Default)]
    struct Mail(Vec<(SocketAddr, Vec<u8>)>);
    impl Sink<()> for Mail {
        fn transmit(&mut self, _: &(), t: &Transmit) -> bool {
            self.0.push((t.destination, t.contents.to_vec()));
            true
        }
        fn fill(
            &mut self,
            to: SocketAddr,
            fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
        ) -> bool {
            let mut buf = vec![0u8; 1500];
            if let Some(len) = fill(&mut buf) {
                buf.truncate(len);
                self.0.push((to, buf));
            }
            true
        }
    }

    let room: SocketAddr = ROOM.parse().unwrap();
    let mut set: PeerSet<usize, ()> = PeerSet::new(start);
    let mut clients = Vec::new();
    for i in 0..n {
        let client_addr: SocketAddr = format!("127.0.0.1:{}", 20_000 + i).parse().unwrap();
        let mut client = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(start);
        client.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
        let mut api = client.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let offer = offer.to_sdp_string();
        let (rtc, slot) = srtp_keys::build(sdp::rtc_config(), start);
        let mut a = answer_with(rtc, &offer, room).unwrap();
        client
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&a.answer).unwrap())
            .unwrap();
        let pt = sdp::pt_for(&mut a.rtc, a.mid, Codec::Opus);
        let mut peer = Peer::new(a.rtc, (), room, start);
        peer.mid = Some(a.mid);
        peer.pt = pt;
        peer.capture_keys(slot);
        peer.listen_lean(listener::sdp_ice_creds(&offer).unwrap());
        set.insert(i, peer);
        clients.push((client_addr, client));
    }
    let mut mail = Mail::default();
    let step =
        |set: &mut PeerSet<usize, ()>, clients: &mut [(SocketAddr, Rtc)], mail: &mut Mail, now| {
            set.handle_timeouts(now, &mut |_, t| mail.transmit(&(), t));
            for (i, (addr, c)) in clients.iter_mut().enumerate() {
                let _ = c.handle_input(Input::Timeout(now));
                for _ in 0..4 {
                    let mine: Vec<_> = mail
                        .0
                        .iter()
                        .filter(|(to, _)| to == addr)
                        .cloned()
                        .collect();
                    mail.0.retain(|(to, _)| to != addr);
                    for (to, d) in mine {
                        let input = Input::Receive(
                            now,
                            Receive {
                                proto: Protocol::Udp,
                                source: room,
                                destination: to,
                                contents: d.as_slice().try_into().unwrap(),
                            },
                        );
                        let _ = c.handle_input(input);
                    }
                    while let Ok(out) = c.poll_output() {
                        match out {
                            Output::Transmit(t) => {
                                set.receive(i, t.source, &t.contents, now, &mut |_, t| {
                                    mail.transmit(&(), t)
                                });
                            }
                            Output::Timeout(_) => break,
                            Output::Event(_) => {}
                        }
                    }
                }
            }
            mail.0.clear();
        };
    let mut now = start;
    while now < start + LEAN_AFTER + Duration::from_secs(1) {
        now += Duration::from_millis(10);
        step(&mut set, &mut clients, &mut mail, now);
    }
    let lean = set.iter().filter(|(_, p)| p.is_lean()).count();
    assert_eq!(lean, n, "every listener lean");
    let payload = [0x5a_u8; PAYLOAD];
    for i in 0..250u32 {
        now += Duration::from_millis(20);
        let pkt = media::group::OutPacket {
            source: media::passthrough::Source::Talker(1),
            src_ts: i * 960,
            samples: 960,
            payload: payload.to_vec().into(),
        };
        let us = u64::from(i) * 20_000;
        set.write_each(|_| true, &pkt, now, us, &mut mail);
        step(&mut set, &mut clients, &mut mail, now);
    }
    assert!(set.dead().is_empty(), "no listener lost");
    let with = live_bytes().unwrap();
    drop(set);
    let without = live_bytes().unwrap();
    println!(
        "lean listeners (rtc::listener + own SRTP), after 5 s of audio, in a PeerSet: {:.2} KiB per listener",
        (with - without) as f64 / n as f64 / 1024.0
    );
    drop(clients);
}
