//! The PTT side: keeps one client per configured account connected and turns what
//! happens on the PTT servers into hub events.
//!
//! Every account's session sees the whole server, so presence (who is in which
//! channel) is reported by the first account of each server only; talk and text,
//! which a session only sees in its own channel, are reported by every account.

pub mod calls;
pub mod commands;
pub mod levels;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use serde_json::Value;
use tokio::sync::watch;

use logsafe::esc;
use ptt::client::{self, ClientConfig, ClientEvent, ClientHandle, LinkState};
use ptt::session::{Event as PttEvent, SessionConfig, User};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

use crate::config::PttConfig;
use crate::hub::event::Draft;
use crate::hub::{EventBus, EventKind, Party, Side};
use crate::recording::Recorder;

/// What a link hears from the PTT account it rides on, as typed messages: its channel's talk
/// state, voice and text (and text sent privately to the account), and the account's
/// connection. A link needs nothing else from the PTT side.
#[derive(Debug, Clone)]
pub enum ChannelEvent {
    /// A PTT user started talking.
    TalkStarted {
        /// The talker.
        party: Party,
        /// Its session on the server.
        session: u32,
    },
    /// One Opus packet (48 kHz mono), untouched.
    Voice {
        /// Talker session.
        session: u32,
        /// Sequence in 10 ms units.
        sequence: u64,
        /// The packet.
        opus: bytes::Bytes,
    },
    /// The talker stopped (terminator or silence).
    TalkStopped {
        /// The talker.
        party: Party,
        /// Its session.
        session: u32,
    },
    /// Text in the account's channel, or sent privately to the account.
    Text {
        /// The sender, when the server names one.
        from: Option<Party>,
        /// The message.
        text: String,
        /// Sent to the account alone rather than to the channel.
        private: bool,
    },
    /// The account is (again) synced with its server and in its channel.
    Connected,
    /// The account lost its server; it reconnects by itself. Bursts in progress have ended
    /// (their `TalkStopped` came first).
    Disconnected,
}

/// Channel events buffered per subscriber before it lags (about 2.5 s of one talker).
const CHANNEL_BUFFER: usize = 128;

/// One connected (or connecting) account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Server id from the config.
    pub server: String,
    /// Tenant of the server.
    pub app: String,
    /// Account name.
    pub username: String,
    /// The running client.
    pub client: ClientHandle,
    /// The channel feed for links; subscribe with [`Account::channel`].
    channel: Arc<Feed>,
    /// Silence that ends a talk burst (`ptt.talk_timeout_ms`).
    talk_timeout: std::time::Duration,
    /// How many things act as this account elsewhere now ([`Account::hold`]).
    holds: Arc<watch::Sender<usize>>,
    /// How many calls are linked to the account's channel now ([`Account::link`]).
    links: Arc<std::sync::atomic::AtomicUsize>,
}

/// A call linked to an account's channel (a meeting dial-in), from [`Account::link`] until
/// dropped: a cluster node does not move the account to rebalance while one is.
#[derive(Debug)]
pub struct Linked(Arc<std::sync::atomic::AtomicUsize>);

impl Clone for Linked {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(self.0.clone())
    }
}

impl Drop for Linked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Something acting as an account outside its PTT session (an upstream registration of its
/// dial-in), from [`Account::hold`] until dropped.
#[derive(Debug)]
pub struct Hold(Arc<watch::Sender<usize>>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Account {
    /// Talk state, voice and text of this account's channel, and its connection, from now
    /// on. A subscriber that falls behind gets `Lagged` and skips ahead; the PTT side never
    /// waits for it.
    pub fn channel(&self) -> tokio::sync::broadcast::Receiver<ChannelEvent> {
        self.channel.tx.subscribe()
    }

    /// [`Account::channel`], with the channel's present told first: `Disconnected` when the
    /// account is not in its channel now, and a `TalkStarted` for every burst in progress (a
    /// link made mid-burst names the talker at once). Taken together, so nothing is missed
    /// or told twice.
    pub fn channel_now(
        &self,
    ) -> (
        tokio::sync::broadcast::Receiver<ChannelEvent>,
        Vec<ChannelEvent>,
    ) {
        self.channel.subscribe_now()
    }

    /// Whether a talk burst is in progress through the account now: one it hears in its
    /// channel, or one the bridge sends as it (a meeting or console speaker). A draining
    /// cluster node waits for this to clear before handing the account over.
    pub fn floor_busy(&self) -> bool {
        if self.client.sending(self.talk_timeout) {
            return true;
        }
        let present = self
            .channel
            .present
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        !present.talking.is_empty()
    }

    /// Marks a call linked to the account's channel until the [`Linked`] is dropped.
    pub fn link(&self) -> Linked {
        self.links
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Linked(self.links.clone())
    }

    /// Whether a call is linked to the account's channel now.
    pub fn linked(&self) -> bool {
        self.links.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Whether the account is kept off its server on purpose (a cluster node that does not
    /// hold its lease: `standby` in `/healthz`).
    pub fn standby(&self) -> bool {
        self.client.snapshot().state == LinkState::Offline
    }

    /// Marks something acting as this account beyond its PTT session until the [`Hold`] is
    /// dropped. A cluster node hands the account's lease over only once every hold is gone
    /// ([`Account::unheld`]), so the next owner never finds it still acting here.
    pub fn hold(&self) -> Hold {
        self.holds.send_modify(|n| *n += 1);
        Hold(self.holds.clone())
    }

    /// Waits (at most `limit`) until nothing holds the account; whether that happened.
    pub async fn unheld(&self, limit: std::time::Duration) -> bool {
        let mut rx = self.holds.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Path of the channel this account is in now.
    pub fn channel_path(&self) -> Option<String> {
        let snap = self.client.snapshot();
        snap.own_channel.and_then(|c| snap.channel_path(c))
    }

    /// Whether the account is connected, and why not.
    pub fn health(&self) -> AccountHealth {
        account_health(self)
    }
}

/// An account's channel feed ([`ChannelEvent`]s to every subscriber) and the present a new
/// subscriber is told first: whether the account is in its channel, and who talks there.
/// Events that change the present are sent under its lock.
#[derive(Debug)]
struct Feed {
    tx: tokio::sync::broadcast::Sender<ChannelEvent>,
    present: std::sync::Mutex<Present>,
}

#[derive(Debug, Default)]
struct Present {
    connected: bool,
    talking: std::collections::BTreeMap<u32, Party>,
}

impl Feed {
    fn new() -> Self {
        Self {
            tx: tokio::sync::broadcast::channel(CHANNEL_BUFFER).0,
            present: Default::default(),
        }
    }

    fn send(&self, ev: ChannelEvent) {
        // Voice and text change nothing a new subscriber is told: no lock on the voice path.
        if matches!(ev, ChannelEvent::Voice { .. } | ChannelEvent::Text { .. }) {
            let _ = self.tx.send(ev);
            return;
        }
        let mut present = self.present.lock().unwrap_or_else(|p| p.into_inner());
        match &ev {
            ChannelEvent::TalkStarted { party, session } => {
                present.talking.insert(*session, party.clone());
            }
            ChannelEvent::TalkStopped { session, .. } => {
                present.talking.remove(session);
            }
            ChannelEvent::Connected => present.connected = true,
            ChannelEvent::Disconnected => {
                present.connected = false;
                present.talking.clear();
            }
            ChannelEvent::Voice { .. } | ChannelEvent::Text { .. } => {}
        }
        let _ = self.tx.send(ev);
    }

    fn subscribe_now(
        &self,
    ) -> (
        tokio::sync::broadcast::Receiver<ChannelEvent>,
        Vec<ChannelEvent>,
    ) {
        let present = self.present.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let mut now = Vec::new();
        if !present.connected {
            now.push(ChannelEvent::Disconnected);
        }
        now.extend(
            present
                .talking
                .iter()
                .map(|(session, party)| ChannelEvent::TalkStarted {
                    party: party.clone(),
                    session: *session,
                }),
        );
        (rx, now)
    }
}

/// All PTT accounts of the bridge.
#[derive(Debug, Clone, Default)]
pub struct PttSide {
    /// Accounts in config order.
    pub accounts: Vec<Account>,
    servers: Vec<ServerInfo>,
}

#[derive(Debug, Clone)]
struct ServerInfo {
    id: String,
    host: String,
    port: u16,
}

/// Health of one account, for `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct AccountHealth {
    /// Account name.
    pub username: String,
    /// `connecting`, `connected`, `reconnecting` or `stopped`.
    pub state: &'static str,
    /// Why it is not connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Channel path it is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Whether voice uses UDP (else the TCP tunnel).
    pub udp: bool,
    /// Reconnects since start.
    pub reconnects: u64,
}

/// Health of one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerHealth {
    /// Server id.
    pub id: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `connected` when every account is, `reconnecting` when any is not.
    pub state: &'static str,
    /// Per account.
    pub accounts: Vec<AccountHealth>,
}

impl super::Side for PttSide {
    fn start(ctx: &super::SideContext<'_>) -> anyhow::Result<Arc<Self>> {
        // A cluster node connects an account only once it holds the account's lease.
        let side = PttSide::connect_with(
            &ctx.config.ptt,
            ctx.bus.clone(),
            ctx.recorder.clone(),
            ctx.config.cluster.enabled(),
        );
        calls::start(
            &side,
            ctx.platform.calls.clone(),
            ctx.config.business.ptt_call_idle(),
        );
        Ok(Arc::new(side))
    }

    fn kind(&self) -> Side {
        Side::Ptt
    }

    fn routes(&self, shutdown: &watch::Receiver<bool>) -> super::SideRoutes {
        // The levels of who talks where: the live view's, so operators' only.
        super::SideRoutes {
            operator: Router::new()
                .route("/api/levels", get(levels::stream))
                .with_state(levels::LevelMeter::start(self, shutdown.clone())),
            ..Default::default()
        }
    }

    fn health(&self) -> Value {
        let servers = self.server_health();
        let state = if super::Side::healthy(self) {
            "connected"
        } else {
            "degraded"
        };
        json!({ "state": state, "servers": servers })
    }

    fn healthy(&self) -> bool {
        self.server_health().iter().all(|s| s.state == "connected")
    }

    fn live_view(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("ptt".into(), view::servers(self));
        m
    }

    fn export_metrics(&self) {
        self.refresh_client_metrics();
    }

    fn commands(&self) -> Option<Arc<dyn crate::hub::SideCommands>> {
        Some(commands::PttCommands::new(self.clone()))
    }
}

impl PttSide {
    /// Starts a client for every configured account.
    pub fn connect(config: &PttConfig, bus: Arc<EventBus>, recorder: Option<Recorder>) -> Self {
        Self::connect_with(config, bus, recorder, false)
    }

    /// Starts a client for every configured account; with `offline`, each stays off its
    /// server until [`PttSide::set_online`] (a cluster node waiting for the account's lease).
    pub fn connect_with(
        config: &PttConfig,
        bus: Arc<EventBus>,
        recorder: Option<Recorder>,
        offline: bool,
    ) -> Self {
        let mut side = PttSide::default();
        for server in &config.servers {
            side.servers.push(ServerInfo {
                id: server.id.clone(),
                host: server.host.clone(),
                port: server.port,
            });
            let own_names: Vec<String> =
                server.accounts.iter().map(|a| a.username.clone()).collect();
            for (i, account) in server.accounts.iter().enumerate() {
                let session = SessionConfig {
                    channel: account.channel.clone(),
                    udp: server.udp,
                    ..config.session(account.username.clone(), account.password.clone())
                };
                let mut cc =
                    ClientConfig::new(server.host.clone(), server.port, server.trust(), session);
                cc.udp_port = server.udp_port;
                cc.backoff = config.backoff();
                cc.start_offline = offline;
                let (handle, events) = client::spawn(cc);
                let channel = Arc::new(Feed::new());
                let translator = Translator {
                    app: server.app.clone(),
                    server: server.id.clone(),
                    username: account.username.clone(),
                    reports_presence: i == 0,
                    own_names: own_names.clone(),
                    bus: bus.clone(),
                    client: handle.clone(),
                    presence: HashMap::new(),
                    syncing: None,
                    recorder: recorder.clone(),
                    source: format!("{}/{}", server.id, account.username),
                    channel: channel.clone(),
                    talking: HashMap::new(),
                    connecting_since: None,
                    home: account.channel.clone().unwrap_or_default(),
                };
                let span = info_span!("ptt", server = %server.id, account = %account.username);
                tokio::spawn(translator.run(events).instrument(span));
                side.accounts.push(Account {
                    server: server.id.clone(),
                    app: server.app.clone(),
                    username: account.username.clone(),
                    client: handle,
                    channel,
                    talk_timeout: config.talk_timeout(),
                    holds: Arc::new(watch::channel(0).0),
                    links: Default::default(),
                });
            }
        }
        side
    }

    /// Connects `account` (`online`) or takes it off its server and keeps it off: a cluster
    /// node uses the account only while it holds its lease. `false` when its client has stopped.
    pub async fn set_online(&self, account: &Account, online: bool) -> bool {
        let cmd = if online {
            client::Command::GoOnline
        } else {
            client::Command::GoOffline
        };
        account.client.command(cmd).await.is_ok()
    }

    /// Health of every server.
    pub fn server_health(&self) -> Vec<ServerHealth> {
        self.servers
            .iter()
            .map(|s| {
                let accounts: Vec<AccountHealth> = self
                    .accounts
                    .iter()
                    .filter(|a| a.server == s.id)
                    .map(account_health)
                    .collect();
                // An account another node holds is where it should be.
                let state = if accounts
                    .iter()
                    .all(|a| a.state == "connected" || a.state == "standby")
                {
                    "connected"
                } else if accounts.iter().all(|a| a.state == "connecting") {
                    "connecting"
                } else {
                    "reconnecting"
                };
                ServerHealth {
                    id: s.id.clone(),
                    host: s.host.clone(),
                    port: s.port,
                    state,
                    accounts,
                }
            })
            .collect()
    }

    /// Refreshes counters that live in the clients (packet counts) before a metrics scrape.
    pub fn refresh_client_metrics(&self) {
        for a in &self.accounts {
            let snap = a.client.snapshot();
            let st = snap.stats;
            let labels = |dir: &'static str, path: &'static str| {
                [
                    ("server", a.server.clone()),
                    ("account", a.username.clone()),
                    ("direction", dir.to_string()),
                    ("path", path.to_string()),
                ]
            };
            metrics::counter!("pttbridge_ptt_voice_packets_total", &labels("in", "udp"))
                .absolute(st.udp_voice_in);
            metrics::counter!("pttbridge_ptt_voice_packets_total", &labels("in", "tcp"))
                .absolute(st.tcp_voice_in);
            metrics::counter!("pttbridge_ptt_voice_packets_total", &labels("out", "udp"))
                .absolute(st.udp_voice_out);
            metrics::counter!("pttbridge_ptt_voice_packets_total", &labels("out", "tcp"))
                .absolute(st.tcp_voice_out);
            let acct = [
                ("server", a.server.clone()),
                ("account", a.username.clone()),
            ];
            metrics::counter!(
                "pttbridge_ptt_voice_dropped_total",
                &[&acct[..], &[("direction", "out".to_string())]].concat()
            )
            .absolute(st.voice_out_dropped + a.client.dropped_voice_out());
            metrics::counter!(
                "pttbridge_ptt_voice_dropped_total",
                &[&acct[..], &[("direction", "in".to_string())]].concat()
            )
            .absolute(a.client.dropped_voice_in());
            metrics::counter!("pttbridge_ptt_reconnects_total", &acct).absolute(snap.reconnects);
            metrics::gauge!("pttbridge_ptt_connected", &acct)
                .set(f64::from(u8::from(snap.state == LinkState::Connected)));
            metrics::gauge!("pttbridge_ptt_udp_working", &acct)
                .set(f64::from(u8::from(snap.udp_working)));
            metrics::gauge!("pttbridge_ptt_users", &acct).set(snap.users.len() as f64);
        }
    }
}

fn account_health(a: &Account) -> AccountHealth {
    let snap = a.client.snapshot();
    let (state, reason) = match &snap.state {
        LinkState::Connecting => ("connecting", None),
        LinkState::Connected => ("connected", None),
        LinkState::Reconnecting { reason } => ("reconnecting", Some(reason.clone())),
        LinkState::Offline => (
            "standby",
            Some("not this node's to use: its cluster lease is elsewhere or not yet taken".into()),
        ),
        LinkState::Stopped => ("stopped", None),
    };
    AccountHealth {
        username: a.username.clone(),
        state,
        reason,
        channel: snap.own_channel.and_then(|c| snap.channel_path(c)),
        udp: snap.udp_working,
        reconnects: snap.reconnects,
    }
}

/// Group id of a PTT channel: `ptt:<server>:<path>`, the root being `/`.
pub fn group_id(server: &str, path: &str) -> String {
    format!("ptt:{server}:{}", if path.is_empty() { "/" } else { path })
}

/// Party for a PTT user: registered users by their user id, others by session.
pub fn party(user: &User) -> Party {
    Party {
        side: Side::Ptt,
        id: user
            .user_id
            .map_or_else(|| format!("s{}", user.session), |id| id.to_string()),
        name: user.name.clone(),
    }
}

struct Translator {
    app: String,
    server: String,
    username: String,
    reports_presence: bool,
    own_names: Vec<String>,
    bus: Arc<EventBus>,
    client: ClientHandle,
    /// Reported presence: party id → (party, group).
    presence: HashMap<String, (Party, String)>,
    /// Presence being collected while a (re)connection syncs.
    syncing: Option<HashMap<String, (Party, String)>>,
    /// Where talk bursts are recorded, if anywhere.
    recorder: Option<Recorder>,
    /// This account as a recording source: `server/account`.
    source: String,
    /// Fan-out of this account's channel events to links.
    channel: Arc<Feed>,
    /// Who is talking where, by session: a stop names the same party and group as its start
    /// (the user may be gone from the server by then, or have moved).
    talking: HashMap<u32, (Party, String)>,
    /// When the current connection attempt started, until the account is in its channel
    /// (`pttbridge_ptt_join_seconds`).
    connecting_since: Option<std::time::Instant>,
    /// The channel the account is configured to be in ("" for the root).
    home: String,
}

impl Translator {
    async fn run(mut self, mut events: mpsc::Receiver<ClientEvent>) {
        while let Some(ev) = events.recv().await {
            self.handle(ev);
        }
    }

    fn publish(
        &self,
        kind: EventKind,
        group: String,
        party: Option<Party>,
        detail: serde_json::Value,
    ) {
        let mut draft = Draft::new(self.app.clone(), kind, group).detail(detail);
        draft.party = party;
        self.bus.publish(draft);
    }

    /// A burst ended: the channel's audio consumers and the platforms hear of it together.
    fn talk_stopped(&self, session: u32, party: Party, group: String, detail: serde_json::Value) {
        self.channel.send(ChannelEvent::TalkStopped {
            party: party.clone(),
            session,
        });
        self.publish(EventKind::TalkStopped, group, Some(party), detail);
    }

    fn group_of(&self, channel: u32) -> String {
        let snap = self.client.snapshot();
        group_id(
            &self.server,
            &snap
                .channel_path(channel)
                .unwrap_or_else(|| format!("#{channel}")),
        )
    }

    fn handle(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Connecting { attempt } => {
                self.connecting_since = Some(std::time::Instant::now());
                if self.reports_presence {
                    self.syncing = Some(HashMap::new());
                }
                if attempt > 0 {
                    info!(attempt, "reconnecting to PTT server");
                }
            }
            ClientEvent::Disconnected { reason, retry_in } => {
                if let Some(r) = &self.recorder {
                    r.stop_source(&self.source);
                }
                metrics::counter!("pttbridge_ptt_disconnects_total", "server" => self.server.clone()).increment(1);
                // Bursts in progress end with the connection: platforms must not keep showing
                // those users as talking.
                for (session, (party, group)) in std::mem::take(&mut self.talking) {
                    self.talk_stopped(
                        session,
                        party,
                        group,
                        json!({ "media_type": 2, "terminated": false, "reason": "connection lost" }),
                    );
                }
                self.publish(
                    EventKind::SideDisconnected,
                    String::new(),
                    None,
                    json!({ "side": "ptt", "server": self.server, "account": self.username, "reason": reason,
                            "retry_in_ms": retry_in.map(|d| d.as_millis() as u64) }),
                );
                self.channel.send(ChannelEvent::Disconnected);
            }
            ClientEvent::Stopped => {}
            ClientEvent::Session(ev) => self.handle_session(ev),
        }
    }

    fn handle_session(&mut self, ev: PttEvent) {
        match ev {
            PttEvent::Synced { session, .. } => {
                self.publish(
                    EventKind::SideConnected,
                    String::new(),
                    None,
                    json!({ "side": "ptt", "server": self.server, "account": self.username, "session": session }),
                );
                self.channel.send(ChannelEvent::Connected);
                if let Some(fresh) = self.syncing.take() {
                    self.reconcile(fresh);
                }
            }
            PttEvent::UserJoined(user) => self.presence_update(&user),
            PttEvent::UserMoved { user, .. } => self.presence_update(&user),
            PttEvent::UserLeft { user, reason } => {
                if self.reports_presence && !self.is_own(&user) {
                    let p = party(&user);
                    if let Some((party, group)) = self.presence.remove(&p.id) {
                        self.publish(
                            EventKind::PartyLeft,
                            group,
                            Some(party),
                            json!({ "reason": reason }),
                        );
                    }
                }
            }
            PttEvent::UserUpdated(user) => {
                // A rename or registration changes nothing about where the user is.
                if self.reports_presence && !self.is_own(&user) && self.syncing.is_none() {
                    let p = party(&user);
                    if !self.presence.contains_key(&p.id) {
                        self.presence_update(&user);
                    }
                }
            }
            PttEvent::TalkStarted {
                session,
                name,
                channel_id,
            } => {
                metrics::counter!("pttbridge_ptt_talk_bursts_total", "server" => self.server.clone()).increment(1);
                let (party, group) = self.talker(session, name, channel_id);
                self.talking.insert(session, (party.clone(), group.clone()));
                if let Some(r) = &self.recorder {
                    r.start_burst(
                        (self.source.clone(), session),
                        &self.app,
                        &group,
                        party.clone(),
                    );
                }
                self.channel.send(ChannelEvent::TalkStarted {
                    party: party.clone(),
                    session,
                });
                self.publish(
                    EventKind::TalkStarted,
                    group,
                    Some(party),
                    json!({ "media_type": 2 }),
                );
            }
            PttEvent::TalkStopped {
                session,
                name,
                terminated,
            } => {
                if let Some(r) = &self.recorder {
                    r.stop_burst((self.source.clone(), session));
                }
                let snap = self.client.snapshot();
                let channel = snap
                    .users
                    .get(&session)
                    .map(|u| u.channel_id)
                    .or(snap.own_channel);
                let (party, group) = match self.talking.remove(&session) {
                    Some(started) => started,
                    None => self.talker(session, name, channel),
                };
                self.talk_stopped(
                    session,
                    party,
                    group,
                    json!({ "media_type": 2, "terminated": terminated }),
                );
            }
            PttEvent::Text {
                actor,
                actor_name,
                channels,
                private,
                message,
            } => {
                let snap = self.client.snapshot();
                let channel = channels.first().copied().or(snap.own_channel).unwrap_or(0);
                let party = actor.map(|s| match snap.users.get(&s) {
                    Some(u) => party(u),
                    None => Party {
                        side: Side::Ptt,
                        id: format!("s{s}"),
                        name: actor_name.clone().unwrap_or_default(),
                    },
                });
                // Links hear their own channel's text and what is sent to the account alone.
                let ours =
                    channels.is_empty() || snap.own_channel.is_some_and(|c| channels.contains(&c));
                if private || ours {
                    self.channel.send(ChannelEvent::Text {
                        from: party.clone(),
                        text: message.clone(),
                        private,
                    });
                }
                self.publish(
                    EventKind::MessageText,
                    self.group_of(channel),
                    party,
                    json!({ "text": message, "private": private, "to_account": self.username }),
                );
            }
            PttEvent::JoinFailed { path, reason } => {
                warn!(path = %esc(&path), reason = %esc(&reason), "cannot join PTT channel");
            }
            PttEvent::InChannel { path, .. } => {
                // Sync puts the account in the root (or where murmurd remembers it) first.
                if path == self.home
                    && let Some(since) = self.connecting_since.take()
                {
                    metrics::histogram!("pttbridge_ptt_join_seconds")
                        .record(since.elapsed().as_secs_f64());
                }
                // The root channel's path is empty: name it.
                let channel = if path.is_empty() { "(root)" } else { &path };
                info!(channel = %esc(channel), "in PTT channel")
            }
            PttEvent::PermissionDenied { reason } => {
                warn!(reason = %esc(&reason), "PTT permission denied")
            }
            PttEvent::UdpChanged { working } => info!(working, "PTT UDP voice state changed"),
            PttEvent::Fault { kind, .. } => {
                metrics::counter!("pttbridge_ptt_errors_total", "server" => self.server.clone(), "kind" => kind.as_str())
                    .increment(1);
            }
            PttEvent::Rejected { reason } => {
                warn!(reason = %esc(&reason), "PTT server rejected the account")
            }
            PttEvent::Voice {
                session,
                sequence,
                opus,
                ..
            } => {
                if let Some(r) = &self.recorder {
                    r.packet((self.source.clone(), session), sequence, opus.clone());
                }
                self.channel.send(ChannelEvent::Voice {
                    session,
                    sequence,
                    opus,
                });
            }
            PttEvent::ChannelUpdated(_) | PttEvent::ChannelRemoved { .. } => {}
        }
    }

    fn is_own(&self, user: &User) -> bool {
        self.own_names.iter().any(|n| n == &user.name)
    }

    fn talker(&self, session: u32, name: Option<String>, channel: Option<u32>) -> (Party, String) {
        let snap = self.client.snapshot();
        let party = match snap.users.get(&session) {
            Some(u) => party(u),
            None => Party {
                side: Side::Ptt,
                id: format!("s{session}"),
                name: name.unwrap_or_default(),
            },
        };
        let channel = channel.or(snap.own_channel).unwrap_or(0);
        (party, self.group_of(channel))
    }

    fn presence_update(&mut self, user: &User) {
        if !self.reports_presence || self.is_own(user) {
            return;
        }
        let p = party(user);
        let group = self.group_of(user.channel_id);
        if let Some(fresh) = self.syncing.as_mut() {
            fresh.insert(p.id.clone(), (p, group));
            return;
        }
        self.place(p, group);
    }

    /// Records that `party` is in `group`, reporting a join (and the leave, on a move).
    fn place(&mut self, party: Party, group: String) {
        match self.presence.get(&party.id) {
            Some((_, old)) if *old == group => return,
            Some((old_party, old_group)) => {
                let moved = json!({ "moved": true });
                self.publish(
                    EventKind::PartyLeft,
                    old_group.clone(),
                    Some(old_party.clone()),
                    moved.clone(),
                );
                self.publish(
                    EventKind::PartyJoined,
                    group.clone(),
                    Some(party.clone()),
                    moved,
                );
            }
            None => self.publish(
                EventKind::PartyJoined,
                group.clone(),
                Some(party.clone()),
                serde_json::Value::Null,
            ),
        }
        self.presence.insert(party.id.clone(), (party, group));
    }

    /// After a (re)sync: report only what changed while we were away.
    fn reconcile(&mut self, fresh: HashMap<String, (Party, String)>) {
        let gone: Vec<String> = self
            .presence
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        for id in gone {
            if let Some((party, group)) = self.presence.remove(&id) {
                self.publish(
                    EventKind::PartyLeft,
                    group,
                    Some(party),
                    json!({ "reason": "gone after reconnect" }),
                );
            }
        }
        for (party, group) in fresh.into_values() {
            self.place(party, group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Party {
        Party {
            side: Side::Ptt,
            id: "s3".into(),
            name: "alice".into(),
        }
    }

    fn started(session: u32) -> ChannelEvent {
        ChannelEvent::TalkStarted {
            party: alice(),
            session,
        }
    }

    /// What a new subscriber is told first: `Disconnected` until the account is in its
    /// channel, then the bursts in progress; after it, only what the feed sends.
    fn present(feed: &Feed) -> Vec<String> {
        let (mut rx, now) = feed.subscribe_now();
        assert!(rx.try_recv().is_err(), "nothing told twice");
        now.iter()
            .map(|e| match e {
                ChannelEvent::TalkStarted { party, session } => format!("{} {session}", party.name),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_new_subscriber_is_told_the_channels_present() {
        let feed = Feed::new();
        assert_eq!(present(&feed), ["Disconnected"]);
        feed.send(ChannelEvent::Connected);
        assert!(present(&feed).is_empty());
        feed.send(started(3));
        feed.send(ChannelEvent::Voice {
            session: 3,
            sequence: 0,
            opus: bytes::Bytes::from_static(&[0]),
        });
        assert_eq!(present(&feed), ["alice 3"]);
        feed.send(ChannelEvent::TalkStopped {
            party: alice(),
            session: 3,
        });
        assert!(present(&feed).is_empty());
        feed.send(started(4));
        feed.send(ChannelEvent::Disconnected);
        assert_eq!(
            present(&feed),
            ["Disconnected"],
            "bursts end with the server"
        );
    }
}
