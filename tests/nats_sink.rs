//! The NATS JetStream sink against a real `nats-server -js` (Debian) with the bridge binary
//! connected to murmurd and pymumble terminals: CloudEvents in order with contiguous versions,
//! and a nats-server killed mid-stream loses and duplicates nothing.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::murmur::Murmur;
use testkit::nats::NatsServer;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);

/// One stored message.
#[derive(Debug)]
struct Stored {
    subject: String,
    msg_id: String,
    event: Value,
}

/// Every message of the stream, in stream order (read with direct gets by sequence).
fn read_stream(url: &str) -> Vec<Stored> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url)
            .await
            .expect("test consumer connects");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("PTTBRIDGE").await.expect("stream exists");
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = stream
                .get_raw_message(seq)
                .await
                .expect("message by sequence");
            out.push(Stored {
                subject: m.subject.to_string(),
                msg_id: m
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default(),
                event: serde_json::from_slice(&m.payload).expect("JSON payload"),
            });
        }
        out
    })
}

/// Reads the stream until `done` holds for what was read.
fn read_until(url: &str, what: &str, done: impl Fn(&[Stored]) -> bool) -> Vec<Stored> {
    let deadline = Instant::now() + T;
    loop {
        let all = read_stream(url);
        if done(&all) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "NATS never had {what}; stream: {:#?}",
            all.iter()
                .map(|s| (&s.subject, &s.event["version"]))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn config(nats: &NatsServer, murmur: &Murmur) -> String {
    format!(
        "[nats]\nurl = \"{}\"\nack_timeout_ms = 1000\n\n{}",
        nats.url(),
        ptt_server_toml("local", murmur, &[("bridge", "North")])
    )
}

fn kinds(all: &[Stored]) -> Vec<String> {
    all.iter()
        .map(|s| s.event["data"]["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn ptt_events_reach_jetstream_as_cloudevents_in_order() {
    let nats = NatsServer::start();
    let murmur = Murmur::start(&["North"]);
    let bridge = Bridge::start(BIN, &config(&nats, &murmur));
    bridge.wait_health(
        "connected with NATS ready",
        |h| {
            h["sides"]["ptt"]["state"] == "connected" && h["events"]["nats"]["stream_ready"] == true
        },
        T,
    );

    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    alice.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
    // Let the burst end (300 ms of silence) before the next step.
    std::thread::sleep(Duration::from_millis(800));
    alice.text("over and out");
    alice.quit();

    // Her last event: leaving North (an earlier party.left is the move out of the root).
    let is_left = |s: &Stored| {
        s.event["data"]["type"] == "party.left"
            && s.event["data"]["party"]["name"] == "alice"
            && s.event["data"]["group_id"] == "ptt:local:North"
    };
    let all = read_until(&nats.url(), "alice's party.left", |all| {
        all.iter().any(is_left)
    });
    println!("stream: {:?}", kinds(&all));

    // Contiguous versions from 1, in stream order, one message per version.
    let versions: Vec<u64> = all
        .iter()
        .map(|s| s.event["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=all.len() as u64).collect::<Vec<_>>());

    for s in &all {
        let ce = &s.event;
        let data = &ce["data"];
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["source"], "pttbridge");
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(
            ce["type"],
            format!("pttbridge.{}", data["type"].as_str().unwrap())
        );
        assert_eq!(ce["id"], format!("default:{}", data["version"]));
        assert_eq!(
            s.msg_id,
            ce["id"].as_str().unwrap(),
            "Nats-Msg-Id = app:version"
        );
        assert_eq!(ce["appid"], "default");
        assert!(ce["time"].as_str().unwrap().ends_with('Z'));
        let group = data["group_id"].as_str().unwrap();
        let token = if group.is_empty() { "_" } else { group };
        assert_eq!(
            s.subject,
            format!(
                "pttbridge.default.{token}.{}",
                data["type"].as_str().unwrap()
            )
        );
    }
    // What alice did, in order (by party id: a burst that ends as she quits has no name).
    let alice_id = all
        .iter()
        .find(|s| s.event["data"]["party"]["name"] == "alice")
        .map(|s| s.event["data"]["party"]["id"].clone())
        .unwrap();
    let alice: Vec<String> = all
        .iter()
        .filter(|s| s.event["data"]["party"]["id"] == alice_id)
        .map(|s| s.event["data"]["type"].as_str().unwrap().to_string())
        .collect();
    let pos = |k: &str| {
        alice
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("{k} in {alice:?}"))
    };
    assert!(pos("party.joined") < pos("talk.started"));
    assert!(pos("talk.started") < pos("talk.stopped"));
    assert!(pos("talk.stopped") < pos("message.text"));
    let left = alice.iter().rposition(|x| x == "party.left").unwrap();
    assert!(pos("message.text") < left && left == alice.len() - 1);
    let talk = all
        .iter()
        .find(|s| s.event["data"]["type"] == "talk.started")
        .unwrap();
    assert_eq!(talk.event["subject"], "ptt:local:North");
    assert_eq!(talk.event["data"]["detail"]["media_type"], 2);
}

#[test]
fn nats_killed_mid_stream_then_every_event_exactly_once() {
    let mut nats = NatsServer::start();
    let murmur = Murmur::start(&["North"]);
    let bridge = Bridge::start(BIN, &config(&nats, &murmur));
    let ready = |h: &Value| h["events"]["nats"]["stream_ready"] == true;
    bridge.wait_health("NATS ready", ready, T);
    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    let mut events = bridge.events();

    // A steady stream of events: one text message (one event) every 50 ms.
    let mut sent = 0;
    let mut say = |alice: &mut Terminal, n: usize| {
        for _ in 0..n {
            sent += 1;
            alice.text(&format!("m{sent}"));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    say(&mut alice, 20);
    nats.kill();
    say(&mut alice, 20);
    bridge.wait_health(
        "NATS seen down",
        |h| h["events"]["nats"]["connected"] == false,
        T,
    );
    say(&mut alice, 10);
    let down = bridge.health();
    println!("while NATS is down: {}", down["events"]["nats"]);
    assert!(
        down["events"]["nats"]["queued"].as_u64().unwrap()
            + down["events"]["nats"]["retried"].as_u64().unwrap()
            > 0,
        "events wait in the outbox: {down}"
    );
    nats.restart();
    say(&mut alice, 20);
    let last_text = format!("m{sent}");
    events
        .try_expect(
            |e| e["type"] == "message.text" && e["detail"]["text"] == last_text.as_str(),
            T,
        )
        .expect("the last text reached the bus");
    let bus_version = events
        .history()
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .max()
        .unwrap();

    let all = read_until(&nats.url(), "every version up to the bus's", |all| {
        all.iter()
            .filter_map(|s| s.event["version"].as_u64())
            .max()
            .is_some_and(|v| v >= bus_version)
            && all.len() as u64 >= bus_version
    });
    let mut versions: Vec<u64> = all
        .iter()
        .map(|s| s.event["version"].as_u64().unwrap())
        .collect();
    let in_order = versions.windows(2).filter(|w| w[1] < w[0]).count();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=bus_version).collect::<Vec<_>>(),
        "every event exactly once after the restart"
    );
    let texts: Vec<&str> = all
        .iter()
        .filter_map(|s| s.event["data"]["detail"]["text"].as_str())
        .collect();
    for i in 1..=sent {
        assert_eq!(
            texts.iter().filter(|t| **t == format!("m{i}")).count(),
            1,
            "m{i} stored once"
        );
    }
    let health = bridge.health();
    let n = &health["events"]["nats"];
    println!(
        "after restart: {n}; out-of-order stored pairs: {in_order}; reconnects metric {}",
        bridge.metric("pttbridge_nats_reconnects_total", &[])
    );
    assert_eq!(n["dropped"], 0, "nothing dropped: {n}");
    assert_eq!(n["queued"], 0, "outbox empty again: {n}");
    assert_eq!(n["connected"], true);
}

/// A crash while events come fast: publishes in flight at that moment (if any: it depends on
/// timing, the counts are printed) are re-sent and JetStream drops what it had stored already;
/// the rest wait in the outbox. The bus and the sink run in process here so the
/// events can come faster than PTT terminals make them.
#[test]
fn a_crash_while_publishing_fast_loses_and_duplicates_nothing() {
    use pttbridge::hub::event::Draft;
    use pttbridge::hub::{EventBus, EventKind};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    let mut nats = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bus = Arc::new(EventBus::new());
    let config = pttbridge::events::config::NatsConfig {
        url: Some(nats.url()),
        ack_timeout_ms: 500,
        ..Default::default()
    };
    let stats = rt.block_on(async {
        let stats = pttbridge::events::nats::start(&config, &bus).unwrap();
        let deadline = Instant::now() + T;
        while !stats.stream_ready.load(Relaxed) {
            assert!(Instant::now() < deadline, "stream not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stats
    });
    const N: u64 = 6_000;
    let publisher = {
        let bus = bus.clone();
        rt.spawn(async move {
            for i in 0..N {
                bus.publish(Draft::new(
                    "default",
                    EventKind::LinkUp,
                    format!("g{}", i % 3),
                ));
                if i % 20 == 19 {
                    tokio::time::sleep(Duration::from_millis(5)).await; // ~4,000 events/s
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(600));
    nats.kill();
    std::thread::sleep(Duration::from_millis(1000));
    nats.restart();
    rt.block_on(publisher).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.acked.load(Relaxed) + stats.duplicates.load(Relaxed) < N {
        assert!(Instant::now() < deadline, "not all acked: {stats:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("crash while publishing: {stats:?}");
    let all = read_stream(&nats.url());
    let mut versions: Vec<u64> = all
        .iter()
        .map(|s| s.event["version"].as_u64().unwrap())
        .collect();
    let out_of_order = versions.windows(2).filter(|w| w[1] < w[0]).count();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=N).collect::<Vec<_>>(),
        "each event stored exactly once"
    );
    assert_eq!(stats.dropped.load(Relaxed), 0);
    println!(
        "stored {} messages, {out_of_order} stored out of order",
        all.len()
    );
    // Only publishes in flight at the crash can be stored late (see events::nats).
    assert!(
        out_of_order as u64 <= config.max_in_flight as u64,
        "{out_of_order} out of order"
    );
}

/// While NATS is away the outbox holds at most `nats.outbox` events: the oldest go first and
/// are counted; the rest are published, in order, once NATS is back.
#[test]
fn a_full_outbox_drops_the_oldest_and_counts_them() {
    use pttbridge::hub::event::Draft;
    use pttbridge::hub::{EventBus, EventKind};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    let mut nats = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bus = Arc::new(EventBus::new());
    let config = pttbridge::events::config::NatsConfig {
        url: Some(nats.url()),
        outbox: 50,
        ack_timeout_ms: 500,
        ..Default::default()
    };
    let stats = rt.block_on(async { pttbridge::events::nats::start(&config, &bus).unwrap() });
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + T;
        while !cond() {
            assert!(Instant::now() < deadline, "never {what}: {stats:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("ready", &|| stats.stream_ready.load(Relaxed));
    for _ in 0..10 {
        bus.publish(Draft::new("default", EventKind::LinkUp, "g"));
    }
    wait("10 acked", &|| stats.acked.load(Relaxed) == 10);
    nats.kill();
    wait("disconnected", &|| !stats.connected.load(Relaxed));
    for _ in 0..200 {
        bus.publish(Draft::new("default", EventKind::LinkUp, "g"));
    }
    wait("all 210 received", &|| stats.received.load(Relaxed) == 210);
    nats.restart();
    wait("the outbox flushed", &|| {
        stats.acked.load(Relaxed) + stats.duplicates.load(Relaxed) >= 60
            && stats.queued.load(Relaxed) == 0
    });
    println!("outbox overflow: {stats:?}");
    assert_eq!(
        stats.dropped.load(Relaxed),
        150,
        "200 events for a 50-event outbox"
    );
    let versions: Vec<u64> = read_stream(&nats.url())
        .iter()
        .map(|s| s.event["version"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=10).chain(161..=210).collect();
    assert_eq!(
        versions, expected,
        "the first 10, then the newest 50 in order"
    );
}
