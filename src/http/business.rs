//! The business-gateway REST surface (`/v1/...`), JSON in and out, every response in the
//! `{code, message, ...}` envelope (`code` 0 = OK; otherwise see `egw::rest::codes`, with the
//! matching HTTP status).
//!
//! Authentication: every call about an app presents that app's secret in the
//! `X-App-Secret` header (the secret is returned once by `POST /v1/app` or
//! `POST /v1/app/secret`, or set in `[[business.apps]]`; the store keeps only its digest and
//! never lists it). An app that is `offline` cannot act. App management — creating apps,
//! listing all apps, records of all apps, rotating a secret — is the operators'
//! (`Authorization: Bearer <operator token>` or the page's session); operator credentials are
//! also accepted wherever an app secret is. An unknown app and a wrong secret get the same
//! answer, so app ids cannot be probed.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use egw::rest::{
    self, AppInfo, ConsumingRecord, CreateApp, Envelope, Invite, Kickout, PatchApp, ServiceInfo,
    TransCmd, TransResult, UserState, codes,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::AppState;
use crate::events::rfc3339;
use crate::events::state::parse_user_id;
use crate::hub::{CommandError, SideCommand};
use crate::storage::{AppRow, RecordOp, StoreError};

/// Header carrying an app's secret.
pub const SECRET_HEADER: &str = "x-app-secret";

/// Largest `page_size` of paged calls.
pub const MAX_PAGE_SIZE: u32 = 100;

/// The `/v1` routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/app",
            get(get_app)
                .post(create_app)
                .patch(patch_app)
                .delete(delete_app),
        )
        .route("/v1/app/secret", post(rotate_secret))
        .route("/v1/online/user/state", get(user_state))
        .route("/v1/kickout", post(kickout))
        .route("/v1/online/trans-cmd", post(trans_cmd))
        .route("/v1/online/invite", post(invite))
        .route("/v1/consuming/records", get(records))
}

/// An error response: HTTP status and envelope code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: i32,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }

    /// The envelope's `code`.
    pub(crate) fn code(&self) -> i32 {
        self.code
    }

    /// The envelope's `message`.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn kind(&self) -> &'static str {
        match self.code {
            codes::BAD_REQUEST => "bad_request",
            codes::UNAUTHORIZED => "unauthorized",
            codes::UNKNOWN_APP => "unknown_app",
            codes::UNKNOWN_USER => "unknown_user",
            codes::UNKNOWN_RECORD => "unknown_record",
            codes::UNKNOWN_CUSTOMER => "unknown_customer",
            codes::THROTTLED => "throttled",
            codes::BAD_RANGE => "bad_range",
            codes::CONFLICT => "conflict",
            codes::SIDE_FAILED => "side_failed",
            _ => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                codes::CONFLICT,
                format!("{what} already exists"),
            ),
            other => {
                warn!(error = %logsafe::esc(&other), "storage error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    codes::INTERNAL,
                    other.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("pttbridge_errors_total", "side" => "business", "kind" => self.kind())
            .increment(1);
        (
            self.status,
            Json(Envelope::error(self.code, &self.message).into_value()),
        )
            .into_response()
    }
}

/// What a `/v1` handler answers.
pub(crate) type ApiResult = Result<Json<serde_json::Value>, ApiError>;

fn ok(env: Envelope) -> ApiResult {
    Ok(Json(env.into_value()))
}

/// Parses a JSON body into `T`, with serde's reason (field, type) in the error.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad("missing JSON body"));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("invalid body: {e}")))
}

/// Query pairs into a JSON map; numbers stay strings and are parsed by the typed fields below.
pub(crate) fn serde_urlencoded_like(
    q: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let mut m = serde_json::Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k).ok_or_else(|| ApiError::bad("bad query encoding"))?;
        let v = percent_decode(v).ok_or_else(|| ApiError::bad("bad query encoding"))?;
        m.insert(k, serde_json::Value::String(v));
    }
    Ok(m)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A query integer: required or optional, with the parameter named in errors.
pub(crate) fn int(
    m: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    required: bool,
) -> Result<Option<i64>, ApiError> {
    match m.get(key).and_then(|v| v.as_str()) {
        None | Some("") if required => Err(ApiError::bad(format!("missing {key}"))),
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad(format!("{key} must be an integer, got {s:?}"))),
    }
}

pub(crate) fn string(m: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    m.get(key)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Whether the request carries operator credentials.
fn is_operator(state: &AppState, headers: &HeaderMap) -> bool {
    state.operators.authorized(headers)
}

/// Operator credentials or 401 (the envelope), for `/v1` routes that check them themselves.
pub(crate) fn require_operator(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if is_operator(state, headers) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "operator credentials required (Authorization: Bearer <operator token>)",
        ))
    }
}

/// The app `app_id`, if the request may act for it: its secret in `X-App-Secret` (and the app
/// online), or operator credentials.
pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    app_id: &str,
) -> Result<AppRow, ApiError> {
    if app_id.is_empty() {
        return Err(ApiError::bad("missing app_id"));
    }
    let operator = is_operator(state, headers);
    let app = state.platform.store.app(app_id)?;
    let secret = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    let refused = |why: &str| {
        metrics::counter!("pttbridge_auth_failures_total", "surface" => "business", "reason" => "app_secret").increment(1);
        ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, why)
    };
    match (app, secret) {
        (Some(app), _) if operator => Ok(app),
        (None, _) if operator => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_APP,
            format!("unknown app_id {app_id:?}"),
        )),
        (Some(app), Some(s)) if crate::auth::secret::verify(&app.app_secret, s) => {
            if app.status == "online" {
                Ok(app)
            } else {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    codes::UNAUTHORIZED,
                    "the app is offline: an operator can set it online",
                ))
            }
        }
        // Unknown app or wrong secret: one answer, so app ids cannot be probed.
        (_, Some(_)) => Err(refused("unknown app or wrong app secret")),
        (_, None) => Err(refused("missing X-App-Secret header")),
    }
}

fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An app as the REST shows it: never its secret (only [`with_secret`] adds a new one, once).
fn app_info(a: &AppRow) -> AppInfo {
    AppInfo {
        app_id: a.app_id.clone(),
        app_secret: None,
        app_name: a.app_name.clone(),
        status: a.status.clone(),
        consumption_limit: a.consumption_limit,
        service: a
            .services
            .iter()
            .map(|(id, limit)| ServiceInfo {
                service_id: *id,
                service_name: rest::service_name(*id).unwrap_or("unknown").to_string(),
                use_limit: *limit,
            })
            .collect(),
    }
}

fn check_services(list: &[rest::ServiceLimit]) -> Result<Vec<(i64, Option<i64>)>, ApiError> {
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        if rest::service_name(s.service_id).is_none() {
            return Err(ApiError::bad(format!(
                "unknown service_id {} (3 video, 4 audio, 5 screen, 6 signalling, 7 online, 8 recording, 9 mini program)",
                s.service_id
            )));
        }
        if s.use_limit.is_some_and(|l| l < 0) {
            return Err(ApiError::bad("use_limit must not be negative"));
        }
        if out.iter().any(|(id, _)| *id == s.service_id) {
            return Err(ApiError::bad(format!(
                "service_id {} listed twice",
                s.service_id
            )));
        }
        out.push((s.service_id, s.use_limit));
    }
    Ok(out)
}

fn check_name_status(name: Option<&str>, status: Option<&str>) -> Result<(), ApiError> {
    if let Some(n) = name
        && !rest::valid_app_name(n)
    {
        return Err(ApiError::bad(
            "app_name: 1-64 Chinese or English letters, digits or '_'",
        ));
    }
    if let Some(s) = status
        && !rest::valid_status(s)
    {
        return Err(ApiError::bad("status must be \"online\" or \"offline\""));
    }
    Ok(())
}

/// `info` with the app's new secret: shown this once, never stored in the clear.
fn with_secret(mut info: AppInfo, secret: String) -> AppInfo {
    info.app_secret = Some(secret);
    info
}

async fn create_app(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult {
    require_operator(&state, &headers)?;
    let req: CreateApp = body(&raw)?;
    check_name_status(Some(&req.app_name), req.status.as_deref())?;
    if req.consumption_limit.is_some_and(|l| l < 0) {
        return Err(ApiError::bad("consumption_limit must not be negative"));
    }
    if req.service.is_empty() {
        return Err(ApiError::bad("service must list at least one service"));
    }
    let secret = crate::auth::secret::token();
    let row = AppRow {
        app_id: random_hex(),
        app_secret: crate::auth::secret::digest(&secret),
        app_name: req.app_name,
        status: req.status.unwrap_or_else(|| "offline".into()),
        consumption_limit: req.consumption_limit,
        services: check_services(&req.service)?,
    };
    state
        .platform
        .store
        .write(RecordOp::InsertApp { app: row.clone() })
        .await?;
    info!(app_id = %logsafe::esc(&row.app_id), app_name = %logsafe::esc(&row.app_name), "app created");
    ok(Envelope::ok().merge(&with_secret(app_info(&row), secret)))
}

/// `POST /v1/app/secret?app_id=`: a new secret for the app (operators only); the old one
/// stops working at once. The new one is shown this once.
async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<AppQuery>,
) -> ApiResult {
    require_operator(&state, &headers)?;
    let app_id = q.app_id.unwrap_or_default();
    let mut row = authorize(&state, &headers, &app_id)?;
    let secret = crate::auth::secret::token();
    row.app_secret = crate::auth::secret::digest(&secret);
    state
        .platform
        .store
        .write(RecordOp::SetAppSecret {
            app_id: row.app_id.clone(),
            digest: row.app_secret.clone(),
        })
        .await?;
    info!(app_id = %logsafe::esc(&row.app_id), "app secret rotated");
    ok(Envelope::ok().merge(&with_secret(app_info(&row), secret)))
}

async fn patch_app(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult {
    let req: PatchApp = body(&raw)?;
    let mut row = authorize(&state, &headers, &req.app_id)?;
    check_name_status(req.app_name.as_deref(), req.status.as_deref())?;
    // An app may rename itself or go offline; bringing it online and its quotas are the
    // operator's to set, or an app could lift its own limits.
    let raises = req.status.as_deref() == Some("online")
        || req.consumption_limit.is_some()
        || req.service.is_some();
    if raises && !is_operator(&state, &headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::UNAUTHORIZED,
            "only an operator sets an app online or changes consumption_limit and service",
        ));
    }
    if let Some(n) = req.app_name {
        row.app_name = n;
    }
    if let Some(s) = req.status {
        row.status = s;
    }
    if let Some(l) = req.consumption_limit {
        if l < 0 {
            return Err(ApiError::bad("consumption_limit must not be negative"));
        }
        row.consumption_limit = Some(l);
    }
    if let Some(list) = req.service {
        row.services = check_services(&list)?;
    }
    state
        .platform
        .store
        .write(RecordOp::UpdateApp { app: row.clone() })
        .await?;
    ok(Envelope::ok().merge(&app_info(&row)))
}

#[derive(Debug, Deserialize)]
struct AppQuery {
    #[serde(default)]
    app_id: Option<String>,
}

async fn delete_app(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<AppQuery>,
) -> ApiResult {
    let app_id = q.app_id.unwrap_or_default();
    let row = authorize(&state, &headers, &app_id)?;
    state
        .platform
        .store
        .write(RecordOp::DeleteApp {
            app_id: row.app_id.clone(),
        })
        .await?;
    info!(app_id = %logsafe::esc(&row.app_id), "app deleted");
    ok(Envelope::ok())
}

async fn get_app(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<AppQuery>,
) -> ApiResult {
    match q.app_id.filter(|a| !a.is_empty()) {
        Some(app_id) => {
            let row = authorize(&state, &headers, &app_id)?;
            ok(Envelope::ok().merge(&app_info(&row)))
        }
        None => {
            require_operator(&state, &headers)?;
            let list: Vec<AppInfo> = state.platform.store.apps()?.iter().map(app_info).collect();
            ok(Envelope::ok().with("app_list", serde_json::to_value(list).unwrap_or_default()))
        }
    }
}

async fn user_state(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> ApiResult {
    let q = serde_urlencoded_like(raw.as_deref().unwrap_or(""))?;
    let app_id = string(&q, "app_id").ok_or_else(|| ApiError::bad("missing app_id"))?;
    authorize(&state, &headers, &app_id)?;
    let msg_id = int(&q, "msg_id", true)?.unwrap_or(0);
    let page = int(&q, "page", false)?.unwrap_or(1);
    let page_size = int(&q, "page_size", false)?.unwrap_or(i64::from(MAX_PAGE_SIZE));
    if page < 1 {
        return Err(ApiError::bad("page starts at 1"));
    }
    if !(1..=i64::from(MAX_PAGE_SIZE)).contains(&page_size) {
        return Err(ApiError::bad(format!(
            "page_size must be 1..={MAX_PAGE_SIZE}"
        )));
    }
    let (_, model) = state.bus.snapshot(&app_id, None);
    let presence = model.presence();
    let directory = state.platform.directory.as_ref().and_then(|d| d.snapshot());
    // Online: the name it is online with; an offline PTT user: the directory's name for its id.
    let name_of = |uid: &str| -> Option<String> {
        if let Some(p) = presence.get(uid) {
            return Some(p.party.name.clone()).filter(|n| !n.is_empty());
        }
        let (side, id) = parse_user_id(uid)?;
        if side != crate::hub::Side::Ptt {
            return None;
        }
        let user = directory.as_ref()?.by_uid(id.parse().ok()?)?;
        Some(user.name.clone())
    };
    let entry = |uid: &str| {
        let p = presence.get(uid);
        UserState {
            name: name_of(uid),
            state: i32::from(p.is_some()),
            user_id: uid.to_string(),
            terminal_seq_num: p
                .and_then(|p| p.terminal.clone())
                .or_else(|| p.map(|p| p.party.id.clone()))
                .unwrap_or_default(),
            mutex_type: p
                .map(|p| p.party.side.as_str().to_string())
                .unwrap_or_default(),
        }
    };
    // `user_id` (extension): comma-separated users to ask about, each answered 0 or 1;
    // without it, every online user of the app, paged.
    let (list, total): (Vec<UserState>, usize) = match string(&q, "user_id") {
        Some(ids) => {
            let ids: Vec<&str> = ids.split(',').filter(|s| !s.is_empty()).collect();
            if let Some(bad) = ids.iter().find(|u| parse_user_id(u).is_none()) {
                return Err(ApiError::bad(format!(
                    "user_id {bad:?} is not <side>:<id> (side ptt, console or meeting)"
                )));
            }
            (ids.iter().map(|u| entry(u)).collect(), ids.len())
        }
        None => {
            let all: Vec<&String> = presence.keys().collect();
            let start = ((page - 1) * page_size) as usize;
            (
                all.iter()
                    .skip(start)
                    .take(page_size as usize)
                    .map(|u| entry(u))
                    .collect(),
                all.len(),
            )
        }
    };
    ok(Envelope::ok()
        .with("msg_id", msg_id)
        .with("total", total)
        .with("user_list", serde_json::to_value(list).unwrap_or_default()))
}

/// Parses a `<side>:<id>` user id.
fn side_user(user: &str) -> Result<(crate::hub::Side, String), ApiError> {
    parse_user_id(user)
        .map(|(s, id)| (s, id.to_string()))
        .ok_or_else(|| {
            ApiError::bad(format!(
                "user_id {user:?} is not <side>:<id> (side ptt, console or meeting), as in events"
            ))
        })
}

fn command_error(e: CommandError) -> ApiError {
    match e {
        CommandError::NotOnline => ApiError::new(
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_USER,
            "user not online",
        ),
        CommandError::UnknownGroup(g) => ApiError::bad(format!("unknown group_id {g:?}")),
        other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            codes::SIDE_FAILED,
            other.to_string(),
        ),
    }
}

async fn kickout(State(state): State<Arc<AppState>>, headers: HeaderMap, raw: Bytes) -> ApiResult {
    let req: Kickout = body(&raw)?;
    authorize(&state, &headers, &req.app_id)?;
    let (side, party) = side_user(&req.user_id)?;
    let cmd = SideCommand::Kick {
        app: req.app_id.clone(),
        party,
        reason: "kicked out by the business gateway".into(),
    };
    let done = state
        .platform
        .commands
        .execute(side, cmd)
        .await
        .map_err(command_error)?;
    info!(app_id = %logsafe::esc(&req.app_id), user_id = %logsafe::esc(&req.user_id), terminal = %logsafe::esc(&done.terminal), "user kicked out");
    ok(Envelope::ok())
}

async fn trans_cmd(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult {
    let req: TransCmd = body(&raw)?;
    authorize(&state, &headers, &req.app_id)?;
    if req.user_list.is_empty() {
        return Err(ApiError::bad("user_list must not be empty"));
    }
    if req.user_list.len() > 1000 {
        return Err(ApiError::bad("user_list: at most 1000 users"));
    }
    let mut results = Vec::with_capacity(req.user_list.len());
    for u in &req.user_list {
        let (side, party) = side_user(&u.user_id)?;
        let cmd = SideCommand::Deliver {
            app: req.app_id.clone(),
            party,
            message: req.trans_mess.clone(),
        };
        let (result, terminal) = match state.platform.commands.execute(side, cmd).await {
            Ok(d) => (0, d.terminal),
            Err(CommandError::NotOnline) => (2, String::new()),
            Err(e) => {
                warn!(user_id = %logsafe::esc(&u.user_id), error = %logsafe::esc(&e), "trans-cmd not delivered");
                (1, String::new())
            }
        };
        results.push(TransResult {
            result,
            user_id: u.user_id.clone(),
            terminal_seq_num: terminal,
            mutex_type: u.mutex_type.clone(),
        });
    }
    ok(Envelope::ok().with("msg_id", req.msg_id).with(
        "user_list",
        serde_json::to_value(results).unwrap_or_default(),
    ))
}

async fn invite(State(state): State<Arc<AppState>>, headers: HeaderMap, raw: Bytes) -> ApiResult {
    let req: Invite = body(&raw)?;
    authorize(&state, &headers, &req.app_id)?;
    if req.group_id.is_empty() {
        return Err(ApiError::bad("missing group_id"));
    }
    if req.user_id_list.is_empty() {
        return Err(ApiError::bad("user_id_list must not be empty"));
    }
    let mut failed = Vec::new();
    for user in &req.user_id_list {
        let (side, party) = side_user(user)?;
        let cmd = SideCommand::Invite {
            app: req.app_id.clone(),
            party,
            side,
            group: req.group_id.clone(),
            extend: req.extend_info.clone(),
        };
        if let Err(e) = state.platform.commands.execute(side, cmd).await {
            if let CommandError::UnknownGroup(_) = e {
                return Err(command_error(e));
            }
            warn!(user_id = %logsafe::esc(&user), error = %logsafe::esc(&e), "invite failed");
            failed.push(user.clone());
        }
    }
    ok(Envelope::ok()
        .with("seq_id", req.seq_id)
        .with("user_id_list", failed))
}

async fn records(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> ApiResult {
    let q = serde_urlencoded_like(raw.as_deref().unwrap_or(""))?;
    // Credentials first: a stranger learns nothing, not even which parameters are wrong.
    let app = string(&q, "app_id");
    let app_name = match &app {
        Some(a) => Some(authorize(&state, &headers, a)?.app_name),
        None => {
            require_operator(&state, &headers)?;
            None
        }
    };
    let start = int(&q, "start_time", true)?.unwrap_or(0);
    let end = int(&q, "end_time", true)?.unwrap_or(0);
    let page = int(&q, "page", true)?.unwrap_or(1);
    let page_size = int(&q, "page_size", true)?.unwrap_or(10);
    if end < start {
        return Err(ApiError::bad("end_time is before start_time"));
    }
    if page < 1 || page > i64::from(u32::MAX) {
        return Err(ApiError::bad("page starts at 1"));
    }
    if !(1..=i64::from(MAX_PAGE_SIZE)).contains(&page_size) {
        return Err(ApiError::bad(format!(
            "page_size must be 1..={MAX_PAGE_SIZE}, got {page_size}"
        )));
    }
    let store = &state.platform.store;
    let (rows, total) = store.calls(start, end, app.as_deref(), page as u32, page_size as u32)?;
    let names: std::collections::HashMap<String, String> = store
        .apps()?
        .into_iter()
        .map(|a| (a.app_id, a.app_name))
        .collect();
    let list: Vec<ConsumingRecord> = rows
        .into_iter()
        .map(|r| ConsumingRecord {
            record_id: r.id,
            app_name: app_name
                .clone()
                .or_else(|| names.get(&r.app_id).cloned())
                .unwrap_or_default(),
            app_id: r.app_id,
            charge_term: 1,
            start_time: rfc3339::format_ms(r.start_ms),
            end_time: rfc3339::format_ms(r.end_ms),
            start_time_ms: r.start_ms,
            end_time_ms: r.end_ms,
            total_time: (r.end_ms - r.start_ms + 999) / 1000,
            duration_ms: r.end_ms - r.start_ms,
            group_id: r.group_id,
            sides: r.sides,
            audio_packets: r.audio_packets,
            audio_bytes: r.audio_bytes,
            total_sig_num: r.signalling,
            client_id: r.initiator,
            end_reason: r.end_reason,
        })
        .collect();
    ok(Envelope::ok()
        .with("page", page)
        .with("page_size", page_size)
        .with("total", total)
        .with(
            "record_list",
            serde_json::to_value(list).unwrap_or_default(),
        ))
}

/// Every `(method, path)` of the business REST (this module's and `directory.rs`'s), for the
/// OpenAPI sync test.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/app"),
    ("post", "/v1/app"),
    ("patch", "/v1/app"),
    ("delete", "/v1/app"),
    ("post", "/v1/app/secret"),
    ("get", "/v1/online/user/state"),
    ("post", "/v1/kickout"),
    ("post", "/v1/online/trans-cmd"),
    ("post", "/v1/online/invite"),
    ("get", "/v1/consuming/records"),
    // directory.rs
    ("get", "/v1/directory/users"),
    ("get", "/v1/directory/channels"),
    ("post", "/v1/directory/refresh"),
    ("get", "/v1/directory/messages"),
    ("post", "/v1/notice"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let m = serde_urlencoded_like("a=1&b=x%20y&c=%E4%B8%AD&d").unwrap();
        assert_eq!(m["b"], "x y");
        assert_eq!(m["c"], "中");
        assert_eq!(m["d"], "");
        assert!(serde_urlencoded_like("a=%zz").is_err());
        assert_eq!(int(&m, "a", true).unwrap(), Some(1));
        assert!(int(&m, "b", true).is_err());
        assert!(int(&m, "zz", true).is_err());
        assert_eq!(int(&m, "zz", false).unwrap(), None);
    }
}
