//! Prints the memory each media object holds (size_of + heap capacity +
//! libopus state), for BENCHMARKS.md: `cargo run -p media --example memory`.

use bytes::Bytes;
use media::Channels;
use media::group::{GroupConfig, MixGroup};
use media::inbound::InboundStream;
use media::jitter::{JitterBuffer, JitterConfig};
use media::opus::{Application, Decoder, Encoder};
use media::passthrough::{OutboundClock, Route};

/// A group with `registered` talkers of which the first `talking` are mixed.
fn group(registered: u32, talking: u32) -> MixGroup {
    let mut g = MixGroup::new(GroupConfig {
        max_talkers: registered as usize,
        ..GroupConfig::default()
    })
    .unwrap();
    for id in 0..registered {
        g.add_talker(id).unwrap();
    }
    let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
    let speech = media::signal::speechlike(48_000, 0.5);
    for tick in 0..20u32 {
        let now = u64::from(tick) * 20_000;
        let frame = &speech[(tick as usize % 20) * 960..][..960];
        let pkt = enc.encode(frame).unwrap();
        for id in 0..talking {
            g.push(id, tick * 960, pkt.clone(), now);
        }
        let out = g.tick(now).unwrap();
        if tick == 19 && talking > 1 {
            assert_eq!(out.route, Route::Mix);
        }
    }
    g
}

fn main() {
    let clock = std::mem::size_of::<OutboundClock>();
    println!("listener stream (OutboundClock):             {clock} B");

    let mut jb = JitterBuffer::new(JitterConfig::default());
    let empty = std::mem::size_of::<JitterBuffer>() + jb.heap_bytes();
    // Offer it far more than it may hold (80-byte packets, 20 ms each).
    for i in 0..64u32 {
        jb.push(i * 960, Bytes::from(vec![0xF8u8; 80]), u64::from(i) * 1000);
    }
    let full = std::mem::size_of::<JitterBuffer>() + jb.heap_bytes();
    println!("jitter buffer, empty / at its 200 ms cap:    {empty} B / {full} B");

    let inbound = InboundStream::new(JitterConfig::default(), Channels::Mono).unwrap();
    let dec = Decoder::state_bytes(Channels::Mono);
    println!(
        "talker inbound stream (jitter+decoder+fifo): {} B (libopus decoder: {dec} B)",
        std::mem::size_of::<InboundStream>() + inbound.heap_bytes() + dec
    );
    println!(
        "libopus encoder state (mono):                {} B",
        Encoder::state_bytes(Channels::Mono)
    );
    for (registered, talking) in [(4, 4), (16, 4), (16, 16)] {
        let g = group(registered, talking);
        println!(
            "mixing group, {registered:>2} talkers registered, {talking:>2} mixed: {} B",
            g.memory_bytes()
        );
    }
}
