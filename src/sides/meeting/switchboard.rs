//! Signalling state: who is registered, which calls are live, which rooms exist, and the dial-in
//! users the bridge answers for. One lock, never held across an await; pushes to clients go
//! through bounded per-connection outboxes (`try_send`: a client that does not read loses pushes,
//! counted, and never slows anyone else).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rtcpeer::bean::{Client, Room};
use rtcpeer::call::{Call, EndReason, Input, Role, State as CallState};
use rtcpeer::code;
use rtcpeer::id::Id;
use rtcpeer::push::{self, Push};
use rtcpeer::reply::{self, MeetingCreated, RoomCreated};
use rtcpeer::request::{CallEvent, CallPeers, DoEvent, Request};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::auth::Accounts;
use super::config::{AnswerPolicy, MeetingConfig};
use super::room::{self, RoomCmd, RoomHandle};
use crate::hub::calls::CallCounters;
use crate::hub::event::Draft;
use crate::hub::{CallRecorder, CallStart, Calls, EventBus, EventKind, Party, Side};
use crate::sides::ptt::{Account, PttSide};

/// Frames queued for one client before pushes to it are dropped.
pub const OUTBOX: usize = 512;

/// Where a connection's outgoing frames go.
pub type Outbox = mpsc::Sender<Value>;

/// A failed request: `result` code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal(pub i64, pub String);

impl Refusal {
    fn new(code: i64, msg: impl Into<String>) -> Self {
        Self(code, msg.into())
    }
}

type Answer = Result<Value, Refusal>;

/// A user id that stands for a PTT channel.
#[derive(Debug, Clone)]
pub struct DialTarget {
    /// The id callers dial.
    pub user_id: Id,
    /// Display name in rooms.
    pub name: Option<String>,
    /// How calls are answered.
    pub policy: AnswerPolicy,
    /// Floor level of meeting speakers.
    pub meeting_level: u8,
    /// Floor level of PTT talkers.
    pub ptt_level: u8,
    /// The PTT account whose channel is dialled.
    pub account: Account,
}

pub(super) struct Registered {
    pub(super) conn: u64,
    pub(super) outbox: Outbox,
    device_type: Option<String>,
    /// Ends the connection (platform kickout) with a reason.
    pub(super) kick: mpsc::Sender<String>,
}

struct LiveCall {
    call: Call,
    /// RTCPeer messages of this call so far (requests and pushes; replies not counted).
    signals: u64,
}

/// The caller id of calls a platform makes (business gateway invite): no user has it.
pub const PLATFORM: Id = 0;

/// Everything behind the lock.
#[derive(Default)]
pub struct State {
    /// Signatures and sessions.
    pub accounts: Accounts,
    pub(super) users: HashMap<Id, Registered>,
    calls: HashMap<u64, LiveCall>,
    next_call: u64,
    pub(super) rooms: HashMap<Id, RoomHandle>,
    next_room: Id,
    next_appointment: Id,
    /// Dial-in id → room it is linked into.
    pub(super) linked: HashMap<Id, Id>,
    /// Dial-in ids in a call on an upstream server (client mode).
    pub(super) upstream_calls: HashSet<Id>,
    /// Call records of the links up now, by dial-in id.
    records: HashMap<Id, CallRecorder>,
}

impl State {
    fn call_of(&self, a: Id, b: Id) -> Option<u64> {
        self.calls
            .iter()
            .filter(|(_, c)| !c.call.is_ended())
            .find(|(_, c)| {
                (c.call.caller == a && c.call.callee == b)
                    || (c.call.caller == b && c.call.callee == a)
            })
            .map(|(id, _)| *id)
    }

    /// Counts `n` signalling messages of call `call` (and in its link's record, if up).
    fn signal(&mut self, call: u64, n: u64) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.signals += n;
        if let Some(r) = self.records.get(&c.call.callee) {
            r.counters().signal(n);
        }
    }

    /// Whether dial-in `dial` is linked or in a call (here or upstream).
    pub(super) fn dial_busy(&self, dial: Id) -> bool {
        self.linked.contains_key(&dial)
            || self.upstream_calls.contains(&dial)
            || self
                .calls
                .values()
                .any(|c| !c.call.is_ended() && c.call.callee == dial)
    }

    /// Whether a platform call to `user` into `room` is still going.
    pub(super) fn platform_call(&self, user: Id, room: Id) -> bool {
        self.calls.values().any(|c| {
            !c.call.is_ended()
                && c.call.caller == PLATFORM
                && c.call.callee == user
                && c.call.room_id == room
        })
    }

    fn busy(&self, user: Id) -> bool {
        self.calls
            .values()
            .any(|c| !c.call.is_ended() && (c.call.caller == user || c.call.callee == user))
    }
}

/// One signalling connection's view.
#[derive(Debug)]
pub struct Conn {
    /// Connection number.
    pub id: u64,
    /// Its outbox.
    pub outbox: Outbox,
    /// Registered user.
    pub user: Option<Id>,
    /// Display name of the user.
    pub name: Option<String>,
    /// Room it entered.
    pub room: Option<Id>,
    /// The SID it registered with (a kickout ends that session).
    pub sid: Option<String>,
    /// Kickouts of this connection (platform): the reason. The socket task ends it.
    pub kicked: mpsc::Receiver<String>,
    kick: mpsc::Sender<String>,
}

/// The meeting side's shared state.
pub struct Switchboard {
    /// `[meeting]`.
    pub config: MeetingConfig,
    /// Hub events.
    pub bus: Arc<EventBus>,
    /// App (tenant) of meeting events.
    pub app: String,
    dial: HashMap<Id, DialTarget>,
    state: Mutex<State>,
    next_conn: AtomicU64,
    /// Client mode: one registration per (upstream, dial-in id).
    pub registrations: super::upstream::Registrations,
    /// Call records of dial-in links, once [`Switchboard::wire`] gave them.
    pub(super) calls: OnceLock<Calls>,
}

impl std::fmt::Debug for Switchboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switchboard")
            .field("dial_in", &self.dial.len())
            .finish_non_exhaustive()
    }
}

/// Group id of a meeting room in hub events.
pub fn group_id(room: Id) -> String {
    format!("meeting:{room}")
}

/// Party of a meeting user.
pub fn party(id: Id, name: Option<&str>) -> Party {
    Party {
        side: Side::Meeting,
        id: id.to_string(),
        name: name.unwrap_or_default().to_owned(),
    }
}

impl Switchboard {
    /// Builds the switchboard; dial-in ids are resolved against the PTT accounts.
    pub fn new(config: MeetingConfig, bus: Arc<EventBus>, ptt: &PttSide) -> Arc<Self> {
        let mut dial = HashMap::new();
        for d in &config.dial_in {
            if let Some(account) = ptt
                .accounts
                .iter()
                .find(|a| a.server == d.server && a.username == d.account)
            {
                dial.insert(
                    d.user_id,
                    DialTarget {
                        user_id: d.user_id,
                        name: d.name.clone(),
                        policy: d.policy,
                        meeting_level: d.meeting_level,
                        ptt_level: d.ptt_level,
                        account: account.clone(),
                    },
                );
            }
        }
        if let Some(base) = config.number_base {
            for (i, account) in ptt.accounts.iter().enumerate() {
                let id = base + i as i64;
                dial.entry(id).or_insert_with(|| DialTarget {
                    user_id: id,
                    name: None,
                    policy: AnswerPolicy::Answer,
                    meeting_level: 1,
                    ptt_level: 1,
                    account: account.clone(),
                });
            }
        }
        let app = ptt
            .accounts
            .first()
            .map_or_else(|| "default".to_owned(), |a| a.app.clone());
        Arc::new(Self {
            config,
            bus,
            app,
            dial,
            state: Mutex::new(State {
                next_room: 599,
                next_appointment: 1,
                ..State::default()
            }),
            next_conn: AtomicU64::new(1),
            registrations: Default::default(),
            calls: OnceLock::new(),
        })
    }

    /// The locked state (never hold it across an await).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every dial-in id.
    pub fn dial_ids(&self) -> HashSet<Id> {
        self.dial.keys().copied().collect()
    }

    /// The dial-in target of `id`.
    pub fn dial_target(&self, id: Id) -> Option<&DialTarget> {
        self.dial.get(&id)
    }

    /// A new connection.
    pub fn connect(&self, outbox: Outbox) -> Conn {
        metrics::gauge!("pttbridge_meeting_connections").increment(1.0);
        let (kick, kicked) = mpsc::channel(1);
        Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            outbox,
            user: None,
            name: None,
            room: None,
            sid: None,
            kicked,
            kick,
        }
    }

    pub(super) fn publish(
        &self,
        kind: EventKind,
        room: Option<Id>,
        party: Option<Party>,
        detail: Value,
    ) {
        let mut d = Draft::new(
            self.app.clone(),
            kind,
            room.map(group_id).unwrap_or_default(),
        )
        .detail(detail);
        d.party = party;
        self.bus.publish(d);
    }

    /// Sends a push to a registered user; false when it is not online or not reading.
    pub(super) fn push_to(&self, state: &State, user: Id, msg: &Push) -> bool {
        let Some(r) = state.users.get(&user) else {
            return false;
        };
        push_outbox(&r.outbox, msg.to_value())
    }

    /// Handles one request of `conn`; the reply to send back.
    pub async fn handle(self: &Arc<Self>, conn: &mut Conn, req: Request) -> Value {
        let (module, method) = req.envelope();
        let answer = self.dispatch(conn, req).await;
        match answer {
            Ok(v) => v,
            Err(Refusal(c, msg)) => {
                let kind = match c {
                    code::UNAUTHORIZED => "unauthorized",
                    code::NOT_FOUND => "not_found",
                    code::CONFLICT => "conflict",
                    code::BAD_SDP => "bad_sdp",
                    code::FAILED => "failed",
                    _ => "other",
                };
                metrics::counter!("pttbridge_meeting_errors_total", "kind" => kind).increment(1);
                debug!(module, method, code = c, %msg, "request refused");
                reply::error(module, method, c, &msg)
            }
        }
    }

    async fn dispatch(self: &Arc<Self>, conn: &mut Conn, req: Request) -> Answer {
        let (module, method) = req.envelope();
        if let Request::DoRegister(r) = &req {
            return self.register(conn, r.sid.as_str(), r.user_id, r.device_type.clone());
        }
        let Some(me) = conn.user else {
            return Err(Refusal::new(
                code::UNAUTHORIZED,
                "not registered: send call.doRegister with the SID from /app/account first",
            ));
        };
        match req {
            Request::DoRegister(_) => unreachable!("handled above"),
            Request::DoInvite(r) => {
                self.invite(me, &r.peers, r.call_type, r.room_id)?;
                Ok(reply::ok_with(
                    module,
                    method,
                    &RoomCreated { room_id: r.room_id },
                ))
            }
            Request::DoAgree(r) => {
                self.callee_step(me, &r.peers, Input::Agree, Some(r.room_id))?;
                Ok(reply::ok(module, method))
            }
            Request::Reject(p) => {
                self.callee_step(me, &p, Input::Reject, None)?;
                Ok(reply::ok(module, method))
            }
            Request::Cancel(p) => {
                self.cancel(me, &p)?;
                Ok(reply::ok(module, method))
            }
            Request::DoEvent(e) => {
                self.event(me, &e)?;
                Ok(reply::ok(module, method))
            }
            Request::NewAppRoom(r) => {
                let id = self.new_room(me, r.name, r.room_type, r.number_limit)?;
                Ok(reply::ok_with(module, method, &RoomCreated { room_id: id }))
            }
            Request::NewTempRoom(r) => {
                let id = self.new_room(me, r.name, r.room_type, r.number_limit)?;
                Ok(reply::ok_with(module, method, &RoomCreated { room_id: id }))
            }
            Request::MeetingNew(r) => {
                let room_id = match r.room_id {
                    Some(id) if self.state().rooms.contains_key(&id) => id,
                    Some(id) => return Err(Refusal::new(code::NOT_FOUND, format!("no room {id}"))),
                    None => self.new_room(me, r.name.clone(), r.meeting_type, 200)?,
                };
                let id = {
                    let mut st = self.state();
                    st.next_appointment += 1;
                    st.next_appointment
                };
                Ok(reply::ok_with(
                    module,
                    method,
                    &MeetingCreated { id, room_id },
                ))
            }
            Request::Logout(r) => {
                if r.user_id != me {
                    return Err(Refusal::new(
                        code::FAILED,
                        "userId is not the registered user",
                    ));
                }
                self.state().accounts.logout(&r.sid);
                self.disconnect(conn).await;
                Ok(reply::ok(module, method))
            }
            Request::Enter(r) => {
                let entered = self.enter(conn, me, r.room_id, r.username).await?;
                Ok(reply::ok_with(module, method, &entered))
            }
            other => {
                let Some(room) = conn.room else {
                    return Err(Refusal::new(
                        code::CONFLICT,
                        "not in a room: meeting.enter first",
                    ));
                };
                let handle = self
                    .room(room)
                    .ok_or_else(|| Refusal::new(code::NOT_FOUND, format!("room {room} is gone")))?;
                let leaving = matches!(other, Request::Exit);
                let (tx, rx) = oneshot::channel();
                handle
                    .send(RoomCmd::Request {
                        from: me,
                        req: other,
                        reply: tx,
                    })
                    .await?;
                let out = rx
                    .await
                    .map_err(|_| Refusal::new(code::INTERNAL, "room stopped"))??;
                if leaving {
                    conn.room = None;
                    self.member_left(room, me);
                }
                Ok(out)
            }
        }
    }

    fn room(&self, id: Id) -> Option<RoomHandle> {
        self.state().rooms.get(&id).cloned()
    }

    fn register(
        &self,
        conn: &mut Conn,
        sid: &str,
        user: Id,
        device_type: Option<String>,
    ) -> Answer {
        let mut st = self.state();
        let Some(session) = st.accounts.session(sid) else {
            return Err(Refusal::new(
                code::UNAUTHORIZED,
                "unknown SID: log in with /app/account",
            ));
        };
        if session.user.id != Some(user) {
            return Err(Refusal::new(
                code::UNAUTHORIZED,
                "userId does not match the SID's user",
            ));
        }
        conn.name = session.user.name.clone();
        conn.sid = Some(sid.to_owned());
        let detail = json!({ "side": "meeting", "terminal": conn.id.to_string(),
                             "device_type": device_type.clone() });
        let old = st.users.insert(
            user,
            Registered {
                conn: conn.id,
                outbox: conn.outbox.clone(),
                device_type,
                kick: conn.kick.clone(),
            },
        );
        // Online on the platforms (in a room or not) until this connection unregisters.
        self.publish(
            EventKind::SideConnected,
            None,
            Some(party(user, conn.name.as_deref())),
            detail,
        );
        if let Some(old) = old
            && old.conn != conn.id
        {
            info!(
                user,
                "registered again from another connection; the old one is no longer called"
            );
        }
        conn.user = Some(user);
        metrics::gauge!("pttbridge_meeting_registered").set(st.users.len() as f64);
        Ok(reply::ok("call", "doRegister"))
    }

    fn new_room(
        self: &Arc<Self>,
        owner: Id,
        name: String,
        room_type: i64,
        limit: i64,
    ) -> Result<Id, Refusal> {
        if name.trim().is_empty() {
            return Err(Refusal::new(code::BAD_FIELDS, "name must not be empty"));
        }
        let limit = limit.clamp(2, self.config.max_room_members as i64);
        let id = {
            let mut st = self.state();
            st.next_room += 1;
            st.next_room
        };
        let info = Room {
            id: Some(id),
            name: Some(name),
            owner_id: Some(owner),
            room_type: Some(room_type),
            number_limit: Some(limit),
            is_public: Some(false),
            is_has_pwd: Some(false),
            ..Room::default()
        };
        let handle = room::spawn(self.clone(), info).map_err(|e| {
            Refusal::new(
                code::INTERNAL,
                format!("cannot open the room's media port: {e}"),
            )
        })?;
        self.state().rooms.insert(id, handle);
        metrics::counter!("pttbridge_meeting_rooms_total").increment(1);
        Ok(id)
    }

    async fn enter(
        &self,
        conn: &mut Conn,
        me: Id,
        room_id: Id,
        username: Option<String>,
    ) -> Result<reply::Entered, Refusal> {
        let handle = self
            .room(room_id)
            .ok_or_else(|| Refusal::new(code::NOT_FOUND, format!("no room {room_id}")))?;
        if let Some(old) = conn.room.take()
            && let Some(h) = self.room(old)
        {
            let _ = h.try_send(RoomCmd::Leave {
                client: me,
                reason: "entered another room",
            });
        }
        let client = Client {
            id: Some(me),
            name: username.or_else(|| conn.name.clone()),
            mode: Some("pc".into()),
            stream_id: Some(me),
            is_muted: Some(false),
            ..Client::default()
        };
        let (tx, rx) = oneshot::channel();
        handle
            .send(RoomCmd::Enter {
                client: client.clone(),
                outbox: Some(conn.outbox.clone()),
                reply: tx,
            })
            .await?;
        let entered = rx
            .await
            .map_err(|_| Refusal::new(code::INTERNAL, "room stopped"))??;
        conn.room = Some(room_id);
        self.publish(
            EventKind::PartyJoined,
            Some(room_id),
            Some(party(me, client.name.as_deref())),
            Value::Null,
        );
        Ok(entered)
    }

    fn member_left(&self, room: Id, me: Id) {
        self.publish(
            EventKind::PartyLeft,
            Some(room),
            Some(party(me, None)),
            Value::Null,
        );
    }

    /// The connection closed (or logged out): leave its room, end its calls, unregister.
    pub async fn disconnect(self: &Arc<Self>, conn: &mut Conn) {
        // Calls end first (reason `gone`), then the room sees the member leave.
        self.end_calls_of(conn);
        if let Some(room) = conn.room.take()
            && let Some(h) = self.room(room)
            && let Some(me) = conn.user
        {
            let _ = h
                .send(RoomCmd::Leave {
                    client: me,
                    reason: "disconnected",
                })
                .await;
            self.member_left(room, me);
        }
        self.unregister(conn);
        conn.user = None;
    }

    /// The connection's user is no longer reachable here (unless it registered again from
    /// another connection): platforms see it offline.
    fn unregister(&self, conn: &Conn) {
        let Some(me) = conn.user else {
            return;
        };
        let mut st = self.state();
        if st.users.get(&me).is_some_and(|r| r.conn == conn.id) {
            st.users.remove(&me);
            self.publish(
                EventKind::SideDisconnected,
                None,
                Some(party(me, conn.name.as_deref())),
                json!({ "side": "meeting", "terminal": conn.id.to_string() }),
            );
        }
        metrics::gauge!("pttbridge_meeting_registered").set(st.users.len() as f64);
    }

    fn end_calls_of(&self, conn: &Conn) {
        let Some(me) = conn.user else {
            return;
        };
        let mut st = self.state();
        let live: Vec<u64> = st
            .calls
            .iter()
            .filter(|(_, c)| !c.call.is_ended() && (c.call.caller == me || c.call.callee == me))
            .map(|(id, _)| *id)
            .collect();
        for id in live {
            let Some(c) = st.calls.get_mut(&id) else {
                continue;
            };
            let role = c.call.role_of(me).unwrap_or(Role::Caller);
            let _ = c.call.handle(Input::Gone, role, Instant::now());
            let other = if role == Role::Caller {
                c.call.callee
            } else {
                c.call.caller
            };
            let room = c.call.room_id;
            let msg = Push::Cancel(push::Ended {
                from: push::From {
                    own_user_id: me,
                    own_device_type: None,
                },
                reason: Some("offline".into()),
            });
            self.push_to(&st, other, &msg);
            st.signal(id, 1);
            self.end_call(&mut st, id, EndReason::Gone, room);
        }
    }

    /// Connection count bookkeeping when a socket task ends.
    pub fn closed(&self) {
        metrics::gauge!("pttbridge_meeting_connections").decrement(1.0);
    }

    fn invite(
        self: &Arc<Self>,
        me: Id,
        p: &CallPeers,
        call_type: Option<i64>,
        room: Id,
    ) -> Result<(), Refusal> {
        own_user(me, p.own_user_id)?;
        let target = p.target_user_id;
        if target == me {
            return Err(Refusal::new(code::CONFLICT, "cannot call yourself"));
        }
        let mut st = self.state();
        if !st.rooms.contains_key(&room) {
            return Err(Refusal::new(code::NOT_FOUND, format!("no room {room}")));
        }
        let dial = self.dial.get(&target).cloned();
        if dial.is_none() && !st.users.contains_key(&target) {
            return Err(Refusal::new(
                code::FAILED,
                format!("user {target} is not online"),
            ));
        }
        if st.call_of(me, target).is_some() {
            return Err(Refusal::new(
                code::CONFLICT,
                format!("already in a call with {target}"),
            ));
        }
        let now = Instant::now();
        let mut call = Call::new(me, target, room, self.config.no_answer_timeout(), now);
        let _ = call.invite(now);
        st.next_call += 1;
        let id = st.next_call;
        let callee_busy = st.busy(target)
            || (dial.is_some()
                && (st.linked.contains_key(&target) || st.upstream_calls.contains(&target)));
        st.calls.insert(id, LiveCall { call, signals: 0 });
        st.signal(id, 1);
        metrics::gauge!("pttbridge_meeting_calls").set(st.calls.len() as f64);
        metrics::counter!("pttbridge_meeting_calls_total", "kind" => if dial.is_some() { "dial_in" } else { "relay" }).increment(1);
        self.publish(
            EventKind::CallRinging,
            Some(room),
            Some(party(me, None)),
            json!({ "callee": target, "stage": "invited", "dial_in": dial.is_some() }),
        );
        match dial {
            None => {
                let device = p
                    .own_device_type
                    .clone()
                    .or_else(|| st.users.get(&me).and_then(|r| r.device_type.clone()));
                let msg = Push::Invite(push::Invited {
                    from: push::From {
                        own_user_id: me,
                        own_device_type: device,
                    },
                    call_type,
                    room_id: Some(room),
                });
                if !self.push_to(&st, target, &msg) {
                    self.end_call(&mut st, id, EndReason::Gone, room);
                    return Err(Refusal::new(
                        code::FAILED,
                        format!("user {target} is not reachable"),
                    ));
                }
                st.signal(id, 1);
            }
            Some(d) => {
                drop(st);
                self.answer_as_bridge(id, d, callee_busy);
            }
        }
        self.arm_timer(id);
        Ok(())
    }

    /// The bridge answers a call to a dial-in id like a person would.
    fn answer_as_bridge(self: &Arc<Self>, call: u64, d: DialTarget, busy: bool) {
        let sb = self.clone();
        let ring = Duration::from_millis(self.config.ring_delay_ms);
        let answer = Duration::from_millis(self.config.answer_delay_ms);
        tokio::spawn(async move {
            tokio::time::sleep(ring).await;
            let policy = if busy { AnswerPolicy::Busy } else { d.policy };
            let first = match policy {
                AnswerPolicy::Reject => Input::Reject,
                AnswerPolicy::Busy => Input::Busy,
                AnswerPolicy::Answer | AnswerPolicy::Ignore => Input::Ring,
            };
            if !sb.bridge_step(call, d.user_id, first) || policy != AnswerPolicy::Answer {
                return;
            }
            tokio::time::sleep(answer).await;
            sb.bridge_step(call, d.user_id, Input::Agree);
        });
    }

    /// One callee step taken by the bridge for a dial-in id; false when the call is gone.
    fn bridge_step(&self, call: u64, dial: Id, input: Input) -> bool {
        let mut st = self.state();
        let Some(c) = st.calls.get_mut(&call) else {
            return false;
        };
        let Ok(state) = c.call.handle(input, Role::Callee, Instant::now()) else {
            return false;
        };
        let (caller, room) = (c.call.caller, c.call.room_id);
        let from = push::From {
            own_user_id: dial,
            own_device_type: Some("ptt".into()),
        };
        let msg = match input {
            Input::Ring => Push::Event(push::Evented {
                from,
                event: CallEvent::Ringing,
                room_id: Some(room),
                room_type: None,
                reason: None,
                data: None,
            }),
            Input::Busy => Push::Event(push::Evented {
                from,
                event: CallEvent::Busy,
                room_id: Some(room),
                room_type: None,
                reason: None,
                data: None,
            }),
            Input::Agree => Push::Agree(push::Agreed {
                from,
                room_id: Some(room),
            }),
            _ => Push::Reject(push::Ended { from, reason: None }),
        };
        self.push_to(&st, caller, &msg);
        st.signal(call, 1);
        self.after_step(&mut st, call, state, input, room, caller);
        true
    }

    fn after_step(
        &self,
        st: &mut State,
        call: u64,
        state: CallState,
        input: Input,
        room: Id,
        actor: Id,
    ) {
        match state {
            CallState::Ringing if input == Input::Ring => self.publish(
                EventKind::CallRinging,
                Some(room),
                Some(party(actor, None)),
                json!({ "call": call, "stage": "ringing" }),
            ),
            CallState::Agreed => self.publish(
                EventKind::CallAnswered,
                Some(room),
                Some(party(actor, None)),
                json!({ "call": call }),
            ),
            CallState::Ended(reason) => self.end_call(st, call, reason, room),
            _ => {}
        }
    }

    /// Numbers and keeps a new call (its invitation counted as its first signal).
    pub(super) fn add_call(&self, st: &mut State, call: Call) -> u64 {
        st.next_call += 1;
        let id = st.next_call;
        st.calls.insert(id, LiveCall { call, signals: 0 });
        st.signal(id, 1);
        metrics::gauge!("pttbridge_meeting_calls").set(st.calls.len() as f64);
        metrics::counter!("pttbridge_meeting_calls_total", "kind" => "platform").increment(1);
        id
    }

    pub(super) fn end_call(&self, st: &mut State, call: u64, reason: EndReason, room: Id) {
        let Some(c) = st.calls.remove(&call) else {
            return;
        };
        metrics::gauge!("pttbridge_meeting_calls").set(st.calls.len() as f64);
        metrics::counter!("pttbridge_meeting_calls_ended_total", "reason" => reason.as_str())
            .increment(1);
        self.publish(
            EventKind::CallEnded,
            Some(room),
            Some(party(c.call.caller, None)),
            json!({ "call": call, "callee": c.call.callee, "reason": reason.as_str(),
                    "seconds": c.call.started().elapsed().as_secs_f64() }),
        );
        // A dial-in that was linked: take the link down with the call.
        if st.linked.get(&c.call.callee) == Some(&room)
            && let Some(h) = st.rooms.get(&room)
        {
            st.linked.remove(&c.call.callee);
            let _ = h.try_send(RoomCmd::DetachLink {
                dial: c.call.callee,
                reason: reason.as_str(),
            });
        }
    }

    pub(super) fn arm_timer(self: &Arc<Self>, call: u64) {
        let sb = self.clone();
        tokio::spawn(async move {
            loop {
                let deadline = {
                    let st = sb.state();
                    match st.calls.get(&call).and_then(|c| c.call.deadline()) {
                        Some(d) => d,
                        None => return,
                    }
                };
                tokio::time::sleep_until(deadline.into()).await;
                let mut st = sb.state();
                let Some(c) = st.calls.get_mut(&call) else {
                    return;
                };
                if c.call.poll_timeout(Instant::now()).is_some() {
                    let (caller, callee, room) = (c.call.caller, c.call.callee, c.call.room_id);
                    info!(call, caller, callee, "call not answered in time");
                    let reason = Some("noAnswer".to_owned());
                    sb.push_to(
                        &st,
                        callee,
                        &Push::Cancel(push::Ended {
                            from: push::From {
                                own_user_id: caller,
                                own_device_type: None,
                            },
                            reason: reason.clone(),
                        }),
                    );
                    sb.push_to(
                        &st,
                        caller,
                        &Push::Reject(push::Ended {
                            from: push::From {
                                own_user_id: callee,
                                own_device_type: None,
                            },
                            reason,
                        }),
                    );
                    st.signal(call, 2);
                    sb.end_call(&mut st, call, EndReason::NoAnswer, room);
                    return;
                }
            }
        });
    }

    fn live_call(&self, st: &State, me: Id, other: Id) -> Result<u64, Refusal> {
        st.call_of(me, other).ok_or_else(|| {
            Refusal::new(code::CONFLICT, format!("no call between {me} and {other}"))
        })
    }

    /// doAgree / reject from a (human) callee.
    fn callee_step(
        &self,
        me: Id,
        p: &CallPeers,
        input: Input,
        room: Option<Id>,
    ) -> Result<(), Refusal> {
        own_user(me, p.own_user_id)?;
        let mut st = self.state();
        let id = self.live_call(&st, me, p.target_user_id)?;
        let c = st.calls.get_mut(&id).expect("found above");
        if c.call.role_of(me) != Some(Role::Callee) {
            return Err(Refusal::new(
                code::CONFLICT,
                "only the called user can do that",
            ));
        }
        let state = c
            .call
            .handle(input, Role::Callee, Instant::now())
            .map_err(|e| Refusal::new(code::CONFLICT, e.to_string()))?;
        let (caller, call_room) = (c.call.caller, c.call.room_id);
        let from = push::From {
            own_user_id: me,
            own_device_type: p.own_device_type.clone(),
        };
        let msg = match input {
            Input::Agree => Push::Agree(push::Agreed {
                from,
                room_id: room.or(Some(call_room)),
            }),
            _ => Push::Reject(push::Ended { from, reason: None }),
        };
        let pushed = self.push_to(&st, caller, &msg);
        st.signal(id, 1 + u64::from(pushed));
        self.after_step(&mut st, id, state, input, call_room, me);
        if caller == PLATFORM
            && state == CallState::Agreed
            && let Some(c) = st.calls.get_mut(&id)
        {
            // A platform's invite: nobody on the calling side sends onConnected; the callee
            // enters the room itself. The call is connected from here on (ends on cancel).
            let _ = c
                .call
                .handle(Input::Connected, Role::Caller, Instant::now());
        }
        Ok(())
    }

    fn cancel(&self, me: Id, p: &CallPeers) -> Result<(), Refusal> {
        own_user(me, p.own_user_id)?;
        let mut st = self.state();
        let id = self.live_call(&st, me, p.target_user_id)?;
        let c = st.calls.get_mut(&id).expect("found above");
        let role = c.call.role_of(me).expect("a party of its own call");
        let state = c
            .call
            .handle(Input::Cancel, role, Instant::now())
            .map_err(|e| Refusal::new(code::CONFLICT, e.to_string()))?;
        let room = c.call.room_id;
        let msg = Push::Cancel(push::Ended {
            from: push::From {
                own_user_id: me,
                own_device_type: p.own_device_type.clone(),
            },
            reason: None,
        });
        let pushed = self.push_to(&st, p.target_user_id, &msg);
        st.signal(id, 1 + u64::from(pushed));
        self.after_step(&mut st, id, state, Input::Cancel, room, me);
        Ok(())
    }

    fn event(&self, me: Id, e: &DoEvent) -> Result<(), Refusal> {
        own_user(me, e.peers.own_user_id)?;
        let target = e.peers.target_user_id;
        let mut st = self.state();
        let input = match e.event {
            CallEvent::Ringing => Some(Input::Ring),
            CallEvent::Busy => Some(Input::Busy),
            CallEvent::Connected => Some(Input::Connected),
            CallEvent::Other(_) => None,
        };
        let msg = Push::Event(push::Evented {
            from: push::From {
                own_user_id: me,
                own_device_type: e.peers.own_device_type.clone(),
            },
            event: e.event.clone(),
            room_id: e.room_id,
            room_type: e.room_type,
            reason: None,
            data: None,
        });
        let Some(input) = input else {
            // Custom events are relayed as they are.
            if !self.push_to(&st, target, &msg) {
                return Err(Refusal::new(
                    code::FAILED,
                    format!("user {target} is not online"),
                ));
            }
            return Ok(());
        };
        let id = self.live_call(&st, me, target)?;
        let c = st.calls.get_mut(&id).expect("found above");
        let role = c.call.role_of(me).expect("a party of its own call");
        let state = c
            .call
            .handle(input, role, Instant::now())
            .map_err(|e| Refusal::new(code::CONFLICT, e.to_string()))?;
        let room = c.call.room_id;
        st.signal(id, 1);
        if input == Input::Connected
            && let Some(d) = self.dial.get(&target)
        {
            if let Some(h) = st.rooms.get(&room).cloned() {
                st.linked.insert(target, room);
                let link = room::LinkSetup {
                    target: d.clone(),
                    caller: me,
                    ready: None,
                };
                if !h.try_send(RoomCmd::AttachLink(Box::new(link))) {
                    st.linked.remove(&target);
                    warn!(room, "room did not take the link");
                }
            }
        } else if self.push_to(&st, target, &msg) {
            st.signal(id, 1);
        }
        self.after_step(&mut st, id, state, input, room, me);
        Ok(())
    }

    /// The room says a dial-in link ended (caller left, room finished, kicked, hung up).
    pub fn link_down(&self, room: Id, dial: Id, reason: &str) {
        let mut st = self.state();
        if st.linked.get(&dial) == Some(&room) {
            st.linked.remove(&dial);
        }
        let record = st.records.remove(&dial);
        let live = st
            .calls
            .iter()
            .find(|(_, c)| !c.call.is_ended() && c.call.callee == dial && c.call.room_id == room)
            .map(|(id, _)| *id);
        if let Some(id) = live {
            let c = st.calls.get_mut(&id).expect("found above");
            let caller = c.call.caller;
            let _ = c.call.handle(Input::HangUp, Role::Callee, Instant::now());
            if reason != "caller left" {
                self.push_to(
                    &st,
                    caller,
                    &Push::Cancel(push::Ended {
                        from: push::From {
                            own_user_id: dial,
                            own_device_type: Some("ptt".into()),
                        },
                        reason: Some("hangup".into()),
                    }),
                );
                st.signal(id, 1);
                if let Some(r) = &record {
                    r.counters().signal(1);
                }
            }
            self.end_call(&mut st, id, EndReason::HungUp, room);
        }
        if let Some(r) = record {
            r.finish(reason);
        }
    }

    /// The room brought dial-in `dial` in: its call record starts (the call's signalling so
    /// far included); the link counts its audio in the returned counters.
    pub fn link_up(&self, room: Id, dial: Id, caller: Id) -> Option<Arc<CallCounters>> {
        let rec = self.start_record(group_id(room), caller)?;
        let mut st = self.state();
        // A platform's dial has no RTCPeer call: its one signal is the invite itself.
        let signals = st
            .calls
            .values()
            .find(|c| !c.call.is_ended() && c.call.callee == dial && c.call.room_id == room)
            .map_or(u64::from(caller == PLATFORM), |c| c.signals);
        rec.counters().signal(signals);
        let counters = rec.counters();
        if let Some(old) = st.records.insert(dial, rec) {
            old.finish("replaced");
        }
        Some(counters)
    }

    /// Starts the call record of a meeting ⇄ PTT link in hub group `group`, called by `caller`
    /// (the platform when [`PLATFORM`]); `None` until [`Switchboard::wire`] gave the records.
    pub fn start_record(&self, group: String, caller: Id) -> Option<CallRecorder> {
        let calls = self.calls.get()?;
        let mut start = CallStart::new(self.app.clone(), group, [Side::Meeting, Side::Ptt]);
        if caller != PLATFORM {
            start = start.initiator(party(caller, None));
        }
        Some(calls.start(start))
    }

    /// A room stopped (finished and empty).
    pub fn room_closed(&self, room: Id) {
        self.state().rooms.remove(&room);
    }

    /// Publishes a hub event from a room.
    pub fn room_event(&self, kind: EventKind, room: Id, party: Option<Party>, detail: Value) {
        self.publish(kind, Some(room), party, detail);
    }

    /// Client mode: takes `dial` for a call on an upstream server; false when it is in a call
    /// or linked already (here or on another upstream).
    pub fn claim_dial(&self, dial: Id) -> bool {
        let mut st = self.state();
        if st.dial_busy(dial) {
            return false;
        }
        st.upstream_calls.insert(dial)
    }

    /// Client mode: the upstream call of `dial` is over.
    pub fn release_dial(&self, dial: Id) {
        self.state().upstream_calls.remove(&dial);
    }

    /// Starts client mode (`[[meeting.upstream]]`): one registration task per dial-in id.
    pub fn start_upstreams(self: &Arc<Self>) {
        super::upstream::start(self);
    }

    /// `/healthz` view: registered users, live calls, rooms and PTT links.
    pub fn health(&self) -> Value {
        let st = self.state();
        let mut links: Vec<Value> = st
            .linked
            .iter()
            .map(|(dial, room)| json!({ "dial_in": dial, "room": room }))
            .collect();
        links.sort_by_key(|l| l["dial_in"].as_i64());
        json!({
            "enabled": self.config.enabled,
            "registered": st.users.len(),
            "calls": st.calls.values().filter(|c| !c.call.is_ended()).count(),
            "rooms": st.rooms.len(),
            "links": links,
            "upstream": *self.registrations.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }

    /// Hangs up the link of `dial` from the bridge side (admin API, PTT-side hang-up).
    pub fn hang_up(&self, dial: Id) -> bool {
        let st = self.state();
        let Some(room) = st.linked.get(&dial).copied() else {
            return false;
        };
        if let Some(h) = st.rooms.get(&room) {
            let _ = h.try_send(RoomCmd::DetachLink {
                dial,
                reason: "hangup",
            });
        }
        true
    }
}

/// `try_send` with a drop counter.
pub fn push_outbox(outbox: &Outbox, msg: Value) -> bool {
    match outbox.try_send(msg) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("pttbridge_meeting_pushes_dropped_total").increment(1);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Call signalling names its sender in `ownUserId`; it must be the connection's own user.
fn own_user(me: Id, own_user_id: Id) -> Result<(), Refusal> {
    if own_user_id == me {
        Ok(())
    } else {
        Err(Refusal::new(
            code::CONFLICT,
            "ownUserId is not the registered user",
        ))
    }
}

impl From<mpsc::error::SendError<RoomCmd>> for Refusal {
    fn from(_: mpsc::error::SendError<RoomCmd>) -> Self {
        Refusal::new(code::INTERNAL, "room stopped")
    }
}
