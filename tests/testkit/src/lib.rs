//! Test support for pttbridge integration tests: real third-party peers started on loopback, and
//! comparison of received audio with what was sent.
//!
//! - [`peers`]: find the programs the tests need; a missing one fails the test naming `scripts/setup`.
//! - [`pypeer::PyPeer`]: a Python peer driven by JSON lines (what the meeting and spec-server peers run on).
//! - [`murmur::Murmur`]: Debian's `murmurd` on a free loopback port in a temp dir, with channels.
//! - [`terminal::Terminal`]: a pymumble PTT terminal (`tests/peers/terminal.py`) driven by JSON lines.
//! - [`admin::AdminServer`]: a spec-strict Totalk admin (`/ent/`) server (`tests/peers/admin_server.py`).
//! - [`nats::NatsServer`]: Debian's `nats-server -js` on a free port with a temp store (kill/restart).
//! - [`cluster`]: which of several bridge nodes holds a PTT account, never two at once.
//! - [`browser`]: Debian's headless `chromium` driven over the DevTools Protocol.
//! - [`bridge`]: the `pttbridge` binary under test (and its `probe`), observed over HTTP.
//! - [`events`] / [`http`]: JSON event queues and a tiny HTTP client for them.
//! - [`rtcpeer`]: RTCPeer sign-in and a plain JSON WebSocket client (sockets from any 127/8 address).
//! - [`tls`]: a test CA and server certificates (HTTPS/WSS tests).
//! - [`sound`]: a PulseAudio server per test with a test microphone and speaker (null sinks).
//! - [`egress_drop`]: load tools' listeners "on other machines": their RTP dropped at `lo`'s egress.
//! - [`audio`]: WAV loading, alignment by cross-correlation, per-window correlation, SNR, durations.
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::{audio, murmur::Murmur, peers, terminal::Terminal};
//!
//! let server = Murmur::start(&["North"]);
//! let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
//! let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
//! let dir = tempfile::tempdir().unwrap();
//! let out = dir.path().join("bob.wav");
//! bob.record_start();
//! alice.play_and_wait(&peers::fixture("audio/speech.wav"), Duration::from_secs(20));
//! std::thread::sleep(Duration::from_millis(500));
//! bob.record_stop(&out);
//! let cmp = audio::compare_files(peers::fixture("audio/speech.wav"), &out);
//! cmp.assert_matches(0.9, 0.05);
//! ```

pub mod admin;
pub mod audio;
pub mod bridge;
pub mod browser;
pub mod cluster;
pub mod console;
pub mod egress_drop;
pub mod events;
pub mod http;
pub mod meeting;
pub mod murmur;
pub mod nats;
pub mod peers;
pub mod pypeer;
pub mod rtcpeer;
pub mod sound;
pub mod spec_server;
pub mod terminal;
pub mod tls;
