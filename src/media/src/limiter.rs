//! Soft limiter for mixes: keeps an `i32` sum inside `i16` without
//! wrap-around and without hard clipping.
//!
//! Two stages: a per-frame gain envelope (instant attack, ramped across the
//! frame so the gain never steps; slow release) brings loud mixes down to the
//! threshold, and a soft knee catches what the ramp lets through. Below the
//! threshold, with the gain recovered, the output is the input exactly.

/// Level the envelope aims for (≈ -1.2 dBFS).
pub const THRESHOLD: i32 = 28_000;
/// Start of the soft knee; samples below it pass unchanged.
const KNEE: f32 = 24_000.0;
/// Largest output magnitude.
const CEILING: f32 = 32_767.0;
/// Release per 20 ms frame: the gain closes 1/8 of its distance to 1.0
/// (≈ 150 ms to recover), slow enough not to pump on syllables.
const RELEASE: f32 = 0.125;

/// Per-output limiter state. One per distinct mix (the shared listener mix,
/// and each talker's mix-minus).
#[derive(Debug, Clone, Copy)]
pub struct Limiter {
    gain: f32,
}

impl Default for Limiter {
    fn default() -> Self {
        Self { gain: 1.0 }
    }
}

#[inline]
fn soft_knee(x: f32) -> f32 {
    let a = x.abs();
    if a <= KNEE {
        return x;
    }
    // Smooth, monotonic approach to the ceiling: a rational curve (no tanh
    // per sample) with slope 1 at the knee.
    let range = CEILING - KNEE;
    let over = a - KNEE;
    let y = KNEE + range * over / (over + range);
    y.copysign(x)
}

impl Limiter {
    /// A limiter at unity gain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Current envelope gain (1.0 = untouched).
    pub fn gain(&self) -> f32 {
        self.gain
    }

    /// Limits one frame of summed samples into `out` (same length; extra
    /// elements of the longer slice are ignored).
    pub fn process(&mut self, input: &[i32], out: &mut [i16]) {
        let n = input.len().min(out.len());
        let input = &input[..n];
        let peak = input.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        let wanted = if peak as i32 > THRESHOLD {
            THRESHOLD as f32 / peak as f32
        } else {
            1.0
        };
        // Attack at once; release slowly, but never above what this frame allows.
        let released = self.gain + (1.0 - self.gain) * RELEASE;
        let target = wanted.min(released);
        // Snap the last 0.01 dB so the exact fast path comes back.
        let target = if target > 0.999 { 1.0 } else { target };
        if self.gain == 1.0 && target == 1.0 {
            // Fast path, the common case: nothing to do but the (rare) knee.
            for (o, &s) in out.iter_mut().zip(input) {
                *o = if s.unsigned_abs() <= KNEE as u32 {
                    s as i16
                } else {
                    soft_knee(s as f32) as i16
                };
            }
            return;
        }
        let step = (target - self.gain) / n.max(1) as f32;
        let mut g = self.gain;
        for (o, &s) in out.iter_mut().zip(input) {
            g += step;
            *o = soft_knee(s as f32 * g) as i16;
        }
        self.gain = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_input_passes_exactly() {
        let mut l = Limiter::new();
        let input: Vec<i32> = (0..960).map(|i| (i * 37 % 40_000) - 20_000).collect();
        let mut out = vec![0i16; 960];
        l.process(&input, &mut out);
        for (a, b) in input.iter().zip(&out) {
            assert_eq!(*a, i32::from(*b));
        }
        assert_eq!(l.gain(), 1.0);
    }

    #[test]
    fn loud_input_never_wraps_and_stays_monotonic() {
        let mut l = Limiter::new();
        // 4 full-scale talkers in phase: 4 × 32767.
        let input: Vec<i32> = (0..960)
            .map(|i| (131_068.0 * (i as f64 * 0.05).sin()) as i32)
            .collect();
        let mut out = vec![0i16; 960];
        for _ in 0..3 {
            l.process(&input, &mut out);
            for (a, b) in input.iter().zip(&out) {
                // Same sign as the input: a wrap-around would flip it.
                assert!(i64::from(*a) * i64::from(*b) >= 0, "{a} -> {b}");
            }
        }
        // After the first frame the envelope holds the peak near the threshold.
        let peak = out.iter().map(|s| i32::from(*s).abs()).max().unwrap();
        assert!(peak <= THRESHOLD, "peak {peak}");
        assert!(peak > THRESHOLD - 2000, "peak {peak}");
        assert!(l.gain() < 0.3);
    }

    #[test]
    fn extreme_values_are_safe() {
        let mut l = Limiter::new();
        let mut out = [0i16; 4];
        l.process(&[i32::MAX, i32::MIN, 0, -1], &mut out);
        assert!(out[0] > 0 && out[1] < 0);
        l.process(&[], &mut []);
        l.process(&[1, 2], &mut out); // mismatched lengths
    }

    #[test]
    fn gain_recovers_slowly_without_steps() {
        let mut l = Limiter::new();
        let loud = vec![100_000i32; 960];
        let mut out = vec![0i16; 960];
        l.process(&loud, &mut out);
        let g0 = l.gain();
        let quiet = vec![10_000i32; 960];
        let mut prev = None;
        for _ in 0..60 {
            l.process(&quiet, &mut out);
            // Ramped gain: neighbouring samples differ by a tiny amount.
            let step = out.windows(2).map(|w| (w[1] - w[0]).abs()).max().unwrap();
            assert!(step < 20, "step {step}");
            if let Some(p) = prev {
                assert!(l.gain() >= p);
            }
            prev = Some(l.gain());
        }
        assert!(g0 < 0.3);
        assert_eq!(l.gain(), 1.0, "recovered after ~1 s of quiet input");
    }

    #[test]
    fn knee_is_monotonic_and_bounded() {
        let mut prev = -1.0f32;
        for x in (0..2_000_000).step_by(997) {
            let y = soft_knee(x as f32);
            assert!(y >= prev && y <= CEILING);
            prev = y;
        }
    }
}
