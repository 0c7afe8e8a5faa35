//! A spec-strict RTCPeer server: `tests/peers/rtcpeer_server.py` (aiohttp over HTTPS/WSS, aiortc
//! for the media of the `sdp` extension), written from the 527meeting spec's examples alone, not
//! from the bridge's types. It plays a caller on that server and is driven by JSON lines; every
//! frame it receives or sends comes back as a `ws_in`/`ws_out` event, anything the spec does not
//! allow as a `violation`. Killed on drop.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::audio::Comparison;
use crate::events::is_exit;
use crate::meeting::compare_through_bridge;
use crate::peers;
use crate::pypeer::PyPeer;
use crate::terminal::Terminal;
use crate::tls::ServerFiles;

/// A running spec server.
pub struct SpecServer {
    peer: PyPeer,
}

/// A spec server on a free port with a certificate of its own test CA, and what a client needs
/// to reach it.
pub struct SpecTls {
    /// The server.
    pub server: SpecServer,
    /// Its `https://127.0.0.1:<port>` base URL.
    pub url: String,
    /// The CA's certificate (PEM), for a client's `ca_file`.
    pub ca_pem: String,
    /// Holds the certificate files.
    _dir: tempfile::TempDir,
}

impl SpecTls {
    /// Starts it; see [`SpecServer::start`].
    pub fn start() -> SpecTls {
        let port = crate::peers::free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = crate::tls::TestCa::new("pttbridge test CA");
        let ca_pem = ca.write_ca(dir.path()).display().to_string();
        let cert = ca.write_server(dir.path(), "spec");
        SpecTls {
            server: SpecServer::start(port, &cert),
            url: format!("https://127.0.0.1:{port}"),
            ca_pem,
            _dir: dir,
        }
    }
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

    /// Waits for the client's `meeting.publish` and its peer connection up; returns the request.
    pub fn published(&mut self, timeout: Duration) -> Value {
        let publish = self.received("meeting", "publish", |_| true, timeout);
        self.expect(
            |e| e["event"] == "pc_state" && e["pc"] == "publish" && e["state"] == "connected",
            timeout,
        );
        publish
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

    /// What the client publishes while `talker` says `wav` in its PTT channel (and 0.8 s after),
    /// saved to `out` and compared with `wav` as audio through the bridge; with the server's
    /// report.
    pub fn hear_from_ptt(
        &mut self,
        talker: &mut Terminal,
        wav: &Path,
        out: &Path,
    ) -> (Comparison, Value) {
        let report = self.record(out, |_| {
            talker.play_and_wait(wav, Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(800));
        });
        (compare_through_bridge(wav, out), report)
    }

    /// Panics with the recent events and stderr.
    pub fn fail(&mut self, what: &str) -> ! {
        self.peer.fail(what)
    }
}
