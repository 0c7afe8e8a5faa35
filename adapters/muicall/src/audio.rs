//! Console audio (bridge extension): binary WebSocket frames on the `/muicall` socket.
//!
//! Every binary frame is a 12-byte header followed by the payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, always 1 |
//! | 1 | 1 | codec: 0 Opus (48 kHz mono), 1 PCM16 8 kHz, 2 PCM16 16 kHz, 3 PCM16 48 kHz |
//! | 2 | 1 | flags: bit 0 = last frame of a talk burst; other bits 0 |
//! | 3 | 1 | reserved, 0 |
//! | 4 | 4 | sequence, big endian, in 10 ms units (a 20 ms frame advances it by 2) |
//! | 8 | 4 | source, big endian: the talker's member id (bridge → console); 0 from a console |
//!
//! Payload: one Opus packet (mono, 10–60 ms), or 16-bit little-endian mono PCM samples
//! (any whole number of samples, up to [`MAX_PCM_MS`] per frame; 20 ms is usual).

use thiserror::Error;

/// Header length in bytes.
pub const HEADER_LEN: usize = 12;
/// The only version.
pub const VERSION: u8 = 1;
/// Flag: last frame of a talk burst.
pub const FLAG_LAST: u8 = 1;
/// Most audio one PCM frame may carry (ms).
pub const MAX_PCM_MS: u32 = 120;
/// Largest Opus payload accepted (Mumble's 13-bit length limit).
pub const MAX_OPUS_BYTES: usize = 0x1fff;

/// Codec of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// One Opus packet, 48 kHz mono.
    Opus,
    /// PCM16 little endian at this rate (8000, 16000 or 48000).
    Pcm16(u32),
}

impl Codec {
    /// The header byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Opus => 0,
            Self::Pcm16(8_000) => 1,
            Self::Pcm16(16_000) => 2,
            _ => 3,
        }
    }

    /// From the header byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Opus,
            1 => Self::Pcm16(8_000),
            2 => Self::Pcm16(16_000),
            3 => Self::Pcm16(48_000),
            _ => return None,
        })
    }

    /// Sample rate.
    pub fn rate(self) -> u32 {
        match self {
            Self::Opus => 48_000,
            Self::Pcm16(r) => r,
        }
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Codec of the payload.
    pub codec: Codec,
    /// Last frame of a talk burst.
    pub last: bool,
    /// Sequence in 10 ms units.
    pub seq: u32,
    /// Talker id (0 when unknown / from a console).
    pub source: u32,
}

/// Why a binary frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AudioError {
    /// Shorter than the header.
    #[error("audio frame of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    /// Unknown version.
    #[error("audio frame version {0} is not {VERSION}")]
    Version(u8),
    /// Unknown codec byte.
    #[error("audio codec {0} is not 0 (Opus) or 1-3 (PCM16 8/16/48 kHz)")]
    Codec(u8),
    /// No payload.
    #[error("audio frame has no payload")]
    Empty,
    /// PCM with an odd byte count.
    #[error("PCM16 payload of {0} bytes is not a whole number of samples")]
    OddPcm(usize),
    /// Too much audio in one frame.
    #[error("audio payload of {bytes} bytes is too large (limit {limit})")]
    TooLarge {
        /// Payload size.
        bytes: usize,
        /// The limit for this codec.
        limit: usize,
    },
}

impl Header {
    /// Parses a frame into its header and payload, checking the payload's size.
    pub fn parse(frame: &[u8]) -> Result<(Header, &[u8]), AudioError> {
        if frame.len() < HEADER_LEN {
            return Err(AudioError::TooShort(frame.len()));
        }
        if frame[0] != VERSION {
            return Err(AudioError::Version(frame[0]));
        }
        let codec = Codec::from_byte(frame[1]).ok_or(AudioError::Codec(frame[1]))?;
        let payload = &frame[HEADER_LEN..];
        if payload.is_empty() {
            return Err(AudioError::Empty);
        }
        let limit = match codec {
            Codec::Opus => MAX_OPUS_BYTES,
            Codec::Pcm16(rate) => (rate * MAX_PCM_MS / 1000) as usize * 2,
        };
        if payload.len() > limit {
            return Err(AudioError::TooLarge {
                bytes: payload.len(),
                limit,
            });
        }
        if matches!(codec, Codec::Pcm16(_)) && !payload.len().is_multiple_of(2) {
            return Err(AudioError::OddPcm(payload.len()));
        }
        let header = Header {
            codec,
            last: frame[2] & FLAG_LAST != 0,
            seq: u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
            source: u32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]),
        };
        Ok((header, payload))
    }

    /// Appends this header and `payload` to `out` as one frame.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + payload.len());
        out.extend_from_slice(&[
            VERSION,
            self.codec.to_byte(),
            u8::from(self.last) * FLAG_LAST,
            0,
        ]);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.source.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// A whole frame.
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        self.write(payload, &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_hand_checked_bytes() {
        let h = Header {
            codec: Codec::Pcm16(16_000),
            last: true,
            seq: 0x0102_0304,
            source: 169918,
        };
        let f = h.frame(&[1, 0, 2, 0]);
        assert_eq!(&f[..12], &[1, 2, 1, 0, 1, 2, 3, 4, 0, 0x02, 0x97, 0xbe]);
        assert_eq!(Header::parse(&f).unwrap(), (h, &[1u8, 0, 2, 0][..]));
    }

    #[test]
    fn bad_frames_are_named() {
        assert_eq!(Header::parse(&[1, 0]), Err(AudioError::TooShort(2)));
        let mut f = Header {
            codec: Codec::Opus,
            last: false,
            seq: 0,
            source: 0,
        }
        .frame(&[0xf8]);
        f[0] = 2;
        assert_eq!(Header::parse(&f), Err(AudioError::Version(2)));
        f[0] = 1;
        f[1] = 9;
        assert_eq!(Header::parse(&f), Err(AudioError::Codec(9)));
        assert_eq!(Header::parse(&f[..12]).unwrap_err(), AudioError::Codec(9));
        let pcm = Header {
            codec: Codec::Pcm16(8_000),
            last: false,
            seq: 0,
            source: 0,
        };
        assert_eq!(
            Header::parse(&pcm.frame(&[1, 2, 3])),
            Err(AudioError::OddPcm(3))
        );
        assert_eq!(Header::parse(&pcm.frame(&[])), Err(AudioError::Empty));
        assert!(matches!(
            Header::parse(&pcm.frame(&vec![0; 8_000 * 2])),
            Err(AudioError::TooLarge { limit: 1920, .. })
        ));
    }

    #[test]
    fn codecs_map_to_bytes_and_rates() {
        for b in 0..4 {
            let c = Codec::from_byte(b).unwrap();
            assert_eq!(c.to_byte(), b);
        }
        assert_eq!(Codec::from_byte(2).unwrap().rate(), 16_000);
        assert_eq!(Codec::Opus.rate(), 48_000);
        assert_eq!(Codec::from_byte(4), None);
    }
}
