//! A spec-strict Totalk organisation-admin server: `tests/peers/admin_server.py` (aiohttp),
//! written from the seed's `/ent/` examples alone, not from the bridge's types. It serves the
//! users, channels, member roles and messages of a JSON file the test writes, checks every call
//! against the seed (method, path, form fields, token) and reports what breaks it as a
//! `violation`; it can stop and start listening (the admin API down and back) and answer badly
//! on purpose. Killed on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::events::is_exit;
use crate::peers;
use crate::pypeer::PyPeer;
use crate::tls::ServerFiles;

/// A running admin server.
pub struct AdminServer {
    peer: PyPeer,
    port: u16,
    data: PathBuf,
    tls: bool,
}

const WAIT: Duration = Duration::from_secs(15);

impl AdminServer {
    /// Writes `data` (see the script's docstring for its shape) to `dir/admin.json` and serves
    /// it on a free loopback port; returns once it listens. Tokens time out after `token_ttl`.
    /// Fails naming the setup command when the venv (with aiohttp) is missing.
    pub fn start(dir: &Path, data: &Value, token_ttl: Duration) -> AdminServer {
        Self::spawn(dir, data, token_ttl, None)
    }

    /// The same over HTTPS with `cert` (see [`crate::tls::TestCa::write_server`]).
    pub fn start_tls(
        dir: &Path,
        data: &Value,
        token_ttl: Duration,
        cert: &ServerFiles,
    ) -> AdminServer {
        Self::spawn(dir, data, token_ttl, Some(cert))
    }

    fn spawn(
        dir: &Path,
        data: &Value,
        token_ttl: Duration,
        tls: Option<&ServerFiles>,
    ) -> AdminServer {
        let path = dir.join("admin.json");
        std::fs::write(&path, data.to_string()).expect("write the admin data file");
        let port = peers::free_port();
        let mut args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--data".to_owned(),
            path.display().to_string(),
            "--token-ttl".to_owned(),
            token_ttl.as_secs_f64().to_string(),
        ];
        if let Some(files) = tls {
            args.extend([
                "--cert".to_owned(),
                files.cert.display().to_string(),
                "--key".to_owned(),
                files.key.display().to_string(),
            ]);
        }
        let mut s = AdminServer {
            peer: PyPeer::spawn("admin server", "admin_server.py", args),
            port,
            data: path,
            tls: tls.is_some(),
        };
        let ready = s.peer.events.try_expect(|e| e["event"] == "ready", WAIT);
        if ready.is_none_or(|e| is_exit(&e)) {
            let hint = if s.peer.stderr().contains("ModuleNotFoundError") {
                format!(" (the venv lacks aiohttp: run {})", peers::SETUP_COMMAND)
            } else {
                String::new()
            };
            s.peer.fail(&format!("did not start{hint}"));
        }
        s
    }

    /// `http(s)://127.0.0.1:PORT`: the base URL the bridge is configured with.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Replaces its data with `data` (written to the file, then re-read).
    pub fn set_data(&mut self, data: &Value) {
        std::fs::write(&self.data, data.to_string()).expect("write the admin data file");
        self.ack(json!({"cmd": "reload"}));
    }

    /// Stops listening: the admin API is down.
    pub fn stop(&mut self) {
        self.peer.cmd(json!({"cmd": "stop"}));
        self.peer.expect(|e| e["event"] == "stopped", WAIT);
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.peer.cmd(json!({"cmd": "start"}));
        self.peer.expect(|e| e["event"] == "started", WAIT);
    }

    /// Every token issued so far times out (406 on its next use).
    pub fn expire_tokens(&mut self) {
        self.ack(json!({"cmd": "expire_tokens"}));
    }

    /// Answers every call after login badly: `"garbage"` (not JSON), `"error"` (code 500) or
    /// `"huge"` (pages three times larger than asked for) or `"flood"` (fifty times: megabytes);
    /// `None` behaves again.
    pub fn misbehave(&mut self, how: Option<&str>) {
        self.ack(json!({"cmd": "misbehave", "how": how}));
    }

    /// What it found against the seed so far.
    pub fn violations(&mut self) -> Vec<String> {
        self.peer.cmd(json!({"cmd": "violations"}));
        let ev = self.peer.expect(|e| e["event"] == "violations", WAIT);
        ev["list"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|v| v.as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for a call to `method` (its fields, without password and token).
    pub fn expect_request(&mut self, method: &str, timeout: Duration) -> Value {
        self.peer.expect(
            |e| e["event"] == "request" && e["method"] == method,
            timeout,
        )["fields"]
            .clone()
    }

    /// Waits for an accepted `pushNotice` (its fields, without the token).
    pub fn expect_notice(&mut self, timeout: Duration) -> Value {
        self.peer.expect(|e| e["event"] == "notice", timeout)["fields"].clone()
    }

    /// How many calls to `method` it has had so far.
    pub fn count(&mut self, method: &str) -> usize {
        self.peer
            .events
            .history()
            .iter()
            .filter(|e| e["event"] == "request" && e["method"] == method)
            .count()
    }

    fn ack(&mut self, cmd: Value) {
        let name = cmd["cmd"].clone();
        self.peer.cmd(cmd);
        self.peer
            .expect(|e| e["event"] == "ack" && e["cmd"] == name, WAIT);
    }
}
