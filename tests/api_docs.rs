//! The checked-in API documents match what the bridge serves: `docs/openapi.json` has exactly
//! the REST routes the router answers, and its examples are accepted by the adapter's types;
//! every example message of `docs/asyncapi.json` parses (client frames) or round-trips (server
//! frames) through the EGW adapter.

use std::sync::Arc;

use pttbridge::events::Platform;
use pttbridge::http::{AppState, business};
use pttbridge::hub::EventBus;
use pttbridge::storage::Store;
use serde_json::Value;

fn doc(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

const METHODS: [&str; 5] = ["get", "post", "patch", "delete", "put"];

/// An in-process bridge router on a free port.
fn serve() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let store = Store::open(None).unwrap();
            let platform = Platform::new(Default::default(), Default::default(), store);
            let (_running, shutdown) = tokio::sync::watch::channel(false);
            let state = Arc::new(AppState::new(
                Vec::new(),
                Arc::new(EventBus::new()),
                platform,
                shutdown,
            ));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            pttbridge::http::serve(l, state).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

#[test]
fn openapi_paths_are_exactly_the_served_routes() {
    let openapi = doc("openapi.json");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in openapi["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            documented.push((m.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = business::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .chain(
            pttbridge::http::cluster::ROUTES
                .iter()
                .map(|(m, p)| (m.to_string(), p.to_string())),
        )
        .chain([("get".to_string(), "/server/address".to_string())])
        .collect();
    served.sort();
    assert_eq!(documented, served, "docs/openapi.json vs the router");

    // ROUTES is what the router answers: each listed method is routed (not 404/405), every
    // other method on the same path is 405.
    let addr = serve();
    let paths: std::collections::BTreeSet<&str> = served.iter().map(|(_, p)| p.as_str()).collect();
    for path in paths {
        for m in METHODS {
            let r = testkit::http::request(addr, &m.to_uppercase(), path, Some("{}")).unwrap();
            let listed = served.iter().any(|(sm, sp)| sm == m && sp == path);
            if listed {
                assert!(
                    r.status != 404 && r.status != 405,
                    "{m} {path} is documented but the router says {}",
                    r.status
                );
                let v = r.json();
                assert!(
                    v["code"].is_i64() && v["message"].is_string(),
                    "{m} {path}: envelope {v}"
                );
            } else {
                assert_eq!(r.status, 405, "{m} {path} answered but is not documented");
            }
        }
    }
}

#[test]
fn openapi_examples_fit_the_adapter_types() {
    use egw::rest::*;
    let openapi = doc("openapi.json");
    let paths = &openapi["paths"];
    let req = |path: &str, m: &str| {
        paths[path][m]["requestBody"]["content"]["application/json"]["example"].clone()
    };
    serde_json::from_value::<CreateApp>(req("/v1/app", "post")).unwrap();
    serde_json::from_value::<PatchApp>(req("/v1/app", "patch")).unwrap();
    serde_json::from_value::<Kickout>(req("/v1/kickout", "post")).unwrap();
    serde_json::from_value::<TransCmd>(req("/v1/online/trans-cmd", "post")).unwrap();
    serde_json::from_value::<Invite>(req("/v1/online/invite", "post")).unwrap();
    let ok = |path: &str, m: &str| {
        paths[path][m]["responses"]["200"]["content"]["application/json"]["example"].clone()
    };
    let app = ok("/v1/app", "post");
    serde_json::from_value::<AppInfo>(app).unwrap();
    let records = ok("/v1/consuming/records", "get");
    for r in records["record_list"].as_array().unwrap() {
        serde_json::from_value::<ConsumingRecord>(r.clone()).unwrap();
    }
    let states = ok("/v1/online/user/state", "get");
    for u in states["user_list"].as_array().unwrap() {
        serde_json::from_value::<UserState>(u.clone()).unwrap();
    }
    let trans = ok("/v1/online/trans-cmd", "post");
    for u in trans["user_list"].as_array().unwrap() {
        serde_json::from_value::<TransResult>(u.clone()).unwrap();
    }
    // Every documented response, success or error, is the envelope.
    for (path, ops) in paths.as_object().unwrap() {
        for (m, op) in ops.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().unwrap() {
                let ex = &resp["content"]["application/json"]["example"];
                assert!(ex["code"].is_i64(), "{m} {path} {status}");
                assert_eq!(
                    ex["code"] == 0,
                    status == "200",
                    "{m} {path} {status}: {ex}"
                );
            }
        }
    }
}

#[test]
fn asyncapi_examples_parse_and_round_trip() {
    let asyncapi = doc("asyncapi.json");
    let messages = asyncapi["components"]["messages"].as_object().unwrap();
    let examples = |name: &str| -> Vec<Value> {
        messages[name]["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"].clone())
            .collect()
    };
    for name in [
        "login",
        "logout",
        "subscribe",
        "unsubscribe",
        "fullSync",
        "heartbeat",
        "notice",
    ] {
        for ex in examples(name) {
            let r = egw::parse_request(&ex.to_string())
                .unwrap_or_else(|e| panic!("{name} example {ex}: {e}"));
            assert_eq!(r.reply_id(), ex["id"].as_i64().unwrap() + 1, "{name}");
        }
    }
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(ex: &Value) {
        let t: T = serde_json::from_value(ex.clone()).unwrap_or_else(|e| panic!("{ex}: {e}"));
        assert_eq!(&serde_json::to_value(&t).unwrap(), ex);
    }
    for ex in examples("reply") {
        round_trip::<egw::Reply>(&ex);
    }
    for ex in examples("fullSyncReply") {
        round_trip::<egw::SyncReply>(&ex);
    }
    for name in ["userJoined", "userLeft", "mediaStarted", "mediaStopped"] {
        for ex in examples(name) {
            round_trip::<egw::Push>(&ex);
        }
    }
    for ex in examples("bridgeEvent") {
        round_trip::<egw::BridgeEvent>(&ex);
    }
    // Every message the channel references is defined, and every defined one is referenced.
    let channel = &asyncapi["channels"]["/egw"];
    let mut refs: Vec<String> = ["publish", "subscribe"]
        .iter()
        .flat_map(|d| channel[d]["message"]["oneOf"].as_array().unwrap().clone())
        .map(|r| {
            r["$ref"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    refs.sort();
    let mut defined: Vec<String> = messages.keys().cloned().collect();
    defined.sort();
    assert_eq!(refs, defined);
}
