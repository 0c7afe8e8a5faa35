//! A dispatch console for tests, written against the bridge's documented `/muicall` protocol
//! (`docs/console.md`): JSON requests and replies as text frames, audio as binary frames with
//! the 12-byte header. One IO thread owns the socket; received JSON goes to an [`EventQueue`],
//! received audio to a recorder that places it on a timeline.
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//! # let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
//! let mut c = testkit::console::Console::connect(addr);
//! c.login("http://ptt.test", "zydd", "pw");
//! c.send(json!({"type": "requestMic", "toIds": [1, 2], "transaction": 1}));
//! let created = c.expect_type("createGroup", Duration::from_secs(5));
//! # let _ = created;
//! ```

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use media::Channels;
use media::opus::{Application, Decoder, Encoder};
use media::resample::Resampler;
use muicall::audio::{Codec, Header};
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Bytes, Message, WebSocket};

use crate::audio::{RATE, load_wav, write_wav};
use crate::events::{EventQueue, exit_marker};

/// Default wait for a reply.
pub const REPLY: Duration = Duration::from_secs(10);

enum Out {
    Text(String),
    Binary(Vec<u8>),
    Close,
}

/// Sends binary frames on a [`Console`]'s socket from any thread.
#[derive(Clone)]
pub struct FrameSender(Sender<Out>);

impl FrameSender {
    /// Queues one binary frame; `false` once the console is gone.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        self.0.send(Out::Binary(frame)).is_ok()
    }
}

/// How the socket ended, as seen by the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Close code from the bridge (`None` if the connection just dropped).
    pub code: Option<u16>,
    /// Close reason.
    pub reason: String,
    /// IO error that ended it, if any.
    pub error: Option<String>,
}

/// A connected test console.
pub struct Console {
    out: Sender<Out>,
    events: EventQueue,
    recorder: Arc<Mutex<Recorder>>,
    closed: Arc<Mutex<Option<Closed>>>,
    io: Option<JoinHandle<()>>,
}

impl Console {
    /// Opens `ws://addr/muicall`; panics when it cannot.
    pub fn connect(addr: SocketAddr) -> Console {
        let url = format!("ws://{addr}/muicall");
        let (ws, _) =
            tungstenite::connect(&url).unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(2)))
                .expect("read timeout");
            s.set_nodelay(true).ok();
        }
        let (out, out_rx) = mpsc::channel();
        let (ev_tx, ev_rx) = mpsc::channel();
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        let closed = Arc::new(Mutex::new(None));
        let io = {
            let recorder = recorder.clone();
            let closed = closed.clone();
            std::thread::spawn(move || io_loop(ws, out_rx, ev_tx, recorder, closed))
        };
        Console {
            out,
            events: EventQueue::new(ev_rx),
            recorder,
            closed,
            io: Some(io),
        }
    }

    /// Sends a JSON request.
    pub fn send(&self, v: Value) {
        self.send_raw(&v.to_string());
    }

    /// Sends any text frame.
    pub fn send_raw(&self, text: &str) {
        let _ = self.out.send(Out::Text(text.to_string()));
    }

    /// Sends a binary frame.
    pub fn send_binary(&self, bytes: Vec<u8>) {
        let _ = self.out.send(Out::Binary(bytes));
    }

    /// A handle that sends binary frames from another thread.
    pub fn frame_sender(&self) -> FrameSender {
        FrameSender(self.out.clone())
    }

    /// Waits for a JSON message matching `pred`; panics with the history on timeout.
    pub fn expect(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        match self.events.try_expect(&pred, timeout) {
            Some(v) if pred(&v) => v,
            other => panic!(
                "console: no matching message within {timeout:?} (got {other:?}; closed: {:?})\n{}",
                self.closed(),
                self.events.tail(30)
            ),
        }
    }

    /// Like [`expect`](Self::expect) but `None` on timeout.
    pub fn try_expect(
        &mut self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        self.events
            .try_expect(pred, timeout)
            .filter(|v| v.get("event") != Some(&json!("exit")))
    }

    /// Waits for a message with this `type`.
    pub fn expect_type(&mut self, ty: &str, timeout: Duration) -> Value {
        self.expect(|v| v["type"] == ty, timeout)
    }

    /// Waits for a notification with this `cmd`.
    pub fn expect_notify(
        &mut self,
        cmd: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        self.expect(
            |v| v["type"] == "notify" && v["cmd"] == cmd && pred(v),
            timeout,
        )
    }

    /// `initServer` then `connect`; panics unless both succeed. Returns the login reply.
    pub fn login(&mut self, base_url: &str, account: &str, password: &str) -> Value {
        self.send(json!({"type": "initServer", "data": {"baseUrl": base_url}}));
        let init = self.expect_type("initServer", REPLY);
        assert_eq!(init["code"], 1, "initServer: {init}");
        self.send(json!({"type": "connect", "data": {"account": account, "password": password}}));
        let login = self.expect_type("login", REPLY);
        assert_eq!(login["code"], 1, "login: {login}");
        login
    }

    /// Calls terminals `ids` (`requestMic` with `toIds`, the spec's transaction); panics unless
    /// the call is created and the mic opens within `timeout`. Returns the call's `sessionId`.
    pub fn call(&mut self, ids: &[u32], timeout: Duration) -> String {
        self.send(json!({"type": "requestMic", "toIds": ids, "transaction": 1671006883842u64}));
        let created = self.expect_type("createGroup", timeout);
        assert_eq!(created["code"], 1, "{created}");
        let granted = self.expect_type("requestMic", timeout);
        assert_eq!(granted["code"], 2, "{granted}");
        created["sessionId"].as_str().unwrap().to_string()
    }

    /// Every JSON message received so far.
    pub fn history(&mut self) -> Vec<Value> {
        self.events.history().to_vec()
    }

    /// How the connection ended, once it has.
    pub fn closed(&self) -> Option<Closed> {
        self.closed.lock().unwrap().clone()
    }

    /// Waits until the connection has ended.
    pub fn wait_closed(&self, timeout: Duration) -> Option<Closed> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.closed() {
                return Some(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Sends a WAV (48 kHz) as audio frames in real time on a thread, in `codec`, 20 ms per
    /// frame, the last one flagged; returns the thread, which ends when the last frame is sent
    /// and yields the number of frames.
    pub fn play(&self, wav: &Path, codec: Codec) -> JoinHandle<usize> {
        let frames = encode_wav(wav, codec);
        let out = self.out.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let n = frames.len();
            for (i, f) in frames.into_iter().enumerate() {
                let due = start + Duration::from_millis(20 * i as u64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if out.send(Out::Binary(f)).is_err() {
                    return i;
                }
            }
            n
        })
    }

    /// Starts recording received audio; the timeline starts now.
    pub fn record_start(&self) {
        *self.recorder.lock().unwrap() = Recorder::start();
    }

    /// Frames received since [`record_start`](Self::record_start) (and when the first came).
    pub fn frames_received(&self) -> (usize, Option<Instant>) {
        let r = self.recorder.lock().unwrap();
        (r.frames, r.first_at)
    }

    /// Stops recording and writes what was heard (48 kHz mono) to `wav`; returns the
    /// number of frames and the codecs and sources seen.
    pub fn record_stop(&self, wav: &Path) -> Value {
        let mut r = self.recorder.lock().unwrap();
        let rec = std::mem::take(&mut *r);
        let samples: Vec<f32> = rec.track.iter().map(|s| *s as f32 / 32768.0).collect();
        write_wav(wav, &samples).expect("write recording");
        json!({"frames": rec.frames, "codecs": rec.codecs, "sources": rec.sources, "seconds": samples.len() as f64 / RATE as f64})
    }

    /// Closes the socket.
    pub fn close(mut self) {
        let _ = self.out.send(Out::Close);
        if let Some(io) = self.io.take() {
            let _ = io.join();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.out.send(Out::Close);
    }
}

/// Encodes a 48 kHz WAV into frames of `codec`.
pub fn encode_wav(wav: &Path, codec: Codec) -> Vec<Vec<u8>> {
    let pcm: Vec<i16> = load_wav(wav)
        .iter()
        .map(|s| (s * 32767.0).round() as i16)
        .collect();
    let mut frames = Vec::new();
    let chunks: Vec<Vec<i16>> = pcm
        .chunks(960)
        .map(|c| {
            let mut v = c.to_vec();
            v.resize(960, 0);
            v
        })
        .collect();
    let n = chunks.len();
    let mut enc = Encoder::new(48_000, Channels::Mono, Application::Audio).expect("encoder");
    enc.set_bitrate(48_000).expect("bitrate");
    let mut rs = match codec {
        Codec::Pcm16(r) if r != 48_000 => {
            Some(Resampler::new(48_000, r, Channels::Mono).expect("resampler"))
        }
        _ => None,
    };
    for (i, c) in chunks.iter().enumerate() {
        let payload: Vec<u8> = match codec {
            Codec::Opus => enc.encode(c).expect("encode").to_vec(),
            Codec::Pcm16(_) => {
                let samples = match rs.as_mut() {
                    Some(rs) => {
                        let mut o = vec![0i16; rs.output_len()];
                        rs.process(c, &mut o).expect("resample");
                        o
                    }
                    None => c.clone(),
                };
                samples.iter().flat_map(|s| s.to_le_bytes()).collect()
            }
        };
        let h = Header {
            codec,
            last: i + 1 == n,
            seq: (i * 2) as u32,
            source: 0,
        };
        frames.push(h.frame(&payload));
    }
    frames
}

/// Received audio on a 48 kHz timeline.
#[derive(Default)]
struct Recorder {
    started: Option<Instant>,
    first_at: Option<Instant>,
    frames: usize,
    codecs: Vec<u8>,
    sources: Vec<u32>,
    track: Vec<i16>,
    decoder: Option<Decoder>,
    upsampler: Option<(u32, Resampler)>,
    /// (source, first seq, sample offset of that seq)
    anchor: Option<(u32, u32, usize)>,
}

impl Recorder {
    fn start() -> Self {
        Self {
            started: Some(Instant::now()),
            ..Default::default()
        }
    }

    fn push(&mut self, frame: &[u8]) {
        let Some(started) = self.started else { return };
        let Ok((h, payload)) = Header::parse(frame) else {
            return;
        };
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        self.frames += 1;
        if !self.codecs.contains(&h.codec.to_byte()) {
            self.codecs.push(h.codec.to_byte());
        }
        if !self.sources.contains(&h.source) {
            self.sources.push(h.source);
        }
        let pcm48: Vec<i16> = match h.codec {
            Codec::Opus => {
                let dec = self
                    .decoder
                    .get_or_insert_with(|| Decoder::new(48_000, Channels::Mono).expect("decoder"));
                let mut out = vec![0i16; 5760];
                match dec.decode(Some(payload), false, &mut out) {
                    Ok(n) => out[..n].to_vec(),
                    Err(_) => return,
                }
            }
            Codec::Pcm16(rate) => {
                let pcm: Vec<i16> = payload
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                if rate == 48_000 {
                    pcm
                } else {
                    if self.upsampler.as_ref().is_none_or(|(r, _)| *r != rate) {
                        self.upsampler = Some((
                            rate,
                            Resampler::new(rate, 48_000, Channels::Mono).expect("resampler"),
                        ));
                    }
                    let (_, rs) = self.upsampler.as_mut().expect("set");
                    if pcm.len() != rs.input_len() {
                        return;
                    }
                    let mut o = vec![0i16; rs.output_len()];
                    if rs.process(&pcm, &mut o).is_err() {
                        return;
                    }
                    o
                }
            }
        };
        // Place by sequence (10 ms units) within a source's run; a new source or a jump back
        // re-anchors on arrival time.
        let arrival = (now.duration_since(started).as_secs_f64() * RATE as f64) as usize;
        let offset = match self.anchor {
            Some((src, seq0, off0))
                if src == h.source && h.seq >= seq0 && (h.seq - seq0) < 100 * 60 =>
            {
                off0 + (h.seq - seq0) as usize * 480
            }
            _ => {
                self.anchor = Some((h.source, h.seq, arrival));
                arrival
            }
        };
        if self.track.len() < offset + pcm48.len() {
            self.track.resize(offset + pcm48.len(), 0);
        }
        self.track[offset..offset + pcm48.len()].copy_from_slice(&pcm48);
    }
}

fn io_loop(
    mut ws: WebSocket<MaybeTlsStream<TcpStream>>,
    out: Receiver<Out>,
    events: Sender<Value>,
    recorder: Arc<Mutex<Recorder>>,
    closed: Arc<Mutex<Option<Closed>>>,
) {
    let end = |code: Option<u16>, reason: String, error: Option<String>| {
        let mut c = closed.lock().unwrap();
        if c.is_none() {
            *c = Some(Closed {
                code,
                reason,
                error,
            });
        }
    };
    let mut closing = false;
    loop {
        loop {
            match out.try_recv() {
                Ok(Out::Text(t)) => {
                    if let Err(e) = ws.send(Message::Text(t.into())) {
                        end(None, String::new(), Some(e.to_string()));
                    }
                }
                Ok(Out::Binary(b)) => {
                    if let Err(e) = ws.send(Message::Binary(Bytes::from(b))) {
                        end(None, String::new(), Some(e.to_string()));
                    }
                }
                Ok(Out::Close) | Err(mpsc::TryRecvError::Disconnected) => {
                    if !closing {
                        closing = true;
                        let _ = ws.close(None);
                        let _ = ws.flush();
                    }
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v =
                    serde_json::from_str(t.as_str()).unwrap_or_else(|_| json!({"raw": t.as_str()}));
                let _ = events.send(v);
            }
            Ok(Message::Binary(b)) => recorder.lock().unwrap().push(&b),
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame
                    .map(|f| (Some(u16::from(f.code)), f.reason.to_string()))
                    .unwrap_or((Some(u16::from(CloseCode::Status)), String::new()));
                end(code, reason, None);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                end(None, String::new(), None);
                break;
            }
            Err(e) => {
                end(None, String::new(), Some(e.to_string()));
                break;
            }
        }
    }
    let _ = events.send(exit_marker());
}

/// Keys of a JSON value, recursively (`data.results[].id`), to compare a reply's shape with a
/// spec example's.
pub fn shape(v: &Value) -> Vec<String> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(format!("{p}:{}", kind(x)));
                    walk(x, &p, out);
                }
            }
            Value::Array(a) => {
                if let Some(x) = a.first() {
                    walk(x, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }
    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out.sort();
    out
}
