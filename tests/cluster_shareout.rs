//! Nodes with a config listing the same accounts share them out (issue 22, `docs/cluster.md`
//! "Sharing the accounts out"), against real peers: a 3-server `nats-server` JetStream cluster
//! (the bucket with 3 replicas), murmurd with channel North, a pymumble terminal in North that
//! lists who is there, and three `pttbridge run` processes listing the same accounts.
//!
//! The nodes start one after another, each only once the ones before hold everything, so what
//! spreads the accounts is the rebalance (a hand-over between bursts), not the order of the first
//! claims. Every sample checks that no account is connected by two nodes or listed twice by
//! murmurd; "balanced" means each node connects its part, murmurd lists every account exactly
//! once and every node's `/healthz` cluster view names the node that has it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::meeting::Participant;
use testkit::murmur::Murmur;
use testkit::nats::NatsCluster;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const LEASE: Duration = Duration::from_millis(3000);
const SETTLE: Duration = Duration::from_millis(2000);
const T: Duration = Duration::from_secs(30);
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn config(node: &str, murmur: &Murmur, urls: &str, accounts: &[String]) -> String {
    let accounts: Vec<(&str, &str)> = accounts.iter().map(|a| (a.as_str(), "North")).collect();
    format!(
        "{}\n[cluster]\nnode_id = \"{node}\"\nurl = \"{urls}\"\nreplicas = 3\nlease_ms = {}\nrebalance_settle_ms = {}\n",
        ptt_server_toml("local", murmur, &accounts),
        LEASE.as_millis(),
        SETTLE.as_millis()
    )
}

/// The accounts a node has connected now (its own `/healthz` PTT side).
fn connected(h: &Value) -> Vec<String> {
    h["sides"]["ptt"]["servers"][0]["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .filter(|a| a["state"] == "connected")
        .map(|a| a["username"].as_str().unwrap().to_string())
        .collect()
}

/// One sample of every running node and of murmurd's user list.
struct Sample {
    /// Node id → the accounts it has connected.
    by_node: BTreeMap<String, Vec<String>>,
    /// Whether every node's cluster view names, for each account, the node that has it.
    views_agree: bool,
    /// Account → how many sessions murmurd lists in North.
    in_channel: BTreeMap<String, usize>,
}

fn sample(bridges: &[Option<Bridge>], watcher: &mut Terminal, accounts: &[String]) -> Sample {
    let healths: Vec<Value> = bridges.iter().flatten().map(|b| b.health()).collect();
    let mut by_node = BTreeMap::new();
    let mut holder = BTreeMap::new();
    for h in &healths {
        let node = h["cluster"]["node_id"].as_str().unwrap().to_string();
        for a in connected(h) {
            assert!(
                holder.insert(a.clone(), node.clone()).is_none(),
                "{a} connected by two nodes at once"
            );
        }
        by_node.insert(node, connected(h));
    }
    let views_agree = healths.iter().all(|h| {
        h["cluster"]["leases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| {
                let account = row["account"].as_str().unwrap();
                holder.get(account).map(String::as_str) == row["owner"].as_str()
            })
    });
    let users = watcher.users();
    let in_channel: BTreeMap<String, usize> = accounts
        .iter()
        .map(|a| (a.clone(), users.iter().filter(|u| *u == a).count()))
        .collect();
    for (a, n) in &in_channel {
        assert!(*n <= 1, "murmurd lists {a} {n} times");
    }
    Sample {
        by_node,
        views_agree,
        in_channel,
    }
}

/// Samples until the running nodes hold `want` accounts each (sorted counts), every account is
/// in North exactly once and every view agrees; returns the time that took.
fn wait_balanced(
    bridges: &[Option<Bridge>],
    watcher: &mut Terminal,
    accounts: &[String],
    want: &[usize],
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let s = sample(bridges, watcher, accounts);
        let mut counts: Vec<usize> = s.by_node.values().map(Vec::len).collect();
        counts.sort();
        if counts == want && s.views_agree && s.in_channel.values().all(|n| *n == 1) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let logs: Vec<String> = bridges.iter().flatten().map(|b| b.logs_tail(30)).collect();
            panic!(
                "not {want:?} after {limit:?}: {:?}, views agree {}, in North {:?}\n{}",
                s.by_node,
                s.views_agree,
                s.in_channel,
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the nodes one after another, each joining once the others hold everything, and
/// kills one at the end; prints the time from each join to balanced.
fn share_out(n_accounts: usize) {
    let accounts: Vec<String> = (1..=n_accounts).map(|i| format!("acct-{i}")).collect();
    let per = |nodes: usize| -> Vec<usize> {
        let mut v: Vec<usize> = (0..nodes)
            .map(|i| n_accounts / nodes + usize::from(i < n_accounts % nodes))
            .collect();
        v.sort();
        v
    };
    let nats = NatsCluster::start(3);
    let urls = nats.urls();
    let murmur = Murmur::start(&["North"]);
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));
    let mut bridges: Vec<Option<Bridge>> = vec![None, None, None];

    bridges[0] = Some(Bridge::start(
        BIN,
        &config(NODES[0], &murmur, &urls, &accounts),
    ));
    wait_balanced(&bridges, &mut watcher, &accounts, &per(1), T);
    for i in 1..3 {
        let joined = Instant::now();
        bridges[i] = Some(Bridge::start(
            BIN,
            &config(NODES[i], &murmur, &urls, &accounts),
        ));
        wait_balanced(&bridges, &mut watcher, &accounts, &per(i + 1), T);
        let took = joined.elapsed();
        println!(
            "{n_accounts} accounts: {} joined → balanced {:?} in {:.2} s (settle {:.1} s)",
            NODES[i],
            per(i + 1),
            took.as_secs_f64(),
            SETTLE.as_secs_f64()
        );
        assert!(
            took >= SETTLE,
            "nothing is handed over before the newcomer was live for the settle time"
        );
    }
    // Every node sees the three live, and the moves were hand-overs (a release between bursts,
    // counted), not lapses.
    for b in bridges.iter().flatten() {
        let h = b.health();
        let mut nodes: Vec<&str> = h["cluster"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        nodes.sort();
        assert_eq!(nodes, NODES, "{}", h["cluster"]);
        assert_eq!(
            h["cluster"]["fair_share"].as_u64(),
            Some(n_accounts.div_ceil(3) as u64)
        );
        assert_eq!(b.metric("pttbridge_cluster_takeovers_total", &[]), 0.0);
    }
    let moved = bridges[0]
        .as_ref()
        .unwrap()
        .metric("pttbridge_cluster_rebalanced_total", &[]);
    assert!(
        moved >= (n_accounts - n_accounts.div_ceil(3)) as f64,
        "node-a handed over {moved}"
    );

    // Stays balanced: nothing flaps once the counts are within one.
    let until = Instant::now() + 2 * LEASE;
    while Instant::now() < until {
        let s = sample(&bridges, &mut watcher, &accounts);
        let mut counts: Vec<usize> = s.by_node.values().map(Vec::len).collect();
        counts.sort();
        assert_eq!(counts, per(3), "{:?}", s.by_node);
        std::thread::sleep(Duration::from_millis(100));
    }

    // kill -9 of one node: the other two take its accounts when its leases lapse.
    let killed = Instant::now();
    bridges[1] = None;
    let took = wait_balanced(&bridges, &mut watcher, &accounts, &per(2), T + LEASE);
    println!(
        "{n_accounts} accounts: {} killed → the others hold all {:?} in {:.2} s (lease {:.1} s)",
        NODES[1],
        per(2),
        took.as_secs_f64(),
        LEASE.as_secs_f64()
    );
    assert!(
        killed.elapsed() >= LEASE / 2,
        "taken when the leases lapsed, not before"
    );
    let logs: String = bridges.iter().flatten().map(|b| b.logs()).collect();
    assert!(
        !logs.contains("rejected the account"),
        "murmurd never saw an account twice"
    );
}

/// A newcomer that settles while a talker holds the floor in the accounts' channel gets its
/// account only after the burst: the loaded node hands over between bursts, as a drain does.
#[test]
fn a_rebalance_waits_for_the_talk_burst_in_progress() {
    let nats = testkit::nats::NatsServer::start();
    let murmur = Murmur::start(&["North"]);
    let accounts: Vec<String> = vec!["acct-1".into(), "acct-2".into()];
    let cfg = |node: &str| {
        config(node, &murmur, &nats.url(), &accounts)
            .replace("replicas = 3", "replicas = 1")
            .replace(
                &format!("rebalance_settle_ms = {}", SETTLE.as_millis()),
                "rebalance_settle_ms = 1000",
            )
    };
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));
    let mut talker = Terminal::connect(murmur.port(), "talker", Some("North"));
    let mut bridges: Vec<Option<Bridge>> = vec![Some(Bridge::start(BIN, &cfg(NODES[0]))), None];
    wait_balanced(&bridges, &mut watcher, &accounts, &[2], T);
    let mut events = bridges[0].as_ref().unwrap().events();

    let dir = tempfile::tempdir().unwrap();
    let tone = testkit::audio::tone_wav(dir.path(), 6.0);
    let secs = talker.play(&tone);
    let started = Instant::now();
    bridges[1] = Some(Bridge::start(BIN, &cfg(NODES[1])));
    // The first of the two on node-a: the burst's end, then the hand-over.
    let first = events
        .try_expect(
            |e| {
                (e["type"] == "talk.stopped" && e["party"]["name"] == "talker")
                    || e["detail"]["reason"] == "handed over (rebalance)"
            },
            T,
        )
        .expect("the burst ends or an account is handed over");
    assert_eq!(
        first["type"], "talk.stopped",
        "no hand-over while the burst is in progress: {first}"
    );
    assert_ne!(
        first["detail"]["reason"], "connection lost",
        "the burst ended by itself, not cut by an account leaving: {first}"
    );
    let burst = started.elapsed();
    let moved = events
        .try_expect(|e| e["detail"]["reason"] == "handed over (rebalance)", T)
        .expect("handed over after the burst");
    let took = wait_balanced(&bridges, &mut watcher, &accounts, &[1, 1], T);
    println!(
        "burst of {secs:.1} s (ended {:.2} s after node-b was started): balanced {:.2} s after its end ({})",
        burst.as_secs_f64(),
        took.as_secs_f64(),
        moved["detail"]["account"]
    );
    assert!(
        burst.as_secs_f64() > 2.0,
        "the burst was still in progress when node-b had settled"
    );
}

/// Accounts with a linked call stay where they are: node-a holds two dial-ins' accounts, each
/// linked into an aiortc participant's room; node-b joins and gets nothing while both calls are
/// up. Once one caller leaves, that account (and only it) is handed over; the other call stays
/// linked on node-a.
#[test]
fn a_rebalance_never_moves_an_account_with_a_linked_call() {
    const NORTH: i64 = 51_000_001;
    let nats = testkit::nats::NatsServer::start();
    let murmur = Murmur::start(&["North"]);
    let accounts: Vec<String> = vec!["bridge".into(), "acct-2".into()];
    let cfg = |node: &str| {
        format!(
            "{}{}[[meeting.dial_in]]\nuser_id = {}\nserver = \"local\"\naccount = \"acct-2\"\nname = \"North 2\"\n",
            config(node, &murmur, &nats.url(), &accounts)
                .replace("replicas = 3", "replicas = 1")
                .replace(
                    &format!("rebalance_settle_ms = {}", SETTLE.as_millis()),
                    "rebalance_settle_ms = 1000",
                ),
            testkit::bridge::meeting_north_toml(NORTH),
            NORTH + 1,
        )
    };
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));
    let mut bridges: Vec<Option<Bridge>> = vec![Some(Bridge::start(BIN, &cfg(NODES[0]))), None];
    wait_balanced(&bridges, &mut watcher, &accounts, &[2], T);
    let a = bridges[0].as_ref().unwrap().addr();
    let mut callers: Vec<Participant> = [("carol", NORTH), ("dave", NORTH + 1)]
        .iter()
        .map(|(name, number)| {
            let mut p = Participant::join(a, name);
            let room = p.open_room();
            let r = p.request(serde_json::json!({"module":"call","method":"doInvite","ownUserId":p.id(),"targetUserId":number,"type":1,"roomId":room}));
            assert_eq!(r["result"], 0, "{r}");
            let entered = p.complete_call(*number, room, T);
            assert_eq!(entered["client"]["mode"], "ptt");
            p
        })
        .collect();

    bridges[1] = Some(Bridge::start(BIN, &cfg(NODES[1])));
    // node-b is live well past its settle time and several renewals of node-a's leases: still
    // nothing moves while both accounts have a call.
    let b = bridges[1].as_ref().unwrap();
    let until = Instant::now() + Duration::from_secs(1) + 2 * LEASE;
    while Instant::now() < until {
        let s = sample(&bridges, &mut watcher, &accounts);
        assert_eq!(s.by_node["node-b"].len(), 0, "{:?}", s.by_node);
        std::thread::sleep(Duration::from_millis(100));
    }
    let h = b.health();
    assert!(
        h["cluster"]["nodes"].as_array().unwrap().len() == 2
            && h["cluster"]["members"][1]["live_ms"].as_u64().unwrap() >= 1000,
        "node-b saw node-a, node-a long settled: {}",
        h["cluster"]
    );
    assert_eq!(
        bridges[0]
            .as_ref()
            .unwrap()
            .metric("pttbridge_cluster_rebalanced_total", &[]),
        0.0
    );

    // carol leaves: her call ends, its link goes, and that account moves.
    let left = Instant::now();
    drop(callers.remove(0));
    let took = wait_balanced(&bridges, &mut watcher, &accounts, &[1, 1], T);
    let s = sample(&bridges, &mut watcher, &accounts);
    assert_eq!(s.by_node["node-b"], ["bridge"], "{:?}", s.by_node);
    assert_eq!(
        s.by_node["node-a"],
        ["acct-2"],
        "dave's call kept its account"
    );
    println!(
        "a linked account moved {:.2} s after its caller left",
        took.as_secs_f64().max(left.elapsed().as_secs_f64())
    );
    drop(callers);
}

#[test]
fn three_nodes_joining_one_by_one_end_with_one_account_each_and_survive_a_kill() {
    share_out(3);
}

#[test]
fn three_nodes_share_six_accounts_two_each() {
    share_out(6);
}
