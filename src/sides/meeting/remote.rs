//! RTCPeer connections relayed between cluster nodes (issue 22, step 2). A participant
//! signalled on node A who dials a dial-in whose PTT account node B owns is served by B: the
//! call, the room and its media are B's (B's media address is in the SDP answers), and the
//! participant's client sees nothing of it.
//!
//! - **A (origin)**, a [`Relay`]: at the `call.doInvite` of such a dial-in, A opens the
//!   connection on B (the user A authenticated, and the room it dials from — which moves to B,
//!   so it must have no other member on A), leaves A's copy of the room, and from then on
//!   sends every request of the socket to B as it came (`Frame`), one at a time, each
//!   acknowledged within `cluster.route_timeout_ms` (else the protocol's error reply). What B
//!   sends back (replies and pushes, in order) arrives on the connection's push subject and is
//!   written to the socket. A pings B every second; two pings unanswered (B died) → the client
//!   gets the hang-up push (`cancel`, reason `offline`) and the channel's `ExitRoom`, and the
//!   connection is A's alone again (not in a room).
//! - **B (owner)**, the [`Host`]: keeps the relayed connection as a connection of its own whose
//!   outbox publishes to A; lets it go (ending its calls and link) when A closes it, or after
//!   5 s without a word from A (A died).
//!
//! Bounded: a connection has at most one relay; B counts relayed connections against
//! `meeting.max_connections`; the push queue is the socket's outbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use logsafe::{RateLimit, esc};
use rtcpeer::bean::{Client, Room};
use rtcpeer::id::Id;
use rtcpeer::push::{self, Push};
use rtcpeer::{Frame, Request, code, reply};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, warn};

use super::events::party;
use super::outbox::{OUTBOX, push_outbox};
use super::refusal::Refusal;
use super::registrar::{Conn, Registered};
use super::room::RoomCmd;
use super::rooms::RoomMeta;
use super::switchboard::Switchboard;
use crate::cluster::route::{Owner, Route, RouteError, RtcHost};
use crate::hub::EventKind;
use crate::hub::command::BoxFuture;

/// A relayed connection's node is pinged this often…
const PING_EVERY: Duration = Duration::from_secs(1);
/// …and given up after this many pings in a row without an answer.
const MISSED_PINGS: u32 = 2;
/// The owner lets a relayed connection go after this long without a word from its node.
const ORIGIN_SILENCE: Duration = Duration::from_secs(5);

/// One message from the origin about one of its connections.
#[derive(Debug, Serialize, Deserialize)]
struct Msg {
    conn: u64,
    #[serde(flatten)]
    op: Op,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    /// Serve this connection: its user (authenticated on the origin), and the room it dials
    /// from (`entered`: it is in it).
    Open {
        user: Id,
        /// The session's app and account (never its SID): the user id must be the same
        /// account's on the owner.
        app: String,
        account: String,
        name: Option<String>,
        operator: bool,
        device_type: Option<String>,
        room: Option<Box<Room>>,
        entered: bool,
    },
    /// A request frame as the client sent it.
    Frame { text: String },
    /// The origin is still there.
    Ping,
    /// The client went.
    Close,
}

/// The owner's answer to a [`Msg`]: taken, or refused with the protocol's code.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<(i64, String)>,
}

/// What the owner sends back on a relayed connection's push subject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Back {
    /// A reply or push for the client.
    Frame(Value),
    /// The owner ended the connection (a kickout): the socket closes.
    End(String),
}

fn encode<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// What an ack says: taken, or the owner's refusal (an answer that is no ack is a refusal too).
fn read_ack(ack: &[u8]) -> Result<(), Refusal> {
    match serde_json::from_slice::<Ack>(ack) {
        Ok(Ack { refused: None }) => Ok(()),
        Ok(Ack {
            refused: Some((c, why)),
        }) => Err(Refusal::new(c, why)),
        Err(_) => Err(Refusal::new(
            code::INTERNAL,
            "the node owning the channel answered with something else than an ack",
        )),
    }
}

fn unreachable(e: RouteError) -> Refusal {
    Refusal::new(code::INTERNAL, e.to_string())
}

// ---- origin (A) -------------------------------------------------------------------------------

/// How a relay ended.
#[derive(Debug)]
pub struct Ended {
    /// The owner ended the connection (kickout): the socket closes too.
    pub close: bool,
    /// Why (logged).
    pub reason: String,
}

/// A connection of this node served by another node. See the module docs.
#[derive(Debug)]
pub struct Relay {
    route: Arc<Route>,
    node: String,
    conn: u64,
    task: tokio::task::JoinHandle<()>,
    ended: oneshot::Receiver<Ended>,
}

/// The node that should serve the `call.doInvite` `req` of user `me`, when that is another
/// node: the one holding the dialled channel's PTT account, or the one where the called user is
/// registered (asked of every node when it is not registered here). The connection then goes
/// there. `None`: served here (which refuses what it cannot do).
pub async fn route_for(sb: &Switchboard, me: Option<Id>, req: &Request) -> Option<String> {
    let (Request::DoInvite(r), Some(me)) = (req, me) else {
        return None;
    };
    let route = sb.route.get()?;
    let target = r.peers.target_user_id;
    if !sb.state().rooms.may_enter(r.room_id, me) {
        return None;
    }
    if let Some(dial) = sb.dial_target(target) {
        return match route.owner_of(&dial.account.server, &dial.account.username) {
            Owner::Node(node) => Some(node),
            Owner::Here | Owner::Unknown => None,
        };
    }
    if target == me || sb.state().registry.contains(target) {
        return None;
    }
    let (node, who) = route.find_user(target).await?;
    let (app, account) = (who["app"].as_str()?, who["account"].as_str()?);
    // The id must mean the same account here, or the caller would reach someone else.
    if let Err(why) = sb
        .accounts
        .lock()
        .adopt(app, account, target, |id| sb.dial_target(id).is_some())
    {
        info!(user = target, to = %esc(&node), why = %esc(&why), "called user's id is another account's here: not relayed");
        return None;
    }
    Some(node)
}

impl Relay {
    /// Opens `conn` on node `node` for the `call.doInvite` `req` (see [`route_for`]):
    /// its room moves there. The relay's pushes go to `outbox`.
    pub async fn open(
        sb: &Arc<Switchboard>,
        conn: &mut Conn,
        node: String,
        req: &Request,
    ) -> Result<Self, Refusal> {
        let Request::DoInvite(invite) = req else {
            return Err(Refusal::new(code::INTERNAL, "only a call opens a relay"));
        };
        let route = sb
            .route
            .get()
            .cloned()
            .ok_or_else(|| Refusal::new(code::INTERNAL, "not a cluster node"))?;
        let me = conn
            .user
            .ok_or_else(|| Refusal::new(code::UNAUTHORIZED, "not registered"))?;
        let room_id = invite.room_id;
        let info = sb.state().rooms.meta(room_id).map(RoomMeta::bean);
        let entered = conn.room == Some(room_id);
        if let Some(h) = sb.room(room_id) {
            let (tx, rx) = oneshot::channel();
            let _ = h.send(RoomCmd::Occupancy(tx)).await;
            let members = rx.await.unwrap_or(0);
            if members > usize::from(entered) {
                return Err(Refusal::new(
                    code::CONFLICT,
                    format!(
                        "room {room_id} has other members here, and the channel is hosted by node {node}: call it from a room of your own"
                    ),
                ));
            }
        }
        let session = conn
            .sid
            .as_deref()
            .and_then(|sid| sb.accounts.lock().session(sid).cloned())
            .ok_or_else(|| Refusal::new(code::UNAUTHORIZED, "session expired: log in again"))?;
        let mut pushes = route.pushes(conn.id).await.map_err(unreachable)?;
        let open = Msg {
            conn: conn.id,
            op: Op::Open {
                user: me,
                app: session.app_id,
                account: session.user.account.unwrap_or_default(),
                name: conn.name.clone(),
                operator: conn.operator,
                device_type: sb
                    .state()
                    .registry
                    .get(me)
                    .and_then(|r| r.device_type.clone()),
                room: info.map(Box::new),
                entered,
            },
        };
        let ack = route
            .request_rtc(&node, "rtc", encode(&open))
            .await
            .map_err(unreachable)?;
        read_ack(&ack)?;
        info!(from = %route.node_id(), to = %esc(&node), room = room_id, "connection relayed to the node serving the call");
        // The room is B's now: A's copy closes once empty.
        if entered && let Some(h) = sb.room(room_id) {
            let _ = h.try_send(RoomCmd::Leave {
                client: me,
                conn: conn.id,
                reason: "moved to the node owning the dialled channel",
            });
        }
        conn.room = None;
        let (end_tx, ended) = oneshot::channel();
        let outbox = conn.outbox.clone();
        let dialled = invite.peers.target_user_id;
        let (r, n, c) = (route.clone(), node.clone(), conn.id);
        let task = tokio::spawn(
            async move {
                let (lost_tx, mut lost) = mpsc::channel::<String>(1);
                let pinger = tokio::spawn(ping(r, n, c, lost_tx));
                let end = loop {
                    tokio::select! {
                        m = pushes.next() => {
                            let Some(m) = m else {
                                break Ended { close: false, reason: "push subscription ended".into() };
                            };
                            match serde_json::from_slice::<Back>(&m.payload) {
                                // Replies wait for room in the socket's queue, like local ones.
                                Ok(Back::Frame(v)) => {
                                    if outbox.send(v).await.is_err() {
                                        pinger.abort();
                                        return;
                                    }
                                }
                                Ok(Back::End(reason)) => break Ended { close: true, reason },
                                Err(_) => {
                                    static BAD: RateLimit = RateLimit::warn("bad relayed frame");
                                    if BAD.allow() {
                                        warn!(bytes = m.payload.len(), "relayed frame is not one");
                                    }
                                }
                            }
                        }
                        Some(why) = lost.recv() => {
                            // The hang-up a peer that vanished gets, then the channel leaves.
                            let from = push::From { own_user_id: dialled, own_device_type: None };
                            push_outbox(&outbox, Push::Cancel(push::Ended { from, reason: Some("offline".into()) }).to_value());
                            let client = Client { id: Some(dialled), ..Client::default() };
                            push_outbox(&outbox, Push::ExitRoom(push::Presence { room_id, client, result: None }).to_value());
                            break Ended { close: false, reason: why };
                        }
                    }
                };
                pinger.abort();
                let _ = end_tx.send(end);
            }
            .in_current_span(),
        );
        Ok(Self {
            route,
            node,
            conn: conn.id,
            task,
            ended,
        })
    }

    /// Sends one request frame of the client to the owner; its reply comes back as a push.
    pub async fn forward(&self, text: &str) -> Result<(), Refusal> {
        let msg = Msg {
            conn: self.conn,
            op: Op::Frame {
                text: text.to_owned(),
            },
        };
        let ack = self
            .route
            .request_rtc(&self.node, "rtc", encode(&msg))
            .await
            .map_err(unreachable)?;
        read_ack(&ack)
    }

    /// The client went (or the connection is served here again): the owner lets it go.
    pub async fn close(self) {
        self.task.abort();
        let msg = Msg {
            conn: self.conn,
            op: Op::Close,
        };
        if let Err(e) = self
            .route
            .request_rtc(&self.node, "rtc", encode(&msg))
            .await
        {
            debug!(error = %e, "relayed connection not closed on its node; it lets go by itself");
        }
    }
}

/// Resolves when `relay` ended (never while there is none).
pub async fn ended(relay: &mut Option<Relay>) -> Ended {
    match relay {
        Some(r) => (&mut r.ended).await.unwrap_or(Ended {
            close: false,
            reason: "relay stopped".into(),
        }),
        None => std::future::pending().await,
    }
}

async fn ping(route: Arc<Route>, node: String, conn: u64, lost: mpsc::Sender<String>) {
    let msg = encode(&Msg { conn, op: Op::Ping });
    let mut missed = 0;
    let mut every = tokio::time::interval(PING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match route.request_rtc(&node, "rtc_ping", msg.clone()).await {
            Ok(ack) => {
                if let Err(r) = read_ack(&ack) {
                    let _ = lost.send(format!("node {node}: {}", r.1)).await;
                    return;
                }
                missed = 0;
            }
            Err(e) => {
                missed += 1;
                if missed >= MISSED_PINGS {
                    warn!(to = %esc(&node), error = %e, "the node serving a relayed connection is gone");
                    let _ = lost.send(e.to_string()).await;
                    return;
                }
            }
        }
    }
}

// ---- owner (B) --------------------------------------------------------------------------------

/// The connections this node serves for other nodes. See the module docs.
#[derive(Debug)]
pub struct Host {
    sb: Arc<Switchboard>,
    conns: Mutex<HashMap<(String, u64), Arc<Hosted>>>,
}

#[derive(Debug)]
struct Hosted {
    conn: tokio::sync::Mutex<Conn>,
    seen: Mutex<Instant>,
}

impl Hosted {
    fn touch(&self) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
}

/// Makes `sb` serve connections relayed from other nodes over `route`, and relay its own.
pub fn serve(sb: &Arc<Switchboard>, route: Arc<Route>) {
    let _ = sb.route.set(route.clone());
    route.set_rtc_host(Arc::new(Host {
        sb: sb.clone(),
        conns: Mutex::default(),
    }));
}

impl RtcHost for Host {
    fn whois(&self, user: i64) -> Option<Value> {
        if !self.sb.state().registry.contains(user) {
            return None;
        }
        let (app, account) = self.sb.accounts.lock().account_of(user)?;
        Some(json!({ "app": app, "account": account }))
    }

    fn handle(self: Arc<Self>, origin: String, payload: Bytes) -> BoxFuture<Bytes> {
        Box::pin(async move {
            let ack = match serde_json::from_slice::<Msg>(&payload) {
                Ok(msg) => self.on_msg(origin, msg).await,
                Err(e) => Err(Refusal::new(
                    code::MALFORMED,
                    format!("not a relay message: {e}"),
                )),
            };
            encode(&Ack {
                refused: ack.err().map(|r| (r.0, r.1)),
            })
        })
    }
}

impl Host {
    fn get(&self, key: &(String, u64)) -> Option<Arc<Hosted>> {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Whether `hosted` is still the connection served under `key`.
    fn is_current(&self, key: &(String, u64), hosted: &Arc<Hosted>) -> bool {
        self.get(key).is_some_and(|h| Arc::ptr_eq(&h, hosted))
    }

    fn take(&self, key: &(String, u64)) -> Option<Arc<Hosted>> {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
    }

    async fn on_msg(self: &Arc<Self>, origin: String, msg: Msg) -> Result<(), Refusal> {
        let key = (origin, msg.conn);
        let gone = || Refusal::new(code::NOT_FOUND, "no such relayed connection here");
        match msg.op {
            Op::Open {
                user,
                app,
                account,
                name,
                operator,
                device_type,
                room,
                entered,
            } => {
                self.sb
                    .accounts
                    .lock()
                    .adopt(&app, &account, user, |id| self.sb.dial_target(id).is_some())
                    .map_err(|why| Refusal::new(code::CONFLICT, why))?;
                self.open(
                    key,
                    user,
                    name,
                    operator,
                    device_type,
                    room.map(|r| *r),
                    entered,
                )
                .await
            }
            Op::Frame { text } => {
                let h = self.get(&key).ok_or_else(gone)?;
                h.touch();
                let mut conn = h.conn.lock().await;
                let parsed = Frame::parse(&text).and_then(|f| Request::from_frame(&f));
                let answer = match parsed {
                    Ok(req) => self.sb.handle(&mut conn, req).await,
                    Err(e) => {
                        let (module, method) = e.envelope();
                        Some(reply::error(module, method, e.code(), &e.to_string()))
                    }
                };
                if let Some(a) = answer {
                    let _ = conn.outbox.send(a).await;
                }
                Ok(())
            }
            Op::Ping => {
                self.get(&key).ok_or_else(gone)?.touch();
                Ok(())
            }
            Op::Close => {
                if let Some(h) = self.take(&key) {
                    self.let_go(&h).await;
                }
                Ok(())
            }
        }
    }

    async fn let_go(&self, h: &Hosted) {
        let mut conn = h.conn.lock().await;
        self.sb.disconnect(&mut conn).await;
        self.sb.closed();
    }

    #[allow(clippy::too_many_arguments)]
    async fn open(
        self: &Arc<Self>,
        key: (String, u64),
        user: Id,
        name: Option<String>,
        operator: bool,
        device_type: Option<String>,
        room: Option<Room>,
        entered: bool,
    ) -> Result<(), Refusal> {
        let sb = &self.sb;
        if self.get(&key).is_some() {
            return Err(Refusal::new(
                code::CONFLICT,
                "connection relayed here already",
            ));
        }
        if sb.connections() >= sb.config.max_connections {
            metrics::counter!("pttbridge_meeting_limited_total", "limit" => "connections")
                .increment(1);
            return Err(Refusal::new(
                code::TOO_MANY,
                "the node owning the channel has meeting.max_connections open: try later",
            ));
        }
        let (out_tx, out_rx) = mpsc::channel(OUTBOX);
        let mut conn = sb.connect(out_tx);
        conn.name = name;
        conn.operator = operator;
        conn.user = Some(user);
        let old = sb.state().registry.insert(
            user,
            Registered {
                conn: conn.id,
                outbox: conn.outbox.clone(),
                device_type: device_type.clone(),
                kick: conn.kick.clone(),
            },
        );
        drop(old);
        sb.events.room(
            EventKind::SideConnected,
            None,
            Some(party(user, conn.name.as_deref())),
            json!({ "side": "meeting", "terminal": conn.id.to_string(), "device_type": device_type,
                    "relayed_from": key.0 }),
        );
        let mut skip_enter = false;
        if let Some(info) = room
            && let Some(id) = info.id
        {
            let known = sb.state().rooms.meta(id).map(RoomMeta::owner);
            match known {
                Some(owner) if owner != user => {
                    self.abandon(&mut conn).await;
                    return Err(Refusal::new(
                        code::CONFLICT,
                        format!("room {id} is another user's on the node owning the channel"),
                    ));
                }
                Some(_) => {}
                None => {
                    let handle = match sb.spawn_room(info.clone()) {
                        Ok(h) => h,
                        Err(r) => {
                            self.abandon(&mut conn).await;
                            return Err(r);
                        }
                    };
                    let mut st = sb.state();
                    st.rooms.add(id, RoomMeta::new(info, false));
                    st.rooms.opened(id, handle);
                }
            }
            if entered {
                let name = conn.name.clone();
                if let Err(r) = sb.enter(&mut conn, user, id, name, None).await {
                    self.abandon(&mut conn).await;
                    return Err(r);
                }
                // The client entered on its own node already: that reply is not repeated.
                skip_enter = true;
            }
        }
        let kicked = std::mem::replace(&mut conn.kicked, mpsc::channel(1).1);
        let hosted = Arc::new(Hosted {
            conn: tokio::sync::Mutex::new(conn),
            seen: Mutex::new(Instant::now()),
        });
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), hosted.clone());
        let host = self.clone();
        tokio::spawn(
            host.forward(key, hosted, out_rx, kicked, skip_enter)
                .in_current_span(),
        );
        Ok(())
    }

    /// Undoes a half-made open.
    async fn abandon(&self, conn: &mut Conn) {
        self.sb.disconnect(conn).await;
        self.sb.closed();
    }

    /// Publishes what the connection is sent to its node, until it is let go.
    async fn forward(
        self: Arc<Self>,
        key: (String, u64),
        hosted: Arc<Hosted>,
        mut out: mpsc::Receiver<Value>,
        mut kicked: mpsc::Receiver<super::registrar::Kick>,
        mut skip_enter: bool,
    ) {
        let Some(route) = self.sb.route.get().cloned() else {
            return;
        };
        let (origin, conn_id) = (key.0.clone(), key.1);
        let send = |v: &Back| route.push(&origin, conn_id, encode(v));
        let mut watchdog = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                v = out.recv() => {
                    let Some(v) = v else { return };
                    if skip_enter && v["module"] == "meeting" && v["method"] == "enter" && v.get("result").is_some() {
                        skip_enter = false;
                        continue;
                    }
                    if let Err(e) = send(&Back::Frame(v)).await {
                        debug!(error = %e, "relayed frame not sent");
                    }
                }
                Some(kick) = kicked.recv() => {
                    if !self.is_current(&key, &hosted) {
                        return;
                    }
                    self.take(&key);
                    {
                        let mut conn = hosted.conn.lock().await;
                        self.sb.kick_out(&mut conn, &kick).await;
                    }
                    self.let_go(&hosted).await;
                    // What the kickout queued (onKickout), then the end.
                    while let Ok(v) = out.try_recv() {
                        let _ = send(&Back::Frame(v)).await;
                    }
                    let _ = send(&Back::End(kick.reason.clone())).await;
                    return;
                }
                _ = watchdog.tick() => {
                    if !self.is_current(&key, &hosted) {
                        // Closed (or opened again): this task's part is over.
                        return;
                    }
                    let quiet = hosted.seen.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                    if quiet > ORIGIN_SILENCE {
                        self.take(&key);
                        info!(from = %esc(&origin), "no word from the node of a relayed connection: let go");
                        self.let_go(&hosted).await;
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire between nodes, as `docs/cluster.md` describes it: one JSON object per message,
    /// the op named, no SID anywhere.
    #[test]
    fn relay_messages_on_the_wire() {
        let frame = Msg {
            conn: 7,
            op: Op::Frame {
                text: r#"{"module":"meeting","method":"chat"}"#.into(),
            },
        };
        let v: Value = serde_json::from_slice(&encode(&frame)).unwrap();
        assert_eq!(v["conn"], 7);
        assert_eq!(v["op"], "frame");
        let open = Msg {
            conn: 1,
            op: Op::Open {
                user: 1001,
                app: "test".into(),
                account: "carol".into(),
                name: Some("carol".into()),
                operator: false,
                device_type: None,
                room: None,
                entered: false,
            },
        };
        let text = String::from_utf8(encode(&open).to_vec()).unwrap();
        assert!(!text.to_lowercase().contains("sid"), "{text}");
        let back: Msg = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.op, Op::Open { user: 1001, .. }));
        // An ack with nothing refused is taken; a refusal keeps the owner's code; anything
        // else is refused, never taken for an ack.
        assert_eq!(read_ack(&encode(&Ack::default())), Ok(()));
        assert_eq!(
            read_ack(br#"{"refused":[404,"gone"]}"#),
            Err(Refusal::new(404, "gone"))
        );
        assert_eq!(read_ack(b"nonsense").unwrap_err().0, code::INTERNAL);
        let end: Back = serde_json::from_value(json!({"end": "kicked"})).unwrap();
        assert!(matches!(end, Back::End(r) if r == "kicked"));
    }
}
