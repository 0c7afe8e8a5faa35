//! What the console's own PTT session reports: login state, presence, talk and voice.

use super::*;

impl Connection {
    pub(super) async fn on_ptt(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Session(PttEvent::Synced { session, .. }) => {
                let Some(l) = self.login.as_mut() else { return };
                let snap = l.client.snapshot();
                if let Some(u) = snap.users.get(&session) {
                    l.user_id = u.user_id.map_or(0, u64::from);
                    l.name = u.name.clone();
                }
                match l.phase {
                    Phase::Pending(_) => {
                        l.phase = Phase::Up;
                        info!(account = %esc(&l.account), user_id = l.user_id, "console logged in");
                        metrics::counter!("pttbridge_console_logins_total", "result" => "ok")
                            .increment(1);
                        self.reply("login", 1, "登录成功");
                        self.announce_online();
                    }
                    Phase::Reconnecting => {
                        l.phase = Phase::Up;
                        self.notify(Notify::server_state("connected", None));
                    }
                    Phase::Up => {}
                }
            }
            ClientEvent::Session(PttEvent::Rejected { reason }) => {
                let pending = matches!(
                    self.login.as_ref().map(|l| l.phase),
                    Some(Phase::Pending(_))
                );
                if pending {
                    self.login_refused();
                    self.fail_login(format!(
                        "connect: the PTT server rejected the login: {reason}"
                    ))
                    .await;
                } else {
                    // The account was refused on a reconnect (password changed, banned): stop trying.
                    self.logout("the PTT server refused the account").await;
                    self.notify(Notify::server_state("loggedOut", Some(reason)));
                }
            }
            ClientEvent::Disconnected { reason, .. } => {
                let Some(phase) = self.login.as_ref().map(|l| l.phase) else {
                    return;
                };
                match phase {
                    Phase::Pending(_) => {
                        self.fail_login(format!(
                            "connect: cannot log in to the PTT server: {reason}"
                        ))
                        .await;
                    }
                    Phase::Up => {
                        if let Some(l) = self.login.as_mut() {
                            l.phase = Phase::Reconnecting;
                        }
                        self.abandon_creation_with_reply(&reason);
                        self.end_call(
                            reason::SERVER_LOST,
                            &format!("PTT server connection lost: {reason}"),
                            0,
                            true,
                        );
                        self.notify(Notify::server_state("reconnecting", Some(reason)));
                    }
                    Phase::Reconnecting => {}
                }
            }
            ClientEvent::Session(PttEvent::InChannel { id, .. }) => {
                let snap = self.login.as_ref().map(|l| l.client.snapshot());
                let name = snap
                    .as_ref()
                    .and_then(|s| s.channels.get(&id))
                    .map(|c| c.name.clone());
                if self
                    .creating
                    .as_ref()
                    .is_some_and(|c| Some(&c.name) == name.as_ref())
                {
                    self.call_created(id);
                } else if self.call.as_ref().is_some_and(|c| c.channel != id) {
                    self.end_call(
                        reason::CHANNEL_GONE,
                        "the console was moved out of the call channel",
                        0,
                        true,
                    );
                }
            }
            ClientEvent::Session(PttEvent::ChannelRemoved { id })
                if self.call.as_ref().is_some_and(|c| c.channel == id) =>
            {
                self.end_call(
                    reason::CHANNEL_GONE,
                    "the call channel was removed",
                    0,
                    true,
                );
            }
            ClientEvent::Session(PttEvent::PermissionDenied { reason }) => {
                if self.creating.is_some() {
                    self.refuse_creation(
                        "ptt_denied",
                        format!("createGroup: the PTT server refused to create the call channel: {reason}"),
                    );
                } else {
                    warn!(reason = %esc(&reason), "PTT server denied the console's session");
                }
            }
            ClientEvent::Session(
                PttEvent::UserJoined(_)
                | PttEvent::UserMoved { .. }
                | PttEvent::UserLeft { .. }
                | PttEvent::UserUpdated(_),
            ) => self.presence_changed(),
            ClientEvent::Session(PttEvent::TalkStarted { session, .. }) => {
                self.terminal_talk_started(session)
            }
            ClientEvent::Session(PttEvent::TalkStopped { session, .. }) => {
                self.terminal_talk_stopped(session)
            }
            ClientEvent::Session(PttEvent::Voice {
                session,
                sequence,
                opus,
                ..
            }) => self.terminal_voice(session, sequence, &opus),
            ClientEvent::Session(PttEvent::Fault { kind, .. }) => {
                metrics::counter!("pttbridge_console_ptt_faults_total", "kind" => kind.as_str())
                    .increment(1);
            }
            ClientEvent::Stopped => self.lost_client().await,
            _ => {}
        }
    }

    pub(super) fn abandon_creation_with_reply(&mut self, reason: &str) {
        self.refuse_creation(
            "server_lost",
            format!("createGroup: PTT server connection lost: {reason}"),
        );
    }

    pub(super) async fn lost_client(&mut self) {
        if self.login.is_some() {
            warn!("the console's PTT session stopped");
            self.logout("the PTT session stopped").await;
            self.notify(Notify::server_state(
                "loggedOut",
                Some("the PTT session stopped".into()),
            ));
        }
    }

    pub(super) fn presence_changed(&mut self) {
        let answer = self.side.0.config.answer;
        let console_holds = self.console_holds();
        let (Some(call), Some(login)) = (self.call.as_mut(), self.login.as_ref()) else {
            return;
        };
        let snap = login.client.snapshot();
        if snap.state != LinkState::Connected {
            // The session lost the server and with it its view of the users: nobody left
            // the call, the server went (its Disconnected event ends the call with that reason).
            return;
        }
        let changes = call.observe(&snap.users, answer);
        if changes.is_empty() {
            return;
        }
        let id = call.id;
        let mut left_by_self = None;
        for ch in &changes {
            let call = self.call.as_ref().expect("present");
            match *ch {
                Change::Ringing(i) => {
                    let m = &call.members[i];
                    let (mid, party) = (m.id, terminal_party(m));
                    self.notify(Notify::ring(id, mid));
                    self.publish(
                        EventKind::CallRinging,
                        id,
                        Some(party),
                        serde_json::Value::Null,
                    );
                    if console_holds {
                        self.set_mute(i, true);
                    }
                }
                Change::Answered(i) => {
                    let m = &call.members[i];
                    let (mid, party) = (m.id, terminal_party(m));
                    self.notify(Notify::answer(id, mid));
                    self.publish(
                        EventKind::CallAnswered,
                        id,
                        Some(party.clone()),
                        serde_json::Value::Null,
                    );
                    self.publish(
                        EventKind::PartyJoined,
                        id,
                        Some(party),
                        serde_json::Value::Null,
                    );
                }
                Change::Left(i) => {
                    left_by_self = Some(call.members[i].id);
                    self.remove_member(i, false);
                }
            }
        }
        let call = self.call.as_ref().expect("present");
        let update = Notify::member_update(id, call.owner.0, call.member_list());
        let nobody = !call.members.iter().any(Call::active);
        self.notify(update);
        self.maybe_grant(Instant::now(), false);
        if let Some(from) = left_by_self
            && nobody
        {
            self.end_call(reason::ALL_LEFT, "every terminal left the call", from, true);
        }
    }

    pub(super) fn terminal_talk_started(&mut self, session: u32) {
        let answer = self.side.0.config.answer;
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(i) = call.by_session(session) else {
            return;
        };
        if !matches!(
            call.members[i].state,
            CallState::Ringing | CallState::Answered
        ) {
            return;
        }
        let m = &call.members[i];
        let level = self.side.0.terminal_level_of(&m.name);
        let party = terminal_party(m);
        let (id, mid, name) = (call.id, m.id, m.name.clone());
        match call
            .floor
            .request(party.clone(), level, false, Instant::now())
        {
            decision @ (Decision::Granted | Decision::Preempted { .. }) => {
                // A terminal of a higher level (a dispatcher, by the directory) cuts into another
                // terminal's burst: that one stops being heard and the console is told.
                let displaced = match decision {
                    Decision::Preempted { previous } => call
                        .talker
                        .map(|(s, old)| (s, call.members[old].id, previous)),
                    _ => None,
                };
                call.talker = Some((session, i));
                // A terminal has the floor: the dispatcher's burst, if any, is over.
                if let Some(t) = &mut self.transmission {
                    t.end();
                }
                let answered = if answer == crate::sides::console::config::AnswerMode::OnTalk {
                    call.talked(i)
                } else {
                    None
                };
                metrics::counter!("pttbridge_console_talk_bursts_total", "talker" => "terminal")
                    .increment(1);
                if answered.is_some() {
                    self.notify(Notify::answer(id, mid));
                    self.publish(
                        EventKind::CallAnswered,
                        id,
                        Some(party.clone()),
                        serde_json::Value::Null,
                    );
                    let call = self.call.as_ref().expect("present");
                    let update = Notify::member_update(id, call.owner.0, call.member_list());
                    self.notify(update);
                }
                if let Some((old_session, old, previous)) = displaced {
                    metrics::counter!("pttbridge_console_floor_total", "outcome" => "preempted")
                        .increment(1);
                    self.downstream.end_burst();
                    self.archive_terminal_stopped(old_session);
                    self.notify(Notify::member_lost_mic(id, old));
                    self.publish(
                        EventKind::TalkStopped,
                        id,
                        Some(previous),
                        json!({ "media_type": 2, "preempted": true }),
                    );
                }
                self.archive_terminal_started(session, id, &party);
                self.notify(Notify::member_get_mic(id, mid, &name));
                self.publish(
                    EventKind::TalkStarted,
                    id,
                    Some(party),
                    json!({ "media_type": 2 }),
                );
            }
            Decision::Denied { holder } => {
                metrics::counter!("pttbridge_console_floor_total", "outcome" => "terminal_denied")
                    .increment(1);
                self.publish(
                    EventKind::FloorDenied,
                    id,
                    Some(party),
                    json!({ "holder": holder }),
                );
            }
            Decision::Queued { .. } => {}
        }
    }

    pub(super) fn terminal_talk_stopped(&mut self, session: u32) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some((s, i)) = call.talker else { return };
        if s != session {
            return;
        }
        call.talker = None;
        let m = &call.members[i];
        let party = terminal_party(m);
        let (id, mid) = (call.id, m.id);
        call.floor.release(&party, Instant::now());
        self.downstream.end_burst();
        self.archive_terminal_stopped(session);
        self.notify(Notify::member_lost_mic(id, mid));
        self.publish(
            EventKind::TalkStopped,
            id,
            Some(party),
            json!({ "media_type": 2 }),
        );
    }

    pub(super) fn terminal_voice(&mut self, session: u32, sequence: u64, opus: &Bytes) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        let Some((s, i)) = call.talker else { return };
        if s != session {
            self.audio_metrics
                .dropped(AudioDrop::NotFloorHolder)
                .increment(1);
            return;
        }
        let source = call.members[i].id as u32;
        self.count_audio(opus.len());
        self.archive_terminal_voice(session, sequence, opus);
        let late = self
            .downstream
            .push(session, source, sequence, opus, &mut self.frames_out);
        if late > 0 {
            self.audio_metrics.dropped(AudioDrop::Late).increment(late);
        }
        for f in self.frames_out.drain(..) {
            if self.out.try_send(Message::Binary(f)).is_ok() {
                self.audio_metrics.frame_out().increment(1);
            } else {
                self.audio_metrics
                    .dropped(AudioDrop::ConsoleSlow)
                    .increment(1);
            }
        }
    }
}
