//! How a lone PTT talker's packets reach the linked group (a config choice, `meeting.passthrough`).

use serde::Deserialize;

/// How a lone PTT talker's packets reach the group's listeners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassThrough {
    /// Forwarded the moment they arrive (the listeners' own jitter buffers absorb the jitter).
    /// A burst in which a second PTT user starts talking switches to the mix and stays mixed
    /// until the channel is quiet.
    #[default]
    Direct,
    /// Through the link's jitter buffer, sent on its 20 ms tick (adds the buffer's depth).
    Buffered,
}
