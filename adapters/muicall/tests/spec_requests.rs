//! Every request of the muicall spec, as its request tables give it (`fixtures/muicall/requests/`;
//! the spec prints no request examples), parses into what the table says it asks for, and the
//! fields a reply is matched by (`transaction`, `sessionId`) are kept for the reply.

use std::path::Path;

use muicall::{Echo, Request, Transaction, parse_request};

fn request(name: &str) -> Request {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/muicall/requests")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_request(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_request_of_the_spec_parses_as_its_table_says() {
    let cases: Vec<(&str, Request)> = vec![
        (
            "2.1-initServer.json",
            Request::InitServer {
                base_url: "http://192.168.1.10:8080".into(),
            },
        ),
        (
            "2.2-connect.json",
            Request::Connect {
                account: "zydd".into(),
                password: "123456".into(),
                audio: None,
            },
        ),
        (
            "2.3-requestMic-new.json",
            Request::RequestMic {
                to_ids: Some(vec![169_919, 169_920]),
                transaction: Some(Transaction::Number(1_671_006_883_842)),
                session_id: None,
            },
        ),
        (
            "2.3-requestMic-floor.json",
            Request::RequestMic {
                to_ids: Some(vec![169_919, 169_920]),
                transaction: Some(Transaction::Number(1_671_006_883_842)),
                session_id: Some(50_351_257_998_589_953),
            },
        ),
        (
            "2.4-releaseMic.json",
            Request::ReleaseMic { session_id: None },
        ),
        (
            "2.5-addGroupMember.json",
            Request::AddGroupMember {
                session_id: 50_354_528_800_735_233,
                ids: vec![169_919],
                transaction: None,
            },
        ),
        (
            "2.6-kickGroupMember.json",
            Request::KickGroupMember {
                session_id: 50_354_528_800_735_233,
                ids: vec![169_919],
                transaction: None,
            },
        ),
        (
            "2.7-tempCallHangup.json",
            Request::TempCallHangup {
                session_id: 50_351_257_998_589_953,
            },
        ),
        ("2.8-loginOut.json", Request::LoginOut),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/muicall/requests");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, cases.len(), "a request example without a case here");
    for (name, want) in cases {
        assert_eq!(request(name), want, "{name}");
    }
}

#[test]
fn replies_are_matched_by_the_requests_transaction_and_call() {
    assert_eq!(
        request("2.3-requestMic-floor.json").echo(),
        Echo {
            transaction: Some(Transaction::Number(1_671_006_883_842)),
            session_id: Some(50_351_257_998_589_953),
        }
    );
    assert_eq!(
        request("2.5-addGroupMember.json").echo(),
        Echo {
            transaction: None,
            session_id: Some(50_354_528_800_735_233),
        }
    );
    // A refused request still says what it carried: its reply can be matched to it.
    let refused = parse_request(
        r#"{"type":"requestMic","toIds":"not a list","transaction":1671006883842,"sessionId":"50351257998589953"}"#,
    )
    .unwrap_err();
    assert_eq!(
        refused.echo,
        Echo {
            transaction: Some(Transaction::Number(1_671_006_883_842)),
            session_id: Some(50_351_257_998_589_953),
        }
    );
    let unknown = parse_request(r#"{"type":"dial","transaction":"t-7"}"#).unwrap_err();
    assert_eq!(
        unknown.echo.transaction,
        Some(Transaction::Text("t-7".into()))
    );
}
