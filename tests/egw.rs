//! The EGW WebSocket of the bridge binary with real PTT peers (murmurd + pymumble terminals):
//! bad input, two subscribers seeing the same versions, a client that drops and reconnects
//! full-syncs and continues without gaps, and the heartbeat timeout.

#[path = "support/egw_client.rs"]
mod egw_client;

use std::time::{Duration, Instant};

use egw_client::{Client, Ended, Replica};
use serde_json::{Value, json};
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const HEARTBEAT_TIMEOUT_MS: u64 = 2000;

fn config(murmur: &Murmur) -> String {
    let a = ptt_server_toml("a", murmur, &[("bridge-a", "North")]).replacen(
        "[[ptt.servers]]\n",
        "[[ptt.servers]]\napp = \"default\"\n",
        1,
    );
    let b = ptt_server_toml("b", murmur, &[("bridge-b", "North")]).replacen(
        "[[ptt.servers]]\n",
        "[[ptt.servers]]\napp = \"other\"\n",
        1,
    );
    format!(
        r#"
[egw]
heartbeat_timeout_ms = {HEARTBEAT_TIMEOUT_MS}
[[egw.developers]]
dev_id = "dev"
token = "devtoken"
[[business.apps]]
app_id = "default"
app_secret = "default-secret"
[[business.apps]]
app_id = "other"
app_secret = "other-secret"

{a}
{b}
"#
    )
}

/// A client reading in its own task (sending heartbeats while idle), frames to a channel.
struct Collector {
    rx: mpsc::UnboundedReceiver<Result<Value, Option<Ended>>>,
    task: tokio::task::JoinHandle<()>,
    frames: Vec<Value>,
    ended: Option<Option<Ended>>,
}

impl Collector {
    fn spawn(mut c: Client) -> Collector {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match c.next(Duration::from_secs(3600)).await {
                    Some(f) => {
                        if tx.send(Ok(f)).is_err() {
                            return;
                        }
                    }
                    None => {
                        let _ = tx.send(Err(c.ended.clone()));
                        return;
                    }
                }
            }
        });
        Collector {
            rx,
            task,
            frames: Vec::new(),
            ended: None,
        }
    }

    /// Takes what has arrived.
    fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Ok(f) => self.frames.push(f),
                Err(e) => self.ended = Some(e),
            }
        }
    }

    /// Waits until a frame matches `pred`.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            self.drain();
            if let Some(f) = self.frames.iter().find(|f| pred(f)) {
                return f.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline && self.ended.is_none(),
                "never saw {what} (ended {:?}); frames: {:?}",
                self.ended,
                self.frames
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn of_app(&self, app: &str) -> Vec<Value> {
        self.frames
            .iter()
            .filter(|f| f["app_id"] == app && egw_client::is_push(f))
            .cloned()
            .collect()
    }
}

/// Runs a blocking peer action without stalling the clients' tasks.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn is_user(kind: i64, user: &'static str) -> impl Fn(&Value) -> bool {
    move |f: &Value| f["id"] == kind && f["user_id"] == user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egw_with_real_ptt_peers() {
    let murmur = blocking(|| Murmur::start(&["North", "South"])).await;
    let port = murmur.port();
    let cfg = config(&murmur);
    let bridge = blocking(move || Bridge::start(BIN, &cfg)).await;
    let addr = bridge.addr();
    let bridge = std::sync::Arc::new(bridge);
    {
        let b = bridge.clone();
        blocking(move || b.wait_health("both servers connected", |h| h["status"] == "ok", T)).await;
    }

    // /server/address points to us.
    let r = testkit::http::get(addr, "/server/address?appType=8").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"], format!("ws://{addr}/egw"));
    assert_eq!(r.json()["code"], 0);
    assert_eq!(
        testkit::http::get(addr, "/server/address?appType=3")
            .unwrap()
            .status,
        400
    );

    // ---- bad input: an error reply with result != 0, and the connection keeps working ----
    let mut bad = Client::connect(addr).await;
    bad.send_text("this is not JSON").await;
    let r = bad.reply(20099, T).await;
    assert_ne!(r["result"], 0, "{r}");
    bad.send(json!({"business": "EGW", "id": 12345})).await;
    let r = bad.reply(20099, T).await;
    assert_eq!(r["result"], 2, "unknown id: {r}");
    let r = bad.request(json!({"business": "EGW", "id": 20004})).await;
    assert_eq!(r["result"], 3, "subscribe before login: {r}");
    let r = bad.request(json!({"business": "EGW", "id": 20008})).await;
    assert_eq!(r["result"], 3, "full sync before login: {r}");
    let r = bad
        .request(json!({"business": "EGW", "id": 20000, "dev_id": "dev", "token": "wrong"}))
        .await;
    assert_eq!(r["result"], 4, "wrong token: {r}");
    let r = bad
        .request(json!({"business": "EGW", "id": 20000, "dev_id": 5}))
        .await;
    assert_eq!(r["result"], 1, "wrong type: {r}");
    let big = format!(
        r#"{{"business":"EGW","id":20011,"pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    bad.send_text(&big).await;
    let r = bad.reply(20099, T).await;
    assert_eq!(r["result"], 6, "oversized frame: {r}");
    bad.send_binary(vec![0xde, 0xad, 0xbe, 0xef]).await;
    let r = bad.reply(20099, T).await;
    assert_eq!(r["result"], 1, "binary frame: {r}");
    let r = bad
        .request(json!({"business": "EGW", "id": 20011, "seq": 1}))
        .await;
    assert_eq!(
        (r["result"].clone(), r["seq"].clone()),
        (json!(0), json!(1)),
        "still alive: {r}"
    );
    bad.close().await;
    let errors = {
        let b = bridge.clone();
        blocking(move || b.metric("pttbridge_errors_total", &[("side", "egw")])).await
    };
    assert!(errors >= 5.0, "EGW errors counted: {errors}");

    // ---- subscribers: A (app login, one app), B (developer, all apps), C (will drop) ----
    let mut a = Client::connect(addr).await;
    a.login("default", "default-secret").await;
    let r = a
        .request(json!({"business": "EGW", "id": 20004, "app_list": [{"app_id": "other"}]}))
        .await;
    assert_eq!(r["result"], 5, "an app login sees only its app: {r}");
    a.subscribe(Some(&["default"])).await;
    let base_a = Replica::from_sync(&a.full_sync(&["default"]).await[0]).version;
    let mut b = Client::connect(addr).await;
    b.login("dev", "devtoken").await;
    b.subscribe(None).await;
    let mut c = Client::connect(addr).await;
    c.login("dev", "devtoken").await;
    c.subscribe(Some(&["default"])).await;
    let mut a = Collector::spawn(a);
    let mut b = Collector::spawn(b);
    let mut c = Collector::spawn(c);

    // ---- heartbeat: a silent client is closed after the timeout ----
    let mut d = Client::connect(addr).await;
    d.login("dev", "devtoken").await;
    d.subscribe(None).await;
    d.silent();
    let silent_since = Instant::now();
    let d_task = tokio::spawn(async move {
        while d.next(Duration::from_secs(30)).await.is_some() {}
        (d.ended.clone(), silent_since.elapsed())
    });

    // ---- PTT activity ----
    let mut alice = blocking(move || Terminal::connect(port, "alice", Some("North"))).await;
    let alice_id = format!("ptt:s{}", alice.session());
    let alice_id: &'static str = Box::leak(alice_id.into_boxed_str());
    a.wait_for("alice joined", is_user(20100, alice_id)).await;
    let mut alice = blocking(move || {
        alice.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
        alice
    })
    .await;
    let started = a.wait_for("alice talks", is_user(20102, alice_id)).await;
    assert_eq!(
        (started["media_type"].clone(), started["group_id"].clone()),
        (json!(2), json!("ptt:a:North"))
    );
    a.wait_for("alice stops", is_user(20103, alice_id)).await;
    c.wait_for("C sees alice talk", is_user(20102, alice_id))
        .await;

    let (ended, silent_for) = d_task.await.unwrap();
    println!("silent client closed after {silent_for:?}: {ended:?}");
    assert_eq!(
        ended,
        Some(Ended::Closed {
            code: 4000,
            reason: format!("no heartbeat for {HEARTBEAT_TIMEOUT_MS} ms")
        })
    );
    assert!(
        silent_for >= Duration::from_millis(HEARTBEAT_TIMEOUT_MS - 100)
            && silent_for < Duration::from_millis(HEARTBEAT_TIMEOUT_MS + 2000),
        "closed after {silent_for:?}"
    );

    // C drops; things happen while it is away.
    c.task.abort();
    c.drain();
    let c_seen_before = c.of_app("default").len();
    let mut bob = blocking(move || Terminal::connect(port, "bob", Some("North"))).await;
    let bob_id: &'static str = Box::leak(format!("ptt:s{}", bob.session()).into_boxed_str());
    a.wait_for("bob joined", is_user(20100, bob_id)).await;
    let (mut alice, bob) = blocking(move || {
        alice.move_to("South");
        bob.play(&fixture("audio/speech2.wav"));
        (alice, bob)
    })
    .await;
    a.wait_for("bob talks", is_user(20102, bob_id)).await;

    // C reconnects while bob talks, full-syncs and continues.
    let mut c2 = Client::connect(addr).await;
    c2.login("dev", "devtoken").await;
    c2.subscribe(Some(&["default"])).await;
    let sync = c2.full_sync(&["default"]).await.remove(0);
    let mut c2_replica = Replica::from_sync(&sync);
    println!(
        "C reconnected at version {} (had seen {c_seen_before} events)",
        c2_replica.version
    );
    assert!(
        sync["group_list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group_id"] == "ptt:a:South"),
        "the sync shows alice's move: {sync}"
    );
    let mut c2 = Collector::spawn(c2);

    let (alice, bob) = blocking(move || {
        std::thread::sleep(Duration::from_secs(5)); // bob's 5 s WAV ends
        alice.text("done");
        (alice, bob)
    })
    .await;
    blocking(move || {
        alice.quit();
        bob.quit();
    })
    .await;
    a.wait_for("alice left", |f| {
        f["id"] == 20101 && f["user_id"] == alice_id && f["group_id"] == "ptt:a:South"
    })
    .await;
    a.wait_for("bob left", is_user(20101, bob_id)).await;
    b.wait_for("B: bob left other", |f| {
        f["app_id"] == "other" && f["id"] == 20101 && f["user_id"] == bob_id
    })
    .await;

    // The final state, from a fresh sync.
    let mut e = Client::connect(addr).await;
    e.login("dev", "devtoken").await;
    let last = Replica::from_sync(&e.full_sync(&["default"]).await[0]);
    c2.wait_for("C2 up to the last version", |f| {
        f["version"].as_u64() == Some(last.version) && f["app_id"] == "default"
    })
    .await;
    a.wait_for("A up to the last version", |f| {
        f["version"].as_u64() == Some(last.version) && f["app_id"] == "default"
    })
    .await;
    b.wait_for("B up to the last version", |f| {
        f["version"].as_u64() == Some(last.version) && f["app_id"] == "default"
    })
    .await;

    // A (one app) and B (all apps) saw exactly the same versions of app default, contiguous.
    let versions = |frames: &[Value]| -> Vec<u64> {
        frames
            .iter()
            .map(|f| f["version"].as_u64().unwrap())
            .collect()
    };
    let va = versions(&a.of_app("default"));
    let vb = versions(&b.of_app("default"));
    assert_eq!(va, vb, "same versions for both subscribers");
    assert_eq!(
        va,
        ((base_a + 1)..=last.version).collect::<Vec<_>>(),
        "contiguous after A's sync"
    );
    let other = versions(&b.of_app("other"));
    assert!(
        !other.is_empty() && other.windows(2).all(|w| w[1] == w[0] + 1),
        "app other too: {other:?}"
    );
    assert!(
        a.frames.iter().all(|f| f["app_id"] != "other"),
        "A sees only its app"
    );
    // Both saw the same frames, not just the same numbers.
    assert_eq!(a.of_app("default"), b.of_app("default"));

    // C: sync + what followed = the final state, no gap, nothing twice.
    for f in c2.of_app("default") {
        c2_replica.apply(&f).unwrap();
    }
    assert_eq!(c2_replica.version, last.version);
    assert_eq!(
        c2_replica.groups, last.groups,
        "replica after reconnect = fresh sync"
    );
    println!(
        "A saw versions {}..={}, C2 applied {} after its sync",
        base_a + 1,
        last.version,
        c2_replica.applied
    );
}

/// A PTT user talking when the bridge loses the PTT server is reported stopped, so a full sync
/// does not show them broadcasting while nobody can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_in_progress_ends_when_the_ptt_server_goes_away() {
    let mut murmur = blocking(|| Murmur::start(&["North"])).await;
    let port = murmur.port();
    let cfg = format!(
        "[[egw.developers]]\ndev_id = \"dev\"\ntoken = \"devtoken\"\n\n{}",
        ptt_server_toml("a", &murmur, &[("bridge-a", "North")])
    );
    let bridge = std::sync::Arc::new(blocking(move || Bridge::start(BIN, &cfg)).await);
    {
        let b = bridge.clone();
        blocking(move || b.wait_health("connected", |h| h["status"] == "ok", T)).await;
    }
    let mut c = Client::connect(bridge.addr()).await;
    c.login("dev", "devtoken").await;
    c.subscribe(None).await;
    let mut c = Collector::spawn(c);
    let alice = blocking(move || {
        let mut alice = Terminal::connect(port, "alice", Some("North"));
        alice.play(&fixture("audio/speech.wav"));
        alice
    })
    .await;
    let alice_id: &'static str = Box::leak(format!("ptt:s{}", alice.session()).into_boxed_str());
    c.wait_for("alice talks", is_user(20102, alice_id)).await;
    let mut e = Client::connect(bridge.addr()).await;
    e.login("dev", "devtoken").await;
    let talking = e.full_sync(&["default"]).await.remove(0);
    assert!(
        Replica::from_sync(&talking).groups["ptt:a:North"][alice_id].contains("audio"),
        "talking: {talking}"
    );
    murmur = blocking(move || {
        murmur.kill();
        murmur
    })
    .await;
    c.wait_for("alice stopped", is_user(20103, alice_id)).await;
    let after = Replica::from_sync(&e.full_sync(&["default"]).await.remove(0));
    assert!(
        after
            .groups
            .values()
            .flatten()
            .all(|(_, media)| media.is_empty()),
        "nobody broadcasts once the server is gone: {after:?}"
    );
    // alice's terminal has exited with the server; dropping them cleans up.
    blocking(move || drop((alice, murmur))).await;
}
