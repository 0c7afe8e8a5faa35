//! A PTT channel dialled into a meeting room: audio both ways, floor, chat. Owned by the room
//! actor (sans-IO apart from the PTT account handle it sends voice and text through).
//!
//! - PTT → meeting: every PTT talker feeds a [`MixGroup`]: one talker passes through unchanged,
//!   several are mixed (one shared encode). The room stamps each packet per listener with its
//!   `OutboundClock`, so talker switches never jump the RTP timestamps.
//! - meeting → PTT: each publisher's Opus (stereo from browsers) goes through a jitter buffer and
//!   decoder, is down-mixed to mono, and its VAD (RFC 6464 level when the client sends it, else
//!   energy) decides who speaks. While anyone speaks the link asks the channel's [`Floor`] for the
//!   meeting party (queued behind a PTT talker, higher level pre-empts); holding it, it mixes the
//!   speakers, encodes Opus mono and sends it into the channel through the bridge's PTT account.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use media::Channels;
use media::g711::Law;
use media::group::{GroupConfig, MixGroup, OutPacket};
use media::inbound::{FRAME, FrameKind, InboundStream};
use media::jitter::{JitterConfig, JitterStats};
use media::limiter::Limiter;
use media::mixer::Mixer;
use media::opus::{Application, Encoder};
use media::passthrough::{Route, Source};
use media::vad::{AudioLevel, Vad, VadConfig, VadEvent};
use ptt::client::{Command, OutgoingVoice};
use rtcpeer::bean::Client;
use rtcpeer::id::Id;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::config::PassThrough;
use super::switchboard::DialTarget;
use super::transcode::{G711Inbound, G711Outbound};
use crate::hub::calls::CallCounters;
use crate::hub::floor::{Decision, Floor};
use crate::hub::{Event, EventKind, Party, Side};
use crate::sides::ptt::{Account, ChannelAudio};

/// Something the room must tell its members or the hub.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A PTT user started/stopped talking (push `memberTalking`, hub `talk.*` is the PTT side's).
    PttTalking {
        /// The PTT user.
        party: Party,
        /// Started or stopped.
        talking: bool,
    },
    /// A meeting member started/stopped speaking (VAD).
    MeetingTalking {
        /// Client id.
        client: Id,
        /// Started or stopped.
        talking: bool,
    },
    /// The meeting was refused the PTT floor.
    FloorDenied {
        /// Who holds it.
        holder: Party,
    },
    /// The meeting got the floor (from the queue or at once).
    FloorGranted,
    /// A PTT user sent [`HANGUP_COMMAND`] (in the channel, or privately to the bridge's account).
    HangUp {
        /// Who.
        by: Option<Party>,
    },
    /// Text from the PTT channel.
    Text {
        /// Sender.
        from: Option<Party>,
        /// Text.
        text: String,
    },
}

/// What a link waits for besides the room's own inputs.
#[derive(Debug)]
pub enum LinkInput {
    /// PTT channel audio.
    Audio(ChannelAudio),
    /// A hub event (the channel's text messages are picked out of these).
    Event(Event),
    /// The PTT account or the bus went away.
    Closed,
}

struct Speaker {
    inbound: InboundStream,
    /// Set while the publisher sends G.711: its packets become Opus frames for `inbound`.
    g711: Option<G711Inbound>,
    reported: JitterReport,
    stereo: Vec<i16>,
    mono: Vec<i16>,
    vad: Vad,
    level: Option<AudioLevel>,
    muted: bool,
    voiced: bool,
}

/// Ticks (20 ms) between jitter-buffer reports: once a second.
const REPORT_TICKS: u64 = 50;

/// Jitter-buffer counters of one inbound stream already exported, so only deltas are added.
#[derive(Debug, Default)]
struct JitterReport {
    late: u64,
    lost: u64,
    concealed: u64,
    dropped: u64,
}

impl JitterReport {
    /// Exports the depth (summary `pttbridge_meeting_jitter_depth_ms`) and the new late, lost,
    /// concealed and dropped packets (`pttbridge_meeting_jitter_packets_total{kind}`).
    fn report(&mut self, s: &JitterStats, direction: &'static str) {
        metrics::histogram!("pttbridge_meeting_jitter_depth_ms", "direction" => direction)
            .record(f64::from(s.depth_ms));
        for (kind, now, last) in [
            ("late", s.late, &mut self.late),
            ("lost", s.lost, &mut self.lost),
            ("concealed", s.concealed, &mut self.concealed),
            ("dropped", s.dropped, &mut self.dropped),
        ] {
            if now > *last {
                metrics::counter!("pttbridge_meeting_jitter_packets_total", "direction" => direction, "kind" => kind)
                    .increment(now - *last);
            }
            *last = now;
        }
    }
}

/// Text a PTT user sends (in the linked channel, or privately to the bridge's account) to hang
/// up the meeting call from the PTT side.
pub const HANGUP_COMMAND: &str = "/hangup";

/// Most arrival stamps kept for latency measurement (≈ 5 s of two talkers).
const MAX_ARRIVALS: usize = 512;

/// The link state inside a room.
pub struct Link {
    /// Dial-in id: the link's client id in the room.
    pub dial: Id,
    /// Who called.
    pub caller: Id,
    /// Its client bean.
    pub client: Client,
    /// PTT group id of the channel.
    pub ptt_group: String,
    account: Account,
    audio: broadcast::Receiver<ChannelAudio>,
    events: broadcast::Receiver<Event>,
    group: MixGroup,
    talkers: HashMap<u32, Party>,
    floor: Floor,
    meeting_party: Party,
    meeting_level: u8,
    ptt_level: u8,
    speakers: HashMap<Id, Speaker>,
    mixer: Mixer,
    limiter: Limiter,
    encoder: Encoder,
    mix: Vec<i16>,
    holding: bool,
    denied: bool,
    /// The PTT account is connected (meeting audio is only sent then).
    ptt_up: bool,
    arrivals: VecDeque<(u32, u32, Instant)>,
    g711_out: G711Outbound,
    g711_ts: u32,
    ticks: u64,
    talker_reports: HashMap<u32, JitterReport>,
    passthrough: PassThrough,
    /// Direct pass-through in progress: the lone talker and the end of its last packet.
    direct: Option<(u32, u32)>,
    /// This burst had two talkers at once: the mix carries it to the end.
    burst_mixed: bool,
    /// Voice packets sent into the PTT channel.
    pub voice_out: u64,
    /// Packets the PTT account would not take (its queue was full).
    pub voice_dropped: u64,
    /// The call record's counters: PTT voice packets in and meeting voice packets sent into
    /// the channel (each once, however many listeners).
    pub counters: Option<Arc<CallCounters>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("dial", &self.dial)
            .field("holding", &self.holding)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link for `target` in `room`, called by `caller`.
    pub fn new(
        target: &DialTarget,
        caller: Id,
        room: Id,
        bus: &crate::hub::EventBus,
        passthrough: PassThrough,
    ) -> media::Result<Self> {
        let account = target.account.clone();
        let path = account.channel_path().unwrap_or_default();
        let name = target.name.clone().unwrap_or_else(|| {
            if path.is_empty() {
                account.username.clone()
            } else {
                path.clone()
            }
        });
        let mut extra = serde_json::Map::new();
        extra.insert("pttChannel".into(), path.clone().into());
        let client = Client {
            id: Some(target.user_id),
            name: Some(name),
            mode: Some("ptt".into()),
            stream_id: Some(target.user_id),
            is_muted: Some(false),
            extra,
            ..Client::default()
        };
        let mut encoder = Encoder::new(48_000, Channels::Mono, Application::Audio)?;
        encoder.set_bitrate(40_000)?;
        encoder.set_complexity(5)?;
        Ok(Self {
            dial: target.user_id,
            caller,
            ptt_group: crate::sides::ptt::group_id(&account.server, &path),
            audio: account.audio(),
            events: bus.subscribe(),
            group: MixGroup::new(GroupConfig::default())?,
            talkers: HashMap::new(),
            floor: Floor::new(None),
            meeting_party: Party {
                side: Side::Meeting,
                id: format!("room:{room}"),
                name: format!("meeting room {room}"),
            },
            meeting_level: target.meeting_level,
            ptt_level: target.ptt_level,
            speakers: HashMap::new(),
            mixer: Mixer::new(FRAME),
            limiter: Limiter::new(),
            encoder,
            mix: vec![0; FRAME],
            holding: false,
            denied: false,
            ptt_up: true,
            g711_out: G711Outbound::new()?,
            g711_ts: 0,
            ticks: 0,
            talker_reports: HashMap::new(),
            passthrough,
            direct: None,
            burst_mixed: false,
            arrivals: VecDeque::with_capacity(MAX_ARRIVALS),
            voice_out: 0,
            voice_dropped: 0,
            counters: None,
            account,
            client,
        })
    }

    /// The next PTT channel audio item or hub event.
    pub async fn next(&mut self) -> LinkInput {
        loop {
            tokio::select! {
                a = self.audio.recv() => match a {
                    Ok(a) => return LinkInput::Audio(a),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "ptt_lag").increment(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return LinkInput::Closed,
                },
                e = self.events.recv() => match e {
                    Ok(e) => return LinkInput::Event(e),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return LinkInput::Closed,
                },
            }
        }
    }

    /// A hub event: PTT text in our channel becomes meeting chat; our PTT account losing its
    /// server ends every PTT talk burst in progress (no terminator will ever come for them).
    pub fn on_event(&mut self, ev: &Event, now: Instant) -> Vec<Notice> {
        let ours = ev.detail["side"] == "ptt"
            && ev.detail["server"] == self.account.server.as_str()
            && ev.detail["account"] == self.account.username.as_str();
        match ev.kind {
            EventKind::SideDisconnected if ours => self.ptt_down(now),
            EventKind::SideConnected if ours => {
                if !self.ptt_up {
                    info!(
                        dial = self.dial,
                        "PTT account back: the link carries audio again"
                    );
                }
                self.ptt_up = true;
                Vec::new()
            }
            _ => self.text(ev).into_iter().collect(),
        }
    }

    /// The PTT account lost its server: talkers are gone, the floor is free, the meeting's
    /// burst (if any) is over; nothing is sent until the account is back.
    fn ptt_down(&mut self, now: Instant) -> Vec<Notice> {
        warn!(
            dial = self.dial,
            "PTT account disconnected: the link waits for it"
        );
        self.ptt_up = false;
        self.direct = None;
        self.burst_mixed = false;
        let mut out = Vec::new();
        for (session, party) in std::mem::take(&mut self.talkers) {
            self.report_talker(session);
            self.group.remove_talker(session);
            self.floor.release(&party, now);
            out.push(Notice::PttTalking {
                party,
                talking: false,
            });
        }
        self.stop_sending();
        let me = self.meeting_party.clone();
        self.floor.release(&me, now);
        self.denied = false;
        out
    }

    fn text(&self, ev: &Event) -> Option<Notice> {
        if ev.kind != EventKind::MessageText
            || ev.detail["to_account"] != self.account.username.as_str()
        {
            return None;
        }
        let private = ev.detail["private"] == true;
        if !private && ev.group_id != self.ptt_group {
            return None;
        }
        let text = ev.detail["text"].as_str()?;
        if text.trim().eq_ignore_ascii_case(HANGUP_COMMAND) {
            return Some(Notice::HangUp {
                by: ev.party.clone(),
            });
        }
        // Other private messages to the bridge's account are not the meeting's business.
        (!private).then(|| Notice::Text {
            from: ev.party.clone(),
            text: text.to_owned(),
        })
    }

    /// A second talker joins the burst: the mix takes over for everyone until the channel is
    /// quiet again. The lone talker's packets already forwarded are skipped in its jitter
    /// buffer, so the mix continues its audio where direct forwarding left off.
    fn end_direct(&mut self) {
        if let Some((session, end)) = self.direct.take() {
            self.group.skip_talker_through(session, end);
        }
        self.burst_mixed = true;
    }

    /// Whether `session`'s packet at `ts` goes to the meeting on arrival (direct pass-through).
    fn direct_for(&mut self, session: u32, ts: u32) -> bool {
        if self.passthrough != PassThrough::Direct || self.burst_mixed {
            return false;
        }
        if self.talkers.keys().any(|s| *s != session) {
            self.end_direct();
            return false;
        }
        match self.direct {
            // In order or after a gap (loss): forward. Late or repeated: the listener has
            // moved on, drop it (its jitter buffer would anyway).
            Some((s, end)) if s == session => (ts.wrapping_sub(end) as i32) >= 0,
            Some(_) => {
                self.end_direct();
                false
            }
            None => true,
        }
    }

    /// PTT channel audio. Packets of a lone talker that go to the meeting at once (direct
    /// pass-through) are appended to `to_meeting`; the room sends them now.
    pub fn on_audio(
        &mut self,
        a: ChannelAudio,
        now: Instant,
        now_us: u64,
        to_meeting: &mut Vec<OutPacket>,
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        match a {
            ChannelAudio::TalkStarted { party, session } => {
                if self.talkers.keys().any(|s| *s != session) {
                    self.end_direct();
                }
                if let Err(e) = self.group.add_talker(session) {
                    warn!(error = %e, "PTT talker not mixed");
                }
                match self
                    .floor
                    .request(party.clone(), self.ptt_level, false, now)
                {
                    Decision::Preempted { .. } => {
                        // The PTT user outranks the meeting: stop sending, the meeting asks again.
                        self.stop_sending();
                    }
                    Decision::Denied { .. } => {
                        debug!(talker = %party.name, "PTT user talks over the meeting")
                    }
                    _ => {}
                }
                self.talkers.insert(session, party.clone());
                out.push(Notice::PttTalking {
                    party,
                    talking: true,
                });
            }
            ChannelAudio::Voice {
                session,
                sequence,
                opus,
            } => {
                if !self.talkers.contains_key(&session) {
                    // Voice before TalkStarted (joined mid-burst): mix it all the same.
                    let _ = self.group.add_talker(session);
                }
                let ts = (sequence.wrapping_mul(480)) as u32;
                metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "ptt_in")
                    .increment(1);
                if let Some(c) = &self.counters {
                    c.audio(1, opus.len());
                }
                if self.arrivals.len() == MAX_ARRIVALS {
                    self.arrivals.pop_front();
                }
                self.arrivals.push_back((session, ts, now));
                if self.direct_for(session, ts) {
                    let samples = media::opus_toc::parse(&opus)
                        .map_or(FRAME as u32, |i| i.samples_at(48_000));
                    self.direct = Some((session, ts.wrapping_add(samples)));
                    to_meeting.push(OutPacket {
                        source: Source::Talker(session),
                        src_ts: ts,
                        samples,
                        payload: opus.clone(),
                    });
                } else if self.direct.is_some_and(|(s, _)| s == session) {
                    metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "late")
                        .increment(1);
                }
                // Buffered and decoded all the same: for G.711 players, and for the mix if a
                // second talker joins.
                self.group.push(session, ts, opus, now_us);
            }
            ChannelAudio::TalkStopped { party, session } => {
                self.talkers.remove(&session);
                if self.talkers.is_empty() {
                    // The burst is over: the next one may go direct again.
                    self.direct = None;
                    self.burst_mixed = false;
                }
                self.report_talker(session);
                self.group.remove_talker(session);
                if let Some(next) = self.floor.release(&party, now)
                    && next == self.meeting_party
                {
                    self.holding = true;
                    self.denied = false;
                    out.push(Notice::FloorGranted);
                }
                out.push(Notice::PttTalking {
                    party,
                    talking: false,
                });
            }
        }
        out
    }

    /// One RTP packet from a meeting publisher: Opus (`law` None) or G.711; `ts` in 48 kHz units.
    pub fn meeting_packet(
        &mut self,
        client: Id,
        law: Option<Law>,
        ts: u32,
        payload: Bytes,
        level: Option<i8>,
        now_us: u64,
    ) {
        let speaker = match self.speakers.get_mut(&client) {
            Some(s) => s,
            None => {
                let Ok(inbound) = InboundStream::new(JitterConfig::default(), Channels::Stereo)
                else {
                    return;
                };
                self.speakers.entry(client).or_insert(Speaker {
                    inbound,
                    g711: None,
                    reported: JitterReport::default(),
                    stereo: vec![0; FRAME * 2],
                    mono: vec![0; FRAME],
                    // A long hangover keeps one PTT burst across the pauses between phrases.
                    vad: Vad::new(VadConfig {
                        hangover_frames: 40,
                        ..VadConfig::default()
                    }),
                    level: None,
                    muted: false,
                    voiced: false,
                })
            }
        };
        if let Some(l) = level {
            // str0m gives -dBov with the V bit split off; AudioLevel wants the wire byte.
            speaker.level = Some(AudioLevel::from_byte((-l).clamp(0, 127) as u8));
        }
        let Some(law) = law else {
            speaker.g711 = None;
            speaker.inbound.push(ts, payload, now_us);
            return;
        };
        if speaker.g711.as_ref().is_none_or(|g| g.law() != law) {
            match G711Inbound::new(law) {
                Ok(g) => speaker.g711 = Some(g),
                Err(e) => {
                    warn!(error = %e, "no G.711 decoder for a publisher");
                    return;
                }
            }
        }
        let Some(g) = speaker.g711.as_mut() else {
            return;
        };
        let inbound = &mut speaker.inbound;
        if let Err(e) = g.push(ts, &payload, |ts, opus| {
            inbound.push(ts, opus, now_us);
        }) {
            metrics::counter!("pttbridge_meeting_errors_total", "kind" => "transcode").increment(1);
            debug!(error = %e, "G.711 publisher packet not transcoded");
        }
    }

    /// A member's mute state.
    pub fn set_muted(&mut self, client: Id, muted: bool) {
        if let Some(s) = self.speakers.get_mut(&client) {
            s.muted = muted;
        }
    }

    /// A member left.
    pub fn remove_speaker(&mut self, client: Id) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Some(mut s) = self.speakers.remove(&client) {
            s.reported.report(&s.inbound.stats(), "meeting_in");
            if s.voiced {
                out.push(Notice::MeetingTalking {
                    client,
                    talking: false,
                });
            }
        }
        out
    }

    /// Meeting chat into the PTT channel.
    pub fn send_text(&self, text: String) {
        let client = self.account.client.clone();
        // The command queue is bounded and async; chat must not hold up the room's media.
        tokio::spawn(async move {
            let _ = client
                .command(Command::ChannelText {
                    channel: None,
                    message: text,
                })
                .await;
        });
    }

    /// The 20 ms tick: PTT → meeting packets (Opus, to stamp per listener; and G.711 for the
    /// laws `g711` asks for: µ-law, A-law), and meeting → PTT voice.
    pub fn tick(
        &mut self,
        now: Instant,
        now_us: u64,
        to_meeting: &mut Vec<OutPacket>,
        g711: (bool, bool),
        to_g711: &mut Vec<(Law, OutPacket)>,
    ) -> Vec<Notice> {
        let mut notices = Vec::new();
        let start = to_meeting.len();
        // The G.711 timeline advances every tick, sent or not, so pauses keep their length.
        let g711_ts = self.g711_ts;
        self.g711_ts = self.g711_ts.wrapping_add(FRAME as u32);
        let route = match self.group.tick(now_us) {
            Ok(out) => {
                if self.direct.is_none() {
                    to_meeting.extend(out.to_listeners.iter().cloned());
                }
                if out.route == Route::Silent || g711 == (false, false) {
                    self.g711_out.idle();
                } else if let Err(e) = self.g711_out.encode(out.listener_pcm, g711.0, g711.1) {
                    metrics::counter!("pttbridge_meeting_errors_total", "kind" => "transcode")
                        .increment(1);
                    debug!(error = %e, "PTT audio not transcoded to G.711");
                } else {
                    for law in [Law::Mu, Law::A] {
                        if let Some(p) = self.g711_out.payload(law) {
                            to_g711.push((
                                law,
                                OutPacket {
                                    source: Source::Mix,
                                    src_ts: g711_ts,
                                    samples: FRAME as u32,
                                    payload: p.clone(),
                                },
                            ));
                        }
                    }
                }
                Some(out.route)
            }
            Err(e) => {
                metrics::counter!("pttbridge_meeting_errors_total", "kind" => "mix").increment(1);
                warn!(error = %e, "PTT mix tick failed");
                None
            }
        };
        if let Some(route) = route {
            for p in &to_meeting[start..] {
                self.measure(route, p, now);
            }
        }
        self.meeting_to_ptt(now, now_us, &mut notices);
        self.ticks += 1;
        if self.ticks.is_multiple_of(REPORT_TICKS) {
            let sessions: Vec<u32> = self.talkers.keys().copied().collect();
            for s in sessions {
                self.report_talker(s);
            }
            for sp in self.speakers.values_mut() {
                sp.reported.report(&sp.inbound.stats(), "meeting_in");
            }
        }
        notices
    }

    /// Exports a PTT talker's jitter-buffer figures (forgotten once it is no longer a talker).
    fn report_talker(&mut self, session: u32) {
        let Some(stats) = self.group.talker_stats(session) else {
            self.talker_reports.remove(&session);
            return;
        };
        let r = self.talker_reports.entry(session).or_default();
        r.report(&stats, "ptt_in");
        if !self.talkers.contains_key(&session) {
            self.talker_reports.remove(&session);
        }
    }

    fn measure(&self, route: Route, p: &OutPacket, now: Instant) {
        let label = match route {
            Route::PassThrough(_) => "passthrough",
            _ => "mix",
        };
        // Pass-through: the packet's own arrival. Mix: the newest arrival whose audio is in it
        // (each talker's packet played this tick arrived one jitter depth ago at least).
        let arrived = match p.source {
            Source::Talker(s) => self
                .arrivals
                .iter()
                .find(|(ss, ts, _)| *ss == s && *ts == p.src_ts)
                .map(|a| a.2),
            Source::Mix => {
                let mut newest: Option<Instant> = None;
                for s in self.talkers.keys() {
                    if let Some(popped) = self.group.popped(*s)
                        && let Some(last) = popped.last()
                        && let Some(a) = self
                            .arrivals
                            .iter()
                            .find(|(ss, ts, _)| ss == s && *ts == last.ts)
                    {
                        newest = Some(newest.map_or(a.2, |n: Instant| n.max(a.2)));
                    }
                }
                newest
            }
        };
        if let Some(t) = arrived {
            metrics::histogram!("pttbridge_meeting_bridge_latency_seconds", "route" => label)
                .record(now.duration_since(t).as_secs_f64());
        }
    }

    fn meeting_to_ptt(&mut self, now: Instant, now_us: u64, notices: &mut Vec<Notice>) {
        self.mixer.clear();
        let mut speaking = 0;
        for (id, s) in &mut self.speakers {
            let kind = s
                .inbound
                .pull(now_us, &mut s.stereo)
                .unwrap_or(FrameKind::Silence);
            if kind != FrameKind::Silence {
                media::pcm::stereo_to_mono(&s.stereo, &mut s.mono);
            } else {
                s.mono.fill(0);
            }
            let ev = if s.muted {
                s.vad.observe_nothing()
            } else if let Some(level) = s.level.take() {
                s.vad.observe_level(level)
            } else if kind == FrameKind::Silence {
                s.vad.observe_nothing()
            } else {
                s.vad.observe_pcm(&s.mono)
            };
            match ev {
                Some(VadEvent::Started) => {
                    s.voiced = true;
                    notices.push(Notice::MeetingTalking {
                        client: *id,
                        talking: true,
                    });
                }
                Some(VadEvent::Stopped) => {
                    s.voiced = false;
                    notices.push(Notice::MeetingTalking {
                        client: *id,
                        talking: false,
                    });
                }
                None => {}
            }
            if !s.muted {
                // While the room holds the floor every unmuted publisher is heard (word onsets
                // and the quiet ends of phrases included); the VAD only decides whether to hold it.
                self.mixer.add(&s.mono);
                if s.vad.is_active() {
                    speaking += 1;
                }
            }
        }
        if speaking == 0 || !self.ptt_up {
            if self.holding {
                self.stop_sending();
                self.floor.release(&self.meeting_party.clone(), now);
            } else if self.denied {
                // Gave up waiting: leave the queue.
                self.floor.release(&self.meeting_party.clone(), now);
            }
            self.denied = false;
            return;
        }
        if !self.holding {
            match self
                .floor
                .request(self.meeting_party.clone(), self.meeting_level, true, now)
            {
                d if d.is_granted() => {
                    self.holding = true;
                    self.denied = false;
                    notices.push(Notice::FloorGranted);
                }
                Decision::Denied { holder } => {
                    if !self.denied {
                        notices.push(Notice::FloorDenied { holder });
                    }
                    self.denied = true;
                }
                Decision::Queued { .. } => {
                    if !self.denied {
                        let holder = self
                            .floor
                            .holder()
                            .map(|h| h.party.clone())
                            .unwrap_or_else(|| self.meeting_party.clone());
                        notices.push(Notice::FloorDenied { holder });
                    }
                    self.denied = true;
                }
                _ => {}
            }
        }
        if !self.holding {
            return;
        }
        self.mixer.render(&mut self.limiter, &mut self.mix);
        match self.encoder.encode(&self.mix) {
            Ok(opus) => self.send_voice(opus, false),
            Err(e) => warn!(error = %e, "meeting → PTT encode failed"),
        }
    }

    fn send_voice(&mut self, opus: Bytes, terminator: bool) {
        let bytes = opus.len();
        let ok = self.account.client.send_voice(OutgoingVoice {
            opus,
            frames_10ms: 2,
            terminator,
            target: 0,
        });
        if ok {
            self.voice_out += 1;
            if let Some(c) = &self.counters {
                c.audio(1, bytes);
            }
            metrics::counter!("pttbridge_meeting_rtp_total", "direction" => "ptt_out").increment(1);
        } else {
            self.voice_dropped += 1;
            metrics::counter!("pttbridge_meeting_rtp_dropped_total", "reason" => "ptt_queue_full")
                .increment(1);
        }
    }

    /// Ends the meeting's talk burst on the PTT side (terminator packet).
    fn stop_sending(&mut self) {
        if !self.holding {
            return;
        }
        self.holding = false;
        self.mix.fill(0);
        if let Ok(opus) = self.encoder.encode(&self.mix) {
            self.send_voice(opus, true);
        }
        let _ = self.encoder.reset();
    }

    /// Tears down: releases the floor and ends any burst in progress.
    pub fn close(&mut self, now: Instant) {
        self.stop_sending();
        let me = self.meeting_party.clone();
        self.floor.release(&me, now);
        info!(dial = self.dial, "link closed");
    }

    /// Whether the meeting holds the PTT floor now.
    pub fn holding(&self) -> bool {
        self.holding
    }
}
