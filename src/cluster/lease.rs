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
//!
//! The fair-share rules (`share.rs`) only ever delay a claim ([`Lease::set_claim_delay`]) or
//! release a lease the way a drain does ([`Lease::hand_over`]), so the proof above is untouched;
//! `tests::shares_out_fairly_with_nodes_joining_and_leaving` checks it again with nodes
//! joining, dying, draining and leaving, and that a quiet time ends with one owner per key and
//! the nodes' counts within one.

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
    /// Extra wait before claiming a free or lapsed lease (the fair-share rule, `share.rs`).
    claim_delay: Duration,
    /// The free revision seen and when this node first saw it.
    free_seen: Option<(Option<u64>, Instant)>,
    /// Releasing to rebalance ([`hand_over`](Self::hand_over)): takes part again once released.
    handing_over: bool,
    /// The revision of our last hand-over's release: claimed back only after half a lease.
    handed_over: Option<u64>,
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
            claim_delay: Duration::ZERO,
            free_seen: None,
            handing_over: false,
            handed_over: None,
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

    /// Hands the lease over to rebalance: stops acting and releases it as a drain does, then
    /// takes part again by itself (the released revision claimed back only after half a
    /// lease, so a node under its share gets it). Returns whether it started (only while this
    /// node holds the lease and is not draining).
    pub fn hand_over(&mut self) -> bool {
        if self.draining || self.acting_until.is_none() {
            return false;
        }
        self.drain();
        self.handing_over = true;
        true
    }

    /// Whether a [`hand_over`](Self::hand_over) is still under way.
    pub fn handing_over(&self) -> bool {
        self.handing_over
    }

    /// Waits this much longer before claiming a free or lapsed lease (the fair-share rule:
    /// `share::claim_delay`). Only ever delays a write, so the invariant is untouched.
    pub fn set_claim_delay(&mut self, delay: Duration) {
        if delay < self.claim_delay && matches!(self.view, View::Free { .. }) {
            // The claim may be due earlier than the next read planned.
            self.next = None;
        }
        self.claim_delay = delay;
    }

    /// The node whose lease this node sees as lapsed now (unchanged for a whole lease).
    pub fn lapsed_owner(&self, now: Instant) -> Option<&str> {
        match &self.view {
            View::Theirs {
                owner: Some(owner),
                seen,
                lease,
                ..
            } if now >= *seen + *lease => Some(owner),
            _ => None,
        }
    }

    /// Whether this node holds the lease or is claiming it (for its count of leases held).
    pub fn holding(&self) -> bool {
        matches!(self.view, View::Mine { .. })
            || self.pending.as_ref().is_some_and(|p| match &p.op {
                Op::Create(r) | Op::Update { record: r, .. } => {
                    r.owner.as_deref() == Some(self.node.as_str())
                }
                Op::Read => false,
            })
    }

    /// Who holds the lease as this node sees it.
    pub fn holder(&self) -> super::share::Holder {
        use super::share::Holder;
        if self.holding() && !self.draining {
            return Holder::Me;
        }
        match &self.view {
            View::Theirs {
                owner: Some(owner), ..
            } => Holder::Other(owner.clone()),
            _ => Holder::Nobody,
        }
    }

    /// Whether a hand-over of this lease is still waiting for a taker: releasing it, or
    /// released less than a lease ago and still free. A node hands one lease over at a time.
    pub fn awaiting_taker(&self, now: Instant) -> bool {
        self.handing_over
            || matches!(self.view, View::Free { revision } if revision.is_some() && revision == self.handed_over)
                && self
                    .free_seen
                    .is_some_and(|(_, seen)| now < seen + self.lease)
    }

    /// When a free lease seen at `free_seen` may be claimed.
    fn claim_due(&self) -> Option<Instant> {
        let (revision, seen) = self.free_seen?;
        let mut delay = self.claim_delay;
        if revision.is_some() && revision == self.handed_over {
            delay = delay.max(self.lease / 2);
        }
        Some(seen + delay)
    }

    /// Notes the lease seen free at `revision`; plans the next step.
    fn seen_free(&mut self, revision: Option<u64>, now: Instant) {
        if self.free_seen.is_none_or(|(r, _)| r != revision) {
            self.free_seen = Some((revision, now));
        }
        self.view = View::Free { revision };
        // Read on while the claim waits, so a claim by another node is seen.
        self.next = self
            .claim_due()
            .filter(|due| *due > now)
            .map(|due| due.min(now + self.observe_every()));
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
        self.handing_over = false;
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
            // A free lease waits for its claim (the fair-share rule), reading meanwhile.
            (View::Free { .. }, _) if self.claim_due().is_some_and(|due| now < due) => {
                (Op::Read, None)
            }
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
                if now >= *seen + *lease + self.claim_delay {
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
        if self.handing_over && self.drained() {
            // Released (or found taken): a hand-over ends where a drain would, then the node
            // takes part again.
            self.handing_over = false;
            self.undrain();
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
            self.seen_free(None, now);
            return;
        };
        let owner = entry.record.as_ref().map(|r| r.owner.clone());
        match owner {
            Some(None) => {
                self.lose("the lease was released by another node");
                self.seen_free(Some(entry.revision), now);
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
                if self.handing_over {
                    self.handed_over = Some(revision);
                }
                self.seen_free(Some(revision), now);
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
    use super::super::share::{Holder, Outlook, Presence, PresenceRecord};
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
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15u64);
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

    #[test]
    fn a_claim_delay_holds_back_a_free_or_lapsed_claim_only() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        a.set_claim_delay(ms(3000));
        settle(&mut a, &mut kv, t0);
        assert!(!a.acting(t0), "the missing key is not created yet");
        assert!(matches!(a.view(), View::Free { revision: None }));
        assert!(a.poll_timeout().is_some_and(|t| t <= t0 + ms(3000)));
        settle(&mut a, &mut kv, t0 + ms(2999));
        assert!(!a.acting(t0 + ms(2999)));
        settle(&mut a, &mut kv, t0 + ms(3000));
        assert!(a.acting(t0 + ms(3000)), "claimed once the delay is over");
        // Under its share again: a free key is claimed at once.
        let mut b = node("b");
        let mut kv2 = Kv::default();
        b.set_claim_delay(ms(3000));
        settle(&mut b, &mut kv2, t0);
        b.set_claim_delay(Duration::ZERO);
        settle(&mut b, &mut kv2, t0 + ms(10));
        assert!(b.acting(t0 + ms(10)));
        // A lapsed lease: taken over a lease plus the delay after it was first seen.
        let mut c = node("c");
        c.set_claim_delay(ms(1000));
        settle(&mut c, &mut kv2, t0 + ms(100));
        let mut t = t0 + ms(100);
        while !c.acting(t) {
            t += ms(100);
            settle(&mut c, &mut kv2, t);
        }
        assert_eq!(t, t0 + ms(100) + LEASE + ms(1000));
    }

    #[test]
    fn a_hand_over_releases_and_the_releaser_waits_half_a_lease_to_claim_it_back() {
        let t0 = Instant::now();
        let mut kv = Kv::default();
        let mut a = node("a");
        settle(&mut a, &mut kv, t0);
        a.poll_change();
        assert!(a.hand_over());
        assert!(!a.acting(t0) && a.awaiting_taker(t0));
        assert_eq!(a.poll_change(), Some(Change::Released));
        settle(&mut a, &mut kv, t0 + ms(100));
        assert_eq!(kv.entry.as_ref().unwrap().1.owner, None, "released");
        assert!(
            !a.draining() && !a.handing_over(),
            "takes part again by itself"
        );
        assert!(a.awaiting_taker(t0 + ms(200)));
        // Nobody takes it: a claims it back, but only half a lease after releasing it.
        settle(&mut a, &mut kv, t0 + ms(3099));
        assert!(!a.acting(t0 + ms(3099)));
        settle(&mut a, &mut kv, t0 + ms(3100));
        assert!(a.acting(t0 + ms(3100)));
        assert!(!a.awaiting_taker(t0 + ms(3100)));
        // Handed over again, b (under its share) claims it at once and a sees the taker.
        a.hand_over();
        settle(&mut a, &mut kv, t0 + ms(3200));
        let mut b = node("b");
        settle(&mut b, &mut kv, t0 + ms(3200));
        assert!(b.acting(t0 + ms(3200)));
        settle(&mut a, &mut kv, t0 + ms(4200));
        assert!(!a.awaiting_taker(t0 + ms(4200)));
        assert!(matches!(a.view(), View::Theirs { owner: Some(o), .. } if o == "b"));
        assert!(!a.hand_over(), "nothing to hand over");
    }

    /// A simulated node: one lease per key, what it knows of the others' presence.
    struct SimNode {
        name: &'static str,
        leases: Vec<Lease>,
        presence: Presence,
        incarnation: u32,
        /// An operator's drain of the whole node.
        drained: bool,
        /// Stopping: drains, then deletes its presence and exits.
        leaving: bool,
        next_beat: Instant,
    }

    impl SimNode {
        fn new(name: &'static str, keys: usize, incarnation: u32, now: Instant) -> Self {
            Self {
                name,
                leases: (0..keys).map(|_| Lease::new(name, LEASE)).collect(),
                presence: Presence::new(name, LEASE),
                incarnation,
                drained: false,
                leaving: false,
                next_beat: now,
            }
        }

        /// What the driver does before its leases poll: the fair-share claim delay for each,
        /// and one hand-over at a time while this node is the most loaded.
        fn share(&mut self, now: Instant, settle: Duration) -> Vec<Option<Op>> {
            let draining = self.drained || self.leaving;
            for l in &self.leases {
                if let Some(o) = l.lapsed_owner(now) {
                    self.presence.lapsed(o);
                }
            }
            let holders: Vec<Holder> = self.leases.iter().map(Lease::holder).collect();
            let outlook = Outlook::new(
                self.name,
                draining,
                &holders,
                &self.presence.live(now),
                settle,
                now,
            );
            if !draining
                && !self.leases.iter().any(|l| l.awaiting_taker(now))
                && outlook.hand_over(self.name)
                && let Some(l) = self.leases.iter_mut().find(|l| l.acting(now))
            {
                l.hand_over();
            }
            let mut held = outlook.held(self.name);
            self.leases
                .iter_mut()
                .map(|l| {
                    if draining {
                        l.drain();
                    } else if l.draining() {
                        l.undrain();
                    }
                    let was = l.holding();
                    let owner = match l.holder() {
                        Holder::Other(o) => Some(o),
                        _ => None,
                    };
                    l.set_claim_delay(outlook.claim_delay(held, owner.as_deref(), LEASE));
                    let op = l.poll(now);
                    if !was && l.holding() {
                        held += 1;
                    }
                    op
                })
                .collect()
        }
    }

    /// Up to four nodes and six keys: nodes join, die, drain and leave at random while replies
    /// are delayed, lost and reordered; every node applies the fair-share rules. At every step
    /// no key has two nodes acting; after a quiet time every key has exactly one owner and the
    /// live nodes' counts are within one of each other.
    #[test]
    fn shares_out_fairly_with_nodes_joining_and_leaving() {
        let mut rand = xorshift(0x2545_f491_4f6c_dd1du64);
        let names = ["a", "b", "c", "d"];
        let settle = ms(2000);
        let (mut handovers, mut rebalanced) = (0, 0);
        for run in 0..60 {
            let keys = 2 + rand(6) as usize;
            let t0 = Instant::now();
            let mut kv: Vec<Kv> = (0..keys)
                .map(|_| Kv {
                    race_window: ms(250),
                    ..Kv::default()
                })
                .collect();
            let mut nodes: Vec<Option<SimNode>> = vec![Some(SimNode::new("a", keys, 0, t0))];
            nodes.extend((1..names.len()).map(|_| None));
            let mut incarnation = [0u32; 4];
            let mut presence_seq = 0u64;
            // (arrival, node, incarnation, key, what)
            let mut to_kv: Vec<(Instant, usize, u32, usize, Op)> = Vec::new();
            let mut to_node: Vec<(Instant, usize, u32, usize, Reply)> = Vec::new();
            // (arrival, observer, node, revision, record): presence seen through the watch.
            let mut beats: Vec<(Instant, usize, &str, u64, Option<PresenceRecord>)> = Vec::new();
            let mut last_owner: Vec<Option<usize>> = vec![None; keys];
            let mut t = t0;
            let chaos_steps = 2000;
            for step in 0..chaos_steps + 1500 {
                let chaos = step < chaos_steps;
                t += ms(if chaos { rand(200) } else { 20 + rand(80) });
                if step == chaos_steps {
                    // Quiet from now on: drained nodes undrained, leaving ones gone or staying.
                    for n in nodes.iter_mut().flatten() {
                        n.drained = false;
                    }
                    if nodes.iter().flatten().all(|n| n.leaving) {
                        incarnation[0] += 1;
                        nodes[0] = Some(SimNode::new("a", keys, incarnation[0], t));
                    }
                }
                to_kv.sort_by_key(|x| x.0);
                while to_kv.first().is_some_and(|x| x.0 <= t) {
                    let (at, i, g, k, op) = to_kv.remove(0);
                    let reply = kv[k].apply_at(&op, at);
                    match rand(if chaos { 10 } else { 1000 }) {
                        0 => to_node.push((at + ms(1000), i, g, k, lost(&op))),
                        _ => {
                            let delay = if chaos { rand(1500) } else { rand(50) };
                            to_node.push((at + ms(delay), i, g, k, reply))
                        }
                    }
                }
                to_node.sort_by_key(|x| x.0);
                while to_node.first().is_some_and(|x| x.0 <= t) {
                    let (_, i, g, k, reply) = to_node.remove(0);
                    if let Some(n) = nodes[i].as_mut().filter(|n| n.incarnation == g) {
                        deliver(&mut n.leases[k], t, reply);
                    }
                }
                beats.sort_by_key(|x| x.0);
                while beats.first().is_some_and(|x| x.0 <= t) {
                    let (_, o, node, rev, record) = beats.remove(0);
                    if let Some(n) = nodes[o].as_mut() {
                        n.presence.on_entry(node, rev, record.as_ref(), t);
                    }
                }
                if chaos {
                    let i = rand(4) as usize;
                    match rand(300) {
                        // Joins (or a new process after a death, same id).
                        0..=1 if nodes[i].is_none() => {
                            incarnation[i] += 1;
                            nodes[i] = Some(SimNode::new(names[i], keys, incarnation[i], t));
                        }
                        // kill -9: no release, no goodbye; its presence lapses.
                        2 if i != 0 => nodes[i] = None,
                        3 => {
                            if let Some(n) = nodes[i].as_mut() {
                                n.leaving = true;
                            }
                        }
                        4..=5 => {
                            if let Some(n) = nodes[i].as_mut() {
                                n.drained = !n.drained;
                            }
                        }
                        _ => {}
                    }
                }
                for (i, slot) in nodes.iter_mut().enumerate() {
                    let Some(n) = slot else { continue };
                    if n.leaving && n.leases.iter().all(Lease::drained) {
                        // Stopped: its presence key deleted, seen by the others.
                        presence_seq += 1;
                        for o in 0..4 {
                            beats.push((t + ms(rand(300)), o, n.name, presence_seq, None));
                        }
                        *slot = None;
                        continue;
                    }
                    if t >= n.next_beat {
                        n.next_beat = t + LEASE / 3;
                        presence_seq += 1;
                        let record = PresenceRecord {
                            lease_ms: LEASE.as_millis() as u64,
                            draining: n.drained || n.leaving,
                            run: None,
                        };
                        for o in (0..4).filter(|o| *o != i) {
                            if !chaos || rand(10) != 0 {
                                let delay = if chaos { rand(1000) } else { rand(100) };
                                beats.push((
                                    t + ms(delay),
                                    o,
                                    n.name,
                                    presence_seq,
                                    Some(record.clone()),
                                ));
                            }
                        }
                    }
                    for (k, op) in n.share(t, settle).into_iter().enumerate() {
                        let Some(op) = op else { continue };
                        if chaos && rand(20) == 0 {
                            to_node.push((t + ms(1000), i, n.incarnation, k, lost(&op)));
                        } else {
                            let delay = if chaos { rand(300) } else { rand(30) };
                            to_kv.push((t + ms(delay), i, n.incarnation, k, op));
                        }
                    }
                }
                for (k, last) in last_owner.iter_mut().enumerate() {
                    let acting: Vec<usize> = (0..4)
                        .filter(|i| nodes[*i].as_ref().is_some_and(|n| n.leases[k].acting(t)))
                        .collect();
                    assert!(
                        acting.len() <= 1,
                        "run {run}: two owners of {k}: {acting:?}"
                    );
                    if let Some(&i) = acting.first() {
                        if last.is_some_and(|o| o != i) {
                            handovers += 1;
                            if !chaos {
                                rebalanced += 1;
                            }
                        }
                        *last = Some(i);
                    }
                }
            }
            // After the quiet time: one owner per key, and the counts within one.
            let mut counts: Vec<(&str, usize)> = nodes
                .iter()
                .flatten()
                .filter(|n| !n.leaving)
                .map(|n| (n.name, n.leases.iter().filter(|l| l.acting(t)).count()))
                .collect();
            counts.sort();
            let owners: Vec<usize> = (0..keys)
                .map(|k| {
                    nodes
                        .iter()
                        .flatten()
                        .filter(|n| n.leases[k].acting(t))
                        .count()
                })
                .collect();
            assert!(
                owners.iter().all(|o| *o == 1),
                "run {run}: owners per key {owners:?} (nodes {counts:?})"
            );
            let max = counts.iter().map(|c| c.1).max().unwrap_or(0);
            let min = counts.iter().map(|c| c.1).min().unwrap_or(0);
            assert!(
                max - min <= 1,
                "run {run}: {keys} keys unbalanced: {counts:?}"
            );
        }
        println!("{handovers} moves, {rebalanced} in quiet times");
        assert!(handovers > 100, "the runs move leases ({handovers})");
        assert!(rebalanced > 0, "the quiet time rebalances ({rebalanced})");
    }

    /// A seeded xorshift: `rand(n)` in `0..n`, the same runs every time.
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    fn lost(op: &Op) -> Reply {
        match op {
            Op::Read => Reply::ReadFailed,
            _ => Reply::Write(Err(WriteError::Unknown)),
        }
    }
}
