//! Adaptive jitter buffer for one inbound Opus stream (sans-IO).
//!
//! The owner pushes packets as they arrive (with the RTP timestamp, or the PTT
//! sequence number × 480, in 48 kHz units, and a monotonic arrival time) and
//! pops one item whenever its playout needs more audio. The buffer decides
//! what to play: the next packet, an FEC recovery from the packet after a
//! gap, a concealment (PLC), or nothing (idle between talk bursts).
//!
//! - Target depth follows the RFC 3550 inter-arrival jitter estimate, bounded
//!   by `min_depth_ms..=max_depth_ms`.
//! - Reordered packets are put back in order; duplicates and packets whose
//!   time has already been played are dropped and counted.
//! - FEC is only possible when the packet after a gap is already buffered
//!   when the gap is due, i.e. with a depth of at least two packets.
//! - Memory is bounded: a fixed-capacity queue, and audio beyond
//!   `max_depth_ms` is dropped oldest-first.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::opus_toc;

/// Opus RTP clock: 48 000 ticks per second.
const CLOCK_HZ: u64 = 48_000;
/// A timestamp jump larger than this (either way) is a new stream, not jitter.
const RESYNC_TICKS: u64 = 2 * CLOCK_HZ;

/// Tuning for a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Smallest target depth (ms). One 20 ms packet is the usual floor.
    pub min_depth_ms: u32,
    /// Largest target depth and hard cap on buffered audio (ms).
    pub max_depth_ms: u32,
    /// Maximum packets held, whatever their duration.
    pub capacity: usize,
    /// Concealed 20 ms frames in a row, with nothing buffered, after which
    /// the stream is taken to have stopped (end of a talk burst) and goes idle.
    pub max_conceal_run: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_depth_ms: 20,
            max_depth_ms: 200,
            capacity: 64,
            max_conceal_run: 5,
        }
    }
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for playout.
    Buffered,
    /// Same timestamp already queued or played; dropped.
    Duplicate,
    /// Its playout time has passed; dropped.
    Late,
    /// Not a valid Opus packet; dropped.
    Malformed,
    /// Timestamp jumped far away: buffer flushed and restarted on this packet.
    Resynced,
}

/// What the owner should render next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet; it covers `samples` (48 kHz) of audio.
    Packet {
        /// Its timestamp as it came in (48 kHz).
        ts: u32,
        /// The Opus packet, unchanged.
        payload: Bytes,
        /// Its duration in 48 kHz samples.
        samples: u32,
    },
    /// A packet was lost but the one after it is here: decode `next` with
    /// `fec = true` for `samples` to recover the lost audio from its in-band FEC.
    Fec {
        /// The packet following the gap (it will also be played normally next).
        next: Bytes,
        /// Duration of the lost audio to recover.
        samples: u32,
    },
    /// Nothing to decode: conceal `samples` of audio (decode with no packet).
    Conceal {
        /// Duration to conceal, a multiple of 2.5 ms.
        samples: u32,
    },
    /// Not playing (buffering, or between talk bursts): render silence, don't decode.
    Idle,
}

impl Playout {
    /// The 48 kHz samples this step renders; `None` when idle.
    pub fn samples(&self) -> Option<u32> {
        match self {
            Playout::Packet { samples, .. }
            | Playout::Fec { samples, .. }
            | Playout::Conceal { samples } => Some(*samples),
            Playout::Idle => None,
        }
    }
}

/// Counters and gauges for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Audio currently buffered (ms).
    pub depth_ms: u32,
    /// Current target depth (ms).
    pub target_ms: u32,
    /// RFC 3550 inter-arrival jitter estimate (µs).
    pub jitter_us: u32,
    /// Packets accepted.
    pub received: u64,
    /// Packets dropped because their time had passed.
    pub late: u64,
    /// Duplicate packets dropped.
    pub duplicates: u64,
    /// Malformed packets dropped.
    pub malformed: u64,
    /// Packets never received by their playout time (gaps).
    pub lost: u64,
    /// Frames rendered by concealment (PLC), including underruns.
    pub concealed: u64,
    /// Frames recovered from in-band FEC.
    pub fec: u64,
    /// Packets discarded to bring latency back down, or to respect the caps.
    pub dropped: u64,
    /// Times the stream restarted (idle → playing, or a timestamp jump).
    pub resyncs: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    ts: u64,
    samples: u32,
    payload: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for enough audio to start.
    Buffering,
    /// Playing out; `next_ts` is the timestamp due next.
    Playing,
}

/// An adaptive jitter buffer for one stream. See the module docs.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    queue: VecDeque<Entry>,
    state: State,
    /// Highest extended timestamp seen (anchors 32-bit wrap-around).
    highest: Option<u64>,
    next_ts: u64,
    /// Duration of the last played packet: the size of a concealment.
    last_samples: u32,
    /// When the oldest queued packet arrived (µs), to start short bursts.
    first_arrival_us: u64,
    /// RFC 3550 jitter state: previous transit time (µs) and the estimate (µs, ×16).
    last_transit: Option<i64>,
    jitter_x16: u64,
    conceal_run: u32,
    /// Audio concealed during underruns without advancing the clock. If the
    /// awaited packet turns out lost, this already covered its slot.
    stretch: u32,
    over_target_run: u32,
    /// Frames above target the buffer may stand at before it skips a packet.
    trim_slack: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer with the given tuning; allocates its fixed capacity once.
    pub fn new(cfg: JitterConfig) -> Self {
        let cfg = JitterConfig {
            min_depth_ms: cfg.min_depth_ms.max(1),
            max_depth_ms: cfg.max_depth_ms.max(cfg.min_depth_ms.max(1)),
            capacity: cfg.capacity.max(2),
            max_conceal_run: cfg.max_conceal_run.max(1),
        };
        Self {
            queue: VecDeque::with_capacity(cfg.capacity),
            cfg,
            state: State::Buffering,
            highest: None,
            next_ts: 0,
            last_samples: 960,
            first_arrival_us: 0,
            last_transit: None,
            jitter_x16: 0,
            conceal_run: 0,
            stretch: 0,
            over_target_run: 0,
            trim_slack: 2,
            stats: JitterStats::default(),
        }
    }

    /// Frames above the target depth the buffer may stand at for half a second before it skips
    /// a packet to come back down (default 2). None suits a caller that takes each packet as
    /// it arrives and whose output has its own timeline (a mix made on arrival): a frame that
    /// stands behind the one being played is pure wait, and the skip shortens it. Where
    /// packets pass through with their own timestamps a skip is a gap the listener hears as
    /// one, so keep the slack there. (With two frames, frames a late sender sent back to back
    /// can stand for good: 20-40 ms more on every packet.)
    pub fn set_trim_slack(&mut self, frames: u32) {
        self.trim_slack = frames;
    }

    /// Current statistics.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            depth_ms: self.depth_ms(),
            target_ms: self.target_ms(),
            jitter_us: (self.jitter_x16 / 16) as u32,
            ..self.stats
        }
    }

    /// Packets currently queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the buffer is playing out (as opposed to buffering / idle).
    pub fn is_playing(&self) -> bool {
        self.state == State::Playing
    }

    /// Bytes this buffer holds on the heap (queue slots + payloads), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.queue.capacity() * std::mem::size_of::<Entry>()
            + self.queue.iter().map(|e| e.payload.len()).sum::<usize>()
    }

    /// Target depth in ms: three times the jitter estimate, within the configured bounds.
    pub fn target_ms(&self) -> u32 {
        let jitter_ms = (self.jitter_x16 / 16 / 1000) as u32;
        (3 * jitter_ms).clamp(self.cfg.min_depth_ms, self.cfg.max_depth_ms)
    }

    /// Buffered audio from the playout point to the end of the newest packet (ms).
    pub fn depth_ms(&self) -> u32 {
        let Some(last) = self.queue.back() else {
            return 0;
        };
        let start = match self.state {
            State::Playing => self.next_ts,
            State::Buffering => self.queue.front().map_or(0, |e| e.ts),
        };
        let end = last.ts + u64::from(last.samples);
        (end.saturating_sub(start).saturating_mul(1000) / CLOCK_HZ).min(u64::from(u32::MAX)) as u32
    }

    /// Extends a 32-bit timestamp relative to the highest one seen.
    fn extend(&self, ts: u32) -> Option<u64> {
        let Some(h) = self.highest else {
            // Start high so that early reordering cannot go below zero.
            return Some(u64::from(ts) + (1 << 32));
        };
        let delta = i64::from(ts.wrapping_sub(h as u32) as i32);
        h.checked_add_signed(delta)
    }

    fn reset_to(&mut self, ts: u64) {
        self.stats.dropped += self.queue.len() as u64;
        self.queue.clear();
        self.state = State::Buffering;
        self.highest = Some(ts);
        self.last_transit = None;
        self.conceal_run = 0;
        self.stretch = 0;
        self.over_target_run = 0;
        self.stats.resyncs += 1;
    }

    /// Adds a packet: `ts` in 48 kHz units (RTP timestamp, or PTT sequence × 480),
    /// `arrival_us` a monotonic arrival time in microseconds.
    pub fn push(&mut self, ts: u32, payload: Bytes, arrival_us: u64) -> PushOutcome {
        let Ok(info) = opus_toc::parse(&payload) else {
            self.stats.malformed += 1;
            return PushOutcome::Malformed;
        };
        let samples = info.samples_48k;
        let Some(ts) = self.extend(ts) else {
            self.stats.late += 1;
            return PushOutcome::Late;
        };
        let mut outcome = PushOutcome::Buffered;
        let reference = match self.state {
            State::Playing => Some(self.next_ts),
            State::Buffering => self.highest,
        };
        if let Some(r) = reference
            && ts.abs_diff(r) > RESYNC_TICKS
        {
            // A new talk burst with a fresh clock, or a peer restart.
            self.reset_to(ts);
            outcome = PushOutcome::Resynced;
        }
        if self.state == State::Playing && ts + u64::from(samples) <= self.next_ts {
            if self.queue.iter().any(|e| e.ts == ts) {
                self.stats.duplicates += 1;
                return PushOutcome::Duplicate;
            }
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        // Insert in timestamp order; arrivals are nearly sorted, so scan from the back.
        let mut idx = self.queue.len();
        while idx > 0 && self.queue[idx - 1].ts > ts {
            idx -= 1;
        }
        if idx > 0 && self.queue[idx - 1].ts == ts {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        if self.queue.is_empty() {
            self.first_arrival_us = arrival_us;
        }
        self.update_jitter(ts, arrival_us);
        if self.highest.is_none_or(|h| ts > h) {
            self.highest = Some(ts);
        }
        if self.queue.len() == self.cfg.capacity {
            // Full: make room by discarding the oldest audio (it is the most
            // overdue), unless the newcomer itself is the oldest.
            if idx == 0 {
                self.stats.dropped += 1;
                return PushOutcome::Late;
            }
            self.drop_front();
            idx -= 1;
        }
        self.queue.insert(
            idx,
            Entry {
                ts,
                samples,
                payload,
            },
        );
        self.stats.received += 1;
        // Hard cap on latency / memory: never hold more than max_depth of audio.
        while self.depth_ms() > self.cfg.max_depth_ms && self.queue.len() > 1 {
            self.drop_front();
        }
        outcome
    }

    fn drop_front(&mut self) {
        if let Some(e) = self.queue.pop_front() {
            self.stats.dropped += 1;
            if self.state == State::Playing && e.ts + u64::from(e.samples) > self.next_ts {
                self.next_ts = e.ts + u64::from(e.samples);
            }
        }
    }

    fn update_jitter(&mut self, ts: u64, arrival_us: u64) {
        // transit = arrival - media time, both in µs; only differences matter.
        // Wide arithmetic: hostile timestamp jumps can push the extended
        // timestamp far up, and this must not overflow.
        let media_us = (u128::from(ts) * 1_000_000 / u128::from(CLOCK_HZ)) as i128;
        let transit =
            (i128::from(arrival_us) - media_us).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        if let Some(prev) = self.last_transit {
            // Cap one observation at 10 s so a single outlier cannot blow up J.
            let d = transit.abs_diff(prev).min(10_000_000);
            // J += (|D| - J) / 16, kept ×16 to stay in integers.
            let j = self.jitter_x16 as i64;
            self.jitter_x16 = (j + d as i64 - (j + 8) / 16).max(0) as u64;
        }
        self.last_transit = Some(transit);
    }

    /// Forgets queued audio that ends at or before `ts` (48 kHz units, as pushed) and moves the
    /// playout point up to it: that audio reached the listener another way (a caller that
    /// forwarded the packets on arrival and now needs the stream decoded from where they left
    /// off). Not counted as loss. Returns the packets removed.
    pub fn skip_through(&mut self, ts: u32) -> usize {
        let Some(ts) = self.extend(ts) else {
            return 0;
        };
        let mut removed = 0;
        while self
            .queue
            .front()
            .is_some_and(|e| e.ts + u64::from(e.samples) <= ts)
        {
            self.queue.pop_front();
            removed += 1;
        }
        if self.state == State::Playing && ts > self.next_ts {
            self.next_ts = ts;
            self.stretch = 0;
        }
        removed
    }

    /// Received audio (48 kHz samples) that [`pop`](Self::pop) would play now as packets, in a
    /// row from the playout point: 0 while buffering short of the target, at a gap (a packet
    /// missing or late) and when empty. A caller that renders ahead of its clock when the audio
    /// is already here (rather than at a fixed tick) asks this first; anything short of a frame
    /// waits for the packet or for the caller's deadline, when `pop` conceals as usual.
    pub fn ready_samples(&self, now_us: u64) -> u32 {
        let mut at = match self.state {
            State::Buffering => {
                let Some(front) = self.queue.front() else {
                    return 0;
                };
                let waited_ms = now_us.saturating_sub(self.first_arrival_us) / 1000;
                let target = u64::from(self.target_ms());
                if u64::from(self.depth_ms()) < target && waited_ms < target {
                    return 0;
                }
                front.ts
            }
            State::Playing => self.next_ts,
        };
        let mut samples = 0u32;
        for e in &self.queue {
            let end = e.ts + u64::from(e.samples);
            if end <= at {
                // Left behind by the playout point: `pop` skips it.
                continue;
            }
            if e.ts > at {
                break;
            }
            samples = samples.saturating_add((end - at) as u32);
            at = end;
        }
        samples
    }

    /// Takes the next thing to render. Call it whenever playout needs audio;
    /// `now_us` is the same clock as arrivals.
    pub fn pop(&mut self, now_us: u64) -> Playout {
        if self.state == State::Buffering {
            let Some(front) = self.queue.front() else {
                return Playout::Idle;
            };
            let waited_ms = now_us.saturating_sub(self.first_arrival_us) / 1000;
            let target = u64::from(self.target_ms());
            // Start once the target is buffered, or once the first packet has
            // waited that long (a short burst must not be held forever).
            if u64::from(self.depth_ms()) < target && waited_ms < target {
                return Playout::Idle;
            }
            self.next_ts = front.ts;
            self.state = State::Playing;
            self.conceal_run = 0;
            self.stretch = 0;
        }

        // Latency control: if we sit well above target for a while (e.g. after
        // a delay spike), skip one packet to come back down.
        let target = self.target_ms();
        let frame_ms = self.last_samples * 1000 / CLOCK_HZ as u32;
        if self.depth_ms() > target + self.trim_slack * frame_ms.max(10) {
            self.over_target_run += 1;
            if self.over_target_run >= 25 && self.queue.len() > 1 {
                self.over_target_run = 0;
                self.drop_front();
            }
        } else {
            self.over_target_run = 0;
        }

        let Some(front) = self.queue.front() else {
            // Underrun: conceal without advancing, so a merely delayed packet
            // still plays (the delay grows by one frame). After a run of these
            // the burst is over: go idle.
            // Counted in samples so 2.5 ms packets don't go idle 8x sooner.
            self.conceal_run = self.conceal_run.saturating_add(self.last_samples);
            if self.conceal_run > self.cfg.max_conceal_run.saturating_mul(960) {
                self.state = State::Buffering;
                self.stats.resyncs += 1;
                return Playout::Idle;
            }
            self.stats.concealed += 1;
            self.stretch = self.stretch.saturating_add(self.last_samples);
            return Playout::Conceal {
                samples: self.last_samples,
            };
        };
        self.conceal_run = 0;
        if front.ts + u64::from(front.samples) <= self.next_ts {
            // Entirely in the past: the playout point moved beyond it while it waited (a long
            // packet dropped for the depth cap covered it). Playing it would turn the clock back.
            self.queue.pop_front();
            self.stats.late += 1;
            return self.pop(now_us);
        }
        if front.ts <= self.next_ts {
            // Due now (or overlapping slightly: play it rather than drop audio).
            let e = self.queue.pop_front().expect("front exists");
            // Whatever was stretched is now real extra latency.
            self.stretch = 0;
            self.next_ts = e.ts + u64::from(e.samples);
            self.last_samples = e.samples;
            return Playout::Packet {
                ts: e.ts as u32,
                payload: e.payload,
                samples: e.samples,
            };
        }
        // Gap before the front packet: it was lost (or is later than our depth).
        let gap = front.ts - self.next_ts;
        if gap > u64::from(self.cfg.max_depth_ms) * CLOCK_HZ / 1000 {
            // Too long to conceal frame by frame (a sender pause without a
            // new clock): count it lost and jump to the packet.
            self.stats.lost += gap.div_ceil(u64::from(self.last_samples));
            self.next_ts = front.ts;
            return self.pop(now_us);
        }
        if self.stretch > 0 {
            // The underrun concealment already filled (part of) this gap:
            // the packet we waited for is lost; don't conceal it twice.
            let covered = gap.min(u64::from(self.stretch));
            self.stretch -= covered as u32;
            self.next_ts += covered;
            self.stats.lost += 1;
            return self.pop(now_us);
        }
        // Conceal at most one packet's worth per pop, in whole 2.5 ms units.
        let samples = (gap.min(u64::from(self.last_samples)) as u32 / 120) * 120;
        if samples == 0 {
            // Sub-2.5 ms misalignment: snap to the packet instead of concealing.
            self.next_ts = front.ts;
            return self.pop(now_us);
        }
        self.stats.lost += 1;
        self.next_ts += u64::from(samples);
        if front.ts == self.next_ts && crate::opus::has_fec(&front.payload) {
            self.stats.fec += 1;
            Playout::Fec {
                next: front.payload.clone(),
                samples,
            }
        } else {
            self.stats.concealed += 1;
            Playout::Conceal { samples }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid 20 ms CELT packet whose body byte identifies it.
    fn pkt(id: u8) -> Bytes {
        Bytes::from(vec![31 << 3, id])
    }

    fn played(p: &Playout) -> Option<u8> {
        match p {
            Playout::Packet { payload, .. } => Some(payload[1]),
            _ => None,
        }
    }

    fn cfg() -> JitterConfig {
        JitterConfig {
            min_depth_ms: 40,
            ..JitterConfig::default()
        }
    }

    #[test]
    fn skip_through_drops_what_was_delivered_and_plays_on_from_there() {
        let mut jb = JitterBuffer::new(cfg());
        for id in 0..5u8 {
            jb.push(u32::from(id) * 960, pkt(id), u64::from(id) * 20_000);
        }
        assert_eq!(played(&jb.pop(100_000)), Some(0));
        // Packets 1..=3 were forwarded another way: only 4 is left to play.
        assert_eq!(jb.skip_through(4 * 960), 3);
        assert_eq!(played(&jb.pop(120_000)), Some(4));
        assert_eq!(jb.stats().lost, 0);
        assert_eq!(jb.stats().dropped, 0);
        // Past everything queued: the next packet due is the one after.
        jb.push(5 * 960, pkt(5), 120_000);
        jb.push(6 * 960, pkt(6), 140_000);
        assert_eq!(jb.skip_through(6 * 960), 1);
        assert_eq!(played(&jb.pop(140_000)), Some(6));
    }

    #[test]
    fn a_standing_backlog_above_target_plus_a_frame_is_trimmed() {
        // A sender caught up in a burst: three packets wait at every pop from then on (60 ms
        // against a 20 ms target), the stream otherwise steady.
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.set_trim_slack(1);
        for id in 0..3u8 {
            jb.push(u32::from(id) * 960, pkt(id), 0);
        }
        let mut depths = Vec::new();
        for k in 3..60u32 {
            let now = u64::from(k) * 20_000;
            jb.push(k * 960, pkt(k as u8), now);
            depths.push(jb.depth_ms());
            assert!(matches!(jb.pop(now), Playout::Packet { .. }));
        }
        assert_eq!(jb.stats().dropped, 2, "{depths:?}");
        assert_eq!(jb.stats().lost, 0);
        // Back to the packet being played plus one behind it.
        assert!(depths[50..].iter().all(|d| *d <= 40), "{depths:?}");
    }

    #[test]
    fn ready_samples_counts_what_pop_would_play_up_to_a_gap() {
        let mut jb = JitterBuffer::new(cfg());
        assert_eq!(jb.ready_samples(0), 0, "empty");
        jb.push(0, pkt(0), 0);
        // Buffering: one packet is short of the 40 ms target until it has waited that long.
        assert_eq!(jb.ready_samples(10_000), 0);
        assert_eq!(jb.ready_samples(40_000), 960);
        jb.push(960, pkt(1), 20_000);
        jb.push(3 * 960, pkt(3), 40_000);
        // 0 and 1 in a row, then 2 is missing.
        assert_eq!(jb.ready_samples(20_000), 2 * 960);
        assert_eq!(played(&jb.pop(20_000)), Some(0));
        assert_eq!(played(&jb.pop(40_000)), Some(1));
        assert_eq!(
            jb.ready_samples(60_000),
            0,
            "the gap waits for its deadline"
        );
        assert!(matches!(jb.pop(60_000), Playout::Conceal { .. }));
        assert_eq!(jb.ready_samples(80_000), 960);
        assert_eq!(played(&jb.pop(80_000)), Some(3));
    }

    /// A 120 ms packet arriving out of order covered audio already queued; the depth cap
    /// dropped it and moved the playout point past that audio. The stale packets must be
    /// skipped, not played with the clock turned back (found by the proptest below).
    #[test]
    fn packets_left_behind_by_the_depth_cap_are_skipped_not_replayed() {
        let c = JitterConfig {
            capacity: 8,
            max_depth_ms: 120,
            ..JitterConfig::default()
        };
        let mut jb = JitterBuffer::new(c);
        let p = |v: &[u8]| Bytes::from(v.to_vec());
        jb.push(82_560, p(&[96, 3, 1, 2, 3, 4, 5]), 0); // 10 ms
        jb.push(80_640, p(&[65, 3, 1, 2, 3, 4, 5]), 0); // 20 ms
        assert!(matches!(jb.pop(0), Playout::Packet { ts: 80_640, .. }));
        assert!(matches!(jb.pop(0), Playout::Conceal { .. }));
        jb.push(83_040, p(&[104, 3, 1, 2, 3, 4, 5]), 0); // 20 ms
        jb.push(80_160, p(&[57, 3, 1, 2, 3, 4, 5]), 0); // 120 ms, reaching past both
        jb.push(88_800, p(&[200, 3, 1, 2, 3, 4, 5]), 0); // 5 ms; the cap drops the long one
        let late = jb.stats().late;
        let next = jb.pop(0);
        assert!(
            matches!(
                next,
                Playout::Packet { ts: 88_800, .. } | Playout::Conceal { .. }
            ),
            "{next:?}"
        );
        assert!(jb.depth_ms() <= 120, "depth {}", jb.depth_ms());
        assert_eq!(jb.stats().late, late + 2, "the two stale packets, counted");
    }

    #[test]
    fn reorders() {
        let mut jb = JitterBuffer::new(cfg());
        for (i, id) in [0u8, 2, 1, 3, 5, 4].iter().enumerate() {
            let out = jb.push(u32::from(*id) * 960, pkt(*id), i as u64 * 20_000);
            assert_eq!(out, PushOutcome::Buffered);
        }
        let order: Vec<_> = (0..6)
            .map(|i| played(&jb.pop(200_000 + i * 20_000)))
            .collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5].map(Some));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn drops_duplicates_and_late_packets() {
        let mut jb = JitterBuffer::new(cfg());
        jb.push(0, pkt(0), 0);
        jb.push(960, pkt(1), 20_000);
        assert_eq!(jb.push(960, pkt(1), 21_000), PushOutcome::Duplicate);
        jb.push(1920, pkt(2), 40_000);
        assert_eq!(played(&jb.pop(40_000)), Some(0));
        assert_eq!(played(&jb.pop(60_000)), Some(1));
        // Packet 1 again after it played: late, not duplicate-in-queue.
        assert_eq!(jb.push(960, pkt(1), 61_000), PushOutcome::Late);
        assert_eq!(jb.push(0, pkt(0), 61_000), PushOutcome::Late);
        let s = jb.stats();
        assert_eq!((s.duplicates, s.late, s.received), (1, 2, 3));
    }

    #[test]
    fn gap_is_concealed_then_playout_continues() {
        let mut jb = JitterBuffer::new(cfg());
        for id in [0u8, 1, 3, 4] {
            jb.push(u32::from(id) * 960, pkt(id), u64::from(id) * 20_000);
        }
        assert_eq!(played(&jb.pop(80_000)), Some(0));
        assert_eq!(played(&jb.pop(100_000)), Some(1));
        // Our synthetic packets carry no LBRR, so this is PLC, not FEC.
        assert_eq!(jb.pop(120_000), Playout::Conceal { samples: 960 });
        assert_eq!(played(&jb.pop(140_000)), Some(3));
        assert_eq!(played(&jb.pop(160_000)), Some(4));
        let s = jb.stats();
        assert_eq!((s.lost, s.concealed, s.fec), (1, 1, 0));
        // A 1 s pause (less than a resync) is skipped, not concealed 50 times.
        jb.push(60 * 960, pkt(60), 1_200_000);
        assert_eq!(played(&jb.pop(1_300_000)), Some(60));
        assert_eq!(jb.stats().lost, 1 + 55);
    }

    #[test]
    fn underrun_conceals_then_goes_idle_and_restarts() {
        let mut jb = JitterBuffer::new(JitterConfig {
            max_conceal_run: 3,
            ..cfg()
        });
        jb.push(0, pkt(0), 0);
        // Waited past the target: starts even with one packet.
        assert_eq!(played(&jb.pop(50_000)), Some(0));
        for _ in 0..3 {
            assert_eq!(jb.pop(60_000), Playout::Conceal { samples: 960 });
        }
        assert_eq!(jb.pop(60_000), Playout::Idle);
        assert!(!jb.is_playing());
        // A delayed packet that arrives during the underrun still plays
        // (concealment held the clock instead of skipping it).
        let mut jb = JitterBuffer::new(cfg());
        jb.push(0, pkt(0), 0);
        jb.pop(50_000);
        assert!(matches!(jb.pop(70_000), Playout::Conceal { .. }));
        assert_eq!(jb.push(960, pkt(1), 75_000), PushOutcome::Buffered);
        assert_eq!(played(&jb.pop(90_000)), Some(1));
        // A new burst with a far-away timestamp resyncs.
        assert_eq!(
            jb.push(10_000_000, pkt(9), 5_000_000),
            PushOutcome::Resynced
        );
        assert_eq!(played(&jb.pop(5_100_000)), Some(9));
    }

    #[test]
    fn never_grows_without_bound() {
        let c = JitterConfig {
            capacity: 16,
            max_depth_ms: 100,
            ..cfg()
        };
        let mut jb = JitterBuffer::new(c);
        let cap_bytes = jb.heap_bytes();
        for i in 0..10_000u32 {
            jb.push(i * 960, pkt(i as u8), u64::from(i) * 100);
            assert!(jb.len() <= 16);
            assert!(jb.depth_ms() <= 100, "depth {}", jb.depth_ms());
        }
        // Queue slots never reallocated: only payload bytes differ.
        assert!(jb.heap_bytes() <= cap_bytes + 16 * 2);
        assert!(jb.stats().dropped > 9_000);
    }

    #[test]
    fn timestamps_wrap_around() {
        let mut jb = JitterBuffer::new(cfg());
        let start = u32::MAX - 960 * 2 + 1;
        for i in 0..5u32 {
            let out = jb.push(
                start.wrapping_add(i * 960),
                pkt(i as u8),
                u64::from(i) * 20_000,
            );
            assert_eq!(out, PushOutcome::Buffered);
        }
        let order: Vec<_> = (0..5)
            .map(|i| played(&jb.pop(100_000 + i * 20_000)))
            .collect();
        assert_eq!(order, [0, 1, 2, 3, 4].map(Some));
    }

    #[test]
    fn target_adapts_to_jitter() {
        let mut steady = JitterBuffer::new(JitterConfig::default());
        let mut jittery = JitterBuffer::new(JitterConfig::default());
        let mut seed = 12345u64;
        for i in 0..500u64 {
            steady.push((i * 960) as u32, pkt(0), i * 20_000);
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let delay = (seed >> 33) % 60_000; // 0..60 ms network delay variation
            jittery.push((i * 960) as u32, pkt(0), i * 20_000 + delay);
            steady.pop(i * 20_000);
            jittery.pop(i * 20_000);
        }
        assert_eq!(steady.target_ms(), 20);
        let t = jittery.target_ms();
        assert!((40..=200).contains(&t), "target {t}");
        assert!(jittery.stats().jitter_us > 10_000);
    }

    #[test]
    fn malformed_is_counted() {
        let mut jb = JitterBuffer::new(cfg());
        assert_eq!(jb.push(0, Bytes::new(), 0), PushOutcome::Malformed);
        assert_eq!(
            jb.push(0, Bytes::from_static(&[0x01, 0]), 0),
            PushOutcome::Malformed
        );
        assert_eq!(jb.stats().malformed, 2);
        assert!(jb.is_empty());
    }

    #[test]
    fn hostile_timestamp_jumps_do_not_overflow() {
        let mut jb = JitterBuffer::new(cfg());
        let mut seed = 99u64;
        for i in 0..200_000u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Alternate big forward jumps (resyncs) with arbitrary values.
            let ts = if i % 2 == 0 {
                (seed >> 32) as u32
            } else {
                (i as u32).wrapping_mul(0x7FFF_0000)
            };
            jb.push(ts, pkt(i as u8), seed >> 20);
            jb.pop(seed >> 21);
        }
        assert!(jb.len() <= 64);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push { ts: u32, payload: Vec<u8>, dt: u32 },
        Pop { dt: u32 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                any::<u32>(),
                prop::collection::vec(any::<u8>(), 0..12),
                0u32..100_000
            )
                .prop_map(|(ts, payload, dt)| Op::Push { ts, payload, dt }),
            // Mostly-sane packets near a running clock, to reach deep states.
            (0u32..200, 0u8..4, 0u32..50_000).prop_map(|(k, code, dt)| Op::Push {
                ts: k * 480,
                payload: vec![(k as u8 % 32) << 3 | code, 3, 1, 2, 3, 4, 5],
                dt,
            }),
            (0u32..60_000).prop_map(|dt| Op::Pop { dt }),
        ]
    }

    proptest! {
        #[test]
        fn random_traffic_never_panics_and_stays_bounded(ops in prop::collection::vec(op(), 0..300)) {
            let c = JitterConfig { capacity: 8, max_depth_ms: 120, ..JitterConfig::default() };
            let mut jb = JitterBuffer::new(c);
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Push { ts, payload, dt } => {
                        now += u64::from(dt);
                        jb.push(ts, Bytes::from(payload), now);
                    }
                    Op::Pop { dt } => {
                        now += u64::from(dt);
                        // What `ready_samples` promises, `pop` plays: a packet, not a
                        // concealment or nothing (callers mix early on its word).
                        let ready = jb.ready_samples(now);
                        let p = jb.pop(now);
                        if ready > 0 {
                            prop_assert!(matches!(p, Playout::Packet { .. }), "ready {} but {:?}", ready, p);
                        }
                        match p {
                            Playout::Conceal { samples } | Playout::Fec { samples, .. } => {
                                prop_assert!(samples > 0 && samples % 120 == 0 && samples <= 5760);
                            }
                            Playout::Packet { samples, .. } => prop_assert!(samples <= 5760),
                            Playout::Idle => {}
                        }
                    }
                }
                prop_assert!(jb.len() <= 8);
                // One packet may exceed the cap on its own (a 120 ms packet).
                prop_assert!(jb.len() <= 1 || jb.depth_ms() <= 120);
            }
        }
    }
}
