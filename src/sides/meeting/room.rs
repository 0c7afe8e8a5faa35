//! One meeting room: an actor owning its members, their WebRTC peers and (when a PTT channel is
//! dialled in) the [`Link`]. All media of a room runs on this one task and one UDP port: incoming
//! datagrams are matched to their peer by source address (after ICE, by `Rtc::accepts` before),
//! and forwarding a packet to N listeners is N header stamps and N SRTP writes, no copies of the
//! payload and no channel hops.
//!
//! Media model (SFU): `meeting.publish` opens a peer that carries a member's audio to the room;
//! `meeting.play` opens a peer that carries one member's audio (or the PTT link's) to the player.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::g711::Law;
use media::group::OutPacket;
use media::passthrough::{OutboundClock, Source};
use rtcpeer::bean::{Client, Room};
use rtcpeer::code;
use rtcpeer::id::Id;
use rtcpeer::push::{self, Push};
use rtcpeer::reply::{self, Entered, Negotiated};
use rtcpeer::request::Request;
use serde_json::{Value, json};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use super::link::{Link, LinkInput, Notice};
use super::peer::{self, Unwrap};
use super::switchboard::{DialTarget, Outbox, Refusal, Switchboard, push_outbox};
use crate::hub::EventKind;

/// Commands a room takes.
pub enum RoomCmd {
    /// A member enters.
    Enter {
        /// Its client.
        client: Client,
        /// Where its pushes go.
        outbox: Option<Outbox>,
        /// `meeting.enter`'s reply.
        reply: oneshot::Sender<Result<Entered, Refusal>>,
    },
    /// A member leaves without a request (disconnect, entered elsewhere).
    Leave {
        /// Client id.
        client: Id,
        /// Why.
        reason: &'static str,
    },
    /// A `meeting.*` request from a member.
    Request {
        /// Client id of the sender.
        from: Id,
        /// The request.
        req: Request,
        /// Its reply.
        reply: oneshot::Sender<Result<Value, Refusal>>,
    },
    /// The caller said onConnected to a dial-in id: bring the PTT channel in.
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
}

/// What a link needs.
pub struct LinkSetup {
    /// The dialled target.
    pub target: DialTarget,
    /// Who called ([`PLATFORM`](super::switchboard::PLATFORM) for a platform's invite).
    pub caller: Id,
    /// Told whether the link came up (platform invites wait for it).
    pub ready: Option<oneshot::Sender<Result<(), String>>>,
}

/// Handle to a room actor.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    tx: mpsc::Sender<RoomCmd>,
}

impl RoomHandle {
    /// Sends a command, waiting for queue room.
    pub async fn send(&self, cmd: RoomCmd) -> Result<(), mpsc::error::SendError<RoomCmd>> {
        self.tx.send(cmd).await
    }

    /// Sends a command if the queue has room; false when it was full or the room is gone.
    pub fn try_send(&self, cmd: RoomCmd) -> bool {
        self.tx.try_send(cmd).is_ok()
    }
}

/// Commands queued per room.
const COMMANDS: usize = 256;
/// A room with nobody in it closes after this long.
const IDLE_CLOSE: Duration = Duration::from_secs(300);
/// A peer that is not connected this long after its answer is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A connected peer we have heard nothing from (no STUN answer to our once-a-second consent
/// checks, no RTP, no RTCP) for this long has lost consent (RFC 7675): it is gone. str0m alone
/// would wait ≥ 15 s, as it counts the client's own recent checks as signs of life.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(4);
/// How often connected peers are swept for lost consent.
const CONSENT_SWEEP: Duration = Duration::from_millis(500);

/// Starts a room with its own UDP port on `rtc_ip`.
pub fn spawn(sb: Arc<Switchboard>, info: Room) -> std::io::Result<RoomHandle> {
    let socket = media_socket(SocketAddr::new(sb.config.rtc_ip, 0))?;
    let local = socket.local_addr()?;
    let (tx, rx) = mpsc::channel(COMMANDS);
    let id = info.id.unwrap_or_default();
    let actor = RoomActor {
        sb,
        id,
        info,
        socket,
        local,
        members: Vec::new(),
        peers: HashMap::new(),
        by_addr: HashMap::new(),
        next_peer: 1,
        link: None,
        epoch: Instant::now(),
        pending: Vec::new(),
        out: Vec::with_capacity(4),
        out_g711: Vec::with_capacity(2),
        empty_since: Some(Instant::now()),
        finished: false,
        swept: Instant::now(),
    };
    tokio::spawn(
        actor
            .run(rx)
            .instrument(info_span!("room", room = id, port = local.port())),
    );
    Ok(RoomHandle { tx })
}

/// Kernel buffer asked for on a room's UDP socket (Linux caps it at `net.core.rmem_max` /
/// `wmem_max`). One socket carries every peer of the room: with the default ≈ 200 KB, a few
/// tens of ms in which the actor is busy forwarding to a thousand listeners overflow it, and the
/// STUN answers, RTCP and publishers' RTP it drops make peers look dead.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams taken from the socket per wake-up before the other inputs get a turn.
const RECV_BATCH: usize = 64;

/// A non-blocking UDP socket with large kernel buffers.
fn media_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol as SockProto, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    // Best effort: a smaller buffer still works, it only drops sooner under load.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

struct Member {
    client: Client,
    outbox: Option<Outbox>,
    publishing: Option<u64>,
}

enum Kind {
    Publish,
    Play {
        source: Id,
        clock: OutboundClock,
        ext: Unwrap,
    },
}

struct Peer {
    owner: Id,
    kind: Kind,
    rtc: Rtc,
    mid: Mid,
    /// What a play peer is sent (and its payload type): Opus, or G.711 for the PTT link.
    pt: Option<Pt>,
    codec: Codec,
    timeout: Instant,
    connected: bool,
    created: Instant,
    /// Last datagram from the client.
    heard: Instant,
    dead: bool,
}

struct RoomActor {
    sb: Arc<Switchboard>,
    id: Id,
    info: Room,
    socket: UdpSocket,
    local: SocketAddr,
    members: Vec<Member>,
    peers: HashMap<u64, Peer>,
    by_addr: HashMap<SocketAddr, u64>,
    next_peer: u64,
    link: Option<Link>,
    epoch: Instant,
    /// Events drained from peers, handled after the current input.
    pending: Vec<(u64, Event)>,
    out: Vec<OutPacket>,
    out_g711: Vec<(Law, OutPacket)>,
    empty_since: Option<Instant>,
    finished: bool,
    swept: Instant,
}

async fn link_next(link: &mut Option<Link>) -> LinkInput {
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
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        self.on_datagram(&buf[..n], from);
                        // Whatever else is queued, without another trip through select.
                        for _ in 1..RECV_BATCH {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, from)) => self.on_datagram(&buf[..n], from),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => debug!(error = %e, "UDP receive error"),
                },
                cmd = rx.recv() => match cmd {
                    Some(c) => self.on_cmd(c),
                    None => break,
                },
                input = link_next(&mut self.link) => match input {
                    LinkInput::Audio(a) => {
                        let now = Instant::now();
                        let us = self.us(now);
                        if let Some(l) = self.link.as_mut() {
                            let mut direct = std::mem::take(&mut self.out);
                            direct.clear();
                            let notices = l.on_audio(a, now, us, &mut direct);
                            let dial = l.dial;
                            for pkt in &direct {
                                self.forward(dial, Codec::Opus, pkt, now, us);
                            }
                            if !direct.is_empty() {
                                metrics::histogram!("pttbridge_meeting_bridge_latency_seconds", "route" => "direct")
                                    .record(now.elapsed().as_secs_f64());
                            }
                            self.out = direct;
                            self.notices(notices);
                        }
                    }
                    LinkInput::Event(e) => {
                        let now = Instant::now();
                        if let Some(n) = self.link.as_mut().map(|l| l.on_event(&e, now)) {
                            self.notices(n);
                        }
                    }
                    LinkInput::Closed => self.detach_link("PTT account stopped"),
                },
                _ = tick.tick() => self.on_tick(),
            }
            self.process_pending();
            if self.finished {
                break;
            }
            if let Some(since) = self.empty_since
                && since.elapsed() > IDLE_CLOSE
            {
                break;
            }
        }
        self.detach_link("room closed");
        self.sb.room_closed(self.id);
        info!("room closed");
    }

    fn us(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_micros() as u64
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

    // ---- datagrams and peers -------------------------------------------------------------

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let now = Instant::now();
        let Ok(contents) = data.try_into() else {
            metrics::counter!("pttbridge_meeting_errors_total", "kind" => "garbage_datagram")
                .increment(1);
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.local,
                contents,
            },
        );
        let pid = match self.by_addr.get(&from) {
            Some(p) if self.peers.contains_key(p) => Some(*p),
            // A new address can only be a peer's ICE check (STUN: first byte 0..=3, RFC 7983);
            // anything else from an unknown address (e.g. a peer we dropped) is not worth a
            // scan of every peer.
            _ if data.first().is_some_and(|b| *b <= 3) => self
                .peers
                .iter()
                .find(|(_, p)| !p.dead && p.rtc.accepts(&input))
                .map(|(id, _)| *id),
            _ => None,
        };
        let Some(pid) = pid else {
            metrics::counter!("pttbridge_meeting_errors_total", "kind" => "unknown_datagram")
                .increment(1);
            return;
        };
        self.by_addr.insert(from, pid);
        let peer = self.peers.get_mut(&pid).expect("found above");
        peer.heard = now;
        if let Err(e) = peer.rtc.handle_input(input) {
            metrics::counter!("pttbridge_meeting_errors_total", "kind" => "rtc_input").increment(1);
            debug!(peer = pid, error = %e, "peer rejected a datagram");
        }
        self.drain(pid);
    }

    /// Sends what a peer wants sent and queues its events.
    fn drain(&mut self, pid: u64) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        loop {
            match peer.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "udp_send").increment(1);
                    }
                }
                Ok(Output::Timeout(t)) => {
                    peer.timeout = t;
                    break;
                }
                Ok(Output::Event(e)) => self.pending.push((pid, e)),
                Err(e) => {
                    debug!(peer = pid, error = %e, "peer failed");
                    peer.dead = true;
                    break;
                }
            }
        }
    }

    fn process_pending(&mut self) {
        while !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            for (pid, ev) in batch {
                self.on_peer_event(pid, ev);
            }
        }
        let dead: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.dead || !p.rtc.is_alive())
            .map(|(id, _)| *id)
            .collect();
        for pid in dead {
            // ICE consent or DTLS failed (or we stopped hearing it): the client vanished.
            metrics::counter!("pttbridge_meeting_peers_lost_total").increment(1);
            info!(peer = pid, "WebRTC peer lost (ICE/DTLS timeout)");
            self.remove_peer(pid, "connection lost");
        }
    }

    fn on_peer_event(&mut self, pid: u64, ev: Event) {
        match ev {
            Event::Connected => {
                let Some(p) = self.peers.get_mut(&pid) else {
                    return;
                };
                p.connected = true;
                let owner = p.owner;
                let publish = matches!(p.kind, Kind::Publish);
                metrics::gauge!("pttbridge_meeting_peers_connected").increment(1.0);
                debug!(peer = pid, owner, publish, "peer connected");
                if publish && let Some(m) = self.member(owner) {
                    let msg = Push::Published(push::Published {
                        room_id: self.id,
                        client: m.client.clone(),
                        published: true,
                        v_code: None,
                    });
                    self.push_all(&msg, Some(owner));
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if let Some(p) = self.peers.get_mut(&pid) {
                    p.dead = true;
                }
            }
            Event::MediaData(d) => {
                let Some(p) = self.peers.get(&pid) else {
                    return;
                };
                if !matches!(p.kind, Kind::Publish) {
                    return;
                }
                let owner = p.owner;
                metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "in").increment(1);
                let ts = d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer() as u32;
                let payload = Bytes::copy_from_slice(&d.data);
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
                if let Some(law) = law {
                    // G.711 goes to the PTT channel (transcoded); members only play Opus.
                    let now_us = self.us(Instant::now());
                    if let Some(l) = self.link.as_mut() {
                        l.meeting_packet(
                            owner,
                            Some(law),
                            ts,
                            payload,
                            d.ext_vals.audio_level,
                            now_us,
                        );
                    }
                    return;
                }
                let samples =
                    media::opus_toc::parse(&payload).map_or(960, |i| i.samples_at(48_000));
                let now = Instant::now();
                let now_us = self.us(now);
                if let Some(l) = self.link.as_mut() {
                    l.meeting_packet(
                        owner,
                        None,
                        ts,
                        payload.clone(),
                        d.ext_vals.audio_level,
                        now_us,
                    );
                }
                let pkt = OutPacket {
                    source: Source::Talker(owner as u32),
                    src_ts: ts,
                    samples,
                    payload,
                };
                self.forward(owner, Codec::Opus, &pkt, now, now_us);
            }
            _ => {}
        }
    }

    /// Sends one packet to every player of `source` that is sent `codec`.
    fn forward(&mut self, source: Id, codec: Codec, pkt: &OutPacket, now: Instant, now_us: u64) {
        let targets: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.connected
                    && !p.dead
                    && p.codec == codec
                    && matches!(p.kind, Kind::Play { source: s, .. } if s == source)
            })
            .map(|(id, _)| *id)
            .collect();
        for pid in targets {
            let Some(p) = self.peers.get_mut(&pid) else {
                continue;
            };
            let Kind::Play { clock, ext, .. } = &mut p.kind else {
                continue;
            };
            let Some(pt) = p.pt else { continue };
            let h = clock.stamp(pkt.source, pkt.src_ts, pkt.samples, now_us);
            let t = ext.extend(h.timestamp);
            let Some(w) = p.rtc.writer(p.mid) else {
                continue;
            };
            let res = w.start_of_talkspurt(h.marker).write(
                pt,
                now,
                MediaTime::new(t, Frequency::FORTY_EIGHT_KHZ),
                &pkt.payload[..],
            );
            match res {
                Ok(()) => metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "out")
                    .increment(1),
                Err(e) => {
                    metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "write")
                        .increment(1);
                    debug!(peer = pid, error = %e, "write failed");
                }
            }
            self.drain(pid);
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.swept) >= CONSENT_SWEEP {
            self.swept = now;
            for (pid, p) in &mut self.peers {
                if p.connected && !p.dead && now.duration_since(p.heard) > CONSENT_TIMEOUT {
                    debug!(
                        peer = pid,
                        "no STUN answer, RTP or RTCP for {CONSENT_TIMEOUT:?}"
                    );
                    p.dead = true;
                }
            }
        }
        let due: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for pid in due {
            if let Some(p) = self.peers.get_mut(&pid) {
                if !p.connected && now.duration_since(p.created) > CONNECT_TIMEOUT {
                    p.dead = true;
                    continue;
                }
                if p.rtc.handle_input(Input::Timeout(now)).is_err() {
                    p.dead = true;
                }
            }
            self.drain(pid);
        }
        if let Some(dial) = self.link.as_ref().map(|l| l.dial) {
            let us = self.us(now);
            let mut out = std::mem::take(&mut self.out);
            let mut out_g711 = std::mem::take(&mut self.out_g711);
            out.clear();
            out_g711.clear();
            let plays = |codec| {
                self.peers.values().any(|p| {
                    p.codec == codec
                        && p.connected
                        && matches!(p.kind, Kind::Play { source, .. } if source == dial)
                })
            };
            let laws = (plays(Codec::PCMU), plays(Codec::PCMA));
            let notices = self
                .link
                .as_mut()
                .map(|l| l.tick(now, us, &mut out, laws, &mut out_g711))
                .unwrap_or_default();
            for pkt in &out {
                self.forward(dial, Codec::Opus, pkt, now, us);
            }
            for (law, pkt) in &out_g711 {
                let codec = match law {
                    Law::Mu => Codec::PCMU,
                    Law::A => Codec::PCMA,
                };
                self.forward(dial, codec, pkt, now, us);
            }
            self.out = out;
            self.out_g711 = out_g711;
            self.notices(notices);
        }
    }

    fn new_peer(
        &mut self,
        owner: Id,
        offer: &str,
        play_source: Option<Id>,
    ) -> Result<(u64, String), Refusal> {
        let now = Instant::now();
        let a = peer::answer(offer, self.local, now).map_err(|e| {
            metrics::counter!("pttbridge_meeting_errors_total", "kind" => "bad_sdp").increment(1);
            Refusal(code::BAD_SDP, e.to_string())
        })?;
        if play_source.is_some() && !a.client_receives {
            return Err(Refusal(
                code::BAD_SDP,
                "play needs an audio m-line the client receives (recvonly or sendrecv)".into(),
            ));
        }
        if play_source.is_none() && !a.client_sends {
            return Err(Refusal(
                code::BAD_SDP,
                "publish needs an audio m-line the client sends (sendonly or sendrecv)".into(),
            ));
        }
        let mut rtc = a.rtc;
        // Players get Opus; a player of the PTT channel may take G.711 instead (transcoded).
        let plays_link =
            play_source.is_some_and(|s| self.link.as_ref().is_some_and(|l| l.dial == s));
        let choices: &[Codec] = if plays_link {
            &[Codec::Opus, Codec::PCMU, Codec::PCMA]
        } else {
            &[Codec::Opus]
        };
        let chosen = choices
            .iter()
            .find_map(|c| peer::pt_for(&mut rtc, a.mid, *c).map(|pt| (pt, *c)));
        if play_source.is_some() && chosen.is_none() {
            return Err(Refusal(
                code::BAD_SDP,
                if plays_link {
                    "play needs Opus, PCMU or PCMA in the offer"
                } else {
                    "playing a member needs Opus in the offer (G.711 is for the PTT channel)"
                }
                .into(),
            ));
        }
        let (pt, codec) = match chosen {
            Some((pt, c)) => (Some(pt), c),
            None => (None, Codec::Opus),
        };
        let pid = self.next_peer;
        self.next_peer += 1;
        let kind = match play_source {
            None => Kind::Publish,
            Some(source) => {
                use rand::Rng;
                let mut rng = rand::rng();
                Kind::Play {
                    source,
                    clock: OutboundClock::new(rng.random(), rng.random(), rng.random::<u32>() >> 2),
                    ext: Unwrap::default(),
                }
            }
        };
        self.peers.insert(
            pid,
            Peer {
                owner,
                kind,
                rtc,
                mid: a.mid,
                pt,
                codec,
                timeout: now,
                connected: false,
                created: now,
                heard: now,
                dead: false,
            },
        );
        metrics::gauge!("pttbridge_meeting_peers").increment(1.0);
        self.drain(pid);
        Ok((pid, a.answer))
    }

    fn remove_peer(&mut self, pid: u64, why: &str) {
        let Some(mut p) = self.peers.remove(&pid) else {
            return;
        };
        metrics::gauge!("pttbridge_meeting_peers").decrement(1.0);
        if p.connected {
            metrics::gauge!("pttbridge_meeting_peers_connected").decrement(1.0);
        }
        p.rtc.disconnect();
        self.drain_dropped(&mut p);
        self.by_addr.retain(|_, v| *v != pid);
        debug!(peer = pid, owner = p.owner, why, "peer removed");
        if matches!(p.kind, Kind::Publish) {
            let owner = p.owner;
            let mut client = None;
            if let Some(m) = self.members.iter_mut().find(|m| m.client.id == Some(owner))
                && m.publishing == Some(pid)
            {
                m.publishing = None;
                client = Some(m.client.clone());
            }
            if let Some(l) = self.link.as_mut() {
                let n = l.remove_speaker(owner);
                self.notices(n);
            }
            if let Some(client) = client {
                self.push_all(
                    &Push::Published(push::Published {
                        room_id: self.id,
                        client,
                        published: false,
                        v_code: None,
                    }),
                    Some(owner),
                );
            }
        }
    }

    fn drain_dropped(&self, p: &mut Peer) {
        while let Ok(out) = p.rtc.poll_output() {
            match out {
                Output::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
    }

    // ---- commands ------------------------------------------------------------------------

    fn on_cmd(&mut self, cmd: RoomCmd) {
        match cmd {
            RoomCmd::Enter {
                client,
                outbox,
                reply,
            } => {
                let _ = reply.send(self.enter(client, outbox));
            }
            RoomCmd::Leave { client, reason } => self.leave(client, reason),
            RoomCmd::Request { from, req, reply } => {
                let r = self.request(from, req);
                let _ = reply.send(r);
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
        }
    }

    fn enter(&mut self, client: Client, outbox: Option<Outbox>) -> Result<Entered, Refusal> {
        let id = client.id.unwrap_or_default();
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
            return Err(Refusal(
                code::CONFLICT,
                format!("room {} is full ({limit})", self.id),
            ));
        }
        let members: Vec<Client> = self.members.iter().map(|m| m.client.clone()).collect();
        self.push_all(&Push::EnterRoom(self.presence(client.clone(), None)), None);
        self.members.push(Member {
            client: client.clone(),
            outbox,
            publishing: None,
        });
        self.empty_since = None;
        metrics::gauge!("pttbridge_meeting_members").increment(1.0);
        Ok(Entered {
            client,
            members,
            room: self.info.clone(),
        })
    }

    fn leave(&mut self, id: Id, reason: &'static str) {
        let Some(pos) = self.members.iter().position(|m| m.client.id == Some(id)) else {
            return;
        };
        let m = self.members.remove(pos);
        metrics::gauge!("pttbridge_meeting_members").decrement(1.0);
        let owned: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.owner == id || matches!(p.kind, Kind::Play { source, .. } if source == id)
            })
            .map(|(pid, _)| *pid)
            .collect();
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
        }
    }

    fn request(&mut self, from: Id, req: Request) -> Result<Value, Refusal> {
        let (module, method) = req.envelope();
        if self.member(from).is_none() {
            return Err(Refusal(code::CONFLICT, "not in this room".into()));
        }
        match req {
            Request::Exit => {
                self.leave(from, "exit");
                Ok(reply::ok(module, method))
            }
            Request::Finish => {
                self.push_all(
                    &Push::Finish(push::Finished {
                        room_id: self.id,
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
                    return Err(Refusal(
                        code::BAD_FIELDS,
                        "audio must be true: the bridge's rooms are audio only".into(),
                    ));
                }
                let old = self.member(from).and_then(|m| m.publishing);
                let (pid, sdp) = self.new_peer(from, &p.sdp, None)?;
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
                Ok(reply::ok_with(module, method, &Negotiated { client, sdp }))
            }
            Request::Play(p) => {
                let Some(source) = p.client.id else {
                    return Err(Refusal(code::BAD_FIELDS, "client.id is required".into()));
                };
                let client = if self.link.as_ref().is_some_and(|l| l.dial == source) {
                    self.link.as_ref().map(|l| l.client.clone())
                } else {
                    self.member(source)
                        .filter(|m| m.publishing.is_some())
                        .map(|m| m.client.clone())
                };
                let Some(client) = client else {
                    return Err(Refusal(
                        code::NOT_FOUND,
                        format!("client {source} is not publishing in room {}", self.id),
                    ));
                };
                // A member may play a source several times (several devices, load tests);
                // closePlay stops them all.
                let (_, sdp) = self.new_peer(from, &p.sdp, Some(source))?;
                Ok(reply::ok_with(module, method, &Negotiated { client, sdp }))
            }
            Request::ClosePlay(c) => {
                let source = c.client.id;
                let plays: Vec<u64> = self
                    .peers
                    .iter()
                    .filter(|(_, pp)| {
                        pp.owner == from
                            && matches!(pp.kind, Kind::Play { source: s, .. } if Some(s) == source)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                if plays.is_empty() {
                    return Err(Refusal(code::NOT_FOUND, "not playing that client".into()));
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
                    l.set_muted(from, u.is_mute);
                }
                Ok(reply::ok(module, method))
            }
            Request::MuteMsg(m) => {
                if m.room_id != self.id {
                    return Err(Refusal(
                        code::CONFLICT,
                        format!("you are in room {}, not {}", self.id, m.room_id),
                    ));
                }
                let msg = Push::Mute(push::Muted {
                    user_id: m.user_id,
                    room_id: self.id,
                    is_mute: m.is_mute,
                    from_super: m.from_super,
                });
                if self.link.as_ref().is_some_and(|l| l.dial == m.user_id) {
                    return Ok(reply::ok(module, method));
                }
                if !self.push_one(m.user_id, &msg) {
                    return Err(Refusal(
                        code::NOT_FOUND,
                        format!("client {} is not in the room", m.user_id),
                    ));
                }
                Ok(reply::ok(module, method))
            }
            Request::MuteAll(m) => {
                self.push_all(
                    &Push::MuteAll(push::Muted {
                        user_id: from,
                        room_id: self.id,
                        is_mute: m.is_mute,
                        from_super: None,
                    }),
                    Some(from),
                );
                Ok(reply::ok(module, method))
            }
            Request::KickOut(k) => {
                let is_link = self.link.as_ref().is_some_and(|l| l.dial == k.user_id);
                if !is_link && self.member(k.user_id).is_none() {
                    return Err(Refusal(
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
                if let Some(l) = &self.link {
                    let name = client.name.clone().unwrap_or_else(|| from.to_string());
                    l.send_text(format!("{name}: {}", c.content));
                }
                self.sb.room_event(
                    EventKind::MessageText,
                    self.id,
                    Some(super::switchboard::party(from, client.name.as_deref())),
                    json!({ "text": c.content, "private": false }),
                );
                Ok(reply::ok(module, method))
            }
            Request::PrivateChat(c) => {
                let client = self
                    .member(from)
                    .map(|m| m.client.clone())
                    .unwrap_or_default();
                if self
                    .link
                    .as_ref()
                    .is_some_and(|l| l.dial == c.other_user_id)
                {
                    if let Some(l) = &self.link {
                        let name = client.name.clone().unwrap_or_else(|| from.to_string());
                        l.send_text(format!("{name} (private): {}", c.content));
                    }
                    return Ok(reply::ok(module, method));
                }
                let msg = Push::PrivateChat(push::Chatted {
                    user_id: from,
                    room_id: self.id,
                    content: c.content,
                    client,
                });
                if !self.push_one(c.other_user_id, &msg) {
                    return Err(Refusal(
                        code::NOT_FOUND,
                        format!("client {} is not in the room", c.other_user_id),
                    ));
                }
                Ok(reply::ok(module, method))
            }
            other => Err(Refusal(
                code::NOT_FOUND,
                format!(
                    "{}.{} is not a room request",
                    other.envelope().0,
                    other.envelope().1
                ),
            )),
        }
    }

    // ---- the PTT link --------------------------------------------------------------------

    fn attach_link(&mut self, mut setup: LinkSetup) {
        let ready = setup.ready.take();
        let tell = |r: Result<(), String>| {
            if let Some(tx) = ready {
                let _ = tx.send(r);
            }
        };
        if self.link.is_some() {
            warn!("a PTT channel is already linked into this room");
            self.sb
                .link_down(self.id, setup.target.user_id, "room already linked");
            return tell(Err("a PTT channel is already linked into this room".into()));
        }
        let link = match Link::new(
            &setup.target,
            setup.caller,
            self.id,
            &self.sb.bus,
            self.sb.config.passthrough,
        ) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot start the link");
                self.sb
                    .link_down(self.id, setup.target.user_id, "link failed");
                return tell(Err(format!("cannot start the link: {e}")));
            }
        };
        let mut link = link;
        link.counters = self.sb.link_up(self.id, setup.target.user_id, setup.caller);
        let client = link.client.clone();
        let ptt_group = link.ptt_group.clone();
        self.link = Some(link);
        self.push_all(&Push::EnterRoom(self.presence(client.clone(), None)), None);
        self.push_all(
            &Push::Published(push::Published {
                room_id: self.id,
                client: client.clone(),
                published: true,
                v_code: None,
            }),
            None,
        );
        metrics::gauge!("pttbridge_meeting_links").increment(1.0);
        metrics::counter!("pttbridge_meeting_links_total").increment(1);
        info!(dial = setup.target.user_id, ptt = %ptt_group, "PTT channel linked");
        self.sb.room_event(
            EventKind::LinkUp,
            self.id,
            Some(super::switchboard::party(setup.target.user_id, client.name.as_deref())),
            json!({ "ptt_group": ptt_group, "caller": setup.caller, "dial_in": setup.target.user_id }),
        );
        tell(Ok(()));
    }

    fn detach_link(&mut self, reason: &str) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        link.close(Instant::now());
        let dial = link.dial;
        let plays: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.kind, Kind::Play { source, .. } if source == dial))
            .map(|(id, _)| *id)
            .collect();
        for p in plays {
            self.remove_peer(p, "link down");
        }
        // The call ends first (the caller's `cancel` carries the reason), then its media and
        // presence go: a client that reads them in order shows why, not just "link down".
        self.sb.link_down(self.id, dial, reason);
        self.push_all(
            &Push::Published(push::Published {
                room_id: self.id,
                client: link.client.clone(),
                published: false,
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
        self.sb.room_event(
            EventKind::LinkDown,
            self.id,
            Some(super::switchboard::party(dial, link.client.name.as_deref())),
            json!({ "ptt_group": link.ptt_group, "reason": reason, "voice_out": link.voice_out }),
        );
    }

    fn notices(&mut self, notices: Vec<Notice>) {
        let Some(link) = &self.link else { return };
        let dial = link.dial;
        let link_client = link.client.clone();
        let ptt_group = link.ptt_group.clone();
        let mut hang_up = None;
        for n in notices {
            match n {
                Notice::HangUp { by } => hang_up = Some(by),
                Notice::PttTalking { party, talking } => {
                    let mut member = link_client.clone();
                    member.name = Some(party.name.clone());
                    member
                        .extra
                        .insert("pttUser".into(), party.id.clone().into());
                    self.push_all(
                        &Push::MemberTalking(push::Talking {
                            room_id: self.id,
                            member,
                            talking,
                        }),
                        None,
                    );
                }
                Notice::MeetingTalking { client, talking } => {
                    let member = self
                        .member(client)
                        .map(|m| m.client.clone())
                        .unwrap_or_else(|| Client {
                            id: Some(client),
                            ..Client::default()
                        });
                    let party = super::switchboard::party(client, member.name.as_deref());
                    self.push_all(
                        &Push::MemberTalking(push::Talking {
                            room_id: self.id,
                            member,
                            talking,
                        }),
                        None,
                    );
                    let kind = if talking {
                        EventKind::TalkStarted
                    } else {
                        EventKind::TalkStopped
                    };
                    self.sb.room_event(
                        kind,
                        self.id,
                        Some(party),
                        json!({ "media_type": 2, "linked_to": ptt_group }),
                    );
                }
                Notice::FloorDenied { holder } => {
                    metrics::counter!("pttbridge_meeting_floor_denied_total").increment(1);
                    self.sb.room_event(
                        EventKind::FloorDenied,
                        self.id,
                        Some(super::switchboard::party(dial, link_client.name.as_deref())),
                        json!({ "holder": holder, "ptt_group": ptt_group, "queued": true }),
                    );
                }
                Notice::FloorGranted => debug!("meeting has the PTT floor"),
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
            info!(by = ?by.as_ref().map(|p| &p.name), "hang-up from the PTT channel");
            self.detach_link("hangup");
        }
    }
}
