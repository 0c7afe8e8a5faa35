//! A spec-strict RTCPeer server: `tests/peers/rtcpeer_server.py` (aiohttp over HTTPS/WSS, aiortc
//! for the media of the `sdp` extension), written from the 527meeting spec's examples alone, not
//! from the bridge's types. It plays a caller on that server and is driven by JSON lines; every
//! frame it receives or sends comes back as a `ws_in`/`ws_out` event, anything the spec does not
//! allow as a `violation`. Killed on drop.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::events::{EventQueue, capture, is_exit};
use crate::peers;
use crate::tls::ServerFiles;

/// A running spec server.
pub struct SpecServer {
    child: Child,
    stdin: Option<ChildStdin>,
    events: EventQueue,
    stderr: Arc<Mutex<String>>,
}

impl SpecServer {
    /// Serves HTTPS/WSS on 127.0.0.1:`port` with `cert`, app `test`/`test`; returns once it
    /// listens. Fails naming the setup command when the venv (with aiohttp) is missing.
    pub fn start(port: u16, cert: &ServerFiles) -> SpecServer {
        let mut child = Command::new(peers::venv_python())
            .arg("-u")
            .arg(peers::peer_script("rtcpeer_server.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the spec RTCPeer server: {e}; run {}",
                    peers::SETUP_COMMAND
                )
            });
        let events = EventQueue::from_json_lines(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        let mut s = SpecServer {
            stdin: child.stdin.take(),
            child,
            events,
            stderr,
        };
        let ready = s
            .events
            .try_expect(|e| e["event"] == "ready", Duration::from_secs(30));
        if ready.is_none_or(|e| is_exit(&e)) {
            let err = s.stderr.lock().unwrap().clone();
            let hint = if err.contains("ModuleNotFoundError") {
                format!(
                    " (the venv lacks a package of tests/peers/requirements.txt: run {})",
                    peers::SETUP_COMMAND
                )
            } else {
                String::new()
            };
            s.fail(&format!("did not start{hint}"));
        }
        s
    }

    /// Sends a driver command.
    pub fn cmd(&mut self, cmd: Value) {
        let line = format!("{cmd}\n");
        let ok = self
            .stdin
            .as_mut()
            .is_some_and(|s| s.write_all(line.as_bytes()).and_then(|_| s.flush()).is_ok());
        if !ok {
            self.fail(&format!("cannot send {cmd}: it is not running"));
        }
    }

    /// Waits for an event matching `pred`; panics with its output on timeout.
    pub fn expect(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        match self.events.try_expect(&pred, timeout) {
            Some(ev) if !is_exit(&ev) || pred(&ev) => ev,
            Some(_) => self.fail("exited while waiting for an event"),
            None => self.fail(&format!("no matching event within {timeout:?}")),
        }
    }

    /// The next frame the client sent with `module.method` matching `pred`.
    pub fn received(
        &mut self,
        module: &str,
        method: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        self.expect(
            |e| {
                e["event"] == "ws_in"
                    && e["msg"]["module"] == module
                    && e["msg"]["method"] == method
                    && pred(&e["msg"])
            },
            timeout,
        )["msg"]
            .clone()
    }

    /// Everything it reported so far.
    pub fn history(&mut self) -> Vec<Value> {
        self.events.history().to_vec()
    }

    /// Records what the client publishes into `wav` while `during` runs; returns the report.
    pub fn record(&mut self, wav: &Path, during: impl FnOnce(&mut Self)) -> Value {
        self.cmd(serde_json::json!({"cmd": "record_start"}));
        self.expect(
            |e| e["event"] == "ack" && e["cmd"] == "record_start",
            Duration::from_secs(10),
        );
        during(self);
        self.cmd(serde_json::json!({"cmd": "record_stop", "wav": wav}));
        self.expect(|e| e["event"] == "recorded", Duration::from_secs(10))
    }

    /// Panics with the recent events and stderr.
    pub fn fail(&mut self, what: &str) -> ! {
        panic!(
            "spec RTCPeer server: {what}\n{}\n--- stderr ---\n{}",
            self.events.tail(30),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for SpecServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- spec RTCPeer server ---\n{}\n--- its stderr ---\n{}",
                self.events.tail(15),
                self.stderr.lock().unwrap_or_else(|p| p.into_inner())
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
