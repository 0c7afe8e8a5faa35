//! A PTT terminal peer: `tests/peers/terminal.py` (pymumble, a third-party Mumble client) run with
//! the repository's venv Python and driven by JSON lines. See that file for the event and command
//! formats. Killed on drop.
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::terminal::Terminal;
//! # let port = 0;
//! let mut t = Terminal::builder(port, "alice").channel("North").connect();
//! t.text("hello");
//! let ev = t.expect(|e| e["event"] == "text" && e["from"] == "bob", Duration::from_secs(5));
//! # let _ = ev;
//! ```

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::events::{EventQueue, capture, is_exit};
use crate::peers;

/// Default wait for replies to commands (they are answered at once unless the server is stuck).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a terminal is started; see [`Terminal::builder`].
#[derive(Debug, Clone)]
pub struct TerminalBuilder {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    channel: Option<String>,
    ready_timeout: Duration,
}

impl TerminalBuilder {
    /// Server host (default 127.0.0.1).
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }

    /// Password (for registered users or a server password).
    pub fn password(mut self, pw: &str) -> Self {
        self.password = Some(pw.to_string());
        self
    }

    /// Channel path to join after connecting ("North", "Parent/Child"; "" is the root).
    pub fn channel(mut self, path: &str) -> Self {
        self.channel = Some(path.to_string());
        self
    }

    /// How long to wait for "ready" in [`connect`](Self::connect) (default 20 s).
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }

    /// Starts the terminal process without waiting for it to connect.
    pub fn spawn(self) -> Terminal {
        Terminal::spawn(self)
    }

    /// Starts the terminal and waits until it has joined its channel; panics (with its stderr) when it
    /// reports an error or exits instead.
    pub fn connect(self) -> Terminal {
        match self.try_connect() {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`connect`](Self::connect) but returns the failure (the error event, or why it exited)
    /// with the terminal's stderr, for tests that expect the connection to fail.
    pub fn try_connect(self) -> Result<Terminal, String> {
        let timeout = self.ready_timeout;
        let mut t = self.spawn();
        match t.try_expect(
            |e| e["event"] == "ready" || e["event"] == "error" || e["event"] == "exit",
            timeout,
        ) {
            Some(ev) if ev["event"] == "ready" => {
                t.ready = Some(ev);
                Ok(t)
            }
            other => {
                let why = match other {
                    Some(ev) => ev.to_string(),
                    None => format!("no \"ready\" within {timeout:?}"),
                };
                let d = t.diagnostics();
                Err(format!("terminal {} could not join: {why}\n{d}", t.user))
            }
        }
    }
}

/// A running pymumble terminal.
pub struct Terminal {
    user: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: EventQueue,
    stderr: Arc<Mutex<String>>,
    ready: Option<Value>,
    next_id: u64,
}

impl Terminal {
    /// Options for a terminal connecting to 127.0.0.1:`port` as `user`.
    pub fn builder(port: u16, user: &str) -> TerminalBuilder {
        TerminalBuilder {
            host: "127.0.0.1".to_string(),
            port,
            user: user.to_string(),
            password: None,
            channel: None,
            ready_timeout: Duration::from_secs(20),
        }
    }

    /// Connects to 127.0.0.1:`port` as `user`, joins `channel` (if given) and waits for "ready".
    pub fn connect(port: u16, user: &str, channel: Option<&str>) -> Terminal {
        let mut b = Self::builder(port, user);
        if let Some(c) = channel {
            b = b.channel(c);
        }
        b.connect()
    }

    fn spawn(b: TerminalBuilder) -> Terminal {
        let python = peers::venv_python();
        let script = peers::peer_script("terminal.py");
        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(script)
            .args([
                "--host",
                &b.host,
                "--port",
                &b.port.to_string(),
                "--user",
                &b.user,
            ])
            .args(["--timeout", &b.ready_timeout.as_secs_f32().to_string()])
            .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
            .env("PYTHONUNBUFFERED", "1")
            // keep the source tree free of __pycache__
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(pw) = &b.password {
            cmd.args(["--password", pw]);
        }
        if let Some(c) = &b.channel {
            cmd.args(["--channel", c]);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start the terminal peer: {e}; run {}",
                peers::SETUP_COMMAND
            )
        });

        let events = EventQueue::from_json_lines(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        Terminal {
            user: b.user,
            stdin: child.stdin.take(),
            child,
            events,
            stderr,
            ready: None,
            next_id: 1,
        }
    }

    /// The user name it connected with.
    pub fn name(&self) -> &str {
        &self.user
    }

    /// Its session id on the server (from the "ready" event).
    pub fn session(&self) -> u64 {
        self.ready_event()["session"].as_u64().unwrap_or(0)
    }

    /// The channel path it joined (from the "ready" event).
    pub fn channel(&self) -> String {
        self.ready_event()["channel"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn ready_event(&self) -> &Value {
        self.ready
            .as_ref()
            .expect("terminal not connected: use connect()")
    }

    /// Sends one raw command object (e.g. `json!({"cmd": "users"})`).
    pub fn send(&mut self, cmd: Value) {
        let line = format!("{cmd}\n");
        let ok = self
            .stdin
            .as_mut()
            .map(|s| s.write_all(line.as_bytes()).and_then(|_| s.flush()).is_ok())
            .unwrap_or(false);
        if !ok {
            self.fail(format!("cannot send {cmd}: it is not running"));
        }
    }

    /// Sends a command with a fresh id and waits for the reply carrying that id (ack, recorded,
    /// users, ...). Panics on an error reply or timeout.
    pub fn request(&mut self, mut cmd: Value, timeout: Duration) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        self.send(cmd.clone());
        let ev = self.expect(|e| e["id"] == json!(id), timeout);
        if ev["event"] == "error" {
            self.fail(format!("command {cmd} failed: {}", ev["message"]));
        }
        ev
    }

    /// Waits up to `timeout` for an event matching `pred` (events that arrived earlier and were not
    /// matched yet are looked at first, so the order of expects does not have to follow the order of
    /// events). Panics with the events seen and the terminal's stderr on timeout or exit.
    pub fn expect(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        match self.try_expect(&pred, timeout) {
            Some(ev) if !is_exit(&ev) || pred(&ev) => ev,
            Some(_) => self.fail("exited while waiting for an event".to_string()),
            None => self.fail(format!("no matching event within {timeout:?}")),
        }
    }

    /// Like [`expect`](Self::expect) but returns `None` on timeout, and the `{"event":"exit"}` marker
    /// when the terminal's output ended first.
    pub fn try_expect(
        &mut self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        self.events.try_expect(pred, timeout)
    }

    /// Waits for the next event named `name` (e.g. "play_done", "disconnected").
    pub fn expect_event(&mut self, name: &str, timeout: Duration) -> Value {
        self.expect(|e| e["event"] == name, timeout)
    }

    /// Starts sending a WAV (48 kHz, 16-bit) as voice in real time; returns its length in seconds.
    /// A "play_done" event follows when the last frame is sent.
    pub fn play(&mut self, wav: &Path) -> f64 {
        let ack = self.request(
            json!({"cmd": "play", "wav": wav.display().to_string()}),
            REPLY_TIMEOUT,
        );
        ack["seconds"].as_f64().unwrap_or(0.0)
    }

    /// Plays a WAV and waits for "play_done" (returned: `seconds`, `wall_seconds`).
    pub fn play_and_wait(&mut self, wav: &Path, timeout: Duration) -> Value {
        self.play(wav);
        self.expect_event("play_done", timeout)
    }

    /// Drops whatever of the current play has not been sent yet.
    pub fn stop_play(&mut self) {
        self.request(json!({"cmd": "stop_play"}), REPLY_TIMEOUT);
    }

    /// Starts recording what it hears; the timeline starts now.
    pub fn record_start(&mut self) {
        self.request(json!({"cmd": "record_start"}), REPLY_TIMEOUT);
    }

    /// Stops recording and writes the mix to `wav` and each speaker to `<wav>.<name>.wav`; returns the
    /// "recorded" event (`seconds`, `rms`, `peak`, `speakers`: [{`name`, `wav`, `chunks`, `first_s`,
    /// `last_s`, `voice_seconds`, `reanchors`, `rms`, `peak`}]).
    pub fn record_stop(&mut self, wav: &Path) -> Value {
        self.request(
            json!({"cmd": "record_stop", "wav": wav.display().to_string()}),
            Duration::from_secs(30),
        )
    }

    /// Sends a text message to its current channel.
    pub fn text(&mut self, message: &str) {
        self.request(json!({"cmd": "text", "message": message}), REPLY_TIMEOUT);
    }

    /// Sends a private text message to a user by name.
    pub fn text_to(&mut self, user: &str, message: &str) {
        self.request(
            json!({"cmd": "text", "message": message, "to": user}),
            REPLY_TIMEOUT,
        );
    }

    /// Moves to a channel path and waits until the server has moved it.
    pub fn move_to(&mut self, channel: &str) {
        self.request(json!({"cmd": "move", "channel": channel}), REPLY_TIMEOUT);
    }

    /// Names of the users in its current channel (itself included).
    pub fn users(&mut self) -> Vec<String> {
        let ev = self.request(json!({"cmd": "users"}), REPLY_TIMEOUT);
        let mut names: Vec<String> = ev["users"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Path of the channel it is in now, as its client sees it.
    pub fn current_channel(&mut self) -> String {
        let ev = self.request(json!({"cmd": "users"}), REPLY_TIMEOUT);
        ev["channel"].as_str().unwrap_or_default().to_string()
    }

    /// Polls until the server no longer mutes it (a console's floor mutes the terminals in its
    /// call; the unmute after `releaseMic` is asynchronous); panics if it stays muted.
    pub fn wait_unmuted(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ev = self.request(json!({"cmd": "users"}), REPLY_TIMEOUT);
            let me = self.session();
            let muted = ev["users"]
                .as_array()
                .and_then(|a| a.iter().find(|u| u["session"] == me))
                .is_some_and(|u| u["muted"] == true);
            if !muted {
                return;
            }
            if Instant::now() > deadline {
                self.fail(format!("still muted by the server after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until it is in channel `path`; panics naming where it is instead.
    pub fn wait_in_channel(&mut self, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now_in = self.current_channel();
            if now_in == path {
                return;
            }
            if Instant::now() > deadline {
                self.fail(format!(
                    "not in channel {path:?} within {timeout:?}: in {now_in:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks it to disconnect and exit; kills it if it has not exited within 5 s.
    pub fn quit(mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"{\"cmd\":\"quit\"}\n");
        }
        self.stdin = None;
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
        }
    }

    /// Waits for the process to exit (e.g. after "disconnected"); `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every event received so far, in order.
    pub fn history(&mut self) -> &[Value] {
        self.events.history()
    }

    /// What the terminal printed on stderr so far (Python tracebacks, pymumble errors).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Panics with `what` and the [`diagnostics`](Self::diagnostics).
    pub fn fail(&mut self, what: String) -> ! {
        let d = self.diagnostics();
        panic!("terminal {}: {what}\n{d}", self.user)
    }

    /// A block for failure messages: events seen and stderr.
    pub fn diagnostics(&mut self) -> String {
        format!(
            "--- terminal {} events {} ---\n--- stderr ---\n{}\n--- (peer missing or broken? run {}) ---",
            self.user,
            self.events.tail(40),
            self.stderr(),
            peers::SETUP_COMMAND
        )
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("user", &self.user)
            .field("pid", &self.child.id())
            .field("ready", &self.ready)
            .finish()
    }
}
