//! Heap allocations (and time) per 20 ms console audio frame, in both directions and for every
//! codec a console may use:
//! - console → PTT: `Upstream::push` on Opus (pass-through) and PCM16 8/16/48 kHz (resampled
//!   and encoded) frames, parsed from binary frames as the connection does;
//! - PTT → console: `Downstream::push` of 20 ms Opus packets into Opus (pass-through) and
//!   PCM16 8/16/48 kHz (decoded and resampled) frames, each wrapped as the WebSocket message
//!   the connection queues.
//!
//! The caller side of each push does what `on_audio` / `terminal_voice` do with their output
//! buffers and per-frame metrics (with the bridge's Prometheus recorder installed), so the
//! figures are those of the connection's per-frame path minus the socket, the PTT client and
//! the connection's floor and budget checks. Allocations are counted by the `count-allocs` global allocator
//! (`src/alloc_count.rs`), single-threaded, after a warm-up; libopus' own C allocations are
//! not seen by it (it allocates its state once, at creation).
//!
//! Run: `cargo bench --bench console_audio_alloc --features count-allocs`
//! (without the feature only the times are printed).

use std::hint::black_box;
use std::time::Instant;

use axum::extract::ws::Message;
use bytes::Bytes;
use media::Channels;
use media::opus::{Application, Encoder};
use muicall::audio::{Codec, Header};
use muicall::{AudioCodecName, AudioFormat};
use ptt::client::OutgoingVoice;
use pttbridge::alloc_count::allocations;
use pttbridge::sides::console::audio::{Downstream, Upstream};

const WARMUP: usize = 200;
const FRAMES: usize = 4000;
/// The console side's default Opus bitrate (`[console] opus_bitrate`).
const BITRATE: i32 = 48_000;

/// Speech-like test signal: two partials under a 4 Hz syllable envelope, plus a little noise.
fn speech(rate: u32, ms: u32) -> Vec<i16> {
    let mut seed = 0x2545_f491_u32;
    (0..rate * ms / 1000)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let env = 0.55 + 0.45 * (t * 4.0 * std::f32::consts::TAU).sin();
            let s = (t * 180.0 * std::f32::consts::TAU).sin() * 0.6
                + (t * 720.0 * std::f32::consts::TAU).sin() * 0.3;
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed as f32 / u32::MAX as f32 - 0.5) * 0.05;
            ((s * env + noise) * 9000.0) as i16
        })
        .collect()
}

/// One second of 20 ms Opus packets (48 kHz mono), as PTT voice carries them.
fn opus_packets() -> Vec<Bytes> {
    let mut enc = Encoder::new(48_000, Channels::Mono, Application::Audio).unwrap();
    enc.set_bitrate(BITRATE).unwrap();
    speech(48_000, 1000)
        .chunks(960)
        .map(|c| Bytes::copy_from_slice(&enc.encode(c).unwrap()))
        .collect()
}

/// One second of 20 ms console frames (header + payload) in `codec`.
fn console_frames(codec: Codec, opus: &[Bytes]) -> Vec<Bytes> {
    let header = |i: usize| Header {
        codec,
        last: false,
        seq: i as u32 * 2,
        source: 0,
    };
    match codec {
        Codec::Opus => opus
            .iter()
            .enumerate()
            .map(|(i, p)| Bytes::from(header(i).frame(p)))
            .collect(),
        Codec::Pcm16(rate) => speech(rate, 1000)
            .chunks(rate as usize / 50)
            .enumerate()
            .map(|(i, c)| {
                let mut b = Vec::new();
                media::pcm::to_le_bytes(c, &mut b);
                Bytes::from(header(i).frame(&b))
            })
            .collect(),
    }
}

/// Allocations and nanoseconds per frame of `frame(i)` over `FRAMES` frames after `WARMUP`.
fn measure(mut frame: impl FnMut(usize)) -> (Option<f64>, f64) {
    for i in 0..WARMUP {
        frame(i);
    }
    let a0 = allocations();
    let t0 = Instant::now();
    for i in WARMUP..WARMUP + FRAMES {
        frame(i);
    }
    let ns = t0.elapsed().as_nanos() as f64 / FRAMES as f64;
    let per = a0
        .zip(allocations())
        .map(|(a, b)| (b - a) as f64 / FRAMES as f64);
    (per, ns)
}

fn upstream(codec: Codec, opus: &[Bytes]) -> (Option<f64>, f64) {
    let frames = console_frames(codec, opus);
    let mut up = Upstream::new(BITRATE);
    // Kept by the connection across frames, as its counters are.
    let mut voice: Vec<OutgoingVoice> = Vec::new();
    let frames_in = metrics::counter!("pttbridge_console_audio_frames_total", "direction" => "in");
    measure(|i| {
        // As `on_audio`: count, parse the binary frame, convert, send each voice packet.
        frames_in.increment(1);
        let data = &frames[i % frames.len()];
        let (header, payload) = Header::parse(data).unwrap();
        up.push(&header, payload, &mut voice).unwrap();
        for v in voice.drain(..) {
            black_box(v);
        }
    })
}

fn downstream(format: AudioFormat, opus: &[Bytes]) -> (Option<f64>, f64) {
    let mut down = Downstream::new(format);
    // Kept by the connection across packets, as its counters are.
    let mut frames: Vec<Bytes> = Vec::new();
    let frames_out =
        metrics::counter!("pttbridge_console_audio_frames_total", "direction" => "out");
    measure(|i| {
        // As `terminal_voice`: convert one PTT packet, queue each frame as a binary message.
        let late = down.push(7, 42, i as u64 * 2, &opus[i % opus.len()], &mut frames);
        assert_eq!(late, 0);
        for f in frames.drain(..) {
            black_box(Message::Binary(f));
            frames_out.increment(1);
        }
    })
}

fn row(direction: &str, codec: &str, (allocs, ns): (Option<f64>, f64)) {
    let allocs = allocs.map_or_else(|| "(not counted)".to_string(), |a| format!("{a:.3}"));
    println!(
        "{direction:<16} {codec:<14} allocations/frame {allocs:>13}   {:>8.1} µs/frame",
        ns / 1000.0
    );
}

/// What a per-frame `metrics::counter!` costs next to incrementing a kept handle.
fn metric_lookup() {
    let n = 200_000;
    let lookup = || {
        metrics::counter!("pttbridge_console_audio_frames_total", "direction" => "out").increment(1)
    };
    lookup();
    let (a0, t0) = (allocations(), Instant::now());
    for _ in 0..n {
        lookup();
    }
    let lookup_ns = t0.elapsed().as_nanos() as f64 / n as f64;
    let lookup_allocs = a0
        .zip(allocations())
        .map(|(a, b)| (b - a) as f64 / n as f64);
    let kept = metrics::counter!("pttbridge_console_audio_frames_total", "direction" => "out");
    let t0 = Instant::now();
    for _ in 0..n {
        black_box(&kept).increment(1);
    }
    let kept_ns = t0.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "metrics: counter! lookup {lookup_ns:.1} ns ({} allocations), kept Counter::increment {kept_ns:.1} ns",
        lookup_allocs.map_or_else(|| "not counted".to_string(), |a| format!("{a:.3}"))
    );
}

fn main() {
    // As the bridge does at start (`http::metrics_handle`).
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::set_global_recorder(recorder).unwrap();
    if allocations().is_none() {
        println!("allocations are counted only with `--features count-allocs`");
    }
    let opus = opus_packets();
    println!("{FRAMES} frames of 20 ms after {WARMUP} of warm-up, per frame:");
    row("console → PTT", "Opus", upstream(Codec::Opus, &opus));
    for rate in [8_000, 16_000, 48_000] {
        let name = format!("PCM16 {} kHz", rate / 1000);
        row("console → PTT", &name, upstream(Codec::Pcm16(rate), &opus));
    }
    let opus_format = AudioFormat {
        codec: AudioCodecName::Opus,
        rate: 48_000,
    };
    row("PTT → console", "Opus", downstream(opus_format, &opus));
    for rate in [8_000, 16_000, 48_000] {
        let name = format!("PCM16 {} kHz", rate / 1000);
        let format = AudioFormat {
            codec: AudioCodecName::Pcm16,
            rate,
        };
        row("PTT → console", &name, downstream(format, &opus));
    }
    metric_lookup();
}
