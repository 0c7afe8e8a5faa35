//! The in-process event bus: numbers events per app and fans them out.
//!
//! Numbering and sending happen under one lock, so every subscriber sees each
//! app's events in version order with no gaps. Subscribers that fall behind the
//! bounded buffer are told so (`Lagged`) instead of slowing the publisher.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use super::event::{Draft, Event};

/// Events buffered per subscriber before it counts as lagging.
pub const SUBSCRIBER_BUFFER: usize = 8192;

/// Numbers and distributes events.
#[derive(Debug)]
pub struct EventBus {
    versions: Mutex<HashMap<String, u64>>,
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Self {
            versions: Mutex::new(HashMap::new()),
            tx,
        }
    }

    /// Numbers `draft` and sends it to every subscriber; returns the event.
    pub fn publish(&self, draft: Draft) -> Event {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let version = versions.entry(draft.app_id.clone()).or_insert(0);
        *version += 1;
        let event = Event {
            app_id: draft.app_id,
            version: *version,
            time_ms,
            kind: draft.kind,
            group_id: draft.group_id,
            party: draft.party,
            detail: draft.detail,
        };
        metrics::counter!("pttbridge_events_total", "type" => event.kind.as_str()).increment(1);
        // No subscribers is fine: the event is still numbered.
        let _ = self.tx.send(event.clone());
        event
    }

    /// A new subscriber receiving every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// The current version of an app (0 before its first event).
    pub fn version(&self, app_id: &str) -> u64 {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app_id)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::EventKind;

    #[tokio::test]
    async fn versions_are_contiguous_per_app_under_concurrency() {
        let bus = std::sync::Arc::new(EventBus::new());
        let mut rx = bus.subscribe();
        let mut tasks = Vec::new();
        for t in 0..4 {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..250 {
                    let app = if t % 2 == 0 { "a" } else { "b" };
                    bus.publish(Draft::new(app, EventKind::TalkStarted, "g"));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut last = HashMap::new();
        for _ in 0..1000 {
            let ev = rx.recv().await.unwrap();
            let prev = last.insert(ev.app_id.clone(), ev.version).unwrap_or(0);
            assert_eq!(ev.version, prev + 1, "app {}", ev.app_id);
        }
        assert_eq!(bus.version("a"), 500);
        assert_eq!(bus.version("b"), 500);
        assert_eq!(bus.version("none"), 0);
    }
}
