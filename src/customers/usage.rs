//! This site's usage, accumulated from hub events (sans-IO: events and the time in, the
//! commits' rows out). Online time runs from a party's first `party.joined` to the
//! `party.left` that leaves it in no group; sent messages are counted for the `message.text`
//! sender, received ones for every other member of the group at that moment; groups are the
//! PTT channels seen, with their present members and channel messages. Counts are cumulative
//! since the bridge started, so a commit that failed loses nothing: the next one carries it.
//!
//! Invariant (tested below): a user's online time is the sum of its closed online spans plus
//! the open one up to `now`, whatever order the groups are joined and left in.

use std::collections::{BTreeMap, BTreeSet};

use crate::events::state::user_id;
use crate::hub::{Event, EventKind, Party, Side};

use super::{GroupCommit, UserCommit};

/// Most users tracked (new ones past this are not counted; a site has far fewer).
pub const MAX_USERS: usize = 100_000;
/// Most groups tracked.
pub const MAX_GROUPS: usize = 10_000;

/// The client type online time is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// `andtimes`.
    Android,
    /// `pctimes`.
    Pc,
    /// `iostimes`.
    Ios,
}

/// How a party's online time is classified: PTT terminals are Android (the Totalk terminals
/// are), consoles and meeting clients (browsers, the console page) are PC. Nothing on the wire
/// says iOS yet; a later source (the admin directory's user properties) can.
pub fn classify(party: &Party) -> ClientKind {
    match party.side {
        Side::Ptt => ClientKind::Android,
        Side::Console | Side::Meeting => ClientKind::Pc,
    }
}

#[derive(Debug, Clone)]
struct UserUsage {
    nickname: String,
    kind: ClientKind,
    /// Closed online time, ms.
    online_ms: i64,
    /// Groups the user is in now.
    groups: BTreeSet<String>,
    /// When the open online span began.
    since_ms: Option<i64>,
    fmsgs: i64,
    tmsgs: i64,
}

#[derive(Debug, Clone)]
struct GroupUsage {
    name: String,
    members: BTreeSet<String>,
    msgs: i64,
    first_seen_ms: i64,
}

/// The accumulated usage.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    users: BTreeMap<String, UserUsage>,
    groups: BTreeMap<String, GroupUsage>,
    /// Times the set of known users grew (`updatetimes`).
    updates: i64,
}

/// A PTT channel's name from its group id (`ptt:<server>:<channel path>`); other sides' groups
/// are no channels.
fn channel_name(group_id: &str) -> Option<&str> {
    let rest = group_id.strip_prefix("ptt:")?;
    let (_, name) = rest.split_once(':')?;
    Some(if name.is_empty() { "(root)" } else { name })
}

impl Usage {
    /// Takes in one hub event.
    pub fn apply(&mut self, ev: &Event) {
        let t = ev.time_ms as i64;
        match (ev.kind, &ev.party) {
            (EventKind::PartyJoined, Some(p)) => {
                let Some(u) = self.user(p) else { return };
                if u.groups.is_empty() {
                    u.since_ms = Some(t);
                }
                u.groups.insert(ev.group_id.clone());
                let uid = user_id(p);
                if let Some(g) = self.group(&ev.group_id, t) {
                    g.members.insert(uid);
                }
            }
            (EventKind::PartyLeft, Some(p)) => {
                let uid = user_id(p);
                if let Some(u) = self.users.get_mut(&uid) {
                    u.groups.remove(&ev.group_id);
                    if u.groups.is_empty()
                        && let Some(since) = u.since_ms.take()
                    {
                        u.online_ms += (t - since).max(0);
                    }
                }
                if let Some(g) = self.groups.get_mut(&ev.group_id) {
                    g.members.remove(&uid);
                }
            }
            (EventKind::MessageText, Some(p)) => {
                let sender = user_id(p);
                if let Some(u) = self.user(p) {
                    u.fmsgs += 1;
                }
                // A private message went to a bridge account, nobody counted here.
                if ev.detail.get("private").and_then(|v| v.as_bool()) == Some(true) {
                    return;
                }
                let Some(g) = self.group(&ev.group_id, t) else {
                    return;
                };
                g.msgs += 1;
                let receivers: Vec<String> = g
                    .members
                    .iter()
                    .filter(|m| **m != sender)
                    .cloned()
                    .collect();
                for r in receivers {
                    if let Some(u) = self.users.get_mut(&r) {
                        u.tmsgs += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn user(&mut self, p: &Party) -> Option<&mut UserUsage> {
        let uid = user_id(p);
        if !self.users.contains_key(&uid) {
            if self.users.len() >= MAX_USERS {
                return None;
            }
            self.updates += 1;
        }
        let u = self.users.entry(uid).or_insert_with(|| UserUsage {
            nickname: String::new(),
            kind: classify(p),
            online_ms: 0,
            groups: BTreeSet::new(),
            since_ms: None,
            fmsgs: 0,
            tmsgs: 0,
        });
        if !p.name.is_empty() {
            u.nickname.clone_from(&p.name);
        }
        Some(u)
    }

    /// The PTT channel `group_id` (created on first sight); `None` for other sides' groups.
    fn group(&mut self, group_id: &str, t: i64) -> Option<&mut GroupUsage> {
        let name = channel_name(group_id)?;
        if !self.groups.contains_key(group_id) && self.groups.len() >= MAX_GROUPS {
            return None;
        }
        Some(
            self.groups
                .entry(group_id.to_owned())
                .or_insert_with(|| GroupUsage {
                    name: name.to_owned(),
                    members: BTreeSet::new(),
                    msgs: 0,
                    first_seen_ms: t,
                }),
        )
    }

    /// Users known (the server commit's `count`).
    pub fn user_count(&self) -> i64 {
        self.users.len() as i64
    }

    /// Times the set of known users grew (the server commit's `updatetimes`).
    pub fn updates(&self) -> i64 {
        self.updates
    }

    /// Users online now.
    pub fn online(&self) -> usize {
        self.users.values().filter(|u| u.since_ms.is_some()).count()
    }

    /// Every user's row as of `now_ms` (seconds of online time), by uuid.
    pub fn users(&self, code: &str, now_ms: i64) -> Vec<UserCommit> {
        self.users
            .iter()
            .map(|(uuid, u)| {
                let ms = u.online_ms + u.since_ms.map_or(0, |s| (now_ms - s).max(0));
                let secs = ms / 1000;
                let by = |k| if u.kind == k { secs } else { 0 };
                UserCommit {
                    code: code.to_owned(),
                    uuid: uuid.clone(),
                    nickname: u.nickname.clone(),
                    onlinetime: secs,
                    andtimes: by(ClientKind::Android),
                    pctimes: by(ClientKind::Pc),
                    iostimes: by(ClientKind::Ios),
                    fmsgs: u.fmsgs,
                    tmsgs: u.tmsgs,
                }
            })
            .collect()
    }

    /// Every PTT channel's row, by group id.
    pub fn groups(&self, code: &str) -> Vec<GroupCommit> {
        self.groups
            .iter()
            .map(|(gid, g)| GroupCommit {
                code: code.to_owned(),
                gid: gid.clone(),
                name: g.name.chars().take(super::params::MAX_TEXT).collect(),
                createrid: String::new(),
                creatername: String::new(),
                ucount: g.members.len() as i64,
                msgcount: g.msgs,
                ctime: crate::events::rfc3339::format_ms(g.first_seen_ms)
                    .chars()
                    .take(10)
                    .collect(),
                fcount: 0,
                ncount: 0,
            })
            .collect()
    }
}

/// The users this site commits: those seen in presence and text events. The one place a later
/// source (the Totalk admin directory: offline users, names) adds its users.
pub fn site_users(usage: &Usage, code: &str, now_ms: i64) -> Vec<UserCommit> {
    usage.users(code, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: EventKind, group: &str, who: &str, t: u64, detail: serde_json::Value) -> Event {
        Event {
            app_id: "default".into(),
            version: 0,
            time_ms: t,
            kind,
            group_id: group.into(),
            party: Some(Party {
                side: Side::Ptt,
                id: who.into(),
                name: format!("n{who}"),
            }),
            detail,
        }
    }

    const N: &str = "ptt:local:North";
    const S: &str = "ptt:local:South";

    #[test]
    fn online_time_spans_moves_and_counts_messages() {
        let mut u = Usage::default();
        use EventKind::*;
        u.apply(&ev(PartyJoined, N, "1", 1_000, json!(null)));
        u.apply(&ev(PartyJoined, N, "2", 2_000, json!(null)));
        // A move: left then joined; the online span goes on.
        u.apply(&ev(PartyLeft, N, "1", 5_000, json!({"moved": true})));
        u.apply(&ev(PartyJoined, S, "1", 5_000, json!({"moved": true})));
        u.apply(&ev(PartyJoined, N, "1", 6_000, json!(null)));
        u.apply(&ev(
            MessageText,
            N,
            "1",
            7_000,
            json!({"text": "hi", "private": false}),
        ));
        u.apply(&ev(
            MessageText,
            N,
            "2",
            7_500,
            json!({"text": "yo", "private": false}),
        ));
        u.apply(&ev(
            MessageText,
            N,
            "2",
            7_600,
            json!({"text": "p", "private": true}),
        ));
        u.apply(&ev(PartyLeft, S, "1", 8_000, json!(null)));
        u.apply(&ev(PartyLeft, N, "1", 11_000, json!(null)));
        u.apply(&ev(PartyLeft, N, "2", 12_000, json!(null)));
        u.apply(&ev(PartyJoined, N, "1", 20_000, json!(null)));
        let users = site_users(&u, "c", 23_000);
        let one = &users[0];
        assert_eq!(one.uuid, "ptt:1");
        assert_eq!((one.onlinetime, one.andtimes, one.pctimes), (13, 13, 0));
        assert_eq!((one.fmsgs, one.tmsgs), (1, 1));
        let two = &users[1];
        assert_eq!((two.onlinetime, two.fmsgs, two.tmsgs), (10, 2, 1));
        let groups = u.groups("c");
        assert_eq!(groups.len(), 2);
        let north = &groups[0];
        assert_eq!(
            (north.name.as_str(), north.ucount, north.msgcount),
            ("North", 1, 2)
        );
        assert_eq!(north.ctime, "1970-01-01");
        assert_eq!((u.user_count(), u.updates(), u.online()), (2, 2, 1));
    }

    #[test]
    fn other_sides_are_users_but_not_groups() {
        let mut u = Usage::default();
        let mut e = ev(EventKind::PartyJoined, "meeting:599", "m1", 0, json!(null));
        e.party.as_mut().unwrap().side = Side::Meeting;
        u.apply(&e);
        assert!(u.groups("c").is_empty());
        let users = u.users("c", 4_000);
        assert_eq!((users[0].pctimes, users[0].andtimes), (4, 0));
    }
}
