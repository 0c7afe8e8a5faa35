//! The bridge under test: the real `pttbridge` binary run with a config in a temp dir,
//! observed through its HTTP port (`/healthz`, `/metrics`, `/events`) and its logs;
//! and `pttbridge probe` runs with their JSON-line output.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::events::{EventQueue, capture};
use crate::http::{self, Response};
use crate::murmur::Murmur;
use crate::peers;

/// A `[[ptt.servers]]` table for a test murmurd, pinned to its certificate, with one
/// account per `(username, channel)`.
pub fn ptt_server_toml(id: &str, murmur: &Murmur, accounts: &[(&str, &str)]) -> String {
    let mut t = format!(
        "[[ptt.servers]]\nid = \"{id}\"\nhost = \"127.0.0.1\"\nport = {}\nfingerprint = \"{}\"\n",
        murmur.port(),
        murmur.cert_sha256()
    );
    for (user, channel) in accounts {
        t.push_str(&format!(
            "[[ptt.servers.accounts]]\nusername = \"{user}\"\nchannel = \"{channel}\"\n"
        ));
    }
    t
}

/// A `[meeting]` table as the meeting tests use it: quick ring (100 ms) and answer (300 ms),
/// the app `test`/`test`, and dial-in `number` for the account `bridge` of server `local`,
/// named North.
pub fn meeting_north_toml(number: i64) -> String {
    format!(
        r#"[meeting]
ring_delay_ms = 100
answer_delay_ms = 300
[[meeting.apps]]
app_id = "test"
secret = "test"
[[meeting.dial_in]]
user_id = {number}
server = "local"
account = "bridge"
name = "North"
"#
    )
}

/// A `[meeting]` table for client mode: no server of its own (`enabled = false`), quick ring
/// (100 ms) and answer (200 ms), dial-in `number` for the account `bridge` of server `local`
/// named North, registered at the RTCPeer server `url` (app `test`/`test`) whose certificate
/// `ca_file` checks.
pub fn client_mode_north_toml(number: i64, url: &str, ca_file: &str) -> String {
    format!(
        r#"[meeting]
enabled = false
ring_delay_ms = 100
answer_delay_ms = 200
[[meeting.dial_in]]
user_id = {number}
server = "local"
account = "bridge"
name = "North"
[[meeting.upstream]]
url = "{url}"
ca_file = "{ca_file}"
app_id = "test"
secret = "test"
dial_in = [{number}]
"#
    )
}

/// The operator token every test bridge is started with (`[operator] token`).
pub const OPERATOR_TOKEN: &str = "testkit-operator-token-0001";

/// The `Authorization` header of [`OPERATOR_TOKEN`].
pub const OPERATOR: (&str, &str) = ("Authorization", "Bearer testkit-operator-token-0001");

/// A running bridge. Killed on drop.
pub struct Bridge {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
}

impl Bridge {
    /// Runs `bin run --config` with `config` plus an `[http]` table on a free port, an
    /// `[operator]` token ([`OPERATOR_TOKEN`], which this handle presents on every request) and
    /// debug logs, and waits until `/healthz` answers. An `[http]` table in `config` gets the
    /// `listen` line added (e.g. TLS: see [`crate::tls`] and [`crate::http::use_tls`]).
    pub fn start(bin: impl AsRef<Path>, config: &str) -> Bridge {
        Self::start_at(bin, config, ([127, 0, 0, 1], peers::free_port()).into())
    }

    /// [`start`](Self::start) with the HTTP port at `addr` (e.g. one another process was told
    /// about before this bridge existed).
    pub fn start_at(bin: impl AsRef<Path>, config: &str, addr: SocketAddr) -> Bridge {
        Self::launch(
            bin.as_ref(),
            config,
            addr,
            "info,pttbridge=debug",
            false,
            &[],
        )
    }

    /// [`start`](Self::start) with these environment variables (e.g. a test sound server's,
    /// [`crate::sound::Pulse::env`]).
    pub fn start_with_env(
        bin: impl AsRef<Path>,
        config: &str,
        env: &[(&'static str, String)],
    ) -> Bridge {
        let addr = ([127, 0, 0, 1], peers::free_port()).into();
        Self::launch(
            bin.as_ref(),
            config,
            addr,
            "info,pttbridge=debug",
            false,
            env,
        )
    }

    /// [`start`](Self::start) with `[log] level = level` (e.g. `"info"`, the default) instead
    /// of the tests' `"info,pttbridge=debug"`, and `RUST_LOG` (which would override it) unset.
    pub fn start_with_log_level(bin: impl AsRef<Path>, config: &str, level: &str) -> Bridge {
        let addr = ([127, 0, 0, 1], peers::free_port()).into();
        Self::launch(bin.as_ref(), config, addr, level, true, &[])
    }

    fn launch(
        bin: &Path,
        config: &str,
        addr: SocketAddr,
        level: &str,
        exact: bool,
        env: &[(&'static str, String)],
    ) -> Bridge {
        let dir = tempfile::tempdir().expect("temp dir");
        let listen = format!("[http]\nlisten = \"{addr}\"\n");
        let head =
            format!("[log]\nlevel = \"{level}\"\n[operator]\ntoken = \"{OPERATOR_TOKEN}\"\n");
        let full = if config.contains("[http]\n") {
            format!("{}\n{head}", config.replacen("[http]\n", &listen, 1))
        } else {
            format!("{listen}{head}\n{config}")
        };
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, &full).expect("write config");
        let mut command = Command::new(bin);
        if exact {
            command.env_remove("RUST_LOG");
        }
        let mut child = command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["run", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = capture(child.stderr.take().unwrap());
        let mut bridge = Bridge {
            child,
            addr,
            dir,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while http::get(addr, "/healthz").is_err() {
            if let Ok(Some(st)) = bridge.child.try_wait() {
                bridge.fail(&format!("exited at start with {st}"));
            }
            if Instant::now() > deadline {
                bridge.fail("HTTP port did not open within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bridge
    }

    /// Its HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id (for CPU measurements).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its temp dir (config, recordings).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET path`, as an operator.
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    /// Any request with an optional JSON body, as an operator.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        http::request_with(self.addr, method, path, body, &[OPERATOR])
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.logs_tail(60)))
    }

    /// Any request with an optional JSON body and these headers only (no operator
    /// credentials unless given): what an app or an outsider sends.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Response {
        http::request_with(self.addr, method, path, body, headers)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.logs_tail(60)))
    }

    /// `/healthz` as JSON.
    pub fn health(&self) -> Value {
        self.get("/healthz").json()
    }

    /// Polls `/healthz` until `pred` holds; panics naming `what` with the last health and logs.
    pub fn wait_health(
        &self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let h = http::request_with(self.addr, "GET", "/healthz", None, &[OPERATOR])
                .ok()
                .map(|r| r.json());
            if let Some(h) = &h
                && pred(h)
            {
                return h.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "bridge health never became {what} within {timeout:?}; last: {}\n{}",
                    h.map(|h| h.to_string())
                        .unwrap_or_else(|| "no answer".into()),
                    self.logs_tail(80)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Subscribes to `/events` (hub events as JSON, each with `type`, `version`, `group_id`, `party`, ...).
    pub fn events(&self) -> EventQueue {
        http::sse_with(self.addr, "/events", &[OPERATOR])
            .unwrap_or_else(|e| panic!("/events: {e}\n{}", self.logs_tail(60)))
    }

    /// Sum of the values of `/metrics` samples whose line starts with `prefix`
    /// (e.g. `pttbridge_ptt_voice_packets_total{` plus labels to narrow it).
    pub fn metric(&self, prefix: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Everything it logged.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The last `n` log lines.
    pub fn logs_tail(&self, n: usize) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        format!(
            "--- bridge log (last {n} lines) ---\n{}",
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    /// Panics with `what` and the log.
    pub fn fail(&mut self, what: &str) -> ! {
        std::thread::sleep(Duration::from_millis(100));
        panic!("bridge: {what}\n{}", self.logs_tail(80))
    }

    /// Asks it to stop (SIGTERM) and waits up to `timeout`; kills it after that.
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `pttbridge probe` run, its JSON lines collected as they come.
pub struct Probe {
    child: Child,
    /// Its stdout events.
    pub events: EventQueue,
    stderr: Arc<Mutex<String>>,
}

impl Probe {
    /// Starts `bin probe --server 127.0.0.1:<murmur> --fingerprint <pin> --user <user> <args...>`.
    pub fn spawn(bin: impl AsRef<Path>, murmur: &Murmur, user: &str, args: &[&str]) -> Probe {
        let mut child = Command::new(bin.as_ref())
            .arg("probe")
            .args(["--server", &format!("127.0.0.1:{}", murmur.port())])
            .args(["--fingerprint", murmur.cert_sha256(), "--user", user])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start probe: {e}"));
        let events = EventQueue::from_json_lines(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        Probe {
            child,
            events,
            stderr,
        }
    }

    /// Waits for an event named `name`; panics with the probe's output on timeout.
    pub fn expect_event(&mut self, name: &str, timeout: Duration) -> Value {
        self.expect(|e| e["event"] == name, timeout)
    }

    /// Waits for an event matching `pred`.
    pub fn expect(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        match self.events.try_expect(&pred, timeout) {
            Some(ev) if pred(&ev) => ev,
            other => panic!(
                "probe: no matching event within {timeout:?} (got {other:?})\n{}\n--- stderr ---\n{}",
                self.events.tail(40),
                self.stderr.lock().unwrap()
            ),
        }
    }

    /// Waits for it to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "probe did not exit within {timeout:?}\n{}",
                    self.events.tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A path in a temp dir for a recording.
pub fn temp_wav(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(format!("{name}.wav"))
}
