//! A talk group's media, one tick (20 ms) at a time: pass one talker's Opus
//! through unchanged, or mix several and encode the mix **once** for every
//! listener, with a private mix-minus encode only for each active talker.
//!
//! Sans-IO: the group actor pushes talker packets as they arrive and calls
//! [`MixGroup::tick`] every 20 ms; it then stamps the returned packets with
//! each listener's [`OutboundClock`](crate::passthrough::OutboundClock) and
//! sends them. Listener count does not change the work done here.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::inbound::{FRAME, FrameKind, InboundStream, RATE};
use crate::jitter::{JitterConfig, PushOutcome};
use crate::limiter::Limiter;
use crate::mixer::Mixer;
use crate::opus::{Application, Encoder};
use crate::passthrough::{Route, RouteSelector, Source};
use crate::pcm::Channels;

/// Tuning for a [`MixGroup`].
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    /// Jitter buffer tuning for each talker.
    pub jitter: JitterConfig,
    /// Opus complexity of the mix encoders (0..=10).
    pub complexity: i32,
    /// Opus bitrate of the mix encoders (bit/s).
    pub bitrate: i32,
    /// Whether mix encoders add in-band FEC.
    pub fec: bool,
    /// Most talkers the group accepts at once (bounds memory).
    pub max_talkers: usize,
    /// Ticks with a single talker before leaving the mix.
    pub hold_ticks: u32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            jitter: JitterConfig::default(),
            complexity: 5,
            bitrate: 32_000,
            fec: true,
            max_talkers: 16,
            hold_ticks: 5,
        }
    }
}

/// One packet to send, before its outer header is stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutPacket {
    /// Where the audio comes from (for [`OutboundClock::stamp`](crate::passthrough::OutboundClock::stamp)).
    pub source: Source,
    /// Timestamp in that source's clock.
    pub src_ts: u32,
    /// Duration in 48 kHz samples.
    pub samples: u32,
    /// The Opus payload (unchanged talker packet, or an encoded mix).
    pub payload: Bytes,
}

/// What one tick produced.
#[derive(Debug)]
pub struct TickOutput<'a> {
    /// The route taken this tick.
    pub route: Route,
    /// Packets for every listener (and every talker not listed in `to_talkers`).
    pub to_listeners: &'a [OutPacket],
    /// Talkers that get something else: their mix-minus, or nothing (`None`:
    /// the only talker in pass-through does not hear itself).
    pub to_talkers: &'a [(u32, Option<OutPacket>)],
    /// This tick's listener audio as 48 kHz mono PCM, for listeners that
    /// need another codec (G.711, PCM): transcode it once per format.
    pub listener_pcm: &'a [i16],
}

struct Talker {
    id: u32,
    inbound: InboundStream,
    pcm: Vec<i16>,
    active: bool,
    /// Mix-minus encoder, only while this talker is being mixed: ~32 KB of
    /// libopus state that idle talkers should not hold.
    encoder: Option<Encoder>,
    limiter: Limiter,
}

/// A group's media state. See the module docs.
pub struct MixGroup {
    cfg: GroupConfig,
    talkers: Vec<Talker>,
    selector: RouteSelector,
    mixer: Mixer,
    encoder: Encoder,
    limiter: Limiter,
    listener_pcm: Vec<i16>,
    prev_pcm: Vec<i16>,
    scratch: Vec<i16>,
    mix_ts: u32,
    to_listeners: Vec<OutPacket>,
    to_talkers: Vec<(u32, Option<OutPacket>)>,
    active_ids: Vec<u32>,
    encodes: u64,
    /// The tick of the caller's coming 20 ms was already run, early ([`MixGroup::tick_early`]).
    ahead: bool,
}

impl std::fmt::Debug for MixGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixGroup")
            .field("talkers", &self.talkers.len())
            .field("route", &self.selector.route())
            .finish_non_exhaustive()
    }
}

fn new_encoder(cfg: &GroupConfig) -> Result<Encoder> {
    let mut e = Encoder::new(RATE, Channels::Mono, Application::Voip)?;
    e.set_complexity(cfg.complexity)?;
    e.set_bitrate(cfg.bitrate)?;
    e.set_inband_fec(cfg.fec, 10)?;
    Ok(e)
}

impl MixGroup {
    /// An empty group (48 kHz mono, 20 ms ticks).
    pub fn new(cfg: GroupConfig) -> Result<Self> {
        Ok(Self {
            encoder: new_encoder(&cfg)?,
            talkers: Vec::with_capacity(cfg.max_talkers),
            selector: RouteSelector::new(cfg.hold_ticks),
            mixer: Mixer::new(FRAME),
            limiter: Limiter::new(),
            listener_pcm: vec![0; FRAME],
            prev_pcm: vec![0; FRAME],
            scratch: vec![0; FRAME],
            mix_ts: 0,
            to_listeners: Vec::with_capacity(8),
            to_talkers: Vec::with_capacity(cfg.max_talkers),
            active_ids: Vec::with_capacity(cfg.max_talkers),
            encodes: 0,
            ahead: false,
            cfg,
        })
    }

    /// Registers a talker (a party that may send audio). Errors when full.
    pub fn add_talker(&mut self, id: u32) -> Result<()> {
        if self.talkers.iter().any(|t| t.id == id) {
            return Ok(());
        }
        if self.talkers.len() >= self.cfg.max_talkers {
            return Err(Error::GroupFull(self.cfg.max_talkers));
        }
        self.talkers.push(Talker {
            id,
            inbound: InboundStream::new(self.cfg.jitter, Channels::Mono)?,
            pcm: vec![0; FRAME],
            active: false,
            encoder: None,
            limiter: Limiter::new(),
        });
        Ok(())
    }

    /// Forgets a talker.
    pub fn remove_talker(&mut self, id: u32) {
        self.talkers.retain(|t| t.id != id);
    }

    /// Number of registered talkers.
    pub fn talkers(&self) -> usize {
        self.talkers.len()
    }

    /// Opus encodes done so far (for tests and metrics: proves the sharing).
    pub fn encodes(&self) -> u64 {
        self.encodes
    }

    /// Packets one talker played in the last tick (for latency measurement by callers).
    pub fn popped(&self, id: u32) -> Option<&[crate::inbound::Popped]> {
        self.talkers
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.inbound.popped())
    }

    /// Forgets a talker's buffered audio up to `ts`: its packets were forwarded to listeners on
    /// arrival (direct pass-through), so when the group starts mixing it continues from there
    /// instead of playing them a second time.
    pub fn skip_talker_through(&mut self, id: u32, ts: u32) -> usize {
        self.talkers
            .iter_mut()
            .find(|t| t.id == id)
            .map_or(0, |t| t.inbound.skip_through(ts))
    }

    /// Jitter statistics of one talker.
    pub fn talker_stats(&self, id: u32) -> Option<crate::jitter::JitterStats> {
        self.talkers
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.inbound.stats())
    }

    /// Feeds a talker's packet; unknown talkers are ignored (`None`).
    pub fn push(
        &mut self,
        id: u32,
        ts: u32,
        payload: Bytes,
        arrival_us: u64,
    ) -> Option<PushOutcome> {
        let t = self.talkers.iter_mut().find(|t| t.id == id)?;
        Some(t.inbound.push(ts, payload, arrival_us))
    }

    /// Bytes this group holds now: its own heap (packet arenas included) plus every libopus state
    /// (talkers hold an encoder only while they are being mixed).
    pub fn memory_bytes(&self) -> usize {
        let dec = crate::opus::Decoder::state_bytes(Channels::Mono);
        let enc = Encoder::state_bytes(Channels::Mono);
        let talkers: usize = self
            .talkers
            .iter()
            .map(|t| {
                std::mem::size_of::<Talker>()
                    + t.inbound.heap_bytes()
                    + t.pcm.capacity() * 2
                    + dec
                    + t.encoder.as_ref().map_or(0, |e| enc + e.heap_bytes())
            })
            .sum();
        std::mem::size_of::<Self>()
            + enc
            + self.encoder.heap_bytes()
            + talkers
            + (self.talkers.capacity() - self.talkers.len()) * std::mem::size_of::<Talker>()
            + self.mixer.heap_bytes()
            + (self.listener_pcm.capacity() + self.prev_pcm.capacity() + self.scratch.capacity())
                * 2
            + self.to_listeners.capacity() * std::mem::size_of::<OutPacket>()
            + self.to_talkers.capacity() * std::mem::size_of::<(u32, Option<OutPacket>)>()
            + self.active_ids.capacity() * 4
    }

    /// Whether the next [`tick`](Self::tick) can run now without waiting for anyone: the group
    /// is mixing and every talker in the last mix has its next 20 ms in hand. The caller then
    /// ticks at once instead of at its clock's next 20 ms (the phase between the talkers'
    /// arrivals and that clock is arbitrary), and keeps the clock's tick as the deadline that
    /// conceals a talker who is late or has stopped. A talker not in the last mix is not
    /// waited for: it joins at whichever tick comes.
    pub fn ready(&self, now_us: u64) -> bool {
        self.selector.route() == Route::Mix
            && self.talkers.iter().any(|t| t.active)
            && self
                .talkers
                .iter()
                .filter(|t| t.active)
                .all(|t| t.inbound.ready(now_us))
    }

    /// Runs the tick of the caller's coming 20 ms now if the audio for it is here
    /// ([`ready`](Self::ready)) and it has not run yet; `None` otherwise. Call it on every
    /// talker packet: a mixed packet then leaves when the later talker's audio arrives, not up
    /// to 20 ms later at the caller's clock. Not at the clock's tick: mixing the next 20 ms
    /// there from audio already waiting locks the mix to the clock's phase (every arrival then
    /// finds its 20 ms made and waits for the next tick).
    ///
    /// Invariant: each 20 ms of the caller's clock runs exactly one tick, early here or at its
    /// deadline in `tick_due`, so the output timeline advances one frame per 20 ms (never
    /// more than one frame ahead of the clock) and stays contiguous.
    pub fn tick_early(&mut self, now_us: u64) -> Result<Option<TickOutput<'_>>> {
        if self.ahead || !self.ready(now_us) {
            return Ok(None);
        }
        self.ahead = true;
        self.tick(now_us).map(Some)
    }

    /// The caller's 20 ms clock: its tick, unless [`tick_early`](Self::tick_early) already ran
    /// it (`None`). Run at the deadline, a late or stopped talker is concealed (or left out)
    /// as in [`tick`](Self::tick).
    pub fn tick_due(&mut self, now_us: u64) -> Result<Option<TickOutput<'_>>> {
        if std::mem::take(&mut self.ahead) {
            return Ok(None);
        }
        self.tick(now_us).map(Some)
    }

    /// Runs one 20 ms tick: pulls every talker's next frame, picks the route,
    /// and produces what to send.
    pub fn tick(&mut self, now_us: u64) -> Result<TickOutput<'_>> {
        self.to_listeners.clear();
        self.to_talkers.clear();
        self.active_ids.clear();
        // Mixing (on arrival, see `tick_early`), a frame standing behind the one played is
        // pure wait and a skip only shortens it (the mix has its own timeline); passing
        // through, a skip would be a gap in the listeners' timestamps.
        let slack = if self.selector.route() == Route::Mix {
            0
        } else {
            2
        };
        for t in &mut self.talkers {
            t.inbound.set_trim_slack(slack);
            let kind = t.inbound.pull(now_us, &mut t.pcm)?;
            t.active = kind != FrameKind::Silence;
            if t.active {
                self.active_ids.push(t.id);
            }
        }
        let was_mixing = self.selector.route() == Route::Mix;
        let route = self.selector.update(&self.active_ids);
        match route {
            Route::Silent => {
                self.listener_pcm.fill(0);
                for t in &mut self.talkers {
                    t.encoder = None;
                }
            }
            Route::PassThrough(id) => {
                let t = self
                    .talkers
                    .iter_mut()
                    .find(|t| t.id == id)
                    .expect("route names an active talker");
                for p in t.inbound.popped() {
                    self.to_listeners.push(OutPacket {
                        source: Source::Talker(id),
                        src_ts: p.ts,
                        samples: p.samples,
                        payload: p.payload.clone(),
                    });
                }
                // Decoded anyway (for the switch to mixing and for transcoding listeners).
                self.listener_pcm.copy_from_slice(&t.pcm);
                self.to_talkers.push((id, None));
                for t in &mut self.talkers {
                    t.encoder = None;
                }
            }
            Route::Mix => {
                self.mixer.clear();
                for t in self.talkers.iter().filter(|t| t.active) {
                    self.mixer.add(&t.pcm);
                }
                self.mixer.render(&mut self.limiter, &mut self.listener_pcm);
                if !was_mixing {
                    // Prime the encoder with what listeners heard last tick,
                    // so the first mixed packet continues it instead of
                    // starting from a cold state (a click).
                    self.encoder.reset()?;
                    self.encoder.encode(&self.prev_pcm)?;
                    self.encodes += 1;
                }
                let payload = self.encoder.encode(&self.listener_pcm)?;
                self.encodes += 1;
                self.to_listeners.push(OutPacket {
                    source: Source::Mix,
                    src_ts: self.mix_ts,
                    samples: FRAME as u32,
                    payload,
                });
                for t in &mut self.talkers {
                    if !t.active {
                        t.encoder = None;
                        continue;
                    }
                    let encoder = match &mut t.encoder {
                        Some(e) => e,
                        slot => {
                            // New to the mix: prime with what it heard last tick.
                            let mut e = new_encoder(&self.cfg)?;
                            e.encode(&self.prev_pcm)?;
                            self.encodes += 1;
                            slot.insert(e)
                        }
                    };
                    self.mixer
                        .render_minus(&t.pcm, &mut t.limiter, &mut self.scratch);
                    let payload = encoder.encode(&self.scratch)?;
                    self.encodes += 1;
                    self.to_talkers.push((
                        t.id,
                        Some(OutPacket {
                            source: Source::Mix,
                            src_ts: self.mix_ts,
                            samples: FRAME as u32,
                            payload,
                        }),
                    ));
                }
            }
        }
        self.prev_pcm.copy_from_slice(&self.listener_pcm);
        self.mix_ts = self.mix_ts.wrapping_add(FRAME as u32);
        Ok(TickOutput {
            route,
            to_listeners: &self.to_listeners,
            to_talkers: &self.to_talkers,
            listener_pcm: &self.listener_pcm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opus::Decoder;
    use crate::passthrough::{OutHeader, OutboundClock};
    use crate::signal::{max_curvature, sine, tone_amplitude};

    const A: u32 = 1;
    const B: u32 = 2;

    fn talker_packets(freq: f64, secs: f64) -> Vec<Bytes> {
        let mut enc = Encoder::new(RATE, Channels::Mono, Application::Voip).unwrap();
        enc.set_bitrate(32_000).unwrap();
        sine(RATE, freq, 0.3, secs)
            .chunks_exact(FRAME)
            .map(|f| enc.encode(f).unwrap())
            .collect()
    }

    /// Everything one listener (and talker A) receives, stamped and decoded.
    struct Capture {
        clock: OutboundClock,
        headers: Vec<OutHeader>,
        payloads: Vec<Bytes>,
        sources: Vec<(Source, u32)>,
        routes: Vec<Route>,
        decoder: Decoder,
        pcm: Vec<i16>,
    }

    impl Capture {
        fn new() -> Self {
            Self {
                clock: OutboundClock::new(77, 1000, 4242),
                headers: Vec::new(),
                payloads: Vec::new(),
                sources: Vec::new(),
                routes: Vec::new(),
                decoder: Decoder::new(RATE, Channels::Mono).unwrap(),
                pcm: Vec::new(),
            }
        }

        fn take(&mut self, p: &OutPacket, now: u64) {
            self.headers
                .push(self.clock.stamp(p.source, p.src_ts, p.samples, now));
            self.payloads.push(p.payload.clone());
            self.sources.push((p.source, p.src_ts));
            let mut buf = vec![0i16; p.samples as usize];
            self.decoder
                .decode(Some(&p.payload), false, &mut buf)
                .unwrap();
            self.pcm.extend_from_slice(&buf);
        }
    }

    /// A talks 0..3 s (440 Hz), B talks 1..2 s (1000 Hz): pass, mix, pass.
    fn run_scenario() -> (MixGroup, Capture, Capture, Vec<Bytes>) {
        let mut g = MixGroup::new(GroupConfig::default()).unwrap();
        g.add_talker(A).unwrap();
        g.add_talker(B).unwrap();
        let pa = talker_packets(440.0, 3.0);
        let pb = talker_packets(1000.0, 1.0);
        let mut listener = Capture::new();
        let mut talker_a = Capture::new();
        for tick in 0..150u32 {
            let now = u64::from(tick) * 20_000;
            // Different, unrelated source clocks for A and B.
            g.push(A, 90_000 + tick * 960, pa[tick as usize].clone(), now);
            if (50..100).contains(&tick) {
                g.push(
                    B,
                    7_777_000 + (tick - 50) * 960,
                    pb[(tick - 50) as usize].clone(),
                    now,
                );
            }
            let out = g.tick(now).unwrap();
            listener.routes.push(out.route);
            for p in out.to_listeners {
                listener.take(p, now);
            }
            match out.to_talkers.iter().find(|(id, _)| *id == A) {
                Some((_, Some(p))) => talker_a.take(p, now),
                Some((_, None)) => {}
                None => out.to_listeners.iter().for_each(|p| talker_a.take(p, now)),
            }
        }
        (g, listener, talker_a, pa)
    }

    #[test]
    fn routes_follow_the_talkers() {
        let (_, l, _, _) = run_scenario();
        assert_eq!(l.routes[10], Route::PassThrough(A));
        assert_eq!(l.routes[75], Route::Mix);
        assert_eq!(l.routes[130], Route::PassThrough(A));
        let switches = l.routes.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(switches <= 3, "{switches} switches: no flapping");
    }

    #[test]
    fn pass_through_is_bit_identical_with_continuous_timestamps() {
        let (_, l, _, pa) = run_scenario();
        // Every pass-through packet is A's packet for that instant, byte for byte.
        let mut ks = Vec::new();
        for (payload, (source, src_ts)) in l.payloads.iter().zip(&l.sources) {
            if *source == Source::Talker(A) {
                let k = ((src_ts - 90_000) / 960) as usize;
                assert_eq!(payload, &pa[k], "packet {k} changed");
                ks.push(k);
            }
        }
        let pass_ticks = l
            .routes
            .iter()
            .filter(|r| matches!(r, Route::PassThrough(_)))
            .count();
        assert!(pass_ticks > 80);
        assert_eq!(
            ks.len(),
            pass_ticks,
            "one unchanged packet per pass-through tick"
        );
        assert!(ks.windows(2).all(|w| w[1] > w[0]), "in order");
        // Across pass → mix → pass: timestamps +960 and sequence +1 every packet.
        for w in l.headers.windows(2) {
            assert_eq!(w[1].timestamp, w[0].timestamp.wrapping_add(960), "{w:?}");
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].ssrc, 77);
            assert!(!w[1].marker);
        }
        assert_eq!(l.headers.len(), l.payloads.len());
    }

    #[test]
    fn listeners_share_one_encode_and_talkers_get_their_own() {
        let (g, l, _, _) = run_scenario();
        let mix_ticks = l.routes.iter().filter(|r| **r == Route::Mix).count() as u64;
        assert!(mix_ticks >= 50);
        // Per mixed tick: 1 shared listener encode + 1 mix-minus per active
        // talker (2, or 1 during the hold), plus 3 primings on entering the
        // mix; none while passing through. The listener count plays no part.
        assert!(g.encodes() <= mix_ticks * 3 + 3, "encodes {}", g.encodes());
        assert!(g.encodes() >= mix_ticks * 2 + 3, "encodes {}", g.encodes());
    }

    #[test]
    fn mix_has_both_voices_and_mix_minus_excludes_own() {
        let (_, l, a, _) = run_scenario();
        // Listener during the mix (ticks 60..95 after the jitter delay).
        let mix = &l.pcm[60 * FRAME..95 * FRAME];
        assert!(tone_amplitude(mix, RATE, 440.0) > 0.2, "A in the mix");
        assert!(tone_amplitude(mix, RATE, 1000.0) > 0.2, "B in the mix");
        // Talker A's own feed during the mix: B only. A's feed is silent before,
        // so its capture starts at the mix.
        let own = &a.pcm[10 * FRAME..40 * FRAME];
        assert!(tone_amplitude(own, RATE, 1000.0) > 0.2, "A hears B");
        let leak = tone_amplitude(own, RATE, 440.0);
        assert!(leak < 0.01, "A hears itself: {leak}");
    }

    #[test]
    fn switches_are_click_free() {
        let (_, l, _, _) = run_scenario();
        let steady = max_curvature(&l.pcm[20 * FRAME..45 * FRAME])
            .max(max_curvature(&l.pcm[60 * FRAME..95 * FRAME]));
        for (i, w) in l.routes.windows(2).enumerate() {
            if w[0] != w[1] && w[0] != Route::Silent {
                let at = (i + 1) * FRAME;
                let around = &l.pcm[at - FRAME..at + FRAME];
                let step = max_curvature(around);
                assert!(
                    step <= steady * 2,
                    "switch at tick {}: step {step} vs steady {steady}",
                    i + 1
                );
            }
        }
    }

    /// What a caller of `tick_early`/`tick_due` saw: per tick run, when, for which 20 ms of
    /// its clock, the route, the mixed packet's timestamp and the newest arrival in it.
    struct Paced {
        at: u64,
        slot: u64,
        route: Route,
        mix_ts: Option<u32>,
        newest: Option<u64>,
        oldest: Option<u64>,
    }

    /// Drives a group the way a link does: talker packets arrive at their own phases of a
    /// 20 ms caller clock (`arrivals`: µs, talker, packet index), each followed by
    /// `tick_early`; the clock's ticks at 20 ms multiples run `tick_due`.
    fn paced(arrivals: &mut [(u64, u32, usize)], ticks: u64) -> Vec<Paced> {
        let mut g = MixGroup::new(GroupConfig::default()).unwrap();
        g.add_talker(A).unwrap();
        g.add_talker(B).unwrap();
        let packets = [talker_packets(440.0, 3.0), talker_packets(1000.0, 3.0)];
        arrivals.sort_unstable();
        let mut arrived = std::collections::HashMap::new();
        let mut runs = Vec::new();
        // One tick run (early or due), with what it played.
        let mut run = |g: &mut MixGroup, early: bool, at: u64, slot: u64, arrived: &HashMap| {
            let out = if early {
                g.tick_early(at).unwrap()
            } else {
                g.tick_due(at).unwrap()
            };
            let Some(out) = out else { return };
            let route = out.route;
            let mix_ts = out
                .to_listeners
                .iter()
                .find(|p| p.source == Source::Mix)
                .map(|p| p.src_ts);
            let played = || {
                [A, B].into_iter().flat_map(|id| {
                    g.popped(id)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(move |p| arrived.get(&(id, p.ts)).copied())
                })
            };
            let (newest, oldest) = (played().max(), played().min());
            runs.push(Paced {
                at,
                slot,
                route,
                mix_ts,
                newest,
                oldest,
            });
        };
        let mut next = 0;
        for k in 1..=ticks {
            let clock = k * 20_000;
            while next < arrivals.len() && arrivals[next].0 < clock {
                let (at, id, i) = arrivals[next];
                let ts = i as u32 * 960;
                arrived.insert((id, ts), at);
                g.push(id, ts, packets[(id - 1) as usize][i].clone(), at);
                run(&mut g, true, at, k, &arrived);
                next += 1;
            }
            run(&mut g, false, clock, k, &arrived);
        }
        runs
    }

    type HashMap = std::collections::HashMap<(u32, u32), u64>;

    /// Talker A at `phase_a` µs into each 20 ms, B at `phase_b` with ±`wobble` ms of jitter;
    /// both talk for `frames_a` / `frames_b` packets.
    fn arrivals(
        phase_a: u64,
        phase_b: u64,
        wobble: i64,
        frames_a: usize,
        frames_b: usize,
    ) -> Vec<(u64, u32, usize)> {
        let mut v = Vec::new();
        for i in 0..frames_a {
            v.push((20_000 * i as u64 + phase_a, A, i));
        }
        for i in 0..frames_b {
            // A fixed pseudo-random wobble in -wobble..=wobble ms.
            let j = ((i as i64 * 7919) % (2 * wobble + 1)) - wobble;
            v.push(((20_000 * i as i64 + phase_b as i64 + j * 1000) as u64, B, i));
        }
        v
    }

    /// Every run is the next 20 ms of the caller's clock (none skipped, none twice, never two
    /// ahead), and mixed packets carry the mix's timestamps one frame apart.
    fn assert_one_tick_per_20ms(runs: &[Paced]) {
        for (i, r) in runs.iter().enumerate() {
            assert_eq!(r.slot, i as u64 + 1, "run {i} at {} µs", r.at);
            assert!(r.at <= r.slot * 20_000, "run {i} after its deadline");
            if let Some(ts) = r.mix_ts {
                assert_eq!(ts, i as u32 * 960, "mix timestamp of run {i}");
            }
        }
    }

    #[test]
    fn mixes_when_the_later_talker_arrives_not_at_the_tick() {
        // A 3 ms and B 14 ms (±2) into each 20 ms of the clock.
        let runs = paced(&mut arrivals(3_001, 14_001, 2, 100, 100), 110);
        assert_one_tick_per_20ms(&runs);
        let mixed: Vec<&Paced> = runs.iter().filter(|r| r.route == Route::Mix).collect();
        assert!(mixed.len() >= 90, "{} mixed", mixed.len());
        for r in &mixed[1..mixed.len() - 6] {
            // Made the moment the later talker's packet came in: no wait for the clock.
            assert_eq!(r.newest, Some(r.at), "mix at {} µs", r.at);
        }
    }

    #[test]
    fn a_talker_arriving_around_the_tick_waits_at_most_one_frame() {
        // B's packets land either side of the clock's tick (19 ms ±2): some miss the early
        // mix and are played one frame later, never more.
        let runs = paced(&mut arrivals(5_001, 19_001, 2, 100, 100), 110);
        assert_one_tick_per_20ms(&runs);
        let mut early = 0;
        // (At the end, when A has stopped, B's last packets wait for the deadline.)
        for r in runs
            .iter()
            .filter(|r| r.route == Route::Mix && r.slot < 100)
        {
            let Some(newest) = r.newest else { continue };
            // Within the jitter target (20 ms) of the newest audio in it.
            assert!(
                r.at - newest <= 20_000,
                "mix at {} µs, newest {newest}",
                r.at
            );
            early += usize::from(r.at == newest);
        }
        assert!(early >= 80, "{early} mixed on arrival");
    }

    #[test]
    fn a_frame_standing_in_both_talkers_is_trimmed_while_mixing() {
        // Both talkers' second packets came with their first: from then on each has a frame
        // standing behind the one the mix plays (20 ms more wait on everything).
        let mut v = arrivals(3_001, 14_001, 0, 100, 100);
        for a in &mut v {
            a.0 = a.0.saturating_sub(20_000).max(a.0 % 20_000);
        }
        let runs = paced(&mut v, 110);
        assert_one_tick_per_20ms(&runs);
        let wait = |r: &Paced| r.oldest.map(|o| r.at - o);
        assert!(
            runs[3..8].iter().all(|r| wait(r) >= Some(20_000)),
            "standing at first: {:?}",
            runs[..12]
                .iter()
                .map(|r| (r.at, r.route, wait(r)))
                .collect::<Vec<_>>()
        );
        // Trimmed within a second: A's packet waits only for B's (11 ms).
        for r in &runs[60..95] {
            assert!(wait(r) <= Some(12_000), "at {} µs: {:?}", r.at, wait(r));
        }
    }

    #[test]
    fn a_talker_who_stops_does_not_stall_the_mix_past_the_tick() {
        // B stops after 40 packets, A goes on: the clock's tick carries the mix from there.
        let runs = paced(&mut arrivals(3_001, 14_001, 0, 100, 40), 110);
        assert_one_tick_per_20ms(&runs);
        let routes: Vec<Route> = runs.iter().map(|r| r.route).collect();
        assert!(routes[20..40].iter().all(|r| *r == Route::Mix));
        assert!(routes[60..100].iter().all(|r| *r == Route::PassThrough(A)));
    }

    #[test]
    fn group_is_bounded_and_small() {
        let mut g = MixGroup::new(GroupConfig {
            max_talkers: 2,
            ..GroupConfig::default()
        })
        .unwrap();
        g.add_talker(1).unwrap();
        g.add_talker(2).unwrap();
        assert!(matches!(g.add_talker(3), Err(Error::GroupFull(2))));
        assert_eq!(g.push(9, 0, Bytes::new(), 0), None);
        assert!(g.memory_bytes() < 1 << 20);
        g.remove_talker(1);
        assert_eq!(g.talkers(), 1);
    }
}
