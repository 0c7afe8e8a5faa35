//! Auth (spec 6.1, 6.2): `GET /app/getSign` hands an app a signature for its `appId` + `secret`;
//! `POST /app/account` `method=dockingLogin` logs a third-party account in with that signature
//! and returns a `SID` plus the user. The `SID` is what `call.doRegister` presents.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Json;
use rtcpeer::bean::{Company, User};
use rtcpeer::id::Id;
use rtcpeer::reply::{DockingLogin, GetSign};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::AppCredentials;
use crate::auth::{FailureLimiter, Signer};
use crate::storage::{RecordOp, Store, StoreError};

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

/// Sessions and the (app, account) → user id map. Signs are issued and redeemed by the
/// [`Signer`]; a redeemed sign names the app whose account namespace the login is in.
#[derive(Debug)]
pub struct AccountBook {
    /// SID → session and when it expires.
    sessions: HashMap<String, (Session, Instant)>,
    /// (app id, account) → user id (stable for the bridge's lifetime).
    ids: HashMap<(String, String), Id>,
    next_id: Id,
    /// How long a SID is good for.
    session_ttl: Duration,
    /// The latest display name of each user id that logged in since the start.
    names: HashMap<Id, String>,
    /// Where ids given out are remembered (a standing room's owner is the same user after
    /// a restart).
    store: Option<Store>,
    /// A cluster node: a new account's id is derived from its app and account (the same on
    /// every node) rather than the next number (each node's own).
    derived: bool,
}

impl Default for AccountBook {
    fn default() -> Self {
        Self {
            sessions: HashMap::new(),
            ids: HashMap::new(),
            next_id: FIRST_USER_ID,
            session_ttl: SESSION_TTL,
            names: HashMap::new(),
            store: None,
            derived: false,
        }
    }
}

/// Derived ids (cluster nodes) are drawn from this range: clear of the small numbers dial-ins
/// usually have and of the sequential ids a single bridge gives out.
const DERIVED_IDS: std::ops::Range<Id> = 10_000_000..99_999_999;

/// The id every cluster node gives `account` of `app` first (FNV-1a of both, into
/// [`DERIVED_IDS`]); a collision takes the next free one, which only that node knows.
fn derived_id(app: &str, account: &str) -> Id {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in app.bytes().chain([0]).chain(account.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let span = (DERIVED_IDS.end - DERIVED_IDS.start) as u64;
    DERIVED_IDS.start + (h % span) as Id
}

/// First user id handed out; dial-in ids are skipped.
const FIRST_USER_ID: Id = 1001;
/// How long a SID is good for when not logged out.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; the one closest to expiry goes first.
const MAX_SESSIONS: usize = 100_000;
/// Most accounts given an id (per bridge lifetime).
const MAX_ACCOUNTS: usize = 1_000_000;

impl AccountBook {
    /// Takes the ids given out before (at earlier starts) from `store` and remembers new ones
    /// there from now on.
    pub fn remember_in(&mut self, store: Store) -> Result<(), crate::storage::StoreError> {
        for (app, account, id) in store.meeting_accounts()? {
            self.next_id = self.next_id.max(id + 1);
            self.ids.insert((app, account), id);
        }
        self.store = Some(store);
        Ok(())
    }

    /// The app and account user `id` is here.
    pub fn account_of(&self, id: Id) -> Option<(String, String)> {
        self.ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.clone())
    }

    /// Gives new accounts ids derived from their app and account, the same on every cluster
    /// node (ids given before stay).
    pub fn derive_ids(&mut self) {
        self.derived = true;
    }

    /// Takes user id `id` that another cluster node gave `account` of app `app_id` (its
    /// connection is relayed here, or it is called from here): the same account must have the
    /// same id here, and no other account (nor a dial-in: `taken`) may have it, or the request
    /// is refused (two users would be one to the rooms). An id this node has not given out is
    /// the account's here from now on.
    pub fn adopt(
        &mut self,
        app_id: &str,
        account: &str,
        id: Id,
        taken: impl Fn(Id) -> bool,
    ) -> Result<(), String> {
        let key = (app_id.to_owned(), account.to_owned());
        match self.ids.get(&key) {
            Some(mine) if *mine == id => return Ok(()),
            Some(mine) => {
                return Err(format!(
                    "the account is user {mine} on this node, not {id}: user ids are per node until they are shared"
                ));
            }
            None if taken(id) || self.ids.values().any(|v| *v == id) => {
                return Err(format!("user id {id} is another account's on this node"));
            }
            None if self.ids.len() >= MAX_ACCOUNTS => {
                return Err("too many accounts on this node".into());
            }
            None => {}
        }
        if !self.derived {
            self.next_id = self.next_id.max(id + 1);
        }
        self.remember(app_id, account, id);
        self.ids.insert(key, id);
        Ok(())
    }

    /// Keeps a new account's id in the store, if there is one. A cluster node sends it
    /// through the shared records without waiting (a login does not wait on NATS): the id
    /// works here at once, and the other nodes learn it ([`learn`](Self::learn)).
    fn remember(&self, app_id: &str, account: &str, id: Id) {
        let Some(store) = &self.store else {
            return;
        };
        let op = RecordOp::AddMeetingAccount {
            app_id: app_id.to_owned(),
            account: account.to_owned(),
            user_id: id,
        };
        // The id still works now; only after a restart (or on another node) may it differ.
        let failed = |e: StoreError| {
            tracing::warn!(error = %e, "cannot store a meeting account's user id");
        };
        if !store.replicated() {
            let _ = store.apply(&op).map_err(failed);
        } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = store.clone();
            rt.spawn(async move {
                let _ = store.write(op).await.map_err(failed);
            });
        }
    }

    /// The user id another cluster node gave `account` of `app_id` (a shared record applied
    /// here): the account has it here too unless this node gave the account, or the id,
    /// already, or the id is reserved here (`taken`: a dial-in) — two nodes resolved a
    /// collision of derived ids differently; logged.
    pub fn learn(&mut self, app_id: &str, account: &str, id: Id, taken: impl Fn(Id) -> bool) {
        let key = (app_id.to_owned(), account.to_owned());
        match self.ids.get(&key) {
            Some(mine) if *mine == id => {}
            Some(mine) => {
                tracing::warn!(
                    mine,
                    shared = id,
                    "a meeting account has another user id on this node"
                );
            }
            None if taken(id)
                || self.ids.values().any(|v| *v == id)
                || self.ids.len() >= MAX_ACCOUNTS =>
            {
                tracing::warn!(id, "a shared meeting account's user id is another's here");
            }
            None => {
                if !self.derived {
                    self.next_id = self.next_id.max(id + 1);
                }
                self.ids.insert(key, id);
            }
        }
    }

    /// The live session of `sid`.
    pub fn session(&self, sid: &str) -> Option<&Session> {
        self.sessions
            .get(sid)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(s, _)| s)
    }

    /// The display name `id` last logged in with (since the start).
    pub fn name_of(&self, id: Id) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// Ends a session.
    pub fn logout(&mut self, sid: &str) -> bool {
        self.sessions.remove(sid).is_some()
    }

    /// Logs `account` of app `app_id` in (the app vouched for it with a sign); `taken` says
    /// which ids are reserved (dial-in users).
    pub fn login(
        &mut self,
        app_id: &str,
        account: &str,
        name: Option<String>,
        avatar: Option<String>,
        taken: impl Fn(Id) -> bool,
    ) -> Result<(String, Session), (i64, &'static str)> {
        if account.trim().is_empty() {
            return Err((4, "account is required"));
        }
        if account.len() > 128 {
            return Err((4, "account is longer than 128 bytes"));
        }
        let key = (app_id.to_owned(), account.to_owned());
        let id = match self.ids.get(&key) {
            Some(id) => *id,
            None if self.ids.len() >= MAX_ACCOUNTS => {
                return Err((5, "too many accounts on this bridge"));
            }
            None if self.derived => {
                // The same id as on every other node, unless it is someone else's here.
                let mut id = derived_id(app_id, account);
                while taken(id) || self.ids.values().any(|v| *v == id) {
                    id = if id + 1 >= DERIVED_IDS.end {
                        DERIVED_IDS.start
                    } else {
                        id + 1
                    };
                }
                self.remember(app_id, account, id);
                self.ids.insert(key, id);
                id
            }
            None => {
                while taken(self.next_id) {
                    self.next_id += 1;
                }
                let id = self.next_id;
                self.next_id += 1;
                self.remember(app_id, account, id);
                self.ids.insert(key, id);
                id
            }
        };
        let user = User {
            id: Some(id),
            account: Some(account.to_owned()),
            name: Some(
                name.filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| account.to_owned())
                    .chars()
                    .take(64)
                    .collect(),
            ),
            photo: avatar.filter(|a| a.len() <= 1024),
            ..User::default()
        };
        if let Some(n) = &user.name {
            self.names.insert(id, n.clone());
        }
        let now = Instant::now();
        if self.sessions.len() >= MAX_SESSIONS {
            self.sessions.retain(|_, (_, exp)| *exp > now);
            if self.sessions.len() >= MAX_SESSIONS
                && let Some(k) = self
                    .sessions
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(k, _)| k.clone())
            {
                self.sessions.remove(&k);
            }
        }
        let sid = crate::auth::secret::token();
        let session = Session {
            user,
            app_id: app_id.to_owned(),
        };
        self.sessions
            .insert(sid.clone(), (session.clone(), now + self.session_ttl));
        Ok((sid, session))
    }
}

/// What the login routes need: the apps that may sign, the signer, the sessions, and the user
/// ids reserved for dial-ins.
#[derive(Debug)]
pub struct AuthState {
    /// Signatures and sessions (shared with the switchboard, which checks SIDs).
    pub accounts: Arc<Accounts>,
    /// `[[meeting.apps]]`.
    pub apps: Vec<AppCredentials>,
    /// Platform apps (`/v1/app`, `[[business.apps]]`): they may sign too, while online.
    pub store: Option<Store>,
    /// Issues and redeems signs.
    pub signer: Signer,
    /// Wrong app secrets per address.
    pub failures: FailureLimiter<IpAddr>,
    /// Dial-in ids: never handed to a user.
    pub reserved: HashSet<Id>,
}

impl AuthState {
    /// Login state over `accounts` for the configured `apps` (and the store's).
    pub fn new(
        accounts: Arc<Accounts>,
        apps: Vec<AppCredentials>,
        store: Option<Store>,
        reserved: HashSet<Id>,
    ) -> Self {
        Self {
            accounts,
            apps,
            store,
            signer: Signer::new(SIGN_TTL),
            failures: FailureLimiter::new(10, Duration::from_secs(60), 4096),
            reserved,
        }
    }

    /// Whether `app_id` with `secret` may have signs: a configured meeting app, or a platform
    /// app that is online. Every candidate is checked, so timing does not tell which exists.
    pub fn app_may_sign(&self, app_id: &str, secret: &str) -> bool {
        let configured = self.apps.iter().fold(false, |ok, a| {
            (crate::auth::secret::same(&a.app_id, app_id)
                & crate::auth::secret::same(&a.secret, secret))
                | ok
        });
        let stored = self
            .store
            .as_ref()
            .and_then(|s| s.app(app_id).ok().flatten())
            .is_some_and(|a| {
                crate::auth::secret::verify(&a.app_secret, secret) && a.status == "online"
            });
        configured || stored
    }
}

/// How long a sign from getSign is good for.
const SIGN_TTL: Duration = Duration::from_secs(300);

/// `GET /app/getSign` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignQuery {
    app_id: Option<String>,
    secret: Option<String>,
}

/// `GET /app/getSign?appId=..&secret=..`: a sign for a known app that proved its secret.
pub async fn get_sign(
    State(auth): State<Arc<AuthState>>,
    crate::auth::web::PeerIp(addr): crate::auth::web::PeerIp,
    Query(q): Query<SignQuery>,
) -> Json<GetSign> {
    let (Some(app_id), Some(secret)) = (q.app_id, q.secret) else {
        return Json(GetSign {
            code: 400,
            data: None,
            message: "appId and secret are required".into(),
        });
    };
    let now = Instant::now();
    if let Some(a) = addr
        && let Some(wait) = auth.failures.check(&a, now)
    {
        metrics::counter!("pttbridge_auth_failures_total", "surface" => "rtcpeer", "reason" => "throttled").increment(1);
        return Json(GetSign {
            code: 429,
            data: None,
            message: format!(
                "too many wrong app secrets from this address; try again in {} s",
                wait.as_secs().max(1)
            ),
        });
    }
    if !auth.app_may_sign(&app_id, &secret) {
        if let Some(a) = addr {
            auth.failures.failed(a, now);
        }
        metrics::counter!("pttbridge_meeting_errors_total", "kind" => "bad_app_secret")
            .increment(1);
        metrics::counter!("pttbridge_auth_failures_total", "surface" => "rtcpeer", "reason" => "app_secret").increment(1);
        return Json(GetSign {
            code: 401,
            data: None,
            message: "unknown appId or wrong secret".into(),
        });
    }
    Json(GetSign {
        code: 200,
        data: Some(auth.signer.issue(&app_id, SystemTime::now())),
        message: "OK".into(),
    })
}

/// The app namespace of accounts the web page logs in (the page holds no app secret).
pub const PAGE_APP: &str = "pttbridge-page";

/// `POST /api/meeting/login` (operators only): `{"account": .., "userName": ..}` → the same
/// answer as `dockingLogin`, for the web page's meeting client. The operator's own session is
/// what vouches for the account, as an app's sign does for its users.
pub async fn operator_login(
    State(auth): State<Arc<AuthState>>,
    body: String,
) -> Json<DockingLogin> {
    let fields: Map<String, Value> = serde_json::from_str(&body).unwrap_or_default();
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    let account = text("account").unwrap_or_default();
    let login = auth
        .accounts
        .lock()
        .login(PAGE_APP, &account, text("userName"), None, |id| {
            auth.reserved.contains(&id)
        });
    docking_answer(login)
}

/// `dockingLogin`'s answer to a login.
fn docking_answer(login: Result<(String, Session), (i64, &'static str)>) -> Json<DockingLogin> {
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
        Err((code, msg)) => {
            metrics::counter!("pttbridge_meeting_errors_total", "kind" => "login_failed")
                .increment(1);
            Json(DockingLogin {
                result: code,
                method: "dockingLogin".into(),
                module: "account".into(),
                sid: None,
                organisation: None,
                user: None,
                message: Some(msg.into()),
            })
        }
    }
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
    let app_id = match auth.signer.redeem(&sign, SystemTime::now()) {
        Ok(app) => app,
        Err(e) => {
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "rtcpeer", "reason" => "sign").increment(1);
            return fail(2, &e.to_string());
        }
    };
    let account = text("account").unwrap_or_default();
    let login =
        auth.accounts
            .lock()
            .login(&app_id, &account, text("userName"), text("avatar"), |id| {
                auth.reserved.contains(&id)
            });
    docking_answer(login)
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
    fn ids_are_stable_per_app_and_account_and_sessions_end() {
        let mut a = AccountBook::default();
        let (sid, first) = a
            .login("app", "alice", None, None, |id| id == FIRST_USER_ID)
            .unwrap();
        assert_eq!(
            first.user.id,
            Some(FIRST_USER_ID + 1),
            "reserved ids are skipped"
        );
        let (_, again) = a.login("app", "alice", None, None, |_| false).unwrap();
        assert_eq!(again.user.id, first.user.id);
        let (_, other) = a
            .login("other-app", "alice", None, None, |_| false)
            .unwrap();
        assert_ne!(
            other.user.id, first.user.id,
            "another app's alice is someone else"
        );
        assert!(a.session(&sid).is_some());
        assert!(a.logout(&sid));
        assert!(a.session(&sid).is_none());
        assert_eq!(a.login("app", " ", None, None, |_| false).unwrap_err().0, 4);
        a.session_ttl = Duration::ZERO;
        let (expired, _) = a.login("app", "bob", None, None, |_| false).unwrap();
        assert!(a.session(&expired).is_none(), "expired");
    }

    #[test]
    fn a_relayed_user_keeps_its_id_only_where_it_is_nobody_elses() {
        let mut b = AccountBook::default();
        let (_, dave) = b.login("app", "dave", None, None, |_| false).unwrap();
        let dave = dave.user.id.unwrap();
        // carol got an id on another node that is dave's (or a dial-in's) here: refused.
        assert!(b.adopt("app", "carol", dave, |_| false).is_err());
        assert!(b.adopt("app", "carol", 9001, |id| id == 9001).is_err());
        // An id not given out here is hers here from now on: a later login here gets it
        // too, and the next account another one.
        b.adopt("app", "carol", dave + 5, |_| false).unwrap();
        assert!(b.adopt("app", "carol", dave + 5, |_| false).is_ok());
        let (_, carol) = b.login("app", "carol", None, None, |_| false).unwrap();
        assert_eq!(carol.user.id, Some(dave + 5));
        assert_eq!(b.account_of(dave + 5), Some(("app".into(), "carol".into())));
        let (_, erin) = b.login("app", "erin", None, None, |_| false).unwrap();
        assert_eq!(erin.user.id, Some(dave + 6));
        assert!(
            b.adopt("app", "carol", dave + 9, |_| false).is_err(),
            "one id per account"
        );
    }

    #[test]
    fn cluster_nodes_give_an_account_the_same_id() {
        let (mut a, mut b) = (AccountBook::default(), AccountBook::default());
        a.derive_ids();
        b.derive_ids();
        // Different orders of logins on two nodes: the same ids.
        let id = |book: &mut AccountBook, acc: &str| {
            book.login("app", acc, None, None, |_| false)
                .unwrap()
                .1
                .user
                .id
                .unwrap()
        };
        let (carol_a, dave_a) = (id(&mut a, "carol"), id(&mut a, "dave"));
        let (dave_b, carol_b) = (id(&mut b, "dave"), id(&mut b, "carol"));
        assert_eq!((carol_a, dave_a), (carol_b, dave_b));
        assert_ne!(carol_a, dave_a);
        assert!(DERIVED_IDS.contains(&carol_a));
        assert_ne!(
            derived_id("app", "carol"),
            derived_id("other", "carol"),
            "another app's carol is someone else"
        );
        // A collision here (a dial-in holds the id) takes the next free one.
        let mut c = AccountBook::default();
        c.derive_ids();
        let want = derived_id("app", "carol");
        let (_, got) = c.login("app", "carol", None, None, |i| i == want).unwrap();
        assert_eq!(got.user.id, Some(want + 1));
    }

    /// The collision one node resolved (a dial-in held carol's derived id there) is the
    /// same on a node that learned the shared row first; a node that gave the id already
    /// keeps its own.
    #[test]
    fn a_learned_account_id_is_used_where_it_is_nobody_elses() {
        let want = derived_id("app", "carol");
        let mut b = AccountBook::default();
        b.derive_ids();
        b.learn("app", "carol", want + 1, |_| false);
        let (_, carol) = b.login("app", "carol", None, None, |_| false).unwrap();
        assert_eq!(
            carol.user.id,
            Some(want + 1),
            "the id node A gave, not the derived one"
        );
        // dave's id here is not another account's, whatever a node said.
        let (_, dave) = b.login("app", "dave", None, None, |_| false).unwrap();
        let dave = dave.user.id.unwrap();
        b.learn("app", "erin", dave, |_| false);
        b.learn("app", "erin", 9001, |id| id == 9001);
        assert_eq!(
            b.account_of(9001),
            None,
            "a dial-in's id is nobody's account"
        );
        assert_eq!(b.account_of(dave), Some(("app".into(), "dave".into())));
        b.learn("app", "carol", want, |_| false);
        let (_, carol) = b.login("app", "carol", None, None, |_| false).unwrap();
        assert_eq!(carol.user.id, Some(want + 1), "one id per account");
    }

    #[test]
    fn signs_need_a_known_app_and_its_secret() {
        let auth = AuthState::new(
            Arc::default(),
            vec![AppCredentials {
                app_id: "web".into(),
                secret: "web-secret".into(),
            }],
            None,
            HashSet::new(),
        );
        assert!(auth.app_may_sign("web", "web-secret"));
        assert!(!auth.app_may_sign("web", "wrong"));
        assert!(!auth.app_may_sign("nope", "web-secret"));
    }
}
