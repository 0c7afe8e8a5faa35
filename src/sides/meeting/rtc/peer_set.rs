//! The live WebRTC peers of one room or one client-mode call (str0m, sans-IO): datagrams in,
//! transmits out through the caller's `send` (one socket for a room, one per peer in client
//! mode), str0m's events queued for the owner, ICE consent and connect timeouts, and audio
//! written to a peer through its own outbound clock so a change of source never jumps the
//! RTP timeline it sees.
//!
//! A peer is dead when str0m fails it, ICE disconnects, it does not connect within
//! [`CONNECT_TIMEOUT`] or goes [`CONSENT_TIMEOUT`] without a datagram once connected; the owner
//! takes the dead ones with [`PeerSet::dead`] and removes them.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use logsafe::{RateLimit, esc};
use media::group::OutPacket;
use media::passthrough::OutboundClock;
use metrics::Counter;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tracing::debug;

use super::sdp::Unwrap;

/// A peer that is not connected this long after it was set up is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A connected peer we have heard nothing from (no STUN answer to our once-a-second consent
/// checks, no RTP, no RTCP) for this long has lost consent (RFC 7675): it is gone. str0m alone
/// would wait ≥ 15 s, as it counts the client's own recent checks as signs of life.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(4);
/// How often connected peers are swept for lost consent.
const CONSENT_SWEEP: Duration = Duration::from_millis(500);

/// One peer: its `Rtc`, what its owner keeps about it (`tag`), and its sending state.
pub struct Peer<T> {
    /// The connection.
    pub rtc: Rtc,
    /// The owner's data (a room: whose peer, publish or play; client mode: its socket).
    pub tag: T,
    /// Our address for this peer: where its datagrams arrive.
    pub local: SocketAddr,
    /// The audio m-line.
    pub mid: Option<Mid>,
    /// Payload type of what we send it, once negotiated.
    pub pt: Option<Pt>,
    /// The codec we send it.
    pub codec: Codec,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// Found dead (see the module docs); the owner removes it.
    pub dead: bool,
    clock: OutboundClock,
    ext: Unwrap,
    created: Instant,
    heard: Instant,
    timeout: Instant,
}

impl<T> Peer<T> {
    /// A peer set up at `now`, with a random outbound clock (SSRC, sequence, timestamp).
    pub fn new(rtc: Rtc, tag: T, local: SocketAddr, now: Instant) -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        Self {
            rtc,
            tag,
            local,
            mid: None,
            pt: None,
            codec: Codec::Opus,
            connected: false,
            dead: false,
            clock: OutboundClock::new(rng.random(), rng.random(), rng.random::<u32>() >> 2),
            ext: Unwrap::default(),
            created: now,
            heard: now,
            timeout: now,
        }
    }
}

/// Counters every peer set updates, registered once.
#[derive(Debug, Clone)]
struct PeerMetrics {
    rtp_out: Counter,
    write_failed: Counter,
    udp_send_failed: Counter,
    rtc_input: Counter,
}

impl PeerMetrics {
    fn new() -> Self {
        Self {
            rtp_out: metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "out"),
            write_failed: metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "write"),
            udp_send_failed: metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "udp_send"),
            rtc_input: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "rtc_input"),
        }
    }
}

/// The peers of one room or call, by key. See the module docs.
pub struct PeerSet<K, T> {
    peers: HashMap<K, Peer<T>>,
    events: Vec<(K, Event)>,
    swept: Instant,
    metrics: PeerMetrics,
}

impl<K, T> std::fmt::Debug for PeerSet<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSet")
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl<K: Copy + Eq + Hash + std::fmt::Debug, T> PeerSet<K, T> {
    /// An empty set.
    pub fn new(now: Instant) -> Self {
        Self {
            peers: HashMap::new(),
            events: Vec::new(),
            swept: now,
            metrics: PeerMetrics::new(),
        }
    }

    /// Adds a peer (replacing and returning one with the same key); call [`PeerSet::drain`]
    /// after, so it starts its ICE checks.
    pub fn insert(&mut self, key: K, peer: Peer<T>) -> Option<Peer<T>> {
        self.peers.insert(key, peer)
    }

    /// The peer of `key`.
    pub fn get(&self, key: &K) -> Option<&Peer<T>> {
        self.peers.get(key)
    }

    /// The peer of `key`, to change.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut Peer<T>> {
        self.peers.get_mut(key)
    }

    /// Every peer.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Peer<T>)> {
        self.peers.iter()
    }

    /// How many peers there are.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The live peer that takes a datagram from a new address: only an ICE check (STUN) can
    /// introduce a peer's address.
    pub fn accepting(&self, from: SocketAddr, data: &[u8], now: Instant) -> Option<K> {
        self.peers
            .iter()
            .find(|(_, p)| {
                !p.dead
                    && data
                        .try_into()
                        .is_ok_and(|contents| p.rtc.accepts(&receive(now, from, p.local, contents)))
            })
            .map(|(k, _)| *k)
    }

    /// A datagram for peer `key`; what it answers goes out through `send`. False when there
    /// is no such peer or the datagram is not WebRTC at all.
    pub fn receive(
        &mut self,
        key: K,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
        send: &mut impl FnMut(&T, &Transmit) -> bool,
    ) -> bool {
        let Some(p) = self.peers.get_mut(&key) else {
            return false;
        };
        let Ok(contents) = data.try_into() else {
            return false;
        };
        p.heard = now;
        if let Err(e) = p.rtc.handle_input(receive(now, from, p.local, contents)) {
            self.metrics.rtc_input.increment(1);
            static REJECTED: RateLimit = RateLimit::debug("peer rejected a datagram");
            if REJECTED.allow() {
                debug!(peer = ?key, error = %esc(&e), "peer rejected a datagram");
            }
        }
        drain_peer(key, p, &mut self.events, &self.metrics, send);
        true
    }

    /// Sends what peer `key` wants sent and queues its events.
    pub fn drain(&mut self, key: K, send: &mut impl FnMut(&T, &Transmit) -> bool) {
        if let Some(p) = self.peers.get_mut(&key) {
            drain_peer(key, p, &mut self.events, &self.metrics, send);
        }
    }

    /// The next str0m event of a peer, oldest first. `Connected` and ICE disconnects have
    /// already been applied to the peer's state.
    pub fn poll_event(&mut self) -> Option<(K, Event)> {
        if self.events.is_empty() {
            return None;
        }
        Some(self.events.remove(0))
    }

    /// Timers: ICE consent (peers silent too long), connect timeouts, and str0m's own
    /// timeouts of the peers due at `now`.
    pub fn handle_timeouts(&mut self, now: Instant, send: &mut impl FnMut(&T, &Transmit) -> bool) {
        let sweep = now.duration_since(self.swept) >= CONSENT_SWEEP;
        if sweep {
            self.swept = now;
        }
        for (key, p) in &mut self.peers {
            if p.dead {
                continue;
            }
            if sweep && p.connected && now.duration_since(p.heard) > CONSENT_TIMEOUT {
                debug!(peer = ?key, "no STUN answer, RTP or RTCP for {CONSENT_TIMEOUT:?}");
                p.dead = true;
                continue;
            }
            if p.timeout > now {
                continue;
            }
            if !p.connected && now.duration_since(p.created) > CONNECT_TIMEOUT {
                p.dead = true;
                continue;
            }
            if p.rtc.handle_input(Input::Timeout(now)).is_err() {
                p.dead = true;
            }
            drain_peer(*key, p, &mut self.events, &self.metrics, send);
        }
    }

    /// Keys of the peers that are dead (failed, disconnected, timed out): remove them.
    pub fn dead(&self) -> Vec<K> {
        self.peers
            .iter()
            .filter(|(_, p)| p.dead || !p.rtc.is_alive())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Takes peer `key` out: it is disconnected and its last transmits go out.
    pub fn remove(
        &mut self,
        key: &K,
        send: &mut impl FnMut(&T, &Transmit) -> bool,
    ) -> Option<Peer<T>> {
        let mut p = self.peers.remove(key)?;
        p.rtc.disconnect();
        while let Ok(out) = p.rtc.poll_output() {
            match out {
                Output::Transmit(t) => {
                    send(&p.tag, &t);
                }
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
        Some(p)
    }

    /// Writes `pkt` to peer `key` (if connected), stamped with its clock.
    pub fn write(
        &mut self,
        key: K,
        pkt: &OutPacket,
        now: Instant,
        now_us: u64,
        send: &mut impl FnMut(&T, &Transmit) -> bool,
    ) {
        if let Some(p) = self.peers.get_mut(&key)
            && p.connected
            && !p.dead
        {
            write_peer(key, p, pkt, now, now_us, &self.metrics);
            drain_peer(key, p, &mut self.events, &self.metrics, send);
        }
    }

    /// Writes `pkt` to every connected peer `to` picks, each stamped with its own clock.
    pub fn write_each(
        &mut self,
        mut to: impl FnMut(&Peer<T>) -> bool,
        pkt: &OutPacket,
        now: Instant,
        now_us: u64,
        send: &mut impl FnMut(&T, &Transmit) -> bool,
    ) {
        for (key, p) in &mut self.peers {
            if !p.connected || p.dead || !to(p) {
                continue;
            }
            write_peer(*key, p, pkt, now, now_us, &self.metrics);
            drain_peer(*key, p, &mut self.events, &self.metrics, send);
        }
    }
}

fn receive(
    now: Instant,
    from: SocketAddr,
    local: SocketAddr,
    contents: str0m::net::DatagramRecv<'_>,
) -> Input<'_> {
    Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source: from,
            destination: local,
            contents,
        },
    )
}

/// One packet to one peer, on the peer's own RTP timeline.
fn write_peer<K: std::fmt::Debug, T>(
    key: K,
    p: &mut Peer<T>,
    pkt: &OutPacket,
    now: Instant,
    now_us: u64,
    m: &PeerMetrics,
) {
    let (Some(pt), Some(mid)) = (p.pt, p.mid) else {
        return;
    };
    let h = p.clock.stamp(pkt.source, pkt.src_ts, pkt.samples, now_us);
    let t = p.ext.extend(h.timestamp);
    let Some(w) = p.rtc.writer(mid) else {
        return;
    };
    match w.start_of_talkspurt(h.marker).write(
        pt,
        now,
        MediaTime::new(t, Frequency::FORTY_EIGHT_KHZ),
        &pkt.payload[..],
    ) {
        Ok(()) => m.rtp_out.increment(1),
        Err(e) => {
            m.write_failed.increment(1);
            debug!(peer = ?key, error = %esc(&e), "write failed");
        }
    }
}

fn drain_peer<K: Copy + std::fmt::Debug, T>(
    key: K,
    p: &mut Peer<T>,
    events: &mut Vec<(K, Event)>,
    m: &PeerMetrics,
    send: &mut impl FnMut(&T, &Transmit) -> bool,
) {
    loop {
        match p.rtc.poll_output() {
            Ok(Output::Transmit(t)) => {
                if !send(&p.tag, &t) {
                    m.udp_send_failed.increment(1);
                }
            }
            Ok(Output::Timeout(t)) => {
                p.timeout = t;
                break;
            }
            Ok(Output::Event(e)) => {
                match &e {
                    Event::Connected => p.connected = true,
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        p.dead = true
                    }
                    _ => {}
                }
                events.push((key, e));
            }
            Err(e) => {
                debug!(peer = ?key, error = %esc(&e), "peer failed");
                p.dead = true;
                break;
            }
        }
    }
}
