//! What platforms see of and do to a console: presence (`side.connected`/`side.disconnected`),
//! call records of its temporary calls, and platform commands ([`Order`]s: trans-cmd,
//! kickout, invite).

use super::*;
use crate::hub::{CallStart, CommandError, Delivered};

/// A platform invite waiting for its terminal to ring in the call.
pub(crate) struct PendingInvite {
    member: u64,
    pub(super) deadline: Instant,
    done: super::super::commands::Done,
}

impl Connection {
    /// The console's login is complete: platforms see it online.
    pub(super) fn announce_online(&mut self) {
        let Some(l) = self.login.as_mut() else { return };
        if l.announced {
            return;
        }
        l.announced = true;
        let d = Draft::new(l.server.ptt.app.clone(), EventKind::SideConnected, "")
            .party(l.party())
            .detail(json!({
                "side": "console",
                "server": l.server.ptt.id,
                "account": l.account,
                "user_id": l.user_id,
                "terminal": self.id.to_string(),
            }));
        self.side.0.bus.publish(d);
    }

    /// The login ended (`why`): platforms see the console offline.
    pub(super) fn announce_offline(&self, l: &Login, why: &str) {
        if !l.announced {
            return;
        }
        let d = Draft::new(l.server.ptt.app.clone(), EventKind::SideDisconnected, "")
            .party(l.party())
            .detail(json!({
                "side": "console",
                "server": l.server.ptt.id,
                "account": l.account,
                "terminal": self.id.to_string(),
                "reason": why,
            }));
        self.side.0.bus.publish(d);
    }

    /// A call is up: its record starts (the `requestMic` that made it is its first signal) and
    /// platforms can invite terminals into it.
    pub(super) fn start_record(&mut self, call: u64) {
        let Some(l) = &self.login else { return };
        let app = l.server.ptt.app.clone();
        if let Some(calls) = self.side.0.calls.get() {
            let rec = calls.start(
                CallStart::new(
                    app.clone(),
                    format!("console:{call}"),
                    [Side::Console, Side::Ptt],
                )
                .initiator(l.party()),
            );
            rec.counters().signal(1);
            self.record = Some(rec);
        }
        self.side
            .0
            .call_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(call, (app, self.id));
    }

    /// The call ended (`why`): its record is written.
    pub(super) fn finish_record(&mut self, call: u64, why: &str) {
        self.side
            .0
            .call_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&call);
        if let Some(rec) = self.record.take() {
            rec.finish(why);
        }
    }

    /// One muicall message of the call (request, reply or notification).
    pub(super) fn count_signal(&self) {
        if let Some(r) = &self.record {
            r.counters().signal(1);
        }
    }

    /// One audio packet of `bytes` carried in the call (either direction).
    pub(super) fn count_audio(&self, bytes: usize) {
        if let Some(r) = &self.record {
            r.counters().audio(1, bytes);
        }
    }

    pub(super) async fn on_order(&mut self, order: Order) {
        match order {
            Order::Deliver { message, done } => {
                let r = self.logged_in_terminal();
                if r.is_ok() {
                    self.notify(Notify::trans_cmd(message));
                    info!("platform message delivered");
                }
                let _ = done.send(r);
            }
            Order::Kick { reason, done } => {
                let r = self.logged_in_terminal();
                if r.is_ok() {
                    info!(reason = %esc(&reason), "console kicked out by a platform");
                    self.refuse_creation("kicked_out", format!("createGroup: {reason}"));
                    self.end_call(reason::KICKED, &reason, 0, true);
                    self.logout(&reason).await;
                    self.notify(Notify::server_state("loggedOut", Some(reason)));
                }
                let _ = done.send(r);
            }
            Order::Invite { call, member, done } => self.invite(call, member, done),
        }
    }

    /// The console's terminal id while it is logged in (its connection number).
    fn logged_in_terminal(&self) -> Result<Delivered, CommandError> {
        match &self.login {
            Some(l) if l.announced => Ok(Delivered {
                terminal: self.id.to_string(),
            }),
            _ => Err(CommandError::NotOnline),
        }
    }

    /// A platform invites PTT user `member` into call `call`: `addGroupMember` for one id.
    fn invite(&mut self, call: u64, member: u64, done: super::super::commands::Done) {
        if self.call.as_ref().is_none_or(|c| c.id != call) {
            let _ = done.send(Err(CommandError::UnknownGroup(format!("console:{call}"))));
            return;
        }
        if let Err(e) = self.up_login() {
            let _ = done.send(Err(CommandError::Failed(format!("the console: {e}"))));
            return;
        }
        let results = self.add_to_call(call, &[member]);
        let r = &results[0];
        let refused = match r.code {
            0 => None,
            1 => Some(CommandError::NotOnline),
            2 => Some(CommandError::Failed(format!(
                "ptt:{member} is busy in another console call"
            ))),
            _ => Some(CommandError::Unsupported(format!(
                "ptt:{member} is the console's own account"
            ))),
        };
        match refused {
            Some(e) => {
                let _ = done.send(Err(e));
            }
            None => {
                self.invites.push(PendingInvite {
                    member,
                    deadline: Instant::now() + self.side.0.config.move_timeout(),
                    done,
                });
                self.settle_invites(Instant::now());
            }
        }
        let c = self.call.as_ref().expect("checked");
        let update = Notify::member_update(c.id, c.owner.0, c.member_list());
        self.notify(update);
    }

    /// Answers the invites whose terminal arrived (or failed, or took too long).
    pub(super) fn settle_invites(&mut self, now: Instant) {
        let call = self.call.as_ref();
        let mut waiting = Vec::new();
        for inv in self.invites.drain(..) {
            let m = call.and_then(|c| c.member(inv.member).map(|i| &c.members[i]));
            let result = match m.map(|m| (m.state, m.session)) {
                None => Err(CommandError::Failed("the call ended".into())),
                Some((CallState::Ringing | CallState::Answered, session)) => Ok(Delivered {
                    terminal: session.map(|s| s.to_string()).unwrap_or_default(),
                }),
                Some((CallState::Calling, _)) if now < inv.deadline => {
                    waiting.push(inv);
                    continue;
                }
                Some((CallState::Calling, _)) => Err(CommandError::Failed(
                    "the PTT server did not move the terminal into the call in time".into(),
                )),
                Some(_) => Err(CommandError::Failed(
                    "the terminal could not be brought into the call (see the admin account's permissions)"
                        .into(),
                )),
            };
            let _ = inv.done.send(result);
        }
        self.invites = waiting;
    }
}
