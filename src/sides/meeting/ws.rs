//! `/rtcpeer`: one WebSocket per client. Text frames are requests; each gets exactly one reply
//! (errors too, in the protocol's shape: `result` ≠ 0 and a `message`). Pushes share the socket.
//! A bad frame never closes the connection; binary frames are refused with an error reply. The
//! server pings every 2 s and lets a client go after 8 s without a frame or a pong,
//! `meeting.auth_timeout_ms` without registering, or 10 s without taking a frame it was sent.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use logsafe::{RateLimit, esc};
use rtcpeer::frame::MAX_FRAME;
use rtcpeer::{Frame, Request, reply};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use super::outbox::OUTBOX;
use super::switchboard::Switchboard;
use crate::auth::limiter::TokenBucket;

/// The server pings every client this often…
const PING_EVERY: Duration = Duration::from_secs(2);
/// …and drops one it has heard nothing from (no frame, no pong) for this long.
const SILENCE: Duration = Duration::from_secs(8);
/// A client that has not taken a frame for this long has stopped reading: it is let go
/// rather than holding its connection (and its queued replies) forever.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// Upgrades `GET /rtcpeer` (503 when `meeting.max_connections` are open).
pub async fn upgrade(State(sb): State<Arc<Switchboard>>, ws: WebSocketUpgrade) -> Response {
    if sb.connections() >= sb.config.max_connections {
        metrics::counter!("pttbridge_meeting_limited_total", "limit" => "connections").increment(1);
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many /rtcpeer connections (meeting.max_connections); try later\n",
        )
            .into_response();
    }
    ws.max_message_size(MAX_FRAME * 2)
        // Requests are small JSON (an SDP is a few KiB): no 128 KiB read buffer per client.
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |socket| serve(sb, socket))
}

async fn serve(sb: Arc<Switchboard>, socket: WebSocket) {
    let (tx, mut rx) = mpsc::channel(OUTBOX);
    // Why the server ends the connection, for the close frame (after what is queued).
    let (close_tx, mut close_rx) = oneshot::channel::<CloseFrame>();
    let mut conn = sb.connect(tx.clone());
    let span = info_span!("rtcpeer", conn = conn.id);
    async {
        let (mut sink, mut stream) = socket.split();
        // Writer: replies and pushes, in order, from one queue; a ping when it has been quiet.
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(PING_EVERY);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Ends with the reader's close frame (after what was queued), if it gave one.
            let frame = loop {
                let msg = tokio::select! {
                    biased;
                    v = rx.recv() => match v {
                        Some(v) => Message::Text(v.to_string().into()),
                        None => break None,
                    },
                    frame = &mut close_rx => break frame.ok(),
                    _ = ping.tick() => Message::Ping(Default::default()),
                };
                match tokio::time::timeout(WRITE_STALL, sink.send(msg)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break None,
                    Err(_) => {
                        metrics::counter!("pttbridge_meeting_errors_total", "kind" => "write_stall")
                            .increment(1);
                        info!("the client took no frame for {WRITE_STALL:?}: let go");
                        // Dropping the queue ends the reader too (its next reply has nowhere to go).
                        return;
                    }
                }
            };
            // The queue may have ended (every sender gone) just as the reason was given.
            match frame.or_else(|| close_rx.try_recv().ok()) {
                Some(frame) => {
                    let close = Message::Close(Some(frame));
                    let _ = tokio::time::timeout(WRITE_STALL, sink.send(close)).await;
                }
                None => {
                    let _ = sink.close().await;
                }
            }
        });
        // Until it registers a socket can do nothing but hold a connection slot: it gets
        // `auth_timeout_ms`. A real client makes a few requests per call: beyond the rate they
        // are answered 429 rather than served.
        let cfg = &sb.config;
        let auth_timeout = Duration::from_millis(cfg.auth_timeout_ms);
        let register_by = tokio::time::Instant::now() + auth_timeout;
        let mut budget = TokenBucket::new(cfg.requests_per_second, cfg.request_burst);
        let mut close = None;
        // Served by the node owning the dialled channel, once the client calls one (cluster).
        let mut relay: Option<super::remote::Relay> = None;
        loop {
            // Anything from the client (a pong included) proves it is there; a client that
            // vanished without closing (frozen, unplugged) is let go after SILENCE.
            let next = tokio::select! {
                m = tokio::time::timeout(SILENCE, stream.next()) => Ok(m),
                Some(reason) = conn.kicked.recv() => Err(Some(reason)),
                _ = tokio::time::sleep_until(register_by), if conn.user.is_none() => Err(None),
                end = super::remote::ended(&mut relay) => {
                    relay = None;
                    if end.close {
                        info!(reason = %esc(&end.reason), "relayed connection ended by its node");
                        break;
                    }
                    info!(reason = %esc(&end.reason), "relayed connection is served here again");
                    continue;
                }
            };
            let next = match next {
                Ok(m) => m,
                Err(Some(reason)) => {
                    // A platform's kickout: the client is told why, then the socket closes.
                    sb.kick_out(&mut conn, &reason).await;
                    break;
                }
                Err(None) => {
                    metrics::counter!("pttbridge_meeting_errors_total", "kind" => "register_timeout")
                        .increment(1);
                    info!("not registered within {auth_timeout:?}: closed");
                    let why = format!(
                        "register (call.doRegister with your SID) within {} ms of connecting",
                        cfg.auth_timeout_ms
                    );
                    let _ = tx.try_send(reply::error(
                        "call",
                        "doRegister",
                        rtcpeer::code::UNAUTHORIZED,
                        &why,
                    ));
                    close = Some(CloseFrame {
                        code: axum::extract::ws::close_code::POLICY,
                        reason: why.into(),
                    });
                    break;
                }
            };
            let msg = match next {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => {
                    metrics::counter!("pttbridge_meeting_errors_total", "kind" => "ws_timeout")
                        .increment(1);
                    info!("no frame or pong for {SILENCE:?}: the client is gone");
                    break;
                }
            };
            let text = match msg {
                Ok(Message::Text(t)) => t,
                Ok(Message::Binary(_)) => {
                    metrics::counter!("pttbridge_meeting_errors_total", "kind" => "binary_frame")
                        .increment(1);
                    let _ = tx
                        .send(reply::error(
                            "",
                            "",
                            rtcpeer::code::MALFORMED,
                            "binary frames are not used: send JSON text",
                        ))
                        .await;
                    continue;
                }
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => {
                    debug!(error = %esc(&e), "socket error");
                    break;
                }
            };
            metrics::counter!("pttbridge_meeting_requests_total").increment(1);
            let parsed = Frame::parse(text.as_str()).and_then(|f| Request::from_frame(&f));
            let answer = match parsed {
                _ if !budget.take(std::time::Instant::now()) => {
                    metrics::counter!("pttbridge_meeting_errors_total", "kind" => "rate_limited")
                        .increment(1);
                    let (module, method) = match &parsed {
                        Ok(req) => req.envelope(),
                        Err(e) => e.envelope(),
                    };
                    reply::error(
                        module,
                        method,
                        rtcpeer::code::TOO_MANY,
                        &format!(
                            "more than {} requests per second: slow down",
                            cfg.requests_per_second
                        ),
                    )
                }
                Ok(req) if chat_len(&req) > cfg.max_chat_bytes => {
                    metrics::counter!("pttbridge_meeting_errors_total", "kind" => "chat_too_long")
                        .increment(1);
                    let (module, method) = req.envelope();
                    reply::error(
                        module,
                        method,
                        rtcpeer::code::BAD_FIELDS,
                        &format!(
                            "content is {} bytes; at most {} (meeting.max_chat_bytes) are sent",
                            chat_len(&req),
                            cfg.max_chat_bytes
                        ),
                    )
                }
                Ok(req) => {
                    if matches!(req, Request::DoRegister(_) | Request::Logout(_))
                        && let Some(r) = relay.take()
                    {
                        // The session is this node's: the relay ends and the request is served here.
                        r.close().await;
                    }
                    if relay.is_none()
                        && let Some(node) = super::remote::route_for(&sb, conn.user, &req).await
                    {
                        match super::remote::Relay::open(&sb, &mut conn, node, &req).await {
                            Ok(r) => relay = Some(r),
                            Err(refused) => {
                                let (module, method) = req.envelope();
                                let _ = tx.send(reply::error(module, method, refused.0, &refused.1)).await;
                                continue;
                            }
                        }
                    }
                    if let Some(r) = &relay {
                        match r.forward(text.as_str()).await {
                            // The reply comes back from the owner, in order with its pushes.
                            Ok(()) => continue,
                            Err(refused) => {
                                let (module, method) = req.envelope();
                                reply::error(module, method, refused.0, &refused.1)
                            }
                        }
                    } else {
                        match sb.handle(&mut conn, req).await {
                            Some(answer) => answer,
                            // Queued already, in order with the pushes that follow it.
                            None => continue,
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!("pttbridge_meeting_errors_total", "kind" => e.kind())
                        .increment(1);
                    // Any client can send these at will: at most so many lines per window.
                    static BAD_REQUEST: RateLimit = RateLimit::warn("bad request");
                    if BAD_REQUEST.allow() {
                        warn!(error = %esc(&e), "bad request");
                    }
                    let (module, method) = e.envelope();
                    reply::error(module, method, e.code(), &e.to_string())
                }
            };
            // Replies wait for room in the queue (the client reads them); only pushes are dropped.
            if tx.send(answer).await.is_err() {
                break;
            }
        }
        if let Some(r) = relay.take() {
            r.close().await;
        }
        sb.disconnect(&mut conn).await;
        sb.closed();
        if let Some(frame) = close {
            let _ = close_tx.send(frame);
        }
        drop(tx);
        drop(conn);
        // Room or registry may still hold a clone of the outbox for a moment: do not wait on them.
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    }
    .instrument(span)
    .await;
}

/// Bytes of chat text in `req` (0 for anything but `chat` and `privateChat`): chat goes to
/// every member and into a PTT channel, so it is bounded well below a frame.
fn chat_len(req: &Request) -> usize {
    match req {
        Request::Chat(c) => c.content.len(),
        Request::PrivateChat(c) => c.content.len(),
        _ => 0,
    }
}
