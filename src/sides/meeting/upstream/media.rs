//! Client mode's media: the PTT [`Link`] of a call answered on an external RTCPeer server, with
//! the bridge as a WebRTC *client* of that server's room. One actor per call owns the link and
//! its str0m peers: a `publish` peer that sends the channel's audio (pass-through Opus, mixed
//! when several talk), and one `play` peer per member that publishes (their audio is the meeting
//! side of the link: VAD, floor, mix into the channel).
//!
//! Each peer has its own UDP socket: the server tells a room's peers apart by their source
//! address (one port per room on its side), so ours must differ.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use media::g711::Law;
use media::group::OutPacket;
use media::passthrough::OutboundClock;
use rtcpeer::id::Id;
use serde_json::json;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::hub::EventKind;
use crate::hub::calls::CallCounters;
use crate::sides::meeting::link::{Link, LinkInput, Notice};
use crate::sides::meeting::peer::{self, Unwrap};
use crate::sides::meeting::switchboard::{DialTarget, Switchboard, party};

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
    /// Switchboard (config, hub).
    pub sb: Arc<Switchboard>,
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
}

/// Starts the actor for a connected call; notices come back on the returned receiver.
pub fn spawn(c: CallMedia) -> anyhow::Result<(MediaHandle, mpsc::Receiver<MediaNotice>)> {
    let mut link = Link::new(
        &c.target,
        c.caller,
        c.room,
        &c.sb.bus,
        c.sb.config.passthrough,
    )
    .map_err(|e| anyhow!("cannot start the link: {e}"))?;
    link.counters = c.counters.clone();
    let (tx, rx) = mpsc::channel(64);
    let (notice_tx, notice_rx) = mpsc::channel(64);
    let (dgram_tx, dgram_rx) = mpsc::channel(1024);
    let span = info_span!("upstream_call", room = c.room, dial = c.target.user_id);
    let actor = Actor {
        c,
        link,
        peers: HashMap::new(),
        dgram_tx,
        notices: notice_tx,
        epoch: Instant::now(),
        out: Vec::with_capacity(4),
        out_g711: Vec::new(),
    };
    tokio::spawn(actor.run(rx, dgram_rx).instrument(span));
    Ok((MediaHandle { tx }, notice_rx))
}

struct ClientPeer {
    rtc: Rtc,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    pt: Option<Pt>,
    clock: OutboundClock,
    ext: Unwrap,
    connected: bool,
    heard: Instant,
    timeout: Instant,
    dead: bool,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for ClientPeer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Silence (no STUN answer, RTP, RTCP) after which a connected peer is gone: as in server mode.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(4);
/// A peer that has not connected this long after its offer is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

struct Actor {
    c: CallMedia,
    link: Link,
    peers: HashMap<PeerKey, ClientPeer>,
    dgram_tx: mpsc::Sender<(PeerKey, Vec<u8>, SocketAddr)>,
    notices: mpsc::Sender<MediaNotice>,
    epoch: Instant,
    out: Vec<OutPacket>,
    out_g711: Vec<(Law, OutPacket)>,
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
                input = self.link.next() => match input {
                    LinkInput::Audio(a) => {
                        let now = Instant::now();
                        let us = self.us(now);
                        let mut direct = std::mem::take(&mut self.out);
                        direct.clear();
                        let n = self.link.on_audio(a, now, us, &mut direct);
                        for pkt in &direct {
                            self.send(pkt, now, us);
                        }
                        self.out = direct;
                        self.on_notices(n);
                    }
                    LinkInput::Event(e) => {
                        let n = self.link.on_event(&e, Instant::now());
                        self.on_notices(n);
                    }
                    LinkInput::Closed => {
                        reason = "PTT account stopped";
                        let _ = self.notices.try_send(MediaNotice::HangUp(reason));
                        break;
                    }
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.link.close(Instant::now());
        for p in self.peers.values_mut() {
            p.rtc.disconnect();
        }
        self.link_event(EventKind::LinkDown, reason);
        info!(reason, "upstream call media down");
    }

    fn us(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_micros() as u64
    }

    fn link_event(&self, kind: EventKind, reason: &str) {
        let mut d =
            crate::hub::event::Draft::new(self.c.sb.app.clone(), kind, self.c.group.clone())
                .detail(json!({
                    "ptt_group": self.link.ptt_group, "caller": self.c.caller,
                    "dial_in": self.c.target.user_id, "reason": reason, "mode": "client",
                }));
        d.party = Some(party(
            self.c.target.user_id,
            self.link.client.name.as_deref(),
        ));
        self.c.sb.bus.publish(d);
        let g = metrics::gauge!("pttbridge_meeting_links");
        match kind {
            EventKind::LinkUp => {
                g.increment(1.0);
                metrics::counter!("pttbridge_meeting_links_total").increment(1);
            }
            _ => g.decrement(1.0),
        }
    }

    fn on_cmd(&mut self, cmd: MediaCmd) {
        match cmd {
            MediaCmd::Offer { key, reply } => {
                let _ = reply.send(self.offer(key));
            }
            MediaCmd::Answer { key, sdp } => {
                if let Err(e) = self.answer(key, &sdp) {
                    warn!(?key, error = %e, "the server's answer cannot be used");
                    self.peers.remove(&key);
                    if key.is_none() {
                        let _ = self
                            .notices
                            .try_send(MediaNotice::HangUp("publish refused"));
                    }
                }
            }
            MediaCmd::Drop { member } => {
                if let Some(mut p) = self.peers.remove(&Some(member)) {
                    p.rtc.disconnect();
                    let n = self.link.remove_speaker(member);
                    self.on_notices(n);
                }
            }
            MediaCmd::Chat { text } => self.link.send_text(text),
            MediaCmd::Stop { .. } => {}
        }
    }

    fn offer(&mut self, key: PeerKey) -> anyhow::Result<String> {
        let std_sock = std::net::UdpSocket::bind((self.c.local_ip, 0))?;
        std_sock.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_sock)?);
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = peer::new_rtc(now);
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
        use rand::Rng;
        let mut rng = rand::rng();
        let old = self.peers.insert(
            key,
            ClientPeer {
                rtc,
                socket,
                local,
                mid: Some(mid),
                pending: Some(pending),
                pt: None,
                clock: OutboundClock::new(rng.random(), rng.random(), rng.random::<u32>() >> 2),
                ext: Unwrap::default(),
                connected: false,
                heard: now,
                timeout: now,
                dead: false,
                reader,
            },
        );
        if let Some(mut old) = old {
            old.rtc.disconnect();
        }
        Ok(offer.to_sdp_string())
    }

    fn answer(&mut self, key: PeerKey, sdp: &str) -> anyhow::Result<()> {
        let p = self.peers.get_mut(&key).context("no such offer")?;
        let pending = p.pending.take().context("answered twice")?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| anyhow!("invalid SDP: {e}"))?;
        p.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| anyhow!("{e}"))?;
        if let Some(mid) = p.mid {
            p.pt = peer::pt_for(&mut p.rtc, mid, Codec::Opus);
        }
        if key.is_none() && p.pt.is_none() {
            return Err(anyhow!("the server did not take Opus"));
        }
        self.drain(key);
        Ok(())
    }

    fn on_datagram(&mut self, key: PeerKey, data: &[u8], from: SocketAddr) {
        let now = Instant::now();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let Ok(contents) = data.try_into() else {
            return;
        };
        p.heard = now;
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: p.local,
                contents,
            },
        );
        if let Err(e) = p.rtc.handle_input(input) {
            metrics::counter!("pttbridge_meeting_errors_total", "kind" => "rtc_input").increment(1);
            debug!(?key, error = %e, "peer rejected a datagram");
        }
        self.drain(key);
    }

    fn drain(&mut self, key: PeerKey) {
        let mut events = Vec::new();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        loop {
            match p.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    if p.socket.try_send_to(&t.contents, t.destination).is_err() {
                        metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "udp_send").increment(1);
                    }
                }
                Ok(Output::Timeout(t)) => {
                    p.timeout = t;
                    break;
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => {
                    debug!(?key, error = %e, "peer failed");
                    p.dead = true;
                    break;
                }
            }
        }
        for e in events {
            self.on_event(key, e);
        }
    }

    fn on_event(&mut self, key: PeerKey, ev: Event) {
        match ev {
            Event::Connected => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.connected = true;
                    debug!(?key, "peer connected");
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.dead = true;
                }
            }
            Event::MediaData(d) => {
                let Some(member) = key else { return };
                metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "in").increment(1);
                let law = match d.params.spec().codec {
                    Codec::Opus => None,
                    Codec::PCMU => Some(Law::Mu),
                    Codec::PCMA => Some(Law::A),
                    _ => return,
                };
                let ts = d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer() as u32;
                let now_us = self.us(Instant::now());
                self.link.meeting_packet(
                    member,
                    law,
                    ts,
                    Bytes::copy_from_slice(&d.data),
                    d.ext_vals.audio_level,
                    now_us,
                );
            }
            _ => {}
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            let silent = now.duration_since(p.heard);
            if (p.connected && silent > CONSENT_TIMEOUT)
                || (!p.connected && silent > CONNECT_TIMEOUT)
            {
                p.dead = true;
            }
            if !p.dead && p.timeout <= now && p.rtc.handle_input(Input::Timeout(now)).is_err() {
                p.dead = true;
            }
            self.drain(key);
        }
        let dead: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.dead || !p.rtc.is_alive())
            .map(|(k, _)| *k)
            .collect();
        for key in dead {
            metrics::counter!("pttbridge_meeting_peers_lost_total").increment(1);
            info!(?key, "peer to the upstream room lost");
            self.peers.remove(&key);
            match key {
                None => {
                    let _ = self.notices.try_send(MediaNotice::HangUp("media lost"));
                }
                Some(member) => {
                    let n = self.link.remove_speaker(member);
                    self.on_notices(n);
                }
            }
        }
        let us = self.us(now);
        let mut out = std::mem::take(&mut self.out);
        let mut out_g711 = std::mem::take(&mut self.out_g711);
        out.clear();
        let n = self
            .link
            .tick(now, us, &mut out, (false, false), &mut out_g711);
        for pkt in &out {
            self.send(pkt, now, us);
        }
        self.out = out;
        self.out_g711 = out_g711;
        self.on_notices(n);
    }

    /// One packet of the channel's audio on the publish peer.
    fn send(&mut self, pkt: &OutPacket, now: Instant, now_us: u64) {
        let Some(p) = self.peers.get_mut(&None) else {
            return;
        };
        let (Some(pt), Some(mid), true) = (p.pt, p.mid, p.connected) else {
            return;
        };
        let h = p.clock.stamp(pkt.source, pkt.src_ts, pkt.samples, now_us);
        let t = p.ext.extend(h.timestamp);
        let Some(w) = p.rtc.writer(mid) else { return };
        match w.start_of_talkspurt(h.marker).write(
            pt,
            now,
            MediaTime::new(t, Frequency::FORTY_EIGHT_KHZ),
            &pkt.payload[..],
        ) {
            Ok(()) => {
                metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "out").increment(1)
            }
            Err(e) => {
                metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "write")
                    .increment(1);
                debug!(error = %e, "write failed");
            }
        }
        self.drain(None);
    }

    fn on_notices(&mut self, notices: Vec<Notice>) {
        for n in notices {
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
                Notice::MeetingTalking { client, talking } => {
                    let kind = if talking {
                        EventKind::TalkStarted
                    } else {
                        EventKind::TalkStopped
                    };
                    let mut d = crate::hub::event::Draft::new(
                        self.c.sb.app.clone(),
                        kind,
                        self.c.group.clone(),
                    )
                    .detail(json!({ "media_type": 2, "linked_to": self.link.ptt_group }));
                    d.party = Some(party(client, None));
                    self.c.sb.bus.publish(d);
                }
                Notice::FloorDenied { holder } => {
                    metrics::counter!("pttbridge_meeting_floor_denied_total").increment(1);
                    let mut d = crate::hub::event::Draft::new(
                        self.c.sb.app.clone(),
                        EventKind::FloorDenied,
                        self.c.group.clone(),
                    )
                    .detail(json!({ "holder": holder, "ptt_group": self.link.ptt_group, "queued": true }));
                    d.party = Some(party(
                        self.c.target.user_id,
                        self.link.client.name.as_deref(),
                    ));
                    self.c.sb.bus.publish(d);
                }
                // The server's room tells its members who talks; the PTT side publishes talk.*.
                Notice::PttTalking { .. } | Notice::FloorGranted => {}
            }
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
            Err(e) => debug!(error = %e, "UDP receive error"),
        }
    }
}
