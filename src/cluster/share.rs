//! Sharing leases out among the live nodes, sans-IO: which nodes are live (their presence keys,
//! timed by this node's own clock, as [`Lease`](super::lease::Lease) times leases), each node's
//! fair share, how long a node waits before claiming a free or lapsed lease, and when it hands
//! one of its own over so that a node that joined later gets its part. Pure functions of counts
//! and times; the driver (`node.rs`) and the simulation in `lease.rs` use the same ones.
//!
//! Rules, for `n` live nodes (not draining) and `N` resources:
//! - **Fair share** `ceil(N / n)`.
//! - **Claim:** a node claims a free (or lapsed) lease at once while it holds fewer than its
//!   share; otherwise only `lease / 2` later, so an account never stays unowned when the node
//!   under its share is busy, gone or not seen yet.
//! - **Rebalance:** once every lease is held by a live node, the most loaded one (ties: the
//!   lowest id) hands one lease over while it holds at least two more than a node that has been
//!   live for the settle time. Then the
//!   least loaded node is under its share (`N` leases among `n` nodes, all at or above
//!   `ceil(N/n)` would be more than `N`), so it claims the released lease at once; the others
//!   wait `lease / 2`. Each hand-over lowers the spread, so the counts end within one of each
//!   other. (Being above the share implies holding two more than someone: the "extras" of the
//!   issue's rule; holding two more than someone also covers 4 leases on 3 nodes, where 2-2-0
//!   keeps everyone at or under `ceil(4/3) = 2`.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Prefix of the presence keys in the lease bucket: `node.<node_id>`.
pub const PRESENCE_PREFIX: &str = "node.";

/// The presence key of `node` (node ids are letters, digits, `-` and `_`: valid key tokens).
pub fn presence_key(node: &str) -> String {
    format!("{PRESENCE_PREFIX}{node}")
}

/// Most nodes remembered; presence keys beyond it (a bucket filled by something else) are
/// ignored once no remembered node has lapsed.
pub const MAX_NODES: usize = 256;

/// The value of a presence key, rewritten every third of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// The node's lease time: it counts as live this long after an observer saw a new
    /// revision (the longer of this and the observer's own).
    pub lease_ms: u64,
    /// Draining (an operator's drain, a stop): takes no lease, so it gets no share.
    #[serde(default)]
    pub draining: bool,
    /// The node's run of the event log (`<node>/<boot id>`), ended by the others when the node
    /// is gone ([`super::runs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// The fair share of `resources` among `live` nodes: `ceil(resources / live)`.
pub fn fair_share(resources: usize, live: usize) -> usize {
    resources.div_ceil(live.max(1))
}

/// The extra wait before claiming a free or lapsed lease: none while the node holds fewer than
/// its share, else half a lease.
pub fn claim_delay(held: usize, share: usize, lease: Duration) -> Duration {
    if held < share {
        Duration::ZERO
    } else {
        lease / 2
    }
}

/// Who holds one lease, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This node (written or being claimed).
    Me,
    /// Another node.
    Other(String),
    /// Nobody known (free, unknown, unreadable).
    Nobody,
}

/// A live node other than this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub node: String,
    /// Since when it has been live without a break, by this node's clock.
    pub since: Instant,
    /// Its presence says it is draining.
    pub draining: bool,
}

/// What this node knows of the others' presence keys.
#[derive(Debug, Clone)]
pub struct Presence {
    me: String,
    lease: Duration,
    nodes: BTreeMap<String, Seen>,
    /// Runs of nodes that deleted their key, not reported yet by [`Presence::runs_over`].
    left: Vec<String>,
}

#[derive(Debug, Clone)]
struct Seen {
    revision: u64,
    seen: Instant,
    since: Instant,
    lease: Duration,
    draining: bool,
    /// Let a lease lapse at this revision of its presence: not live until a newer one.
    lapsed: Option<u64>,
    /// Its event-log run, and whether [`Presence::runs_over`] reported it.
    run: Option<String>,
    run_reported: bool,
}

impl Seen {
    fn live(&self, now: Instant) -> bool {
        now < self.seen + self.lease && self.lapsed != Some(self.revision)
    }
}

impl Presence {
    /// Node `me` (its own key is ignored: it knows whether it is live) with lease `lease`.
    pub fn new(me: impl Into<String>, lease: Duration) -> Self {
        Self {
            me: me.into(),
            lease,
            nodes: BTreeMap::new(),
            left: Vec::new(),
        }
    }

    /// A presence key was written (`Some`) or deleted (`None`: the node left) at `revision`,
    /// seen now. Only a newer revision refreshes a node (a re-delivered entry is old news).
    pub fn on_entry(
        &mut self,
        node: &str,
        revision: u64,
        record: Option<&PresenceRecord>,
        now: Instant,
    ) {
        if node == self.me {
            return;
        }
        let Some(record) = record else {
            if let Some(s) = self.nodes.remove(node)
                && let Some(run) = s.run
                && !s.run_reported
                && self.left.len() < MAX_NODES
            {
                self.left.push(run);
            }
            return;
        };
        let lease = self.lease.max(Duration::from_millis(record.lease_ms));
        if let Some(s) = self.nodes.get_mut(node) {
            if revision <= s.revision {
                return;
            }
            if !s.live(now) {
                s.since = now;
            }
            s.revision = revision;
            s.seen = now;
            s.lapsed = None;
            s.lease = lease;
            s.draining = record.draining;
            if s.run != record.run {
                s.run = record.run.clone();
                s.run_reported = false;
            }
            return;
        }
        if self.nodes.len() >= MAX_NODES {
            self.nodes.retain(|_, s| s.live(now));
            if self.nodes.len() >= MAX_NODES {
                return;
            }
        }
        self.nodes.insert(
            node.to_owned(),
            Seen {
                revision,
                seen: now,
                since: now,
                lease,
                draining: record.draining,
                lapsed: None,
                run: record.run.clone(),
                run_reported: false,
            },
        );
    }

    /// The event-log runs of nodes gone since the last call, each once: a node that deleted its
    /// key (it stopped), or whose key was not rewritten for two of its leases while this node
    /// saw the bucket (`watching`: its watch delivered entries lately — a node cut off from
    /// NATS must not end everybody else's runs).
    pub fn runs_over(&mut self, now: Instant, watching: bool) -> Vec<String> {
        let mut over = std::mem::take(&mut self.left);
        if watching {
            for s in self.nodes.values_mut() {
                if !s.run_reported && now >= s.seen + 2 * s.lease {
                    s.run_reported = true;
                    over.extend(s.run.clone());
                }
            }
        }
        over
    }

    /// `node` let a lease lapse (it stopped renewing for a whole lease, as this node times it):
    /// it is not live until its presence key is written again — a dead node's key lasts about
    /// as long as its leases, and meanwhile it must neither count for the share nor be handed
    /// leases.
    pub fn lapsed(&mut self, node: &str) {
        if let Some(s) = self.nodes.get_mut(node) {
            s.lapsed = Some(s.revision);
        }
    }

    /// The other nodes live now, by id.
    pub fn live(&self, now: Instant) -> Vec<Member> {
        self.nodes
            .iter()
            .filter(|(_, s)| s.live(now))
            .map(|(node, s)| Member {
                node: node.clone(),
                since: s.since,
                draining: s.draining,
            })
            .collect()
    }
}

/// One node's load: the leases it holds, as this node sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// The node.
    pub node: String,
    /// Leases it holds.
    pub held: usize,
    /// Live for at least the settle time (only such a node is handed leases).
    pub settled: bool,
}

/// What this node makes of its view of every lease and of the live nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlook {
    /// This node.
    pub me: String,
    /// Leases in the view.
    pub resources: usize,
    /// Live nodes that take leases (this one included unless it is draining).
    pub live: usize,
    /// `ceil(resources / live)`.
    pub share: usize,
    /// Every live node's load, this node's first.
    pub loads: Vec<Load>,
}

impl Outlook {
    /// From the holder of each lease and the live nodes (`members`, from [`Presence::live`]);
    /// a node counts as settled once live for `settle`. Leases of nodes that are not live are
    /// counted for nobody (they are about to lapse).
    pub fn new(
        me: &str,
        draining: bool,
        holders: &[Holder],
        members: &[Member],
        settle: Duration,
        now: Instant,
    ) -> Self {
        let mut loads: Vec<Load> = Vec::with_capacity(members.len() + 1);
        if !draining {
            loads.push(Load {
                node: me.to_owned(),
                held: 0,
                settled: true,
            });
        }
        loads.extend(members.iter().filter(|m| !m.draining).map(|m| Load {
            node: m.node.clone(),
            held: 0,
            settled: now.saturating_duration_since(m.since) >= settle,
        }));
        for h in holders {
            let node = match h {
                Holder::Me => me,
                Holder::Other(n) => n.as_str(),
                Holder::Nobody => continue,
            };
            if let Some(l) = loads.iter_mut().find(|l| l.node == node) {
                l.held += 1;
            }
        }
        let live = loads.len().max(1);
        Self {
            me: me.to_owned(),
            resources: holders.len(),
            live,
            share: fair_share(holders.len(), live),
            loads,
        }
    }

    /// This node's load (zero when draining).
    pub fn held(&self, me: &str) -> usize {
        self.loads
            .iter()
            .find(|l| l.node == me)
            .map_or(0, |l| l.held)
    }

    /// The extra wait before this node claims a free or lapsed lease ([`claim_delay`]).
    /// `held` counts this node's leases and the claims it has in flight. `owner` is the node
    /// the lease was last seen held by: it is taken over only once it lapsed, i.e. that node
    /// stopped renewing for a whole lease, so it does not count as live here even while its
    /// presence key has not lapsed yet (else a kill would cost half a lease more).
    pub fn claim_delay(&self, held: usize, owner: Option<&str>, lease: Duration) -> Duration {
        let gone = owner.is_some_and(|o| o != self.me && self.loads.iter().any(|l| l.node == o));
        let share = fair_share(self.resources, self.live - usize::from(gone));
        claim_delay(held, share, lease)
    }

    /// Whether `me` should hand one lease over now: every lease is held by a live node, `me`
    /// is the most loaded (ties: the lowest id) and holds at least two more than a settled node.
    pub fn hand_over(&self, me: &str) -> bool {
        let Some(mine) = self.loads.iter().find(|l| l.node == me) else {
            return false;
        };
        // Only once every lease is held by a live node: a free one, or one of a node that is
        // gone or draining, goes to a node under its share first (by the claim rule).
        if self.loads.iter().map(|l| l.held).sum::<usize>() < self.resources {
            return false;
        }
        let top = self
            .loads
            .iter()
            .max_by(|a, b| a.held.cmp(&b.held).then(b.node.cmp(&a.node)));
        if top.is_none_or(|t| t.node != me) {
            return false;
        }
        self.loads
            .iter()
            .any(|l| l.settled && l.node != me && l.held + 2 <= mine.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const LEASE: Duration = Duration::from_millis(3000);

    fn rec() -> PresenceRecord {
        PresenceRecord {
            lease_ms: 3000,
            draining: false,
            run: None,
        }
    }

    #[test]
    fn the_fair_share_rounds_up_and_a_full_node_waits_half_a_lease() {
        assert_eq!(fair_share(3, 1), 3);
        assert_eq!(fair_share(3, 2), 2);
        assert_eq!(fair_share(3, 3), 1);
        assert_eq!(fair_share(4, 3), 2);
        assert_eq!(fair_share(2, 3), 1);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(5, 0), 5, "no live node counts as this one");
        assert_eq!(claim_delay(0, 1, LEASE), Duration::ZERO);
        assert_eq!(claim_delay(1, 2, LEASE), Duration::ZERO);
        assert_eq!(claim_delay(2, 2, LEASE), ms(1500));
        assert_eq!(claim_delay(3, 2, LEASE), ms(1500));
    }

    #[test]
    fn a_node_is_live_for_a_lease_after_a_new_revision_by_the_observers_clock() {
        let t0 = Instant::now();
        let mut p = Presence::new("a", LEASE);
        p.on_entry("a", 1, Some(&rec()), t0);
        assert!(p.live(t0).is_empty(), "its own key is not a member");
        p.on_entry("b", 5, Some(&rec()), t0);
        assert_eq!(p.live(t0 + ms(2999))[0].node, "b");
        // The same revision delivered again refreshes nothing.
        p.on_entry("b", 5, Some(&rec()), t0 + ms(2000));
        assert!(p.live(t0 + ms(3000)).is_empty(), "lapsed");
        // Back after a lapse: live again, its settle time starting over.
        p.on_entry("b", 9, Some(&rec()), t0 + ms(4000));
        assert_eq!(p.live(t0 + ms(4000))[0].since, t0 + ms(4000));
        // A renewal in time keeps `since`.
        p.on_entry("b", 10, Some(&rec()), t0 + ms(5000));
        assert_eq!(p.live(t0 + ms(7500))[0].since, t0 + ms(4000));
        // A longer lease of its own is honoured; a deleted key is gone at once.
        let long = PresenceRecord {
            lease_ms: 10_000,
            draining: true,
            run: None,
        };
        p.on_entry("c", 1, Some(&long), t0);
        assert!(
            p.live(t0 + ms(9000))
                .iter()
                .any(|m| m.node == "c" && m.draining)
        );
        p.on_entry("c", 2, None, t0 + ms(9000));
        assert!(!p.live(t0 + ms(9000)).iter().any(|m| m.node == "c"));
        // A node that let a lease lapse is not live until its key is written again, and then
        // as a newcomer (its settle time starting over).
        p.lapsed("b");
        assert!(p.live(t0 + ms(5100)).is_empty());
        p.on_entry("b", 10, Some(&rec()), t0 + ms(5200));
        assert!(p.live(t0 + ms(5200)).is_empty(), "not a newer revision");
        p.on_entry("b", 11, Some(&rec()), t0 + ms(5300));
        assert_eq!(p.live(t0 + ms(5300))[0].since, t0 + ms(5300));
    }

    #[test]
    fn presence_is_bounded_and_forgets_lapsed_nodes_first() {
        let t0 = Instant::now();
        let mut p = Presence::new("me", LEASE);
        for i in 0..MAX_NODES {
            p.on_entry(&format!("n{i}"), 1, Some(&rec()), t0);
        }
        p.on_entry("late", 1, Some(&rec()), t0 + ms(100));
        assert_eq!(p.live(t0 + ms(100)).len(), MAX_NODES, "full: ignored");
        p.on_entry("late", 2, Some(&rec()), t0 + ms(3100));
        assert_eq!(p.live(t0 + ms(3100)).len(), 1, "the lapsed ones made room");
    }

    fn member(node: &str, since: Instant) -> Member {
        Member {
            node: node.into(),
            since,
            draining: false,
        }
    }

    /// `n` leases held by `who`, as `me` sees them.
    fn by(n: usize, who: &str, me: &str) -> Vec<Holder> {
        let h = if who == me {
            Holder::Me
        } else {
            Holder::Other(who.into())
        };
        vec![h; n]
    }

    #[test]
    fn a_node_holding_everything_hands_over_to_a_settled_newcomer_only() {
        let t0 = Instant::now();
        let settle = ms(5000);
        let holders = by(3, "z", "z");
        let joined = [member("b", t0)];
        let o = Outlook::new("z", false, &holders, &joined, settle, t0 + ms(4999));
        assert_eq!((o.live, o.share, o.held("z")), (2, 2, 3));
        assert!(!o.hand_over("z"), "b has not been live for the settle time");
        let o = Outlook::new("z", false, &holders, &joined, settle, t0 + settle);
        assert!(o.hand_over("z"));
        // b's view: it holds nothing, under its share: claims at once.
        let from_b = Outlook::new("b", false, &by(3, "z", "b"), &[member("z", t0)], settle, t0);
        assert_eq!(
            from_b.claim_delay(from_b.held("b"), None, LEASE),
            Duration::ZERO
        );
        // z, once at its share, waits half a lease for a free one.
        let mut two = by(2, "z", "z");
        two.push(Holder::Nobody);
        let o = Outlook::new("z", false, &two, &joined, settle, t0 + settle);
        assert_eq!(o.claim_delay(o.held("z"), None, LEASE), ms(1500));
        // A lease of b's that lapsed: b is not counted, z (at ceil(3/1) = 3 then) takes it.
        assert_eq!(o.claim_delay(o.held("z"), Some("b"), LEASE), Duration::ZERO);
        assert!(
            !o.hand_over("z"),
            "2 vs 0 of 3 with one free: b claims that first"
        );
    }

    #[test]
    fn only_the_most_loaded_node_hands_over_and_only_two_above_someone() {
        let t0 = Instant::now();
        let settle = ms(1000);
        let now = t0 + settle;
        let members = [member("b", t0), member("c", t0)];
        // 2-2-0 of 4: nobody is above ceil(4/3) = 2, yet c is two below: the lowest id of the
        // two most loaded hands over.
        let holders = [by(2, "a", "a"), by(2, "b", "a")].concat();
        let o = Outlook::new("a", false, &holders, &members, settle, now);
        assert_eq!(o.share, 2);
        assert!(o.hand_over("a"));
        let from_b = Outlook::new(
            "b",
            false,
            &[by(2, "a", "b"), by(2, "b", "b")].concat(),
            &[member("a", t0), member("c", t0)],
            settle,
            now,
        );
        assert!(!from_b.hand_over("b"), "a < b: a goes first");
        // 2-1-1 of 4: balanced within one.
        let holders = [by(2, "a", "a"), by(1, "b", "a"), by(1, "c", "a")].concat();
        assert!(!Outlook::new("a", false, &holders, &members, settle, now).hand_over("a"));
    }

    #[test]
    fn draining_and_dead_nodes_get_no_share() {
        let t0 = Instant::now();
        let settle = ms(1000);
        let now = t0 + settle;
        let drained = Member {
            draining: true,
            ..member("b", t0)
        };
        let o = Outlook::new("a", false, &by(3, "a", "a"), &[drained], settle, now);
        assert_eq!((o.live, o.share), (1, 3));
        assert!(!o.hand_over("a"), "a drained node takes nothing");
        // c's leases while c is not live count for nobody.
        let holders = [by(1, "a", "a"), by(2, "c", "a")].concat();
        let o = Outlook::new("a", false, &holders, &[], settle, now);
        assert_eq!((o.share, o.held("a")), (3, 1));
        assert_eq!(o.claim_delay(1, None, LEASE), Duration::ZERO);
        // This node draining: no load of its own, and it hands nothing "over" (drain does).
        let o = Outlook::new("a", true, &by(3, "a", "a"), &[member("b", t0)], settle, now);
        assert_eq!((o.live, o.held("a")), (1, 0));
        assert!(!o.hand_over("a"));
    }
}
