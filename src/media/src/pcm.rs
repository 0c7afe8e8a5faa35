//! PCM16 helpers: channel layouts, mono/stereo conversion, wire (little-endian) framing.
//!
//! All PCM in the engine is interleaved `i16`. WebRTC peers often send stereo
//! Opus while PTT is mono, so the bridge down-mixes on the way in and
//! duplicates on the way out.

use crate::error::{Error, Result};

/// Number of interleaved channels in a PCM buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channels {
    /// One channel.
    Mono = 1,
    /// Two interleaved channels, left first.
    Stereo = 2,
}

impl Channels {
    /// The channel count as a number.
    pub const fn count(self) -> usize {
        self as usize
    }

    /// Parses a channel count (1 or 2).
    pub fn from_count(n: usize) -> Option<Self> {
        match n {
            1 => Some(Channels::Mono),
            2 => Some(Channels::Stereo),
            _ => None,
        }
    }

    pub(crate) fn to_opus(self) -> opus::Channels {
        match self {
            Channels::Mono => opus::Channels::Mono,
            Channels::Stereo => opus::Channels::Stereo,
        }
    }
}

/// Samples per channel in one frame of `ms` milliseconds at `rate` Hz.
pub const fn samples_per_frame(rate: u32, ms: u32) -> usize {
    (rate as usize * ms as usize) / 1000
}

/// Down-mixes interleaved stereo to mono by averaging L and R (no clipping possible).
///
/// Writes `min(stereo.len() / 2, mono.len())` samples and returns that count.
pub fn stereo_to_mono(stereo: &[i16], mono: &mut [i16]) -> usize {
    let n = (stereo.len() / 2).min(mono.len());
    for (dst, lr) in mono.iter_mut().zip(stereo.chunks_exact(2)).take(n) {
        // Average in i32 so L+R cannot overflow.
        *dst = ((i32::from(lr[0]) + i32::from(lr[1])) >> 1) as i16;
    }
    n
}

/// Up-mixes mono to interleaved stereo by duplicating each sample.
///
/// Writes `min(mono.len(), stereo.len() / 2)` frames and returns that count.
pub fn mono_to_stereo(mono: &[i16], stereo: &mut [i16]) -> usize {
    let n = mono.len().min(stereo.len() / 2);
    for (lr, &s) in stereo.chunks_exact_mut(2).zip(mono).take(n) {
        lr[0] = s;
        lr[1] = s;
    }
    n
}

/// Converts between channel layouts; returns samples per channel written.
pub fn convert_channels(input: &[i16], from: Channels, output: &mut [i16], to: Channels) -> usize {
    match (from, to) {
        (Channels::Mono, Channels::Stereo) => mono_to_stereo(input, output),
        (Channels::Stereo, Channels::Mono) => stereo_to_mono(input, output),
        (a, _) => {
            let n = input.len().min(output.len());
            output[..n].copy_from_slice(&input[..n]);
            n / a.count()
        }
    }
}

/// Serialises samples as PCM16 little-endian (the "L16"-style payload simple clients use).
pub fn to_le_bytes(samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// Parses PCM16 little-endian bytes. An odd trailing byte is an error, not silently dropped.
pub fn from_le_bytes(bytes: &[u8], out: &mut Vec<i16>) -> Result<()> {
    if !bytes.len().is_multiple_of(2) {
        return Err(Error::BadFrameLength {
            got: bytes.len(),
            expected: "an even number of bytes".into(),
        });
    }
    out.reserve(bytes.len() / 2);
    out.extend(
        bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]])),
    );
    Ok(())
}

/// Converts an `i16` sample to `f32` in [-1, 1).
#[inline]
pub fn i16_to_f32(s: i16) -> f32 {
    f32::from(s) / 32768.0
}

/// Converts an `f32` sample to `i16`, saturating instead of wrapping.
#[inline]
pub fn f32_to_i16(s: f32) -> i16 {
    // `as` saturates for floats (and maps NaN to 0), which is what we want.
    (s * 32768.0).round() as i16
}

/// Root-mean-square of a buffer, in linear i16 units (0 for an empty buffer).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmix_averages_without_overflow() {
        let stereo = [i16::MAX, i16::MAX, i16::MIN, i16::MIN, 100, -100, 1000, 0];
        let mut mono = [0i16; 4];
        assert_eq!(stereo_to_mono(&stereo, &mut mono), 4);
        assert_eq!(mono, [i16::MAX, i16::MIN, 0, 500]);
    }

    #[test]
    fn upmix_duplicates_and_round_trips() {
        let mono = [1i16, -2, 3];
        let mut stereo = [0i16; 6];
        assert_eq!(mono_to_stereo(&mono, &mut stereo), 3);
        assert_eq!(stereo, [1, 1, -2, -2, 3, 3]);
        let mut back = [0i16; 3];
        stereo_to_mono(&stereo, &mut back);
        assert_eq!(back, mono);
    }

    #[test]
    fn short_outputs_are_respected() {
        let mut small = [0i16; 1];
        assert_eq!(mono_to_stereo(&[5, 6], &mut small), 0);
        assert_eq!(stereo_to_mono(&[5, 6, 7, 8], &mut small), 1);
        assert_eq!(small, [5]);
    }

    #[test]
    fn le_bytes_round_trip_and_reject_odd() {
        let s = [0i16, 1, -1, i16::MAX, i16::MIN];
        let mut b = Vec::new();
        to_le_bytes(&s, &mut b);
        assert_eq!(&b[..4], &[0, 0, 1, 0]);
        let mut back = Vec::new();
        from_le_bytes(&b, &mut back).unwrap();
        assert_eq!(back, s);
        assert!(from_le_bytes(&[1, 2, 3], &mut back).is_err());
    }

    #[test]
    fn float_conversion_saturates() {
        assert_eq!(f32_to_i16(2.0), i16::MAX);
        assert_eq!(f32_to_i16(-2.0), i16::MIN);
        assert_eq!(f32_to_i16(f32::NAN), 0);
        assert_eq!(f32_to_i16(i16_to_f32(1234)), 1234);
    }
}
