//! The business-gateway REST (`/v1/...`) of the bridge binary with real PTT peers: every endpoint
//! with good and bad input, commands carried out on murmurd (text, move, kick) as pymumble
//! terminals see them, and the call record of a real PTT conversation.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::bridge::{Bridge, OPERATOR, ptt_server_toml};
use testkit::http::Response;
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const SECRET: &str = "default-secret";

fn config(murmur: &Murmur) -> String {
    // The bridge account is SuperUser: kick and move need the server's permission.
    let server = ptt_server_toml("local", murmur, &[("SuperUser", "North")]).replace(
        "username = \"SuperUser\"\n",
        &format!(
            "username = \"SuperUser\"\npassword = \"{}\"\n",
            murmur.superuser_password()
        ),
    );
    format!(
        r#"
[business]
ptt_call_idle_ms = 1500
[[business.apps]]
app_id = "default"
app_secret = "{SECRET}"

{server}
"#
    )
}

struct Api<'a> {
    bridge: &'a Bridge,
}

impl Api<'_> {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let r: Response = self
            .bridge
            .request_with(method, path, body.as_deref(), headers);
        let v = r.json();
        assert!(
            v["code"].is_i64() && v["message"].is_string(),
            "{method} {path}: not the envelope: {v}"
        );
        assert_eq!(
            v["code"] == 0,
            r.status == 200,
            "{method} {path}: code vs status: {} {v}",
            r.status
        );
        (r.status, v)
    }
    fn app(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, body, &[("X-App-Secret", SECRET)])
    }
    /// As an operator (app management is theirs).
    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, body, &[OPERATOR])
    }
}

fn ok(r: (u16, Value)) -> Value {
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["code"], 0);
    r.1
}

fn fails(r: (u16, Value), status: u16, needle: &str) {
    assert_eq!(r.0, status, "{}", r.1);
    assert_ne!(r.1["code"], 0);
    let msg = r.1["message"].as_str().unwrap();
    assert!(
        msg.contains(needle),
        "message {msg:?} should mention {needle:?}"
    );
}

#[test]
fn business_rest_with_real_ptt_peers() {
    let murmur = Murmur::start(&["North", "South"]);
    let bridge = Bridge::start(BIN, &config(&murmur));
    bridge.wait_health("connected", |h| h["status"] == "ok", T);
    let api = Api { bridge: &bridge };
    let mut events = bridge.events();

    // ---- apps ----
    let create = json!({"app_name": "dispatch_1", "status": "online", "consumption_limit": 100,
                        "service": [{"service_id": 4, "use_limit": 1000}, {"service_id": 7}]});
    fails(
        api.call("POST", "/v1/app", Some(create.clone()), &[]),
        401,
        "operator",
    );
    let created = ok(api.admin("POST", "/v1/app", Some(create.clone())));
    let app_id = created["app_id"].as_str().unwrap().to_string();
    let app_secret = created["app_secret"].as_str().unwrap().to_string();
    assert_eq!((app_id.len(), app_secret.len()), (32, 32));
    assert_eq!(created["service"][0]["service_name"], "audio");
    fails(
        api.admin("POST", "/v1/app", Some(create.clone())),
        409,
        "exists",
    );
    fails(
        api.admin(
            "POST",
            "/v1/app",
            Some(json!({"app_name": "x y", "service": [{"service_id": 4}]})),
        ),
        400,
        "app_name",
    );
    fails(
        api.admin("POST", "/v1/app", Some(json!({"app_name": "nosvc"}))),
        400,
        "service",
    );
    fails(
        api.admin(
            "POST",
            "/v1/app",
            Some(json!({"app_name": "bad", "service": [{"service_id": 99}]})),
        ),
        400,
        "service_id",
    );
    fails(
        api.admin(
            "POST",
            "/v1/app",
            Some(json!({"app_name": "typo", "service": [], "colour": 1})),
        ),
        400,
        "colour",
    );
    let r = bridge.request_with("POST", "/v1/app", Some("{not json"), &[OPERATOR]);
    assert_eq!(r.status, 400, "{}", r.body);

    let mine = [("X-App-Secret", app_secret.as_str())];
    let got = ok(api.call("GET", &format!("/v1/app?app_id={app_id}"), None, &mine));
    assert_eq!(got["app_name"], "dispatch_1");
    fails(
        api.call(
            "GET",
            &format!("/v1/app?app_id={app_id}"),
            None,
            &[("X-App-Secret", "wrong")],
        ),
        401,
        "wrong app secret",
    );
    fails(
        api.call("GET", &format!("/v1/app?app_id={app_id}"), None, &[]),
        401,
        "X-App-Secret",
    );
    fails(
        api.call(
            "GET",
            &format!("/v1/app?app_id={app_id}"),
            None,
            &[("X-App-Secret", SECRET)],
        ),
        401,
        "wrong",
    );
    // An unknown app answers like a wrong secret: app ids cannot be probed.
    fails(
        api.app("GET", "/v1/app?app_id=nope", None),
        401,
        "unknown app or wrong app secret",
    );
    fails(
        api.admin("GET", "/v1/app?app_id=nope", None),
        404,
        "unknown app_id",
    );
    fails(api.app("GET", "/v1/app", None), 401, "operator");
    let all = ok(api.admin("GET", "/v1/app", None));
    assert_eq!(all["app_list"].as_array().unwrap().len(), 2, "{all}");
    assert!(
        all["app_list"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.get("app_secret").is_none()),
        "secrets are never listed: {all}"
    );
    assert!(got.get("app_secret").is_none(), "nor shown again: {got}");
    // Rotation: a new secret, shown once; the old one stops working.
    fails(
        api.call(
            "POST",
            &format!("/v1/app/secret?app_id={app_id}"),
            None,
            &mine,
        ),
        401,
        "operator",
    );
    let rotated = ok(api.admin("POST", &format!("/v1/app/secret?app_id={app_id}"), None));
    let app_secret = rotated["app_secret"].as_str().unwrap().to_string();
    fails(
        api.call("GET", &format!("/v1/app?app_id={app_id}"), None, &mine),
        401,
        "wrong app secret",
    );
    let mine = [("X-App-Secret", app_secret.as_str())];
    ok(api.call("GET", &format!("/v1/app?app_id={app_id}"), None, &mine));
    // An app cannot lift its own quotas.
    fails(
        api.call(
            "PATCH",
            "/v1/app",
            Some(json!({"app_id": app_id, "consumption_limit": 1_000_000})),
            &mine,
        ),
        403,
        "operator",
    );
    let patched = ok(api.call(
        "PATCH",
        "/v1/app",
        Some(json!({"app_id": app_id, "status": "offline"})),
        &mine,
    ));
    assert_eq!(patched["status"], "offline");
    // An offline app cannot act; an operator brings it back.
    fails(
        api.call("GET", &format!("/v1/app?app_id={app_id}"), None, &mine),
        403,
        "offline",
    );
    ok(api.admin(
        "PATCH",
        "/v1/app",
        Some(json!({"app_id": app_id, "status": "online"})),
    ));
    fails(
        api.call(
            "PATCH",
            "/v1/app",
            Some(json!({"app_id": app_id, "status": "sideways"})),
            &mine,
        ),
        400,
        "status",
    );
    fails(
        api.call("PATCH", "/v1/app", Some(json!({"status": "online"})), &mine),
        400,
        "app_id",
    );
    fails(api.call("DELETE", "/v1/app", None, &mine), 400, "app_id");
    ok(api.call("DELETE", &format!("/v1/app?app_id={app_id}"), None, &mine));
    fails(
        api.call("GET", &format!("/v1/app?app_id={app_id}"), None, &mine),
        401,
        "unknown app",
    );

    // ---- presence ----
    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(murmur.port(), "bob", Some("North"));
    let alice_id = format!("ptt:s{}", alice.session());
    let bob_id = format!("ptt:s{}", bob.session());
    events
        .try_expect(
            |e| {
                e["type"] == "party.joined"
                    && e["party"]["name"] == "bob"
                    && e["group_id"] == "ptt:local:North"
            },
            T,
        )
        .expect("bob joined North");
    let state = ok(api.app("GET", "/v1/online/user/state?app_id=default&msg_id=7", None));
    assert_eq!(state["msg_id"], 7);
    let online: Vec<&str> = state["user_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert!(
        online.contains(&alice_id.as_str()) && online.contains(&bob_id.as_str()),
        "{state}"
    );
    assert!(
        state["user_list"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["state"] == 1 && u["mutex_type"] == "ptt")
    );
    let asked = ok(api.app(
        "GET",
        &format!("/v1/online/user/state?app_id=default&msg_id=8&user_id={alice_id},ptt:s9999"),
        None,
    ));
    assert_eq!(asked["user_list"][0]["state"], 1);
    assert_eq!(
        asked["user_list"][1]["state"], 0,
        "unknown user is offline: {asked}"
    );
    fails(
        api.app("GET", "/v1/online/user/state?msg_id=1", None),
        400,
        "app_id",
    );
    fails(
        api.app("GET", "/v1/online/user/state?app_id=default", None),
        400,
        "msg_id",
    );
    fails(
        api.app("GET", "/v1/online/user/state?app_id=default&msg_id=x", None),
        400,
        "msg_id",
    );
    fails(
        api.app(
            "GET",
            "/v1/online/user/state?app_id=default&msg_id=1&page_size=1000",
            None,
        ),
        400,
        "page_size",
    );
    fails(
        api.app(
            "GET",
            "/v1/online/user/state?app_id=default&msg_id=1&user_id=alice",
            None,
        ),
        400,
        "<side>:<id>",
    );
    fails(
        api.call(
            "GET",
            "/v1/online/user/state?app_id=default&msg_id=1",
            None,
            &[("X-App-Secret", "nope")],
        ),
        401,
        "secret",
    );

    // ---- trans-cmd: a private text to alice; an unknown user is "not online" ----
    let cmd = json!({"app_id": "default", "msg_id": 5, "trans_mess": {"text": "assemble at gate 3"},
                     "user_list": [{"user_id": alice_id, "mutex_type": "m", "client_guid": "g"},
                                   {"user_id": "ptt:s9999", "mutex_type": "", "client_guid": ""},
                                   {"user_id": "console:1", "mutex_type": "", "client_guid": ""}]});
    let r = ok(api.app("POST", "/v1/online/trans-cmd", Some(cmd)));
    assert_eq!(r["msg_id"], 5);
    let results: Vec<i64> = r["user_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["result"].as_i64().unwrap())
        .collect();
    assert_eq!(
        results,
        vec![0, 2, 2],
        "delivered, not online, no such console logged in: {r}"
    );
    assert_eq!(r["user_list"][0]["mutex_type"], "m");
    alice.expect(
        |e| e["event"] == "text" && e["message"] == "assemble at gate 3" && e["private"] == true,
        T,
    );
    fails(
        api.app(
            "POST",
            "/v1/online/trans-cmd",
            Some(json!({"app_id": "default", "msg_id": 1, "trans_mess": {}, "user_list": []})),
        ),
        400,
        "user_list",
    );
    fails(
        api.app(
            "POST",
            "/v1/online/trans-cmd",
            Some(json!({"app_id": "default", "trans_mess": {}, "user_list": []})),
        ),
        400,
        "msg_id",
    );
    fails(api.app("POST", "/v1/online/trans-cmd", Some(json!({"app_id": "default", "msg_id": 1, "trans_mess": {}, "user_list": [{"user_id": "alice"}]}))), 400, "<side>:<id>");

    // ---- invite: alice into South (a move on the PTT server) ----
    let r = ok(api.app("POST", "/v1/online/invite", Some(json!({"app_id": "default", "group_id": "ptt:local:South", "user_id_list": [alice_id], "seq_id": 42}))));
    assert_eq!(
        (r["seq_id"].clone(), r["user_id_list"].clone()),
        (json!(42), json!([]))
    );
    events
        .try_expect(
            |e| {
                e["type"] == "party.joined"
                    && e["party"]["name"] == "alice"
                    && e["group_id"] == "ptt:local:South"
            },
            T,
        )
        .expect("alice was moved to South");
    let r = ok(api.app("POST", "/v1/online/invite", Some(json!({"app_id": "default", "group_id": "ptt:local:South", "user_id_list": ["ptt:s9999"], "seq_id": 43}))));
    assert_eq!(
        r["user_id_list"],
        json!(["ptt:s9999"]),
        "failed users are listed"
    );
    fails(api.app("POST", "/v1/online/invite", Some(json!({"app_id": "default", "group_id": "ptt:local:Nowhere", "user_id_list": [bob_id], "seq_id": 1}))), 400, "group");
    fails(
        api.app(
            "POST",
            "/v1/online/invite",
            Some(
                json!({"app_id": "default", "group_id": "", "user_id_list": [bob_id], "seq_id": 1}),
            ),
        ),
        400,
        "group_id",
    );

    // ---- a real PTT conversation in North becomes a call record ----
    let t0 = Instant::now();
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    bob.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
    let records_path = format!(
        "/v1/consuming/records?app_id=default&start_time={}&end_time={}&page=1&page_size=10",
        before_ms - 1000,
        before_ms + 600_000
    );
    let record = loop {
        let r = ok(api.app("GET", &records_path, None));
        if let Some(rec) = r["record_list"].as_array().unwrap().first() {
            assert_eq!(r["total"], 1, "{r}");
            break rec.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no call record: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("call record of bob's conversation: {record}");
    assert_eq!(record["group_id"], "ptt:local:North");
    assert_eq!(record["sides"], json!(["ptt"]));
    assert_eq!(record["client_id"], bob_id.as_str());
    assert_eq!(record["end_reason"], "idle");
    assert_eq!(record["app_name"], "default");
    let ms = record["duration_ms"].as_i64().unwrap();
    // The WAV is 3.85 s; the burst ends 300 ms after the last packet.
    assert!((3_500..=5_000).contains(&ms), "duration {ms} ms");
    assert_eq!(record["total_time"], (ms + 999) / 1000);
    let packets = record["audio_packets"].as_i64().unwrap();
    let bytes = record["audio_bytes"].as_i64().unwrap();
    assert!(
        (160..=260).contains(&packets),
        "3.85 s of 20 ms packets: {packets}"
    );
    assert!(
        bytes > packets * 40 && bytes < packets * 400,
        "Opus bytes {bytes} for {packets} packets"
    );
    assert_eq!(record["total_sig_num"], 2, "one talk start and stop");
    assert!(record["start_time"].as_str().unwrap().ends_with('Z'));
    let all = ok(api.admin("GET", &records_path.replace("app_id=default&", ""), None));
    assert_eq!(all["total"], 1);
    fails(
        api.app(
            "GET",
            &records_path.replace("page_size=10", "page_size=1000"),
            None,
        ),
        400,
        "page_size",
    );
    fails(
        api.app("GET", &records_path.replace("page=1", "page=0"), None),
        400,
        "page",
    );
    fails(
        api.app(
            "GET",
            "/v1/consuming/records?app_id=default&end_time=1&page=1&page_size=10",
            None,
        ),
        400,
        "start_time",
    );
    fails(
        api.app(
            "GET",
            "/v1/consuming/records?app_id=default&start_time=5&end_time=1&page=1&page_size=10",
            None,
        ),
        400,
        "end_time",
    );
    fails(
        api.app("GET", &records_path.replace("app_id=default&", ""), None),
        401,
        "operator",
    );

    // ---- kickout: bob is removed from the server ----
    fails(
        api.app("POST", "/v1/kickout", Some(json!({"user_id": bob_id}))),
        400,
        "app_id",
    );
    fails(
        api.call(
            "POST",
            "/v1/kickout",
            Some(json!({"app_id": "default", "user_id": bob_id})),
            &[("X-App-Secret", "nope")],
        ),
        401,
        "secret",
    );
    fails(
        api.app(
            "POST",
            "/v1/kickout",
            Some(json!({"app_id": "default", "user_id": "ptt:s9999"})),
        ),
        404,
        "not online",
    );
    fails(
        api.app(
            "POST",
            "/v1/kickout",
            Some(json!({"app_id": "nope", "user_id": bob_id})),
        ),
        401,
        "unknown app or wrong app secret",
    );
    fails(
        api.app(
            "POST",
            "/v1/kickout",
            Some(json!({"app_id": "default", "user_id": "console:1"})),
        ),
        404,
        "not online",
    );
    ok(api.app(
        "POST",
        "/v1/kickout",
        Some(json!({"app_id": "default", "user_id": bob_id})),
    ));
    bob.expect(|e| e["event"] == "disconnected" || e["event"] == "exit", T);
    events
        .try_expect(
            |e| e["type"] == "party.left" && e["party"]["name"] == "bob",
            T,
        )
        .expect("bob left");
    let asked = ok(api.app(
        "GET",
        &format!("/v1/online/user/state?app_id=default&msg_id=9&user_id={bob_id}"),
        None,
    ));
    assert_eq!(asked["user_list"][0]["state"], 0, "bob is offline: {asked}");

    let errors = bridge.metric("pttbridge_errors_total", &[("side", "business")]);
    assert!(errors >= 20.0, "REST errors are counted: {errors}");
    alice.quit();
}
