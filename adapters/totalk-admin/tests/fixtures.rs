//! The seed's `/ent/` examples (`fixtures/totalk-admin/`): our requests carry the example's
//! parameters, our types read the example answers, and the return codes map.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use totalk_admin::client::Answer;
use totalk_admin::wire::{self, DataAnswer, LoginAnswer, ValueAnswer};
use totalk_admin::{
    AdminError, Channel, Client, ClientConfig, Event, Member, Message, NoticeTarget, Operation,
    Page, Request, User,
};

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/totalk-admin")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The request sends exactly the example's parameter names, in its order (values as text).
fn sends_example_params(req: &Request, name: &str) {
    let example: serde_json::Map<String, Value> = serde_json::from_str(&fixture(name)).unwrap();
    let ours: Vec<&str> = req.params.iter().map(|(k, _)| *k).collect();
    let theirs: Vec<&str> = example.keys().map(String::as_str).collect();
    let mut sorted_ours = ours.clone();
    sorted_ours.sort_unstable();
    let mut sorted_theirs = theirs.clone();
    sorted_theirs.sort_unstable();
    assert_eq!(sorted_ours, sorted_theirs, "{name}: parameter names");
}

const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJwYXNzd29yZCI6IjEyMzQ1NiIsImV4cCI6MTQ3ODU5NTE5MywiaWF0IjoxNDc3OTkwMzkzLCJ1c2VybmFtZSI6ImN0MSJ9.UA-6u6ryC-VfuoMkg3nvtrNWYS6hohfhZzFjDsy072s";

#[test]
fn requests_carry_the_examples_parameters() {
    let login = Request::login("10000", "123456");
    assert_eq!(login.path(), "/ent/?method=login");
    sends_example_params(&login, "login.request.json");
    assert_eq!(login.param("encrypt"), Some("0"));
    // getUsersInPage's example also sends the optional filter and keyword; we send neither.
    let users = Request::users_page(TOKEN, 0, 20);
    assert_eq!(users.path(), "/ent/?method=getUsersInPage");
    assert_eq!(users.param("pageIndex"), Some("0"));
    assert_eq!(users.param("pageSize"), Some("20"));
    assert_eq!(users.param("token"), Some(TOKEN));
    let channels = Request::channels_page(TOKEN, 1, 20);
    assert_eq!(channels.param("pageIndex"), Some("1"));
    sends_example_params(
        &Request::member_role(TOKEN, 1001, 1001001),
        "getMemberRole.request.json",
    );
    let prop = Request::user_property(TOKEN, 1001035, "name");
    sends_example_params(&prop, "getUserProperty.request.json");
    assert_eq!(prop.param("uid"), Some("1001035"));
    let notice = Request::push_notice(
        TOKEN,
        &NoticeTarget::ChannelMembers(1001),
        "频道全体集合",
        true,
    );
    sends_example_params(&notice, "pushNotice.request.json");
    assert_eq!(notice.param("targetType"), Some("1"));
    assert_eq!(notice.param("targetId"), Some("1001"));
    assert_eq!(notice.param("ttsPlay"), Some("1"));
    let msgs = Request::messages_page(TOKEN, 1001, 0, 20, false);
    // The example leaves out the optional `sort`; we send its default.
    assert_eq!(msgs.param("sort"), Some("down"));
    assert_eq!(msgs.param("cid"), Some("1001"));
}

#[test]
fn answers_parse_with_the_seeds_fields() {
    let login: LoginAnswer = wire::parse(fixture("login.response.json").as_bytes()).unwrap();
    assert!(login.token.starts_with("eyJ0eXAi"));

    let users: Page<User> =
        wire::parse(fixture("getUsersInPage.response.json").as_bytes()).unwrap();
    assert_eq!(users.total, 2);
    assert_eq!(users.data.len(), 2);
    let u = &users.data[1];
    assert_eq!(
        (u.uid, u.name.as_str(), u.nick.as_str()),
        (1001036, "11100000676", "TT76")
    );
    assert_eq!((u.role, u.ban, u.cid), (0, 0, -1));
    assert_eq!(u.card_type, "month");
    assert_eq!(u.reg_time, "2021-06-27 10:05:15");
    assert!(!u.online() && !u.is_dispatcher());
    assert_eq!(u.joined_channel_ids(), vec![1001, 1002]);
    assert!(users.data[0].joined_channels.is_none());

    let channels: Page<Channel> =
        wire::parse(fixture("getChannelsInPage.response.json").as_bytes()).unwrap();
    assert_eq!(
        channels.data,
        vec![
            Channel {
                cid: 1001,
                member_num: 13,
                name: "频道 1".into()
            },
            Channel {
                cid: 1002,
                member_num: 5,
                name: "频道 2".into()
            }
        ]
    );

    let role: DataAnswer<i64> =
        wire::parse(fixture("getMemberRole.response.json").as_bytes()).unwrap();
    assert_eq!(role.data, 1);
    let prop: ValueAnswer =
        wire::parse(fixture("getUserProperty.response.json").as_bytes()).unwrap();
    assert_eq!(prop.value, "测试用户 1");
    wire::parse::<wire::Done>(fixture("pushNotice.response.json").as_bytes()).unwrap();

    let msgs: Page<Message> =
        wire::parse(fixture("getMessagesInPage.response.json").as_bytes()).unwrap();
    assert_eq!(msgs.total, 2);
    let m = &msgs.data[0];
    assert_eq!(
        (m.cid, m.chan_seq_id, m.from_id, m.kind),
        (1001, 123, 1001015, 1)
    );
    assert_eq!(m.time, 16732800000339);
    assert_eq!(m.content, "  你  好  ");
    // What we serialise is the seed's shape again.
    let back = serde_json::to_value(m).unwrap();
    let orig: Value = serde_json::from_str(&fixture("getMessagesInPage.response.json")).unwrap();
    assert_eq!(back, orig["data"][0]);
}

#[test]
fn every_return_code_of_the_table_maps() {
    let expect = [
        (401, "url"),
        (402, "parameter_missed"),
        (403, "parameter_error"),
        (404, "login_failed"),
        (405, "token_invalid"),
        (406, "token_timeout"),
        (407, "token_error"),
        (500, "operation"),
    ];
    for (code, name) in expect {
        let body = fixture(&format!("error-{code}.response.json"));
        let err = wire::parse::<LoginAnswer>(body.as_bytes()).unwrap_err();
        assert_eq!(err.as_str(), name, "{code}");
        assert_eq!(err.needs_login(), (405..=407).contains(&code), "{code}");
    }
    assert!(matches!(
        wire::parse::<LoginAnswer>(b"<html>oops</html>"),
        Err(AdminError::Malformed(_))
    ));
    assert!(matches!(
        wire::parse::<LoginAnswer>(br#"{"code":200,"reason":"success"}"#),
        Err(AdminError::Malformed(_))
    ));
}

// --- the state machine, driven with the fixtures' shapes and explicit time ---

fn config() -> ClientConfig {
    ClientConfig {
        account: "10000".into(),
        password: "123456".into(),
        page_size: 2,
        refresh_interval: Duration::from_secs(60),
        retry_interval: Duration::from_secs(5),
        max_users: 100,
        max_channels: 10,
        max_role_queries: 100,
    }
}

fn ok(extra: Value) -> Vec<u8> {
    let mut v = serde_json::json!({"code": 200, "reason": "success"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v.to_string().into_bytes()
}

fn user(uid: i64, role: i64, joined: &str) -> Value {
    serde_json::json!({"uid": uid, "name": format!("u{uid}"), "nick": format!("N{uid}"),
        "role": role, "cid": -1, "joinedChannels": joined})
}

/// Answers a whole refresh: 3 users on 2 pages, one channel, 2 members.
fn answer_refresh(c: &mut Client, now: Instant) -> Vec<Request> {
    let mut sent = Vec::new();
    while let Some(req) = c.poll_request(now) {
        let body = match req.method {
            "login" => ok(serde_json::json!({"token": "T1"})),
            "getUsersInPage" if req.param("pageIndex") == Some("0") => ok(serde_json::json!({
                "total": 3, "data": [user(1, 1, "A(7);"), user(2, 0, "")]})),
            "getUsersInPage" => {
                ok(serde_json::json!({"total": 3, "data": [user(3, 0, "A(7);B(99);")]}))
            }
            "getChannelsInPage" => ok(serde_json::json!({"total": 1,
                "data": [{"cid": 7, "memberNum": 2, "name": "A"}]})),
            "getMemberRole" => ok(serde_json::json!({"data":
                if req.param("uid") == Some("1") { 2 } else { 0 }})),
            m => panic!("unexpected {m}"),
        };
        sent.push(req);
        c.handle_response(now, &body);
    }
    sent
}

#[test]
fn a_refresh_logs_in_pages_and_reads_roles() {
    let t0 = Instant::now();
    let mut c = Client::new(config(), t0);
    let sent = answer_refresh(&mut c, t0);
    let methods: Vec<_> = sent.iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        [
            "login",
            "getUsersInPage",
            "getUsersInPage",
            "getChannelsInPage",
            "getMemberRole",
            "getMemberRole"
        ]
    );
    assert_eq!(c.poll_event(), Some(Event::LoggedIn));
    let Some(Event::Refreshed(dir)) = c.poll_event() else {
        panic!("no directory")
    };
    assert_eq!(dir.users.len(), 3);
    assert!(dir.users[0].is_dispatcher());
    assert_eq!(dir.channels.len(), 1);
    assert_eq!(
        dir.channels[0].members,
        vec![
            Member {
                uid: 1,
                role: Some(2)
            },
            Member {
                uid: 3,
                role: Some(0)
            }
        ]
    );
    // Nothing until the interval has passed; then the token is reused (no second login).
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    assert!(c.poll_request(t0 + Duration::from_secs(59)).is_none());
    let later = t0 + Duration::from_secs(60);
    let sent = answer_refresh(&mut c, later);
    assert_eq!(sent[0].method, "getUsersInPage");
    assert_eq!(sent[0].param("token"), Some("T1"));
    assert!(matches!(c.poll_event(), Some(Event::Refreshed(_))));
}

#[test]
fn a_timed_out_token_means_one_new_login_and_a_fresh_start() {
    let t0 = Instant::now();
    let mut c = Client::new(config(), t0);
    answer_refresh(&mut c, t0);
    while c.poll_event().is_some() {}
    let t1 = t0 + Duration::from_secs(60);
    let req = c.poll_request(t1).unwrap();
    assert_eq!(req.method, "getUsersInPage");
    c.handle_response(t1, br#"{"code":406,"reason":"token timeout"}"#);
    let sent = answer_refresh(&mut c, t1);
    assert_eq!(sent[0].method, "login");
    assert_eq!(sent[1].param("pageIndex"), Some("0"));
    assert_eq!(c.poll_event(), Some(Event::LoggedIn));
    assert!(matches!(c.poll_event(), Some(Event::Refreshed(_))));
    // Twice in a row: the refresh fails rather than looping.
    let t2 = t1 + Duration::from_secs(60);
    c.poll_request(t2).unwrap();
    c.handle_response(t2, br#"{"code":405,"reason":"token invalid"}"#);
    assert_eq!(c.poll_request(t2).unwrap().method, "login");
    c.handle_response(t2, &ok(serde_json::json!({"token": "T2"})));
    c.poll_request(t2).unwrap();
    c.handle_response(t2, br#"{"code":405,"reason":"token invalid"}"#);
    assert_eq!(c.poll_event(), Some(Event::LoggedIn));
    assert_eq!(
        c.poll_event(),
        Some(Event::RefreshFailed(AdminError::TokenInvalid))
    );
    assert_eq!(c.poll_timeout(), Some(t2 + Duration::from_secs(5)));
}

#[test]
fn bad_answers_fail_the_refresh_and_retry_later() {
    let t0 = Instant::now();
    let mut c = Client::new(config(), t0);
    assert_eq!(c.poll_request(t0).unwrap().method, "login");
    c.handle_response(t0, br#"{"code":404,"reason":"login failed"}"#);
    assert_eq!(
        c.poll_event(),
        Some(Event::RefreshFailed(AdminError::LoginFailed))
    );
    assert!(c.poll_request(t0 + Duration::from_secs(4)).is_none());
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(c.poll_request(t1).unwrap().method, "login");
    c.handle_response(t1, &ok(serde_json::json!({"token": "T"})));
    // garbage
    c.poll_request(t1).unwrap();
    c.handle_response(t1, b"{not json");
    c.poll_event();
    assert!(matches!(
        c.poll_event(),
        Some(Event::RefreshFailed(AdminError::Malformed(_)))
    ));
    // a page bigger than asked for
    let t2 = t1 + Duration::from_secs(5);
    c.poll_request(t2).unwrap();
    c.handle_response(
        t2,
        &ok(serde_json::json!({"total": 3, "data": [user(1,0,""), user(2,0,""), user(3,0,"")]})),
    );
    assert!(matches!(
        c.poll_event(),
        Some(Event::RefreshFailed(AdminError::TooLarge(_)))
    ));
    // a directory bigger than the bound
    let t3 = t2 + Duration::from_secs(5);
    c.poll_request(t3).unwrap();
    c.handle_response(
        t3,
        &ok(serde_json::json!({"total": 1_000_000, "data": [user(1,0,"")]})),
    );
    assert!(matches!(
        c.poll_event(),
        Some(Event::RefreshFailed(AdminError::TooLarge(_)))
    ));
    // transport failure
    let t4 = t3 + Duration::from_secs(5);
    c.poll_request(t4).unwrap();
    c.handle_failure(t4, AdminError::Transport("connection refused".into()));
    assert!(matches!(
        c.poll_event(),
        Some(Event::RefreshFailed(AdminError::Transport(_)))
    ));
}

#[test]
fn operations_go_first_and_survive_one_token_timeout() {
    let t0 = Instant::now();
    let mut c = Client::new(config(), t0);
    answer_refresh(&mut c, t0);
    while c.poll_event().is_some() {}
    let id = c.submit(Operation::Messages {
        cid: 1001,
        page_index: 0,
        page_size: 20,
        oldest_first: false,
    });
    let req = c.poll_request(t0).unwrap();
    assert_eq!(req.method, "getMessagesInPage");
    c.handle_response(t0, br#"{"code":406,"reason":"token timeout"}"#);
    assert_eq!(c.poll_request(t0).unwrap().method, "login");
    c.handle_response(t0, &ok(serde_json::json!({"token": "T9"})));
    let req = c.poll_request(t0).unwrap();
    assert_eq!(req.param("token"), Some("T9"));
    c.handle_response(t0, fixture("getMessagesInPage.response.json").as_bytes());
    assert_eq!(c.poll_event(), Some(Event::LoggedIn));
    match c.poll_event() {
        Some(Event::Answered {
            id: got,
            result: Ok(Answer::Messages(p)),
        }) => {
            assert_eq!(got, id);
            assert_eq!(p.data.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    let id = c.submit(Operation::PushNotice {
        target: NoticeTarget::Everyone,
        content: "hi".into(),
        tts: false,
    });
    let req = c.poll_request(t0).unwrap();
    assert_eq!(req.param("targetType"), Some("0"));
    c.handle_response(t0, br#"{"code":403,"reason":"parameter error: targetId"}"#);
    assert_eq!(
        c.poll_event(),
        Some(Event::Answered {
            id,
            result: Err(AdminError::ParameterError(
                "parameter error: targetId".into()
            ))
        })
    );
}
