//! G.711 (PCMU/PCMA, 8 kHz) on a link to a PTT channel, whose own audio is Opus 48 kHz.
//!
//! - [`G711Inbound`]: a meeting publisher sending G.711. Its packets are decoded, resampled to
//!   48 kHz and encoded as Opus frames on arrival, so they enter the same per-speaker jitter
//!   buffer, decoder, PLC and VAD as Opus publishers (one extra Opus encode per 20 ms per G.711
//!   speaker, ≈ 50–100 µs, against a second jitter buffer written for 8 kHz PCM).
//! - [`G711Outbound`]: meeting players that only take G.711. The PTT audio of each tick (the
//!   mix group's 48 kHz listener PCM, pass-through included) is resampled to 8 kHz and encoded
//!   once per law, whatever the number of such players.

use bytes::Bytes;
use media::Channels;
use media::g711::{self, Law};
use media::opus::{Application, Encoder};
use media::resample::Resampler;

/// 20 ms at 8 kHz.
const FRAME_8K: usize = 160;
/// 20 ms at 48 kHz.
const FRAME_48K: usize = 960;
/// G.711 audio held while waiting for a whole 20 ms frame; more means the sender's packets
/// are not contiguous (a new burst): start over.
const MAX_PENDING: usize = FRAME_8K * 4;

/// One G.711 publisher → Opus 48 kHz frames for its inbound stream.
pub struct G711Inbound {
    law: Law,
    pcm8: Vec<i16>,
    /// 48 kHz timestamp of `pcm8[0]`.
    head_ts: u32,
    /// 48 kHz timestamp just after the last sample taken in.
    next_ts: Option<u32>,
    up: Resampler,
    pcm48: Vec<i16>,
    encoder: Encoder,
}

impl std::fmt::Debug for G711Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("G711Inbound")
            .field("law", &self.law)
            .finish_non_exhaustive()
    }
}

impl G711Inbound {
    /// A publisher sending `law`.
    pub fn new(law: Law) -> media::Result<Self> {
        let mut encoder = Encoder::new(48_000, Channels::Mono, Application::Audio)?;
        // Plenty for a 4 kHz band: the Opus hop must not be what the PTT side hears.
        encoder.set_bitrate(48_000)?;
        encoder.set_complexity(3)?;
        Ok(Self {
            law,
            pcm8: Vec::with_capacity(MAX_PENDING),
            head_ts: 0,
            next_ts: None,
            up: Resampler::new(8_000, 48_000, Channels::Mono)?,
            pcm48: vec![0; FRAME_48K],
            encoder,
        })
    }

    /// The law this publisher sends.
    pub fn law(&self) -> Law {
        self.law
    }

    /// One RTP payload with its timestamp in 48 kHz units; calls `out(ts, opus)` for every
    /// whole 20 ms frame it completes.
    pub fn push(
        &mut self,
        ts: u32,
        payload: &[u8],
        mut out: impl FnMut(u32, Bytes),
    ) -> media::Result<()> {
        if self.next_ts != Some(ts) {
            // First packet, a gap or reordering: start a fresh frame at this packet. (Loss and
            // reordering are the jitter buffer's job; here they only cost the partial frame.)
            self.pcm8.clear();
            self.head_ts = ts;
            if self.next_ts.is_some() {
                self.up.reset();
            }
        }
        let start = self.pcm8.len();
        self.pcm8.resize(start + payload.len(), 0);
        g711::decode(self.law, payload, &mut self.pcm8[start..]);
        self.next_ts = Some(ts.wrapping_add(payload.len() as u32 * 6));
        while self.pcm8.len() >= FRAME_8K {
            self.up.process(&self.pcm8[..FRAME_8K], &mut self.pcm48)?;
            let opus = self.encoder.encode(&self.pcm48)?;
            out(self.head_ts, opus);
            self.pcm8.drain(..FRAME_8K);
            self.head_ts = self.head_ts.wrapping_add(FRAME_48K as u32);
        }
        if self.pcm8.len() > MAX_PENDING {
            self.pcm8.clear();
            self.next_ts = None;
        }
        Ok(())
    }
}

/// The link's PTT audio for G.711 players: one encode per law per tick.
pub struct G711Outbound {
    down: Resampler,
    pcm8: Vec<i16>,
    /// Encoded this tick: µ-law, A-law.
    mu: Option<Bytes>,
    a: Option<Bytes>,
}

impl std::fmt::Debug for G711Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("G711Outbound").finish_non_exhaustive()
    }
}

impl G711Outbound {
    /// A converter from 48 kHz ticks.
    pub fn new() -> media::Result<Self> {
        Ok(Self {
            down: Resampler::new(48_000, 8_000, Channels::Mono)?,
            pcm8: vec![0; FRAME_8K],
            mu: None,
            a: None,
        })
    }

    /// Encodes one 20 ms tick of 48 kHz mono PCM for the laws asked for.
    pub fn encode(&mut self, pcm48: &[i16], mu: bool, a: bool) -> media::Result<()> {
        self.mu = None;
        self.a = None;
        if !mu && !a {
            return Ok(());
        }
        self.down.process(pcm48, &mut self.pcm8)?;
        let mut bytes = [0u8; FRAME_8K];
        if mu {
            g711::encode(Law::Mu, &self.pcm8, &mut bytes);
            self.mu = Some(Bytes::copy_from_slice(&bytes));
        }
        if a {
            g711::encode(Law::A, &self.pcm8, &mut bytes);
            self.a = Some(Bytes::copy_from_slice(&bytes));
        }
        Ok(())
    }

    /// Nothing to send this tick (silence): the filter starts fresh with the next burst.
    pub fn idle(&mut self) {
        self.mu = None;
        self.a = None;
        self.down.reset();
    }

    /// This tick's payload for `law`, if it was asked for and there was audio.
    pub fn payload(&self, law: Law) -> Option<&Bytes> {
        match law {
            Law::Mu => self.mu.as_ref(),
            Law::A => self.a.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::opus::Decoder;

    #[test]
    fn g711_in_becomes_opus_frames_that_decode_to_the_tone() {
        let tone = media::signal::sine(8_000, 400.0, 0.3, 0.5);
        let mut inbound = G711Inbound::new(Law::Mu).unwrap();
        let mut frames = Vec::new();
        // 30 ms packets (240 samples): frames come out whole, timestamps 960 apart.
        for (i, chunk) in tone.chunks(240).enumerate() {
            let mut bytes = vec![0u8; chunk.len()];
            g711::encode(Law::Mu, chunk, &mut bytes);
            inbound
                .push(1000 + i as u32 * 1440, &bytes, |ts, opus| {
                    frames.push((ts, opus))
                })
                .unwrap();
        }
        assert_eq!(frames.len(), 25);
        assert!(frames.windows(2).all(|w| w[1].0 == w[0].0 + 960));
        assert_eq!(frames[0].0, 1000);
        let mut dec = Decoder::new(48_000, Channels::Mono).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; 960];
        for (_, opus) in &frames {
            let n = dec.decode(Some(opus), false, &mut buf).unwrap();
            pcm.extend_from_slice(&buf[..n]);
        }
        let steady = &pcm[4800..];
        let amp = media::signal::tone_amplitude(steady, 48_000, 400.0);
        assert!((amp - 0.3).abs() < 0.05, "400 Hz at {amp:.3}");
    }

    #[test]
    fn a_gap_restarts_the_frame_at_the_new_packet() {
        let mut inbound = G711Inbound::new(Law::A).unwrap();
        let mut ts_out = Vec::new();
        inbound
            .push(0, &[0xD5; 100], |ts, _| ts_out.push(ts))
            .unwrap();
        // 100 samples pending; the next packet is not contiguous: they are dropped.
        inbound
            .push(48_000, &[0xD5; 160], |ts, _| ts_out.push(ts))
            .unwrap();
        assert_eq!(ts_out, vec![48_000]);
    }

    #[test]
    fn g711_out_encodes_each_law_once_per_tick() {
        let mut out = G711Outbound::new().unwrap();
        let tone = media::signal::sine(48_000, 400.0, 0.3, 0.02);
        out.encode(&tone, true, false).unwrap();
        assert_eq!(out.payload(Law::Mu).map(Bytes::len), Some(160));
        assert!(out.payload(Law::A).is_none());
        out.encode(&tone, true, true).unwrap();
        assert_eq!(out.payload(Law::A).map(Bytes::len), Some(160));
        out.idle();
        assert!(out.payload(Law::Mu).is_none());
    }
}
