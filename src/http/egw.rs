//! `/egw`: the event-gateway WebSocket, and `GET /server/address?appType=8` that points to it.
//!
//! One task per connection owns its [`egw::Session`] and a bus receiver subscribed when the
//! socket opens, so a full sync (a snapshot at version V taken under the bus lock) followed by
//! the buffered events above V is gap-free and never counts an event twice. A client is cut
//! off — never waited for — when it falls behind the bus buffer (close 4001), when one frame
//! cannot be written within `egw.send_timeout_ms` (it stopped reading), or when it sends
//! nothing for `egw.heartbeat_timeout_ms` (close 4000), or has not logged in within
//! `egw.auth_timeout_ms` of connecting (close 4002).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use egw::rest::{Envelope, codes};
use egw::{Action, Session};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{Instrument, debug, info, info_span, warn};

use super::AppState;
use crate::auth::web::PeerIp;
use futures_util::SinkExt;

use crate::events::egw::sync_reply;

/// Close code: no frame from the client within the heartbeat timeout.
pub const CLOSE_HEARTBEAT_TIMEOUT: u16 = 4000;
/// Close code: the client fell behind the event stream.
pub const CLOSE_TOO_SLOW: u16 = 4001;
/// Close code: the client did not log in (20000) within `egw.auth_timeout_ms`.
pub const CLOSE_LOGIN_TIMEOUT: u16 = 4002;

/// `GET /egw`: upgrades to the EGW WebSocket.
pub(super) async fn upgrade(
    State(state): State<Arc<AppState>>,
    PeerIp(addr): PeerIp,
    ws: WebSocketUpgrade,
) -> Response {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let conn = NEXT.fetch_add(1, Ordering::Relaxed);
    // Room for an oversize frame to reach the parser (which answers "too large"); far beyond
    // that the WebSocket layer closes the connection.
    ws.max_message_size(egw::MAX_FRAME * 4)
        // Client frames are small and rare. tungstenite allocates the read buffer eagerly and
        // zero-fills up to its size on every read attempt, and a connection attempts one each
        // time it wakes for an event: 128 KiB (its default) would dominate the cost of a
        // thousand subscribers, 8 KiB was still 80 MB of memset per event at ten thousand.
        // Larger frames are read in more than one go.
        .read_buffer_size(1024)
        .on_upgrade(move |socket| {
            let span = info_span!("egw", conn);
            connection(socket, state, addr).instrument(span)
        })
}

/// Notices one EGW connection may have waiting for the admin API at once.
const NOTICES_IN_FLIGHT: usize = 4;

/// Extension 20013: checks the notice and pushes it through the directory in a task of its own
/// (the admin API may take seconds), whose 20014 comes back on `replies`; or the error reply to
/// send at once.
fn start_notice(
    platform: &crate::events::Platform,
    n: egw::Notice,
    replies: &tokio::sync::mpsc::Sender<String>,
) -> Option<String> {
    let reply = |code, message: &str, seq: Option<serde_json::Value>| {
        let mut r = egw::Reply::new(egw::ids::NOTICE_REPLY, code, message);
        r.seq = seq;
        r.to_json()
    };
    let Some(dir) = platform.directory.clone() else {
        let why = "no directory configured ([directory] url)";
        return Some(reply(egw::ErrorCode::Failed, why, n.seq));
    };
    let target = match super::directory::notice_target(&n.target_type, n.target_id, &n.content) {
        Ok(t) => t,
        Err(why) => return Some(reply(egw::ErrorCode::BadRequest, &why, n.seq)),
    };
    let Ok(permit) = replies.clone().try_reserve_owned() else {
        let why = "too many notices in flight on this connection";
        return Some(reply(egw::ErrorCode::Failed, why, n.seq));
    };
    tokio::spawn(async move {
        let op = totalk_admin::Operation::PushNotice {
            target,
            content: n.content,
            tts: n.tts,
        };
        let text = match dir.call(op).await {
            Ok(_) => reply(egw::ErrorCode::Ok, "notice pushed", n.seq),
            Err(e) => reply(egw::ErrorCode::Failed, &format!("admin API: {e}"), n.seq),
        };
        permit.send(text);
    });
    None
}

enum End {
    ClientClosed,
    Shutdown,
    Cut(u16, String),
    Stuck,
}

async fn connection(mut socket: WebSocket, state: Arc<AppState>, addr: Option<std::net::IpAddr>) {
    // Subscribed before anything else: every event from now on is either in a later full
    // sync's snapshot or in this receiver (or both, and then skipped by version).
    let mut rx = state.platform.egw_feed.subscribe(&state.bus);
    let platform = state.platform.clone();
    let idle = platform.egw.heartbeat_timeout();
    let send_timeout = platform.egw.send_timeout();
    let mut session = Session::new();
    // Per app: events up to this version are in a full sync already sent.
    let mut synced: HashMap<String, u64> = HashMap::new();
    let delivered = metrics::histogram!("pttbridge_event_delivery_seconds", "sink" => "egw");
    let sent = metrics::counter!("pttbridge_egw_events_sent_total");
    // The timers and the shutdown watch are made once and polled on every wake-up: made anew
    // in each round of the loop they cost a timer (de)registration and a lock on the watch
    // shared by every connection, for each event and each of ten thousand connections.
    let heartbeat = tokio::time::sleep(idle);
    let login = sleep_until(Instant::now() + platform.egw.auth_timeout());
    let mut shutdown_rx = state.shutdown.clone();
    let shutdown = async move {
        let _ = shutdown_rx.wait_for(|s| *s).await;
    };
    tokio::pin!(heartbeat, login, shutdown);
    let mut deadline = heartbeat.deadline();
    // Notices whose 20014 is still to come.
    let mut notices = 0usize;
    // Reused for each batch of frames.
    let mut batch: Vec<Message> = Vec::new();
    let mut published: Vec<u64> = Vec::new();
    // Answers (20014) of notices pushed in tasks of their own; the capacity bounds how many one
    // connection has in flight.
    let (notice_tx, mut notice_rx) = tokio::sync::mpsc::channel::<String>(NOTICES_IN_FLIGHT);
    metrics::gauge!("pttbridge_egw_connections").increment(1.0);
    debug!("EGW client connected");

    let end = loop {
        tokio::select! {
            biased;
            frame_in = socket.recv() => {
                let text = match frame_in {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        deadline = Instant::now() + idle;
                        count_error("binary");
                        let reply = egw::Reply::new(egw::ids::ERROR, egw::ErrorCode::BadRequest, "binary frames are not EGW requests; send JSON text");
                        if !send(&mut socket, reply.to_json(), send_timeout).await { break End::Stuck; }
                        continue;
                    }
                    Some(Ok(_)) => continue, // ping/pong: answered by the WebSocket layer
                };
                deadline = Instant::now() + idle;
                let out = match session.handle(text.as_str(), |d, t| platform.authenticate_from(addr, d, t)) {
                    Ok(Action::Reply(r)) => vec![r.to_json()],
                    Ok(Action::Notice(n)) => match start_notice(&platform, n, &notice_tx) {
                        Some(refused) => vec![refused],
                        None => {
                            notices += 1;
                            Vec::new()
                        }
                    },
                    Ok(Action::FullSync { apps, seq }) => {
                        let wanted: Vec<(String, Option<Vec<String>>)> = match apps {
                            Some(list) => list.into_iter().map(|a| (a.app_id, a.group_list)).collect(),
                            None => visible_apps(&state, session.grant()).into_iter().map(|a| (a, None)).collect(),
                        };
                        let mut frames = Vec::with_capacity(wanted.len());
                        for (app, groups) in wanted {
                            let (version, model) = state.bus.snapshot(&app, groups.as_deref());
                            let floor = synced.entry(app.clone()).or_insert(0);
                            *floor = (*floor).max(version);
                            let mut reply = sync_reply(&app, version, &model);
                            reply.seq = seq.clone();
                            if groups.is_none()
                                && let Some(d) = &platform.directory
                            {
                                reply.directory_user_list = d.sync_users(&crate::directory::ptt_online(&model));
                            }
                            frames.push(reply.to_json());
                        }
                        if frames.is_empty() {
                            frames.push(egw::SyncReply::new(String::new(), 0, Vec::new()).to_json());
                        }
                        frames
                    }
                    Err(e) => {
                        count_error(e.kind());
                        // Bad frames and failed logins, as often as a client likes.
                        static REFUSED: logsafe::RateLimit =
                            logsafe::RateLimit::debug("EGW request refused");
                        if REFUSED.allow() {
                            debug!(error = %logsafe::esc(&e), "EGW request refused");
                        }
                        vec![e.reply().to_json()]
                    }
                };
                let mut written = true;
                for f in out {
                    written = written && send(&mut socket, f, send_timeout).await;
                }
                if !written { break End::Stuck; }
            }
            Some(reply) = notice_rx.recv(), if notices > 0 => {
                notices -= 1;
                if !send(&mut socket, reply, send_timeout).await { break End::Stuck; }
            }
            ev = rx.recv() => match ev {
                Ok(first) => {
                    // Take what else is ready too and write it with one flush.
                    let mut next = Some(first);
                    let mut lagged = None;
                    while let Some(f) = next.take() {
                        if session.wants(&f.app_id) && synced.get(&*f.app_id).is_none_or(|v| f.version > *v) {
                            batch.push(Message::Text(f.text));
                            published.push(f.time_ms);
                        }
                        if batch.len() < 64 {
                            match rx.try_recv() {
                                Ok(f) => next = Some(f),
                                Err(TryRecvError::Lagged(n)) => lagged = Some(n),
                                Err(_) => {}
                            }
                        }
                    }
                    let n = batch.len() as u64;
                    if n > 0 && !send_all(&mut socket, &mut batch, send_timeout).await { break End::Stuck; }
                    sent.increment(n);
                    for t in published.drain(..) {
                        delivered.record(crate::hub::Event::age_seconds(t));
                    }
                    if let Some(missed) = lagged {
                        break End::Cut(CLOSE_TOO_SLOW, format!("too slow: {missed} events missed; reconnect and full-sync"));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    break End::Cut(CLOSE_TOO_SLOW, format!("too slow: {missed} events missed; reconnect and full-sync"));
                }
                Err(RecvError::Closed) => break End::ClientClosed,
            },
            // The bridge is stopping: say so and let the server finish.
            () = &mut shutdown => break End::Shutdown,
            () = &mut login, if session.grant().is_none() => {
                break End::Cut(CLOSE_LOGIN_TIMEOUT, format!("no login (20000) within {} ms", platform.egw.auth_timeout_ms));
            }
            () = &mut heartbeat => {
                // Moved on by every client frame; only a silence this long ends the connection.
                if heartbeat.deadline() == deadline {
                    break End::Cut(CLOSE_HEARTBEAT_TIMEOUT, format!("no heartbeat for {} ms", idle.as_millis()));
                }
                heartbeat.as_mut().reset(deadline);
            }
        }
    };
    metrics::gauge!("pttbridge_egw_connections").decrement(1.0);
    match end {
        End::ClientClosed => debug!("EGW client closed"),
        End::Shutdown => {
            let close = Message::Close(Some(CloseFrame {
                code: 1001,
                reason: Utf8Bytes::from_static("bridge shutting down"),
            }));
            let _ = timeout(send_timeout, socket.send(close)).await;
        }
        End::Cut(code, reason) => {
            let label = match code {
                CLOSE_TOO_SLOW => "too_slow",
                CLOSE_LOGIN_TIMEOUT => "login_timeout",
                _ => "heartbeat_timeout",
            };
            static CUT: logsafe::RateLimit = logsafe::RateLimit::info("EGW client cut off");
            if CUT.allow() {
                info!(code, %reason, "EGW client cut off");
            }
            metrics::counter!("pttbridge_event_subscribers_cut_total", "sink" => "egw", "reason" => label).increment(1);
            let close = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            }));
            let _ = timeout(send_timeout, socket.send(close)).await;
        }
        End::Stuck => {
            static STUCK: logsafe::RateLimit =
                logsafe::RateLimit::warn("EGW client stopped reading; cut off");
            if STUCK.allow() {
                warn!("EGW client stopped reading; cut off");
            }
            metrics::counter!("pttbridge_event_subscribers_cut_total", "sink" => "egw", "reason" => "send_timeout").increment(1);
        }
    }
}

/// Sends one text frame; false when it could not be written in time (or the socket is gone).
async fn send(socket: &mut WebSocket, text: String, limit: std::time::Duration) -> bool {
    matches!(
        timeout(limit, socket.send(Message::Text(Utf8Bytes::from(text)))).await,
        Ok(Ok(()))
    )
}

/// Writes `frames` (leaving it empty) with one flush; false when not done in time (or the
/// socket is gone).
async fn send_all(
    socket: &mut WebSocket,
    frames: &mut Vec<Message>,
    limit: std::time::Duration,
) -> bool {
    let write = async {
        for f in frames.drain(..) {
            socket.feed(f).await?;
        }
        socket.flush().await
    };
    matches!(timeout(limit, write).await, Ok(Ok(())))
}

fn count_error(kind: &'static str) {
    metrics::counter!("pttbridge_errors_total", "side" => "egw", "kind" => kind).increment(1);
}

/// Apps a login sees in a full sync without `app_list`: its granted apps, or every app known.
fn visible_apps(state: &AppState, grant: Option<&egw::Grant>) -> Vec<String> {
    match grant {
        Some(egw::Grant::Apps(apps)) => apps.iter().cloned().collect(),
        Some(egw::Grant::AllApps) => {
            let mut apps = state.bus.apps();
            if let Ok(rows) = state.platform.store.apps() {
                apps.extend(rows.into_iter().map(|a| a.app_id));
            }
            apps.sort();
            apps.dedup();
            apps
        }
        None => Vec::new(),
    }
}

/// Query of `GET /server/address`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct AddressQuery {
    #[serde(rename = "appType")]
    app_type: Option<String>,
}

/// `GET /server/address?appType=8`: the EGW URL in the business envelope.
pub(super) async fn server_address(
    State(state): State<Arc<AppState>>,
    Query(q): Query<AddressQuery>,
) -> impl IntoResponse {
    match q.app_type.as_deref() {
        Some("8") => {}
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    Envelope::error(
                        codes::BAD_REQUEST,
                        &format!(
                            "appType {other:?} is not served here; the event gateway is appType=8"
                        ),
                    )
                    .into_value(),
                ),
            );
        }
        None => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    Envelope::error(codes::BAD_REQUEST, "missing appType (8 = event gateway)")
                        .into_value(),
                ),
            );
        }
    }
    // From the config only (`egw.public_url`, else `[http]`'s public URL or listen address):
    // a request's Host header is the client's word, not the bridge's address.
    let Some(url) = state.platform.egw.public_url.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                Envelope::error(
                    codes::INTERNAL,
                    "the bridge's public address is not configured: set http.public_url or egw.public_url",
                )
                .into_value(),
            ),
        );
    };
    (
        StatusCode::OK,
        Json(Envelope::ok().with("result", url).into_value()),
    )
}
