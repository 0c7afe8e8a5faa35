//! The console side: legacy dispatch consoles speaking the muicall voice-plugin protocol on
//! the `/muicall` WebSocket, translated to PTT temporary calls.
//!
//! Each console connection logs in to the PTT server with the console's own account (its
//! own PTT session; the bridge keeps no passwords), creates a temporary channel for each
//! call, and has the server's admin account ([`moderator`]) move the called terminals in
//! and back — on a cluster node through [`admin`], which sends the moves to the one node
//! holding the admin session. Audio travels as binary frames on the same socket
//! ([`muicall::audio`]). `docs/console.md` describes the mapping and the protocol extensions.

mod admin;
pub mod audio;
pub mod call;
pub mod commands;
pub mod config;
mod connection;
pub mod moderator;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;
use ptt::client::ClientConfig;
use tokio::sync::watch;

use crate::config::{Config, PttConfig, PttServer};
use crate::hub::{Calls, EventBus, Side};
use admin::Admin;
use config::{ConsoleConfig, normalize_base_url};
use moderator::Moderator;

/// A PTT server consoles can reach through a base URL.
#[derive(Debug)]
pub(crate) struct ServerEntry {
    /// The `[[ptt.servers]]` entry.
    pub ptt: PttServer,
    /// Its admin session (here, or on the cluster node holding it).
    pub admin: Admin,
    /// Where call channels are created.
    pub call_parent: String,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: ConsoleConfig,
    pub ptt: PttConfig,
    pub servers: HashMap<String, Arc<ServerEntry>>,
    pub bus: Arc<EventBus>,
    /// Logged-in accounts: (server id, account) → connection id. murmurd drops the older
    /// session of a user who logs in twice, so two consoles must not share an account.
    pub accounts: Mutex<HashMap<(String, String), u64>>,
    /// Terminals in calls: (server id, user id) → (connection id, call id).
    pub busy: Mutex<HashMap<(String, u64), (u64, u64)>>,
    /// Where each called terminal came from: (server id, user id) → channel id.
    pub homes: Mutex<HashMap<(String, u64), u32>>,
    next_conn: AtomicU64,
    /// Console connections still running (they end their calls before they go).
    pub live: std::sync::atomic::AtomicUsize,
    /// Console calls up on this node: a cluster node hands an admin session over only once
    /// they ended (or after `cluster.drain_max_wait_ms`), so a stopping node's calls still
    /// send their terminals home through it.
    pub calls_up: Arc<std::sync::atomic::AtomicUsize>,
    /// Platform commands to each connection: connection id → its order queue.
    pub orders: Mutex<HashMap<u64, tokio::sync::mpsc::Sender<commands::Order>>>,
    /// Calls up now: call id → (app, connection id), for invites into `console:<sessionId>`.
    pub call_owners: Mutex<HashMap<u64, (String, u64)>>,
    /// Call records, once the side has the platform's (at start).
    pub calls: OnceLock<Calls>,
    /// Where consoles' own talk bursts are recorded (`[recording] dir`), set at start.
    pub recorder: OnceLock<crate::recording::Recorder>,
    /// The directory, when configured (at start): roles give mic levels.
    pub directory: OnceLock<crate::directory::Directory>,
    /// Accounts consoles may never use: the bridge's own PTT accounts and the console admin
    /// accounts, as (server id, username). A console logging in with one would knock the
    /// bridge's session off the server.
    pub reserved: std::collections::HashSet<(String, String)>,
    /// Failed console logins, per account and per address.
    pub failures: crate::auth::FailureLimiter<String>,
}

impl Shared {
    /// The mic level of a console logged in as `account`: its configured level
    /// (`account_mic_levels`), else the dispatcher level when the directory's role for the
    /// account is dispatcher, else `mic_level`.
    pub(crate) fn level_of(&self, account: &str) -> u8 {
        if let Some(&level) = self.config.account_mic_levels.get(account) {
            return level;
        }
        self.directory
            .get()
            .and_then(|d| d.mic_level_of(account))
            .unwrap_or(self.config.mic_level)
    }

    /// The directory's name for PTT user `id` (its account name), for members the PTT server does
    /// not show because they are offline.
    pub(crate) fn directory_name(&self, id: u64) -> Option<String> {
        let snap = self.directory.get()?.snapshot()?;
        snap.by_uid(i64::try_from(id).ok()?).map(|u| u.name.clone())
    }

    /// The mic level of a PTT terminal named `name`: the dispatcher level when the directory's
    /// role for it is dispatcher, else `terminal_mic_level`.
    pub(crate) fn terminal_level_of(&self, name: &str) -> u8 {
        self.directory
            .get()
            .and_then(|d| d.mic_level_of(name))
            .unwrap_or(self.config.terminal_mic_level)
    }
}

/// The console side; cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsoleSide(pub(crate) Arc<Shared>);

impl super::Side for ConsoleSide {
    fn start(ctx: &super::SideContext<'_>) -> anyhow::Result<Arc<Self>> {
        let side = ConsoleSide::connect_with(ctx.config, ctx.bus.clone(), ctx.route.clone());
        if let Some(route) = &ctx.route {
            // Other nodes' consoles send their moves here while this node holds a session.
            route.set_admin_host(Arc::new(admin::AdminServer {
                admins: side.admins(),
            }));
        }
        // Temporary calls are recorded in the platform's call records.
        let _ = side.0.calls.set(ctx.platform.calls.clone());
        // What a dispatcher says into a call is archived as its bursts.
        if let Some(r) = &ctx.recorder {
            let _ = side.0.recorder.set(r.clone());
        }
        if let Some(d) = &ctx.platform.directory {
            let _ = side.0.directory.set(d.clone());
        }
        Ok(Arc::new(side))
    }

    fn kind(&self) -> Side {
        Side::Console
    }

    fn routes(&self, shutdown: &watch::Receiver<bool>) -> super::SideRoutes {
        // Consoles log in on the socket with their own PTT accounts.
        super::SideRoutes {
            public: routes(self.clone(), shutdown.clone()),
            ..Default::default()
        }
    }

    fn health(&self) -> serde_json::Value {
        self.status()
    }

    fn live_view(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("consoles".into(), self.status());
        m
    }

    /// Consoles take platform commands: kickout, trans-cmd, invite.
    fn commands(&self) -> Option<Arc<dyn crate::hub::SideCommands>> {
        Some(commands::ConsoleCommands::new(self.clone()))
    }

    fn shutdown(&self, grace: std::time::Duration) -> crate::hub::command::BoxFuture<()> {
        let side = self.clone();
        Box::pin(async move { side.finish(grace).await })
    }
}

impl ConsoleSide {
    /// Connects the admin account of every console server; consoles connect later.
    pub fn connect(config: &Config, bus: Arc<EventBus>) -> Self {
        Self::connect_with(config, bus, None)
    }

    /// [`ConsoleSide::connect`] on a cluster node (`route`): the admin sessions start offline
    /// (the lease driver connects one where it holds its lease) and moves go to their holder.
    pub fn connect_with(
        config: &Config,
        bus: Arc<EventBus>,
        route: Option<Arc<crate::cluster::route::Route>>,
    ) -> Self {
        let mut servers = HashMap::new();
        // One session per admin account, however many base URLs name its server: two would
        // knock each other off.
        let mut admins: HashMap<(String, String), Admin> = HashMap::new();
        for s in &config.console.servers {
            let Some(ptt) = config.ptt.servers.iter().find(|p| p.id == s.ptt_server) else {
                continue; // rejected by validation already
            };
            let admin = admins
                .entry((ptt.id.clone(), s.admin_username.clone()))
                .or_insert_with(|| {
                    let session = config
                        .ptt
                        .session(s.admin_username.clone(), s.admin_password.clone());
                    let mut cc =
                        ClientConfig::new(ptt.host.clone(), ptt.port, ptt.trust(), session);
                    cc.udp_port = ptt.udp_port;
                    cc.backoff = config.ptt.backoff();
                    cc.start_offline = route.is_some();
                    let timeout = config.console.move_timeout();
                    let local = Moderator::spawn(cc, timeout, &ptt.id);
                    Admin::new(local, &ptt.id, &s.admin_username, route.clone(), timeout)
                })
                .clone();
            servers.insert(
                normalize_base_url(&s.base_url),
                Arc::new(ServerEntry {
                    ptt: ptt.clone(),
                    admin,
                    call_parent: s.call_parent.clone(),
                }),
            );
        }
        metrics::gauge!("pttbridge_console_connections").set(0.0);
        Self(Arc::new(Shared {
            config: config.console.clone(),
            ptt: config.ptt.clone(),
            servers,
            bus,
            accounts: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashMap::new()),
            homes: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            live: std::sync::atomic::AtomicUsize::new(0),
            calls_up: Arc::default(),
            orders: Mutex::new(HashMap::new()),
            call_owners: Mutex::new(HashMap::new()),
            calls: OnceLock::new(),
            recorder: OnceLock::new(),
            directory: OnceLock::new(),
            reserved: reserved_accounts(config),
            failures: crate::auth::FailureLimiter::new(
                LOGIN_FAILURES,
                std::time::Duration::from_secs(60),
                4096,
            ),
        }))
    }

    /// Every distinct admin session (one per PTT server and admin account).
    fn admins(&self) -> Vec<Admin> {
        let mut out: Vec<Admin> = Vec::new();
        for s in self.0.servers.values() {
            if !out.iter().any(|a| a.same(&s.admin)) {
                out.push(s.admin.clone());
            }
        }
        out
    }

    /// The admin sessions as a cluster node's lease driver takes them: one lease each.
    pub fn admin_leases(&self) -> Vec<crate::cluster::resource::AdminSession> {
        self.admins()
            .iter()
            .map(|a| {
                let app = self
                    .0
                    .servers
                    .values()
                    .find(|s| s.admin.same(a))
                    .map(|s| s.ptt.app.clone())
                    .unwrap_or_default();
                a.lease(&app, self.0.calls_up.clone())
            })
            .collect()
    }

    /// Consoles logged in now, and whether each server's admin session is connected.
    pub fn status(&self) -> serde_json::Value {
        let accounts = self
            .0
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let admins: Vec<serde_json::Value> = self
            .0
            .servers
            .values()
            .map(|s| {
                let mut v = serde_json::json!({ "server": s.ptt.id, "admin_connected": s.admin.local().connected() });
                if s.admin.clustered() {
                    // Which node holds the session (null while nobody does).
                    v["admin_node"] = s.admin.holder().into();
                }
                v
            })
            .collect();
        serde_json::json!({ "logged_in": accounts, "servers": admins })
    }
}

/// Wrong passwords (per account, or per address) within a minute before logins are refused
/// for a minute.
const LOGIN_FAILURES: u32 = 5;

/// The bridge's own PTT accounts and the console admin accounts, per server.
fn reserved_accounts(config: &Config) -> std::collections::HashSet<(String, String)> {
    let own = config.ptt.servers.iter().flat_map(|s| {
        s.accounts
            .iter()
            .map(|a| (s.id.clone(), a.username.clone()))
    });
    let admins = config
        .console
        .servers
        .iter()
        .map(|c| (c.ptt_server.clone(), c.admin_username.clone()));
    own.chain(admins).collect()
}

/// Largest single frame read (and discarded) before an oversize message is refused: bounds
/// the memory one connection can make the bridge hold.
const DRAIN_FRAME_BYTES: usize = 16 << 20;

impl ConsoleSide {
    /// At shutdown: waits (at most `limit`) until every console connection has ended its call
    /// and the admin sessions have done the moves that send terminals home.
    pub async fn finish(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            let busy = self.0.live.load(Ordering::SeqCst) > 0
                || self.0.servers.values().any(|s| s.admin.outstanding() > 0);
            if !busy {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for a in self.admins() {
            a.local().shutdown().await;
        }
    }
}

/// `/muicall`: consoles' WebSockets, each ended cleanly when `shutdown` turns true.
pub fn routes<S: Clone + Send + Sync + 'static>(
    side: ConsoleSide,
    shutdown: watch::Receiver<bool>,
) -> Router<S> {
    Router::new()
        .route("/muicall", get(upgrade))
        .with_state((side, shutdown))
}

async fn upgrade(
    State((side, shutdown)): State<(ConsoleSide, watch::Receiver<bool>)>,
    crate::auth::web::PeerIp(addr): crate::auth::web::PeerIp,
    ws: WebSocketUpgrade,
) -> Response {
    let max = side.0.config.max_message_bytes;
    // A frame above the message limit is still read to its end (up to DRAIN_FRAME_BYTES) so
    // the console can be told why it is closed (1009) instead of having its connection reset.
    ws.max_message_size(max)
        .max_frame_size(DRAIN_FRAME_BYTES.max(max))
        // Console frames are small (20-60 ms of audio, short JSON): tungstenite's default
        // 128 KiB read buffer per connection would be most of a console's memory.
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |socket| connection::run(side, socket, shutdown, addr))
}

/// A fresh 64-bit call id: milliseconds since 2020 in the high bits, a counter below, so
/// ids grow with time, never repeat in a process, and exceed 2^53 like the spec's
/// (consoles must use the `…Str` forms).
pub(crate) fn new_call_id() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    const EPOCH_2020_MS: u64 = 1_577_836_800_000;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(EPOCH_2020_MS);
    let candidate = ms << 22;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_grow_and_need_the_string_form() {
        let a = new_call_id();
        let b = new_call_id();
        assert!(b > a);
        assert!(
            a > 1 << 53,
            "like the spec's ids, beyond a JavaScript number's exact range"
        );
    }
}
