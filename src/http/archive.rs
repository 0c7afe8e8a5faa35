//! The archive of recorded talk bursts over REST (`/v1/archive/...`, operators only): list and
//! search the index (`storage::BurstRow`), fetch one, download its Ogg Opus file (HTTP range
//! requests), delete; and the specs' shapes where they map cheaply — 527meeting's
//! `getRecordByRange` / `deleteRecords` and Totalk's `getVoicesInPage`.
//!
//! Every answer is the `/v1` envelope (`{code, message, ...}`, see `business.rs`). Files are
//! only ever found through the index, by id or by an indexed file name that is a plain name
//! (`recording::safe_file_name`), and the resolved path must lie inside `[recording] dir`:
//! nothing outside the archive directory can be served or deleted.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use egw::rest::{Envelope, codes};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::AppState;
use super::business::{
    ApiError, ApiResult, MAX_PAGE_SIZE, body, int, serde_urlencoded_like, string,
};
use crate::events::rfc3339;
use crate::storage::{BurstQuery, BurstRow};

/// The archive's routes (guarded by the operator middleware in `http::router`).
pub fn operator_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/archive/bursts", get(list))
        .route("/v1/archive/bursts/{id}", get(one).delete(delete_one))
        .route("/v1/archive/bursts/{id}/audio", get(audio))
        .route("/v1/archive/files/{file}", get(file))
        .route("/v1/archive/getRecordByRange", post(get_record_by_range))
        .route("/v1/archive/deleteRecords", post(delete_records))
        .route("/v1/archive/getVoicesInPage", post(get_voices_in_page))
}

/// Largest page number accepted (deeper pages are a mistake, not a query).
const MAX_PAGE: i64 = 1_000_000;

fn archive_dir(state: &AppState) -> Result<PathBuf, ApiError> {
    state.platform.recordings.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_RECORD,
            "recording is off ([recording] dir is unset): there is no archive",
        )
    })
}

fn unknown(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        codes::UNKNOWN_RECORD,
        format!("no recorded burst {what}"),
    )
}

fn parse_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad(format!(
            "a burst id is a positive integer, got {:?}",
            logsafe::esc(s).limit(40).to_string()
        ))
    })
}

/// A burst as the archive lists it.
fn burst_json(b: &BurstRow) -> Value {
    json!({
        "id": b.id,
        "file": b.file,
        "talker": b.talker,
        "talker_id": b.talker_id,
        "side": b.side,
        "server": b.server,
        "channel": b.channel,
        "group_id": b.group_id,
        "app_id": b.app_id,
        "start_ms": b.start_ms,
        "start": rfc3339::format_ms(b.start_ms),
        "duration_ms": b.duration_ms,
        "size_bytes": b.size_bytes,
        "codec": b.codec,
        "packets": b.packets,
        "url": format!("/v1/archive/bursts/{}/audio", b.id),
    })
}

// ---- times -------------------------------------------------------------------------------

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn civil_ms(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    let ok = (1970..=9999).contains(&y)
        && (1..=12).contains(&mo)
        && d >= 1
        && d <= days_in_month(y, mo)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..=60).contains(&s);
    ok.then(|| ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + s * 1000)
}

fn num(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A point in time, UTC: ms since the epoch (up to 13 digits), `yyyyMMddHHmmss` (the
/// 527meeting spec's), a date `yyyy-MM-dd` / `yyyy/MM/dd` (Totalk's; as an end, the whole
/// day is included) or RFC 3339 (`2026-12-07T08:30:00Z`, `.sss` and `±hh:mm` allowed).
pub fn parse_time(raw: &str, end: bool) -> Option<i64> {
    parse_time_as(raw, end, true)
}

/// [`parse_time`], with ms since the epoch accepted or not (the specs' dates are never ms:
/// there `2021` is a mistake, not 2 seconds after 1970).
fn parse_time_as(raw: &str, end: bool, ms: bool) -> Option<i64> {
    let s = raw.trim();
    if ms
        && s.len() <= 13
        && let Some(ms) = num(s)
    {
        return Some(ms);
    }
    let b = s.as_bytes();
    if s.len() == 14 && num(s).is_some() {
        let f = |r: std::ops::Range<usize>| num(&s[r]);
        return civil_ms(
            f(0..4)?,
            f(4..6)?,
            f(6..8)?,
            f(8..10)?,
            f(10..12)?,
            f(12..14)?,
        );
    }
    if s.len() < 10 || !s.is_char_boundary(10) {
        return None;
    }
    let sep = b[4];
    if !(sep == b'-' || sep == b'/') || b[7] != sep {
        return None;
    }
    let (y, mo, d) = (
        s.get(0..4).and_then(num)?,
        s.get(5..7).and_then(num)?,
        s.get(8..10).and_then(num)?,
    );
    if s.len() == 10 {
        let day = civil_ms(y, mo, d, 0, 0, 0)?;
        return Some(if end { day + 86_400_000 } else { day });
    }
    // Date and time.
    let rest = &s[10..];
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    if rest.len() < 8 || !rest.is_char_boundary(8) {
        return None;
    }
    let t = rest.as_bytes();
    if t[2] != b':' || t[5] != b':' {
        return None;
    }
    let (h, mi, sec) = (
        rest.get(0..2).and_then(num)?,
        rest.get(3..5).and_then(num)?,
        rest.get(6..8).and_then(num)?,
    );
    let mut ms = civil_ms(y, mo, d, h, mi, sec)?;
    let mut zone = &rest[8..];
    if let Some(frac) = zone.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let f = &frac[..digits];
        let first3: String = f.chars().chain("000".chars()).take(3).collect();
        ms += num(&first3)?;
        zone = &frac[digits..];
    }
    let offset_min = match zone {
        "" | "Z" | "z" => 0,
        z if z.len() == 6
            && (z.starts_with('+') || z.starts_with('-'))
            && z.get(3..4) == Some(":") =>
        {
            let (oh, om) = (z.get(1..3).and_then(num)?, z.get(4..6).and_then(num)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if z.starts_with('-') { -m } else { m }
        }
        _ => return None,
    };
    Some(ms - offset_min * 60_000)
}

fn time_param(v: Option<String>, key: &str, end: bool) -> Result<Option<i64>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_time(&s, end).map(Some).ok_or_else(|| {
            ApiError::bad(format!(
                "{key}: not a time: {:?} (ms since the epoch, yyyyMMddHHmmss, yyyy-MM-dd or RFC 3339, UTC)",
                logsafe::esc(&s).limit(40).to_string()
            ))
        }),
    }
}

/// A date of the specs' shapes: as [`time_param`] but never ms since the epoch.
fn spec_date(v: Option<String>, key: &str, end: bool) -> Result<Option<i64>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_time_as(&s, end, false).map(Some).ok_or_else(|| {
            ApiError::bad(format!(
                "{key}: not a date: {:?} (yyyyMMddHHmmss, yyyy-MM-dd or RFC 3339, UTC)",
                logsafe::esc(&s).limit(40).to_string()
            ))
        }),
    }
}

fn check_range(from: Option<i64>, to: Option<i64>) -> Result<(), ApiError> {
    match (from, to) {
        (Some(f), Some(t)) if t < f => Err(ApiError::bad(
            "the end of the time range is before its start",
        )),
        _ => Ok(()),
    }
}

fn check_page_size(size: i64, key: &str) -> Result<u32, ApiError> {
    if (1..=i64::from(MAX_PAGE_SIZE)).contains(&size) {
        Ok(size as u32)
    } else {
        Err(ApiError::bad(format!(
            "{key} must be 1..={MAX_PAGE_SIZE}, got {size}"
        )))
    }
}

/// A page number counted from `base` (0 or 1), as the store's (from 1).
fn check_page(page: i64, base: i64, key: &str) -> Result<u32, ApiError> {
    if (base..=MAX_PAGE).contains(&page) {
        Ok((page - base + 1) as u32)
    } else {
        Err(ApiError::bad(format!(
            "{key} must be {base}..={MAX_PAGE}, got {page}"
        )))
    }
}

// ---- the archive's own routes --------------------------------------------------------------

/// `GET /v1/archive/bursts?channel&talker&server&from&to&page&page_size&order`.
async fn list(State(state): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = serde_urlencoded_like(raw.as_deref().unwrap_or(""))?;
    const KNOWN: [&str; 9] = [
        "channel",
        "talker",
        "server",
        "name",
        "from",
        "to",
        "page",
        "page_size",
        "order",
    ];
    if let Some(k) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "unknown parameter {:?} (known: {})",
            logsafe::esc(k).limit(40).to_string(),
            KNOWN.join(", ")
        )));
    }
    archive_dir(&state)?;
    let from = time_param(string(&q, "from"), "from", false)?;
    let to = time_param(string(&q, "to"), "to", true)?;
    check_range(from, to)?;
    let page = check_page(int(&q, "page", false)?.unwrap_or(1), 1, "page")?;
    let page_size = check_page_size(int(&q, "page_size", false)?.unwrap_or(20), "page_size")?;
    let newest_first = match string(&q, "order").as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(ApiError::bad("order is asc or desc")),
    };
    let query = BurstQuery {
        channel: string(&q, "channel"),
        talker: string(&q, "talker"),
        server: string(&q, "server"),
        name_like: string(&q, "name"),
        from_ms: from,
        to_ms: to,
        newest_first,
    };
    let (rows, total) = state.platform.store.bursts(&query, page, page_size)?;
    Ok(Json(
        Envelope::ok()
            .with("total", total)
            .with("page", page)
            .with("page_size", page_size)
            .with("bursts", rows.iter().map(burst_json).collect::<Vec<_>>())
            .into_value(),
    ))
}

async fn one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    archive_dir(&state)?;
    let id = parse_id(&id)?;
    let row = state.platform.store.burst(id)?.ok_or_else(|| unknown(id))?;
    Ok(Json(
        Envelope::ok().with("burst", burst_json(&row)).into_value(),
    ))
}

async fn delete_one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    let dir = archive_dir(&state)?;
    let id = parse_id(&id)?;
    let store = state.platform.store.clone();
    let row = tokio::task::spawn_blocking(move || crate::recording::delete_burst(&store, &dir, id))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL,
                e.to_string(),
            )
        })??
        .ok_or_else(|| unknown(id))?;
    tracing::info!(id, file = %row.file, "recorded burst deleted by an operator");
    Ok(Json(Envelope::ok().with("deleted", 1).into_value()))
}

async fn audio(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dir = archive_dir(&state)?;
    let id = parse_id(&id)?;
    let row = state.platform.store.burst(id)?.ok_or_else(|| unknown(id))?;
    serve(&dir, &row, &headers).await
}

/// `GET /v1/archive/files/{file}`: a burst by its file name (the `comment` / `url` of the
/// specs' shapes). Only a plain name that the index knows.
async fn file(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dir = archive_dir(&state)?;
    if !crate::recording::safe_file_name(&name) {
        return Err(ApiError::bad(format!(
            "not a recording's file name: {:?}",
            logsafe::esc(&name).limit(60).to_string()
        )));
    }
    let row = state
        .platform
        .store
        .burst_by_file(&name)?
        .ok_or_else(|| unknown(format!("in file {name:?}")))?;
    serve(&dir, &row, &headers).await
}

/// A single `bytes=` range of a file of `len` bytes: `Ok(None)` = the whole file (no or an
/// unusable/multi-range header, which RFC 9110 lets a server ignore), `Err` = unsatisfiable.
fn byte_range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ok(None),
        (true, false) => {
            // The last n bytes.
            let n: u64 = b.parse().map_err(|_| ())?;
            if n == 0 || len == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len - 1)
        }
        (false, _) => {
            let start: u64 = a.parse().map_err(|_| ())?;
            let end: u64 = if b.is_empty() {
                u64::MAX
            } else {
                b.parse().map_err(|_| ())?
            };
            if end < start || start >= len {
                return Err(());
            }
            (start, end.min(len - 1))
        }
    };
    Ok(Some((start, end)))
}

/// Bytes read from a recording at a time while it streams out.
const STREAM_CHUNK: usize = 64 * 1024;

/// Serves a burst's file (whole, or the asked range), from inside `dir` only.
async fn serve(
    dir: &std::path::Path,
    row: &BurstRow,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let gone = || unknown(format!("{} (its file is gone)", row.id));
    if !crate::recording::safe_file_name(&row.file) {
        return Err(gone());
    }
    let base = tokio::fs::canonicalize(dir).await.map_err(|_| gone())?;
    let path = tokio::fs::canonicalize(dir.join(&row.file))
        .await
        .map_err(|_| gone())?;
    if !path.starts_with(&base) || path.parent() != Some(base.as_path()) {
        return Err(gone());
    }
    let mut f = tokio::fs::File::open(&path).await.map_err(|_| gone())?;
    let meta = f.metadata().await.map_err(|_| gone())?;
    if !meta.is_file() {
        return Err(gone());
    }
    let len = meta.len();
    let range = match byte_range(headers, len) {
        Ok(r) => r,
        Err(()) => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                codes::BAD_RANGE,
                format!("range outside the file ({len} bytes)"),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            return Ok(r);
        }
    };
    let (start, end) = range.unwrap_or((0, len.saturating_sub(1)));
    let count = if len == 0 { 0 } else { end - start + 1 };
    f.seek(SeekFrom::Start(start)).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            format!("cannot read the recording: {e}"),
        )
    })?;
    // Streamed in 64 KiB reads: an hour-long room recording is never held in memory, and a
    // client that reads slowly holds one chunk (the listener's write timeout ends a stalled one).
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        f.take(count),
        STREAM_CHUNK,
    ));
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("audio/ogg; codecs=opus"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{}\"", row.file)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).expect("ascii"),
        );
    }
    Ok(r)
}

// ---- the specs' shapes ---------------------------------------------------------------------

/// A JSON field as text: strings trimmed (the Totalk examples pad them: `" 1001 "`), numbers
/// as written; empty = absent.
fn text(v: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ApiError::bad(format!("{key} must be a string or a number"))),
    }
}

fn integer(v: &Value, key: &str, default: Option<i64>) -> Result<i64, ApiError> {
    match text(v, key)? {
        None => default.ok_or_else(|| ApiError::bad(format!("missing {key}"))),
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::bad(format!("{key} must be an integer"))),
    }
}

fn json_body(raw: &Bytes) -> Result<Value, ApiError> {
    let v: Value = body(raw)?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ApiError::bad("the body is a JSON object"))
    }
}

/// What the spec's burst queries share: `startDate`/`endDate` and a page from 0 (`page_key`
/// names its field: `pageNo` or `pageIndex`) of `pageSize`.
struct SpecWindow {
    from: Option<i64>,
    to: Option<i64>,
    page: u32,
    page_size: u32,
}

impl SpecWindow {
    fn read(v: &Value, page_key: &'static str) -> Result<Self, ApiError> {
        let from = spec_date(text(v, "startDate")?, "startDate", false)?;
        let to = spec_date(text(v, "endDate")?, "endDate", true)?;
        check_range(from, to)?;
        Ok(Self {
            from,
            to,
            page: check_page(integer(v, page_key, None)?, 0, page_key)?,
            page_size: check_page_size(integer(v, "pageSize", None)?, "pageSize")?,
        })
    }
}

/// 527meeting `rtcPeer.getRecordByRange` (§2.31): `userId` (the talker's id or name), `name`
/// (fuzzy talker name), `startDate`/`endDate` (`yyyyMMddHHmmss` UTC), `pageNo` from 0,
/// `pageSize`; `orgId` is accepted and not used (one bridge, one archive).
async fn get_record_by_range(State(state): State<Arc<AppState>>, raw: Bytes) -> ApiResult {
    archive_dir(&state)?;
    let v = json_body(&raw)?;
    let SpecWindow {
        from,
        to,
        page,
        page_size,
    } = SpecWindow::read(&v, "pageNo")?;
    let query = BurstQuery {
        talker: text(&v, "userId")?,
        name_like: text(&v, "name")?,
        from_ms: from,
        to_ms: to,
        newest_first: true,
        ..BurstQuery::default()
    };
    let (rows, total) = state.platform.store.bursts(&query, page, page_size)?;
    let total_page = (total + i64::from(page_size) - 1) / i64::from(page_size);
    let list: Vec<Value> = rows
        .iter()
        .map(|b| {
            json!({
                "id": b.id,
                "userId": b.talker_id,
                "name": b.talker,
                "roomName": b.channel,
                "groupId": b.group_id,
                "startTime": rfc3339::format_ms(b.start_ms),
                "endTime": rfc3339::format_ms(b.start_ms + b.duration_ms),
                "duration": b.duration_ms,
                "size": b.size_bytes,
                "comment": b.file,
                "url": format!("/v1/archive/files/{}", b.file),
            })
        })
        .collect();
    Ok(Json(
        Envelope::ok()
            .with("result", 0)
            .with("recordList", list)
            .with("totalPage", total_page)
            .with("total", total)
            .into_value(),
    ))
}

/// 527meeting `rtcPeer.deleteRecords` (§2.32): `{recordIds: [..]}` → `result` 0 when every
/// one was deleted, 1 when any was unknown (the known ones are deleted all the same).
async fn delete_records(State(state): State<Arc<AppState>>, raw: Bytes) -> ApiResult {
    let dir = archive_dir(&state)?;
    let v = json_body(&raw)?;
    let Some(ids) = v.get("recordIds").and_then(Value::as_array) else {
        return Err(ApiError::bad(
            "recordIds: an array of record ids is required",
        ));
    };
    if ids.is_empty() || ids.len() > 1000 {
        return Err(ApiError::bad("recordIds: 1 to 1000 ids"));
    }
    let ids: Vec<i64> = ids
        .iter()
        .map(|i| match i {
            Value::Number(n) => n.as_i64().filter(|i| *i > 0),
            Value::String(s) => s.trim().parse().ok().filter(|i: &i64| *i > 0),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| ApiError::bad("recordIds: every id is a positive integer"))?;
    let store = state.platform.store.clone();
    let (deleted, unknown_ids) = tokio::task::spawn_blocking(move || {
        let mut deleted = 0;
        let mut unknown = Vec::new();
        for id in ids {
            match crate::recording::delete_burst(&store, &dir, id)? {
                Some(_) => deleted += 1,
                None => unknown.push(id),
            }
        }
        Ok::<_, crate::storage::StoreError>((deleted, unknown))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            e.to_string(),
        )
    })??;
    tracing::info!(deleted, "recorded bursts deleted by an operator");
    Ok(Json(
        Envelope::ok()
            .with("result", i32::from(!unknown_ids.is_empty()))
            .with("deleted", deleted)
            .with("unknown", unknown_ids)
            .into_value(),
    ))
}

/// Totalk `getVoicesInPage`: `pageIndex` from 0, `pageSize`, `uid` (talker id or name), `cid`
/// (channel name or group id), `startDate`/`endDate` (`yyyy-MM-dd`, the end day included).
/// The spec's `code: 200, reason: success` becomes the envelope's `code: 0` (with `reason`).
async fn get_voices_in_page(State(state): State<Arc<AppState>>, raw: Bytes) -> ApiResult {
    archive_dir(&state)?;
    let v = json_body(&raw)?;
    let SpecWindow {
        from,
        to,
        page,
        page_size,
    } = SpecWindow::read(&v, "pageIndex")?;
    let query = BurstQuery {
        talker: text(&v, "uid")?,
        channel: text(&v, "cid")?,
        from_ms: from,
        to_ms: to,
        newest_first: true,
        ..BurstQuery::default()
    };
    let (rows, total) = state.platform.store.bursts(&query, page, page_size)?;
    let data: Vec<Value> = rows
        .iter()
        .map(|b| {
            json!({
                "id": b.id,
                "cid": b.channel,
                "uid": b.talker_id,
                "name": b.talker,
                "duration": (b.duration_ms + 999) / 1000,
                "duration_ms": b.duration_ms,
                "time": rfc3339::format_ms(b.start_ms).replace('T', " ").trim_end_matches('Z').split('.').next().unwrap_or_default(),
                "url": format!("/v1/archive/files/{}", b.file),
            })
        })
        .collect();
    Ok(Json(
        Envelope::ok()
            .with("reason", "success")
            .with("total", total)
            .with("data", data)
            .into_value(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_shape() {
        let day = 1_765_065_600_000; // 2025-12-07T00:00:00Z
        assert_eq!(parse_time("2025-12-07", false), Some(day));
        assert_eq!(parse_time("2025/12/07", true), Some(day + 86_400_000));
        assert_eq!(parse_time("20251207083000", false), Some(day + 30_600_000));
        assert_eq!(
            parse_time("2025-12-07T08:30:00Z", false),
            Some(day + 30_600_000)
        );
        assert_eq!(
            parse_time("2025-12-07 08:30:00.250", false),
            Some(day + 30_600_250)
        );
        assert_eq!(
            parse_time("2025-12-07T10:30:00+02:00", false),
            Some(day + 30_600_000)
        );
        assert_eq!(parse_time("1765065600000", false), Some(day));
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-02-30",
            "2025-12-07T25:00:00Z",
            "2025-12-07T08:30",
            "20251307083000",
            "2025-12-07T08:30:00+2",
            "99999999999999999999",
            "2025-12-07x",
            "é025-12-07",
            "2025-12-07T08:30:00.Z",
        ] {
            assert_eq!(parse_time(bad, false), None, "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(byte_range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(byte_range(&h("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(byte_range(&h("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(&h("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(&h("bytes=50-1000"), 100), Ok(Some((50, 99))));
        assert_eq!(byte_range(&h("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(&h("bytes=9-1"), 100), Err(()));
        assert_eq!(byte_range(&h("bytes=x-1"), 100), Err(()));
        assert_eq!(byte_range(&h("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(byte_range(&h("items=0-1"), 100), Ok(None));
    }
}
