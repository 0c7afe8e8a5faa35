//! A call's life on the PTT side: channel up, floor and muting, members leaving, the end.

use super::*;

impl Connection {
    pub(super) fn call_created(&mut self, channel: u32) {
        let Some(c) = self.creating.take() else {
            return;
        };
        let Some(login) = &self.login else { return };
        let cfg = &self.side.0.config;
        let now = Instant::now();
        let mut call = Call {
            id: c.call_id,
            channel,
            channel_name: c.name,
            home_path: c.home_path,
            owner: (login.user_id, login.name.clone()),
            members: c.members,
            floor: Floor::new(None),
            talker: None,
            started: now,
            pending_grant: Some((c.transaction.clone(), now + cfg.setup_wait())),
        };
        // The floor is free in a new call: the console holds it from the start.
        call.floor.request(login.party(), login.level, false, now);
        let admin = login.server.admin.clone();
        let party = login.party();
        for m in &call.members {
            if m.state == CallState::Calling
                && let Some(session) = m.session
                && let Err(e) = admin.submit(
                    Action::Move { session, channel },
                    m.id,
                    Some(self.outcome_tx.clone()),
                )
            {
                warn!(member = m.id, e = %esc(e.to_string()), "cannot ask for a move");
            }
        }
        metrics::counter!("pttbridge_console_calls_total").increment(1);
        metrics::gauge!("pttbridge_console_calls_active").increment(1.0);
        self.side.0.calls_up.fetch_add(1, Ordering::SeqCst);
        info!(
            call = call.id,
            channel,
            members = call.members.len(),
            "call up"
        );
        let id = call.id;
        let update = Notify::member_update(id, call.owner.0, call.member_list());
        self.call = Some(call);
        self.start_record(id);
        self.send_json(
            &Reply::new("createGroup", 1, "建立会话组成功")
                .transaction(c.transaction)
                .session(id),
        );
        self.notify(update);
        self.publish(
            EventKind::PartyJoined,
            id,
            Some(party),
            json!({ "role": "console" }),
        );
        self.presence_changed();
        self.maybe_grant(now, false);
    }

    /// Answers the `requestMic` of a new call once its terminals are in (or at the deadline).
    pub(super) fn maybe_grant(&mut self, now: Instant, force: bool) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some((_, deadline)) = &call.pending_grant else {
            return;
        };
        if !(force || call.settled() || now >= *deadline) {
            return;
        }
        let (transaction, _) = call.pending_grant.take().expect("checked");
        let id = call.id;
        self.console_took_floor();
        self.send_json(
            &Reply::new("requestMic", 2, "麦克风打开成功")
                .transaction(transaction)
                .session(id),
        );
    }

    pub(super) fn console_holds(&self) -> bool {
        match (&self.call, &self.login) {
            (Some(c), Some(l)) => c.floor.holder().is_some_and(|h| l.is(&h.party)),
            _ => false,
        }
    }

    /// The console has the floor: terminals in the call are muted so no one talks over it.
    pub(super) fn console_took_floor(&mut self) {
        metrics::counter!("pttbridge_console_talk_bursts_total", "talker" => "console")
            .increment(1);
        metrics::counter!("pttbridge_console_floor_total", "outcome" => "granted").increment(1);
        self.audio_error_reported = false;
        let (Some(call), Some(login)) = (self.call.as_ref(), self.login.as_ref()) else {
            return;
        };
        let (id, party) = (call.id, login.party());
        self.set_mute_all(true);
        self.publish(
            EventKind::TalkStarted,
            id,
            Some(party),
            json!({ "media_type": 2 }),
        );
    }

    pub(super) fn set_mute(&mut self, index: usize, mute: bool) {
        let (Some(call), Some(login)) = (self.call.as_mut(), self.login.as_ref()) else {
            return;
        };
        let Some(m) = call.members.get_mut(index) else {
            return;
        };
        let Some(session) = m.session else { return };
        if m.muted == mute {
            return;
        }
        m.muted = mute;
        if let Err(e) = login.server.admin.submit(
            Action::Mute { session, mute },
            m.id,
            Some(self.outcome_tx.clone()),
        ) {
            warn!(member = m.id, e = %esc(e.to_string()), "cannot (un)mute");
        }
    }

    pub(super) fn set_mute_all(&mut self, mute: bool) {
        let n = self.call.as_ref().map_or(0, |c| c.members.len());
        for i in 0..n {
            let in_call = self.call.as_ref().is_some_and(|c| {
                matches!(c.members[i].state, CallState::Ringing | CallState::Answered)
            });
            if in_call || !mute {
                self.set_mute(i, mute);
            }
        }
    }

    pub(super) fn floor_request(&mut self, transaction: Option<Transaction>) {
        let (Some(call), Some(login)) = (self.call.as_mut(), self.login.as_ref()) else {
            return;
        };
        if call.pending_grant.is_some() {
            // Still setting up: the first requestMic will be answered; this one repeats it.
            return self.reply_error(
                Some("requestMic"),
                "call_in_setup",
                "requestMic: the call is being set up".into(),
                0,
            );
        }
        let party = login.party();
        let already = call.floor.holder().is_some_and(|h| h.party == party);
        let id = call.id;
        match call
            .floor
            .request(party, login.level, false, Instant::now())
        {
            Decision::Granted => {
                if !already {
                    self.console_took_floor();
                }
                self.send_json(
                    &Reply::new("requestMic", 2, "麦克风打开成功")
                        .transaction(transaction)
                        .session(id),
                );
            }
            Decision::Preempted { previous } => {
                metrics::counter!("pttbridge_console_floor_total", "outcome" => "preempted")
                    .increment(1);
                if let Some((_, idx)) = call.talker.take() {
                    let member = call.members[idx].id;
                    self.downstream.end_burst();
                    self.notify(Notify::member_lost_mic(id, member));
                    self.publish(
                        EventKind::TalkStopped,
                        id,
                        Some(previous.clone()),
                        json!({ "media_type": 2, "preempted": true }),
                    );
                }
                info!(call = id, preempted = %esc(&previous.name), "console pre-empted a terminal");
                self.console_took_floor();
                self.send_json(
                    &Reply::new("requestMic", 2, "麦克风打开成功")
                        .transaction(transaction)
                        .session(id),
                );
            }
            Decision::Denied { holder } => {
                metrics::counter!("pttbridge_console_floor_total", "outcome" => "denied")
                    .increment(1);
                let party = login.party();
                self.publish(
                    EventKind::FloorDenied,
                    id,
                    Some(party),
                    json!({ "holder": holder }),
                );
                self.reply_error(
                    Some("requestMic"),
                    "floor_denied",
                    format!(
                        "requestMic: {} is talking and has an equal or higher mic level",
                        holder.name
                    ),
                    id,
                );
            }
            Decision::Queued { .. } => {}
        }
    }

    pub(super) fn console_released_floor(&mut self) {
        let (Some(call), Some(login)) = (self.call.as_mut(), self.login.as_ref()) else {
            return;
        };
        let party = login.party();
        call.floor.release(&party, Instant::now());
        let id = call.id;
        if let Some(v) = self.upstream.terminator() {
            login.client.send_voice(v);
        }
        if let Some(t) = &mut self.transmission {
            t.end();
        }
        self.set_mute_all(false);
        self.publish(
            EventKind::TalkStopped,
            id,
            Some(party),
            json!({ "media_type": 2 }),
        );
    }

    /// Takes member `index` out of the call; `restore` sends it back where it came from.
    pub(super) fn remove_member(&mut self, index: usize, restore: bool) {
        let Some(login) = self.login.as_ref() else {
            return;
        };
        let server = login.server.clone();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let m = &mut call.members[index];
        let was_muted = m.muted;
        m.state = CallState::Idle;
        m.muted = false;
        let (id, session, origin) = (m.id, m.session, m.origin);
        let party = terminal_party(m);
        if let Some(session) = session {
            if restore {
                let back = origin.filter(|o| *o != call.channel).unwrap_or(0);
                let _ = server.admin.submit(
                    Action::Move {
                        session,
                        channel: back,
                    },
                    id,
                    Some(self.outcome_tx.clone()),
                );
            }
            // A terminal that walked out of the call while muted must not stay muted.
            if was_muted {
                let _ = server.admin.submit(
                    Action::Mute {
                        session,
                        mute: false,
                    },
                    id,
                    Some(self.outcome_tx.clone()),
                );
            }
        }
        let call_id = call.id;
        if call.talker.is_some_and(|(_, i)| i == index) {
            call.talker = None;
            call.floor.release(&party, Instant::now());
            self.downstream.end_burst();
            self.notify(Notify::member_lost_mic(call_id, id));
            self.publish(
                EventKind::TalkStopped,
                call_id,
                Some(party.clone()),
                json!({ "media_type": 2 }),
            );
        }
        self.busy_release(&server.ptt.id, id);
        self.publish(
            EventKind::PartyLeft,
            call_id,
            Some(party),
            json!({ "kicked": restore }),
        );
    }

    /// Ends the call: terminals go back to their channels, the console to its own.
    /// `notify` tells the console (it did not ask for it).
    pub(super) fn end_call(&mut self, code: i64, why: &str, from: u64, notify: bool) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        let (id, n, grant) = (call.id, call.members.len(), call.pending_grant.clone());
        if let Some((t, _)) = grant {
            let msg = Reply::new(
                "requestMic",
                0,
                format!("requestMic: the call ended before the mic opened: {why}"),
            )
            .transaction(t)
            .session(id);
            self.send_json(&msg);
        }
        if self.console_holds()
            && let Some(l) = &self.login
            && let Some(v) = self.upstream.terminator()
        {
            l.client.send_voice(v);
        }
        if let Some(t) = &mut self.transmission {
            t.end();
        }
        for i in 0..n {
            if self
                .call
                .as_ref()
                .is_some_and(|c| Call::active(&c.members[i]))
            {
                self.remove_member(i, true);
            }
        }
        let Some(call) = self.call.take() else { return };
        if let Some(l) = &self.login {
            if l.phase == Phase::Up {
                l.command(Command::JoinChannel(call.home_path.clone()));
            }
            let party = l.party();
            self.publish(
                EventKind::PartyLeft,
                id,
                Some(party),
                json!({ "role": "console" }),
            );
        }
        self.downstream.end_burst();
        metrics::gauge!("pttbridge_console_calls_active").decrement(1.0);
        // After the moves home were asked for: a stopping node's admin lease waits for both.
        self.side.0.calls_up.fetch_sub(1, Ordering::SeqCst);
        self.publish(
            EventKind::CallEnded,
            id,
            None,
            json!({ "code": code, "reason": why, "seconds": call.started.elapsed().as_secs_f64() }),
        );
        info!(call = id, why = %esc(why), "call ended");
        if notify {
            self.notify(Notify::hangup(id, from, code, why));
        }
        self.finish_record(id, why);
    }
}
