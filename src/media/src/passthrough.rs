//! Pass-through: forward Opus payloads unchanged, rewriting only the outer
//! headers, and decide per group tick whether to pass one talker through or
//! to mix (sans-IO, protocol-agnostic).
//!
//! - [`OutboundClock`] is the per-listener (per outbound stream) state: it
//!   stamps every packet with that stream's own SSRC, sequence number,
//!   timestamp, marker and PTT sequence (10 ms units), keeping the timestamp
//!   continuous when the audio source changes (talker A → mix → talker B).
//! - [`RouteSelector`] is the group-level decision: silent, pass one talker
//!   through, or mix.
//!
//! Headers are plain structs; the RTP and PTT adapters serialise them.

/// Samples per 10 ms at 48 kHz: the unit of PTT voice sequence numbers.
pub const PTT_SEQ_SAMPLES: u64 = 480;
/// Source-time gaps up to this long (1 s) are kept as-is (DTX, upstream loss);
/// longer ones are re-timed from the wall clock.
const MAX_KEPT_GAP: u64 = 48_000;

/// Where an outbound packet's audio comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A talker's own packets, passed through unchanged.
    Talker(u32),
    /// The group's encoded mix (or a talker's mix-minus).
    Mix,
}

/// The outer header of one outbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutHeader {
    /// RTP SSRC of this outbound stream.
    pub ssrc: u32,
    /// RTP sequence number (+1 per packet).
    pub seq: u16,
    /// RTP timestamp, 48 kHz.
    pub timestamp: u32,
    /// RTP marker: first packet of a talk spurt.
    pub marker: bool,
    /// PTT voice sequence number: the timestamp in 10 ms units since the stream began.
    pub ptt_seq: u64,
}

impl OutHeader {
    /// Writes a 12-byte RTP header (version 2, no CSRC, no extension).
    pub fn write_rtp(&self, payload_type: u8, out: &mut [u8; 12]) {
        out[0] = 0x80;
        out[1] = (u8::from(self.marker) << 7) | (payload_type & 0x7F);
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }
}

#[derive(Debug, Clone, Copy)]
struct Last {
    source: Source,
    /// Source timestamp just after the last packet (its ts + duration).
    src_end: u32,
    /// Wall time the last packet was stamped, and its duration in µs.
    sent_us: u64,
    dur_us: u64,
}

/// Per-outbound-stream clock. See the module docs.
#[derive(Debug, Clone)]
pub struct OutboundClock {
    ssrc: u32,
    seq: u16,
    /// Extended timestamp just after the last stamped packet.
    next_ts: u64,
    /// Extended timestamp of the stream's first packet (PTT sequence origin).
    base_ts: u64,
    last: Option<Last>,
}

impl OutboundClock {
    /// A stream with its own SSRC and random-looking initial sequence / timestamp.
    pub fn new(ssrc: u32, initial_seq: u16, initial_ts: u32) -> Self {
        Self {
            ssrc,
            seq: initial_seq.wrapping_sub(1),
            next_ts: u64::from(initial_ts),
            base_ts: u64::from(initial_ts),
            last: None,
        }
    }

    /// This stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Stamps the next outbound packet.
    ///
    /// `src_ts` is the packet's timestamp in its source's clock (48 kHz),
    /// `samples` its duration (from [`crate::opus_toc`]), `now_us` a monotonic
    /// wall clock. Consecutive packets of one source keep their spacing; a
    /// change of source continues from where the last packet ended, plus any
    /// real pause measured on the wall clock.
    pub fn stamp(&mut self, source: Source, src_ts: u32, samples: u32, now_us: u64) -> OutHeader {
        let (start, marker) = match self.last {
            None => (self.next_ts, true),
            Some(last) => {
                let gap = u64::from(src_ts.wrapping_sub(last.src_end));
                if last.source == source && gap <= MAX_KEPT_GAP {
                    // Same source, in order: keep its own timing, gaps included.
                    (self.next_ts + gap, false)
                } else {
                    // New source (or a long pause): continue from our own end,
                    // adding only a real pause measured on the wall clock.
                    let expected = last.sent_us + last.dur_us;
                    let pause_us = now_us.saturating_sub(expected);
                    // Up to one frame late is no pause: a mix made on its audio's arrival
                    // and the next 20 ms made at the tick's deadline can be a frame further
                    // apart than their audio.
                    if pause_us < 2 * last.dur_us.max(20_000) {
                        (self.next_ts, false)
                    } else {
                        // Whole 2.5 ms units, so the clock stays on Opus frame boundaries.
                        let pause = pause_us * 48 / 1000 / 120 * 120;
                        (self.next_ts + pause, true)
                    }
                }
            }
        };
        self.seq = self.seq.wrapping_add(1);
        self.next_ts = start + u64::from(samples);
        self.last = Some(Last {
            source,
            src_end: src_ts.wrapping_add(samples),
            sent_us: now_us,
            dur_us: u64::from(samples) * 1000 / 48,
        });
        OutHeader {
            ssrc: self.ssrc,
            seq: self.seq,
            timestamp: start as u32,
            marker,
            ptt_seq: (start - self.base_ts) / PTT_SEQ_SAMPLES,
        }
    }
}

/// What a group sends this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Nobody is talking.
    Silent,
    /// Exactly one talker: forward its packets unchanged.
    PassThrough(u32),
    /// Several talkers: decode, mix, encode once for listeners.
    Mix,
}

/// Chooses the route each tick from the set of active talkers, with a short
/// hold before leaving the mix so overlapping talk does not flap.
#[derive(Debug, Clone)]
pub struct RouteSelector {
    route: Route,
    hold_ticks: u32,
    single_run: u32,
}

impl RouteSelector {
    /// `hold_ticks`: ticks with a single talker before leaving the mix.
    pub fn new(hold_ticks: u32) -> Self {
        Self {
            route: Route::Silent,
            hold_ticks,
            single_run: 0,
        }
    }

    /// The current route.
    pub fn route(&self) -> Route {
        self.route
    }

    /// Updates the route from this tick's active talkers.
    pub fn update(&mut self, active: &[u32]) -> Route {
        self.route = match (active, self.route) {
            ([], _) => Route::Silent,
            ([only], Route::Mix) => {
                self.single_run += 1;
                if self.single_run > self.hold_ticks {
                    Route::PassThrough(*only)
                } else {
                    Route::Mix
                }
            }
            ([only], _) => Route::PassThrough(*only),
            (_, _) => Route::Mix,
        };
        if self.route != Route::Mix || active.len() > 1 {
            self.single_run = 0;
        }
        self.route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_source_keeps_spacing_and_rewrites_identity() {
        let mut c = OutboundClock::new(0xdead_beef, 100, 5000);
        let h0 = c.stamp(Source::Talker(1), 7_000_000, 960, 0);
        assert_eq!(
            (h0.seq, h0.timestamp, h0.marker, h0.ptt_seq),
            (100, 5000, true, 0)
        );
        let h1 = c.stamp(Source::Talker(1), 7_000_960, 960, 20_000);
        assert_eq!(
            (h1.seq, h1.timestamp, h1.marker, h1.ptt_seq),
            (101, 5960, false, 2)
        );
        // Upstream lost one packet: the gap is kept so the receiver conceals it.
        let h2 = c.stamp(Source::Talker(1), 7_002_880, 960, 60_000);
        assert_eq!((h2.seq, h2.timestamp), (102, 7880));
        assert_eq!(h2.ssrc, 0xdead_beef);
        // 40 ms packet, then a 20 ms one: sequence +1 each, timestamps by duration.
        let h3 = c.stamp(Source::Talker(1), 7_003_840, 1920, 80_000);
        let h4 = c.stamp(Source::Talker(1), 7_005_760, 960, 120_000);
        assert_eq!(h4.timestamp - h3.timestamp, 1920);
        assert_eq!(h4.ptt_seq - h3.ptt_seq, 4);
    }

    #[test]
    fn source_switch_is_continuous() {
        let mut c = OutboundClock::new(1, 0, u32::MAX - 2000); // wraps during the test
        let mut now = 0;
        let mut prev: Option<OutHeader> = None;
        // Talker A, then the mix, then talker B, each with unrelated clocks.
        let plan = [
            (Source::Talker(1), 123_456u32),
            (Source::Mix, 0),
            (Source::Talker(2), 999_999_999),
        ];
        for (source, base) in plan {
            for k in 0..5u32 {
                let h = c.stamp(source, base.wrapping_add(k * 960), 960, now);
                if let Some(p) = prev {
                    assert_eq!(h.timestamp, p.timestamp.wrapping_add(960), "{source:?} {k}");
                    assert_eq!(h.seq, p.seq.wrapping_add(1));
                    assert!(!h.marker);
                }
                prev = Some(h);
                now += 20_000;
            }
        }
    }

    #[test]
    fn a_switch_up_to_a_frame_late_is_no_pause() {
        // The mix's last 20 ms went out early (on its audio's arrival), the pass-through after
        // it at the tick's deadline: 39 ms apart, against 20 ms of audio.
        let mut c = OutboundClock::new(1, 0, 0);
        let m = c.stamp(Source::Mix, 0, 960, 1_000);
        let p = c.stamp(Source::Talker(1), 5_000, 960, 40_000);
        assert_eq!(p.timestamp, m.timestamp + 960);
        assert!(!p.marker);
        // Two frames late is a pause, kept.
        let q = c.stamp(Source::Mix, 960, 960, 100_001);
        assert!(q.marker);
        assert_eq!(q.timestamp, 2 * 960 + 40 * 48 / 120 * 120);
    }

    #[test]
    fn pause_between_talkers_advances_with_wall_clock_and_sets_marker() {
        let mut c = OutboundClock::new(1, 0, 0);
        c.stamp(Source::Talker(1), 0, 960, 0);
        // Talker 2 starts 1 s after talker 1's last packet ended.
        let h = c.stamp(Source::Talker(2), 42, 960, 1_020_000);
        assert!(h.marker);
        assert_eq!(h.timestamp, 960 + 48_000);
        assert_eq!(h.ptt_seq, (960 + 48_000) / 480);
    }

    #[test]
    fn rtp_header_bytes() {
        let h = OutHeader {
            ssrc: 0x01020304,
            seq: 0xABCD,
            timestamp: 0x0A0B0C0D,
            marker: true,
            ptt_seq: 0,
        };
        let mut b = [0u8; 12];
        h.write_rtp(111, &mut b);
        assert_eq!(
            b,
            [
                0x80,
                0x80 | 111,
                0xAB,
                0xCD,
                0x0A,
                0x0B,
                0x0C,
                0x0D,
                1,
                2,
                3,
                4
            ]
        );
    }

    #[test]
    fn route_selection_with_hold() {
        let mut r = RouteSelector::new(2);
        assert_eq!(r.update(&[]), Route::Silent);
        assert_eq!(r.update(&[7]), Route::PassThrough(7));
        assert_eq!(r.update(&[7, 8]), Route::Mix);
        assert_eq!(r.update(&[8]), Route::Mix);
        assert_eq!(r.update(&[8]), Route::Mix);
        assert_eq!(r.update(&[8]), Route::PassThrough(8));
        assert_eq!(r.update(&[9]), Route::PassThrough(9));
        assert_eq!(r.update(&[9, 8]), Route::Mix);
        assert_eq!(r.update(&[]), Route::Silent);
    }
}
