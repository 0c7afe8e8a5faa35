//! Client mode: the bridge logs in to external RTCPeer servers (`[[meeting.upstream]]`) as the
//! users that stand for its PTT channels, and answers their calls there like it does on its own
//! server: ring, agree (or busy / reject per policy), and on the caller's `onConnected` enter the
//! caller's room, publish the channel, play every member that publishes, and run the same
//! [`Link`](crate::bridge::Link) (see [`media`]).
//!
//! One task per (upstream, dial-in id), sequential and sans-lock: log in (getSign +
//! dockingLogin), open `/rtcpeer`, `call.doRegister`, then handle pushes. Only the requests the
//! spec gives return values to wait for their reply (`doRegister`, `meeting.enter`, `publish`,
//! `play`, `exit`; pushes arriving meanwhile are queued); the call steps (`doEvent` ring/busy,
//! `doAgree`, `reject`, `cancel`), `chat` and `closePlay` are sent and not waited for: the spec
//! defines no reply to them, and a server that answers anyway has its answer dropped. A reply
//! that does not come in time fails that request (and so the call), never the registration. An `https://`
//! upstream is reached over TLS (`wss://` for `/rtcpeer`), its certificate checked against the
//! system's roots or the upstream's `ca_file`. Losing the server
//! ends a call in progress and starts over with exponential backoff and jitter; `/healthz` shows
//! each registration (`sides.meeting.upstream`).
//!
//! On a cluster node (`[cluster]`) a registration follows its dial-in's PTT account: it is made
//! only while the account is online here, i.e. while this node acts as owner of the account's
//! lease, and it is undone (the call ended, `account.logout`, the socket closed, within
//! [`GOODBYE`]) as soon as the account is taken offline, which the lease driver does a tenth of
//! a lease before its acting deadline. So one node at a time is registered as the dial-in's
//! user, and an answered call links a channel that is local. Off a cluster an account is never
//! taken offline and nothing changes.
//!
//! Everything on the wire goes through the `rtcpeer` adapter, as in server mode: requests are
//! [`Request`] values serialised by [`Request::to_value`]; a reply is the [`Frame`] whose
//! `module`/`method` match the request and that has a `result` ([`Frame::result`], 0 = success),
//! and its fields are read as the adapter's reply types ([`reply::Entered`] for
//! `meeting.enter`, [`reply::Negotiated`] for `publish`/`play`, [`reply::Generic`] otherwise). A
//! refused request or a reply that does not parse is an error naming the request.

pub mod login;
pub mod media;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use logsafe::esc;
use ptt::backoff::Backoff;
use ptt::client::{LinkState, Snapshot};
use rtcpeer::bean::Client;
use rtcpeer::call::{Call, EndReason, Input, Role};
use rtcpeer::id::Id;
use rtcpeer::push::Push;
use rtcpeer::reply::{self, Entered, Negotiated};
use rtcpeer::request::{
    CallEvent, CallPeers, Chat, ClosePlay, DoAgree, DoEvent, DoRegister, EndCall, Enter, Logout,
    Play, Publish, Request,
};
use rtcpeer::{Frame, code};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tracing::{Instrument, debug, info, info_span, warn};

use self::media::{CallMedia, MediaCmd, MediaHandle, MediaNotice};
use super::config::{AnswerPolicy, Upstream};
use super::dial::DialTarget;
use super::events::party;
use super::switchboard::Switchboard;
use crate::http_client::BaseUrl;
use crate::hub::{CallRecorder, EventKind};

/// How long a request waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long leaving a room waits for the reply to `meeting.exit`.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// A registration that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
/// We ping the server this often when it is quiet (keeps NATs and idle timeouts happy).
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long leaving the server for a cluster standby may take (hang-up, exit, logout, close)
/// before the socket is simply dropped: well inside the lease's guard (a tenth of at least 1 s).
pub const GOODBYE: Duration = Duration::from_millis(80);
/// Our `deviceType` / `ownDeviceType` there: one of the spec's list (pc, Android, iOS,
/// webphone, tv).
const DEVICE_TYPE: &str = "pc";
/// `meeting.enter` `roomType` when neither `onConnected` nor the invitation says: audio.
const AUDIO_ROOM: i64 = 1;

/// One registration as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    /// The server.
    pub url: String,
    /// Our dial-in id (the channel).
    pub dial_in: Id,
    /// `connecting`, `registered`, `retrying`, or `standby` (a cluster node that does not hold
    /// the dial-in's PTT account: another node is registered).
    pub state: &'static str,
    /// Our user id there: what its callers dial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Id>,
    /// Why it is not registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Reconnects since start.
    pub reconnects: u64,
    /// The caller and room of the call in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<Value>,
}

/// Registrations of all upstream tasks.
pub type Registrations = Arc<Mutex<Vec<Registration>>>;

/// Starts one task per (upstream, dial-in id); their registrations show in what it returns.
pub fn start(sb: &Arc<Switchboard>) -> Registrations {
    let registrations = Registrations::default();
    for up in &sb.config.upstream {
        for id in &up.dial_in {
            let Some(target) = sb.dial_target(*id).cloned() else {
                warn!(id, "upstream dial-in id has no PTT account");
                continue;
            };
            let index = {
                let mut regs = registrations.lock().unwrap_or_else(|p| p.into_inner());
                regs.push(Registration {
                    url: up.url.clone(),
                    dial_in: *id,
                    state: "connecting",
                    user_id: None,
                    reason: None,
                    reconnects: 0,
                    call: None,
                });
                regs.len() - 1
            };
            let task = Task {
                sb: sb.clone(),
                registrations: registrations.clone(),
                up: up.clone(),
                trust: trust(up),
                target,
                index,
            };
            let span = info_span!("upstream", url = %up.url, dial = id);
            tokio::spawn(task.run().instrument(span));
        }
    }
    registrations
}

/// The TLS trust for an `https://` upstream (`None` for `http://`), or why there is none.
fn trust(up: &Upstream) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if !up.url.starts_with("https://") {
        return Ok(None);
    }
    crate::tls::client_config(up.ca_file.as_deref(), &[b"http/1.1"])
        .map(Some)
        .map_err(|e| format!("TLS: {e}"))
}

struct Task {
    sb: Arc<Switchboard>,
    registrations: Registrations,
    up: Upstream,
    trust: Result<Option<Arc<rustls::ClientConfig>>, String>,
    target: DialTarget,
    index: usize,
}

type Ws = WebSocketStream<Box<dyn crate::tls::Stream>>;

impl Task {
    fn update(&self, f: impl FnOnce(&mut Registration)) {
        let mut regs = self.registrations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = regs.get_mut(self.index) {
            f(r);
        }
    }

    async fn run(self) {
        let backoff = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
        };
        let mut attempt = 0u32;
        let mut account = self.target.account.client.watch();
        loop {
            if self.target.account.standby() {
                self.update(|r| {
                    r.state = "standby";
                    r.reason = Some(
                        "cluster standby: this node does not hold the dial-in's PTT account".into(),
                    );
                    r.call = None;
                });
                if account
                    .wait_for(|s| s.state != LinkState::Offline)
                    .await
                    .is_err()
                {
                    return; // the PTT client stopped: the bridge is shutting down
                }
                info!("the dial-in's PTT account is ours: registering upstream");
                attempt = 0;
            }
            self.update(|r| r.state = "connecting");
            let started = Instant::now();
            let err = match self.session(account.clone()).await {
                Ok(()) => {
                    info!("the dial-in's PTT account went to standby: unregistered upstream");
                    metrics::counter!("pttbridge_meeting_upstream_standby_total").increment(1);
                    continue;
                }
                Err(e) => e,
            };
            if started.elapsed() > STABLE {
                attempt = 0;
            }
            let delay = backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            warn!(error = %esc(format_args!("{err:#}")), retry_in = ?delay, "upstream lost");
            metrics::counter!("pttbridge_meeting_upstream_reconnects_total").increment(1);
            self.update(|r| {
                r.state = "retrying";
                r.reason = Some(format!("{err:#}"));
                r.reconnects += 1;
                r.call = None;
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = standby(&mut account) => {}
            }
        }
    }

    /// One login + registration, until the connection is lost (an error) or the dial-in's PTT
    /// account goes to standby (`Ok`; `account` watches it).
    async fn session(&self, mut account: watch::Receiver<Arc<Snapshot>>) -> anyhow::Result<()> {
        // Until this session is over (logged out, closed), a cluster node does not hand the
        // account's lease over.
        let _hold = self.target.account.hold();
        tokio::select! {
            r = self.register() => {
                let (mut s, logged) = r?;
                let me = logged.user_id;
                info!(user_id = me, "registered upstream");
                self.update(|r| {
                    r.state = "registered";
                    r.user_id = Some(me);
                    r.reason = None;
                });
                let host = BaseUrl::parse(&self.up.url)?.authority;
                let mut calls = Calls {
                    task: self,
                    me,
                    host,
                    call: None,
                };
                let result = calls.serve(&mut s, &mut account).await;
                if result.is_ok() {
                    // Off the server before the lease's acting deadline, whatever it does: what
                    // goes on the wire is bounded; the call's end here always runs.
                    if let Some(mut c) = calls.call.take() {
                        let _ = tokio::time::timeout(GOODBYE / 2, calls.farewell(&mut s, &mut c, true)).await;
                        calls.finish(c, EndReason::Gone).await;
                    }
                    let _ = tokio::time::timeout(GOODBYE / 2, async {
                        let logout = Request::Logout(Logout { sid: logged.sid, user_id: me });
                        let _ = s.send(&logout).await;
                        let _ = s.ws.close(None).await;
                    })
                    .await;
                } else {
                    calls.end(&mut s, EndReason::Gone, false).await;
                }
                result
            }
            // Not registered yet: dropping the login or the socket is all there is to undo.
            _ = standby(&mut account) => Ok(()),
        }
    }

    /// Logs in, opens the socket and registers.
    async fn register(&self) -> anyhow::Result<(Signal, login::LoggedIn)> {
        let base = BaseUrl::parse(&self.up.url)?;
        let account = format!("ptt-{}", self.target.user_id);
        let name = self
            .target
            .name
            .clone()
            .or_else(|| self.target.account.channel_path())
            .unwrap_or_else(|| account.clone());
        let trust = self.trust.clone().map_err(|e| anyhow!(e))?;
        let logged = login::login(
            &base,
            trust.as_ref(),
            &self.up.app_id,
            &self.up.secret,
            &account,
            &name,
        )
        .await?;
        let (ws, _) = tokio::time::timeout(REPLY_TIMEOUT, async {
            let stream = base.connect(trust.as_ref()).await?;
            tokio_tungstenite::client_async(base.ws_url("/rtcpeer"), stream)
                .await
                .map_err(anyhow::Error::from)
        })
        .await
        .context("WebSocket: no answer")?
        .with_context(|| base.ws_url("/rtcpeer"))?;
        let mut s = Signal {
            ws,
            queued: VecDeque::new(),
        };
        let _: reply::Generic = s
            .request(&Request::DoRegister(DoRegister {
                sid: logged.sid.clone(),
                user_id: logged.user_id,
                device_type: Some(DEVICE_TYPE.into()),
            }))
            .await?;
        Ok((s, logged))
    }
}

/// Resolves once the account is kept off its server (a cluster standby); never off a cluster,
/// nor once its client has stopped.
async fn standby(account: &mut watch::Receiver<Arc<Snapshot>>) {
    if account
        .wait_for(|s| s.state == LinkState::Offline)
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

/// The signalling socket: requests wait for their reply, pushes queue up meanwhile.
struct Signal {
    ws: Ws,
    queued: VecDeque<Push>,
}

impl Signal {
    async fn send(&mut self, req: &Request) -> anyhow::Result<()> {
        let text = req.to_value().to_string();
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Sends a request and reads its successful reply (`result` 0) as `T`; no reply within
    /// [`REPLY_TIMEOUT`] is an error naming the request.
    async fn request<T: DeserializeOwned>(&mut self, req: &Request) -> anyhow::Result<T> {
        match self.ask(req, REPLY_TIMEOUT).await? {
            Some(reply) => accepted(&reply),
            None => bail!("no reply to {} in {REPLY_TIMEOUT:?}", envelope(req)),
        }
    }

    /// Sends a request and returns its reply, whatever its `result`, or `None` when none came
    /// within `wait`. Errors are the connection's.
    async fn ask(&mut self, req: &Request, wait: Duration) -> anyhow::Result<Option<Frame>> {
        let (module, method) = req.envelope();
        self.send(req).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, self.frame()).await else {
                return Ok(None);
            };
            let frame = frame?;
            if frame.result().is_some() && frame.module == module && frame.method == method {
                return Ok(Some(frame));
            }
            self.queue(&frame);
        }
    }

    fn queue(&mut self, frame: &Frame) {
        match Push::from_frame(frame) {
            Ok(Some(p)) => self.queued.push_back(p),
            Ok(None) => {
                debug!(module = %esc(&frame.module), method = %esc(&frame.method), "unexpected reply")
            }
            Err(e) => debug!(error = %esc(&e), "push not understood"),
        }
    }

    /// The next push.
    async fn push(&mut self) -> anyhow::Result<Push> {
        loop {
            if let Some(p) = self.queued.pop_front() {
                return Ok(p);
            }
            let frame = self.frame().await?;
            self.queue(&frame);
        }
    }

    async fn frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            match self.ws.next().await {
                None => bail!("connection closed"),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => match Frame::parse(t.as_str()) {
                    Ok(f) => return Ok(f),
                    Err(e) => debug!(error = %esc(&e), "not a frame"),
                },
                Some(Ok(Message::Close(_))) => bail!("the server closed the connection"),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// The call this registration is in.
struct Live {
    call: Call,
    caller: Id,
    /// The caller's `ownDeviceType`: our `targetDeviceType` (as the spec's 4.1.4 example does).
    caller_device: Option<String>,
    /// The caller's room: from the invitation when it names one (the bridge's own server
    /// does), else from `onConnected` (spec 4.7).
    room: Option<Id>,
    /// The invitation's `type` (1 audio, 2 video, 3 video return).
    call_type: Option<i64>,
    /// The room muted the channel (`onMute`/`onMuteAll`).
    muted: bool,
    /// When to send onRinging / doAgree next.
    next_step: Option<(Instant, Input)>,
    media: Option<(MediaHandle, mpsc::Receiver<MediaNotice>)>,
    claimed: bool,
    /// Call signalling so far (the invite, our steps, the caller's); the record starts with it.
    signals: u64,
    /// The call record, from the link going up until the call ends.
    record: Option<CallRecorder>,
}

impl Live {
    /// Counts one signalling message of the call.
    fn signal(&mut self) {
        self.signals += 1;
        if let Some(r) = &self.record {
            r.counters().signal(1);
        }
    }
}

struct Calls<'a> {
    task: &'a Task,
    me: Id,
    host: String,
    call: Option<Live>,
}

enum Wake {
    Push(Box<anyhow::Result<Push>>),
    Step(Input),
    Notice(Option<MediaNotice>),
    Timeout,
    Ping,
    Standby,
}

impl Calls<'_> {
    fn group(&self, room: Option<Id>) -> String {
        match room {
            Some(room) => format!("meeting:{}/{room}", self.host),
            None => format!("meeting:{}", self.host),
        }
    }

    fn event(&self, kind: EventKind, room: Option<Id>, actor: Id, detail: Value) {
        self.task
            .sb
            .events
            .group(kind, self.group(room), Some(party(actor, None)), detail);
    }

    async fn serve(
        &mut self,
        s: &mut Signal,
        account: &mut watch::Receiver<Arc<Snapshot>>,
    ) -> anyhow::Result<()> {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = self.call.as_ref().and_then(|c| c.next_step);
            let deadline = self.call.as_ref().and_then(|c| c.call.deadline());
            let wake = {
                let notices = self.call.as_mut().and_then(|c| c.media.as_mut());
                tokio::select! {
                    p = s.push() => Wake::Push(Box::new(p)),
                    _ = sleep_until(step.map(|s| s.0)) => Wake::Step(step.map(|s| s.1).unwrap_or(Input::Ring)),
                    _ = sleep_until(deadline) => Wake::Timeout,
                    n = recv_notice(notices) => Wake::Notice(n),
                    _ = ping.tick() => Wake::Ping,
                    _ = standby(account) => Wake::Standby,
                }
            };
            match wake {
                Wake::Push(p) => self.on_push(s, (*p)?).await?,
                Wake::Step(input) => self.step(s, input).await?,
                Wake::Timeout => {
                    if let Some(c) = self.call.as_mut()
                        && c.call.poll_timeout(Instant::now()).is_some()
                    {
                        info!("the call was not connected in time");
                        self.end(s, EndReason::NoAnswer, true).await;
                    }
                }
                Wake::Notice(Some(MediaNotice::Chat(text))) => {
                    // Spec 3.26: userId (our client id: our user id) and roomId are required.
                    let room = self.call.as_ref().and_then(|c| c.room);
                    let chat = Request::Chat(Chat {
                        user_id: Some(self.me),
                        room_id: room,
                        content: text,
                    });
                    s.send(&chat).await?;
                }
                Wake::Notice(Some(MediaNotice::HangUp(why))) => {
                    info!(why, "hanging up");
                    self.end(s, EndReason::HungUp, true).await;
                }
                Wake::Notice(None) => self.end(s, EndReason::HungUp, true).await,
                Wake::Ping => s.ws.send(Message::Ping(Default::default())).await?,
                // The only way out that is not an error.
                Wake::Standby => return Ok(()),
            }
        }
    }

    async fn on_push(&mut self, s: &mut Signal, p: Push) -> anyhow::Result<()> {
        match p {
            Push::Invite(inv) => {
                // The spec's doInvite names no room (it comes with onConnected, 4.7); the
                // bridge's own server adds it.
                self.invited(s, inv.from, inv.room_id, inv.call_type)
                    .await?;
            }
            Push::Cancel(e) | Push::Reject(e) if self.is_caller(e.from.own_user_id) => {
                self.signal();
                let reason = if self.connected() {
                    EndReason::HungUp
                } else {
                    EndReason::Cancelled
                };
                self.end(s, reason, false).await;
            }
            Push::Event(ev) => {
                let caller = ev.from.own_user_id;
                if !self.is_caller(caller) {
                    return Ok(());
                }
                self.signal();
                if ev.event == rtcpeer::request::CallEvent::Connected {
                    self.connected_by_caller(s, ev.room_id, ev.room_type)
                        .await?;
                }
            }
            Push::Published(p) => {
                let Some(id) = p.client.id else {
                    return Ok(());
                };
                if id == self.me || !self.in_room(p.room_id) {
                    return Ok(());
                }
                match p.started() {
                    Some(true) => self.play(s, id).await?,
                    Some(false) => self.unplay(s, id, false).await?,
                    None => {}
                }
            }
            Push::ExitRoom(pr) => {
                if !self.in_room(pr.room_id) {
                    return Ok(());
                }
                match pr.client.id {
                    Some(id) if self.is_caller(id) => {
                        info!("the caller left the room");
                        self.end(s, EndReason::HungUp, true).await;
                    }
                    Some(id) if id == self.me => self.end(s, EndReason::HungUp, false).await,
                    Some(id) => self.unplay(s, id, false).await?,
                    None => {}
                }
            }
            // The spec's onFinish carries only `userId` (3.3.4): it is about the room we are in.
            Push::Finish(f) if f.room_id.map_or(self.entered(), |r| self.in_room(r)) => {
                self.end(s, EndReason::HungUp, false).await
            }
            // Spec 3.9: onMute names its target; 3.10: onMuteAll mutes everyone but its sender.
            Push::Mute(m) if m.user_id == self.me && self.in_room(m.room_id) => {
                self.mute(m.is_mute).await
            }
            Push::MuteAll(m) if m.user_id != self.me && self.in_room(m.room_id) => {
                self.mute(m.is_mute).await
            }
            Push::Kick(k) if k.user_id == self.me && self.in_room(k.room_id) => {
                self.end(s, EndReason::HungUp, false).await
            }
            // Private chat (3.27) reaches only its addressee: here, the channel. Its text goes to
            // the channel like the room's chat.
            Push::Chat(c) | Push::PrivateChat(c)
                if self.in_room(c.room_id) && c.user_id != self.me =>
            {
                let name = c
                    .client
                    .name
                    .clone()
                    .unwrap_or_else(|| c.user_id.to_string());
                if let Some((m, _)) = self.call.as_ref().and_then(|c| c.media.as_ref()) {
                    m.send(MediaCmd::Chat {
                        text: format!("{name}: {}", c.content),
                    })
                    .await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn signal(&mut self) {
        if let Some(c) = self.call.as_mut() {
            c.signal();
        }
    }

    fn is_caller(&self, id: Id) -> bool {
        self.call.as_ref().is_some_and(|c| c.caller == id)
    }

    fn in_room(&self, room: Id) -> bool {
        self.call.as_ref().is_some_and(|c| c.room == Some(room))
    }

    /// Whether the call in progress has entered its room.
    fn entered(&self) -> bool {
        self.call.as_ref().is_some_and(|c| c.media.is_some())
    }

    /// The room (un)muted the channel: keep it for the call and tell its media.
    async fn mute(&mut self, muted: bool) {
        let Some(c) = self.call.as_mut() else {
            return;
        };
        c.muted = muted;
        if let Some((m, _)) = c.media.as_ref() {
            m.send(MediaCmd::Mute { muted }).await;
        }
    }

    fn connected(&self) -> bool {
        self.call
            .as_ref()
            .is_some_and(|c| c.call.state() == rtcpeer::call::State::Connected)
    }

    /// A call step from us (`doEvent`, `doAgree`, `reject`, `cancel`). Sent, not waited for:
    /// the spec defines no reply (4.2–4.8); the call state machine has moved on either way,
    /// and the caller's pushes (or the no-answer timer) settle the call. A server that replies
    /// anyway (a refusal too) has its reply dropped and logged.
    async fn say(&self, s: &mut Signal, req: &Request) -> anyhow::Result<()> {
        debug!(request = %envelope(req), "call step");
        s.send(req).await
    }

    async fn invited(
        &mut self,
        s: &mut Signal,
        from: rtcpeer::push::From,
        room: Option<Id>,
        call_type: Option<i64>,
    ) -> anyhow::Result<()> {
        let (caller, caller_device) = (from.own_user_id, from.own_device_type);
        let t = &self.task.target;
        let busy = self.call.is_some() || !self.task.sb.claim_dial(t.user_id);
        if busy {
            info!(caller, "busy");
            let to = (caller, caller_device);
            self.say(s, &call_event(self.me, to, CallEvent::Busy, room))
                .await?;
            return Ok(());
        }
        let now = Instant::now();
        // The state machine's room is not used here (ours is `Live::room`).
        let mut call = Call::new(
            caller,
            self.me,
            room.unwrap_or_default(),
            self.task.sb.config.no_answer_timeout(),
            now,
        );
        let _ = call.invite(now);
        metrics::counter!("pttbridge_meeting_calls_total", "kind" => "upstream").increment(1);
        self.event(
            EventKind::CallRinging,
            room,
            caller,
            json!({"callee": t.user_id, "stage": "invited", "upstream": self.task.up.url}),
        );
        let first = match t.policy {
            AnswerPolicy::Reject => Input::Reject,
            AnswerPolicy::Busy => Input::Busy,
            AnswerPolicy::Answer | AnswerPolicy::Ignore => Input::Ring,
        };
        let ring = Duration::from_millis(self.task.sb.config.ring_delay_ms);
        self.call = Some(Live {
            call,
            caller,
            caller_device,
            room,
            call_type,
            muted: false,
            next_step: Some((now + ring, first)),
            media: None,
            claimed: true,
            signals: 1,
            record: None,
        });
        self.task
            .update(|r| r.call = Some(json!({"caller": caller, "room": room})));
        Ok(())
    }

    /// The bridge's own callee step (ring, busy, reject, agree) when its delay is up.
    async fn step(&mut self, s: &mut Signal, input: Input) -> anyhow::Result<()> {
        let Some(c) = self.call.as_mut() else {
            return Ok(());
        };
        c.next_step = None;
        let (caller, room) = (c.caller, c.room);
        let to = (caller, c.caller_device.clone());
        let Ok(state) = c.call.handle(input, Role::Callee, Instant::now()) else {
            return Ok(());
        };
        c.signal();
        match input {
            Input::Ring => {
                self.say(s, &call_event(self.me, to, CallEvent::Ringing, room))
                    .await?;
                self.event(
                    EventKind::CallRinging,
                    room,
                    self.task.target.user_id,
                    json!({"stage":"ringing"}),
                );
                if self.task.target.policy == AnswerPolicy::Answer
                    && let Some(c) = self.call.as_mut()
                {
                    let answer = Duration::from_millis(self.task.sb.config.answer_delay_ms);
                    c.next_step = Some((Instant::now() + answer, Input::Agree));
                }
            }
            Input::Agree => {
                let agree = Request::DoAgree(DoAgree {
                    peers: peers(self.me, to),
                    call_type: None,
                    room_id: room,
                });
                self.say(s, &agree).await?;
                self.event(
                    EventKind::CallAnswered,
                    room,
                    self.task.target.user_id,
                    json!({}),
                );
            }
            Input::Busy => {
                self.say(s, &call_event(self.me, to, CallEvent::Busy, room))
                    .await?;
            }
            _ => self.say(s, &end_call(self.me, to, false, None)).await?,
        }
        if let rtcpeer::call::State::Ended(reason) = state {
            self.end(s, reason, false).await;
        }
        Ok(())
    }

    /// The caller says onConnected (with the room and its type, spec 4.7): enter its room,
    /// publish the channel, play the members.
    async fn connected_by_caller(
        &mut self,
        s: &mut Signal,
        room: Option<Id>,
        room_type: Option<i64>,
    ) -> anyhow::Result<()> {
        let Some(c) = self.call.as_mut() else {
            return Ok(());
        };
        if c.call
            .handle(Input::Connected, Role::Caller, Instant::now())
            .is_err()
        {
            return Ok(());
        }
        let Some(room) = room.or(c.room) else {
            warn!(caller = c.caller, "onConnected names no room: hanging up");
            self.end(s, EndReason::HungUp, true).await;
            return Ok(());
        };
        c.room = Some(room);
        let room_type = room_type.or(c.call_type).unwrap_or(AUDIO_ROOM);
        let caller = c.caller;
        self.task
            .update(|r| r.call = Some(json!({"caller": caller, "room": room})));
        let t = &self.task.target;
        let enter = Request::Enter(Enter {
            user_id: Some(self.me),
            room_id: room,
            room_type,
            username: Some(
                t.name
                    .clone()
                    .unwrap_or_else(|| format!("ptt-{}", t.user_id)),
            ),
            password: None,
        });
        let entered: anyhow::Result<Entered> = s.request(&enter).await;
        let entered = match entered {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %esc(format_args!("{e:#}")), "cannot enter the caller's room");
                self.end(s, EndReason::HungUp, true).await;
                return Ok(());
            }
        };
        let record = self.task.sb.start_record(self.group(Some(room)), caller);
        let counters = record.as_ref().map(|r| r.counters());
        if let Some(c) = self.call.as_mut() {
            if let Some(r) = &record {
                r.counters().signal(c.signals);
            }
            c.record = record;
        }
        let media = media::spawn(CallMedia {
            counters,
            events: self.task.sb.events.clone(),
            passthrough: self.task.sb.config.passthrough,
            target: t.clone(),
            caller,
            room,
            group: self.group(Some(room)),
            local_ip: self.task.sb.config.rtc_ip,
            recorder: self.task.sb.recorder.get().cloned(),
        });
        let (handle, notices) = match media {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %esc(&e), "no media for the call");
                self.end(s, EndReason::HungUp, true).await;
                return Ok(());
            }
        };
        let offer = handle.offer(None).await?;
        let publish = Request::Publish(Publish {
            audio: true,
            video: false,
            sdp: offer,
        });
        let published: anyhow::Result<Negotiated> = s.request(&publish).await;
        match published {
            Ok(n) => {
                handle
                    .send(MediaCmd::Answer {
                        key: None,
                        sdp: n.sdp,
                    })
                    .await;
            }
            Err(e) => {
                warn!(error = %esc(format_args!("{e:#}")), "cannot publish");
                if let Some(c) = self.call.as_mut() {
                    c.media = Some((handle, notices));
                }
                self.end(s, EndReason::HungUp, true).await;
                return Ok(());
            }
        }
        if let Some(c) = self.call.as_mut() {
            if c.muted {
                handle.send(MediaCmd::Mute { muted: true }).await;
            }
            c.media = Some((handle, notices));
        }
        // Play everyone already there; those not publishing (yet) say so and come with
        // onPublished later.
        let members: Vec<Id> = entered.members.iter().filter_map(|c| c.id).collect();
        let me = self.me;
        for id in members.into_iter().filter(|id| *id != me) {
            self.play(s, id).await?;
        }
        Ok(())
    }

    async fn play(&mut self, s: &mut Signal, member: Id) -> anyhow::Result<()> {
        let Some((handle, _)) = self.call.as_ref().and_then(|c| c.media.as_ref()) else {
            return Ok(());
        };
        let offer = handle.offer(Some(member)).await?;
        let play = Request::Play(Play {
            client: member_client(member),
            sdp: offer,
            dom_id: None,
        });
        let reply = s.ask(&play, REPLY_TIMEOUT).await?;
        let Some((handle, _)) = self.call.as_ref().and_then(|c| c.media.as_ref()) else {
            return Ok(());
        };
        // No answer loses that member (its next onPublished tries again), not the call.
        let Some(reply) = reply else {
            handle.send(MediaCmd::Drop { member }).await;
            warn!(member, "no reply to meeting.play in time");
            return Ok(());
        };
        // A member not publishing (yet) is refused; its onPublished brings it back.
        if let Some(why) = refusal(&reply) {
            handle.send(MediaCmd::Drop { member }).await;
            debug!(member, why = %esc(&why), "not playing (yet)");
            return Ok(());
        }
        // An answer that does not parse loses that member, not the call.
        match decode::<Negotiated>(&reply) {
            Ok(n) => {
                handle
                    .send(MediaCmd::Answer {
                        key: Some(member),
                        sdp: n.sdp,
                    })
                    .await;
                debug!(member, "playing");
            }
            Err(e) => {
                handle.send(MediaCmd::Drop { member }).await;
                warn!(member, error = %esc(format_args!("{e:#}")), "cannot play");
            }
        }
        Ok(())
    }

    async fn unplay(&mut self, s: &mut Signal, member: Id, tell: bool) -> anyhow::Result<()> {
        let Some((handle, _)) = self.call.as_ref().and_then(|c| c.media.as_ref()) else {
            return Ok(());
        };
        handle.send(MediaCmd::Drop { member }).await;
        if tell {
            // Spec 3.6 returns nothing: not waited for.
            let close = Request::ClosePlay(ClosePlay {
                client: member_client(member),
            });
            s.send(&close).await?;
        }
        Ok(())
    }

    /// Ends the call in progress: tells the caller (when `tell`), leaves the room, stops the
    /// media, frees the channel.
    async fn end(&mut self, s: &mut Signal, reason: EndReason, tell: bool) {
        let Some(mut c) = self.call.take() else {
            return;
        };
        self.farewell(s, &mut c, tell).await;
        self.finish(c, reason).await;
    }

    /// The call's end on the wire: the hang-up (when `tell`) and `meeting.exit`.
    async fn farewell(&self, s: &mut Signal, c: &mut Live, tell: bool) {
        let state = c.call.state();
        let _ = c.call.handle(Input::HangUp, Role::Callee, Instant::now());
        let was_connected = c.media.is_some();
        if tell {
            c.signal();
            let agreed = matches!(
                state,
                rtcpeer::call::State::Connected | rtcpeer::call::State::Agreed
            );
            let to = (c.caller, c.caller_device.clone());
            let hang_up = end_call(self.me, to, agreed, Some("hangup"));
            let _ = self.say(s, &hang_up).await;
        }
        if was_connected {
            // Best effort: a server that does not answer in time is not waited for longer.
            let _ = s.ask(&Request::Exit, EXIT_WAIT).await;
        }
    }

    /// The call's end here: media stopped, the channel freed, recorded and told.
    async fn finish(&self, mut c: Live, reason: EndReason) {
        if let Some((m, _)) = c.media.take() {
            m.send(MediaCmd::Stop {
                reason: reason.as_str(),
            })
            .await;
        }
        if c.claimed {
            self.task.sb.release_dial(self.task.target.user_id);
        }
        if let Some(r) = c.record.take() {
            r.finish(reason.as_str());
        }
        metrics::counter!("pttbridge_meeting_calls_ended_total", "reason" => reason.as_str())
            .increment(1);
        self.event(
            EventKind::CallEnded,
            c.room,
            c.caller,
            json!({"callee": self.task.target.user_id, "reason": reason.as_str(),
                   "seconds": c.call.started().elapsed().as_secs_f64(), "upstream": self.task.up.url}),
        );
        self.task.update(|r| r.call = None);
    }
}

/// The other party of a call: its id and, when it said, its device type.
type To = (Id, Option<String>);

/// `me` and `to` as the parties of a call request.
fn peers(me: Id, (to, device): To) -> CallPeers {
    CallPeers {
        own_user_id: me,
        target_user_id: to,
        own_device_type: Some(DEVICE_TYPE.into()),
        target_device_type: device,
    }
}

/// `doEvent` `event` from `me` to `to` about `room` (when known).
fn call_event(me: Id, to: To, event: CallEvent, room: Option<Id>) -> Request {
    Request::DoEvent(DoEvent {
        peers: peers(me, to),
        event,
        room_id: room,
        room_type: None,
    })
}

/// `reject` (or `cancel`, once agreed) from `me` to `to`, with `reason` when we hang up.
fn end_call(me: Id, to: To, cancel: bool, reason: Option<&str>) -> Request {
    let end = EndCall {
        peers: peers(me, to),
        reason: reason.map(Into::into),
    };
    if cancel {
        Request::Cancel(end)
    } else {
        Request::Reject(end)
    }
}

/// `module.method` of a request, for errors and logs.
fn envelope(req: &Request) -> String {
    let (module, method) = req.envelope();
    format!("{module}.{method}")
}

/// Why a reply refuses its request (`result` and `message`), or `None` when it succeeded.
fn refusal(reply: &Frame) -> Option<String> {
    let result = reply.result()?;
    if result == code::OK {
        return None;
    }
    let message = reply
        .decode::<reply::Generic>()
        .ok()
        .and_then(|g| g.message);
    Some(match message {
        Some(m) => format!("result {result}: {m}"),
        None => format!("result {result}"),
    })
}

/// The reply's fields as `T`; an error naming the request when they do not parse.
fn decode<T: DeserializeOwned>(reply: &Frame) -> anyhow::Result<T> {
    reply.decode().with_context(|| {
        format!(
            "the reply to {}.{} is not understood",
            reply.module, reply.method
        )
    })
}

/// A successful reply's fields as `T`; an error naming the request when it was refused or its
/// fields do not parse.
fn accepted<T: DeserializeOwned>(reply: &Frame) -> anyhow::Result<T> {
    if let Some(why) = refusal(reply) {
        bail!("{}.{} refused: {why}", reply.module, reply.method);
    }
    decode(reply)
}

/// The `client` of `play`/`closePlay`: only its id counts.
fn member_client(id: Id) -> Client {
    Client {
        id: Some(id),
        ..Client::default()
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn recv_notice(
    media: Option<&mut (MediaHandle, mpsc::Receiver<MediaNotice>)>,
) -> Option<MediaNotice> {
    match media {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(req: &Request) -> String {
        req.to_value().to_string()
    }

    /// The requests come out byte for byte as they did when client mode wrote them by hand.
    #[test]
    fn requests_keep_their_wire_form() {
        assert_eq!(
            wire(&call_event(7, (3, None), CallEvent::Ringing, Some(599))),
            r#"{"module":"call","method":"doEvent","ownUserId":7,"targetUserId":3,"ownDeviceType":"pc","event":"onRinging","roomId":599}"#
        );
        assert_eq!(
            wire(&call_event(7, (3, None), CallEvent::Busy, Some(599))),
            r#"{"module":"call","method":"doEvent","ownUserId":7,"targetUserId":3,"ownDeviceType":"pc","event":"onBusy","roomId":599}"#
        );
        let agree = Request::DoAgree(DoAgree {
            peers: peers(7, (3, None)),
            call_type: None,
            room_id: Some(599),
        });
        assert_eq!(
            wire(&agree),
            r#"{"module":"call","method":"doAgree","ownUserId":7,"targetUserId":3,"ownDeviceType":"pc","roomId":599}"#
        );
        assert_eq!(
            wire(&end_call(7, (3, None), false, None)),
            r#"{"module":"call","method":"reject","ownUserId":7,"targetUserId":3,"ownDeviceType":"pc"}"#
        );
        assert_eq!(
            wire(&end_call(7, (3, None), true, Some("hangup"))),
            r#"{"module":"call","method":"cancel","ownUserId":7,"targetUserId":3,"ownDeviceType":"pc","reason":"hangup"}"#
        );
        let register = Request::DoRegister(DoRegister {
            sid: "s".into(),
            user_id: 7,
            device_type: Some(DEVICE_TYPE.into()),
        });
        assert_eq!(
            wire(&register),
            r#"{"module":"call","method":"doRegister","SID":"s","userId":7,"deviceType":"pc"}"#
        );
        let play = Request::Play(Play {
            client: member_client(3),
            sdp: "v=0".into(),
            dom_id: None,
        });
        assert_eq!(
            wire(&play),
            r#"{"module":"meeting","method":"play","client":{"id":3},"sdp":"v=0"}"#
        );
        let close = Request::ClosePlay(ClosePlay {
            client: member_client(3),
        });
        assert_eq!(
            wire(&close),
            r#"{"module":"meeting","method":"closePlay","client":{"id":3}}"#
        );
    }

    /// What the spec's own examples send reads as the bridge needs it (4.1, 3.23.3, 3.3.4).
    #[test]
    fn spec_shaped_pushes_parse() {
        let push = |t: &str| Push::from_frame(&frame(t)).unwrap().unwrap();
        match push(
            r#"{"module":"call","method":"doInvite","ownUserId":3,"ownDeviceType":"pc","type":1}"#,
        ) {
            Push::Invite(i) => assert_eq!((i.from.own_user_id, i.room_id), (3, None)),
            p => panic!("{p:?}"),
        }
        let published = |t: &str| match push(t) {
            Push::Published(p) => p.started(),
            p => panic!("{p:?}"),
        };
        let ev = |e: &str| {
            format!(
                r#"{{"module":"meeting","method":"onPublished","roomId":5,"client":{{"id":3}},"event":"{e}"}}"#
            )
        };
        assert_eq!(published(&ev("play")), Some(true));
        assert_eq!(published(&ev("close")), Some(false));
        assert_eq!(published(&ev("audioMode")), None);
        assert_eq!(
            published(
                r#"{"module":"meeting","method":"onPublished","roomId":5,"client":{"id":3},"published":true}"#
            ),
            Some(true)
        );
        match push(r#"{"module":"meeting","method":"onFinish","userId":3}"#) {
            Push::Finish(f) => assert_eq!((f.user_id, f.room_id), (3, None)),
            p => panic!("{p:?}"),
        }
        match push(
            r#"{"module":"meeting","method":"onPrivateChat","userId":3,"roomId":5,"content":"hi"}"#,
        ) {
            Push::PrivateChat(c) => assert_eq!(c.content, "hi"),
            p => panic!("{p:?}"),
        }
    }

    /// Chat carries the spec's required userId and roomId (3.26); agree without a known room
    /// leaves roomId out (4.2).
    #[test]
    fn chat_and_agree_as_the_spec_has_them() {
        let chat = Request::Chat(Chat {
            user_id: Some(7),
            room_id: Some(599),
            content: "North: hi".into(),
        });
        assert_eq!(
            wire(&chat),
            r#"{"module":"meeting","method":"chat","userId":7,"roomId":599,"content":"North: hi"}"#
        );
        let agree = Request::DoAgree(DoAgree {
            peers: peers(7, (3, Some("webphone".into()))),
            call_type: None,
            room_id: None,
        });
        assert_eq!(
            wire(&agree),
            r#"{"module":"call","method":"doAgree","ownUserId":7,"targetUserId":3,"ownDeviceType":"pc","targetDeviceType":"webphone"}"#
        );
    }

    fn frame(text: &str) -> Frame {
        Frame::parse(text).unwrap()
    }

    #[test]
    fn replies_are_typed_or_a_clear_error() {
        let ok = frame(
            r#"{"module":"meeting","method":"publish","result":0,"client":{"id":7},"sdp":"v=0"}"#,
        );
        assert_eq!(refusal(&ok), None);
        assert_eq!(accepted::<Negotiated>(&ok).unwrap().sdp, "v=0");

        let refused = frame(
            r#"{"module":"meeting","method":"play","result":409,"message":"not publishing"}"#,
        );
        assert_eq!(
            refusal(&refused).as_deref(),
            Some("result 409: not publishing")
        );
        let e = accepted::<Negotiated>(&refused).unwrap_err();
        assert_eq!(
            e.to_string(),
            "meeting.play refused: result 409: not publishing"
        );

        let odd = frame(r#"{"module":"meeting","method":"enter","result":0,"members":3}"#);
        let e = accepted::<Entered>(&odd).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("the reply to meeting.enter is not understood: "),
            "{e:#}"
        );
    }
}
