//! Customer management over HTTP (seed 002, `docs/customers.md`): the operators' pages
//! (`/customer/list|add|remove`, `/user/list`, `/group/list`), the clients' `/api/customer/info`
//! and the sites' commits (`/api/server|user|group/commit`, GET or POST as the seed says).
//!
//! Parameters come from the query and a form-encoded (or JSON object) body, under the seed's
//! names. Every answer is the `/v1` envelope: `{code: 0, message: "OK", data: ...}` or
//! `{code, message}` with the matching HTTP status. A commit presents its customer's commit
//! token (`X-Commit-Token`), `/api/customer/info` the customer's info key (`X-Info-Key`);
//! operators may do both. To a token holder, an unknown code and a wrong token look the same.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Json;
use axum::routing::{get, post};
use egw::rest::{Envelope, codes};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::AppState;
use super::business::{ApiError, ApiResult, serde_urlencoded_like};
use crate::auth::web::PeerIp;
use crate::customers::Commits as Batch;
use crate::customers::params::{self, ParamError, Params};
use crate::customers::store::{Retention, Secrets};
use crate::customers::{Customer, now_ms};
use crate::storage::Applied;

/// Header of a customer's commit token.
pub const COMMIT_TOKEN: &str = "x-commit-token";
/// Header of a customer's info key.
pub const INFO_KEY: &str = "x-info-key";

/// The operators' routes (guarded by the operator middleware in `http::router`).
pub fn operator_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/customer/list", get(list))
        .route("/customer/add", post(add))
        .route("/customer/remove", post(remove))
        .route("/user/list", get(user_list))
        .route("/group/list", get(group_list))
}

/// The routes that check their own credentials (a customer's token or key, or an operator's).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/customer/info", get(info_route))
        .route("/api/server/commit", get(server_commit).post(server_commit))
        .route("/api/user/commit", get(user_commit).post(user_commit))
        .route("/api/group/commit", get(group_commit).post(group_commit))
}

/// Every `(method, path)` this module serves (the route table in `docs/security.md`).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/customer/list"),
    ("post", "/customer/add"),
    ("post", "/customer/remove"),
    ("get", "/user/list"),
    ("get", "/group/list"),
    ("get", "/api/customer/info"),
    ("get", "/api/server/commit"),
    ("post", "/api/server/commit"),
    ("get", "/api/user/commit"),
    ("post", "/api/user/commit"),
    ("get", "/api/group/commit"),
    ("post", "/api/group/commit"),
];

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        ApiError::bad(e.0)
    }
}

fn ok(data: impl Into<Value>) -> ApiResult {
    Ok(Json(Envelope::ok().with("data", data).into_value()))
}

/// The query's parameters and the body's (a form, or a JSON object); the body's win.
fn request_params(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Map<String, Value>, ApiError> {
    let mut m = serde_urlencoded_like(query.unwrap_or(""))?;
    if body.is_empty() {
        return Ok(m);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let fields = if json {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => o
                .into_iter()
                // `data` may come as the array itself; the parser reads it from its text.
                .map(|(k, v)| match v {
                    Value::Array(_) => (k, Value::String(v.to_string())),
                    v => (k, v),
                })
                .collect(),
            _ => {
                return Err(ApiError::bad(
                    "the JSON body must be an object of parameters",
                ));
            }
        }
    } else {
        let text =
            std::str::from_utf8(body).map_err(|_| ApiError::bad("the form body is not UTF-8"))?;
        serde_urlencoded_like(text)?
    };
    m.extend(fields);
    Ok(m)
}

fn unknown_customer(what: String) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        codes::UNKNOWN_CUSTOMER,
        format!("no customer {what}"),
    )
}

fn retention(state: &AppState) -> Retention {
    Retention {
        days: state.platform.customers.retention_days,
        max_rows: state.platform.customers.max_rows,
    }
}

/// A customer as the operators' list shows it, with its latest server commit.
fn customer_json(state: &AppState, c: &Customer) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    let latest = state.platform.store.latest_server_commit(&c.code)?;
    v["latest"] = serde_json::to_value(latest).unwrap_or_default();
    Ok(v)
}

// ---- operators ---------------------------------------------------------------------------

async fn list(State(state): State<Arc<AppState>>) -> ApiResult {
    let customers = state.platform.store.customers()?;
    let rows = customers
        .iter()
        .map(|c| customer_json(&state, c))
        .collect::<Result<Vec<_>, _>>()?;
    ok(rows)
}

fn secret_param(m: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match m.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()) {
        None => Ok(crate::auth::secret::token()),
        Some(s) if (16..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(s.to_owned())
        }
        Some(_) => Err(ApiError::bad(format!(
            "{key} must be 16 to 128 printable ASCII characters (or left out: one is made)"
        ))),
    }
}

/// Extractor: the request's parameters ([`request_params`]), or the envelope's 400.
struct ReqParams(Map<String, Value>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for ReqParams {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let query = req.uri().query().map(str::to_owned);
        let headers = req.headers().clone();
        let body = <Bytes as axum::extract::FromRequest<S>>::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad(format!("cannot read the body: {e}")))?;
        request_params(query.as_deref(), &headers, &body).map(Self)
    }
}

async fn add(State(state): State<Arc<AppState>>, ReqParams(m): ReqParams) -> ApiResult {
    let customer = params::customer(&Params(&m))?;
    let (commit_token, info_key) = (
        secret_param(&m, "commit_token")?,
        secret_param(&m, "info_key")?,
    );
    let secrets = Secrets {
        commit: crate::auth::secret::digest(&commit_token),
        info: crate::auth::secret::digest(&info_key),
    };
    let op = crate::storage::RecordOp::InsertCustomer {
        customer: customer.clone(),
        commit_digest: secrets.commit,
        info_digest: secrets.info,
    };
    state.platform.store.write(op).await?;
    info!(code = %customer.code, id = %customer.id, "customer added");
    // The two secrets are shown here once; the store keeps their digests only.
    Ok(Json(
        Envelope::ok()
            .with("data", serde_json::to_value(&customer).unwrap_or_default())
            .with("commit_token", commit_token)
            .with("info_key", info_key)
            .into_value(),
    ))
}

async fn remove(State(state): State<Arc<AppState>>, ReqParams(m): ReqParams) -> ApiResult {
    let id = Params(&m).required("id", params::is_uuid, "a customer id (a UUID)")?;
    let found = state
        .platform
        .store
        .customers()?
        .into_iter()
        .find(|c| c.id == id);
    let op = crate::storage::RecordOp::RemoveCustomer { id: id.clone() };
    // Removed here (or by the shared records) only if it still was there.
    let removed = state.platform.store.write(op).await? == Applied::Found(true);
    match found.filter(|_| removed) {
        Some(c) => {
            info!(code = %c.code, id = %c.id, "customer removed with its commits");
            ok(serde_json::to_value(c).unwrap_or_default())
        }
        None => Err(unknown_customer(format!("with id {id}"))),
    }
}

/// The customer named by `code=`, or 404.
fn known_code(state: &AppState, m: &Map<String, Value>) -> Result<String, ApiError> {
    let code = Params(m).code()?;
    match state.platform.store.customer(&code)? {
        Some(_) => Ok(code),
        None => Err(unknown_customer(format!("with code {code}"))),
    }
}

async fn user_list(State(state): State<Arc<AppState>>, RawQuery(q): RawQuery) -> ApiResult {
    let m = serde_urlencoded_like(q.as_deref().unwrap_or(""))?;
    let code = known_code(&state, &m)?;
    ok(serde_json::to_value(state.platform.store.latest_users(&code)?).unwrap_or_default())
}

async fn group_list(State(state): State<Arc<AppState>>, RawQuery(q): RawQuery) -> ApiResult {
    let m = serde_urlencoded_like(q.as_deref().unwrap_or(""))?;
    let code = known_code(&state, &m)?;
    ok(serde_json::to_value(state.platform.store.latest_groups(&code)?).unwrap_or_default())
}

// ---- customers' clients and sites ---------------------------------------------------------

/// Who is asking: an operator, or the holder of a customer secret (from `header`), or nobody.
enum Caller {
    Operator,
    Holder(String),
}

fn caller(state: &AppState, headers: &HeaderMap, header: &str) -> Result<Caller, ApiError> {
    if state.operators.authorized(headers) {
        return Ok(Caller::Operator);
    }
    match headers.get(header).and_then(|v| v.to_str().ok()) {
        Some(s) if !s.is_empty() => Ok(Caller::Holder(s.to_owned())),
        _ => Err(denied(header)),
    }
}

fn denied(header: &str) -> ApiError {
    let name = if header == COMMIT_TOKEN {
        "X-Commit-Token"
    } else {
        "X-Info-Key"
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        codes::UNAUTHORIZED,
        format!("unknown customer or wrong credentials ({name}, or operator credentials)"),
    )
}

/// Checks `caller` for the customer `code`: operators for any known customer (404 when it is
/// unknown), a holder for its own only (401 alike for unknown codes and wrong secrets, counted
/// and throttled per address).
fn authorize(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    caller: &Caller,
    code: &str,
    header: &str,
    surface: &'static str,
) -> Result<(), ApiError> {
    let found = state.platform.store.customer(code)?;
    let given = match caller {
        Caller::Operator => {
            return found
                .map(|_| ())
                .ok_or_else(|| unknown_customer(format!("with code {code}")));
        }
        Caller::Holder(given) => given,
    };
    let limiter = &state.platform.customer_failures;
    let now = Instant::now();
    if let Some(ip) = ip
        && limiter.check(&ip, now).is_some()
    {
        metrics::counter!("pttbridge_auth_failures_total", "surface" => surface, "reason" => "throttled").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::THROTTLED,
            "too many wrong credentials from this address: try again in a minute",
        ));
    }
    let digest = found.map(|(_, s)| {
        if header == COMMIT_TOKEN {
            s.commit
        } else {
            s.info
        }
    });
    if digest.is_some_and(|d| crate::auth::secret::verify(&d, given)) {
        if let Some(ip) = ip {
            limiter.succeeded(&ip);
        }
        return Ok(());
    }
    metrics::counter!("pttbridge_auth_failures_total", "surface" => surface, "reason" => "credentials").increment(1);
    if let Some(ip) = ip {
        limiter.failed(ip, now);
    }
    Err(denied(header))
}

async fn info_route(
    State(state): State<Arc<AppState>>,
    PeerIp(ip): PeerIp,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let who = caller(&state, &headers, INFO_KEY)?;
    let m = serde_urlencoded_like(q.as_deref().unwrap_or(""))?;
    let code = Params(&m).code()?;
    authorize(&state, ip, &who, &code, INFO_KEY, "customer_info")?;
    let Some((c, _)) = state.platform.store.customer(&code)? else {
        return Err(unknown_customer(format!("with code {code}")));
    };
    ok(json!({
        "code": c.code,
        "name": c.name,
        "tcphost": c.tcphost,
        "tcpport": c.tcpport,
        "webhost": c.webhost,
        "webport": c.webport,
        "filehost": c.filehost,
        "fileport": c.fileport,
    }))
}

/// The customer a commit is for: a `data` commit's entries must all name the same one.
fn batch_code(batch: &Batch) -> Result<String, ParamError> {
    let codes = batch.codes();
    let first = *codes
        .first()
        .ok_or_else(|| ParamError("data is empty: nothing to commit".into()))?;
    if codes.iter().any(|c| *c != first) {
        return Err(ParamError(
            "every data entry must have the same code".into(),
        ));
    }
    Ok(first.to_owned())
}

/// Keeps a checked commit: here, or through the shared records on a cluster node.
async fn store_batch(state: &AppState, batch: Batch) -> Result<(), crate::storage::StoreError> {
    let keep = retention(state);
    let op = crate::storage::RecordOp::InsertCommits {
        commits: batch,
        received_ms: now_ms(),
        keep_days: keep.days,
        keep_rows: keep.max_rows,
    };
    state.platform.store.write(op).await.map(|_| ())
}

/// Every commit's path: credentials present, parameters checked (`parse`), the customer's own
/// token (or an operator), then stored; refusals counted by reason, stored commits by kind.
async fn commit(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    kind: &'static str,
    q: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
    parse: fn(&Params<'_>, usize) -> Result<Batch, ParamError>,
) -> ApiResult {
    // Anyone can send these: the lines are rate-limited, the counter counts every one.
    static REFUSED: logsafe::RateLimit = logsafe::RateLimit::warn("customer commit refused");
    let refused = |e: ApiError, reason: &'static str| {
        metrics::counter!("pttbridge_customer_commits_refused_total", "kind" => kind, "reason" => reason)
            .increment(1);
        if REFUSED.allow() {
            warn!(kind, reason, error = %logsafe::esc(e.message()).limit(200), "customer commit refused");
        }
        e
    };
    let who = caller(state, headers, COMMIT_TOKEN).map_err(|e| refused(e, "unauthorized"))?;
    let m = request_params(q.as_deref(), headers, body).map_err(|e| refused(e, "bad_request"))?;
    let max = state.platform.customers.max_batch as usize;
    let (batch, code) = parse(&Params(&m), max)
        .and_then(|b| batch_code(&b).map(|c| (b, c)))
        .map_err(|e| refused(e.into(), "bad_request"))?;
    authorize(state, ip, &who, &code, COMMIT_TOKEN, "customer_commit").map_err(|e| {
        let reason = match e.code() {
            codes::UNKNOWN_CUSTOMER => "unknown_customer",
            codes::THROTTLED => "throttled",
            _ => "unauthorized",
        };
        refused(e, reason)
    })?;
    let (kind, received) = (batch.kind(), batch.len());
    store_batch(state, batch).await?;
    metrics::counter!("pttbridge_customer_commits_received_total", "kind" => kind).increment(1);
    ok(json!({ "code": code, "received": received }))
}

macro_rules! commit_route {
    ($name:ident, $kind:literal, $parse:expr) => {
        async fn $name(
            State(state): State<Arc<AppState>>,
            PeerIp(ip): PeerIp,
            RawQuery(q): RawQuery,
            headers: HeaderMap,
            body: Bytes,
        ) -> ApiResult {
            commit(&state, ip, $kind, q, &headers, &body, $parse).await
        }
    };
}

commit_route!(server_commit, "server", |p, _| Ok(Batch::Server(
    params::server_commit(p)?
)));
commit_route!(user_commit, "user", |p, max| Ok(Batch::Users(
    params::users(p, max)?
)));
commit_route!(group_commit, "group", |p, max| Ok(Batch::Groups(
    params::groups(p, max)?
)));
