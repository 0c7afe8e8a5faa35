//! One meeting room: an actor owning its members (membership and the `meeting.*` requests,
//! with the pushes they cause), its media plane ([`media`]: one UDP port, the members' WebRTC
//! peers) and, when a PTT channel is dialled in, the [`link`]. Everything a room does runs on
//! this one task; it reaches the rest of the meeting side only through [`RoomHost`].
//!
//! Each 20 ms tick first takes in whatever datagrams and PTT voice are already waiting, then
//! runs the link: a tick that comes late (the process was not scheduled for a while) must not
//! find the jitter buffers empty while the audio they wait for sits unread in a socket.

pub mod link;
pub mod media;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::media::arena::PacketArena;
use ::media::g711::Law;
use ::media::group::OutPacket;
use ::media::passthrough::Source;
use logsafe::{RateLimit, esc};
use rtcpeer::bean::{Client, Room};
use rtcpeer::code;
use rtcpeer::id::Id;
use rtcpeer::push::{self, Push};
use rtcpeer::reply::{self, Entered, Negotiated};
use rtcpeer::request::Request;
use serde_json::{Value, json};
use str0m::Event;
use str0m::format::Codec;
use str0m::media::Frequency;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use self::link::{FeedInput, RoomLink};
use self::media::{MediaAddress, PeerTag, Role, RoomMedia};
use super::dial::DialTarget;
use super::events::{link_event, party};
use super::outbox::{Outbox, push_outbox};
use super::refusal::Refusal;
use super::room_threads::Placement;
use crate::bridge::{HandState, Notice, Output, PassThrough};
use crate::hub::calls::CallCounters;
use crate::hub::{EventKind, Party};
use crate::recording::Recorder;
use crate::recording::mix::{MixError, MixStart};

/// What a room needs from the meeting side around it (the switchboard implements it).
pub trait RoomHost: Send + Sync + 'static {
    /// The room's PTT link came up: its call record starts; the link counts its audio in the
    /// returned counters.
    fn link_up(&self, room: Id, dial: Id, caller: Id) -> Option<Arc<CallCounters>>;
    /// The room's link ended, or never came up (caller left, room finished, kicked, hung up).
    fn link_down(&self, room: Id, dial: Id, reason: &str);
    /// The room stopped.
    fn room_closed(&self, room: Id);
    /// A hub event in this room.
    fn publish(&self, kind: EventKind, room: Id, party: Option<Party>, detail: Value);
    /// Where server recordings go and the tenant they belong to; `None` when the bridge does
    /// not record (`[recording] dir` unset).
    fn recorder(&self) -> Option<(Recorder, String)>;
}

/// How rooms are set up (from `[meeting]`).
#[derive(Debug, Clone, Copy)]
pub struct RoomConfig {
    /// Where the rooms' media ports are opened and what they announce.
    pub media: MediaAddress,
    /// How a lone PTT talker reaches the room.
    pub passthrough: PassThrough,
    /// A room with nobody in it closes after this long (its UDP port goes with it).
    pub empty_close: Duration,
    /// Hand-raise only (`meeting.floor = "hand"`): members are heard on the PTT channel only
    /// while their raised hand holds its floor.
    pub hand_only: bool,
    /// Listeners per shard of a spread fan-out (`meeting.fanout_shard_listeners`; 0: never).
    pub fanout_shard_listeners: usize,
}

/// Commands a room takes.
pub enum RoomCmd {
    /// A member enters.
    Enter {
        /// Its client.
        client: Client,
        /// Its signalling connection (members are one per user: the latest wins).
        conn: u64,
        /// Where its pushes go.
        outbox: Option<Outbox>,
        /// How the enter went.
        reply: oneshot::Sender<Result<Admitted, Refusal>>,
    },
    /// A member leaves without a request (disconnect, entered elsewhere): only if it is
    /// still in the room from connection `conn` (not since entered again from another).
    Leave {
        /// Client id.
        client: Id,
        /// The connection it entered from.
        conn: u64,
        /// Why.
        reason: &'static str,
    },
    /// A `meeting.*` request from a member.
    Request {
        /// Client id of the sender.
        from: Id,
        /// The sender signed in through an operator (the web page's meeting client): it may
        /// moderate like the room's compere.
        operator: bool,
        /// The request.
        req: Request,
        /// Its reply.
        reply: oneshot::Sender<Result<Value, Refusal>>,
    },
    /// Bring a PTT channel in (the caller said onConnected, or a platform invited it).
    AttachLink(Box<LinkSetup>),
    /// A platform ends this member's session: `tiren` to the room, then it leaves.
    Kick {
        /// Client id.
        client: Id,
    },
    /// Take the PTT channel out.
    DetachLink {
        /// Dial-in id.
        dial: Id,
        /// Why.
        reason: &'static str,
    },
    /// The recorder answered a `startRecord` (the recording's id, or why not).
    RecordStarted {
        /// Its id, or why it did not start.
        result: Result<Id, MixError>,
        /// Who asked.
        by: Id,
        /// The request's reply.
        reply: oneshot::Sender<Result<Value, Refusal>>,
    },
    /// The room's fields changed (`updateRoom`, `modifyRoomPwd`): later `enter` replies carry
    /// them (the compere, meeting name and floor mode stay as they are).
    Update(Box<Room>),
    /// How many members are in the room (`checkActiveRoom`).
    Occupancy(oneshot::Sender<usize>),
}

/// A member that entered: its `meeting.enter` reply, and whether the room queued that reply
/// itself. It does when the member has an outbox: the reply goes first and what the newcomer
/// must hear of the room's present (the PTT channel's presence, its stream, its talker) right
/// after it, so a client never gets a push for a room it does not know it is in yet.
#[derive(Debug)]
pub struct Admitted {
    /// The reply's body.
    pub entered: Entered,
    /// The reply is queued already (do not send it again).
    pub replied: bool,
}

/// What a link needs.
pub struct LinkSetup {
    /// The dialled target.
    pub target: DialTarget,
    /// Who called ([`PLATFORM`](super::calls::PLATFORM) for a platform's invite).
    pub caller: Id,
    /// Told whether the link came up (platform invites wait for it).
    pub ready: Option<oneshot::Sender<Result<(), String>>>,
    /// The link ends when the room's last member leaves (a standing room's own dial-in).
    pub ends_when_empty: bool,
}

/// Handle to a room actor.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    tx: mpsc::Sender<RoomCmd>,
}

impl RoomHandle {
    /// Sends a command, waiting for queue room.
    pub async fn send(&self, cmd: RoomCmd) -> Result<(), Refusal> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| Refusal::stopped("room"))
    }

    /// Sends a command if the queue has room; false when it was full or the room is gone.
    pub fn try_send(&self, cmd: RoomCmd) -> bool {
        self.tx.try_send(cmd).is_ok()
    }
}

/// Commands queued per room.
const COMMANDS: usize = 256;
/// Datagrams taken from the socket per wake-up before the other inputs get a turn.
const RECV_BATCH: usize = 64;
/// Most waiting datagrams and PTT events taken in before a tick (bounded so a flood cannot
/// hold the tick back forever).
const CATCH_UP: usize = 1024;

/// Starts a room with its own UDP port, on the thread `place` names (its socket and timers
/// are that thread's runtime's).
pub fn spawn(
    host: Arc<dyn RoomHost>,
    cfg: RoomConfig,
    mut info: Room,
    place: Placement,
) -> std::io::Result<RoomHandle> {
    let Placement { handle, seat } = place;
    let _runtime = handle.enter();
    let mut media = RoomMedia::bind(cfg.media)?;
    media.spread_over(cfg.fanout_shard_listeners);
    let port = media.local().port();
    let (tx, rx) = mpsc::channel(COMMANDS);
    let id = info.id.unwrap_or_default();
    let recorder = host.recorder();
    // The room's creator is its first compere (`superModeId`, spec 8.3).
    let compere = info.owner_id.unwrap_or_default();
    info.super_mode_id = Some(compere);
    // How members take a dialled-in channel's floor (bridge extension, `meeting.floor`).
    let mode = if cfg.hand_only { "hand" } else { "voice" };
    info.extra.insert("floorMode".into(), mode.into());
    let actor = RoomActor {
        host,
        cfg,
        id,
        info,
        compere,
        hands: Vec::new(),
        media,
        members: Vec::new(),
        link: None,
        arena: PacketArena::default(),
        empty_since: Some(Instant::now()),
        finished: false,
        recorder,
        recording: None,
        me: tx.downgrade(),
        epoch: Instant::now(),
        direct_latency: metrics::histogram!("pttbridge_meeting_bridge_latency_seconds", "route" => "direct"),
        rtp_in: metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "in"),
        tick_delay: metrics::histogram!("pttbridge_meeting_tick_delay_seconds"),
    };
    handle.spawn(
        async move {
            // The room counts on its thread until its task ends.
            let _seat = seat;
            actor.run(rx).await;
        }
        .instrument(info_span!("room", room = id, port)),
    );
    Ok(RoomHandle { tx })
}

struct Member {
    client: Client,
    conn: u64,
    outbox: Option<Outbox>,
    publishing: Option<u64>,
}

struct RoomActor {
    host: Arc<dyn RoomHost>,
    cfg: RoomConfig,
    id: Id,
    info: Room,
    /// Who moderates (`setCompere` hands it on): kicks, mutes, finishes.
    compere: Id,
    /// Raised hands, first raised first (the link asks the PTT floor for the first).
    hands: Vec<Id>,
    media: RoomMedia,
    members: Vec<Member>,
    link: Option<RoomLink>,
    /// Members' packets are copied out of str0m's buffers into shared chunks.
    arena: PacketArena,
    empty_since: Option<Instant>,
    finished: bool,
    /// Where a server recording goes, and the tenant it belongs to.
    recorder: Option<(Recorder, String)>,
    /// The server recording in progress.
    recording: Option<Recording>,
    /// The room's own queue (weak: the room ends when its last handle goes), for answers
    /// that come back from other threads.
    me: mpsc::WeakSender<RoomCmd>,
    /// The recording clock's origin.
    epoch: Instant,
    direct_latency: metrics::Histogram,
    rtp_in: metrics::Counter,
    tick_delay: metrics::Histogram,
}

/// A server recording of the room (`meeting.startRecord`).
struct Recording {
    /// Its id once the recorder has answered.
    id: Option<Id>,
    /// Where the room's packets and ticks go meanwhile.
    to: Recorder,
}

/// Track ids of a recording: members by their client id, the PTT channel's streams (one per
/// PTT talker in pass-through, or its mix) above every client id.
fn link_track(source: Source) -> u64 {
    match source {
        Source::Talker(t) => (1 << 62) | u64::from(t),
        Source::Mix => 1 << 63,
    }
}

async fn link_next(link: &mut Option<RoomLink>) -> FeedInput {
    match link {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

impl RoomActor {
    async fn run(mut self, mut rx: mpsc::Receiver<RoomCmd>) {
        let mut buf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        info!("room open");
        loop {
            tokio::select! {
                r = self.media.socket().recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        self.on_datagram(&buf[..n], from);
                        // Whatever else is queued, without another trip through select.
                        self.read_waiting(&mut buf, RECV_BATCH - 1);
                    }
                    Err(e) => {
                        // ICMP errors (port unreachable) a peer can provoke at will.
                        static UDP_ERROR: RateLimit = RateLimit::debug("UDP receive error (room)");
                        if UDP_ERROR.allow() {
                            debug!(error = %e, "UDP receive error");
                        }
                    }
                },
                cmd = rx.recv() => match cmd {
                    Some(c) => self.on_cmd(c),
                    None => break,
                },
                input = link_next(&mut self.link) => self.on_feed(input),
                due = tick.tick() => self.on_tick(&mut buf, due.into_std()),
            }
            self.process_peer_events();
            if self.finished {
                break;
            }
            if let Some(since) = self.empty_since
                && since.elapsed() > self.cfg.empty_close
            {
                break;
            }
        }
        self.detach_link("room closed");
        self.stop_recording(None);
        self.host.room_closed(self.id);
        info!("room closed");
    }

    fn member(&self, id: Id) -> Option<&Member> {
        self.members.iter().find(|m| m.client.id == Some(id))
    }

    /// EnterRoom / ExitRoom body for `client` in this room.
    fn presence(&self, client: Client, result: Option<i64>) -> push::Presence {
        push::Presence {
            room_id: self.id,
            client,
            result,
        }
    }

    fn push_all(&self, msg: &Push, except: Option<Id>) {
        let v = msg.to_value();
        for m in &self.members {
            if m.client.id != except
                && let Some(o) = &m.outbox
            {
                push_outbox(o, v.clone());
            }
        }
    }

    fn push_one(&self, to: Id, msg: &Push) -> bool {
        match self.member(to).and_then(|m| m.outbox.as_ref()) {
            Some(o) => push_outbox(o, msg.to_value()),
            None => false,
        }
    }

    fn publish(&self, kind: EventKind, party: Option<Party>, detail: Value) {
        self.host.publish(kind, self.id, party, detail);
    }

    // ---- media ---------------------------------------------------------------------------

    /// Datagrams already in the socket, up to `max`, without waiting.
    fn read_waiting(&mut self, buf: &mut [u8], max: usize) {
        for _ in 0..max {
            match self.media.socket().try_recv_from(buf) {
                Ok((n, from)) => self.on_datagram(&buf[..n], from),
                Err(_) => break,
            }
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: std::net::SocketAddr) {
        self.media.on_datagram(data, from, Instant::now());
    }

    fn process_peer_events(&mut self) {
        while let Some((pid, ev)) = self.media.poll_event() {
            self.on_peer_event(pid, ev);
        }
    }

    /// Removes the peers that died. Once per tick, not per wake-up: finding them looks at
    /// every peer, and a big room wakes for each STUN check and RTCP report its peers send.
    fn remove_dead_peers(&mut self) {
        for pid in self.media.dead() {
            // ICE consent or DTLS failed (or we stopped hearing it): the client vanished.
            metrics::counter!("pttbridge_meeting_peers_lost_total").increment(1);
            info!(peer = pid, "WebRTC peer lost (ICE/DTLS timeout)");
            self.remove_peer(pid, "connection lost");
        }
    }

    fn on_peer_event(&mut self, pid: u64, ev: Event) {
        let Some(tag) = self.media.peers().get(&pid).map(|p| p.tag) else {
            return;
        };
        match ev {
            Event::Connected => {
                debug!(
                    peer = pid,
                    owner = tag.owner,
                    publish = tag.role == Role::Publish,
                    "peer connected"
                );
                if tag.role == Role::Publish
                    && let Some(m) = self.member(tag.owner)
                {
                    let msg = Push::Published(push::Published {
                        room_id: self.id,
                        client: m.client.clone(),
                        published: Some(true),
                        event: Some("play".into()),
                        v_code: None,
                    });
                    self.push_all(&msg, Some(tag.owner));
                }
            }
            Event::MediaData(d) => {
                if tag.role != Role::Publish {
                    return;
                }
                let owner = tag.owner;
                self.rtp_in.increment(1);
                let ts = d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer() as u32;
                let law = match d.params.spec().codec {
                    Codec::Opus => None,
                    Codec::PCMU => Some(Law::Mu),
                    Codec::PCMA => Some(Law::A),
                    _ => {
                        metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "codec")
                            .increment(1);
                        return;
                    }
                };
                let payload = self.arena.copy(&d.data);
                let now = Instant::now();
                let level = d.ext_vals.audio_level;
                if law.is_some() {
                    // G.711 goes to the PTT channel (transcoded); members only play Opus.
                    if let Some(l) = self.link.as_mut() {
                        l.core
                            .handle_member_packet(owner, law, ts, payload, level, now);
                    }
                    return;
                }
                let samples =
                    ::media::opus_toc::parse(&payload).map_or(960, |i| i.samples_at(48_000));
                if let Some(Recording { to: r, .. }) = &self.recording {
                    r.mix_packet(self.id, owner as u64, ts, payload.clone(), now);
                }
                if let Some(l) = self.link.as_mut() {
                    l.core
                        .handle_member_packet(owner, None, ts, payload.clone(), level, now);
                }
                let pkt = OutPacket {
                    source: Source::Talker(owner as u32),
                    src_ts: ts,
                    samples,
                    payload,
                };
                self.media.forward(owner, Codec::Opus, &pkt, now);
            }
            _ => {}
        }
    }

    fn remove_peer(&mut self, pid: u64, why: &str) {
        let Some(tag) = self.media.remove_peer(pid, why) else {
            return;
        };
        if tag.role != Role::Publish {
            return;
        }
        let owner = tag.owner;
        let mut client = None;
        if let Some(m) = self.members.iter_mut().find(|m| m.client.id == Some(owner))
            && m.publishing == Some(pid)
        {
            m.publishing = None;
            client = Some(m.client.clone());
        }
        if let Some(l) = self.link.as_mut() {
            l.core.remove_member(owner);
            self.route_link(Instant::now());
        }
        if let Some(client) = client {
            self.push_all(
                &Push::Published(push::Published {
                    room_id: self.id,
                    client,
                    published: Some(false),
                    event: Some("close".into()),
                    v_code: None,
                }),
                Some(owner),
            );
        }
    }

    fn on_tick(&mut self, buf: &mut [u8], due: Instant) {
        let now = Instant::now();
        self.tick_delay
            .record(now.saturating_duration_since(due).as_secs_f64());
        // Audio that arrived while this task waited for its turn goes in before the tick
        // pulls from the jitter buffers.
        self.read_waiting(buf, CATCH_UP);
        for _ in 0..CATCH_UP {
            let Some(input) = self.link.as_mut().and_then(|l| l.try_next()) else {
                break;
            };
            self.on_feed(input);
        }
        let now = Instant::now();
        self.media.handle_timeouts(now);
        self.process_peer_events();
        self.remove_dead_peers();
        if let Some(l) = self.link.as_mut() {
            let dial = l.dial;
            l.core.set_g711_listeners(
                self.media.plays(dial, Codec::PCMU),
                self.media.plays(dial, Codec::PCMA),
            );
            l.core.handle_tick(now);
            self.route_link(now);
            if let Some(l) = self.link.as_mut() {
                l.core.sent(Instant::now());
            }
        }
        // After the link's tick, so this tick's channel audio is in the recording's.
        if let Some(Recording { to: r, .. }) = &self.recording {
            r.mix_tick(self.id, now);
        }
    }

    // ---- the PTT link --------------------------------------------------------------------

    fn on_feed(&mut self, input: FeedInput) {
        match input {
            FeedInput::Event(ev) => {
                let Some(l) = self.link.as_mut() else { return };
                if matches!(ev, crate::sides::ptt::ChannelEvent::Disconnected)
                    && l.port.account().standby()
                {
                    // The account went to another cluster node (a drain, or a lease this node
                    // lost): it will not come back here, so the call ends and the caller
                    // redials the number on the node that now holds it.
                    return self.detach_link("PTT account moved to another cluster node");
                }
                let now = Instant::now();
                l.core.handle_ptt(ev, now);
                if self.route_link(now) {
                    let sent = Instant::now();
                    // A mix that went out early is the link's to measure; the rest went direct.
                    if let Some(l) = self.link.as_mut()
                        && !l.core.sent(sent)
                    {
                        self.direct_latency
                            .record(sent.saturating_duration_since(now).as_secs_f64());
                    }
                }
            }
            FeedInput::Closed => self.detach_link("PTT account stopped"),
        }
    }

    /// Carries out what the link emitted; true when PTT audio went to players.
    fn route_link(&mut self, now: Instant) -> bool {
        let Some(l) = self.link.as_mut() else {
            return false;
        };
        let dial = l.dial;
        let mut forwarded = false;
        let mut notices = Vec::new();
        while let Some(out) = l.core.poll_output() {
            match out {
                Output::Listeners(p) => {
                    self.media.forward(dial, Codec::Opus, &p, now);
                    if let Some(Recording { to: r, .. }) = &self.recording {
                        r.mix_packet(self.id, link_track(p.source), p.src_ts, p.payload, now);
                    }
                    forwarded = true;
                }
                Output::ListenersG711(law, p) => {
                    let codec = match law {
                        Law::Mu => Codec::PCMU,
                        Law::A => Codec::PCMA,
                    };
                    self.media.forward(dial, codec, &p, now);
                }
                Output::PttVoice { opus, terminator } => {
                    if let (Some(t), Some((_, app))) = (&mut l.transmission, &self.recorder) {
                        // Named once per burst: the members speaking as it starts.
                        let (members, core, room) = (&self.members, &l.core, self.id);
                        let group = &l.ptt_group;
                        let starting = || {
                            (
                                group.clone(),
                                speakers_party(members, &core.speakers(), room),
                            )
                        };
                        t.voice(app, starting, &opus, 2, terminator);
                    }
                    l.port.voice(opus, terminator);
                }
                Output::PttText(text) => l.port.text(text),
                Output::Notice(n) => notices.push(n),
            }
        }
        if !notices.is_empty() {
            self.notices(notices);
        }
        forwarded
    }

    fn attach_link(&mut self, mut setup: LinkSetup) {
        let ready = setup.ready.take();
        let tell = |r: Result<(), String>| {
            if let Some(tx) = ready {
                let _ = tx.send(r);
            }
        };
        let dial = setup.target.user_id;
        if self.link.is_some() {
            warn!("a PTT channel is already linked into this room");
            self.host.link_down(self.id, dial, "room already linked");
            return tell(Err("a PTT channel is already linked into this room".into()));
        }
        let mut link = match RoomLink::new(
            &setup.target,
            setup.caller,
            self.id,
            self.cfg.passthrough,
            self.cfg.hand_only,
            Instant::now(),
        ) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot start the link");
                self.host.link_down(self.id, dial, "link failed");
                return tell(Err(format!("cannot start the link: {e}")));
            }
        };
        link.ends_when_empty = setup.ends_when_empty;
        link.core.counters = self.host.link_up(self.id, dial, setup.caller);
        // What the members say into the channel is archived as the channel's bursts.
        link.transmission = self.recorder.as_ref().map(|(r, _)| {
            crate::recording::transmission::Transmission::new(
                r.clone(),
                format!("meeting:{}:{dial}", self.id),
            )
        });
        // Members who muted themselves before the channel came are not heard on it either.
        for m in &self.members {
            if let (Some(id), Some(true)) = (m.client.id, m.client.is_muted) {
                link.core.set_member_muted(id, true);
            }
        }
        let client = link.client.clone();
        let ptt_group = link.ptt_group.clone();
        self.link = Some(link);
        self.push_all(&Push::EnterRoom(self.presence(client.clone(), None)), None);
        self.push_all(
            &Push::Published(push::Published {
                room_id: self.id,
                client: client.clone(),
                published: Some(true),
                event: Some("play".into()),
                v_code: None,
            }),
            None,
        );
        metrics::gauge!("pttbridge_meeting_links").increment(1.0);
        metrics::counter!("pttbridge_meeting_links_total").increment(1);
        info!(dial, ptt = %esc(&ptt_group), "PTT channel linked");
        self.publish(
            EventKind::LinkUp,
            Some(party(dial, client.name.as_deref())),
            json!({ "ptt_group": ptt_group, "caller": setup.caller, "dial_in": dial }),
        );
        // Members hear of the channel's present (its talkers) once they know the link.
        if let Some(l) = self.link.as_mut() {
            let now = Instant::now();
            for ev in l.take_present() {
                l.core.handle_ptt(ev, now);
            }
            // Hands raised before the channel came ask its floor now.
            for h in &self.hands {
                l.core.raise_hand(*h, now);
            }
            self.route_link(now);
        }
        tell(Ok(()));
    }

    fn detach_link(&mut self, reason: &str) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        let now = Instant::now();
        link.core.close(now);
        while let Some(out) = link.core.poll_output() {
            // Only the burst's terminator matters now; the room hears nothing more of it.
            if let Output::PttVoice { opus, terminator } = out {
                link.port.voice(opus, terminator);
            }
        }
        let dial = link.dial;
        for p in self
            .media
            .peers_where(|t| t.role == Role::Play { source: dial })
        {
            self.remove_peer(p, "link down");
        }
        // The call ends first (the caller's `cancel` carries the reason), then its media and
        // presence go: a client that reads them in order shows why, not just "link down".
        self.host.link_down(self.id, dial, reason);
        self.push_all(
            &Push::Published(push::Published {
                room_id: self.id,
                client: link.client.clone(),
                published: Some(false),
                event: Some("close".into()),
                v_code: None,
            }),
            None,
        );
        self.push_all(
            &Push::ExitRoom(self.presence(link.client.clone(), None)),
            None,
        );
        metrics::gauge!("pttbridge_meeting_links").decrement(1.0);
        info!(dial, reason, "PTT channel unlinked");
        self.publish(
            EventKind::LinkDown,
            Some(party(dial, link.client.name.as_deref())),
            json!({ "ptt_group": link.ptt_group, "reason": reason, "voice_out": link.core.voice_out() }),
        );
    }

    fn notices(&mut self, notices: Vec<Notice<Id>>) {
        let Some(link) = &self.link else { return };
        let dial = link.dial;
        let link_client = link.client.clone();
        let ptt_group = link.ptt_group.clone();
        let muted = link.core.ptt_muted();
        let mut hang_up = None;
        for n in notices {
            match n {
                Notice::HangUp { by } => hang_up = Some(by),
                Notice::PttTalking { party: p, talking } => {
                    // A muted channel is not heard, nor named as talking (the mute said
                    // "stopped" for whoever was talking then).
                    if !muted {
                        self.push_talking(talker_client(&link_client, &p), talking);
                    }
                }
                Notice::MemberTalking {
                    member: client,
                    talking,
                } => {
                    let member = self
                        .member(client)
                        .map(|m| m.client.clone())
                        .unwrap_or_else(|| Client {
                            id: Some(client),
                            ..Client::default()
                        });
                    let name = member.name.clone();
                    self.push_talking(member, talking);
                    self.link_event(&n, dial, &link_client, &ptt_group, name.as_deref());
                }
                Notice::FloorDenied { .. } => {
                    self.link_event(&n, dial, &link_client, &ptt_group, None);
                }
                Notice::FloorGranted => debug!("meeting has the PTT floor"),
                Notice::Hand { member, state } => {
                    let (floor, holder) = match state {
                        HandState::Granted => ("granted", None),
                        HandState::Queued { holder } => ("queued", holder.map(|h| h.name)),
                        HandState::Ended => ("ended", None),
                    };
                    info!(member, floor, "raised hand on the PTT floor");
                    self.push_all(
                        &Push::HandFloor(push::HandFloor {
                            room_id: self.id,
                            user_id: member,
                            floor: floor.into(),
                            holder,
                        }),
                        None,
                    );
                }
                Notice::Text { from, text } => {
                    let mut client = link_client.clone();
                    if let Some(p) = &from {
                        client.name = Some(p.name.clone());
                    }
                    self.push_all(
                        &Push::Chat(push::Chatted {
                            user_id: dial,
                            room_id: self.id,
                            content: text,
                            client,
                        }),
                        None,
                    );
                }
            }
        }
        if let Some(by) = hang_up {
            info!(by = %esc(by.as_ref().map_or("", |p| p.name.as_str())), "hang-up from the PTT channel");
            self.detach_link("hangup");
        }
    }

    /// Publishes the hub event of a link notice (`talk.*` of a member, `floor.denied`).
    fn link_event(
        &self,
        n: &Notice<Id>,
        dial: Id,
        link: &Client,
        ptt_group: &str,
        member_name: Option<&str>,
    ) {
        if let Some((kind, who, detail)) =
            link_event(n, dial, link.name.as_deref(), ptt_group, member_name)
        {
            self.publish(kind, Some(who), detail);
        }
    }

    /// `memberTalking` to everyone in the room.
    fn push_talking(&self, member: Client, talking: bool) {
        self.push_all(
            &Push::MemberTalking(push::Talking {
                room_id: self.id,
                member,
                talking,
            }),
            None,
        );
    }

    /// Chat from a member into the PTT channel.
    fn link_text(&mut self, text: String) {
        if let Some(l) = self.link.as_mut() {
            l.core.send_text(text);
            self.route_link(Instant::now());
        }
    }

    // ---- commands ------------------------------------------------------------------------

    fn on_cmd(&mut self, cmd: RoomCmd) {
        match cmd {
            RoomCmd::Enter {
                client,
                conn,
                outbox,
                reply,
            } => {
                let _ = reply.send(self.enter(client, conn, outbox));
            }
            RoomCmd::Leave {
                client,
                conn,
                reason,
            } => {
                if self.member(client).is_some_and(|m| m.conn == conn) {
                    self.leave(client, reason);
                }
            }
            RoomCmd::Request {
                from,
                operator,
                req: Request::StartRecord(start),
                reply,
            } => self.start_recording(from, operator, start, reply),
            RoomCmd::Request {
                from,
                operator,
                req,
                reply,
            } => {
                let r = self.request(from, operator, req);
                let _ = reply.send(r);
            }
            RoomCmd::RecordStarted { result, by, reply } => {
                self.recording_started(result, by, reply)
            }
            RoomCmd::AttachLink(setup) => self.attach_link(*setup),
            RoomCmd::Kick { client } => {
                if self.member(client).is_some() {
                    self.push_all(
                        &Push::Kick(push::Kicked {
                            user_id: client,
                            room_id: self.id,
                        }),
                        None,
                    );
                    self.leave(client, "kicked out");
                }
            }
            RoomCmd::DetachLink { dial, reason } => {
                if self.link.as_ref().is_some_and(|l| l.dial == dial) {
                    self.detach_link(reason);
                }
            }
            RoomCmd::Update(info) => {
                let kept = &self.info;
                let info = Room {
                    super_mode_id: kept.super_mode_id,
                    appointment_id: kept.appointment_id,
                    appointment_name: kept.appointment_name.clone(),
                    extra: kept.extra.clone(),
                    ..*info
                };
                self.info = info;
            }
            RoomCmd::Occupancy(reply) => {
                let _ = reply.send(self.members.iter().filter(|m| m.outbox.is_some()).count());
            }
        }
    }

    fn enter(
        &mut self,
        mut client: Client,
        conn: u64,
        outbox: Option<Outbox>,
    ) -> Result<Admitted, Refusal> {
        let id = client.id.unwrap_or_default();
        client.is_super_moderator = Some(id == self.compere);
        let limit = self.info.number_limit.unwrap_or(200) as usize;
        if self.member(id).is_some() {
            // Same user again (another connection): the old presence is replaced (spec result 9).
            if let Some(o) = self.member(id).and_then(|m| m.outbox.clone()) {
                push_outbox(
                    &o,
                    Push::EnterRoom(self.presence(client.clone(), Some(9))).to_value(),
                );
            }
            self.leave(id, "entered again");
        } else if self.members.len() >= limit {
            return Err(Refusal::new(
                code::CONFLICT,
                format!("room {} is full ({limit})", self.id),
            ));
        }
        // The others, the PTT channel among them (a client like any other to the newcomer).
        let mut members: Vec<Client> = self.members.iter().map(|m| m.client.clone()).collect();
        members.extend(self.link.as_ref().map(|l| l.client.clone()));
        self.push_all(&Push::EnterRoom(self.presence(client.clone(), None)), None);
        let entered = Entered {
            client: client.clone(),
            members,
            room: self.info.clone(),
        };
        // The reply first, then what the others heard before this member came (the channel's
        // EnterRoom and onPublished, its talker mid-burst), all ahead of any later push.
        let replied = outbox
            .as_ref()
            .is_some_and(|o| push_outbox(o, reply::ok_with("meeting", "enter", &entered)));
        if replied && let Some(o) = &outbox {
            // Like any push, one that finds the queue full is dropped (and counted).
            for p in self
                .link_present()
                .into_iter()
                .chain(self.members_publishing())
            {
                push_outbox(o, p.to_value());
            }
            // Hands raised before it came, in the order they were raised.
            for h in &self.hands {
                if let Some(m) = self.member(*h) {
                    let hand = Push::RaiseHand(push::Hand {
                        client: m.client.clone(),
                        room_id: self.id,
                    });
                    push_outbox(o, hand.to_value());
                }
            }
        }
        self.members.push(Member {
            client,
            conn,
            outbox,
            publishing: None,
        });
        self.empty_since = None;
        metrics::gauge!("pttbridge_meeting_members").increment(1.0);
        Ok(Admitted { entered, replied })
    }

    /// What a member entering now would have been told of the PTT channel had it been here
    /// when the channel came: `EnterRoom`, `onPublished` (so it can `play` it) and, while a
    /// PTT user talks and the channel is not muted, `memberTalking`.
    fn link_present(&self) -> Vec<Push> {
        let Some(l) = &self.link else {
            return Vec::new();
        };
        let mut out = vec![
            Push::EnterRoom(self.presence(l.client.clone(), None)),
            Push::Published(push::Published {
                room_id: self.id,
                client: l.client.clone(),
                published: Some(true),
                event: Some("play".into()),
                v_code: None,
            }),
        ];
        if !l.core.ptt_muted() {
            out.extend(l.core.ptt_talkers().iter().map(|p| {
                Push::MemberTalking(push::Talking {
                    room_id: self.id,
                    member: talker_client(&l.client, p),
                    talking: true,
                })
            }));
        }
        out
    }

    /// The `onPublished` a member entering now missed: one for each member whose published
    /// stream is connected, so it can `play` them as the others do.
    fn members_publishing(&self) -> Vec<Push> {
        self.members
            .iter()
            .filter(|m| {
                m.publishing
                    .and_then(|pid| self.media.peers().get(&pid))
                    .is_some_and(|p| p.connected)
            })
            .map(|m| {
                Push::Published(push::Published {
                    room_id: self.id,
                    client: m.client.clone(),
                    published: Some(true),
                    event: Some("play".into()),
                    v_code: None,
                })
            })
            .collect()
    }

    fn leave(&mut self, id: Id, reason: &'static str) {
        let Some(pos) = self.members.iter().position(|m| m.client.id == Some(id)) else {
            return;
        };
        let m = self.members.remove(pos);
        metrics::gauge!("pttbridge_meeting_members").decrement(1.0);
        self.hands.retain(|h| *h != id);
        if let Some(l) = self.link.as_mut() {
            l.core.lower_hand(id);
        }
        let owned = self
            .media
            .peers_where(|t: &PeerTag| t.owner == id || t.role == Role::Play { source: id });
        for pid in owned {
            self.remove_peer(pid, reason);
        }
        self.push_all(&Push::ExitRoom(self.presence(m.client, None)), None);
        debug!(client = id, reason, "member left");
        if self.link.as_ref().is_some_and(|l| l.caller == id) {
            self.detach_link("caller left");
        }
        if self.members.iter().all(|m| m.outbox.is_none()) {
            self.empty_since = Some(Instant::now());
            if self.link.as_ref().is_some_and(|l| l.ends_when_empty) {
                self.detach_link("room empty");
            }
        }
    }

    /// Only the room's compere (its creator until `setCompere` hands the role on) or an
    /// operator may end the room or moderate others.
    fn moderator_only(&self, from: Id, operator: bool, what: &str) -> Result<(), Refusal> {
        if from == self.compere || operator {
            Ok(())
        } else {
            Err(Refusal::new(
                code::FORBIDDEN,
                format!(
                    "only the room's compere (superModeId {}) may {what}",
                    self.compere
                ),
            ))
        }
    }

    /// A moderation request names the room it is meant for: it must be this one.
    fn this_room(&self, room: Id) -> Result<(), Refusal> {
        if room == self.id {
            Ok(())
        } else {
            Err(Refusal::new(
                code::CONFLICT,
                format!("you are in room {}, not {room}", self.id),
            ))
        }
    }

    /// Mutes (or unmutes) the PTT channel: its audio stops reaching the room (players get
    /// nothing, not even comfort noise) and its talkers are no longer named; everyone is told
    /// with `onMute` for the channel's client. Talkers mid-burst are said to stop (mute) or
    /// start again (unmute). False when no channel is linked.
    fn mute_link(&mut self, muted: bool, from_super: Option<String>) -> bool {
        let Some(l) = self.link.as_mut() else {
            return false;
        };
        let changed = l.core.ptt_muted() != muted;
        l.core.set_ptt_muted(muted);
        l.client.is_muted = Some(muted);
        let (dial, client, talkers) = (l.dial, l.client.clone(), l.core.ptt_talkers());
        self.push_all(
            &Push::Mute(push::Muted {
                user_id: dial,
                room_id: self.id,
                is_mute: muted,
                from_super,
            }),
            None,
        );
        if changed {
            info!(dial, muted, "PTT channel muted in the room");
            for p in &talkers {
                self.push_talking(talker_client(&client, p), !muted);
            }
        }
        true
    }

    fn linked(&self, id: Id) -> bool {
        self.link.as_ref().is_some_and(|l| l.dial == id)
    }

    // ---- server recording ----------------------------------------------------------------

    /// `meeting.startRecord`: the compere (or an operator) starts recording what the room's
    /// members hear. The recorder thread answers with the recording's id; the reply waits for
    /// it, while the room's audio already flows into the recording.
    fn start_recording(
        &mut self,
        from: Id,
        operator: bool,
        start: rtcpeer::request::StartRecord,
        reply: oneshot::Sender<Result<Value, Refusal>>,
    ) {
        let (recorder, app, by, name) = match self.recording_plan(from, operator, &start) {
            Ok(plan) => plan,
            Err(r) => {
                let _ = reply.send(Err(r));
                return;
            }
        };
        let (tx, rx) = oneshot::channel();
        self.recording = Some(Recording {
            id: None,
            to: recorder.clone(),
        });
        recorder.start_mix(MixStart {
            key: self.id,
            app_id: app,
            group_id: super::events::group_id(self.id),
            room_name: self
                .info
                .appointment_name
                .clone()
                .or_else(|| self.info.name.clone())
                .unwrap_or_else(|| format!("room {}", self.id)),
            name,
            by,
            epoch: self.epoch,
            reply: tx,
        });
        let me = self.me.clone();
        tokio::spawn(async move {
            let result = rx.await.unwrap_or(Err(MixError::Busy));
            if let Some(room) = me.upgrade() {
                let _ = room
                    .send(RoomCmd::RecordStarted {
                        result,
                        by: from,
                        reply,
                    })
                    .await;
            }
        });
    }

    /// Whether `from` may start a recording now, and with what: the recorder, the tenant,
    /// who starts it and the recording's name.
    fn recording_plan(
        &self,
        from: Id,
        operator: bool,
        start: &rtcpeer::request::StartRecord,
    ) -> Result<(Recorder, String, Party, String), Refusal> {
        let member = self
            .member(from)
            .ok_or_else(|| Refusal::new(code::CONFLICT, "not in this room"))?;
        let by = Party {
            side: crate::hub::Side::Meeting,
            id: from.to_string(),
            name: member
                .client
                .name
                .clone()
                .unwrap_or_else(|| from.to_string()),
        };
        self.moderator_only(from, operator, "record the room")?;
        let name = match &start.file_name {
            Some(n) => valid_name(n, "fileName")?,
            // The spec's default: the recording is named by its start time.
            None => crate::events::rfc3339::format_ms(crate::recording::now_ms() as i64),
        };
        let (recorder, app) = self.recorder.clone().ok_or_else(|| {
            Refusal::new(
                code::FAILED,
                "server recording is off on this bridge ([recording] dir is not set)",
            )
        })?;
        if let Some(r) = &self.recording {
            let id =
                r.id.map_or_else(|| "starting".to_owned(), |id| id.to_string());
            return Err(Refusal::new(
                code::CONFLICT,
                format!("the room is already being recorded (recordId {id})"),
            ));
        }
        Ok((recorder, app, by, name))
    }

    /// The recorder's answer to a start: the requester gets the id, everyone `onRecord`.
    fn recording_started(
        &mut self,
        result: Result<Id, MixError>,
        by: Id,
        reply: oneshot::Sender<Result<Value, Refusal>>,
    ) {
        match result {
            Ok(id) => {
                match &mut self.recording {
                    Some(r) if r.id.is_none() => r.id = Some(id),
                    // Stopped meanwhile (cannot happen without the id, but never leave a
                    // recording running that the room no longer knows of).
                    _ => {
                        if let Some((r, _)) = &self.recorder {
                            r.stop_mix(self.id);
                        }
                    }
                }
                info!(record = id, by, "room recording started");
                let _ = reply.send(Ok(reply::ok_with(
                    "meeting",
                    "startRecord",
                    &reply::RecordStarted { record_id: id },
                )));
                self.push_recorded(id, "startRecord", by);
            }
            Err(e) => {
                self.recording = None;
                warn!(by, "room recording did not start: {e}");
                let _ = reply.send(Err(Refusal::new(code::FAILED, e.to_string())));
            }
        }
    }

    /// Ends the recording in progress, if any; members are told when `by` stopped it.
    fn stop_recording(&mut self, by: Option<Id>) {
        let Some(rec) = self.recording.take() else {
            return;
        };
        rec.to.stop_mix(self.id);
        if let (Some(id), Some(by)) = (rec.id, by) {
            info!(record = id, by, "room recording stopped");
            self.push_recorded(id, "stopRecord", by);
        }
    }

    fn push_recorded(&self, record_id: Id, kind: &str, by: Id) {
        self.push_all(
            &Push::Record(push::Recorded {
                room_id: self.id,
                record_id,
                kind: kind.into(),
                user_id: by,
            }),
            None,
        );
    }

    fn request(&mut self, from: Id, operator: bool, req: Request) -> Result<Value, Refusal> {
        let (module, method) = req.envelope();
        if self.member(from).is_none() {
            return Err(Refusal::new(code::CONFLICT, "not in this room"));
        }
        match req {
            Request::Exit => {
                self.leave(from, "exit");
                Ok(reply::ok(module, method))
            }
            Request::Finish => {
                self.moderator_only(from, operator, "finish the room")?;
                self.push_all(
                    &Push::Finish(push::Finished {
                        room_id: Some(self.id),
                        user_id: from,
                    }),
                    None,
                );
                self.detach_link("room finished");
                let ids: Vec<Id> = self.members.iter().filter_map(|m| m.client.id).collect();
                for id in ids {
                    if id != from {
                        self.leave(id, "finished");
                    }
                }
                self.leave(from, "finished");
                self.finished = true;
                Ok(reply::ok(module, method))
            }
            Request::Publish(p) => {
                if !p.audio {
                    return Err(Refusal::new(
                        code::BAD_FIELDS,
                        "audio must be true: the bridge's rooms are audio only",
                    ));
                }
                let old = self.member(from).and_then(|m| m.publishing);
                let (pid, sdp) =
                    self.media
                        .new_peer(from, &p.sdp, None, &[Codec::Opus], Instant::now())?;
                if let Some(old) = old {
                    self.remove_peer(old, "re-published");
                }
                let m = self
                    .members
                    .iter_mut()
                    .find(|m| m.client.id == Some(from))
                    .expect("checked above");
                m.publishing = Some(pid);
                let client = m.client.clone();
                // A member muted before (re)publishing stays muted on the PTT channel.
                if client.is_muted == Some(true)
                    && let Some(l) = self.link.as_mut()
                {
                    l.core.set_member_muted(from, true);
                }
                Ok(reply::ok_with(module, method, &Negotiated { client, sdp }))
            }
            Request::Play(p) => {
                let Some(source) = p.client.id else {
                    return Err(Refusal::new(code::BAD_FIELDS, "client.id is required"));
                };
                let plays_link = self.linked(source);
                let client = if plays_link {
                    self.link.as_ref().map(|l| l.client.clone())
                } else {
                    self.member(source)
                        .filter(|m| m.publishing.is_some())
                        .map(|m| m.client.clone())
                };
                let Some(client) = client else {
                    return Err(Refusal::new(
                        code::NOT_FOUND,
                        format!("client {source} is not publishing in room {}", self.id),
                    ));
                };
                // Players get Opus; a player of the PTT channel may take G.711 instead
                // (transcoded). A member may play a source several times (several devices,
                // load tests); closePlay stops them all.
                let codecs: &[Codec] = if plays_link {
                    &[Codec::Opus, Codec::PCMU, Codec::PCMA]
                } else {
                    &[Codec::Opus]
                };
                let (_, sdp) =
                    self.media
                        .new_peer(from, &p.sdp, Some(source), codecs, Instant::now())?;
                Ok(reply::ok_with(module, method, &Negotiated { client, sdp }))
            }
            Request::ClosePlay(c) => {
                let source = c.client.id;
                let plays = self.media.peers_where(|t| {
                    t.owner == from
                        && matches!(t.role, Role::Play { source: s } if Some(s) == source)
                });
                if plays.is_empty() {
                    return Err(Refusal::new(code::NOT_FOUND, "not playing that client"));
                }
                for p in plays {
                    self.remove_peer(p, "closePlay");
                }
                Ok(reply::ok(module, method))
            }
            Request::UpdateMute(u) => {
                if let Some(m) = self.members.iter_mut().find(|m| m.client.id == Some(from)) {
                    m.client.is_muted = Some(u.is_mute);
                }
                if let Some(l) = self.link.as_mut() {
                    l.core.set_member_muted(from, u.is_mute);
                }
                Ok(reply::ok(module, method))
            }
            Request::MuteMsg(m) => {
                self.moderator_only(from, operator, "mute other members")?;
                self.this_room(m.room_id)?;
                if self.linked(m.user_id) {
                    // The bridge carries out the channel's mute itself.
                    self.mute_link(m.is_mute, m.from_super);
                    return Ok(reply::ok(module, method));
                }
                let Some(target) = self
                    .members
                    .iter_mut()
                    .find(|x| x.client.id == Some(m.user_id))
                else {
                    return Err(Refusal::new(
                        code::NOT_FOUND,
                        format!("client {} is not in the room", m.user_id),
                    ));
                };
                // The member mutes itself on onMute (3.9); everyone sees its new state (3.24),
                // and the PTT channel stops hearing it at once.
                target.client.is_muted = Some(m.is_mute);
                if let Some(l) = self.link.as_mut() {
                    l.core.set_member_muted(m.user_id, m.is_mute);
                }
                self.push_all(
                    &Push::Mute(push::Muted {
                        user_id: m.user_id,
                        room_id: self.id,
                        is_mute: m.is_mute,
                        from_super: m.from_super,
                    }),
                    None,
                );
                Ok(reply::ok(module, method))
            }
            Request::MuteAll(m) => {
                self.moderator_only(from, operator, "mute everyone")?;
                self.this_room(m.room_id)?;
                self.push_all(
                    &Push::MuteAll(push::Muted {
                        user_id: from,
                        room_id: self.id,
                        is_mute: m.is_mute,
                        from_super: None,
                    }),
                    Some(from),
                );
                // Members mute themselves on onMuteAll; the channel is muted here.
                self.mute_link(m.is_mute, None);
                Ok(reply::ok(module, method))
            }
            Request::SetCompere(c) => {
                self.moderator_only(from, operator, "hand the compere role on")?;
                self.this_room(c.room_id)?;
                if self.linked(c.user_id) {
                    return Err(Refusal::new(
                        code::CONFLICT,
                        format!(
                            "client {} is the PTT channel: it cannot moderate the room",
                            c.user_id
                        ),
                    ));
                }
                if self.member(c.user_id).is_none() {
                    return Err(Refusal::new(
                        code::NOT_FOUND,
                        format!("client {} is not in the room", c.user_id),
                    ));
                }
                self.compere = c.user_id;
                self.info.super_mode_id = Some(c.user_id);
                for m in &mut self.members {
                    m.client.is_super_moderator = Some(m.client.id == Some(c.user_id));
                }
                info!(compere = c.user_id, by = from, "compere handed on");
                self.push_all(
                    &Push::Compere(push::Compere {
                        user_id: c.user_id,
                        room_id: self.id,
                    }),
                    None,
                );
                Ok(reply::ok(module, method))
            }
            Request::KickOut(k) => {
                self.moderator_only(from, operator, "kick members out")?;
                self.this_room(k.room_id)?;
                let is_link = self.linked(k.user_id);
                if !is_link && self.member(k.user_id).is_none() {
                    return Err(Refusal::new(
                        code::NOT_FOUND,
                        format!("client {} is not in the room", k.user_id),
                    ));
                }
                self.push_all(
                    &Push::Kick(push::Kicked {
                        user_id: k.user_id,
                        room_id: self.id,
                    }),
                    None,
                );
                if is_link {
                    self.detach_link("kicked out");
                } else {
                    self.leave(k.user_id, "kicked out");
                }
                Ok(reply::ok(module, method))
            }
            Request::RaiseHand => {
                let client = self
                    .member(from)
                    .map(|m| m.client.clone())
                    .unwrap_or_default();
                if !self.hands.contains(&from) {
                    self.hands.push(from);
                }
                info!(member = from, "hand raised");
                // To everyone, the sender too (3.12.4 filters its own out).
                self.push_all(
                    &Push::RaiseHand(push::Hand {
                        client,
                        room_id: self.id,
                    }),
                    None,
                );
                if let Some(l) = self.link.as_mut() {
                    let now = Instant::now();
                    l.core.raise_hand(from, now);
                    self.route_link(now);
                }
                Ok(reply::ok(module, method))
            }
            Request::LowerHand => {
                if !self.hands.contains(&from) {
                    return Err(Refusal::new(code::CONFLICT, "your hand is not raised"));
                }
                self.hands.retain(|h| *h != from);
                let client = self
                    .member(from)
                    .map(|m| m.client.clone())
                    .unwrap_or_default();
                info!(member = from, "hand lowered");
                self.push_all(
                    &Push::LowerHand(push::Hand {
                        client,
                        room_id: self.id,
                    }),
                    None,
                );
                if let Some(l) = self.link.as_mut() {
                    l.core.lower_hand(from);
                    self.route_link(Instant::now());
                }
                Ok(reply::ok(module, method))
            }
            Request::UpdateClientName(u) => {
                self.this_room(u.room_id)?;
                let name = valid_name(&u.name, "name")?;
                if u.user_id != from {
                    self.moderator_only(from, operator, "rename other members")?;
                }
                if self.linked(u.user_id) {
                    return Err(Refusal::new(
                        code::CONFLICT,
                        format!(
                            "client {} is the PTT channel: it is named after its channel",
                            u.user_id
                        ),
                    ));
                }
                let Some(target) = self
                    .members
                    .iter_mut()
                    .find(|x| x.client.id == Some(u.user_id))
                else {
                    return Err(Refusal::new(
                        code::NOT_FOUND,
                        format!("client {} is not in the room", u.user_id),
                    ));
                };
                // Later pushes (memberTalking, onChat) and its chat into the PTT channel carry
                // the new name.
                target.client.name = Some(name);
                let client = target.client.clone();
                info!(member = u.user_id, by = from, "member renamed");
                self.push_all(
                    &Push::UpdateClient(push::ClientRenamed {
                        user_id: u.user_id,
                        room_id: self.id,
                        client,
                    }),
                    None,
                );
                Ok(reply::ok(module, method))
            }
            Request::UpdateMeetingName(u) => {
                self.moderator_only(from, operator, "rename the meeting")?;
                self.this_room(u.room_id)?;
                let name = valid_name(&u.appointment_name, "appointmentName")?;
                // Later members find it in their enter reply's room.
                self.info.appointment_name = Some(name.clone());
                info!(by = from, "meeting renamed");
                self.push_all(
                    &Push::UpdateMeeting(push::MeetingRenamed {
                        user_id: from,
                        room_id: self.id,
                        appointment_name: name,
                    }),
                    None,
                );
                Ok(reply::ok(module, method))
            }
            Request::StopRecord(stop) => {
                self.moderator_only(from, operator, "stop the room's recording")?;
                match self.recording.as_ref().map(|r| r.id) {
                    Some(Some(id)) if id == stop.record_id => {
                        self.stop_recording(Some(from));
                        Ok(reply::ok(module, method))
                    }
                    Some(None) => Err(Refusal::new(
                        code::CONFLICT,
                        "the recording is still starting: stop it once startRecord has answered",
                    )),
                    _ => Err(Refusal::new(
                        code::NOT_FOUND,
                        format!("no recording {} in progress in this room", stop.record_id),
                    )),
                }
            }
            Request::Chat(c) => {
                let client = self
                    .member(from)
                    .map(|m| m.client.clone())
                    .unwrap_or_default();
                let msg = Push::Chat(push::Chatted {
                    user_id: from,
                    room_id: self.id,
                    content: c.content.clone(),
                    client: client.clone(),
                });
                self.push_all(&msg, Some(from));
                let name = client.name.clone().unwrap_or_else(|| from.to_string());
                self.link_text(format!("{name}: {}", c.content));
                self.publish(
                    EventKind::MessageText,
                    Some(party(from, client.name.as_deref())),
                    json!({ "text": c.content, "private": false }),
                );
                Ok(reply::ok(module, method))
            }
            Request::PrivateChat(c) => {
                let client = self
                    .member(from)
                    .map(|m| m.client.clone())
                    .unwrap_or_default();
                if self.linked(c.other_user_id) {
                    let name = client.name.clone().unwrap_or_else(|| from.to_string());
                    self.link_text(format!("{name} (private): {}", c.content));
                    return Ok(reply::ok(module, method));
                }
                let msg = Push::PrivateChat(push::Chatted {
                    user_id: from,
                    room_id: self.id,
                    content: c.content,
                    client,
                });
                if !self.push_one(c.other_user_id, &msg) {
                    return Err(Refusal::new(
                        code::NOT_FOUND,
                        format!("client {} is not in the room", c.other_user_id),
                    ));
                }
                Ok(reply::ok(module, method))
            }
            other => Err(Refusal::new(
                code::NOT_FOUND,
                format!(
                    "{}.{} is not a room request",
                    other.envelope().0,
                    other.envelope().1
                ),
            )),
        }
    }
}

/// The party a burst of the room's members into the PTT channel is archived under: the members
/// speaking as it starts (their names joined), or the room when none is named.
fn speakers_party(members: &[Member], speakers: &[Id], room: Id) -> Party {
    let names: Vec<String> = speakers
        .iter()
        .filter_map(|id| members.iter().find(|m| m.client.id == Some(*id)))
        .map(|m| m.client.name.clone().unwrap_or_default())
        .collect();
    match speakers {
        [one] if names.len() == 1 => Party {
            side: crate::hub::Side::Meeting,
            id: one.to_string(),
            name: names[0].clone(),
        },
        _ if !names.is_empty() => Party {
            side: crate::hub::Side::Meeting,
            id: format!("room:{room}"),
            name: names.join(", "),
        },
        _ => Party {
            side: crate::hub::Side::Meeting,
            id: format!("room:{room}"),
            name: format!("meeting room {room}"),
        },
    }
}

/// Longest member or meeting name, in characters.
const MAX_NAME_CHARS: usize = 64;

/// A new name: trimmed, not empty, at most [`MAX_NAME_CHARS`], no control characters
/// (422 otherwise, naming `field`).
pub(super) fn valid_name(name: &str, field: &str) -> Result<String, Refusal> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Refusal::new(
            code::BAD_FIELDS,
            format!("{field} must be 1 to {MAX_NAME_CHARS} characters, without control characters"),
        ));
    }
    Ok(name.to_string())
}

/// The channel's client standing for PTT user `p` (in `memberTalking`): the channel's id, the
/// user's name, `pttUser` its PTT id.
fn talker_client(link: &Client, p: &Party) -> Client {
    let mut member = link.clone();
    member.name = Some(p.name.clone());
    member.extra.insert("pttUser".into(), p.id.clone().into());
    member
}
