//! Load tool for the event sinks; prints the figures.
//!
//! ```text
//! events-load nats [--events 200000] [--nats-url nats://...]   hub → NATS JetStream (acked events/s)
//! events-load egw  [--clients 1000] [--rate 100] [--seconds 10] hub → EGW WebSocket subscribers (p50/p99)
//!                  [--cluster nats://A,nats://B,nats://C [--nodes 3]]
//! ```
//!
//! With `--cluster`, `egw` runs `--nodes` cluster nodes in this process (each its own bus, event
//! log and `/egw` listener) against that JetStream cluster: events are published on the nodes in
//! turn, the clients spread over them; latency is publish on one node → frame on any node.
//!
//! Both run the bridge's real bus and sinks (and its Prometheus recorder) in this process.
//! `nats` starts a `nats-server -js` on a free loopback port with a temp store unless
//! `--nats-url` is given, and prints the CPU this process and that nats-server used per event.
//! `egw` serves `/egw` on loopback and runs the clients in a child process of this tool
//! (`egw-clients`, 256 connecting at a time) on the same machine, so they share its cores as they
//! would on one box; latency is publish → frame parsed by the client (wall clock, one machine),
//! and the CPU of the bridge and of the clients is printed apart. Each process raises its
//! open-file limit as far as it may (a client or a server socket per subscriber, plus headroom)
//! and otherwise names the `ulimit -n` it needs.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use pttbridge::events::Platform;
use pttbridge::events::config::{Developer, EgwConfig, NatsConfig};
use pttbridge::http::AppState;
use pttbridge::hub::event::Draft;
use pttbridge::hub::{EventBus, EventKind, Party, Side};
use pttbridge::storage::Store;
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> anyhow::Result<u64> {
    match arg(args, name) {
        Some(v) => v.parse().with_context(|| format!("{name} {v:?}")),
        None => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The bridge's Prometheus recorder, so every series the sinks update costs what it costs
    // in the bridge.
    let metrics = pttbridge::http::metrics_handle();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = match args.first().map(String::as_str) {
        Some("nats") => rt.block_on(nats(&args)),
        Some("egw") => rt.block_on(egw(&args)),
        Some("egw-clients") => rt.block_on(egw_clients(&args)),
        _ => bail!(
            "usage: events-load nats [--events N] [--nats-url URL] | egw [--clients N] [--rate EV_PER_S] [--seconds S]"
        ),
    };
    // Rendering drains the histograms' samples, as a scrape would.
    drop(metrics.render());
    result
}

fn party() -> Party {
    Party {
        side: Side::Ptt,
        id: "7".into(),
        name: "load".into(),
    }
}

/// A nats-server of our own on a free port (killed on drop).
struct OwnNats {
    child: std::process::Child,
    dir: std::path::PathBuf,
    url: String,
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Raises this process's open-file limit to hold `fds` descriptors: the soft limit up to the
/// hard one, and the hard one too where the process may (root, `CAP_SYS_RESOURCE`).
fn raise_fd_limit(fds: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= fds {
        return Ok(());
    }
    let wanted = libc::rlimit {
        rlim_cur: fds,
        rlim_max: lim.rlim_max.max(fds),
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(());
    }
    bail!(
        "{fds} open files needed, the limit is {} (hard {}) and cannot be raised here: run `ulimit -n {fds}` (as root, or raise the hard limit) first",
        lim.rlim_cur,
        lim.rlim_max
    )
}

/// CPU seconds (user + system) a process has used so far: `pid` "self" or a number.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are fields 14, 15.
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf only reads a configuration value.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / tick.max(1.0)
}

fn start_nats() -> anyhow::Result<OwnNats> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("events-load-nats-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server");
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run nats-server (scripts/setup installs it)")?;
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nats-server did not open port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(OwnNats { child, dir, url })
}

async fn nats(args: &[String]) -> anyhow::Result<()> {
    let n = num(args, "--events", 200_000)?;
    let own;
    let mut server_pid = None;
    let url = match arg(args, "--nats-url") {
        Some(u) => u,
        None => {
            own = start_nats()?;
            server_pid = Some(own.child.id().to_string());
            own.url.clone()
        }
    };
    let server_cpu = || server_pid.as_deref().map(cpu_seconds);
    let bus = Arc::new(EventBus::new());
    let config = NatsConfig {
        url: Some(url.clone()),
        ..Default::default()
    };
    let stats = pttbridge::events::nats::start(&config, &bus)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stats.stream_ready.load(Ordering::Relaxed) {
        if Instant::now() > deadline {
            bail!("JetStream stream not ready at {url}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = |s: &pttbridge::events::nats::SinkStats| {
        s.acked.load(Ordering::Relaxed) + s.duplicates.load(Ordering::Relaxed)
    };
    let (cpu0, server0) = (cpu_seconds("self"), server_cpu());
    let start = Instant::now();
    let mut published = 0u64;
    while published < n {
        // Never run further ahead of the sink than the bus buffer (8192) holds.
        while published - stats.received.load(Ordering::Relaxed) > 4_000
            || published - done(&stats) > 50_000
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        for _ in 0..1000.min(n - published) {
            bus.publish(
                Draft::new("load", EventKind::TalkStarted, "ptt:load:North")
                    .party(party())
                    .detail(json!({"media_type": 2})),
            );
            published += 1;
        }
        tokio::task::yield_now().await;
    }
    while done(&stats) < n {
        if stats.dropped.load(Ordering::Relaxed) > 0 {
            bail!("the sink dropped events: {stats:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self") - cpu0;
    let server = match (server0, server_cpu()) {
        (Some(a), Some(b)) => format!(
            ", nats-server {:.0} % of a core ({:.1} µs per event)",
            (b - a) / secs * 100.0,
            (b - a) / n as f64 * 1e6
        ),
        _ => String::new(),
    };
    println!(
        "hub → NATS JetStream: {n} events acked in {secs:.2} s = {:.0} events/s (retried {}, duplicates {}, dropped {}); \
         CPU: this process (producer, bus, sink) {:.0} % of a core ({:.1} µs per event){server}",
        n as f64 / secs,
        stats.retried.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
        cpu / secs * 100.0,
        cpu / n as f64 * 1e6,
    );
    Ok(())
}

async fn egw(args: &[String]) -> anyhow::Result<()> {
    let clients = num(args, "--clients", 1000)? as usize;
    let rate = num(args, "--rate", 100)?.max(1);
    let seconds = num(args, "--seconds", 10)?.max(1);
    let cluster = arg(args, "--cluster");
    let nodes = if cluster.is_some() {
        num(args, "--nodes", 3)?.max(1) as usize
    } else {
        1
    };
    // One server socket per client, plus headroom.
    raise_fd_limit(clients as u64 + 1024)?;
    let egw = EgwConfig {
        heartbeat_timeout_ms: 3_600_000,
        developers: vec![Developer {
            dev_id: "load".into(),
            token: "load".into(),
            apps: vec![],
        }],
        ..Default::default()
    };
    let (_running, shutdown) = tokio::sync::watch::channel(false);
    let mut buses = Vec::new();
    let mut addrs = Vec::new();
    let mut logs = Vec::new();
    for i in 0..nodes {
        let bus = Arc::new(EventBus::new());
        if let Some(url) = &cluster {
            let config = pttbridge::cluster::config::ClusterConfig {
                node_id: Some(format!("load-{i}")),
                url: Some(url.clone()),
                replicas: 3,
                event_stream: format!("load_egw_{}", std::process::id()),
                ..Default::default()
            };
            logs.push(pttbridge::cluster::eventlog::EventLog::start(
                &config,
                &Default::default(),
                bus.clone(),
            )?);
        }
        let platform = Platform::new(egw.clone(), Default::default(), Store::open(None)?);
        let state = Arc::new(AppState::new(
            Vec::new(),
            bus.clone(),
            platform,
            shutdown.clone(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        tokio::spawn(pttbridge::http::serve(listener, state));
        buses.push(bus);
    }
    let started = Instant::now();
    while !logs.iter().all(|l| l.stats.reading.load(Ordering::Relaxed)) {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the event logs did not start reading");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let total = rate * seconds;
    // The clients run in a child process: ten thousand clients and their ten thousand server
    // sockets would not fit one process's usual 20,000 open files, and apart the CPU of each
    // side can be told.
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["egw-clients", "--clients", &clients.to_string()])
        .args(["--events", &total.to_string(), "--addrs", &list.join(",")])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the clients' process")?;
    let child_pid = child.id().context("clients' process gone")?.to_string();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let subscribed = next_line(&mut lines).await?;
    println!("{subscribed}");
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (cpu0, clients0) = (cpu_seconds("self"), cpu_seconds(&child_pid));
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        buses[i as usize % nodes].publish(
            Draft::new("load", EventKind::MessageText, "ptt:load:North")
                .party(party())
                .detail(json!({ "text": "load", "sent_us": wall_us() })),
        );
    }
    let result: ClientsResult = serde_json::from_str(&next_line(&mut lines).await?)?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds("self") - cpu0) / wall * 100.0;
    let clients_cpu = result.cpu_s - clients0;
    let _ = child.wait().await;
    let over = if cluster.is_some() {
        format!(" over {nodes} cluster nodes")
    } else {
        String::new()
    };
    println!(
        "hub → {clients} EGW subscribers{over}: {total} events at {rate}/s = {} frames in {wall:.2} s ({:.0} frames/s); \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; clients incomplete: {}; \
         CPU: bridge (bus, projection, /egw) {cpu:.0} % of a core, clients {:.0} %",
        result.frames,
        result.frames as f64 / wall,
        result.p50_ms,
        result.p99_ms,
        result.max_ms,
        result.incomplete,
        clients_cpu / wall * 100.0,
    );
    if cluster.is_none() {
        // The bridge's own view: publish → frame written to the socket, from its histogram.
        let text = pttbridge::http::metrics_handle().render();
        let q = |p| bucket_quantile(&text, "pttbridge_event_delivery_seconds", "sink=\"egw\"", p);
        println!(
            "bridge side (pttbridge_event_delivery_seconds{{sink=\"egw\"}}, publish → written): p50 ≤ {} ms, p99 ≤ {} ms",
            q(0.5),
            q(0.99)
        );
    }
    if result.incomplete > 0 {
        bail!("{} clients did not receive every event", result.incomplete);
    }
    Ok(())
}

/// The upper bound (ms) of the histogram bucket holding quantile `p` of `name{label,...}` in
/// Prometheus text; "?" when absent.
fn bucket_quantile(text: &str, name: &str, label: &str, p: f64) -> String {
    let buckets = pttbridge::metrics_catalog::histogram_buckets(text, name, label);
    let total = buckets.iter().map(|b| b.1).fold(0.0, f64::max);
    buckets
        .iter()
        .find(|(_, n)| *n >= total * p && total > 0.0)
        .map_or("?".into(), |(le, _)| format!("{}", le * 1000.0))
}

/// Microseconds since the Unix epoch: the clients are another process, so the publish time
/// travels in the event as wall-clock time (one machine, one clock).
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<String> {
    lines
        .next_line()
        .await?
        .context("the clients' process ended early (its error is above)")
}

/// What the clients' process reports at the end (one JSON line).
#[derive(serde::Serialize, serde::Deserialize)]
struct ClientsResult {
    frames: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    incomplete: usize,
    /// The clients' process's CPU seconds so far.
    cpu_s: f64,
}

/// The clients' process: connects, logs in and subscribes `--clients` clients spread over
/// `--addrs`, says so on stdout, then reports the latencies of `--events` events each.
async fn egw_clients(args: &[String]) -> anyhow::Result<()> {
    let clients = num(args, "--clients", 1000)? as usize;
    let total = num(args, "--events", 1000)?;
    let addrs: Vec<SocketAddr> = arg(args, "--addrs")
        .context("--addrs")?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // One socket per client, plus headroom.
    raise_fd_limit(clients as u64 + 1024)?;
    let mut tasks = Vec::with_capacity(clients);
    let connect_start = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(clients);
    // Connecting ten thousand at once would overflow the listen backlog (SYNs dropped, retried
    // a second later); a few hundred handshakes at a time keep it quick.
    let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    for c in 0..clients {
        let ready = ready_tx.clone();
        let permit = connecting.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(client(
            addrs[c % addrs.len()],
            total,
            ready,
            permit,
        )));
    }
    drop(ready_tx);
    let mut ready = 0;
    while ready < clients {
        if tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            bail!("only {ready} of {clients} clients subscribed");
        }
        ready += 1;
    }
    println!(
        "{clients} EGW clients logged in and subscribed in {:.2} s",
        connect_start.elapsed().as_secs_f64()
    );
    let mut latencies: Vec<u32> = Vec::with_capacity(clients * total as usize);
    let mut incomplete = 0;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(60), t).await {
            Ok(Ok(Ok(l))) => {
                if l.len() < total as usize {
                    incomplete += 1;
                }
                latencies.extend(l);
            }
            Ok(Ok(Err(e))) => {
                eprintln!("client: {e:#}");
                incomplete += 1;
            }
            _ => incomplete += 1,
        }
    }
    let cpu_s = cpu_seconds("self");
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
    };
    let result = ClientsResult {
        frames: latencies.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        incomplete,
        cpu_s,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The fields of a pushed 20110 frame the tool reads.
#[derive(serde::Deserialize)]
struct LoadFrame {
    version: u64,
    detail: LoadDetail,
}

#[derive(serde::Deserialize)]
struct LoadDetail {
    sent_us: u64,
}

/// Clients connecting and logging in at once.
const CONNECTING: usize = 256;

/// One subscriber: logs in, subscribes, then records publish → receive latency (µs) per event.
/// `connecting` is held until it has subscribed.
async fn client(
    addr: SocketAddr,
    total: u64,
    ready: tokio::sync::mpsc::Sender<()>,
    connecting: tokio::sync::OwnedSemaphorePermit,
) -> anyhow::Result<Vec<u32>> {
    // A small read buffer: tungstenite zero-fills the spare capacity of its read buffer on every
    // read (128 KiB by default), which would make the clients, not the server, the bottleneck.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{addr}/egw"),
        Some(config),
        true,
    )
    .await?;
    for req in [
        json!({"business": "EGW", "id": 20000, "dev_id": "load", "token": "load"}),
        json!({"business": "EGW", "id": 20004, "app_list": [{"app_id": "load"}]}),
    ] {
        ws.send(Message::text(req.to_string())).await?;
        let reply = ws.next().await.context("closed")??;
        let v: serde_json::Value = serde_json::from_str(reply.to_text()?)?;
        if v["result"] != 0 {
            bail!("refused: {v}");
        }
    }
    drop(connecting);
    ready.send(()).await.ok();
    let mut out = Vec::with_capacity(total as usize);
    let mut last = 0;
    while (out.len() as u64) < total {
        let msg = ws.next().await.context("closed")??;
        let Message::Text(t) = msg else { continue };
        let now = wall_us();
        let f: LoadFrame = serde_json::from_str(t.as_str())?;
        if f.version != last + 1 {
            bail!("gap: {last} → {}", f.version);
        }
        last = f.version;
        let sent = f.detail.sent_us;
        out.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
    }
    let _ = ws.close(None).await;
    Ok(out)
}
