//! One console WebSocket: requests in, replies and notifications out, its own PTT session,
//! its call, and its audio. One task per connection; nothing here waits on another console.

mod archive;
mod call_control;
mod console_audio;
mod platform;
mod ptt_events;
mod requests;
mod timers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use logsafe::{RateLimit, esc};

use crate::auth::limiter::TokenBucket;
use muicall::audio::Header;
use muicall::{
    CallState, Echo, HangupResp, MemberResp, MemberResult, Notify, Reply, Request, RequestError,
    Transaction, response_type,
};
use ptt::client::{
    self, ClientConfig, ClientEvent, ClientHandle, Command, LinkState, OutgoingVoice,
};
use ptt::proto;
use ptt::session::Event as PttEvent;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use self::console_audio::{AudioDrop, AudioMetrics};
use super::audio::{Downstream, Upstream};
use super::call::{Call, Change, Member};
use super::commands::{ORDERS, Order};
use super::config::normalize_base_url;
use super::moderator::{Action, Outcome, sleep_until};
use super::{ConsoleSide, ServerEntry, new_call_id};
use crate::hub::CallRecorder;
use crate::hub::event::Draft;
use crate::hub::floor::{Decision, Floor};
use crate::hub::{EventKind, Party, Side};
use crate::recording::transmission::Transmission;

/// Messages waiting for the socket; a console that does not read is cut off, not buffered.
const OUT_QUEUE: usize = 512;
/// Free slots wanted before the next message from the console is read: a console that sends
/// faster than it reads is slowed down (its own socket only), not cut off.
const OUT_HEADROOM: usize = 32;
/// How long a closed connection is still drained so the console can read the close frame.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a console may leave its messages unread before it is cut off.
const READ_STALL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long one message may wait for the socket to take it before the connection is given
/// up (a console that stopped reading must not keep its task and slot forever).
const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// A platform ended the console's session (business gateway kickout).
    pub const KICKED: i64 = 4;
}

pub(crate) async fn run(
    side: ConsoleSide,
    socket: WebSocket,
    mut shutdown: watch::Receiver<bool>,
    addr: Option<std::net::IpAddr>,
) {
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
        let (order_tx, orders) = mpsc::channel(ORDERS);
        side.0
            .orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, order_tx);
        let bitrate = side.0.config.opus_bitrate;
        let cfg = &side.0.config;
        let mut conn = Connection {
            limiter: TokenBucket::new(cfg.requests_per_second, cfg.request_burst),
            audio_budget: TokenBucket::new(AUDIO_MS_PER_S, AUDIO_BURST_MS),
            side: side.clone(),
            id,
            addr,
            out,
            server: None,
            login: None,
            creating: None,
            call: None,
            upstream: Upstream::new(bitrate),
            downstream: Downstream::new(muicall::AudioFormat::default()),
            voice_out: Vec::new(),
            frames_out: Vec::new(),
            audio_metrics: AudioMetrics::default(),
            audio_error_reported: false,
            mic_asked: None,
            echo: Echo::default(),
            outcome_tx,
            outcomes,
            orders,
            invites: Vec::new(),
            record: None,
            transmission: side
                .0
                .recorder
                .get()
                .map(|r| Transmission::new(r.clone(), format!("console:{id}"))),
            closing: None,
            // Until it logs in a connection only holds a slot: `console.auth_timeout_ms`.
            login_by: Instant::now() + cfg.auth_timeout(),
        };
        conn.run(&mut stream, &mut shutdown).await;
        // No more platform commands: those still queued are answered "not online".
        side.0
            .orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        // Terminals go home before anything else, whatever ended the connection.
        conn.logout("the console disconnected").await;
        conn.archive_closed();
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
        // What is still queued gets a bounded moment to go out; a console reading slowly
        // does not keep the task.
        let mut writer = writer;
        if tokio::time::timeout(WRITE_STALL, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
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
        match tokio::time::timeout(WRITE_STALL, sink.send(m)).await {
            Ok(Ok(())) if !close => {}
            Ok(_) => break,
            Err(_) => {
                error_metric("console_not_reading");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_STALL, sink.close()).await;
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
    /// `side.connected` was published for this login (so `side.disconnected` is owed).
    announced: bool,
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

    /// `p == self.party()` without building it (asked for every console audio frame).
    fn is(&self, p: &Party) -> bool {
        p.side == Side::Console && p.id == self.account && p.name == self.account
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
    /// Where the console connects from (failed logins are throttled per address).
    addr: Option<std::net::IpAddr>,
    /// While logged out: when the connection is closed unless it has logged in.
    login_by: Instant,
    out: mpsc::Sender<Message>,
    server: Option<Arc<ServerEntry>>,
    login: Option<Login>,
    creating: Option<Creating>,
    call: Option<Call>,
    upstream: Upstream,
    downstream: Downstream,
    /// The voice packets of one console frame on their way to PTT; kept between frames.
    voice_out: Vec<OutgoingVoice>,
    /// The binary frames of one PTT packet on their way to the console; kept between packets.
    frames_out: Vec<Bytes>,
    audio_metrics: AudioMetrics,
    limiter: TokenBucket,
    /// Milliseconds of console audio allowed: a little faster than real time, so a console
    /// cannot make the bridge encode (or the PTT server carry) more than it can speak.
    audio_budget: TokenBucket,
    /// An audio error was reported and the console has not sent good audio since.
    audio_error_reported: bool,
    /// When the console last asked for the mic, until its first audio reaches the PTT channel
    /// (`pttbridge_console_mic_to_audio_seconds`).
    mic_asked: Option<Instant>,
    /// What the request being handled carries to match its replies by (empty between requests).
    echo: Echo,
    outcome_tx: mpsc::Sender<Outcome>,
    outcomes: mpsc::Receiver<Outcome>,
    /// Platform commands for this console.
    orders: mpsc::Receiver<Order>,
    /// Platform invites waiting for their terminal to arrive in the call.
    invites: Vec<platform::PendingInvite>,
    /// The call record of the call up now.
    record: Option<CallRecorder>,
    /// The dispatcher's own talk bursts into the call, archived (with `[recording] dir`).
    transmission: Option<Transmission>,
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
                        // Any client can open connections and break the protocol at will.
                        static CLOSING: RateLimit = RateLimit::warn("closing the console connection");
                        if CLOSING.allow() {
                            warn!(error = %esc(&text), "closing the console connection");
                        }
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
                Some(o) = self.orders.recv() => self.on_order(o).await,
                _ = sleep_until(wake) => self.on_timer(Instant::now()).await,
                // The bridge is stopping: calls end (terminals go home) and consoles are told.
                _ = async { drop(shutdown.wait_for(|s| *s).await) } => {
                    self.closing = Some((1001, "the bridge is shutting down".into()));
                }
            }
            if !self.invites.is_empty() {
                self.settle_invites(Instant::now());
            }
        }
    }

    fn send_json(&mut self, msg: &impl Serialize) {
        let text = match serde_json::to_string(msg) {
            Ok(t) => t,
            Err(e) => return warn!("cannot serialize a reply: {e}"),
        };
        self.count_signal();
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
        static REFUSED: RateLimit = RateLimit::debug("request refused (console)");
        if REFUSED.allow() {
            debug!(kind, message = %esc(&message), "request refused");
        }
        let call = self.echo.session_id.unwrap_or(call);
        let session = (call != 0).then_some(call);
        let transaction = self.echo.transaction.clone();
        match request_type {
            Some(t @ ("addGroupMember" | "kickGroupMember")) => {
                let transaction = member_transaction(transaction.as_ref(), call);
                self.send_json(&MemberResp::failed(t, call, Some(transaction), message))
            }
            Some("tempCallHangup") => self.send_json(&HangupResp::new(call, -1, message)),
            _ => {
                let kind = request_type.map_or("error", response_type).to_string();
                let mut reply = Reply::new(kind, 0, message).transaction(transaction);
                if let Some(id) = session {
                    reply = reply.session(id);
                }
                self.send_json(&reply)
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
}

/// The `transaction` of an `addGroupMember`/`kickGroupMember` reply, which the spec requires
/// though its requests have none: the request's own when it sent one, else the call id (the
/// spec's table describes the field as "会话 id", and its example is a string).
fn member_transaction(sent: Option<&Transaction>, call: u64) -> String {
    sent.map_or_else(|| call.to_string(), Transaction::as_text)
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
