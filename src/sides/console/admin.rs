//! The one way a console asks for moves and mutes: [`Admin`].
//!
//! On a single node (no `[cluster]`) it is the server's admin session ([`Moderator`]), as
//! before. On a cluster node only the node holding the admin session's lease
//! (`console-admin.<server>.<account>`, `cluster::resource`) connects the admin account —
//! murmurd drops the older session of a registered user who logs in twice, so nodes sharing one
//! account would knock each other off — and a request made on another node goes to the holder
//! over NATS request/reply (`pttbridge.route.<node>.move`, [`AdminServer`] answers it there).
//! The outcome comes back to the console connection exactly as a local one would.
//!
//! Retries: while no node holds the session (a takeover under way), the node asked is gone or
//! answers that it no longer holds it, the request is tried again every [`RETRY`] until the move
//! timeout (`console.move_timeout_ms`); then the console is told why
//! ([`AdminError::NoHolder`], [`AdminError::Unreachable`]). A retry may carry out an action the
//! previous holder had already done: moves and mutes are idempotent (a move to where the user
//! is changes nothing; a mute sets a state), so that does no harm.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::Bytes;
use logsafe::esc;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{Instrument, debug, warn};

use super::moderator::{Action, AdminError, Moderator, Outcome};
use crate::cluster::resource::{AdminSession, admin_key};
use crate::cluster::route::{AdminHost, Owner, Route, RouteError};
use crate::hub::command::BoxFuture;

/// Pause before asking again when no node could carry an action out.
pub const RETRY: Duration = Duration::from_millis(100);

/// Actions on their way to another node at once, per admin session (beyond: refused as
/// overloaded, as the local queue refuses).
const IN_FLIGHT: usize = 1024;

/// Moves that found no admin session to do them (logged rate-limited; counted each).
static UNREACHABLE: logsafe::RateLimit = logsafe::RateLimit::warn("console move unreachable");
/// Asks from other nodes that are not a move (logged rate-limited; counted each).
static UNREADABLE: logsafe::RateLimit = logsafe::RateLimit::warn("unreadable routed move");

/// A console server's admin session as the consoles of this node use it; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Admin(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    local: Moderator,
    server: String,
    username: String,
    key: String,
    /// Routing to the other nodes: a cluster node only.
    route: Option<Arc<Route>>,
    /// How long an action may take (`console.move_timeout_ms`).
    timeout: Duration,
    /// Actions routed to another node and not answered yet.
    in_flight: Arc<Semaphore>,
}

impl Admin {
    /// The admin session `local` of PTT server `server` (account `username`); `route` on a
    /// cluster node.
    pub fn new(
        local: Moderator,
        server: &str,
        username: &str,
        route: Option<Arc<Route>>,
        timeout: Duration,
    ) -> Self {
        Self(Arc::new(Inner {
            local,
            server: server.to_owned(),
            username: username.to_owned(),
            key: admin_key(server, username),
            route,
            timeout,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        }))
    }

    /// This node's own admin session (connected only while it holds the lease on a cluster
    /// node).
    pub fn local(&self) -> &Moderator {
        &self.0.local
    }

    /// Asks for `action` on the session of registered user `user`, here or on the node holding
    /// the admin session; its [`Outcome`] goes to `reply` (if given). Never waits.
    pub fn submit(
        &self,
        action: Action,
        user: u64,
        reply: Option<mpsc::Sender<Outcome>>,
    ) -> Result<(), AdminError> {
        let Some(route) = self.0.route.clone() else {
            return self.0.local.submit(action, user, reply);
        };
        if route.holder(&self.0.key) == Owner::Here {
            return self.0.local.submit(action, user, reply);
        }
        let permit = self
            .0
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| AdminError::Overloaded)?;
        let inner = self.0.clone();
        tokio::spawn(
            async move {
                let result = inner.routed(&route, action, user).await;
                drop(permit);
                if let Some(tx) = reply {
                    // A console that is gone or not reading does not hold up the others.
                    let _ = tx.try_send(Outcome {
                        user,
                        action,
                        result,
                    });
                }
            }
            .in_current_span(),
        );
        Ok(())
    }

    /// Actions not finished yet: this node's session's, and those on their way to another node.
    pub fn outstanding(&self) -> usize {
        self.0.local.outstanding() + IN_FLIGHT - self.0.in_flight.available_permits()
    }

    /// The node holding the admin session now (`None`: nobody known), on a cluster node.
    pub fn holder(&self) -> Option<String> {
        let route = self.0.route.as_ref()?;
        match route.holder(&self.0.key) {
            Owner::Here => Some(route.node_id().to_owned()),
            Owner::Node(n) => Some(n),
            Owner::Unknown => None,
        }
    }

    /// Whether this is a cluster node's (the session is leased, moves may be routed).
    pub fn clustered(&self) -> bool {
        self.0.route.is_some()
    }

    /// Whether `other` is the same session.
    pub fn same(&self, other: &Admin) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// What the lease driver needs of it (`app`: its PTT server's tenant; `calls`: this node's
    /// console calls up now).
    pub fn lease(&self, app: &str, calls: Arc<AtomicUsize>) -> AdminSession {
        self.0
            .local
            .lease(&self.0.server, app, &self.0.username, calls)
    }

    /// Whether this is `server`'s admin account `username`.
    fn is(&self, server: &str, username: &str) -> bool {
        self.0.server == server && self.0.username == username
    }
}

impl Inner {
    /// Carries an action out wherever the admin session is, retrying until the move timeout.
    async fn routed(&self, route: &Route, action: Action, user: u64) -> Result<(), AdminError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let why = match route.holder(&self.key) {
                Owner::Here => return self.here(action, user, self.timeout).await,
                Owner::Node(node) => match self.ask(route, &node, action, user, deadline).await {
                    Ok(MoveAnswer::Done) => return Ok(()),
                    Ok(MoveAnswer::Failed { error }) => return Err(AdminError::Failed(error)),
                    Ok(MoveAnswer::NotHolder) => AdminError::NoHolder(self.server.clone()),
                    // The whole wait is spent: the holder may still do it, nothing to retry.
                    Err(e @ RouteError::Timeout(..)) => return Err(e.into()),
                    // Gone (killed: its lease lapses soon), or NATS away for a moment.
                    Err(e) => e.into(),
                },
                Owner::Unknown => AdminError::NoHolder(self.server.clone()),
            };
            if Instant::now() + RETRY >= deadline {
                if matches!(why, AdminError::NoHolder(_)) {
                    metrics::counter!("pttbridge_cluster_routed_total", "kind" => "move", "outcome" => "no_holder").increment(1);
                }
                // Every move of a call fails alike while nobody holds the session: lines limited.
                if UNREACHABLE.allow() {
                    warn!(server = %esc(&self.server), error = %esc(why.to_string()), "a console's move could not reach the admin session");
                }
                return Err(why);
            }
            debug!(error = %esc(why.to_string()), "admin session not reachable; asking again");
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Carries an action out with this node's own session, waiting at most `wait` for it.
    async fn here(&self, action: Action, user: u64, wait: Duration) -> Result<(), AdminError> {
        let (tx, mut rx) = mpsc::channel(1);
        self.local.submit(action, user, Some(tx))?;
        // The session finishes every action by its own timeout; the margin only covers a
        // session that stopped.
        match tokio::time::timeout(wait + RETRY, rx.recv()).await {
            Ok(Some(outcome)) => outcome.result,
            Ok(None) => Err(AdminError::Failed(
                "the bridge's admin session has stopped".into(),
            )),
            Err(_) => Err(AdminError::Failed(format!(
                "the PTT server did not confirm within {} ms",
                wait.as_millis()
            ))),
        }
    }

    /// Asks node `node` to carry an action out; waits for its answer until `deadline` plus
    /// the route timeout.
    async fn ask(
        &self,
        route: &Route,
        node: &str,
        action: Action,
        user: u64,
        deadline: Instant,
    ) -> Result<MoveAnswer, RouteError> {
        let work = deadline.saturating_duration_since(Instant::now());
        let ask = MoveAsk {
            server: self.server.clone(),
            admin: self.username.clone(),
            user,
            action,
            wait_ms: work.as_millis() as u64,
        };
        let body = serde_json::to_vec(&ask).unwrap_or_default();
        let answer = route.request_move(node, body.into(), work).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| RouteError::Failed(node.to_owned(), format!("unreadable answer: {e}")))
    }

    /// What this node answers another node's ask.
    async fn serve(&self, ask: MoveAsk) -> MoveAnswer {
        let here = |r: &Option<Arc<Route>>| {
            r.as_ref()
                .is_some_and(|r| r.holder(&self.key) == Owner::Here)
        };
        if !here(&self.route) {
            return MoveAnswer::NotHolder;
        }
        let wait = Duration::from_millis(ask.wait_ms).min(self.timeout);
        match self.here(ask.action, ask.user, wait).await {
            Ok(()) => MoveAnswer::Done,
            // Lost the lease meanwhile: the asking node tries the next holder.
            Err(_) if !here(&self.route) => MoveAnswer::NotHolder,
            Err(e) => MoveAnswer::Failed {
                error: e.to_string(),
            },
        }
    }
}

/// A node's ask to the node holding an admin session (JSON on `pttbridge.route.<node>.move`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MoveAsk {
    /// The PTT server id.
    server: String,
    /// The admin account.
    admin: String,
    /// The registered user the action is for.
    user: u64,
    action: Action,
    /// How long the asking node waits for the outcome (ms).
    wait_ms: u64,
}

/// The holder's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum MoveAnswer {
    /// Carried out (or already so).
    Done,
    /// This node does not hold the admin session (any more): ask the holder.
    NotHolder,
    /// Carried out and failed: the console is told `error`.
    Failed {
        /// Why.
        error: String,
    },
}

/// Answers other nodes' moves for the admin sessions this node holds.
#[derive(Debug)]
pub(crate) struct AdminServer {
    pub admins: Vec<Admin>,
}

impl AdminHost for AdminServer {
    fn handle(self: Arc<Self>, origin: String, payload: Bytes) -> BoxFuture<Bytes> {
        Box::pin(async move {
            let answer = match serde_json::from_slice::<MoveAsk>(&payload) {
                Err(e) => {
                    metrics::counter!("pttbridge_cluster_routed_total", "kind" => "move", "outcome" => "bad_request").increment(1);
                    if UNREADABLE.allow() {
                        warn!(from = %esc(&origin), error = %esc(e.to_string()), "unreadable move from another node");
                    }
                    MoveAnswer::Failed {
                        error: "unreadable request".into(),
                    }
                }
                Ok(ask) => match self.admins.iter().find(|a| a.is(&ask.server, &ask.admin)) {
                    Some(admin) => admin.0.serve(ask).await,
                    None => MoveAnswer::Failed {
                        error: format!(
                            "node has no console admin session {} on PTT server {}",
                            ask.admin, ask.server
                        ),
                    },
                },
            };
            Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_and_answers_as_json() {
        let ask = MoveAsk {
            server: "local".into(),
            admin: "SuperUser".into(),
            user: 7,
            action: Action::Move {
                session: 12,
                channel: 3,
            },
            wait_ms: 5000,
        };
        let json = serde_json::to_value(&ask).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"server": "local", "admin": "SuperUser", "user": 7,
                "action": {"move": {"session": 12, "channel": 3}}, "wait_ms": 5000})
        );
        assert_eq!(serde_json::from_value::<MoveAsk>(json).unwrap(), ask);
        let mute = Action::Mute {
            session: 1,
            mute: true,
        };
        assert_eq!(
            serde_json::to_value(mute).unwrap(),
            serde_json::json!({"mute": {"session": 1, "mute": true}})
        );
        for (answer, text) in [
            (MoveAnswer::Done, r#"{"result":"done"}"#),
            (MoveAnswer::NotHolder, r#"{"result":"not_holder"}"#),
            (
                MoveAnswer::Failed {
                    error: "denied".into(),
                },
                r#"{"result":"failed","error":"denied"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&answer).unwrap(), text);
            assert_eq!(serde_json::from_str::<MoveAnswer>(text).unwrap(), answer);
        }
    }

    #[test]
    fn errors_say_what_the_console_is_told() {
        assert_eq!(
            AdminError::NoHolder("local".into()).to_string(),
            "no bridge node holds the admin session of PTT server local now"
        );
        assert_eq!(
            AdminError::from(RouteError::Timeout("node-b".into(), 7000)).to_string(),
            "the bridge node holding the admin session did not answer: node node-b did not answer within 7000 ms"
        );
    }
}
