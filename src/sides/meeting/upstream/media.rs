//! Client mode's media: the PTT [`Link`] of a call answered on an external RTCPeer server, with
//! the bridge as a WebRTC *client* of that server's room. One actor per call owns the link and
//! its peers (the same [`PeerSet`] rooms use): a `publish` peer that sends the channel's audio
//! (pass-through Opus, mixed when several talk), and one `play` peer per member that publishes
//! (their audio is the group side of the link: VAD, floor, mix into the channel).
//!
//! Each peer has its own UDP socket: the server tells a room's peers apart by their source
//! address (one port per room on its side), so ours must differ.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use logsafe::{RateLimit, esc};
use media::arena::PacketArena;
use media::g711::Law;
use rtcpeer::id::Id;
use serde_json::json;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind};
use str0m::net::Transmit;
use str0m::{Candidate, Event};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::bridge::{Link, LinkConfig, Notice, Output, PassThrough, PttPort};
use crate::hub::calls::CallCounters;
use crate::hub::{EventKind, Party, Side};
use crate::recording::transmission::Transmission;
use crate::sides::meeting::dial::DialTarget;
use crate::sides::meeting::events::{Publisher, link_event, party};
use crate::sides::meeting::rtc::{Peer, PeerSet, sdp};
use crate::sides::ptt::ChannelEvent;

/// Which of our peers: the publish peer, or the play peer of a member.
pub type PeerKey = Option<Id>;

/// What the signalling session asks of the media actor.
pub enum MediaCmd {
    /// Make an offer: `None` to publish the channel, `Some(member)` to play a member.
    Offer {
        /// Which peer.
        key: PeerKey,
        /// The SDP offer.
        reply: oneshot::Sender<anyhow::Result<String>>,
    },
    /// The server's answer to that offer.
    Answer {
        /// Which peer.
        key: PeerKey,
        /// SDP answer text.
        sdp: String,
    },
    /// Stop playing a member (it stopped publishing or left).
    Drop {
        /// The member.
        member: Id,
    },
    /// The room muted (true) or unmuted the channel (`onMute`/`onMuteAll`): while muted, the
    /// channel's audio is not sent into the room.
    Mute {
        /// Muted.
        muted: bool,
    },
    /// Meeting chat for the PTT channel.
    Chat {
        /// `name: text`.
        text: String,
    },
    /// The call is over.
    Stop {
        /// Why (hub `link.down` reason).
        reason: &'static str,
    },
}

/// What the media actor tells the session.
#[derive(Debug)]
pub enum MediaNotice {
    /// Text from the PTT channel: send it as `meeting.chat`.
    Chat(String),
    /// End the call (PTT `/hangup`, the PTT account stopped, our media died).
    HangUp(&'static str),
}

/// Handle to a call's media actor; dropping it ends the actor (and closes the link).
pub struct MediaHandle {
    tx: mpsc::Sender<MediaCmd>,
}

impl MediaHandle {
    /// Sends a command (false when the actor is gone).
    pub async fn send(&self, cmd: MediaCmd) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Asks for an offer.
    pub async fn offer(&self, key: PeerKey) -> anyhow::Result<String> {
        let (reply, rx) = oneshot::channel();
        if !self.send(MediaCmd::Offer { key, reply }).await {
            return Err(anyhow!("media stopped"));
        }
        rx.await.context("media stopped")?
    }
}

/// A call's media: where it is and who called.
pub struct CallMedia {
    /// Hub events.
    pub events: Publisher,
    /// How a lone PTT talker reaches the room.
    pub passthrough: PassThrough,
    /// The channel.
    pub target: DialTarget,
    /// The caller (its leaving ends the call).
    pub caller: Id,
    /// The room on the server.
    pub room: Id,
    /// Hub group id of that room.
    pub group: String,
    /// Address for our peers' sockets.
    pub local_ip: IpAddr,
    /// The call record's counters (audio both ways), when records are kept.
    pub counters: Option<Arc<CallCounters>>,
    /// Where what the room says into the channel is archived (`[recording] dir`).
    pub recorder: Option<crate::recording::Recorder>,
}

/// Starts the actor for a connected call; notices come back on the returned receiver.
pub fn spawn(c: CallMedia) -> anyhow::Result<(MediaHandle, mpsc::Receiver<MediaNotice>)> {
    let now = Instant::now();
    let mut link = Link::new(
        LinkConfig {
            passthrough: c.passthrough,
            group_party: Party {
                side: Side::Meeting,
                id: format!("room:{}", c.room),
                name: format!("meeting room {}", c.room),
            },
            group_level: c.target.meeting_level,
            ptt_level: c.target.ptt_level,
            // Another server's room: its own rules decide who speaks; voice activity here.
            hand_only: false,
        },
        now,
    )
    .map_err(|e| anyhow!("cannot start the link: {e}"))?;
    link.counters = c.counters.clone();
    let (tx, rx) = mpsc::channel(64);
    let (notice_tx, notice_rx) = mpsc::channel(64);
    let (dgram_tx, dgram_rx) = mpsc::channel(1024);
    let span = info_span!("upstream_call", room = c.room, dial = c.target.user_id);
    let actor = Actor {
        name: c.target.display_name(),
        ptt_group: crate::sides::ptt::group_id(
            &c.target.account.server,
            &c.target.account.channel_path().unwrap_or_default(),
        ),
        feed: c.target.account.channel(),
        port: PttPort::new(c.target.account.clone()),
        transmission: c
            .recorder
            .clone()
            .map(|r| Transmission::new(r, format!("upstream:{}:{}", c.room, c.target.user_id))),
        c,
        link,
        peers: PeerSet::new(now),
        dgram_tx,
        notices: notice_tx,
        epoch: now,
        arena: PacketArena::default(),
        rtp_in: metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "in"),
        muted: false,
    };
    tokio::spawn(actor.run(rx, dgram_rx).instrument(span));
    Ok((MediaHandle { tx }, notice_rx))
}

/// The party a burst of the remote room into the channel is archived under: its speaking
/// members' ids on that server, in the room's name.
fn remote_speakers(speakers: &[Id], room: Id) -> Party {
    let ids: Vec<String> = speakers.iter().map(Id::to_string).collect();
    Party {
        side: Side::Meeting,
        id: if ids.is_empty() {
            format!("room:{room}")
        } else {
            ids.join(",")
        },
        name: format!("meeting room {room}"),
    }
}

/// What client mode keeps about each of its peers.
struct ClientTag {
    socket: Arc<UdpSocket>,
    /// Our offer, until the server answers it.
    pending: Option<SdpPendingOffer>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for ClientTag {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One transmit on the peer's own socket.
fn send(tag: &ClientTag, t: &Transmit) -> bool {
    tag.socket.try_send_to(&t.contents, t.destination).is_ok()
}

struct Actor {
    c: CallMedia,
    name: String,
    ptt_group: String,
    link: Link<Id>,
    feed: broadcast::Receiver<ChannelEvent>,
    port: PttPort,
    /// The room's bursts into the channel, archived.
    transmission: Option<Transmission>,
    peers: PeerSet<PeerKey, ClientTag>,
    dgram_tx: mpsc::Sender<(PeerKey, Vec<u8>, SocketAddr)>,
    notices: mpsc::Sender<MediaNotice>,
    epoch: Instant,
    arena: PacketArena,
    rtp_in: metrics::Counter,
    /// The room muted the channel: its audio is dropped instead of published.
    muted: bool,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<MediaCmd>,
        mut dgrams: mpsc::Receiver<(PeerKey, Vec<u8>, SocketAddr)>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        info!("upstream call media up");
        self.link_event(EventKind::LinkUp, "connected");
        let mut reason = "hung up";
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(MediaCmd::Stop { reason: why }) => {
                        reason = why;
                        break;
                    }
                    Some(c) => self.on_cmd(c),
                    None => break,
                },
                Some((key, data, from)) = dgrams.recv() => self.on_datagram(key, &data, from),
                ev = self.feed.recv() => match ev {
                    Ok(ev) => self.on_ptt(ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "ptt_lag").increment(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        reason = "PTT account stopped";
                        let _ = self.notices.try_send(MediaNotice::HangUp(reason));
                        break;
                    }
                },
                _ = tick.tick() => {
                    // What arrived while this task waited goes in before the tick pulls audio.
                    while let Ok((key, data, from)) = dgrams.try_recv() {
                        self.on_datagram(key, &data, from);
                    }
                    while let Ok(ev) = self.feed.try_recv() {
                        self.on_ptt(ev);
                    }
                    self.on_tick();
                }
            }
        }
        self.link.close(Instant::now());
        self.route(Instant::now());
        let keys: Vec<PeerKey> = self.peers.iter().map(|(k, _)| *k).collect();
        for k in keys {
            self.peers.remove(&k, &mut send);
        }
        self.link_event(EventKind::LinkDown, reason);
        info!(reason, "upstream call media down");
    }

    fn us(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_micros() as u64
    }

    fn link_event(&self, kind: EventKind, reason: &str) {
        self.c.events.group(
            kind,
            self.c.group.clone(),
            Some(party(self.c.target.user_id, Some(&self.name))),
            json!({
                "ptt_group": self.ptt_group, "caller": self.c.caller,
                "dial_in": self.c.target.user_id, "reason": reason, "mode": "client",
            }),
        );
        let g = metrics::gauge!("pttbridge_meeting_links");
        match kind {
            EventKind::LinkUp => {
                g.increment(1.0);
                metrics::counter!("pttbridge_meeting_links_total").increment(1);
            }
            _ => g.decrement(1.0),
        }
    }

    fn on_ptt(&mut self, ev: ChannelEvent) {
        let now = Instant::now();
        self.link.handle_ptt(ev, now);
        self.route(now);
    }

    fn on_cmd(&mut self, cmd: MediaCmd) {
        match cmd {
            MediaCmd::Offer { key, reply } => {
                let _ = reply.send(self.offer(key));
            }
            MediaCmd::Answer { key, sdp } => {
                if let Err(e) = self.answer(key, &sdp) {
                    warn!(?key, error = %esc(&e), "the server's answer cannot be used");
                    self.peers.remove(&key, &mut send);
                    if key.is_none() {
                        let _ = self
                            .notices
                            .try_send(MediaNotice::HangUp("publish refused"));
                    }
                }
            }
            MediaCmd::Drop { member } => {
                if self.peers.remove(&Some(member), &mut send).is_some() {
                    self.link.remove_member(member);
                    self.route(Instant::now());
                }
            }
            MediaCmd::Mute { muted } => {
                if muted != self.muted {
                    info!(muted, "the room (un)muted the channel");
                }
                self.muted = muted;
            }
            MediaCmd::Chat { text } => {
                self.link.send_text(text);
                self.route(Instant::now());
            }
            MediaCmd::Stop { .. } => {}
        }
    }

    fn offer(&mut self, key: PeerKey) -> anyhow::Result<String> {
        let std_sock = std::net::UdpSocket::bind((self.c.local_ip, 0))?;
        std_sock.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_sock)?);
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = sdp::new_rtc(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| anyhow!("{e}"))?);
        let dir = if key.is_none() {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, dir, None, None, None);
        let (offer, pending) = api.apply().context("no offer to make")?;
        let reader = tokio::spawn(read_datagrams(socket.clone(), key, self.dgram_tx.clone()));
        let tag = ClientTag {
            socket,
            pending: Some(pending),
            reader,
        };
        let mut peer = Peer::new(rtc, tag, local, now);
        peer.mid = Some(mid);
        if let Some(mut old) = self.peers.insert(key, peer)
            && let Some(rtc) = old.rtc()
        {
            rtc.disconnect();
        }
        Ok(offer.to_sdp_string())
    }

    fn answer(&mut self, key: PeerKey, sdp_text: &str) -> anyhow::Result<()> {
        let p = self.peers.get_mut(&key).context("no such offer")?;
        let pending = p.tag.pending.take().context("answered twice")?;
        let answer =
            SdpAnswer::from_sdp_string(sdp_text).map_err(|e| anyhow!("invalid SDP: {e}"))?;
        p.rtc()
            .context("not a str0m peer")?
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| anyhow!("{e}"))?;
        if let Some(mid) = p.mid {
            p.pt = p.rtc().and_then(|rtc| sdp::pt_for(rtc, mid, Codec::Opus));
        }
        if key.is_none() && p.pt.is_none() {
            return Err(anyhow!("the server did not take Opus"));
        }
        self.peers.drain(key, &mut send);
        self.process_events();
        Ok(())
    }

    fn on_datagram(&mut self, key: PeerKey, data: &[u8], from: SocketAddr) {
        self.peers
            .receive(key, from, data, Instant::now(), &mut send);
        self.process_events();
    }

    fn process_events(&mut self) {
        while let Some((key, ev)) = self.peers.poll_event() {
            match ev {
                Event::Connected => debug!(?key, "peer connected"),
                Event::MediaData(d) => {
                    let Some(member) = key else { continue };
                    self.rtp_in.increment(1);
                    let law = match d.params.spec().codec {
                        Codec::Opus => None,
                        Codec::PCMU => Some(Law::Mu),
                        Codec::PCMA => Some(Law::A),
                        _ => continue,
                    };
                    let ts = d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer() as u32;
                    let payload = self.arena.copy(&d.data);
                    self.link.handle_member_packet(
                        member,
                        law,
                        ts,
                        payload,
                        d.ext_vals.audio_level,
                        Instant::now(),
                    );
                }
                _ => {}
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.peers.handle_timeouts(now, &mut send);
        self.process_events();
        for key in self.peers.dead() {
            metrics::counter!("pttbridge_meeting_peers_lost_total").increment(1);
            info!(?key, "peer to the upstream room lost");
            self.peers.remove(&key, &mut send);
            match key {
                None => {
                    let _ = self.notices.try_send(MediaNotice::HangUp("media lost"));
                }
                Some(member) => self.link.remove_member(member),
            }
        }
        self.link.handle_tick(now);
        self.route(now);
    }

    /// Carries out what the link emitted.
    fn route(&mut self, now: Instant) {
        let now_us = self.us(now);
        while let Some(out) = self.link.poll_output() {
            match out {
                // The server's room only takes our Opus; G.711 players are its business.
                Output::Listeners(_) if self.muted => {}
                Output::Listeners(p) => self.peers.write(None, &p, now, now_us, &mut send),
                Output::ListenersG711(..) => {}
                Output::PttVoice { opus, terminator } => {
                    if let Some(t) = &mut self.transmission {
                        // The other server's members, by the ids it gave them: their names are
                        // its own.
                        let (link, room, group) = (&self.link, self.c.room, &self.ptt_group);
                        let starting = || (group.clone(), remote_speakers(&link.speakers(), room));
                        t.voice(self.c.events.app(), starting, &opus, 2, terminator);
                    }
                    self.port.voice(opus, terminator);
                }
                Output::PttText(text) => self.port.text(text),
                Output::Notice(n) => self.on_notice(n),
            }
        }
        self.link.sent(Instant::now());
    }

    fn on_notice(&mut self, n: Notice<Id>) {
        match n {
            Notice::Text { from, text } => {
                let text = match from {
                    Some(p) => format!("{}: {text}", p.name),
                    None => text,
                };
                let _ = self.notices.try_send(MediaNotice::Chat(text));
            }
            Notice::HangUp { .. } => {
                let _ = self.notices.try_send(MediaNotice::HangUp("hangup"));
            }
            n @ (Notice::MemberTalking { .. } | Notice::FloorDenied { .. }) => {
                let dial = self.c.target.user_id;
                if let Some((kind, who, detail)) =
                    link_event(&n, dial, Some(&self.name), &self.ptt_group, None)
                {
                    self.c
                        .events
                        .group(kind, self.c.group.clone(), Some(who), detail);
                }
            }
            // The server's room tells its members who talks; the PTT side publishes talk.*.
            Notice::PttTalking { .. } | Notice::FloorGranted | Notice::Hand { .. } => {}
        }
    }
}

async fn read_datagrams(
    socket: Arc<UdpSocket>,
    key: PeerKey,
    tx: mpsc::Sender<(PeerKey, Vec<u8>, SocketAddr)>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if tx.try_send((key, buf[..n].to_vec(), from)).is_err() {
                    if tx.is_closed() {
                        return;
                    }
                    metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "queue_full")
                        .increment(1);
                }
            }
            Err(e) => {
                static UDP_ERROR: RateLimit =
                    RateLimit::debug("UDP receive error (client-mode call)");
                if UDP_ERROR.allow() {
                    debug!(error = %e, "UDP receive error");
                }
            }
        }
    }
}
