//! What one lease puts on its PTT server while this node holds it: one of the bridge's PTT
//! accounts, or a console server's admin session (the one session that moves terminals into
//! console calls: a registered user logged in twice is dropped by murmurd, so the whole
//! cluster keeps one). The lease rules (`lease.rs`) and the driver (`node.rs`) are the same for
//! both; only what going online means and what a drain waits for differ.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ptt::client::{ClientHandle, Command};

use crate::sides::ptt::Account;

/// A console server's admin session, as the lease driver sees it.
#[derive(Debug, Clone)]
pub struct AdminSession {
    /// The `[[ptt.servers]]` id it logs in to.
    pub server: String,
    /// Tenant of that server (its events' app).
    pub app: String,
    /// The admin account (`admin_username`).
    pub username: String,
    /// Its PTT client, started offline on a cluster node.
    pub client: ClientHandle,
    /// Moves and mutes it has not finished: a drain hands it over once none is left.
    pub outstanding: Arc<AtomicUsize>,
    /// Console calls up on this node: each sends its terminals home through the session as it
    /// ends (a stopping node's all do), so a drain waits for them too.
    pub calls: Arc<AtomicUsize>,
}

/// One leased resource.
#[derive(Debug, Clone)]
pub enum Resource {
    /// A PTT account of the bridge (`[[ptt.servers.accounts]]`).
    Account(Account),
    /// A console server's admin session (`[[console.servers]] admin_username`).
    ConsoleAdmin(AdminSession),
}

impl Resource {
    /// Its key in the lease bucket.
    pub fn key(&self) -> String {
        match self {
            Self::Account(a) => account_key(&a.server, &a.username),
            Self::ConsoleAdmin(s) => admin_key(&s.server, &s.username),
        }
    }

    /// The PTT server id.
    pub fn server(&self) -> &str {
        match self {
            Self::Account(a) => &a.server,
            Self::ConsoleAdmin(s) => &s.server,
        }
    }

    /// The account it logs in as.
    pub fn username(&self) -> &str {
        match self {
            Self::Account(a) => &a.username,
            Self::ConsoleAdmin(s) => &s.username,
        }
    }

    /// The app its announcements go to.
    pub fn app(&self) -> &str {
        match self {
            Self::Account(a) => &a.app,
            Self::ConsoleAdmin(s) => &s.app,
        }
    }

    /// What it is, for logs and events (`resource` in a `side.connected` detail).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Account(_) => "ptt_account",
            Self::ConsoleAdmin(_) => "console_admin",
        }
    }

    /// Connects it (`online`) or takes it off its server; `false` when its client has stopped.
    pub async fn set_online(&self, online: bool) -> bool {
        let client = match self {
            Self::Account(a) => &a.client,
            Self::ConsoleAdmin(s) => &s.client,
        };
        let cmd = if online {
            Command::GoOnline
        } else {
            Command::GoOffline
        };
        client.command(cmd).await.is_ok()
    }

    /// Whether handing it over now would cut something off: a talk burst through the account,
    /// or moves the admin session has not finished or that this node's console calls will ask
    /// for as they end.
    pub fn busy(&self) -> bool {
        match self {
            Self::Account(a) => a.floor_busy(),
            Self::ConsoleAdmin(s) => {
                s.outstanding.load(Ordering::SeqCst) > 0 || s.calls.load(Ordering::SeqCst) > 0
            }
        }
    }

    /// Whether a rebalance may hand it over now: nothing [`Resource::busy`] and, for an
    /// account, no call linked to it (a drain ends such calls; a rebalance must not).
    pub fn movable(&self) -> bool {
        match self {
            Self::Account(a) => !a.floor_busy() && !a.linked(),
            Self::ConsoleAdmin(_) => !self.busy(),
        }
    }

    /// Waits (at most `limit`) until nothing acts as it beyond its session; `false` at the limit.
    pub async fn unheld(&self, limit: Duration) -> bool {
        match self {
            Self::Account(a) => a.unheld(limit).await,
            // Nothing but its session acts as the admin account.
            Self::ConsoleAdmin(_) => true,
        }
    }
}

/// The KV key of an account: `ptt.<server>.<account>`, each name with what a key cannot hold
/// written as `=HH` (so two names never share a key).
pub fn account_key(server: &str, username: &str) -> String {
    format!("ptt.{}.{}", token(server), token(username))
}

/// The KV key of a console server's admin session: `console-admin.<server>.<account>`, each
/// name escaped as in [`account_key`].
pub fn admin_key(server: &str, username: &str) -> String {
    format!("console-admin.{}.{}", token(server), token(username))
}

/// One name as a key token: what a key cannot hold written as `=HH`.
fn token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() { "=".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::{account_key, admin_key};

    #[test]
    fn admin_keys_are_escaped_like_account_keys_and_never_one_of_them() {
        assert_eq!(
            admin_key("local", "SuperUser"),
            "console-admin.local.SuperUser"
        );
        assert_eq!(admin_key("a.b", "x y"), "console-admin.a=2Eb.x=20y");
        assert_ne!(admin_key("local", "bridge"), account_key("local", "bridge"));
    }
}
