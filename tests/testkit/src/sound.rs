//! A real sound server for tests of programs that use the PC's microphone and speaker: Debian's
//! PulseAudio, started per test in its own runtime directory (no system daemon, no kernel
//! modules), with two null sinks at 48 kHz mono:
//!
//! - `mic`: what is played into it (`play`) is what a program recording from `mic.monitor`
//!   hears — the test's microphone;
//! - `speaker`: what a program plays into it can be recorded from `speaker.monitor` (`record`).
//!
//! A program under test gets [`Pulse::env`]: ALSA's `default` device then goes to this server
//! (through libasound2-plugins), its playback to `speaker` and its capture from `mic.monitor`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::peers::require;

/// A PulseAudio server for one test; stopped when dropped.
pub struct Pulse {
    child: Child,
    dir: tempfile::TempDir,
}

impl Pulse {
    /// Starts the server and waits until it answers (panics naming `scripts/setup` when
    /// PulseAudio is not installed).
    pub fn start() -> Pulse {
        require("paplay");
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Self::spawn(dir.path());
        let pulse = Pulse { child, dir };
        pulse.wait_ready();
        pulse
    }

    fn spawn(dir: &Path) -> Child {
        Command::new(require("pulseaudio"))
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--use-pid-file=no",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink sink_name=mic rate=48000 channels=1",
                "--load=module-null-sink sink_name=speaker rate=48000 channels=1",
            ])
            .env("XDG_RUNTIME_DIR", dir)
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pulseaudio")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pactl(&["info"]) {
            assert!(
                Instant::now() < deadline,
                "pulseaudio did not come up in {}",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the sound server (every device of "the PC" goes at once, as when the desktop's
    /// sound service crashes or restarts).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, with the same devices, where programs using it will look for it.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.dir.path());
        self.wait_ready();
    }

    /// What a program needs in its environment to use this server as its sound devices.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("XDG_RUNTIME_DIR", self.dir.path().display().to_string()),
            ("HOME", self.dir.path().display().to_string()),
            ("PULSE_SINK", "speaker".into()),
            ("PULSE_SOURCE", "mic.monitor".into()),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(require(program));
        c.env("XDG_RUNTIME_DIR", self.dir.path())
            .env("HOME", self.dir.path());
        c
    }

    fn pactl(&self, args: &[&str]) -> bool {
        self.command("pactl")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Plays `wav` into the test microphone, in real time; returns when it has been played.
    pub fn play_into_mic(&self, wav: &Path) {
        let status = self
            .command("paplay")
            // A low latency for the stream, or the null sink renders in blocks of up to 2 s and
            // the "microphone" hears it that late.
            .args(["--device=mic", "--latency-msec=10"])
            .arg(wav)
            .status()
            .expect("run paplay");
        assert!(status.success(), "paplay {} failed", wav.display());
    }

    /// Starts recording what is played on the test speaker into `wav` (48 kHz mono).
    pub fn record_speaker(&self, wav: &Path) -> Recording {
        let child = self
            .command("parecord")
            .args([
                "--device=speaker.monitor",
                "--latency-msec=10",
                "--file-format=wav",
                "--rate=48000",
                "--channels=1",
                "--format=s16le",
            ])
            .arg(wav)
            .spawn()
            .expect("run parecord");
        Recording {
            child,
            wav: wav.to_path_buf(),
        }
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A recording of the test speaker in progress.
pub struct Recording {
    child: Child,
    wav: PathBuf,
}

impl Recording {
    /// Stops it (the WAV header is completed) and returns the file.
    pub fn stop(mut self) -> PathBuf {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.wav.clone()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
