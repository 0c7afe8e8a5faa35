//! This process's CPU time and resident memory, from /proc (Linux).

/// User + system CPU seconds of this process so far (all threads).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: utime and stime are the 12th and 13th.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on every Linux this runs on.
    ticks / 100.0
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// The 1-minute load average, to note how busy the shared machine was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a sender measured over the window.
pub struct Window {
    /// Stack and variant, e.g. "str0m" or "webrtc (2 threads)".
    pub stack: String,
    /// Listeners.
    pub n: usize,
    /// Listeners that reported Connected before the window.
    pub connected: u64,
    /// Seconds to connect them all.
    pub setup_secs: f64,
    /// Window length in seconds.
    pub secs: f64,
    /// Sender CPU seconds in the window.
    pub cpu: f64,
    /// RTP packets the sender wrote in the window.
    pub sent: u64,
    /// RTP packets the listeners received in the window.
    pub received: u64,
    /// RSS before the first peer and with all peers, KiB.
    pub rss0: f64,
    /// See `rss0`.
    pub rss1: f64,
    /// Listener process CPU in the window, fraction of a core.
    pub listener_cpu: f64,
}

impl Window {
    /// One human line and one machine line (`RESULT ...`) for the README's table.
    pub fn print(&self) {
        let cpu = self.cpu / self.secs;
        let per_1000 = cpu * 1000.0 / self.n as f64;
        let loss = (1.0 - self.received as f64 / (self.sent.max(1)) as f64).max(0.0) * 100.0;
        let rss_peer = (self.rss1 - self.rss0) / self.n as f64;
        println!(
            "{} N={} connected={} (setup {:.1} s): sender CPU {:.1} % of a core = {:.1} % per 1,000 listeners ({:.0} µs/s per listener, {:.0} listeners/core); sent {} ({:.1}/s per listener), received {}, loss {:.2} %; RSS {:.1} → {:.1} MiB = {:.1} KiB per peer; listeners' CPU {:.1} %; load {}",
            self.stack,
            self.n,
            self.connected,
            self.setup_secs,
            cpu * 100.0,
            per_1000 * 100.0,
            cpu * 1e6 / self.n as f64,
            self.n as f64 / cpu.max(1e-9),
            self.sent,
            self.sent as f64 / self.secs / self.n as f64,
            self.received,
            loss,
            self.rss0 / 1024.0,
            self.rss1 / 1024.0,
            rss_peer,
            self.listener_cpu * 100.0,
            loadavg(),
        );
        println!(
            "RESULT stack={} n={} cpu_pct={:.2} cpu_pct_per_1000={:.1} loss_pct={:.3} rss_kib_per_peer={:.1} setup_s={:.1}",
            self.stack.replace(' ', "_"),
            self.n,
            cpu * 100.0,
            per_1000 * 100.0,
            loss,
            rss_peer,
            self.setup_secs
        );
    }
}
