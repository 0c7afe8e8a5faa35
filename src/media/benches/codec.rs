//! Per-20 ms-frame costs of the codec layer: Opus decode/encode, resampling,
//! G.711, and mixing N talkers. Figures go into BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use media::g711::{self, Law};
use media::limiter::Limiter;
use media::mixer::Mixer;
use media::opus::{Application, Decoder, Encoder};
use media::resample::Resampler;
use media::signal::speechlike;
use media::{Channels, opus_toc};

const FRAME: usize = 960;

fn opus(c: &mut Criterion) {
    let speech = speechlike(48_000, 2.0);
    let frames: Vec<&[i16]> = speech.chunks_exact(FRAME).collect();
    let mut g = c.benchmark_group("opus_20ms_mono_48k");
    for complexity in [0, 5, 10] {
        let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
        enc.set_complexity(complexity).unwrap();
        enc.set_bitrate(32_000).unwrap();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("encode_complexity", complexity), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                black_box(enc.encode(frames[i]).unwrap())
            })
        });
    }
    let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
    enc.set_bitrate(32_000).unwrap();
    let packets: Vec<_> = frames.iter().map(|f| enc.encode(f).unwrap()).collect();
    let mut dec = Decoder::new(48_000, Channels::Mono).unwrap();
    let mut out = [0i16; FRAME];
    let mut i = 0;
    g.bench_function("decode", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            black_box(dec.decode(Some(&packets[i]), false, &mut out).unwrap())
        })
    });
    g.bench_function("decode_plc", |b| {
        b.iter(|| black_box(dec.decode(None, false, &mut out).unwrap()))
    });
    g.bench_function("toc_parse", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            black_box(opus_toc::parse(&packets[i]).unwrap())
        })
    });
    g.finish();
}

fn resample(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample_20ms_mono");
    for (from, to) in [(8000, 48000), (48000, 8000), (16000, 48000), (48000, 16000)] {
        let mut r = Resampler::new(from, to, Channels::Mono).unwrap();
        let input = speechlike(from, 0.02);
        let mut out = vec![0i16; r.output_len()];
        g.bench_function(format!("{}k_to_{}k", from / 1000, to / 1000), |b| {
            b.iter(|| black_box(r.process(black_box(&input), &mut out).unwrap()))
        });
    }
    g.finish();
}

fn g711(c: &mut Criterion) {
    // 20 ms at 8 kHz.
    let pcm = speechlike(8000, 0.02);
    let mut bytes = vec![0u8; pcm.len()];
    let mut back = vec![0i16; pcm.len()];
    let mut g = c.benchmark_group("g711_20ms_8k");
    for (name, law) in [("mulaw", Law::Mu), ("alaw", Law::A)] {
        g.bench_function(format!("{name}_encode"), |b| {
            b.iter(|| g711::encode(law, black_box(&pcm), &mut bytes))
        });
        g711::encode(law, &pcm, &mut bytes);
        g.bench_function(format!("{name}_decode"), |b| {
            b.iter(|| g711::decode(law, black_box(&bytes), &mut back))
        });
    }
    g.finish();
}

fn mix(c: &mut Criterion) {
    let mut g = c.benchmark_group("mix_20ms_48k");
    for n in [2usize, 4, 8, 16] {
        let talkers: Vec<Vec<i16>> = (0..n)
            .map(|k| {
                let s = speechlike(48_000, 0.1);
                s[k * 97..k * 97 + FRAME].to_vec()
            })
            .collect();
        let mut m = Mixer::new(FRAME);
        let mut lim = Limiter::new();
        let mut out = vec![0i16; FRAME];
        // The listener mix: accumulate all, limit once.
        g.bench_function(BenchmarkId::new("full_mix", n), |b| {
            b.iter(|| {
                m.clear();
                for t in &talkers {
                    m.add(black_box(t));
                }
                m.render(&mut lim, &mut out);
            })
        });
        // Plus every talker's mix-minus (what a mixing tick really does).
        let mut lims = vec![Limiter::new(); n];
        g.bench_function(BenchmarkId::new("full_mix_plus_mix_minus", n), |b| {
            b.iter(|| {
                m.clear();
                for t in &talkers {
                    m.add(black_box(t));
                }
                m.render(&mut lim, &mut out);
                for (t, l) in talkers.iter().zip(&mut lims) {
                    m.render_minus(t, l, &mut out);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, opus, resample, g711, mix);
criterion_main!(benches);
