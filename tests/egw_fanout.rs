//! The EGW fan-out under load, in process: the bridge's real bus, router and WebSocket server on
//! loopback, with events published straight into the bus at a volume PTT terminals could not
//! produce. (The protocol against real PTT peers is in `tests/egw.rs`.)

#[path = "support/egw_client.rs"]
mod egw_client;

use std::sync::Arc;
use std::time::Duration;

use egw_client::{Client, Ended, Replica};
use pttbridge::events::Platform;
use pttbridge::events::config::{Developer, EgwConfig};
use pttbridge::http::AppState;
use pttbridge::hub::event::Draft;
use pttbridge::hub::{EventBus, EventKind, Party, Side};
use pttbridge::storage::Store;
use serde_json::json;
use testkit::bridge::{OPERATOR, OPERATOR_TOKEN};

/// The server's address, the bus, and the shutdown switch (keep it: dropping it stops streams).
async fn serve(
    egw: EgwConfig,
) -> (
    std::net::SocketAddr,
    Arc<EventBus>,
    tokio::sync::watch::Sender<bool>,
) {
    let bus = Arc::new(EventBus::new());
    let platform = Platform::new(egw, Default::default(), Store::open(None).unwrap());
    let (running, shutdown) = tokio::sync::watch::channel(false);
    let operators = pttbridge::auth::Operators::new(
        vec![pttbridge::auth::secret::digest(OPERATOR_TOKEN)],
        std::time::Duration::from_secs(3600),
        false,
    );
    let state = Arc::new(
        AppState::new(Vec::new(), bus.clone(), platform, shutdown)
            .with_operators(Arc::new(operators)),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(pttbridge::http::serve(l, state));
    (addr, bus, running)
}

fn config() -> EgwConfig {
    EgwConfig {
        send_timeout_ms: 500,
        developers: vec![Developer {
            dev_id: "dev".into(),
            token: "tok".into(),
            apps: vec![],
        }],
        ..Default::default()
    }
}

fn party(i: usize) -> Party {
    Party {
        side: Side::Ptt,
        id: i.to_string(),
        name: format!("user{i}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_while_the_others_get_everything() {
    let (addr, bus, _running) = serve(config()).await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(addr).await;
        c.login("dev", "tok").await;
        c.subscribe(Some(&["a"])).await;
        readers.push(c);
    }
    let mut stuck = Client::connect(addr).await;
    stuck.login("dev", "tok").await;
    stuck.subscribe(Some(&["a"])).await;
    let stuck_ws = stuck.into_inner(); // never read again

    // 24 MB for the stuck client: more than loopback socket buffers hold.
    const N: u64 = 12_000;
    let payload = "x".repeat(2000);
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in 0..N {
                bus.publish(
                    Draft::new("a", EventKind::MessageText, "g")
                        .party(party(1))
                        .detail(json!({ "text": payload, "i": i })),
                );
                if i % 100 == 99 {
                    // ~5,000 events/s: a pace the readers keep up with on a shared 2-core box
                    // even in a debug build.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for mut c in readers {
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            while last < N {
                let f = c
                    .next(Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|| panic!("reader stalled at {last}: {:?}", c.ended));
                let v = f["version"].as_u64().unwrap();
                assert_eq!(v, last + 1, "contiguous");
                last = v;
            }
            last
        }));
    }
    publisher.await.unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap(), N, "every reader got every event");
    }
    // The stuck client was dropped by the server: reading now ends before the last version.
    let mut c = stuck_ws;
    use futures_util::StreamExt;
    let mut got = 0u64;
    let mut last_version = 0;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), c.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                got += 1;
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                last_version = v["version"].as_u64().unwrap_or(last_version);
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                break format!("close {f:?}");
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => break format!("error {e}"),
            Ok(None) => break "end".to_string(),
            Err(_) => panic!("the stuck client was never cut off (got {got} frames)"),
        }
    };
    println!(
        "stuck client: {got} frames buffered before the cut, last version {last_version}, then {end}"
    );
    assert!(last_version < N, "cut off before the end");
    let metrics = testkit::http::request_with(addr, "GET", "/metrics", None, &[OPERATOR])
        .unwrap()
        .body;
    let cut: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("pttbridge_event_subscribers_cut_total") && l.contains("egw"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(cut >= 1.0, "counted: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_mid_stream_continues_without_gap_or_double_count() {
    let (addr, bus, _running) = serve(config()).await;
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for round in 0..400usize {
                for i in 0..8 {
                    let group = format!("g{}", (round / 4 + i) % 5);
                    let kind = match round % 4 {
                        0 => EventKind::PartyJoined,
                        1 => EventKind::TalkStarted,
                        2 => EventKind::TalkStopped,
                        _ => EventKind::PartyLeft,
                    };
                    bus.publish(
                        Draft::new("a", kind, group)
                            .party(party(i))
                            .detail(json!({"media_type": 2})),
                    );
                    // Noise in another app, interleaved.
                    bus.publish(Draft::new("b", EventKind::LinkUp, "x"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut c = Client::connect(addr).await;
    c.login("dev", "tok").await;
    c.subscribe(None).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Drop what came before the sync, as a client that just saw a gap would.
    let sync = c.full_sync(&["a"]).await.remove(0);
    let mut replica = Replica::from_sync(&sync);
    let base = replica.version;
    assert!(base > 0, "synced mid-stream");
    publisher.await.unwrap();
    let last = bus.version("a");
    let mut b_versions = Vec::new();
    while replica.version < last {
        let f = c
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("stalled at {}", replica.version));
        if f["app_id"] == "b" {
            b_versions.push(f["version"].as_u64().unwrap());
            continue;
        }
        if f["id"] == 20009 {
            continue;
        }
        replica.apply(&f).unwrap();
    }
    let fresh = Replica::from_sync(&c.full_sync(&["a"]).await.remove(0));
    assert_eq!(fresh.version, last);
    assert_eq!(
        replica.groups, fresh.groups,
        "sync + live events = the final state"
    );
    println!(
        "synced at {base}, applied {} live events up to {last}",
        replica.applied
    );
    assert!(
        b_versions.windows(2).all(|w| w[1] == w[0] + 1),
        "the other app's versions are contiguous too"
    );
    assert!(matches!(c.ended, None | Some(Ended::Closed { .. })));
}
