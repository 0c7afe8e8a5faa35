//! `pttbridge probe`: a diagnostic PTT client. It joins a channel, optionally plays a
//! WAV as Opus voice in real time and sends a text, records what it hears (mixed
//! and per speaker) and prints one JSON object per line for everything that happens.
//! Operators use it to check a PTT server; the tests use it as the bridge's voice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use media::Channels;
use media::opus::{Application, Decoder, Encoder};
use ptt::client::{self, ClientConfig, ClientEvent, ClientHandle, Command, OutgoingVoice};
use ptt::session::{Event, SessionConfig};
use ptt::tls::{ServerTrust, parse_fingerprint};
use serde_json::{Value, json};

use crate::wav::{RATE, read_mono_48k, write_mono_48k};

/// Samples in one 20 ms frame at 48 kHz.
const FRAME: usize = 960;
/// Samples per 10 ms sequence unit.
const SEQ_UNIT: usize = 480;
/// Opus bitrate for played audio: fits murmurd's default 72 kb/s limit with packet overhead.
const BITRATE: i32 = 48_000;

/// Probe options, as given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeOptions {
    /// PTT server as HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// Account name.
    #[arg(long)]
    pub user: String,
    /// Password.
    #[arg(long, default_value = "")]
    pub password: String,
    /// Channel path to join ("North" or "North/Sub").
    #[arg(long)]
    pub channel: Option<String>,
    /// WAV file to speak (16-bit PCM; any rate, mono or stereo).
    #[arg(long)]
    pub play: Option<PathBuf>,
    /// Record what is heard to this WAV (plus one file per speaker: `out.<speaker>.wav`).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Seconds to stay (default: length of --play + 2, else 5).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Text message to send to the channel once joined.
    #[arg(long)]
    pub text: Option<String>,
    /// SHA-256 fingerprint of the server certificate.
    #[arg(
        long,
        conflicts_with = "insecure",
        required_unless_present = "insecure"
    )]
    pub fingerprint: Option<String>,
    /// Accept any server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Use only the TCP tunnel for voice.
    #[arg(long)]
    pub no_udp: bool,
    /// Server UDP port, if different from the TCP port (tests point it at a black hole to block UDP).
    #[arg(long)]
    pub udp_port: Option<u16>,
}

impl ProbeOptions {
    /// How to trust the server: the pinned fingerprint, or anything with `--insecure`.
    pub fn trust(&self) -> anyhow::Result<ServerTrust> {
        match &self.fingerprint {
            Some(fp) if !self.insecure => Ok(ServerTrust::Pinned(
                parse_fingerprint(fp).map_err(|e| anyhow::anyhow!("--fingerprint: {e}"))?,
            )),
            None if self.insecure => Ok(ServerTrust::AcceptInvalid),
            _ => bail!("pass exactly one of --fingerprint SHA256 or --insecure"),
        }
    }
}

fn emit(v: Value) {
    println!("{v}");
}

/// Runs the probe; returns an error (after printing it as JSON) when the check failed.
pub async fn run(opts: ProbeOptions) -> anyhow::Result<()> {
    let result = probe(&opts).await;
    if let Err(e) = &result {
        emit(json!({ "event": "error", "message": format!("{e:#}") }));
    }
    result
}

async fn probe(opts: &ProbeOptions) -> anyhow::Result<()> {
    let (host, port) = split_host_port(&opts.server)?;
    let audio = match &opts.play {
        Some(p) => Some(read_mono_48k(p)?),
        None => None,
    };
    let play_secs = audio
        .as_ref()
        .map_or(0.0, |a| a.len() as f64 / f64::from(RATE));
    let seconds = opts.seconds.unwrap_or(if audio.is_some() {
        play_secs + 2.0
    } else {
        5.0
    });
    let session = SessionConfig {
        username: opts.user.clone(),
        password: opts.password.clone(),
        channel: opts.channel.clone(),
        udp: !opts.no_udp,
        ..SessionConfig::default()
    };
    let trust = opts.trust()?;
    let mut cc = ClientConfig::new(host.clone(), port, trust.clone(), session);
    cc.reconnect = false;
    cc.udp_port = opts.udp_port;
    let started = Instant::now();
    emit(json!({ "event": "connecting", "server": opts.server, "user": opts.user }));
    // What to pin: the server's certificate, seen before the session's own handshake, so it is
    // printed even when a wrong pin makes that handshake fail.
    match server_fingerprint(&host, port).await {
        Ok(fp) => emit(json!({
            "event": "certificate",
            "fingerprint": ptt::tls::format_fingerprint(&fp),
            "pinned": match &trust {
                ServerTrust::Pinned(pin) => Value::Bool(*pin == fp),
                ServerTrust::AcceptInvalid => Value::Null,
            },
        })),
        Err(e) => emit(json!({ "event": "error", "message": format!("TLS: {e:#}") })),
    }
    let (handle, mut events) = client::spawn(cc);

    // Phase 1: connected and in the channel.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut recorder = Recorder::new(started);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("timed out waiting to join the channel")?
            .context("client stopped")?;
        let done = report(&ev, &handle, &mut recorder, opts);
        if let ClientEvent::Disconnected { reason, .. } = &ev {
            bail!("disconnected: {reason}");
        }
        if let ClientEvent::Session(Event::JoinFailed { path, reason }) = &ev {
            bail!("cannot join {path:?}: {reason}");
        }
        if done {
            break;
        }
    }
    emit(json!({ "event": "ready", "ms": started.elapsed().as_millis() as u64 }));

    if let Some(text) = &opts.text {
        handle
            .command(Command::ChannelText {
                channel: None,
                message: text.clone(),
            })
            .await?;
        emit(json!({ "event": "text_sent", "message": text }));
    }
    let player = audio.map(|a| tokio::spawn(play(handle.clone(), a)));

    // Phase 2: listen until the time is up.
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let mut disconnected = None;
    loop {
        match tokio::time::timeout_at(end, events.recv()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(ev)) => {
                report(&ev, &handle, &mut recorder, opts);
                if let ClientEvent::Disconnected { reason, .. } = ev {
                    disconnected = Some(reason);
                    break;
                }
            }
        }
    }
    if let Some(p) = player {
        match p.await {
            Ok(Ok(n)) => emit(json!({ "event": "play_done", "packets": n })),
            Ok(Err(e)) => emit(json!({ "event": "error", "message": format!("playing: {e:#}") })),
            Err(e) => emit(json!({ "event": "error", "message": format!("player: {e}") })),
        }
    }
    if let Some(path) = &opts.record {
        let files = recorder.write(path)?;
        emit(json!({ "event": "recorded", "file": path, "speakers": files }));
    }
    let snap = handle.snapshot();
    let st = snap.stats;
    emit(json!({
        "event": "stats",
        "udp_working": snap.udp_working,
        "voice_in": { "udp": st.udp_voice_in, "tcp": st.tcp_voice_in },
        "voice_out": { "udp": st.udp_voice_out, "tcp": st.tcp_voice_out, "dropped": st.voice_out_dropped + handle.dropped_voice_out() },
        "udp_datagrams_in": st.udp_in,
    }));
    let _ = handle.command(Command::Shutdown).await;
    if let Some(reason) = disconnected {
        bail!("disconnected: {reason}");
    }
    Ok(())
}

/// Prints one event; returns true once we are in the requested channel.
fn report(
    ev: &ClientEvent,
    handle: &ClientHandle,
    recorder: &mut Recorder,
    opts: &ProbeOptions,
) -> bool {
    let snap = handle.snapshot();
    let name_of = |s: &u32| snap.users.get(s).map(|u| u.name.clone());
    match ev {
        ClientEvent::Session(Event::Voice {
            session,
            sequence,
            opus,
            ..
        }) => {
            let name = name_of(session).unwrap_or_else(|| format!("session-{session}"));
            recorder.push(&name, *sequence, opus);
        }
        ClientEvent::Session(Event::Synced {
            session,
            server_release,
            ..
        }) => {
            emit(
                json!({ "event": "synced", "session": session, "server_release": server_release }),
            );
            return opts.channel.is_none();
        }
        ClientEvent::Session(Event::InChannel { path, .. }) => {
            emit(json!({ "event": "in_channel", "channel": path }));
            let want = opts.channel.as_deref().map(|c| c.trim_matches('/'));
            return want.is_none_or(|w| w == path || (w.is_empty() && path.is_empty()));
        }
        ClientEvent::Session(Event::UserJoined(u)) => emit(json!({
            "event": "user_joined", "name": u.name, "session": u.session,
            "channel": snap.channel_path(u.channel_id),
        })),
        ClientEvent::Session(Event::UserMoved { user, .. }) => emit(json!({
            "event": "user_moved", "name": user.name, "session": user.session,
            "channel": snap.channel_path(user.channel_id),
        })),
        ClientEvent::Session(Event::UserLeft { user, reason }) => emit(json!({
            "event": "user_left", "name": user.name, "session": user.session, "reason": reason,
        })),
        ClientEvent::Session(Event::TalkStarted { session, name, .. }) => {
            emit(json!({ "event": "talk_started", "name": name, "session": session }));
        }
        ClientEvent::Session(Event::TalkStopped {
            session,
            name,
            terminated,
        }) => emit(json!({
            "event": "talk_stopped", "name": name, "session": session, "terminated": terminated,
        })),
        ClientEvent::Session(Event::Text {
            actor_name,
            message,
            private,
            ..
        }) => emit(json!({
            "event": "text", "from": actor_name, "message": message, "private": private,
        })),
        ClientEvent::Session(Event::UdpChanged { working }) => {
            emit(json!({ "event": "udp", "working": working }))
        }
        ClientEvent::Session(Event::PermissionDenied { reason }) => {
            emit(json!({ "event": "permission_denied", "reason": reason }));
        }
        ClientEvent::Session(Event::Fault { kind, detail }) => {
            emit(json!({ "event": "fault", "kind": kind.as_str(), "detail": detail }));
        }
        ClientEvent::Disconnected { reason, .. } => {
            emit(json!({ "event": "disconnected", "reason": reason }))
        }
        _ => {}
    }
    false
}

/// Sends `audio` as 20 ms Opus packets in real time; returns the packet count.
async fn play(handle: ClientHandle, audio: Vec<i16>) -> anyhow::Result<usize> {
    let mut enc = Encoder::new(RATE, Channels::Mono, Application::Audio)?;
    enc.set_bitrate(BITRATE)?;
    let frames: Vec<&[i16]> = audio.chunks(FRAME).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut last = vec![0i16; FRAME];
    for (i, frame) in frames.iter().enumerate() {
        tick.tick().await;
        let pcm: &[i16] = if frame.len() == FRAME {
            frame
        } else {
            last[..frame.len()].copy_from_slice(frame);
            last[frame.len()..].fill(0);
            &last
        };
        let opus = enc.encode(pcm)?;
        handle.send_voice(OutgoingVoice {
            opus,
            frames_10ms: 2,
            terminator: i + 1 == frames.len(),
            target: 0,
        });
    }
    Ok(frames.len())
}

/// Places each speaker's decoded packets on a timeline by sequence number, so
/// network jitter does not stretch or squeeze what was recorded.
struct Recorder {
    started: Instant,
    speakers: HashMap<String, Track>,
}

struct Track {
    decoder: Decoder,
    samples: Vec<i16>,
    /// Sample position and sequence of the current burst's first packet.
    base: Option<(usize, u64)>,
    last_seq: u64,
    pcm: Vec<i16>,
}

impl Recorder {
    fn new(started: Instant) -> Self {
        Self {
            started,
            speakers: HashMap::new(),
        }
    }

    fn push(&mut self, speaker: &str, sequence: u64, opus: &Bytes) {
        let now = (self.started.elapsed().as_secs_f64() * f64::from(RATE)) as usize;
        let track = match self.speakers.entry(speaker.to_owned()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                match Decoder::new(RATE, Channels::Mono) {
                    Ok(decoder) => v.insert(Track {
                        decoder,
                        samples: Vec::new(),
                        base: None,
                        last_seq: 0,
                        pcm: vec![0; 5760],
                    }),
                    Err(_) => return,
                }
            }
        };
        // A sequence going back or jumping over a second starts a new burst at "now".
        let rebase = match track.base {
            None => true,
            Some(_) => sequence < track.last_seq || sequence - track.last_seq > 100,
        };
        if rebase {
            track.base = Some((now.max(track.samples.len()), sequence));
        }
        track.last_seq = sequence;
        let (base_pos, base_seq) = track.base.unwrap_or((now, sequence));
        let pos = base_pos + (sequence - base_seq) as usize * SEQ_UNIT;
        let Ok(n) = track.decoder.decode(Some(opus), false, &mut track.pcm) else {
            return;
        };
        // Bound the recording (1 hour) so a stuck peer cannot exhaust memory.
        if pos + n > RATE as usize * 3600 {
            return;
        }
        if track.samples.len() < pos + n {
            track.samples.resize(pos + n, 0);
        }
        track.samples[pos..pos + n].copy_from_slice(&track.pcm[..n]);
    }

    /// Writes the mix to `path` and each speaker to `path.<speaker>.wav`.
    fn write(&self, path: &Path) -> anyhow::Result<HashMap<String, PathBuf>> {
        let len = self
            .speakers
            .values()
            .map(|t| t.samples.len())
            .max()
            .unwrap_or(0);
        let mut mix = vec![0i32; len];
        let mut files = HashMap::new();
        for (name, track) in &self.speakers {
            for (m, &s) in mix.iter_mut().zip(&track.samples) {
                *m += i32::from(s);
            }
            let safe: String = name
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let file = path.with_extension(format!("{safe}.wav"));
            write_mono_48k(&file, &track.samples)?;
            files.insert(name.clone(), file);
        }
        let mix: Vec<i16> = mix.iter().map(|&s| s.clamp(-32768, 32767) as i16).collect();
        write_mono_48k(path, &mix)?;
        Ok(files)
    }
}

/// The SHA-256 fingerprint of the certificate `host:port` presents (any certificate accepted:
/// this only reads it).
async fn server_fingerprint(host: &str, port: u16) -> anyhow::Result<[u8; 32]> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .context("connect timed out")??;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a server name"))?;
    let config = ptt::tls::client_config(ServerTrust::AcceptInvalid);
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .context("TLS handshake timed out")??;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .context("the server sent no certificate")?;
    Ok(ptt::tls::fingerprint(cert.as_ref()))
}

fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("--server {s:?}: expected HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("--server {s:?}: bad port"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}
