//! One node's view of one leased resource, sans-IO: the ownership rules as a state machine
//! driven by explicit time, asking its driver for one key-value operation at a time.
//!
//! The KV entry of a resource holds its owner (or none, once released) and its lease time; its
//! revision changes with every write. Nobody compares wall clocks: an observer times a lease
//! from the moment *it* first saw the current revision, and the owner times it from the moment
//! it *sent* the write that made that revision (before anyone can see it).
//!
//! **Invariant: never two owners acting at once.** A node acts ([`Lease::acting`]) only until
//! `sent + lease` of its last write that succeeded and was confirmed (a read a moment later
//! still shows it as the latest: a clustered JetStream can accept two compare-and-sets on one
//! revision sent together, see `Confirm`); it takes a lease over only by a compare-and-set on a
//! revision it saw unchanged for a whole lease. If node A last wrote
//! revision `r` (sent at `s`, so A acts until at most `s + lease`) and B takes over by CAS on
//! `r`, B first saw `r` at `o ≥ s` and sends its CAS at `≥ o + lease ≥ s + lease`: A has
//! stopped. Any later write by A changes the revision and B's CAS fails. A release is written
//! only after the node has stopped acting. (Clocks must run at the same rate, not agree.)
//! `tests::never_two_owners_acting_at_once` drives three nodes against one simulated KV with
//! lost, delayed and reordered replies and checks this at every step.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a takeover names a previous owner whose value could not be read.
pub const UNREADABLE: &str = "(unreadable)";

/// The value kept under a resource's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The owning node, `None` once released.
    pub owner: Option<String>,
    /// The owner's lease time, ms (an observer waits the longer of this and its own).
    pub lease_ms: u64,
}

/// A KV entry as read: its record (or none: no such key) and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The revision (the KV's sequence number of the last write).
    pub revision: u64,
    /// What it says; `None` when the value cannot be read as a [`Record`] (treated as taken by
    /// an unknown node, so never grabbed before a lease has passed).
    pub record: Option<Record>,
}

/// What the driver must do next; its result goes back through [`Lease::on_read`] or
/// [`Lease::on_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read the key.
    Read,
    /// Create the key with this record (fails if it exists).
    Create(Record),
    /// Write this record if the key is still at `revision`.
    Update {
        /// Expected revision.
        revision: u64,
        /// The record.
        record: Record,
    },
}

/// Why a write did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The key was not at the expected revision (or existed, for a create): someone else wrote.
    #[error("revision conflict")]
    Conflict,
    /// No answer (NATS unreachable, timeout): the write may or may not have landed.
    #[error("no answer from the key-value store")]
    Unknown,
}

/// The answer to an [`Op`], for [`Lease::on_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// What [`Op::Read`] found (`None`: no such key).
    Read(Option<Entry>),
    /// [`Op::Read`] got no answer.
    ReadFailed,
    /// A write's new revision, or why not.
    Write(Result<u64, WriteError>),
}

/// This node's view of the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Not read yet, or to be read again after a conflict.
    Unknown,
    /// Nobody owns it (`revision` `None`: no key yet).
    Free {
        /// Revision of the released entry.
        revision: Option<u64>,
    },
    /// This node owns it at `revision`.
    Mine {
        /// Revision of our last write.
        revision: u64,
    },
    /// Another node owns it, as of `revision`, first seen at `seen`.
    Theirs {
        /// The owner (`None`: unreadable value).
        owner: Option<String>,
        /// The revision seen.
        revision: u64,
        /// When this node first saw that revision.
        seen: Instant,
        /// Lease time to wait from `seen`.
        lease: Duration,
    },
}

/// What happened, for the driver to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This node now owns the resource; `from` names the node whose lapsed lease it took over.
    Acquired {
        /// The previous owner, when taken over from one.
        from: Option<String>,
    },
    /// This node stopped owning it (`reason` for the log).
    Lost {
        /// Why.
        reason: &'static str,
    },
    /// This node released it (draining).
    Released,
}

/// A write that succeeded, not yet relied on. A clustered JetStream checks the expected
/// revision before the write goes through its consensus, not as part of it (nats-server issue
/// 4320), so two compare-and-sets on one revision sent at the same moment can both succeed.
/// The later one is the one that stays: a node acts on its write only after a read from the
/// stream's leader, a moment (`settle`) after the answer, still shows it as the latest.
#[derive(Debug, Clone)]
struct Confirm {
    revision: u64,
    sent: Instant,
    from: Option<String>,
}

#[derive(Debug, Clone)]
struct Pending {
    op: Op,
    sent: Instant,
    /// The owner we take over from, when the op is a takeover.
    from: Option<String>,
}

/// One node's lease state machine for one resource.
#[derive(Debug, Clone)]
pub struct Lease {
    node: String,
    lease: Duration,
    view: View,
    /// This node may act as owner until then.
    acting_until: Option<Instant>,
    pending: Option<Pending>,
    /// Next read (observing) or renewal.
    next: Option<Instant>,
    draining: bool,
    changes: Vec<Change>,
    acquired_at: Option<Instant>,
    confirm: Option<Confirm>,
    /// Wait after a successful write before the read that confirms it.
    settle: Duration,
}

impl Lease {
    /// A lease of `lease` for node `node`, nothing known yet.
    pub fn new(node: impl Into<String>, lease: Duration) -> Self {
        Self {
            node: node.into(),
            lease,
            view: View::Unknown,
            acting_until: None,
            pending: None,
            next: None,
            draining: false,
            changes: Vec::new(),
            acquired_at: None,
            confirm: None,
            settle: lease / 20,
        }
    }

    /// The same with this wait between a write's answer and its confirming read.
    #[cfg(test)]
    fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Renewal period: a third of the lease, so two renewals may fail before it runs out.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// How often an observer reads the key: often enough that a lapse or a release is seen
    /// within a sixth of a lease.
    fn observe_every(&self) -> Duration {
        self.lease / 6
    }

    /// The current view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Whether this node may act as the owner now (connect the account, talk as it).
    pub fn acting(&self, now: Instant) -> bool {
        !self.draining && self.acting_until.is_some_and(|t| now < t)
    }

    /// Until when this node may act, if it owns the resource.
    pub fn acting_until(&self) -> Option<Instant> {
        self.acting_until.filter(|_| !self.draining)
    }

    /// Since when this node has owned it (for `/healthz`).
    pub fn acquired_at(&self) -> Option<Instant> {
        self.acquired_at.filter(|_| self.acting_until.is_some())
    }

    /// Stop acting now and release the lease at the next [`poll`](Self::poll), so another
    /// node takes it without waiting for it to lapse.
    pub fn drain(&mut self) {
        if !self.draining && self.acting_until.is_some() {
            self.changes.push(Change::Released);
        }
        self.draining = true;
    }

    /// Whether draining is over: nothing in flight and nothing of ours left in the KV that we
    /// can still release.
    pub fn drained(&self) -> bool {
        self.draining && self.pending.is_none() && !matches!(self.view, View::Mine { .. })
    }

    /// Whether [`drain`](Self::drain) was called (and not undone).
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Takes part again after a drain (an operator's undrain): only once [`drained`](Self::drained),
    /// so no release is in flight. Starts over from reading the key, as a new node would: the
    /// old acting deadline is forgotten, so nothing is acted on before a new write of ours is
    /// confirmed. Returns whether it took effect.
    pub fn undrain(&mut self) -> bool {
        if !self.drained() {
            return false;
        }
        self.draining = false;
        self.acting_until = None;
        self.acquired_at = None;
        self.confirm = None;
        self.view = View::Unknown;
        self.next = None;
        true
    }

    /// The key changed (a watch saw a write): an observer reads it at the next
    /// [`poll`](Self::poll) instead of waiting for its read period, so a release is taken at
    /// once. Only ever brings a read forward; the rules stay the same.
    pub fn changed(&mut self) {
        if !matches!(self.view, View::Mine { .. }) {
            self.next = None;
        }
    }

    /// The next change to announce.
    pub fn poll_change(&mut self) -> Option<Change> {
        if self.changes.is_empty() {
            None
        } else {
            Some(self.changes.remove(0))
        }
    }

    /// When [`poll`](Self::poll) has something to do next (or the acting deadline passes).
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next, self.acting_until].into_iter().flatten().min()
    }

    /// The next operation to run now, if any; one at a time.
    pub fn poll(&mut self, now: Instant) -> Option<Op> {
        self.expire(now);
        if self.pending.is_some() || (!self.draining && self.next.is_some_and(|t| now < t)) {
            return None;
        }
        if self.confirm.is_some() && !self.draining {
            self.pending = Some(Pending {
                op: Op::Read,
                sent: now,
                from: None,
            });
            return Some(Op::Read);
        }
        let mine = Record {
            owner: Some(self.node.clone()),
            lease_ms: self.lease.as_millis() as u64,
        };
        let (op, from) = match (&self.view, self.draining) {
            (View::Mine { revision }, true) => (
                Op::Update {
                    revision: *revision,
                    record: Record {
                        owner: None,
                        lease_ms: mine.lease_ms,
                    },
                },
                None,
            ),
            // Drained: keeps reading (so `/healthz` shows who holds it now), never writes.
            (_, true) => {
                if self.next.is_some_and(|t| now < t) {
                    return None;
                }
                (Op::Read, None)
            }
            (View::Unknown, _) => (Op::Read, None),
            (View::Free { revision: None }, _) => (Op::Create(mine), None),
            (
                View::Free {
                    revision: Some(revision),
                },
                _,
            )
            | (View::Mine { revision }, _) => (
                Op::Update {
                    revision: *revision,
                    record: mine,
                },
                None,
            ),
            (
                View::Theirs {
                    owner,
                    revision,
                    seen,
                    lease,
                },
                _,
            ) => {
                if now >= *seen + *lease {
                    (
                        Op::Update {
                            revision: *revision,
                            record: mine,
                        },
                        Some(owner.clone().unwrap_or_else(|| UNREADABLE.into())),
                    )
                } else {
                    (Op::Read, None)
                }
            }
        };
        self.pending = Some(Pending {
            op: op.clone(),
            sent: now,
            from,
        });
        Some(op)
    }

    /// The acting deadline passed without a renewal: stop.
    fn expire(&mut self, now: Instant) {
        if self.acting_until.is_some_and(|t| now >= t) {
            self.acting_until = None;
            if !self.draining {
                self.changes.push(Change::Lost {
                    reason: "lease ran out without a renewal",
                });
            }
        }
    }

    fn lose(&mut self, reason: &'static str) {
        if self.acting_until.take().is_some() && !self.draining {
            self.changes.push(Change::Lost { reason });
        }
    }

    /// The answer to the operation [`poll`](Self::poll) gave.
    pub fn on_reply(&mut self, now: Instant, reply: Reply) {
        match reply {
            Reply::Read(entry) => self.on_read(now, entry),
            Reply::ReadFailed => self.on_read_failed(now),
            Reply::Write(result) => self.on_write(now, result),
        }
    }

    /// The result of [`Op::Read`]: `None` when there is no such key.
    pub fn on_read(&mut self, now: Instant, entry: Option<Entry>) {
        if !matches!(self.pending.as_ref().map(|p| &p.op), Some(Op::Read)) {
            return;
        }
        self.read(now, entry);
        if self.draining && self.next.is_none() && !matches!(self.view, View::Mine { .. }) {
            // A drained node only watches: its next read at the observer's pace.
            self.next = Some(now + self.observe_every());
        }
    }

    fn read(&mut self, now: Instant, entry: Option<Entry>) {
        self.pending = None;
        self.next = None;
        self.expire(now);
        let confirm = self.confirm.take();
        let Some(entry) = entry else {
            self.lose("the lease entry is gone");
            self.view = View::Free { revision: None };
            return;
        };
        let owner = entry.record.as_ref().map(|r| r.owner.clone());
        match owner {
            Some(None) => {
                self.lose("the lease was released by another node");
                self.view = View::Free {
                    revision: Some(entry.revision),
                };
            }
            Some(Some(owner)) if owner == self.node => {
                // Ours: a renewal whose answer we missed, or an earlier run of this node. Still
                // acting only as long as the last write we know succeeded allows; renew now.
                self.view = View::Mine {
                    revision: entry.revision,
                };
                if let Some(c) = confirm
                    && c.revision == entry.revision
                    && !self.draining
                {
                    self.grant(now, c);
                }
            }
            other => {
                self.lose("another node owns the lease");
                let owner = other.flatten();
                let lease = entry.record.as_ref().map_or(self.lease, |r| {
                    self.lease.max(Duration::from_millis(r.lease_ms))
                });
                let seen = match &self.view {
                    View::Theirs { revision, seen, .. } if *revision == entry.revision => *seen,
                    _ => now,
                };
                self.view = View::Theirs {
                    owner,
                    revision: entry.revision,
                    seen,
                    lease,
                };
                self.next = Some(now + self.observe_every());
            }
        }
    }

    /// Our write `c` is confirmed the latest: act until a lease after it was sent.
    fn grant(&mut self, now: Instant, c: Confirm) {
        let until = c.sent + self.lease;
        if until <= now {
            // It took a whole lease to confirm: others may already be timing it out.
            self.lose("the lease could not be confirmed in time");
        } else {
            if self.acting_until.is_none() {
                self.acquired_at = Some(now);
                self.changes.push(Change::Acquired { from: c.from });
            }
            self.acting_until = Some(until);
        }
        self.next = Some(c.sent + self.renew_every());
    }

    /// A read that got no answer (NATS unreachable, timeout): try again a little later.
    pub fn on_read_failed(&mut self, now: Instant) {
        if matches!(self.pending.as_ref().map(|p| &p.op), Some(Op::Read)) {
            self.pending = None;
            self.next = Some(now + self.observe_every().min(Duration::from_millis(500)));
            self.expire(now);
        }
    }

    /// The result of a write ([`Op::Create`] or [`Op::Update`]): the new revision, or why not.
    pub fn on_write(&mut self, now: Instant, result: Result<u64, WriteError>) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let record = match &pending.op {
            Op::Read => {
                self.pending = Some(pending);
                return;
            }
            Op::Create(r) | Op::Update { record: r, .. } => r.clone(),
        };
        self.next = None;
        self.expire(now);
        let releasing = record.owner.is_none();
        match result {
            Ok(revision) if releasing => {
                self.view = View::Free {
                    revision: Some(revision),
                };
            }
            Ok(revision) => {
                self.view = View::Mine { revision };
                if self.draining {
                    // Drained while the write was in flight: release it at once.
                    return;
                }
                // Granted only once a read shows the write is still the latest (see
                // `Confirm`).
                self.confirm = Some(Confirm {
                    revision,
                    sent: pending.sent,
                    from: pending.from,
                });
                self.next = Some(now + self.settle);
            }
            Err(WriteError::Conflict) => {
                // Someone else wrote; find out who. We keep acting only until our last
                // successful write's deadline, unless the read says the lease is someone else's.
                self.view = View::Unknown;
            }
            Err(WriteError::Unknown) => {
                // It may have landed: our revision is unsure, read before writing again.
                self.view = View::Unknown;
                self.next = Some(now + self.observe_every().min(Duration::from_millis(500)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(6000);

    /// A node confirming its writes at once (the tests' KV answers in order, at once).
    fn node(name: &str) -> Lease {
        Lease::new(name, LEASE).with_settle(Duration::ZERO)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A KV bucket holding one key.
    #[derive(Default)]
    struct Kv {
        entry: Option<(u64, Record)>,
        seq: u64,
        /// Like a clustered JetStream (nats-server issue 4320): a compare-and-set on the
        /// revision a write replaced less than this ago is accepted too.
        race_window: Duration,
        /// The revision the last write replaced, and when that write landed.
        replaced: Option<(Option<u64>, Instant)>,
    }

    impl Kv {
        fn apply(&mut self, op: &Op) -> Reply {
            self.apply_at(op, Instant::now())
        }

        /// Whether a write expecting `expected` is accepted at `now`.
        fn accepts(&self, expected: Option<u64>, now: Instant) -> bool {
            self.entry.as_ref().map(|e| e.0) == expected
                || self
                    .replaced
                    .is_some_and(|(rev, at)| rev == expected && now < at + self.race_window)
        }

        fn write(&mut self, record: &Record, now: Instant) -> Reply {
            self.replaced = Some((self.entry.as_ref().map(|e| e.0), now));
            self.seq += 1;
            self.entry = Some((self.seq, record.clone()));
            Reply::Write(Ok(self.seq))
        }

        fn apply_at(&mut self, op: &Op, now: Instant) -> Reply {
            match op {
                Op::Read => Reply::Read(self.entry.as_ref().map(|(rev, r)| Entry {
                    revision: *rev,
                    record: Some(r.clone()),
                })),
                Op::Create(r) if self.accepts(None, now) => self.write(r, now),
                Op::Update { revision, record } if self.accepts(Some(*revision), now) => {
                    self.write(record, now)
                }
                Op::Create(_) | Op::Update { .. } => Reply::Write(Err(WriteError::Conflict)),
            }
        }
    }

    fn deliver(lease: &mut Lease, now: Instant, reply: Reply) {
        lease.on_reply(now, reply);
    }

    /// Runs `lease` against `kv` with instant replies until it has nothing to do now.
    fn settle(lease: &mut Lease, kv: &mut Kv, now: Instant) {
        while let Some(op) = lease.poll(now) {
            let reply = kv.apply(&op);
            deliver(lease, now, reply);
        }
    }

    #[test]
    fn a_free_key_is_created_then_renewed_at_a_third() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        settle(&mut a, &mut kv, t0);
        assert!(a.acting(t0));
        assert_eq!(a.poll_change(), Some(Change::Acquired { from: None }));
        assert_eq!(a.poll_timeout(), Some(t0 + ms(2000)));
        assert_eq!(a.poll(t0 + ms(1999)), None);
        let op = a.poll(t0 + ms(2000)).unwrap();
        assert!(matches!(op, Op::Update { revision: 1, .. }));
        let reply = kv.apply(&op);
        deliver(&mut a, t0 + ms(2010), reply);
        assert_eq!(
            a.acting_until(),
            Some(t0 + LEASE),
            "extended once confirmed"
        );
        settle(&mut a, &mut kv, t0 + ms(2010));
        assert_eq!(a.acting_until(), Some(t0 + ms(8000)), "from the send time");
        assert_eq!(a.poll_change(), None, "a renewal is no news");
    }

    #[test]
    fn an_observer_takes_over_only_after_a_whole_lease_unchanged() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        let mut b = node("b");
        settle(&mut a, &mut kv, t0);
        settle(&mut b, &mut kv, t0 + ms(100));
        assert!(matches!(b.view(), View::Theirs { owner: Some(o), .. } if o == "a"));
        // a dies; b keeps reading and takes over one lease after it first saw revision 1.
        let mut t = t0 + ms(100);
        while !b.acting(t) {
            assert!(t < t0 + ms(6100) || !a.acting(t));
            t += ms(100);
            settle(&mut b, &mut kv, t);
        }
        assert_eq!(t, t0 + ms(6100));
        assert!(!a.acting(t), "a's lease ran out at 6000");
        assert_eq!(
            b.poll_change(),
            Some(Change::Acquired {
                from: Some("a".into())
            })
        );
    }

    #[test]
    fn a_renewal_resets_the_observers_clock() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        let mut b = node("b");
        for step in 0..200u64 {
            let t = t0 + ms(step * 100);
            settle(&mut a, &mut kv, t);
            settle(&mut b, &mut kv, t);
            assert!(a.acting(t) && !b.acting(t), "at {step}");
        }
    }

    #[test]
    fn drain_stops_acting_first_then_releases_and_another_takes_at_once() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        let mut b = node("b");
        settle(&mut a, &mut kv, t0);
        settle(&mut b, &mut kv, t0);
        a.poll_change();
        let t = t0 + ms(500);
        a.drain();
        assert!(!a.acting(t), "stops before the release is written");
        assert_eq!(a.poll_change(), Some(Change::Released));
        settle(&mut a, &mut kv, t);
        assert!(a.drained());
        assert_eq!(kv.entry.as_ref().unwrap().1.owner, None);
        // b reads again within a sixth of a lease and takes it.
        settle(&mut b, &mut kv, t0 + ms(1000));
        assert!(b.acting(t0 + ms(1000)));
        assert_eq!(b.poll_change(), Some(Change::Acquired { from: None }));
    }

    #[test]
    fn an_undrained_node_takes_part_again_without_acting_on_its_old_lease() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        settle(&mut a, &mut kv, t0);
        a.drain();
        assert!(!a.undrain(), "not before the release is written");
        settle(&mut a, &mut kv, t0 + ms(100));
        assert!(a.drained());
        // Nobody took it: the undrained node claims the free lease again, confirmed first.
        assert!(a.undrain());
        assert!(!a.acting(t0 + ms(200)), "the old deadline is forgotten");
        assert!(!a.draining());
        settle(&mut a, &mut kv, t0 + ms(200));
        assert!(a.acting(t0 + ms(200)));
        assert_eq!(a.acting_until(), Some(t0 + ms(200) + LEASE));
        // While drained, another node took it: undrained, it observes.
        let mut b = node("b");
        a.drain();
        settle(&mut a, &mut kv, t0 + ms(300));
        settle(&mut b, &mut kv, t0 + ms(300));
        assert!(b.acting(t0 + ms(300)));
        assert!(a.undrain());
        settle(&mut a, &mut kv, t0 + ms(400));
        assert!(!a.acting(t0 + ms(400)));
        assert!(matches!(a.view(), View::Theirs { owner: Some(o), .. } if o == "b"));
    }

    #[test]
    fn an_owner_cut_off_from_the_kv_stops_when_its_lease_runs_out() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        settle(&mut a, &mut kv, t0);
        a.poll_change();
        let mut t = t0;
        // Every renewal times out.
        while t < t0 + ms(7000) {
            if let Some(op) = a.poll(t) {
                deliver(&mut a, t, lost(&op));
            }
            assert_eq!(a.acting(t), t < t0 + LEASE, "at {:?}", t - t0);
            t += ms(100);
        }
        assert_eq!(
            a.poll_change(),
            Some(Change::Lost {
                reason: "lease ran out without a renewal"
            })
        );
    }

    #[test]
    fn a_reply_later_than_the_lease_grants_nothing() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        let op = a.poll(t0).unwrap();
        let reply = kv.apply(&op);
        deliver(&mut a, t0 + LEASE, reply);
        assert!(!a.acting(t0 + LEASE));
        assert_eq!(a.poll_change(), None);
    }

    #[test]
    fn a_lost_cas_race_leaves_one_owner() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        let mut b = node("b");
        // Both see the key absent and both try to create it; b's create lands second.
        for n in [&mut a, &mut b] {
            let op = n.poll(t0).unwrap();
            let reply = kv.apply(&op);
            deliver(n, t0, reply);
        }
        let oa = a.poll(t0).unwrap();
        let ob = b.poll(t0).unwrap();
        assert!(matches!((&oa, &ob), (Op::Create(_), Op::Create(_))));
        let ra = kv.apply(&oa);
        let rb = kv.apply(&ob);
        deliver(&mut b, t0 + ms(5), rb);
        deliver(&mut a, t0 + ms(6), ra);
        settle(&mut a, &mut kv, t0 + ms(6));
        assert!(a.acting(t0 + ms(6)) && !b.acting(t0 + ms(6)));
        settle(&mut b, &mut kv, t0 + ms(10));
        assert!(matches!(b.view(), View::Theirs { .. }));
    }

    #[test]
    fn a_missed_renewal_answer_is_found_by_reading() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        settle(&mut a, &mut kv, t0);
        let op = a.poll(t0 + ms(2000)).unwrap();
        let _landed = kv.apply(&op);
        a.on_write(t0 + ms(2500), Err(WriteError::Unknown));
        assert_eq!(
            a.acting_until(),
            Some(t0 + LEASE),
            "the unconfirmed renewal extends nothing"
        );
        settle(&mut a, &mut kv, t0 + ms(3000));
        assert_eq!(a.view(), &View::Mine { revision: 3 });
        assert_eq!(a.acting_until(), Some(t0 + ms(9000)));
    }

    #[test]
    fn an_unreadable_value_is_someone_elses_until_a_whole_lease_has_passed() {
        let t0 = Instant::now();
        let mut a = node("a");
        assert_eq!(a.poll(t0), Some(Op::Read));
        let garbage = Entry {
            revision: 7,
            record: None,
        };
        a.on_reply(t0, Reply::Read(Some(garbage.clone())));
        assert!(matches!(a.view(), View::Theirs { owner: None, .. }));
        assert_eq!(a.poll(t0 + ms(1000)), Some(Op::Read));
        a.on_reply(t0 + ms(1000), Reply::Read(Some(garbage)));
        let op = a.poll(t0 + LEASE).unwrap();
        assert!(matches!(op, Op::Update { revision: 7, .. }), "{op:?}");
        a.on_reply(t0 + LEASE, Reply::Write(Ok(8)));
        assert!(!a.acting(t0 + LEASE), "not before the write is confirmed");
        assert_eq!(a.poll(t0 + LEASE), Some(Op::Read));
        let ours = Entry {
            revision: 8,
            record: Some(Record {
                owner: Some("a".into()),
                lease_ms: 6000,
            }),
        };
        a.on_reply(t0 + LEASE, Reply::Read(Some(ours)));
        assert!(a.acting(t0 + LEASE));
        assert_eq!(
            a.poll_change(),
            Some(Change::Acquired {
                from: Some(UNREADABLE.into())
            })
        );
    }

    /// nats-server issue 4320: two compare-and-sets on one revision both succeed. The node whose
    /// write is not the latest finds out in its confirming read and never acts.
    #[test]
    fn two_writes_accepted_on_one_revision_leave_one_owner() {
        let t0 = Instant::now();
        let settle_for = ms(300);
        let mut b = Lease::new("b", LEASE).with_settle(settle_for);
        let mut c = Lease::new("c", LEASE).with_settle(settle_for);
        let theirs = |rev: u64, owner: &str| Entry {
            revision: rev,
            record: Some(Record {
                owner: Some(owner.into()),
                lease_ms: 6000,
            }),
        };
        for n in [&mut b, &mut c] {
            assert_eq!(n.poll(t0), Some(Op::Read));
            n.on_reply(t0, Reply::Read(Some(theirs(5, "a"))));
        }
        let t = t0 + LEASE;
        assert!(matches!(b.poll(t), Some(Op::Update { revision: 5, .. })));
        assert!(matches!(c.poll(t), Some(Op::Update { revision: 5, .. })));
        // The faulty KV accepts both: c's as 6, b's as 7.
        c.on_reply(t + ms(2), Reply::Write(Ok(6)));
        b.on_reply(t + ms(3), Reply::Write(Ok(7)));
        assert!(!b.acting(t + ms(3)) && !c.acting(t + ms(3)));
        let later = t + ms(2) + settle_for;
        assert_eq!(c.poll(later), Some(Op::Read));
        c.on_reply(later, Reply::Read(Some(theirs(7, "b"))));
        assert_eq!(b.poll(later + ms(1)), Some(Op::Read));
        b.on_reply(later + ms(1), Reply::Read(Some(theirs(7, "b"))));
        assert!(b.acting(later + ms(1)) && !c.acting(later + ms(1)));
        assert_eq!(c.poll_change(), None, "c never acted");
        assert!(matches!(c.view(), View::Theirs { owner: Some(o), .. } if o == "b"));
    }

    /// Three nodes, one KV, replies delayed, lost and reordered at random; nodes die and come
    /// back, drain, and lose the KV. At every step at most one node acts.
    #[test]
    fn never_two_owners_acting_at_once() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut handovers = 0;
        for _run in 0..200 {
            let t0 = Instant::now();
            let mut kv = Kv {
                race_window: ms(250),
                ..Kv::default()
            };
            let names = ["a", "b", "c"];
            let mut nodes: Vec<Lease> = names
                .iter()
                .map(|n| Lease::new(*n, LEASE + ms(rand(3) * 1000)))
                .collect();
            // Ops on their way to the KV and replies on their way back, with arrival times.
            // (arrival, node, its incarnation, what): a reply never reaches a later process.
            let mut incarnation = [0u32; 3];
            let mut to_kv: Vec<(Instant, usize, u32, Op)> = Vec::new();
            let mut to_node: Vec<(Instant, usize, u32, Reply)> = Vec::new();
            let mut last_owner = None;
            let mut t = t0;
            for _ in 0..3000 {
                t += ms(rand(200));
                // Deliver what has arrived, in arrival order.
                to_kv.sort_by_key(|x| x.0);
                while to_kv.first().is_some_and(|x| x.0 <= t) {
                    let (at, i, g, op) = to_kv.remove(0);
                    let reply = kv.apply_at(&op, at);
                    match rand(10) {
                        // The reply is lost: the driver reports no answer after a timeout.
                        0 => to_node.push((at + ms(1000), i, g, lost(&op))),
                        _ => to_node.push((at + ms(rand(1500)), i, g, reply)),
                    }
                }
                to_node.sort_by_key(|x| x.0);
                while to_node.first().is_some_and(|x| x.0 <= t) {
                    let (_, i, g, reply) = to_node.remove(0);
                    if g == incarnation[i] {
                        deliver(&mut nodes[i], t, reply);
                    }
                }
                match rand(400) {
                    // A node dies and a new process starts with the same id.
                    0 => {
                        let i = rand(3) as usize;
                        nodes[i] = Lease::new(names[i], LEASE);
                        incarnation[i] += 1;
                    }
                    1 => nodes[rand(3) as usize].drain(),
                    // An operator's undrain (takes effect only once drained).
                    2..=3 => {
                        nodes[rand(3) as usize].undrain();
                    }
                    _ => {}
                }
                for (i, n) in nodes.iter_mut().enumerate() {
                    if let Some(op) = n.poll(t) {
                        if rand(20) == 0 {
                            // Never reaches the KV.
                            to_node.push((t + ms(1000), i, incarnation[i], lost(&op)));
                        } else {
                            to_kv.push((t + ms(rand(300)), i, incarnation[i], op));
                        }
                    }
                }
                let acting: Vec<usize> = (0..3).filter(|i| nodes[*i].acting(t)).collect();
                assert!(acting.len() <= 1, "two owners at once: {acting:?}");
                if let Some(&i) = acting.first() {
                    if last_owner.is_some_and(|o| o != i) {
                        handovers += 1;
                    }
                    last_owner = Some(i);
                }
            }
        }
        assert!(handovers > 50, "the runs exercise handovers ({handovers})");
    }

    fn lost(op: &Op) -> Reply {
        match op {
            Op::Read => Reply::ReadFailed,
            _ => Reply::Write(Err(WriteError::Unknown)),
        }
    }
}
