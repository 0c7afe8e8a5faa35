//! Customer management (seed 002, `docs/customers.md`) against the real binary: operators add,
//! list and remove customers (strangers cannot); a customer's clients find its servers with
//! the info key; the seed's example commits are stored and listed; this site's own usage —
//! Debian's murmurd with pymumble terminals online, talking text in their channels — arrives at
//! the bridge itself with the counts the test made; bad input on every endpoint gets the
//! envelope's error and stores nothing.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use testkit::bridge::{Bridge, OPERATOR, ptt_server_toml};
use testkit::http::Response;
use testkit::murmur::Murmur;
use testkit::peers::{fixture, free_port};
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(20);
const CODE: &str = "0513001";
const TOKEN: &str = "site-commit-token-0001";
const FORM: &str = "application/x-www-form-urlencoded";

fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("customers/{name}"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Percent-encoding of a query or form component (the test's own, from RFC 3986).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn form(params: &Map<String, Value>) -> String {
    params
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            format!("{}={}", enc(k), enc(&v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn post_form(bridge: &Bridge, path: &str, body: &str, headers: &[(&str, &str)]) -> Response {
    testkit::http::request_typed(bridge.addr(), "POST", path, (FORM, body), headers).unwrap()
}

/// Adds the seed's example customer with `TOKEN` as its commit token; returns (id, info key).
fn add_example(bridge: &Bridge) -> (String, String) {
    let mut p = example("customer-add.params.json")
        .as_object()
        .unwrap()
        .clone();
    p.insert("commit_token".into(), TOKEN.into());
    let r = post_form(bridge, "/customer/add", &form(&p), &[OPERATOR]);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["code"].as_i64(), v["message"].as_str()),
        (Some(0), Some("OK"))
    );
    assert_eq!(v["commit_token"], TOKEN);
    (
        v["data"]["id"].as_str().unwrap().to_owned(),
        v["info_key"].as_str().unwrap().to_owned(),
    )
}

fn assert_error(r: &Response, status: u16, code: i64, mentions: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    assert_eq!(v["code"].as_i64(), Some(code), "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "{mentions:?} not in {message:?}"
    );
    assert!(v.get("data").is_none(), "{v}");
}

/// Polls `path` (as operator) until `done` holds for its `data`.
fn wait_data(bridge: &Bridge, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let r = bridge.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let data = r.json()["data"].clone();
        if done(&data) {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never seen at {path}: {data}\n{}",
            bridge.logs_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn find<'a>(rows: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r[key] == value)
}

#[test]
fn operators_manage_customers_and_the_site_commits_its_own_usage_to_itself() {
    let murmur = Murmur::start(&["North", "South"]);
    let port = free_port();
    let config = format!(
        "{}\n[customers.commit]\nurl = \"http://127.0.0.1:{port}\"\ncode = \"{CODE}\"\n\
         name = \"site\"\nmac = \"56:E8:F6:23:EF:01\"\nip = \"127.0.0.1\"\ntimeout = \"2027-09-21\"\n\
         token = \"{TOKEN}\"\ninterval_s = 1\n",
        ptt_server_toml("local", &murmur, &[("bridge", "North")])
    );
    let bridge = Bridge::start_at(BIN, &config, ([127, 0, 0, 1], port).into());
    bridge.wait_health(
        "connected in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );

    // Strangers and wrong tokens can do nothing.
    let example_form = form(example("customer-add.params.json").as_object().unwrap());
    let wrong = ("Authorization", "Bearer not-the-operator-token");
    for headers in [&[][..], &[wrong][..]] {
        assert_eq!(
            post_form(&bridge, "/customer/add", &example_form, headers).status,
            401
        );
        assert_eq!(
            bridge
                .request_with("GET", "/customer/list", None, headers)
                .status,
            401
        );
    }
    assert_eq!(
        bridge.get("/customer/list").json()["data"],
        json!([]),
        "nothing was added"
    );

    // Until the customer exists, the site's own commits are refused (its token matches no
    // customer): logged and counted, and carried by the next interval.
    let failed = |b: &Bridge| {
        b.metric(
            "pttbridge_customer_commits_sent_total",
            &[("kind", "server"), ("result", "failed")],
        )
    };
    let deadline = Instant::now() + T;
    while failed(&bridge) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no commit was tried\n{}",
            bridge.logs_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        bridge.metric(
            "pttbridge_customer_commits_refused_total",
            &[("kind", "server"), ("reason", "unauthorized")]
        ) >= 1.0
    );

    // The operator adds the seed's example; its code is unique.
    let (id, info_key) = add_example(&bridge);
    let again = post_form(&bridge, "/customer/add", &example_form, &[OPERATOR]);
    assert_error(&again, 409, 40900, CODE);
    let list = bridge.get("/customer/list").json();
    let added = &list["data"][0];
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    for (key, want) in example("customer-add.params.json").as_object().unwrap() {
        let got = &added[key];
        let got = got.as_str().map_or_else(|| got.to_string(), str::to_owned);
        assert_eq!(got, want.as_str().unwrap(), "{key}: {added}");
    }
    assert_eq!(added["id"], id.as_str());
    assert!(!list.to_string().contains(TOKEN) && !list.to_string().contains(&info_key));

    // Its clients find its servers with the info key; without it, nothing.
    let info = format!("/api/customer/info?code={CODE}");
    let r = bridge.request_with("GET", &info, None, &[("X-Info-Key", &info_key)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let servers = r.json()["data"].clone();
    assert_eq!(
        servers,
        json!({"code": CODE, "name": "江苏中威科技", "tcphost": "61.155.85.77", "tcpport": 10003,
               "webhost": "61.155.85.77", "webport": 10001, "filehost": "61.155.85.77", "fileport": 10004})
    );
    let none = bridge.request_with("GET", &info, None, &[]);
    let bad_key = bridge.request_with("GET", &info, None, &[("X-Info-Key", "guess-guess-guess")]);
    let other = bridge.request_with(
        "GET",
        "/api/customer/info?code=9999999",
        None,
        &[("X-Info-Key", &info_key)],
    );
    for r in [&none, &bad_key, &other] {
        assert_error(r, 401, 40100, "wrong credentials");
        assert!(!r.body.contains("61.155"), "{}", r.body);
    }
    assert_eq!(bad_key.body, other.body, "codes cannot be probed");

    // Three terminals online, two in North with the bridge, one in South; alice says M things.
    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    let _bob = Terminal::connect(murmur.port(), "bob", Some("North"));
    let _carol = Terminal::connect(murmur.port(), "carol", Some("South"));
    const M: i64 = 3;
    for i in 0..M {
        alice.text(&format!("message {i}"));
    }
    let users_path = format!("/user/list?code={CODE}");
    let users = wait_data(&bridge, &users_path, "alice's messages", |d| {
        find(d, "nickname", "alice").is_some_and(|a| a["fmsgs"] == M)
            && find(d, "nickname", "bob").is_some_and(|b| b["tmsgs"] == M)
            && find(d, "nickname", "carol").is_some()
    });
    println!("users: {users}");
    assert_eq!(
        users.as_array().unwrap().len(),
        3,
        "three users, not the bridge's account: {users}"
    );
    for name in ["alice", "bob", "carol"] {
        let u = find(&users, "nickname", name).unwrap();
        assert_eq!(u["code"], CODE);
        assert_eq!(
            u["andtimes"], u["onlinetime"],
            "PTT terminals count as Android: {u}"
        );
        assert_eq!(
            (u["pctimes"].as_i64(), u["iostimes"].as_i64()),
            (Some(0), Some(0)),
            "{u}"
        );
        assert!(u["received_ms"].as_i64().unwrap() > 0);
    }
    let carol = find(&users, "nickname", "carol").unwrap();
    assert_eq!(
        (carol["fmsgs"].as_i64(), carol["tmsgs"].as_i64()),
        (Some(0), Some(0)),
        "South heard nothing"
    );
    assert_eq!(
        find(&users, "nickname", "alice").unwrap()["tmsgs"],
        0,
        "her own messages are not received"
    );

    let groups = wait_data(
        &bridge,
        &format!("/group/list?code={CODE}"),
        "North's messages",
        |d| find(d, "name", "North").is_some_and(|g| g["msgcount"] == M),
    );
    println!("groups: {groups}");
    let north = find(&groups, "name", "North").unwrap();
    let south = find(&groups, "name", "South").unwrap();
    assert_eq!(
        (north["ucount"].as_i64(), north["msgcount"].as_i64()),
        (Some(2), Some(M)),
        "{north}"
    );
    assert_eq!(
        (south["ucount"].as_i64(), south["msgcount"].as_i64()),
        (Some(1), Some(0)),
        "{south}"
    );
    assert_eq!(north["gid"], "ptt:local:North");

    let list = wait_data(&bridge, "/customer/list", "the server commit", |d| {
        d[0]["latest"]["count"] == 3
    });
    let latest = &list[0]["latest"];
    assert_eq!(
        (latest["ip"].as_str(), latest["timeout"].as_str()),
        (Some("127.0.0.1"), Some("2027-09-21"))
    );
    assert!(
        bridge.metric(
            "pttbridge_customer_commits_sent_total",
            &[("kind", "user"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(
        bridge.metric(
            "pttbridge_customer_commits_received_total",
            &[("kind", "group")]
        ) >= 1.0
    );
    // Operators see the committer's state in /healthz: going through now, failed before.
    let h = bridge.wait_health(
        "committing",
        |h| {
            let c = &h["customers"]["commit"];
            c["last_ok_ms"].as_i64() > Some(0) && c["failing_intervals"] == 0
        },
        T,
    );
    assert!(
        h["customers"]["commit"]["last_failure_ms"].as_i64() > Some(0),
        "{h}"
    );

    // Removed: gone from the list with its commits; the site's next commits are refused.
    let r = post_form(&bridge, "/customer/remove", &format!("id={id}"), &[]);
    assert_eq!(r.status, 401);
    let r = post_form(
        &bridge,
        "/customer/remove",
        &format!("id={id}"),
        &[OPERATOR],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["code"], CODE);
    assert_eq!(bridge.get("/customer/list").json()["data"], json!([]));
    assert_error(&bridge.get(&users_path), 404, 40403, CODE);
    let before = failed(&bridge);
    let deadline = Instant::now() + T;
    while failed(&bridge) <= before {
        assert!(
            Instant::now() < deadline,
            "commits for a removed customer were not refused"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let h = bridge.wait_health(
        "failing",
        |h| h["customers"]["commit"]["failing_intervals"].as_u64() >= Some(1),
        T,
    );
    let last_error = h["customers"]["commit"]["last_error"].as_str().unwrap();
    // Refused like a wrong token: 401, or 429 once ten have failed within a minute.
    assert!(
        last_error.contains("401") || last_error.contains("429"),
        "{last_error}"
    );
    assert!(!h.to_string().contains(TOKEN));
    assert!(bridge.logs().contains("usage commit failed"));
    assert!(!bridge.logs().contains(TOKEN), "the token is never logged");
}

/// Every endpoint with bad input: the envelope's error naming the parameter, nothing stored.
#[test]
fn bad_input_on_every_endpoint_gets_the_envelopes_error_and_stores_nothing() {
    let bridge = Bridge::start(BIN, "[customers]\nmax_batch = 5\n");
    let add = |p: &Map<String, Value>| post_form(&bridge, "/customer/add", &form(p), &[OPERATOR]);
    let good = example("customer-add.params.json")
        .as_object()
        .unwrap()
        .clone();
    for (key, bad) in [
        ("code", ""),
        ("code", "05 13"),
        ("code", "x".repeat(33).as_str()),
        ("name", ""),
        ("name", "a\u{7}b"),
        ("mac", "56:E8:F6"),
        ("mac", "56:E8:F6:23:EF:ZZ"),
        ("tcphost", "not a host"),
        ("tcpport", "0"),
        ("webport", "65536"),
        ("fileport", "ten"),
        ("timeout", "2016-02-30"),
        ("timeout", "21/09/2016"),
        ("contact", "y".repeat(101).as_str()),
        ("ctel", "call me"),
        ("commit_token", "short"),
    ] {
        let mut p = good.clone();
        p.insert(key.into(), bad.into());
        assert_error(&add(&p), 400, 40000, key);
    }
    let r = testkit::http::request_typed(
        bridge.addr(),
        "POST",
        "/customer/add",
        ("application/json", "[1]"),
        &[OPERATOR],
    )
    .unwrap();
    assert_error(&r, 400, 40000, "object");
    assert_eq!(
        bridge.get("/customer/list").json()["data"],
        json!([]),
        "nothing stored"
    );

    for (path, status, code, mentions) in [
        ("/customer/remove?id=", 400, 40000, "missing id"),
        ("/customer/remove?id=../../etc", 400, 40000, "id"),
        (
            "/customer/remove?id=616b6865-7503-4d27-92c7-c6b94e1c8cc2",
            404,
            40403,
            "616b6865",
        ),
    ] {
        assert_error(&bridge.request("POST", path, None), status, code, mentions);
    }
    for list in ["/user/list", "/group/list"] {
        assert_error(&bridge.get(list), 400, 40000, "missing code");
        assert_error(
            &bridge.get(&format!("{list}?code=%zz")),
            400,
            40000,
            "encoding",
        );
        assert_error(
            &bridge.get(&format!("{list}?code={CODE}")),
            404,
            40403,
            CODE,
        );
    }
    assert_error(
        &bridge.get("/api/customer/info?code=bad%20code"),
        400,
        40000,
        "code",
    );
    assert_error(
        &bridge.get(&format!("/api/customer/info?code={CODE}")),
        404,
        40403,
        CODE,
    );

    // The customer exists from here on; commits with bad input store nothing.
    add_example(&bridge);
    let token = [("X-Commit-Token", TOKEN)];
    let server = example("server-commit.params.json")
        .as_object()
        .unwrap()
        .clone();
    let users = example("user-commit.data.json");
    let groups = example("group-commit.data.json");
    let data = |v: &Value| format!("data={}", enc(&v.to_string()));
    let with = |v: &Value, i: usize, key: &str, bad: Value| {
        let mut v = v.clone();
        v[i][key] = bad;
        v
    };
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    for (key, bad) in [
        ("code", ""),
        ("mac", "zz"),
        ("ip", "192.168.0"),
        ("timeout", "2016-9-21"),
        ("count", "-1"),
        ("updatetimes", "1e3"),
    ] {
        let mut p = server.clone();
        p.insert(key.into(), bad.into());
        cases.push((
            "/api/server/commit",
            form(&p),
            if key == "code" { "missing code" } else { key },
        ));
    }
    for (path, rows, key, bad) in [
        ("/api/user/commit", &users, "uuid", json!("")),
        ("/api/user/commit", &users, "fmsgs", json!(-1)),
        ("/api/user/commit", &users, "onlinetime", json!("345s")),
        ("/api/user/commit", &users, "nickname", json!({"x": 1})),
        ("/api/user/commit", &users, "code", json!("other")),
        ("/api/group/commit", &groups, "ctime", json!("2016-08-32")),
        ("/api/group/commit", &groups, "gid", json!("x".repeat(65))),
        ("/api/group/commit", &groups, "ucount", json!(1e20)),
    ] {
        let mut rows = rows.clone();
        if key == "code" {
            // Entries of two customers in one commit.
            let first = rows[0].clone();
            rows.as_array_mut().unwrap().push(first);
        }
        let i = rows.as_array().unwrap().len() - 1;
        let mentions = if key == "code" { "same code" } else { key };
        cases.push((path, data(&with(&rows, i, key, bad)), mentions));
    }
    let six = Value::Array(vec![users[0].clone(); 6]);
    cases.push(("/api/user/commit", data(&six), "at most 5"));
    cases.push(("/api/group/commit", "data=%5B%7B".into(), "JSON array"));
    cases.push(("/api/group/commit", "data=%5B%5D".into(), "empty"));
    cases.push(("/api/user/commit", "nodata=1".into(), "missing data"));
    for (path, body, mentions) in &cases {
        assert_error(
            &post_form(&bridge, path, body, &token),
            400,
            40000,
            mentions,
        );
        // The same as GET with the query (the seed: post&&get).
        let r = bridge.request_with("GET", &format!("{path}?{body}"), None, &token);
        assert_error(&r, 400, 40000, mentions);
    }
    let stored = |path: &str| bridge.get(&format!("{path}?code={CODE}")).json()["data"].clone();
    assert_eq!(
        (stored("/user/list"), stored("/group/list")),
        (json!([]), json!([]))
    );
    assert_eq!(
        bridge.get("/customer/list").json()["data"][0]["latest"],
        Value::Null
    );
    assert!(
        bridge.metric(
            "pttbridge_customer_commits_refused_total",
            &[("kind", "user"), ("reason", "bad_request")]
        ) >= 8.0
    );

    // Credentials: none, wrong, another customer's code; operators get "unknown customer".
    let mut other_users = users.clone();
    other_users[0]["code"] = "9999999".into();
    for (path, body) in [
        ("/api/server/commit", form(&server)),
        ("/api/user/commit", data(&users)),
        ("/api/group/commit", data(&groups)),
    ] {
        assert_error(
            &post_form(&bridge, path, &body, &[]),
            401,
            40100,
            "X-Commit-Token",
        );
        let wrong = post_form(
            &bridge,
            path,
            &body,
            &[("X-Commit-Token", "guess-guess-guess")],
        );
        assert_error(&wrong, 401, 40100, "wrong credentials");
    }
    let unknown = post_form(&bridge, "/api/user/commit", &data(&other_users), &token);
    assert_error(&unknown, 401, 40100, "wrong credentials");
    let unknown = post_form(
        &bridge,
        "/api/user/commit",
        &data(&other_users),
        &[OPERATOR],
    );
    assert_error(&unknown, 404, 40403, "9999999");
    assert_eq!(
        (stored("/user/list"), stored("/group/list")),
        (json!([]), json!([]))
    );

    // The seed's examples as they are: a GET with the query, a form and a JSON body.
    let r = bridge.request_with(
        "GET",
        &format!("/api/server/commit?{}", form(&server)),
        None,
        &token,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"], json!({"code": CODE, "received": 1}));
    assert_eq!(
        post_form(&bridge, "/api/user/commit", &data(&users), &token).status,
        200
    );
    let r = bridge.request_with(
        "POST",
        "/api/group/commit",
        Some(&json!({"data": groups}).to_string()),
        &token,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let u = &stored("/user/list")[0];
    assert_eq!(
        (
            u["nickname"].as_str(),
            u["onlinetime"].as_i64(),
            u["tmsgs"].as_i64()
        ),
        (Some("龚超"), Some(345), Some(32))
    );
    let g = &stored("/group/list")[0];
    assert_eq!(
        (
            g["name"].as_str(),
            g["msgcount"].as_i64(),
            g["ctime"].as_str()
        ),
        (Some("中威官方群"), Some(1878), Some("2016-08-09"))
    );
    assert_eq!(
        bridge.get("/customer/list").json()["data"][0]["latest"]["count"],
        178
    );

    // Wrong tokens from one address are throttled: the right one too, for a minute.
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(
            post_form(
                &bridge,
                "/api/server/commit",
                &form(&server),
                &[("X-Commit-Token", "guess-guess-guess")],
            )
            .status,
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_error(
        &post_form(&bridge, "/api/server/commit", &form(&server), &token),
        429,
        42900,
        "try again",
    );
}

fn text_of(page: &testkit::browser::Page, selector: &str) -> String {
    page.eval(&format!(
        "(document.querySelector({}) || {{}}).innerText || ''",
        Value::String(selector.into())
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn click(page: &testkit::browser::Page, selector: &str) {
    page.eval(&format!(
        "document.querySelector({}).scrollIntoView(); true",
        Value::String(selector.into())
    ));
    page.mouse(true, selector);
    page.mouse(false, selector);
}

/// The page's Customers card in headless Chromium: lists a customer with its latest commit,
/// shows its users and groups, adds one through its form and removes it.
#[test]
fn the_page_lists_adds_shows_usage_of_and_removes_customers() {
    let bridge = Bridge::start(BIN, "");
    add_example(&bridge);
    let token = [("X-Commit-Token", TOKEN)];
    let server = example("server-commit.params.json");
    let r = post_form(
        &bridge,
        "/api/server/commit",
        &form(server.as_object().unwrap()),
        &token,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let data = |v: Value| format!("data={}", enc(&v.to_string()));
    for (path, rows) in [
        ("/api/user/commit", example("user-commit.data.json")),
        ("/api/group/commit", example("group-commit.data.json")),
    ] {
        assert_eq!(post_form(&bridge, path, &data(rows), &token).status, 200);
    }

    let browser = testkit::browser::Browser::launch(None);
    let page = browser.page();
    page.navigate(&format!(
        "http://{}/#token={}",
        bridge.addr(),
        testkit::bridge::OPERATOR_TOKEN
    ));
    page.wait_for(
        "document.querySelector('#customers-list').innerText.includes('0513001')",
        T,
    );
    let row = text_of(&page, "#customers-list");
    println!("listed: {row}");
    for shown in [
        "江苏中威科技",
        "61.155.85.77:10003",
        "2016-09-21",
        "杨燕龙",
        "178 users",
    ] {
        assert!(row.contains(shown), "{shown:?} not in {row:?}");
    }

    // Usage: the latest user and group commits.
    click(&page, "#customers-list button[data-action=usage]");
    page.wait_for("!!document.querySelector('#customers-groups')", T);
    let users = text_of(&page, "#customers-users");
    let groups = text_of(&page, "#customers-groups");
    println!("users: {users}\ngroups: {groups}");
    assert!(
        users.contains("龚超") && users.contains("24") && users.contains("32"),
        "{users}"
    );
    assert!(
        groups.contains("中威官方群") && groups.contains("1878"),
        "{groups}"
    );

    // Add through the form: the tokens are shown once; a bad port is refused in the envelope's words.
    page.eval(
        "(() => { document.querySelector('#customers details').open = true;
         const f = document.querySelector('#customers-form');
         f.code.value = '0513002'; f.name.value = 'Second site'; f.tcphost.value = '10.0.0.2';
         f.tcpport.value = '70000'; f.requestSubmit(); return true; })()",
    );
    let refused = page.wait_for(
        "document.querySelector('#customers-status.error')?.textContent",
        T,
    );
    assert!(refused.as_str().unwrap().contains("tcpport"), "{refused}");
    page.eval(
        "(() => { const f = document.querySelector('#customers-form'); f.tcpport.value = '10003';
         f.requestSubmit(); return true; })()",
    );
    page.wait_for(
        "document.querySelector('#customers-list').innerText.includes('0513002')",
        T,
    );
    let status = text_of(&page, "#customers-status");
    assert!(
        status.contains("Commit token") && status.contains("info key"),
        "{status}"
    );
    let listed = bridge.get("/customer/list").json();
    let second = find(&listed["data"], "code", "0513002").expect("added through the page");
    assert_eq!(
        (second["tcphost"].as_str(), second["tcpport"].as_i64()),
        (Some("10.0.0.2"), Some(10003))
    );

    // Remove the second one (the page asks first: the test says yes).
    page.eval("window.confirm = () => true; true");
    click(
        &page,
        "#customers-list tr[data-code='0513002'] button[data-action=remove]",
    );
    page.wait_for(
        "!document.querySelector('#customers-list').innerText.includes('0513002')",
        T,
    );
    let listed = bridge.get("/customer/list").json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["code"], CODE);
}
