//! The README's run command: `scripts/demo` brings up murmurd, the bridge and a
//! speaking demo terminal. Run here with the test build of the bridge and free ports.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::events::capture;
use testkit::http;
use testkit::peers::{free_port, repo_root};

/// The operator token the demo is given (it makes one itself when none is).
const TOKEN: &str = "demo-test-operator-token-42";

#[test]
fn the_demo_comes_up_and_the_announcer_is_heard_through_the_bridge() {
    let http_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let mut demo = Command::new(repo_root().join("scripts/demo"))
        .env("PTTBRIDGE_OPERATOR_TOKEN", TOKEN)
        .env("PTTBRIDGE_BIN", env!("CARGO_BIN_EXE_pttbridge"))
        .env("DEMO_HTTP", http_addr.to_string())
        .env("DEMO_PTT_PORT", free_port().to_string())
        .env("DEMO_SECONDS", "120")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/demo");
    let _stop = StopOnDrop(demo.id());
    let out = capture(demo.stdout.take().unwrap());
    let err = capture(demo.stderr.take().unwrap());
    let output = || {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            out.lock().unwrap(),
            err.lock().unwrap()
        )
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        // "ok" comes with the sync; the channel join follows a moment later.
        if let Ok(r) = http::request_with(http_addr, "GET", "/healthz", None, &[auth])
            && r.json()["status"] == "ok"
            && r.json()["sides"]["ptt"]["servers"][0]["accounts"][0]["channel"] == "North"
        {
            break r.json();
        }
        assert!(
            Instant::now() < deadline,
            "demo never became healthy\n{}",
            output()
        );
        assert!(
            demo.try_wait().unwrap().is_none(),
            "demo exited early\n{}",
            output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let account = &health["sides"]["ptt"]["servers"][0]["accounts"][0];
    assert_eq!(account["channel"], "North", "{health}");

    // The announcer speaks every 8 s: the bridge reports it talking in North.
    let mut events = http::sse_with(http_addr, "/events", &[auth]).expect("/events");
    let talk = events
        .try_expect(
            |e| e["type"] == "talk.started" && e["party"]["name"] == "announcer",
            Duration::from_secs(20),
        )
        .unwrap_or_else(|| panic!("no talk from the announcer\n{}", output()));
    assert_eq!(talk["group_id"], "ptt:local:North");

    // murmurd dies and comes back: the bridge reconnects, the announcer is started again, and
    // it is heard through the bridge once more (a new stream: only what happens from now on).
    let dir = out
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.split_once(") in ").map(|(_, d)| d.trim().to_string()))
        .unwrap_or_else(|| panic!("the demo did not say where murmurd runs\n{}", output()));
    let ini = format!("{dir}/murmur.ini");
    let killed = Command::new("pkill")
        .args(["-KILL", "-f", &format!("^murmurd -ini {ini} -fg$")])
        .status()
        .unwrap();
    assert!(killed.success(), "the demo's murmurd was not running");
    let restarted = Restarted(
        Command::new("murmurd")
            .args(["-ini", &ini, "-fg"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start murmurd again"),
    );
    let mut events = http::sse_with(http_addr, "/events", &[auth]).expect("/events");
    events
        .try_expect(
            |e| e["type"] == "talk.started" && e["party"]["name"] == "announcer",
            Duration::from_secs(40),
        )
        .unwrap_or_else(|| {
            panic!(
                "the announcer was not heard after the restart\n{}",
                output()
            )
        });
    assert!(
        out.lock().unwrap().contains("pttbridge demo is up"),
        "{}",
        output()
    );
    // The page's URL is printed, the page is served and North is callable from it.
    assert!(
        out.lock().unwrap().contains(&format!(
            "Web page        http://{http_addr}/#token={TOKEN}"
        )),
        "{}",
        output()
    );
    let page = http::get(http_addr, "/").expect("GET /");
    assert!(
        page.body.contains("<title>pttbridge</title>"),
        "{}",
        page.body
    );
    assert_eq!(
        http::get(http_addr, "/api/state")
            .expect("/api/state")
            .status,
        401,
        "the live view's data is the operators'"
    );
    let state = http::request_with(http_addr, "GET", "/api/state", None, &[auth])
        .expect("/api/state")
        .json();
    assert_eq!(state["dial_in"][0]["user_id"], 9001, "{state}");
    assert_eq!(state["dial_in"][0]["channel"], "North", "{state}");
    // The demo's tenant is a platform app, as the OpenAPI examples assume.
    let users = http::request_with(
        http_addr,
        "GET",
        "/v1/online/user/state?app_id=default&msg_id=1&page_size=10",
        None,
        &[("X-App-Secret", "demo-app-secret-0001")],
    )
    .expect("/v1/online/user/state");
    assert_eq!(users.status, 200, "{}", users.body);

    // Stopping it stops everything it started. SIGTERM, not SIGINT: a process started from a
    // background job inherits "ignore SIGINT", which bash cannot trap; one trap serves both.
    Command::new("kill")
        .arg("-TERM")
        .arg(demo.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while demo.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "demo did not stop on SIGTERM\n{}\n{}",
            String::from_utf8_lossy(
                &Command::new("ps")
                    .args(["-ef", "--forest"])
                    .output()
                    .unwrap()
                    .stdout
            ),
            output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped = Instant::now() + Duration::from_secs(5);
    while http::get(http_addr, "/healthz").is_ok() {
        assert!(Instant::now() < stopped, "the bridge outlived the demo");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(restarted);
}

/// A failed assertion must not leave the demo (bridge, murmurd, announcer) running.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// The murmurd this test started in place of the demo's: stopped however the test ends.
struct Restarted(std::process::Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With its HTTP port taken the bridge cannot start: the demo says so and exits non-zero,
/// having stopped what it started, instead of announcing that it is up.
#[test]
fn the_demo_fails_loudly_when_the_bridge_cannot_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let http_addr = taken.local_addr().unwrap();
    let demo = Command::new(repo_root().join("scripts/demo"))
        .env("PTTBRIDGE_OPERATOR_TOKEN", TOKEN)
        .env("PTTBRIDGE_BIN", env!("CARGO_BIN_EXE_pttbridge"))
        .env("DEMO_HTTP", http_addr.to_string())
        .env("DEMO_PTT_PORT", free_port().to_string())
        .env("DEMO_SECONDS", "60")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/demo");
    let (out, err) = (
        String::from_utf8_lossy(&demo.stdout),
        String::from_utf8_lossy(&demo.stderr),
    );
    println!("--- stdout ---\n{out}\n--- stderr ---\n{err}");
    assert!(!demo.status.success(), "exit status {}", demo.status);
    assert!(!out.contains("demo is up"), "claimed to be up");
    assert!(
        err.contains("ERROR: the bridge exited at start") && err.contains("http.listen"),
        "the reason, naming the key"
    );
}
