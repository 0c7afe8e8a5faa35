//! Offer/answer between the sender and its listener child process: one line per message on the
//! child's stdin/stdout, SDP with its CRLFs turned into tabs (SDP never contains a tab).

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, mpsc};

/// SDP to one line.
pub fn flatten(sdp: &str) -> String {
    sdp.replace("\r\n", "\t").replace('\n', "\t")
}

/// One line back to SDP.
pub fn unflatten(line: &str) -> String {
    let mut s = line.split('\t').collect::<Vec<_>>().join("\r\n");
    if !s.ends_with("\r\n") {
        s.push_str("\r\n");
    }
    s
}

/// Listener process counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stat {
    /// Peers that reached Connected.
    pub connected: u64,
    /// Audio packets received, all peers.
    pub received: u64,
    /// The listener process's CPU seconds so far.
    pub cpu: f64,
}

/// The sender's end of the signalling.
pub struct Signal {
    stdin: Mutex<ChildStdin>,
    stats: Mutex<mpsc::Receiver<Stat>>,
    _child: Child,
}

impl Signal {
    /// Starts `fanout listeners N`; returns the signalling and the offers `(index, sdp)`.
    pub fn spawn(n: usize) -> (Signal, mpsc::Receiver<(usize, String)>) {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .arg("listeners")
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the listener process");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (offer_tx, offer_rx) = mpsc::channel(16);
        let (stat_tx, stat_rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut parts = l.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("offer"), Some(i), Some(sdp)) => {
                        let _ = offer_tx
                            .send((i.parse().unwrap_or(usize::MAX), unflatten(sdp)))
                            .await;
                    }
                    (Some("stat"), Some(c), Some(rest)) => {
                        let mut r = rest.split(' ');
                        let received = r.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                        let cpu = r.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
                        let _ = stat_tx
                            .send(Stat {
                                connected: c.parse().unwrap_or(0),
                                received,
                                cpu,
                            })
                            .await;
                    }
                    _ => eprintln!("listeners: {l}"),
                }
            }
        });
        let sig = Signal {
            stdin: Mutex::new(stdin),
            stats: Mutex::new(stat_rx),
            _child: child,
        };
        (sig, offer_rx)
    }

    /// Sends the answer to offer `i`.
    pub async fn answer(&self, i: usize, sdp: &str) {
        let line = format!("answer {i} {}\n", flatten(sdp));
        let mut w = self.stdin.lock().await;
        w.write_all(line.as_bytes()).await.expect("listener stdin");
        w.flush().await.expect("listener stdin");
    }

    /// The listeners' counters now.
    pub async fn stat(&self) -> Stat {
        {
            let mut w = self.stdin.lock().await;
            w.write_all(b"stat\n").await.expect("listener stdin");
            w.flush().await.expect("listener stdin");
        }
        self.stats
            .lock()
            .await
            .recv()
            .await
            .expect("listener process ended")
    }

    /// Waits until `n` listeners are connected (or 180 s); returns the last counters.
    pub async fn wait_connected(&self, n: usize) -> Stat {
        let t = std::time::Instant::now();
        loop {
            let s = self.stat().await;
            if s.connected as usize >= n || t.elapsed().as_secs() > 180 {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

impl Stat {
    /// `self`, keeping the larger connected count of the two (peers only ever connect here).
    pub fn max_connected(mut self, other: Stat) -> Stat {
        self.connected = self.connected.max(other.connected);
        self
    }
}
