//! The window of JetStream publishes awaiting their ack, without IO: a publisher sends each
//! message with its own reply subject `<inbox>.<id>` (ids 1, 2, ... never reused), feeds the
//! acks that come back on `<inbox>.*` to [`AckWindow::ack`], and asks [`AckWindow::expire`] at
//! [`AckWindow::deadline`]. One subscription and one timer serve every message in flight, where
//! a request per publish costs a reply subscription entry, a oneshot channel and a timer each.
//!
//! **Invariant:** [`AckWindow::pop`] hands every pushed item back exactly once, in push order,
//! each with its outcome (stored, stored before = duplicate, or failed); an item waits until
//! every item pushed before it has its outcome. A late or repeated ack, or one for an id not in
//! the window, changes nothing. (`tests` below prove it under arbitrary ack orders.)

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What became of one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// JetStream stored it; `true` when it had stored it already (a re-send within its
    /// de-duplication window).
    Stored {
        /// JetStream's `duplicate` flag.
        duplicate: bool,
    },
    /// Not acknowledged: an error reply, no ack within the timeout, or not sent at all.
    Failed(String),
}

/// The fields of a JetStream publish ack the window reads (`{"stream":..,"seq":..,
/// "duplicate":true}` or `{"error":{"code":..,"description":..}}`).
#[derive(Debug, serde::Deserialize)]
struct AckBody<'a> {
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    error: Option<AckError<'a>>,
}

#[derive(Debug, serde::Deserialize)]
struct AckError<'a> {
    #[serde(default)]
    code: u16,
    #[serde(default, borrow)]
    description: Option<std::borrow::Cow<'a, str>>,
}

impl Outcome {
    /// Reads a JetStream publish ack; `status` is the NATS status header's code when the reply
    /// has one (503: no stream captures the subject).
    pub fn from_reply(status: Option<u16>, payload: &[u8]) -> Outcome {
        if status == Some(503) {
            return Outcome::Failed("no responders: no stream captures the subject".into());
        }
        match serde_json::from_slice::<AckBody>(payload) {
            Ok(AckBody { error: Some(e), .. }) => Outcome::Failed(format!(
                "JetStream error {}: {}",
                e.code,
                e.description.as_deref().unwrap_or("")
            )),
            Ok(AckBody {
                seq: Some(_),
                duplicate,
                ..
            }) => Outcome::Stored { duplicate },
            Ok(_) | Err(_) => Outcome::Failed("not a JetStream publish ack".into()),
        }
    }
}

struct Slot<T> {
    item: T,
    deadline: Instant,
    outcome: Option<Outcome>,
}

/// Publishes in flight, in publish order (see the module doc).
pub struct AckWindow<T> {
    /// The id of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot<T>>,
    /// Slots before this index have an outcome (the deadline to watch is the next one's).
    resolved: usize,
    timeout: Duration,
}

impl<T> AckWindow<T> {
    /// An empty window whose publishes fail when not acked within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            base: 1,
            slots: VecDeque::new(),
            resolved: 0,
            timeout,
        }
    }

    /// Items in the window (sent, not popped yet).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The oldest item in the window (sent, not popped yet).
    pub fn front(&self) -> Option<&T> {
        self.slots.front().map(|s| &s.item)
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Takes `item`, sent at `now`; returns the id its reply subject must end with.
    pub fn push(&mut self, item: T, now: Instant) -> u64 {
        let id = self.base + self.slots.len() as u64;
        self.slots.push_back(Slot {
            item,
            deadline: now + self.timeout,
            outcome: None,
        });
        id
    }

    /// Records the outcome of publish `id`; false when `id` is not waiting (late, repeated
    /// or unknown).
    pub fn ack(&mut self, id: u64, outcome: Outcome) -> bool {
        let Some(i) = id.checked_sub(self.base) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(i as usize) else {
            return false;
        };
        if slot.outcome.is_some() {
            return false;
        }
        slot.outcome = Some(outcome);
        self.advance();
        true
    }

    /// Records the ack that came back on reply subject `subject` (`<inbox>.<id>`) with NATS
    /// status `status` and body `payload`; false when it is not one the window waits for.
    pub fn ack_reply(&mut self, subject: &str, status: Option<u16>, payload: &[u8]) -> bool {
        match reply_id(subject) {
            Some(id) => self.ack(id, Outcome::from_reply(status, payload)),
            None => false,
        }
    }

    /// When the oldest publish without an outcome times out (`None`: every one has one).
    pub fn deadline(&self) -> Option<Instant> {
        self.slots.get(self.resolved).map(|s| s.deadline)
    }

    /// Fails every publish whose deadline has passed at `now`.
    pub fn expire(&mut self, now: Instant) {
        for slot in self.slots.iter_mut().skip(self.resolved) {
            if slot.deadline > now {
                break;
            }
            if slot.outcome.is_none() {
                slot.outcome = Some(Outcome::Failed("no ack in time".into()));
            }
        }
        self.advance();
    }

    /// Fails every publish without an outcome yet (their connection is gone: an ack that comes
    /// later changes nothing).
    pub fn fail_all(&mut self, why: &str) {
        for slot in self.slots.iter_mut().skip(self.resolved) {
            if slot.outcome.is_none() {
                slot.outcome = Some(Outcome::Failed(why.to_string()));
            }
        }
        self.advance();
    }

    /// The oldest item, once it and everything before it has an outcome.
    pub fn pop(&mut self) -> Option<(T, Outcome)> {
        if self.resolved == 0 {
            return None;
        }
        let slot = self.slots.pop_front()?;
        self.base += 1;
        self.resolved -= 1;
        Some((
            slot.item,
            slot.outcome.unwrap_or(Outcome::Failed(String::new())),
        ))
    }

    fn advance(&mut self) {
        while self
            .slots
            .get(self.resolved)
            .is_some_and(|s| s.outcome.is_some())
        {
            self.resolved += 1;
        }
    }
}

/// Puts failed items back at the front of `queue` once nothing is outstanding, in the order
/// they were published ([`AckWindow::pop`] hands outcomes back in that order, so `failed` is in
/// it): the re-send keeps the stream in publish order.
pub fn requeue<T>(failed: &mut Vec<T>, queue: &mut VecDeque<T>) {
    for item in failed.drain(..).rev() {
        queue.push_front(item);
    }
}

/// The id at the end of a reply subject `<inbox>.<id>`.
pub fn reply_id(subject: &str) -> Option<u64> {
    subject.rsplit_once('.')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    fn stored() -> Outcome {
        Outcome::Stored { duplicate: false }
    }

    #[test]
    fn acks_in_any_order_come_out_in_push_order() {
        let now = Instant::now();
        let mut w = AckWindow::new(T);
        let ids: Vec<u64> = (0..4).map(|i| w.push(i, now)).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert!(w.ack(3, stored()));
        assert!(w.pop().is_none(), "1 and 2 have no outcome yet");
        assert!(w.ack(1, stored()));
        assert!(!w.ack(1, stored()), "a repeated ack is ignored");
        assert_eq!(w.pop(), Some((0, stored())));
        assert!(w.pop().is_none());
        assert!(w.ack(2, Outcome::Stored { duplicate: true }));
        assert_eq!(w.pop(), Some((1, Outcome::Stored { duplicate: true })));
        assert_eq!(w.pop(), Some((2, stored())));
        assert_eq!(w.deadline(), Some(now + T), "4 is still waiting");
        assert!(!w.ack(1, stored()), "an id already popped is ignored");
        assert!(!w.ack(99, stored()), "an id never sent is ignored");
    }

    #[test]
    fn fail_all_fails_only_what_has_no_outcome() {
        let now = Instant::now();
        let mut w = AckWindow::new(T);
        for i in 0..3 {
            w.push(i, now);
        }
        assert!(w.ack(2, stored()));
        w.fail_all("reconnected");
        assert!(!w.ack(1, stored()), "too late");
        assert_eq!(w.pop(), Some((0, Outcome::Failed("reconnected".into()))));
        assert_eq!(w.pop(), Some((1, stored())));
        assert_eq!(w.pop(), Some((2, Outcome::Failed("reconnected".into()))));
        assert!(w.is_empty());
    }

    #[test]
    fn failed_items_go_back_in_front_in_publish_order() {
        let mut queue: VecDeque<u32> = [5, 6].into();
        let mut failed = vec![2, 3, 4];
        requeue(&mut failed, &mut queue);
        assert!(failed.is_empty());
        assert_eq!(queue, [2, 3, 4, 5, 6]);
    }

    #[test]
    fn only_the_overdue_publishes_expire() {
        let t0 = Instant::now();
        let mut w = AckWindow::new(T);
        w.push("a", t0);
        w.push("b", t0 + Duration::from_secs(1));
        w.expire(t0 + T - Duration::from_millis(1));
        assert!(w.pop().is_none(), "nothing overdue yet");
        w.expire(t0 + T);
        assert!(matches!(w.pop(), Some(("a", Outcome::Failed(_)))));
        assert_eq!(w.deadline(), Some(t0 + Duration::from_secs(3)));
        assert!(
            !w.ack(1, stored()),
            "a late ack for an expired publish changes nothing"
        );
        assert!(w.ack(2, stored()));
        assert_eq!(w.pop(), Some(("b", stored())));
        assert!(w.is_empty() && w.deadline().is_none());
        assert_eq!(w.push("c", t0), 3, "ids are never reused");
    }

    #[test]
    fn replies_are_read_as_jetstream_writes_them() {
        assert_eq!(
            Outcome::from_reply(None, br#"{"stream":"PTTBRIDGE","seq":7}"#),
            stored()
        );
        assert_eq!(
            Outcome::from_reply(None, br#"{"stream":"PTTBRIDGE","seq":7,"duplicate":true}"#),
            Outcome::Stored { duplicate: true }
        );
        assert_eq!(
            Outcome::from_reply(
                None,
                br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#
            ),
            Outcome::Failed("JetStream error 503: maximum messages exceeded".into())
        );
        assert!(matches!(
            Outcome::from_reply(Some(503), b""),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            Outcome::from_reply(None, b"\xff{"),
            Outcome::Failed(_)
        ));
        assert_eq!(reply_id("_INBOX.abc.42"), Some(42));
        let mut w = AckWindow::new(T);
        let id = w.push("a", Instant::now());
        assert!(
            !w.ack_reply("_INBOX.abc.x", None, b"{}"),
            "not a reply subject"
        );
        assert!(w.ack_reply(&format!("_INBOX.abc.{id}"), None, br#"{"seq":1}"#));
        assert_eq!(w.pop(), Some(("a", stored())));
        assert_eq!(reply_id("_INBOX.abc.x"), None);
    }

    /// Whatever the order of acks, expiries and pops (500 seeded random schedules), every
    /// item comes out once, in order, with the outcome its first ack (or its expiry) gave it.
    #[test]
    fn every_item_once_in_order_under_random_schedules() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        for _ in 0..500 {
            let n = rng.random_range(1..60usize);
            let t0 = Instant::now();
            let mut w = AckWindow::new(T);
            let mut first: Vec<Option<Outcome>> = vec![None; n];
            for i in 0..n {
                assert_eq!(w.push(i, t0), i as u64 + 1);
            }
            let mut out = Vec::new();
            for _ in 0..rng.random_range(0..200) {
                let id = rng.random_range(0..70u64);
                match rng.random_range(0..4u8) {
                    what @ (0 | 1) => {
                        let o = Outcome::Stored {
                            duplicate: what == 1,
                        };
                        let idx = id.wrapping_sub(1) as usize;
                        let popped = idx < out.len();
                        let took = w.ack(id, o.clone());
                        if idx < n && !popped && first[idx].is_none() {
                            assert!(took);
                            first[idx] = Some(o);
                        } else {
                            assert!(!took);
                        }
                    }
                    2 => out.extend(std::iter::from_fn(|| w.pop())),
                    _ => {}
                }
            }
            w.expire(t0 + T);
            out.extend(std::iter::from_fn(|| w.pop()));
            assert!(w.is_empty());
            let items: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
            assert_eq!(items, (0..n).collect::<Vec<_>>());
            for (i, o) in out {
                match &first[i] {
                    Some(f) => assert_eq!(&o, f),
                    None => assert!(matches!(o, Outcome::Failed(_))),
                }
            }
        }
    }
}
