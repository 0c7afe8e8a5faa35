//! A room's media plane: one UDP port for every WebRTC peer of the room (SFU model: a member's
//! `publish` peer carries its audio in, a `play` peer carries one source — a member, or the
//! dialled-in PTT channel — out to the player). Datagrams are matched to their peer by source
//! address (after ICE; a STUN check introduces a new address), and forwarding a packet to N
//! players is N header stamps and N SRTP writes, with no copy of the payload and no hop
//! between tasks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use metrics::{Counter, Gauge};
use rtcpeer::code;
use rtcpeer::id::Id;
use str0m::Event;
use str0m::format::Codec;
use str0m::net::Transmit;
use tokio::net::UdpSocket;
use tracing::debug;

use super::super::refusal::Refusal;
use super::super::rtc::listener;
use super::super::rtc::peer_set::{ShardSinks, Sink, Spread};
use super::super::rtc::sdp;
use super::super::rtc::send_batch::{BatchSink, SendBatch};
use super::super::rtc::{Peer, PeerSet};
use media::group::OutPacket;

/// Kernel buffer asked for on a room's UDP socket (Linux caps it at `net.core.rmem_max` /
/// `wmem_max`). One socket carries every peer of the room: with the default ≈ 200 KB, a few
/// tens of ms in which the actor is busy forwarding to a thousand listeners overflow it, and the
/// STUN answers, RTCP and publishers' RTP it drops make peers look dead.
const SOCKET_BUFFER: usize = 4 << 20;

/// Most shards a room's fan-out is split into (each has its own send batch); a bigger room
/// has bigger shards.
const MAX_SHARDS: usize = 16;

/// What a peer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A member's audio into the room.
    Publish,
    /// `source`'s audio (a member, or the PTT link's dial-in id) out to the player.
    Play {
        /// Whose audio.
        source: Id,
    },
}

/// Where rooms open their media ports and what they announce (`[meeting]` `rtc_ip`,
/// `rtc_bind_ip`, `rtc_port_min`/`rtc_port_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaAddress {
    /// The address sockets bind to (e.g. a private address, or 0.0.0.0).
    pub bind: IpAddr,
    /// The address announced in ICE candidates: the same, or the public address of a 1:1 NAT.
    pub announce: IpAddr,
    /// The ports rooms take from (both ends included), or any free port.
    pub ports: Option<(u16, u16)>,
}

/// A room's record of one peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerTag {
    /// The member it belongs to.
    pub owner: Id,
    /// What it carries.
    pub role: Role,
}

/// The room's socket and peers. See the module docs.
pub struct RoomMedia {
    socket: UdpSocket,
    local: SocketAddr,
    peers: PeerSet<u64, PeerTag>,
    by_addr: HashMap<SocketAddr, u64>,
    next_peer: u64,
    epoch: Instant,
    gauge_peers: Gauge,
    gauge_connected: Gauge,
    unknown: Counter,
    garbage: Counter,
    /// The fan-out's datagrams, sent together.
    batch: SendBatch,
    /// Datagrams the kernel did not take (the peer set counts the ones it sends itself).
    udp_dropped: Counter,
    /// Listeners per shard of a spread fan-out (`meeting.fanout_shard_listeners`; 0: never).
    shard: usize,
    /// The shards' send batches, added as the room grows.
    shard_batches: Vec<Mutex<SendBatch>>,
}

/// A room's shard batches on its socket, as a spread fan-out's sinks.
struct RoomShards<'a> {
    socket: &'a UdpSocket,
    batches: &'a [Mutex<SendBatch>],
}

impl<T> ShardSinks<T> for RoomShards<'_> {
    fn shards(&self) -> usize {
        self.batches.len()
    }

    fn with(&self, i: usize, f: &mut dyn FnMut(&mut dyn Sink<T>)) {
        // Shard `i` runs on one thread at a time: never contended.
        let mut batch = self.batches[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut BatchSink {
            socket: self.socket,
            batch: &mut batch,
        });
        batch.flush(self.socket);
    }
}

impl std::fmt::Debug for RoomMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomMedia")
            .field("local", &self.local)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

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

impl RoomMedia {
    /// Opens the room's port at `addr.bind` (a free one of `addr.ports`, from a random start, or
    /// any), announced as `addr.announce` with the same port.
    pub fn bind(addr: MediaAddress) -> std::io::Result<Self> {
        let socket = match addr.ports {
            None => media_socket(SocketAddr::new(addr.bind, 0))?,
            Some((min, max)) => {
                let n = u32::from(max.saturating_sub(min)) + 1;
                let first = rand::random::<u32>() % n;
                (0..n)
                    .find_map(|i| {
                        let port = min + ((first + i) % n) as u16;
                        media_socket(SocketAddr::new(addr.bind, port)).ok()
                    })
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            format!(
                                "no free UDP port in {min}-{max} on {} (meeting.rtc_port_min/rtc_port_max)",
                                addr.bind
                            ),
                        )
                    })?
            }
        };
        let local = SocketAddr::new(addr.announce, socket.local_addr()?.port());
        let now = Instant::now();
        Ok(Self {
            socket,
            local,
            peers: PeerSet::new(now),
            by_addr: HashMap::new(),
            next_peer: 1,
            epoch: now,
            gauge_peers: metrics::gauge!("pttbridge_meeting_peers"),
            gauge_connected: metrics::gauge!("pttbridge_meeting_peers_connected"),
            unknown: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "unknown_datagram"),
            garbage: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "garbage_datagram"),
            batch: SendBatch::default(),
            udp_dropped: metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "udp_send"),
            shard: 0,
            shard_batches: Vec::new(),
        })
    }

    /// Spreads a fan-out to more than `listeners` listeners over the process's fan-out
    /// threads, in shards of that many (0: never).
    pub fn spread_over(&mut self, listeners: usize) {
        self.shard = listeners;
    }

    /// The room's port.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The socket, for the actor to wait on.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Microseconds since the room opened: the clock of the players' RTP timelines.
    pub fn us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// The peers.
    pub fn peers(&self) -> &PeerSet<u64, PeerTag> {
        &self.peers
    }

    /// One datagram from `from`.
    pub fn on_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        if data.is_empty() {
            self.garbage.increment(1);
            return;
        }
        let pid = match self.by_addr.get(&from) {
            Some(p) if self.peers.get(p).is_some() => Some(*p),
            // A new address can only be a peer's ICE check (STUN: first byte 0..=3, RFC 7983);
            // anything else from an unknown address (e.g. a peer we dropped) is not worth a
            // scan of every peer.
            _ if data[0] <= 3 => self.peers.accepting(from, data, now),
            _ => None,
        };
        let Some(pid) = pid else {
            self.unknown.increment(1);
            return;
        };
        self.by_addr.insert(from, pid);
        let socket = &self.socket;
        if !self
            .peers
            .receive(pid, from, data, now, &mut |_, t| send(socket, t))
        {
            self.garbage.increment(1);
        }
    }

    /// The next event of a peer (str0m's: connected, media data, ...).
    pub fn poll_event(&mut self) -> Option<(u64, Event)> {
        let ev = self.peers.poll_event()?;
        if matches!(ev.1, Event::Connected) {
            self.gauge_connected.increment(1.0);
        }
        Some(ev)
    }

    /// Peer timers (consent, connect timeouts, str0m's own); the peers found dead show in
    /// [`RoomMedia::dead`].
    ///
    /// str0m packetises what [`RoomMedia::forward`] wrote here, so this is where a fan-out's
    /// datagrams mostly leave: batched like the forward's.
    pub fn handle_timeouts(&mut self, now: Instant) {
        let (socket, batch) = (&self.socket, &mut self.batch);
        self.peers
            .handle_timeouts(now, &mut |_, t| batch.push(socket, t));
        self.flush_batch();
    }

    /// Sends what is batched and counts what the kernel did not take (the shards' too).
    fn flush_batch(&mut self) {
        self.batch.flush(&self.socket);
        let mut failed = self.batch.take_failed();
        for b in &mut self.shard_batches {
            failed += b
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take_failed();
        }
        if failed > 0 {
            self.udp_dropped.increment(failed);
        }
    }

    /// Peers that are dead now.
    pub fn dead(&self) -> Vec<u64> {
        self.peers.dead()
    }

    /// Answers `offer` with a new peer for `owner`: a publish peer, or a play peer of
    /// `play_source` sent the first of `codecs` the offer has.
    pub fn new_peer(
        &mut self,
        owner: Id,
        offer: &str,
        play_source: Option<Id>,
        codecs: &[Codec],
        now: Instant,
    ) -> Result<(u64, String), Refusal> {
        let a = sdp::answer(offer, self.local, now).map_err(|e| {
            metrics::counter!("pttbridge_meeting_errors_total", "kind" => "bad_sdp").increment(1);
            Refusal::new(code::BAD_SDP, e.to_string())
        })?;
        if play_source.is_some() && !a.client_receives {
            return Err(Refusal::new(
                code::BAD_SDP,
                "play needs an audio m-line the client receives (recvonly or sendrecv)",
            ));
        }
        if play_source.is_none() && !a.client_sends {
            return Err(Refusal::new(
                code::BAD_SDP,
                "publish needs an audio m-line the client sends (sendonly or sendrecv)",
            ));
        }
        let mut rtc = a.rtc;
        let chosen = codecs
            .iter()
            .find_map(|c| sdp::pt_for(&mut rtc, a.mid, *c).map(|pt| (pt, *c)));
        if play_source.is_some() && chosen.is_none() {
            return Err(Refusal::new(
                code::BAD_SDP,
                if codecs.len() > 1 {
                    "play needs Opus, PCMU or PCMA in the offer"
                } else {
                    "playing a member needs Opus in the offer (G.711 is for the PTT channel)"
                },
            ));
        }
        let role = match play_source {
            None => Role::Publish,
            Some(source) => Role::Play { source },
        };
        let mut peer = Peer::new(rtc, PeerTag { owner, role }, self.local, now);
        peer.mid = Some(a.mid);
        if let Some((pt, codec)) = chosen {
            peer.pt = Some(pt);
            peer.codec = codec;
        }
        // A listener's audio leaves through the room's own SRTP once it is connected, and
        // str0m is dropped for a lean session soon after (the room takes no media from it).
        if let (Role::Play { .. }, Some(keys)) = (role, a.keys) {
            peer.capture_keys(keys);
            if let Some(creds) = listener::sdp_ice_creds(offer) {
                peer.listen_lean(creds);
            }
        }
        let pid = self.next_peer;
        self.next_peer += 1;
        self.peers.insert(pid, peer);
        self.gauge_peers.increment(1.0);
        let socket = &self.socket;
        self.peers.drain(pid, &mut |_, t| send(socket, t));
        Ok((pid, a.answer))
    }

    /// Takes peer `pid` out; returns what it was.
    pub fn remove_peer(&mut self, pid: u64, why: &str) -> Option<PeerTag> {
        let socket = &self.socket;
        let p = self.peers.remove(&pid, &mut |_, t| send(socket, t))?;
        self.gauge_peers.decrement(1.0);
        if p.connected {
            self.gauge_connected.decrement(1.0);
        }
        self.by_addr.retain(|_, v| *v != pid);
        debug!(peer = pid, owner = p.tag.owner, why, "peer removed");
        Some(p.tag)
    }

    /// The peers `pick` chooses (by tag).
    pub fn peers_where(&self, pick: impl Fn(&PeerTag) -> bool) -> Vec<u64> {
        self.peers
            .iter()
            .filter(|(_, p)| pick(&p.tag))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether a connected peer plays `source` in `codec`.
    pub fn plays(&self, source: Id, codec: Codec) -> bool {
        self.peers
            .iter()
            .any(|(_, p)| p.connected && p.codec == codec && p.tag.role == Role::Play { source })
    }

    /// Sends one packet to every player of `source` that is sent `codec`, [`BATCH`] datagrams
    /// per system call. Players with the room's own SRTP ([`Peer::fast`]) are sent it before
    /// this returns; the others when str0m packetises it at the next tick.
    ///
    /// A room with more players than `meeting.fanout_shard_listeners` spreads the own-SRTP
    /// players over the fan-out threads ([`RoomMedia::spread_over`]); this still returns
    /// only once every one is sent.
    ///
    /// [`BATCH`]: crate::sides::meeting::rtc::send_batch::BATCH
    pub fn forward(&mut self, source: Id, codec: Codec, pkt: &OutPacket, now: Instant) {
        let now_us = self.us(now);
        if self.shard > 0 && self.peers.len() > self.shard {
            // Grows with the room, never per packet.
            let want = self.peers.len().div_ceil(self.shard).min(MAX_SHARDS);
            while self.shard_batches.len() < want {
                self.shard_batches.push(Mutex::new(SendBatch::default()));
            }
        }
        let mut out = BatchSink {
            socket: &self.socket,
            batch: &mut self.batch,
        };
        let to = |p: &Peer<PeerTag>| p.codec == codec && p.tag.role == Role::Play { source };
        if self.shard_batches.is_empty() {
            self.peers.write_each(to, pkt, now, now_us, &mut out);
        } else {
            let sinks = RoomShards {
                socket: &self.socket,
                batches: &self.shard_batches,
            };
            let spread = Spread {
                shard: self.shard,
                sinks: &sinks,
            };
            self.peers
                .write_each_spread(to, pkt, now, now_us, &spread, &mut out);
        }
        self.flush_batch();
    }
}

/// One transmit on the room's socket; false when the kernel would not take it.
fn send(socket: &UdpSocket, t: &Transmit) -> bool {
    socket.try_send_to(&t.contents, t.destination).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first of `n` consecutive loopback UDP ports that are all free now.
    fn free_range(n: u16) -> u16 {
        loop {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let first = probe.local_addr().unwrap().port();
            drop(probe);
            if first.checked_add(n).is_some()
                && (first..first + n).all(|p| std::net::UdpSocket::bind(("0.0.0.0", p)).is_ok())
            {
                return first;
            }
        }
    }

    #[tokio::test]
    async fn rooms_take_ports_from_the_range_and_announce_the_public_address() {
        let min = free_range(3);
        let addr = MediaAddress {
            bind: IpAddr::from([0, 0, 0, 0]),
            announce: IpAddr::from([203, 0, 113, 7]),
            ports: Some((min, min + 2)),
        };
        let rooms: Vec<RoomMedia> = (0..3).map(|_| RoomMedia::bind(addr).unwrap()).collect();
        let mut ports: Vec<u16> = rooms.iter().map(|r| r.local().port()).collect();
        ports.sort_unstable();
        assert_eq!(ports, [min, min + 1, min + 2], "each a port of the range");
        for r in &rooms {
            assert_eq!(
                r.local().ip(),
                addr.announce,
                "candidates name the public address"
            );
            assert!(
                r.socket().local_addr().unwrap().ip().is_unspecified(),
                "bound as asked"
            );
        }
        let full = RoomMedia::bind(addr).expect_err("the range is used up");
        assert!(full.to_string().contains("meeting.rtc_port_min"), "{full}");
        drop(rooms);
        assert!(
            RoomMedia::bind(addr).is_ok(),
            "a closed room's port is taken again"
        );
    }
}
