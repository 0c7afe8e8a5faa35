//! The dial plan: the user ids that stand for PTT channels (`[[meeting.dial_in]]` and
//! `meeting.number_base`), and what each of those lines is doing now. [`Lines`] is the one
//! place link state is kept: which room a dial-in is linked into (or being linked into), with
//! the call record of that link, or that it is in a call on an upstream server.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rtcpeer::id::Id;

use super::config::{AnswerPolicy, MeetingConfig};
use crate::hub::CallRecorder;
use crate::hub::floor::MicLevel;
use crate::sides::ptt::{Account, PttSide};

/// A user id that stands for a PTT channel.
#[derive(Debug, Clone)]
pub struct DialTarget {
    /// The id callers dial.
    pub user_id: Id,
    /// Display name in rooms.
    pub name: Option<String>,
    /// How calls are answered.
    pub policy: AnswerPolicy,
    /// Floor level of meeting speakers.
    pub meeting_level: MicLevel,
    /// Floor level of PTT talkers.
    pub ptt_level: MicLevel,
    /// The PTT account whose channel is dialled.
    pub account: Account,
}

impl DialTarget {
    /// The name the channel goes by in rooms: the configured one, else its channel path,
    /// else the account.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            match self.account.channel_path().filter(|p| !p.is_empty()) {
                Some(path) => path,
                None => self.account.username.clone(),
            }
        })
    }
}

/// Every dial-in id, resolved against the PTT accounts once at start.
#[derive(Debug, Clone, Default)]
pub struct DialPlan {
    targets: HashMap<Id, DialTarget>,
}

impl DialPlan {
    /// The dial-in ids of `config` whose PTT account exists.
    pub fn new(config: &MeetingConfig, ptt: &PttSide) -> Self {
        let mut targets = HashMap::new();
        for d in &config.dial_in {
            if let Some(account) = ptt
                .accounts
                .iter()
                .find(|a| a.server == d.server && a.username == d.account)
            {
                targets.insert(
                    d.user_id,
                    DialTarget {
                        user_id: d.user_id,
                        name: d.name.clone(),
                        policy: d.policy,
                        meeting_level: d.meeting_level,
                        ptt_level: d.ptt_level,
                        account: account.clone(),
                    },
                );
            }
        }
        if let Some(base) = config.number_base {
            for (i, account) in ptt.accounts.iter().enumerate() {
                let id = base + i as i64;
                targets.entry(id).or_insert_with(|| DialTarget {
                    user_id: id,
                    name: None,
                    policy: AnswerPolicy::Answer,
                    meeting_level: 1,
                    ptt_level: 1,
                    account: account.clone(),
                });
            }
        }
        Self { targets }
    }

    /// The target of `id`.
    pub fn get(&self, id: Id) -> Option<&DialTarget> {
        self.targets.get(&id)
    }

    /// Whether `id` is a dial-in id.
    pub fn contains(&self, id: Id) -> bool {
        self.targets.contains_key(&id)
    }

    /// Every dial-in id.
    pub fn ids(&self) -> HashSet<Id> {
        self.targets.keys().copied().collect()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// What one dial-in line is doing.
#[derive(Debug)]
enum Line {
    /// Its channel is being brought into `room` (the room has not said it is up yet).
    Attaching { room: Id },
    /// Its channel is in `room` since `since`; the link's call record runs until it goes down.
    Linked {
        room: Id,
        since: Instant,
        record: Option<CallRecorder>,
    },
    /// It is in a call on an upstream RTCPeer server (client mode).
    Upstream,
}

/// The state of every dial-in line that is not idle. See the module docs.
#[derive(Debug, Default)]
pub struct Lines {
    lines: HashMap<Id, Line>,
}

impl Lines {
    /// Whether `dial` is linked, being linked, or in an upstream call.
    pub fn busy(&self, dial: Id) -> bool {
        self.lines.contains_key(&dial)
    }

    /// Claims `dial` for a link into `room`; false when it is busy.
    pub fn attach(&mut self, dial: Id, room: Id) -> bool {
        if self.busy(dial) {
            return false;
        }
        self.lines.insert(dial, Line::Attaching { room });
        true
    }

    /// The room `dial` is linked (or being linked) into.
    pub fn room_of(&self, dial: Id) -> Option<Id> {
        match self.lines.get(&dial)? {
            Line::Attaching { room } | Line::Linked { room, .. } => Some(*room),
            Line::Upstream => None,
        }
    }

    /// The link of `dial` into `room` is up, recorded by `record`.
    pub fn up(&mut self, dial: Id, room: Id, record: Option<CallRecorder>) {
        let since = Instant::now();
        let old = self.lines.insert(
            dial,
            Line::Linked {
                room,
                since,
                record,
            },
        );
        if let Some(Line::Linked {
            record: Some(old), ..
        }) = old
        {
            old.finish("replaced");
        }
    }

    /// The link of `dial` into `room` is down (or never came up): the line is free again.
    /// Returns its call record, to finish. A line since claimed for another room is left alone.
    pub fn down(&mut self, dial: Id, room: Id) -> Option<CallRecorder> {
        if self.room_of(dial) != Some(room) {
            return None;
        }
        match self.lines.remove(&dial) {
            Some(Line::Linked { record, .. }) => record,
            _ => None,
        }
    }

    /// The call record of `dial`'s link, while it is up.
    pub fn record(&self, dial: Id) -> Option<&CallRecorder> {
        match self.lines.get(&dial)? {
            Line::Linked { record, .. } => record.as_ref(),
            _ => None,
        }
    }

    /// Since when `dial`'s link has been up (None while it is coming up, or not linked).
    pub fn linked_since(&self, dial: Id) -> Option<Instant> {
        match self.lines.get(&dial)? {
            Line::Linked { since, .. } => Some(*since),
            _ => None,
        }
    }

    /// Claims `dial` for a call on an upstream server; false when it is busy.
    pub fn claim_upstream(&mut self, dial: Id) -> bool {
        if self.busy(dial) {
            return false;
        }
        self.lines.insert(dial, Line::Upstream);
        true
    }

    /// The upstream call of `dial` is over.
    pub fn release_upstream(&mut self, dial: Id) {
        if matches!(self.lines.get(&dial), Some(Line::Upstream)) {
            self.lines.remove(&dial);
        }
    }

    /// `(dial-in, room)` of every link up or coming up, by dial-in id.
    pub fn links(&self) -> Vec<(Id, Id)> {
        let mut v: Vec<(Id, Id)> = self
            .lines
            .keys()
            .filter_map(|d| Some((*d, self.room_of(*d)?)))
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_claimed_once_and_freed_only_by_its_own_room() {
        let mut l = Lines::default();
        assert!(l.attach(9001, 600));
        assert!(!l.attach(9001, 601), "busy while attaching");
        assert!(!l.claim_upstream(9001));
        assert!(l.linked_since(9001).is_none(), "not up while attaching");
        l.up(9001, 600, None);
        assert_eq!(l.links(), vec![(9001, 600)]);
        assert!(l.linked_since(9001).is_some());
        assert!(l.down(9001, 601).is_none());
        assert!(l.busy(9001), "another room cannot free it");
        l.down(9001, 600);
        assert!(!l.busy(9001));
        assert!(l.claim_upstream(9001));
        assert!(l.links().is_empty(), "upstream calls are not room links");
        l.release_upstream(9001);
        assert!(!l.busy(9001));
    }
}
