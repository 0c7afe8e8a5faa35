//! How a lone PTT talker's packets reach the linked group (a config choice, `meeting.passthrough`).

use serde::Deserialize;

/// How a lone PTT talker's packets reach the group's listeners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassThrough {
    /// Forwarded the moment they arrive (the listeners' own jitter buffers absorb the jitter).
    /// A burst in which a second PTT user starts talking goes through the link's tick from
    /// then on until the channel is quiet: mixed while several talk, and the remaining talker's
    /// packets unchanged on the tick once the mixer lets go (no return to on-arrival
    /// forwarding mid-burst, so the listeners' timeline never jumps back).
    #[default]
    Direct,
    /// Through the link's jitter buffer, sent on its 20 ms tick (adds the buffer's depth).
    Buffered,
}
