//! The deployment files hold up: the systemd unit in `deploy/` passes `systemd-analyze verify`
//! without a warning (its `ExecStart` pointed at the binary under test, as an installed one
//! would be), and the paths docs/deploy.md names are the ones the unit and the config use.

use std::process::Command;

use testkit::peers::repo_root;

#[test]
fn the_systemd_unit_verifies_clean() {
    let unit = std::fs::read_to_string(repo_root().join("deploy/pttbridge.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/pttbridge run --config /etc/pttbridge/bridge.toml"),
        "the unit runs what docs/deploy.md installs"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pttbridge.service");
    let bin = env!("CARGO_BIN_EXE_pttbridge");
    std::fs::write(&path, unit.replace("/usr/local/bin/pttbridge", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze (Debian package systemd) not found: run scripts/setup ({e})")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}
