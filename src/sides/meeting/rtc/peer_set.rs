//! The live WebRTC peers of one room or one client-mode call (str0m, sans-IO): datagrams in,
//! transmits out through the caller's `send` (one socket for a room, one per peer in client
//! mode), str0m's events queued for the owner, ICE consent and connect timeouts, and audio
//! written to a peer through its own outbound clock so a change of source never jumps the
//! RTP timeline it sees.
//!
//! A connected peer whose SRTP keys were captured ([`super::srtp_keys`]) is written by the
//! bridge's own SRTP writer ([`super::fast_tx`]) in [`PeerSet::write_each`]: its packets go to
//! the caller's [`Sink`] at once, in the stream str0m negotiated. Such a peer that only listens
//! and whose offer's ICE credentials are known ([`Peer::listen_lean`]) drops its str0m `Rtc`
//! [`LEAN_AFTER`] after connecting and keeps only a [`ListenerSession`] (ICE consent and
//! liveness, a few hundred bytes against str0m's ≈ 70 KiB). Other peers (publishers, client
//! mode's, peers without keys) keep str0m for ICE, DTLS, RTCP and, without keys, their audio.
//!
//! A peer is dead when str0m fails it, ICE disconnects, it does not connect within
//! [`CONNECT_TIMEOUT`] or goes [`CONSENT_TIMEOUT`] without a datagram once connected (a
//! listener session: the same, or a DTLS alert); the owner takes the dead ones with
//! [`PeerSet::dead`] and removes them.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use logsafe::{RateLimit, esc};
use media::group::OutPacket;
use media::passthrough::OutboundClock;
use metrics::{Counter, Gauge};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tracing::debug;

use super::fanout;
use super::fast_tx::{self, SrtpTx};
use super::listener::{self, ListenerSession, Received};
use super::sdp::Unwrap;
use super::srtp_keys::KeySlot;

/// A peer that is not connected this long after it was set up is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
pub use super::listener::CONSENT_TIMEOUT;
/// How often connected peers are swept for lost consent.
const CONSENT_SWEEP: Duration = Duration::from_millis(500);
/// How long after connecting a lean listener keeps str0m: long enough for DTLS to retransmit a
/// lost last flight of the handshake (its first retransmission is 1 s after), which only
/// str0m can answer.
pub const LEAN_AFTER: Duration = Duration::from_secs(2);

/// What runs a peer's connection.
enum Conn {
    /// str0m: ICE, DTLS, SRTP, RTCP (boxed: 10 KB inline, which a lean listener gives back).
    Rtc(Box<Rtc>),
    /// A lean listener: ICE consent and liveness only (see [`super::listener`]).
    Listener(ListenerSession),
}

/// One peer: its connection (str0m's `Rtc`, or a lean listener's session), what its owner
/// keeps about it (`tag`), and its sending state.
pub struct Peer<T> {
    conn: Conn,
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
    /// Where its SRTP keys land (until connected).
    keys: Option<KeySlot>,
    /// The bridge's own SRTP writer, once connected with keys.
    fast: Option<SrtpTx>,
    /// The offer's ICE credentials, for a lean listener session (until it starts).
    lean: Option<Box<IceCreds>>,
    /// When it connected.
    connected_at: Option<Instant>,
    /// Where str0m last sent it DTLS, RTP or RTCP: the nominated ICE pair's address (STUN
    /// checks go to every candidate, so they do not count).
    remote: Option<SocketAddr>,
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
            conn: Conn::Rtc(Box::new(rtc)),
            tag,
            local,
            mid: None,
            pt: None,
            codec: Codec::Opus,
            connected: false,
            dead: false,
            clock: OutboundClock::new(rng.random(), rng.random(), rng.random::<u32>() >> 2),
            ext: Unwrap::default(),
            keys: None,
            fast: None,
            lean: None,
            connected_at: None,
            remote: None,
            created: now,
            heard: now,
            timeout: now,
        }
    }

    /// Has its packets written by the bridge's own SRTP once connected, with the keys `slot`
    /// receives from its handshake.
    pub fn capture_keys(&mut self, slot: KeySlot) {
        self.keys = Some(slot);
    }

    /// Whether its packets go through the bridge's own SRTP writer.
    pub fn fast(&self) -> bool {
        self.fast.is_some()
    }

    /// Drops its str0m `Rtc` for a [`ListenerSession`] [`LEAN_AFTER`] after it connected with
    /// captured keys (see [`Peer::capture_keys`]); `remote` are the ICE credentials of its
    /// offer. Only for a peer the bridge never receives media from.
    pub fn listen_lean(&mut self, remote: IceCreds) {
        self.lean = Some(Box::new(remote));
    }

    /// Whether it runs as a lean listener session (no str0m).
    pub fn is_lean(&self) -> bool {
        matches!(self.conn, Conn::Listener(_))
    }

    /// Its str0m connection (`None` for a lean listener).
    pub fn rtc(&mut self) -> Option<&mut Rtc> {
        match &mut self.conn {
            Conn::Rtc(rtc) => Some(rtc),
            Conn::Listener(_) => None,
        }
    }

    /// Whether a datagram from a new address is this peer's: a verified ICE check.
    fn accepts(&self, from: SocketAddr, data: &[u8], now: Instant) -> bool {
        match &self.conn {
            Conn::Rtc(rtc) => data
                .try_into()
                .is_ok_and(|contents| rtc.accepts(&receive(now, from, self.local, contents))),
            Conn::Listener(s) => s.accepts(data),
        }
    }
}

/// Where a peer set's datagrams go.
pub trait Sink<T> {
    /// One of str0m's datagrams for the peer tagged `tag`; false when it was not sent.
    fn transmit(&mut self, tag: &T, t: &Transmit) -> bool;
    /// A datagram to `to` written by `fill` into the sink's buffer (its length, or `None`:
    /// nothing to send); false when it was not sent.
    fn fill(&mut self, to: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>) -> bool;
}

/// One [`Sink`] per shard of a spread fan-out ([`PeerSet::write_each_spread`]), each used by
/// one thread at a time.
pub trait ShardSinks<T>: Sync {
    /// Shards there are sinks for.
    fn shards(&self) -> usize;
    /// Runs `f` with shard `i`'s sink, and sends what it gathered before returning.
    fn with(&self, i: usize, f: &mut dyn FnMut(&mut dyn Sink<T>));
}

/// How a big fan-out is spread over threads (see [`super::fanout`]).
pub struct Spread<'a, T> {
    /// Listeners per shard: a fan-out to at most this many runs on the caller's thread alone
    /// (0: never spread).
    pub shard: usize,
    /// Where each shard sends (fewer shards than sinks: bigger ones).
    pub sinks: &'a dyn ShardSinks<T>,
}

/// Counters every peer set updates, registered once.
#[derive(Debug, Clone)]
struct PeerMetrics {
    rtp_out: Counter,
    via_own: Counter,
    via_str0m: Counter,
    fast_setup_failed: Counter,
    write_failed: Counter,
    udp_send_failed: Counter,
    rtc_input: Counter,
    lean: Gauge,
}

impl PeerMetrics {
    fn new() -> Self {
        Self {
            rtp_out: metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "out"),
            via_own: metrics::counter!("pttbridge_meeting_rtp_out_path_total", "path" => "own_srtp"),
            via_str0m: metrics::counter!("pttbridge_meeting_rtp_out_path_total", "path" => "str0m"),
            fast_setup_failed: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "fast_path_setup"),
            write_failed: metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "write"),
            udp_send_failed: metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "udp_send"),
            rtc_input: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "rtc_input"),
            lean: metrics::gauge!("pttbridge_meeting_lean_listeners"),
        }
    }
}

/// The peers of one room or call, by key. See the module docs.
pub struct PeerSet<K, T> {
    peers: HashMap<K, Peer<T>>,
    events: Vec<(K, Event)>,
    /// The listeners of a spread fan-out (empty between calls; kept for its capacity).
    swept: Instant,
    metrics: PeerMetrics,
}

impl<K, T> Drop for PeerSet<K, T> {
    // The lean-listener gauge counts peers alive in some set: a closed room's leave with it.
    fn drop(&mut self) {
        let lean = self.peers.values().filter(|p| p.is_lean()).count();
        self.metrics.lean.decrement(lean as f64);
    }
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
            .find(|(_, p)| !p.dead && p.accepts(from, data, now))
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
        let rtc = match &mut p.conn {
            Conn::Rtc(rtc) => rtc,
            Conn::Listener(session) => {
                let mut out = [0u8; listener::MAX_STUN_LEN];
                match session.receive(from, data, now, &mut out) {
                    Received::Answer(n) => {
                        p.heard = now;
                        if !send(&p.tag, &transmit(p.local, from, &out[..n])) {
                            self.metrics.udp_send_failed.increment(1);
                        }
                    }
                    Received::Alive => p.heard = now,
                    Received::Closed => {
                        debug!(peer = ?key, "DTLS alert from a lean listener: closed");
                        p.dead = true;
                    }
                    Received::Rejected => self.metrics.rtc_input.increment(1),
                }
                // A nomination may have moved it.
                p.remote = Some(session.remote());
                return true;
            }
        };
        let Ok(contents) = data.try_into() else {
            return false;
        };
        p.heard = now;
        if let Err(e) = rtc.handle_input(receive(now, from, p.local, contents)) {
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
            if let Conn::Listener(session) = &mut p.conn {
                let mut out = [0u8; listener::MAX_STUN_LEN];
                if let Some((to, n)) = session.poll_check(now, &mut out)
                    && !send(&p.tag, &transmit(p.local, to, &out[..n]))
                {
                    self.metrics.udp_send_failed.increment(1);
                }
                continue;
            }
            if p.timeout <= now {
                if !p.connected && now.duration_since(p.created) > CONNECT_TIMEOUT {
                    p.dead = true;
                    continue;
                }
                if let Some(rtc) = p.rtc()
                    && rtc.handle_input(Input::Timeout(now)).is_err()
                {
                    p.dead = true;
                }
                drain_peer(*key, p, &mut self.events, &self.metrics, send);
            }
            if p.connected_at
                .is_some_and(|t| now.duration_since(t) >= LEAN_AFTER)
            {
                go_lean(*key, p, now, &self.metrics);
            }
        }
    }

    /// Keys of the peers that are dead (failed, disconnected, timed out): remove them.
    pub fn dead(&self) -> Vec<K> {
        self.peers
            .iter()
            .filter(|(_, p)| {
                p.dead
                    || match &p.conn {
                        Conn::Rtc(rtc) => !rtc.is_alive(),
                        Conn::Listener(_) => false,
                    }
            })
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
        let Conn::Rtc(rtc) = &mut p.conn else {
            // No DTLS to close: the player's own consent checks find it gone, or its
            // signalling has already said so.
            self.metrics.lean.decrement(1.0);
            return Some(p);
        };
        rtc.disconnect();
        while let Ok(out) = rtc.poll_output() {
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

    /// Writes `pkt` to every connected peer `to` picks, each stamped with its own clock: by
    /// the bridge's own SRTP straight to `out` where the peer has it, else through str0m.
    pub fn write_each(
        &mut self,
        mut to: impl FnMut(&Peer<T>) -> bool,
        pkt: &OutPacket,
        now: Instant,
        now_us: u64,
        out: &mut impl Sink<T>,
    ) {
        for (key, p) in &mut self.peers {
            if !p.connected || p.dead || !to(p) {
                continue;
            }
            if p.fast.is_some() && p.remote.is_some() {
                write_fast(*key, p, pkt, now_us, &self.metrics, out);
                continue;
            }
            write_peer(*key, p, pkt, now, now_us, &self.metrics);
            self.metrics.via_str0m.increment(1);
            drain_peer(*key, p, &mut self.events, &self.metrics, &mut |tag, t| {
                out.transmit(tag, t)
            });
        }
    }
}

impl<K: Copy + Eq + Hash + std::fmt::Debug + Send + Sync, T: Send> PeerSet<K, T> {
    /// [`PeerSet::write_each`], with the listeners on the bridge's own SRTP split into shards
    /// of `spread.shard` run on `spread.pool`'s threads when there are more of them than
    /// that, each shard into its own sink of `spread.sinks`. Returns once every listener is
    /// written. Peers on str0m are written on this thread, into `out`.
    pub fn write_each_spread(
        &mut self,
        to: impl Fn(&Peer<T>) -> bool,
        pkt: &OutPacket,
        now: Instant,
        now_us: u64,
        spread: &Spread<'_, T>,
        out: &mut impl Sink<T>,
    ) {
        let own = |p: &Peer<T>| p.fast.is_some() && p.remote.is_some();
        let wanted = |p: &Peer<T>| p.connected && !p.dead && to(p);
        let n = self.peers.values().filter(|p| wanted(p) && own(p)).count();
        let shards = match spread.shard {
            0 => 1,
            size => n
                .div_ceil(size)
                .clamp(1, spread.sinks.shards().min(fanout::max_shards()).max(1)),
        };
        if shards == 1 {
            return self.write_each(to, pkt, now, now_us, out);
        }
        // One vector per spread packet (a pointer per listener), so that each shard gets its
        // listeners as a disjoint `&mut` slice.
        let mut str0m = false;
        let mut fast: Vec<(K, &mut Peer<T>)> = Vec::with_capacity(n);
        for (key, p) in &mut self.peers {
            if wanted(p) {
                if own(p) {
                    fast.push((*key, p));
                } else {
                    str0m = true;
                }
            }
        }
        let m = &self.metrics;
        fanout::run(fast.chunks_mut(n.div_ceil(shards)), &|i, mine| {
            spread.sinks.with(i, &mut |sink| {
                for (key, p) in mine.iter_mut() {
                    write_fast(*key, p, pkt, now_us, m, sink);
                }
            });
        });
        drop(fast);
        if str0m {
            self.write_each(
                |p| to(p) && !(p.fast.is_some() && p.remote.is_some()),
                pkt,
                now,
                now_us,
                out,
            );
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

/// One packet to one peer by the bridge's own SRTP, on the peer's own RTP timeline.
fn write_fast<K: std::fmt::Debug, T>(
    key: K,
    p: &mut Peer<T>,
    pkt: &OutPacket,
    now_us: u64,
    m: &PeerMetrics,
    out: &mut (impl Sink<T> + ?Sized),
) {
    let (Some(tx), Some(to)) = (p.fast.as_mut(), p.remote) else {
        return;
    };
    let h = p.clock.stamp(pkt.source, pkt.src_ts, pkt.samples, now_us);
    let t = p.ext.extend(h.timestamp);
    let mut failed = None;
    let sent = out.fill(
        to,
        &mut |buf| match tx.write(h.seq, t, h.marker, &pkt.payload, buf) {
            Ok(n) => Some(n),
            Err(e) => {
                failed = Some(e);
                None
            }
        },
    );
    if let Some(e) = failed {
        m.write_failed.increment(1);
        debug!(peer = ?key, error = %e, "fast path write failed");
        return;
    }
    m.rtp_out.increment(1);
    m.via_own.increment(1);
    if !sent {
        m.udp_send_failed.increment(1);
    }
}

/// The peer's own SRTP writer, from the keys its handshake gave and the send stream str0m
/// negotiated (SSRC, payload type, clock).
fn start_fast<K: std::fmt::Debug, T>(key: K, p: &mut Peer<T>, m: &PeerMetrics) {
    let Some(slot) = p.keys.take() else {
        return;
    };
    let (Some(keys), Some(mid), Some(pt)) = (slot.take(), p.mid, p.pt) else {
        m.fast_setup_failed.increment(1);
        debug!(peer = ?key, "connected without SRTP keys or a send stream: str0m sends");
        return;
    };
    let Some(ssrc) = p.rtc().and_then(|rtc| {
        rtc.direct_api()
            .stream_tx_by_mid(mid, None)
            .map(|s| *s.ssrc())
    }) else {
        m.fast_setup_failed.increment(1);
        debug!(peer = ?key, "no send stream: str0m sends");
        return;
    };
    let clock_rate = match p.codec {
        Codec::PCMU | Codec::PCMA => 8_000,
        _ => 48_000,
    };
    let stream = fast_tx::Stream {
        ssrc,
        pt: *pt,
        clock_rate,
    };
    let crypto = super::srtp_keys::provider();
    match SrtpTx::new(&crypto, &keys, stream) {
        Ok(tx) => {
            debug!(peer = ?key, profile = ?keys.profile, "own SRTP");
            p.fast = Some(tx);
        }
        Err(e) => {
            m.fast_setup_failed.increment(1);
            debug!(peer = ?key, error = %e, "own SRTP not set up: str0m sends");
        }
    }
}

/// Replaces a connected listener's str0m `Rtc` by a [`ListenerSession`], once it has what one
/// needs (keys, the offer's ICE credentials, the nominated address); what str0m still had to
/// send went out in its last drain.
fn go_lean<K: std::fmt::Debug, T>(key: K, p: &mut Peer<T>, now: Instant, m: &PeerMetrics) {
    p.connected_at = None;
    let (Some(remote_creds), Some(remote), true) = (p.lean.take(), p.remote, p.fast.is_some())
    else {
        return;
    };
    let Conn::Rtc(rtc) = &mut p.conn else {
        return;
    };
    let local = rtc.direct_api().local_ice_credentials();
    let hmac = super::srtp_keys::provider().sha1_hmac_provider;
    let session = ListenerSession::new(&local, &remote_creds, remote, hmac, p.heard.min(now));
    p.conn = Conn::Listener(session);
    m.lean.increment(1.0);
    debug!(peer = ?key, "lean listener: str0m dropped");
}

/// A datagram of ours from `local` to `to`.
fn transmit(local: SocketAddr, to: SocketAddr, data: &[u8]) -> Transmit {
    Transmit {
        proto: Protocol::Udp,
        source: local,
        destination: to,
        contents: data.to_vec().into(),
    }
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
    let Conn::Rtc(rtc) = &mut p.conn else {
        return;
    };
    let h = p.clock.stamp(pkt.source, pkt.src_ts, pkt.samples, now_us);
    let t = p.ext.extend(h.timestamp);
    let Some(w) = rtc.writer(mid) else {
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
        let Conn::Rtc(rtc) = &mut p.conn else {
            return;
        };
        match rtc.poll_output() {
            Ok(Output::Transmit(t)) => {
                // RFC 7983: a first byte of 0..=3 is STUN; str0m sends everything else only
                // to the nominated pair.
                if t.contents.first().is_some_and(|b| *b > 3) {
                    p.remote = Some(t.destination);
                }
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
                    Event::Connected => {
                        p.connected = true;
                        start_fast(key, p, m);
                        if p.fast.is_some() && p.lean.is_some() {
                            p.connected_at = Some(p.heard);
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sides::meeting::rtc::{listener, sdp};
    use media::passthrough::Source;
    use str0m::change::SdpAnswer;
    use str0m::ice::StunMessage;
    use str0m::media::{Direction, MediaKind};
    use str0m::{Candidate, Rtc};

    const ROOM: &str = "127.0.0.1:5000";
    const CLIENT: &str = "127.0.0.1:6000";

    /// A sink that keeps every datagram, str0m's and the fast path's apart.
    #[derive(Default)]
    struct Keep {
        str0m: Vec<(SocketAddr, Vec<u8>)>,
        own: Vec<(SocketAddr, Vec<u8>)>,
    }

    impl Sink<()> for Keep {
        fn transmit(&mut self, _: &(), t: &Transmit) -> bool {
            self.str0m.push((t.destination, t.contents.to_vec()));
            true
        }

        fn fill(
            &mut self,
            to: SocketAddr,
            fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
        ) -> bool {
            let mut buf = vec![0u8; 1500];
            if let Some(n) = fill(&mut buf) {
                buf.truncate(n);
                self.own.push((to, buf));
            }
            true
        }
    }

    /// Feeds datagrams to the str0m client; returns the audio it decrypts, what it sends, and
    /// whether its ICE disconnected.
    fn deliver(
        client: &mut Rtc,
        datagrams: &[(SocketAddr, Vec<u8>)],
        now: Instant,
    ) -> (Vec<Vec<u8>>, Vec<Transmit>, bool) {
        for (to, d) in datagrams {
            assert_eq!(to.to_string(), CLIENT);
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: ROOM.parse().unwrap(),
                    destination: *to,
                    contents: d.as_slice().try_into().unwrap(),
                },
            );
            let _ = client.handle_input(input);
        }
        let (mut got, mut sent, mut lost) = (Vec::new(), Vec::new(), false);
        while let Ok(out) = client.poll_output() {
            match out {
                Output::Event(Event::MediaData(m)) => got.push(m.data.to_vec()),
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => lost = true,
                Output::Transmit(t) => sent.push(t),
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
        (got, sent, lost)
    }

    /// The `i`th 20 ms packet of a talker, and its payload (different in every packet).
    fn packet(i: u32) -> (OutPacket, Vec<u8>) {
        let payload: Vec<u8> = (0..40).map(|b| (b as u32 ^ i) as u8).collect();
        let pkt = OutPacket {
            source: Source::Talker(1),
            src_ts: i * 960,
            samples: 960,
            payload: payload.clone().into(),
        };
        (pkt, payload)
    }

    /// A room peer answered by `sdp::answer` (with captured keys if `capture`, made lean if
    /// `lean`) and a str0m listener, connected in memory (ICE and DTLS both ways) on simulated
    /// time from `now`.
    fn connect(
        capture: bool,
        lean: bool,
        now: &mut Instant,
    ) -> (PeerSet<u8, ()>, Rtc, Keep, IceCreds) {
        let mut client = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(*now);
        client.add_local_candidate(Candidate::host(CLIENT.parse().unwrap(), "udp").unwrap());
        let mut api = client.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let offer = offer.to_sdp_string();
        let a = sdp::answer(&offer, ROOM.parse().unwrap(), *now).unwrap();
        client
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&a.answer).unwrap())
            .unwrap();
        let mut peer = Peer::new(a.rtc, (), ROOM.parse().unwrap(), *now);
        peer.mid = Some(a.mid);
        if capture {
            peer.capture_keys(a.keys.clone().expect("answer captures keys"));
        }
        if lean {
            peer.listen_lean(listener::sdp_ice_creds(&offer).expect("offer's ICE credentials"));
        }
        let mut set: PeerSet<u8, ()> = PeerSet::new(*now);
        set.insert(1, peer);
        let pt = sdp::pt_for(set.get_mut(&1).unwrap().rtc().unwrap(), a.mid, Codec::Opus);
        set.get_mut(&1).unwrap().pt = pt;

        let mut sink = Keep::default();
        for _ in 0..500 {
            if set.get(&1).unwrap().connected {
                break;
            }
            *now += Duration::from_millis(10);
            exchange(&mut set, &mut client, &mut sink, *now);
        }
        assert!(set.get(&1).unwrap().connected, "connected in memory");
        let room_ice = listener::sdp_ice_creds(&a.answer).expect("answer's ICE credentials");
        (set, client, sink, room_ice)
    }

    /// Timers of both sides at `now`, then what each sends delivered to the other. Returns
    /// the audio the client decrypted.
    fn exchange(
        set: &mut PeerSet<u8, ()>,
        client: &mut Rtc,
        sink: &mut Keep,
        now: Instant,
    ) -> Vec<Vec<u8>> {
        exchange_tapped(set, client, sink, now, &mut |_| {}, &mut |_| {})
    }

    /// [`exchange`], with each datagram to the client shown to `down` and each from it to `up`.
    fn exchange_tapped(
        set: &mut PeerSet<u8, ()>,
        client: &mut Rtc,
        sink: &mut Keep,
        now: Instant,
        down: &mut dyn FnMut(&[u8]),
        up: &mut dyn FnMut(&[u8]),
    ) -> Vec<Vec<u8>> {
        set.handle_timeouts(now, &mut |_, t| sink.transmit(&(), t));
        let _ = client.handle_input(Input::Timeout(now));
        let mut heard = Vec::new();
        for _ in 0..4 {
            let mut to_client = std::mem::take(&mut sink.str0m);
            to_client.append(&mut sink.own);
            to_client.iter().for_each(|(_, d)| down(d));
            let (got, back, lost) = deliver(client, &to_client, now);
            assert!(!lost, "the client lost ICE consent");
            heard.extend(got);
            for t in back {
                up(&t.contents);
                set.receive(1, t.source, &t.contents, now, &mut |_, t| {
                    sink.transmit(&(), t)
                });
            }
        }
        heard
    }

    /// A room peer answered by `sdp::answer` and connected in memory to a str0m listener sends
    /// its audio through the bridge's own SRTP, with the SSRC and payload type str0m negotiated:
    /// the listener's str0m decrypts every packet to the payload written, across a sequence
    /// number wrap. Without captured keys the same peer is written through str0m.
    #[test]
    fn a_str0m_listener_decrypts_the_own_srtp_path() {
        for capture in [true, false] {
            let mut now = Instant::now();
            let (mut set, mut client, mut sink, _) = connect(capture, false, &mut now);
            assert_eq!(set.get(&1).unwrap().fast(), capture, "own SRTP iff keys");

            // Enough packets to wrap the 16-bit sequence number from wherever it started.
            let mut heard = Vec::new();
            let mut written = Vec::new();
            for i in 0..70_000u32 {
                let (pkt, payload) = packet(i);
                now += Duration::from_millis(20);
                set.write_each(|_| true, &pkt, now, i as u64 * 20_000, &mut sink);
                written.push(payload);
                if !capture {
                    set.handle_timeouts(now, &mut |_, t| sink.transmit(&(), t));
                }
                let batch = std::mem::take(if capture {
                    &mut sink.own
                } else {
                    &mut sink.str0m
                });
                heard.extend(deliver(&mut client, &batch, now).0);
                if !capture && i == 100 {
                    break;
                }
            }
            if !capture {
                assert!(sink.own.is_empty(), "no keys: nothing on the own path");
            }
            let n = written.len().min(heard.len());
            assert!(
                n + 2 >= written.len(),
                "{} of {} heard",
                heard.len(),
                written.len()
            );
            assert_eq!(&heard[..n], &written[..n], "payloads as written, in order");
        }
    }

    /// Shard sinks that keep what each shard sent.
    struct KeepShards(Vec<std::sync::Mutex<Keep>>);

    impl ShardSinks<()> for KeepShards {
        fn shards(&self) -> usize {
            self.0.len()
        }

        fn with(&self, i: usize, f: &mut dyn FnMut(&mut dyn Sink<()>)) {
            f(&mut *self.0[i].lock().unwrap());
        }
    }

    /// A room's fan-out spread over helper threads in shards: 24 str0m listeners connected in
    /// memory (half of them lean, str0m dropped) are written 150 packets in shards of 5 on a
    /// pool of two helpers. Every shard's sink gets datagrams, every listener gets each packet
    /// once with RTP sequence numbers one apart, and each decrypts every payload in order.
    #[test]
    fn sharded_listeners_decrypt_every_packet_in_order() {
        const N: u8 = 24;
        let start = Instant::now();
        let mut set: PeerSet<u8, ()> = PeerSet::new(start);
        let mut clients = Vec::new();
        let mut end = start;
        for i in 0..N {
            // Each pair on its own simulated clock from `start`, so none waits for the others.
            let mut now = start;
            let lean = i % 2 == 0;
            let (mut one, mut client, mut sink, _) = connect(true, lean, &mut now);
            if lean {
                let until = now + LEAN_AFTER + CONSENT_SWEEP;
                while now < until {
                    now += Duration::from_millis(100);
                    exchange(&mut one, &mut client, &mut sink, now);
                }
                assert!(one.get(&1).unwrap().is_lean(), "listener {i} went lean");
            }
            let peer = one.peers.remove(&1).unwrap();
            assert!(peer.fast(), "listener {i} on the own SRTP");
            let ssrc = peer.fast.as_ref().unwrap().stream().ssrc;
            set.insert(i, peer);
            clients.push((ssrc, client));
            end = end.max(now);
        }
        let sinks = KeepShards((0..8).map(|_| Default::default()).collect());
        let spread = Spread {
            shard: 5,
            sinks: &sinks,
        };
        let mut out = Keep::default();
        let mut now = end;
        let mut heard: Vec<Vec<Vec<u8>>> = vec![Vec::new(); N as usize];
        let mut last_seq: Vec<Option<u16>> = vec![None; N as usize];
        let mut written = Vec::new();
        for k in 0..150u32 {
            let (pkt, payload) = packet(k);
            now += Duration::from_millis(20);
            set.write_each_spread(|_| true, &pkt, now, k as u64 * 20_000, &spread, &mut out);
            written.push(payload);
            assert!(
                out.own.is_empty() && out.str0m.is_empty(),
                "all by the shards"
            );
            let mut used = 0;
            for shard in &sinks.0 {
                let got = std::mem::take(&mut shard.lock().unwrap().own);
                used += usize::from(!got.is_empty());
                for d in got {
                    let ssrc = u32::from_be_bytes(d.1[8..12].try_into().unwrap());
                    let c = clients
                        .iter()
                        .position(|(s, _)| *s == ssrc)
                        .expect("an SSRC of ours");
                    let seq = u16::from_be_bytes([d.1[2], d.1[3]]);
                    if let Some(prev) = last_seq[c] {
                        assert_eq!(seq, prev.wrapping_add(1), "listener {c} packet {k}");
                    }
                    last_seq[c] = Some(seq);
                    heard[c].extend(deliver(&mut clients[c].1, &[d], now).0);
                }
            }
            let want = 5.min(super::super::fanout::max_shards());
            assert_eq!(
                used, want,
                "24 listeners in shards of 5: five, at most one per core"
            );
        }
        for (c, h) in heard.iter().enumerate() {
            assert_eq!(h, &written, "listener {c} decrypts every payload, in order");
        }
    }

    /// A lean listener ([`LEAN_AFTER`] after connecting, str0m dropped) keeps a str0m client
    /// connected for 60 s of simulated time, well past str0m's consent timeout on both sides:
    /// the client's checks are answered and verified by its ICE agent, ours keep the peer alive,
    /// and the client decrypts the audio to the end. When the client goes silent the peer is
    /// dead after [`CONSENT_TIMEOUT`], not before.
    #[test]
    fn a_lean_listener_keeps_a_str0m_client_past_the_consent_timeout() {
        let mut now = Instant::now();
        let (mut set, mut client, mut sink, room_ice) = connect(true, true, &mut now);
        let client_ice = client.direct_api().local_ice_credentials();
        let crypto = super::super::srtp_keys::provider();
        let hmac = |k: &[u8], p: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(k, p);
        // Every check the client makes once the peer is lean, and every answer and check of
        // ours that str0m's STUN parser takes and verifies with the right password.
        let (mut asked, mut answered, mut our_checks) = (Vec::new(), Vec::new(), 0);
        assert!(
            !set.get(&1).unwrap().is_lean(),
            "str0m until the handshake is surely done"
        );
        let mut heard = Vec::new();
        let mut written = Vec::new();
        for i in 0..3_000u32 {
            now += Duration::from_millis(20);
            let (pkt, payload) = packet(i);
            set.write_each(|_| true, &pkt, now, i as u64 * 20_000, &mut sink);
            written.push(payload);
            let lean = set.get(&1).unwrap().is_lean();
            heard.extend(exchange_tapped(
                &mut set,
                &mut client,
                &mut sink,
                now,
                &mut |d| match StunMessage::parse(d) {
                    Ok(m)
                        if lean
                            && m.is_successful_binding_response()
                            && m.verify(room_ice.pass.as_bytes(), hmac) =>
                    {
                        answered.push(m.trans_id())
                    }
                    Ok(m)
                        if lean
                            && m.is_binding_request()
                            && m.verify(client_ice.pass.as_bytes(), hmac) =>
                    {
                        our_checks += 1
                    }
                    _ => {}
                },
                &mut |d| {
                    if let Ok(m) = StunMessage::parse(d)
                        && lean
                        && m.is_binding_request()
                    {
                        asked.push(m.trans_id());
                    }
                },
            ));
            assert!(set.dead().is_empty(), "peer found dead at packet {i}");
        }
        println!(
            "lean: the client asked {} times, {} verified answers; {our_checks} checks of ours",
            asked.len(),
            answered.len()
        );
        assert!(asked.len() >= 10, "the client checks consent");
        assert_eq!(answered, asked, "each check answered, verified, at once");
        assert!(our_checks >= 50, "ours once a second: {our_checks}");
        assert!(set.get(&1).unwrap().is_lean(), "runs as a lean listener");
        assert!(set.get_mut(&1).unwrap().rtc().is_none());
        let tail = &written[written.len() - 500..];
        assert!(
            heard.ends_with(tail),
            "the last 10 s heard as written ({} of {} heard)",
            heard.len(),
            written.len()
        );

        // The client vanishes: whatever the room sends goes nowhere.
        let silent = now;
        while now.duration_since(silent) <= CONSENT_TIMEOUT {
            assert!(set.dead().is_empty(), "dead before the consent timeout");
            now += Duration::from_millis(100);
            set.handle_timeouts(now, &mut |_, _| true);
        }
        now += CONSENT_SWEEP;
        set.handle_timeouts(now, &mut |_, _| true);
        assert_eq!(
            set.dead(),
            vec![1],
            "dead once silent for the consent timeout"
        );
        assert!(set.remove(&1, &mut |_, _| true).unwrap().is_lean());
    }
}
