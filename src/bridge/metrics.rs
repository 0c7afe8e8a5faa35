//! The link's Prometheus handles, looked up once when a link starts: the per-packet paths
//! only increment what they hold (a registry lookup per packet costs a hash and a lock).

use media::jitter::JitterStats;
use metrics::{Counter, Histogram};

/// Counters and histograms one link updates.
#[derive(Debug, Clone)]
pub(crate) struct LinkMetrics {
    /// PTT voice packets taken in (`pttbridge_meeting_rtp_total{direction="ptt_in"}`).
    pub ptt_in: Counter,
    /// Packets of a lone talker that came late for direct pass-through.
    pub dropped_late: Counter,
    /// G.711 transcoding failures.
    pub transcode_errors: Counter,
    /// Mix tick failures.
    pub mix_errors: Counter,
    /// PTT voice in → the packet that carries it to the group, per route.
    pub latency_passthrough: Histogram,
    /// As above, for mixed packets.
    pub latency_mix: Histogram,
    /// Frames the group → PTT path had nothing for while the group held the PTT floor: a
    /// member's audio stopped arriving mid-burst (`pttbridge_meeting_to_ptt_gaps_total`).
    pub to_ptt_gap_frames: Counter,
    /// Length of each such gap, in seconds (`pttbridge_meeting_to_ptt_gap_seconds`).
    pub to_ptt_gap_seconds: Histogram,
    /// Jitter-buffer figures of PTT talkers.
    pub jitter_ptt_in: JitterMetrics,
    /// Jitter-buffer figures of group members.
    pub jitter_members_in: JitterMetrics,
    /// Audio health of each PTT talker's burst.
    pub burst_ptt: BurstMetrics,
    /// Audio health of each member's burst (VAD or push-to-talk), meeting side.
    pub burst_members: BurstMetrics,
}

impl LinkMetrics {
    /// Registers (or finds) every series once.
    pub fn new() -> Self {
        Self {
            ptt_in: metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "ptt_in"),
            dropped_late: metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "late"),
            transcode_errors: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "transcode"),
            mix_errors: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "mix"),
            latency_passthrough: metrics::histogram!("pttbridge_meeting_bridge_latency_seconds", "route" => "passthrough"),
            latency_mix: metrics::histogram!("pttbridge_meeting_bridge_latency_seconds", "route" => "mix"),
            to_ptt_gap_frames: metrics::counter!("pttbridge_meeting_to_ptt_gaps_total"),
            to_ptt_gap_seconds: metrics::histogram!("pttbridge_meeting_to_ptt_gap_seconds"),
            jitter_ptt_in: JitterMetrics::new("ptt_in"),
            jitter_members_in: JitterMetrics::new("meeting_in"),
            burst_ptt: BurstMetrics::new("ptt"),
            burst_members: BurstMetrics::new("meeting"),
        }
    }
}

/// The jitter-buffer series of one direction.
#[derive(Debug, Clone)]
pub(crate) struct JitterMetrics {
    depth: Histogram,
    late: Counter,
    lost: Counter,
    concealed: Counter,
    dropped: Counter,
}

impl JitterMetrics {
    fn new(direction: &'static str) -> Self {
        let kind = |kind: &'static str| metrics::counter!("pttbridge_meeting_jitter_packets_total", "direction" => direction, "kind" => kind);
        Self {
            depth: metrics::histogram!("pttbridge_meeting_jitter_depth_seconds", "direction" => direction),
            late: kind("late"),
            lost: kind("lost"),
            concealed: kind("concealed"),
            dropped: kind("dropped"),
        }
    }
}

/// Jitter-buffer counters of one inbound stream already exported, so only deltas are added.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JitterReport {
    late: u64,
    lost: u64,
    concealed: u64,
    dropped: u64,
}

impl JitterReport {
    /// Exports the depth and the late, lost, concealed and dropped packets new since the last
    /// report.
    pub fn report(&mut self, s: &JitterStats, m: &JitterMetrics) {
        m.depth.record(f64::from(s.depth_ms) / 1000.0);
        for (now, last, counter) in [
            (s.late, &mut self.late, &m.late),
            (s.lost, &mut self.lost, &m.lost),
            (s.concealed, &mut self.concealed, &m.concealed),
            (s.dropped, &mut self.dropped, &m.dropped),
        ] {
            if now > *last {
                counter.increment(now - *last);
            }
            *last = now;
        }
    }
}

/// A stream's jitter-buffer counters when a talk burst began: the burst's own figures are the
/// difference at its end.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BurstStart {
    received: u64,
    lost: u64,
    late: u64,
    concealed: u64,
}

impl BurstStart {
    /// The counters of `s` now.
    pub fn of(s: &JitterStats) -> Self {
        Self {
            received: s.received,
            lost: s.lost,
            late: s.late,
            concealed: s.concealed,
        }
    }
}

/// The per-talk-burst audio health series of one side: the share of the burst's packets lost,
/// late and concealed, and the jitter-buffer depth it needed — one observation per burst, so a
/// dashboard shows how many bursts were hurt rather than one average over all traffic.
#[derive(Debug, Clone)]
pub(crate) struct BurstMetrics {
    lost: Histogram,
    late: Histogram,
    concealed: Histogram,
    depth: Histogram,
}

impl BurstMetrics {
    fn new(side: &'static str) -> Self {
        let ratio = |kind: &'static str| metrics::histogram!("pttbridge_talk_burst_impaired_ratio", "side" => side, "kind" => kind);
        Self {
            lost: ratio("lost"),
            late: ratio("late"),
            concealed: ratio("concealed"),
            depth: metrics::histogram!("pttbridge_talk_burst_jitter_depth_seconds", "side" => side),
        }
    }

    /// Records the burst that began at `start` and ends with `end`; returns its figures (for
    /// the log line). A burst without a packet is not one.
    pub fn record(&self, start: &BurstStart, end: &JitterStats) -> Option<BurstHealth> {
        let h = BurstHealth {
            received: end.received.saturating_sub(start.received),
            lost: end.lost.saturating_sub(start.lost),
            late: end.late.saturating_sub(start.late),
            concealed: end.concealed.saturating_sub(start.concealed),
            depth_ms: end.target_ms,
        };
        // Every packet the burst should have had: arrived in time, arrived too late, or never.
        let expected = h.received + h.late + h.lost;
        if h.received == 0 {
            return None;
        }
        let share = |n: u64| (n as f64 / expected as f64).min(1.0);
        self.lost.record(share(h.lost));
        self.late.record(share(h.late));
        self.concealed.record(share(h.concealed));
        self.depth.record(f64::from(h.depth_ms) / 1000.0);
        Some(h)
    }
}

/// One talk burst's audio health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BurstHealth {
    /// Packets taken in time.
    pub received: u64,
    /// Packets never received.
    pub lost: u64,
    /// Packets that came after their playout time.
    pub late: u64,
    /// Frames made up by concealment.
    pub concealed: u64,
    /// The jitter buffer's target depth at the end (ms).
    pub depth_ms: u32,
}
