//! A room's PTT link: the dialled-in channel as one more member of the room. It holds the
//! side-neutral [`Link`] core, the account's channel feed and the [`PttPort`] it speaks into;
//! the room actor hands it what happens and routes what it emits (packets to players, pushes
//! to members, events to the hub).

use std::time::Instant;

use rtcpeer::bean::Client;
use rtcpeer::id::Id;
use tokio::sync::broadcast;

use super::super::dial::DialTarget;
use crate::bridge::{Link, LinkConfig, PassThrough, PttPort};
use crate::hub::{Party, Side};
use crate::recording::transmission::Transmission;
use crate::sides::ptt::ChannelEvent;

/// What the link's PTT feed gave the actor.
#[derive(Debug)]
pub enum FeedInput {
    /// One event of the channel or the account.
    Event(ChannelEvent),
    /// The account's feed ended (the PTT side stopped).
    Closed,
}

/// The PTT link of one room.
pub struct RoomLink {
    /// Dial-in id: the link's client id in the room.
    pub dial: Id,
    /// Who called ([`PLATFORM`](super::super::calls::PLATFORM) for a platform's invite).
    pub caller: Id,
    /// Brought in by a standing room itself: ends when the room's last member leaves.
    pub ends_when_empty: bool,
    /// Its client bean, as members see it.
    pub client: Client,
    /// Hub group id of the PTT channel.
    pub ptt_group: String,
    /// The core.
    pub core: Link<Id>,
    /// Where its PTT voice and text go.
    pub port: PttPort,
    /// The members' bursts into the channel, archived (with `[recording] dir`).
    pub transmission: Option<Transmission>,
    feed: broadcast::Receiver<ChannelEvent>,
    /// The channel's present when the link was made (see [`RoomLink::take_present`]).
    present: Vec<ChannelEvent>,
    lagged: metrics::Counter,
}

impl std::fmt::Debug for RoomLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomLink")
            .field("dial", &self.dial)
            .field("ptt_group", &self.ptt_group)
            .finish_non_exhaustive()
    }
}

impl RoomLink {
    /// The link of `target` into `room`, called by `caller`.
    pub fn new(
        target: &DialTarget,
        caller: Id,
        room: Id,
        passthrough: PassThrough,
        hand_only: bool,
        now: Instant,
    ) -> media::Result<Self> {
        let account = target.account.clone();
        let path = account.channel_path().unwrap_or_default();
        let mut extra = serde_json::Map::new();
        extra.insert("pttChannel".into(), path.clone().into());
        let client = Client {
            id: Some(target.user_id),
            name: Some(target.display_name()),
            mode: Some("ptt".into()),
            stream_id: Some(target.user_id),
            is_muted: Some(false),
            extra,
            ..Client::default()
        };
        let core = Link::new(
            LinkConfig {
                passthrough,
                group_party: Party {
                    side: Side::Meeting,
                    id: format!("room:{room}"),
                    name: format!("meeting room {room}"),
                },
                group_level: target.meeting_level,
                ptt_level: target.ptt_level,
                hand_only,
            },
            now,
        )?;
        let (feed, present) = account.channel_now();
        Ok(Self {
            dial: target.user_id,
            caller,
            ends_when_empty: false,
            client,
            ptt_group: crate::sides::ptt::group_id(&account.server, &path),
            core,
            feed,
            present,
            port: PttPort::new(account),
            transmission: None,
            lagged: metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "ptt_lag"),
        })
    }

    /// What the channel was doing when the link was made, as events to handle before the
    /// feed's: the account being away, bursts in progress (so a room that links a channel
    /// mid-burst names the talker at once, not at the next burst).
    pub fn take_present(&mut self) -> Vec<ChannelEvent> {
        std::mem::take(&mut self.present)
    }

    /// The next event of the PTT channel (a lagging link skips ahead, counted).
    pub async fn next(&mut self) -> FeedInput {
        loop {
            match self.feed.recv().await {
                Ok(e) => return FeedInput::Event(e),
                Err(broadcast::error::RecvError::Lagged(n)) => self.lagged.increment(n),
                Err(broadcast::error::RecvError::Closed) => return FeedInput::Closed,
            }
        }
    }

    /// An event already waiting, without waiting for one.
    pub fn try_next(&mut self) -> Option<FeedInput> {
        loop {
            match self.feed.try_recv() {
                Ok(e) => return Some(FeedInput::Event(e)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lagged.increment(n),
                Err(broadcast::error::TryRecvError::Closed) => return Some(FeedInput::Closed),
                Err(broadcast::error::TryRecvError::Empty) => return None,
            }
        }
    }
}
