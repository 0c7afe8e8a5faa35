//! Server recording of a meeting room (527meeting `meeting.startRecord`/`stopRecord`, §3.35–3.36;
//! issue 18 item 5) against real peers: an aiortc participant (`tests/peers/meeting.py`) dials
//! a PTT channel on Debian's murmurd where a pymumble terminal talks. The recording is the mix
//! the room's members hear — the channel and the members' own published audio — in one Ogg
//! Opus file, listed, downloaded and deleted through the archive (`docs/archive.md`) and the
//! spec's `getRecordByRange`/`deleteRecords` shapes.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::audio::{CompareOptions, compare_with, load_wav, read_ogg_opus};
use testkit::bridge::{Bridge, OPERATOR, ptt_server_toml};
use testkit::meeting::{JITTER_SEARCH_MS, Participant};
use testkit::murmur::Murmur;
use testkit::peers::fixture;
use testkit::terminal::Terminal;

const BIN: &str = env!("CARGO_BIN_EXE_pttbridge");
const T: Duration = Duration::from_secs(15);
const NORTH: i64 = 9001;

/// murmurd's North, the bridge's account in it, dial-in 9001, and `recording` (a `[recording]`
/// table, or nothing).
fn start(server: &Murmur, recording: &str) -> Bridge {
    let config = format!(
        "{recording}\n{}\n[meeting]\nring_delay_ms = 100\nanswer_delay_ms = 300\n\
         [[meeting.apps]]\napp_id = \"test\"\nsecret = \"test\"\n\
         [[meeting.dial_in]]\nuser_id = {NORTH}\nserver = \"local\"\naccount = \"bridge\"\nname = \"North\"\n",
        ptt_server_toml("local", server, &[("bridge", "North")]),
    );
    let bridge = Bridge::start(BIN, &config);
    bridge.wait_health(
        "connected in North",
        |h| h["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North",
        T,
    );
    bridge
}

fn from(id: i64) -> impl Fn(&Value) -> bool {
    move |m| m["ownUserId"] == id
}

/// A room `p` created and entered, with North dialled in: returns the room.
fn dial_north(p: &mut Participant) -> i64 {
    let r = p.request(
        json!({"module":"room","method":"newAppRoom","name":"briefing",
        "numberLimit":10,"roomtype":1,"userId":p.id()}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let room = r["roomId"].as_i64().expect("roomId");
    let r = p.request(
        json!({"module":"meeting","method":"enter","userId":p.id(),"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    let r = p.request(
        json!({"module":"call","method":"doInvite","ownUserId":p.id(),
        "targetUserId":NORTH,"type":1,"roomId":room}),
    );
    assert_eq!(r["result"], 0, "{r}");
    p.push("doAgree", from(NORTH), T);
    let r = p.request(
        json!({"module":"call","method":"doEvent","ownUserId":p.id(),
        "targetUserId":NORTH,"event":"onConnected","roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
    p.push(
        "onPublished",
        |m| m["client"]["id"] == NORTH && m["published"] == true,
        T,
    );
    room
}

/// `host` invites `guest` into `room`, and the guest enters.
fn invite_in(host: &mut Participant, guest: &mut Participant, room: i64) {
    let r = host.request(
        json!({"module":"call","method":"doInvite","ownUserId":host.id(),
        "targetUserId":guest.id(),"type":1,"roomId":room}),
    );
    assert_eq!(r["result"], 0, "{r}");
    guest.push("doInvite", from(host.id()), T);
    let r = guest.request(
        json!({"module":"meeting","method":"enter","userId":guest.id(),"roomId":room,"roomType":1}),
    );
    assert_eq!(r["result"], 0, "{r}");
}

fn start_record(p: &mut Participant, name: &str) -> i64 {
    let r = p.request(json!({"module":"meeting","method":"startRecord","fileName":name}));
    assert_eq!(r["result"], 0, "{r}");
    let id = r["recordId"].as_i64().expect("recordId");
    let told = p.push("onRecord", |m| m["recordId"] == id, T);
    assert_eq!(told["type"], "startRecord", "{told}");
    assert_eq!(told["userId"], p.id(), "{told}");
    id
}

fn stop_record(p: &mut Participant, id: i64) {
    let r = p.request(json!({"module":"meeting","method":"stopRecord","recordId":id}));
    assert_eq!(r["result"], 0, "{r}");
    let told = p.push(
        "onRecord",
        |m| m["recordId"] == id && m["type"] == "stopRecord",
        T,
    );
    assert_eq!(told["userId"], p.id(), "{told}");
}

/// The archive's row for recording `id`, once it is complete (its length written at stop).
fn completed(bridge: &Bridge, id: i64) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let r = bridge.get(&format!("/v1/archive/bursts/{id}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let row = r.json()["burst"].clone();
        if row["duration_ms"].as_i64() > Some(0) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "recording {id} never completed: {row}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lists until `want` bursts match `query`.
fn wait_bursts(bridge: &Bridge, query: &str, want: usize) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let v = bridge.get(&format!("/v1/archive/bursts?{query}")).json();
        if v["bursts"].as_array().map_or(0, Vec::len) >= want {
            return v;
        }
        assert!(Instant::now() < deadline, "{want} bursts not listed: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The recording's audio, downloaded as an operator and decoded.
fn download(bridge: &Bridge, row: &Value, dir: &Path) -> Vec<f32> {
    let url = row["url"].as_str().expect("url");
    let (status, _, file) =
        testkit::http::request_bytes(bridge.addr(), "GET", url, &[OPERATOR]).unwrap();
    assert_eq!(status, 200);
    let path = dir.join(format!("{}.opus", row["id"]));
    std::fs::write(&path, &file).unwrap();
    read_ogg_opus(&path).unwrap()
}

/// The recording against what was said, each window where it landed (the recording is
/// re-timed through jitter buffers, as a member's playback is).
fn compare(said: &Path, recorded: &[f32]) -> testkit::audio::Comparison {
    let opt = CompareOptions {
        window_search_ms: JITTER_SEARCH_MS,
        ..CompareOptions::default()
    };
    compare_with(&load_wav(said), recorded, &opt)
}

/// The compere records twice. First the PTT channel: alice's speech on murmurd is in the
/// downloaded file (median correlation >= 0.9, same active length ± 10 %), the file runs in
/// real time (its length is the time between start and stop), everyone is told with
/// `onRecord`, the row is listed with the room as its channel and the starter as the spec's
/// `userId`. A member entering late is told of carol's stream. Then the member: carol's own
/// published speech is in the second recording, and
/// — as the channel heard it — one of North's archived bursts, carol its talker. Finally
/// `deleteRecords` removes both recordings.
#[test]
fn a_recorded_meeting_holds_the_ptt_channel_and_the_members() {
    let server = Murmur::start(&["North"]);
    let tmp = tempfile::tempdir().unwrap();
    let rec_dir = tmp.path().join("rec");
    let bridge = start(
        &server,
        &format!("[recording]\ndir = \"{}\"", rec_dir.display()),
    );
    let mut alice = Terminal::connect(server.port(), "alice", Some("North"));
    let mut carol = Participant::join(bridge.addr(), "carol");
    let room = dial_north(&mut carol);
    let speech = fixture("audio/speech.wav");

    // 1. The channel.
    let started = Instant::now();
    let first = start_record(&mut carol, "north briefing");
    let again = carol.request(json!({"module":"meeting","method":"startRecord"}));
    assert_eq!(again["result"], 409, "one recording at a time: {again}");
    std::thread::sleep(Duration::from_millis(500));
    alice.play_and_wait(&speech, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    stop_record(&mut carol, first);
    let wall_ms = started.elapsed().as_millis() as i64;
    let row = completed(&bridge, first);
    println!("first recording: {row}");
    assert_eq!(
        (&row["side"], &row["channel"], &row["talker"]),
        (
            &json!("meeting"),
            &json!("briefing"),
            &json!("north briefing")
        ),
        "{row}"
    );
    assert_eq!(row["talker_id"], carol.id().to_string(), "{row}");
    let duration = row["duration_ms"].as_i64().unwrap();
    assert!(
        (duration - wall_ms).abs() < 1000,
        "the file runs in real time: {duration} ms recorded in {wall_ms} ms"
    );
    let audio = download(&bridge, &row, tmp.path());
    let c = compare(&speech, &audio);
    println!("recorded meeting vs what alice said on PTT: {c}");
    c.assert_matches(0.9, 0.1);

    // 2. A member: carol's own voice, published into the room.
    carol.cmd(json!({"cmd":"publish"}));
    carol.expect(|e| e["event"] == "published", T);
    carol.expect(
        |e| e["event"] == "pc_state" && e["pc"] == "publish" && e["state"] == "connected",
        T,
    );
    // A late joiner learns of carol's stream as those present did (onPublished after its
    // enter reply), and of the channel's.
    let mut dave = Participant::join(bridge.addr(), "dave");
    invite_in(&mut carol, &mut dave, room);
    for who in [carol.id(), NORTH] {
        dave.push(
            "onPublished",
            |m| m["client"]["id"] == who && m["published"] == true && m["event"] == "play",
            T,
        );
    }
    let second = start_record(&mut carol, "carol speaks");
    assert_ne!(second, first);
    std::thread::sleep(Duration::from_millis(500));
    carol.speak_and_wait(&speech, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    stop_record(&mut carol, second);
    let row = completed(&bridge, second);
    let audio = download(&bridge, &row, tmp.path());
    let c = compare(&speech, &audio);
    println!("recorded meeting vs what carol said in the room: {c}");
    c.assert_matches(0.9, 0.1);

    // What carol said also went into North: the archive has it as one of the channel's
    // bursts, carol its talker (the bridge records what it transmits for the room).
    let listed = wait_bursts(&bridge, "channel=North&name=carol", 1);
    let b = &listed["bursts"][0];
    assert_eq!(
        (b["talker"].as_str(), b["side"].as_str()),
        (Some("carol"), Some("meeting")),
        "{listed}"
    );
    let audio = download(&bridge, b, tmp.path());
    let c = compare(&speech, &audio);
    println!("carol's burst into North vs what she said: {c}");
    c.assert_matches(0.9, 0.1);

    // The spec's shapes: the starter's recordings, then both deleted (rows and files).
    let r = bridge.request(
        "POST",
        "/v1/archive/getRecordByRange",
        Some(&json!({"userId": carol.id(), "pageNo": 0, "pageSize": 10}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    let ids: Vec<i64> = list["recordList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect();
    // Her two recordings of the room, and her burst into North.
    assert_eq!(ids.len(), 3, "{list}");
    assert!(ids.contains(&first) && ids.contains(&second), "{list}");
    let rooms: Vec<&str> = list["recordList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["roomName"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, ["North", "briefing", "briefing"], "{list}");
    let r = bridge.request(
        "POST",
        "/v1/archive/deleteRecords",
        Some(&json!({"recordIds": [first, second]}).to_string()),
    );
    assert_eq!(r.json()["result"], 0, "{}", r.body);
    assert_eq!(
        bridge.get(&format!("/v1/archive/bursts/{first}")).status,
        404
    );
    let left: Vec<_> = std::fs::read_dir(&rec_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("-room-"))
        .collect();
    assert!(left.is_empty(), "room recordings left on disk: {left:?}");
    // The room goes on: alice is still heard by the room's members afterwards.
    assert_eq!(
        bridge.health()["sides"]["meeting"]["links"][0]["dial_in"],
        NORTH
    );
}

/// Refusals, each the protocol's error reply on a socket that keeps serving: a member who is
/// not the compere may neither start nor stop (403); stopping an unknown recording is 404; a
/// missing or ill-typed `recordId`, or a bad `fileName`, is refused as malformed; and a bridge
/// without `[recording] dir` says server recording is off (result 1) instead of pretending.
#[test]
fn recording_refusals_get_protocol_errors() {
    let server = Murmur::start(&["North"]);
    let bridge = start(&server, "");
    let mut carol = Participant::join(bridge.addr(), "carol");
    let mut dave = Participant::join(bridge.addr(), "dave");
    let room = dial_north(&mut carol);
    invite_in(&mut carol, &mut dave, room);

    let off = carol.request(json!({"module":"meeting","method":"startRecord","fileName":"x"}));
    assert_eq!(off["result"], 1, "{off}");
    assert!(
        off["message"]
            .as_str()
            .unwrap_or_default()
            .contains("[recording] dir"),
        "{off}"
    );
    let r = dave.request(json!({"module":"meeting","method":"startRecord"}));
    assert_eq!(r["result"], 403, "not the compere: {r}");
    let r = dave.request(json!({"module":"meeting","method":"stopRecord","recordId":1}));
    assert_eq!(r["result"], 403, "not the compere: {r}");
    let r = carol.request(json!({"module":"meeting","method":"stopRecord","recordId":77}));
    assert_eq!(r["result"], 404, "{r}");
    for bad in [
        json!({"module":"meeting","method":"stopRecord"}),
        json!({"module":"meeting","method":"stopRecord","recordId":"seven"}),
        json!({"module":"meeting","method":"startRecord","fileName":42}),
    ] {
        let r = carol.request(bad.clone());
        let code = r["result"].as_i64().unwrap_or_default();
        assert!(code == 400 || code == 422, "{bad} → {r}");
    }
    let r = carol.request(json!({"module":"meeting","method":"startRecord","fileName":"a\u{7}b"}));
    assert_eq!(r["result"], 422, "{r}");
    // The socket still serves.
    let r = carol.request(
        json!({"module":"meeting","method":"chat","content":"still here",
        "userId":carol.id(),"roomId":room}),
    );
    assert_eq!(r["result"], 0, "{r}");
}
