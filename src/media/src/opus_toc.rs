//! Opus packet inspection without decoding (RFC 6716 §3): the TOC byte gives
//! mode, bandwidth and frame duration; the frame-count code gives how many
//! frames the packet carries. Pass-through needs exactly this to stamp RTP
//! timestamps and PTT sequence numbers for 2.5..120 ms packets.
//!
//! [`parse`] also validates the framing (requirements R1–R7 of §3.4) so a
//! packet it accepts is one libopus would accept, and it never panics.

use crate::error::{Error, Result};

/// Samples per channel at 48 kHz in 120 ms, the longest legal packet.
pub const MAX_PACKET_SAMPLES_48K: u32 = 5760;
/// Largest size of a single Opus frame in bytes (R2).
const MAX_FRAME_BYTES: usize = 1275;

/// The codec mode a TOC configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SILK only (speech, up to wideband).
    Silk,
    /// SILK + CELT (super-wideband / fullband speech).
    Hybrid,
    /// CELT only (music, low delay).
    Celt,
}

/// Audio bandwidth a TOC configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bandwidth {
    /// 4 kHz.
    Narrow,
    /// 6 kHz.
    Medium,
    /// 8 kHz.
    Wide,
    /// 12 kHz.
    SuperWide,
    /// 20 kHz.
    Full,
}

/// The decoded TOC byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toc(pub u8);

impl Toc {
    /// Configuration number 0..=31.
    pub fn config(self) -> u8 {
        self.0 >> 3
    }

    /// Whether the frames are coded as stereo.
    pub fn stereo(self) -> bool {
        self.0 & 0x04 != 0
    }

    /// Frame-count code 0..=3.
    pub fn code(self) -> u8 {
        self.0 & 0x03
    }

    /// Codec mode.
    pub fn mode(self) -> Mode {
        match self.config() {
            0..=11 => Mode::Silk,
            12..=15 => Mode::Hybrid,
            _ => Mode::Celt,
        }
    }

    /// Audio bandwidth.
    pub fn bandwidth(self) -> Bandwidth {
        match self.config() {
            0..=3 => Bandwidth::Narrow,
            4..=7 => Bandwidth::Medium,
            8..=11 => Bandwidth::Wide,
            12..=13 => Bandwidth::SuperWide,
            14..=15 => Bandwidth::Full,
            16..=19 => Bandwidth::Narrow,
            20..=23 => Bandwidth::Wide,
            24..=27 => Bandwidth::SuperWide,
            _ => Bandwidth::Full,
        }
    }

    /// Duration of one frame in samples at 48 kHz (120 = 2.5 ms .. 2880 = 60 ms).
    pub fn frame_samples_48k(self) -> u32 {
        let c = self.config();
        match c {
            0..=11 => [480, 960, 1920, 2880][usize::from(c & 3)],
            12..=15 => [480, 960][usize::from(c & 1)],
            _ => [120, 240, 480, 960][usize::from(c & 3)],
        }
    }
}

/// What a packet carries, learnt from its framing alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// The TOC byte.
    pub toc: Toc,
    /// Number of frames (1..=48).
    pub frames: u8,
    /// Total duration in samples per channel at 48 kHz.
    pub samples_48k: u32,
}

impl PacketInfo {
    /// Duration in samples per channel at `rate` Hz.
    pub fn samples_at(&self, rate: u32) -> u32 {
        (u64::from(self.samples_48k) * u64::from(rate) / 48_000) as u32
    }

    /// Duration in microseconds.
    pub fn duration_us(&self) -> u32 {
        self.samples_48k * 1000 / 48
    }
}

/// Reads a frame length (§3.2.1): 1 byte below 252, else 2 bytes. Returns (length, bytes used).
fn frame_len(data: &[u8]) -> Result<(usize, usize)> {
    match data {
        [] => Err(Error::MalformedPacket("missing frame length")),
        [b0, ..] if *b0 < 252 => Ok((usize::from(*b0), 1)),
        [_] => Err(Error::MalformedPacket("truncated frame length")),
        [b0, b1, ..] => Ok((usize::from(*b1) * 4 + usize::from(*b0), 2)),
    }
}

/// Inspects and validates an Opus packet's framing; never decodes audio.
pub fn parse(packet: &[u8]) -> Result<PacketInfo> {
    let Some((&toc, rest)) = packet.split_first() else {
        return Err(Error::MalformedPacket("empty packet"));
    };
    let toc = Toc(toc);
    let per_frame = toc.frame_samples_48k();
    let frames: usize = match toc.code() {
        0 => {
            if rest.len() > MAX_FRAME_BYTES {
                return Err(Error::MalformedPacket("frame longer than 1275 bytes"));
            }
            1
        }
        1 => {
            if rest.len() % 2 != 0 {
                return Err(Error::MalformedPacket("code 1 with odd payload"));
            }
            if rest.len() / 2 > MAX_FRAME_BYTES {
                return Err(Error::MalformedPacket("frame longer than 1275 bytes"));
            }
            2
        }
        2 => {
            let (first, used) = frame_len(rest)?;
            let remaining = rest.len() - used;
            if first > remaining {
                return Err(Error::MalformedPacket("code 2 first frame overruns"));
            }
            if remaining - first > MAX_FRAME_BYTES {
                return Err(Error::MalformedPacket("frame longer than 1275 bytes"));
            }
            2
        }
        _ => {
            let Some((&hdr, mut body)) = rest.split_first() else {
                return Err(Error::MalformedPacket("code 3 without frame count"));
            };
            let count = usize::from(hdr & 0x3F);
            let vbr = hdr & 0x80 != 0;
            let padded = hdr & 0x40 != 0;
            if count == 0 || count as u32 * per_frame > MAX_PACKET_SAMPLES_48K {
                return Err(Error::MalformedPacket("code 3 frame count out of range"));
            }
            let mut len = body.len();
            if padded {
                // Padding length bytes: 255 means 254 bytes plus another length byte.
                loop {
                    let Some((&p, b)) = body.split_first() else {
                        return Err(Error::MalformedPacket("truncated padding length"));
                    };
                    body = b;
                    len -= 1;
                    let pad = if p == 255 { 254 } else { usize::from(p) };
                    len = len
                        .checked_sub(pad)
                        .ok_or(Error::MalformedPacket("padding overruns packet"))?;
                    if p != 255 {
                        break;
                    }
                }
            }
            if vbr {
                let mut data = body;
                for _ in 0..count - 1 {
                    let (size, used) = frame_len(data)?;
                    len = len
                        .checked_sub(used)
                        .ok_or(Error::MalformedPacket("truncated frame length"))?;
                    if size > len {
                        return Err(Error::MalformedPacket("code 3 frame overruns"));
                    }
                    len -= size;
                    data = &data[used..];
                }
                if len > MAX_FRAME_BYTES {
                    return Err(Error::MalformedPacket("frame longer than 1275 bytes"));
                }
            } else if len % count != 0 || len / count > MAX_FRAME_BYTES {
                return Err(Error::MalformedPacket("code 3 CBR length not a multiple"));
            }
            count
        }
    };
    Ok(PacketInfo {
        toc,
        frames: frames as u8,
        samples_48k: frames as u32 * per_frame,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn toc_table_matches_rfc() {
        // (config, mode, bandwidth, 48 kHz samples) spot checks from RFC 6716 table 2.
        let cases = [
            (0, Mode::Silk, Bandwidth::Narrow, 480),
            (3, Mode::Silk, Bandwidth::Narrow, 2880),
            (9, Mode::Silk, Bandwidth::Wide, 960),
            (12, Mode::Hybrid, Bandwidth::SuperWide, 480),
            (15, Mode::Hybrid, Bandwidth::Full, 960),
            (16, Mode::Celt, Bandwidth::Narrow, 120),
            (21, Mode::Celt, Bandwidth::Wide, 240),
            (26, Mode::Celt, Bandwidth::SuperWide, 480),
            (31, Mode::Celt, Bandwidth::Full, 960),
        ];
        for (c, m, bw, n) in cases {
            let t = Toc(c << 3);
            assert_eq!(
                (t.mode(), t.bandwidth(), t.frame_samples_48k()),
                (m, bw, n),
                "config {c}"
            );
        }
        assert!(Toc(0x04).stereo());
        assert_eq!(Toc(0x03).code(), 3);
    }

    #[test]
    fn durations_of_real_packets_from_2_5_to_120_ms() {
        let mut enc = crate::opus::Encoder::new(
            48_000,
            crate::Channels::Mono,
            crate::opus::Application::Audio,
        )
        .unwrap();
        for samples in [120usize, 240, 480, 960, 1920, 2880, 3840, 4800, 5760] {
            let pcm = crate::signal::sine(48_000, 440.0, 0.3, samples as f64 / 48_000.0);
            let pkt = enc.encode(&pcm[..samples]).unwrap();
            let info = parse(&pkt).unwrap();
            assert_eq!(info.samples_48k as usize, samples, "{samples}");
            assert_eq!(info.samples_at(8000) as usize, samples / 6);
            assert_eq!(info.duration_us() as usize, samples * 1000 / 48);
            let lib = ::opus::packet::get_nb_samples(&pkt, 48_000).unwrap();
            assert_eq!(lib, samples);
        }
    }

    #[test]
    fn code_3_framing() {
        // CELT FB 20 ms (config 31), code 3, CBR, 3 frames of 2 bytes = 60 ms.
        let p = [31 << 3 | 3, 3, 1, 2, 3, 4, 5, 6];
        let i = parse(&p).unwrap();
        assert_eq!((i.frames, i.samples_48k), (3, 2880));
        // Same with 1 byte of padding announced but the CBR split now off by one.
        assert!(parse(&[31 << 3 | 3, 0x43, 1, 1, 2, 3, 4, 5, 6]).is_err());
        // 7 × 20 ms = 140 ms > 120 ms.
        assert!(parse(&[31 << 3 | 3, 7]).is_err());
        // Zero frames.
        assert!(parse(&[31 << 3 | 3, 0]).is_err());
        // VBR: 2 frames, first length 1.
        let i = parse(&[31 << 3 | 3, 0x82, 1, 9, 8, 7]).unwrap();
        assert_eq!(i.frames, 2);
        // VBR first length overruns.
        assert!(parse(&[31 << 3 | 3, 0x82, 9, 1]).is_err());
        // Padding chain 255 + 0: 254 bytes of padding needed.
        let mut p = vec![31 << 3 | 3, 0x41, 255, 0];
        assert!(parse(&p).is_err());
        p.extend(std::iter::repeat_n(0, 254));
        assert!(parse(&p).is_ok());
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x01, 0]).is_err()); // code 1, odd payload
        assert!(parse(&[0x02]).is_err()); // code 2, no length
        assert!(parse(&[0x02, 252]).is_err()); // code 2, truncated 2-byte length
        assert!(parse(&[0x02, 5, 1]).is_err()); // code 2, first frame overruns
        assert!(parse(&[0x03]).is_err()); // code 3, no count byte
        assert!(parse(&vec![0x00; 1277]).is_err()); // frame > 1275 bytes
        assert!(parse(&[0x00]).is_ok()); // a single empty (DTX) frame is legal
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Never panics, and agrees with libopus' own parser on validity and duration.
        #[test]
        fn agrees_with_libopus_on_random_bytes(packet in prop::collection::vec(any::<u8>(), 0..1600)) {
            let ours = parse(&packet);
            let lib = ::opus::packet::parse(&packet);
            prop_assert_eq!(ours.is_ok(), lib.is_ok(), "packet {:02x?}", &packet[..packet.len().min(8)]);
            if let (Ok(o), Ok(l)) = (ours, lib) {
                prop_assert_eq!(usize::from(o.frames), l.frames.len());
                let n = ::opus::packet::get_nb_samples(&packet, 48_000).unwrap();
                prop_assert_eq!(o.samples_48k as usize, n);
            }
        }

        /// Structured code 3 headers hit the padding / VBR paths far more often than random bytes.
        #[test]
        fn agrees_with_libopus_on_code3(toc in any::<u8>(), hdr in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut packet = vec![toc | 3, hdr];
            packet.extend(body);
            let ours = parse(&packet);
            let lib = ::opus::packet::parse(&packet);
            prop_assert_eq!(ours.is_ok(), lib.is_ok());
            if let (Ok(o), Ok(l)) = (ours, lib) {
                prop_assert_eq!(usize::from(o.frames), l.frames.len());
            }
        }
    }
}
