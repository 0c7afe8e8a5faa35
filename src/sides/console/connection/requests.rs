//! Console requests: server choice, login and logout, starting calls, members, hang-up.

use super::*;

impl Connection {
    /// One request from the console. Its replies, refusals included, echo its `transaction`
    /// and call id ([`Echo`]) while it is handled.
    pub(super) async fn on_text(&mut self, text: &str) {
        match muicall::parse_request(text) {
            Ok(req) => {
                self.echo = req.echo();
                self.on_request(req).await;
            }
            Err(RequestError {
                kind,
                request_type,
                message,
                echo,
            }) => {
                self.echo = echo;
                self.reply_error(request_type.as_deref(), kind.as_str(), message, 0);
            }
        }
        self.echo = Echo::default();
    }

    async fn on_request(&mut self, req: Request) {
        if !self.limiter.take(Instant::now()) {
            let limit = self.side.0.config.requests_per_second;
            return self.reply_error(
                Some(req.type_name()),
                "rate_limited",
                format!(
                    "{}: too many requests (limit {limit} per second)",
                    req.type_name()
                ),
                call_of(&req),
            );
        }
        metrics::counter!("pttbridge_console_requests_total", "type" => req.type_name())
            .increment(1);
        self.count_signal();
        match req {
            Request::InitServer { base_url } => self.init_server(&base_url).await,
            Request::Connect {
                account,
                password,
                audio,
            } => {
                if let Some(a) = audio {
                    self.downstream.set_format(a);
                }
                self.connect(account, password).await
            }
            Request::RequestMic {
                to_ids,
                transaction,
                session_id,
            } => self.request_mic(to_ids, transaction, session_id).await,
            Request::ReleaseMic { session_id } => self.release_mic(session_id),
            Request::AddGroupMember {
                session_id,
                ids,
                transaction,
            } => self.add_members(session_id, ids, transaction),
            Request::KickGroupMember {
                session_id,
                ids,
                transaction,
            } => self.kick_members(session_id, ids, transaction),
            Request::TempCallHangup { session_id } => self.hangup(session_id).await,
            Request::LoginOut => {
                if self.login.is_none() {
                    return self.reply_error(
                        Some("loginOut"),
                        "not_logged_in",
                        "loginOut: not logged in".into(),
                        0,
                    );
                }
                self.logout("the console logged out").await;
                self.reply("logoutResp", 1, "登录注销成功");
            }
            Request::AudioFormat(f) => {
                self.downstream.set_format(f);
                self.reply("audioFormat", 1, "ok");
            }
        }
    }

    pub(super) async fn init_server(&mut self, base_url: &str) {
        let Some(entry) = self
            .side
            .0
            .servers
            .get(&normalize_base_url(base_url))
            .cloned()
        else {
            let mut known: Vec<&String> = self.side.0.servers.keys().collect();
            known.sort();
            return self.reply_error(
                Some("initServer"),
                "unknown_server",
                format!(
                    "initServer: no PTT server is configured for {base_url:?} (known: {known:?})"
                ),
                0,
            );
        };
        if let Some(l) = &self.login
            && l.server.ptt.id != entry.ptt.id
        {
            self.logout("the console chose another server").await;
        }
        self.server = Some(entry);
        self.reply("initServer", 1, "服务器地址初始化成功");
    }

    pub(super) async fn connect(&mut self, account: String, password: String) {
        let Some(server) = self.server.clone() else {
            return self.reply_error(
                Some("connect"),
                "no_server",
                "connect: send initServer first".into(),
                0,
            );
        };
        let key = (server.ptt.id.clone(), account.clone());
        if self.side.0.reserved.contains(&key) {
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "console", "reason" => "reserved_account").increment(1);
            return self.reply_error(
                Some("connect"),
                "reserved_account",
                format!(
                    "connect: {account:?} is one of the bridge's own accounts on this server; a console logs in with its own"
                ),
                0,
            );
        }
        if let Some(wait) = self.login_throttled(&key) {
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "console", "reason" => "throttled").increment(1);
            return self.reply_error(
                Some("connect"),
                "login_throttled",
                format!(
                    "connect: too many failed logins for this account or from this address; try again in {} s",
                    wait.as_secs().max(1)
                ),
                0,
            );
        }
        if self.login.is_some() {
            self.logout("the console logged in again").await;
        }
        {
            let mut accounts = self
                .side
                .0
                .accounts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match accounts.get(&key) {
                Some(other) if *other != self.id => {
                    drop(accounts);
                    return self.reply_error(
                        Some("connect"),
                        "account_in_use",
                        format!(
                            "connect: account {account:?} is already logged in on another console"
                        ),
                        0,
                    );
                }
                _ => {
                    accounts.insert(key, self.id);
                }
            }
        }
        let cfg = &self.side.0;
        let session = cfg.ptt.session(account.clone(), password);
        let p = &server.ptt;
        let mut cc = ClientConfig::new(p.host.clone(), p.port, p.trust(), session);
        cc.udp_port = p.udp_port;
        cc.backoff = cfg.ptt.backoff();
        let (client, events) = client::spawn(cc);
        let (commands, mut queued) = mpsc::channel::<Command>(64);
        let forward = client.clone();
        tokio::spawn(async move {
            while let Some(cmd) = queued.recv().await {
                if forward.command(cmd).await.is_err() {
                    break;
                }
            }
        });
        info!(account = %esc(&account), server = %p.id, "console logging in");
        self.login = Some(Login {
            level: cfg.level_of(&account),
            account,
            server,
            client,
            events,
            phase: Phase::Pending(Instant::now() + cfg.config.login_timeout()),
            user_id: 0,
            name: String::new(),
            commands,
            announced: false,
        });
        self.audio_error_reported = false;
    }

    /// Ends the PTT session (hanging up its call) and frees the account.
    pub(super) async fn logout(&mut self, why: &str) {
        self.abandon_creation();
        self.end_call(reason::ALL_LEFT, why, 0, false);
        if let Some(l) = self.login.take() {
            self.login_by = Instant::now() + self.side.0.config.auth_timeout();
            self.announce_offline(&l, why);
            let _ = l.commands.send(Command::Shutdown).await;
            let key = (l.server.ptt.id.clone(), l.account.clone());
            let mut accounts = self
                .side
                .0
                .accounts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if accounts.get(&key) == Some(&self.id) {
                accounts.remove(&key);
            }
            info!(account = %esc(&l.account), why = %esc(why), "console logged out");
        }
    }

    /// Limiter keys of a login: the account on its server, and the console's address.
    fn login_keys(&self, key: &(String, String)) -> [Option<String>; 2] {
        [
            Some(format!("account:{}/{}", key.0, key.1)),
            self.addr.map(|a| format!("addr:{a}")),
        ]
    }

    /// How long logins for `key` (or from this address) are refused, if they are.
    fn login_throttled(&self, key: &(String, String)) -> Option<std::time::Duration> {
        let now = Instant::now();
        self.login_keys(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.side.0.failures.check(&k, now))
            .max()
    }

    /// The PTT server refused the console's credentials: counts towards throttling.
    pub(super) fn login_refused(&self) {
        let Some(l) = &self.login else { return };
        let key = (l.server.ptt.id.clone(), l.account.clone());
        let now = Instant::now();
        for k in self.login_keys(&key).into_iter().flatten() {
            self.side.0.failures.failed(k, now);
        }
    }

    pub(super) async fn fail_login(&mut self, message: String) {
        metrics::counter!("pttbridge_console_logins_total", "result" => "failed").increment(1);
        self.logout("login failed").await;
        self.reply_error(Some("connect"), "login_failed", message, 0);
    }

    pub(super) fn up_login(&self) -> Result<&Login, &'static str> {
        match &self.login {
            Some(l) if l.phase == Phase::Up => Ok(l),
            Some(l) if l.phase == Phase::Reconnecting => {
                Err("the PTT server connection is down; the bridge is reconnecting")
            }
            Some(_) => Err("the login is not complete yet"),
            None => Err("not logged in (send connect first)"),
        }
    }

    pub(super) fn busy_claim(&self, server: &str, id: u64, call: u64) -> bool {
        let mut busy = self.side.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        match busy.get(&(server.to_string(), id)) {
            Some((conn, c)) if *conn != self.id || *c != call => false,
            _ => {
                busy.insert((server.to_string(), id), (self.id, call));
                true
            }
        }
    }

    pub(super) fn busy_release(&self, server: &str, id: u64) {
        let mut busy = self.side.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        if busy
            .get(&(server.to_string(), id))
            .is_some_and(|(conn, _)| *conn == self.id)
        {
            busy.remove(&(server.to_string(), id));
        }
    }

    /// Looks up terminal `id` and, when it can be called, claims it for `call`.
    pub(super) fn resolve(&self, login: &Login, id: u64, call: u64) -> (Member, MemberResult) {
        let snap = login.client.snapshot();
        // Our session's view, else the admin session's: a terminal that connected a moment ago
        // may be known to one of them first.
        let admin = login.server.admin.local().snapshot();
        let find = |s: &ptt::client::Snapshot| {
            let uid = u32::try_from(id).ok()?;
            s.users.values().find(|u| u.user_id == Some(uid)).cloned()
        };
        let user = find(&snap).or_else(|| find(&admin));
        let user = user.as_ref();
        // Where to send it back to. A terminal seen in a call channel is on its way home from
        // a call that just ended (this session's view can lag the server's by a moment): its
        // home is where the bridge last sent it, not the call channel about to vanish.
        let key = (login.server.ptt.id.clone(), id);
        let origin = user.map(|u| {
            let in_call_channel = snap
                .channels
                .get(&u.channel_id)
                .is_some_and(|c| c.temporary && c.name.starts_with(CALL_CHANNEL_PREFIX));
            let mut homes = self.side.0.homes.lock().unwrap_or_else(|p| p.into_inner());
            if in_call_channel {
                homes.get(&key).copied().unwrap_or(0)
            } else {
                homes.insert(key.clone(), u.channel_id);
                u.channel_id
            }
        });
        let mut m = Member {
            id,
            name: user
                .map(|u| u.name.clone())
                .or_else(|| self.side.0.directory_name(id))
                .unwrap_or_default(),
            session: user.map(|u| u.session),
            state: CallState::Idle,
            origin,
            muted: false,
        };
        let result = |code, message: &str, name: &str| MemberResult {
            id,
            name: name.to_string(),
            code,
            message: message.to_string(),
        };
        let r = if id == login.user_id {
            result(3, "that is the console itself", &login.name)
        } else if user.is_none() {
            result(1, "offline", &m.name)
        } else if !self.busy_claim(&login.server.ptt.id, id, call) {
            m.state = CallState::Busy;
            result(2, "busy in another call", &m.name)
        } else {
            m.state = CallState::Calling;
            result(0, "", &m.name)
        };
        (m, r)
    }

    pub(super) async fn request_mic(
        &mut self,
        to_ids: Option<Vec<u64>>,
        transaction: Option<Transaction>,
        session_id: Option<u64>,
    ) {
        self.mic_asked = Some(Instant::now());
        let login = match self.up_login() {
            Ok(l) => l,
            Err(e) => {
                return self.reply_error(
                    Some("requestMic"),
                    "not_logged_in",
                    format!("requestMic: {e}"),
                    0,
                );
            }
        };
        if let Some(sid) = session_id {
            if self.call.as_ref().is_some_and(|c| c.id == sid) {
                return self.floor_request(transaction);
            }
            return self.reply_error(
                Some("requestMic"),
                "unknown_session",
                format!("requestMic: unknown sessionId {sid}"),
                sid,
            );
        }
        if self.creating.is_some() {
            return self.reply_error(
                Some("requestMic"),
                "call_in_setup",
                "requestMic: a call is being set up; wait for createGroup".into(),
                0,
            );
        }
        if self.call.is_some() {
            // "如果当前存在会话，则只请求话语权": with a call up, only the floor is asked for.
            return self.floor_request(transaction);
        }
        let ids = to_ids.unwrap_or_default();
        if ids.is_empty() {
            return self.reply_error(
                Some("requestMic"),
                "missing_field",
                "requestMic: toIds is required to start a call (or give the sessionId of a call)"
                    .into(),
                0,
            );
        }
        let call_id = new_call_id();
        let mut members: Vec<Member> = Vec::new();
        let mut refused = Vec::new();
        for id in ids {
            if members.iter().any(|m| m.id == id) {
                continue;
            }
            let (m, r) = self.resolve(login, id, call_id);
            if r.code == 3 {
                continue;
            }
            if r.code != 0 {
                refused.push(format!("{id} {}", r.message));
            }
            members.push(m);
        }
        let server = login.server.clone();
        if !members.iter().any(|m| m.state == CallState::Calling) {
            for m in &members {
                if m.state == CallState::Calling {
                    self.busy_release(&server.ptt.id, m.id);
                }
            }
            return self.reply_error(
                Some("createGroup"),
                "nobody_reachable",
                format!(
                    "createGroup: no terminal can be called: {}",
                    refused.join(", ")
                ),
                0,
            );
        }
        let snap = login.client.snapshot();
        let home_path = snap
            .own_channel
            .and_then(|c| snap.channel_path(c))
            .unwrap_or_default();
        let parent = find_channel(&snap, &server.call_parent);
        let Some(parent) = parent else {
            for m in &members {
                self.busy_release(&server.ptt.id, m.id);
            }
            return self.reply_error(
                Some("createGroup"),
                "config",
                format!(
                    "createGroup: the call parent channel {:?} does not exist on the PTT server",
                    server.call_parent
                ),
                0,
            );
        };
        let name = format!("{CALL_CHANNEL_PREFIX}{call_id}");
        let msg = proto::ChannelState {
            parent: Some(parent),
            name: Some(name.clone()),
            temporary: Some(true),
            ..Default::default()
        };
        if !login.command(Command::Send(Box::new(msg.into()))) {
            return self.reply_error(
                Some("createGroup"),
                "ptt_stopped",
                "createGroup: the PTT session stopped".into(),
                0,
            );
        }
        debug!(call = call_id, name = %esc(&name), "creating the call channel");
        self.creating = Some(Creating {
            call_id,
            name,
            members,
            transaction,
            home_path,
            deadline: Instant::now() + self.side.0.config.move_timeout(),
        });
    }

    pub(super) fn abandon_creation(&mut self) {
        if let Some(c) = self.creating.take()
            && let Some(l) = &self.login
        {
            let server = l.server.ptt.id.clone();
            for m in &c.members {
                self.busy_release(&server, m.id);
            }
        }
    }

    /// The call being set up cannot be: its `createGroup` reply says why, with the
    /// `transaction` of the `requestMic` that asked for it and the call id it would have had.
    pub(super) fn refuse_creation(&mut self, kind: &'static str, message: String) {
        let Some(c) = self.creating.as_ref() else {
            return;
        };
        let echo = Echo {
            transaction: c.transaction.clone(),
            session_id: Some(c.call_id),
        };
        self.abandon_creation();
        self.echo = echo;
        self.reply_error(Some("createGroup"), kind, message, 0);
        self.echo = Echo::default();
    }

    pub(super) fn release_mic(&mut self, session_id: Option<u64>) {
        self.mic_asked = None;
        let Some(call) = self.call.as_ref() else {
            return self.reply_error(
                Some("releaseMic"),
                "no_call",
                "releaseMic: there is no call".into(),
                0,
            );
        };
        if let Some(sid) = session_id
            && sid != call.id
        {
            return self.reply_error(
                Some("releaseMic"),
                "unknown_session",
                format!("releaseMic: unknown sessionId {sid}"),
                sid,
            );
        }
        if !self.console_holds() {
            return self.reply_error(
                Some("releaseMic"),
                "mic_not_open",
                "releaseMic: the mic is not open".into(),
                call.id,
            );
        }
        self.console_released_floor();
        self.reply("releaseMic", 1, "麦克风关闭成功");
    }

    pub(super) fn check_call(&mut self, cmd: &str, session_id: u64) -> bool {
        if let Err(e) = self.up_login() {
            self.reply_error(
                Some(cmd),
                "not_logged_in",
                format!("{cmd}: {e}"),
                session_id,
            );
            return false;
        }
        if self.call.as_ref().is_none_or(|c| c.id != session_id) {
            self.reply_error(
                Some(cmd),
                "unknown_session",
                format!("{cmd}: unknown sessionId {session_id}"),
                session_id,
            );
            return false;
        }
        true
    }

    pub(super) fn add_members(
        &mut self,
        session_id: u64,
        ids: Vec<u64>,
        transaction: Option<Transaction>,
    ) {
        if !self.check_call("addGroupMember", session_id) {
            return;
        }
        let results = self.add_to_call(session_id, &ids);
        let call = self.call.as_ref().expect("checked");
        let update = Notify::member_update(call.id, call.owner.0, call.member_list());
        self.send_json(&MemberResp::new(
            "addGroupMember",
            session_id,
            Some(member_transaction(transaction.as_ref(), session_id)),
            results,
        ));
        self.notify(update);
    }

    /// Brings terminals `ids` into the call (checked: it is up and ours, the login is up);
    /// the per-member results of `addGroupMember`.
    pub(super) fn add_to_call(&mut self, session_id: u64, ids: &[u64]) -> Vec<MemberResult> {
        let login = self.login.as_ref().expect("checked");
        let mut results = Vec::new();
        let mut new = Vec::new();
        for &id in ids {
            let call = self.call.as_ref().expect("checked");
            if let Some(i) = call.member(id)
                && Call::active(&call.members[i])
            {
                results.push(MemberResult {
                    id,
                    name: call.members[i].name.clone(),
                    code: 0,
                    message: "already in the call".into(),
                });
                continue;
            }
            let (m, r) = self.resolve(login, id, session_id);
            let own = r.code == 3;
            results.push(r);
            if !own {
                new.push(m);
            }
        }
        let admin = login.server.admin.clone();
        let call = self.call.as_mut().expect("checked");
        for m in new {
            if m.state == CallState::Calling
                && let Some(session) = m.session
                && let Err(e) = admin.submit(
                    Action::Move {
                        session,
                        channel: call.channel,
                    },
                    m.id,
                    Some(self.outcome_tx.clone()),
                )
            {
                warn!(member = m.id, e = %esc(e.to_string()), "cannot ask for a move");
            }
            match call.member(m.id) {
                Some(i) => call.members[i] = m,
                None => call.members.push(m),
            }
        }
        results
    }

    pub(super) fn kick_members(
        &mut self,
        session_id: u64,
        ids: Vec<u64>,
        transaction: Option<Transaction>,
    ) {
        if !self.check_call("kickGroupMember", session_id) {
            return;
        }
        let mut results = Vec::new();
        for id in ids {
            let call = self.call.as_ref().expect("checked");
            match call.member(id) {
                Some(i) if Call::active(&call.members[i]) => {
                    let name = call.members[i].name.clone();
                    self.remove_member(i, true);
                    results.push(MemberResult {
                        id,
                        name,
                        code: 0,
                        message: String::new(),
                    });
                }
                _ => results.push(MemberResult {
                    id,
                    name: String::new(),
                    code: 1,
                    message: "not in this call".into(),
                }),
            }
        }
        let call = self.call.as_ref().expect("checked");
        let update = Notify::member_update(call.id, call.owner.0, call.member_list());
        self.send_json(&MemberResp::new(
            "kickGroupMember",
            session_id,
            Some(member_transaction(transaction.as_ref(), session_id)),
            results,
        ));
        self.notify(update);
    }

    pub(super) async fn hangup(&mut self, session_id: u64) {
        if !self.check_call("tempCallHangup", session_id) {
            return;
        }
        self.end_call(reason::ALL_LEFT, "the console hung up", 0, false);
        self.send_json(&HangupResp::new(session_id, 0, ""));
    }
}
