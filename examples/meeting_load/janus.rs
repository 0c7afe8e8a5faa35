//! Janus, the gateway integrators deploy for audio conferences and RTP fan-out, driven the way
//! its own demos drive it: Debian's `janus` started with a config of its HTTP transport and the
//! Streaming and AudioBridge plugins only, one Janus session, one plugin handle per listener,
//! and one RTP Opus talker sent by this process (the same speech the bridge's PTT talker sends).

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

/// Which Janus plugin serves the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// One RTP input (a mountpoint) relayed to every viewer: Janus's pass-through.
    Streaming,
    /// A mixing room: the talker is a plain-RTP participant, listeners join muted.
    AudioBridge,
}

impl Plugin {
    fn package(self) -> &'static str {
        match self {
            Plugin::Streaming => "janus.plugin.streaming",
            Plugin::AudioBridge => "janus.plugin.audiobridge",
        }
    }
}

/// A running Janus with its HTTP API on loopback.
pub struct Janus {
    child: Child,
    http: SocketAddr,
    session: u64,
    _dir: tempfile::TempDir,
    tx: u64,
    /// Plugin events polled but not yet asked for (a poll returns every handle's).
    pending: Vec<Value>,
}

const ROOM: u64 = 1234;
const MOUNTPOINT: u64 = 1;

impl Janus {
    /// Starts `janus` (found on PATH or /usr/bin) with only what the comparison needs and opens
    /// one API session.
    pub fn start() -> Janus {
        let bin = ["/usr/bin/janus", "/usr/local/bin/janus"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "janus not found: run bench/janus-compare/run.sh (it installs Debian's janus)"
                )
            });
        let dir = tempfile::Builder::new().prefix("janus-").tempdir().unwrap();
        let port = StdUdpSocket::bind("127.0.0.1:0") // a free TCP port is very likely free too
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap();
        let plugins = "/usr/lib/x86_64-linux-gnu/janus";
        // Everything but the two plugins and the HTTP transport disabled; no session timeout
        // (the tool does not keep polling after setup); debug level 3 = warnings.
        let files = [
            (
                "janus.jcfg",
                format!(
                    "general: {{\n configs_folder = \"{d}\"\n plugins_folder = \"{plugins}/plugins\"\n \
                     transports_folder = \"{plugins}/transports\"\n events_folder = \"{plugins}/events\"\n \
                     loggers_folder = \"{plugins}/loggers\"\n debug_level = 3\n session_timeout = 0\n}}\n\
                     media: {{\n rtp_port_range = \"20000-60000\"\n}}\n\
                     plugins: {{\n disable = \"libjanus_voicemail.so,libjanus_recordplay.so,libjanus_textroom.so,\
                     libjanus_echotest.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_sip.so,\
                     libjanus_nosip.so,libjanus_lua.so,libjanus_duktape.so\"\n}}\n\
                     transports: {{\n disable = \"libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,\
                     libjanus_nanomsg.so,libjanus_rabbitmq.so\"\n}}\n\
                     loggers: {{\n disable = \"libjanus_jsonlog.so\"\n}}\n\
                     events: {{\n broadcast = false\n}}\n",
                    d = dir.path().display()
                ),
            ),
            (
                "janus.transport.http.jcfg",
                format!(
                    "general: {{\n json = \"compact\"\n base_path = \"/janus\"\n http = true\n \
                     port = {port}\n ip = \"127.0.0.1\"\n https = false\n}}\nadmin: {{\n admin_http = false\n}}\n"
                ),
            ),
            ("janus.plugin.streaming.jcfg", "general: {\n}\n".into()),
            ("janus.plugin.audiobridge.jcfg", "general: {\n}\n".into()),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let log = std::fs::File::create(dir.path().join("janus.log")).unwrap();
        let child = Command::new(bin)
            .arg("-F")
            .arg(dir.path())
            .arg("-C")
            .arg(dir.path().join("janus.jcfg"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start janus");
        let http: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut janus = Janus {
            child,
            http,
            session: 0,
            _dir: dir,
            tx: 0,
            pending: Vec::new(),
        };
        let t0 = Instant::now();
        let created = loop {
            match janus.try_post("/janus", json!({"janus": "create"})) {
                Ok(v) => break v,
                Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("janus did not answer on {http}: {e}"),
            }
        };
        janus.session = created["data"]["id"].as_u64().expect("janus session id");
        janus
    }

    /// Janus's process id (for its CPU time and memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_post(&mut self, path: &str, mut body: Value) -> std::io::Result<Value> {
        self.tx += 1;
        body["transaction"] = json!(format!("t{}", self.tx));
        Ok(testkit::http::request(self.http, "POST", path, Some(&body.to_string()))?.json())
    }

    fn post(&mut self, path: &str, body: Value) -> Value {
        let v = self.try_post(path, body).expect("janus http");
        assert_ne!(v["janus"], "error", "janus refused: {v}");
        v
    }

    /// A new plugin handle in the session.
    fn attach(&mut self, plugin: Plugin) -> u64 {
        let path = format!("/janus/{}", self.session);
        self.post(
            &path,
            json!({"janus": "attach", "plugin": plugin.package()}),
        )["data"]["id"]
            .as_u64()
            .expect("handle id")
    }

    /// A plugin request on `handle`; synchronous requests answer at once (`success`),
    /// asynchronous ones are acked and answered by an event (fetched by [`Janus::event_for`]).
    fn message(&mut self, handle: u64, body: Value, jsep: Option<Value>) -> Value {
        let path = format!("/janus/{}/{handle}", self.session);
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        self.post(&path, msg)
    }

    /// The next plugin event for `handle`; other handles' plugin events are kept for later,
    /// Janus's own notifications (webrtcup, media, hangup) dropped.
    fn event_for(&mut self, handle: u64) -> Value {
        let path = format!("/janus/{}?maxev=50", self.session);
        let t0 = Instant::now();
        loop {
            if let Some(at) = self.pending.iter().position(|e| e["sender"] == handle) {
                let e = self.pending.remove(at);
                let data = &e["plugindata"]["data"];
                assert!(data.get("error").is_none(), "janus plugin error: {e}");
                return e;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no event from janus for handle {handle}"
            );
            let v = testkit::http::get(self.http, &path)
                .expect("janus poll")
                .json();
            let events = match v {
                Value::Array(a) => a,
                one => vec![one],
            };
            self.pending
                .extend(events.into_iter().filter(|e| e["janus"] == "event"));
        }
    }

    /// Creates what the talkers send to and returns the addresses Janus receives their RTP on:
    /// a Streaming mountpoint on a free port (one talker), or an AudioBridge room with each
    /// talker joined as a plain-RTP participant from its socket's address `talkers[i]` (Janus
    /// sends it the mix there and takes its RTP only from there).
    pub fn prepare(&mut self, plugin: Plugin, talkers: &[SocketAddr]) -> Vec<SocketAddr> {
        let admin = self.attach(plugin);
        match plugin {
            Plugin::Streaming => {
                assert_eq!(talkers.len(), 1, "a Streaming mountpoint has one input");
                let port = StdUdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let r = self.message(
                    admin,
                    json!({"request": "create", "type": "rtp", "id": MOUNTPOINT,
                           "media": [{"type": "audio", "mid": "a", "port": port, "pt": 111,
                                      "codec": "opus"}]}),
                    None,
                );
                assert_eq!(r["plugindata"]["data"]["streaming"], "created", "{r}");
                vec![([127, 0, 0, 1], port).into()]
            }
            Plugin::AudioBridge => {
                let r = self.message(
                    admin,
                    json!({"request": "create", "room": ROOM, "sampling_rate": 48000,
                           "allow_rtp_participants": true}),
                    None,
                );
                assert_eq!(r["plugindata"]["data"]["audiobridge"], "created", "{r}");
                talkers
                    .iter()
                    .enumerate()
                    .map(|(i, from)| {
                        let h = if i == 0 { admin } else { self.attach(plugin) };
                        self.message(
                            h,
                            json!({"request": "join", "room": ROOM, "display": format!("talker{i}"),
                                   "rtp": {"ip": from.ip().to_string(), "port": from.port(),
                                           "payload_type": 111}}),
                            None,
                        );
                        let e = self.event_for(h);
                        let rtp = &e["plugindata"]["data"]["rtp"];
                        let ip: IpAddr = rtp["ip"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
                        let port = rtp["port"].as_u64().expect("janus rtp port") as u16;
                        SocketAddr::from((ip, port))
                    })
                    .collect()
            }
        }
    }

    /// Streaming: a viewer's handle asks to watch; Janus offers. Returns the handle and the
    /// offer's SDP.
    pub fn watch(&mut self) -> (u64, String) {
        let h = self.attach(Plugin::Streaming);
        self.message(h, json!({"request": "watch", "id": MOUNTPOINT}), None);
        let e = self.event_for(h);
        let sdp = e["jsep"]["sdp"].as_str().expect("janus offer").to_string();
        (h, sdp)
    }

    /// Streaming: the viewer's answer; Janus starts sending.
    pub fn start_watching(&mut self, handle: u64, answer: &str) {
        self.message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer})),
        );
        self.event_for(handle);
    }

    /// AudioBridge: a muted participant joins with the listener's offer; returns Janus's answer.
    pub fn join_muted(&mut self, offer: &str) -> String {
        let h = self.attach(Plugin::AudioBridge);
        self.message(
            h,
            json!({"request": "join", "room": ROOM, "muted": true}),
            Some(json!({"type": "offer", "sdp": offer})),
        );
        // The offer holds the listener's one candidate: no more will trickle.
        let path = format!("/janus/{}/{h}", self.session);
        self.post(
            &path,
            json!({"janus": "trickle", "candidate": {"completed": true}}),
        );
        // The "joined" event carries the answer (Janus sends it once ICE gathering ends).
        loop {
            let e = self.event_for(h);
            if let Some(sdp) = e["jsep"]["sdp"].as_str() {
                return sdp.to_string();
            }
        }
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The IPv4 host address Janus's SDP offers (listeners bind there: Janus gathers candidates
/// on the machine's interfaces, not on loopback).
pub fn candidate_ip(sdp: &str) -> Option<IpAddr> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
}

/// When each payload was sent, for the listeners' latency: payload hash → send time.
pub type SendTimes = Arc<Mutex<std::collections::HashMap<u64, SystemTime>>>;

/// A payload's key in [`SendTimes`].
pub fn payload_key(payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

/// One RTP talker: what [`talk`] sends, where, and what it reports.
pub struct Talk {
    /// Its socket (Janus takes an RTP participant's packets only from the address it joined with).
    pub socket: std::net::UdpSocket,
    /// The speech, 48 kHz mono.
    pub pcm: Vec<i16>,
    /// Where in the speech it starts, in 20 ms frames.
    pub offset_frames: usize,
    /// Janus's RTP input.
    pub to: SocketAddr,
    /// Each payload's send time.
    pub sent_at: SendTimes,
    /// Set to 1 to stop.
    pub stop: Arc<std::sync::atomic::AtomicU64>,
    /// Packets sent.
    pub sent: Arc<std::sync::atomic::AtomicU64>,
    /// The tape of what it sends while the flag is set.
    pub tape: Option<(Tape, Arc<std::sync::atomic::AtomicBool>)>,
}

/// Sends from `socket` `pcm` (48 kHz mono, started `offset_frames` 20 ms frames in) as RTP Opus, 20 ms per
/// packet, in real time, repeated, to `to`
/// until `stop` is set; records each payload's send time. Returns the packets sent.
pub async fn talk(t: Talk) {
    let Talk {
        socket,
        mut pcm,
        offset_frames,
        to,
        sent_at,
        stop,
        sent,
        tape,
    } = t;
    use std::sync::atomic::Ordering;
    // A second talker starts elsewhere in the speech, so the mix is of two different voices.
    let shift = (offset_frames * 960) % pcm.len().max(1);
    pcm.rotate_left(shift);
    socket.set_nonblocking(true).unwrap();
    let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
    let mut enc = media::opus::Encoder::new(
        48_000,
        media::Channels::Mono,
        media::opus::Application::Voip,
    )
    .unwrap();
    enc.set_bitrate(32_000).unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seq, mut ts) = (0u16, 0u32);
    for frame in pcm.chunks_exact(960).cycle() {
        if stop.load(Ordering::Relaxed) == 1 {
            return;
        }
        tick.tick().await;
        let payload = enc.encode(frame).unwrap();
        if let Some((tape, on)) = &tape
            && on.load(Ordering::Relaxed)
        {
            record(tape, SystemTime::now(), frame);
        }
        let mut pkt = Vec::with_capacity(12 + payload.len());
        pkt.extend_from_slice(&[0x80, 111]);
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&ts.to_be_bytes());
        pkt.extend_from_slice(&(0x5eed_u32 + offset_frames as u32).to_be_bytes());
        pkt.extend_from_slice(&payload);
        {
            let mut m = sent_at.lock().unwrap();
            if m.len() > 4096 {
                m.clear();
            }
            m.insert(payload_key(&payload), SystemTime::now());
        }
        let _ = socket.send_to(&pkt, to).await;
        sent.fetch_add(1, Ordering::Relaxed);
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(960);
    }
}

/// Decoded audio with the time each 20 ms frame was sent or arrived.
pub type Tape = Arc<Mutex<Vec<(SystemTime, Vec<i16>)>>>;

/// Frames a tape keeps (10 s).
pub const TAPE_FRAMES: usize = 500;

/// Adds a frame to `tape` unless it is full.
pub fn record(tape: &Tape, at: SystemTime, pcm: &[i16]) {
    let mut t = tape.lock().unwrap();
    if t.len() < TAPE_FRAMES {
        t.push((at, pcm.to_vec()));
    }
}

/// How much later than it was sent the talker's speech arrives in what a listener heard: the
/// lag (0–300 ms) at which the two tapes, laid on one clock at 8 kHz, correlate best; `None`
/// when they do not (peak correlation below 0.3). A mix's frames are made on the mixer's own
/// clock, so no packet carries a sent packet's payload: only the audio can be matched.
pub fn lag(sent: &[(SystemTime, Vec<i16>)], heard: &[(SystemTime, Vec<i16>)]) -> Option<Duration> {
    const RATE: u64 = 8_000;
    const MAX_LAG: usize = 8_000; // 1 s
    let t0 = sent.first()?.0;
    // Each tape laid out frame after frame from its first frame's time: a mixer sends on its own
    // clock, and placing each frame at its own arrival would smear the audio by the network's
    // jitter (a millisecond is a quarter period of speech's formants).
    let lay = |tape: &[(SystemTime, Vec<i16>)]| -> Vec<f32> {
        let mut out = vec![0f32; (TAPE_FRAMES as u64 * 20 * RATE / 1000) as usize + 2 * MAX_LAG];
        let Some(Ok(first)) = tape.first().map(|(at, _)| at.duration_since(t0)) else {
            return out;
        };
        let first = (first.as_micros() as u64 * RATE / 1_000_000) as usize;
        for (k, (_, pcm)) in tape.iter().enumerate() {
            let start = first + k * (20 * RATE as usize / 1000);
            for (i, six) in pcm.chunks_exact(6).enumerate() {
                if let Some(s) = out.get_mut(start + i) {
                    *s = six.iter().map(|&v| v as f32).sum::<f32>() / 6.0;
                }
            }
        }
        out
    };
    let (x, y) = (lay(sent), lay(heard));
    let span = x.len() - MAX_LAG;
    let energy = |v: &[f32]| v.iter().map(|s| s * s).sum::<f32>().sqrt();
    let ex = energy(&x[..span]);
    let (best, peak) = (0..MAX_LAG)
        .map(|l| {
            let dot: f32 = x[..span]
                .iter()
                .zip(&y[l..l + span])
                .map(|(a, b)| a * b)
                .sum();
            (l, dot / (ex * energy(&y[l..l + span])).max(1e-9))
        })
        .fold((0, f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
    if std::env::var_os("LOAD_DEBUG").is_some() {
        let rms = |v: &[f32]| (v.iter().map(|s| s * s).sum::<f32>() / v.len().max(1) as f32).sqrt();
        eprintln!(
            "lag: peak {peak:.2} at {} ms; {} frames sent (rms {:.0}), {} heard (rms {:.0})",
            best as u64 * 1000 / RATE,
            sent.len(),
            rms(&x),
            heard.len(),
            rms(&y)
        );
    }
    (peak >= 0.3).then(|| Duration::from_micros(best as u64 * 1_000_000 / RATE))
}
