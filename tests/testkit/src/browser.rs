//! Debian's headless `chromium`, driven over the Chrome DevTools Protocol (CDP): a JSON-RPC
//! WebSocket that Chromium serves itself, so no driver process or browser download is needed.
//! Launched with the flags in `../shared/PEERS.md` (loopback WebRTC, fake media devices, a WAV
//! as the microphone); console messages and page exceptions are kept for failure messages.
//!
//! ```no_run
//! use std::time::Duration;
//! let browser = testkit::browser::Browser::launch(None);
//! let page = browser.page();
//! page.navigate("http://127.0.0.1:8080/");
//! page.wait_for("document.title !== ''", Duration::from_secs(5));
//! assert_eq!(page.eval("1 + 1"), 2);
//! ```

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::events::capture;
use crate::peers::{self, SETUP_COMMAND};

/// A CDP call that gets no answer within this is a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Console lines kept per page.
const CONSOLE_KEEP: usize = 400;

/// A running headless Chromium. Killed (its whole process group) on drop.
pub struct Browser {
    child: Child,
    port: u16,
    profile: PathBuf,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// The Chromium binary: `$CHROMIUM`, else `chromium` on `PATH`; panics naming `scripts/setup`.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    peers::find("chromium").unwrap_or_else(|| {
        panic!("chromium not found: run {SETUP_COMMAND} (it installs Debian's chromium)")
    })
}

impl Browser {
    /// Starts headless Chromium with a fresh profile. `fake_mic`: a WAV the fake microphone plays
    /// once (`%noloop`; end it with silence, the device repeats its last 10 ms). Pages may use
    /// the microphone without asking.
    pub fn launch(fake_mic: Option<&Path>) -> Browser {
        Browser::start(fake_mic, true, &[])
    }

    /// Like [`launch`](Self::launch) with extra command-line flags, e.g.
    /// `--ignore-certificate-errors-spki-list=<hash>` to accept one test certificate
    /// ([`crate::tls::ServerFiles::spki_sha256`]).
    pub fn launch_with(fake_mic: Option<&Path>, flags: &[String]) -> Browser {
        Browser::start(fake_mic, true, flags)
    }

    /// Like [`launch`](Self::launch) with no fake file, but every request for the microphone is
    /// refused, as when the user blocks it (`getUserMedia` fails with `NotAllowedError`).
    pub fn launch_denying_microphone() -> Browser {
        Browser::start(None, false, &[])
    }

    fn start(fake_mic: Option<&Path>, allow_mic: bool, flags: &[String]) -> Browser {
        let bin = chromium();
        let dir = tempfile::tempdir().expect("temp dir");
        let profile = dir.path().join("profile");
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--window-size=1280,860",
            "--use-fake-device-for-media-stream",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            // Background tabs get throttled timers; a test page must keep real time.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        // The fake permission prompt answers every request at once, either way.
        .arg(if allow_mic {
            "--use-fake-ui-for-media-stream"
        } else {
            "--use-fake-ui-for-media-stream=deny"
        });
        if let Some(wav) = fake_mic {
            cmd.arg(format!(
                "--use-file-for-fake-audio-capture={}%noloop",
                wav.display()
            ));
        }
        cmd.args(flags);
        cmd.arg("about:blank");
        // Its own process group, so dropping the browser ends its renderers too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e} (run {SETUP_COMMAND})", bin.display())
            });
        let stderr = capture(child.stderr.take().unwrap());
        // Chromium writes the port it picked to DevToolsActivePort in the profile.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break p;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "chromium exited at start with {st}:\n{}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port within 20 s:\n{}",
                stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser {
            child,
            port,
            profile,
            stderr,
            _dir: dir,
        }
    }

    /// A connection to the browser itself (the `Target` domain), from the path Chromium wrote.
    fn browser_conn(&self) -> Page {
        let path = std::fs::read_to_string(self.profile.join("DevToolsActivePort"))
            .ok()
            .and_then(|s| s.lines().nth(1).map(str::to_owned))
            .expect("DevToolsActivePort names the browser's socket");
        Page::connect(&format!("ws://127.0.0.1:{}{path}", self.port), false)
    }

    /// The first tab (opened at start).
    pub fn page(&self) -> Page {
        let targets = self.browser_conn().call("Target.getTargets", json!({}));
        let id = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .map(str::to_owned)
            .expect("chromium has a page target");
        self.attach(&id)
    }

    /// A new tab.
    pub fn new_page(&self) -> Page {
        let t = self
            .browser_conn()
            .call("Target.createTarget", json!({"url": "about:blank"}));
        self.attach(t["targetId"].as_str().expect("targetId"))
    }

    // Chromium's DevTools HTTP endpoints (/json/...) only speak HTTP/1.1 keep-alive; the
    // WebSocket paths need nothing but the target id.
    fn attach(&self, target: &str) -> Page {
        Page::connect(
            &format!("ws://127.0.0.1:{}/devtools/page/{target}", self.port),
            true,
        )
    }

    /// What Chromium printed on stderr.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = self.child.id();
        // `kill -s KILL -- -PGID`, never `kill -KILL -PGID`: procps-ng 4.0.2 (Debian 12) parses the
        // latter's group as a signal-ish number and can end up calling kill(-1), killing every
        // process of the user.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Pending = (Value, Sender<Value>);

/// One tab, attached over its own DevTools WebSocket. One IO thread owns the socket.
pub struct Page {
    out: Sender<Pending>,
    next_id: AtomicU64,
    console: Arc<Mutex<Vec<String>>>,
}

impl Page {
    /// Connects to a DevTools socket; `tab`: enable the page's runtime and page events.
    fn connect(ws_url: &str, tab: bool) -> Page {
        let (ws, _) = tungstenite::client::connect_with_config(
            ws_url,
            Some(
                tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(Some(256 << 20))
                    .max_frame_size(Some(256 << 20)),
            ),
            3,
        )
        .unwrap_or_else(|e| panic!("cannot attach to {ws_url}: {e}"));
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(5)))
                .expect("read timeout");
            s.set_nodelay(true).ok();
        }
        let (out, out_rx) = mpsc::channel();
        let console = Arc::new(Mutex::new(Vec::new()));
        {
            let console = console.clone();
            std::thread::spawn(move || io_loop(ws, out_rx, console));
        }
        let page = Page {
            out,
            next_id: AtomicU64::new(1),
            console,
        };
        if tab {
            page.call("Runtime.enable", json!({}));
            page.call("Page.enable", json!({}));
        }
        page
    }

    /// Sends a CDP command and waits for its result; panics on an error answer.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("CDP {method}: {e}\n{}", self.console_tail(40)))
    }

    /// Sends a CDP command; the protocol error as text when it fails.
    pub fn try_call(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.out
            .send((json!({"id": id, "method": method, "params": params}), tx))
            .map_err(|_| "the DevTools connection is closed".to_string())?;
        let reply = rx
            .recv_timeout(CALL_TIMEOUT)
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?;
        match reply.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(reply["result"].clone()),
        }
    }

    /// Loads `url` and waits for its `load` event.
    pub fn navigate(&self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        if let Some(e) = r.get("errorText") {
            panic!("navigate {url}: {e}");
        }
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(15),
        );
    }

    /// Evaluates a JS expression (promises are awaited) and returns its JSON value; panics with
    /// the exception and the console when it throws.
    pub fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression).unwrap_or_else(|e| {
            panic!(
                "JS failed: {e}\nexpression: {expression}\n{}",
                self.console_tail(40)
            )
        })
    }

    /// Like [`eval`](Self::eval) but the exception as text.
    pub fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let r = self.try_call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true,
                   "userGesture": true}),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex["exception"]["description"]
                .as_str()
                .or(ex["text"].as_str())
                .unwrap_or("exception")
                .to_string();
            return Err(text);
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expression` until it is truthy; returns its value. Panics on timeout with `what`
    /// the page shows (its body text) and the console.
    pub fn wait_for(&self, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.try_eval(expression) {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = v,
                Err(e) => last = Value::String(e),
            }
            if Instant::now() > deadline {
                let body = self
                    .try_eval("document.body && document.body.innerText")
                    .unwrap_or_default();
                panic!(
                    "page: `{expression}` not true within {timeout:?} (last: {last})\n--- page text ---\n{}\n{}",
                    body.as_str().unwrap_or_default(),
                    self.console_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A key press or release as the user makes it (`key` = DOM key, e.g. `" "`, `code` =
    /// e.g. `"Space"`, `vk` = Windows virtual key code, 32 for space).
    pub fn key(&self, down: bool, key: &str, code: &str, vk: u32) {
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": if down { "keyDown" } else { "keyUp" }, "key": key, "code": code,
                   "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}),
        );
    }

    /// Mouse button down or up at the centre of the element `selector`.
    pub fn mouse(&self, down: bool, selector: &str) {
        let r = self.eval(&format!(
            "(() => {{ const r = document.querySelector({sel}).getBoundingClientRect();
                      return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            sel = Value::String(selector.into())
        ));
        let (x, y) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        );
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": if down { "mousePressed" } else { "mouseReleased" }, "x": x, "y": y,
                   "button": "left", "buttons": if down { 1 } else { 0 }, "clickCount": 1}),
        );
    }

    /// A PNG of the viewport, or of the element `selector` when given, written to `path`.
    pub fn screenshot(&self, path: &Path, selector: Option<&str>) {
        let mut params = json!({"format": "png", "captureBeyondViewport": false});
        if let Some(sel) = selector {
            let r = self.eval(&format!(
                "(() => {{ const r = document.querySelector({sel}).getBoundingClientRect();
                          return {{x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}}; }})()",
                sel = Value::String(sel.into())
            ));
            params["clip"] = json!({"x": r["x"], "y": r["y"], "width": r["width"],
                                    "height": r["height"], "scale": 1});
        }
        let r = self.call("Page.captureScreenshot", params);
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// How much of a PNG file is not its background, decoded by the browser: `{width, height,
    /// colors (distinct, capped at 4096), foreground (share of pixels that differ from the most
    /// common colour)}`.
    pub fn image_stats(&self, path: &Path) -> Value {
        let png = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        self.eval(&format!(
            r#"(async () => {{
                const blob = await (await fetch("data:image/png;base64,{b64}")).blob();
                const bmp = await createImageBitmap(blob);
                const c = new OffscreenCanvas(bmp.width, bmp.height);
                const g = c.getContext('2d');
                g.drawImage(bmp, 0, 0);
                const px = new Uint32Array(g.getImageData(0, 0, bmp.width, bmp.height).data.buffer);
                const counts = new Map();
                for (const p of px) {{
                    if (counts.size < 4096 || counts.has(p)) counts.set(p, (counts.get(p) || 0) + 1);
                }}
                const top = Math.max(...counts.values());
                return {{width: bmp.width, height: bmp.height, colors: counts.size,
                         foreground: 1 - top / px.length}};
            }})()"#
        ))
    }

    /// Starts recording what the page plays from the `<audio>`/`<video>` element `selector`
    /// (its `srcObject` stream), through WebAudio at 48 kHz mono. An AudioWorklet takes the
    /// samples on the audio thread, so a busy page cannot make the recording drop any.
    pub fn record_start(&self, selector: &str) {
        self.eval(&format!(
            r#"(async () => {{
                const el = document.querySelector({sel});
                if (!el || !el.srcObject) throw new Error('nothing playing in ' + {sel});
                const ctx = new AudioContext({{ sampleRate: 48000 }});
                const code = `registerProcessor('testkit-tap', class extends AudioWorkletProcessor {{
                    process(inputs) {{
                        const ch = inputs[0][0];
                        if (ch) this.port.postMessage(ch.slice(0));
                        return true;
                    }}
                }});`;
                const url = URL.createObjectURL(new Blob([code], {{ type: 'text/javascript' }}));
                await ctx.audioWorklet.addModule(url);
                await ctx.resume();
                const src = ctx.createMediaStreamSource(el.srcObject);
                const node = new AudioWorkletNode(ctx, 'testkit-tap', {{
                    numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1,
                    channelCountMode: 'explicit', channelInterpretation: 'speakers' }});
                const chunks = [];
                node.port.onmessage = (e) => chunks.push(e.data);
                src.connect(node);
                window.__testkitRecording = {{ ctx, src, node, chunks }};
            }})()"#,
            sel = Value::String(selector.into())
        ));
    }

    /// Stops the recording started by [`record_start`](Self::record_start); mono samples at
    /// 48 kHz in [-1, 1].
    pub fn record_stop(&self) -> Vec<f32> {
        let b64 = self.eval(
            r#"(async () => {
                const r = window.__testkitRecording;
                r.src.disconnect();
                r.node.disconnect();
                await r.ctx.close();
                const n = r.chunks.reduce((s, c) => s + c.length, 0);
                const pcm = new Int16Array(n);
                let o = 0;
                for (const c of r.chunks) for (const x of c) pcm[o++] = Math.round(Math.max(-1, Math.min(1, x)) * 32767);
                const bytes = new Uint8Array(pcm.buffer);
                let bin = '';
                for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
                return btoa(bin);
            })()"#,
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("recording"))
            .expect("recording base64");
        bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect()
    }

    /// Fetches `url` from the page (its cookies, same origin) and decodes it with the browser's
    /// own decoders (`decodeAudioData`, 48 kHz): mono samples in [-1, 1].
    pub fn decode_audio(&self, url: &str) -> Vec<f32> {
        let b64 = self.eval(&format!(
            r#"(async () => {{
                const r = await fetch({url});
                if (!r.ok) throw new Error('HTTP ' + r.status);
                const ctx = new OfflineAudioContext(1, 48000, 48000);
                const audio = await ctx.decodeAudioData(await r.arrayBuffer());
                const x = audio.getChannelData(0);
                const pcm = new Int16Array(x.length);
                for (let i = 0; i < x.length; i++) pcm[i] = Math.round(Math.max(-1, Math.min(1, x[i])) * 32767);
                const bytes = new Uint8Array(pcm.buffer);
                let bin = '';
                for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
                return btoa(bin);
            }})()"#,
            url = Value::String(url.into())
        ));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("decoded audio"))
            .expect("decoded audio base64");
        bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect()
    }

    /// The last `n` console messages and exceptions of the page.
    pub fn console_tail(&self, n: usize) -> String {
        let c = self.console.lock().unwrap();
        let start = c.len().saturating_sub(n);
        format!("--- page console ---\n{}", c[start..].join("\n"))
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn io_loop(
    mut ws: WebSocket<MaybeTlsStream<TcpStream>>,
    out: Receiver<Pending>,
    console: Arc<Mutex<Vec<String>>>,
) {
    let mut waiting: Vec<(u64, Sender<Value>)> = Vec::new();
    loop {
        loop {
            match out.try_recv() {
                Ok((msg, reply)) => {
                    waiting.push((msg["id"].as_u64().unwrap_or(0), reply));
                    if ws.send(Message::text(msg.to_string())).is_err() {
                        return;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    let _ = ws.close(None);
                    return;
                }
            }
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    if let Some(i) = waiting.iter().position(|(w, _)| *w == id) {
                        let (_, tx) = waiting.swap_remove(i);
                        let _ = tx.send(v);
                    }
                } else if let Some(line) = console_line(&v) {
                    let mut c = console.lock().unwrap();
                    c.push(line);
                    if c.len() > CONSOLE_KEEP {
                        c.drain(..CONSOLE_KEEP / 4);
                    }
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn console_line(v: &Value) -> Option<String> {
    let p = &v["params"];
    match v["method"].as_str()? {
        "Runtime.consoleAPICalled" => {
            let args: Vec<String> = p["args"]
                .as_array()?
                .iter()
                .map(|a| match &a["value"] {
                    Value::String(s) => s.clone(),
                    Value::Null => a["description"].as_str().unwrap_or("").to_string(),
                    other => other.to_string(),
                })
                .collect();
            Some(format!("[{}] {}", p["type"].as_str()?, args.join(" ")))
        }
        "Runtime.exceptionThrown" => Some(format!(
            "[exception] {}",
            p["exceptionDetails"]["exception"]["description"]
                .as_str()
                .or(p["exceptionDetails"]["text"].as_str())
                .unwrap_or("?")
        )),
        _ => None,
    }
}
