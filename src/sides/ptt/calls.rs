//! Call records of the PTT side on its own: a *conversation* of a PTT channel the bridge sits
//! in. PTT has no calls — users just talk — so the record the bridge keeps for a channel it
//! carries is: from the first talk burst until the channel has been silent for
//! `business.ptt_call_idle_ms` (the record ends at the end of the last burst, not at the idle
//! timeout), with every voice packet the bridge received in it (packets, Opus bytes) and its
//! talk starts and stops as the signalling count. The account leaving the channel or losing the
//! server ends the conversation too. (When links land, a meeting or console call linked to the
//! channel gets its own record from that side, with both sides.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use logsafe::esc;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use super::{Account, ChannelEvent, PttSide, group_id};
use crate::hub::calls::CallCounters;
use crate::hub::{CallRecorder, CallStart, Calls, Side};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Starts one conversation tracker per account.
pub fn start(side: &PttSide, calls: Calls, idle: Duration) {
    for account in &side.accounts {
        let tracker = Tracker {
            account: account.clone(),
            calls: calls.clone(),
            idle,
        };
        let span = info_span!("ptt_calls", server = %account.server, account = %account.username);
        tokio::spawn(tracker.run().instrument(span));
    }
}

struct Tracker {
    account: Account,
    calls: Calls,
    idle: Duration,
}

struct Conversation {
    recorder: CallRecorder,
    counters: Arc<CallCounters>,
    group: String,
    talking: HashSet<u32>,
    last_activity: Instant,
    last_stop_ms: i64,
}

impl Tracker {
    async fn run(self) {
        let mut audio = self.account.channel();
        let mut state = self.account.client.watch();
        let mut current: Option<Conversation> = None;
        loop {
            let idle_at = current
                .as_ref()
                .filter(|c| c.talking.is_empty())
                .map(|c| c.last_activity + self.idle);
            tokio::select! {
                msg = audio.recv() => match msg {
                    Ok(ChannelEvent::TalkStarted { party, session }) => {
                        let group = group_id(&self.account.server, &self.account.channel_path().unwrap_or_default());
                        if current.as_ref().is_some_and(|c| c.group != group) {
                            self.finish(current.take(), "channel changed");
                        }
                        let conv = current.get_or_insert_with(|| {
                            debug!(group = %esc(&group), "PTT conversation started");
                            let recorder = self.calls.start(
                                CallStart::new(self.account.app.clone(), group.clone(), [Side::Ptt]).initiator(party),
                            );
                            Conversation {
                                counters: recorder.counters(),
                                recorder,
                                group,
                                talking: HashSet::new(),
                                last_activity: Instant::now(),
                                last_stop_ms: now_ms(),
                            }
                        });
                        conv.talking.insert(session);
                        conv.counters.signal(1);
                        conv.last_activity = Instant::now();
                    }
                    Ok(ChannelEvent::Voice { opus, .. }) => {
                        if let Some(c) = &mut current {
                            c.counters.audio(1, opus.len());
                            c.last_activity = Instant::now();
                        }
                    }
                    Ok(ChannelEvent::TalkStopped { session, .. }) => {
                        if let Some(c) = &mut current {
                            c.talking.remove(&session);
                            c.counters.signal(1);
                            c.last_activity = Instant::now();
                            c.last_stop_ms = now_ms();
                        }
                    }
                    // The conversation follows talk and voice; the account's state comes by `watch`.
                    Ok(ChannelEvent::Text { .. } | ChannelEvent::Connected | ChannelEvent::Disconnected) => {}
                    Err(RecvError::Lagged(n)) => {
                        metrics::counter!("pttbridge_errors_total", "side" => "ptt", "kind" => "call_tracker_lagged").increment(n);
                    }
                    Err(RecvError::Closed) => break,
                },
                changed = state.changed() => {
                    if changed.is_err() { break; }
                    let snap = state.borrow_and_update().clone();
                    if snap.state != ptt::client::LinkState::Connected && current.is_some() {
                        self.finish(current.take(), "server connection lost");
                    }
                }
                _ = async { tokio::time::sleep_until(idle_at.unwrap_or_else(Instant::now)).await }, if idle_at.is_some() => {
                    self.finish(current.take(), "idle");
                }
            }
        }
        self.finish(current.take(), "stopped");
    }

    fn finish(&self, conv: Option<Conversation>, reason: &str) {
        if let Some(c) = conv {
            debug!(group = %esc(&c.group), reason, "PTT conversation ended");
            let end = if c.talking.is_empty() {
                c.last_stop_ms
            } else {
                now_ms()
            };
            c.recorder.finish_at(end, reason);
        }
    }
}
