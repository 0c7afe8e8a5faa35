//! Platform commands for meeting users ([`SideCommands`], `docs/events.md`). Meeting party ids
//! are RTCPeer user ids (`meeting:1001`); the platform itself appears as user
//! [`PLATFORM`] (0) where the protocol needs a sender.
//!
//! - **trans-cmd** (`Deliver`): a `call.doEvent` push to the user,
//!   `{"module":"call","method":"doEvent","ownUserId":0,"event":"onTransCmd","data":<trans_mess>}`
//!   (`event` is `trans_mess.event` when that is a string).
//! - **kickout** (`Kick`): `doEvent` `onKickout` with the reason, `tiren` to its room (it leaves
//!   it), its calls end (`cancel` `offline` to the other side), its SID is logged out and the
//!   WebSocket closes.
//! - **invite** into `meeting:<room>`: a user gets `doInvite {ownUserId: 0, type: 1, roomId}`
//!   (resolves when pushed; `doAgree`/`reject` go to `targetUserId` 0, and an agreed platform
//!   call is connected at once — the invitee enters the room itself); a dial-in id brings its
//!   PTT channel into the room directly (resolves when the link is up). A platform-made link
//!   ends like any other except by `cancel` (there is no caller): `kickOut` of the channel,
//!   `finish`, `/hangup` in the channel, or `POST /meeting/links/{id}/hangup`.

use std::sync::Arc;
use std::time::Instant;

use logsafe::esc;
use rtcpeer::call::Call;
use rtcpeer::id::Id;
use rtcpeer::push::{self, Push};
use rtcpeer::request::CallEvent;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::info;

use super::calls::PLATFORM;
use super::events::{group_id, party};
use super::outbox::push_outbox;
use super::registrar::{Conn, Kick};
use super::room::RoomCmd;
use super::switchboard::{AttachError, Switchboard};
use crate::hub::command::BoxFuture;
use crate::hub::{CommandError, Delivered, EventKind, Side, SideCommand, SideCommands};

/// Meeting command handler.
#[derive(Debug, Clone)]
pub struct MeetingCommands {
    sb: Arc<Switchboard>,
}

impl SideCommands for MeetingCommands {
    fn execute(&self, cmd: SideCommand) -> BoxFuture<Result<Delivered, CommandError>> {
        let sb = self.sb.clone();
        Box::pin(async move {
            let (app, id) = match &cmd {
                SideCommand::Deliver { app, party, .. }
                | SideCommand::Kick { app, party, .. }
                | SideCommand::Invite { app, party, .. } => (app.clone(), party.clone()),
            };
            let user = id.parse::<Id>().ok();
            match cmd {
                SideCommand::Invite {
                    side,
                    group,
                    extend,
                    ..
                } => {
                    let room = group
                        .strip_prefix("meeting:")
                        .and_then(|r| r.parse::<Id>().ok())
                        .filter(|r| sb.state().rooms.contains(*r))
                        .ok_or_else(|| CommandError::UnknownGroup(group.clone()))?;
                    if side != Side::Meeting {
                        return Err(CommandError::Unsupported(format!(
                            "only meeting users can be invited into {group}; a PTT channel is invited by its dial-in id (meeting:<id>)"
                        )));
                    }
                    let user = user
                        .filter(|_| app == sb.events.app())
                        .ok_or(CommandError::NotOnline)?;
                    sb.platform_invite(user, room, extend).await
                }
                _ if app != sb.events.app() => Err(CommandError::NotOnline),
                SideCommand::Deliver { message, .. } => {
                    sb.deliver(user.ok_or(CommandError::NotOnline)?, message)
                }
                SideCommand::Kick { reason, .. } => {
                    let user = user.ok_or(CommandError::NotOnline)?;
                    sb.kick(user, reason)
                }
            }
        })
    }
}

impl MeetingCommands {
    /// The handler over `sb`.
    pub fn new(sb: Arc<Switchboard>) -> Arc<Self> {
        Arc::new(Self { sb })
    }
}

impl Switchboard {
    /// trans-cmd: a `doEvent` push to `user`.
    fn deliver(&self, user: Id, message: Value) -> Result<Delivered, CommandError> {
        let st = self.state();
        let r = st.registry.get(user).ok_or(CommandError::NotOnline)?;
        let event = message
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("onTransCmd")
            .to_owned();
        let msg = Push::Event(push::Evented {
            from: push::From {
                own_user_id: PLATFORM,
                own_device_type: None,
            },
            event: CallEvent::Other(event),
            room_id: None,
            room_type: None,
            reason: None,
            data: Some(message),
        });
        if push_outbox(&r.outbox, msg.to_value()) {
            Ok(Delivered {
                terminal: r.conn.to_string(),
            })
        } else {
            Err(CommandError::Failed(
                "the meeting client is not reading its socket".into(),
            ))
        }
    }

    /// kickout: tells the connection of `user` to end (its socket task does the rest).
    fn kick(&self, user: Id, reason: String) -> Result<Delivered, CommandError> {
        let st = self.state();
        let r = st.registry.get(user).ok_or(CommandError::NotOnline)?;
        // A kick already queued is as good as this one.
        let _ = r.kick.try_send(Kick {
            reason,
            end_session: true,
        });
        Ok(Delivered {
            terminal: r.conn.to_string(),
        })
    }

    /// Ends a kicked connection's session: `doEvent onKickout` with the reason, `tiren` to its
    /// room (and out of it), calls ended, SID logged out. The socket task closes it after.
    pub async fn kick_out(self: &Arc<Self>, conn: &mut Conn, kick: &Kick) {
        let reason = kick.reason.as_str();
        let Some(me) = conn.user else { return };
        info!(user = me, reason = %esc(reason), "meeting user's connection ended from outside");
        let bye = Push::Event(push::Evented {
            from: push::From {
                own_user_id: PLATFORM,
                own_device_type: None,
            },
            event: CallEvent::Other("onKickout".into()),
            room_id: conn.room,
            room_type: None,
            reason: Some(reason.to_owned()),
            data: None,
        });
        push_outbox(&conn.outbox, bye.to_value());
        if !kick.end_session {
            // Registered again elsewhere: this connection just goes (the socket task closes
            // and disconnects it; what is the user's now stays with the newer connection).
            return;
        }
        let room = conn.room.take();
        let handle = room.and_then(|r| self.room(r));
        if let (Some(room), Some(h)) = (room, handle) {
            let _ = h.send(RoomCmd::Kick { client: me }).await;
            self.events.room(
                EventKind::PartyLeft,
                Some(room),
                Some(party(me, None)),
                json!({ "kicked": true }),
            );
        }
        if let Some(sid) = conn.sid.take() {
            self.accounts.lock().logout(&sid);
        }
        self.disconnect(conn).await;
    }

    /// invite: `user` into `room` — a dial-in's channel is linked in, anyone else is called.
    async fn platform_invite(
        self: &Arc<Self>,
        user: Id,
        room: Id,
        extend: Option<Value>,
    ) -> Result<Delivered, CommandError> {
        if let Some(target) = self.dial_target(user).cloned() {
            let (ready, linked) = oneshot::channel();
            self.attach(&target, room, PLATFORM, Some(ready))
                .map_err(|e| match e {
                    AttachError::Busy => CommandError::Failed(format!(
                        "dial-in {user} is busy (linked or in a call)"
                    )),
                    AttachError::NoRoom => CommandError::UnknownGroup(group_id(room)),
                    AttachError::RoomBusy => {
                        CommandError::Failed("the room is not taking commands".into())
                    }
                })?;
            return match linked.await {
                Ok(Ok(())) => Ok(Delivered {
                    terminal: format!("link:{user}"),
                }),
                Ok(Err(e)) => Err(CommandError::Failed(e)),
                Err(_) => Err(CommandError::Failed("the room closed".into())),
            };
        }
        let mut st = self.state();
        let conn = st
            .registry
            .get(user)
            .map(|r| r.conn)
            .ok_or(CommandError::NotOnline)?;
        if st.calls.platform_call(user, room) {
            return Err(CommandError::Failed(format!(
                "{user} is already being invited into room {room}"
            )));
        }
        // The invited user may enter the room.
        st.rooms.invite(room, user);
        let now = Instant::now();
        let mut call = Call::new(PLATFORM, user, room, self.config.no_answer_timeout(), now);
        let _ = call.invite(now);
        let id = self.add_platform_call(&mut st, call);
        let msg = Push::Invite(push::Invited {
            from: push::From {
                own_user_id: PLATFORM,
                own_device_type: None,
            },
            call_type: Some(1),
            room_id: Some(room),
        });
        if !self.push_to(&st, user, &msg) {
            self.end_call(&mut st, id, rtcpeer::call::EndReason::Gone, room);
            return Err(CommandError::Failed(format!(
                "meeting user {user} is not reading its socket"
            )));
        }
        self.events.room(
            EventKind::CallRinging,
            Some(room),
            Some(party(user, None)),
            json!({ "call": id, "stage": "invited", "caller": "platform", "extend": extend }),
        );
        drop(st);
        Ok(Delivered {
            terminal: conn.to_string(),
        })
    }
}
