//! Voice activity for taking and releasing the PTT floor on behalf of
//! meeting speakers.
//!
//! Two sources, same state machine:
//! - the RFC 6464 audio level a WebRTC sender puts in an RTP header
//!   extension (cheap: no decoding), when present;
//! - the energy of decoded PCM otherwise, against an adaptive noise floor.
//!
//! [`Vad`] adds onset confirmation (a lone loud frame is a click, not
//! speech) and hangover (short pauses between words keep the floor).

/// Parsed RFC 6464 client-to-mixer audio level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The V bit: the sender's own VAD says this packet contains voice.
    pub voice: bool,
    /// Level in -dBov: 0 is the loudest, 127 is silence (-127 dBov).
    pub level: u8,
}

impl AudioLevel {
    /// Decodes the one data byte of the extension element.
    pub fn from_byte(b: u8) -> Self {
        Self {
            voice: b & 0x80 != 0,
            level: b & 0x7F,
        }
    }

    /// Decodes an extension element's data (one-byte or two-byte header form:
    /// the level is the first data byte; padding after it is ignored).
    pub fn parse(data: &[u8]) -> Option<Self> {
        data.first().map(|&b| Self::from_byte(b))
    }

    /// The level as dBov (0 or negative).
    pub fn dbov(self) -> f32 {
        -f32::from(self.level)
    }
}

/// Level of a PCM frame in dBov, as RFC 6464 defines it (0 = full scale, floor -127).
pub fn frame_dbov(pcm: &[i16]) -> f32 {
    let rms = crate::pcm::rms(pcm);
    if rms < 1e-9 {
        return -127.0;
    }
    (20.0 * (rms / 32767.0).log10()).clamp(-127.0, 0.0) as f32
}

/// Tuning for [`Vad`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Frames that must be voiced in a row before speech starts.
    pub onset_frames: u32,
    /// Unvoiced frames after speech before it is declared over.
    pub hangover_frames: u32,
    /// Levels quieter than this (dBov) are never speech.
    pub min_dbov: f32,
    /// How far above the noise floor (dB) a frame must be to count as voiced.
    pub snr_db: f32,
    /// Trust the RFC 6464 V bit when the sender sets it.
    pub trust_v_bit: bool,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            onset_frames: 2,
            // 300 ms at 20 ms frames: spans the pauses between words.
            hangover_frames: 15,
            min_dbov: -50.0,
            snr_db: 12.0,
            trust_v_bit: true,
        }
    }
}

/// A change of speaking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began this frame: take the floor.
    Started,
    /// Speech ended (hangover elapsed): release the floor.
    Stopped,
}

/// Voice activity state for one speaker. Feed one observation per frame.
#[derive(Debug, Clone)]
pub struct Vad {
    cfg: VadConfig,
    active: bool,
    voiced_run: u32,
    quiet_run: u32,
    noise_floor: f32,
}

impl Vad {
    /// A detector in the silent state.
    pub fn new(cfg: VadConfig) -> Self {
        Self {
            cfg,
            active: false,
            voiced_run: 0,
            quiet_run: 0,
            noise_floor: -70.0,
        }
    }

    /// Whether speech is in progress.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Current noise-floor estimate (dBov).
    pub fn noise_floor(&self) -> f32 {
        self.noise_floor
    }

    /// One frame observed through its RFC 6464 audio level.
    pub fn observe_level(&mut self, level: AudioLevel) -> Option<VadEvent> {
        let by_level = self.classify(level.dbov());
        self.step(by_level || (self.cfg.trust_v_bit && level.voice))
    }

    /// One frame observed through its decoded PCM.
    pub fn observe_pcm(&mut self, pcm: &[i16]) -> Option<VadEvent> {
        let voiced = self.classify(frame_dbov(pcm));
        self.step(voiced)
    }

    /// A frame with no packet at all (sender stopped or DTX): unvoiced.
    pub fn observe_nothing(&mut self) -> Option<VadEvent> {
        self.step(false)
    }

    fn classify(&mut self, dbov: f32) -> bool {
        // Noise floor: follows drops at once, rises slowly (0.05 dB per
        // frame), so speech peaks don't drag it up but a noisier room does.
        if dbov < self.noise_floor {
            self.noise_floor = dbov;
        } else {
            self.noise_floor += 0.05;
        }
        self.noise_floor = self.noise_floor.clamp(-127.0, -10.0);
        dbov >= self.cfg.min_dbov && dbov >= self.noise_floor + self.cfg.snr_db
    }

    fn step(&mut self, voiced: bool) -> Option<VadEvent> {
        if voiced {
            self.voiced_run = self.voiced_run.saturating_add(1);
            self.quiet_run = 0;
        } else {
            self.voiced_run = 0;
            self.quiet_run = self.quiet_run.saturating_add(1);
        }
        if !self.active && self.voiced_run >= self.cfg.onset_frames.max(1) {
            self.active = true;
            return Some(VadEvent::Started);
        }
        if self.active && self.quiet_run > self.cfg.hangover_frames {
            self.active = false;
            return Some(VadEvent::Stopped);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{sine, speechlike};

    #[test]
    fn parses_rfc6464_byte() {
        assert_eq!(
            AudioLevel::from_byte(0x80 | 30),
            AudioLevel {
                voice: true,
                level: 30
            }
        );
        assert_eq!(
            AudioLevel::from_byte(127),
            AudioLevel {
                voice: false,
                level: 127
            }
        );
        assert_eq!(AudioLevel::parse(&[]), None);
        assert_eq!(AudioLevel::parse(&[0x05, 0, 0]).unwrap().level, 5);
        assert_eq!(AudioLevel::from_byte(40).dbov(), -40.0);
    }

    #[test]
    fn dbov_of_known_signals() {
        assert_eq!(frame_dbov(&[0; 960]), -127.0);
        // A full-scale sine has RMS 1/√2: -3 dBov.
        let s = sine(48_000, 1000.0, 1.0, 0.02);
        assert!((frame_dbov(&s) + 3.01).abs() < 0.1);
        let q = sine(48_000, 1000.0, 0.01, 0.02);
        assert!((frame_dbov(&q) + 43.0).abs() < 0.2);
    }

    fn run_pcm(vad: &mut Vad, pcm: &[i16]) -> Vec<(usize, VadEvent)> {
        pcm.chunks_exact(960)
            .enumerate()
            .filter_map(|(i, f)| vad.observe_pcm(f).map(|e| (i, e)))
            .collect()
    }

    #[test]
    fn energy_vad_with_onset_and_hangover() {
        let mut vad = Vad::new(VadConfig::default());
        // 1 s of faint background noise, 1 s of speech, 1 s of the same noise.
        let noise: Vec<i16> = (0..48_000u32)
            .map(|i| ((i.wrapping_mul(2654435761) >> 16) as i16) / 300)
            .collect();
        let mut pcm = noise.clone();
        let speech = speechlike(48_000, 1.0);
        pcm.extend(speech.iter().zip(&noise).map(|(a, b)| a.saturating_add(*b)));
        pcm.extend_from_slice(&noise);
        let events = run_pcm(&mut vad, &pcm);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].1, VadEvent::Started);
        // Onset confirmed on the 2nd speech frame (frame 51).
        assert_eq!(events[0].0, 51);
        assert_eq!(events[1].1, VadEvent::Stopped);
        // Released 15 frames of hangover after the speech ends (frame 100).
        assert_eq!(events[1].0, 100 + 15);
    }

    #[test]
    fn a_single_click_does_not_take_the_floor() {
        let mut vad = Vad::new(VadConfig::default());
        let mut pcm = vec![0i16; 960 * 10];
        for s in &mut pcm[960 * 5..960 * 6] {
            *s = 20_000;
        }
        assert!(run_pcm(&mut vad, &pcm).is_empty());
    }

    #[test]
    fn audio_level_drives_the_same_machine() {
        let mut vad = Vad::new(VadConfig {
            trust_v_bit: false,
            ..VadConfig::default()
        });
        let mut events = Vec::new();
        // Quiet (-90), loud (-20) for 10 frames, quiet again for 30.
        let levels = std::iter::repeat_n(90u8, 20)
            .chain(std::iter::repeat_n(20, 10))
            .chain(std::iter::repeat_n(90, 30));
        for (i, l) in levels.enumerate() {
            if let Some(e) = vad.observe_level(AudioLevel {
                voice: false,
                level: l,
            }) {
                events.push((i, e));
            }
        }
        assert_eq!(
            events,
            vec![(21, VadEvent::Started), (30 + 15, VadEvent::Stopped)]
        );
        // With the V bit trusted, the sender's decision counts even when quiet.
        let mut vad = Vad::new(VadConfig::default());
        vad.observe_level(AudioLevel {
            voice: true,
            level: 100,
        });
        assert_eq!(
            vad.observe_level(AudioLevel {
                voice: true,
                level: 100
            }),
            Some(VadEvent::Started)
        );
        // Missing packets count as silence.
        for _ in 0..15 {
            assert_eq!(vad.observe_nothing(), None);
        }
        assert_eq!(vad.observe_nothing(), Some(VadEvent::Stopped));
    }
}
