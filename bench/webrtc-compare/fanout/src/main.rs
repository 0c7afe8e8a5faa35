//! One sender fans one Opus stream (pass-through: 50 packets/s of fixed 20 ms frames, no encode)
//! out to N WebRTC listeners over loopback. The sender is either str0m 0.24 (the bridge's stack,
//! driven the way the bridge's room actor drives it) or webrtc-rs 0.21 (the design card's stack,
//! used the way its examples use it); the listeners are always str0m, in a child process, so
//! only the sender differs between the two runs.
//!
//! ```sh
//! fanout str0m 500 --seconds 20
//! fanout webrtc 500 --seconds 20 [--threads 1] [--srtp gcm128|gcm256|cm]
//! ```
//! Prints the sender's CPU (user+sys from /proc/self/stat over the window, taken after every
//! listener is connected), CPU per 1,000 listeners, RSS per peer, packets sent/received and loss.

mod listeners;
mod proc_stat;
mod sender_str0m;
mod sender_webrtc;
mod signal;

use std::time::Duration;

/// Opus payload bytes per packet: ≈ 32 kbit/s voice.
pub const PAYLOAD: usize = 80;
/// One packet per 20 ms.
pub const FRAME: Duration = Duration::from_millis(20);

/// Command line of a sender run.
#[derive(Debug, Clone)]
pub struct Args {
    /// Number of listeners.
    pub n: usize,
    /// Measurement window.
    pub seconds: u64,
    /// webrtc-rs: tokio worker threads (0 = current-thread runtime).
    pub threads: usize,
    /// webrtc-rs: SRTP profile offered (str0m picks its own, see README).
    pub srtp: String,
}

fn parse(mut it: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        n: 100,
        seconds: 20,
        threads: 0,
        srtp: "gcm256".into(),
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--threads" => a.threads = it.next().and_then(|v| v.parse().ok()).expect("--threads T"),
            "--srtp" => a.srtp = it.next().expect("--srtp gcm128|gcm256|cm"),
            n => {
                a.n = n
                    .parse()
                    .expect("usage: fanout str0m|webrtc N [--seconds S]")
            }
        }
    }
    a
}

fn main() {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    match mode.as_str() {
        "listeners" => listeners::run(it.next().and_then(|v| v.parse().ok()).expect("N")),
        "str0m" => sender_str0m::run(parse(it)),
        "webrtc" => sender_webrtc::run(parse(it)),
        _ => {
            eprintln!("usage: fanout str0m|webrtc N [--seconds S] [--threads T] [--srtp P]");
            std::process::exit(2);
        }
    }
}
