//! The client side of one PTT connection as a sans-IO state machine.
//!
//! Feed it what arrives ([`Session::handle_tcp`], [`Session::handle_udp`]) and the
//! passing of time ([`Session::handle_timeout`]); take out what to send
//! ([`Session::poll_transmit`]), what happened ([`Session::poll_event`]) and when to
//! wake it next ([`Session::poll_timeout`]). It never blocks and never does IO, so
//! every behaviour is testable with byte vectors and fake instants.
//!
//! One `Session` lives for one TLS connection; reconnecting means a new session (the
//! tokio driver, module `client` behind the `client` feature, restores the channel).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::arena::Arena;
use crate::framing::{self, FrameDecoder, FrameError};
use crate::message::{ControlMessage, DecodeError, MessageType};
use crate::ocb2::{self, CryptState};
use crate::proto;
use crate::voice_packet::{self, Direction, UdpPacket, VoiceFormat, VoicePacket, VoicePacketRef};

/// Protocol version this client announces: 1.5.0, so servers that can do protobuf voice use it.
pub const CLIENT_VERSION: (u16, u8, u8) = (1, 5, 0);

/// Largest Opus payload the voice formats can carry (13-bit length in the legacy format).
pub const MAX_OPUS_PAYLOAD: usize = 0x1fff;

/// Size of the chunks received and sent packets are cut from: ~200 voice packets, so the
/// allocation per packet is amortised away, while a packet someone keeps holds at most this
/// much memory alive.
const ARENA_CHUNK: usize = 16 * 1024;

/// Settings of one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Account name.
    pub username: String,
    /// Account or server password (empty for none).
    pub password: String,
    /// Access tokens for ACL groups.
    pub tokens: Vec<String>,
    /// Channel to join once synchronised, as a path below the root ("North/Sub"); `None` stays put.
    pub channel: Option<String>,
    /// Whether to try UDP voice at all.
    pub udp: bool,
    /// A talker who sent nothing for this long has stopped (pymumble never sets the terminator bit).
    pub talk_timeout: Duration,
    /// Interval of keep-alive pings on TCP (murmurd drops clients silent for 30 s).
    pub ping_interval: Duration,
    /// UDP counts as broken when no UDP packet arrived for this long since the last UDP ping.
    pub udp_timeout: Duration,
    /// Voice is dropped (and counted) rather than queued when this many bytes await the TCP socket.
    pub max_tcp_backlog: usize,
    /// Release string sent in `Version`.
    pub release: String,
    /// Most users the server's state may hold (more are ignored, each a counted fault).
    pub max_users: usize,
    /// Most channels the server's state may hold.
    pub max_channels: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            username: "pttbridge".into(),
            password: String::new(),
            tokens: Vec::new(),
            channel: None,
            udp: true,
            talk_timeout: Duration::from_millis(300),
            ping_interval: Duration::from_secs(5),
            udp_timeout: Duration::from_secs(3),
            max_tcp_backlog: 256 * 1024,
            release: concat!("pttbridge ", env!("CARGO_PKG_VERSION")).into(),
            max_users: DEFAULT_MAX_USERS,
            max_channels: DEFAULT_MAX_CHANNELS,
        }
    }
}

/// Something to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Bytes for the TLS stream (one or more complete frames).
    Tcp(Bytes),
    /// One encrypted datagram for the server's UDP port.
    Udp(Bytes),
}

/// How a voice packet travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Encrypted UDP datagram.
    Udp,
    /// `UDPTunnel` message on the TLS stream.
    Tcp,
}

/// A channel of the server's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Server-assigned id; 0 is the root.
    pub id: u32,
    /// Parent id; `None` for the root.
    pub parent: Option<u32>,
    /// Display name.
    pub name: String,
    /// Temporary channels vanish when the last user leaves.
    pub temporary: bool,
}

/// A connected user as this session knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Session id, unique while connected.
    pub session: u32,
    /// Display name.
    pub name: String,
    /// Registered user id, if registered.
    pub user_id: Option<u32>,
    /// Channel the user is in.
    pub channel_id: u32,
    /// Muted by an admin, self-muted or suppressed: cannot be heard.
    pub muted: bool,
}

/// Protocol faults that cost one message, not the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Unknown control message type.
    UnknownMessage,
    /// Control message payload did not decode.
    BadProtobuf,
    /// Voice packet did not decode.
    BadVoice,
    /// Voice in a codec other than Opus.
    OtherCodec,
    /// UDP datagram failed decryption.
    BadCrypto,
    /// A message referred to an unknown session or channel.
    UnknownId,
    /// Voice dropped because the TCP socket is backed up.
    VoiceBackpressure,
    /// A user or channel beyond [`SessionConfig::max_users`] / `max_channels`, ignored.
    OverLimit,
}

/// Default of [`SessionConfig::max_users`]: a server (or something posing as one) that
/// announces more is not allowed to grow the bridge's memory without bound.
pub const DEFAULT_MAX_USERS: usize = 65_536;
/// Default of [`SessionConfig::max_channels`].
pub const DEFAULT_MAX_CHANNELS: usize = 65_536;
/// Longest user or channel name kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_NAME: usize = 512;

/// `name`, cut to at most [`MAX_NAME`] bytes.
fn bounded_name(mut name: String) -> String {
    if name.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

impl ErrorKind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownMessage => "unknown_message",
            Self::BadProtobuf => "bad_protobuf",
            Self::BadVoice => "bad_voice",
            Self::OtherCodec => "other_codec",
            Self::BadCrypto => "bad_crypto",
            Self::UnknownId => "unknown_id",
            Self::VoiceBackpressure => "voice_backpressure",
            Self::OverLimit => "over_limit",
        }
    }
}

/// What happened on the connection, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The server accepted us and sent its state; `session` is our own session id.
    Synced {
        /// Our session id.
        session: u32,
        /// Server welcome text.
        welcome: String,
        /// Server's version string, if it sent one.
        server_release: String,
    },
    /// The server refused the login; the connection is over.
    Rejected {
        /// Human-readable reason from the server.
        reason: String,
    },
    /// A channel appeared or changed.
    ChannelUpdated(Channel),
    /// A channel was removed.
    ChannelRemoved {
        /// Its id.
        id: u32,
    },
    /// A user appeared (also sent for every user present when we connected).
    UserJoined(User),
    /// A known user changed channel.
    UserMoved {
        /// The user, already in the new channel.
        user: User,
        /// Channel left.
        from: u32,
    },
    /// A user's other state (name, mute) changed.
    UserUpdated(User),
    /// A user disconnected.
    UserLeft {
        /// The user as last known.
        user: User,
        /// Kick/ban reason, if any.
        reason: Option<String>,
    },
    /// We are now in this channel (after a join, a move by an admin, or at sync).
    InChannel {
        /// Channel id.
        id: u32,
        /// Path from the root ("North/Sub").
        path: String,
    },
    /// A requested channel join could not be done.
    JoinFailed {
        /// The requested path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A text message to us or to a channel we are in.
    Text {
        /// Sender session (`None` for the server).
        actor: Option<u32>,
        /// Sender name if known.
        actor_name: Option<String>,
        /// Channels it was sent to.
        channels: Vec<u32>,
        /// Whether it was sent to us personally.
        private: bool,
        /// The message (may contain HTML).
        message: String,
    },
    /// A user started talking (first voice packet after silence).
    TalkStarted {
        /// Talker session.
        session: u32,
        /// Talker name, if known.
        name: Option<String>,
        /// Channel the talker is in.
        channel_id: Option<u32>,
    },
    /// A user stopped talking (terminator or `talk_timeout` of silence).
    TalkStopped {
        /// Talker session.
        session: u32,
        /// Talker name, if known.
        name: Option<String>,
        /// Whether the terminator bit ended it (else silence).
        terminated: bool,
    },
    /// One Opus packet of a talker.
    Voice {
        /// Talker session.
        session: u32,
        /// Sequence in 10 ms units.
        sequence: u64,
        /// One Opus packet, untouched.
        opus: Bytes,
        /// Last packet of the burst.
        terminator: bool,
        /// How it arrived.
        path: Path,
        /// 0 normal, 1 shout, 2 whisper, 3 listener.
        context: u8,
    },
    /// The server denied something we asked for.
    PermissionDenied {
        /// Its explanation.
        reason: String,
    },
    /// UDP voice started or stopped working (when stopped, voice uses the TCP tunnel).
    UdpChanged {
        /// Whether UDP voice works now.
        working: bool,
    },
    /// A recoverable protocol fault (logged and counted by the caller).
    Fault {
        /// What kind.
        kind: ErrorKind,
        /// Detail for the log.
        detail: String,
    },
}

/// A fault that ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The byte stream cannot be parsed further.
    #[error(transparent)]
    Framing(#[from] FrameError),
    /// The server refused us.
    #[error("server rejected login: {0}")]
    Rejected(String),
    /// The session was already closed.
    #[error("session closed")]
    Closed,
}

/// Counters for metrics and `Ping` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Voice packets received over UDP.
    pub udp_voice_in: u64,
    /// Voice packets received over the TCP tunnel.
    pub tcp_voice_in: u64,
    /// Voice packets sent over UDP.
    pub udp_voice_out: u64,
    /// Voice packets sent over the TCP tunnel.
    pub tcp_voice_out: u64,
    /// Voice packets dropped before sending.
    pub voice_out_dropped: u64,
    /// UDP datagrams received (any kind).
    pub udp_in: u64,
    /// TCP control messages received.
    pub tcp_in: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Authenticating,
    Synced,
    Closed,
}

#[derive(Debug)]
struct Talker {
    last_packet: Instant,
}

#[derive(Debug)]
struct Udp {
    crypt: CryptState,
    keyed: bool,
    working: bool,
    last_received: Option<Instant>,
    /// First ping that has not been answered yet; UDP is broken if it stays unanswered.
    unanswered_since: Option<Instant>,
    next_ping: Instant,
    last_resync_request: Option<Instant>,
}

/// One client connection's protocol state.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    frames: FrameDecoder,
    transmits: VecDeque<Transmit>,
    tcp_backlog: usize,
    events: VecDeque<Event>,
    channels: BTreeMap<u32, Channel>,
    users: HashMap<u32, User>,
    own_session: Option<u32>,
    server_version: u64,
    server_release: String,
    voice_format: VoiceFormat,
    pending_join: Option<String>,
    talkers: HashMap<u32, Talker>,
    next_ping: Instant,
    send_sequence: u64,
    udp: Udp,
    started: Instant,
    tcp_ping_sent: Option<Instant>,
    tcp_rtt: Option<Duration>,
    stats: Stats,
    /// Plaintext of the voice packet or UDP ping being sent, reused for every packet.
    plain: BytesMut,
    /// Outgoing datagrams and tunnelled voice frames are cut from here.
    tx: Arena,
    /// Decrypted datagrams are written here; received Opus payloads are slices of it.
    rx: Arena,
}

impl Session {
    /// Starts a session on a freshly connected TLS stream: queues `Version` and `Authenticate`.
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let (major, minor, patch) = CLIENT_VERSION;
        let mut session = Self {
            pending_join: config.channel.clone(),
            phase: Phase::Authenticating,
            frames: FrameDecoder::default(),
            transmits: VecDeque::new(),
            tcp_backlog: 0,
            events: VecDeque::new(),
            channels: BTreeMap::new(),
            users: HashMap::new(),
            own_session: None,
            server_version: 0,
            server_release: String::new(),
            voice_format: VoiceFormat::Legacy,
            talkers: HashMap::new(),
            next_ping: now + config.ping_interval,
            send_sequence: 0,
            udp: Udp {
                crypt: CryptState::new(),
                keyed: false,
                working: false,
                last_received: None,
                unanswered_since: None,
                next_ping: now,
                last_resync_request: None,
            },
            started: now,
            tcp_ping_sent: None,
            tcp_rtt: None,
            stats: Stats::default(),
            plain: BytesMut::new(),
            tx: Arena::new(ARENA_CHUNK),
            rx: Arena::new(ARENA_CHUNK),
            config,
        };
        session.send(proto::Version {
            version_v1: Some(u32::from(major) << 16 | u32::from(minor) << 8 | u32::from(patch)),
            version_v2: Some(
                u64::from(major) << 48 | u64::from(minor) << 32 | u64::from(patch) << 16,
            ),
            release: Some(session.config.release.clone()),
            os: Some(std::env::consts::OS.into()),
            os_version: Some(String::new()),
        });
        session.send(proto::Authenticate {
            username: Some(session.config.username.clone()),
            password: Some(session.config.password.clone()),
            tokens: session.config.tokens.clone(),
            celt_versions: Vec::new(),
            opus: Some(true),
            client_type: Some(0),
        });
        session
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Bytes read from the TLS stream.
    pub fn handle_tcp(&mut self, data: &[u8], now: Instant) -> Result<(), SessionError> {
        if self.phase == Phase::Closed {
            return Err(SessionError::Closed);
        }
        self.frames.push(data);
        while let Some(frame) = self
            .frames
            .next_frame()
            .inspect_err(|_| self.phase = Phase::Closed)?
        {
            self.stats.tcp_in += 1;
            match ControlMessage::decode(frame.kind, frame.payload) {
                Ok(msg) => self.handle_message(msg, now)?,
                Err(DecodeError::UnknownType(kind)) => {
                    self.fault(ErrorKind::UnknownMessage, format!("type {kind}"))
                }
                Err(e) => self.fault(ErrorKind::BadProtobuf, e.to_string()),
            }
        }
        Ok(())
    }

    /// One datagram received on the UDP socket from the server.
    pub fn handle_udp(&mut self, datagram: &[u8], now: Instant) {
        if self.phase == Phase::Closed || !self.udp.keyed {
            return;
        }
        self.stats.udp_in += 1;
        // Decrypt straight into the receive arena: the Opus payload of the event is then a
        // slice of it, with no copy and (amortised) no allocation.
        let plain = self.rx.buf(datagram.len());
        if let Err(e) = self.udp.crypt.decrypt_into(datagram, plain) {
            self.fault(ErrorKind::BadCrypto, e.to_string());
            self.maybe_request_resync(now);
            return;
        }
        self.udp.last_received = Some(now);
        self.udp.unanswered_since = None;
        if !self.udp.working {
            self.udp.working = true;
            self.events.push_back(Event::UdpChanged { working: true });
        }
        let packet = self.rx.take();
        self.handle_voice_bytes(packet, Path::Udp, now);
    }

    /// Time passed: sends pings, ends silent talk bursts, detects broken UDP.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.config.ping_interval;
            self.send_tcp_ping(now);
        }
        self.expire_talkers(now);
        if self.udp.keyed && self.config.udp {
            if let Some(since) = self.udp.unanswered_since
                && self.udp.working
                && now.duration_since(since) >= self.config.udp_timeout
            {
                self.udp.working = false;
                self.events.push_back(Event::UdpChanged { working: false });
            }
            if now >= self.udp.next_ping {
                self.send_udp_ping(now);
                // Probe quickly while UDP is unproven, relax once it works.
                let interval = if self.udp.working {
                    self.config.ping_interval
                } else {
                    Duration::from_secs(1)
                };
                self.udp.next_ping = now + interval;
            }
        }
    }

    // ---- commands -----------------------------------------------------------------------

    /// Joins the channel at `path` ("North/Sub"; "" is the root) now or, before sync, once synced.
    pub fn join_channel(&mut self, path: &str) {
        self.pending_join = Some(path.to_owned());
        if self.phase == Phase::Synced {
            self.try_join();
        }
    }

    /// Sends a text message to a channel (`None`: the channel we are in).
    pub fn send_channel_text(&mut self, channel: Option<u32>, message: &str) -> bool {
        let Some(channel) = channel.or_else(|| self.own_channel()) else {
            return false;
        };
        self.send(proto::TextMessage {
            channel_id: vec![channel],
            message: message.to_owned(),
            ..Default::default()
        });
        true
    }

    /// Sends a private text message to users by session.
    pub fn send_private_text(&mut self, sessions: Vec<u32>, message: &str) {
        self.send(proto::TextMessage {
            session: sessions,
            message: message.to_owned(),
            ..Default::default()
        });
    }

    /// Sends one Opus packet covering `frames_10ms` × 10 ms to voice target `target` (0 = our channel).
    ///
    /// Returns `false` (and counts it) when the packet was dropped: too large, not synced,
    /// or the TCP tunnel is backed up. Voice never waits.
    pub fn send_voice(
        &mut self,
        opus: &[u8],
        frames_10ms: u32,
        terminator: bool,
        target: u8,
    ) -> bool {
        if self.phase != Phase::Synced || opus.len() > MAX_OPUS_PAYLOAD {
            self.stats.voice_out_dropped += 1;
            return false;
        }
        let packet = VoicePacketRef {
            target_or_context: target,
            session: None,
            sequence: self.send_sequence,
            payload: opus,
            terminator,
            position: None,
        };
        self.plain.clear();
        if let Err(e) = voice_packet::encode_audio(
            &packet,
            self.voice_format,
            Direction::ToServer,
            &mut self.plain,
        ) {
            self.stats.voice_out_dropped += 1;
            self.fault(ErrorKind::BadVoice, format!("cannot send voice: {e}"));
            return false;
        }
        self.send_sequence += u64::from(frames_10ms.max(1));
        if self.udp.working {
            self.seal_plain();
            self.stats.udp_voice_out += 1;
        } else {
            if self.tcp_backlog > self.config.max_tcp_backlog {
                self.stats.voice_out_dropped += 1;
                self.fault(
                    ErrorKind::VoiceBackpressure,
                    format!("{} bytes queued", self.tcp_backlog),
                );
                return false;
            }
            // The frame `ControlMessage::UdpTunnel` would encode, written without one.
            let frame = self.tx.buf(framing::HEADER_LEN + self.plain.len());
            framing::encode_frame(MessageType::UdpTunnel as u16, &self.plain, frame);
            let frame = self.tx.take();
            self.push_tcp(frame);
            self.stats.tcp_voice_out += 1;
        }
        true
    }

    /// Sends any control message (channel creation, moves, voice targets, ...).
    pub fn send(&mut self, msg: impl Into<ControlMessage>) {
        let mut buf = BytesMut::new();
        msg.into().encode(&mut buf);
        self.push_tcp(buf.freeze());
    }

    // ---- outputs ------------------------------------------------------------------------

    /// Next thing to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        if let Transmit::Tcp(b) = &t {
            self.tcp_backlog -= b.len();
        }
        Some(t)
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        let mut t = self.next_ping;
        if self.udp.keyed && self.config.udp {
            t = t.min(self.udp.next_ping);
        }
        let talk_end = self
            .talkers
            .values()
            .map(|k| k.last_packet + self.config.talk_timeout)
            .min();
        Some(talk_end.map_or(t, |e| e.min(t)))
    }

    // ---- state --------------------------------------------------------------------------

    /// Whether the server has accepted us and sent its state.
    pub fn is_synced(&self) -> bool {
        self.phase == Phase::Synced
    }

    /// Our session id once synced.
    pub fn own_session(&self) -> Option<u32> {
        self.own_session
    }

    /// The channel we are in.
    pub fn own_channel(&self) -> Option<u32> {
        self.own_session
            .and_then(|s| self.users.get(&s))
            .map(|u| u.channel_id)
    }

    /// Known channels by id.
    pub fn channels(&self) -> &BTreeMap<u32, Channel> {
        &self.channels
    }

    /// Known users by session.
    pub fn users(&self) -> &HashMap<u32, User> {
        &self.users
    }

    /// Whether UDP voice currently works.
    pub fn udp_working(&self) -> bool {
        self.udp.working
    }

    /// Voice wire format chosen from the server's version.
    pub fn voice_format(&self) -> VoiceFormat {
        self.voice_format
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Last measured TCP round-trip time.
    pub fn tcp_rtt(&self) -> Option<Duration> {
        self.tcp_rtt
    }

    /// Path of a channel from the root ("North/Sub"; the root itself is "").
    pub fn channel_path(&self, id: u32) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = self.channels.get(&id)?;
        // The parent chain is server data: bound the walk so a cycle cannot hang us.
        for _ in 0..64 {
            match cur.parent {
                None => break,
                Some(p) => {
                    parts.push(cur.name.as_str());
                    cur = self.channels.get(&p)?;
                }
            }
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    /// Finds a channel by path ("North/Sub", "" or "/" for the root; leading "/" and "Root/" optional).
    pub fn find_channel(&self, path: &str) -> Option<u32> {
        let root = self.channels.values().find(|c| c.parent.is_none())?;
        let mut cur = root.id;
        let mut parts = path
            .trim_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .peekable();
        if parts.peek() == Some(&root.name.as_str()) && !self.has_child(root.id, &root.name) {
            parts.next();
        }
        for part in parts {
            cur = self
                .channels
                .values()
                .find(|c| c.parent == Some(cur) && c.name == part)?
                .id;
        }
        Some(cur)
    }

    /// Finds a user by name.
    pub fn find_user(&self, name: &str) -> Option<&User> {
        self.users.values().find(|u| u.name == name)
    }

    fn has_child(&self, parent: u32, name: &str) -> bool {
        self.channels
            .values()
            .any(|c| c.parent == Some(parent) && c.name == name)
    }

    // ---- internals ----------------------------------------------------------------------

    fn fault(&mut self, kind: ErrorKind, detail: String) {
        self.events.push_back(Event::Fault { kind, detail });
    }

    fn handle_message(&mut self, msg: ControlMessage, now: Instant) -> Result<(), SessionError> {
        match msg {
            ControlMessage::Version(v) => {
                self.server_version = v.version_v2.unwrap_or_else(|| {
                    let v1 = u64::from(v.version_v1.unwrap_or(0));
                    (v1 >> 16) << 48 | ((v1 >> 8) & 0xff) << 32 | (v1 & 0xff) << 16
                });
                self.server_release = v.release.unwrap_or_default();
                // Protobuf voice needs both ends at 1.5+; we announce 1.5.0.
                self.voice_format = if self.server_version >= 1 << 48 | 5 << 32 {
                    VoiceFormat::Protobuf
                } else {
                    VoiceFormat::Legacy
                };
            }
            ControlMessage::Reject(r) => {
                let kind = r.r#type();
                let reason = r.reason.unwrap_or_else(|| format!("{kind:?}"));
                self.phase = Phase::Closed;
                self.events.push_back(Event::Rejected {
                    reason: reason.clone(),
                });
                return Err(SessionError::Rejected(reason));
            }
            ControlMessage::ServerSync(s) => {
                let Some(session) = s.session else {
                    self.fault(ErrorKind::BadProtobuf, "ServerSync without session".into());
                    return Ok(());
                };
                self.own_session = Some(session);
                self.phase = Phase::Synced;
                self.events.push_back(Event::Synced {
                    session,
                    welcome: s.welcome_text.unwrap_or_default(),
                    server_release: self.server_release.clone(),
                });
                if let Some(id) = self.own_channel() {
                    self.push_in_channel(id);
                }
                self.try_join();
            }
            ControlMessage::ChannelState(c) => self.handle_channel_state(c),
            ControlMessage::ChannelRemove(c) => {
                if self.channels.remove(&c.channel_id).is_some() {
                    self.events
                        .push_back(Event::ChannelRemoved { id: c.channel_id });
                }
            }
            ControlMessage::UserState(u) => self.handle_user_state(u),
            ControlMessage::UserRemove(r) => {
                if let Some(user) = self.users.remove(&r.session) {
                    self.end_talk(r.session, false);
                    self.events.push_back(Event::UserLeft {
                        user,
                        reason: r.reason,
                    });
                }
            }
            ControlMessage::TextMessage(t) => {
                let own = self.own_session;
                self.events.push_back(Event::Text {
                    actor_name: t
                        .actor
                        .and_then(|a| self.users.get(&a))
                        .map(|u| u.name.clone()),
                    actor: t.actor,
                    private: own.is_some_and(|s| t.session.contains(&s)),
                    channels: t.channel_id,
                    message: t.message,
                });
            }
            ControlMessage::PermissionDenied(p) => {
                let reason = p
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", p.r#type()));
                self.events.push_back(Event::PermissionDenied {
                    reason: reason.clone(),
                });
                if let Some(path) = self.pending_join.take() {
                    self.events.push_back(Event::JoinFailed { path, reason });
                }
            }
            ControlMessage::Ping(_) => {
                if let Some(sent) = self.tcp_ping_sent.take() {
                    self.tcp_rtt = Some(now.duration_since(sent));
                }
            }
            ControlMessage::CryptSetup(c) => self.handle_crypt_setup(c, now),
            ControlMessage::UdpTunnel(packet) => self.handle_voice_bytes(packet, Path::Tcp, now),
            // Informational messages we do not need to act on.
            ControlMessage::CodecVersion(_)
            | ControlMessage::ServerConfig(_)
            | ControlMessage::SuggestConfig(_)
            | ControlMessage::PermissionQuery(_)
            | ControlMessage::UserStats(_)
            | ControlMessage::UserList(_)
            | ControlMessage::QueryUsers(_)
            | ControlMessage::BanList(_)
            | ControlMessage::Acl(_)
            | ControlMessage::ContextActionModify(_)
            | ControlMessage::ContextAction(_)
            | ControlMessage::VoiceTarget(_)
            | ControlMessage::RequestBlob(_)
            | ControlMessage::PluginDataTransmission(_)
            | ControlMessage::Authenticate(_) => {}
        }
        Ok(())
    }

    fn handle_channel_state(&mut self, c: proto::ChannelState) {
        let Some(id) = c.channel_id else {
            self.fault(
                ErrorKind::BadProtobuf,
                "ChannelState without channel_id".into(),
            );
            return;
        };
        let max = self.config.max_channels;
        if self.channels.len() >= max && !self.channels.contains_key(&id) {
            self.fault(
                ErrorKind::OverLimit,
                format!("more than {max} channels: channel {id} ignored"),
            );
            return;
        }
        let entry = self.channels.entry(id).or_insert_with(|| Channel {
            id,
            parent: None,
            name: String::new(),
            temporary: false,
        });
        if let Some(p) = c.parent {
            // A channel cannot be its own parent; ignore a server that says so.
            entry.parent = (p != id).then_some(p);
        }
        if let Some(name) = c.name {
            entry.name = bounded_name(name);
        }
        if let Some(t) = c.temporary {
            entry.temporary = t;
        }
        let updated = entry.clone();
        self.events.push_back(Event::ChannelUpdated(updated));
    }

    fn handle_user_state(&mut self, u: proto::UserState) {
        let Some(session) = u.session else {
            self.fault(ErrorKind::BadProtobuf, "UserState without session".into());
            return;
        };
        let muted = |prev: bool| {
            let flags = [u.mute, u.self_mute, u.suppress];
            if flags.iter().all(Option::is_none) {
                prev
            } else {
                flags.iter().any(|f| f == &Some(true))
            }
        };
        let max = self.config.max_users;
        let full = self.users.len() >= max;
        match self.users.get_mut(&session) {
            None if full => {
                self.fault(
                    ErrorKind::OverLimit,
                    format!("more than {max} users: session {session} ignored"),
                );
            }
            None => {
                let user = User {
                    session,
                    name: bounded_name(
                        u.name
                            .clone()
                            .unwrap_or_else(|| format!("session-{session}")),
                    ),
                    user_id: u.user_id,
                    channel_id: u.channel_id.unwrap_or(0),
                    muted: muted(false),
                };
                self.users.insert(session, user.clone());
                self.events.push_back(Event::UserJoined(user));
            }
            Some(user) => {
                let from = user.channel_id;
                if let Some(name) = u.name.clone() {
                    user.name = bounded_name(name);
                }
                if u.user_id.is_some() {
                    user.user_id = u.user_id;
                }
                user.muted = muted(user.muted);
                let moved = u.channel_id.is_some_and(|c| c != from);
                if let Some(c) = u.channel_id {
                    user.channel_id = c;
                }
                let user = user.clone();
                if moved {
                    self.events.push_back(Event::UserMoved { user, from });
                } else {
                    self.events.push_back(Event::UserUpdated(user));
                }
                if moved && Some(session) == self.own_session {
                    let to = u.channel_id.unwrap_or(0);
                    self.push_in_channel(to);
                }
            }
        }
    }

    fn push_in_channel(&mut self, id: u32) {
        let path = self.channel_path(id).unwrap_or_default();
        if self
            .pending_join
            .as_deref()
            .is_some_and(|p| self.find_channel(p) == Some(id))
        {
            self.pending_join = None;
        }
        self.events.push_back(Event::InChannel { id, path });
    }

    fn try_join(&mut self) {
        let Some(path) = self.pending_join.clone() else {
            return;
        };
        let Some(own) = self.own_session else { return };
        match self.find_channel(&path) {
            None => {
                self.pending_join = None;
                self.events.push_back(Event::JoinFailed {
                    path,
                    reason: "no such channel".into(),
                });
            }
            Some(id) if Some(id) == self.own_channel() => {
                self.pending_join = None;
            }
            Some(id) => self.send(proto::UserState {
                session: Some(own),
                actor: Some(own),
                channel_id: Some(id),
                ..Default::default()
            }),
        }
    }

    fn handle_crypt_setup(&mut self, c: proto::CryptSetup, now: Instant) {
        match (c.key, c.client_nonce, c.server_nonce) {
            (Some(key), Some(client_nonce), Some(server_nonce)) => {
                match self.udp.crypt.set_key(&key, &client_nonce, &server_nonce) {
                    Ok(()) => {
                        self.udp.keyed = true;
                        self.udp.next_ping = now;
                    }
                    Err(e) => self.fault(ErrorKind::BadCrypto, format!("CryptSetup: {e}")),
                }
            }
            // The server resynchronised our decrypt nonce.
            (None, _, Some(server_nonce)) => {
                if let Err(e) = self.udp.crypt.set_decrypt_iv(&server_nonce) {
                    self.fault(ErrorKind::BadCrypto, format!("CryptSetup resync: {e}"));
                }
            }
            // The server asks for our encrypt nonce.
            _ => self.send(proto::CryptSetup {
                client_nonce: Some(self.udp.crypt.encrypt_iv().to_vec().into()),
                ..Default::default()
            }),
        }
    }

    fn maybe_request_resync(&mut self, now: Instant) {
        // Ask at most every 5 s, and only when decryption has been failing for a while.
        let good_recently = self
            .udp
            .last_received
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(5));
        let asked_recently = self
            .udp
            .last_resync_request
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(5));
        if !good_recently && !asked_recently {
            self.udp.last_resync_request = Some(now);
            self.send(proto::CryptSetup::default());
        }
    }

    fn send_tcp_ping(&mut self, now: Instant) {
        let crypt = &self.udp.crypt;
        let stats = self.stats;
        self.tcp_ping_sent = Some(now);
        self.send(proto::Ping {
            timestamp: Some(now.duration_since(self.started).as_micros() as u64),
            good: Some(crypt.good()),
            late: Some(crypt.late()),
            lost: Some(crypt.lost()),
            resync: Some(crypt.resync()),
            udp_packets: Some(stats.udp_in as u32),
            tcp_packets: Some(stats.tcp_in as u32),
            ..Default::default()
        });
    }

    fn send_udp_ping(&mut self, now: Instant) {
        let timestamp = self.stats.udp_in.wrapping_add(1);
        self.plain.clear();
        if voice_packet::encode(
            &UdpPacket::Ping { timestamp },
            self.voice_format,
            Direction::ToServer,
            &mut self.plain,
        )
        .is_err()
        {
            return;
        }
        self.seal_plain();
        self.udp.unanswered_since.get_or_insert(now);
    }

    /// Encrypts `self.plain` into a datagram cut from the send arena and queues it.
    fn seal_plain(&mut self) {
        let sealed = self.tx.buf(ocb2::HEADER_LEN + self.plain.len());
        self.udp.crypt.encrypt_into(&self.plain, sealed);
        let datagram = self.tx.take();
        self.transmits.push_back(Transmit::Udp(datagram));
    }

    /// Queues bytes for the TLS stream, counted against `max_tcp_backlog` until polled.
    fn push_tcp(&mut self, bytes: Bytes) {
        self.tcp_backlog += bytes.len();
        self.transmits.push_back(Transmit::Tcp(bytes));
    }

    fn handle_voice_bytes(&mut self, packet: Bytes, path: Path, now: Instant) {
        match voice_packet::decode(packet, self.voice_format, Direction::FromServer) {
            Ok(UdpPacket::Audio(v)) => self.handle_voice(v, path, now),
            Ok(UdpPacket::Ping { .. }) => {}
            Ok(UdpPacket::OtherCodec { codec }) => {
                self.fault(ErrorKind::OtherCodec, format!("codec {codec}"))
            }
            Err(e) => self.fault(ErrorKind::BadVoice, e.to_string()),
        }
    }

    fn handle_voice(&mut self, v: VoicePacket, path: Path, now: Instant) {
        let Some(session) = v.session else {
            self.fault(ErrorKind::BadVoice, "voice without sender session".into());
            return;
        };
        match path {
            Path::Udp => self.stats.udp_voice_in += 1,
            Path::Tcp => self.stats.tcp_voice_in += 1,
        }
        if !self.users.contains_key(&session) {
            self.fault(
                ErrorKind::UnknownId,
                format!("voice from unknown session {session}"),
            );
        }
        if let Some(t) = self.talkers.get_mut(&session) {
            t.last_packet = now;
        } else {
            self.talkers.insert(session, Talker { last_packet: now });
            let user = self.users.get(&session);
            self.events.push_back(Event::TalkStarted {
                session,
                name: user.map(|u| u.name.clone()),
                channel_id: user.map(|u| u.channel_id),
            });
        }
        let terminator = v.terminator;
        self.events.push_back(Event::Voice {
            session,
            sequence: v.sequence,
            opus: v.payload,
            terminator,
            path,
            context: v.target_or_context,
        });
        if terminator {
            self.end_talk(session, true);
        }
    }

    fn end_talk(&mut self, session: u32, terminated: bool) {
        if self.talkers.remove(&session).is_some() {
            self.events.push_back(Event::TalkStopped {
                session,
                name: self.users.get(&session).map(|u| u.name.clone()),
                terminated,
            });
        }
    }

    fn expire_talkers(&mut self, now: Instant) {
        let timeout = self.config.talk_timeout;
        let mut ended: Vec<u32> = self
            .talkers
            .iter()
            .filter(|(_, t)| now.duration_since(t.last_packet) >= timeout)
            .map(|(s, _)| *s)
            .collect();
        ended.sort_unstable();
        for s in ended {
            self.end_talk(s, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [7; 16];
    const CLIENT_NONCE: [u8; 16] = [0x11; 16];
    const SERVER_NONCE: [u8; 16] = [0x22; 16];
    const OWN: u32 = 7;
    const TALKER: u32 = 3;

    fn frames(msgs: Vec<ControlMessage>) -> Vec<u8> {
        let mut out = BytesMut::new();
        for m in msgs {
            m.encode(&mut out);
        }
        out.to_vec()
    }

    /// A session synced with a server speaking `format`, `TALKER` in the channel, and with
    /// `udp` the crypto keyed and UDP proven by one ping from the returned server state.
    fn synced(format: VoiceFormat, udp: bool) -> (Session, CryptState) {
        let now = Instant::now();
        let mut session = Session::new(SessionConfig::default(), now);
        let version = match format {
            VoiceFormat::Legacy => proto::Version {
                version_v1: Some(0x0001_0304),
                ..Default::default()
            },
            VoiceFormat::Protobuf => proto::Version {
                version_v2: Some(1 << 48 | 5 << 32),
                ..Default::default()
            },
        };
        let mut script = vec![
            version.into(),
            proto::ChannelState {
                channel_id: Some(0),
                name: Some("Root".into()),
                ..Default::default()
            }
            .into(),
        ];
        for (s, name) in [(OWN, "me"), (TALKER, "talker")] {
            script.push(
                proto::UserState {
                    session: Some(s),
                    name: Some(name.into()),
                    channel_id: Some(0),
                    ..Default::default()
                }
                .into(),
            );
        }
        script.push(
            proto::ServerSync {
                session: Some(OWN),
                ..Default::default()
            }
            .into(),
        );
        if udp {
            script.push(
                proto::CryptSetup {
                    key: Some(KEY.to_vec().into()),
                    client_nonce: Some(CLIENT_NONCE.to_vec().into()),
                    server_nonce: Some(SERVER_NONCE.to_vec().into()),
                }
                .into(),
            );
        }
        session.handle_tcp(&frames(script), now).unwrap();
        let mut server = CryptState::new();
        server.set_key(&KEY, &SERVER_NONCE, &CLIENT_NONCE).unwrap();
        if udp {
            let mut ping = BytesMut::new();
            voice_packet::encode(
                &UdpPacket::Ping { timestamp: 1 },
                format,
                Direction::FromServer,
                &mut ping,
            )
            .unwrap();
            let mut sealed = Vec::new();
            server.encrypt(&ping, &mut sealed);
            session.handle_udp(&sealed, now);
            assert!(session.udp_working());
        }
        assert!(session.is_synced());
        while session.poll_event().is_some() {}
        while session.poll_transmit().is_some() {}
        (session, server)
    }

    fn opus(i: usize) -> Vec<u8> {
        (0..40 + i % 30).map(|j| (i * 7 + j) as u8).collect()
    }

    /// What the session should put on the wire for `send_voice(opus(i), 2, terminator, target)`.
    fn encoded(format: VoiceFormat, i: usize, terminator: bool, target: u8) -> BytesMut {
        let mut out = BytesMut::new();
        voice_packet::encode(
            &UdpPacket::Audio(VoicePacket {
                target_or_context: target,
                session: None,
                sequence: 2 * i as u64,
                payload: opus(i).into(),
                terminator,
                position: None,
            }),
            format,
            Direction::ToServer,
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn a_server_cannot_grow_the_state_without_bound() {
        let (mut session, _) = synced(VoiceFormat::Protobuf, false);
        session.config.max_users = 100;
        session.config.max_channels = 50;
        let now = Instant::now();
        let long = "é".repeat(MAX_NAME); // 2 bytes each: twice the cap
        let flood = |n: u32, users: bool| -> Vec<ControlMessage> {
            (0..n)
                .map(|i| {
                    if users {
                        proto::UserState {
                            session: Some(1000 + i),
                            name: Some(long.clone()),
                            channel_id: Some(0),
                            ..Default::default()
                        }
                        .into()
                    } else {
                        proto::ChannelState {
                            channel_id: Some(1000 + i),
                            name: Some(long.clone()),
                            ..Default::default()
                        }
                        .into()
                    }
                })
                .collect()
        };
        let extra = 5;
        session
            .handle_tcp(&frames(flood(100 + extra, true)), now)
            .unwrap();
        session
            .handle_tcp(&frames(flood(50 + extra, false)), now)
            .unwrap();
        assert_eq!(session.users().len(), 100);
        assert_eq!(session.channels().len(), 50);
        let name = &session.users()[&1000].name;
        assert!(
            name.len() <= MAX_NAME && name.chars().all(|c| c == 'é'),
            "cut at a character boundary"
        );
        let over = std::iter::from_fn(|| session.poll_event())
            .filter(|e| {
                matches!(
                    e,
                    Event::Fault {
                        kind: ErrorKind::OverLimit,
                        ..
                    }
                )
            })
            .count();
        // Two users (ours and TALKER) and the root channel were there before the flood.
        assert_eq!(over, 2 * extra as usize + 2 + 1);
        assert!(session.is_synced(), "still connected");
    }

    #[test]
    fn voice_sent_over_udp_is_the_encoded_packet_sealed() {
        for format in [VoiceFormat::Legacy, VoiceFormat::Protobuf] {
            let (mut session, _) = synced(format, true);
            let mut server = CryptState::new();
            server.set_key(&KEY, &SERVER_NONCE, &CLIENT_NONCE).unwrap();
            for i in 0..2000 {
                let (terminator, target) = (i % 10 == 9, (i % 3) as u8);
                assert!(session.send_voice(&opus(i), 2, terminator, target));
                let Some(Transmit::Udp(datagram)) = session.poll_transmit() else {
                    panic!("no datagram");
                };
                assert_eq!(session.poll_transmit(), None);
                let mut plain = Vec::new();
                server.decrypt(&datagram, &mut plain).unwrap();
                assert_eq!(
                    plain,
                    encoded(format, i, terminator, target),
                    "{format:?} {i}"
                );
            }
            assert_eq!(session.stats().udp_voice_out, 2000);
        }
    }

    #[test]
    fn voice_through_the_tunnel_is_a_udptunnel_frame() {
        for format in [VoiceFormat::Legacy, VoiceFormat::Protobuf] {
            let (mut session, _) = synced(format, false);
            for i in 0..2000 {
                assert!(session.send_voice(&opus(i), 2, false, 0));
                let mut expected = BytesMut::new();
                ControlMessage::UdpTunnel(encoded(format, i, false, 0).freeze())
                    .encode(&mut expected);
                assert_eq!(
                    session.poll_transmit(),
                    Some(Transmit::Tcp(expected.freeze()))
                );
            }
            assert_eq!(session.stats().tcp_voice_out, 2000);
        }
    }

    /// Server-to-client voice packet `i` from `TALKER`.
    fn incoming(format: VoiceFormat, i: usize) -> BytesMut {
        let mut out = BytesMut::new();
        voice_packet::encode(
            &UdpPacket::Audio(VoicePacket {
                target_or_context: 0,
                session: Some(TALKER),
                sequence: 2 * i as u64,
                payload: opus(i).into(),
                terminator: false,
                position: None,
            }),
            format,
            Direction::FromServer,
            &mut out,
        )
        .unwrap();
        out
    }

    /// Every payload received, over both paths and across many receive chunks, stays
    /// what was sent while all of them are held at once.
    #[test]
    fn received_payloads_stay_intact_while_held() {
        for format in [VoiceFormat::Legacy, VoiceFormat::Protobuf] {
            let (mut session, mut server) = synced(format, true);
            let now = Instant::now();
            let mut held = Vec::new();
            for i in 0..2000 {
                let plain = incoming(format, i);
                if i % 2 == 0 {
                    let mut sealed = Vec::new();
                    server.encrypt(&plain, &mut sealed);
                    session.handle_udp(&sealed, now);
                } else {
                    let frame = frames(vec![ControlMessage::UdpTunnel(plain.freeze())]);
                    session.handle_tcp(&frame, now).unwrap();
                }
                while let Some(ev) = session.poll_event() {
                    match ev {
                        Event::Voice {
                            session: s,
                            sequence,
                            opus,
                            path,
                            ..
                        } => {
                            assert_eq!((s, sequence), (TALKER, 2 * i as u64));
                            let expected = if i % 2 == 0 { Path::Udp } else { Path::Tcp };
                            assert_eq!(path, expected);
                            held.push(opus);
                        }
                        Event::TalkStarted { .. } => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            assert_eq!(held.len(), 2000);
            for (i, opus_in) in held.iter().enumerate() {
                assert_eq!(opus_in[..], opus(i)[..], "{format:?} packet {i}");
            }
        }
    }

    #[test]
    fn a_datagram_that_fails_decryption_leaves_nothing_behind() {
        let (mut session, mut server) = synced(VoiceFormat::Legacy, true);
        let now = Instant::now();
        let mut sealed = Vec::new();
        server.encrypt(&incoming(VoiceFormat::Legacy, 1), &mut sealed);
        let mut forged = sealed.clone();
        forged[5] ^= 1;
        session.handle_udp(&forged, now);
        assert!(matches!(
            session.poll_event(),
            Some(Event::Fault {
                kind: ErrorKind::BadCrypto,
                ..
            })
        ));
        session.handle_udp(&sealed, now);
        let voice = std::iter::from_fn(|| session.poll_event())
            .find_map(|ev| match ev {
                Event::Voice { opus, .. } => Some(opus),
                _ => None,
            })
            .expect("the authentic datagram is heard");
        assert_eq!(voice[..], opus(1)[..]);
    }
}
