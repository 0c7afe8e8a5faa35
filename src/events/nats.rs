//! The NATS JetStream sink: every hub event as a CloudEvents 1.0 JSON message on
//! `<prefix>.<app>.<group>.<type>` (e.g. `pttbridge.default.ptt:local:North.talk.started`),
//! with `Nats-Msg-Id` = `<app>:<version>` so JetStream drops re-sends within its
//! de-duplication window.
//!
//! The sink reads the bus into a bounded outbox (the oldest events are dropped and counted when
//! it is full) and publishes in version order with up to `max_in_flight` acks outstanding. A
//! failed publish (ack timeout, NATS gone) stops new publishes; once every outstanding ack has
//! resolved, everything not acknowledged goes back to the front of the outbox and is re-sent
//! in order when the connection is back. Re-sent events that JetStream had stored already are
//! acknowledged as duplicates and not stored twice. One caveat, by JetStream's nature: events
//! in flight at the moment a connection breaks may be stored after later ones; consumers that
//! need strict order sort by the `version` extension attribute (it is contiguous per app).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use logsafe::esc;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tracing::{Instrument, info, info_span, warn};

use super::config::NatsConfig;
use super::rfc3339;
use crate::hub::{Event, EventBus};

/// Counters of the sink (also exported as metrics).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events taken from the bus.
    pub received: AtomicU64,
    /// Publishes acknowledged by JetStream (first time stored).
    pub acked: AtomicU64,
    /// Publishes acknowledged as duplicates (a re-send JetStream had already stored).
    pub duplicates: AtomicU64,
    /// Events dropped because the outbox was full (or the sink fell behind the bus).
    pub dropped: AtomicU64,
    /// Publishes that failed and were queued again.
    pub retried: AtomicU64,
    /// Events waiting in the outbox now.
    pub queued: AtomicU64,
    /// Whether the NATS connection is up.
    pub connected: AtomicBool,
    /// Whether the stream was created/checked.
    pub stream_ready: AtomicBool,
}

/// Replaces what a NATS subject token cannot hold (`.`, `*`, `>`, whitespace, control
/// characters) with `_`; an empty token becomes `_`.
pub fn subject_token(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    s.chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Puts failed events back at the front of the outbox once nothing is outstanding, in the order
/// they were published (acks resolve in publish order, so `failed` is in that order).
fn requeue(failed: &mut Vec<Event>, outbox: &mut VecDeque<Event>) {
    for ev in failed.drain(..).rev() {
        outbox.push_front(ev);
    }
}

/// The subject of `event`: `<prefix>.<app>.<group>.<type>` (the type's dot stays, so
/// `pttbridge.*.*.talk.>` selects every talk event).
pub fn subject(prefix: &str, event: &Event) -> String {
    format!(
        "{prefix}.{}.{}.{}",
        subject_token(&event.app_id),
        subject_token(&event.group_id),
        event.kind.as_str()
    )
}

/// The de-duplication id: `<app>:<version>`.
pub fn message_id(event: &Event) -> String {
    format!("{}:{}", event.app_id, event.version)
}

/// A CloudEvents 1.0 event in structured JSON mode, borrowing the hub event as `data`.
#[derive(Debug, Serialize)]
pub struct CloudEvent<'a> {
    /// Always `1.0`.
    pub specversion: &'static str,
    /// `<app>:<version>` (also the `Nats-Msg-Id`).
    pub id: String,
    /// Producer (`nats.source`).
    pub source: &'a str,
    /// `pttbridge.<kind>`, e.g. `pttbridge.talk.started`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The group.
    pub subject: &'a str,
    /// RFC 3339 UTC.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    /// Extension: the app.
    pub appid: &'a str,
    /// Extension: the app's event version (contiguous per app).
    pub version: u64,
    /// The hub event.
    pub data: &'a Event,
}

/// The CloudEvent of `event`.
pub fn cloud_event<'a>(source: &'a str, event: &'a Event) -> CloudEvent<'a> {
    CloudEvent {
        specversion: "1.0",
        id: message_id(event),
        source,
        kind: format!("pttbridge.{}", event.kind.as_str()),
        subject: &event.group_id,
        time: rfc3339::format_ms(event.time_ms as i64),
        datacontenttype: "application/json",
        appid: &event.app_id,
        version: event.version,
        data: event,
    }
}

/// Starts the sink: subscribes to the bus now (so nothing published from here on is missed),
/// connects in the background and keeps publishing until the process ends.
pub fn start(config: &NatsConfig, bus: &EventBus) -> anyhow::Result<Arc<SinkStats>> {
    let url = config
        .url
        .clone()
        .context("nats.url: not set (the sink is off)")?;
    let options = connect_options(config)?;
    let stats = Arc::new(SinkStats::default());
    // In cluster mode every node has every event; each sends only those produced on it.
    let rx = bus.subscribe_local();
    let sink = Sink {
        config: config.clone(),
        url,
        options,
        stats: stats.clone(),
    };
    tokio::spawn(sink.run(rx).instrument(info_span!("nats")));
    Ok(stats)
}

/// TLS and credentials from the config, passed through to async-nats.
pub(crate) fn connect_options(config: &NatsConfig) -> anyhow::Result<async_nats::ConnectOptions> {
    let mut options = match &config.creds_file {
        Some(path) => {
            super::config::nats_credentials(path).map_err(|e| anyhow!("nats.creds_file: {e}"))?
        }
        None => async_nats::ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if config.tls_required {
        options = options.require_tls(true);
    }
    Ok(options)
}

struct Sink {
    config: NatsConfig,
    url: String,
    options: async_nats::ConnectOptions,
    stats: Arc<SinkStats>,
}

type AckFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Event, Result<bool, String>)> + Send + 'static>,
>;

impl Sink {
    async fn run(mut self, mut rx: broadcast::Receiver<Event>) {
        let stats = self.stats.clone();
        let options = std::mem::take(&mut self.options);
        let on_event = {
            let stats = stats.clone();
            move |ev: async_nats::Event| {
                let stats = stats.clone();
                async move {
                    match ev {
                        async_nats::Event::Connected => {
                            stats.connected.store(true, Ordering::Relaxed);
                            info!("NATS connected");
                        }
                        async_nats::Event::Disconnected => {
                            stats.connected.store(false, Ordering::Relaxed);
                            metrics::counter!("pttbridge_nats_reconnects_total").increment(1);
                            warn!("NATS disconnected; holding events in the outbox");
                        }
                        other => info!(event = %esc(&other), "NATS"),
                    }
                }
            }
        };
        let client = options
            .name("pttbridge")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| {
                // Backoff with jitter, capped at 2 s: NATS restarts are usually quick.
                let base = (50u64 << attempt.min(6) as u64).min(2_000);
                Duration::from_millis(base / 2 + rand::random_range(0..=base / 2))
            })
            .event_callback(on_event)
            .connect(self.url.as_str())
            .await;
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                // Only a malformed URL gets here (connecting itself retries in the background).
                warn!(error = %e, url = %self.url, "NATS sink cannot start");
                metrics::counter!("pttbridge_errors_total", "side" => "nats", "kind" => "connect")
                    .increment(1);
                return;
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(self.config.ack_timeout_ms))
            .max_ack_inflight(self.config.max_in_flight.max(1))
            .build(client.clone());

        let mut outbox: VecDeque<Event> = VecDeque::new();
        // The outbox's fill against its limit: an alert fires before events start to drop.
        let queued = metrics::gauge!("pttbridge_nats_outbox_events");
        metrics::gauge!("pttbridge_nats_outbox_limit_events").set(self.config.outbox as f64);
        let mut inflight: FuturesOrdered<AckFuture> = FuturesOrdered::new();
        let mut failed: Vec<Event> = Vec::new();
        let mut backoff = Duration::from_millis(100);
        let mut bus_open = true;

        loop {
            // Until the stream is known, hold events (bounded) and retry.
            if !self.stats.stream_ready.load(Ordering::Relaxed) {
                if self.ensure_stream(&js).await {
                    self.stats.stream_ready.store(true, Ordering::Relaxed);
                } else {
                    bus_open &= self.take_from_bus(&mut rx, &mut outbox, inflight.len());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
            bus_open &= self.take_from_bus(&mut rx, &mut outbox, inflight.len());
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            // Publish in order while the connection is up and nothing is being retried.
            while connected && failed.is_empty() && inflight.len() < self.config.max_in_flight {
                let Some(ev) = outbox.pop_front() else { break };
                match self.publish(&js, ev).await {
                    Ok(ack) => inflight.push_back(ack),
                    Err(ev) => {
                        self.stats.retried.fetch_add(1, Ordering::Relaxed);
                        failed.push(ev);
                    }
                }
            }
            if inflight.is_empty() && !failed.is_empty() {
                requeue(&mut failed, &mut outbox);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            self.stats
                .queued
                .store(outbox.len() as u64, Ordering::Relaxed);
            queued.set(outbox.len() as f64);

            tokio::select! {
                biased;
                done = inflight.next(), if !inflight.is_empty() => {
                    let Some((ev, result)) = done else { continue };
                    match result {
                        Ok(duplicate) => {
                            backoff = Duration::from_millis(100);
                            let counter = if duplicate { &self.stats.duplicates } else { &self.stats.acked };
                            counter.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("pttbridge_nats_published_total", "duplicate" => if duplicate { "true" } else { "false" }).increment(1);
                            metrics::histogram!("pttbridge_event_delivery_seconds", "sink" => "nats")
                    .record(crate::hub::Event::age_seconds(ev.time_ms));
                        }
                        Err(why) => {
                            if failed.is_empty() {
                                warn!(error = %esc(&why), version = ev.version, app = %esc(&ev.app_id), "NATS publish failed; will re-send in order");
                            }
                            self.stats.retried.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("pttbridge_nats_retries_total").increment(1);
                            failed.push(ev);
                        }
                    }
                    if inflight.is_empty() && !failed.is_empty() {
                        requeue(&mut failed, &mut outbox);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                ev = rx.recv(), if bus_open => match ev {
                    Ok(ev) => self.enqueue(&mut outbox, inflight.len(), ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => self.lagged(n),
                    Err(broadcast::error::RecvError::Closed) => bus_open = false,
                },
                _ = tokio::time::sleep(Duration::from_millis(50)), if !connected || !failed.is_empty() || !bus_open => {}
            }
            if !bus_open && outbox.is_empty() && inflight.is_empty() && failed.is_empty() {
                break;
            }
        }
        let _ = client.flush().await;
    }

    /// Moves what the bus has ready into the outbox without waiting; false once the bus closed.
    fn take_from_bus(
        &self,
        rx: &mut broadcast::Receiver<Event>,
        outbox: &mut VecDeque<Event>,
        inflight: usize,
    ) -> bool {
        loop {
            match rx.try_recv() {
                Ok(ev) => self.enqueue(outbox, inflight, ev),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Lagged(n)) => self.lagged(n),
                Err(TryRecvError::Closed) => return false,
            }
        }
    }

    fn enqueue(&self, outbox: &mut VecDeque<Event>, inflight: usize, ev: Event) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if outbox.len() + inflight >= self.config.outbox {
            outbox.pop_front();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pttbridge_nats_dropped_total", "reason" => "outbox_full")
                .increment(1);
        }
        outbox.push_back(ev);
    }

    fn lagged(&self, n: u64) {
        warn!(missed = n, "NATS sink fell behind the bus");
        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("pttbridge_nats_dropped_total", "reason" => "lagged").increment(n);
    }

    /// Hands `ev` to the client (in the caller's order: this is what keeps the stream in
    /// version order) and returns the future of its ack.
    async fn publish(&self, js: &jetstream::Context, ev: Event) -> Result<AckFuture, Event> {
        let subject = subject(&self.config.subject_prefix, &ev);
        let body = serde_json::to_vec(&cloud_event(&self.config.source, &ev)).unwrap_or_default();
        let msg = PublishMessage::build()
            .payload(Bytes::from(body))
            .message_id(message_id(&ev))
            .header("Content-Type", "application/cloudevents+json");
        match js.send_publish(subject, msg).await {
            Ok(ack) => Ok(Box::pin(async move {
                let result = match ack.await {
                    Ok(ack) => Ok(ack.duplicate),
                    Err(e) => Err(e.to_string()),
                };
                (ev, result)
            })),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                // Cannot ever succeed: count and move on rather than block the stream.
                warn!(error = %esc(&e), "event too large for NATS; dropped");
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pttbridge_nats_dropped_total", "reason" => "too_large")
                    .increment(1);
                Ok(Box::pin(async move { (ev, Ok(false)) }))
            }
            Err(e) => {
                warn!(error = %esc(&e), version = ev.version, "NATS publish not sent");
                Err(ev)
            }
        }
    }

    /// Creates the stream, or checks the existing one captures our subjects.
    async fn ensure_stream(&self, js: &jetstream::Context) -> bool {
        let wanted = format!("{}.>", self.config.subject_prefix);
        let config = jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![wanted.clone()],
            duplicate_window: Duration::from_secs(self.config.duplicate_window_s),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        match js.get_or_create_stream(config).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info)
                    if info
                        .config
                        .subjects
                        .iter()
                        .any(|s| s == &wanted || s == ">") =>
                {
                    info!(stream = %self.config.stream, subjects = ?info.config.subjects, "JetStream stream ready");
                    true
                }
                Ok(info) => {
                    warn!(stream = %self.config.stream, subjects = ?info.config.subjects, wanted = %wanted,
                        "JetStream stream exists but does not capture our subjects; fix nats.stream or the stream");
                    metrics::counter!("pttbridge_errors_total", "side" => "nats", "kind" => "stream_mismatch").increment(1);
                    false
                }
                Err(e) => {
                    warn!(error = %esc(&e), "JetStream stream info failed");
                    false
                }
            },
            Err(e) => {
                warn!(error = %esc(&e), "JetStream stream not ready yet");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{EventKind, Party, Side};
    use serde_json::json;

    fn event() -> Event {
        Event {
            app_id: "default".into(),
            version: 42,
            time_ms: 1_588_146_896_000,
            kind: EventKind::TalkStarted,
            group_id: "ptt:local:North West.1".into(),
            party: Some(Party {
                side: Side::Ptt,
                id: "3".into(),
                name: "alice".into(),
            }),
            detail: json!({"media_type": 2}),
        }
    }

    #[test]
    fn subjects_are_sanitised_and_typed() {
        assert_eq!(
            subject("pttbridge", &event()),
            "pttbridge.default.ptt:local:North_West_1.talk.started"
        );
        let mut e = event();
        e.group_id.clear();
        e.app_id = "a*b>c".into();
        assert_eq!(subject("p", &e), "p.a_b_c._.talk.started");
    }

    #[test]
    fn cloud_event_has_the_required_attributes() {
        let ev = event();
        let ce = serde_json::to_value(cloud_event("pttbridge", &ev)).unwrap();
        for attr in ["specversion", "id", "source", "type"] {
            assert!(ce[attr].is_string(), "{attr}");
        }
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], "default:42");
        assert_eq!(ce["type"], "pttbridge.talk.started");
        assert_eq!(ce["time"], "2020-04-29T07:54:56.000Z");
        assert_eq!(ce["version"], 42);
        assert_eq!(ce["data"]["party"]["name"], "alice");
        assert_eq!(ce["data"]["group_id"], "ptt:local:North West.1");
    }
}
