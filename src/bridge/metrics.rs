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
