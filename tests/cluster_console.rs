//! One console admin session across cluster nodes (issue 22), against real peers: a 3-server
//! `nats-server` JetStream cluster, murmurd, pymumble terminals, the test console
//! (`testkit::console`, written against `docs/console.md`) and three `pttbridge run` nodes that
//! all list the same console server with the same admin account (SuperUser).
//!
//! Shows: exactly one node holds the admin session and murmurd sees exactly one SuperUser,
//! logged in once (no node knocking another off: its "Authenticated" lines counted over
//! seconds); a console logged in on a node that does not hold it calls a terminal, which the
//! holder's admin session moves into the call channel (the move routed over NATS) and back at
//! hang-up, the holder mutes and unmutes it with the console's floor, and each hears the other;
//! `kill -9` of the holder → another node takes the session over (the time is printed) and new
//! calls work, from the node that does not hold it as well; `SIGTERM` of the holder during a
//! call of its own console sends the terminal home before the session moves on; with every node drained
//! nobody holds it and the console is told so in the protocol's hang-up (`tempCallHangup`,
//! reason 1, naming the missing admin session).

use std::time::{Duration, Instant};

use muicall::audio::Codec;
use serde_json::{Value, json};
use testkit::audio::{compare, compare_files, load_wav};
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::console::{Console, REPLY};
use testkit::murmur::Murmur;
use testkit::nats::NatsCluster;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(20);
const BASE_URL: &str = "http://ptt.test:8080";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// How long a move may take (`console.move_timeout_ms`): also how long a move waits for a
/// holder before the console is told there is none.
const MOVE_MS: u64 = 5000;

/// The cluster's config. No rebalancing (`rebalance_settle_ms` an hour): with two leases (the
/// bridge's account and the admin session) on three nodes, the share-out would hand one of the
/// first node's over mid-test — possibly the admin session to the console's own node, whose
/// moves are then local, not routed (share-out is `tests/cluster_shareout.rs`'s subject).
fn config(node: &str, murmur: &Murmur, urls: &str) -> String {
    format!(
        "{ptt}\n[cluster]\nnode_id = \"{node}\"\nurl = \"{urls}\"\nreplicas = 3\n\
         rebalance_settle_ms = 3600000\n\n\
         [console]\nmove_timeout_ms = {MOVE_MS}\n[[console.servers]]\nbase_url = \"{BASE_URL}\"\n\
         ptt_server = \"local\"\nadmin_username = \"SuperUser\"\nadmin_password = \"{pw}\"\n",
        ptt = ptt_server_toml("local", murmur, &[("bridge", "North")]),
        pw = murmur.superuser_password(),
    )
}

/// The console server's entry in a node's `/healthz`.
fn admin(h: &Value) -> &Value {
    &h["sides"]["console"]["servers"][0]
}

/// The node each running node names as the admin session's holder, and the nodes whose own
/// admin session is connected.
fn admin_view(bridges: &[Option<Bridge>]) -> (Vec<Option<String>>, Vec<usize>) {
    let mut named = Vec::new();
    let mut connected = Vec::new();
    for (i, b) in bridges.iter().enumerate() {
        let Some(b) = b else { continue };
        let h = b.health();
        named.push(admin(&h)["admin_node"].as_str().map(str::to_owned));
        if admin(&h)["admin_connected"] == true {
            connected.push(i);
        }
    }
    (named, connected)
}

/// How many times murmurd logged the admin account in so far.
fn admin_logins(murmur: &Murmur) -> usize {
    murmur
        .log()
        .lines()
        .filter(|l| l.contains(":SuperUser(0)>") && l.contains("Authenticated"))
        .count()
}

/// How many SuperUser sessions the watcher (in the root channel, where the admin stays) sees.
fn admins_seen(watcher: &mut Terminal) -> usize {
    watcher.users().iter().filter(|u| *u == "SuperUser").count()
}

/// Waits until every running node names one holder, that node alone has its admin session
/// connected and murmurd lists one SuperUser; asserts at every sample that never two nodes
/// have theirs connected. Returns the holder's index.
fn wait_one_holder(bridges: &[Option<Bridge>], watcher: &mut Terminal, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let (named, connected) = admin_view(bridges);
        assert!(
            connected.len() <= 1,
            "two nodes with the admin session: {connected:?}"
        );
        let agreed = named.windows(2).all(|w| w[0] == w[1]) && named[0].is_some();
        if agreed && connected.len() == 1 {
            let holder = connected[0];
            assert_eq!(named[0].as_deref(), Some(NODES[holder]), "{named:?}");
            if admins_seen(watcher) == 1 {
                return holder;
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = bridges.iter().flatten().map(|b| b.logs_tail(30)).collect();
            panic!(
                "no single admin holder after {limit:?}: named {named:?}, connected {connected:?}\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminal(murmur: &Murmur, name: &str, channel: &str) -> Terminal {
    Terminal::builder(murmur.port(), name)
        .password(&format!("pw-{name}"))
        .channel(channel)
        .connect()
}

fn hang_up(console: &mut Console, sid: &str) {
    console.send(json!({"type": "tempCallHangup", "sessionId": sid}));
    let hung = console.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "tempCallHangup",
        REPLY,
    );
    assert_eq!(hung["data"]["result"]["code"], 0, "{hung}");
}

/// Moves this node routed to another node's admin session, by outcome.
fn routed_moves(b: &Bridge, outcome: &str) -> f64 {
    b.metric(
        "pttbridge_cluster_routed_total{",
        &[("kind", "move"), ("outcome", outcome)],
    )
}

/// Whether `b` counts at least `n` routed moves with `outcome` within `T`: the holder's reply
/// (which the asker counts) can reach it a moment after the terminal is seen in its channel.
fn routed_moves_reach(b: &Bridge, outcome: &str, n: f64) -> bool {
    let deadline = Instant::now() + T;
    while routed_moves(b, outcome) < n {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The NATS cluster, murmurd (North, South; consoles zydd and disp2, terminal t1), a watcher
/// in the root channel and the three nodes.
fn site() -> (NatsCluster, Murmur, Terminal, Vec<Option<Bridge>>) {
    let nats = NatsCluster::start(3);
    let murmur = Murmur::builder()
        .channels(&["North", "South"])
        .user("zydd", "pw-zydd")
        .user("disp2", "pw-disp2")
        .user("disp3", "pw-disp3")
        .user("t1", "pw-t1")
        .start();
    let watcher = Terminal::connect(murmur.port(), "watcher", None);
    let bridges = NODES
        .iter()
        .map(|n| Some(Bridge::start(BIN, &config(n, &murmur, &nats.urls()))))
        .collect();
    (nats, murmur, watcher, bridges)
}

#[test]
fn one_admin_session_across_nodes_and_moves_routed_to_it() {
    let (_nats, murmur, mut watcher, mut bridges) = site();

    // ---- one admin session, logged in once ----
    let holder = wait_one_holder(&bridges, &mut watcher, T);
    let logins = admin_logins(&murmur);
    assert!(
        logins >= 1,
        "murmurd never logged SuperUser in:\n{}",
        murmur.log()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        admin_logins(&murmur),
        logins,
        "the admin account logged in again: nodes knock each other off\n{}",
        murmur.log()
    );
    assert_eq!(wait_one_holder(&bridges, &mut watcher, T), holder);
    assert_eq!(admins_seen(&mut watcher), 1);
    println!(
        "admin session held by {} ({logins} login(s) of SuperUser in murmurd's log, none more in 4 s)",
        NODES[holder]
    );

    // ---- a console on another node: its moves go to the holder ----
    let on = (holder + 1) % NODES.len();
    let node = bridges[on].as_ref().unwrap();
    let mut t1 = terminal(&murmur, "t1", "South");
    let id1 = murmur.user_id("t1");
    let mut console = Console::connect(node.addr());
    console.login(BASE_URL, "zydd", "pw-zydd");
    let sid = console.call(&[id1], T);
    t1.wait_in_channel(&format!("call-{sid}"), T);
    assert!(
        routed_moves_reach(node, "ok", 1.0),
        "the move was not routed"
    );
    // The console holds the floor: the holder muted t1 for it. The console is heard by t1 …
    let dir = tempfile::tempdir().unwrap();
    let speech = fixture("audio/speech.wav");
    t1.record_start();
    let sent = console.play(&speech, Codec::Pcm16(48_000)).join().unwrap();
    assert!(sent > 150);
    std::thread::sleep(Duration::from_millis(800));
    let rec = t1.record_stop(&dir.path().join("t1.wav"));
    let speaker = rec["speakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "zydd")
        .unwrap_or_else(|| panic!("t1 did not hear the console: {rec}"))
        .clone();
    let cmp = compare_files(&speech, speaker["wav"].as_str().unwrap());
    println!("console on {} → t1: {cmp}", NODES[on]);
    cmp.assert_matches(0.9, 0.05);
    // … and, once it lets go (the holder unmutes t1), hears t1.
    console.send(json!({"type": "releaseMic"}));
    assert_eq!(console.expect_type("releaseMic", REPLY)["code"], 1);
    t1.wait_unmuted(T);
    console.record_start();
    let speech2 = fixture("audio/speech2.wav");
    t1.play_and_wait(&speech2, Duration::from_secs(30));
    console.expect_notify("memberLostMic", |v| v["data"]["memberId"] == id1, T);
    let heard = dir.path().join("console.wav");
    console.record_stop(&heard);
    let cmp = compare(&load_wav(&speech2), &load_wav(&heard));
    println!("t1 → console on {}: {cmp}", NODES[on]);
    cmp.assert_matches(0.9, 0.05);
    let before = routed_moves(node, "ok");
    hang_up(&mut console, &sid);
    t1.wait_in_channel("South", T);
    assert!(
        routed_moves_reach(node, "ok", before + 1.0),
        "the move home was not routed"
    );

    // ---- kill -9 the holder: another node takes the session over ----
    let killed = Instant::now();
    bridges[holder] = None;
    let new_holder = wait_one_holder(&bridges, &mut watcher, T);
    let takeover = killed.elapsed();
    assert_ne!(new_holder, holder);
    println!(
        "kill -9 of {} → {} holds the admin session, murmurd lists it once: {:.2} s",
        NODES[holder],
        NODES[new_holder],
        takeover.as_secs_f64()
    );
    // A call from the surviving node that does not hold it (routed to the new holder), and
    // one from the first console (on whichever node it is).
    let other = (0..NODES.len())
        .find(|i| *i != holder && *i != new_holder)
        .unwrap();
    let node = bridges[other].as_ref().unwrap();
    let before = routed_moves(node, "ok");
    let mut second = Console::connect(node.addr());
    second.login(BASE_URL, "disp2", "pw-disp2");
    for c in [&mut second, &mut console] {
        let sid = c.call(&[id1], T);
        t1.wait_in_channel(&format!("call-{sid}"), T);
        hang_up(c, &sid);
        t1.wait_in_channel("South", T);
    }
    assert!(
        routed_moves_reach(node, "ok", before + 2.0),
        "{} did not route its moves to {}",
        NODES[other],
        NODES[new_holder]
    );

    // ---- SIGTERM of the holder during a call of its own console: its terminal goes home
    // through it before it hands the session on ----
    let mut third = Console::connect(bridges[new_holder].as_ref().unwrap().addr());
    third.login(BASE_URL, "disp3", "pw-disp3");
    let sid = third.call(&[id1], T);
    t1.wait_in_channel(&format!("call-{sid}"), T);
    bridges[new_holder].as_mut().unwrap().stop(T);
    bridges[new_holder] = None;
    t1.wait_in_channel("South", T);
    assert_eq!(wait_one_holder(&bridges, &mut watcher, T), other);
    println!(
        "SIGTERM of {} mid-call: t1 back home, {} holds the admin session",
        NODES[new_holder], NODES[other]
    );

    // ---- nobody holds it: the console is told in the protocol's hang-up ----
    let node = bridges[other].as_ref().unwrap();
    let r = node.request("POST", "/v1/cluster/drain", None);
    assert_eq!(r.status, 200, "{}", r.body);
    node.wait_health(
        "nobody holds the admin session",
        |h| admin(h)["admin_node"].is_null(),
        T,
    );
    second.send(json!({"type": "requestMic", "toIds": [id1], "transaction": 2}));
    let created = second.expect_type("createGroup", T);
    assert_eq!(created["code"], 1, "{created}");
    let hangup = second.expect_notify(
        "tempCallHangup",
        |_| true,
        Duration::from_millis(MOVE_MS) + T,
    );
    assert_eq!(hangup["data"]["hangupReason"]["code"], 1, "{hangup}");
    let why = hangup["data"]["hangupReason"]["message"].as_str().unwrap();
    assert!(
        why.contains("no bridge node holds the admin session of PTT server local"),
        "{hangup}"
    );
    assert_eq!(t1.current_channel(), "South");
    assert!(routed_moves_reach(node, "no_holder", 1.0));
    assert!(
        node.logs()
            .contains("a console's move could not reach the admin session"),
        "{}",
        node.logs_tail(40)
    );
    println!("with every node drained the console hears: {why}");
}
