//! Auth (spec 6.1, 6.2): `GET /app/getSign` hands an app a signature for its `appId` + `secret`;
//! `POST /app/account` `method=dockingLogin` logs a third-party account in with that signature
//! and returns a `SID` plus the user. The `SID` is what `call.doRegister` presents.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Json;
use rtcpeer::bean::{Company, User};
use rtcpeer::id::Id;
use rtcpeer::reply::{DockingLogin, GetSign};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::AppCredentials;

/// A logged-in session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: User,
    /// App that signed the login.
    pub app_id: String,
}

/// Signatures issued and sessions opened, behind their own lock (never held across an await).
#[derive(Debug, Default)]
pub struct Accounts {
    inner: Mutex<AccountBook>,
}

impl Accounts {
    /// The book, locked.
    pub fn lock(&self) -> MutexGuard<'_, AccountBook> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Signatures, sessions and the account → user id map.
#[derive(Debug, Default)]
pub struct AccountBook {
    /// Signature → app id.
    signs: HashMap<String, String>,
    /// SID → session.
    sessions: HashMap<String, Session>,
    /// Account name → user id (stable for the bridge's lifetime).
    ids: HashMap<String, Id>,
    next_id: Id,
}

/// First user id handed out; dial-in ids are skipped.
const FIRST_USER_ID: Id = 1001;

fn token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..16)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

impl AccountBook {
    /// Issues a signature for `app_id`.
    pub fn sign(&mut self, app_id: &str) -> String {
        let s = token();
        self.signs.insert(s.clone(), app_id.to_owned());
        s
    }

    /// The session of `sid`.
    pub fn session(&self, sid: &str) -> Option<&Session> {
        self.sessions.get(sid)
    }

    /// Ends a session.
    pub fn logout(&mut self, sid: &str) -> bool {
        self.sessions.remove(sid).is_some()
    }

    /// Logs `account` in; `taken` says which ids are reserved (dial-in users).
    pub fn login(
        &mut self,
        sign: &str,
        account: &str,
        name: Option<String>,
        avatar: Option<String>,
        taken: impl Fn(Id) -> bool,
    ) -> Result<(String, Session), (i64, &'static str)> {
        let Some(app_id) = self.signs.get(sign).cloned() else {
            return Err((2, "unknown sign: get one from /app/getSign"));
        };
        if account.trim().is_empty() {
            return Err((4, "account is required"));
        }
        if self.next_id == 0 {
            self.next_id = FIRST_USER_ID;
        }
        let id = match self.ids.get(account) {
            Some(id) => *id,
            None => {
                while taken(self.next_id) {
                    self.next_id += 1;
                }
                let id = self.next_id;
                self.next_id += 1;
                self.ids.insert(account.to_owned(), id);
                id
            }
        };
        let user = User {
            id: Some(id),
            account: Some(account.to_owned()),
            name: Some(name.unwrap_or_else(|| account.to_owned())),
            photo: avatar,
            ..User::default()
        };
        let sid = token();
        let session = Session { user, app_id };
        self.sessions.insert(sid.clone(), session.clone());
        Ok((sid, session))
    }
}

/// What the login routes need: the signatures and sessions, the apps that may sign, and the
/// user ids reserved for dial-ins.
#[derive(Debug)]
pub struct AuthState {
    /// Signatures and sessions (shared with the switchboard, which checks SIDs).
    pub accounts: Arc<Accounts>,
    /// `[[meeting.apps]]`.
    pub apps: Vec<AppCredentials>,
    /// Dial-in ids: never handed to a user.
    pub reserved: HashSet<Id>,
}

/// `GET /app/getSign` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignQuery {
    app_id: Option<String>,
    secret: Option<String>,
}

/// `GET /app/getSign?appId=..&secret=..`.
pub async fn get_sign(
    State(auth): State<Arc<AuthState>>,
    Query(q): Query<SignQuery>,
) -> Json<GetSign> {
    let (Some(app_id), Some(secret)) = (q.app_id, q.secret) else {
        return Json(GetSign {
            code: 400,
            data: None,
            message: "appId and secret are required".into(),
        });
    };
    let apps = &auth.apps;
    // No apps configured: an open embedded deployment, any app may sign.
    let known = apps.is_empty()
        || apps
            .iter()
            .any(|a| a.app_id == app_id && a.secret == secret);
    if !known {
        metrics::counter!("pttbridge_meeting_errors_total", "kind" => "bad_app_secret")
            .increment(1);
        return Json(GetSign {
            code: 401,
            data: None,
            message: "unknown appId or wrong secret".into(),
        });
    }
    let sign = auth.accounts.lock().sign(&app_id);
    Json(GetSign {
        code: 200,
        data: Some(sign),
        message: "OK".into(),
    })
}

/// `POST /app/account`: form fields (or one `params` field holding them as JSON, as in the
/// spec's 6.2.2.4 example; a JSON body works too).
pub async fn account(
    State(auth): State<Arc<AuthState>>,
    headers: HeaderMap,
    body: String,
) -> Json<DockingLogin> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut fields: Map<String, Value> = if is_json {
        serde_json::from_str(&body).unwrap_or_default()
    } else {
        form_fields(&body)
    };
    if let Some(Value::String(p)) = fields.remove("params")
        && let Ok(Value::Object(inner)) = serde_json::from_str(&p)
    {
        fields.extend(inner);
    }
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    let fail = |result: i64, message: &str| {
        metrics::counter!("pttbridge_meeting_errors_total", "kind" => "login_failed").increment(1);
        Json(DockingLogin {
            result,
            method: "dockingLogin".into(),
            module: "account".into(),
            sid: None,
            organisation: None,
            user: None,
            message: Some(message.into()),
        })
    };
    if text("method").as_deref() != Some("dockingLogin") {
        return fail(4, "method must be dockingLogin");
    }
    let Some(sign) = text("sign") else {
        return fail(2, "sign is required");
    };
    let account = text("account").unwrap_or_default();
    let login =
        auth.accounts
            .lock()
            .login(&sign, &account, text("userName"), text("avatar"), |id| {
                auth.reserved.contains(&id)
            });
    match login {
        Ok((sid, session)) => Json(DockingLogin {
            result: 0,
            method: "dockingLogin".into(),
            module: "account".into(),
            sid: Some(sid),
            organisation: Some(Company {
                id: Some(2),
                name: Some(session.app_id.clone()),
                ..Company::default()
            }),
            user: Some(session.user),
            message: None,
        }),
        Err((code, msg)) => fail(code, msg),
    }
}

fn form_fields(body: &str) -> Map<String, Value> {
    form_pairs(body)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// `application/x-www-form-urlencoded` → pairs (`+` is a space, `%XX` escapes).
fn form_pairs(body: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let f =
            form_fields("method=dockingLogin&account=a%20b&userName=%E5%90%8D+x&bad=%zz&end=%4");
        assert_eq!(f["account"], "a b");
        assert_eq!(f["userName"], "名 x");
        assert_eq!(f["bad"], "%zz");
        assert_eq!(f["end"], "%4");
    }

    #[test]
    fn login_needs_an_issued_sign_and_keeps_ids_stable() {
        let mut a = AccountBook::default();
        assert_eq!(
            a.login("nope", "x", None, None, |_| false).unwrap_err().0,
            2
        );
        let s = a.sign("app");
        let (sid, first) = a
            .login(&s, "alice", None, None, |id| id == FIRST_USER_ID)
            .unwrap();
        assert_eq!(
            first.user.id,
            Some(FIRST_USER_ID + 1),
            "reserved ids are skipped"
        );
        let (_, again) = a.login(&s, "alice", None, None, |_| false).unwrap();
        assert_eq!(again.user.id, first.user.id);
        assert!(a.session(&sid).is_some());
        assert!(a.logout(&sid));
        assert!(a.session(&sid).is_none());
        assert_eq!(a.login(&s, " ", None, None, |_| false).unwrap_err().0, 4);
    }
}
