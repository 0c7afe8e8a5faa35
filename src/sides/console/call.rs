//! One console's temporary call: its PTT channel, its members and their `callState`,
//! and the floor. Sans-IO: the connection feeds it the PTT server's presence and acts on
//! the changes it reports.
//!
//! Member states follow PTT presence (see `docs/console.md`):
//! `Calling` (2) when the bridge has asked the PTT server to move the terminal in,
//! `Ringing` (3) when the server shows it in the call channel, `Answered` (4) at once
//! (`answer = "auto"`) or when it first talks (`"on_talk"`); `Idle` (0) when it is offline,
//! leaves, is kicked or the call ends; `Busy` (1) when it is in another console's call.

use std::collections::HashMap;
use std::time::Instant;

use muicall::{CallMember, CallState};
use ptt::session::User;

use super::config::AnswerMode;
use crate::hub::floor::Floor;

/// A terminal in (or called into) the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// PTT registered user id (the console's `toIds`).
    pub id: u64,
    /// User name ("" when it was never seen online).
    pub name: String,
    /// Its session while online.
    pub session: Option<u32>,
    /// `callState`.
    pub state: CallState,
    /// Channel it was in before the call, to send it back to.
    pub origin: Option<u32>,
    /// Server-muted by the bridge (while the console holds the floor).
    pub muted: bool,
}

/// What changed for member `index` after presence moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It arrived in the call channel.
    Ringing(usize),
    /// It answered (arrived, or first talked with `on_talk`).
    Answered(usize),
    /// It left the call by itself: moved elsewhere or disconnected.
    Left(usize),
}

/// A console's call.
#[derive(Debug)]
pub struct Call {
    /// `sessionId` / `groupId` / `tempCallId`.
    pub id: u64,
    /// The PTT channel the call lives in.
    pub channel: u32,
    /// Its name.
    pub channel_name: String,
    /// Path of the console's channel before the call (it goes back there).
    pub home_path: String,
    /// The console's user id and name.
    pub owner: (u64, String),
    /// Terminals in the order they were called.
    pub members: Vec<Member>,
    /// Who may talk.
    pub floor: Floor,
    /// The terminal whose voice reaches the console: (session, member index).
    pub talker: Option<(u32, usize)>,
    /// When the call started.
    pub started: Instant,
    /// A `requestMic` answered once the called terminals are in (or at the deadline).
    pub pending_grant: Option<(Option<muicall::Transaction>, Instant)>,
}

impl Call {
    /// The member with user id `id`.
    pub fn member(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// The member online as `session`.
    pub fn by_session(&self, session: u32) -> Option<usize> {
        self.members.iter().position(|m| m.session == Some(session))
    }

    /// Whether the member takes part now (called, ringing or answered).
    pub fn active(m: &Member) -> bool {
        matches!(
            m.state,
            CallState::Calling | CallState::Ringing | CallState::Answered
        )
    }

    /// Whether every member that was called has arrived (or dropped out).
    pub fn settled(&self) -> bool {
        !self.members.iter().any(|m| m.state == CallState::Calling)
    }

    /// The `tempCallMemberUpdate` list: the console first (answered), then the terminals.
    pub fn member_list(&self) -> Vec<CallMember> {
        std::iter::once(CallMember {
            member_id: self.owner.0,
            member_name: self.owner.1.clone(),
            call_state: CallState::Answered,
        })
        .chain(self.members.iter().map(|m| CallMember {
            member_id: m.id,
            member_name: m.name.clone(),
            call_state: m.state,
        }))
        .collect()
    }

    /// Applies the server's current users to the members; returns what changed.
    pub fn observe(&mut self, users: &HashMap<u32, User>, answer: AnswerMode) -> Vec<Change> {
        let mut changes = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            let Some(session) = m.session else { continue };
            let here = users.get(&session).map(|u| u.channel_id == self.channel);
            match (m.state, here) {
                (CallState::Calling, Some(true)) => {
                    m.state = CallState::Ringing;
                    changes.push(Change::Ringing(i));
                    if answer == AnswerMode::Auto {
                        m.state = CallState::Answered;
                        changes.push(Change::Answered(i));
                    }
                }
                // Still on its way, or gone before it arrived.
                (CallState::Calling, Some(false)) => {}
                (CallState::Calling | CallState::Ringing | CallState::Answered, None)
                | (CallState::Ringing | CallState::Answered, Some(false)) => {
                    m.state = CallState::Idle;
                    if here.is_none() {
                        // Gone from the server: nothing to unmute or move back.
                        m.session = None;
                        m.muted = false;
                    }
                    changes.push(Change::Left(i));
                }
                _ => {}
            }
        }
        changes
    }

    /// With `on_talk`, a ringing member that talks has answered.
    pub fn talked(&mut self, index: usize) -> Option<Change> {
        let m = self.members.get_mut(index)?;
        (m.state == CallState::Ringing).then(|| {
            m.state = CallState::Answered;
            Change::Answered(index)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(session: u32, channel: u32) -> (u32, User) {
        (
            session,
            User {
                session,
                name: format!("u{session}"),
                user_id: Some(session + 100),
                channel_id: channel,
                muted: false,
            },
        )
    }

    fn call(states: &[CallState]) -> Call {
        Call {
            id: 1,
            channel: 9,
            channel_name: "call-1".into(),
            home_path: String::new(),
            owner: (5, "zydd".into()),
            members: states
                .iter()
                .enumerate()
                .map(|(i, s)| Member {
                    id: 100 + i as u64,
                    name: format!("u{i}"),
                    session: Some(i as u32),
                    state: *s,
                    origin: Some(1),
                    muted: false,
                })
                .collect(),
            floor: Floor::new(None),
            talker: None,
            started: Instant::now(),
            pending_grant: None,
        }
    }

    #[test]
    fn calling_then_ringing_and_answered_on_arrival() {
        let mut c = call(&[CallState::Calling, CallState::Calling]);
        let users: HashMap<_, _> = [user(0, 1), user(1, 1)].into();
        assert!(
            c.observe(&users, AnswerMode::Auto).is_empty(),
            "still in their channels"
        );
        assert!(!c.settled());
        let users: HashMap<_, _> = [user(0, 9), user(1, 1)].into();
        assert_eq!(
            c.observe(&users, AnswerMode::Auto),
            vec![Change::Ringing(0), Change::Answered(0)]
        );
        assert_eq!(c.members[0].state, CallState::Answered);
        let list = c.member_list();
        assert_eq!(list[0].member_id, 5);
        assert_eq!(list[0].call_state, CallState::Answered);
        assert_eq!(list[2].call_state, CallState::Calling);
    }

    #[test]
    fn on_talk_rings_until_the_terminal_talks() {
        let mut c = call(&[CallState::Calling]);
        let users: HashMap<_, _> = [user(0, 9)].into();
        assert_eq!(
            c.observe(&users, AnswerMode::OnTalk),
            vec![Change::Ringing(0)]
        );
        assert_eq!(c.talked(0), Some(Change::Answered(0)));
        assert_eq!(c.talked(0), None);
    }

    #[test]
    fn leaving_by_moving_away_or_disconnecting() {
        let mut c = call(&[CallState::Answered, CallState::Answered, CallState::Busy]);
        let users: HashMap<_, _> = [user(0, 3), user(2, 1)].into();
        assert_eq!(
            c.observe(&users, AnswerMode::Auto),
            vec![Change::Left(0), Change::Left(1)]
        );
        assert_eq!(c.members[0].session, Some(0), "moved away: still online");
        assert_eq!(c.members[1].session, None, "disconnected");
        assert_eq!(
            c.members[2].state,
            CallState::Busy,
            "busy members are not in the call"
        );
        assert!(
            c.observe(&users, AnswerMode::Auto).is_empty(),
            "reported once"
        );
    }
}
