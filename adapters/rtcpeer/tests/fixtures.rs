//! Every spec example in `fixtures/rtcpeer/` parses into its type and serializes back to the
//! same JSON (field for field; key order is not significant in JSON objects).

use std::path::PathBuf;

use rtcpeer::bean::{Client, Room};
use rtcpeer::push::Push;
use rtcpeer::reply::{DockingLogin, Entered, GetSign};
use rtcpeer::{Frame, Request};
use serde_json::Value;

fn dir(sub: &str) -> Vec<(String, String)> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/rtcpeer")
        .join(sub);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn requests_round_trip() {
    let all = dir("requests");
    assert!(all.len() >= 22, "every request method has a fixture");
    let mut methods = std::collections::HashSet::new();
    for (name, text) in all {
        let original: Value = serde_json::from_str(&text).unwrap();
        let req = Request::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(req.to_value(), original, "{name}");
        let (module, method) = req.envelope();
        assert!(name.starts_with(&format!("{module}.{method}")), "{name}");
        methods.insert((module, method));
    }
    for m in rtcpeer::request::METHODS {
        assert!(methods.contains(m), "no fixture for {m:?}");
    }
}

#[test]
fn pushes_round_trip() {
    for (name, text) in dir("pushes") {
        let original: Value = serde_json::from_str(&text).unwrap();
        let frame = Frame::parse(&text).unwrap();
        assert_eq!(frame.result(), None, "{name}: pushes carry no result");
        let push = Push::from_frame(&frame)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: taken for a reply"));
        assert_eq!(push.to_value(), original, "{name}");
        let (module, method) = push.envelope();
        // `module.method.json`, or `module.method.<variant>.json` (e.g. the spec's own shape).
        assert!(
            name == format!("{module}.{method}.json")
                || name.starts_with(&format!("{module}.{method}.")),
            "{name}"
        );
    }
}

#[test]
fn replies_parse() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/rtcpeer/replies/account.dockingLogin.json"),
    )
    .unwrap();
    let login: DockingLogin = serde_json::from_str(&text).unwrap();
    assert_eq!(login.result, 0);
    assert_eq!(login.sid.as_deref(), Some("8c1f0e2a-sid"));
    assert_eq!(login.user.as_ref().unwrap().id, Some(1001));
    // The organisation's extra fields survive (the spec's example has many beyond section 8).
    assert_eq!(
        serde_json::to_value(&login).unwrap(),
        serde_json::from_str::<Value>(&text).unwrap()
    );

    let sign: GetSign = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/rtcpeer/replies/app.getSign.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(sign.code, 200);

    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/rtcpeer/replies/meeting.enter.json"),
    )
    .unwrap();
    let frame = Frame::parse(&text).unwrap();
    assert_eq!(frame.result(), Some(0));
    assert_eq!(
        Push::from_frame(&frame).unwrap(),
        None,
        "a reply is not a push"
    );
    let entered: Entered = frame.decode().unwrap();
    assert_eq!(entered.room.id, Some(599));
    assert_eq!(entered.members[0].mode.as_deref(), Some("ptt"));
    let back = rtcpeer::reply::ok_with("meeting", "enter", &entered);
    assert_eq!(back, serde_json::from_str::<Value>(&text).unwrap());

    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/rtcpeer/replies/meeting.startRecord.json"),
    )
    .unwrap();
    let frame = Frame::parse(&text).unwrap();
    let started: rtcpeer::reply::RecordStarted = frame.decode().unwrap();
    assert_eq!(started.record_id, 123);
    let back = rtcpeer::reply::ok_with("meeting", "startRecord", &started);
    assert_eq!(back, serde_json::from_str::<Value>(&text).unwrap());
}

#[test]
fn beans_keep_unknown_fields() {
    let c: Client = serde_json::from_str(r#"{"id":"7","peerId":"abc","isMuted":true}"#).unwrap();
    assert_eq!(c.id, Some(7));
    assert_eq!(c.extra["peerId"], "abc");
    let r: Room = serde_json::from_str(r#"{"id":599,"roomType":1,"isHasPwd":false}"#).unwrap();
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"id":599,"roomType":1,"isHasPwd":false}"#
    );
}

/// The reply fixtures `module.method.json` of `methods`, one each: `(method, the JSON, its frame)`.
fn replies_of(module: &str, methods: &[&str]) -> Vec<(String, Value, Frame)> {
    let out: Vec<_> = dir("replies")
        .into_iter()
        .filter_map(|(name, text)| {
            let method = name
                .strip_prefix(&format!("{module}."))?
                .strip_suffix(".json")?;
            methods.contains(&method).then(|| {
                let frame = Frame::parse(&text).unwrap();
                (
                    method.to_owned(),
                    serde_json::from_str(&text).unwrap(),
                    frame,
                )
            })
        })
        .collect();
    assert_eq!(
        out.len(),
        methods.len(),
        "a reply fixture per {module} method"
    );
    out
}

/// The room-management replies (spec 2.6–2.18) parse into their types and serialize back to
/// the same JSON; `checkRoomPwd` and `checkActiveRoom` answer in `result` itself.
#[test]
fn room_replies_round_trip() {
    use rtcpeer::reply::{RoomCreated, ok, ok_with};
    use rtcpeer::rooms::{HasPwd, METHODS, Moderators, RoomFound, Rooms, verdict};
    for (method, original, frame) in replies_of("room", METHODS) {
        let m = method.as_str();
        let back = match m {
            "createRoom" | "updateRoom" => {
                ok_with("room", m, &frame.decode::<RoomCreated>().unwrap())
            }
            "checkRoomHasPwd" => ok_with("room", m, &frame.decode::<HasPwd>().unwrap()),
            "queryRoomMen" => ok_with("room", m, &frame.decode::<Moderators>().unwrap()),
            "getRoomById" => ok_with("room", m, &frame.decode::<RoomFound>().unwrap()),
            "queryMyRooms" => ok_with("room", m, &frame.decode::<Rooms>().unwrap()),
            "checkRoomPwd" | "checkActiveRoom" => verdict(m, frame.result() == Some(1)),
            _ => ok("room", m),
        };
        assert_eq!(back, original, "{m}");
    }
}

/// The appointment replies (spec 2.19–2.24, 2.33) parse into their types and serialize back to
/// the same JSON.
#[test]
fn appointment_replies_round_trip() {
    use rtcpeer::appointments::{AppointmentFound, Appointments, InvitedRoom, METHODS, Scheduled};
    use rtcpeer::reply::{ok, ok_with};
    for (method, original, frame) in replies_of("meeting", METHODS) {
        let m = method.as_str();
        let back = match m {
            "createAppointment" | "updateAppointment" | "instantAppointment" => {
                ok_with("meeting", m, &frame.decode::<Scheduled>().unwrap())
            }
            "queryAppointmentById" => {
                ok_with("meeting", m, &frame.decode::<AppointmentFound>().unwrap())
            }
            "queryAppointments" => ok_with("meeting", m, &frame.decode::<Appointments>().unwrap()),
            "getRoomByInviteCode" => ok_with("meeting", m, &frame.decode::<InvitedRoom>().unwrap()),
            _ => ok("meeting", m),
        };
        assert_eq!(back, original, "{m}");
    }
}
