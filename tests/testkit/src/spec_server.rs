//! A spec-strict RTCPeer server: `tests/peers/rtcpeer_server.py` (aiohttp over HTTPS/WSS, aiortc
//! for the media of the `sdp` extension), written from the 527meeting spec's examples alone, not
//! from the bridge's types. It plays a caller on that server and is driven by JSON lines; every
//! frame it receives or sends comes back as a `ws_in`/`ws_out` event, anything the spec does not
//! allow as a `violation`. Killed on drop.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::events::is_exit;
use crate::peers;
use crate::pypeer::PyPeer;
use crate::tls::ServerFiles;

/// A running spec server.
pub struct SpecServer {
    peer: PyPeer,
}

impl SpecServer {
    /// Serves HTTPS/WSS on 127.0.0.1:`port` with `cert`, app `test`/`test`; returns once it
    /// listens. Fails naming the setup command when the venv (with aiohttp) is missing.
    pub fn start(port: u16, cert: &ServerFiles) -> SpecServer {
        let port = port.to_string();
        let args = [
            "--port".as_ref(),
            port.as_ref(),
            "--cert".as_ref(),
            cert.cert.as_os_str(),
            "--key".as_ref(),
            cert.key.as_os_str(),
        ];
        let mut s = SpecServer {
            peer: PyPeer::spawn("spec RTCPeer server", "rtcpeer_server.py", args),
        };
        let ready = s
            .peer
            .events
            .try_expect(|e| e["event"] == "ready", Duration::from_secs(30));
        if ready.is_none_or(|e| is_exit(&e)) {
            let err = s.peer.stderr();
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
        self.peer.cmd(cmd);
    }

    /// Waits for an event matching `pred`; panics with its output on timeout.
    pub fn expect(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.peer.expect(pred, timeout)
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
        self.peer.events.history().to_vec()
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
        self.peer.fail(what)
    }
}
