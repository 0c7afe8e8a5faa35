//! Deadlines (login, channel creation, mic grant) and the admin session's outcomes.

use super::*;

impl Connection {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let login = match self.login.as_ref().map(|l| l.phase) {
            Some(Phase::Pending(t)) => Some(t),
            None => Some(self.login_by),
            _ => None,
        };
        let creating = self.creating.as_ref().map(|c| c.deadline);
        let grant = self
            .call
            .as_ref()
            .and_then(|c| c.pending_grant.as_ref().map(|g| g.1));
        let invite = self.invites.iter().map(|i| i.deadline).min();
        [login, creating, grant, invite].into_iter().flatten().min()
    }

    pub(super) async fn on_timer(&mut self, now: Instant) {
        if self.login.is_none() && now >= self.login_by && self.closing.is_none() {
            error_metric("login_timeout");
            let ms = self.side.0.config.auth_timeout_ms;
            self.closing = Some((
                1008,
                format!("log in (initServer, then connect) within {ms} ms"),
            ));
            return;
        }
        if let Some(Phase::Pending(t)) = self.login.as_ref().map(|l| l.phase)
            && now >= t
        {
            let secs = self.side.0.config.login_timeout().as_secs();
            self.fail_login(format!(
                "connect: the PTT server did not accept the login within {secs} s"
            ))
            .await;
        }
        if self.creating.as_ref().is_some_and(|c| now >= c.deadline) {
            let ms = self.side.0.config.move_timeout_ms;
            self.refuse_creation(
                "ptt_timeout",
                format!(
                    "createGroup: the PTT server did not create the call channel within {ms} ms"
                ),
            );
        }
        self.maybe_grant(now, false);
    }

    pub(super) async fn on_outcome(&mut self, o: Outcome) {
        let Err(e) = o.result else { return };
        let Some(call) = self.call.as_mut() else {
            return;
        };
        match o.action {
            Action::Move { channel, .. } if channel == call.channel => {
                let Some(i) = call.member(o.user) else { return };
                if call.members[i].state != CallState::Calling {
                    return;
                }
                warn!(member = o.user, error = %esc(e.to_string()), "terminal could not be brought into the call");
                error_metric("move_failed");
                call.members[i].state = CallState::Idle;
                let server = self
                    .login
                    .as_ref()
                    .map(|l| l.server.ptt.id.clone())
                    .unwrap_or_default();
                self.busy_release(&server, o.user);
                let call = self.call.as_ref().expect("present");
                let (id, owner, nobody) = (
                    call.id,
                    call.owner.0,
                    !call.members.iter().any(Call::active),
                );
                let update = Notify::member_update(id, owner, call.member_list());
                self.notify(update);
                if nobody {
                    self.end_call(
                        reason::NOBODY,
                        &format!("no terminal could be brought into the call: {e}"),
                        0,
                        true,
                    );
                } else {
                    self.maybe_grant(Instant::now(), false);
                }
            }
            _ => {
                warn!(action = ?o.action, error = %esc(e.to_string()), "admin action failed");
                error_metric("admin_action_failed");
            }
        }
    }
}
