//! pttbridge media engine: small, separately tested, sans-IO media primitives.
//!
//! Nothing here touches a socket, a clock or a task: callers push packets and
//! timestamps in and take packets, PCM and decisions out, so every piece is
//! unit-testable and the bridge's group actors own the scheduling.
//!
//! | module | concept |
//! |---|---|
//! | [`arena`] | packets as `Bytes` cut from shared chunks (no allocation per packet) |
//! | [`opus`] | Opus [`opus::Encoder`] / [`opus::Decoder`] (48 kHz mono/stereo, `i16`) |
//! | [`opus_toc`] | Opus TOC / framing: frame count and duration without decoding |
//! | [`g711`] | G.711 µ-law / A-law |
//! | [`pcm`] | PCM16 layout, mono ⇄ stereo, little-endian wire form |
//! | [`resample`] | 8/16/48 kHz conversion on 20 ms frames (rubato FFT) |
//! | [`jitter`] | adaptive jitter buffer: reorder, duplicate/late drop, PLC/FEC decisions |
//! | [`inbound`] | jitter buffer + decoder per talker → steady 20 ms PCM frames |
//! | [`mixer`] | i32 accumulate, full mix and mix-minus |
//! | [`mixdown`] | every track mixed and encoded once per tick, silence included (room recordings) |
//! | [`limiter`] | soft limiter: envelope + soft knee, exact below threshold |
//! | [`passthrough`] | per-listener header rewrite (`OutboundClock`), pass-through vs mix (`RouteSelector`) |
//! | [`group`] | a talk group per 20 ms tick: pass-through or mix, one shared encode |
//! | [`vad`] | RFC 6464 audio level, energy VAD, onset + hangover |
//! | [`ogg_writer`] | talk-burst recorder: Opus packets → Ogg Opus, no re-encoding |
//! | [`signal`] | test signals and measurements (correlation, tone level) |
//!
//! How a group actor drives it, every 20 ms:
//!
//! ```
//! use media::group::{GroupConfig, MixGroup};
//! use media::passthrough::OutboundClock;
//! # use media::{Channels, opus::{Application, Encoder}};
//! # let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
//! # let packet = enc.encode(&[0i16; 960]).unwrap();
//! let mut group = MixGroup::new(GroupConfig::default())?;
//! group.add_talker(7)?;
//! let mut listener = OutboundClock::new(0x1234_5678, 1, 0);
//! // As packets arrive (RTP timestamp, or PTT sequence × 480):
//! group.push(7, 0, packet, 0);
//! // On the 20 ms tick:
//! let out = group.tick(20_000)?;
//! for p in out.to_listeners {
//!     let header = listener.stamp(p.source, p.src_ts, p.samples, 20_000);
//!     // send (header, p.payload) with the listener's protocol
//!     # let _ = header;
//! }
//! # Ok::<(), media::Error>(())
//! ```

pub mod arena;
pub mod error;
pub mod g711;
pub mod group;
pub mod inbound;
pub mod jitter;
pub mod limiter;
pub mod mixdown;
pub mod mixer;
pub mod ogg_writer;
pub mod opus;
pub mod opus_toc;
pub mod passthrough;
pub mod pcm;
pub mod resample;
pub mod signal;
pub mod vad;

pub use error::{Error, Result};
pub use pcm::Channels;
