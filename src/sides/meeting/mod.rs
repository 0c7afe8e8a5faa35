//! The meeting side: 527meeting RTCPeer signalling and WebRTC audio rooms, and the PTT dial-in
//! that lets a meeting room call a PTT channel.
//!
//! - [`auth`]: `GET /app/getSign`, `POST /app/account` (`dockingLogin`) → `SID`.
//! - [`ws`]: `/rtcpeer`, one JSON WebSocket per client; every request gets a reply.
//! - [`switchboard`]: registered users, calls (the `rtcpeer::call` state machine), rooms, and the
//!   dial-in users that stand for PTT channels (the bridge answers those itself).
//! - [`room`]: one actor per meeting room: members, their WebRTC peers (str0m, one UDP port per
//!   room), audio forwarding, and the PTT [`link`] when a channel is dialled in.
//! - [`link`]: audio both ways between a room and a PTT channel, floor, chat.
//! - [`operator`]: HTTP routes to list and hang up dial-ins.
//! - [`commands`]: platform commands (kickout, trans-cmd, invite) for meeting users.
//! - [`transcode`]: G.711 publishers and players on the (Opus) PTT link.
//! - [`upstream`]: client mode: registered at external RTCPeer servers as the dial-in users,
//!   answering their calls with the same link.
//!
//! The wire contract (including the `sdp` field of publish/play) is in `docs/rtcpeer.md`.

pub mod auth;
pub mod commands;
pub mod config;
pub mod link;
pub mod operator;
pub mod peer;
pub mod room;
pub mod switchboard;
pub mod transcode;
pub mod upstream;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use switchboard::Switchboard;

/// Routes of the meeting side: the operator's always, the RTCPeer server's in server mode.
pub fn routes<S: Clone + Send + Sync + 'static>(sb: Arc<Switchboard>) -> Router<S> {
    let mut r = Router::new()
        .route("/meeting/links", get(operator::links))
        .route("/meeting/links/{dial_in}/hangup", post(operator::hang_up));
    if sb.config.enabled {
        r = r
            .route("/rtcpeer", get(ws::upgrade))
            .route("/app/getSign", get(auth::get_sign))
            .route("/app/account", post(auth::account));
    }
    r.with_state(sb)
}
