//! Platform commands carried out on the PTT side ([`SideCommands`]): a trans-cmd message is a
//! private text message to the user's session, a kickout removes the session from the server
//! (the bridge account needs the server's kick permission, e.g. SuperUser or an admin), an
//! invite moves the user into the group's channel (move permission).
//!
//! PTT party ids are the registered user id, or `s<session>` for unregistered users (as in
//! events); the user is looked up on the servers of the command's app.

use std::sync::Arc;
use std::time::Duration;

use ptt::client::{ClientHandle, Command, LinkState};
use ptt::{ControlMessage, proto};
use serde_json::Value;

use super::{PttSide, party};
use crate::hub::command::BoxFuture;
use crate::hub::{CommandError, Delivered, SideCommand, SideCommands};

/// How long to wait for the server to show the effect of a kick or move.
const EFFECT_TIMEOUT: Duration = Duration::from_secs(3);

/// PTT command handler.
#[derive(Debug, Clone)]
pub struct PttCommands {
    side: PttSide,
}

impl PttCommands {
    /// Commands through the accounts of `side`.
    pub fn new(side: PttSide) -> Arc<Self> {
        Arc::new(Self { side })
    }

    /// A connected account of `app` that sees `party`: `(client, session, server id)`.
    fn find(&self, app: &str, party_id: &str) -> Option<(ClientHandle, u32, String)> {
        self.side
            .accounts
            .iter()
            .filter(|a| a.app == app)
            .find_map(|a| {
                let snap = a.client.snapshot();
                if snap.state != LinkState::Connected {
                    return None;
                }
                snap.users
                    .values()
                    .find(|u| party(u).id == party_id)
                    .map(|u| (a.client.clone(), u.session, a.server.clone()))
            })
    }
}

/// The text a trans-cmd message becomes: its `text` (or `message`) string field, else the
/// JSON of the whole object.
fn text_of(message: &Value) -> String {
    for key in ["text", "message", "content"] {
        if let Some(s) = message.get(key).and_then(Value::as_str) {
            return s.to_string();
        }
    }
    match message {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Waits until `done(snapshot)` holds or the timeout passes.
async fn wait_for(client: &ClientHandle, done: impl Fn(&ptt::client::Snapshot) -> bool) -> bool {
    let mut watch = client.watch();
    let deadline = tokio::time::Instant::now() + EFFECT_TIMEOUT;
    loop {
        if done(&watch.borrow_and_update()) {
            return true;
        }
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
}

impl SideCommands for PttCommands {
    fn execute(&self, cmd: SideCommand) -> BoxFuture<Result<Delivered, CommandError>> {
        let this = self.clone();
        Box::pin(async move {
            let app = match &cmd {
                SideCommand::Deliver { app, .. }
                | SideCommand::Kick { app, .. }
                | SideCommand::Invite { app, .. } => app.clone(),
            };
            if let SideCommand::Invite { group, side, .. } = &cmd
                && *side != crate::hub::Side::Ptt
            {
                return Err(CommandError::Unsupported(format!(
                    "only PTT users can be moved into the PTT channel {group}"
                )));
            }
            let (client, session, server) = this
                .find(&app, cmd.party())
                .ok_or(CommandError::NotOnline)?;
            let terminal = Delivered {
                terminal: session.to_string(),
            };
            let stopped = |_| CommandError::Failed("PTT connection stopped".into());
            match cmd {
                SideCommand::Deliver { message, .. } => {
                    client
                        .command(Command::PrivateText {
                            sessions: vec![session],
                            message: text_of(&message),
                        })
                        .await
                        .map_err(stopped)?;
                    Ok(terminal)
                }
                SideCommand::Kick { reason, .. } => {
                    let remove = proto::UserRemove {
                        session,
                        reason: Some(reason),
                        ..Default::default()
                    };
                    client
                        .command(Command::Send(Box::new(ControlMessage::UserRemove(remove))))
                        .await
                        .map_err(stopped)?;
                    if wait_for(&client, |s| !s.users.contains_key(&session)).await {
                        Ok(terminal)
                    } else {
                        Err(CommandError::Failed(
                            "the PTT server did not remove the user (does the bridge account have kick permission?)".into(),
                        ))
                    }
                }
                SideCommand::Invite { group, .. } => {
                    let prefix = format!("ptt:{server}:");
                    let Some(path) = group.strip_prefix(&prefix) else {
                        return Err(CommandError::UnknownGroup(group));
                    };
                    let path = if path == "/" { "" } else { path };
                    let snap = client.snapshot();
                    let Some(channel) = snap
                        .channels
                        .keys()
                        .copied()
                        .find(|id| snap.channel_path(*id).as_deref() == Some(path))
                    else {
                        return Err(CommandError::UnknownGroup(group));
                    };
                    let moved = proto::UserState {
                        session: Some(session),
                        channel_id: Some(channel),
                        ..Default::default()
                    };
                    client
                        .command(Command::Send(Box::new(ControlMessage::UserState(moved))))
                        .await
                        .map_err(stopped)?;
                    if wait_for(&client, |s| {
                        s.users
                            .get(&session)
                            .is_some_and(|u| u.channel_id == channel)
                    })
                    .await
                    {
                        Ok(terminal)
                    } else {
                        Err(CommandError::Failed(
                            "the PTT server did not move the user (does the bridge account have move permission?)".into(),
                        ))
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_text() {
        assert_eq!(text_of(&json!({"text": "hi"})), "hi");
        assert_eq!(text_of(&json!("plain")), "plain");
        assert_eq!(text_of(&json!({"cmd": 3})), r#"{"cmd":3}"#);
    }
}
