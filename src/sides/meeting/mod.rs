//! The meeting side: 527meeting RTCPeer signalling and WebRTC audio rooms, and the PTT dial-in
//! that lets a meeting room call a PTT channel.
//!
//! - [`auth`]: `GET /app/getSign`, `POST /app/account` (`dockingLogin`) → `SID`.
//! - [`ws`]: `/rtcpeer`, one JSON WebSocket per client; every request gets a reply.
//! - [`switchboard`]: call control over [`registrar`] (who is registered where), [`calls`]
//!   (the `rtcpeer::call` state machine per call, one timer), [`rooms`] (the room directory:
//!   temporary and standing rooms, who may enter), [`room_admin`] (the `room.*` management
//!   requests, standing rooms kept in the store), [`appointments`] (scheduled meetings, stored,
//!   with their rooms and invite codes) and [`dial`] (the dial-in ids that stand for PTT channels, and each one's link state).
//! - [`room`]: one actor per meeting room: membership and requests, its media plane
//!   ([`room::media`]: one UDP port, the members' WebRTC peers) and the PTT [`room::link`]
//!   when a channel is dialled in — a [`crate::bridge::Link`], as in client mode.
//! - [`rtc`]: WebRTC set-up (SDP) and the peer set rooms and client mode share.
//! - [`upstream`]: client mode: registered at external RTCPeer servers as the dial-in users,
//!   answering their calls with the same link.
//! - [`remote`]: a cluster node's connections relayed to the node owning the dialled channel,
//!   and those it serves for other nodes.
//! - [`operator`]: HTTP routes to list and hang up dial-ins; [`commands`]: platform commands
//!   (kickout, trans-cmd, invite) for meeting users.
//! - Leaves: [`events`] (how the side names itself on the hub), [`outbox`] (a connection's
//!   bounded queue), [`refusal`] (the protocol's error shape), [`config`].
//!
//! The wire contract (including the `sdp` field of publish/play) is in `docs/rtcpeer.md`.

pub mod appointments;
pub mod auth;
pub mod calls;
pub mod commands;
pub mod config;
pub mod dial;
pub mod events;
pub mod operator;
pub mod outbox;
pub mod refusal;
pub mod registrar;
pub mod remote;
pub mod room;
pub mod room_admin;
pub mod room_threads;
pub mod rooms;
pub mod rtc;
pub mod switchboard;
pub mod upstream;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use self::auth::AuthState;
use self::dial::DialPlan;
use self::events::Publisher;
use self::upstream::Registrations;
pub use switchboard::Switchboard;

/// The meeting side: its switchboard, client-mode registrations and login routes' state.
#[derive(Debug)]
pub struct MeetingSide {
    /// Call control.
    pub switchboard: Arc<Switchboard>,
    /// Client mode's registrations at upstream servers.
    pub upstreams: Registrations,
    auth: Arc<AuthState>,
}

impl MeetingSide {
    /// The side over `ptt`'s accounts: the switchboard, and client mode started.
    pub fn new(
        config: config::MeetingConfig,
        ptt: &crate::sides::ptt::PttSide,
        bus: Arc<crate::hub::EventBus>,
        store: Option<crate::storage::Store>,
    ) -> Self {
        let dial = DialPlan::new(&config, ptt);
        let app = ptt
            .accounts
            .first()
            .map_or_else(|| "default".to_owned(), |a| a.app.clone());
        // The ids given before are read by the switchboard, once it hears the shared records.
        let accounts: Arc<auth::Accounts> = Arc::default();
        let auth = Arc::new(AuthState::new(
            accounts,
            config.apps.clone(),
            store.clone(),
            dial.ids(),
        ));
        let switchboard = Switchboard::new(
            config,
            dial,
            Publisher::new(bus, app),
            auth.accounts.clone(),
            store,
        );
        let upstreams = upstream::start(&switchboard);
        Self {
            switchboard,
            upstreams,
            auth,
        }
    }
}

impl crate::sides::Side for MeetingSide {
    fn start(ctx: &crate::sides::SideContext<'_>) -> anyhow::Result<Arc<Self>> {
        let ptt = ctx.ptt.clone().unwrap_or_default();
        let side = Self::new(
            ctx.config.meeting.clone(),
            &ptt,
            ctx.bus.clone(),
            Some(ctx.platform.store.clone()),
        );
        if let Some(route) = &ctx.route {
            // Every node gives an account the same user id, so a user means the same on each.
            side.auth.accounts.lock().derive_ids();
            remote::serve(&side.switchboard, route.clone());
        }
        // Dial-in links are recorded in the platform's call records.
        let _ = side.switchboard.records.set(ctx.platform.calls.clone());
        // Rooms record on the same recorder thread as the PTT channels' bursts.
        if let Some(r) = &ctx.recorder {
            let _ = side.switchboard.recorder.set(r.clone());
        }
        Ok(Arc::new(side))
    }

    fn kind(&self) -> crate::hub::Side {
        crate::hub::Side::Meeting
    }

    /// The operator's routes always, the RTCPeer server's in server mode (authenticated by
    /// the app's sign and the user's SID).
    fn routes(&self, _shutdown: &watch::Receiver<bool>) -> crate::sides::SideRoutes {
        let sb = self.switchboard.clone();
        let operator = Router::new()
            .route("/meeting/links", get(operator::links))
            .route("/meeting/links/{dial_in}/hangup", post(operator::hang_up))
            .with_state(sb.clone())
            .merge(
                Router::new()
                    .route("/api/meeting/login", post(auth::operator_login))
                    .with_state(self.auth.clone()),
            );
        let mut public = Router::new();
        if sb.config.enabled {
            public = public
                .route("/rtcpeer", get(ws::upgrade).with_state(sb))
                .merge(
                    Router::new()
                        .route("/app/getSign", get(auth::get_sign))
                        .route("/app/account", post(auth::account))
                        .with_state(self.auth.clone()),
                );
        }
        crate::sides::SideRoutes { public, operator }
    }

    fn health(&self) -> Value {
        let mut h = self.switchboard.health();
        h["upstream"] = json!(*self.upstreams.lock().unwrap_or_else(|p| p.into_inner()));
        h
    }

    fn live_view(&self) -> Map<String, Value> {
        let sb = &self.switchboard;
        let mut ids: Vec<_> = sb.dial_plan().ids().into_iter().collect();
        ids.sort_unstable();
        let dial_in: Vec<Value> = ids
            .iter()
            .filter_map(|id| sb.dial_target(*id))
            .map(|d| {
                let channel = d.account.channel_path();
                // Whether the channel can be reached now: its account's connection.
                let account = d.account.health();
                json!({
                    "user_id": d.user_id,
                    "name": d.name.clone().or_else(|| channel.clone()),
                    "server": d.account.server,
                    "channel": channel,
                    "policy": format!("{:?}", d.policy).to_lowercase(),
                    "state": account.state,
                    "reason": account.reason,
                })
            })
            .collect();
        let h = sb.health();
        let mut m = Map::new();
        m.insert("dial_in".into(), dial_in.into());
        m.insert("links".into(), h["links"].clone());
        m.insert(
            "meeting".into(),
            json!({
                "enabled": h["enabled"], "registered": h["registered"],
                "calls": h["calls"], "rooms": h["rooms"],
            }),
        );
        m
    }

    fn commands(&self) -> Option<Arc<dyn crate::hub::SideCommands>> {
        Some(commands::MeetingCommands::new(self.switchboard.clone()))
    }
}
