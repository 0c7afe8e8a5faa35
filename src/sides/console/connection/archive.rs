//! A console call in the archive (`[recording] dir`): the dispatcher's own bursts as the
//! console sends them ([`Transmission`](crate::recording::transmission::Transmission)), and
//! each terminal's bursts as the console's PTT session hears them. The bridge's PTT accounts
//! are not in the call's channel, so nothing else records them.

use bytes::Bytes;

use super::Connection;
use crate::hub::Party;

impl Connection {
    /// The recorder's source for this console's terminal bursts.
    fn archive_source(&self) -> String {
        format!("console:{}", self.id)
    }

    /// A terminal took the call's floor: its burst opens.
    pub(super) fn archive_terminal_started(&self, session: u32, call: u64, party: &Party) {
        if let (Some(r), Some(l)) = (self.side.0.recorder.get(), &self.login) {
            r.start_burst(
                (self.archive_source(), session),
                &l.server.ptt.app,
                &format!("console:{call}"),
                party.clone(),
            );
        }
    }

    /// One packet of the floor holder's burst.
    pub(super) fn archive_terminal_voice(&self, session: u32, sequence: u64, opus: &Bytes) {
        if let Some(r) = self.side.0.recorder.get() {
            r.packet((self.archive_source(), session), sequence, opus.clone());
        }
    }

    /// The terminal's burst is over.
    pub(super) fn archive_terminal_stopped(&self, session: u32) {
        if let Some(r) = self.side.0.recorder.get() {
            r.stop_burst((self.archive_source(), session));
        }
    }

    /// The console went: whatever it had open is closed.
    pub(super) fn archive_closed(&mut self) {
        if let Some(t) = &mut self.transmission {
            t.end();
        }
        if let Some(r) = self.side.0.recorder.get() {
            r.stop_source(&self.archive_source());
        }
    }
}
