//! Client-mode registrations across cluster nodes (issue 22): three `pttbridge run` nodes share
//! one PTT account through its lease (a 3-server `nats-server` JetStream cluster, murmurd with
//! channel North) and all list the same `[[meeting.upstream]]` registration of North's dial-in
//! at the spec-strict RTCPeer server (`tests/peers/rtcpeer_server.py`). Only the node holding the
//! account's lease registers there: the server never has two live registrations of the dial-in
//! user (it counts its open registered sockets), the other nodes show `standby`. `kill -9` of the
//! owner → the new owner registers once it holds the lease, and a call the server's caller
//! places to the dial-in user reaches it and links North (audio correlated); `SIGTERM` of that
//! node → it logs out (5.11) before the last node registers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::bridge::{Bridge, client_mode_north_toml, ptt_server_toml};
use testkit::cluster::wait_single_owner;
use testkit::murmur::Murmur;
use testkit::nats::NatsCluster;
use testkit::peers::fixture;
use testkit::spec_server::{SpecServer, SpecTls};
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const LEASE: Duration = Duration::from_millis(3000);
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const NORTH: i64 = 9001;
const ROOM: i64 = 8801;

fn config(node: &str, murmur: &Murmur, nats: &str, upstream: &str, ca: &str) -> String {
    format!(
        r#"{}
{}
[cluster]
node_id = "{node}"
url = "{nats}"
replicas = 3
lease_ms = {}
"#,
        ptt_server_toml("local", murmur, &[("bridge", "North")]),
        client_mode_north_toml(NORTH, upstream, ca),
        LEASE.as_millis()
    )
}

fn registration(h: &Value) -> &Value {
    &h["sides"]["meeting"]["upstream"][0]
}

/// Waits until node `owner` shows its registration `registered` and every other running node
/// `standby`; returns the owner's user id there.
fn wait_registered_only_on(bridges: &[Option<Bridge>], owner: usize) -> i64 {
    let deadline = Instant::now() + T;
    loop {
        let states: Vec<(usize, Value)> = bridges
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (i, registration(&b.health()).clone())))
            .collect();
        let ok = states.iter().all(|(i, r)| {
            let want = if *i == owner { "registered" } else { "standby" };
            r["state"] == want
        });
        if ok {
            let (_, r) = states.iter().find(|(i, _)| *i == owner).unwrap();
            return r["user_id"].as_i64().expect("the owner's user id there");
        }
        assert!(
            Instant::now() < deadline,
            "registrations not only on node {owner}: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No moment on the server with two live registrations of one user.
fn assert_never_two_live(srv: &mut SpecServer) -> usize {
    let history = srv.history();
    let mut registrations = 0;
    for e in &history {
        if e["event"] == "registered" || e["event"] == "unregistered" {
            assert!(
                e["live"].as_u64().unwrap_or(99) <= 1,
                "two live registrations of one user at the upstream server: {e}"
            );
            registrations += usize::from(e["event"] == "registered");
        }
    }
    let violations: Vec<&Value> = history
        .iter()
        .filter(|e| e["event"] == "violation")
        .collect();
    assert!(violations.is_empty(), "spec violations: {violations:?}");
    registrations
}

#[test]
fn one_node_registers_upstream_and_the_next_owner_takes_the_registration_over() {
    let nats = NatsCluster::start(3);
    let urls = nats.urls();
    let murmur = Murmur::start(&["North"]);
    // The TLS files live as long as `tls`.
    let tls = SpecTls::start();
    let (mut srv, url, ca_pem) = (tls.server, tls.url, tls.ca_pem);

    let mut bridges: Vec<Option<Bridge>> = NODES
        .iter()
        .map(|n| {
            Some(Bridge::start(
                BIN,
                &config(n, &murmur, &urls, &url, &ca_pem),
            ))
        })
        .collect();
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));

    // One owner of the account, and it alone is registered upstream.
    let first = wait_single_owner(&bridges, &mut watcher, T + LEASE);
    let me = wait_registered_only_on(&bridges, first);
    let reg = srv.expect(|e| e["event"] == "registered", T);
    assert_eq!((&reg["userId"], &reg["live"]), (&json!(me), &json!(1)));
    let standby = registration(&bridges[(first + 1) % 3].as_ref().unwrap().health()).clone();
    println!("a standby node's registration: {standby}");
    assert!(
        standby["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cluster"))
    );
    // Stays so over a few renewals.
    std::thread::sleep(LEASE);
    assert_eq!(wait_registered_only_on(&bridges, first), me);
    assert_eq!(assert_never_two_live(&mut srv), 1, "registered once");

    // kill -9 the owner: its socket closes with it; the next owner registers.
    let killed = Instant::now();
    bridges[first] = None;
    srv.expect(
        |e| e["event"] == "unregistered" && e["userId"] == me && e["how"] == "closed",
        T,
    );
    srv.expect(
        |e| e["event"] == "registered" && e["userId"] == me,
        LEASE + T,
    );
    let reregistered = killed.elapsed();
    let second = wait_single_owner(&bridges, &mut watcher, T);
    assert_ne!(second, first);
    assert_eq!(wait_registered_only_on(&bridges, second), me);
    println!(
        "re-registration upstream after kill -9 of the owner: {:.2} s (lease {:.1} s)",
        reregistered.as_secs_f64(),
        LEASE.as_secs_f64()
    );

    // A call to the dial-in user reaches the new owner and links North.
    let owner = bridges[second].as_ref().unwrap();
    let mut events = owner.events();
    srv.cmd(json!({"cmd":"invite","to":me}));
    srv.received("call", "doAgree", |m| m["ownUserId"] == me, T);
    srv.cmd(json!({"cmd":"connected","to":me,"roomId":ROOM,"roomType":1}));
    srv.published(T);
    events
        .try_expect(|e| e["type"] == "link.up", T)
        .expect("link.up on the new owner");
    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    let speech = fixture("audio/speech.wav");
    let dir = tempfile::tempdir().unwrap();
    let heard = dir.path().join("heard.wav");
    let (cmp, rec) = srv.hear_from_ptt(&mut alice, &speech, &heard);
    println!("PTT → new owner → upstream server: {cmp}; {rec}");
    cmp.assert_matches(0.9, 0.1);

    // SIGTERM the new owner mid-call: it leaves the call, logs out, and the last node registers.
    let third = (0..3).find(|i| *i != first && *i != second).unwrap();
    let drained = Instant::now();
    bridges[second].as_mut().unwrap().stop(T);
    bridges[second] = None;
    let hang_up = srv.received("call", "cancel", |m| m["ownUserId"] == me, T);
    assert_eq!(hang_up["targetUserId"], 1, "to the caller: {hang_up}");
    srv.expect(
        |e| e["event"] == "unregistered" && e["userId"] == me && e["how"] == "logout",
        T,
    );
    srv.expect(|e| e["event"] == "registered" && e["userId"] == me, T);
    println!(
        "re-registration upstream after SIGTERM of the owner: {:.2} s",
        drained.elapsed().as_secs_f64()
    );
    assert_eq!(wait_single_owner(&bridges, &mut watcher, T), third);
    assert_eq!(wait_registered_only_on(&bridges, third), me);
    assert_eq!(
        assert_never_two_live(&mut srv),
        3,
        "one registration per owner"
    );
}
