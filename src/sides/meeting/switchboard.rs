//! Call control: the RTCPeer requests of registered users, the calls between them (the
//! `rtcpeer::call` state machine), calls to dial-in ids that the bridge answers itself, and
//! the link state those calls lead to. It owns one lock over the signalling state, each part
//! kept by its own module — [`Registry`] (who is registered where), [`CallTable`] (live calls),
//! [`RoomDirectory`] (open rooms) and [`Lines`] (what each dial-in is doing) — never held
//! across an await. Pushes go through bounded per-connection outboxes (`try_send`: a client
//! that does not read loses pushes, counted, and never slows anyone else). One timer task runs
//! every call's deadlines and the bridge's own answering steps.
//!
//! Rooms run on their own tasks and reach back through [`RoomHost`], which this implements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use logsafe::{RateLimit, esc};
use rtcpeer::bean::{Client, Room};
use rtcpeer::call::{Call, EndReason, Input, Role, State as CallState};
use rtcpeer::code;
use rtcpeer::id::Id;
use rtcpeer::push::{self, Push};
use rtcpeer::reply::{self, RoomCreated};
use rtcpeer::request::{CallEvent, CallPeers, DoEvent, Request};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tracing::{debug, info, warn};

use super::auth::Accounts;
use super::calls::{CallTable, PLATFORM};
use super::config::{AnswerPolicy, MeetingConfig};
use super::dial::{DialPlan, DialTarget, Lines};
use super::events::{Publisher, group_id, party};
use super::outbox::Outbox;
use super::refusal::Refusal;
use super::registrar::{Conn, Kick, Registered, Registry};
use super::room::{self, LinkSetup, RoomCmd, RoomConfig, RoomHandle, RoomHost};
use super::room_threads::RoomThreads;
use super::rooms::{RoomDirectory, RoomMeta};
use crate::auth::FailureLimiter;
use crate::hub::calls::CallCounters;
use crate::hub::{CallRecorder, CallStart, Calls, EventKind, Party, Side};
use crate::recording::Recorder;
use crate::storage::Store;

type Answer = Result<Value, Refusal>;

/// Everything behind the lock.
#[derive(Debug, Default)]
pub struct State {
    /// Registered users.
    pub registry: Registry,
    /// Live calls.
    pub calls: CallTable,
    /// Open rooms.
    pub rooms: RoomDirectory,
    /// What each dial-in line is doing.
    pub lines: Lines,
}

impl State {
    /// Counts `n` signalling messages of call `call` (and in its link's record, if up).
    fn signal(&mut self, call: u64, n: u64) {
        let Some(c) = self.calls.get_mut(call) else {
            return;
        };
        c.signals += n;
        let callee = c.call.callee;
        if let Some(r) = self.lines.record(callee) {
            r.counters().signal(n);
        }
    }

    /// Whether dial-in `dial` is linked or in a call (here or upstream).
    pub fn dial_busy(&self, dial: Id) -> bool {
        self.lines.busy(dial) || self.calls.calling(dial)
    }
}

/// The meeting side's call control. See the module docs.
pub struct Switchboard {
    /// `[meeting]`.
    pub config: MeetingConfig,
    /// Hub events of the meeting side.
    pub events: Publisher,
    /// Signatures and sessions (`/app/...` logins; SIDs checked on `doRegister`).
    pub accounts: Arc<Accounts>,
    dial: DialPlan,
    state: Mutex<State>,
    next_conn: AtomicU64,
    /// `/rtcpeer` connections open now.
    open: std::sync::atomic::AtomicUsize,
    /// Wakes the timer task when the calls change.
    timers: Arc<Notify>,
    /// Call records of dial-in links, once the side has the platform's (at start).
    pub(super) records: OnceLock<Calls>,
    /// Where rooms' server recordings go (`[recording] dir`), set at start when recording.
    pub(super) recorder: OnceLock<Recorder>,
    /// Where standing rooms are kept (none: in memory only).
    pub(super) store: Option<Store>,
    /// Wrong room passwords per user (`checkRoomPwd`, `enter`): guessing is throttled.
    pub(super) pwd_failures: FailureLimiter<Id>,
    /// Routing to other cluster nodes (a cluster node only): see [`super::remote`].
    pub(super) route: OnceLock<Arc<crate::cluster::route::Route>>,
    /// The threads the rooms run on, started with the first room.
    room_threads: OnceLock<RoomThreads>,
}

impl std::fmt::Debug for Switchboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switchboard")
            .field("dial_in", &self.dial.len())
            .finish_non_exhaustive()
    }
}

impl Switchboard {
    /// Builds the switchboard (dial-in ids resolved against the PTT accounts; the standing
    /// rooms of `store`) and starts its timer task.
    pub fn new(
        config: MeetingConfig,
        dial: DialPlan,
        events: Publisher,
        accounts: Arc<Accounts>,
        store: Option<Store>,
    ) -> Arc<Self> {
        let sb = Arc::new(Self {
            config,
            events,
            accounts,
            dial,
            state: Mutex::new(State::default()),
            next_conn: AtomicU64::new(1),
            open: std::sync::atomic::AtomicUsize::new(0),
            timers: Arc::new(Notify::new()),
            records: OnceLock::new(),
            recorder: OnceLock::new(),
            store,
            pwd_failures: FailureLimiter::new(10, Duration::from_secs(60), 4096),
            route: OnceLock::new(),
            room_threads: OnceLock::new(),
        });
        if let Some(s) = &sb.store {
            // Weak: the store outlives no switchboard it would keep alive.
            let weak = Arc::downgrade(&sb);
            s.on_applied(Arc::new(move |op| {
                if let Some(sb) = weak.upgrade() {
                    sb.record_applied(op);
                }
            }));
            // Loaded after the hook is in place and under the state's lock, which the hook
            // waits for: a row the shared log applies meanwhile is either read here or told
            // to the hook afterwards, never missed nor undone (a cluster node may be
            // replaying the records stream right now).
            let mut st = sb.state();
            st.rooms.load_standing(s, sb.config.max_standing_rooms);
            drop(st);
            if let Err(e) = sb.accounts.lock().remember_in(s.clone()) {
                tracing::warn!(error = %e, "cannot read the meeting accounts' user ids from the store");
            }
        }
        tokio::spawn(run_timers(Arc::downgrade(&sb), sb.timers.clone()));
        sb
    }

    /// The locked state (never hold it across an await).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The dial plan.
    pub fn dial_plan(&self) -> &DialPlan {
        &self.dial
    }

    /// The dial-in target of `id`.
    pub fn dial_target(&self, id: Id) -> Option<&DialTarget> {
        self.dial.get(id)
    }

    pub(super) fn room_config(&self) -> RoomConfig {
        RoomConfig {
            media: self.config.media_address(),
            passthrough: self.config.passthrough,
            empty_close: Duration::from_secs(self.config.empty_room_close_s),
            hand_only: self.config.floor == super::config::FloorMode::Hand,
            fanout_shard_listeners: self.config.fanout_shard_listeners,
        }
    }

    /// `/rtcpeer` connections open now.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A new connection.
    pub fn connect(&self, outbox: Outbox) -> Conn {
        self.open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("pttbridge_meeting_connections").increment(1.0);
        Conn::new(self.next_conn.fetch_add(1, Ordering::Relaxed), outbox)
    }

    /// Connection count bookkeeping when a socket task ends.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("pttbridge_meeting_connections").decrement(1.0);
    }

    /// Handles one request of `conn`; the reply to send back, or `None` when it is queued
    /// already (a room queues its `meeting.enter` reply itself, ahead of the pushes that
    /// follow it).
    pub async fn handle(self: &Arc<Self>, conn: &mut Conn, req: Request) -> Option<Value> {
        let (module, method) = req.envelope();
        Some(match self.dispatch(conn, req).await {
            Ok(Value::Null) => return None,
            Ok(v) => v,
            Err(r) => {
                metrics::counter!("pttbridge_meeting_errors_total", "kind" => r.kind())
                    .increment(1);
                static REFUSED: RateLimit = RateLimit::debug("request refused (meeting)");
                if REFUSED.allow() {
                    debug!(module, method, code = r.0, msg = %esc(&r.1), "request refused");
                }
                reply::error(module, method, r.0, &r.1)
            }
        })
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
                self.callee_step(me, &r.peers, Input::Agree, r.room_id)?;
                Ok(reply::ok(module, method))
            }
            Request::Reject(r) => {
                // `reason` (a bridge extension) is not relayed: a peer's reject carries none.
                self.callee_step(me, &r.peers, Input::Reject, None)?;
                Ok(reply::ok(module, method))
            }
            Request::Cancel(r) => {
                self.cancel(me, &r.peers)?;
                Ok(reply::ok(module, method))
            }
            Request::DoEvent(e) => {
                self.event(me, &e)?;
                Ok(reply::ok(module, method))
            }
            Request::NewAppRoom(r) => {
                let id = self.new_room(me, r.name, r.room_type, r.number_limit, false)?;
                Ok(reply::ok_with(module, method, &RoomCreated { room_id: id }))
            }
            Request::NewTempRoom(r) => {
                let id = self.new_room(me, r.name, r.room_type, r.number_limit, r.is_public)?;
                Ok(reply::ok_with(module, method, &RoomCreated { room_id: id }))
            }
            Request::Room(r) => self.room_request(conn, me, r).await,
            Request::MeetingNew(r) => self.meeting_new(conn, me, &r).await,
            Request::Appointment(r) => self.appointment_request(conn, me, *r).await,
            Request::Logout(r) => {
                if r.user_id != me {
                    return Err(Refusal::new(
                        code::FAILED,
                        "userId is not the registered user",
                    ));
                }
                // Only this connection's own session: another user's SID is not the caller's
                // to end.
                if conn.sid.as_deref() != Some(r.sid.as_str()) {
                    return Err(Refusal::new(
                        code::FORBIDDEN,
                        "SID is not this connection's session",
                    ));
                }
                self.accounts.lock().logout(&r.sid);
                self.disconnect(conn).await;
                Ok(reply::ok(module, method))
            }
            Request::Enter(r) => {
                let admitted = self
                    .enter(conn, me, r.room_id, r.username, r.password)
                    .await?;
                if admitted.replied {
                    // Sent by the room (see `handle`).
                    return Ok(Value::Null);
                }
                Ok(reply::ok_with(module, method, &admitted.entered))
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
                        operator: conn.operator,
                        req: other,
                        reply: tx,
                    })
                    .await?;
                let out = rx.await.map_err(|_| Refusal::stopped("room"))??;
                if leaving {
                    conn.room = None;
                    self.member_left(room, me);
                }
                Ok(out)
            }
        }
    }

    /// The handle of room `id`.
    pub fn room(&self, id: Id) -> Option<RoomHandle> {
        self.state().rooms.get(id).cloned()
    }

    /// Sends a push to a registered user; false when it is not online or not reading.
    pub fn push_to(&self, st: &State, user: Id, msg: &Push) -> bool {
        st.registry.push(user, msg)
    }

    // ---- registration and rooms ----------------------------------------------------------

    fn register(
        &self,
        conn: &mut Conn,
        sid: &str,
        user: Id,
        device_type: Option<String>,
    ) -> Answer {
        let session = self.accounts.lock().session(sid).cloned();
        let Some(session) = session else {
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
        // Signed in by an operator (the page's meeting client): may moderate any room it is in.
        conn.operator = session.app_id == super::auth::PAGE_APP;
        let detail = json!({ "side": "meeting", "terminal": conn.id.to_string(),
                             "device_type": device_type.clone() });
        let mut st = self.state();
        let old = st.registry.insert(
            user,
            Registered {
                conn: conn.id,
                outbox: conn.outbox.clone(),
                device_type,
                kick: conn.kick.clone(),
            },
        );
        // Online on the platforms (in a room or not) until this connection unregisters.
        self.events.room(
            EventKind::SideConnected,
            None,
            Some(party(user, conn.name.as_deref())),
            detail,
        );
        if let Some(old) = old
            && old.conn != conn.id
        {
            // The same user signed in again (its app vouched for it anew): one registration
            // per user, so the older connection is told why and closed.
            info!(
                user,
                "registered again from another connection; the older one is closed"
            );
            let _ = old.kick.try_send(Kick {
                reason: "registered again from another connection".into(),
                end_session: false,
            });
        }
        conn.user = Some(user);
        metrics::gauge!("pttbridge_meeting_registered").set(st.registry.len() as f64);
        Ok(reply::ok("call", "doRegister"))
    }

    fn new_room(
        self: &Arc<Self>,
        owner: Id,
        name: String,
        room_type: i64,
        limit: i64,
        public: bool,
    ) -> Result<Id, Refusal> {
        if name.trim().is_empty() {
            return Err(Refusal::new(code::BAD_FIELDS, "name must not be empty"));
        }
        let limit = limit.clamp(2, self.config.max_room_members as i64);
        let id = {
            let mut st = self.state();
            if st.rooms.len() >= self.config.max_rooms {
                metrics::counter!("pttbridge_meeting_limited_total", "limit" => "rooms")
                    .increment(1);
                return Err(Refusal::new(
                    code::TOO_MANY,
                    format!(
                        "the bridge has {} rooms open (meeting.max_rooms): try later",
                        self.config.max_rooms
                    ),
                ));
            }
            if st.rooms.owned_by(owner) >= self.config.max_rooms_per_user {
                metrics::counter!("pttbridge_meeting_limited_total", "limit" => "rooms_per_user")
                    .increment(1);
                return Err(Refusal::new(
                    code::TOO_MANY,
                    format!(
                        "you have {} rooms open (meeting.max_rooms_per_user): finish one first",
                        self.config.max_rooms_per_user
                    ),
                ));
            }
            st.rooms.next_id()
        };
        let info = Room {
            id: Some(id),
            name: Some(name),
            owner_id: Some(owner),
            room_type: Some(room_type),
            number_limit: Some(limit),
            is_public: Some(public),
            is_has_pwd: Some(false),
            ..Room::default()
        };
        let handle = self.spawn_room(info.clone())?;
        let mut st = self.state();
        st.rooms.add(id, RoomMeta::new(info, false));
        st.rooms.opened(id, handle);
        Ok(id)
    }

    /// The rooms' threads, started now if this is the first room.
    fn room_threads(&self) -> std::io::Result<&RoomThreads> {
        if let Some(t) = self.room_threads.get() {
            return Ok(t);
        }
        let started = RoomThreads::start(self.config.room_threads)?;
        // Two first rooms at once: the threads of the one that lost end with it.
        Ok(self.room_threads.get_or_init(|| started))
    }

    /// Starts the actor of a room with `info` (its own UDP port).
    pub(super) fn spawn_room(self: &Arc<Self>, info: Room) -> Result<RoomHandle, Refusal> {
        let host: Arc<dyn RoomHost> = self.clone();
        let mut cfg = self.room_config();
        // A room's own floor mode (standing rooms' `floorMode`) over `[meeting] floor`.
        if let Some(mode) = info
            .extra
            .get(super::rooms::FLOOR_MODE)
            .and_then(Value::as_str)
        {
            cfg.hand_only = mode == "hand";
        }
        let threads = self.room_threads().map_err(|e| {
            Refusal::new(
                code::INTERNAL,
                format!("cannot start the rooms' threads: {e}"),
            )
        })?;
        let handle = room::spawn(host, cfg, info, threads.place()).map_err(|e| {
            Refusal::new(
                code::INTERNAL,
                format!("cannot open the room's media port: {e}"),
            )
        })?;
        metrics::counter!("pttbridge_meeting_rooms_total").increment(1);
        Ok(handle)
    }

    pub(super) async fn enter(
        self: &Arc<Self>,
        conn: &mut Conn,
        me: Id,
        room_id: Id,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<room::Admitted, Refusal> {
        let handle = self.admit(me, room_id, password.as_deref())?;
        if let Some(old) = conn.room.take()
            && let Some(h) = self.room(old)
        {
            let _ = h.try_send(RoomCmd::Leave {
                client: me,
                conn: conn.id,
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
                conn: conn.id,
                outbox: Some(conn.outbox.clone()),
                reply: tx,
            })
            .await?;
        let entered = rx.await.map_err(|_| Refusal::stopped("room"))??;
        conn.room = Some(room_id);
        if entered.entered.members.is_empty() {
            self.dial_standing(room_id);
        }
        self.events.room(
            EventKind::PartyJoined,
            Some(room_id),
            Some(party(me, client.name.as_deref())),
            Value::Null,
        );
        Ok(entered)
    }

    fn member_left(&self, room: Id, me: Id) {
        self.events.room(
            EventKind::PartyLeft,
            Some(room),
            Some(party(me, None)),
            Value::Null,
        );
    }

    /// The connection closed (or logged out): leave its room, end its calls, unregister. A
    /// connection its user has since registered from elsewhere only leaves what is still its
    /// own: the user's calls now belong to the newer connection.
    pub async fn disconnect(self: &Arc<Self>, conn: &mut Conn) {
        // Calls end first (reason `gone`), then the room sees the member leave.
        let current = conn.user.is_some_and(|me| {
            self.state()
                .registry
                .get(me)
                .is_some_and(|r| r.conn == conn.id)
        });
        if current {
            self.end_calls_of(conn);
        }
        if let Some(room) = conn.room.take()
            && let Some(h) = self.room(room)
            && let Some(me) = conn.user
        {
            let _ = h
                .send(RoomCmd::Leave {
                    client: me,
                    conn: conn.id,
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
        if st.registry.remove(me, conn.id) {
            self.events.room(
                EventKind::SideDisconnected,
                None,
                Some(party(me, conn.name.as_deref())),
                json!({ "side": "meeting", "terminal": conn.id.to_string() }),
            );
        }
        metrics::gauge!("pttbridge_meeting_registered").set(st.registry.len() as f64);
    }

    // ---- calls ---------------------------------------------------------------------------

    fn end_calls_of(&self, conn: &Conn) {
        let Some(me) = conn.user else {
            return;
        };
        let mut st = self.state();
        for id in st.calls.of(me) {
            let Some(c) = st.calls.get_mut(id) else {
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
        // Only a room one may enter can be called into.
        if !st.rooms.may_enter(room, me) {
            return Err(Refusal::new(
                code::FORBIDDEN,
                format!("room {room}: no such room, or you were not invited into it"),
            ));
        }
        if st.calls.of(me).len() >= self.config.max_calls_per_user {
            metrics::counter!("pttbridge_meeting_limited_total", "limit" => "calls_per_user")
                .increment(1);
            return Err(Refusal::new(
                code::TOO_MANY,
                format!(
                    "you have {} calls going (meeting.max_calls_per_user)",
                    self.config.max_calls_per_user
                ),
            ));
        }
        let dial = self.dial.get(target).cloned();
        if dial.as_ref().is_some_and(|d| d.account.standby()) {
            // A cluster node that does not hold the account's lease (and had no holder to relay
            // the call to: none known, as during a failover): the number is answered by the
            // node that holds it (its `/healthz` names it), never by an away channel here.
            return Err(Refusal::new(
                code::FAILED,
                format!(
                    "user {target}: this node does not hold its PTT channel now (cluster standby)"
                ),
            ));
        }
        if dial.is_none() && !st.registry.contains(target) {
            return Err(Refusal::new(
                code::FAILED,
                format!("user {target} is not online"),
            ));
        }
        if st.calls.between(me, target).is_some() {
            return Err(Refusal::new(
                code::CONFLICT,
                format!("already in a call with {target}"),
            ));
        }
        let now = Instant::now();
        let callee_busy = st.calls.busy(target) || (dial.is_some() && st.lines.busy(target));
        let mut call = Call::new(me, target, room, self.config.no_answer_timeout(), now);
        let _ = call.invite(now);
        let id = st.calls.add(call);
        st.signal(id, 1);
        // The called user may enter the room it is called into.
        st.rooms.invite(room, target);
        metrics::counter!("pttbridge_meeting_calls_total", "kind" => if dial.is_some() { "dial_in" } else { "relay" }).increment(1);
        self.events.room(
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
                    .or_else(|| st.registry.get(me).and_then(|r| r.device_type.clone()));
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
                // The bridge answers like a person would: its first step after the ring delay.
                let policy = if callee_busy {
                    AnswerPolicy::Busy
                } else {
                    d.policy
                };
                let first = match policy {
                    AnswerPolicy::Reject => Input::Reject,
                    AnswerPolicy::Busy => Input::Busy,
                    AnswerPolicy::Answer | AnswerPolicy::Ignore => Input::Ring,
                };
                let ring = Duration::from_millis(self.config.ring_delay_ms);
                if let Some(c) = st.calls.get_mut(id) {
                    c.step = Some((now + ring, first));
                }
            }
        }
        drop(st);
        self.timers.notify_one();
        Ok(())
    }

    /// One callee step taken by the bridge for a dial-in id (its timer came due).
    fn bridge_step(&self, st: &mut State, call: u64, input: Input) {
        let Some(c) = st.calls.get_mut(call) else {
            return;
        };
        let dial = c.call.callee;
        let Ok(state) = c.call.handle(input, Role::Callee, Instant::now()) else {
            return;
        };
        let (caller, room) = (c.call.caller, c.call.room_id);
        let answers = self
            .dial
            .get(dial)
            .is_some_and(|d| d.policy == AnswerPolicy::Answer);
        if input == Input::Ring && answers {
            c.step = Some((
                Instant::now() + Duration::from_millis(self.config.answer_delay_ms),
                Input::Agree,
            ));
        }
        let from = push::From {
            own_user_id: dial,
            own_device_type: Some("ptt".into()),
        };
        let event = |event| {
            Push::Event(push::Evented {
                from: from.clone(),
                event,
                room_id: Some(room),
                room_type: None,
                reason: None,
                data: None,
            })
        };
        let msg = match input {
            Input::Ring => event(CallEvent::Ringing),
            Input::Busy => event(CallEvent::Busy),
            Input::Agree => Push::Agree(push::Agreed {
                from: from.clone(),
                room_id: Some(room),
            }),
            _ => Push::Reject(push::Ended {
                from: from.clone(),
                reason: None,
            }),
        };
        self.push_to(st, caller, &msg);
        st.signal(call, 1);
        self.after_step(st, call, state, input, room, caller);
    }

    /// A call's no-answer deadline passed: both sides are told, the call ends.
    fn expire(&self, st: &mut State, call: u64) {
        let Some(c) = st.calls.get_mut(call) else {
            return;
        };
        if c.call.poll_timeout(Instant::now()).is_none() {
            return;
        }
        let (caller, callee, room) = (c.call.caller, c.call.callee, c.call.room_id);
        info!(call, caller, callee, "call not answered in time");
        let reason = Some("noAnswer".to_owned());
        self.push_to(
            st,
            callee,
            &Push::Cancel(push::Ended {
                from: push::From {
                    own_user_id: caller,
                    own_device_type: None,
                },
                reason: reason.clone(),
            }),
        );
        self.push_to(
            st,
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
        self.end_call(st, call, EndReason::NoAnswer, room);
    }

    /// Runs what the calls' timer has due at `now`.
    fn on_timers(&self, now: Instant) {
        let mut st = self.state();
        let (steps, expired) = st.calls.due(now);
        for (call, input) in steps {
            self.bridge_step(&mut st, call, input);
        }
        for call in expired {
            self.expire(&mut st, call);
        }
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
            CallState::Ringing if input == Input::Ring => self.events.room(
                EventKind::CallRinging,
                Some(room),
                Some(party(actor, None)),
                json!({ "call": call, "stage": "ringing" }),
            ),
            CallState::Agreed => self.events.room(
                EventKind::CallAnswered,
                Some(room),
                Some(party(actor, None)),
                json!({ "call": call }),
            ),
            CallState::Ended(reason) => self.end_call(st, call, reason, room),
            _ => {}
        }
        self.timers.notify_one();
    }

    /// Numbers and keeps a platform's call (its invitation counted as its first signal).
    pub(super) fn add_platform_call(&self, st: &mut State, call: Call) -> u64 {
        let id = st.calls.add(call);
        st.signal(id, 1);
        metrics::counter!("pttbridge_meeting_calls_total", "kind" => "platform").increment(1);
        self.timers.notify_one();
        id
    }

    pub(super) fn end_call(&self, st: &mut State, call: u64, reason: EndReason, room: Id) {
        let Some(c) = st.calls.remove(call) else {
            return;
        };
        metrics::counter!("pttbridge_meeting_calls_ended_total", "reason" => reason.as_str())
            .increment(1);
        self.events.room(
            EventKind::CallEnded,
            Some(room),
            Some(party(c.call.caller, None)),
            json!({ "call": call, "callee": c.call.callee, "reason": reason.as_str(),
                    "seconds": c.call.started().elapsed().as_secs_f64() }),
        );
        // A dial-in that was linked: take the link down with the call.
        let dial = c.call.callee;
        if st.lines.room_of(dial) == Some(room)
            && let Some(h) = st.rooms.get(room)
        {
            let _ = h.try_send(RoomCmd::DetachLink {
                dial,
                reason: reason.as_str(),
            });
        }
    }

    fn live_call(&self, st: &State, me: Id, other: Id) -> Result<u64, Refusal> {
        st.calls.between(me, other).ok_or_else(|| {
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
        let c = st.calls.get_mut(id).expect("found above");
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
            && let Some(c) = st.calls.get_mut(id)
        {
            // A platform's invite: nobody on the calling side sends onConnected; the callee
            // enters the room itself. The call is connected from here on (ends on cancel).
            let _ = c
                .call
                .handle(Input::Connected, Role::Caller, Instant::now());
            self.timers.notify_one();
        }
        Ok(())
    }

    fn cancel(&self, me: Id, p: &CallPeers) -> Result<(), Refusal> {
        own_user(me, p.own_user_id)?;
        let mut st = self.state();
        let id = self.live_call(&st, me, p.target_user_id)?;
        let c = st.calls.get_mut(id).expect("found above");
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
        let c = st.calls.get_mut(id).expect("found above");
        let role = c.call.role_of(me).expect("a party of its own call");
        let state = c
            .call
            .handle(input, role, Instant::now())
            .map_err(|e| Refusal::new(code::CONFLICT, e.to_string()))?;
        let room = c.call.room_id;
        st.signal(id, 1);
        if input == Input::Connected
            && let Some(d) = self.dial.get(target)
        {
            if let Some(h) = st.rooms.get(room).cloned()
                && st.lines.attach(target, room)
            {
                let link = LinkSetup {
                    target: d.clone(),
                    caller: me,
                    ready: None,
                    ends_when_empty: false,
                };
                if !h.try_send(RoomCmd::AttachLink(Box::new(link))) {
                    st.lines.down(target, room);
                    warn!(room, "room did not take the link");
                }
            }
        } else if self.push_to(&st, target, &msg) {
            st.signal(id, 1);
        }
        self.after_step(&mut st, id, state, input, room, me);
        Ok(())
    }

    /// Claims `dial` and asks `room` to bring its channel in; `ready` hears whether it came
    /// up. Fails when the dial-in is busy or the room is gone or not taking commands.
    pub(super) fn attach(
        &self,
        dial: &DialTarget,
        room: Id,
        caller: Id,
        ready: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), AttachError> {
        self.attach_with(dial, room, caller, ready, false)
    }

    /// [`Self::attach`]; `ends_when_empty`: the link ends when the room's last member leaves.
    pub(super) fn attach_with(
        &self,
        dial: &DialTarget,
        room: Id,
        caller: Id,
        ready: Option<oneshot::Sender<Result<(), String>>>,
        ends_when_empty: bool,
    ) -> Result<(), AttachError> {
        let mut st = self.state();
        if st.dial_busy(dial.user_id) {
            return Err(AttachError::Busy);
        }
        let h = st.rooms.get(room).cloned().ok_or(AttachError::NoRoom)?;
        st.lines.attach(dial.user_id, room);
        let setup = LinkSetup {
            target: dial.clone(),
            caller,
            ready,
            ends_when_empty,
        };
        if !h.try_send(RoomCmd::AttachLink(Box::new(setup))) {
            st.lines.down(dial.user_id, room);
            return Err(AttachError::RoomBusy);
        }
        Ok(())
    }

    /// Starts the call record of a meeting ⇄ PTT link in hub group `group`, called by `caller`
    /// (the platform when [`PLATFORM`]); `None` until the meeting side was given the platform's records.
    pub fn start_record(&self, group: String, caller: Id) -> Option<CallRecorder> {
        let calls = self.records.get()?;
        let mut start = CallStart::new(
            self.events.app().to_owned(),
            group,
            [Side::Meeting, Side::Ptt],
        );
        if caller != PLATFORM {
            start = start.initiator(party(caller, None));
        }
        Some(calls.start(start))
    }

    /// Client mode: takes `dial` for a call on an upstream server; false when it is in a call
    /// or linked already (here or on another upstream).
    pub fn claim_dial(&self, dial: Id) -> bool {
        let mut st = self.state();
        !st.calls.calling(dial) && st.lines.claim_upstream(dial)
    }

    /// Client mode: the upstream call of `dial` is over.
    pub fn release_dial(&self, dial: Id) {
        self.state().lines.release_upstream(dial);
    }

    /// `/healthz` view: registered users, live calls, rooms and PTT links.
    pub fn health(&self) -> Value {
        let st = self.state();
        let links: Vec<Value> = st
            .lines
            .links()
            .into_iter()
            .map(|(dial, room)| {
                // How long it has been up (null while it is coming up): the page ticks from it.
                let up_ms = st
                    .lines
                    .linked_since(dial)
                    .map(|t| t.elapsed().as_millis() as u64);
                json!({ "dial_in": dial, "room": room, "up_ms": up_ms })
            })
            .collect();
        json!({
            "enabled": self.config.enabled,
            "registered": st.registry.len(),
            "calls": st.calls.live_count(),
            "rooms": st.rooms.len(),
            "links": links,
        })
    }

    /// Hangs up the link of `dial` from the bridge side (admin API, PTT-side hang-up).
    pub fn hang_up(&self, dial: Id) -> bool {
        let st = self.state();
        let Some(room) = st.lines.room_of(dial) else {
            return false;
        };
        if let Some(h) = st.rooms.get(room) {
            let _ = h.try_send(RoomCmd::DetachLink {
                dial,
                reason: "hangup",
            });
        }
        true
    }
}

/// Why a dial-in could not be brought into a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Linked or in a call already.
    #[error("the dial-in is busy (linked or in a call)")]
    Busy,
    /// No such room.
    #[error("no such room")]
    NoRoom,
    /// The room's command queue is full.
    #[error("the room is not taking commands")]
    RoomBusy,
}

impl RoomHost for Switchboard {
    fn link_up(&self, room: Id, dial: Id, caller: Id) -> Option<Arc<CallCounters>> {
        let rec = self.start_record(group_id(room), caller);
        let mut st = self.state();
        // A platform's dial has no RTCPeer call: its one signal is the invite itself.
        let signals = st
            .calls
            .to_in_room(dial, room)
            .and_then(|id| st.calls.get(id))
            .map_or(u64::from(caller == PLATFORM), |c| c.signals);
        let counters = rec.as_ref().map(|r| {
            r.counters().signal(signals);
            r.counters()
        });
        st.lines.up(dial, room, rec);
        counters
    }

    fn link_down(&self, room: Id, dial: Id, reason: &str) {
        let mut st = self.state();
        let record = st.lines.down(dial, room);
        if let Some(id) = st.calls.to_in_room(dial, room) {
            let c = st.calls.get_mut(id).expect("found above");
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

    fn room_closed(&self, room: Id) {
        self.state().rooms.remove(room);
    }

    fn publish(&self, kind: EventKind, room: Id, party: Option<Party>, detail: Value) {
        self.events.room(kind, Some(room), party, detail);
    }

    fn recorder(&self) -> Option<(Recorder, String)> {
        let r = self.recorder.get()?.clone();
        Some((r, self.events.app().to_owned()))
    }
}

/// The calls' one timer: sleeps until the earliest deadline or bridge step, or until the
/// table changes; ends with the switchboard (whose drop wakes it).
async fn run_timers(sb: Weak<Switchboard>, wake: Arc<Notify>) {
    // Far enough to mean "nothing due"; re-armed by any change.
    const IDLE: Duration = Duration::from_secs(3600);
    loop {
        let next = match sb.upgrade() {
            Some(sb) => sb.state().calls.next_deadline(),
            None => return,
        };
        let at = next.map_or_else(|| tokio::time::Instant::now() + IDLE, Into::into);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            // A change since the deadline was read left a permit: this returns at once.
            _ = wake.notified() => {}
        }
        let Some(sb) = sb.upgrade() else { return };
        sb.on_timers(Instant::now());
    }
}

impl Drop for Switchboard {
    fn drop(&mut self) {
        self.timers.notify_one();
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
