//! A thin tokio driver around [`Session`]: TLS over TCP, UDP voice, timers, and
//! reconnection with backoff. All protocol decisions live in the session.
//!
//! [`spawn`] returns a [`ClientHandle`] for commands and outgoing voice, and a
//! receiver of [`ClientEvent`]s. Voice in both directions never waits: outgoing
//! voice is dropped when the queue is full, incoming voice events are dropped
//! (and counted) when the consumer lags, while control events apply backpressure.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use logsafe::{RateLimit, esc};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::message::ControlMessage;
use crate::session::{Channel, Event, Session, SessionConfig, SessionError, Stats, Transmit, User};
use crate::tls::{ServerTrust, client_config};

/// Everything needed to keep one account connected to one server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server host name or address.
    pub host: String,
    /// Server TCP port (and UDP port unless `udp_port` is set).
    pub port: u16,
    /// How the server certificate is trusted.
    pub trust: ServerTrust,
    /// Protocol settings: account, channel, timers.
    pub session: SessionConfig,
    /// Server UDP port when it differs from `port`.
    pub udp_port: Option<u16>,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Reconnect after losing the connection (a probe may not want to).
    pub reconnect: bool,
    /// Limit for TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// Limit from connect to `ServerSync`.
    pub sync_timeout: Duration,
    /// The connection is dead when the server sent nothing for this long (it answers our pings).
    pub idle_timeout: Duration,
    /// Stay off the server until [`Command::GoOnline`].
    pub start_offline: bool,
}

impl ClientConfig {
    /// A configuration with default timers for `host:port`.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        trust: ServerTrust,
        session: SessionConfig,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            trust,
            session,
            udp_port: None,
            backoff: Backoff::default(),
            reconnect: true,
            connect_timeout: Duration::from_secs(5),
            sync_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(20),
            start_offline: false,
        }
    }
}

/// What the driver reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Connection attempt number `attempt` (0 = first) is starting.
    Connecting {
        /// Attempts since the last successful sync.
        attempt: u32,
    },
    /// Something from the protocol session.
    Session(Event),
    /// The connection ended.
    Disconnected {
        /// Why, for people.
        reason: String,
        /// When the next attempt starts, if one will.
        retry_in: Option<Duration>,
    },
    /// The driver has stopped for good.
    Stopped,
}

/// Commands for the driver.
#[derive(Debug)]
pub enum Command {
    /// Join (and on reconnect, rejoin) the channel at this path.
    JoinChannel(String),
    /// Text to a channel (`None`: ours).
    ChannelText {
        /// Channel id.
        channel: Option<u32>,
        /// Message.
        message: String,
    },
    /// Private text to users.
    PrivateText {
        /// Target sessions.
        sessions: Vec<u32>,
        /// Message.
        message: String,
    },
    /// Any control message.
    Send(Box<ControlMessage>),
    /// Close the connection and stay off the server until [`Command::GoOnline`] (the account is
    /// not ours to use now, e.g. another bridge node holds its lease).
    GoOffline,
    /// Connect again after [`Command::GoOffline`] (or [`ClientConfig::start_offline`]).
    GoOnline,
    /// Close the connection and stop.
    Shutdown,
}

/// One outgoing Opus packet.
#[derive(Debug, Clone)]
pub struct OutgoingVoice {
    /// The Opus packet.
    pub opus: Bytes,
    /// Its duration in 10 ms units (2 for a 20 ms packet).
    pub frames_10ms: u32,
    /// Last packet of a talk burst.
    pub terminator: bool,
    /// Voice target: 0 = our channel, 1..=30 registered targets.
    pub target: u8,
}

/// Connection state for health reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// First connection attempt under way.
    Connecting,
    /// Synced with the server.
    Connected,
    /// Lost; retrying.
    Reconnecting {
        /// Why the last connection ended.
        reason: String,
    },
    /// Off the server on purpose until told to go online.
    Offline,
    /// Stopped for good.
    Stopped,
}

/// A consistent view of the connection, refreshed after every change of state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Connection state.
    pub state: LinkState,
    /// Our session id.
    pub own_session: Option<u32>,
    /// Our channel id.
    pub own_channel: Option<u32>,
    /// Channel tree.
    pub channels: BTreeMap<u32, Channel>,
    /// Users by session.
    pub users: HashMap<u32, User>,
    /// Whether UDP voice works.
    pub udp_working: bool,
    /// Session counters.
    pub stats: Stats,
    /// Reconnects since start.
    pub reconnects: u64,
}

impl Snapshot {
    fn new() -> Self {
        Self {
            state: LinkState::Connecting,
            own_session: None,
            own_channel: None,
            channels: BTreeMap::new(),
            users: HashMap::new(),
            udp_working: false,
            stats: Stats::default(),
            reconnects: 0,
        }
    }

    /// Path of a channel from the root.
    pub fn channel_path(&self, id: u32) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = self.channels.get(&id)?;
        for _ in 0..64 {
            let Some(parent) = cur.parent else { break };
            parts.push(cur.name.clone());
            cur = self.channels.get(&parent)?;
        }
        parts.reverse();
        Some(parts.join("/"))
    }
}

/// Handle to a running client; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    commands: mpsc::Sender<Command>,
    voice: mpsc::Sender<OutgoingVoice>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    dropped_voice_out: Arc<AtomicU64>,
    dropped_voice_in: Arc<AtomicU64>,
    sending: Arc<Sending>,
}

/// The outgoing talk burst, as [`ClientHandle::send_voice`] saw it.
#[derive(Debug)]
struct Sending {
    /// What the times count from.
    epoch: Instant,
    /// When the last voice packet was queued, µs since `epoch` (0: never).
    last_us: AtomicU64,
    /// Whether that packet ended its burst.
    ended: AtomicBool,
}

impl ClientHandle {
    /// Sends a command; fails only when the client has stopped.
    pub async fn command(&self, cmd: Command) -> Result<(), Stopped> {
        self.commands.send(cmd).await.map_err(|_| Stopped)
    }

    /// Queues one voice packet; never waits. Returns `false` when it was dropped.
    pub fn send_voice(&self, voice: OutgoingVoice) -> bool {
        let terminator = voice.terminator;
        let at = self.sending.epoch.elapsed().as_micros().max(1) as u64;
        self.sending.last_us.store(at, Ordering::Relaxed);
        self.sending.ended.store(terminator, Ordering::Relaxed);
        let ok = self.voice.try_send(voice).is_ok();
        if !ok {
            self.dropped_voice_out.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Whether an outgoing talk burst is in progress: a voice packet queued within `silence`
    /// that did not end its burst (many senders never send the terminator; their bursts end
    /// on silence, as a receiver's would).
    pub fn sending(&self, silence: Duration) -> bool {
        let last = self.sending.last_us.load(Ordering::Relaxed);
        if last == 0 || self.sending.ended.load(Ordering::Relaxed) {
            return false;
        }
        let now = self.sending.epoch.elapsed().as_micros() as u64;
        now.saturating_sub(last) < silence.as_micros() as u64
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes on every snapshot change.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Outgoing voice packets dropped because the driver's queue was full.
    pub fn dropped_voice_out(&self) -> u64 {
        self.dropped_voice_out.load(Ordering::Relaxed)
    }

    /// Incoming voice events dropped because the consumer lagged.
    pub fn dropped_voice_in(&self) -> u64 {
        self.dropped_voice_in.load(Ordering::Relaxed)
    }
}

/// The client has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("PTT client stopped")]
pub struct Stopped;

const EVENT_QUEUE: usize = 4096;
const VOICE_QUEUE: usize = 64;

/// Starts a client task on the current tokio runtime.
pub fn spawn(config: ClientConfig) -> (ClientHandle, mpsc::Receiver<ClientEvent>) {
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (voice_tx, voice_rx) = mpsc::channel(VOICE_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let mut first = Snapshot::new();
    if config.start_offline {
        // Offline from the first look, so nobody reading it (a cluster standby's upstream
        // registration) acts on a connection that is never going to be made.
        first.state = LinkState::Offline;
    }
    let (snap_tx, snap_rx) = watch::channel(Arc::new(first));
    let dropped_in = Arc::new(AtomicU64::new(0));
    let handle = ClientHandle {
        commands: cmd_tx,
        voice: voice_tx,
        snapshot: snap_rx,
        dropped_voice_out: Arc::new(AtomicU64::new(0)),
        dropped_voice_in: dropped_in.clone(),
        sending: Arc::new(Sending {
            epoch: Instant::now(),
            last_us: AtomicU64::new(0),
            ended: AtomicBool::new(true),
        }),
    };
    let driver = Driver {
        offline: config.start_offline,
        tls: client_config(config.trust.clone()),
        desired_channel: config.session.channel.clone(),
        config,
        commands: cmd_rx,
        voice: voice_rx,
        events: event_tx,
        snapshot: snap_tx,
        dropped_voice_in: dropped_in,
    };
    tokio::spawn(driver.run());
    (handle, event_rx)
}

enum Outcome {
    Shutdown,
    Offline,
    Closed { reason: String, synced: bool },
}

struct Driver {
    config: ClientConfig,
    /// Told to stay off the server.
    offline: bool,
    tls: Arc<rustls::ClientConfig>,
    desired_channel: Option<String>,
    commands: mpsc::Receiver<Command>,
    voice: mpsc::Receiver<OutgoingVoice>,
    events: mpsc::Sender<ClientEvent>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    dropped_voice_in: Arc<AtomicU64>,
}

type Writer = WriteHalf<TlsStream<TcpStream>>;

impl Driver {
    async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            if self.offline {
                self.update_snapshot(|s| s.state = LinkState::Offline);
                if !self.wait_online().await {
                    break;
                }
                attempt = 0;
            }
            if self
                .emit(ClientEvent::Connecting { attempt })
                .await
                .is_err()
            {
                return;
            }
            let (reason, synced) = match self.connection().await {
                Outcome::Shutdown => break,
                Outcome::Offline => {
                    info!(server = %self.config.host, "PTT account taken offline");
                    self.update_snapshot(|s| {
                        s.state = LinkState::Offline;
                        s.own_session = None;
                        s.own_channel = None;
                        s.users.clear();
                        s.udp_working = false;
                    });
                    let reason = "taken offline".to_string();
                    let ev = ClientEvent::Disconnected {
                        reason,
                        retry_in: None,
                    };
                    if self.emit(ev).await.is_err() {
                        return;
                    }
                    continue;
                }
                Outcome::Closed { reason, synced } => (reason, synced),
            };
            if synced {
                attempt = 0;
            }
            let retry_in = self
                .config
                .reconnect
                .then(|| self.config.backoff.delay(attempt));
            attempt = attempt.saturating_add(1);
            warn!(server = %self.config.host, port = self.config.port, reason = %esc(&reason), ?retry_in, "PTT connection lost");
            self.update_snapshot(|s| {
                s.state = LinkState::Reconnecting {
                    reason: reason.clone(),
                };
                s.own_session = None;
                s.own_channel = None;
                s.users.clear();
                s.udp_working = false;
                s.reconnects += 1;
            });
            if self
                .emit(ClientEvent::Disconnected { reason, retry_in })
                .await
                .is_err()
            {
                return;
            }
            let Some(delay) = retry_in else { break };
            if !self.wait(delay).await {
                break;
            }
        }
        self.update_snapshot(|s| s.state = LinkState::Stopped);
        let _ = self.events.send(ClientEvent::Stopped).await;
    }

    /// Waits out a backoff delay while still taking commands; `false` means stop.
    async fn wait(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => return false,
                    Some(Command::JoinChannel(path)) => self.desired_channel = Some(path),
                    Some(Command::GoOffline) => {
                        self.offline = true;
                        return true;
                    }
                    Some(other) => {
                        debug!(other = %esc(format_args!("{other:?}")), "dropping command while disconnected")
                    }
                },
                // Voice while disconnected is stale by the time we are back: drop it.
                Some(_) = self.voice.recv() => {}
            }
        }
    }

    /// Stays off the server until told to go online; `false` means stop.
    async fn wait_online(&mut self) -> bool {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => return false,
                    Some(Command::GoOnline) => {
                        self.offline = false;
                        return true;
                    }
                    Some(Command::JoinChannel(path)) => self.desired_channel = Some(path),
                    Some(other) => {
                        debug!(other = %esc(format_args!("{other:?}")), "dropping command while offline")
                    }
                },
                Some(_) = self.voice.recv() => {}
            }
        }
    }

    async fn emit(&self, ev: ClientEvent) -> Result<(), Stopped> {
        self.events.send(ev).await.map_err(|_| Stopped)
    }

    fn update_snapshot(&self, f: impl FnOnce(&mut Snapshot)) {
        self.snapshot.send_modify(|arc| f(Arc::make_mut(arc)));
    }

    async fn connection(&mut self) -> Outcome {
        let closed = |reason: String| Outcome::Closed {
            reason,
            synced: false,
        };
        let (reader, mut writer, udp, addr) = match self.connect().await {
            Ok(parts) => parts,
            Err(reason) => return closed(reason),
        };
        let (mut reader, udp) = (reader, udp);
        info!(
            server = %self.config.host,
            %addr,
            account = %logsafe::esc(&self.config.session.username).limit(64),
            "PTT connected, authenticating"
        );
        let mut session_config = self.config.session.clone();
        session_config.channel = self.desired_channel.clone();
        let start = Instant::now();
        let mut session = Session::new(session_config, start);
        let mut last_rx = start;
        // Reused for every read of this connection, so a segment or datagram costs no
        // allocation here; the session writes what it keeps into its own arenas.
        let mut tcp_buf = vec![0u8; 16 * 1024];
        let mut udp_buf = vec![0u8; 2048];
        let outcome = loop {
            if let Err(e) = flush(&mut session, &mut writer, udp.as_ref()).await {
                break closed(format!("write failed: {e}"));
            }
            if let Err(stopped) = self.forward_events(&mut session).await {
                let _ = stopped;
                break Outcome::Shutdown;
            }
            let now = Instant::now();
            let mut wake = session
                .poll_timeout()
                .unwrap_or(now + Duration::from_secs(1));
            wake = wake.min(last_rx + self.config.idle_timeout);
            if !session.is_synced() {
                wake = wake.min(start + self.config.sync_timeout);
            }
            tokio::select! {
                read = reader.read(&mut tcp_buf) => match read {
                    Ok(0) => break closed("server closed the connection".into()),
                    Ok(n) => {
                        last_rx = Instant::now();
                        if let Err(e) = session.handle_tcp(&tcp_buf[..n], last_rx) {
                            let _ = self.forward_events(&mut session).await;
                            break closed(match e {
                                SessionError::Rejected(r) => format!("rejected: {r}"),
                                other => format!("protocol error: {other}"),
                            });
                        }
                    }
                    Err(e) => break closed(format!("read failed: {e}")),
                },
                Some(n) = recv_udp(udp.as_ref(), &mut udp_buf) => {
                    session.handle_udp(&udp_buf[..n], Instant::now());
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if now.duration_since(last_rx) >= self.config.idle_timeout {
                        break closed(format!("server silent for {:?}", self.config.idle_timeout));
                    }
                    if !session.is_synced() && now.duration_since(start) >= self.config.sync_timeout {
                        break closed(format!("no ServerSync within {:?}", self.config.sync_timeout));
                    }
                    session.handle_timeout(now);
                    let stats = session.stats();
                    let udp_working = session.udp_working();
                    self.update_snapshot(|s| { s.stats = stats; s.udp_working = udp_working; });
                }
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => {
                        let _ = writer.shutdown().await;
                        break Outcome::Shutdown;
                    }
                    Some(Command::GoOffline) => {
                        let _ = writer.shutdown().await;
                        self.offline = true;
                        break Outcome::Offline;
                    }
                    Some(cmd) => self.apply(&mut session, cmd),
                },
                Some(v) = self.voice.recv() => {
                    session.send_voice(&v.opus, v.frames_10ms, v.terminator, v.target);
                }
            }
        };
        let synced = session.is_synced();
        match outcome {
            Outcome::Closed { reason, .. } => Outcome::Closed { reason, synced },
            shutdown => shutdown,
        }
    }

    fn apply(&mut self, session: &mut Session, cmd: Command) {
        match cmd {
            Command::JoinChannel(path) => {
                self.desired_channel = Some(path.clone());
                session.join_channel(&path);
            }
            Command::ChannelText { channel, message } => {
                if !session.send_channel_text(channel, &message) {
                    warn!("text message dropped: not in a channel yet");
                }
            }
            Command::PrivateText { sessions, message } => {
                session.send_private_text(sessions, &message)
            }
            Command::Send(msg) => session.send(*msg),
            Command::Shutdown | Command::GoOffline | Command::GoOnline => {}
        }
    }

    /// Passes session events on and keeps the snapshot current.
    async fn forward_events(&mut self, session: &mut Session) -> Result<(), Stopped> {
        let mut changed = false;
        while let Some(ev) = session.poll_event() {
            match &ev {
                Event::Voice { .. } => {
                    // Audio must not wait for a slow consumer; a lost packet is concealed downstream.
                    if self.events.try_send(ClientEvent::Session(ev)).is_err() {
                        if self.events.is_closed() {
                            return Err(Stopped);
                        }
                        self.dropped_voice_in.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                Event::Fault { kind, detail } => {
                    // Garbage datagrams (a spoofed source will do) and bad messages, as many as
                    // anyone likes to send: at most so many lines per window, process-wide.
                    static FAULT: RateLimit = RateLimit::warn("PTT protocol fault");
                    if FAULT.allow() {
                        warn!(kind = kind.as_str(), detail = %esc(detail), "PTT protocol fault");
                    }
                }
                Event::Synced { session: own, .. } => {
                    info!(server = %self.config.host, session = own, "PTT session synced");
                }
                Event::TalkStarted { .. } | Event::TalkStopped { .. } | Event::Text { .. } => {}
                _ => changed = true,
            }
            if matches!(
                ev,
                Event::Synced { .. } | Event::InChannel { .. } | Event::UdpChanged { .. }
            ) {
                changed = true;
            }
            self.emit(ClientEvent::Session(ev)).await?;
        }
        if changed {
            let synced = session.is_synced();
            self.update_snapshot(|s| {
                if synced {
                    s.state = LinkState::Connected;
                }
                s.own_session = session.own_session();
                s.own_channel = session.own_channel();
                s.channels = session.channels().clone();
                s.users = session.users().clone();
                s.udp_working = session.udp_working();
                s.stats = session.stats();
            });
        }
        Ok(())
    }

    async fn connect(
        &self,
    ) -> Result<
        (
            tokio::io::ReadHalf<TlsStream<TcpStream>>,
            Writer,
            Option<UdpSocket>,
            SocketAddr,
        ),
        String,
    > {
        let cfg = &self.config;
        let limit = cfg.connect_timeout;
        let addr = tokio::net::lookup_host((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", cfg.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", cfg.host))?;
        let tcp = tokio::time::timeout(limit, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect to {addr} timed out"))?
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(cfg.host.clone())
            .map_err(|e| format!("bad server name {}: {e}", cfg.host))?;
        let tls = tokio::time::timeout(
            limit,
            TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| format!("TLS handshake with {addr} timed out"))?
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        let udp = if cfg.session.udp {
            let bind: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let target = SocketAddr::new(addr.ip(), cfg.udp_port.unwrap_or(cfg.port));
            match UdpSocket::bind(bind).await {
                Ok(sock) => match sock.connect(target).await {
                    Ok(()) => Some(sock),
                    Err(e) => {
                        warn!("UDP voice unavailable, using the TCP tunnel: {e}");
                        None
                    }
                },
                Err(e) => {
                    warn!("UDP voice unavailable, using the TCP tunnel: {e}");
                    None
                }
            }
        } else {
            None
        };
        let (reader, writer) = tokio::io::split(tls);
        Ok((reader, writer, udp, addr))
    }
}

async fn flush(
    session: &mut Session,
    writer: &mut Writer,
    udp: Option<&UdpSocket>,
) -> std::io::Result<()> {
    let mut wrote = false;
    while let Some(t) = session.poll_transmit() {
        match t {
            Transmit::Tcp(bytes) => {
                writer.write_all(&bytes).await?;
                wrote = true;
            }
            Transmit::Udp(datagram) => {
                if let Some(sock) = udp {
                    // A refused or full UDP send is not fatal: the session falls back to TCP.
                    let _ = sock.try_send(&datagram);
                }
            }
        }
    }
    if wrote {
        writer.flush().await?;
    }
    Ok(())
}

/// Next datagram, or never when there is no socket. Errors (ICMP unreachable) are skipped.
async fn recv_udp(udp: Option<&UdpSocket>, buf: &mut [u8]) -> Option<usize> {
    let Some(sock) = udp else {
        return std::future::pending().await;
    };
    loop {
        match sock.recv(buf).await {
            Ok(n) => return Some(n),
            Err(e) => {
                debug!("UDP receive error: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(terminator: bool) -> OutgoingVoice {
        OutgoingVoice {
            opus: Bytes::from_static(&[0xf8, 0xff, 0xfe]),
            frames_10ms: 2,
            terminator,
            target: 0,
        }
    }

    /// An outgoing burst is in progress from its first packet until its terminator, or until
    /// it has been silent for the given time (a sender that never terminates).
    #[tokio::test]
    async fn sending_is_an_unterminated_burst_not_yet_silent() {
        let mut config = ClientConfig::new(
            "127.0.0.1",
            9,
            ServerTrust::AcceptInvalid,
            SessionConfig::default(),
        );
        config.start_offline = true;
        let (handle, _events) = spawn(config);
        let long = Duration::from_secs(3600);
        assert!(!handle.sending(long), "nothing sent yet");
        handle.send_voice(voice(false));
        assert!(handle.sending(long));
        assert!(
            !handle.sending(Duration::ZERO),
            "silent for longer than that"
        );
        handle.send_voice(voice(true));
        assert!(!handle.sending(long), "the terminator ended it");
        handle.send_voice(voice(false));
        assert!(handle.sending(long), "the next burst");
    }
}
