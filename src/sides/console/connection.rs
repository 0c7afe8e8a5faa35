//! One console WebSocket: requests in, replies and notifications out, its own PTT session,
//! its call, and its audio. One task per connection; nothing here waits on another console.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use muicall::audio::Header;
use muicall::{
    CallState, HangupResp, MemberResp, MemberResult, Notify, Reply, Request, RequestError,
    Transaction, response_type,
};
use ptt::client::{self, ClientConfig, ClientEvent, ClientHandle, Command, OutgoingVoice};
use ptt::proto;
use ptt::session::{Event as PttEvent, SessionConfig};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use super::audio::{Downstream, Upstream};
use super::call::{Call, Change, Member};
use super::config::normalize_base_url;
use super::moderator::{Action, Outcome, sleep_until};
use super::{ConsoleSide, ServerEntry, new_call_id};
use crate::hub::event::Draft;
use crate::hub::floor::{Decision, Floor};
use crate::hub::{EventKind, Party, Side};

/// Messages waiting for the socket; a console that does not read is cut off, not buffered.
const OUT_QUEUE: usize = 512;
/// Free slots wanted before the next message from the console is read: a console that sends
/// faster than it reads is slowed down (its own socket only), not cut off.
const OUT_HEADROOM: usize = 32;
/// How long a closed connection is still drained so the console can read the close frame.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a console may leave its messages unread before it is cut off.
const READ_STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// Console audio accepted per second of wall time (ms): 1.5 × real time.
const AUDIO_MS_PER_S: u32 = 1500;
/// Console audio accepted in a burst above that (ms), e.g. after a network stall.
const AUDIO_BURST_MS: u32 = 1000;

/// Call channels are named `call-<sessionId>`.
const CALL_CHANNEL_PREFIX: &str = "call-";

/// Hang-up reason codes (`hangupReason.code`), documented in `docs/console.md`.
mod reason {
    /// Every terminal left the call.
    pub const ALL_LEFT: i64 = 0;
    /// No terminal could be brought into the call.
    pub const NOBODY: i64 = 1;
    /// The PTT server connection was lost.
    pub const SERVER_LOST: i64 = 2;
    /// The call channel went away, or the console was moved out of it.
    pub const CHANNEL_GONE: i64 = 3;
}

pub(crate) async fn run(side: ConsoleSide, socket: WebSocket, mut shutdown: watch::Receiver<bool>) {
    let id = side.0.next_conn.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("console", conn = id);
    async move {
        metrics::gauge!("pttbridge_console_connections").increment(1.0);
        side.0.live.fetch_add(1, Ordering::SeqCst);
        info!("console connected");
        let (sink, mut stream) = socket.split();
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let writer = tokio::spawn(write_loop(sink, out_rx));
        let (outcome_tx, outcomes) = mpsc::channel(256);
        let bitrate = side.0.config.opus_bitrate;
        let cfg = &side.0.config;
        let mut conn = Connection {
            limiter: TokenBucket::new(cfg.requests_per_second, cfg.request_burst),
            audio_budget: TokenBucket::new(AUDIO_MS_PER_S, AUDIO_BURST_MS),
            side: side.clone(),
            id,
            out,
            server: None,
            login: None,
            creating: None,
            call: None,
            upstream: Upstream::new(bitrate),
            downstream: Downstream::new(muicall::AudioFormat::default()),
            audio_error_reported: false,
            outcome_tx,
            outcomes,
            closing: None,
        };
        conn.run(&mut stream, &mut shutdown).await;
        // Terminals go home before anything else, whatever ended the connection.
        conn.logout("the console disconnected").await;
        if let Some((code, reason)) = conn.closing.take() {
            let _ = conn.out.try_send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })));
            drop(conn);
            // Keep reading (and discarding) for a moment: closing with unread data would
            // reset the connection and the console would never see the close frame.
            let until = tokio::time::Instant::now() + LINGER;
            while let Ok(Some(_)) = tokio::time::timeout_at(until, stream.next()).await {}
        } else {
            drop(conn);
        }
        let _ = writer.await;
        metrics::gauge!("pttbridge_console_connections").decrement(1.0);
        side.0.live.fetch_sub(1, Ordering::SeqCst);
        info!("console gone");
    }
    .instrument(span)
    .await
}

async fn write_loop(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::Receiver<Message>) {
    while let Some(m) = rx.recv().await {
        let close = matches!(m, Message::Close(_));
        if sink.send(m).await.is_err() || close {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Requests per second with a burst allowance.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        self.take_amount(now, 1.0)
    }

    fn take_amount(&mut self, now: Instant, amount: f64) -> bool {
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the PTT server to accept the login, until the deadline.
    Pending(Instant),
    /// Logged in.
    Up,
    /// The PTT connection dropped; the client is reconnecting.
    Reconnecting,
}

struct Login {
    account: String,
    level: u8,
    server: Arc<ServerEntry>,
    client: ClientHandle,
    events: mpsc::Receiver<ClientEvent>,
    phase: Phase,
    user_id: u64,
    name: String,
    /// Commands for `client`, forwarded in order by one task (so a "go home" cannot overtake
    /// the creation of the next call's channel).
    commands: mpsc::Sender<Command>,
}

impl Login {
    /// Queues a command for the console's PTT session; `false` when it has stopped or is
    /// hopelessly behind.
    fn command(&self, cmd: Command) -> bool {
        self.commands.try_send(cmd).is_ok()
    }

    fn party(&self) -> Party {
        Party {
            side: Side::Console,
            id: self.account.clone(),
            name: self.account.clone(),
        }
    }
}

/// A call whose channel the PTT server is creating.
struct Creating {
    call_id: u64,
    name: String,
    members: Vec<Member>,
    transaction: Option<Transaction>,
    home_path: String,
    deadline: Instant,
}

struct Connection {
    side: ConsoleSide,
    id: u64,
    out: mpsc::Sender<Message>,
    server: Option<Arc<ServerEntry>>,
    login: Option<Login>,
    creating: Option<Creating>,
    call: Option<Call>,
    upstream: Upstream,
    downstream: Downstream,
    limiter: TokenBucket,
    /// Milliseconds of console audio allowed: a little faster than real time, so a console
    /// cannot make the bridge encode (or the PTT server carry) more than it can speak.
    audio_budget: TokenBucket,
    /// An audio error was reported and the console has not sent good audio since.
    audio_error_reported: bool,
    outcome_tx: mpsc::Sender<Outcome>,
    outcomes: mpsc::Receiver<Outcome>,
    /// Close the socket with this code and reason.
    closing: Option<(u16, String)>,
}

async fn recv_opt(rx: Option<&mut mpsc::Receiver<ClientEvent>>) -> Option<ClientEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn error_metric(kind: &'static str) {
    metrics::counter!("pttbridge_console_errors_total", "kind" => kind).increment(1);
}

fn terminal_party(m: &Member) -> Party {
    Party {
        side: Side::Ptt,
        id: m.id.to_string(),
        name: m.name.clone(),
    }
}

impl Connection {
    async fn run(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        loop {
            if self.closing.is_some() {
                break;
            }
            if self.out.capacity() < OUT_HEADROOM {
                match tokio::time::timeout(READ_STALL, self.out.reserve_many(OUT_HEADROOM)).await {
                    Ok(Ok(permits)) => drop(permits),
                    _ => {
                        error_metric("console_not_reading");
                        self.closing =
                            Some((1008, "the console is not reading its messages".into()));
                        continue;
                    }
                }
            }
            let wake = self.next_deadline();
            tokio::select! {
                msg = stream.next() => match msg {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(t))) => self.on_text(t.as_str()).await,
                    Some(Ok(Message::Binary(b))) => self.on_audio(b),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let text = e.to_string();
                        let (kind, code) = if text.contains("too long") || text.contains("Space limit") {
                            ("oversize_frame", 1009)
                        } else {
                            ("websocket_protocol", 1002)
                        };
                        warn!(error = %text, "closing the console connection");
                        error_metric(kind);
                        let reason = if code == 1009 {
                            format!("message too large (limit {} bytes)", self.side.0.config.max_message_bytes)
                        } else {
                            "WebSocket protocol error".to_string()
                        };
                        self.closing = Some((code, reason));
                    }
                },
                ev = recv_opt(self.login.as_mut().map(|l| &mut l.events)) => match ev {
                    Some(ev) => self.on_ptt(ev).await,
                    None => self.lost_client().await,
                },
                Some(o) = self.outcomes.recv() => self.on_outcome(o).await,
                _ = sleep_until(wake) => self.on_timer(Instant::now()).await,
                // The bridge is stopping: calls end (terminals go home) and consoles are told.
                _ = async { drop(shutdown.wait_for(|s| *s).await) } => {
                    self.closing = Some((1001, "the bridge is shutting down".into()));
                }
            }
        }
    }

    // ---- output ----------------------------------------------------------------------------

    fn send_json(&mut self, msg: &impl Serialize) {
        let text = match serde_json::to_string(msg) {
            Ok(t) => t,
            Err(e) => return warn!("cannot serialize a reply: {e}"),
        };
        if self.out.try_send(Message::Text(text.into())).is_err() && self.closing.is_none() {
            // Control messages must not be lost; a console this far behind is cut off.
            error_metric("console_not_reading");
            self.closing = Some((1008, "the console is not reading its messages".into()));
        }
    }

    fn reply(&mut self, kind: &str, code: i64, message: impl Into<String>) {
        self.send_json(&Reply::new(kind, code, message));
    }

    /// A failed request, in the shape the spec gives its reply.
    fn reply_error(
        &mut self,
        request_type: Option<&str>,
        kind: &'static str,
        message: String,
        call: u64,
    ) {
        error_metric(kind);
        debug!(kind, %message, "request refused");
        match request_type {
            None => self.reply("error", 0, message),
            Some(t @ ("addGroupMember" | "kickGroupMember")) => {
                self.send_json(&MemberResp::failed(t, call, None, message))
            }
            Some("tempCallHangup") => self.send_json(&HangupResp::new(call, -1, message)),
            Some(t) => {
                let kind = response_type(t).to_string();
                self.reply(&kind, 0, message)
            }
        }
    }

    fn notify(&mut self, n: Notify) {
        self.send_json(&n);
    }

    fn publish(&self, kind: EventKind, call: u64, party: Option<Party>, detail: serde_json::Value) {
        let Some(server) = self
            .login
            .as_ref()
            .map(|l| l.server.clone())
            .or_else(|| self.server.clone())
        else {
            return;
        };
        let mut d =
            Draft::new(server.ptt.app.clone(), kind, format!("console:{call}")).detail(detail);
        d.party = party;
        self.side.0.bus.publish(d);
    }

    // ---- requests ----------------------------------------------------------------------------

    async fn on_text(&mut self, text: &str) {
        let req = match muicall::parse_request(text) {
            Ok(r) => r,
            Err(RequestError {
                kind,
                request_type,
                message,
            }) => {
                return self.reply_error(request_type.as_deref(), kind.as_str(), message, 0);
            }
        };
        if !self.limiter.take(Instant::now()) {
            let limit = self.side.0.config.requests_per_second;
            return self.reply_error(
                Some(req.type_name()),
                "rate_limited",
                format!(
                    "{}: too many requests (limit {limit} per second)",
                    req.type_name()
                ),
                call_of(&req),
            );
        }
        metrics::counter!("pttbridge_console_requests_total", "type" => req.type_name())
            .increment(1);
        match req {
            Request::InitServer { base_url } => self.init_server(&base_url).await,
            Request::Connect {
                account,
                password,
                audio,
            } => {
                if let Some(a) = audio {
                    self.downstream.set_format(a);
                }
                self.connect(account, password).await
            }
            Request::RequestMic {
                to_ids,
                transaction,
                session_id,
            } => self.request_mic(to_ids, transaction, session_id).await,
            Request::ReleaseMic { session_id } => self.release_mic(session_id),
            Request::AddGroupMember {
                session_id,
                ids,
                transaction,
            } => self.add_members(session_id, ids, transaction),
            Request::KickGroupMember {
                session_id,
                ids,
                transaction,
            } => self.kick_members(session_id, ids, transaction),
            Request::TempCallHangup { session_id } => self.hangup(session_id).await,
            Request::LoginOut => {
                if self.login.is_none() {
                    return self.reply_error(
                        Some("loginOut"),
                        "not_logged_in",
                        "loginOut: not logged in".into(),
                        0,
                    );
                }
                self.logout("the console logged out").await;
                self.reply("logoutResp", 1, "登录注销成功");
            }
            Request::AudioFormat(f) => {
                self.downstream.set_format(f);
                self.reply("audioFormat", 1, "ok");
            }
        }
    }

    async fn init_server(&mut self, base_url: &str) {
        let Some(entry) = self
            .side
            .0
            .servers
            .get(&normalize_base_url(base_url))
            .cloned()
        else {
            let mut known: Vec<&String> = self.side.0.servers.keys().collect();
            known.sort();
            return self.reply_error(
                Some("initServer"),
                "unknown_server",
                format!(
                    "initServer: no PTT server is configured for {base_url:?} (known: {known:?})"
                ),
                0,
            );
        };
        if let Some(l) = &self.login
            && l.server.ptt.id != entry.ptt.id
        {
            self.logout("the console chose another server").await;
        }
        self.server = Some(entry);
        self.reply("initServer", 1, "服务器地址初始化成功");
    }

    async fn connect(&mut self, account: String, password: String) {
        let Some(server) = self.server.clone() else {
            return self.reply_error(
                Some("connect"),
                "no_server",
                "connect: send initServer first".into(),
                0,
            );
        };
        if self.login.is_some() {
            self.logout("the console logged in again").await;
        }
        let key = (server.ptt.id.clone(), account.clone());
        {
            let mut accounts = self
                .side
                .0
                .accounts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match accounts.get(&key) {
                Some(other) if *other != self.id => {
                    drop(accounts);
                    return self.reply_error(
                        Some("connect"),
                        "account_in_use",
                        format!(
                            "connect: account {account:?} is already logged in on another console"
                        ),
                        0,
                    );
                }
                _ => {
                    accounts.insert(key, self.id);
                }
            }
        }
        let cfg = &self.side.0;
        let session = SessionConfig {
            username: account.clone(),
            password,
            talk_timeout: cfg.ptt.talk_timeout(),
            ..SessionConfig::default()
        };
        let p = &server.ptt;
        let mut cc = ClientConfig::new(p.host.clone(), p.port, p.trust(), session);
        cc.udp_port = p.udp_port;
        cc.backoff = cfg.ptt.backoff();
        let (client, events) = client::spawn(cc);
        let (commands, mut queued) = mpsc::channel::<Command>(64);
        let forward = client.clone();
        tokio::spawn(async move {
            while let Some(cmd) = queued.recv().await {
                if forward.command(cmd).await.is_err() {
                    break;
                }
            }
        });
        info!(%account, server = %p.id, "console logging in");
        self.login = Some(Login {
            level: cfg.config.level_of(&account),
            account,
            server,
            client,
            events,
            phase: Phase::Pending(Instant::now() + cfg.config.login_timeout()),
            user_id: 0,
            name: String::new(),
            commands,
        });
        self.audio_error_reported = false;
    }

    /// Ends the PTT session (hanging up its call) and frees the account.
    async fn logout(&mut self, why: &str) {
        self.abandon_creation();
        self.end_call(reason::ALL_LEFT, why, 0, false);
        if let Some(l) = self.login.take() {
            let _ = l.commands.send(Command::Shutdown).await;
            let key = (l.server.ptt.id.clone(), l.account.clone());
            let mut accounts = self
                .side
                .0
                .accounts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if accounts.get(&key) == Some(&self.id) {
                accounts.remove(&key);
            }
            info!(account = %l.account, %why, "console logged out");
        }
    }

    async fn fail_login(&mut self, message: String) {
        metrics::counter!("pttbridge_console_logins_total", "result" => "failed").increment(1);
        self.logout("login failed").await;
        self.reply_error(Some("connect"), "login_failed", message, 0);
    }

    fn up_login(&self) -> Result<&Login, &'static str> {
        match &self.login {
            Some(l) if l.phase == Phase::Up => Ok(l),
            Some(l) if l.phase == Phase::Reconnecting => {
                Err("the PTT server connection is down; the bridge is reconnecting")
            }
            Some(_) => Err("the login is not complete yet"),
            None => Err("not logged in (send connect first)"),
        }
    }

    fn busy_claim(&self, server: &str, id: u64, call: u64) -> bool {
        let mut busy = self.side.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        match busy.get(&(server.to_string(), id)) {
            Some((conn, c)) if *conn != self.id || *c != call => false,
            _ => {
                busy.insert((server.to_string(), id), (self.id, call));
                true
            }
        }
    }

    fn busy_release(&self, server: &str, id: u64) {
        let mut busy = self.side.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        if busy
            .get(&(server.to_string(), id))
            .is_some_and(|(conn, _)| *conn == self.id)
        {
            busy.remove(&(server.to_string(), id));
        }
    }

    /// Looks up terminal `id` and, when it can be called, claims it for `call`.
    fn resolve(&self, login: &Login, id: u64, call: u64) -> (Member, MemberResult) {
        let snap = login.client.snapshot();
        let user = u32::try_from(id)
            .ok()
            .and_then(|uid| snap.users.values().find(|u| u.user_id == Some(uid)));
        // Where to send it back to. A terminal seen in a call channel is on its way home from
        // a call that just ended (this session's view can lag the server's by a moment): its
        // home is where the bridge last sent it, not the call channel about to vanish.
        let key = (login.server.ptt.id.clone(), id);
        let origin = user.map(|u| {
            let in_call_channel = snap
                .channels
                .get(&u.channel_id)
                .is_some_and(|c| c.temporary && c.name.starts_with(CALL_CHANNEL_PREFIX));
            let mut homes = self.side.0.homes.lock().unwrap_or_else(|p| p.into_inner());
            if in_call_channel {
                homes.get(&key).copied().unwrap_or(0)
            } else {
                homes.insert(key.clone(), u.channel_id);
                u.channel_id
            }
        });
        let mut m = Member {
            id,
            name: user.map(|u| u.name.clone()).unwrap_or_default(),
            session: user.map(|u| u.session),
            state: CallState::Idle,
            origin,
            muted: false,
        };
        let result = |code, message: &str, name: &str| MemberResult {
            id,
            name: name.to_string(),
            code,
            message: message.to_string(),
        };
        let r = if id == login.user_id {
            result(3, "that is the console itself", &login.name)
        } else if user.is_none() {
            result(1, "offline", "")
        } else if !self.busy_claim(&login.server.ptt.id, id, call) {
            m.state = CallState::Busy;
            result(2, "busy in another call", &m.name)
        } else {
            m.state = CallState::Calling;
            result(0, "", &m.name)
        };
        (m, r)
    }

    async fn request_mic(
        &mut self,
        to_ids: Option<Vec<u64>>,
        transaction: Option<Transaction>,
        session_id: Option<u64>,
    ) {
        let login = match self.up_login() {
            Ok(l) => l,
            Err(e) => {
                return self.reply_error(
                    Some("requestMic"),
                    "not_logged_in",
                    format!("requestMic: {e}"),
                    0,
                );
            }
        };
        if let Some(sid) = session_id {
            if self.call.as_ref().is_some_and(|c| c.id == sid) {
                return self.floor_request(transaction);
            }
            return self.reply_error(
                Some("requestMic"),
                "unknown_session",
                format!("requestMic: unknown sessionId {sid}"),
                sid,
            );
        }
        if self.creating.is_some() {
            return self.reply_error(
                Some("requestMic"),
                "call_in_setup",
                "requestMic: a call is being set up; wait for createGroup".into(),
                0,
            );
        }
        if self.call.is_some() {
            // "如果当前存在会话，则只请求话语权": with a call up, only the floor is asked for.
            return self.floor_request(transaction);
        }
        let ids = to_ids.unwrap_or_default();
        if ids.is_empty() {
            return self.reply_error(
                Some("requestMic"),
                "missing_field",
                "requestMic: toIds is required to start a call (or give the sessionId of a call)"
                    .into(),
                0,
            );
        }
        let call_id = new_call_id();
        let mut members: Vec<Member> = Vec::new();
        let mut refused = Vec::new();
        for id in ids {
            if members.iter().any(|m| m.id == id) {
                continue;
            }
            let (m, r) = self.resolve(login, id, call_id);
            if r.code == 3 {
                continue;
            }
            if r.code != 0 {
                refused.push(format!("{id} {}", r.message));
            }
            members.push(m);
        }
        let server = login.server.clone();
        if !members.iter().any(|m| m.state == CallState::Calling) {
            for m in &members {
                if m.state == CallState::Calling {
                    self.busy_release(&server.ptt.id, m.id);
                }
            }
            return self.reply_error(
                Some("createGroup"),
                "nobody_reachable",
                format!(
                    "createGroup: no terminal can be called: {}",
                    refused.join(", ")
                ),
                0,
            );
        }
        let snap = login.client.snapshot();
        let home_path = snap
            .own_channel
            .and_then(|c| snap.channel_path(c))
            .unwrap_or_default();
        let parent = find_channel(&snap, &server.call_parent);
        let Some(parent) = parent else {
            for m in &members {
                self.busy_release(&server.ptt.id, m.id);
            }
            return self.reply_error(
                Some("createGroup"),
                "config",
                format!(
                    "createGroup: the call parent channel {:?} does not exist on the PTT server",
                    server.call_parent
                ),
                0,
            );
        };
        let name = format!("{CALL_CHANNEL_PREFIX}{call_id}");
        let msg = proto::ChannelState {
            parent: Some(parent),
            name: Some(name.clone()),
            temporary: Some(true),
            ..Default::default()
        };
        if !login.command(Command::Send(Box::new(msg.into()))) {
            return self.reply_error(
                Some("createGroup"),
                "ptt_stopped",
                "createGroup: the PTT session stopped".into(),
                0,
            );
        }
        debug!(call = call_id, %name, "creating the call channel");
        self.creating = Some(Creating {
            call_id,
            name,
            members,
            transaction,
            home_path,
            deadline: Instant::now() + self.side.0.config.move_timeout(),
        });
    }

    fn abandon_creation(&mut self) {
        if let Some(c) = self.creating.take()
            && let Some(l) = &self.login
        {
            let server = l.server.ptt.id.clone();
            for m in &c.members {
                self.busy_release(&server, m.id);
            }
        }
    }

    fn call_created(&mut self, channel: u32) {
        let Some(c) = self.creating.take() else {
            return;
        };
        let Some(login) = &self.login else { return };
        let cfg = &self.side.0.config;
        let now = Instant::now();
        let mut call = Call {
            id: c.call_id,
            channel,
            channel_name: c.name,
            home_path: c.home_path,
            owner: (login.user_id, login.name.clone()),
            members: c.members,
            floor: Floor::new(None),
            talker: None,
            started: now,
            pending_grant: Some((c.transaction.clone(), now + cfg.setup_wait())),
        };
        // The floor is free in a new call: the console holds it from the start.
        call.floor.request(login.party(), login.level, false, now);
        let moderator = login.server.moderator.clone();
        let party = login.party();
        for m in &call.members {
            if m.state == CallState::Calling
                && let Some(session) = m.session
                && let Err(e) = moderator.submit(
                    Action::Move { session, channel },
                    m.id,
                    Some(self.outcome_tx.clone()),
                )
            {
                warn!(member = m.id, %e, "cannot ask for a move");
            }
        }
        metrics::counter!("pttbridge_console_calls_total").increment(1);
        metrics::gauge!("pttbridge_console_calls_active").increment(1.0);
        info!(
            call = call.id,
            channel,
            members = call.members.len(),
            "call up"
        );
        let id = call.id;
        let update = Notify::member_update(id, call.owner.0, call.member_list());
        self.call = Some(call);
        self.send_json(
            &Reply::new("createGroup", 1, "建立会话组成功")
                .transaction(c.transaction)
                .session(id),
        );
        self.notify(update);
        self.publish(
            EventKind::PartyJoined,
            id,
            Some(party),
            json!({ "role": "console" }),
        );
        self.presence_changed();
        self.maybe_grant(now, false);
    }

    /// Answers the `requestMic` of a new call once its terminals are in (or at the deadline).
    fn maybe_grant(&mut self, now: Instant, force: bool) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some((_, deadline)) = &call.pending_grant else {
            return;
        };
        if !(force || call.settled() || now >= *deadline) {
            return;
        }
        let (transaction, _) = call.pending_grant.take().expect("checked");
        let id = call.id;
        self.console_took_floor();
        self.send_json(
            &Reply::new("requestMic", 2, "麦克风打开成功")
                .transaction(transaction)
                .session(id),
        );
    }

    fn console_holds(&self) -> bool {
        match (&self.call, &self.login) {
            (Some(c), Some(l)) => c.floor.holder().is_some_and(|h| h.party == l.party()),
            _ => false,
        }
    }

    /// The console has the floor: terminals in the call are muted so no one talks over it.
    fn console_took_floor(&mut self) {
        metrics::counter!("pttbridge_console_talk_bursts_total", "talker" => "console")
            .increment(1);
        metrics::counter!("pttbridge_console_floor_total", "outcome" => "granted").increment(1);
        self.audio_error_reported = false;
        let (Some(call), Some(login)) = (self.call.as_ref(), self.login.as_ref()) else {
            return;
        };
        let (id, party) = (call.id, login.party());
        self.set_mute_all(true);
        self.publish(
            EventKind::TalkStarted,
            id,
            Some(party),
            json!({ "media_type": 2 }),
        );
    }

    fn set_mute(&mut self, index: usize, mute: bool) {
        let (Some(call), Some(login)) = (self.call.as_mut(), self.login.as_ref()) else {
            return;
        };
        let Some(m) = call.members.get_mut(index) else {
            return;
        };
        let Some(session) = m.session else { return };
        if m.muted == mute {
            return;
        }
        m.muted = mute;
        if let Err(e) = login.server.moderator.submit(
            Action::Mute { session, mute },
            m.id,
            Some(self.outcome_tx.clone()),
        ) {
            warn!(member = m.id, %e, "cannot (un)mute");
        }
    }

    fn set_mute_all(&mut self, mute: bool) {
        let n = self.call.as_ref().map_or(0, |c| c.members.len());
        for i in 0..n {
            let in_call = self.call.as_ref().is_some_and(|c| {
                matches!(c.members[i].state, CallState::Ringing | CallState::Answered)
            });
            if in_call || !mute {
                self.set_mute(i, mute);
            }
        }
    }

    fn floor_request(&mut self, transaction: Option<Transaction>) {
        let (Some(call), Some(login)) = (self.call.as_mut(), self.login.as_ref()) else {
            return;
        };
        if call.pending_grant.is_some() {
            // Still setting up: the first requestMic will be answered; this one repeats it.
            return self.reply_error(
                Some("requestMic"),
                "call_in_setup",
                "requestMic: the call is being set up".into(),
                0,
            );
        }
        let party = login.party();
        let already = call.floor.holder().is_some_and(|h| h.party == party);
        let id = call.id;
        match call
            .floor
            .request(party, login.level, false, Instant::now())
        {
            Decision::Granted => {
                if !already {
                    self.console_took_floor();
                }
                self.send_json(
                    &Reply::new("requestMic", 2, "麦克风打开成功")
                        .transaction(transaction)
                        .session(id),
                );
            }
            Decision::Preempted { previous } => {
                metrics::counter!("pttbridge_console_floor_total", "outcome" => "preempted")
                    .increment(1);
                if let Some((_, idx)) = call.talker.take() {
                    let member = call.members[idx].id;
                    self.downstream.end_burst();
                    self.notify(Notify::member_lost_mic(id, member));
                    self.publish(
                        EventKind::TalkStopped,
                        id,
                        Some(previous.clone()),
                        json!({ "media_type": 2, "preempted": true }),
                    );
                }
                info!(call = id, preempted = %previous.name, "console pre-empted a terminal");
                self.console_took_floor();
                self.send_json(
                    &Reply::new("requestMic", 2, "麦克风打开成功")
                        .transaction(transaction)
                        .session(id),
                );
            }
            Decision::Denied { holder } => {
                metrics::counter!("pttbridge_console_floor_total", "outcome" => "denied")
                    .increment(1);
                let party = login.party();
                self.publish(
                    EventKind::FloorDenied,
                    id,
                    Some(party),
                    json!({ "holder": holder }),
                );
                self.reply_error(
                    Some("requestMic"),
                    "floor_denied",
                    format!(
                        "requestMic: {} is talking and has an equal or higher mic level",
                        holder.name
                    ),
                    id,
                );
            }
            Decision::Queued { .. } => {}
        }
    }

    fn release_mic(&mut self, session_id: Option<u64>) {
        let Some(call) = self.call.as_ref() else {
            return self.reply_error(
                Some("releaseMic"),
                "no_call",
                "releaseMic: there is no call".into(),
                0,
            );
        };
        if let Some(sid) = session_id
            && sid != call.id
        {
            return self.reply_error(
                Some("releaseMic"),
                "unknown_session",
                format!("releaseMic: unknown sessionId {sid}"),
                sid,
            );
        }
        if !self.console_holds() {
            return self.reply_error(
                Some("releaseMic"),
                "mic_not_open",
                "releaseMic: the mic is not open".into(),
                call.id,
            );
        }
        self.console_released_floor();
        self.reply("releaseMic", 1, "麦克风关闭成功");
    }

    fn console_released_floor(&mut self) {
        let (Some(call), Some(login)) = (self.call.as_mut(), self.login.as_ref()) else {
            return;
        };
        let party = login.party();
        call.floor.release(&party, Instant::now());
        let id = call.id;
        if let Some(v) = self.upstream.terminator() {
            login.client.send_voice(v);
        }
        self.set_mute_all(false);
        self.publish(
            EventKind::TalkStopped,
            id,
            Some(party),
            json!({ "media_type": 2 }),
        );
    }

    fn check_call(&mut self, cmd: &str, session_id: u64) -> bool {
        if let Err(e) = self.up_login() {
            self.reply_error(
                Some(cmd),
                "not_logged_in",
                format!("{cmd}: {e}"),
                session_id,
            );
            return false;
        }
        if self.call.as_ref().is_none_or(|c| c.id != session_id) {
            self.reply_error(
                Some(cmd),
                "unknown_session",
                format!("{cmd}: unknown sessionId {session_id}"),
                session_id,
            );
            return false;
        }
        true
    }

    fn add_members(&mut self, session_id: u64, ids: Vec<u64>, transaction: Option<Transaction>) {
        if !self.check_call("addGroupMember", session_id) {
            return;
        }
        let login = self.login.as_ref().expect("checked");
        let mut results = Vec::new();
        let mut new = Vec::new();
        for id in ids {
            let call = self.call.as_ref().expect("checked");
            if let Some(i) = call.member(id)
                && Call::active(&call.members[i])
            {
                results.push(MemberResult {
                    id,
                    name: call.members[i].name.clone(),
                    code: 0,
                    message: "already in the call".into(),
                });
                continue;
            }
            let (m, r) = self.resolve(login, id, session_id);
            let own = r.code == 3;
            results.push(r);
            if !own {
                new.push(m);
            }
        }
        let moderator = login.server.moderator.clone();
        let call = self.call.as_mut().expect("checked");
        for m in new {
            if m.state == CallState::Calling
                && let Some(session) = m.session
                && let Err(e) = moderator.submit(
                    Action::Move {
                        session,
                        channel: call.channel,
                    },
                    m.id,
                    Some(self.outcome_tx.clone()),
                )
            {
                warn!(member = m.id, %e, "cannot ask for a move");
            }
            match call.member(m.id) {
                Some(i) => call.members[i] = m,
                None => call.members.push(m),
            }
        }
        let update = Notify::member_update(call.id, call.owner.0, call.member_list());
        self.send_json(&MemberResp::new(
            "addGroupMember",
            session_id,
            transaction.map(|t| t.as_text()),
            results,
        ));
        self.notify(update);
    }

    fn kick_members(&mut self, session_id: u64, ids: Vec<u64>, transaction: Option<Transaction>) {
        if !self.check_call("kickGroupMember", session_id) {
            return;
        }
        let mut results = Vec::new();
        for id in ids {
            let call = self.call.as_ref().expect("checked");
            match call.member(id) {
                Some(i) if Call::active(&call.members[i]) => {
                    let name = call.members[i].name.clone();
                    self.remove_member(i, true);
                    results.push(MemberResult {
                        id,
                        name,
                        code: 0,
                        message: String::new(),
                    });
                }
                _ => results.push(MemberResult {
                    id,
                    name: String::new(),
                    code: 1,
                    message: "not in this call".into(),
                }),
            }
        }
        let call = self.call.as_ref().expect("checked");
        let update = Notify::member_update(call.id, call.owner.0, call.member_list());
        self.send_json(&MemberResp::new(
            "kickGroupMember",
            session_id,
            transaction.map(|t| t.as_text()),
            results,
        ));
        self.notify(update);
    }

    /// Takes member `index` out of the call; `restore` sends it back where it came from.
    fn remove_member(&mut self, index: usize, restore: bool) {
        let Some(login) = self.login.as_ref() else {
            return;
        };
        let server = login.server.clone();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let m = &mut call.members[index];
        let was_muted = m.muted;
        m.state = CallState::Idle;
        m.muted = false;
        let (id, session, origin) = (m.id, m.session, m.origin);
        let party = terminal_party(m);
        if let Some(session) = session {
            if restore {
                let back = origin.filter(|o| *o != call.channel).unwrap_or(0);
                let _ = server.moderator.submit(
                    Action::Move {
                        session,
                        channel: back,
                    },
                    id,
                    Some(self.outcome_tx.clone()),
                );
            }
            // A terminal that walked out of the call while muted must not stay muted.
            if was_muted {
                let _ = server.moderator.submit(
                    Action::Mute {
                        session,
                        mute: false,
                    },
                    id,
                    Some(self.outcome_tx.clone()),
                );
            }
        }
        let call_id = call.id;
        if call.talker.is_some_and(|(_, i)| i == index) {
            call.talker = None;
            call.floor.release(&party, Instant::now());
            self.downstream.end_burst();
            self.notify(Notify::member_lost_mic(call_id, id));
            self.publish(
                EventKind::TalkStopped,
                call_id,
                Some(party.clone()),
                json!({ "media_type": 2 }),
            );
        }
        self.busy_release(&server.ptt.id, id);
        self.publish(
            EventKind::PartyLeft,
            call_id,
            Some(party),
            json!({ "kicked": restore }),
        );
    }

    async fn hangup(&mut self, session_id: u64) {
        if !self.check_call("tempCallHangup", session_id) {
            return;
        }
        self.end_call(reason::ALL_LEFT, "the console hung up", 0, false);
        self.send_json(&HangupResp::new(session_id, 0, ""));
    }

    /// Ends the call: terminals go back to their channels, the console to its own.
    /// `notify` tells the console (it did not ask for it).
    fn end_call(&mut self, code: i64, why: &str, from: u64, notify: bool) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        let (id, n, grant) = (call.id, call.members.len(), call.pending_grant.clone());
        if let Some((t, _)) = grant {
            let msg = Reply::new(
                "requestMic",
                0,
                format!("requestMic: the call ended before the mic opened: {why}"),
            )
            .transaction(t)
            .session(id);
            self.send_json(&msg);
        }
        if self.console_holds()
            && let Some(l) = &self.login
            && let Some(v) = self.upstream.terminator()
        {
            l.client.send_voice(v);
        }
        for i in 0..n {
            if self
                .call
                .as_ref()
                .is_some_and(|c| Call::active(&c.members[i]))
            {
                self.remove_member(i, true);
            }
        }
        let Some(call) = self.call.take() else { return };
        if let Some(l) = &self.login {
            if l.phase == Phase::Up {
                l.command(Command::JoinChannel(call.home_path.clone()));
            }
            let party = l.party();
            self.publish(
                EventKind::PartyLeft,
                id,
                Some(party),
                json!({ "role": "console" }),
            );
        }
        self.downstream.end_burst();
        metrics::gauge!("pttbridge_console_calls_active").decrement(1.0);
        self.publish(
            EventKind::CallEnded,
            id,
            None,
            json!({ "code": code, "reason": why, "seconds": call.started.elapsed().as_secs_f64() }),
        );
        info!(call = id, %why, "call ended");
        if notify {
            self.notify(Notify::hangup(id, from, code, why));
        }
    }

    // ---- PTT side ----------------------------------------------------------------------------

    async fn on_ptt(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Session(PttEvent::Synced { session, .. }) => {
                let Some(l) = self.login.as_mut() else { return };
                let snap = l.client.snapshot();
                if let Some(u) = snap.users.get(&session) {
                    l.user_id = u.user_id.map_or(0, u64::from);
                    l.name = u.name.clone();
                }
                match l.phase {
                    Phase::Pending(_) => {
                        l.phase = Phase::Up;
                        info!(account = %l.account, user_id = l.user_id, "console logged in");
                        metrics::counter!("pttbridge_console_logins_total", "result" => "ok")
                            .increment(1);
                        self.reply("login", 1, "登录成功");
                    }
                    Phase::Reconnecting => {
                        l.phase = Phase::Up;
                        self.notify(Notify::server_state("connected", None));
                    }
                    Phase::Up => {}
                }
            }
            ClientEvent::Session(PttEvent::Rejected { reason }) => {
                let pending = matches!(
                    self.login.as_ref().map(|l| l.phase),
                    Some(Phase::Pending(_))
                );
                if pending {
                    self.fail_login(format!(
                        "connect: the PTT server rejected the login: {reason}"
                    ))
                    .await;
                } else {
                    // The account was refused on a reconnect (password changed, banned): stop trying.
                    self.logout("the PTT server refused the account").await;
                    self.notify(Notify::server_state("loggedOut", Some(reason)));
                }
            }
            ClientEvent::Disconnected { reason, .. } => {
                let Some(phase) = self.login.as_ref().map(|l| l.phase) else {
                    return;
                };
                match phase {
                    Phase::Pending(_) => {
                        self.fail_login(format!(
                            "connect: cannot log in to the PTT server: {reason}"
                        ))
                        .await;
                    }
                    Phase::Up => {
                        if let Some(l) = self.login.as_mut() {
                            l.phase = Phase::Reconnecting;
                        }
                        self.abandon_creation_with_reply(&reason);
                        self.end_call(
                            reason::SERVER_LOST,
                            &format!("PTT server connection lost: {reason}"),
                            0,
                            true,
                        );
                        self.notify(Notify::server_state("reconnecting", Some(reason)));
                    }
                    Phase::Reconnecting => {}
                }
            }
            ClientEvent::Session(PttEvent::InChannel { id, .. }) => {
                let snap = self.login.as_ref().map(|l| l.client.snapshot());
                let name = snap
                    .as_ref()
                    .and_then(|s| s.channels.get(&id))
                    .map(|c| c.name.clone());
                if self
                    .creating
                    .as_ref()
                    .is_some_and(|c| Some(&c.name) == name.as_ref())
                {
                    self.call_created(id);
                } else if self.call.as_ref().is_some_and(|c| c.channel != id) {
                    self.end_call(
                        reason::CHANNEL_GONE,
                        "the console was moved out of the call channel",
                        0,
                        true,
                    );
                }
            }
            ClientEvent::Session(PttEvent::ChannelRemoved { id })
                if self.call.as_ref().is_some_and(|c| c.channel == id) =>
            {
                self.end_call(
                    reason::CHANNEL_GONE,
                    "the call channel was removed",
                    0,
                    true,
                );
            }
            ClientEvent::Session(PttEvent::PermissionDenied { reason }) => {
                if self.creating.is_some() {
                    self.abandon_creation();
                    self.reply_error(
                        Some("createGroup"),
                        "ptt_denied",
                        format!("createGroup: the PTT server refused to create the call channel: {reason}"),
                        0,
                    );
                } else {
                    warn!(%reason, "PTT server denied the console's session");
                }
            }
            ClientEvent::Session(
                PttEvent::UserJoined(_)
                | PttEvent::UserMoved { .. }
                | PttEvent::UserLeft { .. }
                | PttEvent::UserUpdated(_),
            ) => self.presence_changed(),
            ClientEvent::Session(PttEvent::TalkStarted { session, .. }) => {
                self.terminal_talk_started(session)
            }
            ClientEvent::Session(PttEvent::TalkStopped { session, .. }) => {
                self.terminal_talk_stopped(session)
            }
            ClientEvent::Session(PttEvent::Voice {
                session,
                sequence,
                opus,
                ..
            }) => self.terminal_voice(session, sequence, &opus),
            ClientEvent::Session(PttEvent::Fault { kind, .. }) => {
                metrics::counter!("pttbridge_console_ptt_faults_total", "kind" => kind.as_str())
                    .increment(1);
            }
            ClientEvent::Stopped => self.lost_client().await,
            _ => {}
        }
    }

    fn abandon_creation_with_reply(&mut self, reason: &str) {
        if self.creating.is_some() {
            self.abandon_creation();
            self.reply_error(
                Some("createGroup"),
                "server_lost",
                format!("createGroup: PTT server connection lost: {reason}"),
                0,
            );
        }
    }

    async fn lost_client(&mut self) {
        if self.login.is_some() {
            warn!("the console's PTT session stopped");
            self.logout("the PTT session stopped").await;
            self.notify(Notify::server_state(
                "loggedOut",
                Some("the PTT session stopped".into()),
            ));
        }
    }

    fn presence_changed(&mut self) {
        let answer = self.side.0.config.answer;
        let console_holds = self.console_holds();
        let (Some(call), Some(login)) = (self.call.as_mut(), self.login.as_ref()) else {
            return;
        };
        let snap = login.client.snapshot();
        let changes = call.observe(&snap.users, answer);
        if changes.is_empty() {
            return;
        }
        let id = call.id;
        let mut left_by_self = None;
        for ch in &changes {
            let call = self.call.as_ref().expect("present");
            match *ch {
                Change::Ringing(i) => {
                    let m = &call.members[i];
                    let (mid, party) = (m.id, terminal_party(m));
                    self.notify(Notify::ring(id, mid));
                    self.publish(
                        EventKind::CallRinging,
                        id,
                        Some(party),
                        serde_json::Value::Null,
                    );
                    if console_holds {
                        self.set_mute(i, true);
                    }
                }
                Change::Answered(i) => {
                    let m = &call.members[i];
                    let (mid, party) = (m.id, terminal_party(m));
                    self.notify(Notify::answer(id, mid));
                    self.publish(
                        EventKind::CallAnswered,
                        id,
                        Some(party.clone()),
                        serde_json::Value::Null,
                    );
                    self.publish(
                        EventKind::PartyJoined,
                        id,
                        Some(party),
                        serde_json::Value::Null,
                    );
                }
                Change::Left(i) => {
                    left_by_self = Some(call.members[i].id);
                    self.remove_member(i, false);
                }
            }
        }
        let call = self.call.as_ref().expect("present");
        let update = Notify::member_update(id, call.owner.0, call.member_list());
        let nobody = !call.members.iter().any(Call::active);
        self.notify(update);
        self.maybe_grant(Instant::now(), false);
        if let Some(from) = left_by_self
            && nobody
        {
            self.end_call(reason::ALL_LEFT, "every terminal left the call", from, true);
        }
    }

    fn terminal_talk_started(&mut self, session: u32) {
        let answer = self.side.0.config.answer;
        let level = self.side.0.config.terminal_mic_level;
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(i) = call.by_session(session) else {
            return;
        };
        if !matches!(
            call.members[i].state,
            CallState::Ringing | CallState::Answered
        ) {
            return;
        }
        let m = &call.members[i];
        let party = terminal_party(m);
        let (id, mid, name) = (call.id, m.id, m.name.clone());
        match call
            .floor
            .request(party.clone(), level, false, Instant::now())
        {
            Decision::Granted | Decision::Preempted { .. } => {
                call.talker = Some((session, i));
                let answered = if answer == super::config::AnswerMode::OnTalk {
                    call.talked(i)
                } else {
                    None
                };
                metrics::counter!("pttbridge_console_talk_bursts_total", "talker" => "terminal")
                    .increment(1);
                if answered.is_some() {
                    self.notify(Notify::answer(id, mid));
                    self.publish(
                        EventKind::CallAnswered,
                        id,
                        Some(party.clone()),
                        serde_json::Value::Null,
                    );
                    let call = self.call.as_ref().expect("present");
                    let update = Notify::member_update(id, call.owner.0, call.member_list());
                    self.notify(update);
                }
                self.notify(Notify::member_get_mic(id, mid, &name));
                self.publish(
                    EventKind::TalkStarted,
                    id,
                    Some(party),
                    json!({ "media_type": 2 }),
                );
            }
            Decision::Denied { holder } => {
                metrics::counter!("pttbridge_console_floor_total", "outcome" => "terminal_denied")
                    .increment(1);
                self.publish(
                    EventKind::FloorDenied,
                    id,
                    Some(party),
                    json!({ "holder": holder }),
                );
            }
            Decision::Queued { .. } => {}
        }
    }

    fn terminal_talk_stopped(&mut self, session: u32) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some((s, i)) = call.talker else { return };
        if s != session {
            return;
        }
        call.talker = None;
        let m = &call.members[i];
        let party = terminal_party(m);
        let (id, mid) = (call.id, m.id);
        call.floor.release(&party, Instant::now());
        self.downstream.end_burst();
        self.notify(Notify::member_lost_mic(id, mid));
        self.publish(
            EventKind::TalkStopped,
            id,
            Some(party),
            json!({ "media_type": 2 }),
        );
    }

    fn terminal_voice(&mut self, session: u32, sequence: u64, opus: &Bytes) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        let Some((s, i)) = call.talker else { return };
        if s != session {
            metrics::counter!("pttbridge_console_audio_dropped_total", "reason" => "not_floor_holder").increment(1);
            return;
        }
        let source = call.members[i].id as u32;
        let mut frames = Vec::new();
        let late = self
            .downstream
            .push(session, source, sequence, opus, &mut frames);
        if late > 0 {
            metrics::counter!("pttbridge_console_audio_dropped_total", "reason" => "late")
                .increment(late);
        }
        for f in frames {
            if self.out.try_send(Message::Binary(f.into())).is_ok() {
                metrics::counter!("pttbridge_console_audio_frames_total", "direction" => "out")
                    .increment(1);
            } else {
                metrics::counter!("pttbridge_console_audio_dropped_total", "reason" => "console_slow").increment(1);
            }
        }
    }

    // ---- console audio -----------------------------------------------------------------------

    fn audio_error(&mut self, kind: &'static str, message: String) {
        error_metric(kind);
        metrics::counter!("pttbridge_console_audio_dropped_total", "reason" => kind).increment(1);
        if !self.audio_error_reported {
            // Once per streak: a console sending 50 bad frames a second gets one answer.
            self.audio_error_reported = true;
            self.reply("audio", 0, message);
        }
    }

    fn on_audio(&mut self, data: Bytes) {
        metrics::counter!("pttbridge_console_audio_frames_total", "direction" => "in").increment(1);
        if let Err(e) = self.up_login() {
            return self.audio_error("audio_before_login", format!("audio: {e}"));
        }
        if !self.console_holds()
            || self
                .call
                .as_ref()
                .is_some_and(|c| c.pending_grant.is_some())
        {
            return self.audio_error(
                "audio_without_floor",
                "audio: the mic is not open (requestMic first)".into(),
            );
        }
        let (header, payload) = match Header::parse(&data) {
            Ok(x) => x,
            Err(e) => return self.audio_error("bad_audio", format!("audio: {e}")),
        };
        let ms = match header.codec {
            muicall::audio::Codec::Pcm16(rate) => {
                (payload.len() / 2) as f64 * 1000.0 / f64::from(rate)
            }
            muicall::audio::Codec::Opus => media::opus_toc::parse(payload)
                .map(|i| f64::from(i.duration_us()) / 1000.0)
                .unwrap_or(20.0),
        };
        if !self.audio_budget.take_amount(Instant::now(), ms) {
            return self.audio_error(
                "audio_too_fast",
                "audio: frames arrive faster than real time; send one 20 ms frame every 20 ms"
                    .into(),
            );
        }
        let mut voice: Vec<OutgoingVoice> = Vec::new();
        if let Err(e) = self.upstream.push(&header, payload, &mut voice) {
            return self.audio_error("bad_audio", format!("audio: {e}"));
        }
        self.audio_error_reported = false;
        let client = &self.login.as_ref().expect("checked").client;
        for v in voice {
            if !client.send_voice(v) {
                metrics::counter!("pttbridge_console_audio_dropped_total", "reason" => "ptt_queue_full").increment(1);
            }
        }
    }

    // ---- timers and outcomes -------------------------------------------------------------------

    fn next_deadline(&self) -> Option<Instant> {
        let login = match self.login.as_ref().map(|l| l.phase) {
            Some(Phase::Pending(t)) => Some(t),
            _ => None,
        };
        let creating = self.creating.as_ref().map(|c| c.deadline);
        let grant = self
            .call
            .as_ref()
            .and_then(|c| c.pending_grant.as_ref().map(|g| g.1));
        [login, creating, grant].into_iter().flatten().min()
    }

    async fn on_timer(&mut self, now: Instant) {
        if let Some(Phase::Pending(t)) = self.login.as_ref().map(|l| l.phase)
            && now >= t
        {
            let secs = self.side.0.config.login_timeout().as_secs();
            self.fail_login(format!(
                "connect: the PTT server did not accept the login within {secs} s"
            ))
            .await;
        }
        if self.creating.as_ref().is_some_and(|c| now >= c.deadline) {
            self.abandon_creation();
            let ms = self.side.0.config.move_timeout_ms;
            self.reply_error(
                Some("createGroup"),
                "ptt_timeout",
                format!(
                    "createGroup: the PTT server did not create the call channel within {ms} ms"
                ),
                0,
            );
        }
        self.maybe_grant(now, false);
    }

    async fn on_outcome(&mut self, o: Outcome) {
        let Err(e) = o.result else { return };
        let Some(call) = self.call.as_mut() else {
            return;
        };
        match o.action {
            Action::Move { channel, .. } if channel == call.channel => {
                let Some(i) = call.member(o.tag) else { return };
                if call.members[i].state != CallState::Calling {
                    return;
                }
                warn!(member = o.tag, error = %e, "terminal could not be brought into the call");
                error_metric("move_failed");
                call.members[i].state = CallState::Idle;
                let server = self
                    .login
                    .as_ref()
                    .map(|l| l.server.ptt.id.clone())
                    .unwrap_or_default();
                self.busy_release(&server, o.tag);
                let call = self.call.as_ref().expect("present");
                let (id, owner, nobody) = (
                    call.id,
                    call.owner.0,
                    !call.members.iter().any(Call::active),
                );
                let update = Notify::member_update(id, owner, call.member_list());
                self.notify(update);
                if nobody {
                    self.end_call(
                        reason::NOBODY,
                        &format!("no terminal could be brought into the call: {e}"),
                        0,
                        true,
                    );
                } else {
                    self.maybe_grant(Instant::now(), false);
                }
            }
            _ => {
                warn!(action = ?o.action, error = %e, "admin action failed");
                error_metric("admin_action_failed");
            }
        }
    }
}

fn call_of(req: &Request) -> u64 {
    match req {
        Request::AddGroupMember { session_id, .. }
        | Request::KickGroupMember { session_id, .. }
        | Request::TempCallHangup { session_id } => *session_id,
        _ => 0,
    }
}

fn find_channel(snap: &ptt::client::Snapshot, path: &str) -> Option<u32> {
    let root = snap.channels.values().find(|c| c.parent.is_none())?.id;
    let mut cur = root;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur = snap
            .channels
            .values()
            .find(|c| c.parent == Some(cur) && c.name == part)?
            .id;
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1500, 1000);
        b.at = t0;
        assert!(b.take_amount(t0, 1000.0), "the burst");
        assert!(!b.take_amount(t0, 20.0), "nothing left");
        assert!(
            b.take_amount(t0 + Duration::from_millis(20), 20.0),
            "1.5 ms per ms refills a frame"
        );
        let mut r = TokenBucket::new(20, 40);
        r.at = t0;
        assert_eq!((0..100).filter(|_| r.take(t0)).count(), 40);
    }
}
