//! Whose word each presence in the shared event state rests on, so that what a node reported
//! does not outlive it (sans-IO, part of the event log's rules in [`super::log`]).
//!
//! Every node's events build one state (groups and their members, parties online). A node that
//! dies (`kill -9`) never says that its meeting participants, console parties or PTT users left:
//! without more, every node's state — and so every EGW full sync — would show them for ever. So
//! the log remembers, for each member of a group and each party online, the **run** (origin:
//! `<node>/<boot id>`) whose entry put it there last, and a run's presences end when the run is
//! over:
//! - at the first entry of a **new run of the same node** (the node restarted), before that entry
//!   is applied;
//! - at a [`super::log::Control::RunOver`] written by a live node when the dead node's presence
//!   key lapsed (it is not coming back soon).
//!
//! Ending a run hands out, in key order, a `party.left` for each member still on its word and a
//! `side.disconnected` for each party online on its word, numbered like any entry (the same on
//! every node: they follow from the stream's content). What another run has reported since (a
//! PTT account taken over: the new holder reports the users still there) rests on that run's
//! word and stays. An entry of a run already over is applied — it happened — and then:
//! - when its node has a newer run (the entry was held behind a gap and released late), what it
//!   reported ends right after it;
//! - otherwise the run was not dead but cut off from NATS for two leases, and goes on: what it
//!   reports from now on shows again (what it reported before and has not changed since stays
//!   ended — docs/cluster.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::entry::LogEntry;
use crate::events::state::user_id;
use crate::hub::{EventKind, Party};

/// One presence: the run whose word it rests on, and the party as that run last named it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Word {
    run: String,
    party: Party,
}

/// Runs remembered as over (the oldest forgotten first).
const MAX_ENDED: usize = 1024;

/// The runs behind the shared state's presences (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runs {
    /// Node id → the origin of its latest run seen.
    latest: BTreeMap<String, String>,
    /// Runs over → when (a count of runs ended: the oldest is forgotten first).
    #[serde(default)]
    ended: BTreeMap<String, u64>,
    /// App → group → user id → whose word.
    members: BTreeMap<String, BTreeMap<String, BTreeMap<String, Word>>>,
    /// App → user id → whose word (online outside a group).
    online: BTreeMap<String, BTreeMap<String, Word>>,
}

/// The node of origin `<node>/<boot id>`.
fn node_of(origin: &str) -> &str {
    origin.rsplit_once('/').map_or(origin, |(node, _)| node)
}

impl Runs {
    /// Hands `entry` to `apply` with what its run's story requires around it: first, when it is
    /// the first of a new run of its node, the previous run's leavings (made in `entry`'s name
    /// and at its time); after it, when its run is already over, what it reported ends again.
    pub fn apply(&mut self, entry: LogEntry, apply: &mut impl FnMut(LogEntry)) {
        // The common case: an entry of its node's current run (never one that is over).
        let node = node_of(&entry.origin);
        let over = self.latest.get(node) != Some(&entry.origin) && self.first_of_run(&entry, apply);
        self.note(&entry);
        if !over {
            apply(entry);
            return;
        }
        let (run, time_ms) = (entry.origin.clone(), entry.time_ms);
        apply(entry);
        for e in self.over(&run, &run, time_ms) {
            apply(e);
        }
    }

    /// `entry` is not of its node's current run: its node restarted (the previous run ends
    /// first), the run was cut off and comes back, or it is a late entry of a run that is over
    /// (true: what it reports ends right after it).
    fn first_of_run(&mut self, entry: &LogEntry, apply: &mut impl FnMut(LogEntry)) -> bool {
        let (run, node) = (&entry.origin, node_of(&entry.origin));
        if self.ended.contains_key(run) {
            if self.latest.contains_key(node) {
                return true;
            }
            self.ended.remove(run);
        }
        if let Some(previous) = self.latest.insert(node.to_string(), run.clone()) {
            for e in self.over(&previous, run, entry.time_ms) {
                apply(e);
            }
        }
        false
    }

    /// Notes what applied `entry` changed.
    fn note(&mut self, entry: &LogEntry) {
        let Some(party) = &entry.party else { return };
        let uid = user_id(party);
        let word = || Word {
            run: entry.origin.clone(),
            party: party.clone(),
        };
        let app = entry.app_id.as_str();
        match entry.kind {
            EventKind::PartyJoined => {
                self.members
                    .entry(app.to_string())
                    .or_default()
                    .entry(entry.group_id.clone())
                    .or_default()
                    .insert(uid, word());
            }
            EventKind::TalkStarted => {
                // A talker the state did not have becomes a member (as in the state's rules).
                self.members
                    .entry(app.to_string())
                    .or_default()
                    .entry(entry.group_id.clone())
                    .or_default()
                    .entry(uid)
                    .or_insert_with(word);
            }
            EventKind::PartyLeft => {
                if let Some(groups) = self.members.get_mut(app) {
                    if let Some(members) = groups.get_mut(&entry.group_id) {
                        members.remove(&uid);
                        if members.is_empty() {
                            groups.remove(&entry.group_id);
                        }
                    }
                    if groups.is_empty() {
                        self.members.remove(app);
                    }
                }
            }
            EventKind::SideConnected => {
                self.online
                    .entry(app.to_string())
                    .or_default()
                    .insert(uid, word());
            }
            EventKind::SideDisconnected => {
                if let Some(online) = self.online.get_mut(app) {
                    online.remove(&uid);
                    if online.is_empty() {
                        self.online.remove(app);
                    }
                }
            }
            _ => {}
        }
    }

    /// Run `run` is over: what rests on its word ends — the entries to apply, in key order, in
    /// the name of `by` (the origin that ended it) at `time_ms`. Forgets them.
    pub fn over(&mut self, run: &str, by: &str, time_ms: u64) -> Vec<LogEntry> {
        let made = |app: &str, kind, group: &str, word: &Word, detail| LogEntry {
            origin: by.to_string(),
            seq: 0,
            time_ms,
            app_id: app.to_string(),
            kind,
            group_id: group.to_string(),
            party: Some(word.party.clone()),
            detail,
        };
        let why = || serde_json::json!({ "reason": "node gone", "node": node_of(run) });
        let mut out = Vec::new();
        for (app, groups) in &self.members {
            for (group, members) in groups {
                for word in members.values().filter(|w| w.run == run) {
                    out.push(made(app, EventKind::PartyLeft, group, word, why()));
                }
            }
        }
        for (app, online) in &self.online {
            for word in online.values().filter(|w| w.run == run) {
                out.push(made(app, EventKind::SideDisconnected, "", word, why()));
            }
        }
        for e in &out {
            self.note(e);
        }
        if self.latest.get(node_of(run)).is_some_and(|r| r == run) {
            self.latest.remove(node_of(run));
        }
        if !self.ended.contains_key(run) {
            let count = self.ended.values().max().map_or(0, |c| c + 1);
            if self.ended.len() >= MAX_ENDED
                && let Some(oldest) = self
                    .ended
                    .iter()
                    .min_by_key(|(_, c)| **c)
                    .map(|(r, _)| r.clone())
            {
                self.ended.remove(&oldest);
            }
            self.ended.insert(run.to_string(), count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Side;
    use crate::hub::bus::Stamped;
    use crate::hub::event::Draft;

    fn entry(origin: &str, kind: EventKind, group: &str, who: &str) -> LogEntry {
        let draft = Draft::new("app", kind, group).party(Party {
            side: Side::Meeting,
            id: who.into(),
            name: who.into(),
        });
        LogEntry::new(
            origin,
            Stamped {
                seq: 1,
                time_ms: 7,
                draft,
            },
        )
    }

    fn said(out: &[LogEntry]) -> Vec<String> {
        out.iter()
            .map(|e| {
                let who = e.party.as_ref().map(|p| p.id.clone()).unwrap_or_default();
                format!("{} {} {who} by {}", e.kind.as_str(), e.group_id, e.origin)
            })
            .collect()
    }

    /// What `e` brought besides itself.
    fn feed(runs: &mut Runs, e: LogEntry) -> Vec<String> {
        let mut out = Vec::new();
        let own = e.clone();
        runs.apply(e, &mut |x| {
            if x != own {
                out.push(x)
            }
        });
        said(&out)
    }

    #[test]
    fn a_restarted_node_ends_what_its_previous_run_reported_before_its_first_entry() {
        let mut r = Runs::default();
        feed(&mut r, entry("a/1", EventKind::PartyJoined, "g", "alice"));
        feed(&mut r, entry("a/1", EventKind::PartyJoined, "h", "bob"));
        feed(&mut r, entry("a/1", EventKind::SideConnected, "", "carol"));
        feed(&mut r, entry("a/1", EventKind::PartyLeft, "h", "bob"));
        feed(&mut r, entry("b/1", EventKind::PartyJoined, "g", "dave"));
        assert_eq!(
            feed(&mut r, entry("a/2", EventKind::PartyJoined, "g", "erin")),
            [
                "party.left g alice by a/2",
                "side.disconnected  carol by a/2"
            ],
            "bob had left; dave is b's"
        );
        assert_eq!(
            feed(&mut r, entry("a/2", EventKind::PartyJoined, "g", "fay")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_run_over_ends_only_what_still_rests_on_its_word() {
        let mut r = Runs::default();
        feed(
            &mut r,
            entry("a/1", EventKind::PartyJoined, "ptt:s:North", "u1"),
        );
        feed(
            &mut r,
            entry("a/1", EventKind::PartyJoined, "ptt:s:North", "u2"),
        );
        feed(
            &mut r,
            entry("a/1", EventKind::TalkStarted, "ptt:s:North", "u3"),
        );
        // b took the account over and reported u2 as still there.
        feed(
            &mut r,
            entry("b/1", EventKind::PartyJoined, "ptt:s:North", "u2"),
        );
        let out = r.over("a/1", "c/1", 99);
        assert_eq!(
            said(&out),
            [
                "party.left ptt:s:North u1 by c/1",
                "party.left ptt:s:North u3 by c/1"
            ]
        );
        assert!(out.iter().all(|e| e.time_ms == 99));
        assert_eq!(out[0].detail["node"], "a");
        assert!(
            r.over("a/1", "c/1", 100).is_empty(),
            "a second one: nothing left"
        );
        // a/1 was cut off, not dead: it goes on.
        assert_eq!(
            feed(&mut r, entry("a/1", EventKind::PartyJoined, "g", "back")),
            Vec::<String>::new()
        );
        assert_eq!(
            said(&r.over("a/1", "c/1", 101)),
            ["party.left g back by c/1"]
        );
        // a's next run is a new run, not a restart of an ended one.
        assert_eq!(
            feed(&mut r, entry("a/2", EventKind::PartyJoined, "g", "x")),
            Vec::<String>::new()
        );
        // An entry of a/1 released late, after a/2 began: applied, and ended again at once.
        assert_eq!(
            feed(&mut r, entry("a/1", EventKind::PartyJoined, "g", "late")),
            ["party.left g late by a/1"]
        );
        assert_eq!(
            feed(&mut r, entry("a/2", EventKind::PartyJoined, "g", "y")),
            Vec::<String>::new(),
            "a/2 goes on"
        );
    }

    #[test]
    fn it_round_trips_as_json() {
        let mut r = Runs::default();
        feed(&mut r, entry("a/1", EventKind::PartyJoined, "g", "alice"));
        feed(&mut r, entry("a/1", EventKind::SideConnected, "", "carol"));
        let back: Runs = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
