//! Rooms on the meeting side (spec 2.6–2.18): standing rooms, passwords, members, look-up,
//! checked against the spec's examples in `fixtures/rtcpeer/`, with signalling-only RTCPeer
//! clients (`testkit::rtcpeer`); a standing room that dials its PTT channel in, with an aiortc
//! participant, Debian's murmurd and pymumble terminals; and a standing room surviving a
//! restart of the bridge with a file-backed store; appointments (2.19–2.24, 2.33, 5.12).

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
    let (room, alice_id, bob_id, meeting) = {
        let bridge = Bridge::start(BIN, &config);
        // Another account first, so ids given after a restart in another order would differ.
        let _zed = sign_in(bridge.addr(), APP, "zed");
        let mut alice = sign_in(bridge.addr(), APP, "alice");
        let bob = sign_in(bridge.addr(), APP, "bob");
        let r = alice.ws.request(spec_req("room.createRoom", json!({})));
        let room = r["roomId"].as_i64().unwrap();
        for (method, fields) in [
            ("modifyRoomPwd", json!({"roomId":room,"password":"1234"})),
            ("addRoomMan", json!({"roomId":room,"userId":bob.id})),
        ] {
            assert_eq!(room_req(&mut alice, method, fields)["result"], 0);
        }
        let r = meeting_req(&mut alice, "createAppointment", json!({"name":"kept"}));
        assert_eq!(r["result"], 0, "{r}");
        (room, alice.id, bob.id, r["meetingId"].clone())
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
    let r = meeting_req(
        &mut alice,
        "queryAppointmentById",
        json!({"meetingId": meeting}),
    );
    assert_eq!(r["meeting"]["name"], "kept", "appointments are kept: {r}");
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn meeting_req(u: &mut User, method: &str, fields: Value) -> Value {
    u.ws.request(with(json!({"module":"meeting","method":method}), fields))
}

#[test]
fn appointments_are_stored_looked_up_and_entered_by_invite_code() {
    let bridge = Bridge::start(BIN, MEETING);
    let mut alice = sign_in(bridge.addr(), APP, "alice");
    let mut bob = sign_in(bridge.addr(), APP, "bob");
    let mut carol = sign_in(bridge.addr(), APP, "carol");
    let mut dave = sign_in(bridge.addr(), APP, "dave");

    // createAppointment: 2.19.4's first example, then its second (bob invited, topics).
    let r = alice
        .ws
        .request(spec_req("meeting.createAppointment", json!({})));
    assert_shape(&r, "meeting.createAppointment");
    let m1 = r["meetingId"].as_i64().unwrap();
    let r = alice.ws.request(spec_req(
        "meeting.queryAppointmentById",
        json!({"meetingId": m1}),
    ));
    assert_shape(&r, "meeting.queryAppointmentById");
    assert_eq!(r["meeting"]["name"], "test");
    assert_eq!(r["meeting"]["description"], "abc");
    assert_eq!(r["meeting"]["timeLength"], 60, "an hour by default: {r}");
    assert_eq!(r["meeting"]["from"]["name"], "alice");

    let later = now_ms() + 3_600_000;
    let r = alice.ws.request(spec_req(
        "meeting.createAppointment.members",
        json!({"members": [format!("0,bob,,,{},Etc/GMT+8,2", bob.id)],
               "topics": [{"title":"议题","content":"具体内容"}],
               "startTime": later, "endTime": later + 1_800_000}),
    ));
    assert_eq!(r["result"], 0, "{r}");
    let (m2, room2) = (
        r["meetingId"].as_i64().unwrap(),
        r["roomId"].as_i64().unwrap(),
    );
    let r = alice.ws.request(spec_req(
        "meeting.queryAppointmentById",
        json!({"meetingId": m2}),
    ));
    assert_shape(&r, "meeting.queryAppointmentById");
    assert_eq!(r["members"][0]["id"], bob.id);
    assert_eq!(r["members"][0]["name"], "bob");
    assert_eq!(r["topics"][0]["title"], "议题");
    assert_eq!(r["meeting"]["timeLength"], 30);
    assert_eq!(r["meeting"]["roomId"], room2);
    let code = r["meeting"]["inviteCode"].as_i64().unwrap();
    // The invitee is a member of its room: sees the meeting and the room, and enters.
    assert_eq!(
        meeting_req(&mut bob, "queryAppointmentById", json!({"meetingId": m2}))["result"],
        0
    );
    let r = room_req(&mut bob, "getRoomById", json!({"roomId": room2}));
    assert_eq!(r["room"]["appointmentId"], m2, "{r}");
    assert_eq!(enter(&mut bob, room2, None)["result"], 0);
    exit(&mut bob);

    // A stranger learns nothing without the invite code; with it, the meeting has not begun.
    let r = meeting_req(&mut carol, "queryAppointmentById", json!({"meetingId": m2}));
    assert_eq!(r["result"], 404, "{r}");
    let r = carol
        .ws
        .request(spec_req("meeting.getRoomByInviteCode", json!({"code": m2})));
    assert_eq!(r["result"], 5, "{r}");
    assert!(r.get("room").is_none());
    let wrong = if code == 99_999_999 {
        code - 1
    } else {
        code + 1
    };
    let r = meeting_req(
        &mut carol,
        "getRoomByInviteCode",
        json!({"code": m2, "inviteCode": wrong}),
    );
    assert_eq!(r["result"], 5, "{r}");
    let r = meeting_req(
        &mut carol,
        "getRoomByInviteCode",
        json!({"code": m2, "inviteCode": code}),
    );
    assert_eq!(r["result"], 3, "not started: {r}");
    assert_eq!(enter(&mut carol, room2, None)["result"], 403);

    // updateAppointment (2.21.4's example, now starting a second ago): the code lets carol in.
    let r = alice.ws.request(spec_req(
        "meeting.updateAppointment",
        json!({"meetingId": m2, "startTime": now_ms() - 1000, "endTime": now_ms() + 3_600_000}),
    ));
    assert_shape(&r, "meeting.updateAppointment");
    assert_eq!((&r["meetingId"], &r["roomId"]), (&json!(m2), &json!(room2)));
    let r = carol.ws.request(spec_req(
        "meeting.getRoomByInviteCode.inviteCode",
        json!({"code": m2, "inviteCode": code}),
    ));
    assert_shape(&r, "meeting.getRoomByInviteCode");
    assert_eq!(r["room"]["id"], room2);
    assert_eq!(r["room"]["appointmentName"], "testabc");
    assert_eq!(r["meeting"]["name"], "testabc");
    assert_eq!(r["meeting"]["description"], "abceee");
    let entered = enter(&mut carol, room2, None);
    assert_eq!(entered["result"], 0, "{entered}");
    assert_eq!(entered["room"]["appointmentId"], m2);

    // queryAppointments (2.23.4: no parameters: today and the next days): each sees its own.
    let r = alice
        .ws
        .request(spec_req("meeting.queryAppointments", json!({})));
    assert_shape(&r, "meeting.queryAppointments");
    let ids = |r: &Value| -> Vec<i64> {
        r["meetings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect()
    };
    let mut mine = ids(&r);
    mine.sort_unstable();
    let mut want = vec![m1, m2];
    want.sort_unstable();
    assert_eq!(mine, want);
    assert_eq!(
        ids(&meeting_req(&mut carol, "queryAppointments", json!({}))),
        vec![m2]
    );
    assert_eq!(
        ids(&meeting_req(&mut dave, "queryAppointments", json!({}))),
        Vec::<i64>::new()
    );
    let r = meeting_req(
        &mut alice,
        "queryAppointments",
        json!({"pageNo": 1, "pageSize": 1}),
    );
    assert_eq!(r["meetings"].as_array().unwrap().len(), 1, "{r}");

    // deleteAppointment: the creator's only; not while its room is in use (result 2).
    for u in [&mut bob, &mut carol] {
        let r = meeting_req(u, "deleteAppointment", json!({"meetingId": m2}));
        assert_eq!(r["result"], 403, "{r}");
    }
    let r = meeting_req(&mut alice, "deleteAppointment", json!({"meetingId": m2}));
    assert_eq!(r["result"], 2, "in use: {r}");
    exit(&mut carol);
    let r = alice.ws.request(spec_req(
        "meeting.deleteAppointment",
        json!({"meetingId": m2}),
    ));
    assert_shape(&r, "meeting.deleteAppointment");
    let r = meeting_req(&mut alice, "queryAppointmentById", json!({"meetingId": m2}));
    assert_eq!(r["result"], 404, "{r}");
    let r = room_req(&mut alice, "getRoomById", json!({"roomId": room2}));
    assert_eq!(r["result"], 404, "its room went with it: {r}");

    // instantAppointment (2.33.4): starts now; found by its id.
    let r = alice
        .ws
        .request(spec_req("meeting.instantAppointment", json!({})));
    assert_shape(&r, "meeting.instantAppointment");
    let r = alice.ws.request(spec_req(
        "meeting.getRoomByInviteCode",
        json!({"code": r["meetingId"]}),
    ));
    assert_eq!(r["result"], 0, "{r}");
    assert_eq!(r["meeting"]["name"], "Test Room");

    // meeting.new (5.12) stores too; in a room of one's own only.
    let r = alice.ws.request(spec_req("meeting.new", json!({})));
    assert_eq!(r["result"], 0, "{r}");
    let r = meeting_req(
        &mut alice,
        "queryAppointmentById",
        json!({"meetingId": r["id"]}),
    );
    assert_eq!(r["meeting"]["name"], "Weekly", "{r}");
    assert_eq!(r["meeting"]["startTime"], "2024-01-01T08:00:00.000Z");
    // Its `pin` is the new room's password.
    let r = alice
        .ws
        .request(spec_req("meeting.new", json!({"pin": 4321})));
    let pinned = r["roomId"].as_i64().unwrap();
    let r = room_req(&mut alice, "getRoomById", json!({"roomId": pinned}));
    assert_eq!(r["room"]["isHasPwd"], true, "{r}");
    assert_eq!(enter(&mut dave, pinned, None)["result"], 403);
    assert_eq!(enter(&mut dave, pinned, Some("4321"))["result"], 0);
    let own = alice.new_room();
    let r = alice
        .ws
        .request(spec_req("meeting.new", json!({"roomId": own})));
    assert_eq!(r["roomId"], own, "{r}");
    let r = bob
        .ws
        .request(spec_req("meeting.new", json!({"roomId": own})));
    assert_eq!(r["result"], 404, "another's private room: {r}");
    assert!(bridge.metric("pttbridge_meeting_appointments_total", &[]) >= 5.0);
}

#[test]
fn appointment_bad_input_gets_protocol_errors_and_the_socket_stays_open() {
    let bridge = Bridge::start(BIN, MEETING);
    let mut alice = sign_in(bridge.addr(), APP, "alice");
    let r = meeting_req(&mut alice, "createAppointment", json!({"name":"ok"}));
    let m = r["meetingId"].as_i64().unwrap();
    let long = "x".repeat(65);
    let cases: Vec<(&str, Value, i64)> = vec![
        ("createAppointment", json!({"name": 5}), 422),
        ("createAppointment", json!({"name": long}), 422),
        ("createAppointment", json!({"type": 7}), 422),
        ("createAppointment", json!({"type": "audio"}), 422),
        ("createAppointment", json!({"startTime": "tomorrow"}), 422),
        ("createAppointment", json!({"startTime": true}), 422),
        (
            "createAppointment",
            json!({"startTime": "20261207090000", "endTime": "20261207080000"}),
            422,
        ),
        ("createAppointment", json!({"members": ["bob"]}), 422),
        (
            "createAppointment",
            json!({"members": "0,bob,,,5,Etc/GMT+8,2"}),
            422,
        ),
        (
            "createAppointment",
            json!({"topics": [{"content": "no title"}]}),
            422,
        ),
        ("queryAppointmentById", json!({}), 422),
        ("queryAppointmentById", json!({"meetingId": "abc"}), 422),
        ("queryAppointmentById", json!({"meetingId": 1}), 404),
        ("updateAppointment", json!({"meetingId": m, "type": 1}), 422),
        (
            "updateAppointment",
            json!({"meetingId": m, "name": "a"}),
            422,
        ),
        ("updateAppointment", json!({"name": "a", "type": 1}), 422),
        (
            "updateAppointment",
            json!({"meetingId": 1, "name": "a", "type": 1}),
            404,
        ),
        (
            "updateAppointment",
            json!({"meetingId": m, "name": "a", "type": 1, "endTime": 5}),
            422,
        ),
        ("deleteAppointment", json!({}), 422),
        ("deleteAppointment", json!({"meetingId": 1}), 404),
        ("queryAppointments", json!({"startTime": "soon"}), 422),
        ("queryAppointments", json!({"pageNo": "one"}), 422),
        ("getRoomByInviteCode", json!({}), 422),
        ("getRoomByInviteCode", json!({"code": 1}), 5),
        (
            "getRoomByInviteCode",
            json!({"code": 1, "inviteCode": "x"}),
            422,
        ),
        ("instantAppointment", json!({"name": "a", "type": 1}), 422),
        (
            "instantAppointment",
            json!({"name": "a", "isPublic": false}),
            422,
        ),
        (
            "instantAppointment",
            json!({"name": "", "type": 1, "isPublic": false}),
            422,
        ),
        (
            "new",
            json!({"SID": "x", "name": "a", "startTime": "2024", "endTime": "2025", "type": 1, "isPublic": false, "orgId": 2}),
            422,
        ),
        (
            "new",
            json!({"SID": "x", "name": "a", "startTime": "20240101080000", "endTime": "20240101090000", "type": 1, "isPublic": false, "orgId": 2, "roomId": 5}),
            404,
        ),
    ];
    for (method, fields, want) in &cases {
        let r = meeting_req(&mut alice, method, fields.clone());
        assert_eq!(r["result"], *want, "{method} {fields}: {r}");
        assert_eq!(r["method"], *method);
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
    }
    // Still serving.
    let r = meeting_req(&mut alice, "queryAppointmentById", json!({"meetingId": m}));
    assert_eq!(r["result"], 0, "{r}");
}

#[test]
fn a_rooms_own_floor_mode_and_raised_hands_reach_late_joiners() {
    // The bridge's `[meeting] floor` is "voice" (the default); one room asks for "hand".
    let bridge = Bridge::start(BIN, MEETING);
    let mut alice = sign_in(bridge.addr(), APP, "alice");
    let mut bob = sign_in(bridge.addr(), APP, "bob");
    let create = |u: &mut User, extra: Value| {
        let r = room_req(
            u,
            "createRoom",
            with(
                json!({"roomtype":1,"name":"briefing","numberLimit":5,"isPublic":true}),
                extra,
            ),
        );
        assert_eq!(r["result"], 0, "{r}");
        r["roomId"].as_i64().unwrap()
    };
    let hand = create(&mut alice, json!({"floorMode": "hand"}));
    let voice = create(&mut alice, json!({}));
    let r = room_req(
        &mut alice,
        "createRoom",
        json!({"roomtype":1,"name":"x","numberLimit":5,"isPublic":true,"floorMode":"shout"}),
    );
    assert_eq!(r["result"], 422, "{r}");
    let r = enter(&mut alice, voice, None);
    assert_eq!(r["room"]["floorMode"], "voice", "{r}");
    let r = enter(&mut alice, hand, None);
    assert_eq!(r["room"]["floorMode"], "hand", "the room's own mode: {r}");

    // alice raises her hand; bob, entering later, is told of it right after his reply.
    let r = alice
        .ws
        .request(json!({"module":"meeting","method":"raiseHand"}));
    assert_eq!(r["result"], 0, "{r}");
    let r = enter(&mut bob, hand, None);
    assert_eq!(r["result"], 0, "{r}");
    let raised = bob.ws.wait("onRaiseHand", |m| {
        m["method"] == "onRaiseHand" && m.get("result").is_none()
    });
    assert_eq!(raised["client"]["id"], alice.id, "{raised}");
    assert_eq!(raised["roomId"], hand);
    // Lowered, it is not told to the next one.
    let r = alice
        .ws
        .request(json!({"module":"meeting","method":"lowerHand"}));
    assert_eq!(r["result"], 0, "{r}");
    let mut carol = sign_in(bridge.addr(), APP, "carol");
    assert_eq!(enter(&mut carol, hand, None)["result"], 0);
    // The room's pushes to her follow its enter reply in order: by the next reply, any
    // onRaiseHand would have come.
    assert_eq!(room_req(&mut carol, "queryMyRooms", json!({}))["result"], 0);
    assert!(
        carol.ws.seen.iter().all(|m| m["method"] != "onRaiseHand"),
        "no hand is up: {:?}",
        carol.ws.seen
    );
}
