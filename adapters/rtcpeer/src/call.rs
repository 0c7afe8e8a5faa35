//! The call state machine (spec 4.1–4.9, 5.1–5.9), sans-IO: feed it what each side sent and
//! the time; it says whether that is allowed now, what state the call is in, and when the
//! no-answer timer fires.
//!
//! ```text
//!            doInvite              onRinging            doAgree          onConnected
//!   Idle ─────────────▶ Inviting ────────────▶ Ringing ─────────▶ Agreed ────────────▶ Connected
//!                          │  │ onBusy            │                  │                    │
//!                          │  └────────▶ Ended(Busy)                 │                    │ hang-up
//!                          │ reject / cancel / no answer ◀───────────┘ (reject, cancel)   ▼
//!                          └──────────────────────────────▶ Ended(Rejected|Cancelled|NoAnswer|HungUp)
//! ```
//!
//! `doAgree` is also accepted straight from `Inviting` (a callee that never sent onRinging).
//! The no-answer timer runs from the invitation until the callee agrees; it does not run
//! once agreed (the caller then enters the room and sends onConnected at its own pace, bounded
//! by the same timeout).

use std::time::{Duration, Instant};

use crate::id::Id;

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started.
    Idle,
    /// Invitation sent, the callee has not answered.
    Inviting,
    /// The callee rings.
    Ringing,
    /// The callee agreed; waiting for the caller's onConnected.
    Agreed,
    /// Both sides are in the room.
    Connected,
    /// Over.
    Ended(EndReason),
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The callee was busy.
    Busy,
    /// The callee rejected.
    Rejected,
    /// The caller cancelled before it was connected.
    Cancelled,
    /// Nobody answered in time.
    NoAnswer,
    /// One side hung up a connected call.
    HungUp,
    /// A side went away (connection lost, logged out).
    Gone,
}

impl EndReason {
    /// Short name for events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::NoAnswer => "no_answer",
            Self::HungUp => "hangup",
            Self::Gone => "gone",
        }
    }
}

/// Something one side of the call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Callee: `doEvent onRinging`.
    Ring,
    /// Callee: `doEvent onBusy`.
    Busy,
    /// Callee: `doAgree`.
    Agree,
    /// Callee: `reject`.
    Reject,
    /// Caller: `cancel` (before connected).
    Cancel,
    /// Caller: `doEvent onConnected`.
    Connected,
    /// Either: hang up a call (leaving the room, `cancel` after connected).
    HangUp,
    /// Either side's connection went away.
    Gone,
}

/// Which side sent an [`Input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Who sent doInvite.
    Caller,
    /// Who was invited.
    Callee,
}

/// An input that is not allowed now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} from the {role:?} is not allowed in state {state:?}")]
pub struct NotAllowed {
    /// What was tried.
    pub input: Input,
    /// By whom.
    pub role: Role,
    /// In which state.
    pub state: State,
}

/// One call between two users.
#[derive(Debug, Clone)]
pub struct Call {
    /// Who called.
    pub caller: Id,
    /// Who was called.
    pub callee: Id,
    /// The room they meet in.
    pub room_id: Id,
    state: State,
    started: Instant,
    deadline: Option<Instant>,
    no_answer: Duration,
}

impl Call {
    /// A call in [`State::Idle`].
    pub fn new(caller: Id, callee: Id, room_id: Id, no_answer: Duration, now: Instant) -> Self {
        Self {
            caller,
            callee,
            room_id,
            state: State::Idle,
            started: now,
            deadline: None,
            no_answer,
        }
    }

    /// The invitation went out: [`State::Inviting`], no-answer timer armed.
    pub fn invite(&mut self, now: Instant) -> Result<State, NotAllowed> {
        if self.state != State::Idle {
            return Err(self.not_allowed(Input::Ring, Role::Caller));
        }
        self.started = now;
        self.deadline = Some(now + self.no_answer);
        self.state = State::Inviting;
        Ok(self.state)
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When it was invited.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether it is over.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended(_))
    }

    /// When [`Call::poll_timeout`] must run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The role of `user` in this call.
    pub fn role_of(&self, user: Id) -> Option<Role> {
        if user == self.caller {
            Some(Role::Caller)
        } else if user == self.callee {
            Some(Role::Callee)
        } else {
            None
        }
    }

    /// Applies what `role` did; returns the new state.
    pub fn handle(&mut self, input: Input, role: Role, now: Instant) -> Result<State, NotAllowed> {
        use {Input as I, Role as R, State as S};
        let next = match (self.state, input, role) {
            (S::Ended(_), _, _) | (S::Idle, _, _) => None,
            (_, I::Gone, _) => Some(S::Ended(EndReason::Gone)),
            (S::Inviting, I::Ring, R::Callee) => Some(S::Ringing),
            (S::Ringing, I::Ring, R::Callee) => Some(S::Ringing),
            (S::Inviting | S::Ringing, I::Busy, R::Callee) => Some(S::Ended(EndReason::Busy)),
            (S::Inviting | S::Ringing, I::Agree, R::Callee) => Some(S::Agreed),
            (S::Inviting | S::Ringing | S::Agreed, I::Reject, R::Callee) => {
                Some(S::Ended(EndReason::Rejected))
            }
            (S::Inviting | S::Ringing | S::Agreed, I::Cancel, R::Caller) => {
                Some(S::Ended(EndReason::Cancelled))
            }
            (S::Agreed, I::Connected, R::Caller) => Some(S::Connected),
            (S::Connected, I::HangUp | I::Cancel | I::Reject, _) => {
                Some(S::Ended(EndReason::HungUp))
            }
            (S::Agreed, I::HangUp, _) => Some(S::Ended(EndReason::HungUp)),
            _ => None,
        };
        let Some(next) = next else {
            return Err(self.not_allowed(input, role));
        };
        self.state = next;
        self.deadline = match next {
            // Agreed: the caller still has to enter and say onConnected, within the same bound.
            S::Agreed => Some(now + self.no_answer),
            S::Inviting | S::Ringing => self.deadline,
            _ => None,
        };
        Ok(next)
    }

    /// Ends the call when its timer ran out: `Some(Ended(NoAnswer))` once, else `None`.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<State> {
        let deadline = self.deadline?;
        if now < deadline {
            return None;
        }
        self.deadline = None;
        self.state = State::Ended(EndReason::NoAnswer);
        Some(self.state)
    }

    fn not_allowed(&self, input: Input, role: Role) -> NotAllowed {
        NotAllowed {
            input,
            role,
            state: self.state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    fn call(now: Instant) -> Call {
        let mut c = Call::new(1, 2, 599, T, now);
        assert_eq!(c.invite(now), Ok(State::Inviting));
        c
    }

    #[test]
    fn full_flow() {
        let t0 = Instant::now();
        let mut c = call(t0);
        assert_eq!(c.role_of(2), Some(Role::Callee));
        assert_eq!(c.handle(Input::Ring, Role::Callee, t0), Ok(State::Ringing));
        assert_eq!(c.handle(Input::Agree, Role::Callee, t0), Ok(State::Agreed));
        assert!(
            c.deadline().is_some(),
            "onConnected is awaited with a bound"
        );
        assert_eq!(
            c.handle(Input::Connected, Role::Caller, t0),
            Ok(State::Connected)
        );
        assert_eq!(c.deadline(), None);
        assert_eq!(
            c.poll_timeout(t0 + T * 10),
            None,
            "connected calls never time out"
        );
        assert_eq!(
            c.handle(Input::HangUp, Role::Callee, t0),
            Ok(State::Ended(EndReason::HungUp))
        );
        assert!(c.is_ended());
    }

    #[test]
    fn reject_cancel_busy() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle(Input::Ring, Role::Callee, t0).unwrap();
        assert_eq!(
            c.handle(Input::Reject, Role::Callee, t0),
            Ok(State::Ended(EndReason::Rejected))
        );
        let mut c = call(t0);
        assert_eq!(
            c.handle(Input::Cancel, Role::Caller, t0),
            Ok(State::Ended(EndReason::Cancelled))
        );
        let mut c = call(t0);
        assert_eq!(
            c.handle(Input::Busy, Role::Callee, t0),
            Ok(State::Ended(EndReason::Busy))
        );
    }

    #[test]
    fn wrong_side_or_order_is_refused_and_changes_nothing() {
        let t0 = Instant::now();
        let mut c = call(t0);
        assert!(
            c.handle(Input::Agree, Role::Caller, t0).is_err(),
            "caller cannot agree"
        );
        assert!(
            c.handle(Input::Connected, Role::Caller, t0).is_err(),
            "not agreed yet"
        );
        assert!(c.handle(Input::Cancel, Role::Callee, t0).is_err());
        assert_eq!(c.state(), State::Inviting);
        c.handle(Input::Busy, Role::Callee, t0).unwrap();
        assert!(
            c.handle(Input::Agree, Role::Callee, t0).is_err(),
            "ended is final"
        );
        let mut idle = Call::new(1, 2, 3, T, t0);
        assert!(idle.handle(Input::Ring, Role::Callee, t0).is_err());
        assert!(call(t0).invite(t0).is_err(), "one invitation per call");
    }

    #[test]
    fn no_answer_times_out_once() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle(Input::Ring, Role::Callee, t0 + T / 2).unwrap();
        assert_eq!(
            c.deadline(),
            Some(t0 + T),
            "ringing does not extend the timer"
        );
        assert_eq!(c.poll_timeout(t0 + T - Duration::from_millis(1)), None);
        assert_eq!(
            c.poll_timeout(t0 + T),
            Some(State::Ended(EndReason::NoAnswer))
        );
        assert_eq!(c.poll_timeout(t0 + T * 2), None);
    }

    #[test]
    fn a_vanished_side_ends_any_live_call() {
        let t0 = Instant::now();
        let mut c = call(t0);
        c.handle(Input::Agree, Role::Callee, t0).unwrap();
        assert_eq!(
            c.handle(Input::Gone, Role::Caller, t0),
            Ok(State::Ended(EndReason::Gone))
        );
    }
}
