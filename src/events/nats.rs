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
//!
//! Each publish carries its own reply subject `<inbox>.<n>` and one subscription on `<inbox>.*`
//! takes every ack; [`super::acks::AckWindow`] keeps them in publish order with one timer for the
//! oldest (a JetStream request per event would cost a reply entry, a channel and a timer each).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use async_nats::client::PublishErrorKind;
use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream;
use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt};
use logsafe::esc;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tracing::{Instrument, info, info_span, warn};

use super::acks::{AckWindow, Outcome, requeue};
use super::config::NatsConfig;
use super::rfc3339;
use crate::hub::{Event, EventBus, EventKind};

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

/// The subscription taking every ack (`<inbox>.*`), retried until the client takes it.
pub(crate) async fn subscribe_acks(
    client: &async_nats::Client,
    inbox: &str,
) -> async_nats::Subscriber {
    loop {
        match client.subscribe(format!("{inbox}.*")).await {
            Ok(sub) => return sub,
            Err(e) => {
                warn!(error = %esc(&e), "NATS ack subscription failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Records the ack in `msg` (a reply to `<inbox>.<id>`), then every ack already received
/// (at most `max`) without waiting: all of them are in before the next publishes go out.
pub(crate) fn take_acks<T>(
    window: &mut AckWindow<T>,
    msg: &async_nats::Message,
    acks: &mut async_nats::Subscriber,
    max: usize,
) {
    let mut take = |m: &async_nats::Message| {
        window.ack_reply(m.subject.as_str(), m.status.map(|s| s.as_u16()), &m.payload);
    };
    take(msg);
    for _ in 0..max {
        match acks.next().now_or_never() {
            Some(Some(m)) => take(&m),
            _ => break,
        }
    }
}

/// Why the client did not take a publish: `too_large` when it never can (over the server's
/// payload limit), else its queue stayed full (NATS away) or the connection refused it.
pub(crate) struct NotSent {
    /// Over the server's payload limit: re-sending cannot help.
    pub too_large: bool,
    /// The client's error.
    pub why: String,
}

/// Hands a publish with reply subject `reply` to the client. It takes it at once unless its
/// queue is full (NATS away): then this waits at most `limit`, so the caller reads its input
/// again meanwhile.
pub(crate) async fn send_with_reply(
    client: &async_nats::Client,
    subject: String,
    reply: String,
    headers: HeaderMap,
    payload: Bytes,
    limit: Duration,
) -> Result<(), NotSent> {
    let send = client.publish_with_reply_and_headers(subject, reply, headers, payload);
    tokio::select! {
        biased;
        sent = send => sent.map_err(|e| NotSent {
            too_large: e.kind() == PublishErrorKind::MaxPayloadExceeded,
            why: e.to_string(),
        }),
        () = tokio::time::sleep(limit) => Err(NotSent {
            too_large: false,
            why: "the NATS client's queue stayed full".into(),
        }),
    }
}

/// Replaces what a NATS subject token cannot hold (`.`, `*`, `>`, whitespace, control
/// characters) with `_`; an empty token becomes `_`.
pub fn subject_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len().max(1));
    push_token(&mut out, s);
    out
}

/// The subject of `event`: `<prefix>.<app>.<group>.<type>` (the type's dot stays, so
/// `pttbridge.*.*.talk.>` selects every talk event).
pub fn subject(prefix: &str, event: &Event) -> String {
    let kind = event.kind.as_str();
    let mut out = String::with_capacity(
        prefix.len() + event.app_id.len() + event.group_id.len() + kind.len() + 3,
    );
    out.push_str(prefix);
    for token in [&event.app_id, &event.group_id] {
        out.push('.');
        push_token(&mut out, token);
    }
    out.push('.');
    out.push_str(kind);
    out
}

/// Appends `s` as one subject token (see [`subject_token`]).
fn push_token(out: &mut String, s: &str) {
    if s.is_empty() {
        out.push('_');
    }
    out.extend(s.chars().map(|c| {
        if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        }
    }));
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
    pub kind: CloudType,
    /// The group.
    pub subject: &'a str,
    /// RFC 3339 UTC.
    pub time: &'a str,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    /// Extension: the app.
    pub appid: &'a str,
    /// Extension: the app's event version (contiguous per app).
    pub version: u64,
    /// The hub event.
    pub data: &'a Event,
}

/// The CloudEvents `type` of a hub event kind, `pttbridge.<kind>`, written without a string of
/// its own.
#[derive(Debug, Clone, Copy)]
pub struct CloudType(pub EventKind);

impl Serialize for CloudType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("pttbridge.{}", self.0.as_str()))
    }
}

/// The CloudEvent of `event`, its `time` being `time` (the event's time as RFC 3339).
pub fn cloud_event<'a>(source: &'a str, event: &'a Event, time: &'a str) -> CloudEvent<'a> {
    CloudEvent {
        specversion: "1.0",
        id: message_id(event),
        source,
        kind: CloudType(event.kind),
        subject: &event.group_id,
        time,
        datacontenttype: "application/json",
        appid: &event.app_id,
        version: event.version,
        data: event,
    }
}

/// What the sink reuses from one event to the next.
#[derive(Debug, Default)]
struct Scratch {
    /// The CloudEvent is written here, then copied once into the payload.
    body: Vec<u8>,
    time: TimeText,
}

/// The RFC 3339 text of the last millisecond asked for: events come in bursts within one
/// millisecond, and formatting a date is a good part of a CloudEvent's cost.
#[derive(Debug, Default)]
struct TimeText {
    ms: Option<u64>,
    text: String,
}

impl TimeText {
    fn of(&mut self, ms: u64) -> &str {
        if self.ms != Some(ms) {
            self.ms = Some(ms);
            self.text = rfc3339::format_ms(ms as i64);
        }
        &self.text
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

/// The metric handles of the sink, resolved once (a labelled macro call per event would hash
/// its key in the registry each time).
struct Meters {
    stored: metrics::Counter,
    duplicate: metrics::Counter,
    retries: metrics::Counter,
    delivery: metrics::Histogram,
    queued: metrics::Gauge,
}

impl Meters {
    fn new() -> Self {
        Self {
            stored: metrics::counter!("pttbridge_nats_published_total", "duplicate" => "false"),
            duplicate: metrics::counter!("pttbridge_nats_published_total", "duplicate" => "true"),
            retries: metrics::counter!("pttbridge_nats_retries_total"),
            delivery: metrics::histogram!("pttbridge_event_delivery_seconds", "sink" => "nats"),
            // The outbox's fill against its limit: an alert fires before events start to drop.
            queued: metrics::gauge!("pttbridge_nats_outbox_events"),
        }
    }
}

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
        let ack_timeout = Duration::from_millis(self.config.ack_timeout_ms);
        let js = jetstream::ContextBuilder::new()
            .timeout(ack_timeout)
            .build(client.clone());
        // Every publish's ack comes back on `<inbox>.<id>`: one subscription for all of them
        // (re-made by the client after a reconnect).
        let inbox = client.new_inbox();
        let mut acks = subscribe_acks(&client, &inbox).await;

        let mut outbox: VecDeque<Event> = VecDeque::new();
        let meters = Meters::new();
        metrics::gauge!("pttbridge_nats_outbox_limit_events").set(self.config.outbox as f64);
        let mut window: AckWindow<Event> = AckWindow::new(ack_timeout);
        let mut failed: Vec<Event> = Vec::new();
        let mut scratch = Scratch::default();
        let mut backoff = Duration::from_millis(100);
        let mut bus_open = true;

        loop {
            // Until the stream is known, hold events (bounded) and retry.
            if !self.stats.stream_ready.load(Ordering::Relaxed) {
                if self.ensure_stream(&js).await {
                    self.stats.stream_ready.store(true, Ordering::Relaxed);
                } else {
                    bus_open &= self.take_from_bus(&mut rx, &mut outbox, window.len());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
            bus_open &= self.take_from_bus(&mut rx, &mut outbox, window.len());
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            // Publish in order while the connection is up and nothing is being retried.
            while connected && failed.is_empty() && window.len() < self.config.max_in_flight {
                let Some(ev) = outbox.pop_front() else { break };
                if !self
                    .publish(&client, &inbox, &mut window, &mut scratch, ack_timeout, ev)
                    .await
                {
                    break;
                }
            }
            // What has an outcome, in publish order.
            while let Some((ev, outcome)) = window.pop() {
                match outcome {
                    Outcome::Stored { duplicate } => {
                        backoff = Duration::from_millis(100);
                        if duplicate {
                            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                            meters.duplicate.increment(1);
                        } else {
                            self.stats.acked.fetch_add(1, Ordering::Relaxed);
                            meters.stored.increment(1);
                        }
                        meters
                            .delivery
                            .record(crate::hub::Event::age_seconds(ev.time_ms));
                    }
                    Outcome::Failed(why) => {
                        if failed.is_empty() {
                            warn!(error = %esc(&why), version = ev.version, app = %esc(&ev.app_id), "NATS publish failed; will re-send in order");
                        }
                        self.stats.retried.fetch_add(1, Ordering::Relaxed);
                        meters.retries.increment(1);
                        failed.push(ev);
                    }
                }
            }
            if window.is_empty() && !failed.is_empty() {
                requeue(&mut failed, &mut outbox);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            self.stats
                .queued
                .store(outbox.len() as u64, Ordering::Relaxed);
            meters.queued.set(outbox.len() as f64);
            if !bus_open && outbox.is_empty() && window.is_empty() {
                break;
            }
            let deadline = window.deadline();

            tokio::select! {
                biased;
                msg = acks.next(), if !window.is_empty() => {
                    let Some(msg) = msg else {
                        // The client ended the subscription: take the acks on a new one (what
                        // was in flight meanwhile times out and is re-sent).
                        warn!("NATS ack subscription ended; subscribing again");
                        metrics::counter!("pttbridge_errors_total", "side" => "nats", "kind" => "ack_subscription").increment(1);
                        acks = subscribe_acks(&client, &inbox).await;
                        continue;
                    };
                    take_acks(&mut window, &msg, &mut acks, self.config.max_in_flight);
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    window.expire(Instant::now());
                }
                ev = rx.recv(), if bus_open => match ev {
                    Ok(ev) => self.enqueue(&mut outbox, window.len(), ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => self.lagged(n),
                    Err(broadcast::error::RecvError::Closed) => bus_open = false,
                },
                _ = tokio::time::sleep(Duration::from_millis(50)), if !connected || !failed.is_empty() || !bus_open => {}
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
    /// version order) with the reply subject of its window slot; false when the client did not
    /// take it (the slot then fails, and nothing more is sent until the window has drained).
    async fn publish(
        &self,
        client: &async_nats::Client,
        inbox: &str,
        window: &mut AckWindow<Event>,
        scratch: &mut Scratch,
        limit: Duration,
        ev: Event,
    ) -> bool {
        let Scratch { body, time } = scratch;
        let subject = subject(&self.config.subject_prefix, &ev);
        // One buffer for every event: the payload is its only allocation.
        body.clear();
        let ce = cloud_event(&self.config.source, &ev, time.of(ev.time_ms));
        if let Err(e) = serde_json::to_writer(&mut *body, &ce) {
            warn!(error = %e, "event not serialisable; dropped");
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, ce.id.as_str());
        headers.insert("Content-Type", "application/cloudevents+json");
        let payload = Bytes::copy_from_slice(body);
        let version = ev.version;
        let id = window.push(ev, Instant::now());
        let reply = format!("{inbox}.{id}");
        match send_with_reply(client, subject, reply, headers, payload, limit).await {
            Ok(()) => true,
            Err(NotSent {
                too_large: true,
                why,
            }) => {
                // Cannot ever succeed: count and move on rather than block the stream.
                warn!(error = %esc(&why), version, "event too large for NATS; dropped");
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pttbridge_nats_dropped_total", "reason" => "too_large")
                    .increment(1);
                // Released like a stored one so the events after it go on (as before the
                // window: counted in `dropped` and in `acked`).
                window.ack(id, Outcome::Stored { duplicate: false });
                true
            }
            Err(NotSent { why, .. }) => {
                warn!(error = %esc(&why), version, "NATS publish not sent");
                window.ack(id, Outcome::Failed(why));
                false
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
    use crate::hub::{Party, Side};
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
        let time = rfc3339::format_ms(ev.time_ms as i64);
        let ce = serde_json::to_value(cloud_event("pttbridge", &ev, &time)).unwrap();
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
