//! Opus encoder and decoder wrappers over libopus (the `opus` crate).
//!
//! Thin on purpose: they pin the engine's conventions (interleaved `i16`,
//! frame lengths checked up front, errors as [`Error`], PLC as `None`) so the
//! rest of the bridge never touches libopus directly.

use bytes::Bytes;

use crate::arena::PacketArena;
use crate::error::{Error, Result};
use crate::pcm::Channels;

/// The largest Opus packet libopus can produce (RFC 6716 §3.2.1: 3 × 1275 + 7 bytes).
pub const MAX_PACKET: usize = 4000;

/// Sample rates libopus accepts for PCM in and out.
pub const RATES: [u32; 5] = [8000, 12000, 16000, 24000, 48000];

/// Frame durations libopus can encode, in tenths of a millisecond (2.5 ms .. 120 ms).
const FRAME_TENTHS_MS: [usize; 9] = [25, 50, 100, 200, 400, 600, 800, 1000, 1200];

/// What the encoder optimises for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Application {
    /// Speech intelligibility (PTT, calls). The default for the bridge.
    Voip,
    /// Fidelity for music or mixed content.
    Audio,
}

fn check_rate(rate: u32) -> Result<()> {
    if RATES.contains(&rate) {
        Ok(())
    } else {
        Err(Error::UnsupportedRate(rate))
    }
}

/// Whether `samples_per_channel` is one of the Opus frame sizes at `rate`.
pub fn is_valid_frame(rate: u32, samples_per_channel: usize) -> bool {
    FRAME_TENTHS_MS
        .iter()
        .any(|&t| rate as usize * t / 10_000 == samples_per_channel)
}

/// Whether `packet` carries in-band FEC (SILK LBRR data for the previous frame).
///
/// Lets the jitter buffer count a recovery as FEC rather than PLC; libopus
/// falls back to PLC on its own when there is none. Garbage gives `false`.
pub fn has_fec(packet: &[u8]) -> bool {
    if packet.is_empty() || crate::opus_toc::parse(packet).is_err() {
        return false;
    }
    // SAFETY: pointer and length describe a live, framing-validated slice.
    let r = unsafe { opusic_sys::opus_packet_has_lbrr(packet.as_ptr(), packet.len() as i32) };
    r > 0
}

/// An Opus encoder for interleaved `i16` PCM.
pub struct Encoder {
    inner: ::opus::Encoder,
    rate: u32,
    channels: Channels,
    /// Where [`Encoder::encode`]'s packets are cut from: no allocation per packet.
    arena: PacketArena,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Creates an encoder. `rate` is one of [`RATES`].
    pub fn new(rate: u32, channels: Channels, application: Application) -> Result<Self> {
        check_rate(rate)?;
        let app = match application {
            Application::Voip => ::opus::Application::Voip,
            Application::Audio => ::opus::Application::Audio,
        };
        let inner = ::opus::Encoder::new(rate, channels.to_opus(), app)?;
        Ok(Self {
            inner,
            rate,
            channels,
            arena: PacketArena::default(),
        })
    }

    /// Sets the complexity, 0 (cheapest) ..= 10 (best).
    pub fn set_complexity(&mut self, complexity: i32) -> Result<()> {
        Ok(self.inner.set_complexity(complexity)?)
    }

    /// Sets the target bitrate in bits per second.
    pub fn set_bitrate(&mut self, bps: i32) -> Result<()> {
        Ok(self.inner.set_bitrate(::opus::Bitrate::Bits(bps))?)
    }

    /// Turns in-band FEC on, tuned for the expected loss percentage (0..=100).
    ///
    /// FEC only helps if the receiver's jitter buffer decodes it, which ours does.
    pub fn set_inband_fec(&mut self, enabled: bool, expected_loss_percent: i32) -> Result<()> {
        self.inner.set_inband_fec(enabled)?;
        Ok(self.inner.set_packet_loss_perc(expected_loss_percent)?)
    }

    /// Turns discontinuous transmission on or off.
    pub fn set_dtx(&mut self, enabled: bool) -> Result<()> {
        Ok(self.inner.set_dtx(enabled)?)
    }

    /// Sample rate of the PCM this encoder takes.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Channel layout of the PCM this encoder takes.
    pub fn channels(&self) -> Channels {
        self.channels
    }

    /// Samples of look-ahead the encoder adds (Ogg pre-skip is derived from it).
    pub fn lookahead(&mut self) -> Result<u32> {
        Ok(self.inner.get_lookahead()?.max(0) as u32)
    }

    /// Encodes one frame of interleaved PCM (2.5..120 ms) into `out`; returns the packet length.
    pub fn encode_into(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize> {
        let ch = self.channels.count();
        if !pcm.len().is_multiple_of(ch) || !is_valid_frame(self.rate, pcm.len() / ch) {
            return Err(Error::BadFrameLength {
                got: pcm.len(),
                expected: format!(
                    "2.5/5/10/20/40/60/80/100/120 ms at {} Hz × {ch} channel(s), e.g. {}",
                    self.rate,
                    self.rate as usize / 50 * ch
                ),
            });
        }
        Ok(self.inner.encode(pcm, out)?)
    }

    /// Resets the encoder state (before reusing it for a different stream).
    pub fn reset(&mut self) -> Result<()> {
        Ok(self.inner.reset_state()?)
    }

    /// Encodes one frame of interleaved PCM (e.g. 960 samples = 20 ms mono at 48 kHz).
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Bytes> {
        let mut buf = [0u8; MAX_PACKET];
        let n = self.encode_into(pcm, &mut buf)?;
        Ok(self.arena.copy(&buf[..n]))
    }

    /// Heap bytes besides the libopus state: the chunk its packets are cut from.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
    }

    /// Bytes of libopus state one encoder holds (for memory accounting).
    pub fn state_bytes(channels: Channels) -> usize {
        // SAFETY: a pure size query on a valid channel count.
        let n = unsafe { opusic_sys::opus_encoder_get_size(channels.count() as i32) };
        n.max(0) as usize
    }
}

/// An Opus decoder producing interleaved `i16` PCM.
pub struct Decoder {
    inner: ::opus::Decoder,
    rate: u32,
    channels: Channels,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Creates a decoder for output at `rate` (one of [`RATES`]); any Opus packet decodes to it.
    pub fn new(rate: u32, channels: Channels) -> Result<Self> {
        check_rate(rate)?;
        let inner = ::opus::Decoder::new(rate, channels.to_opus())?;
        Ok(Self {
            inner,
            rate,
            channels,
        })
    }

    /// Output sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Output channel layout.
    pub fn channels(&self) -> Channels {
        self.channels
    }

    /// Decodes one packet into `out`; returns samples per channel written.
    ///
    /// - `packet = Some(p), fec = false`: normal decode of `p`.
    /// - `packet = None`: packet loss concealment; `out` must hold exactly the
    ///   duration to conceal (a multiple of 2.5 ms).
    /// - `packet = Some(next), fec = true`: recover the *previous*, lost frame
    ///   from `next`'s in-band FEC (falls back to PLC inside libopus if `next`
    ///   carries none); `out` must hold exactly the lost frame's duration.
    ///
    /// Garbage packets and wrong buffer sizes return an error, never panic.
    pub fn decode(&mut self, packet: Option<&[u8]>, fec: bool, out: &mut [i16]) -> Result<usize> {
        let ch = self.channels.count();
        if !out.len().is_multiple_of(ch) || out.is_empty() {
            return Err(Error::BadFrameLength {
                got: out.len(),
                expected: format!("a non-empty multiple of {ch}"),
            });
        }
        let data = match packet {
            // An empty packet means "lost" to libopus; say so explicitly.
            Some([]) => return Err(Error::MalformedPacket("empty packet")),
            Some(p) => p,
            None => &[][..],
        };
        // libopus clamps to i32 lengths; a packet this large is garbage anyway.
        if data.len() > i32::MAX as usize {
            return Err(Error::MalformedPacket("packet too large"));
        }
        Ok(self.inner.decode(data, out, fec && packet.is_some())?)
    }

    /// Duration of the last decoded packet, in samples per channel.
    pub fn last_packet_duration(&mut self) -> Result<usize> {
        Ok(self.inner.get_last_packet_duration()? as usize)
    }

    /// Resets the decoder state (e.g. when a stream restarts).
    pub fn reset(&mut self) -> Result<()> {
        Ok(self.inner.reset_state()?)
    }

    /// Bytes of libopus state one decoder holds (for memory accounting).
    pub fn state_bytes(channels: Channels) -> usize {
        // SAFETY: a pure size query on a valid channel count.
        let n = unsafe { opusic_sys::opus_decoder_get_size(channels.count() as i32) };
        n.max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{best_correlation, dominant_frequency, sine, speechlike, tone_amplitude};

    const RATE: u32 = 48_000;
    const FRAME: usize = 960;

    /// Encodes and decodes a whole signal, 20 ms at a time.
    fn round_trip(signal: &[i16], complexity: i32, channels: Channels) -> Vec<i16> {
        let mut enc = Encoder::new(RATE, channels, Application::Voip).unwrap();
        enc.set_complexity(complexity).unwrap();
        enc.set_bitrate(32_000).unwrap();
        let mut dec = Decoder::new(RATE, channels).unwrap();
        let ch = channels.count();
        let mut out = Vec::new();
        let mut buf = vec![0i16; FRAME * ch];
        for frame in signal.chunks_exact(FRAME * ch) {
            let pkt = enc.encode(frame).unwrap();
            let n = dec.decode(Some(&pkt), false, &mut buf).unwrap();
            assert_eq!(n, FRAME);
            out.extend_from_slice(&buf);
        }
        out
    }

    /// The same pass done on libopus directly, without our wrapper.
    fn raw_libopus_round_trip(signal: &[i16], complexity: i32) -> Vec<i16> {
        let mut enc =
            ::opus::Encoder::new(RATE, ::opus::Channels::Mono, ::opus::Application::Voip).unwrap();
        enc.set_complexity(complexity).unwrap();
        enc.set_bitrate(::opus::Bitrate::Bits(32_000)).unwrap();
        let mut dec = ::opus::Decoder::new(RATE, ::opus::Channels::Mono).unwrap();
        let mut out = Vec::new();
        let mut pkt = [0u8; MAX_PACKET];
        let mut buf = [0i16; FRAME];
        for frame in signal.chunks_exact(FRAME) {
            let n = enc.encode(frame, &mut pkt).unwrap();
            dec.decode(&pkt[..n], &mut buf, false).unwrap();
            out.extend_from_slice(&buf);
        }
        out
    }

    #[test]
    fn encode_decode_correlation_matches_libopus_single_pass() {
        let signal = speechlike(RATE, 1.0);
        for complexity in [0, 10] {
            let ours = round_trip(&signal, complexity, Channels::Mono);
            let raw = raw_libopus_round_trip(&signal, complexity);
            // Opus is not waveform-exact (SILK models phase loosely), so the
            // reference is libopus' own figure, compensating its codec delay.
            let (c_ours, lag) = best_correlation(&signal, &ours, 800);
            let (c_raw, lag_raw) = best_correlation(&signal, &raw, 800);
            assert!(
                (c_ours - c_raw).abs() < 0.01,
                "complexity {complexity}: ours {c_ours} raw {c_raw}"
            );
            assert_eq!(lag, lag_raw);
            assert!(
                c_ours > 0.8,
                "complexity {complexity}: correlation {c_ours}"
            );
            // Level within 1 dB.
            let n = signal.len() - 800;
            let ratio = crate::pcm::rms(&ours[lag..lag + n]) / crate::pcm::rms(&signal[..n]);
            assert!((0.89..1.12).contains(&ratio), "level ratio {ratio}");
        }
    }

    #[test]
    fn tone_keeps_frequency_and_level() {
        let signal = sine(RATE, 1000.0, 0.5, 0.5);
        let out = round_trip(&signal, 5, Channels::Mono);
        let tail = &out[out.len() / 2..];
        assert_eq!(dominant_frequency(tail, RATE, 900.0, 1100.0), 1000.0);
        let a = tone_amplitude(tail, RATE, 1000.0);
        assert!((a - 0.5).abs() < 0.05, "amplitude {a}");
    }

    #[test]
    fn stereo_round_trip_keeps_channels_apart() {
        // Left 440 Hz, right silent: the right channel must stay much quieter.
        let left = sine(RATE, 440.0, 0.5, 0.5);
        let mut st = vec![0i16; left.len() * 2];
        for (i, s) in left.iter().enumerate() {
            st[2 * i] = *s;
        }
        let mut enc = Encoder::new(RATE, Channels::Stereo, Application::Audio).unwrap();
        enc.set_bitrate(96_000).unwrap();
        let mut dec = Decoder::new(RATE, Channels::Stereo).unwrap();
        let mut l = Vec::new();
        let mut r = Vec::new();
        let mut buf = vec![0i16; FRAME * 2];
        for frame in st.chunks_exact(FRAME * 2) {
            let pkt = enc.encode(frame).unwrap();
            dec.decode(Some(&pkt), false, &mut buf).unwrap();
            for lr in buf.chunks_exact(2) {
                l.push(lr[0]);
                r.push(lr[1]);
            }
        }
        let tail = l.len() / 2;
        let (lr, rr) = (crate::pcm::rms(&l[tail..]), crate::pcm::rms(&r[tail..]));
        assert!(lr > 5000.0, "left rms {lr}");
        assert!(rr < lr / 10.0, "right rms {rr} vs left {lr}");
    }

    #[test]
    fn rejects_bad_frame_lengths_and_rates() {
        let mut enc = Encoder::new(RATE, Channels::Mono, Application::Voip).unwrap();
        assert!(matches!(
            enc.encode(&[0; 1000]),
            Err(Error::BadFrameLength { .. })
        ));
        assert!(enc.encode(&[0; 480]).is_ok(), "10 ms is valid");
        assert!(enc.encode(&[0; 120]).is_ok(), "2.5 ms is valid");
        assert!(enc.encode(&[0; 5760]).is_ok(), "120 ms is valid");
        let mut st = Encoder::new(RATE, Channels::Stereo, Application::Voip).unwrap();
        assert!(st.encode(&[0; 961]).is_err(), "odd interleaved length");
        assert_eq!(
            Encoder::new(44_100, Channels::Mono, Application::Voip).unwrap_err(),
            Error::UnsupportedRate(44_100)
        );
        assert!(Decoder::new(22_050, Channels::Mono).is_err());
    }

    #[test]
    fn decoder_survives_garbage() {
        let mut dec = Decoder::new(RATE, Channels::Mono).unwrap();
        let mut out = [0i16; 960];
        assert!(dec.decode(Some(&[]), false, &mut out).is_err());
        assert!(dec.decode(None, false, &mut []).is_err());
        // A code-1 packet carries two equal frames, so an odd payload is invalid.
        assert!(dec.decode(Some(&[0x01, 0, 0, 0]), false, &mut out).is_err());
        // Buffer too small for a 20 ms packet.
        let mut enc = Encoder::new(RATE, Channels::Mono, Application::Voip).unwrap();
        let pkt = enc.encode(&[0; 960]).unwrap();
        assert!(dec.decode(Some(&pkt), false, &mut [0i16; 480]).is_err());
        // PLC for a duration that is not a multiple of 2.5 ms.
        assert!(dec.decode(None, false, &mut [0i16; 100]).is_err());
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..(seed % 40 + 1))
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8)
                .collect();
            let _ = dec.decode(Some(&junk), seed % 2 == 0, &mut out);
        }
    }

    #[test]
    fn plc_continues_the_signal() {
        let signal = sine(RATE, 300.0, 0.3, 0.4);
        let mut enc = Encoder::new(RATE, Channels::Mono, Application::Voip).unwrap();
        let mut dec = Decoder::new(RATE, Channels::Mono).unwrap();
        let mut out = [0i16; FRAME];
        for frame in signal.chunks_exact(FRAME) {
            let pkt = enc.encode(frame).unwrap();
            dec.decode(Some(&pkt), false, &mut out).unwrap();
        }
        assert_eq!(dec.decode(None, false, &mut out).unwrap(), FRAME);
        assert!(
            crate::pcm::rms(&out) > 1000.0,
            "PLC output should not be silent"
        );
    }

    #[test]
    fn fec_flag_follows_the_encoder_setting() {
        let signal = crate::signal::speechlike(RATE, 0.4);
        let count = |fec: bool| {
            let mut enc = Encoder::new(RATE, Channels::Mono, Application::Voip).unwrap();
            enc.set_bitrate(24_000).unwrap();
            enc.set_inband_fec(fec, 20).unwrap();
            signal
                .chunks_exact(FRAME)
                .filter(|f| has_fec(&enc.encode(f).unwrap()))
                .count()
        };
        assert_eq!(count(false), 0);
        assert!(count(true) > 10, "most packets carry LBRR once FEC is on");
        assert!(!has_fec(&[]));
        assert!(!has_fec(&[0x01, 0]));
    }

    #[test]
    fn reports_state_sizes() {
        assert!(Encoder::state_bytes(Channels::Mono) > 1000);
        assert!(Decoder::state_bytes(Channels::Stereo) > Decoder::state_bytes(Channels::Mono));
    }

    #[test]
    fn valid_frames() {
        assert!(is_valid_frame(48_000, 960));
        assert!(is_valid_frame(8_000, 20));
        assert!(!is_valid_frame(48_000, 961));
        assert!(!is_valid_frame(48_000, 0));
    }
}
