//! `pttbridge run`: starts every side and the HTTP port, runs until Ctrl-C/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use logsafe::esc;
use tokio::sync::watch;
use tracing::{Instrument, info, warn};

use crate::auth::Operators;
use crate::auth::operator::{self, TokenSource};
use crate::config::Config;
use crate::events::Platform;
use crate::http::{AppState, metrics_handle, router};
use crate::hub::EventBus;
use crate::recording::{Archive, Recorder};
use crate::sides::SideContext;
use crate::storage::{AppRow, RecordOp, Store};

/// Runs the bridge with a loaded configuration.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // The recorder is installed before any side registers a metric.
    metrics_handle();
    let bus = Arc::new(EventBus::new());
    // A cluster node numbers events as they come back from the shared log: set up before
    // anything publishes or a sink subscribes.
    let event_log = match config.cluster.enabled() {
        true => Some(crate::cluster::eventlog::EventLog::start(
            &config.cluster,
            &config.nats,
            bus.clone(),
        )?),
        false => None,
    };
    log_events(&bus);
    let store = open_store(&config)?;
    // A cluster node's apps and call records are the shared log's, applied here in its order.
    let _records = match config.cluster.enabled() {
        true => Some(crate::cluster::records::RecordLog::start(
            &config.cluster,
            &config.nats,
            store.clone(),
        )?),
        false => None,
    };
    let recorder = match &config.recording.dir {
        Some(dir) => {
            let archive = Archive {
                store: store.clone(),
                retention_days: config.recording.retention_days,
                max_total_bytes: config.recording.max_total_bytes,
            };
            Some(
                Recorder::start(dir, Some(archive))
                    .with_context(|| format!("recording.dir: cannot use {}", dir.display()))?,
            )
        }
        None => None,
    };
    let mut egw = config.egw.clone();
    // `/server/address` gives this URL, never one made from a request's Host header.
    egw.public_url = egw.public_url.or_else(|| config.http.egw_url());
    if egw.public_url.is_none() {
        warn!(
            "http.listen is a wildcard address and http.public_url is unset: /server/address cannot name the event gateway"
        );
    }
    let mut platform = Platform::new(egw, config.business.clone(), store);
    platform.recordings = config.recording.dir.clone();
    platform.customers = config.customers.clone();
    if config.directory.url.is_some() {
        // Before the sides: consoles and the floor look roles up in it from their first login.
        platform.directory = Some(crate::directory::Directory::start(&config.directory)?);
    }
    if config.nats.url.is_some() {
        // Before any side starts: the sink subscribes now and misses nothing.
        platform.nats = Some(crate::events::nats::start(&config.nats, &bus)?);
    }
    let (shutdown_tx, shutdown) = watch::channel(false);
    // Before the sides start: the usage committer subscribes now and misses no presence.
    platform.commit_health =
        crate::customers::committer::spawn(&config.customers.commit, &bus, shutdown.clone())?;
    // Before the sides: the meeting side serves connections relayed from other nodes, and
    // platform commands no local side can carry out go to the node that can.
    let route = if config.cluster.enabled() {
        let route = crate::cluster::route::Route::start(
            &config.cluster,
            &config.nats,
            platform.commands.clone(),
        )?;
        platform.commands.set_remote(route.clone());
        Some(route)
    } else {
        None
    };
    let mut ctx = SideContext {
        config: &config,
        bus: bus.clone(),
        platform: &platform,
        recorder,
        ptt: None,
        route: route.clone(),
        admins: Vec::new(),
    };
    let sides = crate::sides::start_all(&mut ctx)?;
    let cluster = match (&ctx.ptt, config.cluster.enabled()) {
        (Some(ptt), true) => Some(crate::cluster::node::ClusterNode::start(
            &config.cluster,
            &config.nats,
            ptt.clone(),
            ctx.admins.clone(),
            bus.clone(),
            event_log.as_ref().map(|l| l.ender()),
            shutdown.clone(),
        )?),
        _ => None,
    };
    crate::heap::spawn(shutdown.clone());
    let operators = operators(&config, &platform.store)?;
    let mut state =
        AppState::new(sides.clone(), bus, platform, shutdown.clone()).with_operators(operators);
    if let Some(c) = &cluster {
        state = state.with_cluster(c.status.clone());
        if let Some(r) = &route {
            r.set_status(c.status.clone());
        }
    }
    if let Some(log) = &event_log {
        state = state.with_event_log(log.stats.clone());
    }
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot listen on {}", config.http.listen))?;
    info!(address = %listener.local_addr()?, "HTTP listening");
    if let Some(agent) = config.console.agent.clone() {
        start_console_agent(
            agent,
            listener.local_addr()?,
            config.http.tls_cert.is_some(),
        );
    }
    let server = crate::http::listener::serve(listener, router(state), &config.http, shutdown);
    tokio::select! {
        result = server => result.context("HTTP server failed")?,
        _ = async {
            shutdown_signal().await;
            // Long-lived streams (events, WebSockets) watch this and close; the server then
            // finishes on its own. A client that does not let go is not waited for long.
            let _ = shutdown_tx.send(true);
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown began; closing them"),
    }
    // A cluster node's leases are released (its accounts offline first) so other nodes take
    // them at once.
    if let Some(c) = &cluster {
        c.drained(SHUTDOWN_GRACE + config.cluster.drain_max_wait())
            .await;
    }
    // What this node said last (its released leases) reaches the other nodes.
    if let Some(log) = &event_log {
        log.flushed(SHUTDOWN_GRACE).await;
    }
    // Sides end their sessions (consoles' calls end with their terminals moved home) before
    // the process goes.
    futures_util::future::join_all(sides.iter().map(|s| s.shutdown(SHUTDOWN_GRACE))).await;
    info!("stopped");
    Ok(())
}

/// `[console.agent]`: the console agent in this process (a single-box setup), talking to this
/// bridge's own `/muicall` unless told otherwise. Its failure (no sound device, its port taken)
/// is logged and leaves the bridge running.
fn start_console_agent(
    mut agent: console_agent::AgentConfig,
    http: std::net::SocketAddr,
    tls: bool,
) {
    if agent.bridge.is_none() {
        let ip = if http.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            http.ip()
        };
        let scheme = if tls { "wss" } else { "ws" };
        agent.bridge = Some(format!(
            "{scheme}://{}/muicall",
            std::net::SocketAddr::new(ip, http.port())
        ));
    }
    tokio::spawn(
        async move {
            if let Err(e) = console_agent::run(agent).await {
                tracing::error!(error = %format!("{e:#}"), "console agent stopped");
            }
        }
        .instrument(tracing::info_span!("console_agent")),
    );
}

/// Operator credentials: `[operator] token`, the environment, or the digests kept from an
/// earlier start; with none, a token is generated, its digest kept, and the token shown once.
fn operators(config: &Config, store: &Store) -> anyhow::Result<Arc<Operators>> {
    let stored = store
        .operator_tokens()
        .context("storage: cannot read operator tokens")?;
    let env = std::env::var(operator::TOKEN_ENV).ok();
    let (ops, source) = Operators::from_config(&config.operator, env, stored);
    match source {
        TokenSource::Generated(token) => {
            for d in ops.digests() {
                store
                    .add_operator_token(d, unix_ms())
                    .context("storage: cannot keep the operator token")?;
            }
            let kept = if config.storage.path.is_some() {
                "its digest is kept in storage.path; it is not shown again"
            } else {
                "storage is in memory: a new one is made at every start"
            };
            // Shown once, on the terminal that started the bridge; never logged.
            eprintln!(
                "\noperator token (sign in at http://{}/#token={token}; {kept}):\n  {token}\n",
                config.http.listen
            );
            warn!("no operator token configured: generated one and printed it on stderr");
        }
        TokenSource::Stored => info!("operator token: the one generated at an earlier start"),
        TokenSource::Environment => info!("operator token from {}", operator::TOKEN_ENV),
        TokenSource::Config => info!("operator token from operator.token"),
    }
    // Sign-outs are kept in the store — across restarts, and on a cluster node shared with the
    // other nodes through the records stream, whose hook tells this node of theirs.
    let ops = Arc::new(ops);
    for (key, expiry) in store
        .operator_sign_outs(unix_ms())
        .context("storage: cannot read operator sign-outs")?
    {
        ops.revoke(&key, expiry);
    }
    let keep = store.clone();
    ops.on_sign_out(move |key, expiry_ms| {
        let store = keep.clone();
        tokio::spawn(async move {
            if let Err(e) = store.write(RecordOp::SignOut { key, expiry_ms }).await {
                warn!(error = %e, "operator sign-out not kept: other nodes may still take the session");
            }
        });
    });
    let told = Arc::downgrade(&ops);
    store.on_applied(Arc::new(move |op: &RecordOp| {
        if let (RecordOp::SignOut { key, expiry_ms }, Some(ops)) = (op, told.upgrade()) {
            ops.revoke(key, *expiry_ms);
        }
    }));
    Ok(ops)
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Opens the store and writes the config's apps into it.
fn open_store(config: &Config) -> anyhow::Result<Store> {
    let path = config.storage.path.as_deref();
    let store = Store::open(path).with_context(|| match path {
        Some(p) => format!("storage.path: cannot open {}", p.display()),
        None => "storage: cannot open the in-memory database".to_string(),
    })?;
    if path.is_none() {
        info!("storage.path unset: apps and call records are kept in memory only");
    }
    for (i, app) in config.business.apps.iter().enumerate() {
        store
            .upsert_app(&AppRow {
                app_id: app.app_id.clone(),
                app_secret: app.app_secret.clone(),
                app_name: app.app_name.clone().unwrap_or_else(|| app.app_id.clone()),
                status: "online".into(),
                consumption_limit: None,
                services: vec![(4, None), (7, None)],
            })
            .with_context(|| format!("business.apps[{i}]: cannot store app {:?}", app.app_id))?;
    }
    Ok(store)
}
/// How much of an event's detail (JSON) the event log shows.
const EVENT_DETAIL_BYTES: usize = 200;
/// How long open connections get to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Every hub event goes to the log at debug level (target `pttbridge::events`), one short line:
/// what a peer wrote (chat text, names, reasons) escaped and cut off, so neither a forged line
/// nor a 100 KB chat message reaches the log whole.
fn log_events(bus: &EventBus) {
    let mut rx = bus.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let (side, id, name) = ev.party.as_ref().map_or(("", "", ""), |p| {
                        (p.side.as_str(), p.id.as_str(), p.name.as_str())
                    });
                    let colon = if side.is_empty() { "" } else { ":" };
                    tracing::debug!(
                        target: "pttbridge::events",
                        kind = ev.kind.as_str(),
                        app = %esc(&ev.app_id).limit(64),
                        version = ev.version,
                        group = %esc(&ev.group_id).limit(128),
                        party = %format_args!("{side}{colon}{}", esc(id).limit(64)),
                        name = %esc(name).limit(64),
                        detail = %esc(&ev.detail).limit(EVENT_DETAIL_BYTES),
                        "event"
                    )
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event log fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutting down");
}
