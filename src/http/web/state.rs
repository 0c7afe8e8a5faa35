//! `GET /api/state`: one snapshot of what the live view draws: the hub's per-app state model,
//! and each side's own part ([`crate::sides::Side::live_view`]: PTT servers and channel trees,
//! dial-ins and links, consoles). The page then
//! follows `/events` and asks again when the structure changes. A dial-in's `state` is its PTT
//! account's (`connected`, `connecting`, `reconnecting`, `stopped`; `reason` when not connected):
//! the page's call panel says the channel is unreachable while it is not connected. A link's
//! `up_ms` is how long it has been up (null while coming up), which the page ticks on from.
//!
//! ```json
//! {"version":"0.1.0","uptime_s":12,
//!  "ptt":[{"id":"local","host":"127.0.0.1","port":64740,"state":"connected","accounts":[..],
//!          "channels":[{"id":1,"parent":0,"name":"North","path":"North","temporary":false,
//!                       "users":[{"party":"ptt:s3","name":"alice","session":3,"bridge":false,"muted":false}]}]}],
//!  "dial_in":[{"user_id":9001,"name":"North","server":"local","channel":"North","policy":"answer",
//!             "state":"connected","reason":null}],
//!  "links":[{"dial_in":9001,"room":600,"up_ms":65000}],
//!  "groups":[{"app":"default","id":"meeting:600","members":[{"party":"meeting:1001","name":"ann","talking":true}]}],
//!  "online":[{"app":"default","party":"console:zydd","name":"zydd"}],
//!  "consoles":{"logged_in":1,"servers":[..]},
//!  "meeting":{"enabled":true,"registered":1,"calls":1,"rooms":1}}
//! ```

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::events::state::user_id;
use crate::http::AppState;

pub(super) async fn snapshot(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(build(&state))
}

/// The hub's groups and who is online, then what each side shows of itself.
fn build(state: &AppState) -> Value {
    let mut groups = Vec::new();
    let mut online = Vec::new();
    for app in state.bus.apps() {
        let (_, model) = state.bus.snapshot(&app, None);
        for (id, g) in &model.groups {
            let members: Vec<Value> = g
                .members
                .values()
                .map(|m| {
                    json!({
                        "party": user_id(&m.party), "side": m.party.side.as_str(),
                        "name": m.party.name, "talking": !m.media.is_empty(),
                    })
                })
                .collect();
            groups.push(json!({ "app": app, "id": id, "members": members }));
        }
        for o in model.online.values() {
            online.push(json!({
                "app": app, "party": user_id(&o.party), "side": o.party.side.as_str(),
                "name": o.party.name,
            }));
        }
    }
    let mut out = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "groups": groups,
        "online": online,
        // The page's event list starts with what happened before it opened.
        "recent_events": state.bus.recent(),
    });
    for side in &state.sides {
        for (k, v) in side.live_view() {
            out[k] = v;
        }
    }
    out
}
