//! A Python test peer (`tests/peers/*.py`, run with the repository's venv) driven by JSON lines:
//! commands on its stdin, events from its stdout, its stderr kept for failure messages. Killed
//! on drop; a failing test first prints what it said last.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::events::{EventQueue, capture, is_exit};
use crate::peers;

/// A running peer.
pub struct PyPeer {
    /// How failures name it ("meeting peer carol").
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its events, in the order they came.
    pub events: EventQueue,
    stderr: Arc<Mutex<String>>,
}

impl PyPeer {
    /// Starts `tests/peers/<script>` with `args`; panics naming the setup command when the venv
    /// is missing.
    pub fn spawn(
        name: impl Into<String>,
        script: &str,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> PyPeer {
        let name = name.into();
        let mut child = Command::new(peers::venv_python())
            .arg("-u")
            .arg(peers::peer_script(script))
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the {name}: {e}; run {}", peers::SETUP_COMMAND)
            });
        let events = EventQueue::from_json_lines(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        PyPeer {
            name,
            stdin: child.stdin.take(),
            child,
            events,
            stderr,
        }
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

    /// Waits for an event matching `pred`; panics with its output on timeout or exit.
    pub fn expect(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        match self.events.try_expect(&pred, timeout) {
            Some(ev) if !is_exit(&ev) || pred(&ev) => ev,
            Some(_) => self.fail("exited while waiting for an event"),
            None => self.fail(&format!("no matching event within {timeout:?}")),
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it with SIGKILL, without any goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics with the recent events and stderr.
    pub fn fail(&mut self, what: &str) -> ! {
        panic!(
            "{}: {what}\n{}\n--- stderr ---\n{}",
            self.name,
            self.events.tail(30),
            self.stderr()
        )
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        // A failing test shows what the peer said last (e.g. why it exited early).
        if std::thread::panicking() {
            let exited = self.child.try_wait().ok().flatten();
            eprintln!(
                "--- {} (exited: {exited:?}) ---\n{}\n--- its stderr ---\n{}",
                self.name,
                self.events.tail(10),
                tail(&self.stderr(), 30)
            );
        }
        self.kill();
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
