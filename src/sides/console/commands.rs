//! Platform commands for consoles ([`SideCommands`], `docs/events.md`):
//!
//! - **trans-cmd** (`Deliver`): the console gets `{"type":"notify","cmd":"transCmd","data":<trans_mess>}`.
//! - **kickout** (`Kick`): its call ends (`tempCallHangup`, `hangupReason.code` 4), its PTT session
//!   is logged out and it is told `{"type":"notify","cmd":"serverState","data":{"state":"loggedOut","reason":..}}`;
//!   the WebSocket stays open, so the console shows the reason and may log in again.
//! - **invite** into `console:<sessionId>`: a PTT terminal (`ptt:<registered user id>`) is added
//!   to that console call, as `addGroupMember` would; resolves when the terminal rings in the
//!   call (or cannot be brought in). A console itself cannot be invited anywhere.
//!
//! Console party ids are the account names (`console:zydd`). Each command goes to the
//! connection's own task as an `Order` and is answered through a oneshot.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::ConsoleSide;
use crate::hub::command::BoxFuture;
use crate::hub::{CommandError, Delivered, Side, SideCommand, SideCommands};

/// The answer to an order.
pub(crate) type Done = oneshot::Sender<Result<Delivered, CommandError>>;

/// A platform command for one console connection.
#[derive(Debug)]
pub(crate) enum Order {
    /// Deliver a platform message.
    Deliver { message: Value, done: Done },
    /// End the console's session.
    Kick { reason: String, done: Done },
    /// Bring PTT user `member` into call `call`.
    Invite { call: u64, member: u64, done: Done },
}

/// Orders queued per connection; a console this far behind answers "failed".
pub(crate) const ORDERS: usize = 16;

/// Console command handler.
#[derive(Debug, Clone)]
pub struct ConsoleCommands {
    side: ConsoleSide,
}

impl ConsoleCommands {
    /// Commands to the consoles of `side`.
    pub fn new(side: ConsoleSide) -> Arc<Self> {
        Arc::new(Self { side })
    }

    /// The connections logged in as `account` on a server of `app`.
    fn connections_of(&self, app: &str, account: &str) -> Vec<u64> {
        let shared = &self.side.0;
        let servers: Vec<&str> = shared
            .servers
            .values()
            .filter(|s| s.ptt.app == app)
            .map(|s| s.ptt.id.as_str())
            .collect();
        let accounts = shared.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let mut conns: Vec<u64> = accounts
            .iter()
            .filter(|((server, a), _)| a == account && servers.contains(&server.as_str()))
            .map(|(_, conn)| *conn)
            .collect();
        conns.sort_unstable();
        conns.dedup();
        conns
    }

    /// Sends `order` (made with its answer channel) to connection `conn` and waits for it.
    async fn ask(
        &self,
        conn: u64,
        order: impl FnOnce(Done) -> Order,
    ) -> Result<Delivered, CommandError> {
        let tx = self
            .side
            .0
            .orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&conn)
            .cloned()
            .ok_or(CommandError::NotOnline)?;
        let (done, answer) = oneshot::channel();
        match tx.try_send(order(done)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(CommandError::NotOnline),
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(CommandError::Failed(
                    "the console connection is busy; try again".into(),
                ));
            }
        }
        answer.await.unwrap_or(Err(CommandError::NotOnline))
    }
}

impl SideCommands for ConsoleCommands {
    fn execute(&self, cmd: SideCommand) -> BoxFuture<Result<Delivered, CommandError>> {
        let this = self.clone();
        Box::pin(async move {
            match cmd {
                SideCommand::Deliver {
                    app,
                    party,
                    message,
                } => {
                    let mut last = Err(CommandError::NotOnline);
                    for conn in this.connections_of(&app, &party) {
                        let message = message.clone();
                        last = this
                            .ask(conn, |done| Order::Deliver { message, done })
                            .await;
                        if last.is_ok() {
                            break;
                        }
                    }
                    last
                }
                SideCommand::Kick { app, party, reason } => {
                    let mut result = Err(CommandError::NotOnline);
                    for conn in this.connections_of(&app, &party) {
                        let reason = reason.clone();
                        let r = this.ask(conn, |done| Order::Kick { reason, done }).await;
                        if r.is_ok() || result.is_err() {
                            result = r;
                        }
                    }
                    result
                }
                SideCommand::Invite {
                    app,
                    party,
                    side,
                    group,
                    ..
                } => {
                    let call = group
                        .strip_prefix("console:")
                        .and_then(|id| id.parse::<u64>().ok())
                        .ok_or_else(|| CommandError::UnknownGroup(group.clone()))?;
                    if side != Side::Ptt {
                        return Err(CommandError::Unsupported(format!(
                            "only PTT terminals can be invited into the console call {group}"
                        )));
                    }
                    let member = party.parse::<u64>().map_err(|_| {
                        CommandError::Unsupported(format!(
                            "ptt:{party} is not a registered PTT user: console calls take registered user ids"
                        ))
                    })?;
                    let conn = this
                        .side
                        .0
                        .call_owners
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&call)
                        .filter(|(a, _)| *a == app)
                        .map(|(_, conn)| *conn)
                        .ok_or_else(|| CommandError::UnknownGroup(group.clone()))?;
                    match this
                        .ask(conn, |done| Order::Invite { call, member, done })
                        .await
                    {
                        // The console hung up before the order reached it.
                        Err(CommandError::NotOnline) if call_gone(&this, call) => {
                            Err(CommandError::UnknownGroup(group))
                        }
                        other => other,
                    }
                }
            }
        })
    }
}

/// Whether call `call` is gone (its console left before answering).
fn call_gone(this: &ConsoleCommands, call: u64) -> bool {
    !this
        .side
        .0
        .call_owners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&call)
}
