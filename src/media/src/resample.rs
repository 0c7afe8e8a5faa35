//! Sample-rate conversion between the engine's rates (8, 16, 48 kHz, and the
//! other Opus rates) on fixed 20 ms frames, using rubato's FFT resampler.
//!
//! The FFT resampler is synchronous (the ratio is fixed), which is exactly the
//! bridge's case: both sides' rates are known when a stream is set up. Clock
//! drift is absorbed by the jitter buffer, not here.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use crate::error::{Error, Result};
use crate::pcm::{Channels, f32_to_i16, i16_to_f32};

/// Rates this resampler accepts: the Opus rates (G.711 is 8 kHz) and the sound-card rates 32 and
/// 44.1 kHz (the console agent's devices).
pub const RATES: [u32; 7] = [8000, 12000, 16000, 24000, 32000, 44100, 48000];

/// A streaming resampler for interleaved `i16` frames of fixed duration.
pub struct Resampler {
    inner: Option<Fft<f32>>,
    channels: usize,
    in_frames: usize,
    out_frames: usize,
    scratch_in: Vec<f32>,
    scratch_out: Vec<f32>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("channels", &self.channels)
            .field("in_frames", &self.in_frames)
            .field("out_frames", &self.out_frames)
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// A resampler for 20 ms frames from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32, channels: Channels) -> Result<Self> {
        Self::with_frame_ms(from, to, channels, 20)
    }

    /// A resampler for frames of `frame_ms` milliseconds (10, 20, 40 or 60).
    pub fn with_frame_ms(from: u32, to: u32, channels: Channels, frame_ms: u32) -> Result<Self> {
        for r in [from, to] {
            if !RATES.contains(&r) {
                return Err(Error::UnsupportedRate(r));
            }
        }
        if ![10, 20, 40, 60].contains(&frame_ms) {
            return Err(Error::Resampler(format!(
                "unsupported frame duration {frame_ms} ms"
            )));
        }
        let ch = channels.count();
        let in_frames = (from * frame_ms / 1000) as usize;
        let out_frames = (to * frame_ms / 1000) as usize;
        // Same rate: a copy, no FFT state and no delay.
        let inner = if from == to {
            None
        } else {
            let fft = Fft::<f32>::new(from as usize, to as usize, in_frames, ch, FixedSync::Both)
                .map_err(|e| Error::Resampler(e.to_string()))?;
            // The bridge clocks frames 1:1 across the resampler; insist on it
            // rather than queueing leftovers.
            if fft.input_frames_next() != in_frames || fft.output_frames_next() != out_frames {
                return Err(Error::Resampler(format!(
                    "rubato chose {}→{} frames, wanted {in_frames}→{out_frames}",
                    fft.input_frames_next(),
                    fft.output_frames_next()
                )));
            }
            Some(fft)
        };
        Ok(Self {
            inner,
            channels: ch,
            in_frames,
            out_frames,
            scratch_in: vec![0.0; in_frames * ch],
            scratch_out: vec![0.0; out_frames * ch],
        })
    }

    /// Interleaved samples one input frame must have.
    pub fn input_len(&self) -> usize {
        self.in_frames * self.channels
    }

    /// Interleaved samples one output frame has.
    pub fn output_len(&self) -> usize {
        self.out_frames * self.channels
    }

    /// Delay the resampler adds, in output samples per channel (0 when rates match).
    pub fn delay(&self) -> usize {
        self.inner.as_ref().map_or(0, |r| r.output_delay())
    }

    /// Resamples one frame; `input` must be [`input_len`](Self::input_len) long and
    /// `output` at least [`output_len`](Self::output_len). Returns samples written.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> Result<usize> {
        if input.len() != self.input_len() {
            return Err(Error::BadFrameLength {
                got: input.len(),
                expected: self.input_len().to_string(),
            });
        }
        let out_len = self.output_len();
        if output.len() < out_len {
            return Err(Error::BadFrameLength {
                got: output.len(),
                expected: format!("at least {out_len}"),
            });
        }
        let Some(fft) = self.inner.as_mut() else {
            output[..out_len].copy_from_slice(input);
            return Ok(out_len);
        };
        for (d, &s) in self.scratch_in.iter_mut().zip(input) {
            *d = i16_to_f32(s);
        }
        let map = |e: rubato::audioadapter_buffers::SizeError| Error::Resampler(e.to_string());
        let inp =
            InterleavedSlice::new(&self.scratch_in, self.channels, self.in_frames).map_err(map)?;
        let mut outp =
            InterleavedSlice::new_mut(&mut self.scratch_out, self.channels, self.out_frames)
                .map_err(map)?;
        fft.process_into_buffer(&inp, &mut outp, None)
            .map_err(|e| Error::Resampler(e.to_string()))?;
        for (d, &s) in output.iter_mut().zip(&self.scratch_out) {
            *d = f32_to_i16(s);
        }
        Ok(out_len)
    }

    /// Clears the filter history (e.g. at the start of a new talk burst).
    pub fn reset(&mut self) {
        if let Some(r) = self.inner.as_mut() {
            r.reset();
        }
        self.scratch_out.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{dominant_frequency, max_step, sine, tone_amplitude};

    /// Runs a whole signal through, 20 ms at a time, dropping the resampler's delay.
    fn run(from: u32, to: u32, signal: &[i16]) -> Vec<i16> {
        let mut r = Resampler::new(from, to, Channels::Mono).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0i16; r.output_len()];
        for frame in signal.chunks_exact(r.input_len()) {
            assert_eq!(r.process(frame, &mut buf).unwrap(), r.output_len());
            out.extend_from_slice(&buf);
        }
        out.drain(..r.delay().min(out.len()));
        out
    }

    #[test]
    fn tone_keeps_frequency_and_level_between_all_pairs() {
        for (from, to) in [
            (8000, 48000),
            (48000, 8000),
            (16000, 48000),
            (48000, 16000),
            (8000, 16000),
            (16000, 8000),
        ] {
            let tone = sine(from, 1000.0, 0.5, 0.5);
            let out = run(from, to, &tone);
            let expect = (to as usize) / 2 - r_delay(from, to);
            assert!(
                out.len() >= expect - 1,
                "{from}->{to}: {} samples",
                out.len()
            );
            // Skip the first 40 ms (filter warm-up), measure the rest.
            let body = &out[(to as usize / 25)..];
            assert_eq!(
                dominant_frequency(body, to, 950.0, 1050.0),
                1000.0,
                "{from}->{to}"
            );
            let a = tone_amplitude(body, to, 1000.0);
            assert!((a - 0.5).abs() < 0.01, "{from}->{to}: amplitude {a}");
            // No click at frame boundaries: steps no larger than the sine's own slope.
            let slope = 2.0 * std::f64::consts::PI * 1000.0 / f64::from(to) * 0.5 * 32768.0;
            let step = max_step(body);
            assert!(
                f64::from(step) < slope * 1.1,
                "{from}->{to}: step {step} vs {slope}"
            );
        }
    }

    fn r_delay(from: u32, to: u32) -> usize {
        Resampler::new(from, to, Channels::Mono).unwrap().delay()
    }

    #[test]
    fn downsampling_removes_content_above_nyquist() {
        // 6 kHz cannot exist at 8 kHz; it must not alias down to 2 kHz.
        let tone = sine(48000, 6000.0, 0.5, 0.5);
        let out = run(48000, 8000, &tone);
        let body = &out[320..];
        assert!(tone_amplitude(body, 8000, 2000.0) < 0.005);
        assert!(
            crate::pcm::rms(body) < 200.0,
            "rms {}",
            crate::pcm::rms(body)
        );
    }

    #[test]
    fn stereo_keeps_channels_apart() {
        let l = sine(16000, 500.0, 0.5, 0.3);
        let r = sine(16000, 1500.0, 0.3, 0.3);
        let mut st = Vec::new();
        for i in 0..l.len() {
            st.push(l[i]);
            st.push(r[i]);
        }
        let mut rs = Resampler::new(16000, 48000, Channels::Stereo).unwrap();
        assert_eq!(rs.input_len(), 640);
        assert_eq!(rs.output_len(), 1920);
        let mut out = vec![0i16; rs.output_len()];
        let (mut ol, mut or) = (Vec::new(), Vec::new());
        for f in st.chunks_exact(rs.input_len()) {
            rs.process(f, &mut out).unwrap();
            for lr in out.chunks_exact(2) {
                ol.push(lr[0]);
                or.push(lr[1]);
            }
        }
        let (ol, or) = (&ol[4800..], &or[4800..]);
        assert!((tone_amplitude(ol, 48000, 500.0) - 0.5).abs() < 0.01);
        assert!(tone_amplitude(ol, 48000, 1500.0) < 0.01);
        assert!((tone_amplitude(or, 48000, 1500.0) - 0.3).abs() < 0.01);
        assert!(tone_amplitude(or, 48000, 500.0) < 0.01);
    }

    #[test]
    fn same_rate_is_a_copy_and_bad_lengths_are_errors() {
        let mut r = Resampler::new(48000, 48000, Channels::Mono).unwrap();
        assert_eq!(r.delay(), 0);
        let input: Vec<i16> = (0..960).map(|i| i as i16).collect();
        let mut out = vec![0i16; 960];
        r.process(&input, &mut out).unwrap();
        assert_eq!(out, input);
        let mut r = Resampler::new(8000, 48000, Channels::Mono).unwrap();
        assert!(r.process(&[0; 159], &mut out).is_err());
        assert!(r.process(&[0; 160], &mut [0; 10]).is_err());
        assert!(Resampler::new(22050, 48000, Channels::Mono).is_err());
        // Sound-card rates convert too (the console agent's devices).
        let mut r = Resampler::new(44100, 48000, Channels::Mono).unwrap();
        assert_eq!((r.input_len(), r.output_len()), (882, 960));
        assert!(r.process(&[0; 882], &mut out).is_ok());
        assert!(Resampler::with_frame_ms(8000, 48000, Channels::Mono, 7).is_err());
        for ms in [10, 20, 40, 60] {
            for (a, b) in [(8000, 48000), (48000, 16000), (24000, 12000)] {
                Resampler::with_frame_ms(a, b, Channels::Stereo, ms).unwrap();
            }
        }
    }
}
