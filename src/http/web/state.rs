//! `GET /api/state`: one snapshot of what the live view draws, taken from what the sides already
//! keep (PTT client snapshots, the switchboard, the hub's per-app state model). The page then
//! follows `/events` and asks again when the structure changes.
//!
//! ```json
//! {"version":"0.1.0","uptime_s":12,
//!  "ptt":[{"id":"local","host":"127.0.0.1","port":64740,"state":"connected","accounts":[..],
//!          "channels":[{"id":1,"parent":0,"name":"North","path":"North","temporary":false,
//!                       "users":[{"party":"ptt:s3","name":"alice","session":3,"bridge":false,"muted":false}]}]}],
//!  "dial_in":[{"user_id":9001,"name":"North","server":"local","channel":"North","policy":"answer"}],
//!  "links":[{"dial_in":9001,"room":600}],
//!  "groups":[{"app":"default","id":"meeting:600","members":[{"party":"meeting:1001","name":"ann","talking":true}]}],
//!  "online":[{"app":"default","party":"console:zydd","name":"zydd"}],
//!  "consoles":{"logged_in":1,"servers":[..]},
//!  "meeting":{"enabled":true,"registered":1,"calls":1,"rooms":1}}
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::http::AppState;
use crate::hub::Party;
use crate::sides::ptt;

fn key(p: &Party) -> String {
    format!("{}:{}", p.side.as_str(), p.id)
}

pub(super) async fn snapshot(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(build(&state))
}

fn build(state: &AppState) -> Value {
    let own: HashSet<(String, String)> = state
        .ptt
        .accounts
        .iter()
        .map(|a| (a.server.clone(), a.username.clone()))
        .collect();
    let servers: Vec<Value> = state
        .ptt
        .health()
        .into_iter()
        .map(|h| {
            // Every session sees the whole server: the first account's view is the tree.
            let channels = state
                .ptt
                .accounts
                .iter()
                .find(|a| a.server == h.id)
                .map(|a| channel_tree(&a.client.snapshot(), &h.id, &own))
                .unwrap_or_default();
            json!({
                "id": h.id, "host": h.host, "port": h.port, "state": h.state,
                "accounts": h.accounts, "channels": channels,
            })
        })
        .collect();

    let sb = &state.meeting;
    let mut dial_ids: Vec<_> = sb.dial_ids().into_iter().collect();
    dial_ids.sort_unstable();
    let dial_in: Vec<Value> = dial_ids
        .iter()
        .filter_map(|id| sb.dial_target(*id))
        .map(|d| {
            let channel = d.account.channel_path();
            json!({
                "user_id": d.user_id,
                "name": d.name.clone().or_else(|| channel.clone()),
                "server": d.account.server,
                "channel": channel,
                "policy": format!("{:?}", d.policy).to_lowercase(),
            })
        })
        .collect();
    let meeting = sb.health();

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
                        "party": key(&m.party), "side": m.party.side.as_str(),
                        "name": m.party.name, "talking": !m.media.is_empty(),
                    })
                })
                .collect();
            groups.push(json!({ "app": app, "id": id, "members": members }));
        }
        for o in model.online.values() {
            online.push(json!({
                "app": app, "party": key(&o.party), "side": o.party.side.as_str(),
                "name": o.party.name,
            }));
        }
    }

    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "ptt": servers,
        "dial_in": dial_in,
        "links": meeting["links"],
        "groups": groups,
        "online": online,
        "consoles": state.console.health(),
        "meeting": {
            "enabled": meeting["enabled"], "registered": meeting["registered"],
            "calls": meeting["calls"], "rooms": meeting["rooms"],
        },
    })
}

fn channel_tree(
    snap: &::ptt::client::Snapshot,
    server: &str,
    own: &HashSet<(String, String)>,
) -> Vec<Value> {
    snap.channels
        .values()
        .map(|c| {
            let mut users: Vec<&::ptt::session::User> = snap
                .users
                .values()
                .filter(|u| u.channel_id == c.id)
                .collect();
            users.sort_by_key(|u| u.name.to_lowercase());
            let users: Vec<Value> = users
                .into_iter()
                .map(|u| {
                    json!({
                        "party": key(&ptt::party(u)), "name": u.name, "session": u.session,
                        "bridge": own.contains(&(server.to_owned(), u.name.clone())),
                        "muted": u.muted,
                    })
                })
                .collect();
            json!({
                "id": c.id, "parent": c.parent, "name": c.name,
                "path": snap.channel_path(c.id).unwrap_or_default(),
                "temporary": c.temporary, "users": users,
            })
        })
        .collect()
}
