//! One inbound Opus stream turned into steady 20 ms PCM frames: a
//! [`JitterBuffer`] in front of a [`Decoder`], with PLC and FEC applied.
//!
//! This is what a mixing group holds per talker. Packets of any legal
//! duration (2.5..120 ms) come out as fixed frames through a small FIFO.

use bytes::Bytes;

use crate::error::Result;
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, PushOutcome};
use crate::opus::Decoder;
use crate::pcm::Channels;

/// Output rate of every inbound stream (Opus' native rate).
pub const RATE: u32 = 48_000;
/// Samples per channel in one output frame (20 ms at 48 kHz).
pub const FRAME: usize = 960;

/// What a pulled frame contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// At least part of the frame was decoded from received packets.
    Voice,
    /// Entirely concealed or FEC-recovered audio.
    Concealed,
    /// Nothing to play: the frame is silence (stream idle or buffering).
    Silence,
}

/// A packet taken from the jitter buffer during the last [`InboundStream::pull`],
/// exactly as received: what pass-through forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popped {
    /// Its timestamp as received (48 kHz).
    pub ts: u32,
    /// The unchanged Opus packet.
    pub payload: Bytes,
    /// Its duration in 48 kHz samples.
    pub samples: u32,
}

/// Most packets one 20 ms pull can take (2.5 ms packets).
const MAX_POPPED: usize = 8;

/// Jitter buffer + decoder for one talker. See the module docs.
pub struct InboundStream {
    popped: Vec<Popped>,
    jitter: JitterBuffer,
    decoder: Decoder,
    channels: usize,
    /// Decoded audio not yet handed out: `pcm[..len]`.
    pcm: Vec<i16>,
    len: usize,
    decode_errors: u64,
}

impl std::fmt::Debug for InboundStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundStream")
            .field("jitter", &self.jitter.stats())
            .field("buffered", &self.len)
            .finish_non_exhaustive()
    }
}

/// FEC from `next` if given, else PLC; silence if libopus refuses both
/// (a hostile `next`), so one bad packet never fails the whole tick.
fn conceal(decoder: &mut Decoder, next: Option<&[u8]>, out: &mut [i16]) -> usize {
    let ch = decoder.channels().count();
    if let Some(p) = next
        && let Ok(k) = decoder.decode(Some(p), true, out)
    {
        return k;
    }
    decoder.decode(None, false, out).unwrap_or_else(|_| {
        out.fill(0);
        out.len() / ch
    })
}

impl InboundStream {
    /// A stream decoding to 48 kHz with `channels` output channels.
    pub fn new(cfg: JitterConfig, channels: Channels) -> Result<Self> {
        let ch = channels.count();
        Ok(Self {
            popped: Vec::with_capacity(MAX_POPPED),
            jitter: JitterBuffer::new(cfg),
            decoder: Decoder::new(RATE, channels)?,
            channels: ch,
            // Room for a 20 ms frame plus one 20 ms packet; grows (bounded by
            // the 120 ms packet maximum) only if the sender uses longer packets.
            pcm: vec![0; 2 * FRAME * ch],
            len: 0,
            decode_errors: 0,
        })
    }

    /// Feeds an arriving packet (see [`JitterBuffer::push`]).
    pub fn push(&mut self, ts: u32, payload: Bytes, arrival_us: u64) -> PushOutcome {
        self.jitter.push(ts, payload, arrival_us)
    }

    /// Drops audio up to `ts` that was delivered another way (see [`JitterBuffer::skip_through`]),
    /// decoded leftovers included.
    pub fn skip_through(&mut self, ts: u32) -> usize {
        self.len = 0;
        self.jitter.skip_through(ts)
    }

    /// Jitter statistics.
    pub fn stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// Packets the decoder rejected (they were concealed instead).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Bytes held on the heap, excluding libopus' decoder state (see
    /// [`Decoder::state_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        self.pcm.capacity() * 2
            + self.popped.capacity() * std::mem::size_of::<Popped>()
            + self.jitter.heap_bytes()
    }

    /// Packets the last [`pull`](Self::pull) took from the jitter buffer, in order.
    pub fn popped(&self) -> &[Popped] {
        &self.popped
    }

    /// See [`JitterBuffer::set_trim_slack`].
    pub fn set_trim_slack(&mut self, frames: u32) {
        self.jitter.set_trim_slack(frames);
    }

    /// Whether the next [`pull`](Self::pull) would fill its frame from received audio alone
    /// (decoded leftovers plus packets due in a row, see [`JitterBuffer::ready_samples`]).
    pub fn ready(&self, now_us: u64) -> bool {
        self.len / self.channels + self.jitter.ready_samples(now_us) as usize >= FRAME
    }

    /// Fills `out` (exactly 20 ms: 960 × channels samples) with the next frame.
    pub fn pull(&mut self, now_us: u64, out: &mut [i16]) -> Result<FrameKind> {
        let need = FRAME * self.channels;
        if out.len() != need {
            return Err(crate::Error::BadFrameLength {
                got: out.len(),
                expected: need.to_string(),
            });
        }
        self.popped.clear();
        let mut voice = false;
        let mut concealed = false;
        while self.len < need {
            let playout = self.jitter.pop(now_us);
            let Some(samples) = playout.samples() else {
                break;
            };
            let n = samples as usize * self.channels;
            // Sized from what was actually popped (the buffer may skip a packet
            // on the way): grows only for packets longer than 20 ms, bounded by
            // len < FRAME and the 120 ms packet maximum.
            if self.pcm.len() < self.len + n {
                self.pcm.resize(self.len + n, 0);
            }
            let tail = &mut self.pcm[self.len..self.len + n];
            let got = match playout {
                Playout::Idle => break,
                Playout::Packet {
                    ts,
                    payload,
                    samples,
                } => {
                    if self.popped.len() < self.popped.capacity() {
                        self.popped.push(Popped {
                            ts,
                            payload: payload.clone(),
                            samples,
                        });
                    }
                    match self.decoder.decode(Some(&payload), false, tail) {
                        Ok(k) => {
                            voice = true;
                            k
                        }
                        Err(_) => {
                            // Parses but does not decode: conceal its slot instead.
                            self.decode_errors += 1;
                            concealed = true;
                            conceal(&mut self.decoder, None, tail)
                        }
                    }
                }
                Playout::Fec { next, .. } => {
                    concealed = true;
                    conceal(&mut self.decoder, Some(&next), tail)
                }
                Playout::Conceal { .. } => {
                    concealed = true;
                    conceal(&mut self.decoder, None, tail)
                }
            };
            self.len += got * self.channels;
        }
        let kind = if voice {
            FrameKind::Voice
        } else if concealed {
            FrameKind::Concealed
        } else if self.len > 0 {
            // Tail of the last packet of a burst.
            FrameKind::Voice
        } else {
            FrameKind::Silence
        };
        let n = self.len.min(need);
        out[..n].copy_from_slice(&self.pcm[..n]);
        out[n..].fill(0);
        self.pcm.copy_within(n..self.len, 0);
        self.len -= n;
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opus::{Application, Encoder};
    use crate::signal::{best_correlation, max_step, sine, speechlike};

    fn encode_all(signal: &[i16], fec: bool, frame: usize) -> Vec<Bytes> {
        let mut enc = Encoder::new(RATE, Channels::Mono, Application::Voip).unwrap();
        enc.set_bitrate(32_000).unwrap();
        enc.set_inband_fec(fec, 20).unwrap();
        signal
            .chunks_exact(frame)
            .map(|f| enc.encode(f).unwrap())
            .collect()
    }

    /// Pushes packets (skipping `lost`) just in time and pulls one frame per 20 ms tick.
    fn play(
        packets: &[Bytes],
        lost: &[usize],
        frame: usize,
    ) -> (Vec<i16>, Vec<FrameKind>, InboundStream) {
        play_with(JitterConfig::default(), packets, lost, frame)
    }

    fn play_with(
        cfg: JitterConfig,
        packets: &[Bytes],
        lost: &[usize],
        frame: usize,
    ) -> (Vec<i16>, Vec<FrameKind>, InboundStream) {
        let mut s = InboundStream::new(cfg, Channels::Mono).unwrap();
        let mut out = Vec::new();
        let mut kinds = Vec::new();
        let mut buf = [0i16; FRAME];
        let ticks = packets.len() * frame / FRAME;
        let mut next_pkt = 0;
        for tick in 0..ticks {
            let now = tick as u64 * 20_000;
            while next_pkt < packets.len() && next_pkt * frame <= tick * FRAME {
                if !lost.contains(&next_pkt) {
                    s.push((next_pkt * frame) as u32, packets[next_pkt].clone(), now);
                }
                next_pkt += 1;
            }
            kinds.push(s.pull(now, &mut buf).unwrap());
            out.extend_from_slice(&buf);
        }
        (out, kinds, s)
    }

    #[test]
    fn clean_stream_plays_everything() {
        let signal = speechlike(RATE, 1.0);
        let pkts = encode_all(&signal, false, FRAME);
        let (out, kinds, s) = play(&pkts, &[], FRAME);
        assert!(kinds.iter().filter(|k| **k == FrameKind::Voice).count() >= 50);
        let (c, _) = best_correlation(&signal, &out, 2000);
        assert!(c > 0.8, "correlation {c}");
        assert_eq!(s.stats().lost, 0);
    }

    #[test]
    fn lost_packet_is_concealed_non_silent_and_continuous() {
        let signal = sine(RATE, 250.0, 0.4, 1.0);
        let pkts = encode_all(&signal, false, FRAME);
        let (clean, _, _) = play(&pkts, &[], FRAME);
        let (out, kinds, s) = play(&pkts, &[25], FRAME);
        assert_eq!(s.stats().lost, 1);
        assert_eq!(s.stats().concealed, 1);
        let idx = kinds
            .iter()
            .position(|k| *k == FrameKind::Concealed)
            .expect("a concealed frame");
        let frame = &out[idx * FRAME..(idx + 1) * FRAME];
        let level = crate::pcm::rms(frame);
        assert!(
            level > 0.3 * crate::pcm::rms(&clean[idx * FRAME..(idx + 1) * FRAME]),
            "PLC rms {level}"
        );
        // Continuous: no step across the concealed frame's edges bigger than
        // twice what the clean decode has anywhere.
        let around = &out[(idx - 1) * FRAME..(idx + 2) * FRAME];
        let clean_step = max_step(&clean[FRAME * 5..]);
        assert!(
            max_step(around) <= 2 * clean_step,
            "{} vs {clean_step}",
            max_step(around)
        );
    }

    #[test]
    fn lost_packet_is_recovered_from_fec() {
        let signal = speechlike(RATE, 1.0);
        let pkts = encode_all(&signal, true, FRAME);
        // FEC needs the packet after the gap in hand when the gap is due:
        // a depth of two packets.
        let cfg = JitterConfig {
            min_depth_ms: 40,
            ..JitterConfig::default()
        };
        let (clean, _, _) = play_with(cfg, &pkts, &[], FRAME);
        let (out, kinds, s) = play_with(cfg, &pkts, &[25], FRAME);
        assert_eq!(s.stats().fec, 1, "{:?}", s.stats());
        let idx = kinds
            .iter()
            .position(|k| *k == FrameKind::Concealed)
            .unwrap();
        let a = &clean[idx * FRAME..(idx + 1) * FRAME];
        let b = &out[idx * FRAME..(idx + 1) * FRAME];
        // FEC is a lower-rate copy of the same audio: it tracks the clean decode.
        let c = crate::signal::correlation(a, b);
        assert!(c > 0.7, "FEC frame correlation {c}");
    }

    #[test]
    fn long_packets_come_out_as_20ms_frames() {
        let signal = speechlike(RATE, 1.2);
        let pkts = encode_all(&signal, false, 2880); // 60 ms packets
        let (out, _, s) = play(&pkts, &[], 2880);
        // The FIFO grew for 60 ms packets, but not past one packet + one frame.
        assert!(
            s.pcm.len() >= 2880 && s.pcm.len() <= 2880 + FRAME,
            "{}",
            s.pcm.len()
        );
        let (c, _) = best_correlation(&signal, &out, 4000);
        assert!(c > 0.8, "correlation {c}");
        assert_eq!(s.stats().lost, 0);
        assert_eq!(s.decode_errors(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Garbage that passes the TOC check but not the decoder, at random
        /// times: every pull still yields a frame, never an error or a panic.
        #[test]
        fn garbage_packets_never_fail_a_pull(
            ops in proptest::collection::vec(
                (proptest::prelude::any::<u8>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60), 0u32..40, proptest::prelude::any::<bool>()),
                0..80,
            )
        ) {
            let mut s = InboundStream::new(JitterConfig::default(), Channels::Mono).unwrap();
            let mut buf = [0i16; FRAME];
            let mut now = 0u64;
            for (toc, body, k, pull) in ops {
                let mut p = vec![toc];
                p.extend(body);
                s.push(k * 960, Bytes::from(p), now);
                if pull {
                    now += 20_000;
                    proptest::prop_assert!(s.pull(now, &mut buf).is_ok());
                }
            }
        }
    }

    #[test]
    fn wrong_output_length_is_an_error() {
        let mut s = InboundStream::new(JitterConfig::default(), Channels::Mono).unwrap();
        assert!(s.pull(0, &mut [0; 100]).is_err());
        assert_eq!(s.pull(0, &mut [0; FRAME]).unwrap(), FrameKind::Silence);
    }
}
