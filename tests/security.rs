//! Secure by default, against the real binary (`docs/security.md`): every route refuses what
//! lacks its credentials; strangers, other apps and other users cannot impersonate, take over a
//! room, log someone out or use the bridge's accounts; unauthenticated sockets are closed; wrong
//! tokens are throttled; secrets never come back. The RTCPeer and EGW clients here are written
//! from the specs' examples (`fixtures/rtcpeer`, `fixtures/egw`), not the bridge's types.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::bridge::{Bridge, OPERATOR, OPERATOR_TOKEN, ptt_server_toml};
use testkit::console::Console;
use testkit::murmur::Murmur;
use testkit::rtcpeer::{Socket, docking_login, get_sign, sign_in};

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(10);
const APP: (&str, &str) = ("meet-app", "meet-app-secret-0001");
const OTHER_APP: (&str, &str) = ("other-app", "other-app-secret-0002");

fn start() -> (Murmur, Bridge) {
    let murmur = Murmur::start(&["North"]);
    let config = format!(
        "{}\n[meeting]\n[[meeting.apps]]\napp_id = \"{}\"\nsecret = \"{}\"\n\
         [[meeting.apps]]\napp_id = \"{}\"\nsecret = \"{}\"\n\
         [[egw.developers]]\ndev_id = \"dev\"\ntoken = \"egw-dev-token-0003\"\n",
        ptt_server_toml("local", &murmur, &[("bridge", "North")]),
        APP.0,
        APP.1,
        OTHER_APP.0,
        OTHER_APP.1,
    );
    let bridge = Bridge::start(BIN, &config);
    (murmur, bridge)
}

fn no_secret_in(body: &str) {
    for secret in [OPERATOR_TOKEN, APP.1, OTHER_APP.1, "egw-dev-token-0003"] {
        assert!(!body.contains(secret), "a secret came back: {body}");
    }
}

/// Every HTTP route, without credentials, with wrong ones and with the operator's: only
/// liveness, the page's files and the protocols' own logins answer strangers.
#[test]
fn every_route_needs_its_credentials() {
    let (_murmur, bridge) = start();
    let addr = bridge.addr();
    let anon = |method: &str, path: &str, body: Option<&str>| {
        testkit::http::request(addr, method, path, body).unwrap()
    };

    // Open to anyone: liveness, readiness and health (status only), the page's static files,
    // where /egw is.
    assert_eq!(anon("GET", "/livez", None).status, 200);
    for path in ["/livez", "/readyz", "/healthz"] {
        let h = anon("GET", path, None);
        assert!([200, 503].contains(&h.status), "{path}: {}", h.status);
        let keys: Vec<_> = h.json().as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["status"], "{path} reveals nothing else: {}", h.body);
    }
    assert!(
        bridge.get("/healthz").json()["sides"].is_object(),
        "operators get the details"
    );
    for path in [
        "/",
        "/web/app.js",
        "/web/style.css",
        "/server/address?appType=8",
    ] {
        assert_eq!(anon("GET", path, None).status, 200, "{path}");
    }

    // Operators only: 401 with how to sign in, for strangers and for wrong tokens alike.
    let operator_routes = [
        ("GET", "/api/state", None),
        ("GET", "/metrics", None),
        ("GET", "/meeting/links", None),
        ("POST", "/meeting/links/9001/hangup", None),
        ("POST", "/api/meeting/login", Some(r#"{"account":"x"}"#)),
        ("GET", "/v1/app", None),
        (
            "POST",
            "/v1/app",
            Some(r#"{"app_name":"sneaky","status":"online"}"#),
        ),
        ("POST", "/v1/app/secret?app_id=meet-app", None),
        ("GET", "/v1/consuming/records", None),
        // Not a cluster node here: operators get 409, strangers 401.
        ("POST", "/v1/cluster/drain", None),
        ("POST", "/v1/cluster/undrain", None),
        ("GET", "/v1/archive/bursts", None),
        ("GET", "/v1/archive/bursts/1", None),
        ("DELETE", "/v1/archive/bursts/1", None),
        ("GET", "/v1/archive/bursts/1/audio", None),
        ("GET", "/v1/archive/files/1-x-y.opus", None),
        (
            "POST",
            "/v1/archive/getRecordByRange",
            Some(r#"{"pageNo":0,"pageSize":1}"#),
        ),
        (
            "POST",
            "/v1/archive/deleteRecords",
            Some(r#"{"recordIds":[1]}"#),
        ),
        (
            "POST",
            "/v1/archive/getVoicesInPage",
            Some(r#"{"pageIndex":0,"pageSize":1}"#),
        ),
        // An app's secret, or an operator (the directory is not configured here: 503 for them).
        ("GET", "/v1/directory/users?app_id=meet-app", None),
        ("GET", "/v1/directory/channels?app_id=meet-app", None),
        (
            "POST",
            "/v1/directory/refresh",
            Some(r#"{"app_id":"meet-app"}"#),
        ),
        ("GET", "/v1/directory/messages?app_id=meet-app&cid=1", None),
        (
            "POST",
            "/v1/notice",
            Some(r#"{"app_id":"meet-app","target_type":"everyone","content":"x"}"#),
        ),
        ("GET", "/customer/list", None),
        ("POST", "/customer/add", Some(r#"{"code":"1","name":"x"}"#)),
        ("POST", "/customer/remove", None),
        ("GET", "/user/list?code=1", None),
        ("GET", "/group/list?code=1", None),
        // A customer's key or token, or an operator.
        ("GET", "/api/customer/info?code=1", None),
        ("GET", "/api/server/commit?code=1", None),
        ("POST", "/api/server/commit", Some(r#"{"code":"1"}"#)),
        ("POST", "/api/user/commit", None),
        ("GET", "/api/group/commit", None),
    ];
    let wrong = ("Authorization", "Bearer not-the-operator-token");
    for (method, path, body) in operator_routes {
        for headers in [&[][..], &[wrong][..]] {
            let r = bridge.request_with(method, path, body, headers);
            assert_eq!(r.status, 401, "{method} {path} {headers:?}: {}", r.body);
            no_secret_in(&r.body);
        }
        let r = bridge.request(method, path, body);
        assert!(
            ![401, 403].contains(&r.status),
            "{method} {path} as operator: {} {}",
            r.status,
            r.body
        );
    }
    let r = anon("GET", "/api/state", None);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"pttbridge\"")
    );
    // Streams too: refused before they start.
    for path in ["/events", "/api/levels"] {
        let r = bridge.request_with("GET", path, None, &[]);
        assert_eq!(r.status, 401, "{path}");
    }

    // App routes: that app's secret, nothing else; an unknown app looks like a wrong secret.
    let app = bridge.request(
        "POST",
        "/v1/app",
        Some(r#"{"app_name":"dispatch","status":"online","service":[{"service_id":7}]}"#),
    );
    let app = app.json();
    assert_eq!(app["code"], 0, "{app}");
    let (app_id, secret) = (
        app["app_id"].as_str().unwrap().to_string(),
        app["app_secret"].as_str().unwrap().to_string(),
    );
    let state = format!("/v1/online/user/state?app_id={app_id}&msg_id=1&page_size=10");
    let unknown = "/v1/online/user/state?app_id=nope&msg_id=1&page_size=10";
    let r = bridge.request_with("GET", &state, None, &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    let wrong_secret = bridge.request_with("GET", &state, None, &[("X-App-Secret", "guess")]);
    let unknown_app = bridge.request_with("GET", unknown, None, &[("X-App-Secret", "guess")]);
    assert_eq!((wrong_secret.status, unknown_app.status), (401, 401));
    assert_eq!(
        wrong_secret.json()["message"],
        unknown_app.json()["message"],
        "app ids cannot be probed"
    );
    let mine = [("X-App-Secret", secret.as_str())];
    assert_eq!(bridge.request_with("GET", &state, None, &mine).status, 200);
    let r = bridge.request_with("GET", "/v1/app", None, &mine);
    assert_eq!(r.status, 401, "an app cannot list all apps: {}", r.body);
    let r = bridge.request_with(
        "PATCH",
        "/v1/app",
        Some(&json!({"app_id": app_id, "consumption_limit": 1_000_000}).to_string()),
        &mine,
    );
    assert_eq!(r.status, 403, "nor lift its own quota: {}", r.body);
    let r = bridge.request_with("GET", &format!("/v1/app?app_id={app_id}"), None, &mine);
    assert_eq!(r.status, 200);
    assert!(
        r.json().get("app_secret").is_none(),
        "never shown again: {}",
        r.body
    );

    // Wrong bearer tokens from one address: after 10, that address is throttled on every
    // route — the right token included, until a minute has passed — and it is counted.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let path = if i % 2 == 0 { "/api/state" } else { "/v1/app" };
        statuses.push(bridge.request_with("GET", path, None, &[wrong]).status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    let r = bridge.request_with("GET", "/api/state", None, &[OPERATOR]);
    assert_eq!(r.status, 429, "throttled, even the right token: {}", r.body);
    assert!(r.body.contains("try again"), "{}", r.body);
    // Liveness stays open.
    assert_eq!(anon("GET", "/livez", None).status, 200);
}

/// What one meeting user or app might try against another: impersonation, entering or ending
/// someone else's room, moderating it, logging its owner out, reusing a sign, speaking as
/// someone else, flooding.
#[test]
fn meeting_users_cannot_act_for_each_other() {
    let (_murmur, bridge) = start();
    let addr = bridge.addr();

    // getSign: an unknown app and a wrong secret get one answer.
    let unknown = get_sign(addr, ("no-such-app", "x"));
    let wrong = get_sign(addr, (APP.0, "wrong-secret"));
    assert_eq!(
        (&unknown["code"], &wrong["code"]),
        (&json!(401), &json!(401))
    );
    assert_eq!(unknown["message"], wrong["message"]);
    assert!(unknown["data"].is_null());
    // A sign is good once.
    let sign = get_sign(addr, APP);
    let sign = sign["data"].as_str().unwrap();
    assert_eq!(docking_login(addr, sign, "eve")["result"], 0);
    let again = docking_login(addr, sign, "eve");
    assert_ne!(again["result"], 0, "a sign redeemed twice: {again}");
    assert!(again.get("SID").is_none());
    let forged = docking_login(addr, "0123456789abcdef", "eve");
    assert_ne!(forged["result"], 0, "{forged}");

    let mut alice = sign_in(addr, APP, "alice");
    let mut bob = sign_in(addr, APP, "bob");
    let mut mallory = sign_in(addr, APP, "mallory");
    // The same account name under another app is another user.
    let other_alice = sign_in(addr, OTHER_APP, "alice");
    assert_ne!(other_alice.id, alice.id, "accounts are per app");

    // Impersonation: registering as alice with mallory's SID, or any made-up SID.
    let mut fake = Socket::open(addr, "/rtcpeer");
    let r = fake.request(json!({"module":"call","method":"doRegister","SID":mallory.sid,"userId":alice.id,"deviceType":"pc"}));
    assert_eq!(r["result"], 401, "{r}");
    let r = fake.request(json!({"module":"call","method":"doRegister","SID":"guessed-sid","userId":alice.id,"deviceType":"pc"}));
    assert_eq!(r["result"], 401, "{r}");
    let r = fake.request(json!({"module":"room","method":"newAppRoom","name":"x","numberLimit":2,"roomtype":1,"userId":alice.id}));
    assert_eq!(r["result"], 401, "unregistered sockets do nothing: {r}");

    // Rooms: alice's room admits alice and whom she invites; nobody else, not even by guessing.
    let room = alice.new_room();
    assert_eq!(alice.enter(room)["result"], 0);
    let r = mallory.enter(room);
    assert_eq!(r["result"], 403, "{r}");
    let r = mallory.enter(room + 1);
    assert_eq!(r["result"], 403, "an unknown room looks the same: {r}");
    let r = alice.ws.request(json!({"module":"call","method":"doInvite","ownUserId":alice.id,"targetUserId":bob.id,"type":1,"roomId":room}));
    assert_eq!(r["result"], 0, "{r}");
    bob.ws.wait("doInvite push", |v| {
        v["method"] == "doInvite" && v.get("result").is_none()
    });
    assert_eq!(bob.enter(room)["result"], 0, "the invited may enter");
    // Mallory cannot invite herself into alice's room either.
    let r = mallory.ws.request(json!({"module":"call","method":"doInvite","ownUserId":mallory.id,"targetUserId":alice.id,"type":1,"roomId":room}));
    assert_eq!(r["result"], 403, "{r}");

    // Moderation is the compere's (the room's creator): bob, a member, cannot end the room,
    // kick, mute, make himself compere or record the room.
    for req in [
        json!({"module":"meeting","method":"finish"}),
        json!({"module":"meeting","method":"kickOut","userId":alice.id,"roomId":room}),
        json!({"module":"meeting","method":"muteAll","userId":bob.id,"roomId":room,"isMute":true}),
        json!({"module":"meeting","method":"muteMsg","userId":alice.id,"roomId":room,"isMute":true}),
        json!({"module":"meeting","method":"setCompere","userId":bob.id,"roomId":room}),
        json!({"module":"meeting","method":"startRecord","fileName":"secretly"}),
        json!({"module":"meeting","method":"stopRecord","recordId":1}),
    ] {
        let r = bob.ws.request(req.clone());
        assert_eq!(r["result"], 403, "{req}: {r}");
    }
    // An operator's user (signed in through the page, `POST /api/meeting/login`) may moderate
    // a room it was let into, as its compere may.
    let login = bridge
        .request("POST", "/api/meeting/login", Some(r#"{"account":"op"}"#))
        .json();
    let op_id = login["user"]["id"].as_i64().expect("operator's user id");
    let mut op = Socket::open(addr, "/rtcpeer");
    let r = op.request(json!({"module":"call","method":"doRegister","SID":login["SID"],"userId":op_id,"deviceType":"pc"}));
    assert_eq!(r["result"], 0, "{r}");
    let r = alice.ws.request(json!({"module":"call","method":"doInvite","ownUserId":alice.id,"targetUserId":op_id,"type":1,"roomId":room}));
    assert_eq!(r["result"], 0, "{r}");
    let r = op.request(
        json!({"module":"meeting","method":"enter","userId":op_id,"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let r = op.request(
        json!({"module":"meeting","method":"muteMsg","userId":bob.id,"roomId":room,"isMute":true}),
    );
    assert_eq!(r["result"], 0, "the operator's mute: {r}");
    bob.ws.wait("onMute", |v| {
        v["method"] == "onMute" && v["userId"] == bob.id
    });

    // Speaking as someone else: a chat claiming alice's id is bob's.
    let r = bob.ws.request(json!({"module":"meeting","method":"chat","userId":alice.id,"roomId":room,"content":"it is me, alice"}));
    assert_eq!(r["result"], 0, "{r}");
    let heard = alice.ws.wait("onChat", |v| v["method"] == "onChat");
    assert_eq!(heard["userId"], bob.id, "{heard}");
    // Chat is bounded.
    let r = bob
        .ws
        .request(json!({"module":"meeting","method":"chat","content":"x".repeat(5000)}));
    assert_eq!(r["result"], 422, "{r}");

    // Logging someone else out: mallory names alice; only mallory's own session could end.
    let r = mallory
        .ws
        .request(json!({"module":"account","method":"logout","SID":alice.sid,"userId":alice.id}));
    assert_ne!(r["result"], 0, "{r}");
    let r = alice
        .ws
        .request(json!({"module":"meeting","method":"updateMute","isMute":false}));
    assert_eq!(r["result"], 0, "alice is still in: {r}");
    let r = mallory.ws.request(
        json!({"module":"account","method":"logout","SID":mallory.sid,"userId":mallory.id}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let mut again = Socket::open(addr, "/rtcpeer");
    let r = again.request(json!({"module":"call","method":"doRegister","SID":mallory.sid,"userId":mallory.id,"deviceType":"pc"}));
    assert_eq!(r["result"], 401, "a logged-out SID is dead: {r}");
    let mut alice2 = Socket::open(addr, "/rtcpeer");
    let r = alice2.request(json!({"module":"call","method":"doRegister","SID":alice.sid,"userId":alice.id,"deviceType":"pc"}));
    assert_eq!(r["result"], 0, "alice's own SID still works: {r}");
    // One registration per user: alice's older socket is told why, then closed.
    let closed = alice.ws.closed(T);
    assert!(
        closed
            .last
            .iter()
            .any(|v| v["event"] == "onKickout" && v["reason"].as_str().is_some()),
        "{closed:?}"
    );

    // Flooding one socket: answered 429 beyond the rate, served again a moment later.
    let mut results = Vec::new();
    for _ in 0..120 {
        bob.ws
            .send(&json!({"module":"meeting","method":"updateMute","isMute":true}));
    }
    while results.len() < 120 {
        let v = bob.ws.wait("updateMute reply", |v| {
            v["method"] == "updateMute" && v.get("result").is_some()
        });
        results.push(v["result"].as_i64().unwrap());
    }
    let limited = results.iter().filter(|r| **r == 429).count();
    assert!(limited >= 40, "{limited} of 120 refused: {results:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let r = bob
        .ws
        .request(json!({"module":"meeting","method":"updateMute","isMute":false}));
    assert_eq!(r["result"], 0, "served again: {r}");
    assert_eq!(bridge.health()["status"], "ok");
    no_secret_in(&bridge.logs());
}

/// Sockets that never authenticate are closed with a reason after 30 s — on all three
/// WebSocket surfaces — while an authenticated one stays.
#[test]
fn unauthenticated_sockets_are_closed() {
    let (_murmur, bridge) = start();
    let addr = bridge.addr();
    let opened = Instant::now();
    let mut rtc = Socket::open(addr, "/rtcpeer");
    let mut egw = Socket::open(addr, "/egw");
    let console = Console::connect(addr);
    let mut user = sign_in(addr, APP, "alice");
    // The EGW client heartbeats (that alone must not keep it), the registered user stays.
    let window = Duration::from_secs(30);
    while opened.elapsed() < window - Duration::from_secs(2) {
        egw.send(&json!({"id": 20011}));
        let r = user
            .ws
            .request(json!({"module":"meeting","method":"updateMute","isMute":false}));
        assert_eq!(r["result"], 409, "not in a room, but served: {r}");
        // Reading answers the server's pings: these clients are there, just not signed in.
        for s in [&mut rtc, &mut egw] {
            if let Ok(Some(v)) = s.next(Duration::from_millis(500)) {
                s.seen.push(v);
            }
        }
    }
    let rtc_closed = rtc.closed(Duration::from_secs(10));
    assert!(
        rtc_closed
            .last
            .iter()
            .any(|v| v["result"] == 401
                && v["message"].as_str().unwrap_or("").contains("doRegister")),
        "told why: {rtc_closed:?}"
    );
    let egw_closed = egw.closed(Duration::from_secs(10));
    assert_eq!(egw_closed.code, Some(4002), "{egw_closed:?}");
    assert!(egw_closed.reason.contains("login"), "{egw_closed:?}");
    let c = console
        .wait_closed(Duration::from_secs(10))
        .expect("console closed");
    assert_eq!(c.code, Some(1008), "{c:?}");
    assert!(c.reason.contains("log in"), "{c:?}");
    assert!(opened.elapsed() >= window, "not before the window");
    let r = user
        .ws
        .request(json!({"module":"meeting","method":"updateMute","isMute":false}));
    assert_eq!(r["result"], 409, "the registered socket stays: {r}");
    for (metric, labels) in [
        (
            "pttbridge_meeting_errors_total",
            &[("kind", "register_timeout")][..],
        ),
        (
            "pttbridge_console_errors_total",
            &[("kind", "login_timeout")][..],
        ),
        (
            "pttbridge_event_subscribers_cut_total",
            &[("reason", "login_timeout")][..],
        ),
    ] {
        assert!(bridge.metric(metric, labels) >= 1.0, "{metric} {labels:?}");
    }
}
