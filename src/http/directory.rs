//! `/v1/directory/*` and `/v1/notice`: the directory read from the Totalk admin API, and the two
//! admin calls the bridge makes for a platform (`pushNotice`, `getMessagesInPage`). Business
//! REST: the app's `X-App-Secret` or operator credentials, every answer in the envelope.
//!
//! Reads come from the directory's last good copy (with its `age_s` and `state`), never from
//! the admin server on the caller's time; `online` is the admin server's word (a user in a
//! channel) or the bridge's own (the account is on a PTT server the bridge watches now).

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use egw::rest::{Envelope, codes};
use serde::Deserialize;
use serde_json::{Value, json};
use totalk_admin::client::Answer;
use totalk_admin::{NoticeTarget, Operation};
use tracing::info;

use super::AppState;
use super::business::{
    ApiError, ApiResult, MAX_PAGE_SIZE, authorize, body, int, serde_urlencoded_like, string,
};
use crate::directory::{CallError, Directory, Snapshot};

/// The routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/directory/users", get(users))
        .route("/v1/directory/channels", get(channels))
        .route("/v1/directory/refresh", post(refresh))
        .route("/v1/directory/messages", get(messages))
        .route("/v1/notice", post(notice))
}

/// Longest notice text (the seed: 1000 Chinese characters or 2000 characters).
const MAX_NOTICE_CHARS: usize = 2000;

fn directory(state: &AppState) -> Result<&Directory, ApiError> {
    state.platform.directory.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::SIDE_FAILED,
            "no directory configured ([directory] url)",
        )
    })
}

/// The query's `app_id`, authorised; the query's fields.
fn authorized_query(
    state: &AppState,
    headers: &HeaderMap,
    raw: Option<&str>,
) -> Result<(String, serde_json::Map<String, Value>), ApiError> {
    let q = serde_urlencoded_like(raw.unwrap_or(""))?;
    let app_id = string(&q, "app_id").ok_or_else(|| ApiError::bad("missing app_id"))?;
    authorize(state, headers, &app_id)?;
    Ok((app_id, q))
}

/// `page` (from 1) and `page_size` (1..=100) of a query.
fn paging(q: &serde_json::Map<String, Value>) -> Result<(usize, usize), ApiError> {
    let page = int(q, "page", false)?.unwrap_or(1);
    let size = int(q, "page_size", false)?.unwrap_or(i64::from(MAX_PAGE_SIZE));
    if page < 1 {
        return Err(ApiError::bad("page starts at 1"));
    }
    if !(1..=i64::from(MAX_PAGE_SIZE)).contains(&size) {
        return Err(ApiError::bad(format!(
            "page_size must be 1..={MAX_PAGE_SIZE}"
        )));
    }
    Ok(((page - 1) as usize * size as usize, size as usize))
}

/// The account names of everyone the bridge sees online on the PTT side of `app_id`.
fn ptt_online(state: &AppState, app_id: &str) -> HashSet<String> {
    crate::directory::ptt_online(&state.bus.snapshot(app_id, None).1)
}

/// The envelope's directory fields: how old the copy is.
fn with_age(env: Envelope, dir: &Directory) -> Envelope {
    env.with("age_s", dir.age().map(|a| a.as_secs()))
        .with("stale", dir.stale())
}

fn snapshot(dir: &Directory) -> Result<Arc<Snapshot>, ApiError> {
    dir.snapshot().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::SIDE_FAILED,
            "the directory has not been read from the admin API yet",
        )
    })
}

/// What a listing reads: the copy, who is online, and the page asked for.
struct Listing<'a> {
    dir: &'a Directory,
    snap: Arc<Snapshot>,
    online: HashSet<String>,
    skip: usize,
    take: usize,
}

impl<'a> Listing<'a> {
    fn new(state: &'a AppState, headers: &HeaderMap, raw: Option<&str>) -> Result<Self, ApiError> {
        let (app_id, q) = authorized_query(state, headers, raw)?;
        let dir = directory(state)?;
        let (skip, take) = paging(&q)?;
        Ok(Self {
            dir,
            snap: snapshot(dir)?,
            online: ptt_online(state, &app_id),
            skip,
            take,
        })
    }

    /// The page of `items` (of `total`) under `key`, with the copy's age.
    fn reply(&self, key: &str, total: usize, items: impl Iterator<Item = Value>) -> ApiResult {
        let list: Vec<Value> = items.skip(self.skip).take(self.take).collect();
        Ok(axum::Json(
            with_age(Envelope::ok(), self.dir)
                .with("total", total)
                .with(key, list)
                .into_value(),
        ))
    }
}

async fn users(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let l = Listing::new(&state, &headers, raw.as_deref())?;
    let (snap, online) = (&l.snap, &l.online);
    let items = snap.users.iter().map(|u| {
        json!({
            "uid": u.uid,
            "name": u.name,
            "nick": u.nick,
            "role": u.role,
            "dispatcher": u.is_dispatcher(),
            "online": u.online() || online.contains(&u.name),
            "channels": u.joined_channel_ids(),
        })
    });
    l.reply("user_list", snap.users.len(), items)
}

async fn channels(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let l = Listing::new(&state, &headers, raw.as_deref())?;
    let (snap, online) = (&l.snap, &l.online);
    let items = snap.channels.iter().map(|c| {
        let members: Vec<Value> = c
            .members
            .iter()
            .map(|m| {
                let u = snap.by_uid(m.uid);
                json!({
                    "uid": m.uid,
                    "name": u.map(|u| u.name.as_str()),
                    "nick": u.map(|u| u.nick.as_str()),
                    "member_role": m.role,
                    "online": u.is_some_and(|u| u.online() || online.contains(&u.name)),
                })
            })
            .collect();
        json!({
            "cid": c.channel.cid,
            "name": c.channel.name,
            "member_num": c.channel.member_num,
            "members": members,
        })
    });
    l.reply("channel_list", snap.channels.len(), items)
}

/// `{"app_id": ..}`: the body of the POST routes that need nothing else.
#[derive(Deserialize)]
struct AppOnly {
    app_id: String,
}

async fn refresh(State(state): State<Arc<AppState>>, headers: HeaderMap, raw: Bytes) -> ApiResult {
    let req: AppOnly = body(&raw)?;
    authorize(&state, &headers, &req.app_id)?;
    directory(&state)?.refresh_now();
    Ok(axum::Json(Envelope::ok().into_value()))
}

fn call_error(e: CallError) -> ApiError {
    let status = match e {
        CallError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, codes::SIDE_FAILED, format!("admin API: {e}"))
}

async fn messages(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let (_, q) = authorized_query(&state, &headers, raw.as_deref())?;
    let dir = directory(&state)?;
    let cid = int(&q, "cid", true)?.unwrap_or_default();
    let page = int(&q, "page", false)?.unwrap_or(1);
    let size = int(&q, "page_size", false)?.unwrap_or(20);
    if !(1..=100_000).contains(&page) {
        return Err(ApiError::bad("page starts at 1"));
    }
    if !(1..=i64::from(MAX_PAGE_SIZE)).contains(&size) {
        return Err(ApiError::bad(format!(
            "page_size must be 1..={MAX_PAGE_SIZE}"
        )));
    }
    let oldest_first = match string(&q, "sort").as_deref() {
        None | Some("down") => false,
        Some("up") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "sort must be up or down, got {other:?}"
            )));
        }
    };
    let answer = dir
        .call(Operation::Messages {
            cid,
            page_index: (page - 1) as u32,
            page_size: size as u32,
            oldest_first,
        })
        .await
        .map_err(call_error)?;
    let Answer::Messages(p) = answer else {
        return Err(call_error(CallError::Admin(
            totalk_admin::AdminError::Malformed("not a page of messages".into()),
        )));
    };
    Ok(axum::Json(
        Envelope::ok()
            .with("total", p.total)
            .with(
                "message_list",
                serde_json::to_value(p.data).unwrap_or_default(),
            )
            .into_value(),
    ))
}

/// `POST /v1/notice`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Notice {
    app_id: String,
    /// `everyone`, `channel_members`, `user` or `in_channel`.
    target_type: String,
    /// The channel or user id (not for `everyone`).
    #[serde(default)]
    target_id: Option<i64>,
    content: String,
    /// Terminals speak it too.
    #[serde(default)]
    tts: bool,
}

/// Checks a notice and makes its target (also the EGW command's).
pub(crate) fn notice_target(
    target_type: &str,
    target_id: Option<i64>,
    content: &str,
) -> Result<NoticeTarget, String> {
    if content.trim().is_empty() {
        return Err("content must not be empty".into());
    }
    if content.chars().count() > MAX_NOTICE_CHARS {
        return Err(format!("content: at most {MAX_NOTICE_CHARS} characters"));
    }
    let id = || target_id.ok_or_else(|| format!("target_id is required for {target_type}"));
    Ok(match target_type {
        "everyone" => NoticeTarget::Everyone,
        "channel_members" => NoticeTarget::ChannelMembers(id()?),
        "user" => NoticeTarget::User(id()?),
        "in_channel" => NoticeTarget::InChannel(id()?),
        other => {
            return Err(format!(
                "target_type {other:?} is not everyone, channel_members, user or in_channel"
            ));
        }
    })
}

async fn notice(State(state): State<Arc<AppState>>, headers: HeaderMap, raw: Bytes) -> ApiResult {
    let req: Notice = body(&raw)?;
    authorize(&state, &headers, &req.app_id)?;
    let dir = directory(&state)?;
    let target =
        notice_target(&req.target_type, req.target_id, &req.content).map_err(ApiError::bad)?;
    dir.call(Operation::PushNotice {
        target: target.clone(),
        content: req.content,
        tts: req.tts,
    })
    .await
    .map_err(call_error)?;
    info!(app_id = %logsafe::esc(&req.app_id), target = ?target, "notice pushed through the admin API");
    Ok(axum::Json(Envelope::ok().into_value()))
}
