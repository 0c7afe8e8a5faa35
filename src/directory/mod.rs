//! The directory: who the organisation's users and channels are, read from the Totalk admin API
//! (`[directory]`, `docs/directory.md`) and kept as a last good copy.
//!
//! [`task`] drives the sans-IO `totalk_admin::Client` over [`crate::http_client`]; this module
//! holds what it read ([`Snapshot`]), when, and what went wrong since. Invariant: a failed or
//! partial refresh never replaces the copy — readers see the last whole directory or none, and
//! its age says how far to trust it. Nothing on the voice path waits for the admin API: lookups
//! read the copy in memory, and the API being down only makes the copy older.

pub mod config;
mod task;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use totalk_admin::client::{Answer, ChannelEntry};
use totalk_admin::{AdminError, Operation, User};

pub use config::DirectoryConfig;

/// One whole directory as a refresh read it, with lookups.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every user, in the admin server's order.
    pub users: Vec<User>,
    /// Every channel with its members.
    pub channels: Vec<ChannelEntry>,
    by_name: HashMap<String, usize>,
    by_uid: HashMap<i64, usize>,
}

impl Snapshot {
    /// Indexes a directory.
    pub fn new(dir: totalk_admin::Directory) -> Self {
        let by_name = dir
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), i))
            .collect();
        let by_uid = dir
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.uid, i))
            .collect();
        Self {
            users: dir.users,
            channels: dir.channels,
            by_name,
            by_uid,
        }
    }

    /// The user whose account name (what it logs in to the PTT server with) is `name`.
    pub fn by_name(&self, name: &str) -> Option<&User> {
        self.by_name.get(name).map(|&i| &self.users[i])
    }

    /// The user with id `uid`.
    pub fn by_uid(&self, uid: i64) -> Option<&User> {
        self.by_uid.get(&uid).map(|&i| &self.users[i])
    }
}

/// The account names of everyone on the PTT side of an app's state: whom the bridge sees online
/// now, to tell directory users online.
pub fn ptt_online(model: &crate::events::state::AppModel) -> HashSet<String> {
    model
        .presence()
        .into_values()
        .filter(|p| p.party.side == crate::hub::Side::Ptt)
        .map(|p| p.party.name)
        .collect()
}

/// What `/healthz` and the metrics say about the directory.
#[derive(Debug, Clone, Default)]
struct Status {
    snapshot: Option<Arc<Snapshot>>,
    fetched: Option<Instant>,
    last_error: Option<String>,
    failures_in_a_row: u64,
}

/// A request from a handler to the task.
enum Command {
    Refresh,
    Call(Operation, oneshot::Sender<Result<Answer, AdminError>>),
}

/// The directory; cheap to clone. See the module documentation.
#[derive(Debug, Clone)]
pub struct Directory {
    status: Arc<RwLock<Status>>,
    commands: mpsc::Sender<Command>,
    stale_after: Duration,
    /// `directory.dispatcher_mic_level`.
    pub dispatcher_mic_level: u8,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refresh => f.write_str("Refresh"),
            Self::Call(op, _) => write!(f, "Call({op:?})"),
        }
    }
}

/// Calls queued for the admin server beyond this are refused at once.
const QUEUE: usize = 64;
/// How long a caller waits for an admin call's answer (the queue and its re-login included).
const CALL_WAIT: Duration = Duration::from_secs(30);

/// Why an admin call made through the directory has no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The admin server answered with an error, or not usefully.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// Too many calls are waiting already.
    #[error("too many admin calls waiting")]
    Busy,
    /// No answer in time.
    #[error("no answer from the admin server in {0:?}")]
    Timeout(Duration),
}

impl Directory {
    /// Starts reading the admin server of `config` (its `url` set) in a task of its own.
    pub fn start(config: &DirectoryConfig) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dir = Self {
            status: Arc::default(),
            commands: tx,
            stale_after: config.stale_after(),
            dispatcher_mic_level: config.dispatcher_mic_level,
        };
        task::spawn(config, dir.clone(), rx)?;
        Ok(dir)
    }

    /// The last good copy, if any refresh has succeeded.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.read().snapshot.clone()
    }

    /// Time since the last good refresh (`None` before the first).
    pub fn age(&self) -> Option<Duration> {
        self.read().fetched.map(|t| t.elapsed())
    }

    /// Whether there is no copy, or it is older than `directory.stale_after_secs`.
    pub fn stale(&self) -> bool {
        self.age().is_none_or(|a| a > self.stale_after)
    }

    /// The mic level the directory gives account `name`: the dispatcher level for a user whose
    /// role is dispatcher, else `None` (the configured levels apply).
    pub fn mic_level_of(&self, name: &str) -> Option<u8> {
        let snap = self.snapshot()?;
        snap.by_name(name)
            .filter(|u| u.is_dispatcher())
            .map(|_| self.dispatcher_mic_level)
    }

    /// Every directory user as a full sync lists it, online when the admin server has it in a
    /// channel or `online` (PTT account names seen now) has it.
    pub fn sync_users(&self, online: &HashSet<String>) -> Option<Vec<egw::DirectoryUser>> {
        let snap = self.snapshot()?;
        Some(
            snap.users
                .iter()
                .map(|u| egw::DirectoryUser {
                    name: u.name.clone(),
                    nick: u.nick.clone(),
                    online: u.online() || online.contains(&u.name),
                    role: u.role,
                    user_id: format!("ptt:{}", u.uid),
                })
                .collect(),
        )
    }

    /// Asks for a refresh now (it starts once the call in flight is answered).
    pub fn refresh_now(&self) {
        // Full queue: a refresh is coming anyway.
        let _ = self.commands.try_send(Command::Refresh);
    }

    /// Makes a one-off call (`pushNotice`, `getMessagesInPage`) and waits for its answer.
    pub async fn call(&self, op: Operation) -> Result<Answer, CallError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .try_send(Command::Call(op, tx))
            .map_err(|_| CallError::Busy)?;
        match tokio::time::timeout(CALL_WAIT, rx).await {
            Ok(Ok(answer)) => Ok(answer?),
            // The task is gone (shutdown) or the wait ran out.
            Ok(Err(_)) | Err(_) => Err(CallError::Timeout(CALL_WAIT)),
        }
    }

    /// `/healthz`'s `directory` part.
    pub fn health(&self) -> serde_json::Value {
        let s = self.read().clone();
        serde_json::json!({
            "state": if s.snapshot.is_none() { "empty" } else if self.stale() { "stale" } else { "fresh" },
            "age_s": s.fetched.map(|t| t.elapsed().as_secs()),
            "users": s.snapshot.as_ref().map_or(0, |d| d.users.len()),
            "channels": s.snapshot.as_ref().map_or(0, |d| d.channels.len()),
            "failures_in_a_row": s.failures_in_a_row,
            "last_error": s.last_error,
        })
    }

    /// Sets the age gauge (at each scrape: the age grows between refreshes).
    pub fn export_metrics(&self) {
        let age = self.age().map_or(-1.0, |a| a.as_secs_f64());
        metrics::gauge!("pttbridge_directory_age_seconds").set(age);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Status> {
        self.status.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Status> {
        self.status.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A refresh succeeded: its directory replaces the copy whole.
    fn refreshed(&self, dir: totalk_admin::Directory) {
        let snap = Snapshot::new(dir);
        metrics::gauge!("pttbridge_directory_users").set(snap.users.len() as f64);
        metrics::counter!("pttbridge_directory_refreshes_total", "result" => "ok").increment(1);
        let mut s = self.write();
        s.snapshot = Some(Arc::new(snap));
        s.fetched = Some(Instant::now());
        s.last_error = None;
        s.failures_in_a_row = 0;
    }

    /// A refresh failed: the copy stays.
    fn failed(&self, e: &AdminError) {
        metrics::counter!("pttbridge_directory_refreshes_total", "result" => e.as_str())
            .increment(1);
        let mut s = self.write();
        s.last_error = Some(e.to_string());
        s.failures_in_a_row += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: i64, name: &str, role: i64) -> User {
        serde_json::from_value(serde_json::json!({"uid": uid, "name": name, "role": role})).unwrap()
    }

    fn directory() -> (Directory, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let d = Directory {
            status: Arc::default(),
            commands: tx,
            stale_after: Duration::from_secs(60),
            dispatcher_mic_level: 5,
        };
        (d, rx)
    }

    /// The invariant: a failure after a good refresh keeps the good copy whole.
    #[test]
    fn a_failure_keeps_the_last_good_copy() {
        let (d, _rx) = directory();
        assert!(d.stale() && d.snapshot().is_none());
        assert_eq!(d.mic_level_of("alice"), None);
        d.refreshed(totalk_admin::Directory {
            users: vec![user(1, "alice", 1), user(2, "bob", 0)],
            channels: Vec::new(),
        });
        assert!(!d.stale());
        d.failed(&AdminError::Transport("connection refused".into()));
        d.failed(&AdminError::Malformed("garbage".into()));
        let snap = d.snapshot().unwrap();
        assert_eq!(snap.users.len(), 2);
        assert_eq!(snap.by_uid(2).unwrap().name, "bob");
        assert_eq!(d.mic_level_of("alice"), Some(5));
        assert_eq!(d.mic_level_of("bob"), None);
        let h = d.health();
        assert_eq!(h["state"], "fresh");
        assert_eq!(h["failures_in_a_row"], 2);
        assert!(h["last_error"].as_str().unwrap().contains("garbage"));
    }
}
