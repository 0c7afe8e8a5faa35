//! `GET /events`: every hub event as it happens, as Server-Sent Events (one JSON
//! object per `data:` line). A tap for operators, tests and the web page; platforms
//! use the EGW WebSocket or NATS.
//!
//! A subscriber that falls behind the bus buffer is told how many events it missed
//! and the stream ends, rather than slowing the hub down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;

pub(super) async fn stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let start = (state.bus.subscribe(), state.shutdown.clone());
    let events = futures_util::stream::unfold(Some(start), |st| async move {
        let (mut rx, mut shutdown) = st?;
        let next = tokio::select! {
            ev = rx.recv() => ev,
            // The bridge is stopping: end the stream so the server can finish.
            _ = shutdown.wait_for(|s| *s) => return None,
        };
        match next {
            Ok(ev) => {
                metrics::histogram!("pttbridge_event_delivery_seconds", "sink" => "sse")
                    .record(crate::hub::Event::age_seconds(ev.time_ms));
                let data = serde_json::to_string(&ev).unwrap_or_default();
                let sse = SseEvent::default().event(ev.kind.as_str()).data(data);
                Some((Ok(sse), Some((rx, shutdown))))
            }
            Err(RecvError::Lagged(missed)) => {
                metrics::counter!("pttbridge_event_subscribers_cut_total", "sink" => "sse", "reason" => "lagged")
                    .increment(1);
                let msg = format!("{{\"missed\":{missed},\"reason\":\"subscriber too slow\"}}");
                Some((Ok(SseEvent::default().event("lagged").data(msg)), None))
            }
            Err(RecvError::Closed) => None,
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
