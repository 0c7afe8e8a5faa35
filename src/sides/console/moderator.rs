//! The bridge's admin account on one PTT server: the only session that moves terminals
//! into calls and back and mutes them while a console holds the floor.
//!
//! A default murmurd ACL gives registered users `MakeTempChannel` but not `Move` or
//! `MuteDeafen` (those come with `Write`, i.e. the `admin` group or SuperUser), so a
//! console's own account can create its call channel but cannot bring others into it.
//!
//! Requests are done in order on one connection, so murmurd answers them in order: a
//! `PermissionDenied` belongs to the oldest request still waiting (requests that
//! succeeded were confirmed, by the `UserState` murmurd broadcasts, before it).
//!
//! While the admin session is reconnecting (the PTT server restarted: consoles and terminals
//! may be back before it is), requests wait for it up to the same timeout instead of failing
//! a call that would work a moment later.
//!
//! Session numbers are only unique within one run of the server: after a restart murmurd hands
//! them out again, so a request made from a view of the old run (a terminal sent home as its
//! call ended with the server) could name a session that is now someone else — typically the
//! console itself. Every request therefore names the registered user it is meant for, and a
//! session that belongs to another user is refused instead of moved.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use logsafe::esc;
use ptt::client::{self, ClientConfig, ClientEvent, ClientHandle, Command, LinkState};
use ptt::proto;
use ptt::session::Event;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span, warn};

use crate::cluster::resource::AdminSession;

/// What the admin account is asked to do (also what a node asks the node holding the admin
/// session, as JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Move a user (by session) into a channel.
    Move {
        /// User session.
        session: u32,
        /// Target channel id.
        channel: u32,
    },
    /// Server-mute or unmute a user.
    Mute {
        /// User session.
        session: u32,
        /// Mute (true) or unmute.
        mute: bool,
    },
}

impl Action {
    fn session(&self) -> u32 {
        match *self {
            Self::Move { session, .. } | Self::Mute { session, .. } => session,
        }
    }
}

/// Why an action was not done; its text is what the console operator is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Too many actions waiting (on this node, or on the way to the node holding the session).
    #[error("the bridge's admin session is overloaded; try again")]
    Overloaded,
    /// A cluster node: no node held the admin session until the action's deadline.
    #[error("no bridge node holds the admin session of PTT server {0} now")]
    NoHolder(String),
    /// A cluster node: the node holding the admin session could not be reached in time.
    #[error("the bridge node holding the admin session did not answer: {0}")]
    Unreachable(#[from] crate::cluster::route::RouteError),
    /// The admin session or the PTT server said no (or did not confirm).
    #[error("{0}")]
    Failed(String),
}

impl AdminError {
    fn failed(why: impl Into<String>) -> Self {
        Self::Failed(why.into())
    }
}

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The registered user the action was for.
    pub user: u64,
    /// The action.
    pub action: Action,
    /// `Err` says why, for the console operator.
    pub result: Result<(), AdminError>,
}

struct Job {
    action: Action,
    user: u64,
    reply: Option<mpsc::Sender<Outcome>>,
    outstanding: Arc<AtomicUsize>,
}

struct Pending {
    job: Job,
    deadline: Instant,
}

/// Handle to a server's admin session; cheap to clone.
#[derive(Debug, Clone)]
pub struct Moderator {
    jobs: mpsc::Sender<Job>,
    client: ClientHandle,
    /// Actions submitted and not finished yet.
    outstanding: Arc<AtomicUsize>,
}

/// Actions queued before the admin task counts as overloaded.
const QUEUE: usize = 1024;

impl Moderator {
    /// Connects the admin account (and keeps it connected) with `config`.
    pub fn spawn(config: ClientConfig, timeout: Duration, server: &str) -> Self {
        let (client, events) = client::spawn(config);
        let (jobs, rx) = mpsc::channel(QUEUE);
        let outstanding = Arc::new(AtomicUsize::new(0));
        let task = Task {
            client: client.clone(),
            pending: VecDeque::new(),
            waiting: VecDeque::new(),
            timeout,
        };
        tokio::spawn(
            task.run(rx, events)
                .instrument(info_span!("console_admin", server = %server)),
        );
        Self {
            jobs,
            client,
            outstanding,
        }
    }

    /// Actions not finished yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// What a cluster node's lease driver needs to put the session on its server and take it
    /// off (`server`, `app`: its PTT server's id and tenant; `calls`: console calls up on this
    /// node).
    pub fn lease(
        &self,
        server: &str,
        app: &str,
        username: &str,
        calls: Arc<AtomicUsize>,
    ) -> AdminSession {
        AdminSession {
            server: server.to_owned(),
            app: app.to_owned(),
            username: username.to_owned(),
            client: self.client.clone(),
            outstanding: self.outstanding.clone(),
            calls,
        }
    }

    /// Asks for `action` on the session of registered user `user`; its [`Outcome`] goes to
    /// `reply` (if given). Never waits.
    pub fn submit(
        &self,
        action: Action,
        user: u64,
        reply: Option<mpsc::Sender<Outcome>>,
    ) -> Result<(), AdminError> {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            action,
            user,
            reply,
            outstanding: self.outstanding.clone(),
        };
        self.jobs.try_send(job).map_err(|_| {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            AdminError::Overloaded
        })
    }

    /// The admin session's view of the server.
    pub fn snapshot(&self) -> Arc<ptt::client::Snapshot> {
        self.client.snapshot()
    }

    /// Whether the admin session is connected.
    pub fn connected(&self) -> bool {
        self.client.snapshot().state == LinkState::Connected
    }

    /// Stops the admin session.
    pub async fn shutdown(&self) {
        let _ = self.client.command(Command::Shutdown).await;
    }
}

struct Task {
    client: ClientHandle,
    /// Sent to the server, waiting for its confirmation.
    pending: VecDeque<Pending>,
    /// Not sent yet: the admin session was not connected.
    waiting: VecDeque<Pending>,
    timeout: Duration,
}

fn finish(job: Job, result: Result<(), AdminError>) {
    job.outstanding.fetch_sub(1, Ordering::SeqCst);
    if let Err(e) = &result {
        debug!(action = ?job.action, error = %esc(e.to_string()), "admin action failed");
    }
    if let Some(tx) = job.reply {
        // A console that is gone or not reading does not hold up the others.
        let _ = tx.try_send(Outcome {
            user: job.user,
            action: job.action,
            result,
        });
    }
}

impl Task {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, mut events: mpsc::Receiver<ClientEvent>) {
        loop {
            let wake = self
                .pending
                .iter()
                .chain(&self.waiting)
                .map(|p| p.deadline)
                .min();
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => {
                        let deadline = Instant::now() + self.timeout;
                        self.start(job, deadline).await
                    }
                    None => break,
                },
                ev = events.recv() => match ev {
                    Some(ClientEvent::Session(Event::Synced { .. })) => {
                        // Back on the server: what waited for it goes out now, in order.
                        for w in std::mem::take(&mut self.waiting) {
                            self.start(w.job, w.deadline).await;
                        }
                    }
                    Some(ev) => self.event(ev),
                    None => break,
                },
                _ = sleep_until(wake) => self.expire(Instant::now()),
            }
        }
        for p in self.pending.drain(..).chain(self.waiting.drain(..)) {
            finish(
                p.job,
                Err(AdminError::failed("the bridge is shutting down")),
            );
        }
    }

    /// Sends `job` now, or keeps it until the session is back (at most until `deadline`).
    async fn start(&mut self, job: Job, deadline: Instant) {
        let snap = self.client.snapshot();
        if snap.state != LinkState::Connected {
            self.waiting.push_back(Pending { job, deadline });
            return;
        }
        // The one thing our view can tell for certain: the session is someone else's now.
        if let Some(other) = snap.users.get(&job.action.session())
            && other.user_id.map(u64::from) != Some(job.user)
        {
            return finish(
                job,
                Err(AdminError::failed(
                    "the terminal is no longer connected (the PTT server restarted)",
                )),
            );
        }
        // Otherwise no shortcut from our own view of the server: it can lag murmurd's by a
        // moment (a terminal that just connected, or just moved). murmurd decides; a move to
        // where the user already is gets no answer, which the timeout treats as done.
        let msg = match job.action {
            Action::Move { session, channel } => proto::UserState {
                session: Some(session),
                channel_id: Some(channel),
                ..Default::default()
            },
            Action::Mute { session, mute } => proto::UserState {
                session: Some(session),
                mute: Some(mute),
                ..Default::default()
            },
        };
        if self
            .client
            .command(Command::Send(Box::new(msg.into())))
            .await
            .is_err()
        {
            return finish(
                job,
                Err(AdminError::failed("the bridge's admin session has stopped")),
            );
        }
        self.pending.push_back(Pending { job, deadline });
    }

    fn complete(
        &mut self,
        matches: impl Fn(&Action) -> bool,
        first_only: bool,
        result: Result<(), AdminError>,
    ) {
        let mut i = 0;
        while i < self.pending.len() {
            if matches(&self.pending[i].job.action) {
                let p = self.pending.remove(i).expect("index in range");
                finish(p.job, result.clone());
                if first_only {
                    return;
                }
            } else {
                i += 1;
            }
        }
    }

    fn event(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Session(Event::UserMoved { user, .. }) => {
                let (s, c) = (user.session, user.channel_id);
                self.complete(|a| matches!(a, Action::Move { session, channel } if *session == s && *channel == c), false, Ok(()));
            }
            ClientEvent::Session(Event::UserUpdated(user)) => {
                let s = user.session;
                self.complete(
                    |a| matches!(a, Action::Mute { session, .. } if *session == s),
                    true,
                    Ok(()),
                );
            }
            ClientEvent::Session(Event::UserLeft { user, .. }) => {
                let s = user.session;
                self.complete(
                    |a| a.session() == s,
                    false,
                    Err(AdminError::failed("the terminal disconnected")),
                );
            }
            ClientEvent::Session(Event::PermissionDenied { reason }) => {
                warn!(reason = %esc(&reason), "PTT server denied the admin account");
                if let Some(p) = self.pending.pop_front() {
                    let needs = match p.job.action {
                        Action::Move { .. } => "moving the terminal: the admin account needs Move",
                        Action::Mute { .. } => {
                            "muting the terminal: the admin account needs MuteDeafen"
                        }
                    };
                    finish(
                        p.job,
                        Err(AdminError::Failed(format!(
                            "the PTT server denied {needs} ({reason})"
                        ))),
                    );
                }
            }
            ClientEvent::Session(Event::Rejected { reason }) => {
                warn!(reason = %esc(&reason), "PTT server rejected the admin account");
            }
            ClientEvent::Disconnected { reason, .. } => {
                for p in self.pending.drain(..) {
                    finish(
                        p.job,
                        Err(AdminError::Failed(format!(
                            "the admin session lost the PTT server: {reason}"
                        ))),
                    );
                }
            }
            _ => {}
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(i) = self.waiting.iter().position(|p| p.deadline <= now) {
            let p = self.waiting.remove(i).expect("index in range");
            finish(
                p.job,
                Err(AdminError::failed(
                    "the bridge's admin account is not connected to the PTT server",
                )),
            );
        }
        let timeout = self.timeout;
        let snap = self.client.snapshot();
        while let Some(i) = self.pending.iter().position(|p| p.deadline <= now) {
            let p = self.pending.remove(i).expect("index in range");
            let user = snap.users.get(&p.job.action.session());
            let result = match (p.job.action, user) {
                (_, None) => Err(AdminError::failed("the terminal is no longer online")),
                // murmurd answers nothing when there is nothing to change.
                (Action::Move { channel, .. }, Some(u)) if u.channel_id == channel => Ok(()),
                (Action::Mute { .. }, Some(_)) => Ok(()),
                _ => Err(AdminError::Failed(format!(
                    "the PTT server did not confirm within {} ms",
                    timeout.as_millis()
                ))),
            };
            finish(p.job, result);
        }
    }
}

/// Sleeps until `at`, or forever.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
