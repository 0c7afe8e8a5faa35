//! Several bridge nodes sharing one PTT account through a lease in a JetStream KV bucket
//! (issue 22, first step), against real peers: a 3-server `nats-server` JetStream cluster on
//! loopback (the bucket with 3 replicas), murmurd with channel North, a pymumble terminal in
//! North, and three `pttbridge run` processes all configured with the same account.
//!
//! Shows: exactly one node's account is in North at any time; `kill -9` of the owner → another
//! node holds the account within a lease and a few seconds, and hears a talker through it;
//! `SIGTERM` of the new owner hands over at once (well under a lease); one nats-server killed →
//! the leases keep being renewed and the account stays where it is.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::cluster::{
    account, bridges_in_channel as bridges_in_north, connected, wait_single_owner,
};
use testkit::murmur::Murmur;
use testkit::nats::NatsCluster;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const LEASE: Duration = Duration::from_millis(3000);
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn config(node: &str, murmur: &Murmur, urls: &str) -> String {
    format!(
        "{}\n[cluster]\nnode_id = \"{node}\"\nurl = \"{urls}\"\nreplicas = 3\nlease_ms = {}\n",
        ptt_server_toml("local", murmur, &[("bridge", "North")]),
        LEASE.as_millis()
    )
}

/// The nats-server (`n<i>`) leading the lease bucket's stream: the one whose loss forces the
/// bucket to elect another leader.
fn bucket_leader(urls: &str) -> usize {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let urls: Vec<&str> = urls.split(',').collect();
        let client = async_nats::connect(urls)
            .await
            .expect("test client connects");
        let js = async_nats::jetstream::new(client);
        let mut stream = js
            .get_stream("KV_pttbridge_leases")
            .await
            .expect("the bridges made the bucket");
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3);
        let leader = info
            .cluster
            .clone()
            .and_then(|c| c.leader)
            .expect("a leader");
        leader.trim_start_matches('n').parse().expect("n<i>")
    })
}

fn lease_row(h: &Value) -> &Value {
    &h["cluster"]["leases"][0]
}

#[test]
fn one_node_holds_the_account_and_another_takes_over_when_it_dies_or_drains() {
    let mut nats = NatsCluster::start(3);
    let urls = nats.urls();
    let murmur = Murmur::start(&["North"]);
    let mut bridges: Vec<Option<Bridge>> = NODES
        .iter()
        .map(|n| Some(Bridge::start(BIN, &config(n, &murmur, &urls))))
        .collect();
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));

    // One owner; the others stand by and name it.
    let first = wait_single_owner(&bridges, &mut watcher, T + LEASE);
    for _ in 0..10 {
        assert_eq!(wait_single_owner(&bridges, &mut watcher, T), first);
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, b) in bridges.iter().enumerate() {
        let h = b.as_ref().unwrap().health();
        let row = lease_row(&h);
        assert_eq!(row["key"], "ptt.local.bridge");
        assert_eq!(row["owner"], NODES[first], "node {i}: {row}");
        if i == first {
            assert_eq!(row["state"], "held");
            assert!(row["expires_in_ms"].as_u64().unwrap() <= LEASE.as_millis() as u64);
        } else {
            assert_eq!(row["state"], "other");
            assert_eq!(account(&h)["state"], "standby");
            assert_eq!(
                h["status"], "ok",
                "a standby account is not a degraded node"
            );
        }
    }

    // kill -9 the owner: another node takes the lapsed lease and connects the account.
    let killed = Instant::now();
    bridges[first] = None;
    let second = wait_single_owner(&bridges, &mut watcher, LEASE + T);
    let takeover = killed.elapsed();
    assert_ne!(second, first);
    println!(
        "takeover after kill -9: {:.2} s (lease {:.1} s)",
        takeover.as_secs_f64(),
        LEASE.as_secs_f64()
    );
    let owner = bridges[second].as_ref().unwrap();
    assert_eq!(owner.metric("pttbridge_cluster_takeovers_total", &[]), 1.0);
    assert_eq!(
        owner.metric("pttbridge_cluster_leases{", &[("state", "held")]),
        1.0
    );
    // The new owner hears the channel: a burst of the terminal reaches it as talk events.
    let mut events = owner.events();
    watcher.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
    for kind in ["talk.started", "talk.stopped"] {
        events
            .try_expect(|e| e["type"] == kind && e["party"]["name"] == "watcher", T)
            .unwrap_or_else(|| panic!("{kind} through the new owner"));
    }

    // SIGTERM the new owner: it releases the lease and the last node takes it at once.
    let third = (0..3).find(|i| *i != first && *i != second).unwrap();
    let drained = Instant::now();
    bridges[second].as_mut().unwrap().stop(T);
    let second_logs = bridges[second].take().unwrap().logs();
    assert_eq!(wait_single_owner(&bridges, &mut watcher, LEASE), third);
    let handover = drained.elapsed();
    println!("handover on SIGTERM: {:.2} s", handover.as_secs_f64());
    assert!(
        handover < LEASE,
        "a drained lease is taken without waiting for it to lapse"
    );

    // A nats-server that does not lead the bucket (3 replicas) dies: the other two keep a
    // quorum and the leader, renewals go on and the lease is never lost.
    let revision = |b: &Bridge| lease_row(&b.health())["revision"].as_u64().unwrap();
    let owner = bridges[third].as_ref().unwrap();
    let before = revision(owner);
    let leader = bucket_leader(&urls);
    let follower = (leader + 1) % 3;
    nats.servers[follower].kill();
    let until = Instant::now() + 2 * LEASE;
    while Instant::now() < until {
        assert_eq!(connected(&bridges), [third], "the owner keeps the account");
        std::thread::sleep(Duration::from_millis(200));
    }
    let owner = bridges[third].as_ref().unwrap();
    let after = revision(owner);
    assert_eq!(lease_row(&owner.health())["state"], "held");
    assert!(
        after > before,
        "renewed with a server down ({before} → {after})"
    );
    let logs = owner.logs();
    let lease_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("cluster") || l.contains("async_nats"))
        .collect();
    let second_lines: Vec<&str> = second_logs
        .lines()
        .filter(|l| l.contains("cluster"))
        .collect();
    assert!(
        !logs.contains("lost the PTT account lease"),
        "the lease was never lost:\n{}\n-- {} --\n{}",
        lease_lines.join("\n"),
        NODES[second],
        second_lines.join("\n")
    );

    // The bucket's leader dies (the follower back first, so two of three remain): writes stop
    // until the two elect a new leader. If that takes longer than what is left of the lease,
    // the owner stops using the account and takes it back after the election — never two.
    nats.servers[follower].restart();
    std::thread::sleep(Duration::from_secs(3));
    let leader = bucket_leader(&urls);
    let killed = Instant::now();
    nats.servers[leader].kill();
    let mut offline = Duration::ZERO;
    let mut last = Instant::now();
    let until = killed + 4 * LEASE;
    while Instant::now() < until {
        let now = connected(&bridges);
        assert!(now.len() <= 1, "two nodes connected at once: {now:?}");
        assert!(
            bridges_in_north(&mut watcher) <= 1,
            "the account is in North twice"
        );
        if now.is_empty() {
            offline += last.elapsed();
        }
        last = Instant::now();
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = wait_single_owner(&bridges, &mut watcher, T);
    println!(
        "bucket leader n{leader} killed: account off its channel for {:.1} s in {:.0} s",
        offline.as_secs_f64(),
        (4 * LEASE).as_secs_f64()
    );
    assert!(bridges[back].is_some());
    let logs = bridges
        .iter()
        .flatten()
        .map(|b| b.logs())
        .collect::<String>();
    assert!(
        !logs.contains("rejected the account"),
        "murmurd never saw the account twice"
    );
}

/// A node cut off from NATS must stop speaking as the account once its lease runs out, even
/// though no other node can take it (they are cut off too); when NATS is back, one node holds
/// it again. One JetStream server, two nodes.
#[test]
fn an_owner_that_loses_nats_takes_its_account_offline_when_the_lease_runs_out() {
    let mut nats = testkit::nats::NatsServer::start();
    let murmur = Murmur::start(&["North"]);
    let cfg = |n: &str| config(n, &murmur, &nats.url()).replace("replicas = 3", "replicas = 1");
    let bridges: Vec<Option<Bridge>> = NODES[..2]
        .iter()
        .map(|n| Some(Bridge::start(BIN, &cfg(n))))
        .collect();
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));
    let owner = wait_single_owner(&bridges, &mut watcher, T + LEASE);

    let cut = Instant::now();
    nats.kill();
    // The owner keeps the account while its lease lasts, then takes it offline.
    let deadline = cut + LEASE + T;
    loop {
        let now = connected(&bridges);
        assert!(now.len() <= 1 && now.iter().all(|i| *i == owner), "{now:?}");
        if now.is_empty() && bridges_in_north(&mut watcher) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still connected without NATS");
        std::thread::sleep(Duration::from_millis(100));
    }
    let offline_after = cut.elapsed();
    println!(
        "NATS gone: account offline after {:.2} s (lease {:.1} s)",
        offline_after.as_secs_f64(),
        LEASE.as_secs_f64()
    );
    assert!(
        offline_after > LEASE / 2,
        "not before the lease could have run out"
    );
    let h = bridges[owner].as_ref().unwrap().health();
    assert_eq!(account(&h)["state"], "standby");
    // The account went offline a tenth of a lease early; then the lease itself runs out.
    let until = Instant::now() + LEASE;
    while !bridges[owner]
        .as_ref()
        .unwrap()
        .logs()
        .contains("lease ran out without a renewal")
    {
        assert!(Instant::now() < until, "the lost lease is logged");
        std::thread::sleep(Duration::from_millis(100));
    }

    nats.restart();
    wait_single_owner(&bridges, &mut watcher, LEASE + T);
}
