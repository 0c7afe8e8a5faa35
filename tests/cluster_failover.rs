//! Failover of a live dial-in and draining (issue 22), against real peers: a 3-server
//! `nats-server` JetStream cluster on loopback, murmurd with channel North, pymumble terminals in
//! North (a talker and a watcher of the user list), aiortc meeting participants
//! (`tests/peers/meeting.py`, the RTCPeer spec's JSON), and three `pttbridge run` processes all
//! configured with the same account and its dial-in number, the lease at its default.
//!
//! Shows: `kill -9` of the node hosting a dial-in call → another node holds the account (seen
//! in murmurd's user list), its number is callable there, the participant redials it (found
//! from `/healthz`'s `cluster` section) and hears a talker in North (correlation ≥ 0.9);
//! `POST /v1/cluster/drain` hands the account over between two talk bursts (none cut), takes no
//! new lease, and undrain takes part again; with no wait allowed, a drain mid-burst cuts it.
//!
//! `failover_times_over_20_kills` (ignored: minutes) prints p50/p99/max of each stage over 20
//! kills: `cargo test --test cluster_failover -- --ignored --nocapture`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::bridge::{Bridge, meeting_north_toml, ptt_server_toml};
use testkit::cluster::{account, bridges_in_channel, connected, wait_single_owner};
use testkit::meeting::{Participant, hear_from_ptt};
use testkit::murmur::Murmur;
use testkit::nats::{NatsCluster, NatsServer};
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const NORTH: i64 = 9001;

/// A node's config: the account, its dial-in number, and `[cluster]` with the default lease.
fn config(node: &str, murmur: &Murmur, urls: &str, replicas: usize, extra: &str) -> String {
    format!(
        r#"{ptt}
{meeting}
[cluster]
node_id = "{node}"
url = "{urls}"
replicas = {replicas}
{extra}
"#,
        ptt = ptt_server_toml("local", murmur, &[("bridge", "North")]),
        meeting = meeting_north_toml(NORTH),
    )
}

/// The holder of the account's lease as `/healthz`'s `cluster` section of `bridge` names it,
/// with how long it has held it (when this node is the holder).
fn lease_holder(bridge: &Bridge) -> (Option<usize>, Option<Duration>) {
    let h = bridge.health();
    let row = &h["cluster"]["leases"][0];
    (
        row["owner"]
            .as_str()
            .and_then(|o| NODES.iter().position(|n| *n == o)),
        row["held_ms"].as_u64().map(Duration::from_millis),
    )
}

/// Invites North into `room`: `true` when the node accepted the call (the number is callable
/// on it), `false` when it refused it (its account is on standby there).
fn invite_north(p: &mut Participant, room: i64) -> bool {
    let r = p.request(json!({"module":"call","method":"doInvite","ownUserId":p.id(),"targetUserId":NORTH,"type":1,"roomId":room}));
    if r["result"] == 0 {
        return true;
    }
    let msg = r.to_string();
    assert!(
        msg.contains("cluster standby"),
        "refused only as a standby number: {r}"
    );
    false
}

/// Dials North on the participant's node, retrying the invite while the number is not
/// callable there; returns when the number was callable and when the link was up.
fn dial_north(p: &mut Participant, limit: Duration) -> (Instant, Instant) {
    let room = p.open_room();
    let deadline = Instant::now() + limit;
    while !invite_north(p, room) {
        assert!(Instant::now() < deadline, "North never callable");
        std::thread::sleep(Duration::from_millis(50));
    }
    let callable = Instant::now();
    let entered = p.complete_call(NORTH, room, T);
    assert_eq!(entered["client"]["mode"], "ptt");
    (callable, Instant::now())
}

/// What one kill cost, from the kill.
#[derive(Debug, Clone, Copy)]
struct Failover {
    /// Another node's lease write confirmed (it acts as the owner).
    taken: Duration,
    /// The account back in North, as murmurd's user list shows the watcher.
    in_channel: Duration,
    /// The number accepted a call on the new owner.
    callable: Duration,
    /// The redialled call's channel linked into its room.
    linked: Duration,
}

/// A site: the NATS cluster, murmurd, three nodes, a watcher in North, and one participant
/// signed in on each node.
struct Site {
    _nats: NatsCluster,
    murmur: Murmur,
    urls: String,
    bridges: Vec<Option<Bridge>>,
    participants: Vec<Option<Participant>>,
    watcher: Terminal,
}

impl Site {
    fn start() -> Site {
        let nats = NatsCluster::start(3);
        let urls = nats.urls();
        let murmur = Murmur::start(&["North"]);
        let bridges: Vec<Option<Bridge>> = NODES
            .iter()
            .map(|n| Some(Bridge::start(BIN, &config(n, &murmur, &urls, 3, ""))))
            .collect();
        let watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));
        let participants = bridges
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Some(Participant::join(
                    b.as_ref().unwrap().addr(),
                    &format!("p{i}"),
                ))
            })
            .collect();
        Site {
            _nats: nats,
            murmur,
            urls,
            bridges,
            participants,
            watcher,
        }
    }

    fn restart(&mut self, i: usize) {
        let b = Bridge::start(BIN, &config(NODES[i], &self.murmur, &self.urls, 3, ""));
        self.participants[i] = Some(Participant::join(b.addr(), &format!("p{i}")));
        self.bridges[i] = Some(b);
    }

    /// `kill -9` of node `owner` (hosting a call to North); then what it took until another
    /// node held the account, had it in North and took a call to North; returns it and the
    /// new owner (whose participant is in the redialled call).
    fn kill_and_redial(&mut self, owner: usize) -> (Failover, usize) {
        let killed = Instant::now();
        self.bridges[owner] = None;
        self.participants[owner] = None;
        let mut taken = None;
        let mut holder = None;
        let mut in_channel = None;
        let mut gone = false;
        let deadline = killed + T;
        while taken.is_none() || in_channel.is_none() {
            assert!(
                Instant::now() < deadline,
                "no takeover within {T:?}: taken {taken:?}, in North {in_channel:?}"
            );
            if taken.is_none() {
                for (i, b) in self.bridges.iter().enumerate() {
                    let Some(b) = b else { continue };
                    let asked = Instant::now();
                    if let (Some(o), Some(held)) = lease_holder(b) {
                        assert_eq!(o, i, "a held row names its node");
                        taken = Some(asked.saturating_duration_since(killed + held));
                        holder = Some(i);
                    }
                }
            }
            if in_channel.is_none() {
                // murmurd may list the killed session for a moment: back means gone, then in.
                let n = bridges_in_channel(&mut self.watcher);
                assert!(n <= 1, "the account is in North twice");
                gone |= n == 0;
                if gone && n == 1 {
                    in_channel = Some(killed.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The client found the new owner in /healthz's cluster section (the node whose lease
        // row is held) and redials it there.
        let new_owner = holder.expect("a holder");
        assert_ne!(new_owner, owner);
        let p = self.participants[new_owner].as_mut().unwrap();
        let (callable, linked) = dial_north(p, T);
        let f = Failover {
            taken: taken.unwrap(),
            in_channel: in_channel.unwrap(),
            callable: callable.duration_since(killed),
            linked: linked.duration_since(killed),
        };
        (f, new_owner)
    }
}

#[test]
fn a_killed_nodes_dial_in_is_callable_on_another_node_and_the_caller_hears_north_again() {
    let mut site = Site::start();
    let mut alice = Terminal::connect(site.murmur.port(), "alice", Some("North"));
    let owner = wait_single_owner(&site.bridges, &mut site.watcher, T);
    // A call to North on the owner, then the owner dies mid-call.
    dial_north(site.participants[owner].as_mut().unwrap(), T);
    let (f, new_owner) = site.kill_and_redial(owner);
    println!(
        "kill -9 → lease taken {:.2} s → in North {:.2} s → callable {:.2} s → linked {:.2} s",
        f.taken.as_secs_f64(),
        f.in_channel.as_secs_f64(),
        f.callable.as_secs_f64(),
        f.linked.as_secs_f64()
    );
    // Generous bounds only (the figures are the ignored test's): the account is never in North
    // twice (checked throughout) and comes back within a few leases, not never.
    assert!(f.in_channel < Duration::from_secs(10), "{f:?}");
    assert_eq!(
        wait_single_owner(&site.bridges, &mut site.watcher, T),
        new_owner
    );

    // The redialled participant hears alice in North through the new owner.
    let carol = site.participants[new_owner].as_mut().unwrap();
    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(|e| e["event"] == "published", T);
    carol.play_connected(NORTH);
    let dir = tempfile::tempdir().unwrap();
    let (cmp, _) = hear_from_ptt(
        carol,
        &mut alice,
        &fixture("audio/speech.wav"),
        &dir.path().join("carol.wav"),
        "PTT → meeting after failover",
    );
    cmp.assert_matches(0.9, 0.1);
    let owner = site.bridges[new_owner].as_ref().unwrap();
    assert_eq!(owner.metric("pttbridge_cluster_takeovers_total", &[]), 1.0);
}

/// The 20-kill measurement: each round dials North on the owner, kills it, measures the
/// stages, redials on the new owner, and restarts the killed node. Kills are spread over the
/// renewal period.
#[test]
#[ignore = "minutes: run with --ignored --nocapture for the failover figures"]
fn failover_times_over_20_kills() {
    let mut site = Site::start();
    let mut owner = wait_single_owner(&site.bridges, &mut site.watcher, T);
    dial_north(site.participants[owner].as_mut().unwrap(), T);
    let mut runs: Vec<Failover> = Vec::new();
    for round in 0..20u64 {
        // A different point of the owner's renewal period at each kill.
        std::thread::sleep(Duration::from_millis(500 + round * 397 % 1000));
        let (f, new_owner) = site.kill_and_redial(owner);
        println!(
            "kill {:2}: taken {:.2} s, in North {:.2} s, callable {:.2} s, linked {:.2} s",
            round + 1,
            f.taken.as_secs_f64(),
            f.in_channel.as_secs_f64(),
            f.callable.as_secs_f64(),
            f.linked.as_secs_f64()
        );
        runs.push(f);
        site.restart(owner);
        owner = new_owner;
        assert_eq!(
            wait_single_owner(&site.bridges, &mut site.watcher, T),
            owner
        );
    }
    let stats = |name: &str, f: fn(&Failover) -> Duration| {
        let mut v: Vec<f64> = runs.iter().map(|r| f(r).as_secs_f64()).collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "{name:>11}: p50 {:.2} s, p99 {:.2} s, max {:.2} s, min {:.2} s",
            at(0.5),
            at(0.99),
            v[v.len() - 1],
            v[0]
        );
    };
    println!("failover over {} kills (from the kill):", runs.len());
    stats("taken", |f| f.taken);
    stats("in North", |f| f.in_channel);
    stats("callable", |f| f.callable);
    stats("linked", |f| f.linked);
}

/// Talk events of the talker as each node published them, stamped on arrival.
type Heard = Arc<Mutex<Vec<(Instant, usize, Value)>>>;

fn listen(bridge: &Bridge, node: usize, heard: &Heard) {
    let mut events = bridge.events();
    let heard = heard.clone();
    std::thread::spawn(move || {
        loop {
            match events.try_expect(|_| true, Duration::from_millis(200)) {
                Some(ev) if testkit::events::is_exit(&ev) => return,
                Some(ev)
                    if ev["party"]["name"] == "alice"
                        && (ev["type"] == "talk.started" || ev["type"] == "talk.stopped") =>
                {
                    heard.lock().unwrap().push((Instant::now(), node, ev));
                }
                _ => {}
            }
        }
    });
}

/// Bursts alice sent: (start, end) of each play.
type Bursts = Vec<(Instant, Instant)>;

/// What became of each burst: heard whole by one node, cut at a hand-over (the node's account
/// left North mid-burst), heard only from part-way (a node joined North mid-burst), or missed.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    whole: usize,
    cut: usize,
    late: usize,
    missed: usize,
}

fn tally(bursts: &Bursts, heard: &Heard) -> Tally {
    let heard = heard.lock().unwrap();
    let mut t = Tally::default();
    for (start, end) in bursts {
        let of_burst: Vec<&(Instant, usize, Value)> = heard
            .iter()
            .filter(|(at, _, _)| *at >= *start && *at <= *end + Duration::from_millis(1000))
            .collect();
        let cut = of_burst.iter().any(|(_, _, e)| {
            e["type"] == "talk.stopped" && e["detail"]["reason"] == "connection lost"
        });
        let starts: Vec<&Instant> = of_burst
            .iter()
            .filter(|(_, _, e)| e["type"] == "talk.started")
            .map(|(at, _, _)| at)
            .collect();
        if cut {
            t.cut += 1;
        } else if starts.is_empty() {
            t.missed += 1;
        } else if starts.len() == 1 && starts[0].duration_since(*start) < Duration::from_millis(500)
        {
            t.whole += 1;
        } else {
            t.late += 1;
        }
    }
    t
}

/// Plays `n` bursts of `burst` with `gap` between them; `during(i)` runs as burst `i` starts
/// (after its `talk.started` was heard by some node).
fn bursts(
    alice: &mut Terminal,
    wav: &std::path::Path,
    n: usize,
    gap: Duration,
    heard: &Heard,
    mut during: impl FnMut(usize),
) -> Bursts {
    let mut out = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        alice.play(wav);
        // Mid-burst: once a node has heard it start (bounded: a burst may be missed).
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until
            && !heard
                .lock()
                .unwrap()
                .iter()
                .any(|(at, _, e)| *at >= start && e["type"] == "talk.started")
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        during(i);
        alice.expect_event("play_done", T);
        out.push((start, Instant::now()));
        std::thread::sleep(gap);
    }
    out
}

#[test]
fn a_drained_node_hands_over_between_bursts_takes_no_lease_and_undrains() {
    let nats = NatsServer::start();
    let murmur = Murmur::start(&["North"]);
    let cfg = |n: &str, extra: &str| config(n, &murmur, &nats.url(), 1, extra);
    let bridges: Vec<Option<Bridge>> = NODES[..2]
        .iter()
        .map(|n| Some(Bridge::start(BIN, &cfg(n, ""))))
        .collect();
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));
    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    let owner = wait_single_owner(&bridges, &mut watcher, T);
    let other = 1 - owner;
    let heard: Heard = Arc::default();
    for (i, b) in bridges.iter().enumerate() {
        listen(b.as_ref().unwrap(), i, &heard);
    }
    let dir = tempfile::tempdir().unwrap();
    let burst = testkit::audio::tone_wav(dir.path(), 1.5);
    let gap = Duration::from_millis(1500);

    // Strangers cannot drain.
    let b = bridges[owner].as_ref().unwrap();
    let r = b.request_with("POST", "/v1/cluster/drain", None, &[]);
    assert_eq!(r.status, 401, "{}", r.body);

    // The drain is asked for in the middle of burst 2: the account stays until that burst has
    // ended, then moves to the other node; no burst is cut.
    let mut drained_at = None;
    let sent = bursts(&mut alice, &burst, 6, gap, &heard, |i| {
        if i == 2 {
            let r = b.request("POST", "/v1/cluster/drain", None);
            assert_eq!(r.status, 200, "{}", r.body);
            let r = r.json();
            assert_eq!(r["code"], 0, "{r}");
            assert_eq!(r["changed"], true);
            assert_eq!(r["cluster"]["state"], "draining");
            drained_at = Some(Instant::now());
        }
    });
    let t = tally(&sent, &heard);
    println!("drain between bursts (1.5 s bursts, 1.5 s gaps): {t:?}");
    assert_eq!(t.cut, 0, "no burst cut by the drain: {t:?}");
    assert_eq!(
        wait_single_owner(&bridges, &mut watcher, T),
        other,
        "the drained node's account moved"
    );
    // How long the account was in neither node: from the end of the burst in progress at the
    // drain (its talk.stopped on the drained node, after which it released) to the other
    // node's confirmed lease.
    let asked = Instant::now();
    let held = lease_holder(bridges[other].as_ref().unwrap())
        .1
        .expect("held");
    let ended = heard
        .lock()
        .unwrap()
        .iter()
        .find(|(at, node, e)| {
            *node == owner && e["type"] == "talk.stopped" && *at >= drained_at.unwrap()
        })
        .map(|(at, _, _)| *at)
        .expect("the burst in progress ended on the drained node");
    println!(
        "drain: asked mid-burst, burst ended {:.2} s later, other node holds the account {:.2} s after that",
        ended.duration_since(drained_at.unwrap()).as_secs_f64(),
        (asked - held)
            .saturating_duration_since(ended)
            .as_secs_f64()
    );
    assert_eq!(
        b.metric("pttbridge_cluster_handovers_total", &[("floor", "idle")]),
        1.0
    );
    let h = b.health();
    assert_eq!(h["cluster"]["state"], "draining");
    assert_eq!(h["cluster"]["leases"][0]["state"], "other");
    assert_eq!(account(&h)["state"], "standby");

    // Drained, it takes nothing: the other node drains too and nobody holds the account.
    let ob = bridges[other].as_ref().unwrap();
    assert_eq!(ob.request("POST", "/v1/cluster/drain", None).status, 200);
    let until = Instant::now() + Duration::from_secs(6);
    let mut empty_since = None;
    while Instant::now() < until {
        let n = connected(&bridges);
        if n.is_empty() && bridges_in_channel(&mut watcher) == 0 {
            empty_since.get_or_insert(Instant::now());
        } else {
            empty_since = None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        empty_since.is_some_and(|t| t.elapsed() > Duration::from_secs(3)),
        "two drained nodes hold nothing"
    );
    // Nobody holds it, so nobody to relay a call to: the number refuses, naming why, rather
    // than linking a channel this node is not in.
    let mut dave = Participant::join(b.addr(), "dave");
    let room = dave.open_room();
    assert!(!invite_north(&mut dave, room), "a standby number refuses");
    // Undrained, the first takes it again.
    let r = b.request("POST", "/v1/cluster/undrain", None).json();
    assert_eq!(r["changed"], true, "{r}");
    assert_eq!(wait_single_owner(&bridges, &mut watcher, T), owner);
    assert_eq!(b.health()["cluster"]["state"], "ready");
    assert_eq!(ob.request("POST", "/v1/cluster/undrain", None).status, 200);
}

/// The contrast: with no wait allowed (`drain_max_wait_ms = 0`) a drain asked for mid-burst
/// hands the account over at once and the burst is cut — what the wait prevents.
#[test]
fn a_drain_with_no_wait_cuts_the_burst_in_progress() {
    let nats = NatsServer::start();
    let murmur = Murmur::start(&["North"]);
    let cfg = |n: &str| config(n, &murmur, &nats.url(), 1, "drain_max_wait_ms = 0");
    let bridges: Vec<Option<Bridge>> = NODES[..2]
        .iter()
        .map(|n| Some(Bridge::start(BIN, &cfg(n))))
        .collect();
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));
    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    let owner = wait_single_owner(&bridges, &mut watcher, T);
    let heard: Heard = Arc::default();
    for (i, b) in bridges.iter().enumerate() {
        listen(b.as_ref().unwrap(), i, &heard);
    }
    let dir = tempfile::tempdir().unwrap();
    let burst = testkit::audio::tone_wav(dir.path(), 2.0);
    let b = bridges[owner].as_ref().unwrap();
    let sent = bursts(
        &mut alice,
        &burst,
        2,
        Duration::from_millis(1500),
        &heard,
        |i| {
            if i == 0 {
                assert_eq!(b.request("POST", "/v1/cluster/drain", None).status, 200);
            }
        },
    );
    let t = tally(&sent, &heard);
    println!("drain mid-burst with no wait: {t:?}");
    assert_eq!(t.cut, 1, "the burst in progress is cut: {t:?}");
    assert_eq!(
        b.metric("pttbridge_cluster_handovers_total", &[("floor", "busy")]),
        1.0
    );
}

/// The page shows the cluster from `/healthz` (this node, the nodes seen, who holds the
/// account, lease ages) and drains and undrains this node from its button; in Chromium.
#[test]
fn the_page_shows_the_cluster_and_drains_this_node() {
    let nats = NatsServer::start();
    let murmur = Murmur::start(&["North"]);
    let bridges: Vec<Option<Bridge>> = NODES[..2]
        .iter()
        .map(|n| Some(Bridge::start(BIN, &config(n, &murmur, &nats.url(), 1, ""))))
        .collect();
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));
    let owner = wait_single_owner(&bridges, &mut watcher, T);
    let other = 1 - owner;
    let browser = testkit::browser::Browser::launch(None);
    let page = browser.page();
    page.navigate(&format!(
        "http://{}/#token={}",
        bridges[owner].as_ref().unwrap().addr(),
        testkit::bridge::OPERATOR_TOKEN
    ));
    let row = "document.querySelector('#cluster-leases tr[data-key=\"ptt.local.bridge\"]')";
    let text = page.wait_for(
        &format!(
            "!document.querySelector('#cluster').hidden && {row} && {row}.dataset.state === 'held' \
             && document.querySelector('#cluster').innerText"
        ),
        T,
    );
    let text = text.as_str().unwrap().to_string();
    println!("cluster card: {text:?}");
    for want in [
        NODES[owner],
        "ready",
        "lease 3.0 s",
        "local / bridge",
        "(this node)",
        "expires in",
        "Drain this node",
    ] {
        assert!(text.contains(want), "{want:?} in {text:?}");
    }

    // Drain from the button: the account moves to the other node, the page says so.
    page.eval("document.querySelector('#cluster-drain').click()");
    let moved = format!(
        "document.querySelector('#cluster').dataset.state === 'draining' && {row} \
         && {row}.dataset.owner === '{}' && {row}.dataset.state === 'other' \
         && document.querySelector('#cluster').innerText",
        NODES[other]
    );
    let text = page.wait_for(&moved, T);
    let text = text.as_str().unwrap().to_string();
    println!("drained: {text:?}");
    for want in ["draining", "Undrain this node", "lapses in", NODES[other]] {
        assert!(text.contains(want), "{want:?} in {text:?}");
    }
    assert_eq!(wait_single_owner(&bridges, &mut watcher, T), other);
    // Undrain from the same button.
    page.eval("document.querySelector('#cluster-drain').click()");
    page.wait_for(
        "document.querySelector('#cluster').dataset.state === 'ready' \
         && document.querySelector('#cluster-drain').textContent === 'Drain this node'",
        T,
    );
    assert_eq!(
        bridges[owner].as_ref().unwrap().health()["cluster"]["state"],
        "ready"
    );
}

/// A drain waits for a burst the bridge itself sends into the channel too: a meeting
/// participant on the draining node speaks into North while the drain is asked for; bob
/// (pymumble) hears the utterance whole, as one burst; then the account moves and the
/// participant's link ends, so it would redial the new holder.
#[test]
fn a_drain_waits_for_a_meeting_speaker_then_ends_the_dial_in() {
    let nats = NatsServer::start();
    let murmur = Murmur::start(&["North"]);
    // Long enough for the whole utterance (3.8 s) whenever the drain comes.
    let cfg = |n: &str| config(n, &murmur, &nats.url(), 1, "drain_max_wait_ms = 10000");
    let bridges: Vec<Option<Bridge>> = NODES[..2]
        .iter()
        .map(|n| Some(Bridge::start(BIN, &cfg(n))))
        .collect();
    let mut watcher = Terminal::connect(murmur.port(), "watcher", Some("North"));
    let mut bob = Terminal::connect(murmur.port(), "bob", Some("North"));
    let owner = wait_single_owner(&bridges, &mut watcher, T);
    let b = bridges[owner].as_ref().unwrap();
    let mut carol = Participant::join(b.addr(), "carol");
    let (_, linked) = dial_north(&mut carol, T);
    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(|e| e["event"] == "published", T);
    println!("carol linked after {:.2} s", linked.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    let addr = b.addr();
    let asked = std::thread::scope(|s| {
        // The drain, asked for a second into the utterance.
        let drain = s.spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            let r = testkit::http::request_with(
                addr,
                "POST",
                "/v1/cluster/drain",
                None,
                &[testkit::bridge::OPERATOR],
            )
            .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            Instant::now()
        });
        testkit::meeting::speak_into_ptt(
            &mut carol,
            &mut bob,
            &fixture("audio/speech.wav"),
            &dir.path().join("bob.wav"),
            "meeting → PTT through a drain",
        )
        .assert_matches(0.85, 0.1);
        drain.join().unwrap()
    });
    assert_eq!(wait_single_owner(&bridges, &mut watcher, T), 1 - owner);
    let held = lease_holder(bridges[1 - owner].as_ref().unwrap())
        .1
        .expect("held");
    println!(
        "drain asked mid-utterance; the other node held the account {:.2} s later",
        (Instant::now() - held)
            .saturating_duration_since(asked)
            .as_secs_f64()
    );
    assert_eq!(
        b.metric("pttbridge_cluster_handovers_total", &[("floor", "idle")]),
        1.0,
        "handed over once the utterance had ended"
    );
    // The call ends with the account's move: the channel leaves carol's room.
    carol.push("ExitRoom", |m| m["client"]["id"] == NORTH, T);
}
