//! The sans-IO directory client: one request in flight at a time, time passed in.
//!
//! A refresh is: `login` (when there is no token), every page of `getUsersInPage`, every page of
//! `getChannelsInPage`, then `getMemberRole` for each (channel, member) pair the users'
//! `joinedChannels` name. It ends in [`Event::Refreshed`] with the whole [`Directory`], or in
//! [`Event::RefreshFailed`] — never in half a directory: the caller keeps its last good copy.
//! A token the server calls invalid or timed out (405–407) is dropped and the refresh starts
//! again once after a new login; a second such answer fails it. One-off calls
//! ([`Operation`]) go before the next refresh step and get the same one re-login.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::wire::{
    self, AdminError, Channel, DataAnswer, Done, LoginAnswer, Message, NoticeTarget, Page, Request,
    User,
};

/// How the client logs in, pages, refreshes and bounds what it accepts.
#[derive(Clone)]
pub struct ClientConfig {
    /// The enterprise account (its eid, e.g. `10000`).
    pub account: String,
    /// Its password (never shown by `Debug`).
    pub password: String,
    /// Users or channels asked for per page.
    pub page_size: u32,
    /// Time from one good refresh to the next.
    pub refresh_interval: Duration,
    /// Time from a failed refresh (or login) to the next try.
    pub retry_interval: Duration,
    /// A directory with more users than this is refused whole.
    pub max_users: usize,
    /// A directory with more channels than this is refused whole.
    pub max_channels: usize,
    /// At most this many `getMemberRole` calls per refresh; members past it have no role.
    pub max_role_queries: usize,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("account", &self.account)
            .field("password", &"<redacted>")
            .field("page_size", &self.page_size)
            .field("refresh_interval", &self.refresh_interval)
            .field("retry_interval", &self.retry_interval)
            .field("max_users", &self.max_users)
            .field("max_channels", &self.max_channels)
            .field("max_role_queries", &self.max_role_queries)
            .finish()
    }
}

/// A channel member with the role `getMemberRole` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// User id.
    pub uid: i64,
    /// 0 member, 1 deputy admin, 2 admin; `None` when not read (over `max_role_queries`).
    pub role: Option<i64>,
}

/// A channel and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEntry {
    /// The channel as `getChannelsInPage` gave it.
    pub channel: Channel,
    /// Its members (from the users' `joinedChannels`), by user id.
    pub members: Vec<Member>,
}

/// Everything one refresh read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// Every user, in the server's order.
    pub users: Vec<User>,
    /// Every channel with its members.
    pub channels: Vec<ChannelEntry>,
}

/// A one-off call made for a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `pushNotice`.
    PushNotice {
        /// Who gets it.
        target: NoticeTarget,
        /// The text.
        content: String,
        /// Whether terminals speak it.
        tts: bool,
    },
    /// `getMessagesInPage`.
    Messages {
        /// Channel id.
        cid: i64,
        /// Page from 0.
        page_index: u32,
        /// Messages per page.
        page_size: u32,
        /// Oldest first instead of newest first.
        oldest_first: bool,
    },
}

/// What an [`Operation`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The notice was accepted.
    NoticeSent,
    /// A page of messages.
    Messages(Page<Message>),
}

/// Identifies an operation's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// What the client tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A login succeeded.
    LoggedIn,
    /// A refresh finished: the whole directory.
    Refreshed(Directory),
    /// A refresh (or its login) failed; the next try is after `retry_interval`.
    RefreshFailed(AdminError),
    /// An operation finished.
    Answered {
        /// Which.
        id: OpId,
        /// Its answer or why there is none.
        result: Result<Answer, AdminError>,
    },
}

/// The call in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Login,
    Users(u32),
    Channels(u32),
    Role { cid: i64, uid: i64 },
    Op(OpId),
}

/// A refresh in progress.
#[derive(Debug, Default)]
struct Build {
    /// The next call of the refresh.
    step: Option<Pending>,
    users: Vec<User>,
    channels: Vec<Channel>,
    roles: VecDeque<(i64, i64)>,
    members: BTreeMap<i64, Vec<Member>>,
    relogged: bool,
}

/// The directory client. See the module documentation.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    token: Option<String>,
    in_flight: Option<Pending>,
    build: Option<Build>,
    /// When the next refresh starts (now, at first).
    next_refresh: Instant,
    /// No login before this (after a failed one).
    login_after: Instant,
    ops: VecDeque<(OpId, Operation, bool)>,
    next_op: u64,
    events: VecDeque<Event>,
}

impl Client {
    /// A client that starts its first refresh at `now`.
    pub fn new(mut config: ClientConfig, now: Instant) -> Self {
        config.page_size = config.page_size.max(1);
        Self {
            config,
            token: None,
            in_flight: None,
            build: None,
            next_refresh: now,
            login_after: now,
            ops: VecDeque::new(),
            next_op: 0,
            events: VecDeque::new(),
        }
    }

    /// Starts a refresh as soon as the call in flight (if any) is answered.
    pub fn refresh_now(&mut self, now: Instant) {
        if self.build.is_none() {
            self.next_refresh = self.next_refresh.min(now);
            self.login_after = self.login_after.min(now);
        }
    }

    /// Queues a one-off call; its answer comes as [`Event::Answered`] with the id returned.
    pub fn submit(&mut self, op: Operation) -> OpId {
        self.next_op += 1;
        let id = OpId(self.next_op);
        self.ops.push_back((id, op, false));
        id
    }

    /// Whether a refresh is under way.
    pub fn refreshing(&self) -> bool {
        self.build.is_some()
    }

    /// The next call to send, if one is due at `now` and none is in flight.
    pub fn poll_request(&mut self, now: Instant) -> Option<Request> {
        if self.in_flight.is_some() {
            return None;
        }
        let refresh_due = self.build.is_some() || now >= self.next_refresh;
        let Some(token) = self.token.clone() else {
            if (refresh_due || !self.ops.is_empty()) && now >= self.login_after {
                self.in_flight = Some(Pending::Login);
                return Some(Request::login(&self.config.account, &self.config.password));
            }
            return None;
        };
        if let Some((id, op, _)) = self.ops.front() {
            self.in_flight = Some(Pending::Op(*id));
            return Some(op_request(&token, op));
        }
        if !refresh_due {
            return None;
        }
        let build = self.build.get_or_insert_with(|| Build {
            step: Some(Pending::Users(0)),
            ..Build::default()
        });
        let step = build.step?;
        self.in_flight = Some(step);
        let size = self.config.page_size;
        Some(match step {
            Pending::Users(i) => Request::users_page(&token, i, size),
            Pending::Channels(i) => Request::channels_page(&token, i, size),
            Pending::Role { cid, uid } => Request::member_role(&token, cid, uid),
            Pending::Login | Pending::Op(_) => unreachable!("never a refresh step"),
        })
    }

    /// When [`Client::poll_request`] next has something to send, once it has given all it had
    /// (`None` while a call is in flight: the driver bounds that with its own timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        if self.token.is_none() && (self.build.is_some() || !self.ops.is_empty()) {
            return Some(self.login_after);
        }
        Some(self.next_refresh.max(self.login_after))
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The body of the answer to the call in flight (HTTP 200).
    pub fn handle_response(&mut self, now: Instant, body: &[u8]) {
        let Some(pending) = self.in_flight.take() else {
            return;
        };
        match pending {
            Pending::Login => match wire::parse::<LoginAnswer>(body) {
                Ok(a) => {
                    self.token = Some(a.token);
                    self.events.push_back(Event::LoggedIn);
                }
                Err(e) => self.login_failed(now, e),
            },
            Pending::Op(id) => self.op_answered(id, body),
            step => {
                if let Err(e) = self.refresh_step(now, step, body) {
                    self.refresh_error(now, e);
                }
            }
        }
    }

    /// The call in flight got no usable answer (connection, timeout, HTTP status).
    pub fn handle_failure(&mut self, now: Instant, error: AdminError) {
        match self.in_flight.take() {
            None => {}
            Some(Pending::Login) => self.login_failed(now, error),
            Some(Pending::Op(id)) => self.finish_op(id, Err(error)),
            Some(_) => self.refresh_error(now, error),
        }
    }

    fn login_failed(&mut self, now: Instant, e: AdminError) {
        self.token = None;
        self.login_after = now + self.config.retry_interval;
        // Queued calls cannot be made without a login: they fail now, not after a wait.
        for (id, _, _) in std::mem::take(&mut self.ops) {
            self.events.push_back(Event::Answered {
                id,
                result: Err(e.clone()),
            });
        }
        if self.build.take().is_some() || now >= self.next_refresh {
            self.next_refresh = now + self.config.retry_interval;
            self.events.push_back(Event::RefreshFailed(e));
        }
    }

    fn refresh_error(&mut self, now: Instant, e: AdminError) {
        if e.needs_login() {
            self.token = None;
            if let Some(b) = &mut self.build
                && !b.relogged
            {
                // Start over with a fresh token: pages read with the old one may be stale.
                *b = Build {
                    step: Some(Pending::Users(0)),
                    relogged: true,
                    ..Build::default()
                };
                return;
            }
        }
        self.build = None;
        self.next_refresh = now + self.config.retry_interval;
        self.events.push_back(Event::RefreshFailed(e));
    }

    fn refresh_step(&mut self, now: Instant, step: Pending, body: &[u8]) -> Result<(), AdminError> {
        let cfg = &self.config;
        let b = self.build.as_mut().expect("a refresh step has a build");
        match step {
            Pending::Users(i) => {
                let last = take_page(&mut b.users, body, cfg.page_size, cfg.max_users, "users")?;
                b.step = Some(if last {
                    Pending::Channels(0)
                } else {
                    Pending::Users(i + 1)
                });
            }
            Pending::Channels(i) => {
                let (size, max) = (cfg.page_size, cfg.max_channels);
                if take_page(&mut b.channels, body, size, max, "channels")? {
                    plan_roles(b, cfg.max_role_queries);
                    b.step = b
                        .roles
                        .front()
                        .map(|&(cid, uid)| Pending::Role { cid, uid });
                } else {
                    b.step = Some(Pending::Channels(i + 1));
                }
            }
            Pending::Role { cid, uid } => {
                let role = wire::parse::<DataAnswer<i64>>(body)?.data;
                b.roles.pop_front();
                if let Some(m) = b
                    .members
                    .get_mut(&cid)
                    .and_then(|ms| ms.iter_mut().find(|m| m.uid == uid))
                {
                    m.role = Some(role);
                }
                b.step = b
                    .roles
                    .front()
                    .map(|&(cid, uid)| Pending::Role { cid, uid });
            }
            Pending::Login | Pending::Op(_) => unreachable!("not a refresh step"),
        }
        if b.step.is_none() {
            let mut b = self.build.take().expect("checked above");
            let channels = b
                .channels
                .drain(..)
                .map(|channel| ChannelEntry {
                    members: b.members.remove(&channel.cid).unwrap_or_default(),
                    channel,
                })
                .collect();
            self.next_refresh = now + self.config.refresh_interval;
            self.events.push_back(Event::Refreshed(Directory {
                users: b.users,
                channels,
            }));
        }
        Ok(())
    }

    fn op_answered(&mut self, id: OpId, body: &[u8]) {
        let Some(pos) = self.ops.iter().position(|(i, _, _)| *i == id) else {
            return;
        };
        let result = match &self.ops[pos].1 {
            Operation::PushNotice { .. } => wire::parse::<Done>(body).map(|_| Answer::NoticeSent),
            Operation::Messages { page_size, .. } => {
                page::<Message>(body, *page_size, usize::MAX, "messages").map(Answer::Messages)
            }
        };
        if let Err(e) = &result
            && e.needs_login()
            && !self.ops[pos].2
        {
            self.token = None;
            self.ops[pos].2 = true;
            return;
        }
        self.finish_op(id, result);
    }

    fn finish_op(&mut self, id: OpId, result: Result<Answer, AdminError>) {
        self.ops.retain(|(i, _, _)| *i != id);
        self.events.push_back(Event::Answered { id, result });
    }
}

/// A page, refused when it holds more than was asked for or claims more than `max` in all.
fn page<T: serde::de::DeserializeOwned>(
    body: &[u8],
    size: u32,
    max: usize,
    what: &str,
) -> Result<Page<T>, AdminError> {
    let page = wire::parse::<Page<T>>(body)?;
    if page.data.len() > size as usize {
        return Err(AdminError::TooLarge(format!(
            "a page of {} {what} when {size} were asked for",
            page.data.len()
        )));
    }
    if page.total > max as u64 {
        return Err(AdminError::TooLarge(format!(
            "{} {what}, more than {max}",
            page.total
        )));
    }
    Ok(page)
}

/// Adds a page to `acc`, refusing a directory over `max`; whether it was the last page.
fn take_page<T: serde::de::DeserializeOwned>(
    acc: &mut Vec<T>,
    body: &[u8],
    size: u32,
    max: usize,
    what: &str,
) -> Result<bool, AdminError> {
    let page = page::<T>(body, size, max, what)?;
    let empty = page.data.is_empty();
    acc.extend(page.data);
    // `total` may understate: the count read is what is bounded.
    if acc.len() > max {
        return Err(AdminError::TooLarge(format!("more than {max} {what}")));
    }
    Ok(empty || acc.len() as u64 >= page.total)
}

/// Members by channel from the users' `joinedChannels` (known channels only), and the role
/// calls to make, at most `max`. Sets keep it linear in what the server sent.
fn plan_roles(b: &mut Build, max: usize) {
    let known: HashSet<i64> = b.channels.iter().map(|c| c.cid).collect();
    let mut seen: HashSet<(i64, i64)> = HashSet::new();
    for u in &b.users {
        for cid in u.joined_channel_ids() {
            if known.contains(&cid) && seen.insert((cid, u.uid)) {
                b.members.entry(cid).or_default().push(Member {
                    uid: u.uid,
                    role: None,
                });
                if b.roles.len() < max {
                    b.roles.push_back((cid, u.uid));
                }
            }
        }
    }
}

fn op_request(token: &str, op: &Operation) -> Request {
    match op {
        Operation::PushNotice {
            target,
            content,
            tts,
        } => Request::push_notice(token, target, content, *tts),
        Operation::Messages {
            cid,
            page_index,
            page_size,
            oldest_first,
        } => Request::messages_page(token, *cid, *page_index, *page_size, *oldest_first),
    }
}
