//! Mumble's prefix varint, used by the legacy voice packet format.
//!
//! The leading bits of the first byte say how many bytes follow (big endian):
//!
//! | first byte  | value                                               | bytes |
//! |-------------|-----------------------------------------------------|-------|
//! | `0xxxxxxx`  | 7-bit positive                                      | 1     |
//! | `10xxxxxx`  | 14-bit positive                                     | 2     |
//! | `110xxxxx`  | 21-bit positive                                     | 3     |
//! | `1110xxxx`  | 28-bit positive                                     | 4     |
//! | `111100__`  | 32-bit positive in the next 4 bytes                 | 5     |
//! | `111101__`  | 64-bit in the next 8 bytes                          | 9     |
//! | `111110__`  | negative: bitwise NOT of the varint that follows    | 1 + n |
//! | `111111xx`  | small negative: NOT of `xx` (−1 … −4)               | 1     |
//!
//! Values are 64-bit patterns: the encoder picks a negative form exactly when the
//! pattern, read as `i64`, lies in `-2^32 ..= -1` (as Mumble's `PacketDataStream` does),
//! so `u64::MAX` is one byte (`0xFC`). Bits marked `_` are ignored on decode.

use bytes::BufMut;

/// Longest canonical encoding (the `0xF4` 64-bit form).
pub const MAX_LEN: usize = 9;

/// How many `0xF8` (negate) prefixes may nest before the input is refused.
///
/// The encoder never nests them; Mumble's decoder gives up at the same depth, so a
/// packet of repeated `0xF8` cannot make us loop over a whole datagram for one number.
pub const MAX_NEGATIONS: usize = 8;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    /// The input ended before the varint did.
    #[error("varint truncated")]
    Truncated,
    /// More nested negation prefixes than [`MAX_NEGATIONS`].
    #[error("varint nests more than {MAX_NEGATIONS} negation prefixes")]
    TooManyNegations,
}

/// Whether Mumble writes this bit pattern in one of the negative forms.
fn is_small_negative(value: u64) -> bool {
    value & (1 << 63) != 0 && !value < 0x1_0000_0000
}

/// Bytes of a positive-form encoding of `value`.
fn positive_len(value: u64) -> usize {
    match value {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        0x1000_0000..0x1_0000_0000 => 5,
        _ => 9,
    }
}

/// Number of bytes [`encode`] writes for `value`.
pub fn encoded_len(value: u64) -> usize {
    if is_small_negative(value) {
        let magnitude = !value;
        if magnitude <= 3 {
            1
        } else {
            1 + positive_len(magnitude)
        }
    } else {
        positive_len(value)
    }
}

/// Appends the shortest encoding of the 64-bit pattern `value` to `out`.
pub fn encode(value: u64, out: &mut impl BufMut) {
    let mut v = value;
    if is_small_negative(v) {
        v = !v;
        if v <= 3 {
            out.put_u8(0xFC | v as u8);
            return;
        }
        out.put_u8(0xF8);
    }
    // The masks drop the length-prefix bits that `positive_len` guarantees are free.
    match positive_len(v) {
        1 => out.put_u8(v as u8),
        2 => out.put_u16(0x8000 | v as u16),
        3 => {
            out.put_u8(0xC0 | (v >> 16) as u8);
            out.put_u16(v as u16);
        }
        4 => out.put_u32(0xE000_0000 | v as u32),
        5 => {
            out.put_u8(0xF0);
            out.put_u32(v as u32);
        }
        _ => {
            out.put_u8(0xF4);
            out.put_u64(v);
        }
    }
}

/// Appends a signed value; same bytes as [`encode`] of its two's-complement pattern.
pub fn encode_i64(value: i64, out: &mut impl BufMut) {
    encode(value as u64, out);
}

/// Reads one varint from the start of `input`: the 64-bit pattern and the bytes consumed.
///
/// Accepts non-canonical encodings (e.g. `0x80 0x05` for 5) as Mumble does.
pub fn decode(input: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut pos = 0;
    let mut negations = 0;
    loop {
        let first = *input.get(pos).ok_or(VarintError::Truncated)?;
        pos += 1;
        let (high, following) = match first {
            0x00..=0x7F => (u64::from(first), 0),
            0x80..=0xBF => (u64::from(first & 0x3F), 1),
            0xC0..=0xDF => (u64::from(first & 0x1F), 2),
            0xE0..=0xEF => (u64::from(first & 0x0F), 3),
            0xF0..=0xF3 => (0, 4),
            0xF4..=0xF7 => (0, 8),
            0xF8..=0xFB => {
                negations += 1;
                if negations > MAX_NEGATIONS {
                    return Err(VarintError::TooManyNegations);
                }
                continue;
            }
            0xFC..=0xFF => (!u64::from(first & 0x03), 0),
        };
        let tail = input
            .get(pos..pos + following)
            .ok_or(VarintError::Truncated)?;
        pos += following;
        let value = tail.iter().fold(high, |acc, b| acc << 8 | u64::from(*b));
        // Each 0xF8 prefix negates what follows; an even number cancels out.
        let value = if negations % 2 == 1 { !value } else { value };
        return Ok((value, pos));
    }
}

/// Reads one varint as a signed value (see [`decode`]).
pub fn decode_i64(input: &[u8]) -> Result<(i64, usize), VarintError> {
    decode(input).map(|(v, n)| (v as i64, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        assert_eq!(out.len(), encoded_len(v), "encoded_len({v:#x})");
        out
    }

    #[test]
    fn known_encodings() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (0x7F, &[0x7F]),
            (0x80, &[0x80, 0x80]),
            (0x3FFF, &[0xBF, 0xFF]),
            (0x4000, &[0xC0, 0x40, 0x00]),
            (0x1F_FFFF, &[0xDF, 0xFF, 0xFF]),
            (0x20_0000, &[0xE0, 0x20, 0x00, 0x00]),
            (0x0FFF_FFFF, &[0xEF, 0xFF, 0xFF, 0xFF]),
            (0x1000_0000, &[0xF0, 0x10, 0x00, 0x00, 0x00]),
            (0xFFFF_FFFF, &[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]),
            (0x1_0000_0000, &[0xF4, 0, 0, 0, 0x01, 0, 0, 0, 0]),
            // Negative forms: -1 .. -4 in one byte, then 0xF8 + magnitude.
            (-1i64 as u64, &[0xFC]),
            (-4i64 as u64, &[0xFF]),
            (-5i64 as u64, &[0xF8, 0x04]),
            (
                -0x1_0000_0000i64 as u64,
                &[0xF8, 0xF0, 0xFF, 0xFF, 0xFF, 0xFF],
            ),
            // Just below the negative range: plain 64-bit form.
            (
                -0x1_0000_0001i64 as u64,
                &[0xF4, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF],
            ),
            (1 << 63, &[0xF4, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        ];
        for (value, bytes) in cases {
            assert_eq!(enc(*value), *bytes, "encode {value:#x}");
            assert_eq!(
                decode(bytes),
                Ok((*value, bytes.len())),
                "decode {bytes:02x?}"
            );
        }
    }

    #[test]
    fn signed_helpers() {
        let mut out = Vec::new();
        encode_i64(-2, &mut out);
        assert_eq!(out, [0xFD]);
        assert_eq!(decode_i64(&out), Ok((-2, 1)));
        assert_eq!(decode_i64(&[0xF8, 0x80, 0x80]), Ok((!0x80, 3)));
    }

    #[test]
    fn decode_stops_at_the_end_of_the_varint() {
        assert_eq!(decode(&[0x05, 0xFF, 0xFF]), Ok((5, 1)));
        assert_eq!(decode(&[0x81, 0x2C, 0x00]), Ok((300, 2)));
    }

    #[test]
    fn ignored_bits_and_non_canonical_forms_are_accepted() {
        assert_eq!(decode(&[0xF3, 0, 0, 0, 7]), Ok((7, 5)));
        assert_eq!(decode(&[0xF7, 0, 0, 0, 0, 0, 0, 0, 7]), Ok((7, 9)));
        assert_eq!(decode(&[0x80, 0x05]), Ok((5, 2)));
        // Two negations cancel.
        assert_eq!(decode(&[0xF8, 0xF8, 0x09]), Ok((9, 3)));
        assert_eq!(decode(&[0xF8, 0xFC]), Ok((0, 2)));
    }

    #[test]
    fn truncation_is_an_error() {
        let full = enc(0x1_0000_0000);
        for cut in 0..full.len() {
            assert_eq!(
                decode(&full[..cut]),
                Err(VarintError::Truncated),
                "cut at {cut}"
            );
        }
        assert_eq!(decode(&[0xF8]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0xC0, 0x01]), Err(VarintError::Truncated));
    }

    #[test]
    fn deep_negation_is_refused() {
        // Up to MAX_NEGATIONS (8) prefixes are read, like Mumble; an even count cancels.
        let mut bytes = vec![0xF8; MAX_NEGATIONS];
        bytes.push(0x01);
        assert_eq!(decode(&bytes), Ok((1, MAX_NEGATIONS + 1)));
        assert_eq!(decode(&bytes[1..]), Ok((!1, MAX_NEGATIONS)));
        let too_deep = vec![0xF8; MAX_NEGATIONS + 1];
        assert_eq!(decode(&too_deep), Err(VarintError::TooManyNegations));
    }

    #[test]
    fn boundaries_round_trip() {
        for shift in 0..64 {
            for delta in [-1i64, 0, 1] {
                let v = (1u64 << shift).wrapping_add(delta as u64);
                for v in [v, !v] {
                    let bytes = enc(v);
                    assert_eq!(decode(&bytes), Ok((v, bytes.len())), "{v:#x}");
                }
            }
        }
    }
}
