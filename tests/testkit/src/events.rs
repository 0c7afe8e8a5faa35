//! JSON event streams from peers (stdout lines of a terminal or probe, the bridge's
//! `/events` stream), with "expect an event" that looks at unmatched earlier events
//! first, so tests need not follow the exact order of events.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The marker an [`EventQueue`] yields when its source ended.
pub fn exit_marker() -> Value {
    json!({"event": "exit"})
}

/// Whether `ev` is the end-of-stream marker.
pub fn is_exit(ev: &Value) -> bool {
    ev["event"] == "exit" && ev.as_object().is_some_and(|o| o.len() == 1)
}

/// Events received from one source.
#[derive(Debug)]
pub struct EventQueue {
    rx: Receiver<Value>,
    /// Received but not yet matched by an `expect`, oldest first.
    pending: VecDeque<Value>,
    /// Every event received, for failure messages.
    history: Vec<Value>,
}

impl EventQueue {
    /// A queue fed by `rx`; the sender should send [`exit_marker`] when its source ends.
    pub fn new(rx: Receiver<Value>) -> Self {
        Self {
            rx,
            pending: VecDeque::new(),
            history: Vec::new(),
        }
    }

    /// A queue of the JSON objects printed one per line by `reader` (non-JSON lines become
    /// `{"event":"raw","line":...}`), ending with [`exit_marker`] at end of stream.
    pub fn from_json_lines(reader: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let ev = serde_json::from_str::<Value>(&line)
                    .unwrap_or_else(|_| json!({"event": "raw", "line": line}));
                if tx.send(ev).is_err() {
                    return;
                }
            }
            let _ = tx.send(exit_marker());
        });
        Self::new(rx)
    }

    /// Waits up to `timeout` for an event matching `pred`. Returns `None` on timeout and the
    /// [`exit_marker`] when the source ended first.
    pub fn try_expect(
        &mut self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        if let Some(exit) = self.pending.iter().find(|e| is_exit(e)) {
            return Some(exit.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => {
                    self.history.push(ev.clone());
                    if pred(&ev) {
                        return Some(ev);
                    }
                    let exited = is_exit(&ev);
                    self.pending.push_back(ev.clone());
                    if exited {
                        return Some(ev);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => return Some(exit_marker()),
            }
        }
    }

    /// Every event received so far, in order (takes in whatever arrived without waiting).
    pub fn history(&mut self) -> &[Value] {
        while let Ok(ev) = self.rx.try_recv() {
            self.history.push(ev.clone());
            self.pending.push_back(ev);
        }
        &self.history
    }

    /// The last `n` events as lines, for failure messages.
    pub fn tail(&mut self, n: usize) -> String {
        let h = self.history();
        let from = h.len().saturating_sub(n);
        let lines: Vec<String> = h[from..].iter().map(Value::to_string).collect();
        format!(
            "({} events, last {}):\n{}",
            h.len(),
            lines.len(),
            lines.join("\n")
        )
    }
}

/// Collects everything `reader` produces (a child's stderr) into a shared string.
pub fn capture(reader: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let mut buf = [0u8; 4096];
        // A character split between two reads is decoded whole, with the next read.
        let mut pending = Vec::new();
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            let whole = match std::str::from_utf8(&pending) {
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                _ => pending.len(),
            };
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&pending[..whole]));
            pending.drain(..whole);
        }
        sink.lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(&pending));
    });
    text
}
