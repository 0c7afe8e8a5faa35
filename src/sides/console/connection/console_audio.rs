//! Binary audio frames from the console.

use super::*;

impl Connection {
    pub(super) fn audio_error(&mut self, kind: &'static str, message: String) {
        error_metric(kind);
        metrics::counter!("pttbridge_console_audio_dropped_total", "reason" => kind).increment(1);
        if !self.audio_error_reported {
            // Once per streak: a console sending 50 bad frames a second gets one answer.
            self.audio_error_reported = true;
            self.reply("audio", 0, message);
        }
    }

    pub(super) fn on_audio(&mut self, data: Bytes) {
        metrics::counter!("pttbridge_console_audio_frames_total", "direction" => "in").increment(1);
        if let Err(e) = self.up_login() {
            return self.audio_error("audio_before_login", format!("audio: {e}"));
        }
        if !self.console_holds()
            || self
                .call
                .as_ref()
                .is_some_and(|c| c.pending_grant.is_some())
        {
            return self.audio_error(
                "audio_without_floor",
                "audio: the mic is not open (requestMic first)".into(),
            );
        }
        let (header, payload) = match Header::parse(&data) {
            Ok(x) => x,
            Err(e) => return self.audio_error("bad_audio", format!("audio: {e}")),
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
            return self.audio_error(
                "audio_too_fast",
                "audio: frames arrive faster than real time; send one 20 ms frame every 20 ms"
                    .into(),
            );
        }
        if let Err(e) = self.upstream.push(&header, payload, &mut self.voice_out) {
            // Packets converted before the failure are not sent (as before).
            self.voice_out.clear();
            return self.audio_error("bad_audio", format!("audio: {e}"));
        }
        self.audio_error_reported = false;
        let client = &self.login.as_ref().expect("checked").client;
        let mut carried = (0, 0);
        for v in self.voice_out.drain(..) {
            let bytes = v.opus.len();
            if client.send_voice(v) {
                carried = (carried.0 + 1, carried.1 + bytes);
            } else {
                metrics::counter!("pttbridge_console_audio_dropped_total", "reason" => "ptt_queue_full").increment(1);
            }
        }
        if let Some(r) = &self.record {
            r.counters().audio(carried.0, carried.1);
        }
    }
}
