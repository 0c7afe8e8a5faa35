//! One group member's audio on its way into the PTT channel: jitter buffer and decoder (Opus;
//! G.711 is turned into Opus frames first), its voice activity — the RFC 6464 level it sends,
//! else the energy of what it says — and mute. A side that knows when its members talk (a
//! push-to-talk button) sets that instead of the VAD.

use bytes::Bytes;
use media::Channels;
use media::g711::Law;
use media::inbound::{FRAME, FrameKind, InboundStream};
use media::jitter::JitterConfig;
use media::vad::{AudioLevel, Vad, VadConfig};

use super::g711::G711Inbound;
use super::metrics::{BurstStart, JitterReport};

/// VAD hangover: 40 frames (800 ms) keep one PTT burst across the pauses between phrases.
const HANGOVER_FRAMES: u32 = 40;

/// Least depth of a member's jitter buffer. A PTT channel is half-duplex: 60 ms more before the
/// radio hears a speaker costs nothing, while a sender that stalls for a few tens of ms (a busy
/// browser or machine) would otherwise run the buffer dry mid-word.
pub(crate) const MIN_DEPTH_MS: u32 = 60;

/// A member's inbound audio and talk state.
pub(crate) struct Member {
    inbound: InboundStream,
    /// Set while the member sends G.711: its packets become Opus frames for `inbound`.
    g711: Option<G711Inbound>,
    pub reported: JitterReport,
    /// The jitter-buffer counters when the member's current talk burst began.
    pub burst_start: BurstStart,
    stereo: Vec<i16>,
    /// This tick's frame, mono.
    pub mono: Vec<i16>,
    vad: Vad,
    level: Option<AudioLevel>,
    pub muted: bool,
    /// Talk state set by the side (`None`: the VAD decides).
    pub explicit: Option<bool>,
    /// The talk state last reported.
    pub reported_talking: bool,
    /// What this tick's pull gave.
    pub last_kind: FrameKind,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("muted", &self.muted)
            .field("talking", &self.reported_talking)
            .finish_non_exhaustive()
    }
}

/// Why a member's packet was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MemberPacketError {
    /// No G.711 decoder could be made, or the packet did not transcode.
    #[error("G.711 packet not transcoded: {0}")]
    Transcode(#[from] media::Error),
}

impl Member {
    /// A member that has sent nothing yet.
    pub fn new() -> media::Result<Self> {
        Ok(Self {
            inbound: InboundStream::new(
                JitterConfig {
                    min_depth_ms: MIN_DEPTH_MS,
                    ..JitterConfig::default()
                },
                Channels::Stereo,
            )?,
            g711: None,
            reported: JitterReport::default(),
            burst_start: BurstStart::default(),
            stereo: vec![0; FRAME * 2],
            mono: vec![0; FRAME],
            vad: Vad::new(VadConfig {
                hangover_frames: HANGOVER_FRAMES,
                ..VadConfig::default()
            }),
            level: None,
            muted: false,
            explicit: None,
            reported_talking: false,
            last_kind: FrameKind::Silence,
        })
    }

    /// One RTP packet: Opus (`law` None) or G.711, `ts` in 48 kHz units, `level` the RFC 6464
    /// header extension as str0m gives it (−dBov).
    pub fn push(
        &mut self,
        law: Option<Law>,
        ts: u32,
        payload: Bytes,
        level: Option<i8>,
        now_us: u64,
    ) -> Result<(), MemberPacketError> {
        if let Some(l) = level {
            // str0m gives -dBov with the V bit split off; AudioLevel wants the wire byte.
            self.level = Some(AudioLevel::from_byte((-l).clamp(0, 127) as u8));
        }
        let Some(law) = law else {
            self.g711 = None;
            self.inbound.push(ts, payload, now_us);
            return Ok(());
        };
        let g = match &mut self.g711 {
            Some(g) if g.law() == law => g,
            slot => slot.insert(G711Inbound::new(law)?),
        };
        let inbound = &mut self.inbound;
        g.push(ts, &payload, |ts, opus| {
            inbound.push(ts, opus, now_us);
        })?;
        Ok(())
    }

    /// Takes this tick's frame into [`Member::mono`] and feeds the VAD.
    pub fn pull(&mut self, now_us: u64) {
        let kind = self
            .inbound
            .pull(now_us, &mut self.stereo)
            .unwrap_or(FrameKind::Silence);
        self.last_kind = kind;
        if kind != FrameKind::Silence {
            media::pcm::stereo_to_mono(&self.stereo, &mut self.mono);
        } else {
            self.mono.fill(0);
        }
        if self.muted {
            self.vad.observe_nothing();
        } else if let Some(level) = self.level.take() {
            self.vad.observe_level(level);
        } else if kind == FrameKind::Silence {
            self.vad.observe_nothing();
        } else {
            self.vad.observe_pcm(&self.mono);
        }
    }

    /// Whether the member talks now: as the side says, else as its VAD (with hangover) hears.
    pub fn talking(&self) -> bool {
        self.explicit.unwrap_or_else(|| self.vad.is_active())
    }

    /// Whether it counts towards the group holding the PTT floor.
    pub fn speaking(&self) -> bool {
        !self.muted && self.talking()
    }

    /// Its jitter-buffer figures.
    pub fn stats(&self) -> media::jitter::JitterStats {
        self.inbound.stats()
    }
}
