//! The floor of a linked group: who may talk. Sans-IO; the group actor owns one.
//!
//! Rules (DESIGN.md): one holder at a time; a request while the floor is free is
//! granted; a request with a higher mic level (麦权级别, dispatchers above terminals)
//! pre-empts the holder; otherwise it is denied, or queued if the requester asked
//! to wait. On release the queue is served highest level first, then first come.
//! A holder that exceeds the talk limit loses the floor on the next tick.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::event::Party;

/// Mic level: a higher level pre-empts a lower one.
pub type MicLevel = u8;

/// Most requests a floor keeps waiting; further queue requests are denied.
pub const MAX_QUEUE: usize = 32;

/// Answer to a floor request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The floor was free (or already theirs): they hold it now.
    Granted,
    /// They hold it now; `previous` lost it.
    Preempted {
        /// The party that lost the floor.
        previous: Party,
    },
    /// Someone with an equal or higher level holds it.
    Denied {
        /// The current holder.
        holder: Party,
    },
    /// They will get it when it is released (1 = next).
    Queued {
        /// Position in the queue.
        position: usize,
    },
}

impl Decision {
    /// Whether the requester holds the floor now.
    pub fn is_granted(&self) -> bool {
        matches!(self, Decision::Granted | Decision::Preempted { .. })
    }
}

/// The current holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Who.
    pub party: Party,
    /// At which level.
    pub level: MicLevel,
    /// Since when.
    pub since: Instant,
}

/// Why a holder lost the floor without releasing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `party` got the floor from the queue.
    Granted(Party),
    /// The holder talked longer than the limit.
    Expired(Party),
}

/// Floor state of one group.
#[derive(Debug, Clone)]
pub struct Floor {
    holder: Option<Holder>,
    queue: VecDeque<(Party, MicLevel)>,
    talk_limit: Option<Duration>,
}

impl Floor {
    /// A free floor; `talk_limit` bounds one holder's turn (`None`: unlimited).
    pub fn new(talk_limit: Option<Duration>) -> Self {
        Self {
            holder: None,
            queue: VecDeque::new(),
            talk_limit,
        }
    }

    /// Who holds the floor.
    pub fn holder(&self) -> Option<&Holder> {
        self.holder.as_ref()
    }

    /// Parties waiting, in the order they will be served.
    pub fn queue(&self) -> impl Iterator<Item = &Party> {
        self.queue.iter().map(|(p, _)| p)
    }

    /// `party` asks for the floor at `level`; `wait` queues it instead of denying.
    pub fn request(&mut self, party: Party, level: MicLevel, wait: bool, now: Instant) -> Decision {
        let Some(holder) = &mut self.holder else {
            self.remove_queued(&party);
            self.holder = Some(Holder {
                party,
                level,
                since: now,
            });
            return Decision::Granted;
        };
        if holder.party == party {
            holder.level = holder.level.max(level);
            return Decision::Granted;
        }
        if level > holder.level {
            // Field access, not remove_queued(): `holder` still borrows self.holder.
            self.queue.retain(|(p, _)| *p != party);
            let previous = std::mem::replace(
                holder,
                Holder {
                    party,
                    level,
                    since: now,
                },
            );
            return Decision::Preempted {
                previous: previous.party,
            };
        }
        if wait {
            if let Some(pos) = self.queue.iter().position(|(p, _)| *p == party) {
                return Decision::Queued { position: pos + 1 };
            }
            if self.queue.len() < MAX_QUEUE {
                // Keep the queue ordered: higher levels first, equal levels first come.
                let at = self
                    .queue
                    .iter()
                    .position(|(_, l)| *l < level)
                    .unwrap_or(self.queue.len());
                self.queue.insert(at, (party, level));
                return Decision::Queued { position: at + 1 };
            }
        }
        Decision::Denied {
            holder: holder.party.clone(),
        }
    }

    /// `party` lets go (of the floor, or of its place in the queue). Returns who got it next.
    pub fn release(&mut self, party: &Party, now: Instant) -> Option<Party> {
        if self.holder.as_ref().is_some_and(|h| h.party == *party) {
            self.holder = None;
            return self.grant_next(now);
        }
        self.remove_queued(party);
        None
    }

    /// `from`, holding the floor, hands it straight to `to` at `level` (who leaves the queue if
    /// it was waiting): the queue is not served. For a holder whose turn passes to someone
    /// already talking. Returns false (and changes nothing) when `from` does not hold it.
    pub fn hand_over(&mut self, from: &Party, to: Party, level: MicLevel, now: Instant) -> bool {
        let Some(holder) = self.holder.as_mut().filter(|h| h.party == *from) else {
            return false;
        };
        // Field access, not remove_queued(): `holder` still borrows self.holder.
        self.queue.retain(|(p, _)| *p != to);
        *holder = Holder {
            party: to,
            level,
            since: now,
        };
        true
    }

    /// Ends a turn that ran past the talk limit; the queue is served.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        let (Some(limit), Some(h)) = (self.talk_limit, &self.holder) else {
            return Vec::new();
        };
        if now.duration_since(h.since) < limit {
            return Vec::new();
        }
        let expired = self.holder.take().map(|h| h.party);
        let mut changes: Vec<Change> = expired.into_iter().map(Change::Expired).collect();
        changes.extend(self.grant_next(now).map(Change::Granted));
        changes
    }

    /// When [`Floor::tick`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        Some(self.holder.as_ref()?.since + self.talk_limit?)
    }

    fn grant_next(&mut self, now: Instant) -> Option<Party> {
        let (party, level) = self.queue.pop_front()?;
        self.holder = Some(Holder {
            party: party.clone(),
            level,
            since: now,
        });
        Some(party)
    }

    fn remove_queued(&mut self, party: &Party) {
        self.queue.retain(|(p, _)| p != party);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Side;

    fn p(name: &str) -> Party {
        Party {
            side: Side::Ptt,
            id: name.into(),
            name: name.into(),
        }
    }

    #[test]
    fn first_come_then_denied_at_equal_level() {
        let now = Instant::now();
        let mut f = Floor::new(None);
        assert_eq!(f.request(p("a"), 1, false, now), Decision::Granted);
        assert_eq!(
            f.request(p("a"), 1, false, now),
            Decision::Granted,
            "asking again is harmless"
        );
        assert_eq!(
            f.request(p("b"), 1, false, now),
            Decision::Denied { holder: p("a") }
        );
        assert_eq!(f.release(&p("a"), now), None);
        assert_eq!(f.request(p("b"), 1, false, now), Decision::Granted);
    }

    #[test]
    fn higher_level_preempts_and_lower_cannot() {
        let now = Instant::now();
        let mut f = Floor::new(None);
        f.request(p("terminal"), 1, false, now);
        assert_eq!(
            f.request(p("dispatcher"), 5, false, now),
            Decision::Preempted {
                previous: p("terminal")
            }
        );
        assert_eq!(f.holder().unwrap().party, p("dispatcher"));
        assert_eq!(
            f.request(p("terminal"), 1, false, now),
            Decision::Denied {
                holder: p("dispatcher")
            }
        );
    }

    #[test]
    fn queue_serves_higher_levels_first_then_first_come() {
        let now = Instant::now();
        let mut f = Floor::new(None);
        f.request(p("h"), 9, false, now);
        assert_eq!(
            f.request(p("t1"), 1, true, now),
            Decision::Queued { position: 1 }
        );
        assert_eq!(
            f.request(p("t2"), 1, true, now),
            Decision::Queued { position: 2 }
        );
        assert_eq!(
            f.request(p("d"), 5, true, now),
            Decision::Queued { position: 1 }
        );
        assert_eq!(
            f.request(p("t1"), 1, true, now),
            Decision::Queued { position: 2 },
            "no duplicates"
        );
        assert_eq!(f.release(&p("h"), now), Some(p("d")));
        assert_eq!(f.release(&p("d"), now), Some(p("t1")));
        assert_eq!(f.release(&p("t2"), now), None, "leaving the queue");
        assert_eq!(f.release(&p("t1"), now), None);
        assert!(f.holder().is_none());
    }

    #[test]
    fn hand_over_skips_the_queue() {
        let now = Instant::now();
        let mut f = Floor::new(None);
        f.request(p("a"), 1, false, now);
        f.request(p("q"), 1, true, now);
        f.request(p("b"), 1, true, now);
        assert!(
            !f.hand_over(&p("q"), p("b"), 1, now),
            "only the holder hands over"
        );
        assert!(f.hand_over(&p("a"), p("b"), 1, now));
        assert_eq!(f.holder().unwrap().party, p("b"));
        assert_eq!(
            f.queue().collect::<Vec<_>>(),
            vec![&p("q")],
            "b left the queue"
        );
        assert_eq!(f.release(&p("b"), now), Some(p("q")));
    }

    #[test]
    fn the_queue_is_bounded() {
        let now = Instant::now();
        let mut f = Floor::new(None);
        f.request(p("h"), 9, false, now);
        for i in 0..MAX_QUEUE {
            assert!(matches!(
                f.request(p(&format!("q{i}")), 1, true, now),
                Decision::Queued { .. }
            ));
        }
        assert_eq!(
            f.request(p("late"), 1, true, now),
            Decision::Denied { holder: p("h") }
        );
    }

    #[test]
    fn talk_limit_expires_the_holder_and_serves_the_queue() {
        let t0 = Instant::now();
        let mut f = Floor::new(Some(Duration::from_secs(60)));
        f.request(p("a"), 1, false, t0);
        f.request(p("b"), 1, true, t0);
        assert_eq!(f.next_deadline(), Some(t0 + Duration::from_secs(60)));
        assert!(f.tick(t0 + Duration::from_secs(59)).is_empty());
        let changes = f.tick(t0 + Duration::from_secs(60));
        assert_eq!(
            changes,
            vec![Change::Expired(p("a")), Change::Granted(p("b"))]
        );
        assert_eq!(f.holder().unwrap().since, t0 + Duration::from_secs(60));
    }
}
