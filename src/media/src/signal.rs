//! Synthetic test signals and signal measurements.
//!
//! Used by this crate's tests and benches and by the bridge's end-to-end audio
//! tests, which compare what arrives with what was sent (correlation, level,
//! tone frequency) rather than counting packets.

use std::f64::consts::PI;

/// A sine tone: `amplitude` in 0..=1 of full scale, `secs` long, mono.
pub fn sine(rate: u32, freq: f64, amplitude: f64, secs: f64) -> Vec<i16> {
    let n = (f64::from(rate) * secs) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amplitude * 32767.0 * (2.0 * PI * freq * t).sin()) as i16
        })
        .collect()
}

/// A deterministic speech-like signal: a gliding 110–180 Hz pitch with
/// decaying harmonics under a 4 Hz syllable envelope, peak ≈ 0.5 full scale.
///
/// Richer than a sine, so codec and mixer tests exercise real spectra.
pub fn speechlike(rate: u32, secs: f64) -> Vec<i16> {
    let n = (f64::from(rate) * secs) as usize;
    let fs = f64::from(rate);
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / fs;
            let f0 = 145.0 + 35.0 * (2.0 * PI * 0.7 * t).sin();
            phase += 2.0 * PI * f0 / fs;
            let mut v = 0.0;
            for h in 1..=12 {
                let hf = f0 * f64::from(h);
                if hf < fs / 2.0 - 200.0 {
                    v += (phase * f64::from(h)).sin() / f64::from(h);
                }
            }
            let env = 0.55 + 0.45 * (2.0 * PI * 4.0 * t).sin();
            (v * env * 0.25 * 32767.0).clamp(-32767.0, 32767.0) as i16
        })
        .collect()
}

/// Normalised correlation of two equal-length signals in [-1, 1] (0 if either is silent).
pub fn correlation(a: &[i16], b: &[i16]) -> f64 {
    let n = a.len().min(b.len());
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let (x, y) = (f64::from(a[i]), f64::from(b[i]));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// Best correlation of `b` against `a` over lags `0..max_lag` (b delayed); returns (corr, lag).
pub fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> (f64, usize) {
    let mut best = (f64::MIN, 0);
    let n = a.len().min(b.len()).saturating_sub(max_lag);
    for lag in 0..max_lag {
        let c = correlation(&a[..n], &b[lag..lag + n]);
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

/// Amplitude (0..=1 of full scale) of the `freq` component, by the Goertzel algorithm.
pub fn tone_amplitude(samples: &[i16], rate: u32, freq: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / samples.len() as f64
}

/// Frequency of the strongest tone between `lo` and `hi` Hz, searched in 1 Hz steps.
pub fn dominant_frequency(samples: &[i16], rate: u32, lo: f64, hi: f64) -> f64 {
    let mut best = (0.0, lo);
    let mut f = lo;
    while f <= hi {
        let a = tone_amplitude(samples, rate, f);
        if a > best.0 {
            best = (a, f);
        }
        f += 1.0;
    }
    best.1
}

/// Largest absolute difference between consecutive samples (a click detector).
pub fn max_step(samples: &[i16]) -> i32 {
    samples
        .windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max()
        .unwrap_or(0)
}

/// Largest absolute second difference (a sharper click detector than
/// [`max_step`]: smooth tones have a small one, a discontinuity a large one).
pub fn max_curvature(samples: &[i16]) -> i32 {
    samples
        .windows(3)
        .map(|w| (i32::from(w[2]) - 2 * i32::from(w[1]) + i32::from(w[0])).abs())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_measures_a_tone() {
        let s = sine(48_000, 1000.0, 0.5, 0.1);
        assert!((tone_amplitude(&s, 48_000, 1000.0) - 0.5).abs() < 0.01);
        assert!(tone_amplitude(&s, 48_000, 3000.0) < 0.01);
        assert_eq!(dominant_frequency(&s, 48_000, 900.0, 1100.0), 1000.0);
    }

    #[test]
    fn curvature_spots_a_discontinuity() {
        let mut s = sine(48_000, 440.0, 0.5, 0.05);
        let smooth = max_curvature(&s);
        assert!(smooth < 100, "{smooth}");
        s[1000] = s[1000].saturating_add(3000);
        assert!(max_curvature(&s) > 5000);
    }

    #[test]
    fn correlation_of_self_and_inverse() {
        let s = speechlike(16_000, 0.2);
        assert!((correlation(&s, &s) - 1.0).abs() < 1e-9);
        let inv: Vec<i16> = s.iter().map(|x| -x).collect();
        assert!((correlation(&s, &inv) + 1.0).abs() < 1e-9);
        assert_eq!(correlation(&s, &vec![0; s.len()]), 0.0);
        let mut delayed = vec![0i16; 37];
        delayed.extend_from_slice(&s);
        let (c, lag) = best_correlation(&s, &delayed, 100);
        assert_eq!(lag, 37);
        assert!(c > 0.99);
    }
}
