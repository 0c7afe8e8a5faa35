//! Rooms on the meeting side (spec 2.6–2.18): standing rooms, passwords, members, look-up,
//! checked against the spec's examples in `fixtures/rtcpeer/`, with signalling-only RTCPeer
//! clients (`testkit::rtcpeer`); a standing room that dials its PTT channel in, with an aiortc
//! participant, Debian's murmurd and pymumble terminals; and a standing room surviving a
//! restart of the bridge with a file-backed store.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::bridge::{Bridge, ptt_server_toml};
use testkit::meeting::{Participant, hear_from_ptt, speak_into_ptt};
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::rtcpeer::{User, sign_in};
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const APP: (&str, &str) = ("test", "test");
const NORTH: i64 = 9001;

const MEETING: &str = r#"
[meeting]
[[meeting.apps]]
app_id = "test"
secret = "test"
"#;

fn spec(path: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("rtcpeer/{path}")))
        .unwrap_or_else(|e| panic!("fixture {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// `req` with `fields` set over it.
fn with(mut req: Value, fields: Value) -> Value {
    for (k, v) in fields.as_object().unwrap() {
        req[k] = v.clone();
    }
    req
}

/// The spec's request example `name`, with `fields` set over it.
fn spec_req(name: &str, fields: Value) -> Value {
    with(spec(&format!("requests/{name}.json")), fields)
}

/// `got` has the shape of the spec's reply example `name`: the same keys, each of the same
/// JSON type, down through objects and the first element of arrays.
fn assert_shape(got: &Value, name: &str) {
    fn same(got: &Value, want: &Value, at: &str) {
        match (got, want) {
            (Value::Object(g), Value::Object(w)) => {
                let mut gk: Vec<_> = g.keys().collect();
                let mut wk: Vec<_> = w.keys().collect();
                gk.sort();
                wk.sort();
                assert_eq!(gk, wk, "keys at {at}");
                for (k, v) in w {
                    same(&g[k], v, &format!("{at}.{k}"));
                }
            }
            (Value::Array(g), Value::Array(w)) => {
                if let (Some(g), Some(w)) = (g.first(), w.first()) {
                    same(g, w, &format!("{at}[0]"));
                }
            }
            (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Bool(_), Value::Bool(_))
            | (Value::Null, Value::Null) => {}
            _ => panic!("{at}: got {got}, the spec's example has {want}"),
        }
    }
    let want = spec(&format!("replies/{name}.json"));
    same(got, &want, name);
    assert_eq!(got["result"], want["result"], "{name}: {got}");
}

fn room_req(u: &mut User, method: &str, fields: Value) -> Value {
    u.ws.request(with(json!({"module":"room","method":method}), fields))
}

fn enter(u: &mut User, room: i64, password: Option<&str>) -> Value {
    let mut req =
        json!({"module":"meeting","method":"enter","userId":u.id,"roomId":room,"roomType":1});
    if let Some(p) = password {
        req["password"] = p.into();
    }
    u.ws.request(req)
}

fn exit(u: &mut User) {
    let r = u.ws.request(json!({"module":"meeting","method":"exit"}));
    assert_eq!(r["result"], 0, "{r}");
}

#[test]
fn standing_rooms_passwords_members_and_look_up_as_the_spec_shows() {
    let bridge = Bridge::start(BIN, MEETING);
    let mut alice = sign_in(bridge.addr(), APP, "alice");
    let mut bob = sign_in(bridge.addr(), APP, "bob");
    let mut carol = sign_in(bridge.addr(), APP, "carol");
    let mut dave = sign_in(bridge.addr(), APP, "dave");

    // createRoom: the spec's 2.7.4 example.
    let r = alice.ws.request(spec_req("room.createRoom", json!({})));
    assert_shape(&r, "room.createRoom");
    let room = r["roomId"].as_i64().unwrap();
    // Another one: ids are random, not the next number.
    let other = alice.ws.request(spec_req("room.createRoom", json!({})))["roomId"]
        .as_i64()
        .unwrap();
    assert!(
        (other - room).abs() > 1,
        "room ids {room}, {other} in sequence"
    );

    // updateRoom (2.8.4's example, all fields), then modifyRoomPwd (2.11.4).
    let r = alice
        .ws
        .request(spec_req("room.updateRoom", json!({"roomId": room})));
    assert_shape(&r, "room.updateRoom");
    assert_eq!(r["roomId"], room);
    let r = alice
        .ws
        .request(spec_req("room.modifyRoomPwd", json!({"roomId": room})));
    assert_shape(&r, "room.modifyRoomPwd");

    // getRoomById (2.6) and queryMyRooms (2.17): the owner sees the room as the bean of 8.3.
    let r = alice
        .ws
        .request(spec_req("room.getRoomById", json!({"roomId": room})));
    assert_shape(&r, "room.getRoomById");
    let updated = spec("requests/room.updateRoom.json");
    assert_eq!(r["room"]["id"], room);
    assert_eq!(r["room"]["ownerId"], alice.id);
    assert_eq!(r["room"]["name"], updated["name"]);
    assert_eq!(r["room"]["logo"], updated["pictureuri"]);
    assert_eq!(r["room"]["comment"], updated["desc"]);
    assert_eq!(r["room"]["isHasPwd"], true);
    let mut r = alice.ws.request(spec_req("room.queryMyRooms", json!({})));
    let rooms = r["rooms"].as_array().unwrap().clone();
    assert_eq!(rooms.len(), 2, "{r}");
    // The updated one (the other has no logo) as the spec's listing shows it.
    r["rooms"] = rooms.into_iter().filter(|x| x["id"] == room).collect();
    assert_shape(&r, "room.queryMyRooms");

    // checkRoomHasPwd (2.13).
    let r = alice
        .ws
        .request(spec_req("room.checkRoomHasPwd", json!({"roomId": room})));
    assert_shape(&r, "room.checkRoomHasPwd");
    assert_eq!(r["isHasPwd"], true);

    // A stranger learns nothing: the room answers as an unknown one, is not listed, and
    // `enter` is refused without (or with a wrong) password.
    let unknown = room_req(&mut carol, "getRoomById", json!({"roomId": 1}));
    let hidden = room_req(&mut carol, "getRoomById", json!({"roomId": room}));
    assert_eq!(unknown["result"], 404, "{unknown}");
    assert_eq!(hidden["result"], unknown["result"]);
    assert_eq!(
        hidden["message"]
            .as_str()
            .unwrap()
            .replace(&room.to_string(), "N"),
        unknown["message"].as_str().unwrap().replace('1', "N"),
        "a hidden room's refusal is an unknown room's"
    );
    assert!(hidden.get("room").is_none());
    let r = room_req(&mut carol, "queryMyRooms", json!({}));
    assert_eq!(r["rooms"], json!([]), "{r}");
    for what in ["checkActiveRoom", "queryRoomMen"] {
        let r = room_req(&mut carol, what, json!({"roomId": room}));
        assert_eq!(r["result"], 404, "{what}: {r}");
    }
    let r = room_req(&mut carol, "checkRoomHasPwd", json!({"roomId": 1}));
    assert_eq!(
        r["isHasPwd"], true,
        "an unknown room needs a password too: {r}"
    );
    let refused = enter(&mut carol, room, None);
    assert_eq!(refused["result"], 403, "{refused}");
    assert_eq!(enter(&mut carol, room, Some("4321"))["result"], 403);
    assert_eq!(enter(&mut carol, 1, Some("1234"))["result"], 403);
    // Nor may a stranger change it.
    let r = room_req(&mut carol, "deleteRoom", json!({"roomId": room}));
    assert_eq!(r["result"], 404, "{r}");

    // checkRoomPwd (2.12): 0 wrong, 1 right — and then bob may enter (the spec's enter has no
    // password: the check lets him in).
    let r = bob.ws.request(spec_req(
        "room.checkRoomPwd",
        json!({"roomId": room, "password": "nope"}),
    ));
    assert_eq!(r["result"], 0, "{r}");
    let r = bob
        .ws
        .request(spec_req("room.checkRoomPwd", json!({"roomId": room})));
    assert_shape(&r, "room.checkRoomPwd");
    let r = enter(&mut bob, room, None);
    assert_eq!(r["result"], 0, "{r}");
    assert_eq!(r["room"]["isHasPwd"], true);
    assert_eq!(r["room"]["name"], updated["name"]);
    // Carol, with the password in `enter` (the bridge's extension).
    let r = enter(&mut carol, room, Some("1234"));
    assert_eq!(r["result"], 0, "{r}");

    // checkActiveRoom (2.18): in use now; deleteRoom refused while it is.
    let r = alice
        .ws
        .request(spec_req("room.checkActiveRoom", json!({"roomId": room})));
    assert_eq!(r["result"], 1, "in use: {r}");
    let r = room_req(&mut alice, "deleteRoom", json!({"roomId": room}));
    assert_eq!(r["result"], 409, "{r}");
    // Only the owner changes it: bob is in the room, and still may not.
    for (method, fields) in [
        ("deleteRoom", json!({"roomId": room})),
        ("modifyRoomPwd", json!({"roomId": room, "password": "x"})),
        ("addRoomMan", json!({"roomId": room, "userId": bob.id})),
        (
            "updateRoom",
            spec_req("room.updateRoom", json!({"roomId": room})),
        ),
    ] {
        let r = room_req(&mut bob, method, fields);
        assert_eq!(r["result"], 403, "{method}: {r}");
    }
    exit(&mut bob);
    exit(&mut carol);
    let r = alice
        .ws
        .request(spec_req("room.checkActiveRoom", json!({"roomId": room})));
    assert_shape(&r, "room.checkActiveRoom");

    // Members (2.14–2.16): dave, added, sees and enters the room without the password.
    assert_eq!(
        room_req(&mut dave, "getRoomById", json!({"roomId": room}))["result"],
        404
    );
    let r = alice.ws.request(spec_req(
        "room.addRoomMan",
        json!({"roomId": room, "userId": dave.id}),
    ));
    assert_shape(&r, "room.addRoomMan");
    let r = alice
        .ws
        .request(spec_req("room.queryRoomMen", json!({"roomId": room})));
    assert_shape(&r, "room.queryRoomMen");
    assert_eq!(r["moderators"], json!([{"id": dave.id, "name": "dave"}]));
    let r = room_req(&mut dave, "queryMyRooms", json!({}));
    assert_eq!(r["rooms"][0]["id"], room, "{r}");
    let r = room_req(&mut dave, "checkRoomHasPwd", json!({"roomId": room}));
    assert_eq!(r["isHasPwd"], true);
    assert_eq!(enter(&mut dave, room, None)["result"], 0);
    exit(&mut dave);
    let r = alice.ws.request(spec_req(
        "room.deleteRoomMen",
        json!({"roomId": room, "moderatorId": dave.id}),
    ));
    assert_shape(&r, "room.deleteRoomMen");
    assert_eq!(
        room_req(&mut dave, "getRoomById", json!({"roomId": room}))["result"],
        404
    );
    assert_eq!(enter(&mut dave, room, None)["result"], 403);

    // The password removed (""): still private — only those it admits may enter.
    let r = room_req(
        &mut alice,
        "modifyRoomPwd",
        json!({"roomId": room, "password": ""}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let r = room_req(&mut alice, "getRoomById", json!({"roomId": room}));
    assert_eq!(r["room"]["isHasPwd"], false);
    assert_eq!(enter(&mut dave, room, None)["result"], 403);

    // deleteRoom (2.9.4): gone for everyone, the owner included.
    let r = alice
        .ws
        .request(spec_req("room.deleteRoom", json!({"roomId": room})));
    assert_shape(&r, "room.deleteRoom");
    assert_eq!(
        room_req(&mut alice, "getRoomById", json!({"roomId": room}))["result"],
        404
    );
    assert_eq!(enter(&mut alice, room, None)["result"], 403);
    let r = room_req(&mut alice, "queryMyRooms", json!({}));
    assert_eq!(r["rooms"].as_array().unwrap().len(), 1, "{r}");

    // A public room without a password is open to everyone; temporary rooms cannot be
    // changed or deleted with the standing rooms' methods (they end when finished or empty).
    let public = room_req(
        &mut alice,
        "createRoom",
        json!({"roomtype":1,"name":"open","numberLimit":5,"isPublic":true}),
    )["roomId"]
        .as_i64()
        .unwrap();
    assert_eq!(enter(&mut dave, public, None)["result"], 0);
    let temp = alice.new_room();
    let r = room_req(&mut alice, "deleteRoom", json!({"roomId": temp}));
    assert_eq!(r["result"], 409, "{r}");
    // ...but a temporary room takes a password and members like a standing one.
    let r = room_req(
        &mut alice,
        "modifyRoomPwd",
        json!({"roomId": temp, "password": "t"}),
    );
    assert_eq!(r["result"], 0, "{r}");
    assert_eq!(enter(&mut bob, temp, Some("t"))["result"], 0);

    // Every method is described in the metrics: standing rooms made and deleted, refusals.
    assert_eq!(
        bridge.metric(
            "pttbridge_meeting_standing_rooms_total",
            &[("change", "created")]
        ),
        3.0
    );
    assert_eq!(
        bridge.metric(
            "pttbridge_meeting_standing_rooms_total",
            &[("change", "deleted")]
        ),
        1.0
    );
    assert!(
        bridge.metric(
            "pttbridge_auth_failures_total",
            &[("surface", "rtcpeer"), ("reason", "room_password")]
        ) >= 2.0
    );
}

#[test]
fn bad_input_gets_protocol_errors_and_the_socket_stays_open() {
    let bridge = Bridge::start(BIN, MEETING);
    let mut alice = sign_in(bridge.addr(), APP, "alice");
    let mut mallory = sign_in(bridge.addr(), APP, "mallory");
    let room = room_req(
        &mut alice,
        "createRoom",
        json!({"roomtype":1,"name":"ops","numberLimit":5,"isPublic":false}),
    )["roomId"]
        .as_i64()
        .unwrap();
    let unknown = 1;
    let long = "x".repeat(65);
    let cases: Vec<(&str, Value, i64)> = vec![
        // Missing and ill-typed fields: 422.
        (
            "createRoom",
            json!({"name":"a","numberLimit":5,"isPublic":false}),
            422,
        ),
        (
            "createRoom",
            json!({"roomtype":"audio","name":"a","numberLimit":5,"isPublic":false}),
            422,
        ),
        (
            "createRoom",
            json!({"roomtype":1,"name":"a","numberLimit":5,"isPublic":"no"}),
            422,
        ),
        (
            "createRoom",
            json!({"roomtype":9,"name":"a","numberLimit":5,"isPublic":false}),
            422,
        ),
        (
            "createRoom",
            json!({"roomtype":1,"name":"  ","numberLimit":5,"isPublic":false}),
            422,
        ),
        (
            "createRoom",
            json!({"roomtype":1,"name":long,"numberLimit":5,"isPublic":false}),
            422,
        ),
        (
            "createRoom",
            json!({"roomtype":1,"name":"a","numberLimit":5,"isPublic":false,"dialIn":[42]}),
            422,
        ),
        (
            "createRoom",
            json!({"roomtype":1,"name":"a","numberLimit":5,"isPublic":false,"desc":"a\u{7}b"}),
            422,
        ),
        (
            "updateRoom",
            json!({"roomtype":1,"name":"a","numberLimit":5,"isPublic":false}),
            422,
        ),
        (
            "updateRoom",
            json!({"roomId":room,"name":"a","numberLimit":5,"isPublic":false}),
            422,
        ),
        ("deleteRoom", json!({}), 422),
        ("deleteRoom", json!({"roomId":"five"}), 422),
        ("modifyRoomPwd", json!({"roomId":room}), 422),
        ("modifyRoomPwd", json!({"roomId":room,"password":1234}), 422),
        ("modifyRoomPwd", json!({"roomId":room,"password":long}), 422),
        ("checkRoomPwd", json!({"roomId":room}), 422),
        ("checkRoomHasPwd", json!({"roomId":[room]}), 422),
        ("addRoomMan", json!({"roomId":room}), 422),
        ("addRoomMan", json!({"roomId":room,"userId":-3}), 422),
        ("deleteRoomMen", json!({"roomId":room,"userId":5}), 422),
        ("queryRoomMen", json!({}), 422),
        ("getRoomById", json!({"roomId":null}), 422),
        ("checkActiveRoom", json!({"roomId":true}), 422),
        // Unknown rooms: 404 (checkRoomPwd says 0, checkRoomHasPwd true: see the other test).
        (
            "updateRoom",
            json!({"roomId":unknown,"roomtype":1,"name":"a","numberLimit":5,"isPublic":false}),
            404,
        ),
        ("deleteRoom", json!({"roomId":unknown}), 404),
        (
            "modifyRoomPwd",
            json!({"roomId":unknown,"password":"1"}),
            404,
        ),
        ("addRoomMan", json!({"roomId":unknown,"userId":5}), 404),
        (
            "deleteRoomMen",
            json!({"roomId":unknown,"moderatorId":5}),
            404,
        ),
        ("queryRoomMen", json!({"roomId":unknown}), 404),
        ("getRoomById", json!({"roomId":unknown}), 404),
        ("checkActiveRoom", json!({"roomId":unknown}), 404),
        ("checkRoomPwd", json!({"roomId":unknown,"password":"1"}), 0),
        // A member who is not one: 404.
        ("deleteRoomMen", json!({"roomId":room,"moderatorId":5}), 404),
    ];
    for (method, fields, want) in &cases {
        let r = room_req(&mut alice, method, fields.clone());
        assert_eq!(r["result"], *want, "{method} {fields}: {r}");
        assert_eq!(
            (r["module"].as_str(), r["method"].as_str()),
            (Some("room"), Some(*method))
        );
        if *want != 0 {
            assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
        }
    }
    // enter: an ill-typed password, an unknown room, a wrong password.
    let r = alice.ws.request(json!({"module":"meeting","method":"enter","userId":alice.id,"roomId":room,"roomType":1,"password":12}));
    assert_eq!(r["result"], 422, "{r}");
    assert_eq!(enter(&mut alice, unknown, None)["result"], 403);
    assert_eq!(
        room_req(
            &mut alice,
            "modifyRoomPwd",
            json!({"roomId":room,"password":"1234"})
        )["result"],
        0
    );
    // Guessing is throttled: after 10 wrong passwords (checkRoomPwd or enter) the answer is
    // 429, even for the right one.
    for i in 0..10 {
        let r = if i % 2 == 0 {
            enter(&mut mallory, room, Some(&format!("{i}")))
        } else {
            room_req(
                &mut mallory,
                "checkRoomPwd",
                json!({"roomId":room,"password":format!("{i}")}),
            )
        };
        assert!(r["result"] == 403 || r["result"] == 0, "guess {i}: {r}");
    }
    let r = room_req(
        &mut mallory,
        "checkRoomPwd",
        json!({"roomId":room,"password":"1234"}),
    );
    assert_eq!(r["result"], 429, "{r}");
    assert_eq!(enter(&mut mallory, room, Some("1234"))["result"], 429);
    // The sockets are still open and answer.
    for u in [&mut alice, &mut mallory] {
        let r = room_req(u, "queryMyRooms", json!({}));
        assert_eq!(r["result"], 0, "{r}");
    }
    let bad = cases.iter().filter(|c| c.2 == 422).count() + 1;
    assert!(
        bridge.metric("pttbridge_meeting_errors_total", &[("kind", "bad_fields")]) >= bad as f64,
        "every 422 counted"
    );
}

#[test]
fn a_standing_room_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[storage]\npath = \"{}\"\n{MEETING}",
        dir.path().join("bridge.sqlite3").display()
    );
    let (room, alice_id, bob_id) = {
        let bridge = Bridge::start(BIN, &config);
        // Another account first, so ids given after a restart in another order would differ.
        let _zed = sign_in(bridge.addr(), APP, "zed");
        let mut alice = sign_in(bridge.addr(), APP, "alice");
        let bob = sign_in(bridge.addr(), APP, "bob");
        let r = alice.ws.request(spec_req("room.createRoom", json!({})));
        let room = r["roomId"].as_i64().unwrap();
        room_req(
            &mut alice,
            "modifyRoomPwd",
            json!({"roomId":room,"password":"1234"}),
        );
        room_req(
            &mut alice,
            "addRoomMan",
            json!({"roomId":room,"userId":bob.id}),
        );
        (room, alice.id, bob.id)
        // The bridge is killed here (SIGKILL, no shutdown).
    };
    let bridge = Bridge::start(BIN, &config);
    let mut bob = sign_in(bridge.addr(), APP, "bob");
    let mut alice = sign_in(bridge.addr(), APP, "alice");
    let mut carol = sign_in(bridge.addr(), APP, "carol");
    assert_eq!((alice.id, bob.id), (alice_id, bob_id), "user ids are kept");
    let r = room_req(&mut alice, "getRoomById", json!({"roomId": room}));
    assert_eq!(r["result"], 0, "{r}");
    assert_eq!(r["room"]["ownerId"], alice.id);
    assert_eq!(
        r["room"]["name"],
        spec("requests/room.createRoom.json")["name"]
    );
    assert_eq!(r["room"]["isHasPwd"], true);
    let r = room_req(&mut alice, "queryRoomMen", json!({"roomId": room}));
    assert_eq!(r["moderators"][0]["id"], bob.id, "{r}");
    assert_eq!(enter(&mut bob, room, None)["result"], 0, "a member enters");
    assert_eq!(enter(&mut carol, room, None)["result"], 403);
    assert_eq!(
        enter(&mut carol, room, Some("1234"))["result"],
        0,
        "the password holds"
    );
}

#[test]
fn a_standing_room_dials_its_ptt_channel_in_with_audio_both_ways() {
    let server = Murmur::start(&["North"]);
    let config = format!(
        "{}\n{MEETING}\n[[meeting.dial_in]]\nuser_id = {NORTH}\nserver = \"local\"\naccount = \"bridge\"\nname = \"North\"\n",
        ptt_server_toml("local", &server, &[("bridge", "North")]),
    );
    let bridge = Bridge::start(BIN, &config);
    bridge.wait_health(
        "connected in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    let mut events = bridge.events();
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut bob = Terminal::connect(server.port(), "bob", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");

    let r = carol.request(spec_req("room.createRoom.dialIn", json!({})));
    assert_eq!(r["result"], 0, "{r}");
    let room = r["roomId"].as_i64().unwrap();
    // Nothing is dialled until someone enters.
    assert!(
        bridge.health()["sides"]["meeting"]["links"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = carol.request(
        json!({"module":"meeting","method":"enter","userId":carol.id(),"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let entered = carol.push("EnterRoom", |m| m["client"]["id"] == NORTH, T);
    assert_eq!(entered["client"]["mode"], "ptt");
    carol.push(
        "onPublished",
        |m| m["client"]["id"] == NORTH && m["published"] == true,
        T,
    );
    let up = events
        .try_expect(|e| e["type"] == "link.up", T)
        .expect("link.up");
    assert_eq!(up["group_id"], format!("meeting:{room}"));

    // PTT → meeting: alice talks in North, carol hears her.
    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(|e| e["event"] == "published", T);
    carol.cmd(json!({"cmd":"play","client":NORTH}));
    carol.expect(
        |e| {
            e["event"] == "pc_state"
                && e["pc"] == format!("play:{NORTH}")
                && e["state"] == "connected"
        },
        T,
    );
    let dir = tempfile::tempdir().unwrap();
    let (cmp, _) = hear_from_ptt(
        &mut carol,
        &mut alice,
        &fixture("audio/speech.wav"),
        &dir.path().join("carol.wav"),
        "PTT → standing room",
    );
    println!("PTT → standing room: {cmp}");
    cmp.assert_matches(0.9, 0.1);
    // meeting → PTT: carol talks, bob hears her in North.
    let cmp = speak_into_ptt(
        &mut carol,
        &mut bob,
        &fixture("audio/speech.wav"),
        &dir.path().join("bob.wav"),
        "standing room → PTT",
    );
    println!("standing room → PTT: {cmp}");
    cmp.assert_matches(0.85, 0.1);

    // The room empties: the link ends (not only when the room closes, minutes later).
    let r = carol.request(json!({"module":"meeting","method":"exit"}));
    assert_eq!(r["result"], 0, "{r}");
    let down = events
        .try_expect(|e| e["type"] == "link.down", T)
        .expect("link.down");
    assert_eq!(down["group_id"], format!("meeting:{room}"));
    assert_eq!(down["detail"]["reason"], "room empty", "{down}");
    bridge.wait_health(
        "no links",
        |h| {
            h["sides"]["meeting"]["links"]
                .as_array()
                .is_some_and(Vec::is_empty)
        },
        T,
    );
    // Entering again dials it in again.
    let r = carol.request(
        json!({"module":"meeting","method":"enter","userId":carol.id(),"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    carol.push("EnterRoom", |m| m["client"]["id"] == NORTH, T);
}
