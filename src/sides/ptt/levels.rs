//! Audio level meters for the live view: how loud each PTT talker the bridge hears is, ten
//! times a second.
//!
//! PTT voice carries no level field, so the meter decodes the talker's own Opus packets (at
//! 8 kHz mono, the cheapest libopus output; the level of speech hardly changes with the band)
//! and takes the loudest 20 ms frame of each 100 ms window in dBov ([`media::vad::frame_dbov`],
//! the RFC 6464 scale). It only decodes while someone watches `/api/levels`; otherwise it just
//! follows who talks. Levels are not hub events on purpose: ten per second per talker would
//! flood the numbered event stream, EGW and NATS with data nobody stores.
//!
//! A frame of `/api/levels` (event `levels`):
//! `{"levels":[{"party":"ptt:s3","name":"alice","group":"ptt:local:North","dbov":-21.5}]}`;
//! one with an empty list follows the last talker's stop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use media::Channels;
use media::opus::Decoder;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

use super::{Account, ChannelEvent, PttSide, group_id};
use crate::hub::Party;

/// How often levels are sent.
const WINDOW: Duration = Duration::from_millis(100);
/// Output rate of the meter's decoders.
const RATE: u32 = 8_000;
/// Longest Opus packet (120 ms) at [`RATE`].
const MAX_SAMPLES: usize = RATE as usize * 120 / 1000;

/// One talker being metered.
struct Talker {
    party: Party,
    group: String,
    decoder: Option<Decoder>,
    /// Loudest frame since the last window, dBov; `None` when no packet arrived.
    peak: Option<f32>,
}

/// Shared by the per-account tasks and the ticker.
#[derive(Default)]
struct Talkers {
    /// By `(server, session)`: two accounts in one channel hear the same talker once.
    by_session: HashMap<(String, u32), Talker>,
}

/// The meter: feeds `/api/levels` subscribers.
#[derive(Clone)]
pub struct LevelMeter {
    frames: broadcast::Sender<Arc<str>>,
    /// Becomes `true` when the bridge stops: streams end so the server can finish.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl LevelMeter {
    /// Follows every PTT account's channel audio.
    pub fn start(ptt: &PttSide, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        let (frames, _) = broadcast::channel(16);
        let talkers = Arc::new(Mutex::new(Talkers::default()));
        // Accounts of one server in one channel would double a talker; the map key dedups.
        for account in &ptt.accounts {
            let rx = account.channel();
            let server = account.server.clone();
            let channel = account.clone();
            let talkers = talkers.clone();
            let frames = frames.clone();
            tokio::spawn(async move {
                follow(rx, server, channel, talkers, frames).await;
            });
        }
        if !ptt.accounts.is_empty() {
            tokio::spawn(tick(talkers, frames.clone()));
        }
        Self { frames, shutdown }
    }
}

async fn follow(
    mut rx: broadcast::Receiver<ChannelEvent>,
    server: String,
    account: Account,
    talkers: Arc<Mutex<Talkers>>,
    frames: broadcast::Sender<Arc<str>>,
) {
    let mut pcm = vec![0i16; MAX_SAMPLES];
    loop {
        let audio = match rx.recv().await {
            Ok(a) => a,
            // Behind by a few packets: the meter just skips them.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let mut t = talkers.lock().unwrap_or_else(|p| p.into_inner());
        match audio {
            ChannelEvent::TalkStarted { party, session } => {
                let group = group_id(&server, &account.channel_path().unwrap_or_default());
                t.by_session.insert(
                    (server.clone(), session),
                    Talker {
                        party,
                        group,
                        decoder: None,
                        peak: None,
                    },
                );
            }
            ChannelEvent::TalkStopped { session, .. } => {
                t.by_session.remove(&(server.clone(), session));
            }
            // Text and the account's connection do not move a level meter.
            ChannelEvent::Text { .. } | ChannelEvent::Connected | ChannelEvent::Disconnected => {}
            ChannelEvent::Voice { session, opus, .. } => {
                if frames.receiver_count() == 0 {
                    continue;
                }
                let Some(talker) = t.by_session.get_mut(&(server.clone(), session)) else {
                    continue;
                };
                let decoder = match &mut talker.decoder {
                    Some(d) => d,
                    None => match Decoder::new(RATE, Channels::Mono) {
                        Ok(d) => talker.decoder.insert(d),
                        Err(e) => {
                            debug!(error = %e, "level meter: no decoder");
                            continue;
                        }
                    },
                };
                // A packet that does not decode just leaves the meter where it was.
                if let Ok(n) = decoder.decode(Some(&opus), false, &mut pcm) {
                    let level = media::vad::frame_dbov(&pcm[..n]);
                    talker.peak = Some(talker.peak.map_or(level, |p| p.max(level)));
                }
            }
        }
    }
}

async fn tick(talkers: Arc<Mutex<Talkers>>, frames: broadcast::Sender<Arc<str>>) {
    let mut every = tokio::time::interval(WINDOW);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut was_empty = true;
    loop {
        every.tick().await;
        if frames.receiver_count() == 0 {
            was_empty = true;
            continue;
        }
        let levels: Vec<serde_json::Value> = {
            let mut t = talkers.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<_> = t
                .by_session
                .values_mut()
                .filter_map(|talker| {
                    let dbov = talker.peak.take()?;
                    Some(json!({
                        "party": format!("{}:{}", talker.party.side.as_str(), talker.party.id),
                        "name": talker.party.name,
                        "group": talker.group,
                        "dbov": (dbov * 10.0).round() / 10.0,
                    }))
                })
                .collect();
            v.sort_by(|a, b| a["party"].as_str().cmp(&b["party"].as_str()));
            v
        };
        if levels.is_empty() && was_empty {
            continue;
        }
        was_empty = levels.is_empty();
        let _ = frames.send(json!({ "levels": levels }).to_string().into());
    }
}

/// `GET /api/levels`.
pub(super) async fn stream(
    State(meter): State<LevelMeter>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let start = (meter.frames.subscribe(), meter.shutdown.clone());
    let frames = futures_util::stream::unfold(start, |(mut rx, mut shutdown)| async move {
        loop {
            let next = tokio::select! {
                f = rx.recv() => f,
                _ = shutdown.wait_for(|s| *s) => return None,
            };
            match next {
                Ok(f) => {
                    let ev = SseEvent::default().event("levels").data(&*f);
                    return Some((Ok(ev), (rx, shutdown)));
                }
                // Levels are only worth anything now: skip what was missed.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(frames).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
