//! Routing between cluster nodes over NATS request/reply (issue 22, step 2): a request that
//! reaches a node which does not own its target goes to the owner.
//!
//! Subjects (every node subscribes to its own and to the shared one):
//!
//! - `pttbridge.route.<node>.rtc`: RTCPeer signalling of a connection relayed to `<node>` (the
//!   meeting side's `remote` module gives the payloads their meaning); answered with an ack.
//! - `pttbridge.route.<node>.push.<conn>`: what the owner sends back to relayed connection
//!   `<conn>` of `<node>` (replies and pushes, in order).
//! - `pttbridge.route.cmd`: platform commands (kickout, trans-cmd, invite) no local side could
//!   carry out, scattered to every node; each answers whether it carried it out ([`Gather`]).
//! - `pttbridge.route.who`: which node has a meeting user registered (a call to a user who is
//!   not registered here), gathered the same way.
//! - `pttbridge.route.<node>.move`: a move or mute for the console admin session `<node>` holds
//!   (the console side's `admin` module gives the payloads their meaning); answered with its
//!   outcome.
//!
//! Trust: a node acts on these subjects for any node, because only nodes hold the cluster's NATS
//! credentials (`[nats]`); what travels is only what the asking node's client was already
//! authenticated and allowed to ask there (no SIDs, secrets or tokens).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use logsafe::esc;
use serde::{Deserialize, Serialize};
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::ClusterConfig;
use super::node::ClusterStatus;
use crate::events::config::NatsConfig;
use crate::hub::command::{
    BoxFuture, CommandError, CommandRouter, Delivered, RemoteCommands, SideCommand,
};
use crate::hub::event::Side;

/// Why a routed request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// This node is not (yet) connected to NATS.
    #[error("this node is not connected to the cluster's NATS")]
    NotConnected,
    /// Nobody listens on the node's subject: it is not running.
    #[error("node {0} is not running")]
    NoNode(String),
    /// The node did not answer in time.
    #[error("node {0} did not answer within {1} ms")]
    Timeout(String, u64),
    /// NATS refused the request.
    #[error("routing to node {0} failed: {1}")]
    Failed(String, String),
}

impl RouteError {
    /// The `outcome` label of `pttbridge_cluster_routed_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::NoNode(_) => "no_node",
            Self::Timeout(..) => "timeout",
            Self::Failed(..) => "failed",
        }
    }
}

/// Where the owner of a target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node (or no cluster: everything is here).
    Here,
    /// Another node, by id.
    Node(String),
    /// Nobody holds it now (free, unknown, or being taken over).
    Unknown,
}

/// What a node serving relayed RTCPeer connections implements (the meeting side).
pub trait RtcHost: Send + Sync + std::fmt::Debug + 'static {
    /// Handles one message of node `origin` for a relayed connection; the ack to answer with.
    fn handle(self: Arc<Self>, origin: String, payload: Bytes) -> BoxFuture<Bytes>;

    /// What another node may know of meeting user `user` registered here (its app and
    /// account), or `None` when it is not registered here.
    fn whois(&self, user: i64) -> Option<serde_json::Value>;
}

/// What a node holding console admin sessions implements (the console side).
pub trait AdminHost: Send + Sync + std::fmt::Debug + 'static {
    /// Carries out one move or mute asked by node `origin`; the answer to send back.
    fn handle(self: Arc<Self>, origin: String, payload: Bytes) -> BoxFuture<Bytes>;
}

/// Most messages of other nodes handled at once.
const MAX_IN_FLIGHT: usize = 4096;

/// The subject prefix of every routed message.
const PREFIX: &str = "pttbridge.route";
/// Relayed pushes waiting for A's socket writer, per connection (beyond: NATS drops them as a
/// slow consumer would).
pub const PUSH_QUEUE: usize = 512;

/// Routing over the cluster's NATS connection. See the module docs.
#[derive(Debug)]
pub struct Route {
    node_id: String,
    timeout: Duration,
    client: OnceLock<async_nats::Client>,
    status: OnceLock<Arc<ClusterStatus>>,
    rtc: OnceLock<Arc<dyn RtcHost>>,
    admin: OnceLock<Arc<dyn AdminHost>>,
    commands: CommandRouter,
    /// Nodes heard from on the command subject (those named in the lease table are known too).
    peers: Mutex<BTreeSet<String>>,
    /// Other nodes' messages being handled now (bounded: beyond it they get no answer and
    /// time out on their node, counted as `overloaded`).
    busy: Arc<tokio::sync::Semaphore>,
}

impl Route {
    /// Starts routing for node `config.node_id`: connects in the background (retrying),
    /// then serves this node's subjects. Commands from other nodes run on `commands`' local
    /// sides only.
    pub fn start(
        config: &ClusterConfig,
        nats: &NatsConfig,
        commands: CommandRouter,
    ) -> anyhow::Result<Arc<Self>> {
        let super::config::Connection {
            node_id,
            url,
            options,
        } = config.connection(nats)?;
        let options = options
            .retry_on_initial_connect()
            .request_timeout(Some(config.route_timeout()));
        let route = Arc::new(Self {
            node_id: node_id.clone(),
            timeout: config.route_timeout(),
            client: OnceLock::new(),
            status: OnceLock::new(),
            rtc: OnceLock::new(),
            admin: OnceLock::new(),
            commands,
            peers: Mutex::default(),
            busy: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        });
        let r = route.clone();
        tokio::spawn(
            async move {
                let urls: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).collect();
                let client = loop {
                    match options.clone().connect(urls.clone()).await {
                        Ok(c) => break c,
                        Err(e) => {
                            warn!(error = %esc(e.to_string()), "route: cannot reach NATS; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                };
                let _ = r.client.set(client.clone());
                info!("routing to other nodes ready");
                tokio::join!(
                    r.clone().serve_rtc(client.clone()),
                    r.clone().serve_moves(client.clone()),
                    r.clone().serve_commands(client.clone()),
                    r.serve_who(client)
                );
            }
            .instrument(info_span!("route", node = %node_id)),
        );
        Ok(route)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How long a routed request waits for its answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The lease table to look owners up in (the cluster node starts after the sides).
    pub fn set_status(&self, status: Arc<ClusterStatus>) {
        let _ = self.status.set(status);
    }

    /// Serves relayed RTCPeer connections with `host` from now on.
    pub fn set_rtc_host(&self, host: Arc<dyn RtcHost>) {
        let _ = self.rtc.set(host);
    }

    /// Serves moves for the console admin sessions this node holds with `host` from now on.
    pub fn set_admin_host(&self, host: Arc<dyn AdminHost>) {
        let _ = self.admin.set(host);
    }

    /// The node owning PTT account `account` of `server`, as the lease table says now.
    pub fn owner_of(&self, server: &str, account: &str) -> Owner {
        self.holder(&super::node::account_key(server, account))
    }

    /// The node holding lease `key`, as the lease table says now.
    pub fn holder(&self, key: &str) -> Owner {
        let Some(status) = self.status.get() else {
            return Owner::Unknown;
        };
        match status.owner(key) {
            Some(node) if node == self.node_id => Owner::Here,
            Some(node) => Owner::Node(node),
            None => Owner::Unknown,
        }
    }

    fn client(&self) -> Result<&async_nats::Client, RouteError> {
        self.client.get().ok_or(RouteError::NotConnected)
    }

    /// Sends one relayed-connection message to node `to` and waits (bounded) for its ack;
    /// `kind` labels it in the metrics (`rtc`, `rtc_ping`).
    pub async fn request_rtc(
        &self,
        to: &str,
        kind: &'static str,
        payload: Bytes,
    ) -> Result<Bytes, RouteError> {
        let span = info_span!("routed", kind, from = %self.node_id, to = %esc(to));
        async {
            let t0 = Instant::now();
            let result = self
                .request(to, node_subject(to, "rtc"), payload, self.timeout)
                .await;
            observe(kind, t0, &result);
            result
        }
        .instrument(span)
        .await
    }

    /// Sends one move or mute to the console admin session node `to` holds and waits for its
    /// outcome: `work` (what the holder may take to carry it out) plus `route_timeout_ms`.
    pub async fn request_move(
        &self,
        to: &str,
        payload: Bytes,
        work: Duration,
    ) -> Result<Bytes, RouteError> {
        let span = info_span!("routed", kind = "move", from = %self.node_id, to = %esc(to));
        async {
            let t0 = Instant::now();
            let result = self
                .request(to, node_subject(to, "move"), payload, work + self.timeout)
                .await;
            observe("move", t0, &result);
            result
        }
        .instrument(span)
        .await
    }

    async fn request(
        &self,
        to: &str,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RouteError> {
        use async_nats::RequestErrorKind;
        let client = self.client()?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ORIGIN, self.node_id.as_str());
        let req = async_nats::Request::new()
            .payload(payload)
            .headers(headers)
            .timeout(Some(timeout));
        match client.send_request(subject, req).await {
            Ok(m) => Ok(m.payload),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::TimedOut => {
                    RouteError::Timeout(to.to_owned(), timeout.as_millis() as u64)
                }
                RequestErrorKind::NoResponders => RouteError::NoNode(to.to_owned()),
                _ => RouteError::Failed(to.to_owned(), e.to_string()),
            }),
        }
    }

    /// Sends `payload` to relayed connection `conn` of node `origin` (a reply or push of it).
    pub async fn push(&self, origin: &str, conn: u64, payload: Bytes) -> Result<(), RouteError> {
        let client = self.client()?;
        client
            .publish(push_subject(origin, conn), payload)
            .await
            .map_err(|e| RouteError::Failed(origin.to_owned(), e.to_string()))
    }

    /// What owners send back to this node's connection `conn`.
    pub async fn pushes(&self, conn: u64) -> Result<async_nats::Subscriber, RouteError> {
        let client = self.client()?;
        let sub = client
            .subscribe(push_subject(&self.node_id, conn))
            .await
            .map_err(|e| RouteError::Failed(self.node_id.clone(), e.to_string()))?;
        // Subscribed before the owner can send anything: flushed so the server knows it.
        client
            .flush()
            .await
            .map_err(|e| RouteError::Failed(self.node_id.clone(), e.to_string()))?;
        Ok(sub)
    }

    async fn serve_rtc(self: Arc<Self>, client: async_nats::Client) {
        self.serve_node(client, "rtc", |me, origin, payload| {
            Some(me.rtc.get()?.clone().handle(origin, payload))
        })
        .await;
    }

    async fn serve_moves(self: Arc<Self>, client: async_nats::Client) {
        self.serve_node(client, "move", |me, origin, payload| {
            Some(me.admin.get()?.clone().handle(origin, payload))
        })
        .await;
    }

    /// Answers requests to this node (`pttbridge.route.<node>.<kind>`): `handle` gives the
    /// answer's future (`None`: nothing here serves them yet, no answer).
    async fn serve_node<F>(
        self: Arc<Self>,
        client: async_nats::Client,
        kind: &'static str,
        handle: F,
    ) where
        F: Fn(&Self, String, Bytes) -> Option<BoxFuture<Bytes>>,
    {
        let mut sub = match client.subscribe(node_subject(&self.node_id, kind)).await {
            Ok(s) => s,
            Err(e) => {
                warn!(kind, error = %esc(e.to_string()), "route: cannot subscribe; requests to this node are refused");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let origin = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(ORIGIN))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let Some(permit) = self.permit(kind) else {
                continue;
            };
            let Some(answer) = handle(&self, origin.clone(), msg.payload) else {
                continue;
            };
            let client = client.clone();
            let span = info_span!("routed", kind, from = %esc(&origin), to = %self.node_id);
            // One task per message: a slow room (or move) does not hold up the others. Messages
            // of one relayed connection stay in order because its node sends the next only
            // after this ack.
            tokio::spawn(
                async move {
                    let ack = answer.await;
                    if let Err(e) = client.publish(reply, ack).await {
                        debug!(error = %esc(e.to_string()), "route: cannot answer");
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    /// Answers what other nodes ask every node (`subject`): `answer` reads an ask into the
    /// node asking and what this node says; its own asks are not answered.
    async fn serve_asks<F>(
        self: Arc<Self>,
        client: async_nats::Client,
        kind: &'static str,
        answer: F,
    ) where
        F: Fn(&Self, &[u8]) -> Option<(String, BoxFuture<CommandOutcome>)>,
    {
        let mut sub = match client.subscribe(format!("{PREFIX}.{kind}")).await {
            Ok(s) => s,
            Err(e) => {
                warn!(kind, error = %esc(e.to_string()), "route: cannot subscribe");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let Some((from, outcome)) = answer(&self, &msg.payload) else {
                metrics::counter!("pttbridge_cluster_routed_total", "kind" => label(kind), "outcome" => "bad_request").increment(1);
                continue;
            };
            if from == self.node_id {
                // Our own ask: this node was asked already.
                continue;
            }
            self.heard(&from);
            let Some(permit) = self.permit(label(kind)) else {
                continue;
            };
            let (client, me) = (client.clone(), self.node_id.clone());
            let span = info_span!("routed", kind, from = %esc(&from), to = %me);
            tokio::spawn(
                async move {
                    let outcome = outcome.await;
                    debug!(?outcome, "answered another node");
                    let answer = CommandAnswer { node: me, outcome };
                    let body = serde_json::to_vec(&answer).unwrap_or_default();
                    let _ = client.publish(reply, body.into()).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    async fn serve_commands(self: Arc<Self>, client: async_nats::Client) {
        self.serve_asks(client, "cmd", |me, payload| {
            let ask = serde_json::from_slice::<CommandAsk>(payload).ok()?;
            let commands = me.commands.clone();
            let outcome: BoxFuture<CommandOutcome> = Box::pin(async move {
                CommandOutcome::from(commands.execute_local(ask.side, ask.cmd).await)
            });
            Some((ask.from, outcome))
        })
        .await;
    }

    async fn serve_who(self: Arc<Self>, client: async_nats::Client) {
        self.serve_asks(client, "who", |me, payload| {
            let ask = serde_json::from_slice::<WhoAsk>(payload).ok()?;
            let found = me.rtc.get().and_then(|h| h.whois(ask.user));
            let outcome: BoxFuture<CommandOutcome> = Box::pin(async move {
                match found {
                    Some(v) => CommandOutcome::Done(v.to_string()),
                    None => CommandOutcome::NotHere,
                }
            });
            Some((ask.from, outcome))
        })
        .await;
    }

    /// The node where meeting user `user` is registered, and what it says of the user (its
    /// app and account), asked of every other node; `None` when no node has it.
    pub async fn find_user(&self, user: i64) -> Option<(String, serde_json::Value)> {
        let body = serde_json::to_vec(&WhoAsk {
            from: self.node_id.clone(),
            user,
        })
        .ok()?;
        match self.ask_all("who", body).await? {
            Decision::Done { node, terminal } => {
                Some((node, serde_json::from_str(&terminal).ok()?))
            }
            _ => None,
        }
    }

    /// A place among the messages handled now, or `None` (counted) when all are taken.
    fn permit(&self, kind: &'static str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.busy.clone().try_acquire_owned().ok();
        if permit.is_none() {
            metrics::counter!("pttbridge_cluster_routed_total", "kind" => kind, "outcome" => "overloaded").increment(1);
        }
        permit
    }

    fn heard(&self, node: &str) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: node ids are names an operator gave; a flood of made-up ones stops here.
        if peers.len() < 256 {
            peers.insert(node.to_owned());
        }
    }

    /// The other nodes this one knows: owners in the lease table and nodes heard from.
    fn known_peers(&self) -> BTreeSet<String> {
        let mut out = self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(s) = self.status.get() {
            out.extend(s.owners());
        }
        out.remove(&self.node_id);
        out
    }

    async fn scatter(
        &self,
        side: Side,
        cmd: SideCommand,
    ) -> Option<Result<Delivered, CommandError>> {
        let ask = CommandAsk {
            from: self.node_id.clone(),
            side,
            cmd,
        };
        let body = serde_json::to_vec(&ask).ok()?;
        let decision = self.ask_all("cmd", body).await?;
        if let Decision::Done { node, .. } = &decision {
            info!(node = %esc(node), "command carried out by another node");
        }
        decision.into_result()
    }

    /// Asks every other node (`pttbridge.route.<kind>`) and gathers their answers into a
    /// [`Decision`]; `None` when the ask could not be sent.
    async fn ask_all(&self, kind: &'static str, body: Vec<u8>) -> Option<Decision> {
        let span = info_span!("routed", kind, from = %self.node_id, to = "*");
        async {
            let t0 = Instant::now();
            let client = self.client().ok()?;
            let inbox = client.new_inbox();
            let mut sub = client.subscribe(inbox.clone()).await.ok()?;
            client
                .publish_with_reply(format!("{PREFIX}.{kind}"), inbox, body.into())
                .await
                .ok()?;
            let mut gather = Gather::new(self.known_peers());
            let deadline = tokio::time::Instant::now() + self.timeout;
            let decision = loop {
                let next = tokio::time::timeout_at(deadline, sub.next()).await;
                let Ok(Some(msg)) = next else {
                    break gather.timed_out();
                };
                let Ok(answer) = serde_json::from_slice::<CommandAnswer>(&msg.payload) else {
                    continue;
                };
                self.heard(&answer.node);
                if let Some(d) = gather.on_answer(&answer.node, answer.outcome) {
                    break d;
                }
            };
            let _ = sub.unsubscribe().await;
            let outcome = match &decision {
                Decision::Done { .. } => "ok",
                Decision::Refused { .. } => "refused",
                Decision::NobodyKnows { .. } => "not_found",
            };
            let kind = label(kind);
            metrics::counter!("pttbridge_cluster_routed_total", "kind" => kind, "outcome" => outcome).increment(1);
            metrics::histogram!("pttbridge_cluster_route_seconds", "kind" => kind)
                .record(t0.elapsed().as_secs_f64());
            Some(decision)
        }
        .instrument(span)
        .await
    }
}

impl RemoteCommands for Route {
    fn execute(
        self: Arc<Self>,
        side: Side,
        cmd: SideCommand,
    ) -> BoxFuture<Option<Result<Delivered, CommandError>>> {
        Box::pin(async move { self.scatter(side, cmd).await })
    }
}

/// The header naming the node a relayed-connection message comes from.
pub const ORIGIN: &str = "Pttbridge-Origin";

/// The metrics' `kind` of an ask's subject suffix.
fn label(kind: &'static str) -> &'static str {
    if kind == "cmd" { "command" } else { kind }
}

/// The subject of requests of `kind` (`rtc`, `move`) to node `node`.
fn node_subject(node: &str, kind: &str) -> String {
    format!("{PREFIX}.{node}.{kind}")
}

fn push_subject(node: &str, conn: u64) -> String {
    format!("{PREFIX}.{node}.push.{conn}")
}

fn observe(kind: &'static str, t0: Instant, result: &Result<Bytes, RouteError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    metrics::counter!("pttbridge_cluster_routed_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("pttbridge_cluster_route_seconds", "kind" => kind)
        .record(t0.elapsed().as_secs_f64());
}

/// A command scattered to the other nodes.
#[derive(Debug, Serialize, Deserialize)]
struct CommandAsk {
    from: String,
    side: Side,
    cmd: SideCommand,
}

/// Who has meeting user `user` registered?
#[derive(Debug, Serialize, Deserialize)]
struct WhoAsk {
    from: String,
    user: i64,
}

/// One node's answer to a scattered command (or another ask).
#[derive(Debug, Serialize, Deserialize)]
struct CommandAnswer {
    node: String,
    outcome: CommandOutcome,
}

/// What a node did with a scattered command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    /// Carried out, on this terminal.
    Done(String),
    /// The target is not here (not online, or no such group).
    NotHere,
    /// The target is here but the command failed: the error to give.
    Refused(String),
}

impl From<Result<Delivered, CommandError>> for CommandOutcome {
    fn from(r: Result<Delivered, CommandError>) -> Self {
        match r {
            Ok(d) => Self::Done(d.terminal),
            Err(
                CommandError::NotOnline | CommandError::UnknownGroup(_) | CommandError::NoSide(_),
            ) => Self::NotHere,
            Err(e) => Self::Refused(e.to_string()),
        }
    }
}

/// How a scatter ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A node carried it out.
    Done {
        /// Which.
        node: String,
        /// Its terminal.
        terminal: String,
    },
    /// A node has the target but failed.
    Refused {
        /// Which.
        node: String,
        /// Why.
        error: String,
    },
    /// Every node asked said it does not know the target (or did not answer in time).
    NobodyKnows {
        /// Known nodes that did not answer before the deadline.
        silent: Vec<String>,
    },
}

impl Decision {
    fn into_result(self) -> Option<Result<Delivered, CommandError>> {
        match self {
            Self::Done { terminal, .. } => Some(Ok(Delivered { terminal })),
            Self::Refused { error, .. } => Some(Err(CommandError::Failed(error))),
            Self::NobodyKnows { .. } => None,
        }
    }
}

/// Scatter/gather of one command, sans-IO: the first node that has the target decides; "not
/// found" only once every known node said it does not know it, or at the deadline (a node
/// that is not known yet — it holds no lease and was never heard from — can only answer
/// before it).
#[derive(Debug)]
pub struct Gather {
    waiting: BTreeSet<String>,
    /// Whether the set of nodes is complete enough to decide before the deadline.
    known_all: bool,
}

impl Gather {
    /// A scatter to `known` other nodes (possibly more that are not known).
    pub fn new(known: BTreeSet<String>) -> Self {
        Self {
            known_all: !known.is_empty(),
            waiting: known,
        }
    }

    /// Node `node` answered; the decision when there is one now.
    pub fn on_answer(&mut self, node: &str, outcome: CommandOutcome) -> Option<Decision> {
        self.waiting.remove(node);
        match outcome {
            CommandOutcome::Done(terminal) => Some(Decision::Done {
                node: node.to_owned(),
                terminal,
            }),
            CommandOutcome::Refused(error) => Some(Decision::Refused {
                node: node.to_owned(),
                error,
            }),
            CommandOutcome::NotHere if self.known_all && self.waiting.is_empty() => {
                Some(Decision::NobodyKnows { silent: Vec::new() })
            }
            CommandOutcome::NotHere => None,
        }
    }

    /// The deadline passed.
    pub fn timed_out(&mut self) -> Decision {
        Decision::NobodyKnows {
            silent: std::mem::take(&mut self.waiting).into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn not_found_only_after_every_known_node_said_so() {
        let mut g = Gather::new(nodes(&["b", "c"]));
        assert_eq!(g.on_answer("b", CommandOutcome::NotHere), None);
        // A node answering twice does not count for another.
        assert_eq!(g.on_answer("b", CommandOutcome::NotHere), None);
        assert_eq!(
            g.on_answer("c", CommandOutcome::NotHere),
            Some(Decision::NobodyKnows { silent: vec![] })
        );
    }

    #[test]
    fn the_node_that_has_the_target_decides_at_once() {
        let mut g = Gather::new(nodes(&["b", "c"]));
        assert_eq!(
            g.on_answer("c", CommandOutcome::Done("t7".into())),
            Some(Decision::Done {
                node: "c".into(),
                terminal: "t7".into()
            })
        );
        let mut g = Gather::new(nodes(&["b"]));
        assert_eq!(
            g.on_answer("b", CommandOutcome::Refused("denied".into())),
            Some(Decision::Refused {
                node: "b".into(),
                error: "denied".into()
            })
        );
    }

    #[test]
    fn unknown_members_or_silent_nodes_wait_for_the_deadline() {
        // Nobody known: an answer "not here" cannot mean "nobody", another node may still answer.
        let mut g = Gather::new(BTreeSet::new());
        assert_eq!(g.on_answer("x", CommandOutcome::NotHere), None);
        assert_eq!(g.timed_out(), Decision::NobodyKnows { silent: vec![] });
        let mut g = Gather::new(nodes(&["b", "c"]));
        assert_eq!(g.on_answer("b", CommandOutcome::NotHere), None);
        assert_eq!(
            g.timed_out(),
            Decision::NobodyKnows {
                silent: vec!["c".into()]
            }
        );
    }

    #[test]
    fn subjects_name_the_node_and_connection() {
        assert_eq!(node_subject("node-b", "rtc"), "pttbridge.route.node-b.rtc");
        assert_eq!(
            node_subject("node-b", "move"),
            "pttbridge.route.node-b.move"
        );
        assert_eq!(push_subject("node-a", 7), "pttbridge.route.node-a.push.7");
    }

    #[test]
    fn errors_name_their_outcome() {
        assert_eq!(RouteError::Timeout("b".into(), 2000).outcome(), "timeout");
        assert_eq!(
            RouteError::Timeout("b".into(), 2000).to_string(),
            "node b did not answer within 2000 ms"
        );
        assert_eq!(RouteError::NoNode("b".into()).outcome(), "no_node");
    }
}
