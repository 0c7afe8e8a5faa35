//! The state of one EGW connection, without IO: feed it client frames, it says what to do.
//!
//! Login is checked by a caller-supplied function (the gateway knows developers and apps);
//! subscriptions and full-sync app lists are limited to what the login grants.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::ids;
use crate::message::{AppFilter, ErrorCode, Reply, Request, RequestError, parse_request};

/// What a login may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Every app.
    AllApps,
    /// Only these apps.
    Apps(BTreeSet<String>),
}

impl Grant {
    /// Whether this grant covers `app`.
    pub fn allows(&self, app: &str) -> bool {
        match self {
            Self::AllApps => true,
            Self::Apps(apps) => apps.contains(app),
        }
    }
}

/// Which apps' events a connection receives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Subscription {
    /// None (initial state, and after unsubscribing from everything).
    #[default]
    Nothing,
    /// Every app the login may see.
    All,
    /// These apps.
    Apps(BTreeSet<String>),
    /// Every app the login may see except these (after unsubscribing some from "all").
    AllExcept(BTreeSet<String>),
}

/// What the connection should do after a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this reply.
    Reply(Reply),
    /// Send a full sync (one 20009 per app) of these apps and groups; `apps: None` means every
    /// app the login may see. Echo `seq`.
    FullSync {
        /// Apps and optional group filters.
        apps: Option<Vec<AppFilter>>,
        /// Echo.
        seq: Option<Value>,
    },
    /// Push this notice (its app allowed to the login) and answer 20014 when done.
    Notice(crate::Notice),
}

/// One connection's protocol state.
#[derive(Debug, Clone, Default)]
pub struct Session {
    grant: Option<Grant>,
    subscription: Subscription,
}

impl Session {
    /// A connection that has not logged in.
    pub fn new() -> Self {
        Self::default()
    }

    /// The login's grant, once logged in.
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.as_ref()
    }

    /// The current subscription.
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }

    /// Whether events of `app` go to this connection.
    pub fn wants(&self, app: &str) -> bool {
        let Some(grant) = &self.grant else {
            return false;
        };
        match &self.subscription {
            Subscription::Nothing => false,
            Subscription::All => grant.allows(app),
            Subscription::Apps(apps) => apps.contains(app),
            Subscription::AllExcept(not) => grant.allows(app) && !not.contains(app),
        }
    }

    /// Handles one text frame. `authenticate(dev_id, token)` decides logins. Errors come back
    /// as an error [`Action::Reply`]; `Err` carries the parse failure too, for counting.
    pub fn handle(
        &mut self,
        text: &str,
        authenticate: impl FnOnce(&str, &str) -> Option<Grant>,
    ) -> Result<Action, RequestError> {
        let request = parse_request(text)?;
        self.handle_request(request, authenticate)
    }

    /// Handles a parsed request.
    pub fn handle_request(
        &mut self,
        request: Request,
        authenticate: impl FnOnce(&str, &str) -> Option<Grant>,
    ) -> Result<Action, RequestError> {
        let reply_id = request.reply_id();
        let fail = |code, message: String| RequestError {
            reply_id,
            code,
            message,
        };
        if let Request::Login { dev_id, token } = &request {
            return match authenticate(dev_id, token) {
                Some(grant) => {
                    self.grant = Some(grant);
                    self.subscription = Subscription::Nothing;
                    Ok(Action::Reply(Reply::ok(reply_id, "login successful")))
                }
                None => Err(fail(
                    ErrorCode::AuthFailed,
                    "login failed: unknown dev_id or wrong token".into(),
                )),
            };
        }
        if let Request::Heartbeat { seq } = request {
            // Heartbeats keep any connection alive, logged in or not.
            let mut reply = Reply::ok(ids::HEARTBEAT_REPLY, "heartbeat successful");
            reply.seq = seq;
            return Ok(Action::Reply(reply));
        }
        let Some(grant) = self.grant.clone() else {
            return Err(fail(
                ErrorCode::NotLoggedIn,
                format!("{} before login", request.name()),
            ));
        };
        let check = |apps: &[String]| -> Result<(), RequestError> {
            match apps.iter().find(|a| !grant.allows(a)) {
                Some(a) => Err(fail(
                    ErrorCode::AppNotAllowed,
                    format!("app {a:?} is not available to this login"),
                )),
                None => Ok(()),
            }
        };
        match request {
            Request::Logout => {
                self.grant = None;
                self.subscription = Subscription::Nothing;
                Ok(Action::Reply(Reply::ok(reply_id, "logout successful")))
            }
            Request::Subscribe { apps } => {
                match apps {
                    None => self.subscription = Subscription::All,
                    Some(apps) => {
                        check(&apps)?;
                        match &mut self.subscription {
                            Subscription::All => {}
                            Subscription::Apps(set) => set.extend(apps),
                            Subscription::AllExcept(not) => {
                                for a in &apps {
                                    not.remove(a);
                                }
                            }
                            s @ Subscription::Nothing => {
                                *s = Subscription::Apps(apps.into_iter().collect())
                            }
                        }
                    }
                }
                Ok(Action::Reply(Reply::ok(reply_id, "subscribe successful")))
            }
            Request::Unsubscribe { apps } => {
                match apps {
                    None => self.subscription = Subscription::Nothing,
                    Some(apps) => match &mut self.subscription {
                        Subscription::Apps(set) => {
                            for a in &apps {
                                set.remove(a);
                            }
                        }
                        Subscription::All => {
                            self.subscription = Subscription::AllExcept(apps.into_iter().collect())
                        }
                        Subscription::AllExcept(not) => not.extend(apps),
                        Subscription::Nothing => {}
                    },
                }
                Ok(Action::Reply(Reply::ok(reply_id, "unsubscribe successful")))
            }
            Request::FullSync { apps, seq } => {
                if let Some(apps) = &apps {
                    let ids: Vec<String> = apps.iter().map(|a| a.app_id.clone()).collect();
                    check(&ids)?;
                }
                Ok(Action::FullSync { apps, seq })
            }
            Request::Notice(n) => {
                check(std::slice::from_ref(&n.app_id))?;
                Ok(Action::Notice(n))
            }
            Request::Login { .. } | Request::Heartbeat { .. } => unreachable!("handled above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(app: &str) -> Option<Grant> {
        Some(Grant::Apps([app.to_string()].into()))
    }

    const LOGIN: &str = r#"{"business":"EGW","dev_id":"d","token":"t","id":20000}"#;

    #[test]
    fn subscribe_before_login_is_refused() {
        let mut s = Session::new();
        let e = s
            .handle(r#"{"business":"EGW","id":20004}"#, |_, _| None)
            .unwrap_err();
        assert_eq!((e.reply_id, e.code), (20005, ErrorCode::NotLoggedIn));
        assert!(!s.wants("a"));
    }

    #[test]
    fn login_subscribe_unsubscribe() {
        let mut s = Session::new();
        let e = s.handle(LOGIN, |_, _| None).unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthFailed);
        assert!(
            matches!(s.handle(LOGIN, |d, t| (d == "d" && t == "t").then_some(Grant::AllApps)), Ok(Action::Reply(r)) if r.result == 0)
        );
        assert!(!s.wants("a"), "nothing until subscribed");
        s.handle(r#"{"business":"EGW","id":20004}"#, |_, _| None)
            .unwrap();
        assert!(s.wants("a") && s.wants("b"));
        s.handle(
            r#"{"business":"EGW","id":20006,"app_list":[{"app_id":"a"}]}"#,
            |_, _| None,
        )
        .unwrap();
        assert!(!s.wants("a") && s.wants("b"), "all but a");
        s.handle(
            r#"{"business":"EGW","id":20004,"app_list":[{"app_id":"a"}]}"#,
            |_, _| None,
        )
        .unwrap();
        assert!(s.wants("a") && s.wants("b"), "all again");
        s.handle(r#"{"business":"EGW","id":20006}"#, |_, _| None)
            .unwrap();
        assert!(!s.wants("a"));
        s.handle(
            r#"{"business":"EGW","id":20004,"app_list":[{"app_id":"a"},{"app_id":"b"}]}"#,
            |_, _| None,
        )
        .unwrap();
        s.handle(
            r#"{"business":"EGW","id":20006,"app_list":[{"app_id":"b"}]}"#,
            |_, _| None,
        )
        .unwrap();
        assert!(s.wants("a") && !s.wants("b"));
        s.handle(r#"{"business":"EGW","id":20002}"#, |_, _| None)
            .unwrap();
        assert!(!s.wants("a"));
    }

    #[test]
    fn a_login_only_sees_its_apps() {
        let mut s = Session::new();
        s.handle(LOGIN, |_, _| only("a")).unwrap();
        let e = s
            .handle(
                r#"{"business":"EGW","id":20004,"app_list":[{"app_id":"b"}]}"#,
                |_, _| None,
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AppNotAllowed);
        s.handle(r#"{"business":"EGW","id":20004}"#, |_, _| None)
            .unwrap();
        assert!(s.wants("a") && !s.wants("b"), "all = all it may see");
        let e = s
            .handle(
                r#"{"business":"EGW","id":20008,"app_list":[{"app_id":"b"}]}"#,
                |_, _| None,
            )
            .unwrap_err();
        assert_eq!((e.reply_id, e.code), (20009, ErrorCode::AppNotAllowed));
    }
}
