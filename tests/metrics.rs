//! Metrics by Prometheus convention: every series the code records is described in
//! `src/metrics_catalog.rs`, and a bridge that has just started exports, for every series it
//! shows, `# HELP` and `# TYPE`; the unlabelled series from the first scrape; the standard
//! `process_*` series and `pttbridge_build_info`.

use std::collections::BTreeSet;

use pttbridge::metrics_catalog::{ALL, CONDITIONAL};
use testkit::bridge::Bridge;
use testkit::peers::repo_root;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");

/// The metric names used in `counter!`, `gauge!` and `histogram!` calls under `dir`.
fn used_in(dir: &std::path::Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            used_in(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for mac in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(mac) {
                let rest = &text[at + mac.len()..];
                let rest = rest.trim_start();
                if let Some(name) = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
                    .filter(|n| n.starts_with("pttbridge_"))
                {
                    out.insert(name.to_owned());
                }
            }
        }
    }
}

#[test]
fn every_series_the_code_records_is_described() {
    let mut used = BTreeSet::new();
    for dir in ["src", "adapters"] {
        used_in(&repo_root().join(dir), &mut used);
    }
    assert!(
        used.len() > 50,
        "found {} names: the scan is broken",
        used.len()
    );
    let described: BTreeSet<String> = ALL.iter().map(|m| m.name.to_owned()).collect();
    let missing: Vec<_> = used.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "not in src/metrics_catalog.rs: {missing:?}"
    );
    for m in ALL {
        let suffix_ok = match m.kind {
            pttbridge::metrics_catalog::Kind::Counter => m.name.ends_with("_total"),
            _ => !m.name.ends_with("_total"),
        };
        assert!(
            suffix_ok,
            "{}: counters and only counters end in _total",
            m.name
        );
        assert!(
            !m.name.ends_with("_ms"),
            "{}: seconds, not milliseconds",
            m.name
        );
    }
}

#[test]
fn a_fresh_bridge_exports_every_series_with_help_and_type() {
    let bridge = Bridge::start(BIN, "");
    let text = bridge.get("/metrics").body;
    let mut helped = BTreeSet::new();
    let mut typed = BTreeSet::new();
    let mut shown = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_owned());
        } else if !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            // A histogram's or summary's own lines carry its name with a suffix.
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
                .unwrap_or(name);
            shown.insert(base.to_owned());
        }
    }
    let unexplained: Vec<_> = shown
        .iter()
        .filter(|n| !helped.contains(*n) || !typed.contains(*n))
        .collect();
    assert!(
        unexplained.is_empty(),
        "without HELP or TYPE: {unexplained:?}\n{text}"
    );
    for m in ALL
        .iter()
        .filter(|m| !m.labelled && !CONDITIONAL.contains(&m.name))
    {
        assert!(
            shown.contains(m.name),
            "{} not there from the start",
            m.name
        );
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(shown.contains(name), "{name} missing");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!("pttbridge_build_info{{version=\"{version}\"}} 1")),
        "build info:\n{text}"
    );
    let rss = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(
        rss > 1e6 && rss < 1e9,
        "resident memory is a plausible byte count: {rss}"
    );
}

/// The series names an alert-rule or dashboard expression uses (histograms by their own name).
fn series_in(expr_text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for start in ["pttbridge_", "process_"] {
        for (at, _) in expr_text.match_indices(start) {
            if at > 0
                && expr_text[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            let name: String = expr_text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let name = name.strip_suffix("_bucket").unwrap_or(&name).to_owned();
            out.insert(name);
        }
    }
    out
}

/// `promtool check rules` passes on the alert rules, and every series the rules and the
/// Grafana dashboard name is exported by a running bridge with PTT, NATS and TLS configured.
#[test]
fn the_alert_rules_and_the_dashboard_use_only_series_a_bridge_exports() {
    let rules = repo_root().join("deploy/prometheus/pttbridge-alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian package prometheus) not found: run scripts/setup ({e})")
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut used = series_in(&std::fs::read_to_string(&rules).unwrap());
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/pttbridge-dashboard.json"))
            .unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard worth the name");
    for target in panels.iter().flat_map(|p| p["targets"].as_array().unwrap()) {
        used.extend(series_in(target["expr"].as_str().unwrap()));
    }

    let server = testkit::murmur::Murmur::start(&["North"]);
    let nats = testkit::nats::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = testkit::tls::TestCa::new("pttbridge test CA");
    let cert = ca.write_server(dir.path(), "bridge");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], testkit::peers::free_port()).into();
    testkit::http::use_tls(addr, ca.client_config());
    // A directory too (its series exist only then), read from the spec-strict admin server.
    let org = serde_json::json!({"account": "10000", "password": "metrics-pass",
        "users": [{"uid": 1, "name": "bridge"}], "channels": []});
    let admin =
        testkit::admin::AdminServer::start(dir.path(), &org, std::time::Duration::from_secs(3600));
    let config = format!(
        "{}\n[nats]\nurl = \"{}\"\n[http]\n{}\n[directory]\nurl = \"{}\"\naccount = \"10000\"\n\
         password = \"metrics-pass\"\n",
        testkit::bridge::ptt_server_toml("local", &server, &[("bridge", "North")]),
        nats.url(),
        cert.http_toml(),
        admin.url()
    );
    let bridge = Bridge::start_at(BIN, &config, addr);
    bridge.wait_health(
        "PTT connected",
        |h| h["status"] == "ok",
        std::time::Duration::from_secs(15),
    );
    let text = bridge.get("/metrics").body;
    let missing: Vec<_> = used
        .iter()
        .filter(|name| {
            !text.lines().any(|l| {
                l.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(['{', ' ']) || rest.starts_with("_bucket"))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "used in deploy/ but not exported: {missing:?}\n{text}"
    );
}
