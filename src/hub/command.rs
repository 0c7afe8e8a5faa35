//! Commands from platforms to the parties of a side: deliver a message, end a session, invite
//! into a group. Each side implements [`SideCommands`] once and registers it with the
//! [`CommandRouter`]; the business gateway (`/v1/kickout`, `/v1/online/trans-cmd`,
//! `/v1/online/invite`) routes by the side in the user id (`<side>:<id>`).
//!
//! ```ignore
//! // in a side's start-up (console, meeting):
//! router.register(Side::Console, Arc::new(MyConsoleCommands { .. }));
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::Side;

/// A boxed future, as trait objects need.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What to do to a party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideCommand {
    /// Deliver a platform message (trans-cmd): PTT private text, console notification,
    /// meeting `doEvent`. `message` is the caller's object as given.
    Deliver {
        /// App (tenant).
        app: String,
        /// The party id on its side (the part after `<side>:`).
        party: String,
        /// Caller-defined content.
        message: Value,
    },
    /// End the party's sessions (kickout).
    Kick {
        /// App.
        app: String,
        /// Party id on its side.
        party: String,
        /// Why (shown to the user where the side can).
        reason: String,
    },
    /// Bring the party into a group (invite): PTT move to the channel, a terminal added to a
    /// console call, a meeting invite (or a PTT channel dialled into the room). Routed to the
    /// side that owns the group (see [`group_side`]), which may differ from the party's.
    Invite {
        /// App.
        app: String,
        /// Party id on its side.
        party: String,
        /// The party's side (`ptt:3` invited into a console call reaches the console side).
        side: Side,
        /// Bridge group id (`ptt:<server>:<path>`, a meeting room, ...).
        group: String,
        /// Caller's extra data.
        extend: Option<Value>,
    },
}

impl SideCommand {
    /// The party id addressed.
    pub fn party(&self) -> &str {
        match self {
            Self::Deliver { party, .. } | Self::Kick { party, .. } | Self::Invite { party, .. } => {
                party
            }
        }
    }

    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Deliver { .. } => "deliver",
            Self::Kick { .. } => "kick",
            Self::Invite { .. } => "invite",
        }
    }
}

/// A command that was carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The party's terminal/session id on its side (PTT session, console connection, ...).
    pub terminal: String,
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The party is not connected on its side (trans-cmd result 2).
    #[error("user not online")]
    NotOnline,
    /// No such group on the side.
    #[error("unknown group {0}")]
    UnknownGroup(String),
    /// The side has no handler registered (not configured, or not built yet).
    #[error("side {0} takes no commands")]
    NoSide(&'static str),
    /// The side does not support this command.
    #[error("{0}")]
    Unsupported(String),
    /// The side tried and failed (permission denied, connection down, timeout).
    #[error("{0}")]
    Failed(String),
}

/// The side owning a bridge group id: `ptt:<server>:<path>`, `console:<sessionId>`,
/// `meeting:<room>`.
pub fn group_side(group: &str) -> Option<Side> {
    Side::parse(group.split_once(':')?.0)
}

/// What a side implements to take commands.
pub trait SideCommands: Send + Sync + std::fmt::Debug + 'static {
    /// Carries out `cmd`; resolves when the side has done it (or knows it cannot).
    fn execute(&self, cmd: SideCommand) -> BoxFuture<Result<Delivered, CommandError>>;
}

/// Where commands go that no side of this node could carry out: the other nodes of a cluster.
pub trait RemoteCommands: Send + Sync + std::fmt::Debug + 'static {
    /// Asks the other nodes to carry out `cmd`; `None` when none of them has the target.
    fn execute(
        self: Arc<Self>,
        side: Side,
        cmd: SideCommand,
    ) -> BoxFuture<Option<Result<Delivered, CommandError>>>;
}

/// Routes commands to the side that owns the party.
#[derive(Debug, Clone, Default)]
pub struct CommandRouter {
    sides: Arc<RwLock<HashMap<Side, Arc<dyn SideCommands>>>>,
    remote: Arc<RwLock<Option<Arc<dyn RemoteCommands>>>>,
}

impl CommandRouter {
    /// A router with no sides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the handler of `side`.
    pub fn register(&self, side: Side, handler: Arc<dyn SideCommands>) {
        self.sides
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(side, handler);
    }

    /// Commands whose target is on no local side go to `remote` from now on (a cluster node).
    pub fn set_remote(&self, remote: Arc<dyn RemoteCommands>) {
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = Some(remote);
    }

    /// Sends `cmd` to `side` (the party's side; an invite goes to the side owning the group);
    /// when that side does not know the target and this is a cluster node, to the node that
    /// does (the local error stands when none does).
    pub async fn execute(&self, side: Side, cmd: SideCommand) -> Result<Delivered, CommandError> {
        let remote = self
            .remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(remote) = remote else {
            return self.execute_local(side, cmd).await;
        };
        let local = self.execute_local(side, cmd.clone()).await;
        match local {
            // Not here, or a side this node does not run: another node may have it.
            Err(
                CommandError::NotOnline | CommandError::UnknownGroup(_) | CommandError::NoSide(_),
            ) => remote.execute(side, cmd).await.unwrap_or(local),
            other => other,
        }
    }

    /// Sends `cmd` to this node's `side` only.
    pub async fn execute_local(
        &self,
        side: Side,
        cmd: SideCommand,
    ) -> Result<Delivered, CommandError> {
        let side = match &cmd {
            SideCommand::Invite { group, .. } => group_side(group).unwrap_or(side),
            _ => side,
        };
        let handler = self
            .sides
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&side)
            .cloned();
        let name = cmd.name();
        let result = match handler {
            Some(h) => h.execute(cmd).await,
            None => Err(CommandError::NoSide(side.as_str())),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CommandError::NotOnline) => "not_online",
            Err(_) => "failed",
        };
        metrics::counter!("pttbridge_side_commands_total", "side" => side.as_str(), "command" => name, "outcome" => outcome)
            .increment(1);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers with its own side's name, so a test sees who got the command.
    #[derive(Debug)]
    struct Echo(&'static str);

    impl SideCommands for Echo {
        fn execute(&self, _cmd: SideCommand) -> BoxFuture<Result<Delivered, CommandError>> {
            let terminal = self.0.to_string();
            Box::pin(async move { Ok(Delivered { terminal }) })
        }
    }

    fn router() -> CommandRouter {
        let r = CommandRouter::new();
        r.register(Side::Ptt, Arc::new(Echo("ptt")));
        r.register(Side::Console, Arc::new(Echo("console")));
        r
    }

    fn invite(group: &str) -> SideCommand {
        SideCommand::Invite {
            app: "a".into(),
            party: "3".into(),
            side: Side::Ptt,
            group: group.into(),
            extend: None,
        }
    }

    #[tokio::test]
    async fn invites_go_to_the_side_owning_the_group_other_commands_to_the_users() {
        let r = router();
        let to = |d: Result<Delivered, CommandError>| d.map(|d| d.terminal);
        assert_eq!(
            to(r.execute(Side::Ptt, invite("console:42")).await),
            Ok("console".into())
        );
        assert_eq!(
            to(r.execute(Side::Ptt, invite("ptt:local:North")).await),
            Ok("ptt".into())
        );
        assert_eq!(
            to(r.execute(Side::Ptt, invite("no-side")).await),
            Ok("ptt".into()),
            "a group without a side prefix goes to the user's side"
        );
        assert_eq!(
            r.execute(Side::Ptt, invite("meeting:600")).await,
            Err(CommandError::NoSide("meeting"))
        );
        let kick = SideCommand::Kick {
            app: "a".into(),
            party: "zydd".into(),
            reason: "r".into(),
        };
        assert_eq!(
            to(r.execute(Side::Console, kick).await),
            Ok("console".into())
        );
        assert_eq!(group_side("meeting:h:1/600"), Some(Side::Meeting));
        assert_eq!(group_side("console"), None);
    }
}
