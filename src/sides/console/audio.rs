//! Console audio in both directions, on the bridge side of the `/muicall` socket.
//!
//! - [`Upstream`]: console frames → PTT voice. Opus passes through unchanged (checked:
//!   mono, 10–60 ms); PCM16 is cut into 20 ms frames, resampled to 48 kHz and encoded once.
//! - [`Downstream`]: the floor holder's PTT voice → console frames. Opus consoles get the
//!   packets unchanged; PCM consoles get them decoded (gaps concealed with Opus PLC) and
//!   resampled. No jitter buffer is added here: frames leave as they arrive, and their
//!   sequence numbers let the console place them in time.
//!
//! Per 20 ms frame neither direction allocates: working buffers are kept between frames, the
//! output goes into the caller's (reused) `Vec`, and packets and frames are `Bytes` cut from
//! shared chunks ([`PacketArena`]), so an allocation happens once per few dozen frames
//! (`cargo bench --bench console_audio_alloc --features count-allocs` measures it).

use bytes::Bytes;
use media::Channels;
use media::arena::{DEFAULT_CHUNK, PacketArena};
use media::opus::{Application, Decoder, Encoder};
use media::resample::Resampler;
use muicall::audio::{Codec, HEADER_LEN, Header};
use muicall::{AudioCodecName, AudioFormat};
use ptt::client::OutgoingVoice;

/// 20 ms at 48 kHz.
const FRAME_48K: usize = 960;
/// Concealment covers at most this many missing 20 ms frames; a larger gap is a new burst.
const MAX_CONCEALED_FRAMES: u64 = 5;
/// Console frames one arena chunk holds (PTT → console): one allocation per this many frames.
const FRAMES_PER_CHUNK: usize = 32;

/// Console → PTT conversion for one console.
pub struct Upstream {
    /// PCM of the current rate waiting for a whole 20 ms frame.
    pending: Vec<i16>,
    pending_rate: u32,
    encode: Encode48,
    /// Opus packets passed through, cut from shared chunks.
    arena: PacketArena,
}

/// 20 ms PCM frames of any rate → 48 kHz → Opus.
struct Encode48 {
    bitrate: i32,
    encoder: Option<Encoder>,
    /// Resampler to 48 kHz and the rate it converts from.
    resampler: Option<(u32, Resampler)>,
    frame48: Vec<i16>,
}

impl Encode48 {
    fn encoder(&mut self) -> Result<&mut Encoder, String> {
        open_encoder(&mut self.encoder, self.bitrate)
    }

    /// One 20 ms frame at `rate` as an Opus packet (cut from the encoder's arena).
    fn encode(&mut self, rate: u32, pcm: &[i16]) -> Result<Bytes, String> {
        if rate == 48_000 {
            self.frame48.copy_from_slice(pcm);
        } else {
            if self.resampler.as_ref().is_none_or(|(r, _)| *r != rate) {
                let rs = Resampler::new(rate, 48_000, Channels::Mono).map_err(|e| e.to_string())?;
                self.resampler = Some((rate, rs));
            }
            let (_, rs) = self.resampler.as_mut().expect("just set");
            rs.process(pcm, &mut self.frame48)
                .map_err(|e| e.to_string())?;
        }
        open_encoder(&mut self.encoder, self.bitrate)?
            .encode(&self.frame48)
            .map_err(|e| e.to_string())
    }
}

/// The encoder in `slot`, created on first use.
fn open_encoder(slot: &mut Option<Encoder>, bitrate: i32) -> Result<&mut Encoder, String> {
    if slot.is_none() {
        // Audio, not Voip: measurably better waveform fidelity (see media's notes).
        let mut e =
            Encoder::new(48_000, Channels::Mono, Application::Audio).map_err(|e| e.to_string())?;
        e.set_bitrate(bitrate).map_err(|e| e.to_string())?;
        *slot = Some(e);
    }
    Ok(slot.as_mut().expect("just set"))
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A converter that encodes PCM at `bitrate`.
    pub fn new(bitrate: i32) -> Self {
        Self {
            pending: Vec::new(),
            pending_rate: 0,
            encode: Encode48 {
                bitrate,
                encoder: None,
                resampler: None,
                frame48: vec![0; FRAME_48K],
            },
            arena: PacketArena::default(),
        }
    }

    /// Converts one console frame; the voice packets to send are appended to `out` (keep it
    /// between frames: nothing is allocated per frame then).
    pub fn push(
        &mut self,
        header: &Header,
        payload: &[u8],
        out: &mut Vec<OutgoingVoice>,
    ) -> Result<(), String> {
        match header.codec {
            Codec::Opus => {
                let info = media::opus_toc::parse(payload)
                    .map_err(|e| format!("not an Opus packet: {e}"))?;
                if info.toc.stereo() {
                    return Err("stereo Opus is not accepted: send mono".into());
                }
                if info.samples_48k % 480 != 0 || !(480..=2880).contains(&info.samples_48k) {
                    return Err(format!(
                        "Opus packets must be 10-60 ms in 10 ms steps, got {} µs",
                        info.duration_us()
                    ));
                }
                out.push(OutgoingVoice {
                    opus: self.arena.copy(payload),
                    frames_10ms: info.samples_48k / 480,
                    terminator: header.last,
                    target: 0,
                });
                Ok(())
            }
            Codec::Pcm16(rate) => {
                if rate != self.pending_rate {
                    self.pending.clear();
                    self.pending_rate = rate;
                }
                self.pending.extend(
                    payload
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]])),
                );
                let n = (rate / 50) as usize;
                if header.last && !self.pending.len().is_multiple_of(n) {
                    // Pad the tail so the last word is not cut off.
                    let pad = n - self.pending.len() % n;
                    self.pending.extend(std::iter::repeat_n(0, pad));
                }
                let frames = self.pending.len() / n;
                for i in 0..frames {
                    let opus = self
                        .encode
                        .encode(rate, &self.pending[i * n..(i + 1) * n])?;
                    out.push(OutgoingVoice {
                        opus,
                        frames_10ms: 2,
                        terminator: header.last && i + 1 == frames,
                        target: 0,
                    });
                }
                self.pending.drain(..frames * n);
                Ok(())
            }
        }
    }

    /// One short silent packet that ends the console's talk burst on the PTT side.
    pub fn terminator(&mut self) -> Option<OutgoingVoice> {
        let silence = [0i16; FRAME_48K];
        let opus = self.encode.encoder().ok()?.encode(&silence).ok()?;
        self.pending.clear();
        Some(OutgoingVoice {
            opus,
            frames_10ms: 2,
            terminator: true,
            target: 0,
        })
    }
}

/// PTT → console conversion for one console.
pub struct Downstream {
    format: AudioFormat,
    decoder: Option<Decoder>,
    resampler: Option<Resampler>,
    /// Session of the talker being decoded and the sequence that should come next.
    current: Option<(u32, u64)>,
    pcm: Vec<i16>,
    /// Decoded 48 kHz audio waiting for a whole 20 ms frame (packets may be 10-60 ms).
    carry: Vec<i16>,
    out_seq: u32,
    /// One 20 ms frame at the console's rate (the resampler's output).
    resampled: Vec<i16>,
    /// The frame being written (header + payload), then copied out of `arena`.
    frame: Vec<u8>,
    /// The frames sent, cut from shared chunks.
    arena: PacketArena,
}

impl std::fmt::Debug for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downstream")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Downstream {
    /// Frames in `format`.
    pub fn new(format: AudioFormat) -> Self {
        // A chunk holds a few dozen frames of this format (Opus: packets of ~100 bytes).
        let frame_bytes = match format.codec {
            AudioCodecName::Opus => DEFAULT_CHUNK / FRAMES_PER_CHUNK,
            AudioCodecName::Pcm16 => (format.rate / 50) as usize * 2,
        } + HEADER_LEN;
        Self {
            format,
            decoder: None,
            resampler: None,
            current: None,
            pcm: vec![0; 5760],
            carry: Vec::new(),
            out_seq: 0,
            resampled: Vec::new(),
            frame: Vec::new(),
            arena: PacketArena::new(FRAMES_PER_CHUNK * frame_bytes),
        }
    }

    /// The format frames are sent in.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Switches format (from the next packet on).
    pub fn set_format(&mut self, format: AudioFormat) {
        if format != self.format {
            *self = Self::new(format);
        }
    }

    /// Converts one PTT voice packet of `session` (talker id `source`); whole binary frames
    /// (header and payload) are appended to `out` (keep it between packets: nothing is
    /// allocated per packet then). Returns the number of packets dropped as late or
    /// duplicate (0 or 1).
    pub fn push(
        &mut self,
        session: u32,
        source: u32,
        sequence: u64,
        opus: &[u8],
        out: &mut Vec<Bytes>,
    ) -> u64 {
        let samples = media::opus_toc::parse(opus)
            .map(|i| i.samples_48k)
            .unwrap_or(960);
        let units = u64::from(samples / 480).max(1);
        let mut missing = 0;
        match self.current {
            Some((s, next)) if s == session => {
                if sequence < next {
                    return 1;
                }
                missing = (sequence - next) / 2;
            }
            _ => {
                if let Some(d) = self.decoder.as_mut() {
                    let _ = d.reset();
                }
                self.carry.clear();
            }
        }
        self.current = Some((session, sequence + units));
        if self.format.codec == AudioCodecName::Opus {
            let h = Header {
                codec: Codec::Opus,
                last: false,
                seq: sequence as u32,
                source,
            };
            self.frame.clear();
            h.write(opus, &mut self.frame);
            out.push(self.arena.copy(&self.frame));
            return 0;
        }
        if self.decoder.is_none() {
            match Decoder::new(48_000, Channels::Mono) {
                Ok(d) => self.decoder = Some(d),
                Err(_) => return 1,
            }
        }
        let dec = self.decoder.as_mut().expect("just set");
        if missing > 0 && missing <= MAX_CONCEALED_FRAMES {
            for _ in 0..missing {
                if dec.decode(None, false, &mut self.pcm[..FRAME_48K]).is_ok() {
                    self.carry.extend_from_slice(&self.pcm[..FRAME_48K]);
                }
            }
        }
        match dec.decode(Some(opus), false, &mut self.pcm) {
            Ok(n) => self.carry.extend_from_slice(&self.pcm[..n]),
            Err(_) => {
                if dec.decode(None, false, &mut self.pcm[..FRAME_48K]).is_ok() {
                    self.carry.extend_from_slice(&self.pcm[..FRAME_48K]);
                }
            }
        }
        let rate = self.format.rate;
        while self.carry.len() >= FRAME_48K {
            let frame = &self.carry[..FRAME_48K];
            let pcm: &[i16] = if rate == 48_000 {
                frame
            } else {
                if self.resampler.is_none() {
                    match Resampler::new(48_000, rate, Channels::Mono) {
                        Ok(r) => self.resampler = Some(r),
                        Err(_) => {
                            self.carry.drain(..FRAME_48K);
                            return 1;
                        }
                    }
                }
                let rs = self.resampler.as_mut().expect("just set");
                self.resampled.resize(rs.output_len(), 0);
                if rs.process(frame, &mut self.resampled).is_err() {
                    self.carry.drain(..FRAME_48K);
                    continue;
                }
                &self.resampled
            };
            let h = Header {
                codec: Codec::Pcm16(rate),
                last: false,
                seq: self.out_seq,
                source,
            };
            self.frame.clear();
            h.write(&[], &mut self.frame);
            media::pcm::to_le_bytes(pcm, &mut self.frame);
            self.out_seq = self.out_seq.wrapping_add(2);
            out.push(self.arena.copy(&self.frame));
            self.carry.drain(..FRAME_48K);
        }
        0
    }

    /// The talker stopped: the next packet starts a new burst.
    pub fn end_burst(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::pcm::rms;

    fn tone(rate: u32, ms: u32) -> Vec<i16> {
        (0..rate * ms / 1000)
            .map(|i| {
                ((i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 8000.0) as i16
            })
            .collect()
    }

    fn pcm_frame(rate: u32, samples: &[i16], last: bool) -> (Header, Vec<u8>) {
        let mut b = Vec::new();
        media::pcm::to_le_bytes(samples, &mut b);
        (
            Header {
                codec: Codec::Pcm16(rate),
                last,
                seq: 0,
                source: 0,
            },
            b,
        )
    }

    #[test]
    fn pcm_of_any_rate_becomes_20ms_opus_and_the_tail_is_kept() {
        for rate in [8_000, 16_000, 48_000] {
            let mut up = Upstream::new(48_000);
            let mut out = Vec::new();
            let pcm = tone(rate, 30);
            let (h, b) = pcm_frame(rate, &pcm, false);
            up.push(&h, &b, &mut out).unwrap();
            assert_eq!(out.len(), 1, "30 ms → one 20 ms packet, 10 ms kept");
            let (h, b) = pcm_frame(rate, &pcm[..pcm.len() / 3], true);
            up.push(&h, &b, &mut out).unwrap();
            assert_eq!(out.len(), 2, "the last frame flushes the tail");
            assert!(out[1].terminator && !out[0].terminator);
            assert!(out.iter().all(|v| v.frames_10ms == 2));
        }
    }

    #[test]
    fn opus_passes_through_and_bad_packets_are_named() {
        let mut enc = Encoder::new(48_000, Channels::Mono, Application::Audio).unwrap();
        let pkt = enc.encode(&tone(48_000, 20)).unwrap();
        let mut up = Upstream::new(48_000);
        let mut out = Vec::new();
        let h = Header {
            codec: Codec::Opus,
            last: false,
            seq: 0,
            source: 0,
        };
        up.push(&h, &pkt, &mut out).unwrap();
        assert_eq!(out[0].opus, pkt);
        assert_eq!(out[0].frames_10ms, 2);
        assert!(up.push(&h, &[0xff, 0xff, 0xff], &mut out).is_err());
        let mut st = Encoder::new(48_000, Channels::Stereo, Application::Audio).unwrap();
        let spkt = st.encode(&[0i16; 1920]).unwrap();
        assert!(up.push(&h, &spkt, &mut out).unwrap_err().contains("stereo"));
    }

    #[test]
    fn downstream_pcm_decodes_resamples_and_conceals_gaps() {
        let mut enc = Encoder::new(48_000, Channels::Mono, Application::Audio).unwrap();
        let src = tone(48_000, 200);
        let packets: Vec<Bytes> = src.chunks(960).map(|c| enc.encode(c).unwrap()).collect();
        let mut down = Downstream::new(AudioFormat {
            codec: AudioCodecName::Pcm16,
            rate: 16_000,
        });
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i == 4 {
                continue; // lost
            }
            assert_eq!(down.push(7, 42, i as u64 * 2, p, &mut out), 0);
        }
        assert_eq!(out.len(), 10, "the lost packet is concealed, not skipped");
        let (h, payload) = Header::parse(&out[9]).unwrap();
        assert_eq!((h.codec, h.source, h.seq), (Codec::Pcm16(16_000), 42, 18));
        assert_eq!(payload.len(), 640);
        let mut pcm = Vec::new();
        media::pcm::from_le_bytes(payload, &mut pcm).unwrap();
        assert!(rms(&pcm) > 3000.0, "tone survives: {}", rms(&pcm));
        assert_eq!(
            down.push(7, 42, 2, &packets[1], &mut out),
            1,
            "late packet dropped"
        );
    }

    #[test]
    fn packets_and_frames_are_cut_from_shared_chunks() {
        // What makes a frame cost no allocation: consecutive outputs are neighbours in one chunk.
        let adjacent = |a: &Bytes, b: &Bytes| a.as_ptr().wrapping_add(a.len()) == b.as_ptr();
        let mut enc = Encoder::new(48_000, Channels::Mono, Application::Audio).unwrap();
        let packets: Vec<Bytes> = tone(48_000, 60)
            .chunks(960)
            .map(|c| enc.encode(c).unwrap())
            .collect();
        let formats = [
            (AudioCodecName::Opus, 48_000),
            (AudioCodecName::Pcm16, 8_000),
        ];
        for (codec, rate) in formats.into_iter().chain([(AudioCodecName::Pcm16, 48_000)]) {
            let mut down = Downstream::new(AudioFormat { codec, rate });
            let mut out = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                assert_eq!(down.push(1, 2, i as u64 * 2, p, &mut out), 0);
            }
            assert_eq!(out.len(), 3, "{codec:?} {rate}");
            assert!(adjacent(&out[0], &out[1]) && adjacent(&out[1], &out[2]));
        }
        let mut up = Upstream::new(48_000);
        let mut out = Vec::new();
        let h = Header {
            codec: Codec::Opus,
            last: false,
            seq: 0,
            source: 0,
        };
        for p in &packets {
            up.push(&h, p, &mut out).unwrap();
        }
        assert!(adjacent(&out[0].opus, &out[1].opus) && adjacent(&out[1].opus, &out[2].opus));
    }

    #[test]
    fn downstream_opus_is_pass_through() {
        let mut down = Downstream::new(AudioFormat::default());
        let mut out = Vec::new();
        down.push(3, 9, 100, &[0xf8, 1, 2], &mut out);
        let (h, p) = Header::parse(&out[0]).unwrap();
        assert_eq!(
            (h.codec, h.seq, h.source, p),
            (Codec::Opus, 100, 9, &[0xf8, 1, 2][..])
        );
    }
}
