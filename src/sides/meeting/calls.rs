//! The live calls (the `rtcpeer::call` state machine per call) and their timers. One timer
//! serves them all: the switchboard's timer task sleeps until [`CallTable::next_deadline`] —
//! the earliest no-answer deadline (`Call::deadline`) or step the bridge takes itself as the
//! callee of a dial-in (ring, then agree) — and is woken when the table changes.

use std::collections::HashMap;
use std::time::Instant;

use rtcpeer::call::{Call, Input};
use rtcpeer::id::Id;

/// The caller id of calls a platform makes (business gateway invite): no user has it.
pub const PLATFORM: Id = 0;

/// One call and what the bridge keeps about it.
#[derive(Debug)]
pub struct LiveCall {
    /// The state machine.
    pub call: Call,
    /// RTCPeer messages of this call so far (requests and pushes; replies not counted).
    pub signals: u64,
    /// The bridge's own next step as the callee of a dial-in, and when.
    pub step: Option<(Instant, Input)>,
}

/// Live calls by number.
#[derive(Debug, Default)]
pub struct CallTable {
    calls: HashMap<u64, LiveCall>,
    next: u64,
}

impl CallTable {
    /// Numbers and keeps a new call.
    pub fn add(&mut self, call: Call) -> u64 {
        self.next += 1;
        self.calls.insert(
            self.next,
            LiveCall {
                call,
                signals: 0,
                step: None,
            },
        );
        metrics::gauge!("pttbridge_meeting_calls").set(self.calls.len() as f64);
        self.next
    }

    /// Forgets a call.
    pub fn remove(&mut self, id: u64) -> Option<LiveCall> {
        let c = self.calls.remove(&id);
        metrics::gauge!("pttbridge_meeting_calls").set(self.calls.len() as f64);
        c
    }

    /// Call `id`.
    pub fn get(&self, id: u64) -> Option<&LiveCall> {
        self.calls.get(&id)
    }

    /// Call `id`, to change.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut LiveCall> {
        self.calls.get_mut(&id)
    }

    fn live(&self) -> impl Iterator<Item = (&u64, &LiveCall)> {
        self.calls.iter().filter(|(_, c)| !c.call.is_ended())
    }

    /// The live call between `a` and `b` (either way round).
    pub fn between(&self, a: Id, b: Id) -> Option<u64> {
        self.live()
            .find(|(_, c)| {
                (c.call.caller == a && c.call.callee == b)
                    || (c.call.caller == b && c.call.callee == a)
            })
            .map(|(id, _)| *id)
    }

    /// Whether `user` is in a live call.
    pub fn busy(&self, user: Id) -> bool {
        self.live()
            .any(|(_, c)| c.call.caller == user || c.call.callee == user)
    }

    /// Whether someone is calling `callee` now.
    pub fn calling(&self, callee: Id) -> bool {
        self.live().any(|(_, c)| c.call.callee == callee)
    }

    /// Whether a platform call to `user` into `room` is still going.
    pub fn platform_call(&self, user: Id, room: Id) -> bool {
        self.live().any(|(_, c)| {
            c.call.caller == PLATFORM && c.call.callee == user && c.call.room_id == room
        })
    }

    /// The live call to `callee` in `room` (a dial-in's call, once its link is up).
    pub fn to_in_room(&self, callee: Id, room: Id) -> Option<u64> {
        self.live()
            .find(|(_, c)| c.call.callee == callee && c.call.room_id == room)
            .map(|(id, _)| *id)
    }

    /// The live calls `user` is in.
    pub fn of(&self, user: Id) -> Vec<u64> {
        self.live()
            .filter(|(_, c)| c.call.caller == user || c.call.callee == user)
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many calls are live.
    pub fn live_count(&self) -> usize {
        self.live().count()
    }

    /// When the timer must run next: the earliest no-answer deadline or bridge step.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.calls
            .values()
            .flat_map(|c| [c.call.deadline(), c.step.map(|s| s.0)])
            .flatten()
            .min()
    }

    /// Calls with a bridge step due at `now` (the step is taken out), then calls whose
    /// deadline has passed.
    pub fn due(&mut self, now: Instant) -> (Vec<(u64, Input)>, Vec<u64>) {
        let mut steps = Vec::new();
        let mut expired = Vec::new();
        for (id, c) in &mut self.calls {
            if let Some((at, input)) = c.step
                && at <= now
            {
                c.step = None;
                steps.push((*id, input));
            }
            if c.call.deadline().is_some_and(|d| d <= now) {
                expired.push(*id);
            }
        }
        steps.sort_unstable_by_key(|s| s.0);
        expired.sort_unstable();
        (steps, expired)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_timer_sees_the_earliest_deadline_and_step() {
        let now = Instant::now();
        let mut t = CallTable::default();
        let mut a = Call::new(1001, 9001, 600, Duration::from_secs(30), now);
        let _ = a.invite(now);
        let a = t.add(a);
        let mut b = Call::new(1002, 1003, 601, Duration::from_secs(10), now);
        let _ = b.invite(now);
        let b = t.add(b);
        assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(10)));
        t.get_mut(a).unwrap().step = Some((now + Duration::from_millis(300), Input::Ring));
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(300)));
        let (steps, expired) = t.due(now + Duration::from_millis(300));
        assert_eq!((steps, expired), (vec![(a, Input::Ring)], vec![]));
        let (_, expired) = t.due(now + Duration::from_secs(11));
        assert_eq!(expired, vec![b]);
        assert_eq!(t.between(9001, 1001), Some(a));
        assert!(t.busy(1003) && t.calling(9001) && !t.calling(1001));
    }
}
