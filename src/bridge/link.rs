//! A PTT channel joined to a group on another side, sans-IO: the caller hands in what happened
//! (`handle_*`, each with an explicit `now`) and drains what to do ([`Link::poll_output`]).
//! No sockets, tasks or channels inside; the same core runs in a meeting room, in a call
//! answered on an external RTCPeer server, and in unit tests with a fake clock.
//!
//! ```text
//!   PTT channel ── ChannelEvent ──▶ ┌──────────────────────────────┐ ── Listeners(Opus) ──▶ group
//!   (TalkStarted/Voice/TalkStopped, │ PTT → group: one talker       │ ── ListenersG711 ───▶ members
//!    Text, Connected/Disconnected)  │  passes through, several are  │
//!                                   │  mixed (one shared encode)    │
//!                                   │ floor: PTT talkers, the group │ ── Notice ──────────▶ caller
//!                                   │  (one party), levels, queue   │
//!   group members ── packets ─────▶ │ group → PTT: jitter buffer,   │ ── PttVoice ───────▶ PTT
//!   (Opus / G.711, RFC 6464 level)  │  decode, VAD, mix, encode     │ ── PttText ────────▶ channel
//!                      tick (20 ms) └──────────────────────────────┘
//! ```
//!
//! - **PTT → group**: every PTT talker feeds a [`MixGroup`]: a lone talker passes through
//!   unchanged — on arrival ([`PassThrough::Direct`]) or on the tick — and several are mixed
//!   with one shared encode. The caller stamps each packet per listener with its own
//!   `OutboundClock`, so talker switches never jump a listener's RTP timestamps.
//! - **group → PTT**: each member's audio goes through a jitter buffer and decoder, is
//!   down-mixed to mono, and its VAD (RFC 6464 level when the member sends it, else energy)
//!   or the side's explicit talk state decides who speaks. While anyone speaks the link asks
//!   the channel's [`Floor`] for the group (queued behind a PTT talker; a higher level
//!   pre-empts); holding it, it mixes the speakers, encodes Opus mono and emits PTT voice.
//! - Text: channel text becomes [`Notice::Text`]; [`HANGUP_COMMAND`] becomes
//!   [`Notice::HangUp`]; [`Link::send_text`] emits [`Output::PttText`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use logsafe::{RateLimit, esc};
use media::Channels;
use media::g711::Law;
use media::group::{GroupConfig, MixGroup, OutPacket};
use media::inbound::{FRAME, FrameKind};
use media::limiter::Limiter;
use media::mixer::Mixer;
use media::opus::{Application, Encoder};
use media::passthrough::{Route, Source};
use tracing::{debug, info, warn};

use super::g711::G711Outbound;
use super::member::Member;
use super::metrics::{BurstStart, JitterReport, LinkMetrics};
pub use super::passthrough::PassThrough;
use crate::hub::Party;
use crate::hub::calls::CallCounters;
use crate::hub::floor::{Decision, Floor, MicLevel};
use crate::sides::ptt::ChannelEvent;

/// Text a PTT user sends (in the linked channel, or privately to the bridge's account) to hang
/// up the link from the PTT side.
pub const HANGUP_COMMAND: &str = "/hangup";

/// Ticks (20 ms) between jitter-buffer reports: once a second.
const REPORT_TICKS: u64 = 50;
/// Most arrival stamps kept for latency measurement (≈ 5 s of two talkers).
const MAX_ARRIVALS: usize = 512;
/// Most group ticks awaiting [`Link::sent`] (a caller that never calls it keeps the newest).
const MAX_MEASURED: usize = 8;

/// What a link is set up with.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// How a lone PTT talker reaches the group.
    pub passthrough: PassThrough,
    /// The party the group appears as on the PTT floor (e.g. `meeting room 600`).
    pub group_party: Party,
    /// Floor level of the group's speakers.
    pub group_level: MicLevel,
    /// Floor level of PTT talkers.
    pub ptt_level: MicLevel,
    /// Hand-raise only: the group's audio reaches the PTT channel only from the member whose
    /// raised hand holds the floor ([`Link::raise_hand`]); otherwise voice activity takes it.
    pub hand_only: bool,
}

/// Where the first raised hand stands on the floor ([`Notice::Hand`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandState {
    /// The group holds the floor for this hand: the member is heard on the PTT channel.
    Granted,
    /// Waiting for the floor (`holder` has it).
    Queued {
        /// Who holds it.
        holder: Option<Party>,
    },
    /// The grant is over (the hand was lowered, or a higher level took the floor).
    Ended,
}

/// Something the caller must do.
#[derive(Debug, Clone)]
pub enum Output<M> {
    /// PTT audio (Opus 48 kHz) for every listener of the group: stamp it with each
    /// listener's clock.
    Listeners(OutPacket),
    /// The same tick's PTT audio as G.711, for listeners that take `Law`.
    ListenersG711(Law, OutPacket),
    /// One 20 ms Opus packet (48 kHz mono) into the PTT channel; `terminator` ends the burst.
    PttVoice {
        /// The packet.
        opus: Bytes,
        /// Last packet of the group's talk burst.
        terminator: bool,
    },
    /// Text into the PTT channel.
    PttText(String),
    /// Something to tell the group or the platforms.
    Notice(Notice<M>),
}

/// What happened, for the caller to tell its group and the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice<M> {
    /// A PTT user started/stopped talking.
    PttTalking {
        /// The PTT user.
        party: Party,
        /// Started or stopped.
        talking: bool,
    },
    /// A group member started/stopped talking (VAD, or the side's explicit state).
    MemberTalking {
        /// The member.
        member: M,
        /// Started or stopped.
        talking: bool,
    },
    /// The group was refused the PTT floor (or queued behind `holder`).
    FloorDenied {
        /// Who holds it.
        holder: Party,
    },
    /// The group got the PTT floor (at once, from the queue, or after a pre-emption ended).
    FloorGranted,
    /// A PTT user sent [`HANGUP_COMMAND`] (in the channel, or privately to the account).
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
    /// A raised hand's place on the floor changed.
    Hand {
        /// Whose hand.
        member: M,
        /// Granted, queued or ended.
        state: HandState,
    },
}

/// A PTT channel ⇄ group link. See the module docs.
pub struct Link<M> {
    cfg: LinkConfig,
    epoch: Instant,
    out: VecDeque<Output<M>>,
    metrics: LinkMetrics,
    // ---- PTT → group
    group: MixGroup,
    /// PTT session → the link's id for its current burst (see [`Link::talker_key`]); every
    /// map below is keyed by that id, as are the sources of the packets given to listeners.
    talk_keys: HashMap<u32, u32>,
    next_talk_key: u32,
    talkers: HashMap<u32, Party>,
    /// Direct pass-through in progress: the lone talker and the end of its last packet.
    direct: Option<(u32, u32)>,
    /// This burst had two talkers at once: the mix carries it to the end.
    burst_mixed: bool,
    /// PTT audio is not given to the group (the talk state still is).
    ptt_muted: bool,
    arrivals: VecDeque<(u32, u32, Instant)>,
    /// Newest arrival in each group tick's packets since the caller last said they were sent
    /// ([`Link::sent`]), by route: their latency ends at the send.
    measured: Vec<(Route, Instant)>,
    talker_reports: HashMap<u32, JitterReport>,
    g711_out: G711Outbound,
    g711_ts: u32,
    /// Laws some listener takes: µ-law, A-law.
    g711_laws: (bool, bool),
    // ---- group → PTT
    members: HashMap<M, Member>,
    /// Mute and talk state (`(muted, explicit)`) set for members that have sent no audio yet:
    /// their first packet makes their [`Member`] with it.
    presets: HashMap<M, (bool, Option<bool>)>,
    mixer: Mixer,
    limiter: Limiter,
    encoder: Encoder,
    mix: Vec<i16>,
    floor: Floor,
    holding: bool,
    denied: bool,
    /// The PTT account is connected (group audio is only sent then).
    ptt_up: bool,
    /// Raised hands, first raised first: the first asks the floor for the group.
    hands: Vec<M>,
    /// What the first hand was last told (granted or queued), so each change is told once.
    hand_told: Option<(M, HandState)>,
    /// Ticks in a row the held floor had no audio from any speaker (a gap mid-burst).
    gap_ticks: u32,
    ticks: u64,
    /// Voice packets emitted into the PTT channel.
    voice_out: u64,
    /// The call record's counters: PTT voice packets in and group voice packets out (each
    /// once, however many listeners).
    pub counters: Option<Arc<CallCounters>>,
}

impl<M> std::fmt::Debug for Link<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("group", &self.cfg.group_party.id)
            .field("holding", &self.holding)
            .field("talkers", &self.talkers.len())
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl<M: Copy + Ord + Hash + std::fmt::Debug> Link<M> {
    /// A link starting at `now`.
    pub fn new(cfg: LinkConfig, now: Instant) -> media::Result<Self> {
        let mut encoder = Encoder::new(48_000, Channels::Mono, Application::Audio)?;
        encoder.set_bitrate(40_000)?;
        encoder.set_complexity(5)?;
        Ok(Self {
            cfg,
            epoch: now,
            out: VecDeque::with_capacity(16),
            metrics: LinkMetrics::new(),
            group: MixGroup::new(GroupConfig::default())?,
            talk_keys: HashMap::new(),
            next_talk_key: 0,
            talkers: HashMap::new(),
            direct: None,
            burst_mixed: false,
            ptt_muted: false,
            arrivals: VecDeque::with_capacity(MAX_ARRIVALS),
            measured: Vec::with_capacity(MAX_MEASURED),
            talker_reports: HashMap::new(),
            g711_out: G711Outbound::new()?,
            g711_ts: 0,
            g711_laws: (false, false),
            members: HashMap::new(),
            presets: HashMap::new(),
            mixer: Mixer::new(FRAME),
            limiter: Limiter::new(),
            encoder,
            mix: vec![0; FRAME],
            floor: Floor::new(None),
            holding: false,
            denied: false,
            ptt_up: true,
            hands: Vec::new(),
            hand_told: None,
            gap_ticks: 0,
            ticks: 0,
            voice_out: 0,
            counters: None,
        })
    }

    /// The next thing to do, in order; `None` when there is nothing (call after every input).
    pub fn poll_output(&mut self) -> Option<Output<M>> {
        self.out.pop_front()
    }

    /// Whether the group holds the PTT floor now.
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// Voice packets emitted into the PTT channel so far.
    pub fn voice_out(&self) -> u64 {
        self.voice_out
    }

    fn us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn notice(&mut self, n: Notice<M>) {
        self.out.push_back(Output::Notice(n));
    }

    // ---- inputs --------------------------------------------------------------------------

    /// What the PTT account reports about its channel.
    pub fn handle_ptt(&mut self, ev: ChannelEvent, now: Instant) {
        match ev {
            ChannelEvent::TalkStarted { party, session } => {
                let talker = self.talker_key(session);
                self.talk_started(party, talker, now)
            }
            ChannelEvent::Voice {
                session,
                sequence,
                opus,
            } => {
                let talker = self.talker_key(session);
                self.ptt_voice(talker, sequence, opus, now)
            }
            ChannelEvent::TalkStopped { party, session } => {
                let talker = self.talker_key(session);
                self.talk_keys.remove(&session);
                self.talk_stopped(party, talker, now)
            }
            ChannelEvent::Text {
                from,
                text,
                private,
            } => self.text(from, text, private),
            ChannelEvent::Connected => {
                if !self.ptt_up {
                    info!(
                        group = %self.cfg.group_party.id,
                        "PTT account back: the link carries audio again"
                    );
                }
                self.ptt_up = true;
            }
            ChannelEvent::Disconnected => {
                self.ptt_down(now);
                // A server that comes back numbers its sessions afresh.
                self.talk_keys.clear();
            }
        }
        self.sync_hand();
    }

    /// The link's own id for the burst `session` is in: a new one for every burst, so a
    /// session number the server reuses (after a restart) is a new source to the listeners'
    /// clocks, and its pause since the last burst is kept.
    fn talker_key(&mut self, session: u32) -> u32 {
        let next = &mut self.next_talk_key;
        *self.talk_keys.entry(session).or_insert_with(|| {
            *next = next.wrapping_add(1);
            *next
        })
    }

    /// One RTP packet from member `member`: Opus (`law` None) or G.711; `ts` in 48 kHz units;
    /// `level` its RFC 6464 audio level as str0m gives it (−dBov), if it sent one.
    pub fn handle_member_packet(
        &mut self,
        member: M,
        law: Option<Law>,
        ts: u32,
        payload: Bytes,
        level: Option<i8>,
        now: Instant,
    ) {
        let now_us = self.us(now);
        let m = match self.members.entry(member) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match Member::new() {
                Ok(mut m) => {
                    if let Some((muted, explicit)) = self.presets.remove(&member) {
                        m.muted = muted;
                        m.explicit = explicit;
                    }
                    e.insert(m)
                }
                Err(err) => {
                    warn!(error = %err, "no decoder for a group member");
                    return;
                }
            },
        };
        if let Err(e) = m.push(law, ts, payload, level, now_us) {
            self.metrics.transcode_errors.increment(1);
            // A member can send bad packets as fast as it likes.
            static NOT_TAKEN: RateLimit = RateLimit::debug("group member packet not taken");
            if NOT_TAKEN.allow() {
                debug!(error = %esc(&e), "group member packet not taken");
            }
        }
    }

    /// A member's mute state: a muted member is not heard on the PTT channel. Set before its
    /// first packet, it holds from that packet on.
    pub fn set_member_muted(&mut self, member: M, muted: bool) {
        match self.members.get_mut(&member) {
            Some(m) => m.muted = muted,
            None => self.presets.entry(member).or_default().0 = muted,
        }
    }

    /// A member's talk state as its side knows it (a push-to-talk button): `Some` overrides
    /// the VAD, `None` hands the decision back to it. Takes effect on the next tick (set before
    /// the member's first packet, from that packet on).
    pub fn set_member_talking(&mut self, member: M, talking: Option<bool>) {
        match self.members.get_mut(&member) {
            Some(m) => m.explicit = talking,
            None => self.presets.entry(member).or_default().1 = talking,
        }
    }

    /// Whether the group hears the PTT channel (talk state is reported either way).
    pub fn set_ptt_muted(&mut self, muted: bool) {
        self.ptt_muted = muted;
    }

    /// Whether the group is kept from hearing the PTT channel ([`Link::set_ptt_muted`]).
    pub fn ptt_muted(&self) -> bool {
        self.ptt_muted
    }

    /// The PTT users talking now, in the order their bursts began: what a group member who
    /// arrives mid-burst (or hears the channel again) is told.
    pub fn ptt_talkers(&self) -> Vec<Party> {
        let mut talkers: Vec<(&u32, &Party)> = self.talkers.iter().collect();
        talkers.sort_by_key(|(k, _)| **k);
        talkers.into_iter().map(|(_, p)| p.clone()).collect()
    }

    /// The members speaking now, by id: whose audio the group sends into the PTT channel while
    /// it holds the floor (what an archive names as the burst's talker).
    pub fn speakers(&self) -> Vec<M> {
        let mut ids: Vec<M> = self
            .members
            .iter()
            .filter(|(_, m)| m.speaking())
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// Which G.711 laws some listener takes (µ-law, A-law); each costs one encode per tick.
    pub fn set_g711_listeners(&mut self, mu: bool, a: bool) {
        self.g711_laws = (mu, a);
    }

    /// A member left: its audio and talk state go.
    pub fn remove_member(&mut self, member: M) {
        self.presets.remove(&member);
        self.hands.retain(|h| *h != member);
        if let Some(mut m) = self.members.remove(&member) {
            let stats = m.stats();
            m.reported.report(&stats, &self.metrics.jitter_members_in);
            if m.reported_talking {
                self.metrics.burst_members.record(&m.burst_start, &stats);
                self.notice(Notice::MemberTalking {
                    member,
                    talking: false,
                });
            }
        }
    }

    /// `member` raised its hand: it asks the PTT floor for the group (same rules as any
    /// request: granted when free, queued behind a PTT talker, pre-empted by a higher level)
    /// once the hands raised before it are down. Holding the floor for a hand, the group sends
    /// into the channel until the hand is lowered — in hand-raise-only mode that member's
    /// audio alone. [`Notice::Hand`] tells where the first hand stands.
    pub fn raise_hand(&mut self, member: M, now: Instant) {
        if !self.hands.contains(&member) {
            self.hands.push(member);
        }
        if self.hands.first() == Some(&member) && !self.holding && self.ptt_up {
            self.request_floor(now);
        }
        self.sync_hand();
    }

    /// `member` lowered its hand: it lets go of the floor (released on the next tick unless
    /// another hand, or in voice mode a speaker, keeps it).
    pub fn lower_hand(&mut self, member: M) {
        self.hands.retain(|h| *h != member);
        self.sync_hand();
    }

    /// Raised hands, first raised first.
    pub fn hands(&self) -> &[M] {
        &self.hands
    }

    /// Tells the first hand where it stands now, if that changed: granted while the group
    /// holds the floor, queued while it waits, ended when a grant it had is over.
    fn sync_hand(&mut self) {
        let now = match self.hands.first() {
            Some(m) if self.holding => Some((*m, HandState::Granted)),
            Some(m) if self.denied => Some((
                *m,
                HandState::Queued {
                    holder: self.floor.holder().map(|h| h.party.clone()),
                },
            )),
            _ => None,
        };
        if now == self.hand_told {
            return;
        }
        if let Some((m, HandState::Granted)) = self.hand_told.take()
            && now
                .as_ref()
                .is_none_or(|(n, s)| *n != m || *s != HandState::Granted)
        {
            self.notice(Notice::Hand {
                member: m,
                state: HandState::Ended,
            });
        }
        if let Some((m, state)) = &now {
            self.notice(Notice::Hand {
                member: *m,
                state: state.clone(),
            });
        }
        self.hand_told = now;
    }

    /// Group chat into the PTT channel.
    pub fn send_text(&mut self, text: String) {
        self.out.push_back(Output::PttText(text));
    }

    /// The 20 ms tick: PTT → group packets (buffered pass-through or mix, and G.711), and
    /// group → PTT voice. Call it every 20 ms (late ticks are caught up by calling it again).
    ///
    /// While PTT talkers are mixed, the mix for the coming 20 ms goes out as soon as every
    /// mixed talker's audio for it is in ([`MixGroup::tick_early`], from the voice input):
    /// this tick is then only its deadline, concealing a talker that is late or has stopped.
    pub fn handle_tick(&mut self, now: Instant) {
        let now_us = self.us(now);
        // Only the deadline here: mixing the next 20 ms from audio already waiting would lock
        // the mix to this clock's phase for good (each arrival would find its 20 ms already
        // made and wait for the next tick); the next arrival mixes it instead.
        self.ptt_to_group_tick(now_us, false);
        self.group_to_ptt_tick(now, now_us);
        self.sync_hand();
        self.ticks += 1;
        if self.ticks.is_multiple_of(REPORT_TICKS) {
            let sessions: Vec<u32> = self.talkers.keys().copied().collect();
            for s in sessions {
                self.report_talker(s);
            }
            for m in self.members.values_mut() {
                m.reported
                    .report(&m.stats(), &self.metrics.jitter_members_in);
            }
        }
    }

    /// Tears down: releases the floor and ends the group's burst in progress (its
    /// terminator is the last output).
    pub fn close(&mut self, now: Instant) {
        self.stop_sending();
        let me = self.cfg.group_party.clone();
        self.floor.release(&me, now);
        info!(group = %self.cfg.group_party.id, "link closed");
    }

    // ---- PTT → group -------------------------------------------------------------------

    fn talk_started(&mut self, party: Party, session: u32, now: Instant) {
        if self.talkers.keys().any(|s| *s != session) {
            self.end_direct();
        }
        if let Err(e) = self.group.add_talker(session) {
            warn!(error = %e, "PTT talker not mixed");
        }
        match self
            .floor
            .request(party.clone(), self.cfg.ptt_level, false, now)
        {
            Decision::Preempted { .. } => {
                // The PTT user outranks the group: stop sending, the group asks again.
                self.stop_sending();
            }
            Decision::Denied { .. } => {
                debug!(talker = %esc(&party.name), "PTT user talks over the group")
            }
            _ => {}
        }
        self.talkers.insert(session, party.clone());
        self.notice(Notice::PttTalking {
            party,
            talking: true,
        });
    }

    fn ptt_voice(&mut self, session: u32, sequence: u64, opus: Bytes, now: Instant) {
        if !self.talkers.contains_key(&session) {
            // Voice before TalkStarted (joined mid-burst): mix it all the same.
            let _ = self.group.add_talker(session);
        }
        let ts = (sequence.wrapping_mul(480)) as u32;
        self.metrics.ptt_in.increment(1);
        if let Some(c) = &self.counters {
            c.audio(1, opus.len());
        }
        if self.arrivals.len() == MAX_ARRIVALS {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back((session, ts, now));
        if self.direct_for(session, ts) {
            let samples =
                media::opus_toc::parse(&opus).map_or(FRAME as u32, |i| i.samples_at(48_000));
            self.direct = Some((session, ts.wrapping_add(samples)));
            if !self.ptt_muted {
                self.out.push_back(Output::Listeners(OutPacket {
                    source: Source::Talker(session),
                    src_ts: ts,
                    samples,
                    payload: opus.clone(),
                }));
            }
        } else if self.direct.is_some_and(|(s, _)| s == session) {
            self.metrics.dropped_late.increment(1);
        }
        // Buffered and decoded all the same: for G.711 listeners, and for the mix if a second
        // talker joins.
        let now_us = self.us(now);
        self.group.push(session, ts, opus, now_us);
        // Mixing: this may be the audio the coming 20 ms waited for.
        self.ptt_to_group_tick(now_us, true);
    }

    fn talk_stopped(&mut self, party: Party, session: u32, now: Instant) {
        self.talkers.remove(&session);
        if self.talkers.is_empty() {
            // The burst is over: the next one may go direct again.
            self.direct = None;
            self.burst_mixed = false;
        }
        self.report_talker(session);
        self.group.remove_talker(session);
        if let Some(next) = self.release_floor(&party, now)
            && next == self.cfg.group_party
        {
            self.holding = true;
            self.denied = false;
            self.notice(Notice::FloorGranted);
        }
        self.notice(Notice::PttTalking {
            party,
            talking: false,
        });
    }

    fn text(&mut self, from: Option<Party>, text: String, private: bool) {
        if text.trim().eq_ignore_ascii_case(HANGUP_COMMAND) {
            self.notice(Notice::HangUp { by: from });
        } else if !private {
            // Other private messages to the bridge's account are not the group's business.
            self.notice(Notice::Text { from, text });
        }
    }

    /// The PTT account lost its server: talkers are gone, the floor is free, the group's
    /// burst (if any) is over; nothing is sent until the account is back.
    fn ptt_down(&mut self, now: Instant) {
        warn!(
            group = %self.cfg.group_party.id,
            "PTT account disconnected: the link waits for it"
        );
        self.ptt_up = false;
        self.direct = None;
        self.burst_mixed = false;
        let mut talkers: Vec<(u32, Party)> = self.talkers.drain().collect();
        talkers.sort_by_key(|(s, _)| *s);
        for (session, party) in talkers {
            self.report_talker(session);
            self.group.remove_talker(session);
            self.floor.release(&party, now);
            self.notice(Notice::PttTalking {
                party,
                talking: false,
            });
        }
        self.stop_sending();
        let me = self.cfg.group_party.clone();
        self.floor.release(&me, now);
        self.denied = false;
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

    /// Whether `session`'s packet at `ts` goes to the group on arrival (direct pass-through).
    fn direct_for(&mut self, session: u32, ts: u32) -> bool {
        if self.cfg.passthrough != PassThrough::Direct || self.burst_mixed {
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

    /// One 20 ms of PTT → group audio: at the tick's deadline (`early` false: unless it already
    /// went out early), or ahead of it when the mix's audio is all in (`early`; never while
    /// passing through directly, whose packets went out on arrival).
    fn ptt_to_group_tick(&mut self, now_us: u64, early: bool) {
        let out = if early {
            if self.direct.is_some() {
                return;
            }
            self.group.tick_early(now_us)
        } else {
            self.group.tick_due(now_us)
        };
        let out = match out {
            Ok(Some(out)) => out,
            Ok(None) => return,
            Err(e) => {
                self.metrics.mix_errors.increment(1);
                warn!(error = %e, "PTT mix tick failed");
                return;
            }
        };
        // The G.711 timeline advances every 20 ms, sent or not, so pauses keep their length.
        let g711_ts = self.g711_ts;
        self.g711_ts = self.g711_ts.wrapping_add(FRAME as u32);
        let route = out.route;
        let send = !self.ptt_muted;
        if self.direct.is_none() && send {
            for p in out.to_listeners {
                self.out.push_back(Output::Listeners(p.clone()));
            }
        }
        let (mu, a) = self.g711_laws;
        if route == Route::Silent || !(mu || a) || !send {
            self.g711_out.idle();
        } else if let Err(e) = self.g711_out.encode(out.listener_pcm, mu, a) {
            self.metrics.transcode_errors.increment(1);
            static NOT_TRANSCODED: RateLimit =
                RateLimit::debug("PTT audio not transcoded to G.711");
            if NOT_TRANSCODED.allow() {
                debug!(error = %esc(&e), "PTT audio not transcoded to G.711");
            }
        } else {
            for law in [Law::Mu, Law::A] {
                if let Some(p) = self.g711_out.payload(law) {
                    self.out.push_back(Output::ListenersG711(
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
        if self.direct.is_none() && send {
            self.measure(route);
        }
    }

    /// Exports a PTT talker's jitter-buffer figures (forgotten once it is no longer a talker).
    fn report_talker(&mut self, session: u32) {
        let Some(stats) = self.group.talker_stats(session) else {
            self.talker_reports.remove(&session);
            return;
        };
        let r = self.talker_reports.entry(session).or_default();
        r.report(&stats, &self.metrics.jitter_ptt_in);
        if !self.talkers.contains_key(&session) {
            self.talker_reports.remove(&session);
            // A talker's stream lives for one burst: its figures are the burst's.
            if let Some(h) = self
                .metrics
                .burst_ptt
                .record(&BurstStart::default(), &stats)
            {
                debug!(session, ?h, "PTT talk burst audio");
            }
        }
    }

    /// Latency of this tick's packet, from its audio's arrival: pass-through, its own; mix, the
    /// newest whose audio is in it (each talker's packet played this tick arrived one jitter
    /// depth ago at least). Recorded when the caller has sent it ([`Link::sent`]).
    fn measure(&mut self, route: Route) {
        let arrived = match route {
            Route::Silent => None,
            Route::PassThrough(s) => self.group.popped(s).and_then(|popped| {
                let last = popped.last()?;
                self.arrival_of(s, last.ts)
            }),
            _ => {
                let mut newest: Option<Instant> = None;
                for s in self.talkers.keys() {
                    if let Some(last) = self.group.popped(*s).and_then(|p| p.last())
                        && let Some(a) = self.arrival_of(*s, last.ts)
                    {
                        newest = Some(newest.map_or(a, |n| n.max(a)));
                    }
                }
                newest
            }
        };
        if let Some(t) = arrived {
            if self.measured.len() == MAX_MEASURED {
                self.measured.remove(0);
            }
            self.measured.push((route, t));
        }
    }

    /// The caller has sent this input's (or tick's) listener packets at `at`: records the
    /// latency of those the group's tick made (buffered pass-through, mix), arrival to send.
    /// False when none came from a tick (e.g. a direct pass-through forward, which the caller
    /// measures itself).
    pub fn sent(&mut self, at: Instant) -> bool {
        let any = !self.measured.is_empty();
        for (route, t) in self.measured.drain(..) {
            let h = match route {
                Route::PassThrough(_) => &self.metrics.latency_passthrough,
                _ => &self.metrics.latency_mix,
            };
            h.record(at.saturating_duration_since(t).as_secs_f64());
        }
        any
    }

    fn arrival_of(&self, session: u32, ts: u32) -> Option<Instant> {
        self.arrivals
            .iter()
            .rev()
            .find(|(s, t, _)| *s == session && *t == ts)
            .map(|a| a.2)
    }

    // ---- group → PTT -------------------------------------------------------------------

    fn group_to_ptt_tick(&mut self, now: Instant, now_us: u64) {
        self.mixer.clear();
        let mut speaking = 0;
        let mut heard = false;
        let mut changes: Vec<(M, bool)> = Vec::new();
        // The first raised hand; in hand-raise-only mode nobody else is heard.
        let hand = self.hands.first().copied();
        let only = self.cfg.hand_only.then_some(hand);
        for (id, m) in &mut self.members {
            m.pull(now_us);
            let talking = m.talking();
            if talking != m.reported_talking {
                m.reported_talking = talking;
                changes.push((*id, talking));
                let stats = m.stats();
                if talking {
                    m.burst_start = BurstStart::of(&stats);
                } else if let Some(h) = self.metrics.burst_members.record(&m.burst_start, &stats) {
                    debug!(?h, "member talk burst audio");
                }
            }
            if !m.muted && only.is_none_or(|h| h == Some(*id)) {
                // While the group holds the floor every unmuted member is heard (word onsets
                // and the quiet ends of phrases included); the VAD only decides whether to
                // hold it.
                self.mixer.add(&m.mono);
                if m.speaking() {
                    speaking += 1;
                    heard |= m.last_kind == FrameKind::Voice;
                }
            }
        }
        // Reported in member order for repeatable output (HashMap order is not).
        changes.sort_unstable();
        for (member, talking) in changes {
            self.notice(Notice::MemberTalking { member, talking });
        }
        if (speaking == 0 && hand.is_none()) || !self.ptt_up {
            self.end_gap();
            let me = self.cfg.group_party.clone();
            if self.holding {
                self.stop_sending();
                self.release_floor(&me, now);
            } else if self.denied {
                // Gave up waiting: leave the queue.
                self.floor.release(&me, now);
            }
            self.denied = false;
            return;
        }
        if !self.holding {
            self.request_floor(now);
        }
        if !self.holding {
            return;
        }
        if heard || speaking == 0 {
            // (Nobody speaking: a raised hand holds the floor through its pauses.)
            self.end_gap();
        } else {
            // Holding the floor for a speaker whose audio did not come in time.
            self.gap_ticks += 1;
            self.metrics.to_ptt_gap_frames.increment(1);
        }
        self.mixer.render(&mut self.limiter, &mut self.mix);
        match self.encoder.encode(&self.mix) {
            Ok(opus) => self.send_voice(opus, false),
            Err(e) => warn!(error = %e, "group → PTT encode failed"),
        }
    }

    /// `party` lets go of the floor (or of its place in the queue). If a PTT user is still
    /// talking (one who talked over the holder, or started while another held it), the floor
    /// passes to them rather than to the queue or to nobody: the group must not get it and
    /// talk over a PTT user it does not outrank just because another party stopped first.
    /// Returns who got it from the queue.
    fn release_floor(&mut self, party: &Party, now: Instant) -> Option<Party> {
        let heir = self
            .talkers
            .iter()
            .filter(|(_, p)| *p != party)
            .min_by_key(|(s, _)| **s)
            .map(|(_, p)| p.clone());
        if let Some(heir) = heir
            && self.floor.hand_over(party, heir, self.cfg.ptt_level, now)
        {
            return None;
        }
        self.floor.release(party, now)
    }

    fn request_floor(&mut self, now: Instant) {
        let me = self.cfg.group_party.clone();
        match self
            .floor
            .request(me.clone(), self.cfg.group_level, true, now)
        {
            d if d.is_granted() => {
                self.holding = true;
                self.denied = false;
                self.notice(Notice::FloorGranted);
            }
            Decision::Denied { holder } => {
                if !self.denied {
                    self.notice(Notice::FloorDenied { holder });
                }
                self.denied = true;
            }
            Decision::Queued { .. } => {
                if !self.denied {
                    let holder = self.floor.holder().map(|h| h.party.clone()).unwrap_or(me);
                    self.notice(Notice::FloorDenied { holder });
                }
                self.denied = true;
            }
            _ => {}
        }
    }

    /// A gap on the group → PTT path ended: its length goes to the histogram.
    fn end_gap(&mut self) {
        if self.gap_ticks > 0 {
            self.metrics
                .to_ptt_gap_seconds
                .record(f64::from(self.gap_ticks) * 0.02);
            debug!(
                frames = self.gap_ticks,
                "group → PTT: a speaker's audio was missing mid-burst"
            );
            self.gap_ticks = 0;
        }
    }

    fn send_voice(&mut self, opus: Bytes, terminator: bool) {
        self.voice_out += 1;
        if let Some(c) = &self.counters {
            c.audio(1, opus.len());
        }
        self.out.push_back(Output::PttVoice { opus, terminator });
    }

    /// Ends the group's talk burst on the PTT side (terminator packet).
    fn stop_sending(&mut self) {
        if !self.holding {
            return;
        }
        self.holding = false;
        self.end_gap();
        self.mix.fill(0);
        if let Ok(opus) = self.encoder.encode(&self.mix) {
            self.send_voice(opus, true);
        }
        let _ = self.encoder.reset();
    }
}
