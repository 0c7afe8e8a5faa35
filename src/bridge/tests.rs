//! The link with both ends in memory, the way quinn-proto's `Pair` and str0m's tests run a
//! connection: a fake PTT channel (real Opus from a tone, 48 kHz mono, 20 ms frames) and fake
//! group members (real Opus, 48 kHz stereo, as browsers send) on one side, the caller draining
//! outputs on the other, and a fake clock (a base `Instant` plus 20 ms steps; nothing sleeps).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::Channels;
use media::g711::Law;
use media::group::OutPacket;
use media::opus::{Application, Decoder, Encoder};
use media::passthrough::Source;
use media::signal::{dominant_frequency, sine, tone_amplitude};

use super::{HandState, Link, LinkConfig, Notice, Output, PassThrough};
use crate::hub::floor::MicLevel;
use crate::hub::{Party, Side};
use crate::sides::ptt::ChannelEvent;

/// Samples in a 20 ms frame at 48 kHz (per channel).
const FRAME: usize = 960;
const RATE: u32 = 48_000;
/// The tick, and the spacing of every sender's packets.
const STEP: Duration = Duration::from_millis(20);
/// Amplitude of a speaking voice (−13.5 dBov: well above the VAD's thresholds).
const LOUD: f64 = 0.3;
/// Amplitude of a member whose microphone only picks up a hum (−63 dBov: never speech).
const QUIET: f64 = 0.001;
/// The link's VAD hangover (`member::HANGOVER_FRAMES`).
const HANGOVER: usize = 40;
/// Frames a member's jitter buffer holds before its audio plays (its least depth).
const DEPTH: usize = (super::member::MIN_DEPTH_MS / 20) as usize;

type Emitted = (u64, Cause, Output<i64>);

/// Which input an output came out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// A PTT voice packet arriving (what direct pass-through answers at once).
    Voice { session: u32, sequence: u64 },
    /// A member's packet arriving.
    Member(i64),
    /// The 20 ms tick.
    Tick,
    /// Anything else the test did (talk state, text, mute, connection, close).
    Other,
}

/// One user on the fake PTT channel.
struct PttUser {
    encoder: Encoder,
    /// Packets sent in this burst: the next one's sequence is twice this (10 ms units).
    sent: u64,
    /// Frames still to send, one per step.
    script: VecDeque<Vec<i16>>,
    /// What was sent: (step, sequence, packet).
    packets: Vec<(u64, u64, Bytes)>,
}

/// One member of the fake group (a browser: stereo Opus, RTP timestamps).
struct GroupMember {
    encoder: Encoder,
    /// RTP timestamp of the next packet: advances 960 every step, sent or not.
    ts: u32,
    script: VecDeque<Vec<i16>>,
}

/// A link with a fake PTT channel and a fake group on its two ends, and a fake clock.
struct Pair {
    link: Link<i64>,
    t0: Instant,
    /// Steps (20 ms) run so far: the clock reads `t0 + step × 20 ms`.
    step: u64,
    ptt: BTreeMap<u32, PttUser>,
    members: BTreeMap<i64, GroupMember>,
    /// Everything the link emitted and nobody has looked at yet.
    log: Vec<Emitted>,
}

/// PTT user `session` as the channel names it.
fn user(session: u32) -> Party {
    Party {
        side: Side::Ptt,
        id: format!("s{session}"),
        name: format!("user{session}"),
    }
}

fn group_party() -> Party {
    Party {
        side: Side::Meeting,
        id: "600".into(),
        name: "meeting room 600".into(),
    }
}

/// `frames` 20 ms frames of a `freq` Hz tone.
fn tone(freq: f64, amplitude: f64, frames: usize) -> Vec<Vec<i16>> {
    // Half a frame more than needed: `sine` rounds its length down.
    let secs = (frames as f64 + 0.5) * 0.02;
    sine(RATE, freq, amplitude, secs)
        .chunks_exact(FRAME)
        .take(frames)
        .map(<[i16]>::to_vec)
        .collect()
}

impl Pair {
    fn new(passthrough: PassThrough) -> Self {
        Self::with_levels(passthrough, 1, 1)
    }

    fn with_levels(passthrough: PassThrough, ptt_level: MicLevel, group_level: MicLevel) -> Self {
        Self::build(passthrough, ptt_level, group_level, false)
    }

    /// A link whose group is heard on PTT only through a raised hand.
    fn hand_only() -> Self {
        Self::build(PassThrough::Direct, 1, 1, true)
    }

    fn build(
        passthrough: PassThrough,
        ptt_level: MicLevel,
        group_level: MicLevel,
        hand_only: bool,
    ) -> Self {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            passthrough,
            group_party: group_party(),
            group_level,
            ptt_level,
            hand_only,
        };
        Self {
            link: Link::new(cfg, t0).expect("link"),
            t0,
            step: 0,
            ptt: BTreeMap::new(),
            members: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.t0 + STEP * self.step as u32
    }

    /// Takes whatever the link has to say, tagged with its cause.
    fn drain(&mut self, cause: Cause) {
        while let Some(o) = self.link.poll_output() {
            self.log.push((self.step, cause, o));
        }
    }

    /// Everything emitted since the last call.
    fn outputs(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.log)
    }

    /// A channel event now.
    fn ptt_event(&mut self, ev: ChannelEvent) {
        let now = self.now();
        self.link.handle_ptt(ev, now);
        self.drain(Cause::Other);
    }

    /// PTT user `session` presses the button (its sequence starts from 0).
    fn ptt_start(&mut self, session: u32) {
        let mut encoder = Encoder::new(RATE, Channels::Mono, Application::Voip).expect("encoder");
        encoder.set_bitrate(32_000).expect("bitrate");
        self.ptt.insert(
            session,
            PttUser {
                encoder,
                sent: 0,
                script: VecDeque::new(),
                packets: Vec::new(),
            },
        );
        self.ptt_event(ChannelEvent::TalkStarted {
            party: user(session),
            session,
        });
    }

    /// PTT user `session` says a `freq` Hz tone for `frames` more frames (starting to talk
    /// if it was not).
    fn ptt_talk(&mut self, session: u32, freq: f64, frames: usize) {
        if !self.ptt.contains_key(&session) {
            self.ptt_start(session);
        }
        let u = self.ptt.get_mut(&session).expect("talking");
        u.script.extend(tone(freq, LOUD, frames));
    }

    /// PTT user `session` lets go of the button.
    fn ptt_stop(&mut self, session: u32) {
        self.ptt.remove(&session);
        self.ptt_event(ChannelEvent::TalkStopped {
            party: user(session),
            session,
        });
    }

    /// What PTT user `session` sent: (step, sequence, packet).
    fn ptt_sent(&self, session: u32) -> &[(u64, u64, Bytes)] {
        &self.ptt[&session].packets
    }

    /// Member `id` sends `frames` frames of a `freq` Hz tone at `amplitude` (0: silence).
    fn member_send(&mut self, id: i64, freq: f64, amplitude: f64, frames: usize) {
        let m = self.members.entry(id).or_insert_with(|| GroupMember {
            encoder: Encoder::new(RATE, Channels::Stereo, Application::Voip).expect("encoder"),
            ts: 0x1234_5678,
            script: VecDeque::new(),
        });
        m.script.extend(tone(freq, amplitude, frames));
    }

    /// Member `id` speaks (a loud `freq` Hz tone) for `frames` frames.
    fn member_speak(&mut self, id: i64, freq: f64, frames: usize) {
        self.member_send(id, freq, LOUD, frames);
    }

    /// Member `id` sends silence for `frames` frames (its microphone is open).
    fn member_silent(&mut self, id: i64, frames: usize) {
        self.member_send(id, 0.0, 0.0, frames);
    }

    /// One 20 ms step: every PTT user and member with something to say sends one packet,
    /// then the link ticks, then the clock moves on.
    fn step(&mut self) {
        let now = self.now();
        let step = self.step;
        let mut voice = Vec::new();
        for (&session, u) in &mut self.ptt {
            if let Some(frame) = u.script.pop_front() {
                let opus = u.encoder.encode(&frame).expect("encode");
                let sequence = u.sent * 2;
                u.sent += 1;
                u.packets.push((step, sequence, opus.clone()));
                voice.push((session, sequence, opus));
            }
        }
        for (session, sequence, opus) in voice {
            self.link.handle_ptt(
                ChannelEvent::Voice {
                    session,
                    sequence,
                    opus,
                },
                now,
            );
            self.drain(Cause::Voice { session, sequence });
        }
        let mut packets = Vec::new();
        for (&id, m) in &mut self.members {
            let ts = m.ts;
            m.ts = m.ts.wrapping_add(FRAME as u32);
            if let Some(frame) = m.script.pop_front() {
                let mut stereo = vec![0i16; FRAME * 2];
                media::pcm::mono_to_stereo(&frame, &mut stereo);
                packets.push((id, ts, m.encoder.encode(&stereo).expect("encode")));
            }
        }
        for (id, ts, payload) in packets {
            self.link
                .handle_member_packet(id, None, ts, payload, None, now);
            self.drain(Cause::Member(id));
        }
        self.link.handle_tick(now);
        self.drain(Cause::Tick);
        self.step += 1;
    }

    /// `n` steps.
    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            self.step();
        }
    }
}

// ---- looking at outputs ----------------------------------------------------------------

fn notices(out: &[Emitted]) -> Vec<Notice<i64>> {
    out.iter()
        .filter_map(|(_, _, o)| match o {
            Output::Notice(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

/// Opus packets for the group's listeners, with when and why they came out.
fn listeners(out: &[Emitted]) -> Vec<(u64, Cause, OutPacket)> {
    out.iter()
        .filter_map(|(step, cause, o)| match o {
            Output::Listeners(p) => Some((*step, *cause, p.clone())),
            _ => None,
        })
        .collect()
}

/// Voice into the PTT channel: (step, packet, terminator).
fn ptt_voice(out: &[Emitted]) -> Vec<(u64, Bytes, bool)> {
    out.iter()
        .filter_map(|(step, _, o)| match o {
            Output::PttVoice { opus, terminator } => Some((*step, opus.clone(), *terminator)),
            _ => None,
        })
        .collect()
}

/// Steps at which `notice` came out.
fn steps_of(out: &[Emitted], notice: &Notice<i64>) -> Vec<u64> {
    out.iter()
        .filter_map(|(step, _, o)| match o {
            Output::Notice(n) if n == notice => Some(*step),
            _ => None,
        })
        .collect()
}

/// Outputs in short, for failure messages: `step cause what`.
fn show(out: &[Emitted]) -> Vec<String> {
    out.iter()
        .map(|(step, cause, o)| {
            let what = match o {
                Output::Listeners(p) => format!("Listeners({:?} ts {})", p.source, p.src_ts),
                Output::ListenersG711(law, _) => format!("ListenersG711({law:?})"),
                Output::PttVoice { opus, terminator } => {
                    format!("PttVoice({} B, terminator {terminator})", opus.len())
                }
                Output::PttText(t) => format!("PttText({t:?})"),
                Output::Notice(n) => format!("{n:?}"),
            };
            format!("{step} {cause:?} {what}")
        })
        .collect()
}

/// Decodes a run of mono Opus packets (each must be mono, 20 ms).
fn decode_mono<'a>(packets: impl IntoIterator<Item = &'a Bytes>) -> Vec<i16> {
    let mut dec = Decoder::new(RATE, Channels::Mono).expect("decoder");
    let mut pcm = Vec::new();
    for p in packets {
        let info = media::opus_toc::parse(p).expect("an Opus packet");
        assert!(!info.toc.stereo(), "mono packet expected");
        assert_eq!(info.samples_at(RATE), FRAME as u32, "20 ms packet expected");
        let mut frame = vec![0i16; FRAME];
        let n = dec.decode(Some(p), false, &mut frame).expect("decode");
        pcm.extend_from_slice(&frame[..n]);
    }
    pcm
}

fn talking(party: Party, talking: bool) -> Notice<i64> {
    Notice::PttTalking { party, talking }
}

fn member_talking(member: i64, talking: bool) -> Notice<i64> {
    Notice::MemberTalking { member, talking }
}

// ---- 1. pass-through -------------------------------------------------------------------

#[test]
fn direct_pass_through_forwards_each_packet_on_arrival() {
    let mut p = Pair::new(PassThrough::Direct);
    p.ptt_start(7);
    assert_eq!(notices(&p.outputs()), vec![talking(user(7), true)]);

    p.ptt_talk(7, 440.0, 25);
    p.tick(25);
    let out = p.outputs();
    let sent = p.ptt_sent(7).to_vec();
    let fwd = listeners(&out);
    assert_eq!(sent.len(), 25);
    assert_eq!(
        fwd.len(),
        sent.len(),
        "one listener packet per voice packet"
    );
    for ((step, cause, pkt), (sent_step, seq, opus)) in fwd.iter().zip(&sent) {
        assert_eq!(
            *cause,
            Cause::Voice {
                session: 7,
                sequence: *seq
            },
            "forwarded as it arrived, not on a tick"
        );
        assert_eq!(step, sent_step);
        assert_eq!(pkt.payload, *opus, "payload untouched");
        assert_eq!(pkt.source, fwd[0].2.source, "one source for the burst");
        assert!(matches!(pkt.source, Source::Talker(_)));
        assert_eq!(pkt.src_ts, (*seq * 480) as u32);
        assert_eq!(pkt.samples, FRAME as u32);
    }
    assert_eq!(out.len(), fwd.len(), "ticks add nothing: {:?}", show(&out));

    p.ptt_stop(7);
    p.tick(5);
    let out = p.outputs();
    assert_eq!(notices(&out), vec![talking(user(7), false)]);
    assert_eq!(out.len(), 1, "{:?}", show(&out));
}

/// Each burst is its own source to the listeners' clocks, even when the PTT server hands the
/// same session number to someone else after a restart: their pause since the last burst is
/// kept on the listeners' RTP timeline, never closed up.
#[test]
fn a_session_number_reused_after_a_reconnect_is_a_new_source() {
    let mut p = Pair::new(PassThrough::Direct);
    p.ptt_talk(3, 440.0, 5);
    p.tick(5);
    let first = listeners(&p.outputs())[0].2.source;
    // The server goes away mid-burst (its users with it) and comes back.
    p.ptt.remove(&3);
    p.ptt_event(ChannelEvent::Disconnected);
    p.ptt_event(ChannelEvent::Connected);
    p.outputs();
    p.ptt_talk(3, 440.0, 5);
    p.tick(5);
    let again = listeners(&p.outputs())[0].2.source;
    assert_ne!(
        first, again,
        "after the reconnect, session 3 is someone new"
    );
    p.ptt_stop(3);
    p.ptt_talk(3, 440.0, 5);
    p.tick(5);
    let next_burst = listeners(&p.outputs())[0].2.source;
    assert_ne!(again, next_burst, "a new burst is a new source");
}

#[test]
fn buffered_pass_through_sends_unchanged_packets_on_ticks() {
    let mut p = Pair::new(PassThrough::Buffered);
    p.ptt_talk(7, 440.0, 25);
    p.tick(30);
    let out = p.outputs();
    let sent = p.ptt_sent(7).to_vec();
    let fwd = listeners(&out);
    assert_eq!(
        fwd.len(),
        sent.len(),
        "every packet, once: {:?}",
        show(&out)
    );
    let delay = fwd[0].0 - sent[0].0;
    for ((step, cause, pkt), (sent_step, seq, opus)) in fwd.iter().zip(&sent) {
        assert_eq!(*cause, Cause::Tick, "out of the jitter buffer on the tick");
        assert_eq!(
            step - sent_step,
            delay,
            "a steady delay: the buffer's depth"
        );
        assert_eq!(pkt.payload, *opus, "payload untouched");
        assert_eq!(pkt.source, fwd[0].2.source, "one source for the burst");
        assert!(matches!(pkt.source, Source::Talker(_)));
        assert_eq!(pkt.src_ts, (*seq * 480) as u32);
    }
    assert!(delay <= 2, "the buffer holds one packet, not {delay} ticks");
    assert_eq!(
        notices(&out),
        vec![talking(user(7), true)],
        "nothing else came out"
    );
    assert_eq!(out.len(), fwd.len() + 1);
}

#[test]
fn g711_listeners_get_the_ticks_audio_once_per_law() {
    let mut p = Pair::new(PassThrough::Direct);
    p.link.set_g711_listeners(true, true);
    p.tick(3);
    assert!(p.outputs().is_empty(), "nothing while the channel is quiet");
    p.ptt_talk(7, 440.0, 20);
    p.tick(20);
    let out = p.outputs();
    let g711: Vec<(Law, OutPacket)> = out
        .iter()
        .filter_map(|(_, c, o)| match o {
            Output::ListenersG711(law, pkt) => {
                assert_eq!(*c, Cause::Tick);
                Some((*law, pkt.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(g711.len(), 40, "µ-law and A-law every tick");
    let mu: Vec<&OutPacket> = g711
        .iter()
        .filter(|(l, _)| *l == Law::Mu)
        .map(|x| &x.1)
        .collect();
    assert_eq!(mu.len(), 20);
    for w in mu.windows(2) {
        assert_eq!(w[1].src_ts.wrapping_sub(w[0].src_ts), FRAME as u32);
        assert_eq!(w[0].payload.len(), 160, "20 ms at 8 kHz");
        assert_eq!(w[0].source, Source::Mix);
    }
    let mut pcm = vec![0i16; 160 * 10];
    for (i, pkt) in mu[10..].iter().enumerate() {
        media::g711::decode(Law::Mu, &pkt.payload, &mut pcm[i * 160..(i + 1) * 160]);
    }
    assert!(
        tone_amplitude(&pcm, 8_000, 440.0) > 0.2,
        "the talker's tone, transcoded"
    );
    assert_eq!(listeners(&out).len(), 20, "Opus listeners as before");
}

// ---- 2. switch to the mix --------------------------------------------------------------

#[test]
fn a_second_talker_switches_the_burst_to_the_mix() {
    let mut p = Pair::new(PassThrough::Direct);
    p.ptt_talk(1, 440.0, 80);
    p.tick(10);
    let fwd = listeners(&p.outputs());
    assert_eq!(fwd.len(), 10);
    assert!(
        fwd.iter()
            .all(|(_, c, pkt)| matches!(c, Cause::Voice { session: 1, .. })
                && pkt.source == Source::Talker(1))
    );

    // Talker 2 joins: from now on the mix, one packet a tick.
    p.ptt_talk(2, 1000.0, 30);
    p.tick(30);
    let out = p.outputs();
    assert!(notices(&out).contains(&talking(user(2), true)));
    let mixed = listeners(&out);
    assert_eq!(mixed.len(), 30, "one packet per tick: {:?}", show(&out));
    let sent: Vec<Bytes> = [1, 2]
        .iter()
        .flat_map(|s| p.ptt_sent(*s).iter().map(|x| x.2.clone()))
        .collect();
    // The switch happens on a tick; from then on each 20 ms of mix goes out as soon as the
    // later talker's packet for it is in, not at the next tick.
    assert_eq!(mixed[0].1, Cause::Tick, "the switch");
    for (_, cause, _) in &mixed[1..] {
        assert!(
            matches!(cause, Cause::Voice { session: 2, .. }),
            "mixed on the later talker's arrival: {cause:?}"
        );
    }
    for (_, _, pkt) in &mixed {
        assert_eq!(pkt.source, Source::Mix, "no direct forwards while mixing");
        assert!(
            !sent.contains(&pkt.payload),
            "a new encode, not a talker's packet"
        );
    }
    let pcm = decode_mono(mixed[5..].iter().map(|x| &x.2.payload));
    let (a1, a2) = (
        tone_amplitude(&pcm, RATE, 440.0),
        tone_amplitude(&pcm, RATE, 1000.0),
    );
    assert!(a1 > 0.15 && a2 > 0.15, "both voices in the mix: {a1} {a2}");
    assert!(tone_amplitude(&pcm, RATE, 700.0) < 0.03, "and nothing else");

    // Talker 2 stops, talker 1 goes on: still no direct forwards until the channel is quiet.
    p.ptt_stop(2);
    p.tick(20);
    let out = p.outputs();
    let rest = listeners(&out);
    assert_eq!(rest.len(), 20, "one packet per tick: {:?}", show(&out));
    // The mix's hold, then talker 1 out of the group's jitter buffer (the hold's last frames
    // go out on talker 1's arrival, the rest on the ticks), never forwarded directly.
    assert!(
        rest.iter()
            .all(|(_, _, pkt)| matches!(pkt.source, Source::Mix | Source::Talker(1))),
        "{:?}",
        show(&out)
    );
    assert!(
        rest[6..].iter().all(|(_, c, _)| *c == Cause::Tick),
        "{:?}",
        show(&out)
    );
    let pcm = decode_mono(rest[10..].iter().map(|x| &x.2.payload));
    assert!(tone_amplitude(&pcm, RATE, 440.0) > 0.15);
    assert!(
        tone_amplitude(&pcm, RATE, 1000.0) < 0.03,
        "talker 2 is gone"
    );
    p.ptt_stop(1);
    p.tick(10);
    let out = p.outputs();
    assert_eq!(notices(&out), vec![talking(user(1), false)]);

    // A new lone talker: direct pass-through again.
    p.ptt_talk(3, 600.0, 10);
    p.tick(10);
    let out = p.outputs();
    let fwd = listeners(&out);
    assert_eq!(fwd.len(), 10);
    for ((_, cause, pkt), (_, seq, opus)) in fwd.iter().zip(p.ptt_sent(3)) {
        assert_eq!(
            *cause,
            Cause::Voice {
                session: 3,
                sequence: *seq
            }
        );
        assert_eq!(pkt.payload, *opus);
        assert_eq!(pkt.source, Source::Talker(3));
    }
}

// ---- 3. the floor ----------------------------------------------------------------------

#[test]
fn a_speaking_member_takes_the_floor_and_releases_it_after_the_hangover() {
    let mut p = Pair::new(PassThrough::Direct);
    p.member_silent(5, 10);
    p.tick(10);
    assert!(p.outputs().is_empty(), "silence takes nothing");

    p.member_speak(5, 600.0, 50);
    p.tick(50);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![member_talking(5, true), Notice::FloorGranted]
    );
    let granted = steps_of(&out, &Notice::FloorGranted)[0];
    assert_eq!(
        steps_of(&out, &member_talking(5, true)),
        vec![granted],
        "talking and granted on one tick"
    );
    assert_eq!(
        granted,
        10 + DEPTH as u64,
        "the VAD's onset: the second loud frame (steps 10, 11) once through the jitter buffer"
    );
    let voice = ptt_voice(&out);
    assert_eq!(
        voice.len(),
        50 - DEPTH,
        "a packet every tick from the grant on"
    );
    for (i, (step, _, term)) in voice.iter().enumerate() {
        assert_eq!(*step, granted + i as u64);
        assert!(!term);
    }
    let first_voice = out
        .iter()
        .position(|(_, _, o)| matches!(o, Output::PttVoice { .. }))
        .unwrap();
    let grant_at = out
        .iter()
        .position(|(_, _, o)| matches!(o, Output::Notice(Notice::FloorGranted)))
        .unwrap();
    assert!(grant_at < first_voice, "granted before the first packet");
    let pcm = decode_mono(voice[20..30].iter().map(|v| &v.1));
    assert!(tone_amplitude(&pcm, RATE, 600.0) > 0.2, "the member's tone");
    assert!((dominant_frequency(&pcm, RATE, 300.0, 1500.0) - 600.0).abs() <= 2.0);

    // Silent from step 60: voice goes on through the hangover, then one terminator.
    p.member_silent(5, 80);
    p.tick(80);
    let out = p.outputs();
    let voice = ptt_voice(&out);
    let (last, hangover) = voice.split_last().expect("a terminator");
    assert!(last.2, "the burst ends with a terminator: {:?}", show(&out));
    assert!(hangover.iter().all(|v| !v.2), "one terminator");
    assert!(
        (HANGOVER..=HANGOVER + DEPTH + 1).contains(&hangover.len()),
        "voice through the hangover, then stop: {} packets",
        hangover.len()
    );
    assert_eq!(
        steps_of(&out, &member_talking(5, false)),
        vec![last.0],
        "the member stops talking as the burst ends"
    );
    assert!(!p.link.holding());
    assert_eq!(notices(&out), vec![member_talking(5, false)]);
}

#[test]
fn a_member_that_stops_sending_releases_the_floor_too() {
    // A browser that stops sending altogether (DTX, or its track ended): the link conceals a
    // few frames, then hears nothing, and the hangover runs out as with silence.
    let mut p = Pair::new(PassThrough::Direct);
    p.member_speak(5, 600.0, 30);
    p.tick(30);
    assert!(p.link.holding());
    p.outputs();
    p.tick(80);
    let out = p.outputs();
    let voice = ptt_voice(&out);
    let (last, hangover) = voice.split_last().expect("a terminator");
    assert!(last.2, "{:?}", show(&out));
    assert!(
        (HANGOVER..=HANGOVER + DEPTH + 5).contains(&hangover.len()),
        "{} packets after the member went quiet",
        hangover.len()
    );
    assert_eq!(notices(&out), vec![member_talking(5, false)]);
    assert!(!p.link.holding());
}

#[test]
fn hand_raise_only_a_granted_hand_alone_is_heard_after_the_ptt_talker() {
    let mut p = Pair::hand_only();
    p.member_speak(5, 600.0, 300);
    p.member_speak(6, 800.0, 300);
    p.tick(30);
    let out = p.outputs();
    assert!(
        ptt_voice(&out).is_empty(),
        "no hand, no voice: {:?}",
        show(&out)
    );
    assert!(!notices(&out).contains(&Notice::FloorGranted));

    // A PTT user talks: the hand waits behind them.
    p.ptt_talk(1, 440.0, 100);
    p.tick(5);
    p.outputs();
    let now = p.now();
    p.link.raise_hand(5, now);
    p.drain(Cause::Other);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![
            Notice::FloorDenied { holder: user(1) },
            Notice::Hand {
                member: 5,
                state: HandState::Queued {
                    holder: Some(user(1))
                }
            }
        ]
    );
    p.tick(10);
    assert!(
        ptt_voice(&p.outputs()).is_empty(),
        "nothing over the PTT talker"
    );

    p.ptt_stop(1);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![
            Notice::FloorGranted,
            talking(user(1), false),
            Notice::Hand {
                member: 5,
                state: HandState::Granted
            }
        ]
    );
    p.tick(20);
    let voice = ptt_voice(&p.outputs());
    assert_eq!(voice.len(), 20, "PTT voice on every tick");
    let pcm = decode_mono(voice[5..].iter().map(|v| &v.1));
    assert!(tone_amplitude(&pcm, RATE, 600.0) > 0.2, "the hand is heard");
    assert!(
        tone_amplitude(&pcm, RATE, 800.0) < 0.02,
        "the member without a hand is not"
    );

    p.link.lower_hand(5);
    p.drain(Cause::Other);
    p.tick(2);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![Notice::Hand {
            member: 5,
            state: HandState::Ended
        }]
    );
    let voice = ptt_voice(&out);
    assert!(
        voice.len() == 1 && voice[0].2,
        "the burst ends: {:?}",
        show(&out)
    );
    assert!(!p.link.holding());
}

fn hand(member: i64, state: HandState) -> Notice<i64> {
    Notice::Hand { member, state }
}

#[test]
fn a_higher_ptt_level_preempts_a_granted_hand_which_then_waits_and_gets_it_back() {
    let mut p = Pair::build(PassThrough::Direct, 2, 1, true);
    p.member_speak(5, 600.0, 300);
    p.tick(5);
    let now = p.now();
    p.link.raise_hand(5, now);
    p.drain(Cause::Other);
    assert_eq!(
        notices(&p.outputs())
            .into_iter()
            .filter(|n| !matches!(n, Notice::MemberTalking { .. }))
            .collect::<Vec<_>>(),
        vec![Notice::FloorGranted, hand(5, HandState::Granted)]
    );
    p.tick(10);
    assert_eq!(ptt_voice(&p.outputs()).len(), 10);

    // A PTT user of a higher level talks: the grant ends at once (terminator), the hand waits.
    p.ptt_talk(1, 440.0, 20);
    let out = p.outputs();
    let voice = ptt_voice(&out);
    assert!(voice.len() == 1 && voice[0].2, "{:?}", show(&out));
    assert!(notices(&out).contains(&hand(5, HandState::Ended)));
    p.tick(10);
    let out = p.outputs();
    assert!(ptt_voice(&out).is_empty(), "{:?}", show(&out));
    assert!(
        notices(&out).contains(&hand(
            5,
            HandState::Queued {
                holder: Some(user(1))
            }
        )),
        "{:?}",
        show(&out)
    );
    p.ptt_stop(1);
    assert!(notices(&p.outputs()).contains(&hand(5, HandState::Granted)));
    p.tick(5);
    assert_eq!(ptt_voice(&p.outputs()).len(), 5, "heard again");
}

#[test]
fn in_voice_mode_a_raised_hand_holds_the_floor_through_silence_until_lowered() {
    let mut p = Pair::new(PassThrough::Direct);
    p.member_silent(5, 300);
    p.tick(5);
    assert!(ptt_voice(&p.outputs()).is_empty(), "silence takes no floor");
    let now = p.now();
    p.link.raise_hand(5, now);
    p.drain(Cause::Other);
    assert_eq!(
        notices(&p.outputs()),
        vec![Notice::FloorGranted, hand(5, HandState::Granted)]
    );
    p.tick(100);
    let out = p.outputs();
    assert_eq!(
        ptt_voice(&out).len(),
        100,
        "held for the hand, past any hangover"
    );
    assert!(notices(&out).is_empty(), "{:?}", show(&out));
    p.link.lower_hand(5);
    p.drain(Cause::Other);
    p.tick(2);
    let out = p.outputs();
    assert_eq!(notices(&out), vec![hand(5, HandState::Ended)]);
    assert!(!p.link.holding());
}

#[test]
fn a_member_waits_for_the_ptt_talker_then_gets_the_floor() {
    let mut p = Pair::new(PassThrough::Direct);
    p.ptt_talk(1, 440.0, 100);
    p.tick(5);
    p.outputs();

    p.member_speak(5, 600.0, 100);
    p.tick(30);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![
            member_talking(5, true),
            Notice::FloorDenied { holder: user(1) }
        ],
        "denied once, not on every tick"
    );
    assert!(ptt_voice(&out).is_empty(), "nothing over the PTT talker");
    assert_eq!(listeners(&out).len(), 30, "the group still hears PTT");

    p.ptt_stop(1);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![Notice::FloorGranted, talking(user(1), false)],
        "the queued group gets the floor as the talker lets go"
    );
    assert!(p.link.holding());
    p.tick(10);
    let out = p.outputs();
    let voice = ptt_voice(&out);
    assert_eq!(voice.len(), 10, "PTT voice on every tick");
    assert!(voice.iter().all(|v| !v.2));
    let pcm = decode_mono(voice[3..].iter().map(|v| &v.1));
    assert!(tone_amplitude(&pcm, RATE, 600.0) > 0.2);
}

#[test]
fn the_floor_stays_with_a_ptt_user_still_talking() {
    // Two PTT users talk; the one holding the floor stops, the other goes on: the floor is
    // not free for the group.
    let mut p = Pair::new(PassThrough::Direct);
    p.ptt_talk(1, 440.0, 100);
    p.tick(2);
    p.ptt_talk(2, 1000.0, 100);
    p.tick(5);
    p.ptt_stop(1);
    p.tick(2);
    p.outputs();
    p.member_speak(5, 600.0, 100);
    p.tick(20);
    let out = p.outputs();
    assert!(
        ptt_voice(&out).is_empty(),
        "the group talked over user 2: {:?}",
        show(&out)
    );
    assert_eq!(
        notices(&out),
        vec![
            member_talking(5, true),
            Notice::FloorDenied { holder: user(2) }
        ]
    );
    p.ptt_stop(2);
    assert_eq!(
        notices(&p.outputs()),
        vec![Notice::FloorGranted, talking(user(2), false)]
    );

    // The same when the group had queued behind user 1 before user 2 started.
    let mut p = Pair::new(PassThrough::Direct);
    p.ptt_talk(1, 440.0, 100);
    p.tick(2);
    p.member_speak(5, 600.0, 100);
    p.tick(5);
    p.ptt_talk(2, 1000.0, 100);
    p.tick(5);
    p.ptt_stop(1);
    p.tick(10);
    let out = p.outputs();
    assert!(
        ptt_voice(&out).is_empty(),
        "the group talked over user 2: {:?}",
        show(&out)
    );
    assert!(!notices(&out).contains(&Notice::FloorGranted));
    p.ptt_stop(2);
    p.tick(3);
    let out = p.outputs();
    assert!(notices(&out).contains(&Notice::FloorGranted));
    assert_eq!(ptt_voice(&out).len(), 3);
}

#[test]
fn a_ptt_user_talking_over_the_group_keeps_the_floor_once_the_group_stops() {
    // Equal levels: a PTT user starts while the group talks (denied, talks over it anyway);
    // the group's burst ends; when a member speaks again the PTT user is still talking.
    let mut p = Pair::new(PassThrough::Direct);
    p.member_speak(5, 600.0, 10);
    p.tick(10);
    assert!(p.link.holding());
    p.ptt_talk(1, 440.0, 200);
    p.member_silent(5, HANGOVER + 10);
    p.tick(HANGOVER + 10);
    assert!(!p.link.holding());
    p.outputs();
    p.member_speak(5, 600.0, 20);
    p.tick(20);
    let out = p.outputs();
    assert!(
        ptt_voice(&out).is_empty(),
        "the group talked over user 1: {:?}",
        show(&out)
    );
    assert_eq!(
        notices(&out),
        vec![
            member_talking(5, true),
            Notice::FloorDenied { holder: user(1) }
        ]
    );
}

// ---- 4. pre-emption --------------------------------------------------------------------

#[test]
fn a_higher_level_ptt_talker_preempts_the_group() {
    let mut p = Pair::with_levels(PassThrough::Direct, 5, 1);
    p.member_speak(5, 600.0, 100);
    p.tick(10);
    assert!(p.link.holding());
    assert!(!ptt_voice(&p.outputs()).is_empty());

    p.ptt_start(1);
    let out = p.outputs();
    let voice = ptt_voice(&out);
    assert_eq!(voice.len(), 1, "{:?}", show(&out));
    assert!(voice[0].2, "the group's burst ends at once");
    assert_eq!(notices(&out), vec![talking(user(1), true)]);
    assert!(!p.link.holding());

    p.ptt_talk(1, 440.0, 20);
    p.tick(20);
    let out = p.outputs();
    assert!(
        ptt_voice(&out).is_empty(),
        "no group voice under the dispatcher"
    );
    assert_eq!(notices(&out), vec![Notice::FloorDenied { holder: user(1) }]);

    p.ptt_stop(1);
    assert_eq!(
        notices(&p.outputs()),
        vec![Notice::FloorGranted, talking(user(1), false)]
    );
    p.tick(5);
    assert_eq!(ptt_voice(&p.outputs()).len(), 5);
}

#[test]
fn a_lower_level_ptt_talker_does_not_stop_the_group() {
    let mut p = Pair::with_levels(PassThrough::Direct, 1, 5);
    p.member_speak(5, 600.0, 100);
    p.tick(10);
    assert!(p.link.holding());
    p.outputs();

    p.ptt_talk(1, 440.0, 20);
    p.tick(20);
    let out = p.outputs();
    assert_eq!(notices(&out), vec![talking(user(1), true)]);
    let voice = ptt_voice(&out);
    assert_eq!(voice.len(), 20, "the group's voice goes on");
    assert!(voice.iter().all(|v| !v.2), "no terminator");
    assert!(p.link.holding());
    assert_eq!(
        listeners(&out).len(),
        20,
        "and the group hears the PTT user"
    );
}

// ---- 5. mute and explicit talk state ---------------------------------------------------

#[test]
fn a_muted_member_is_not_heard_on_ptt() {
    let mut p = Pair::new(PassThrough::Direct);
    p.member_speak(5, 600.0, 200);
    p.tick(10);
    assert!(p.link.holding());
    p.outputs();

    p.link.set_member_muted(5, true);
    p.tick(1);
    let out = p.outputs();
    let voice = ptt_voice(&out);
    assert_eq!(voice.len(), 1);
    assert!(voice[0].2, "muting ends the burst on the next tick");
    assert!(!p.link.holding(), "and releases the floor");
    p.tick(HANGOVER + 10);
    let out = p.outputs();
    assert!(
        ptt_voice(&out).is_empty(),
        "a muted member's speech is not sent"
    );
    assert_eq!(
        notices(&out),
        vec![member_talking(5, false)],
        "its VAD stops hearing it after the hangover"
    );
    assert!(
        steps_of(&out, &member_talking(5, false))[0] >= 10 + HANGOVER as u64,
        "{:?}",
        show(&out)
    );

    p.link.set_member_muted(5, false);
    p.tick(10);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![member_talking(5, true), Notice::FloorGranted]
    );
    assert!(ptt_voice(&out).len() >= 8, "heard again once unmuted");
}

#[test]
fn a_member_muted_before_its_first_packet_stays_muted() {
    // A side may report a member's mute before its audio starts flowing.
    let mut p = Pair::new(PassThrough::Direct);
    p.link.set_member_muted(5, true);
    p.member_speak(5, 600.0, 30);
    p.tick(30);
    let out = p.outputs();
    assert!(
        ptt_voice(&out).is_empty(),
        "a muted member was heard: {:?}",
        show(&out)
    );
    assert!(notices(&out).is_empty(), "{:?}", show(&out));
    p.link.set_member_muted(5, false);
    p.member_speak(5, 600.0, 10);
    p.tick(10);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![member_talking(5, true), Notice::FloorGranted]
    );

    // Same for a talk state set before the first packet.
    let mut p = Pair::new(PassThrough::Direct);
    p.link.set_member_talking(5, Some(false));
    p.member_speak(5, 600.0, 30);
    p.tick(30);
    assert!(ptt_voice(&p.outputs()).is_empty());

    // A member that leaves before sending anything leaves no state behind.
    let mut p = Pair::new(PassThrough::Direct);
    p.link.set_member_muted(6, true);
    p.link.remove_member(6);
    p.member_speak(6, 600.0, 10);
    p.tick(10);
    assert!(notices(&p.outputs()).contains(&Notice::FloorGranted));
}

#[test]
fn ptt_mute_hides_ptt_audio_but_not_its_talk_state() {
    let mut p = Pair::new(PassThrough::Direct);
    p.link.set_g711_listeners(true, false);
    p.link.set_ptt_muted(true);
    p.ptt_talk(1, 440.0, 30);
    p.tick(10);
    let out = p.outputs();
    assert_eq!(notices(&out), vec![talking(user(1), true)]);
    assert_eq!(out.len(), 1, "no audio for the group: {:?}", show(&out));
    // What a room tells a member who arrives now, or when it unmutes the channel.
    assert!(p.link.ptt_muted());
    assert_eq!(p.link.ptt_talkers(), vec![user(1)]);

    p.link.set_ptt_muted(false);
    assert!(!p.link.ptt_muted());
    p.tick(10);
    let out = p.outputs();
    let fwd = listeners(&out);
    assert_eq!(fwd.len(), 10, "heard again");
    assert!(
        fwd.iter()
            .all(|(_, c, _)| matches!(c, Cause::Voice { session: 1, .. }))
    );
    assert!(
        out.iter()
            .any(|(_, _, o)| matches!(o, Output::ListenersG711(Law::Mu, _)))
    );

    p.link.set_ptt_muted(true);
    p.ptt_stop(1);
    p.ptt_talk(2, 440.0, 10);
    p.tick(10);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![talking(user(1), false), talking(user(2), true)]
    );
    assert_eq!(out.len(), 2, "{:?}", show(&out));
    assert_eq!(p.link.ptt_talkers(), vec![user(2)]);

    // Buffered pass-through is muted the same way.
    let mut p = Pair::new(PassThrough::Buffered);
    p.link.set_ptt_muted(true);
    p.ptt_talk(1, 440.0, 20);
    p.tick(10);
    assert!(listeners(&p.outputs()).is_empty());
    p.link.set_ptt_muted(false);
    p.tick(10);
    assert!(listeners(&p.outputs()).len() >= 9);
}

#[test]
fn an_explicit_talk_state_holds_the_floor_without_the_vad() {
    let mut p = Pair::new(PassThrough::Direct);
    // A hum for exactly as long as the explicit state is tried (5 + 10 + 1 + 10 steps).
    p.member_send(5, 600.0, QUIET, 26);
    p.tick(5);
    assert!(p.outputs().is_empty(), "a hum is not speech");

    p.link.set_member_talking(5, Some(true));
    p.tick(10);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![member_talking(5, true), Notice::FloorGranted]
    );
    assert_eq!(ptt_voice(&out).len(), 10, "on the next tick");

    p.link.set_member_talking(5, Some(false));
    p.tick(1);
    let out = p.outputs();
    assert_eq!(notices(&out), vec![member_talking(5, false)]);
    let voice = ptt_voice(&out);
    assert_eq!(voice.len(), 1);
    assert!(voice[0].2, "released at once: the terminator");
    p.tick(10);
    assert!(p.outputs().is_empty());

    // `Some(false)` also overrides a VAD that hears speech; `None` hands back to the VAD.
    p.member_speak(5, 600.0, 30);
    p.tick(10);
    assert!(p.outputs().is_empty());
    p.link.set_member_talking(5, None);
    p.tick(5);
    let out = p.outputs();
    assert_eq!(
        notices(&out),
        vec![member_talking(5, true), Notice::FloorGranted]
    );
}

#[test]
fn removing_a_speaking_member_ends_the_groups_burst() {
    let mut p = Pair::new(PassThrough::Direct);
    p.member_speak(5, 600.0, 10);
    p.tick(10);
    assert!(p.link.holding());
    p.outputs();
    p.members.remove(&5);
    p.link.remove_member(5);
    p.drain(Cause::Other);
    p.tick(1);
    let out = p.outputs();
    assert_eq!(notices(&out), vec![member_talking(5, false)]);
    let voice = ptt_voice(&out);
    assert_eq!(voice.len(), 1);
    assert!(voice[0].2);
    assert!(!p.link.holding());
}

// ---- 6. text, connection, close --------------------------------------------------------

#[test]
fn channel_text_hangup_and_group_text() {
    let mut p = Pair::new(PassThrough::Direct);
    let text = |p: &mut Pair, text: &str, private: bool| {
        p.ptt_event(ChannelEvent::Text {
            from: Some(user(1)),
            text: text.into(),
            private,
        });
        p.outputs()
    };
    assert_eq!(
        notices(&text(&mut p, "/hangup", false)),
        vec![Notice::HangUp { by: Some(user(1)) }]
    );
    assert_eq!(
        notices(&text(&mut p, " /HangUp ", true)),
        vec![Notice::HangUp { by: Some(user(1)) }],
        "privately too"
    );
    assert_eq!(
        notices(&text(&mut p, "hello group", false)),
        vec![Notice::Text {
            from: Some(user(1)),
            text: "hello group".into()
        }]
    );
    assert!(
        text(&mut p, "hello bridge", true).is_empty(),
        "private chatter is not the group's"
    );

    p.link.send_text("hello channel".into());
    p.drain(Cause::Other);
    let out = p.outputs();
    assert_eq!(out.len(), 1);
    assert!(matches!(&out[0].2, Output::PttText(t) if t == "hello channel"));
}

#[test]
fn a_disconnect_ends_talkers_and_the_groups_burst_until_connected() {
    let mut p = Pair::new(PassThrough::Direct);
    p.member_speak(5, 600.0, 300);
    p.tick(10);
    assert!(p.link.holding());
    p.ptt_talk(1, 440.0, 50);
    p.tick(5);
    p.outputs();

    p.ptt.clear(); // the server is gone: nobody's voice comes in
    p.ptt_event(ChannelEvent::Disconnected);
    let out = p.outputs();
    assert_eq!(notices(&out), vec![talking(user(1), false)]);
    let voice = ptt_voice(&out);
    assert_eq!(voice.len(), 1);
    assert!(voice[0].2, "the group's burst ends");
    assert!(!p.link.holding());

    p.tick(20);
    let out = p.outputs();
    assert!(
        ptt_voice(&out).is_empty(),
        "nothing sent while disconnected"
    );
    assert!(notices(&out).is_empty(), "{:?}", show(&out));

    p.ptt_event(ChannelEvent::Connected);
    p.tick(5);
    let out = p.outputs();
    assert_eq!(notices(&out), vec![Notice::FloorGranted]);
    assert_eq!(ptt_voice(&out).len(), 5, "the member is heard again");
}

#[test]
fn close_ends_the_groups_burst_last() {
    let mut p = Pair::new(PassThrough::Direct);
    p.member_speak(5, 600.0, 30);
    p.tick(10);
    p.outputs();
    let now = p.now();
    p.link.close(now);
    p.drain(Cause::Other);
    let out = p.outputs();
    assert_eq!(out.len(), 1);
    assert!(matches!(
        out[0].2,
        Output::PttVoice {
            terminator: true,
            ..
        }
    ));
}
