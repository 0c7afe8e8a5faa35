//! Heap allocations per voice packet in the PTT [`Session`], counted by a wrapping global
//! allocator: one voice packet sent (`send_voice` → `poll_transmit`, over UDP and through the
//! TCP tunnel) and one received (an encrypted UDP datagram, or a `UDPTunnel` frame, in →
//! its `Voice` event out), in both voice formats. No sockets: the session is fed bytes, the
//! way the driver would, and a server-side `CryptState` seals what it receives.
//!
//! `cargo bench -p ptt --bench alloc` (add `--no-default-features` to leave the driver out).
//!
//! Received payloads are kept alive for the last [`KEEP`] packets, as a jitter buffer would,
//! so buffers they were cut from cannot simply be reused in place. Times are wall-clock per
//! packet on a shared machine: a rough guide only; the allocation counts are exact.
//!
//! Allocations per packet, legacy / protobuf format, before → after the session sent and
//! received through arenas ("after" is a 16 KiB chunk and its shared header per ~230
//! received packets; sent packets reuse one chunk, as the driver drops them once sent):
//!
//! | packet                          | before        | after         |
//! |---------------------------------|---------------|---------------|
//! | sent over UDP                   | 4 / 4         | 0 / 0         |
//! | sent through the TCP tunnel     | 5 / 5         | 0 / 0         |
//! | received over UDP               | 2 / 2         | 0.008 / 0.009 |
//! | received through the TCP tunnel | 0.036 / 0.038 | 0.009 / 0.009 |

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ptt::ControlMessage;
use ptt::ocb2::CryptState;
use ptt::proto;
use ptt::session::{Event, Session, SessionConfig};
use ptt::voice_packet::{self, Direction, UdpPacket, VoiceFormat, VoicePacket};

/// Counts every `alloc`, `alloc_zeroed` and `realloc` (frees are not counted).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this wrapper with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; `new_size` is checked by the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Packets measured per case (after [`WARMUP`] unmeasured ones).
const PACKETS: usize = 100_000;
/// Packets sent before counting starts: first-talker events, queue growth, first buffers.
const WARMUP: usize = 1_000;
/// Received payloads kept alive at any time (1 s of 20 ms packets).
const KEEP: usize = 50;

const KEY: [u8; 16] = [7; 16];
const CLIENT_NONCE: [u8; 16] = [0x11; 16];
const SERVER_NONCE: [u8; 16] = [0x22; 16];
/// Our session id, and the talker whose voice we receive.
const OWN: u32 = 7;
const TALKER: u32 = 3;

/// A 20 ms Opus frame at ~24 kb/s: 60 bytes (as in the `codec` bench).
fn opus_payload() -> Vec<u8> {
    (0..60u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect()
}

fn frame(m: impl Into<ControlMessage>) -> BytesMut {
    let mut out = BytesMut::new();
    m.into().encode(&mut out);
    out
}

/// A session synced with a server of `format`'s version, with `TALKER` known and, if
/// `udp`, UDP crypto keyed and proven working (one datagram sealed by `server` received).
fn synced_session(format: VoiceFormat, udp: bool, server: &mut CryptState) -> Session {
    let now = Instant::now();
    let mut session = Session::new(SessionConfig::default(), now);
    let version = match format {
        VoiceFormat::Legacy => proto::Version {
            version_v1: Some(0x0001_0304),
            ..Default::default()
        },
        VoiceFormat::Protobuf => proto::Version {
            version_v2: Some(1 << 48 | 5 << 32),
            ..Default::default()
        },
    };
    let mut script = frame(version);
    script.extend(frame(proto::ChannelState {
        channel_id: Some(0),
        name: Some("Root".into()),
        ..Default::default()
    }));
    for (session, name) in [(OWN, "bench"), (TALKER, "talker")] {
        script.extend(frame(proto::UserState {
            session: Some(session),
            name: Some(name.into()),
            channel_id: Some(0),
            ..Default::default()
        }));
    }
    script.extend(frame(proto::ServerSync {
        session: Some(OWN),
        ..Default::default()
    }));
    if udp {
        script.extend(frame(proto::CryptSetup {
            key: Some(KEY.to_vec().into()),
            client_nonce: Some(CLIENT_NONCE.to_vec().into()),
            server_nonce: Some(SERVER_NONCE.to_vec().into()),
        }));
    }
    session
        .handle_tcp(&script, now)
        .expect("valid server script");
    assert!(session.is_synced());
    assert_eq!(session.voice_format(), format);
    if udp {
        // Any authentic datagram proves UDP works; a ping is the smallest.
        let mut plain = BytesMut::new();
        voice_packet::encode(
            &UdpPacket::Ping { timestamp: 1 },
            format,
            Direction::FromServer,
            &mut plain,
        )
        .expect("encodable");
        let mut sealed = Vec::new();
        server.encrypt(&plain, &mut sealed);
        session.handle_udp(&sealed, now);
        assert!(session.udp_working());
    }
    while session.poll_event().is_some() {}
    while session.poll_transmit().is_some() {}
    session
}

/// The server's side of the crypto: encrypts with the server nonce, as murmurd does.
fn server_crypt() -> CryptState {
    let mut c = CryptState::new();
    c.set_key(&KEY, &SERVER_NONCE, &CLIENT_NONCE)
        .expect("16 bytes");
    c
}

/// Plaintext voice packet number `i` from `TALKER`, as the server sends it.
fn incoming(format: VoiceFormat, i: usize) -> BytesMut {
    let packet = UdpPacket::Audio(VoicePacket {
        target_or_context: 0,
        session: Some(TALKER),
        sequence: 2 * i as u64,
        payload: opus_payload().into(),
        terminator: false,
        position: None,
    });
    let mut out = BytesMut::new();
    voice_packet::encode(&packet, format, Direction::FromServer, &mut out).expect("encodable");
    out
}

/// Allocations and time per packet over `PACKETS` calls of `step` (after `WARMUP` calls).
fn measure(mut step: impl FnMut(usize)) -> (f64, Duration) {
    for i in 0..WARMUP {
        step(i);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    for i in WARMUP..WARMUP + PACKETS {
        step(i);
    }
    let elapsed = start.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    (
        allocations as f64 / PACKETS as f64,
        elapsed / PACKETS as u32,
    )
}

fn send(format: VoiceFormat, udp: bool) -> (f64, Duration) {
    let mut server = server_crypt();
    let mut session = synced_session(format, udp, &mut server);
    let opus = opus_payload();
    measure(|_| {
        assert!(session.send_voice(&opus, 2, false, 0));
        // The driver writes each transmit to its socket and drops it.
        while let Some(t) = session.poll_transmit() {
            black_box(t);
        }
    })
}

/// Feeds `inputs[i]` with `feed`, expects one `Voice` event and keeps its payload a while.
fn receive(
    mut session: Session,
    inputs: &[Vec<u8>],
    mut feed: impl FnMut(&mut Session, &[u8]),
) -> (f64, Duration) {
    let mut kept = vec![Bytes::new(); KEEP];
    measure(|i| {
        feed(&mut session, &inputs[i]);
        let mut voice = 0;
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::Voice { opus, .. } => {
                    kept[i % KEEP] = opus;
                    voice += 1;
                }
                Event::TalkStarted { .. } => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
        assert_eq!(voice, 1, "packet {i}");
    })
}

fn receive_udp(format: VoiceFormat) -> (f64, Duration) {
    let mut server = server_crypt();
    let session = synced_session(format, true, &mut server);
    let datagrams: Vec<Vec<u8>> = (0..WARMUP + PACKETS)
        .map(|i| {
            let mut sealed = Vec::new();
            server.encrypt(&incoming(format, i), &mut sealed);
            sealed
        })
        .collect();
    let now = Instant::now();
    receive(session, &datagrams, |s, d| s.handle_udp(d, now))
}

fn receive_tcp(format: VoiceFormat) -> (f64, Duration) {
    let mut server = server_crypt();
    let session = synced_session(format, false, &mut server);
    let frames: Vec<Vec<u8>> = (0..WARMUP + PACKETS)
        .map(|i| frame(ControlMessage::UdpTunnel(incoming(format, i).freeze())).to_vec())
        .collect();
    let now = Instant::now();
    receive(session, &frames, |s, f| {
        s.handle_tcp(f, now).expect("valid frame");
    })
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("alloc bench: run with `cargo bench -p ptt --bench alloc`");
        return;
    }
    println!(
        "allocations per voice packet ({PACKETS} packets, 60-byte Opus, after {WARMUP} warm-up)"
    );
    println!("{:<44} {:>12} {:>12}", "case", "allocs/pkt", "ns/pkt");
    for (name, format) in [
        ("legacy", VoiceFormat::Legacy),
        ("protobuf", VoiceFormat::Protobuf),
    ] {
        let cases = [
            ("sent over UDP", send(format, true)),
            ("sent through the TCP tunnel", send(format, false)),
            ("received over UDP", receive_udp(format)),
            ("received through the TCP tunnel", receive_tcp(format)),
        ];
        for (case, (allocs, time)) in cases {
            println!(
                "{:<44} {:>12.3} {:>12}",
                format!("{name}: {case}"),
                allocs,
                time.as_nanos()
            );
        }
    }
}
