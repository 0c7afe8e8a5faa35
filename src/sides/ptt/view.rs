//! The PTT side in the web page's live view: each server with its state, accounts and
//! channel tree (users in each channel, the bridge's own accounts marked).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{PttSide, party};
use crate::events::state::user_id;

/// `"ptt": [...]` of `/api/state`.
pub fn servers(side: &PttSide) -> Value {
    let own: HashSet<(String, String)> = side
        .accounts
        .iter()
        .map(|a| (a.server.clone(), a.username.clone()))
        .collect();
    side.server_health()
        .into_iter()
        .map(|h| {
            // Every session sees the whole server: the first account's view is the tree.
            let channels = side
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
        .collect()
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
                        "party": user_id(&party(u)), "name": u.name, "session": u.session,
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
