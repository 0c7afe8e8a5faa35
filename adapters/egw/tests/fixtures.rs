//! Every EGW example of the spec (`fixtures/egw/`) parsed and produced by the adapter.

use std::path::PathBuf;

use egw::{
    GroupSync, MediaInfo, Push, Reply, Request, Session, SyncReply, UserSync, ids, parse_request,
};
use serde_json::Value;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/egw")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Our serialisation equals the fixture as JSON and, compacted, byte for byte.
fn produces(ours: String, name: &str) {
    let expected: Value = serde_json::from_str(&fixture(name)).unwrap();
    let got: Value = serde_json::from_str(&ours).unwrap();
    assert_eq!(got, expected, "{name}");
    // serde_json's Value orders keys alphabetically, as the spec examples do; so do our types.
    assert_eq!(ours, serde_json::to_string(&expected).unwrap(), "{name}");
}

const APP: &str = "15657845fd30b24e9ceb443e6f0a7bf3";

#[test]
fn requests_parse() {
    assert_eq!(
        parse_request(&fixture("20000-login.request.json")).unwrap(),
        Request::Login {
            dev_id: "23be7500fa7d6850d976ca473c296db2".into(),
            token: "60b52680c356c5c29c8393132eaadf92".into()
        }
    );
    assert_eq!(
        parse_request(&fixture("20002-logout.request.json")).unwrap(),
        Request::Logout
    );
    assert_eq!(
        parse_request(&fixture("20004-subscribe.request.json")).unwrap(),
        Request::Subscribe {
            apps: Some(vec![APP.into()])
        }
    );
    assert_eq!(
        parse_request(&fixture("20006-unsubscribe-app.request.json")).unwrap(),
        Request::Unsubscribe {
            apps: Some(vec![APP.into()])
        }
    );
    assert_eq!(
        parse_request(&fixture("20006-unsubscribe-all.request.json")).unwrap(),
        Request::Unsubscribe { apps: None }
    );
    let Request::FullSync { apps, seq } =
        parse_request(&fixture("20008-full-sync-group.request.json")).unwrap()
    else {
        panic!("not a full sync")
    };
    assert_eq!(seq, Some(Value::String("1".into())));
    let apps = apps.unwrap();
    assert_eq!(apps[0].app_id, APP);
    assert_eq!(apps[0].group_list, Some(vec!["123456".to_string()]));
    let Request::FullSync { apps, .. } =
        parse_request(&fixture("20008-full-sync-app.request.json")).unwrap()
    else {
        panic!("not a full sync")
    };
    assert_eq!(apps.unwrap()[0].group_list, None);
}

#[test]
fn the_spec_trailing_comma_example_is_rejected_with_an_error_reply() {
    let original = fixture("20008-full-sync-app.request.json").replace(
        "\"15657845fd30b24e9ceb443e6f0a7bf3\"\n",
        "\"15657845fd30b24e9ceb443e6f0a7bf3\",\n",
    );
    let e = parse_request(&original).unwrap_err();
    assert_eq!(e.reply_id, ids::ERROR);
    assert_ne!(e.reply().result, 0);
}

#[test]
fn replies_are_produced_as_in_the_spec() {
    produces(
        Reply::ok(ids::LOGIN_REPLY, "login successful").to_json(),
        "20001-login.response.json",
    );
    produces(
        Reply::ok(ids::LOGOUT_REPLY, "logout successful").to_json(),
        "20003-logout.response.json",
    );
    produces(
        Reply::ok(ids::SUBSCRIBE_REPLY, "subscribe successful").to_json(),
        "20005-subscribe.response.json",
    );
    produces(
        Reply::ok(ids::UNSUBSCRIBE_REPLY, "unsubscribe successful").to_json(),
        "20007-unsubscribe.response.json",
    );
    let m = |id: &str, t: u8| MediaInfo {
        media_id: id.into(),
        media_type: t,
    };
    let sync = SyncReply::new(
        APP.into(),
        3132,
        vec![GroupSync {
            group_id: "123456".into(),
            group_media_list: vec![m("whiteboard2", 4)],
            user_list: vec![
                UserSync {
                    media_info: vec![m("0", 0), m("appdef_mic_magic", 1), m("LocalCam_2", 2)],
                    user_id: "aa".into(),
                },
                UserSync {
                    media_info: vec![],
                    user_id: "ff".into(),
                },
            ],
        }],
    );
    produces(sync.to_json(), "20009-full-sync.response.json");
}

#[test]
fn pushes_are_produced_as_in_the_spec() {
    let push = |id, version, media: Option<(&str, u8)>| Push {
        app_id: None,
        group_id: "123456".into(),
        id,
        media_id: media.map(|m| m.0.to_string()),
        media_type: media.map(|m| m.1),
        user_id: "aa".into(),
        version,
    };
    produces(
        push(ids::USER_JOINED, 2714, None).to_json(),
        "20100-user-joined.push.json",
    );
    produces(
        push(ids::USER_LEFT, 2714, None).to_json(),
        "20101-user-left.push.json",
    );
    produces(
        push(ids::MEDIA_STARTED, 2715, Some(("LocalCam_2", 2))).to_json(),
        "20102-media-started.push.json",
    );
    produces(
        push(ids::MEDIA_STOPPED, 2715, Some(("LocalCam_2", 2))).to_json(),
        "20103-media-stopped.push.json",
    );
    // And they read back into the type.
    for f in [
        "20100-user-joined.push.json",
        "20102-media-started.push.json",
    ] {
        let p: Push = serde_json::from_str(&fixture(f)).unwrap();
        assert_eq!(p.group_id, "123456");
    }
}

#[test]
fn a_spec_session_runs_through_the_state_machine() {
    let mut s = Session::new();
    let grant = |d: &str, t: &str| {
        (d == "23be7500fa7d6850d976ca473c296db2" && t == "60b52680c356c5c29c8393132eaadf92")
            .then(|| egw::Grant::Apps([APP.to_string()].into()))
    };
    for (req, reply) in [
        ("20000-login.request.json", "20001-login.response.json"),
        (
            "20004-subscribe.request.json",
            "20005-subscribe.response.json",
        ),
        (
            "20006-unsubscribe-app.request.json",
            "20007-unsubscribe.response.json",
        ),
        (
            "20006-unsubscribe-all.request.json",
            "20007-unsubscribe.response.json",
        ),
        ("20002-logout.request.json", "20003-logout.response.json"),
    ] {
        match s.handle(&fixture(req), grant).unwrap() {
            egw::Action::Reply(r) => produces(r.to_json(), reply),
            other => panic!("{req}: {other:?}"),
        }
    }
}

#[test]
fn server_address_has_the_business_envelope() {
    let ours = egw::rest::Envelope::ok()
        .with("result", "ws://192.168.7.201:29200")
        .to_json();
    produces(ours, "server-address.response.json");
}
