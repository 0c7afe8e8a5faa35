//! Mixing: `i32` accumulation of talker frames, then limiting into `i16`,
//! for the full mix (listeners) and each talker's mix-minus (everyone but
//! themselves).
//!
//! The total is summed once; a talker's mix-minus is `total - own`, so N
//! talkers cost N + 1 passes, not N².

use crate::limiter::Limiter;

/// Accumulates one frame of talker audio and renders limited mixes.
#[derive(Debug, Clone)]
pub struct Mixer {
    acc: Vec<i32>,
    scratch: Vec<i32>,
}

impl Mixer {
    /// A mixer for frames of `frame_len` interleaved samples.
    pub fn new(frame_len: usize) -> Self {
        Self {
            acc: vec![0; frame_len],
            scratch: vec![0; frame_len],
        }
    }

    /// Interleaved samples per frame.
    pub fn frame_len(&self) -> usize {
        self.acc.len()
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        (self.acc.capacity() + self.scratch.capacity()) * 4
    }

    /// Starts a new frame (silence).
    pub fn clear(&mut self) {
        self.acc.fill(0);
    }

    /// Adds one talker's frame to the total (shorter inputs add silence).
    pub fn add(&mut self, frame: &[i16]) {
        for (a, &s) in self.acc.iter_mut().zip(frame) {
            *a += i32::from(s);
        }
    }

    /// The raw (unlimited) total.
    pub fn total(&self) -> &[i32] {
        &self.acc
    }

    /// Renders the full mix through `limiter` into `out`.
    pub fn render(&self, limiter: &mut Limiter, out: &mut [i16]) {
        limiter.process(&self.acc, out);
    }

    /// Renders the mix without `own` (a talker's mix-minus) through `limiter`.
    pub fn render_minus(&mut self, own: &[i16], limiter: &mut Limiter, out: &mut [i16]) {
        for (i, (d, &a)) in self.scratch.iter_mut().zip(&self.acc).enumerate() {
            *d = a - own.get(i).map_or(0, |&s| i32::from(s));
        }
        limiter.process(&self.scratch, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{correlation, sine, tone_amplitude};

    fn mix_of(frames: &[&[i16]]) -> (Mixer, Vec<i16>) {
        let mut m = Mixer::new(960);
        m.clear();
        for f in frames {
            m.add(f);
        }
        let mut out = vec![0i16; 960];
        m.render(&mut Limiter::new(), &mut out);
        (m, out)
    }

    #[test]
    fn output_equals_the_sum_within_limiter_bounds() {
        for n in [2usize, 4, 8, 16] {
            // Quiet talkers: the sum stays under the knee, so it is exact.
            let frames: Vec<Vec<i16>> = (0..n)
                .map(|k| sine(48_000, 200.0 + 150.0 * k as f64, 0.6 / n as f64, 0.02))
                .collect();
            let refs: Vec<&[i16]> = frames.iter().map(|f| f.as_slice()).collect();
            let (_, out) = mix_of(&refs);
            for i in 0..960 {
                let sum: i32 = frames.iter().map(|f| i32::from(f[i])).sum();
                assert_eq!(i32::from(out[i]), sum, "n={n} i={i}");
            }
        }
    }

    #[test]
    fn loud_sum_is_limited_not_wrapped() {
        let loud = sine(48_000, 300.0, 0.9, 0.02);
        let frames = [&loud[..], &loud[..], &loud[..], &loud[..]];
        let mut m = Mixer::new(960);
        let mut limiter = Limiter::new();
        let mut out = vec![0i16; 960];
        for frame in 0..3 {
            m.clear();
            for f in frames {
                m.add(f);
            }
            m.render(&mut limiter, &mut out);
            for (i, &o) in out.iter().enumerate() {
                let s = m.total()[i];
                assert!(i64::from(s) * i64::from(o) >= 0, "sign flipped at {i}");
            }
            if frame > 0 {
                // Once the envelope has settled: the same signal, just quieter.
                assert!(correlation(&loud, &out) > 0.99);
                let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap();
                assert!(peak <= crate::limiter::THRESHOLD as u16);
            }
        }
    }

    #[test]
    fn mix_minus_excludes_own_voice() {
        let a = sine(48_000, 500.0, 0.3, 0.02);
        let b = sine(48_000, 1200.0, 0.3, 0.02);
        let c = sine(48_000, 2000.0, 0.3, 0.02);
        let mut m = Mixer::new(960);
        m.clear();
        for f in [&a, &b, &c] {
            m.add(f);
        }
        let mut out = vec![0i16; 960];
        m.render_minus(&a, &mut Limiter::new(), &mut out);
        assert!(
            tone_amplitude(&out, 48_000, 500.0) < 0.001,
            "own voice leaked"
        );
        assert!(tone_amplitude(&out, 48_000, 1200.0) > 0.29);
        assert!(tone_amplitude(&out, 48_000, 2000.0) > 0.29);
        // Exactly b + c.
        for i in 0..960 {
            assert_eq!(i32::from(out[i]), i32::from(b[i]) + i32::from(c[i]));
        }
        // The full mix still has everyone.
        m.render(&mut Limiter::new(), &mut out);
        assert!(tone_amplitude(&out, 48_000, 500.0) > 0.29);
    }

    #[test]
    fn short_inputs_are_silence_padded() {
        let mut m = Mixer::new(4);
        m.clear();
        m.add(&[1, 2]);
        m.add(&[1, 1, 1, 1, 1, 1]);
        assert_eq!(m.total(), &[2, 3, 1, 1]);
        let mut out = [0i16; 4];
        m.render_minus(&[5], &mut Limiter::new(), &mut out);
        assert_eq!(out, [-3, 3, 1, 1]);
    }
}
