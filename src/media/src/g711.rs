//! G.711 µ-law and A-law (ITU-T G.711), for legacy consoles.
//!
//! Computed, not table-driven: a few shifts per sample are cheaper than the
//! cache footprint of a 64 KiB encode table when thousands of streams run.

/// µ-law bias added before the segment search (G.711 §A, 0x84 = 132).
const MULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent after biasing.
const MULAW_CLIP: i32 = 32635;

/// Encodes one linear sample as µ-law.
#[inline]
pub fn encode_mulaw(sample: i16) -> u8 {
    let s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    let mag = s.abs().min(MULAW_CLIP) + MULAW_BIAS;
    // Segment = position of the highest set bit above bit 7 (0..=7).
    let exponent = (31 - (mag as u32).leading_zeros()).saturating_sub(7).min(7) as i32;
    let mantissa = (mag >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes one µ-law byte to a linear sample.
#[inline]
pub fn decode_mulaw(byte: u8) -> i16 {
    let u = !byte;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0F);
    let mag = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS;
    if u & 0x80 != 0 {
        -mag as i16
    } else {
        mag as i16
    }
}

/// Encodes one linear sample as A-law.
#[inline]
pub fn encode_alaw(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let s = i32::from(sample) >> 3;
    let (sign, mag) = if s >= 0 { (0x80, s) } else { (0x00, -s - 1) };
    let mag = mag.min(0x0FFF);
    let code = if mag < 32 {
        mag >> 1
    } else {
        let exponent = (31 - (mag as u32).leading_zeros()) as i32 - 4; // 1..=7
        (exponent << 4) | ((mag >> exponent) & 0x0F)
    };
    ((sign | code) ^ 0x55) as u8
}

/// Decodes one A-law byte to a linear sample.
#[inline]
pub fn decode_alaw(byte: u8) -> i16 {
    let a = i32::from(byte ^ 0x55);
    let exponent = (a >> 4) & 0x07;
    let mantissa = a & 0x0F;
    let mag = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        mag as i16
    } else {
        -mag as i16
    }
}

/// The two G.711 companding laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law (PCMU, North America / Japan).
    Mu,
    /// A-law (PCMA, Europe / China).
    A,
}

/// Encodes PCM into G.711 bytes; writes `min(pcm.len(), out.len())` and returns that count.
pub fn encode(law: Law, pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    let f = match law {
        Law::Mu => encode_mulaw,
        Law::A => encode_alaw,
    };
    for (o, &s) in out.iter_mut().zip(pcm).take(n) {
        *o = f(s);
    }
    n
}

/// Decodes G.711 bytes into PCM; writes `min(bytes.len(), out.len())` and returns that count.
pub fn decode(law: Law, bytes: &[u8], out: &mut [i16]) -> usize {
    let n = bytes.len().min(out.len());
    let f = match law {
        Law::Mu => decode_mulaw,
        Law::A => decode_alaw,
    };
    for (o, &b) in out.iter_mut().zip(bytes).take(n) {
        *o = f(b);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{correlation, sine};

    #[test]
    fn known_code_points() {
        // Silence and extremes from the G.711 tables.
        assert_eq!(encode_mulaw(0), 0xFF);
        assert_eq!(decode_mulaw(0xFF), 0);
        assert_eq!(decode_mulaw(0x7F), 0);
        assert_eq!(decode_mulaw(0x00), -32124);
        assert_eq!(decode_mulaw(0x80), 32124);
        assert_eq!(encode_mulaw(i16::MAX), 0x80);
        assert_eq!(encode_mulaw(i16::MIN), 0x00);
        assert_eq!(encode_alaw(0), 0xD5);
        assert_eq!(decode_alaw(0xD5), 8);
        assert_eq!(decode_alaw(0x55), -8);
        assert_eq!(decode_alaw(0xAA), 32256);
        assert_eq!(decode_alaw(0x2A), -32256);
        assert_eq!(encode_alaw(i16::MAX), 0xAA);
        assert_eq!(encode_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_decodes_and_reencodes_to_itself() {
        for b in 0..=255u8 {
            let m = decode_mulaw(b);
            // 0x7F and 0xFF both mean zero; zero encodes as 0xFF.
            if b != 0x7F {
                assert_eq!(encode_mulaw(m), b, "mu {b:#x} -> {m}");
            }
            assert_eq!(encode_alaw(decode_alaw(b)), b, "a {b:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_logarithmic() {
        // G.711 keeps roughly 1/16 relative precision above the linear segment.
        for s in (-32000i32..32000).step_by(7) {
            let s = s as i16;
            let em = (i32::from(decode_mulaw(encode_mulaw(s))) - i32::from(s)).abs();
            let ea = (i32::from(decode_alaw(encode_alaw(s))) - i32::from(s)).abs();
            let bound = (i32::from(s).abs() / 16).max(16);
            assert!(em <= bound, "mu {s}: err {em}");
            assert!(ea <= bound, "a {s}: err {ea}");
        }
    }

    #[test]
    fn monotonic() {
        let mut prev_m = i16::MIN;
        let mut prev_a = i16::MIN;
        for s in (i16::MIN..=i16::MAX).step_by(3) {
            let m = decode_mulaw(encode_mulaw(s));
            let a = decode_alaw(encode_alaw(s));
            assert!(m >= prev_m && a >= prev_a, "at {s}");
            prev_m = m;
            prev_a = a;
        }
    }

    #[test]
    fn tone_survives_both_laws() {
        let tone = sine(8000, 1000.0, 0.5, 0.1);
        for law in [Law::Mu, Law::A] {
            let mut bytes = vec![0u8; tone.len()];
            assert_eq!(encode(law, &tone, &mut bytes), tone.len());
            let mut back = vec![0i16; tone.len()];
            assert_eq!(decode(law, &bytes, &mut back), tone.len());
            assert!(correlation(&tone, &back) > 0.999, "{law:?}");
        }
        assert_eq!(encode(Law::Mu, &tone, &mut [0u8; 3]), 3);
    }
}
