//! Engine-level figures: pass-through fan-out, a mixing group with many
//! listeners (marginal listener cost), jitter buffer push+pop.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use media::Channels;
use media::group::{GroupConfig, MixGroup};
use media::jitter::{JitterBuffer, JitterConfig};
use media::opus::{Application, Encoder};
use media::passthrough::{OutboundClock, Route, Source};
use media::signal::speechlike;

const FRAME: usize = 960;

fn packets(secs: f64, seed: usize) -> Vec<Bytes> {
    let s = speechlike(48_000, secs + 0.1);
    let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
    enc.set_bitrate(32_000).unwrap();
    s[seed * 131..]
        .chunks_exact(FRAME)
        .map(|f| enc.encode(f).unwrap())
        .collect()
}

fn listeners(n: usize) -> Vec<OutboundClock> {
    (0..n)
        .map(|i| OutboundClock::new(0x1000 + i as u32, (i * 7) as u16, (i * 13) as u32))
        .collect()
}

/// What the bridge does per listener per packet: stamp its header, write the
/// RTP header bytes, and queue the shared payload (a refcount bump).
#[inline]
fn send_to_all(
    clocks: &mut [OutboundClock],
    source: Source,
    src_ts: u32,
    samples: u32,
    now: u64,
    payload: &Bytes,
    out: &mut Vec<([u8; 12], Bytes)>,
) {
    out.clear();
    for c in clocks {
        let h = c.stamp(source, src_ts, samples, now);
        let mut hdr = [0u8; 12];
        h.write_rtp(111, &mut hdr);
        out.push((hdr, payload.clone()));
    }
}

fn fanout(c: &mut Criterion) {
    let pkts = packets(1.0, 0);
    let mut g = c.benchmark_group("passthrough_fanout");
    for n in [1usize, 1000] {
        let mut clocks = listeners(n);
        let mut out = Vec::with_capacity(n);
        let mut i = 0u32;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("listeners", n), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let p = &pkts[i as usize % pkts.len()];
                send_to_all(
                    &mut clocks,
                    Source::Talker(1),
                    i.wrapping_mul(960),
                    960,
                    u64::from(i) * 20_000,
                    p,
                    &mut out,
                );
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn mixing_group(c: &mut Criterion) {
    let talker_pkts: Vec<Vec<Bytes>> = (0..4).map(|k| packets(2.0, k)).collect();
    let mut g = c.benchmark_group("mixing_group_4_talkers");
    g.sample_size(20);
    for n in [0usize, 1000] {
        let mut group = MixGroup::new(GroupConfig::default()).unwrap();
        for id in 0..4 {
            group.add_talker(id).unwrap();
        }
        let mut clocks = listeners(n);
        let mut talker_clocks = listeners(4);
        let mut out = Vec::with_capacity(n);
        let mut tick = 0u32;
        // Warm up into the mixing route, so the figure is the mixing cost.
        for _ in 0..10 {
            tick += 1;
            let now = u64::from(tick) * 20_000;
            for (id, pk) in talker_pkts.iter().enumerate() {
                group.push(
                    id as u32,
                    tick.wrapping_mul(960),
                    pk[tick as usize].clone(),
                    now,
                );
            }
            group.tick(now).unwrap();
        }
        assert_eq!(
            group.tick(u64::from(tick) * 20_000).unwrap().route,
            Route::Mix
        );
        g.bench_function(BenchmarkId::new("tick_with_listeners", n), |b| {
            b.iter(|| {
                tick += 1;
                let now = u64::from(tick) * 20_000;
                for (id, pk) in talker_pkts.iter().enumerate() {
                    let p = pk[tick as usize % pk.len()].clone();
                    group.push(id as u32, tick.wrapping_mul(960), p, now);
                }
                let o = group.tick(now).unwrap();
                for p in o.to_listeners {
                    send_to_all(
                        &mut clocks,
                        p.source,
                        p.src_ts,
                        p.samples,
                        now,
                        &p.payload,
                        &mut out,
                    );
                }
                for (i, (_, p)) in o.to_talkers.iter().enumerate() {
                    if let Some(p) = p {
                        talker_clocks[i].stamp(p.source, p.src_ts, p.samples, now);
                    }
                }
                black_box(o.route)
            })
        });
    }
    // The marginal listener on its own: what each extra listener adds to a
    // mixing tick (stamp + header + share the one encoded packet).
    let mut clocks = listeners(1000);
    let mut out = Vec::with_capacity(1000);
    let mix_pkt = talker_pkts[0][0].clone();
    let mut tick = 0u32;
    g.sample_size(100);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("listener_fanout_1000", |b| {
        b.iter(|| {
            tick = tick.wrapping_add(1);
            send_to_all(
                &mut clocks,
                Source::Mix,
                tick.wrapping_mul(960),
                960,
                u64::from(tick) * 20_000,
                &mix_pkt,
                &mut out,
            );
            black_box(out.len())
        })
    });
    g.finish();
}

fn jitter(c: &mut Criterion) {
    let pkts = packets(1.0, 0);
    let mut g = c.benchmark_group("jitter_buffer");
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut i = 0u32;
    g.bench_function("push_pop_in_order", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let now = u64::from(i) * 20_000;
            jb.push(
                i.wrapping_mul(960),
                pkts[i as usize % pkts.len()].clone(),
                now,
            );
            black_box(jb.pop(now))
        })
    });
    // Pairs swapped: every other packet arrives out of order.
    let mut jb = JitterBuffer::new(JitterConfig {
        min_depth_ms: 60,
        ..JitterConfig::default()
    });
    let mut k = 0u32;
    g.throughput(Throughput::Elements(2));
    g.bench_function("push_pop_reordered_pair", |b| {
        b.iter(|| {
            k = k.wrapping_add(2);
            let now = u64::from(k) * 20_000;
            let (a, bb) = (k.wrapping_mul(960), (k + 1).wrapping_mul(960));
            jb.push(bb, pkts[(k as usize + 1) % pkts.len()].clone(), now);
            jb.push(a, pkts[k as usize % pkts.len()].clone(), now);
            black_box(jb.pop(now));
            black_box(jb.pop(now + 20_000))
        })
    });
    g.finish();
}

criterion_group!(benches, fanout, mixing_group, jitter);
criterion_main!(benches);
