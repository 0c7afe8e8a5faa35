//! Locating the real peers the tests run against. A test that needs a peer and cannot find it fails
//! with a message naming the command that installs it; it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The command that installs every peer (Debian packages and the Python venv).
pub const SETUP_COMMAND: &str = "scripts/setup";

/// The repository root (where `Cargo.toml` of the workspace, `fixtures/` and `.venv/` live).
pub fn repo_root() -> PathBuf {
    // testkit lives at tests/testkit; resolve at compile time so tests work from any cwd
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A file under `fixtures/`, e.g. `fixture("audio/speech.wav")`; panics if it does not exist.
pub fn fixture(rel: &str) -> PathBuf {
    let p = repo_root().join("fixtures").join(rel);
    assert!(p.is_file(), "fixture {} not found", p.display());
    p
}

/// Full path of `program` found on `PATH` (or in /usr/sbin, /sbin, where Debian puts murmurd and
/// nats-server and where a non-root PATH may not look). Panics with
/// "`program` not found: run scripts/setup" when it is missing.
pub fn require(program: &str) -> PathBuf {
    find(program).unwrap_or_else(|| {
        panic!("{program} not found: run {SETUP_COMMAND} (it installs the test peers)")
    })
}

/// Like [`require`] but returns `None` instead of failing.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The Python interpreter of the repository's venv (`.venv/bin/python`), which has pymumble and the
/// other Python peers. Panics with "... not found: run scripts/setup" when the venv is missing.
pub fn venv_python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    if !is_executable(&p) {
        panic!(
            "Python venv {} not found: run {SETUP_COMMAND} (it creates it with pymumble)",
            p.display()
        );
    }
    p
}

/// A Python peer program under `tests/peers/`, e.g. `peer_script("terminal.py")`.
pub fn peer_script(name: &str) -> PathBuf {
    let p = repo_root().join("tests/peers").join(name);
    assert!(p.is_file(), "peer program {} not found", p.display());
    p
}

/// Runs `cmd` to completion and panics with its output when it fails (for set-up steps).
pub(crate) fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what}: {cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback port that is free for both TCP and UDP right now (murmurd uses the same number for both).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = tcp.local_addr().expect("local addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both TCP and UDP");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_the_setup_command() {
        let err = std::panic::catch_unwind(|| require("no-such-peer-program-xyz")).unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("no-such-peer-program-xyz not found: run scripts/setup"),
            "{msg}"
        );
    }

    #[test]
    fn finds_fixtures_from_any_cwd() {
        assert!(fixture("audio/speech.wav").ends_with("fixtures/audio/speech.wav"));
    }
}
