//! The directory against a spec-strict Totalk admin server (`tests/peers/admin_server.py`,
//! written from the seed's `/ent/` examples alone), with Debian's murmurd and pymumble
//! terminals where voice and presence are involved: users and roles on the platform surfaces,
//! a dispatcher-role console pre-empting a terminal with no per-user level configured (and a
//! dispatcher-role terminal another terminal), the admin API down (voice goes on, staleness
//! reported) and back, bad answers (the last good copy kept), notices (REST and EGW) and message
//! history, https with a CA file; and the server saw nothing against the seed.

#[path = "support/egw_client.rs"]
mod egw_client;

use std::time::Duration;

use muicall::audio::Codec;
use serde_json::{Value, json};
use testkit::admin::AdminServer;
use testkit::audio::compare_files;
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::console::{Console, REPLY};
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;
use testkit::tls::TestCa;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const PASSWORD: &str = "ent-pass-7f3a9c";
const APP_SECRET: &str = "directory-test-secret-0001";
const BASE_URL: &str = "http://ptt.test:8080";

/// The organisation: alice is a dispatcher (role 1); North has alice (channel admin) and bob.
fn org() -> Value {
    json!({
        "account": "10000",
        "password": PASSWORD,
        "users": [
            {"uid": 1001001, "name": "alice", "nick": "Alice", "role": 1},
            {"uid": 1001002, "name": "bob", "nick": "Bob", "role": 0},
            {"uid": 1001003, "name": "carol", "nick": "Carol", "role": 0},
        ],
        "channels": [
            {"cid": 1001, "name": "North", "members": {"1001001": 2, "1001002": 0}},
            {"cid": 1002, "name": "South", "members": {"1001003": 1}},
        ],
        "messages": {"1001": [
            {"chan_seq_id": 1, "from_id": 1001001, "time": 1700000000000u64, "type": 0, "content": "first"},
            {"chan_seq_id": 2, "from_id": 1001002, "time": 1700000005000u64, "type": 0, "content": "second"},
        ]},
    })
}

fn directory_toml(admin: &AdminServer, extra: &str) -> String {
    format!(
        "[directory]\nurl = \"{}\"\naccount = \"10000\"\npassword = \"{PASSWORD}\"\n{extra}\n\
         [[business.apps]]\napp_id = \"default\"\napp_secret = \"{APP_SECRET}\"\n",
        admin.url()
    )
}

const APP: (&str, &str) = ("X-App-Secret", APP_SECRET);

fn get(bridge: &Bridge, path: &str) -> Value {
    let r = bridge.request_with("GET", path, None, &[APP]);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

fn fresh(bridge: &Bridge) -> Value {
    bridge.wait_health("directory fresh", |h| h["directory"]["state"] == "fresh", T)
}

fn user<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["user_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

/// `pttbridge_directory_refreshes_total{result}`.
fn refreshes(bridge: &Bridge, result: &str) -> f64 {
    bridge.metric("pttbridge_directory_refreshes_total", &[("result", result)])
}

/// Waits until more refreshes ended in `result` than `before`.
fn wait_refreshes_above(bridge: &Bridge, result: &str, before: f64) {
    let deadline = std::time::Instant::now() + T;
    while refreshes(bridge, result) <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no more refreshes ended in {result}\n{}",
            bridge.logs_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_no_violations(admin: &mut AdminServer) {
    let v = admin.violations();
    assert!(
        v.is_empty(),
        "the admin server saw calls against the seed: {v:?}"
    );
}

#[test]
fn users_roles_and_presence_appear_and_the_copy_outlives_the_admin_api() {
    let server = Murmur::builder()
        .channels(&["North"])
        .user("bob", "pw-bob")
        .start();
    let dir = tempfile::tempdir().unwrap();
    let mut admin = AdminServer::start(dir.path(), &org(), Duration::from_secs(3600));
    let config = format!(
        "{}\n{}",
        ptt_server_toml("local", &server, &[("bridge", "North")]),
        directory_toml(
            &admin,
            "refresh_secs = 1\nretry_secs = 1\nstale_after_secs = 3"
        )
    );
    let bridge = Bridge::start(BIN, &config);
    let _bob = Terminal::builder(server.port(), "bob")
        .password("pw-bob")
        .channel("North")
        .connect();
    bridge.wait_health("PTT connected", |h| h["status"] == "ok", T);
    let h = fresh(&bridge);
    assert_eq!(h["directory"]["users"], 3, "{h}");

    // Users with names, roles and the online flag: bob is on the PTT server the bridge
    // watches; alice and carol are offline and still named.
    let wait_bob_online = || {
        for _ in 0..100 {
            let users = get(&bridge, "/v1/directory/users?app_id=default");
            if user(&users, "bob")["online"] == true {
                return users;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("bob never online in the directory")
    };
    let users = wait_bob_online();
    assert_eq!(users["code"], 0);
    assert_eq!(users["total"], 3);
    let alice = user(&users, "alice");
    assert_eq!(
        (alice["uid"].clone(), alice["nick"].clone()),
        (json!(1001001), json!("Alice"))
    );
    assert_eq!(alice["dispatcher"], true);
    assert_eq!(alice["online"], false);
    assert_eq!(alice["channels"], json!([1001]));
    assert_eq!(user(&users, "carol")["dispatcher"], false);
    assert_eq!(user(&users, "carol")["online"], false);
    // The EGW full sync lists every directory user with an online flag.
    let sync = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = egw_client::Client::connect(bridge.addr()).await;
        c.login("default", APP_SECRET).await;
        c.full_sync(&["default"]).await.remove(0)
    });
    assert_eq!(
        sync["directory_user_list"],
        json!([
            {"name": "alice", "nick": "Alice", "online": false, "role": 1, "user_id": "ptt:1001001"},
            {"name": "bob", "nick": "Bob", "online": true, "role": 0, "user_id": "ptt:1001002"},
            {"name": "carol", "nick": "Carol", "online": false, "role": 0, "user_id": "ptt:1001003"},
        ]),
        "{sync}"
    );
    // Presence names an offline user from the directory.
    let state = get(
        &bridge,
        "/v1/online/user/state?app_id=default&msg_id=1&user_id=ptt:1001003",
    );
    assert_eq!(state["user_list"][0]["state"], 0, "{state}");
    assert_eq!(state["user_list"][0]["name"], "carol", "{state}");
    let page = get(
        &bridge,
        "/v1/directory/users?app_id=default&page=2&page_size=2",
    );
    assert_eq!(page["user_list"].as_array().unwrap().len(), 1, "{page}");

    // Channels with their members and member roles.
    let channels = get(&bridge, "/v1/directory/channels?app_id=default");
    assert_eq!(channels["total"], 2);
    let north = &channels["channel_list"][0];
    assert_eq!(north["name"], "North");
    assert_eq!(
        north["members"],
        json!([
            {"uid": 1001001, "name": "alice", "nick": "Alice", "member_role": 2, "online": false},
            {"uid": 1001002, "name": "bob", "nick": "Bob", "member_role": 0, "online": true},
        ])
    );
    assert_eq!(bridge.metric("pttbridge_directory_users", &[]), 3.0);
    assert!(refreshes(&bridge, "ok") >= 1.0);

    // Without credentials: refused, in the envelope.
    let r = bridge.request_with("GET", "/v1/directory/users?app_id=default", None, &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["code"], 40100);

    // The admin API goes down: stale and degraded, never unready; the copy stays readable.
    admin.stop();
    let h = bridge.wait_health("directory stale", |h| h["directory"]["state"] == "stale", T);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["sides"]["ptt"]["state"], "connected", "{h}");
    assert_eq!(
        bridge.get("/readyz").status,
        200,
        "voice does not depend on the directory"
    );
    assert!(refreshes(&bridge, "transport") >= 1.0);
    let age = bridge.metric("pttbridge_directory_age_seconds", &[]);
    assert!(age >= 3.0, "the age metric says how old: {age}");
    let users = get(&bridge, "/v1/directory/users?app_id=default");
    assert_eq!(users["total"], 3, "the last good copy: {users}");
    assert_eq!(users["stale"], true);

    // Back: fresh again, with what changed meanwhile.
    let mut changed = org();
    changed["users"][2]["role"] = json!(1);
    admin.set_data(&changed);
    admin.restart();
    let h = fresh(&bridge);
    assert_eq!(h["status"], "ok", "{h}");
    let users = get(&bridge, "/v1/directory/users?app_id=default");
    assert_eq!(user(&users, "carol")["dispatcher"], true);
    assert_eq!(users["stale"], false);
    assert!(
        !bridge.logs().contains(PASSWORD),
        "the password is never logged"
    );
    assert_no_violations(&mut admin);
}

#[test]
fn bad_answers_are_logged_and_the_last_good_copy_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = AdminServer::start(dir.path(), &org(), Duration::from_secs(3600));
    let bridge = Bridge::start(
        BIN,
        &directory_toml(
            &admin,
            "refresh_secs = 1\nretry_secs = 1\nstale_after_secs = 60",
        ),
    );
    fresh(&bridge);
    let ok_before = refreshes(&bridge, "ok");
    for (how, result) in [
        ("garbage", "malformed"),
        ("error", "operation"),
        ("huge", "too_large"),
        ("flood", "too_large"),
    ] {
        let before = refreshes(&bridge, result);
        admin.misbehave(Some(how));
        wait_refreshes_above(&bridge, result, before);
        let h = bridge.health();
        assert_eq!(h["directory"]["users"], 3, "{how}: the copy is kept: {h}");
        assert!(
            h["directory"]["failures_in_a_row"].as_u64().unwrap() >= 1,
            "{h}"
        );
        let users = get(&bridge, "/v1/directory/users?app_id=default");
        assert_eq!(users["total"], 3, "{how}: {users}");
    }
    let logs = bridge.logs();
    assert!(
        logs.contains("directory refresh failed; the last good copy is kept"),
        "{logs}"
    );
    for kind in [
        "kind=\"malformed\"",
        "kind=\"operation\"",
        "kind=\"too_large\"",
        "a page of 300 users when 100 were asked for",
        "the answer is over 1048576 bytes",
    ] {
        assert!(logs.contains(kind), "{kind} logged: {logs}");
    }

    // Behaving again, and a token timed out on the way: one new login, fresh again.
    let logins = admin.count("login");
    admin.misbehave(None);
    admin.expire_tokens();
    wait_refreshes_above(&bridge, "ok", ok_before);
    let h = bridge.health();
    assert_eq!(h["directory"]["failures_in_a_row"], 0, "{h}");
    assert!(
        admin.count("login") > logins,
        "logged in again after the 406"
    );
    assert!(!bridge.logs().contains(PASSWORD));
    assert_no_violations(&mut admin);
}

/// murmurd with North and these accounts (password `pw-<name>`), the admin server with these
/// directory users, and a bridge whose consoles are at the terminals' mic level (1): without the
/// directory no console pre-empts a terminal, nor a terminal a console.
fn console_site(
    accounts: &[&str],
    users: Value,
) -> (Murmur, tempfile::TempDir, AdminServer, Bridge) {
    let mut builder = Murmur::builder().channels(&["North"]);
    for name in accounts {
        builder = builder.user(name, &format!("pw-{name}"));
    }
    let server = builder.start();
    let dir = tempfile::tempdir().unwrap();
    let mut org = org();
    org["users"] = users;
    let admin = AdminServer::start(dir.path(), &org, Duration::from_secs(3600));
    let config = format!(
        "{}\n{}\n[console]\nmic_level = 1\nterminal_mic_level = 1\n[[console.servers]]\n\
         base_url = \"{BASE_URL}\"\nptt_server = \"local\"\nadmin_username = \"SuperUser\"\n\
         admin_password = \"{}\"\n",
        ptt_server_toml("local", &server, &[("bridge", "")]),
        directory_toml(
            &admin,
            "refresh_secs = 1\nretry_secs = 1\nstale_after_secs = 3"
        ),
        server.superuser_password()
    );
    let bridge = Bridge::start(BIN, &config);
    bridge.wait_health(
        "console admin connected",
        |h| h["sides"]["console"]["servers"][0]["admin_connected"] == true,
        T,
    );
    fresh(&bridge);
    (server, dir, admin, bridge)
}

/// Calls `ids` from `c` and waits until they are in the call channel, then releases the mic;
/// returns the call id.
fn call(c: &mut Console, ids: &[u32], terminals: &mut [&mut Terminal]) -> String {
    c.send(json!({"type": "requestMic", "toIds": ids, "transaction": 1}));
    let created = c.expect_type("createGroup", T);
    assert_eq!(created["code"], 1, "{created}");
    assert_eq!(c.expect_type("requestMic", T)["code"], 2);
    let sid = created["sessionId"].as_str().unwrap().to_string();
    for t in terminals {
        t.wait_in_channel(&format!("call-{sid}"), T);
    }
    c.send(json!({"type": "releaseMic", "sessionId": sid}));
    assert_eq!(c.expect_type("releaseMic", REPLY)["code"], 1);
    sid
}

fn terminal(server: &Murmur, name: &str) -> Terminal {
    Terminal::builder(server.port(), name)
        .password(&format!("pw-{name}"))
        .channel("North")
        .connect()
}

#[test]
fn a_dispatcher_role_console_preempts_a_terminal_with_no_per_user_level_configured() {
    // Consoles alice (dispatcher) and bob (not); terminals t1 and t2, neither dispatchers; dave
    // is in the directory only.
    let (server, dir, mut admin, bridge) = console_site(
        &["alice", "bob", "t1", "t2"],
        json!([
            {"uid": 1001001, "name": "alice", "nick": "Alice", "role": 1},
            {"uid": 1001002, "name": "bob", "nick": "Bob", "role": 0},
            {"uid": 1001004, "name": "t1", "nick": "T1", "role": 0},
            {"uid": 1001005, "name": "t2", "nick": "T2", "role": 0},
            {"uid": 1001009, "name": "dave", "nick": "Dave", "role": 0},
        ]),
    );
    let mut t1 = terminal(&server, "t1");
    let mut t2 = terminal(&server, "t2");
    let (id1, id2) = (server.user_id("t1"), server.user_id("t2"));

    // bob (role 0): a terminal talking keeps the floor against him.
    let mut bob = Console::connect(bridge.addr());
    bob.login(BASE_URL, "bob", "pw-bob");
    let bob_sid = call(&mut bob, &[id1], &mut [&mut t1]);
    t1.play(&fixture("audio/speech.wav"));
    bob.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id1, T);
    bob.send(json!({"type": "requestMic", "sessionId": bob_sid}));
    let denied = bob.expect_type("requestMic", REPLY);
    assert_eq!(denied["code"], 0, "an ordinary console is denied: {denied}");

    // alice (role 1 in the directory, no level of her own in the config) pre-empts.
    let mut alice = Console::connect(bridge.addr());
    alice.login(BASE_URL, "alice", "pw-alice");
    let sid = call(&mut alice, &[id2], &mut [&mut t2]);
    t2.play(&fixture("audio/speech.wav"));
    alice.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id2, T);
    alice.send(json!({"type": "requestMic", "sessionId": sid}));
    let granted = alice.expect_type("requestMic", REPLY);
    assert_eq!(granted["code"], 2, "the dispatcher pre-empts: {granted}");
    alice.expect_notify("memberLostMic", |v| v["data"]["memberId"] == id2, T);
    assert!(bridge.metric("pttbridge_console_floor_total", &[("outcome", "preempted")]) >= 1.0);
    t2.stop_play();

    // dave has never been on the PTT server: added to the call, he is named from the directory
    // (his id is the directory's uid, as a Totalk server's user ids are).
    alice.send(
        json!({"type": "addGroupMember", "sessionId": sid, "transaction": "2",
                      "data": {"groupId": sid, "members": [{"id": 1001009}]}}),
    );
    let added = alice.expect(
        |v| v["type"] == "audioResp" && v["cmd"] == "addGroupMember",
        REPLY,
    );
    assert_eq!(
        added["data"]["results"],
        json!([{"id": 1001009, "name": "dave", "code": 1, "message": "offline"}]),
        "{added}"
    );
    let update = alice.expect_notify(
        "tempCallMemberUpdate",
        |v| {
            v["data"]["members"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["memberId"] == 1001009))
        },
        T,
    );
    let dave = update["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["memberId"] == 1001009)
        .unwrap();
    assert_eq!(dave["memberName"], "dave", "{update}");

    // The admin API goes down mid-call: the call goes on and carries voice.
    admin.stop();
    bridge.wait_health("directory stale", |h| h["directory"]["state"] == "stale", T);
    std::thread::sleep(Duration::from_millis(500));
    let out = dir.path().join("t2.wav");
    t2.record_start();
    let played = alice.play(&fixture("audio/speech2.wav"), Codec::Opus);
    played.join().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let rec = t2.record_stop(&out);
    let heard = rec["speakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "alice")
        .unwrap_or_else(|| panic!("t2 heard the dispatcher: {rec}"));
    let cmp = compare_files(fixture("audio/speech2.wav"), heard["wav"].as_str().unwrap());
    println!("dispatcher → t2 with the admin API down: {cmp}");
    cmp.assert_matches(0.9, 0.05);
    admin.restart();
    fresh(&bridge);
    assert_no_violations(&mut admin);
}

#[test]
fn notices_and_message_history_go_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = AdminServer::start(dir.path(), &org(), Duration::from_secs(3600));
    let bridge = Bridge::start(BIN, &directory_toml(&admin, ""));
    fresh(&bridge);

    let r = bridge.request_with(
        "POST",
        "/v1/notice",
        Some(
            &json!({"app_id": "default", "target_type": "channel_members", "target_id": 1001,
                     "content": "频道全体集合", "tts": true})
            .to_string(),
        ),
        &[APP],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["code"], 0);
    let notice = admin.expect_notice(T);
    assert_eq!(
        notice,
        json!({"targetType": "1", "targetId": "1001", "content": "频道全体集合", "ttsPlay": "1"})
    );

    // The same through the EGW (extension 20013 → 20014), answered once the admin API has.
    let (ok, bad, other_app) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = egw_client::Client::connect(bridge.addr()).await;
        c.login("default", APP_SECRET).await;
        let ok = c
            .request(
                json!({"business": "EGW", "id": 20013, "seq": "n1", "app_id": "default",
                            "target_type": "user", "target_id": 1001002, "content": "report in"}),
            )
            .await;
        let bad = c
            .request(json!({"business": "EGW", "id": 20013, "app_id": "default",
                            "target_type": "channel_members", "content": "no channel"}))
            .await;
        let other_app = c
            .request(json!({"business": "EGW", "id": 20013, "app_id": "not-mine",
                            "target_type": "everyone", "content": "x"}))
            .await;
        (ok, bad, other_app)
    });
    assert_eq!(
        ok,
        json!({"id": 20014, "message": "notice pushed", "result": 0, "seq": "n1"})
    );
    assert_eq!(
        admin.expect_notice(T),
        json!({"targetType": "2", "targetId": "1001002", "content": "report in", "ttsPlay": "0"})
    );
    assert_eq!(
        (bad["id"].clone(), bad["result"].clone()),
        (json!(20014), json!(1)),
        "{bad}"
    );
    assert!(
        bad["message"].as_str().unwrap().contains("target_id"),
        "{bad}"
    );
    assert_eq!(other_app["result"], 5, "{other_app}");

    let msgs = get(
        &bridge,
        "/v1/directory/messages?app_id=default&cid=1001&page=1&page_size=10",
    );
    assert_eq!(msgs["total"], 2, "{msgs}");
    assert_eq!(
        msgs["message_list"][0]["content"], "second",
        "newest first: {msgs}"
    );
    assert_eq!(msgs["message_list"][0]["from_id"], 1001002);
    let up = get(
        &bridge,
        "/v1/directory/messages?app_id=default&cid=1001&sort=up",
    );
    assert_eq!(up["message_list"][0]["content"], "first");

    // Bad input: the envelope's error, nothing sent to the admin server.
    let notices_before = admin.count("pushNotice");
    for (body, why) in [
        (
            json!({"app_id": "default", "target_type": "galaxy", "content": "x"}),
            "target_type",
        ),
        (
            json!({"app_id": "default", "target_type": "user", "content": "x"}),
            "target_id",
        ),
        (
            json!({"app_id": "default", "target_type": "everyone", "content": "x".repeat(2001)}),
            "content",
        ),
        (
            json!({"app_id": "default", "target_type": "everyone", "content": "  "}),
            "content",
        ),
    ] {
        let r = bridge.request_with("POST", "/v1/notice", Some(&body.to_string()), &[APP]);
        assert_eq!(r.status, 400, "{why}: {}", r.body);
        assert_eq!(r.json()["code"], 40000);
        assert!(
            r.json()["message"].as_str().unwrap().contains(why),
            "{}",
            r.body
        );
    }
    for q in [
        "cid=x",
        "cid=1001&page_size=1000",
        "cid=1001&page=0",
        "cid=1001&sort=sideways",
        "",
    ] {
        let r = bridge.request_with(
            "GET",
            &format!("/v1/directory/messages?app_id=default&{q}"),
            None,
            &[APP],
        );
        assert_eq!(r.status, 400, "{q}: {}", r.body);
    }
    assert_eq!(admin.count("pushNotice"), notices_before);
    // The admin server's own refusal (an unknown channel) comes back as a gateway error.
    let r = bridge.request_with(
        "GET",
        "/v1/directory/messages?app_id=default&cid=4242",
        None,
        &[APP],
    );
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.json()["message"].as_str().unwrap().contains("403"),
        "{}",
        r.body
    );
    assert_no_violations(&mut admin);
}

#[test]
fn a_dispatcher_role_terminal_preempts_an_ordinary_terminal_in_a_console_call() {
    let (server, _dir, mut admin, bridge) = console_site(
        &["bob", "t1", "t3"],
        json!([
            {"uid": 1001002, "name": "bob", "nick": "Bob", "role": 0},
            {"uid": 1001004, "name": "t1", "nick": "T1", "role": 0},
            {"uid": 1001006, "name": "t3", "nick": "T3", "role": 1},
        ]),
    );
    let mut t1 = terminal(&server, "t1");
    let mut t3 = terminal(&server, "t3");
    let (id1, id3) = (server.user_id("t1"), server.user_id("t3"));
    let mut bob = Console::connect(bridge.addr());
    bob.login(BASE_URL, "bob", "pw-bob");
    call(&mut bob, &[id1, id3], &mut [&mut t1, &mut t3]);

    // t1 (role 0) talks first and holds the floor; t3 (role 1 in the directory, no level in the
    // config; at the terminals' level it would wait) takes it from t1 mid-burst.
    t1.play(&fixture("audio/speech.wav"));
    bob.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id1, T);
    t3.play(&fixture("audio/speech.wav"));
    bob.expect_notify("memberGetMic", |v| v["data"]["memberId"] == id3, T);
    let history = bob.history();
    let lost_t1 = history
        .iter()
        .position(|v| v["cmd"] == "memberLostMic" && v["data"]["memberId"] == id1);
    let got_t3 = history
        .iter()
        .position(|v| v["cmd"] == "memberGetMic" && v["data"]["memberId"] == id3);
    assert!(
        lost_t1.is_some() && lost_t1 < got_t3,
        "t1 lost the floor to t3: {history:#?}"
    );
    assert!(bridge.metric("pttbridge_console_floor_total", &[("outcome", "preempted")]) >= 1.0);
    assert_no_violations(&mut admin);
}

#[test]
fn an_https_admin_api_is_read_with_the_configured_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("admin test CA");
    let files = ca.write_server(dir.path(), "admin");
    let mut admin = AdminServer::start_tls(dir.path(), &org(), Duration::from_secs(3600), &files);
    assert!(admin.url().starts_with("https://"));
    let ca_file = ca.write_ca(dir.path());
    let trusting = Bridge::start(
        BIN,
        &directory_toml(&admin, &format!("ca_file = \"{}\"", ca_file.display())),
    );
    let h = fresh(&trusting);
    assert_eq!(h["directory"]["users"], 3, "{h}");

    // Another CA: the certificate is refused, nothing is read, and the health says why.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = TestCa::new("another CA").write_ca(other_dir.path());
    let refusing = Bridge::start(
        BIN,
        &directory_toml(&admin, &format!("ca_file = \"{}\"", other_ca.display())),
    );
    let h = refusing.wait_health(
        "a failed refresh",
        |h| h["directory"]["failures_in_a_row"].as_u64() >= Some(1),
        T,
    );
    assert_eq!(h["directory"]["state"], "empty", "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["directory"]["last_error"]
            .as_str()
            .unwrap()
            .contains("transport"),
        "{h}"
    );
    assert_no_violations(&mut admin);
}
