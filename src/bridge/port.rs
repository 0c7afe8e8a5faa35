//! The PTT end of a live link: what [`Link`](super::link::Link) emits for the PTT channel,
//! sent through the bridge's account. Voice never waits (a full queue drops the packet,
//! counted); text goes through the account's bounded command queue on its own task, so chat
//! never holds up the media.

use bytes::Bytes;
use metrics::Counter;
use ptt::client::{Command, OutgoingVoice};

use crate::sides::ptt::{Account, Linked};

/// A link's way into its PTT channel.
#[derive(Debug, Clone)]
pub struct PttPort {
    account: Account,
    sent: Counter,
    dropped: Counter,
    /// Voice packets the account would not take (its queue was full).
    pub voice_dropped: u64,
    /// The account counts a linked call while the port lives.
    _linked: Linked,
}

impl PttPort {
    /// The port of `account`.
    pub fn new(account: Account) -> Self {
        Self {
            _linked: account.link(),
            account,
            sent: metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "ptt_out"),
            dropped: metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "ptt_queue_full"),
            voice_dropped: 0,
        }
    }

    /// The account.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// One 20 ms Opus packet into the channel; false when the account's queue was full.
    pub fn voice(&mut self, opus: Bytes, terminator: bool) -> bool {
        let ok = self.account.client.send_voice(OutgoingVoice {
            opus,
            frames_10ms: 2,
            terminator,
            target: 0,
        });
        if ok {
            self.sent.increment(1);
        } else {
            self.voice_dropped += 1;
            self.dropped.increment(1);
        }
        ok
    }

    /// Text into the channel.
    pub fn text(&self, text: String) {
        let client = self.account.client.clone();
        tokio::spawn(async move {
            let _ = client
                .command(Command::ChannelText {
                    channel: None,
                    message: text,
                })
                .await;
        });
    }
}
