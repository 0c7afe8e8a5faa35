//! Talk-burst recorder: Opus packets into an Ogg Opus file (RFC 7845)
//! without re-encoding.
//!
//! The page framing is written here (it is ~100 lines with the CRC); the
//! `ogg` crate reads the result back in the tests, as an independent check.

use std::io::Write;

use crate::error::{Error, Result};
use crate::opus_toc;

/// Pre-skip when the encoder is unknown (a remote talker): libopus' look-ahead
/// at 48 kHz, which is what `opusenc` writes too.
pub const DEFAULT_PRE_SKIP: u16 = 312;
/// Flush a page once it holds this much audio (48 kHz samples: 1 s), so a
/// crash loses at most a second and memory stays small.
const PAGE_SAMPLES: u64 = 48_000;
/// Lacing values per page (the format's limit).
const MAX_SEGMENTS: usize = 255;

/// Ogg's CRC-32 (polynomial 0x04c11db7, no reflection, zero init, no final xor).
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            k += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
};

fn crc32(crc: u32, data: &[u8]) -> u32 {
    data.iter().fold(crc, |c, &b| {
        (c << 8) ^ CRC_TABLE[((c >> 24) as u8 ^ b) as usize]
    })
}

/// Metadata for a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OggOpusHeader {
    /// Channel count of the Opus stream (1 or 2).
    pub channels: u8,
    /// Samples (48 kHz) to drop at the start of decoding.
    pub pre_skip: u16,
    /// Original input rate, informational (48000 for the bridge).
    pub input_rate: u32,
    /// Vendor string in OpusTags.
    pub vendor: String,
    /// `KEY=value` comments in OpusTags (who, group, start time...).
    pub comments: Vec<String>,
}

impl Default for OggOpusHeader {
    fn default() -> Self {
        Self {
            channels: 1,
            pre_skip: DEFAULT_PRE_SKIP,
            input_rate: 48_000,
            vendor: "pttbridge".into(),
            comments: Vec::new(),
        }
    }
}

/// Writes one Ogg Opus logical stream.
#[derive(Debug)]
pub struct OggOpusWriter<W: Write> {
    out: W,
    serial: u32,
    page_seq: u32,
    /// Granule position after the last packet added (48 kHz samples incl. pre-skip).
    granule: u64,
    /// Pending page: lacing values and body of complete packets.
    lacing: Vec<u8>,
    body: Vec<u8>,
    page_start_granule: u64,
    packets: u64,
}

impl<W: Write> OggOpusWriter<W> {
    /// Starts a stream: writes the OpusHead and OpusTags pages.
    pub fn new(out: W, serial: u32, header: &OggOpusHeader) -> Result<Self> {
        if !(1..=2).contains(&header.channels) {
            return Err(Error::BadFrameLength {
                got: usize::from(header.channels),
                expected: "1 or 2 channels".into(),
            });
        }
        let mut w = Self {
            out,
            serial,
            page_seq: 0,
            granule: 0,
            lacing: Vec::with_capacity(MAX_SEGMENTS),
            body: Vec::with_capacity(4096),
            page_start_granule: 0,
            packets: 0,
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(header.channels);
        head.extend_from_slice(&header.pre_skip.to_le_bytes());
        head.extend_from_slice(&header.input_rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0: mono/stereo
        w.write_page(&[&head], 0, 0x02)?;

        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        let len32 = |n: usize| u32::try_from(n).map_err(|_| Error::Io("tag too long".into()));
        tags.extend_from_slice(&len32(header.vendor.len())?.to_le_bytes());
        tags.extend_from_slice(header.vendor.as_bytes());
        tags.extend_from_slice(&len32(header.comments.len())?.to_le_bytes());
        for c in &header.comments {
            tags.extend_from_slice(&len32(c.len())?.to_le_bytes());
            tags.extend_from_slice(c.as_bytes());
        }
        w.write_page(&[&tags], 0, 0)?;
        w.granule = 0;
        Ok(w)
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Audio written so far, in 48 kHz samples.
    pub fn samples(&self) -> u64 {
        self.granule
    }

    /// Appends one Opus packet, unchanged. Invalid packets are refused.
    pub fn write_packet(&mut self, packet: &[u8]) -> Result<()> {
        let info = opus_toc::parse(packet)?;
        // A packet needs len/255 + 1 lacing values; start a new page if they don't fit.
        let segs = packet.len() / 255 + 1;
        if segs > MAX_SEGMENTS {
            return Err(Error::MalformedPacket("packet too large for one Ogg page"));
        }
        // Flush lazily, before adding: the final page then always ends a
        // packet, as its EOS granule position requires.
        if self.lacing.len() + segs > MAX_SEGMENTS
            || self.granule - self.page_start_granule >= PAGE_SAMPLES
        {
            self.flush_page(0)?;
        }
        let mut left = packet.len();
        while left >= 255 {
            self.lacing.push(255);
            left -= 255;
        }
        self.lacing.push(left as u8);
        self.body.extend_from_slice(packet);
        self.granule += u64::from(info.samples_48k);
        self.packets += 1;
        Ok(())
    }

    /// Records `samples` (48 kHz) of missing audio as empty Opus frames, which
    /// players conceal, so the file keeps real time across lost packets.
    pub fn write_gap(&mut self, samples: u32) -> Result<()> {
        // CELT fullband TOCs (config 31/30/29/28 = 20/10/5/2.5 ms), code 0,
        // no frame data: decoders treat an empty frame as lost and conceal it.
        let mut left = samples / 120 * 120;
        for (toc, n) in [
            (31u8 << 3, 960u32),
            (30 << 3, 480),
            (29 << 3, 240),
            (28 << 3, 120),
        ] {
            while left >= n {
                self.write_packet(&[toc])?;
                left -= n;
            }
        }
        Ok(())
    }

    /// Ends the stream (last page flagged EOS) and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.flush_page(0x04)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_page(&mut self, flags: u8) -> Result<()> {
        if self.lacing.is_empty() && flags & 0x04 == 0 {
            return Ok(());
        }
        let lacing = std::mem::take(&mut self.lacing);
        let body = std::mem::take(&mut self.body);
        self.write_raw_page(&lacing, &body, self.granule, flags)?;
        self.page_start_granule = self.granule;
        // Reuse the allocations.
        self.lacing = lacing;
        self.lacing.clear();
        self.body = body;
        self.body.clear();
        Ok(())
    }

    /// Writes a page holding whole `packets` (header pages).
    fn write_page(&mut self, packets: &[&[u8]], granule: u64, flags: u8) -> Result<()> {
        let mut lacing = Vec::new();
        let mut body = Vec::new();
        for p in packets {
            let mut left = p.len();
            while left >= 255 {
                lacing.push(255);
                left -= 255;
            }
            lacing.push(left as u8);
            body.extend_from_slice(p);
        }
        if lacing.len() > MAX_SEGMENTS {
            return Err(Error::Io("header too large for one page".into()));
        }
        self.write_raw_page(&lacing, &body, granule, flags)
    }

    fn write_raw_page(
        &mut self,
        lacing: &[u8],
        body: &[u8],
        granule: u64,
        flags: u8,
    ) -> Result<()> {
        let mut h = [0u8; 27];
        h[..4].copy_from_slice(b"OggS");
        h[4] = 0; // version
        h[5] = flags;
        h[6..14].copy_from_slice(&granule.to_le_bytes());
        h[14..18].copy_from_slice(&self.serial.to_le_bytes());
        h[18..22].copy_from_slice(&self.page_seq.to_le_bytes());
        h[26] = lacing.len() as u8;
        let crc = crc32(crc32(crc32(0, &h), lacing), body);
        h[22..26].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(lacing)?;
        self.out.write_all(body)?;
        self.page_seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opus::{Application, Decoder, Encoder};
    use crate::pcm::Channels;
    use crate::signal::{best_correlation, speechlike};
    use std::io::Cursor;

    #[test]
    fn crc_matches_known_vector() {
        // The Ogg CRC of "123456789" (CRC-32/MPEG-2 family without inversion).
        assert_eq!(crc32(0, b"123456789"), 0x89A1_897F);
    }

    #[test]
    fn recording_reads_back_and_plays() {
        let signal = speechlike(48_000, 2.5);
        let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
        enc.set_bitrate(24_000).unwrap();
        let pre_skip = enc.lookahead().unwrap() as u16;
        let packets: Vec<_> = signal
            .chunks_exact(960)
            .map(|f| enc.encode(f).unwrap())
            .collect();
        let header = OggOpusHeader {
            pre_skip,
            comments: vec!["PARTY=ptt:42".into(), "GROUP=North".into()],
            ..OggOpusHeader::default()
        };
        let mut w = OggOpusWriter::new(Vec::new(), 0x1234, &header).unwrap();
        for p in &packets {
            w.write_packet(p).unwrap();
        }
        assert!(w.write_packet(&[]).is_err(), "garbage refused");
        let file = w.finish().unwrap();

        // Independent reader: checks every page CRC.
        let mut r = ogg::PacketReader::new(Cursor::new(file));
        let head = r.read_packet_expected().unwrap();
        assert!(head.first_in_stream());
        assert_eq!(&head.data[..8], b"OpusHead");
        assert_eq!(head.data[9], 1);
        assert_eq!(u16::from_le_bytes([head.data[10], head.data[11]]), pre_skip);
        let tags = r.read_packet_expected().unwrap();
        assert_eq!(&tags.data[..8], b"OpusTags");
        assert!(String::from_utf8_lossy(&tags.data).contains("GROUP=North"));

        let mut dec = Decoder::new(48_000, Channels::Mono).unwrap();
        let mut pcm = Vec::new();
        let mut buf = [0i16; 5760];
        let mut n = 0;
        let mut last_granule = 0;
        while let Some(p) = r.read_packet().unwrap() {
            assert_eq!(p.data, packets[n].as_ref(), "packet {n} unchanged");
            n += 1;
            if p.last_in_page() {
                // Granule = samples up to the end of this page's last packet.
                assert_eq!(p.absgp_page(), n as u64 * 960);
                assert!(p.absgp_page() > last_granule);
                last_granule = p.absgp_page();
            }
            let k = dec.decode(Some(&p.data), false, &mut buf).unwrap();
            pcm.extend_from_slice(&buf[..k]);
            if p.last_in_stream() {
                break;
            }
        }
        assert_eq!(n, packets.len());
        assert_eq!(last_granule, signal.len() as u64);
        // Playing the file gives exactly what decoding the live packets gives.
        let mut live = Decoder::new(48_000, Channels::Mono).unwrap();
        let mut direct = Vec::new();
        for p in &packets {
            let k = live.decode(Some(p), false, &mut buf).unwrap();
            direct.extend_from_slice(&buf[..k]);
        }
        assert_eq!(pcm, direct);
        // Dropping pre-skip aligns playback with the original speech.
        let played = &pcm[usize::from(pre_skip)..];
        let (c, lag) = best_correlation(&signal[..100_000], played, 50);
        assert!(c > 0.7, "correlation {c}");
        assert!(lag < 10, "pre-skip aligns the audio (lag {lag})");
    }

    #[test]
    fn gaps_keep_real_time() {
        let mut w = OggOpusWriter::new(Vec::new(), 1, &OggOpusHeader::default()).unwrap();
        let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
        w.write_packet(&enc.encode(&[0; 960]).unwrap()).unwrap();
        w.write_gap(960 * 3 + 480 + 120).unwrap();
        assert_eq!(w.samples(), 960 * 4 + 480 + 120);
        let file = w.finish().unwrap();
        let mut r = ogg::PacketReader::new(Cursor::new(file));
        r.read_packet_expected().unwrap();
        r.read_packet_expected().unwrap();
        let mut dec = Decoder::new(48_000, Channels::Mono).unwrap();
        let mut total = 0;
        let mut buf = [0i16; 960];
        while let Some(p) = r.read_packet().unwrap() {
            total += dec.decode(Some(&p.data), false, &mut buf).unwrap();
        }
        assert_eq!(
            total,
            960 * 4 + 480 + 120,
            "empty frames decode (as concealment)"
        );
    }

    #[test]
    fn long_recordings_use_many_small_pages() {
        let mut w = OggOpusWriter::new(Vec::new(), 1, &OggOpusHeader::default()).unwrap();
        let big = vec![0xF8u8; 600]; // code 0, 20 ms, 599-byte frame
        for _ in 0..500 {
            w.write_packet(&big).unwrap();
        }
        let file = w.finish().unwrap();
        let pages = file.windows(4).filter(|w| w == b"OggS").count();
        // The last page ends a packet and carries EOS (flag 0x04).
        let last = file.windows(4).rposition(|w| w == b"OggS").unwrap();
        assert_eq!(file[last + 5], 0x04);
        assert!(file[last + 26] > 0, "EOS page holds packets");
        // 500 × 3 lacing values > 255 per page, and at most 1 s per page.
        assert!(pages >= 2 + 10, "{pages} pages");
        let mut r = ogg::PacketReader::new(Cursor::new(file));
        let mut n = 0;
        while r.read_packet().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 502);
    }
}
