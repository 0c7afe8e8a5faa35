//! Debian's `nats-server` with JetStream (`-js -sd <temp store>`) on a free loopback port.
//! Killed on drop; [`NatsServer::kill`] and [`NatsServer::restart`] (same port, same store)
//! for fault tests.
//!
//! ```no_run
//! let mut nats = testkit::nats::NatsServer::start();
//! let url = nats.url(); // nats://127.0.0.1:PORT
//! nats.kill();
//! nats.restart();
//! ```

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::events::capture;
use crate::peers;

/// A running (or killed) nats-server.
pub struct NatsServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    args: Vec<String>,
}

impl NatsServer {
    /// Starts nats-server with JetStream on a free port; waits for "Server is ready".
    pub fn start() -> NatsServer {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start) with extra command-line options (e.g. `--tls`,
    /// `--tlscert`, `--tlskey`, `--user`, `--pass`).
    pub fn start_with(args: &[&str]) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("nats-")
            .tempdir()
            .expect("temp dir for nats-server");
        let mut n = NatsServer {
            dir,
            port: 0,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        for attempt in 1..=5 {
            n.port = peers::free_port();
            match n.spawn() {
                Ok(()) => return n,
                Err(e) if attempt < 5 => eprintln!("nats-server: {e}; trying another port"),
                Err(e) => panic!("nats-server did not start: {e}"),
            }
        }
        unreachable!()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = peers::require("nats-server");
        let mut child = Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nats-server: {e}"))?;
        self.log = capture(child.stderr.take().unwrap());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.log.lock().unwrap().contains("Server is ready") {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("exited with {st}: {}", self.log()));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("not ready within 15 s: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log (stderr) since the last start.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILLs it (the store stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The port can linger briefly after a kill.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("nats-server restart: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("nats-server did not restart: {e}"),
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of nats-servers on loopback: each with `-js`, its own store, a
/// `--cluster` port and `--routes` to the others, one `--cluster_name`.
///
/// ```no_run
/// let mut cluster = testkit::nats::NatsCluster::start(3);
/// let urls = cluster.urls(); // nats://127.0.0.1:P1,nats://127.0.0.1:P2,...
/// cluster.servers[0].kill();
/// ```
pub struct NatsCluster {
    /// The servers, in start order.
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers routed to each other and waits until each is ready.
    pub fn start(n: usize) -> NatsCluster {
        let routes: Vec<u16> = (0..n).map(|_| peers::free_port()).collect();
        let servers = (0..n)
            .map(|i| {
                let others: Vec<String> = routes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                    .collect();
                let cluster = format!("nats://127.0.0.1:{}", routes[i]);
                let name = format!("n{i}");
                NatsServer::start_with(&[
                    "-n",
                    &name,
                    "--cluster_name",
                    "pttbridge-test",
                    "--cluster",
                    &cluster,
                    "--routes",
                    &others.join(","),
                ])
            })
            .collect();
        NatsCluster { servers }
    }

    /// Every server's URL, comma-separated.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.servers.iter().map(NatsServer::url).collect();
        urls.join(",")
    }
}
