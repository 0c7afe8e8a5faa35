//! What a side itself transmits into a PTT channel, recorded as talk bursts: a console's
//! dispatcher speaking into its call, a meeting room's members heard on a linked channel. The
//! PTT side records the bursts it hears from others; these it never hears (a PTT server does
//! not echo a session's own voice, and the call channel of a console may hold no account of the
//! bridge's), so the side that sends them records them, packet for packet as sent.

use bytes::Bytes;

use super::{BurstKey, Recorder};
use crate::hub::Party;

/// One transmitting source's bursts: opened by its first packet, closed by a terminator
/// packet, [`Transmission::end`], or when dropped.
#[derive(Debug)]
pub struct Transmission {
    recorder: Recorder,
    key: BurstKey,
    /// The next packet's position in 10 ms units, while a burst is open.
    next: Option<u64>,
}

impl Transmission {
    /// Bursts of `source` (unique per transmitting connection or link, e.g. `console:7`).
    pub fn new(recorder: Recorder, source: String) -> Self {
        Self {
            recorder,
            key: (source, 0),
            next: None,
        }
    }

    /// One packet as sent: `frames_10ms` long; `terminator` ends the burst. A packet with no
    /// burst open starts one for tenant `app`, in the hub group and by the talker `starting`
    /// gives (asked only then: nothing is built per packet).
    pub fn voice(
        &mut self,
        app: &str,
        starting: impl FnOnce() -> (String, Party),
        opus: &Bytes,
        frames_10ms: u32,
        terminator: bool,
    ) {
        let at = match self.next {
            Some(at) => at,
            None => {
                let (group, talker) = starting();
                self.recorder
                    .start_burst(self.key.clone(), app, &group, talker);
                0
            }
        };
        self.recorder.packet(self.key.clone(), at, opus.clone());
        self.next = Some(at + u64::from(frames_10ms.max(1)));
        if terminator {
            self.end();
        }
    }

    /// Closes the open burst, if any.
    pub fn end(&mut self) {
        if self.next.take().is_some() {
            self.recorder.stop_burst(self.key.clone());
        }
    }
}

impl Drop for Transmission {
    fn drop(&mut self) {
        self.end();
    }
}
