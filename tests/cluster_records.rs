//! Shared records across bridge nodes (issue 22, item 4), against real peers: a 3-server
//! `nats-server` JetStream cluster, murmurd with North and South, two `pttbridge run` nodes
//! (A with its account in North, B in South), a pymumble terminal talking in South.
//!
//! Shows: an app created through A's `/v1` logs in to B's EGW (a spec-strict client, no project
//! types) with its secret; a secret rotated through B works on A and the old one no longer
//! does; an app name taken on A is a conflict on B; the call record B writes for the terminal's
//! conversation is listed by A. The meeting side's standing rooms and appointments, with
//! signalling-only RTCPeer clients (`testkit::rtcpeer`, raw spec JSON): a room and an
//! appointment made through A are found and entered through B, and deleted through B they are
//! gone on A; a meeting account's user id moved off a collision on A is the same on B.

#[path = "support/egw_client.rs"]
mod egw_client;

use std::time::{Duration, Instant};

use egw_client::Client;
use serde_json::{Value, json};
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::murmur::Murmur;
use testkit::nats::NatsCluster;
use testkit::peers::fixture;
use testkit::rtcpeer::{User, sign_in};
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(30);
/// The meeting side's app (id, secret).
const MEETING_APP: (&str, &str) = ("test", "test");

fn config(
    node: &str,
    server: &str,
    account: &str,
    channel: &str,
    murmur: &Murmur,
    urls: &str,
) -> String {
    format!(
        "[business]\nptt_call_idle_ms = 1000\n[[business.apps]]\napp_id = \"default\"\napp_secret = \"default-secret\"\n\n{}\n[cluster]\nnode_id = \"{node}\"\nurl = \"{urls}\"\nreplicas = 3\n\n[meeting]\n[[meeting.apps]]\napp_id = \"{}\"\nsecret = \"{}\"\n",
        ptt_server_toml(server, murmur, &[(account, channel)]),
        MEETING_APP.0,
        MEETING_APP.1
    )
}

/// `(status, body)` of a JSON request with the operator token.
fn call(b: &Bridge, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = b.request(method, path, body.map(|v| v.to_string()).as_deref());
    (r.status, r.json())
}

/// The EGW login answer (`result`) of `dev_id` / `token` on `b`.
async fn egw_login(b: &Bridge, dev_id: &str, token: &str) -> Value {
    let mut c = Client::connect(b.addr()).await;
    let r = c
        .request(json!({"business": "EGW", "dev_id": dev_id, "token": token, "id": 20000}))
        .await;
    c.close().await;
    r["result"].clone()
}

/// The 3 nats-servers, murmurd and the two nodes (A in North, B in South), their accounts
/// connected and the records stream read.
fn two_nodes() -> (NatsCluster, Murmur, Bridge, Bridge) {
    two_nodes_with("")
}

/// [`two_nodes`], with `a_meeting` added to A's `[meeting]` table.
fn two_nodes_with(a_meeting: &str) -> (NatsCluster, Murmur, Bridge, Bridge) {
    let nats = NatsCluster::start(3);
    let urls = nats.urls();
    let murmur = Murmur::start(&["North", "South"]);
    let a = Bridge::start(
        BIN,
        &(config("node-a", "a", "bridge-a", "North", &murmur, &urls) + a_meeting),
    );
    let b = Bridge::start(
        BIN,
        &config("node-b", "b", "bridge-b", "South", &murmur, &urls),
    );
    for n in [&a, &b] {
        n.wait_health(
            "its account connected and the records stream read",
            |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["state"] == "connected",
            T,
        );
    }
    (nats, murmur, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_and_call_records_are_the_same_on_every_node() {
    let (_nats, murmur, a, b) = tokio::task::spawn_blocking(two_nodes).await.unwrap();

    // An app made on A logs in on B.
    let create =
        json!({"app_name": "shared_1", "status": "online", "service": [{"service_id": 4}]});
    let (status, created) = call(&a, "POST", "/v1/app", Some(create.clone()));
    assert_eq!(status, 200, "{created}");
    let app_id = created["app_id"].as_str().unwrap().to_string();
    let secret = created["app_secret"].as_str().unwrap().to_string();
    // B has it once it applied it (read-your-writes is per node: A's answer came once A had).
    let t0 = Instant::now();
    while call(&b, "GET", &format!("/v1/app?app_id={app_id}"), None).0 != 200 {
        assert!(t0.elapsed() < T, "A's app never reached B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(egw_login(&b, &app_id, &secret).await, 0, "A's app on B");
    assert_eq!(egw_login(&b, &app_id, "wrong").await, 4);

    // The same name on B: a conflict, as on one node.
    let (status, body) = call(&b, "POST", "/v1/app", Some(create));
    assert_eq!(status, 409, "{body}");

    // A secret rotated through B works on A; the old one does not.
    let (status, rotated) = call(&b, "POST", &format!("/v1/app/secret?app_id={app_id}"), None);
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["app_secret"].as_str().unwrap().to_string();
    // A has the rotation once it applied it: a few tries (each failed login counts towards
    // the login limiter's 10 a minute).
    let mut tries = 0;
    while egw_login(&a, &app_id, &new_secret).await != 0 {
        tries += 1;
        assert!(tries < 5, "the rotated secret never worked on A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(egw_login(&a, &app_id, &secret).await, 4, "the old secret");

    // B writes the call record of a conversation in South; A lists it.
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let port = murmur.port();
    tokio::task::spawn_blocking(move || {
        let mut t = Terminal::connect(port, "talker", Some("South"));
        t.play_and_wait(&fixture("audio/speech.wav"), Duration::from_secs(30));
    })
    .await
    .unwrap();
    let path = format!(
        "/v1/consuming/records?app_id=default&start_time={}&end_time={}&page=1&page_size=10",
        before_ms - 1000,
        before_ms + 600_000
    );
    // Each node lists the row once it applied it (B's own write is applied on B asynchronously,
    // as on A: the call ended in one of B's tasks).
    let first_record = |node: &Bridge| {
        let t0 = Instant::now();
        loop {
            let (status, r) = call(node, "GET", &path, None);
            assert_eq!(status, 200, "{r}");
            if let Some(rec) = r["record_list"].as_array().unwrap().first() {
                assert_eq!(r["total"], 1, "{r}");
                return rec.clone();
            }
            assert!(t0.elapsed() < T, "no call record: {r}\n{}", b.logs_tail(40));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let record = first_record(&a);
    assert_eq!(record["group_id"], "ptt:b:South", "{record}");
    assert_eq!(first_record(&b), record, "the same row on B");
    println!("B's call record, listed by A: {record}");
}

/// Customer management's records (seed 002) on two nodes: a customer added through A is listed
/// by B and its info key works there; its code is taken on B too; a user commit B receives is
/// listed by A as the same row (the same receive time); removed through B, it is gone on A
/// with its commits.
#[test]
fn customers_and_their_commits_are_the_same_on_every_node() {
    const CODE: &str = "0513001";
    const TOKEN: &str = "site-commit-token-0001";
    let (_nats, _murmur, a, b) = two_nodes();
    let example = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("customers/{name}"))).unwrap(),
        )
        .unwrap()
    };
    // Each node lists `path` the same once it applied what the other wrote.
    let until = |node: &Bridge, path: &str, done: &dyn Fn(&Value) -> bool| -> Value {
        let t0 = Instant::now();
        loop {
            let (status, v) = call(node, "GET", path, None);
            if status == 200 && done(&v["data"]) {
                return v["data"].clone();
            }
            assert!(t0.elapsed() < T, "{path}: {status} {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let mut add = example("customer-add.params.json");
    add["commit_token"] = TOKEN.into();
    let (status, added) = call(&a, "POST", "/customer/add", Some(add.clone()));
    assert_eq!((status, &added["code"]), (200, &json!(0)), "{added}");
    let (id, info_key) = (
        added["data"]["id"].as_str().unwrap().to_owned(),
        added["info_key"].as_str().unwrap().to_owned(),
    );
    let listed = until(&b, "/customer/list", &|d| d[0]["id"] == id.as_str());
    assert_eq!(listed[0]["code"], CODE, "{listed}");
    let info = b.request_with(
        "GET",
        &format!("/api/customer/info?code={CODE}"),
        None,
        &[("X-Info-Key", &info_key)],
    );
    assert_eq!(
        info.status, 200,
        "A's customer's info key on B: {}",
        info.body
    );
    let (status, again) = call(&b, "POST", "/customer/add", Some(add));
    assert_eq!(status, 409, "the code is taken on B as on A: {again}");

    // A commit B receives (with the customer's own token) is A's row too.
    let users = example("user-commit.data.json");
    let r = b.request_with(
        "POST",
        "/api/user/commit",
        Some(&json!({ "data": users }).to_string()),
        &[("X-Commit-Token", TOKEN)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let path = format!("/user/list?code={CODE}");
    let on_a = until(&a, &path, &|d| d.as_array().is_some_and(|r| r.len() == 1));
    let on_b = until(&b, &path, &|d| d.as_array().is_some_and(|r| r.len() == 1));
    assert_eq!(on_a, on_b, "the same row on both nodes");
    assert_eq!(on_a[0]["uuid"], users[0]["uuid"], "{on_a}");
    println!("B's user commit, listed by A: {on_a}");

    // Removed through B: gone on A, its commits with it.
    let (status, removed) = call(&b, "POST", &format!("/customer/remove?id={id}"), None);
    assert_eq!(
        (status, &removed["data"]["id"]),
        (200, &json!(id)),
        "{removed}"
    );
    until(&a, "/customer/list", &|d| d == &json!([]));
    let (status, gone) = call(&a, "GET", &path, None);
    assert_eq!(
        status, 404,
        "the customer's commits went with it on A: {gone}"
    );
    let (status, twice) = call(&a, "POST", &format!("/customer/remove?id={id}"), None);
    assert_eq!(status, 404, "removed once, on every node: {twice}");
}

/// The spec's RTCPeer request example `name` (`fixtures/rtcpeer/requests/`), with `fields` set
/// over it.
fn rtcpeer_req(name: &str, fields: Value) -> Value {
    let path = fixture(&format!("rtcpeer/requests/{name}.json"));
    let mut req: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in fields.as_object().unwrap() {
        req[k] = v.clone();
    }
    req
}

/// `u`'s answer to `req` once `done` holds for it (the node applied what another wrote).
/// How many are in hub group `group` of app "default" by `b`'s EGW full sync.
fn in_group(b: &Bridge, group: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::connect(b.addr()).await;
        c.login("default", "default-secret").await;
        let sync = c.full_sync(&["default"]).await.remove(0);
        c.close().await;
        egw_client::Replica::from_sync(&sync)
            .groups
            .get(group)
            .map_or(0, |m| m.len())
    })
}

fn answer_until(u: &mut User, req: Value, done: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let r = u.ws.request(req.clone());
        if done(&r) {
            return r;
        }
        assert!(t0.elapsed() < T, "{req}: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The meeting side's standing rooms (spec 2.7–2.13) and appointments (2.19–2.23) on two
/// nodes: a room alice makes through A, with its password and member, is found through B with
/// the same fields, her member enters it there and a stranger only with the password; her
/// appointment (bob invited) is looked up through B; the room and the appointment deleted
/// through B are gone on A.
#[test]
fn standing_rooms_and_appointments_are_the_same_on_every_node() {
    let (_nats, _murmur, a, b) = two_nodes();
    let mut alice = sign_in(a.addr(), MEETING_APP, "alice");
    let mut bob = sign_in(b.addr(), MEETING_APP, "bob");
    let mut carol = sign_in(b.addr(), MEETING_APP, "carol");
    let room_req = |method: &str, fields: Value| {
        let mut req = json!({"module": "room", "method": method});
        for (k, v) in fields.as_object().unwrap() {
            req[k] = v.clone();
        }
        req
    };
    let enter = |u: &User, room: i64, password: Option<&str>| {
        let mut req =
            json!({"module":"meeting","method":"enter","userId":u.id,"roomId":room,"roomType":1});
        if let Some(p) = password {
            req["password"] = p.into();
        }
        req
    };

    // Through A: the spec's createRoom example, a password, bob a member.
    let created = alice.ws.request(rtcpeer_req("room.createRoom", json!({})));
    assert_eq!(created["result"], 0, "{created}");
    let room = created["roomId"].as_i64().unwrap();
    for (method, fields) in [
        ("modifyRoomPwd", json!({"roomId": room, "password": "1234"})),
        ("addRoomMan", json!({"roomId": room, "userId": bob.id})),
    ] {
        let r = alice.ws.request(room_req(method, fields));
        assert_eq!(r["result"], 0, "{method}: {r}");
    }

    // Through B: the same room, once B applied the last change.
    let found = answer_until(
        &mut bob,
        room_req("getRoomById", json!({"roomId": room})),
        |r| r["result"] == 0 && r["room"]["isHasPwd"] == true,
    );
    assert_eq!(found["room"]["ownerId"], alice.id, "{found}");
    assert_eq!(
        found["room"]["name"],
        rtcpeer_req("room.createRoom", json!({}))["name"],
        "{found}"
    );
    let r = bob
        .ws
        .request(room_req("queryRoomMen", json!({"roomId": room})));
    assert_eq!(r["moderators"][0]["id"], bob.id, "{r}");
    assert_eq!(
        bob.ws.request(enter(&bob, room, None))["result"],
        0,
        "the member enters on B"
    );
    assert_eq!(
        carol.ws.request(enter(&carol, room, None))["result"],
        403,
        "a stranger does not"
    );
    let r = carol.ws.request(enter(&carol, room, Some("1234")));
    assert_eq!(r["result"], 0, "A's password holds on B: {r}");
    // The room is open on B with two people in it: A knows from the shared event state and
    // refuses to delete it, as B would (checkActiveRoom).
    let group = format!("meeting:{room}");
    let t0 = Instant::now();
    while in_group(&a, &group) != 2 {
        assert!(t0.elapsed() < T, "A's state shows the room's two");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = alice
        .ws
        .request(rtcpeer_req("room.deleteRoom", json!({"roomId": room})));
    assert_eq!(r["result"], 409, "in use on B: {r}");
    for u in [&mut bob, &mut carol] {
        let r = u.ws.request(json!({"module":"meeting","method":"exit"}));
        assert_eq!(r["result"], 0, "{r}");
    }
    // carol made a member through A, then removed: on B her earlier password no longer lets
    // her in either, as on one node.
    let members = room_req("queryRoomMen", json!({"roomId": room}));
    let has_carol = |r: &Value| {
        r["moderators"]
            .as_array()
            .is_some_and(|m| m.iter().any(|u| u["id"] == carol.id))
    };
    let r = alice.ws.request(room_req(
        "addRoomMan",
        json!({"roomId": room, "userId": carol.id}),
    ));
    assert_eq!(r["result"], 0, "{r}");
    answer_until(&mut bob, members.clone(), has_carol);
    let r = alice.ws.request(room_req(
        "deleteRoomMen",
        json!({"roomId": room, "moderatorId": carol.id}),
    ));
    assert_eq!(r["result"], 0, "{r}");
    answer_until(&mut bob, members, |r| r["result"] == 0 && !has_carol(r));
    let r = carol.ws.request(enter(&carol, room, None));
    assert_eq!(r["result"], 403, "a removed member, on B: {r}");

    // An appointment made through A, bob invited: B looks it up, and its room.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 3_600_000;
    let r = alice.ws.request(rtcpeer_req(
        "meeting.createAppointment.members",
        json!({"members": [format!("0,bob,,,{},Etc/GMT+8,2", bob.id)],
               "startTime": later, "endTime": later + 1_800_000}),
    ));
    assert_eq!(r["result"], 0, "{r}");
    let (meeting, meeting_room) = (
        r["meetingId"].as_i64().unwrap(),
        r["roomId"].as_i64().unwrap(),
    );
    let query = rtcpeer_req(
        "meeting.queryAppointmentById",
        json!({"meetingId": meeting}),
    );
    let on_b = answer_until(&mut bob, query.clone(), |r| r["result"] == 0);
    let on_a = alice.ws.request(query.clone());
    assert_eq!(
        on_b["meeting"], on_a["meeting"],
        "the same appointment on both nodes"
    );
    assert_eq!(on_b["members"][0]["id"], bob.id, "{on_b}");
    let r = answer_until(
        &mut bob,
        room_req("getRoomById", json!({"roomId": meeting_room})),
        |r| r["result"] == 0 && r["room"]["appointmentId"] == meeting,
    );
    assert_eq!(r["room"]["ownerId"], alice.id, "{r}");

    // Deleted through B (alice signed in there too): gone on A.
    let mut alice_b = sign_in(b.addr(), MEETING_APP, "alice");
    assert_eq!(alice_b.id, alice.id, "one user on every node");
    // Once B's state has bob and carol gone (their exits went through the log).
    answer_until(
        &mut alice_b,
        rtcpeer_req("room.deleteRoom", json!({"roomId": room})),
        |r| r["result"] == 0,
    );
    let r = alice_b.ws.request(rtcpeer_req(
        "meeting.deleteAppointment",
        json!({"meetingId": meeting}),
    ));
    assert_eq!(r["result"], 0, "{r}");
    answer_until(
        &mut alice,
        room_req("getRoomById", json!({"roomId": room})),
        |r| r["result"] == 404,
    );
    let r = answer_until(&mut alice, query, |r| r["result"] == 404);
    assert!(r.get("meeting").is_none(), "{r}");
    // The appointment's own room went with it, on A too.
    answer_until(
        &mut alice,
        room_req("getRoomById", json!({"roomId": meeting_room})),
        |r| r["result"] == 404,
    );
}

/// The user id a cluster node derives for `account` of `app` (docs/cluster.md, "User ids":
/// FNV-1a of both into 10,000,000–99,999,999).
fn derived_id(app: &str, account: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in app.bytes().chain([0]).chain(account.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    10_000_000 + (h % 89_999_999) as i64
}

/// A meeting account's user id is a shared record: carol's derived id is a dial-in's on A, so A
/// gives her another; B, which has no such dial-in, gives her the id A gave once it applied
/// A's record — one user on both nodes, not two.
#[test]
fn a_meeting_accounts_user_id_is_the_same_on_every_node() {
    let taken = derived_id(MEETING_APP.0, "carol");
    let dial_in = format!(
        "[[meeting.dial_in]]\nuser_id = {taken}\nserver = \"a\"\naccount = \"bridge-a\"\nname = \"North\"\n"
    );
    let (_nats, _murmur, a, b) = two_nodes_with(&dial_in);
    let on_a = sign_in(a.addr(), MEETING_APP, "carol");
    assert_ne!(on_a.id, taken, "the dial-in keeps its id on A");
    // B has applied A's record once it applied as many as A wrote (carol's is A's only one).
    let metric = |n: &Bridge, name: &str| n.metric(name, &[]);
    let t0 = Instant::now();
    while metric(&a, "pttbridge_cluster_records_written_total") < 1.0
        || metric(&b, "pttbridge_cluster_records_applied_total")
            < metric(&a, "pttbridge_cluster_records_written_total")
    {
        assert!(t0.elapsed() < T, "A's account record never reached B");
        std::thread::sleep(Duration::from_millis(50));
    }
    let on_b = sign_in(b.addr(), MEETING_APP, "carol");
    assert_eq!(on_b.id, on_a.id, "carol is one user on both nodes");
}

/// An operator's page signed in through A works on B (one token, one session key); signed out
/// through A, its cookie is refused on B too: the sign-out goes through the records stream.
#[test]
fn an_operator_signed_out_on_one_node_is_signed_out_on_every_node() {
    use testkit::bridge::OPERATOR_TOKEN;
    use testkit::http::request_with;
    let (_nats, _murmur, a, b) = two_nodes();
    let body = json!({ "token": OPERATOR_TOKEN }).to_string();
    let r = request_with(a.addr(), "POST", "/api/login", Some(&body), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r
        .headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .expect("a session cookie");
    let cookie = set.split(';').next().unwrap().to_string();
    let signed_in = |node: &Bridge| {
        let r = request_with(
            node.addr(),
            "GET",
            "/api/session",
            None,
            &[("Cookie", &cookie)],
        )
        .unwrap();
        serde_json::from_str::<Value>(&r.body).unwrap()["operator"] == true
    };
    assert!(
        signed_in(&a) && signed_in(&b),
        "the page's session on both nodes"
    );
    let r = request_with(
        a.addr(),
        "POST",
        "/api/logout",
        None,
        &[("Cookie", &cookie)],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!signed_in(&a), "signed out on A at once");
    let t0 = Instant::now();
    while signed_in(&b) {
        assert!(t0.elapsed() < T, "B still takes the signed-out session");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = request_with(b.addr(), "GET", "/metrics", None, &[("Cookie", &cookie)]).unwrap();
    assert_eq!(r.status, 401, "an operator route on B: {}", r.body);
}
