//! The agent's IO: one task owns the console page's socket, the bridge's socket, the microphone
//! blocks and the speaker queue, and runs them through the [`Relay`].
//!
//! One page at a time (the voice plugin served one console): while a page is connected another
//! is refused (close 1008), so nothing else that reaches the port can end the dispatcher's call. The
//! bridge link is opened when a page connects and reopened with exponential backoff and jitter
//! (0.5 s doubling to 10 s) when it drops; the page is told in the spec's words (see
//! [`Relay::bridge_down`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use media::Channels;
use media::inbound::{FRAME, InboundStream};
use media::jitter::JitterConfig;
use media::opus::{Application, Encoder};
use media::resample::Resampler;
use muicall::audio::{Codec, Header};
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{debug, info, warn};

use crate::bridge_link::{self, BridgeSocket};
use crate::config::{AgentConfig, gain};
use crate::devices::{self, DeviceChoice, DeviceEvent, SpeakerQueue};
use crate::relay::{Action, Relay};

/// Largest WebSocket message read from the page at all; above the configured
/// `max_message_bytes` (answered with `code: 0`) and up to this, the page's socket survives.
const HARD_MESSAGE_LIMIT: usize = 1024 * 1024;
/// How long a write to the page or the bridge may wait before that socket counts as stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections that may be in their WebSocket upgrade at once.
const MAX_UPGRADING: usize = 16;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

type PageSocket = WebSocketStream<TcpStream>;

/// Runs the agent until the listener fails.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let tls = if cfg.bridge_url().starts_with("wss://") {
        Some(bridge_link::tls_config(cfg.ca_file.as_deref())?)
    } else {
        None
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen: cannot listen on {}", cfg.listen))?;
    let (mic_tx, mic_rx) = mpsc::channel(64);
    let (dev_tx, dev_rx) = mpsc::unbounded_channel();
    let speaker = SpeakerQueue::default();
    devices::start(
        DeviceChoice {
            input: cfg.input_device.clone(),
            output: cfg.output_device.clone(),
        },
        mic_tx,
        speaker.clone(),
        dev_tx,
    )?;
    let (pages_tx, pages_rx) = mpsc::channel(4);
    info!(listen = %cfg.listen, bridge = %cfg.bridge_url(), "console agent ready");
    tokio::spawn(accept(listener, pages_tx));
    let mut encoder = Encoder::new(48_000, Channels::Mono, Application::Voip)?;
    encoder.set_bitrate(cfg.opus_bitrate)?;
    let agent = Agent {
        relay: Relay::new(cfg.max_message_bytes),
        tls,
        page: None,
        bridge: None,
        connecting: None,
        retry_at: None,
        backoff: BACKOFF_MIN,
        mic: Mic {
            rate: 0,
            buf: Vec::new(),
            resampler: None,
            frame48: vec![0; FRAME],
            encoder,
            seq: 0,
            gain: gain(cfg.input_gain_db),
        },
        play: Playback {
            speaker,
            rate: 0,
            resampler: None,
            stream: None,
            source: 0,
            jitter: JitterConfig {
                min_depth_ms: cfg.jitter_min_ms,
                ..JitterConfig::default()
            },
            frame48: vec![0; FRAME],
            out: Vec::new(),
            gain: gain(cfg.output_gain_db),
            epoch: Instant::now(),
        },
        device_trouble: None,
        cfg,
    };
    agent.run(pages_rx, mic_rx, dev_rx).await;
    Ok(())
}

/// Accepts pages: the WebSocket upgrade on any path (consoles were written for the plugin's
/// address, whatever path they put after it).
async fn accept(listener: TcpListener, pages: mpsc::Sender<PageSocket>) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(HARD_MESSAGE_LIMIT))
        .max_frame_size(Some(HARD_MESSAGE_LIMIT));
    // Connections still in their upgrade are few and short: a program that opens many and
    // never speaks is refused beyond this rather than holding sockets and tasks.
    let upgrading = Arc::new(tokio::sync::Semaphore::new(MAX_UPGRADING));
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = upgrading.clone().try_acquire_owned() else {
            debug!(%from, "too many connections upgrading; refused");
            continue;
        };
        let pages = pages.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let ws = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::accept_async_with_config(tcp, Some(config)),
            )
            .await;
            match ws {
                Ok(Ok(ws)) => {
                    info!(%from, "console page connected");
                    let _ = pages.send(ws).await;
                }
                Ok(Err(e)) => debug!(%from, error = %e, "not a WebSocket"),
                Err(_) => debug!(%from, "WebSocket upgrade timed out"),
            }
        });
    }
}

struct Mic {
    /// Device rate (0 until open).
    rate: u32,
    /// Device-rate samples not yet a whole 20 ms block.
    buf: Vec<i16>,
    resampler: Option<Resampler>,
    frame48: Vec<i16>,
    encoder: Encoder,
    /// In 10 ms units, as the bridge's frames count.
    seq: u32,
    gain: f32,
}

struct Playback {
    speaker: SpeakerQueue,
    /// Device rate (0 until open).
    rate: u32,
    resampler: Option<Resampler>,
    /// The talker being played (the bridge sends the floor holder's voice only).
    stream: Option<InboundStream>,
    source: u32,
    jitter: JitterConfig,
    frame48: Vec<i16>,
    out: Vec<i16>,
    gain: f32,
    epoch: Instant,
}

struct Agent {
    cfg: AgentConfig,
    relay: Relay,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    page: Option<PageSocket>,
    bridge: Option<BridgeSocket>,
    connecting: Option<oneshot::Receiver<anyhow::Result<BridgeSocket>>>,
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
    mic: Mic,
    play: Playback,
    /// The device failure the page was last told of (told once per failure).
    device_trouble: Option<String>,
}

async fn next<S>(
    s: &mut Option<S>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn connected(
    c: &mut Option<oneshot::Receiver<anyhow::Result<BridgeSocket>>>,
) -> anyhow::Result<BridgeSocket> {
    match c {
        Some(rx) => rx
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("connect task ended"))),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Agent {
    async fn run(
        mut self,
        mut pages: mpsc::Receiver<PageSocket>,
        mut mic: mpsc::Receiver<Vec<i16>>,
        mut devices: mpsc::UnboundedReceiver<DeviceEvent>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(ws) = pages.recv() => self.new_page(ws).await,
                msg = next(&mut self.page) => self.page_message(msg).await,
                msg = next(&mut self.bridge) => self.bridge_message(msg).await,
                res = connected(&mut self.connecting) => {
                    self.connecting = None;
                    self.bridge_connected(res).await;
                }
                _ = sleep_until(self.retry_at) => {
                    self.retry_at = None;
                    self.start_connect();
                }
                Some(block) = mic.recv() => self.mic_block(block).await,
                _ = tick.tick() => self.play_tick(),
                Some(ev) = devices.recv() => self.device_event(ev).await,
            }
        }
    }

    async fn new_page(&mut self, mut ws: PageSocket) {
        // The page in use keeps the agent: whatever else reaches the port (another program on
        // the PC, a web page in its browser) must not end the dispatcher's call. A page that
        // reloads closes its socket first.
        if self.page.is_some() {
            warn!("a second console page was refused: one is connected");
            let _ = tokio::time::timeout(
                WRITE_TIMEOUT,
                ws.close(Some(CloseFrame {
                    code: CloseCode::Policy,
                    reason: "another console page is connected to this agent".into(),
                })),
            )
            .await;
            return;
        }
        self.drop_bridge();
        self.relay = Relay::new(self.cfg.max_message_bytes);
        self.page = Some(ws);
        self.backoff = BACKOFF_MIN;
        self.start_connect();
    }

    /// Closes the bridge link (the bridge ends the page's call and frees its floor).
    fn drop_bridge(&mut self) {
        self.bridge = None;
        self.connecting = None;
        self.retry_at = None;
        self.play.speaker.clear();
        self.play.stream = None;
    }

    fn start_connect(&mut self) {
        if self.page.is_none() || self.bridge.is_some() || self.connecting.is_some() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let url = self.cfg.bridge_url().to_owned();
        let tls = self.tls.clone();
        tokio::spawn(async move {
            let _ = tx.send(bridge_link::connect(&url, tls.as_ref()).await);
        });
        self.connecting = Some(rx);
    }

    async fn bridge_connected(&mut self, res: anyhow::Result<BridgeSocket>) {
        match res {
            Ok(ws) => {
                info!(bridge = %self.cfg.bridge_url(), "connected to the bridge");
                self.bridge = Some(ws);
                self.backoff = BACKOFF_MIN;
                let mut out = Vec::new();
                self.relay.bridge_up(&mut out);
                self.apply(out).await;
            }
            Err(e) => {
                warn!(bridge = %self.cfg.bridge_url(), error = %format!("{e:#}"), retry_in_ms = self.backoff.as_millis() as u64, "cannot reach the bridge");
                self.schedule_retry();
            }
        }
    }

    fn schedule_retry(&mut self) {
        // Jitter: consoles of a whole control room must not all come back in the same instant.
        let jittered = self.backoff.mul_f64(rand::rng().random_range(0.5..1.0));
        self.retry_at = Some(tokio::time::Instant::now() + jittered);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    async fn page_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        match msg {
            Some(Ok(Message::Text(t))) => {
                let mut out = Vec::new();
                self.relay.console_text(t.as_str(), &mut out);
                self.apply(out).await;
            }
            // The spec's page sends no audio; the microphone is the agent's.
            Some(Ok(Message::Binary(_))) => debug!("binary message from the page ignored"),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => self.page_gone("closed").await,
            Some(Err(e)) => {
                warn!(error = %e, "console page socket failed");
                if let Some(mut page) = self.page.take() {
                    let _ = page
                        .close(Some(CloseFrame {
                            code: CloseCode::Size,
                            reason: "message too large or malformed".into(),
                        }))
                        .await;
                }
                self.page_gone("socket error").await;
            }
        }
    }

    async fn page_gone(&mut self, why: &str) {
        info!(why, "console page disconnected");
        self.page = None;
        if let Some(mut b) = self.bridge.take() {
            let _ = b.close(None).await;
        }
        self.drop_bridge();
        self.relay = Relay::new(self.cfg.max_message_bytes);
    }

    async fn bridge_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        match msg {
            Some(Ok(Message::Text(t))) => {
                let mut out = Vec::new();
                self.relay.bridge_text(t.as_str(), &mut out);
                self.apply(out).await;
            }
            Some(Ok(Message::Binary(b))) => self.play_packet(b),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map_or_else(|| "closed".to_string(), |f| f.reason.to_string());
                self.bridge_lost(&why).await;
            }
            None => self.bridge_lost("connection closed").await,
            Some(Err(e)) => self.bridge_lost(&e.to_string()).await,
        }
    }

    async fn bridge_lost(&mut self, why: &str) {
        warn!(why, "lost the bridge; reconnecting");
        self.drop_bridge();
        let mut out = Vec::new();
        self.relay.bridge_down(why, &mut out);
        self.apply(out).await;
        self.schedule_retry();
    }

    async fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::ToBridge(t) => self.send_bridge(Message::text(t)).await,
                Action::ToConsole(t) => self.send_page(Message::text(t)).await,
                Action::Mic(on) => self.mic_switched(on).await,
                Action::SpeakerReset => {
                    self.play.speaker.clear();
                    self.play.stream = None;
                }
            }
        }
    }

    async fn send_bridge(&mut self, msg: Message) {
        let Some(b) = self.bridge.as_mut() else {
            return;
        };
        match tokio::time::timeout(WRITE_TIMEOUT, b.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => Box::pin(self.bridge_lost(&e.to_string())).await,
            Err(_) => Box::pin(self.bridge_lost("the bridge stopped reading")).await,
        }
    }

    async fn send_page(&mut self, msg: Message) {
        let Some(p) = self.page.as_mut() else { return };
        match tokio::time::timeout(WRITE_TIMEOUT, p.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.page_gone("write failed").await,
            Err(_) => self.page_gone("the page stopped reading").await,
        }
    }

    // ---- microphone → bridge ---------------------------------------------------------------

    async fn mic_switched(&mut self, on: bool) {
        info!(on, "microphone to the bridge");
        if on {
            self.mic.buf.clear();
            let _ = self.mic.encoder.reset();
        } else {
            // A last frame with the flag ends the talk burst at once on the PTT side.
            self.mic.frame48.fill(0);
            self.send_mic_frame(true).await;
        }
    }

    async fn mic_block(&mut self, block: Vec<i16>) {
        if self.mic.rate == 0 {
            return;
        }
        let per_frame = self.mic.rate as usize / 50;
        self.mic.buf.extend_from_slice(&block);
        let mut start = 0;
        while self.mic.buf.len() - start >= per_frame {
            let frame = &self.mic.buf[start..start + per_frame];
            start += per_frame;
            match self.mic.resampler.as_mut() {
                Some(r) => {
                    if r.process(frame, &mut self.mic.frame48).is_err() {
                        continue;
                    }
                }
                None => self.mic.frame48.copy_from_slice(frame),
            }
            if self.relay.mic() && self.bridge.is_some() {
                let g = self.mic.gain;
                for s in &mut self.mic.frame48 {
                    *s = (f32::from(*s) * g).clamp(-32768.0, 32767.0) as i16;
                }
                self.send_mic_frame(false).await;
            }
        }
        self.mic.buf.drain(..start);
    }

    async fn send_mic_frame(&mut self, last: bool) {
        if self.bridge.is_none() {
            return;
        }
        let Ok(opus) = self.mic.encoder.encode(&self.mic.frame48) else {
            return;
        };
        let header = Header {
            codec: Codec::Opus,
            last,
            seq: self.mic.seq,
            source: 0,
        };
        self.mic.seq = self.mic.seq.wrapping_add(2);
        self.send_bridge(Message::binary(header.frame(&opus))).await;
    }

    // ---- bridge → speaker --------------------------------------------------------------------

    fn play_packet(&mut self, frame: Bytes) {
        let Ok((header, payload)) = Header::parse(&frame) else {
            debug!("malformed audio frame from the bridge");
            return;
        };
        if header.codec != Codec::Opus {
            return;
        }
        let p = &mut self.play;
        if p.stream.is_none() || p.source != header.source {
            p.source = header.source;
            p.stream = InboundStream::new(p.jitter, Channels::Mono).ok();
        }
        let now_us = p.epoch.elapsed().as_micros() as u64;
        if let Some(s) = p.stream.as_mut() {
            s.push(
                header.seq.wrapping_mul(480),
                // The payload is the frame after its header: shared, not copied.
                frame.slice(frame.len() - payload.len()..),
                now_us,
            );
        }
    }

    fn play_tick(&mut self) {
        let p = &mut self.play;
        if p.rate == 0 {
            return;
        }
        let Some(stream) = p.stream.as_mut() else {
            return;
        };
        let now_us = p.epoch.elapsed().as_micros() as u64;
        if stream.pull(now_us, &mut p.frame48).is_err() {
            return;
        }
        for s in &mut p.frame48 {
            *s = (f32::from(*s) * p.gain).clamp(-32768.0, 32767.0) as i16;
        }
        match p.resampler.as_mut() {
            Some(r) => {
                p.out.resize(p.rate as usize / 50, 0);
                if r.process(&p.frame48, &mut p.out).is_err() {
                    return;
                }
                p.speaker.push(&p.out, p.rate);
            }
            None => p.speaker.push(&p.frame48, p.rate),
        }
    }

    // ---- devices ---------------------------------------------------------------------------

    async fn device_event(&mut self, ev: DeviceEvent) {
        match ev {
            DeviceEvent::InputOpen(rate) => {
                info!(rate, "microphone open");
                self.mic.rate = rate;
                self.mic.buf.clear();
                self.mic.resampler = (rate != 48_000)
                    .then(|| Resampler::new(rate, 48_000, Channels::Mono).ok())
                    .flatten();
                self.device_trouble = None;
            }
            DeviceEvent::OutputOpen(rate) => {
                info!(rate, "speaker open");
                self.play.rate = rate;
                self.play.resampler = (rate != 48_000)
                    .then(|| Resampler::new(48_000, rate, Channels::Mono).ok())
                    .flatten();
            }
            DeviceEvent::Failed(why) => {
                self.mic.rate = 0;
                self.play.rate = 0;
                if self.device_trouble.as_deref() != Some(&why) {
                    warn!(why = %why, retry_in_s = devices::RETRY.as_secs(), "sound device failed");
                    // The bridge's audio reply shape (its extension): the page knows no better one.
                    let msg =
                        muicall::Reply::new("audio", 0, format!("sound device: {why}; retrying"));
                    let text = serde_json::to_string(&msg).unwrap_or_default();
                    self.send_page(Message::text(text)).await;
                    self.device_trouble = Some(why);
                }
            }
        }
    }
}
