//! Binary audio frames from the console.

use super::*;

/// Why console audio was dropped: `pttbridge_console_audio_dropped_total{reason}` (and, for
/// the console's own mistakes, `pttbridge_console_errors_total{kind}` of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AudioDrop {
    BeforeLogin,
    WithoutFloor,
    BadAudio,
    TooFast,
    PttQueueFull,
    NotFloorHolder,
    Late,
    ConsoleSlow,
}

impl AudioDrop {
    /// Variants (the last one's index + 1).
    const COUNT: usize = Self::ConsoleSlow as usize + 1;

    fn as_str(self) -> &'static str {
        match self {
            Self::BeforeLogin => "audio_before_login",
            Self::WithoutFloor => "audio_without_floor",
            Self::BadAudio => "bad_audio",
            Self::TooFast => "audio_too_fast",
            Self::PttQueueFull => "ptt_queue_full",
            Self::NotFloorHolder => "not_floor_holder",
            Self::Late => "late",
            Self::ConsoleSlow => "console_slow",
        }
    }
}

/// The audio path's counters, registered on first use and kept for the connection's life:
/// a frame then costs an increment, not a registry lookup (which also allocates). A counter
/// never used is never registered, so `/metrics` shows the same series as before.
#[derive(Default)]
pub(super) struct AudioMetrics {
    frames_in: Option<metrics::Counter>,
    frames_out: Option<metrics::Counter>,
    dropped: [Option<metrics::Counter>; AudioDrop::COUNT],
    errors: [Option<metrics::Counter>; AudioDrop::COUNT],
}

impl AudioMetrics {
    /// `pttbridge_console_audio_frames_total{direction="in"}`.
    pub(super) fn frame_in(&mut self) -> &metrics::Counter {
        self.frames_in.get_or_insert_with(
            || metrics::counter!("pttbridge_console_audio_frames_total", "direction" => "in"),
        )
    }

    /// `pttbridge_console_audio_frames_total{direction="out"}`.
    pub(super) fn frame_out(&mut self) -> &metrics::Counter {
        self.frames_out.get_or_insert_with(
            || metrics::counter!("pttbridge_console_audio_frames_total", "direction" => "out"),
        )
    }

    /// `pttbridge_console_audio_dropped_total{reason}`.
    pub(super) fn dropped(&mut self, why: AudioDrop) -> &metrics::Counter {
        self.dropped[why as usize].get_or_insert_with(
            || metrics::counter!("pttbridge_console_audio_dropped_total", "reason" => why.as_str()),
        )
    }

    /// `pttbridge_console_errors_total{kind}`.
    fn error(&mut self, why: AudioDrop) -> &metrics::Counter {
        self.errors[why as usize].get_or_insert_with(
            || metrics::counter!("pttbridge_console_errors_total", "kind" => why.as_str()),
        )
    }
}

impl Connection {
    /// A console frame refused; `message` is built only when the console is told (once per
    /// streak of bad frames).
    pub(super) fn audio_error(&mut self, why: AudioDrop, message: impl FnOnce() -> String) {
        self.audio_metrics.error(why).increment(1);
        self.audio_metrics.dropped(why).increment(1);
        if !self.audio_error_reported {
            // Once per streak: a console sending 50 bad frames a second gets one answer.
            self.audio_error_reported = true;
            self.reply("audio", 0, message());
        }
    }

    pub(super) fn on_audio(&mut self, data: Bytes) {
        self.audio_metrics.frame_in().increment(1);
        if let Err(e) = self.up_login() {
            return self.audio_error(AudioDrop::BeforeLogin, || format!("audio: {e}"));
        }
        if !self.console_holds()
            || self
                .call
                .as_ref()
                .is_some_and(|c| c.pending_grant.is_some())
        {
            return self.audio_error(AudioDrop::WithoutFloor, || {
                "audio: the mic is not open (requestMic first)".into()
            });
        }
        let (header, payload) = match Header::parse(&data) {
            Ok(x) => x,
            Err(e) => return self.audio_error(AudioDrop::BadAudio, || format!("audio: {e}")),
        };
        let ms = match header.codec {
            muicall::audio::Codec::Pcm16(rate) => {
                (payload.len() / 2) as f64 * 1000.0 / f64::from(rate)
            }
            muicall::audio::Codec::Opus => media::opus_toc::parse(payload)
                .map(|i| f64::from(i.duration_us()) / 1000.0)
                .unwrap_or(20.0),
        };
        if !self.audio_budget.take_amount(Instant::now(), ms) {
            return self.audio_error(AudioDrop::TooFast, || {
                "audio: frames arrive faster than real time; send one 20 ms frame every 20 ms"
                    .into()
            });
        }
        if let Err(e) = self.upstream.push(&header, payload, &mut self.voice_out) {
            // Packets converted before the failure are not sent (as before).
            self.voice_out.clear();
            return self.audio_error(AudioDrop::BadAudio, || format!("audio: {e}"));
        }
        self.audio_error_reported = false;
        let login = self.login.as_ref().expect("checked");
        let client = &login.client;
        let call = self.call.as_ref().map_or(0, |c| c.id);
        let mut carried = (0, 0);
        for v in self.voice_out.drain(..) {
            let bytes = v.opus.len();
            let (opus, frames, last) = (v.opus.clone(), v.frames_10ms, v.terminator);
            if client.send_voice(v) {
                carried = (carried.0 + 1, carried.1 + bytes);
                if let Some(t) = &mut self.transmission {
                    t.voice(
                        &login.server.ptt.app,
                        || (format!("console:{call}"), login.party()),
                        &opus,
                        frames,
                        last,
                    );
                }
            } else {
                self.audio_metrics
                    .dropped(AudioDrop::PttQueueFull)
                    .increment(1);
            }
        }
        if carried.0 > 0
            && let Some(asked) = self.mic_asked.take()
        {
            metrics::histogram!("pttbridge_console_mic_to_audio_seconds")
                .record(asked.elapsed().as_secs_f64());
        }
        if let Some(r) = &self.record {
            r.counters().audio(carried.0, carried.1);
        }
    }
}
