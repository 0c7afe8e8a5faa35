//! The archive of recorded talk bursts (`docs/archive.md`), against the real binary, Debian's
//! murmurd and pymumble terminals: what a terminal says is listed with its talker, channel
//! and duration, downloads (whole and by byte range) decode to the same speech, the specs'
//! shapes answer, deletion and the retention remove rows and files, and bad input, path
//! tricks and missing credentials get the `/v1` envelope's errors with nothing served from
//! outside the archive directory.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::audio::{compare, load_wav, read_ogg_opus};
use testkit::bridge::{Bridge, OPERATOR, ptt_server_toml};
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(20);

fn config(murmur: &Murmur, dir: &Path, extra: &str) -> String {
    format!(
        "[recording]\ndir = \"{}\"\n{extra}\n[storage]\npath = \"{}\"\n{}",
        dir.join("rec").display(),
        dir.join("bridge.sqlite3").display(),
        ptt_server_toml("local", murmur, &[("bridge", "North")])
    )
}

fn connected(bridge: &Bridge) {
    bridge.wait_health(
        "connected in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
}

/// Lists until `want` bursts match `query`.
fn wait_listed(bridge: &Bridge, query: &str, want: usize) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let r = bridge.get(&format!("/v1/archive/bursts?{query}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if v["bursts"].as_array().map_or(0, Vec::len) >= want {
            return v;
        }
        assert!(Instant::now() < deadline, "{want} bursts not listed: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn download(bridge: &Bridge, path: &str, range: Option<&str>) -> testkit::http::BytesResponse {
    let mut headers = vec![OPERATOR];
    let r;
    if let Some(range) = range {
        r = range.to_string();
        headers.push(("Range", r.as_str()));
    }
    testkit::http::request_bytes(bridge.addr(), "GET", path, &headers).unwrap()
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn wav_ms(wav: &str) -> i64 {
    (load_wav(fixture(wav)).len() as i64) * 1000 / 48_000
}

#[test]
fn a_talkers_bursts_are_listed_downloaded_found_by_the_spec_shapes_and_deleted() {
    let murmur = Murmur::start(&["North"]);
    let tmp = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(BIN, &config(&murmur, tmp.path(), ""));
    connected(&bridge);
    let before = Instant::now();
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    alice.play_and_wait(&fixture("audio/speech.wav"), T);
    let mut bob = Terminal::connect(murmur.port(), "bob", Some("North"));
    std::thread::sleep(Duration::from_millis(500));
    bob.play_and_wait(&fixture("audio/speech2.wav"), T);

    let all = wait_listed(&bridge, "order=asc", 2);
    println!("listing: {all}");
    assert_eq!(all["code"], 0);
    assert_eq!(all["total"], 2);
    let a = &all["bursts"][0];
    let b = &all["bursts"][1];
    assert_eq!(
        (a["talker"].as_str(), a["channel"].as_str()),
        (Some("alice"), Some("North"))
    );
    assert_eq!(
        (b["talker"].as_str(), b["channel"].as_str()),
        (Some("bob"), Some("North"))
    );
    assert_eq!(
        (
            a["side"].as_str(),
            a["server"].as_str(),
            a["codec"].as_str()
        ),
        (Some("ptt"), Some("local"), Some("opus"))
    );
    for (burst, wav) in [(a, "audio/speech.wav"), (b, "audio/speech2.wav")] {
        let got = burst["duration_ms"].as_i64().unwrap();
        let said = wav_ms(wav);
        println!("{}: {got} ms recorded, {said} ms said", burst["talker"]);
        assert!(
            (got - said).abs() <= 100,
            "duration {got} ms vs {said} ms said: {burst}"
        );
        let start = burst["start_ms"].as_i64().unwrap();
        assert!(
            start >= t0 && start <= t0 + before.elapsed().as_millis() as i64,
            "{burst}"
        );
        assert!(burst["size_bytes"].as_i64().unwrap() > 1000);
    }

    // Search: by channel, talker, time range, pages.
    let count = |q: &str| {
        bridge.get(&format!("/v1/archive/bursts?{q}")).json()["total"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(count("channel=North"), 2);
    assert_eq!(count("channel=ptt:local:North"), 2);
    assert_eq!(count("channel=South"), 0);
    assert_eq!(count("talker=bob"), 1);
    assert_eq!(count("server=local&talker=alice"), 1);
    let b_start = b["start_ms"].as_i64().unwrap();
    assert_eq!(count(&format!("from={b_start}")), 1);
    assert_eq!(count(&format!("to={b_start}")), 1);
    assert_eq!(count(&format!("from={}&to={}", t0 - 1000, b_start + 1)), 2);
    assert_eq!(count("from=2000-01-01&to=2000-01-02"), 0);
    let page2 = bridge
        .get("/v1/archive/bursts?order=asc&page_size=1&page=2")
        .json();
    assert_eq!(
        (
            page2["total"].as_i64(),
            page2["bursts"][0]["talker"].as_str()
        ),
        (Some(2), Some("bob"))
    );
    let newest = bridge.get("/v1/archive/bursts?page_size=1").json();
    assert_eq!(
        newest["bursts"][0]["talker"], "bob",
        "newest first by default"
    );

    // Download: the whole file decodes to what alice said.
    let url = a["url"].as_str().unwrap();
    let (status, headers, file) = download(&bridge, url, None);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("audio/ogg; codecs=opus")
    );
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
    assert_eq!(file.len() as i64, a["size_bytes"].as_i64().unwrap());
    let saved = tmp.path().join("downloaded.opus");
    std::fs::write(&saved, &file).unwrap();
    let c = compare(
        &load_wav(fixture("audio/speech.wav")),
        &read_ogg_opus(&saved).unwrap(),
    );
    println!("downloaded burst vs what alice said: {c}");
    c.assert_matches(0.95, 0.05);

    // Ranges: a slice, the tail, past the end.
    let (status, headers, part) = download(&bridge, url, Some("bytes=0-99"));
    assert_eq!((status, part.as_slice()), (206, &file[..100]));
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 0-99/{}", file.len()).as_str())
    );
    let (status, _, tail) = download(&bridge, url, Some("bytes=-10"));
    assert_eq!((status, tail.as_slice()), (206, &file[file.len() - 10..]));
    let (status, _, rest) = download(&bridge, url, Some("bytes=100-"));
    assert_eq!((status, rest.as_slice()), (206, &file[100..]));
    let (status, headers, body) = download(&bridge, url, Some(&format!("bytes={}-", file.len())));
    assert_eq!(status, 416);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes */{}", file.len()).as_str())
    );
    let env: Value = serde_json::from_slice(&body).unwrap();
    assert_ne!(env["code"], 0);

    // By file name (the specs' `comment`/`url`): the same bytes.
    let by_name = format!("/v1/archive/files/{}", a["file"].as_str().unwrap());
    assert_eq!(download(&bridge, &by_name, None).2, file);
    let one = bridge
        .get(&format!("/v1/archive/bursts/{}", a["id"]))
        .json();
    assert_eq!(one["burst"]["talker"], "alice");

    // The specs' shapes.
    let voices = bridge
        .request(
            "POST",
            "/v1/archive/getVoicesInPage",
            Some(
                &json!({"pageIndex": 0, "pageSize": 20, "uid": " alice ", "cid": "North",
                "startDate": "2000-01-01", "endDate": "2999-12-31"})
                .to_string(),
            ),
        )
        .json();
    println!("getVoicesInPage: {voices}");
    assert_eq!(
        (voices["code"].as_i64(), voices["total"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(voices["data"][0]["cid"], "North");
    assert_eq!(voices["data"][0]["url"], by_name.as_str());
    let records = bridge
        .request(
            "POST",
            "/v1/archive/getRecordByRange",
            Some(
                &json!({"orgId": 2, "name": "BO", "pageNo": 0, "pageSize": 10,
                "startDate": "20000101000000", "endDate": "29991231000000"})
                .to_string(),
            ),
        )
        .json();
    println!("getRecordByRange: {records}");
    assert_eq!(
        (
            records["totalPage"].as_i64(),
            records["recordList"][0]["name"].as_str()
        ),
        (Some(1), Some("bob"))
    );

    // Deleting: one by id, then the spec's batch (an unknown id makes result 1).
    let rec = tmp.path().join("rec");
    assert!(rec.join(a["file"].as_str().unwrap()).exists());
    let r = bridge.request("DELETE", &format!("/v1/archive/bursts/{}", a["id"]), None);
    assert_eq!((r.status, r.json()["deleted"].as_i64()), (200, Some(1)));
    assert!(
        !rec.join(a["file"].as_str().unwrap()).exists(),
        "the file goes with its row"
    );
    assert_eq!(bridge.get(url).status, 404);
    assert_eq!(bridge.get(&by_name).status, 404);
    let r = bridge
        .request(
            "POST",
            "/v1/archive/deleteRecords",
            Some(&json!({"recordIds": [b["id"], 987654]}).to_string()),
        )
        .json();
    assert_eq!(
        (r["result"].as_i64(), r["deleted"].as_i64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(!rec.join(b["file"].as_str().unwrap()).exists());
    assert_eq!(count(""), 0);
    // index.jsonl is still written (other tools read it).
    let index = std::fs::read_to_string(rec.join("index.jsonl")).unwrap();
    assert_eq!(index.lines().count(), 2);
}

#[test]
fn retention_deletes_the_oldest_bursts_when_over_the_limit() {
    let murmur = Murmur::start(&["North"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut alice = Terminal::connect(murmur.port(), "alice", Some("North"));
    let mut bridge = Bridge::start(BIN, &config(&murmur, tmp.path(), ""));
    connected(&bridge);
    for _ in 0..3 {
        alice.play_and_wait(&fixture("audio/speech2.wav"), T);
        std::thread::sleep(Duration::from_millis(400));
    }
    let listed = wait_listed(&bridge, "order=asc", 3);
    let bursts = listed["bursts"].as_array().unwrap().clone();
    let size = |i: usize| bursts[i]["size_bytes"].as_u64().unwrap();
    let file = |i: usize| {
        tmp.path()
            .join("rec")
            .join(bursts[i]["file"].as_str().unwrap())
    };
    bridge.stop(Duration::from_secs(5));

    // Room for the two newest and half a burst more: at start the oldest goes.
    let limit = size(1) + size(2) + size(0) / 2;
    let bridge = Bridge::start(
        BIN,
        &config(
            &murmur,
            tmp.path(),
            &format!("max_total_bytes = {limit}\nretention_days = 30"),
        ),
    );
    connected(&bridge);
    let after = bridge.get("/v1/archive/bursts?order=asc").json();
    println!("limit {limit} bytes: {after}");
    let ids: Vec<&Value> = after["bursts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["id"])
        .collect();
    assert_eq!(
        ids,
        [&bursts[1]["id"], &bursts[2]["id"]],
        "the oldest went first"
    );
    assert!(!file(0).exists() && file(1).exists() && file(2).exists());
    assert!(bridge.metric("pttbridge_recording_archive_deleted_total", &[]) >= 1.0);

    // A new burst over the limit: the oldest left goes, the new one stays.
    alice.play_and_wait(&fixture("audio/speech2.wav"), T);
    let deadline = Instant::now() + T;
    loop {
        let now = bridge.get("/v1/archive/bursts?order=asc").json();
        let list = now["bursts"].as_array().unwrap();
        if list.len() == 2 && list[0]["id"] == bursts[2]["id"] {
            assert!(!file(1).exists(), "its file is deleted too");
            let total: u64 = list.iter().map(|b| b["size_bytes"].as_u64().unwrap()).sum();
            assert!(total <= limit, "{total} > {limit}");
            assert!(bridge.metric("pttbridge_recording_archive_bytes", &[]) as u64 == total);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retention after a new burst: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The envelope's error: a non-zero code and a message.
/// A console call is archived as the PTT channels are (issue 21 item 3, every side's bursts):
/// what the dispatcher says into the call (sent by the console, recorded as the bridge sends
/// it) and what the terminal answers (heard by the console's PTT session — the bridge's own
/// accounts are not in the call's channel), each a burst in the call's group with its talker,
/// and each download correlating with what was said.
#[test]
fn a_console_calls_bursts_both_ways_are_archived() {
    use testkit::console::Console;
    let murmur = Murmur::builder()
        .channels(&["North"])
        .user("zydd", "pw-zydd")
        .user("t1", "pw-t1")
        .start();
    let tmp = tempfile::tempdir().unwrap();
    let console = format!(
        "[console]\n[[console.servers]]\nbase_url = \"http://ptt.test:8080\"\nptt_server = \"local\"\n\
         admin_username = \"SuperUser\"\nadmin_password = \"{}\"\n",
        murmur.superuser_password()
    );
    let bridge = Bridge::start(BIN, &config(&murmur, tmp.path(), &console));
    bridge.wait_health(
        "console admin connected",
        |h| h["sides"]["console"]["servers"][0]["admin_connected"] == true,
        T,
    );
    let mut t1 = Terminal::builder(murmur.port(), "t1")
        .password("pw-t1")
        .channel("North")
        .connect();
    let mut c = Console::connect(bridge.addr());
    c.send(json!({"type": "initServer", "data": {"baseUrl": "http://ptt.test:8080"}}));
    c.expect_type("initServer", T);
    c.send(json!({"type": "connect", "data": {"account": "zydd", "password": "pw-zydd"}}));
    assert_eq!(c.expect_type("login", T)["code"], 1);
    c.send(json!({"type": "requestMic", "toIds": [murmur.user_id("t1")], "transaction": 1}));
    let sid = c.expect_type("createGroup", T)["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(c.expect_type("requestMic", T)["code"], 2);
    t1.wait_in_channel(&format!("call-{sid}"), T);

    let speech = fixture("audio/speech.wav");
    c.play(&speech, muicall::audio::Codec::Pcm16(48_000))
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c.send(json!({"type": "releaseMic"}));
    c.expect_type("releaseMic", T);
    let speech2 = fixture("audio/speech2.wav");
    t1.play_and_wait(&speech2, T);

    let group = format!("console:{sid}");
    let listed = wait_listed(&bridge, &format!("channel={group}&order=asc"), 2);
    println!("the call's bursts: {listed}");
    assert_eq!(listed["total"], 2, "{listed}");
    for (i, (talker, side, said)) in [("zydd", "console", &speech), ("t1", "ptt", &speech2)]
        .into_iter()
        .enumerate()
    {
        let b = &listed["bursts"][i];
        assert_eq!(
            (b["talker"].as_str(), b["side"].as_str()),
            (Some(talker), Some(side)),
            "{b}"
        );
        let (status, _, file) = download(&bridge, b["url"].as_str().unwrap(), None);
        assert_eq!(status, 200);
        let saved = tmp.path().join(format!("{talker}.opus"));
        std::fs::write(&saved, &file).unwrap();
        let c = compare(&load_wav(said), &read_ogg_opus(&saved).unwrap());
        println!("{talker}'s burst in the call vs what was said: {c}");
        c.assert_matches(0.9, 0.1);
    }
}

fn envelope_error(r: &testkit::http::Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let v = r.json();
    assert!(v["code"].as_i64().is_some_and(|c| c != 0), "{what}: {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
}

#[test]
fn bad_input_path_tricks_and_missing_credentials_get_the_envelopes_errors() {
    let murmur = Murmur::start(&["North"]);
    let tmp = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(BIN, &config(&murmur, tmp.path(), ""));
    connected(&bridge);
    let rec = tmp.path().join("rec");
    // Something next to the archive that must never be served, and a planted link out of it.
    std::fs::write(tmp.path().join("secret.opus"), b"not yours").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", rec.join("1-evil-x.opus")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.opus"), rec.join("2-evil-y.opus")).unwrap();
    {
        // Rows pointing at them (as if the index were tampered with).
        let db = rusqlite::Connection::open(tmp.path().join("bridge.sqlite3")).unwrap();
        for (i, f) in ["1-evil-x.opus", "2-evil-y.opus", "../secret.opus"]
            .iter()
            .enumerate()
        {
            db.execute(
                "INSERT INTO bursts (file, app_id, side, server, channel, group_id, talker, talker_id,
                 start_ms, duration_ms, size_bytes, codec, packets)
                 VALUES (?1, 'a', 'ptt', 'local', 'North', 'ptt:local:North', 'eve', '9', ?2, 1, 1, 'opus', 1)",
                rusqlite::params![f, i as i64],
            )
            .unwrap();
        }
    }
    let listed = bridge.get("/v1/archive/bursts").json();
    assert_eq!(listed["total"], 3);
    for b in listed["bursts"].as_array().unwrap() {
        let (status, _, body) = download(&bridge, b["url"].as_str().unwrap(), None);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 404, "{}: {text}", b["file"]);
        assert!(
            !text.contains("root:") && !text.contains("not yours"),
            "{text}"
        );
    }

    let get = |p: &str| bridge.get(p);
    for path in [
        "/v1/archive/files/..%2Fsecret.opus",
        "/v1/archive/files/%2e%2e%2fsecret.opus",
        "/v1/archive/files/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/archive/files/%2Fetc%2Fpasswd",
        "/v1/archive/files/index.jsonl",
        "/v1/archive/files/..",
        "/v1/archive/files/.hidden.opus",
        "/v1/archive/bursts/abc",
        "/v1/archive/bursts/-1",
        "/v1/archive/bursts/0",
        "/v1/archive/bursts/99999999999999999999999/audio",
        "/v1/archive/bursts?from=yesterday",
        "/v1/archive/bursts?from=2025-13-01",
        "/v1/archive/bursts?to=2025-02-30",
        "/v1/archive/bursts?from=2025-12-07T25:00:00Z",
        "/v1/archive/bursts?from=2025-12-09&to=2025-12-07",
        "/v1/archive/bursts?from=1765065600001&to=1765065600000",
        "/v1/archive/bursts?page_size=100000",
        "/v1/archive/bursts?page_size=0",
        "/v1/archive/bursts?page=0",
        "/v1/archive/bursts?page=99999999999",
        "/v1/archive/bursts?page=x",
        "/v1/archive/bursts?order=sideways",
        "/v1/archive/bursts?talkr=alice",
        "/v1/archive/bursts?from=%ZZ",
    ] {
        envelope_error(&get(path), 400, path);
    }
    for path in [
        "/v1/archive/bursts/424242",
        "/v1/archive/bursts/424242/audio",
        "/v1/archive/files/424242-nobody-x.opus",
    ] {
        envelope_error(&get(path), 404, path);
    }
    envelope_error(
        &bridge.request("DELETE", "/v1/archive/bursts/424242", None),
        404,
        "delete unknown",
    );
    envelope_error(
        &bridge.request("DELETE", "/v1/archive/bursts/..%2F1", None),
        400,
        "delete trick",
    );
    // Paths that leave the route are not the archive's (and serve nothing of the disk).
    for path in [
        "/v1/archive/files/../../secret.opus",
        "/v1/archive/files/a/b.opus",
    ] {
        let r = get(path);
        assert!([400, 404].contains(&r.status), "{path}: {}", r.status);
        assert!(
            !r.body.contains("not yours") && !r.body.contains("root:"),
            "{path}"
        );
    }
    for (path, body) in [
        ("/v1/archive/getVoicesInPage", ""),
        ("/v1/archive/getVoicesInPage", "not json"),
        ("/v1/archive/getVoicesInPage", "[1,2]"),
        ("/v1/archive/getVoicesInPage", r#"{"pageSize":10}"#),
        (
            "/v1/archive/getVoicesInPage",
            r#"{"pageIndex":0,"pageSize":5000}"#,
        ),
        (
            "/v1/archive/getVoicesInPage",
            r#"{"pageIndex":-1,"pageSize":10}"#,
        ),
        (
            "/v1/archive/getVoicesInPage",
            r#"{"pageIndex":0,"pageSize":10,"startDate":"2021-02-30"}"#,
        ),
        (
            "/v1/archive/getVoicesInPage",
            r#"{"pageIndex":0,"pageSize":10,"uid":{"x":1}}"#,
        ),
        ("/v1/archive/getRecordByRange", r#"{"pageSize":10}"#),
        (
            "/v1/archive/getRecordByRange",
            r#"{"pageNo":0,"pageSize":10,"startDate":"2021"}"#,
        ),
        (
            "/v1/archive/getRecordByRange",
            r#"{"pageNo":0,"pageSize":10,"startDate":"20210102000000","endDate":"20210101000000"}"#,
        ),
        ("/v1/archive/deleteRecords", "{}"),
        ("/v1/archive/deleteRecords", r#"{"recordIds":"1"}"#),
        ("/v1/archive/deleteRecords", r#"{"recordIds":[]}"#),
        ("/v1/archive/deleteRecords", r#"{"recordIds":["../x"]}"#),
        ("/v1/archive/deleteRecords", r#"{"recordIds":[1.5]}"#),
    ] {
        let b = (!body.is_empty()).then_some(body);
        envelope_error(
            &bridge.request("POST", path, b),
            400,
            &format!("{path} {body}"),
        );
    }
    assert_eq!(
        bridge.get("/v1/archive/bursts").json()["total"],
        3,
        "nothing was deleted"
    );
    assert!(tmp.path().join("secret.opus").exists());

    // No credentials, or wrong ones: 401 on every route, with how to sign in.
    let wrong = ("Authorization", "Bearer not-the-operator-token");
    for (method, path, body) in [
        ("GET", "/v1/archive/bursts", None),
        ("GET", "/v1/archive/bursts/1", None),
        ("DELETE", "/v1/archive/bursts/1", None),
        ("GET", "/v1/archive/bursts/1/audio", None),
        ("GET", "/v1/archive/files/1-evil-x.opus", None),
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
    ] {
        for headers in [&[][..], &[wrong][..]] {
            let r = bridge.request_with(method, path, body, headers);
            envelope_error(&r, 401, path);
            assert!(r.header("www-authenticate").is_some(), "{path}");
        }
    }
    assert_eq!(
        bridge.get("/v1/archive/bursts").json()["total"],
        3,
        "nothing was deleted"
    );
}
