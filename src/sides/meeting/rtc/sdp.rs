//! Setting up one WebRTC peer connection (str0m, sans-IO): audio only, Opus first, PCMU/PCMA for
//! the PTT link, ICE host candidates, DTLS-SRTP, bundle; offers answered, answers taken. Video m-lines in an offer are
//! declined: answered inactive inside the bundle (see `keep_declined_in_bundle`), so no video
//! ever flows and every WebRTC stack (aiortc included) takes the answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::rtp::Extension;
use str0m::{Candidate, Rtc, RtcConfig};

use super::srtp_keys::KeySlot;

/// Extends 32-bit RTP timestamps to 64 bits (str0m takes a monotonic media time).
#[derive(Debug, Default)]
pub struct Unwrap {
    last: Option<u32>,
    ext: u64,
}

impl Unwrap {
    /// The 64-bit timestamp of `ts`.
    pub fn extend(&mut self, ts: u32) -> u64 {
        match self.last {
            None => self.ext = u64::from(ts) + (1 << 32),
            Some(prev) => {
                let d = ts.wrapping_sub(prev) as i32;
                self.ext = self.ext.wrapping_add_signed(i64::from(d));
            }
        }
        self.last = Some(ts);
        self.ext
    }
}

/// Why an offer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// Not parseable SDP.
    #[error("invalid SDP: {0}")]
    Parse(String),
    /// str0m refused it.
    #[error("cannot accept the offer: {0}")]
    Rejected(String),
    /// No audio m-line in a direction we need.
    #[error("the offer has no usable audio m-line ({0})")]
    NoAudio(&'static str),
}

/// Installs the crypto provider once per process (the built-in one, its DTLS able to hand
/// the SRTP keys to the room: [`super::srtp_keys`]).
pub fn init_crypto() {
    super::srtp_keys::install();
}

/// ICE checks on a connected pair at most 1 s apart (str0m's default: 3 s), so a live client
/// answers something every second and the room can tell a vanished one after a few silent
/// seconds (`peer_set::CONSENT_TIMEOUT`); 5 unanswered checks in a row also fail the pair in str0m.
const STUN_INITIAL_RTO: Duration = Duration::from_millis(200);
const STUN_MAX_RTO: Duration = Duration::from_millis(1000);
const STUN_MAX_RETRANSMITS: usize = 5;

/// The configuration every peer is built from: audio codecs and extensions only, and our ICE
/// timers. What str0m's other knobs would save per listener is measured by
/// `benches/rtc_memory.rs` (BENCHMARKS.md, "Memory per listener").
pub fn rtc_config() -> RtcConfig {
    init_crypto();
    // RTP header extensions: the audio level (VAD) and the mid (bundle demux) only. Without
    // transport-cc a listener sends no transport-wide feedback (≈ 10 RTCP packets/s each from
    // browsers and str0m) that audio without bandwidth estimation has no use for.
    let mut config = RtcConfig::new()
        .clear_extension_map()
        .set_extension(1, Extension::AudioLevel)
        .set_extension(4, Extension::RtpMid)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_pcmu(true, false)
        .enable_pcma(true, false)
        .set_rtcp_report_interval_audio(Duration::from_secs(1));
    config.set_initial_stun_rto(STUN_INITIAL_RTO);
    config.set_max_stun_rto(STUN_MAX_RTO);
    config.set_max_stun_retransmits(STUN_MAX_RETRANSMITS);
    config
}

/// A configured `Rtc` for audio.
pub fn new_rtc(now: Instant) -> Rtc {
    rtc_config().build(now)
}

/// An answered peer: its `Rtc` and the SDP answer.
pub struct Answered {
    /// The peer.
    pub rtc: Rtc,
    /// SDP answer text.
    pub answer: String,
    /// The audio m-line.
    pub mid: Mid,
    /// Whether the client sends audio on it.
    pub client_sends: bool,
    /// Whether the client receives audio on it.
    pub client_receives: bool,
    /// Where the SRTP keys land after the handshake (an `Rtc` built by [`answer`]).
    pub keys: Option<KeySlot>,
}

/// Accepts `offer` with a host candidate at `local`, on an `Rtc` whose SRTP keys are captured.
pub fn answer(offer_text: &str, local: SocketAddr, now: Instant) -> Result<Answered, OfferError> {
    init_crypto();
    let (rtc, keys) = super::srtp_keys::build(rtc_config(), now);
    let mut a = answer_with(rtc, offer_text, local)?;
    a.keys = Some(keys);
    Ok(a)
}

/// Accepts `offer` on `rtc` (a fresh one, e.g. from another configuration than
/// [`rtc_config`]'s, for the memory bench) with a host candidate at `local`.
pub fn answer_with(
    mut rtc: Rtc,
    offer_text: &str,
    local: SocketAddr,
) -> Result<Answered, OfferError> {
    let offer =
        SdpOffer::from_sdp_string(offer_text).map_err(|e| OfferError::Parse(e.to_string()))?;
    let cand = Candidate::host(local, "udp").map_err(|e| OfferError::Rejected(e.to_string()))?;
    rtc.add_local_candidate(cand);
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| OfferError::Rejected(e.to_string()))?;
    let text = keep_declined_in_bundle(&answer.to_sdp_string(), offer_text);
    // The first audio m-line of the offer, and our direction on it after the answer.
    let Some(mid) = audio_mid(offer_text) else {
        return Err(OfferError::NoAudio("no m=audio with a=mid"));
    };
    let Some(dir) = rtc
        .media(mid)
        .filter(|m| m.kind() == MediaKind::Audio)
        .map(|m| m.direction())
    else {
        return Err(OfferError::NoAudio("audio m-line not accepted"));
    };
    // `dir` is our direction: we receive what the client sends.
    Ok(Answered {
        rtc,
        answer: text,
        mid,
        client_sends: matches!(dir, Direction::RecvOnly | Direction::SendRecv),
        client_receives: matches!(dir, Direction::SendOnly | Direction::SendRecv),
        keys: None,
    })
}

/// The payload type negotiated for `codec` on `mid`.
pub fn pt_for(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let w = rtc.writer(mid)?;
    w.payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
}

/// The `a=mid` of the first `m=audio` section.
fn audio_mid(sdp: &str) -> Option<Mid> {
    let mut in_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio ");
        } else if in_audio && let Some(mid) = line.strip_prefix("a=mid:") {
            return Some(Mid::from(mid));
        }
    }
    None
}

/// One SDP media section: its lines without line endings.
struct Section<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Section<'a> {
    fn attr(&self, name: &str) -> Option<&'a str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
    }

    fn mid(&self) -> Option<&'a str> {
        self.attr("mid")
    }

    /// `m=` fields: kind, port, proto, formats.
    fn m_line(&self) -> Vec<&'a str> {
        self.lines[0][2..].split(' ').collect()
    }
}

/// Session part and media sections of an SDP text.
fn sections(sdp: &str) -> (Vec<&str>, Vec<Section<'_>>) {
    let mut session = Vec::new();
    let mut media: Vec<Section<'_>> = Vec::new();
    for line in sdp.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            media.push(Section { lines: vec![line] });
        } else if let Some(m) = media.last_mut() {
            m.lines.push(line);
        } else {
            session.push(line);
        }
    }
    (session, media)
}

fn bundle_group<'a>(session: &[&'a str]) -> Option<Vec<&'a str>> {
    session
        .iter()
        .find_map(|l| l.strip_prefix("a=group:BUNDLE"))
        .map(|g| g.split_whitespace().collect())
}

/// str0m declines an m-line it has no codec for (video) the RFC 8843 way: port 0, outside the
/// BUNDLE group, no formats. aiortc cannot take that answer: it has no notion of a rejected
/// m-line, wants a common codec in every audio/video section ("Failed to set remote video
/// description send parameters"), and starts a separate ICE transport for any section outside
/// the BUNDLE group (which then never connects). So when the offer bundled the section, the
/// answer keeps it bundled and says no media instead: port 9 like the audio section, `a=inactive`,
/// and the first offered codec (with its fmtp) so the format list is real — the shape a browser
/// answers a video offer with when it has nothing to send. Sections the offer did not bundle stay
/// rejected (port 0), with the offer's format list filled in as RFC 3264 (6) asks.
fn keep_declined_in_bundle(answer: &str, offer: &str) -> String {
    let (a_session, a_media) = sections(answer);
    let (o_session, o_media) = sections(offer);
    let offer_bundle = bundle_group(&o_session).unwrap_or_default();
    let mut added_to_bundle: Vec<&str> = Vec::new();
    let mut body = String::with_capacity(answer.len() + 256);
    for (i, sec) in a_media.iter().enumerate() {
        let m = sec.m_line();
        let declined = m.len() >= 3 && m[1] == "0";
        let offered = sec
            .mid()
            .and_then(|mid| o_media.iter().find(|o| o.mid() == Some(mid)))
            .or_else(|| o_media.get(i));
        let (Some(o), true) = (offered, declined) else {
            for l in &sec.lines {
                body.push_str(l);
                body.push_str("\r\n");
            }
            continue;
        };
        let codec = o.m_line().into_iter().skip(3).find(|pt| {
            o.lines.iter().any(|l| {
                l.strip_prefix("a=rtpmap:")
                    .and_then(|r| r.strip_prefix(*pt))
                    .and_then(|r| r.strip_prefix(' '))
                    .is_some_and(|enc| {
                        let name = enc.split('/').next().unwrap_or("").to_ascii_lowercase();
                        !matches!(name.as_str(), "rtx" | "red" | "ulpfec" | "flexfec-03")
                    })
            })
        });
        let bundled = sec.mid().is_some_and(|mid| offer_bundle.contains(&mid));
        match (codec, bundled) {
            (Some(pt), true) => {
                body.push_str(&format!("m={} 9 {} {pt}\r\n", m[0], m[2]));
                for l in &sec.lines[1..] {
                    if matches!(
                        *l,
                        "a=sendonly" | "a=recvonly" | "a=sendrecv" | "a=inactive"
                    ) {
                        continue;
                    }
                    body.push_str(l);
                    body.push_str("\r\n");
                }
                body.push_str("a=inactive\r\n");
                for l in &o.lines {
                    let codec_line = ["a=rtpmap:", "a=fmtp:"].iter().any(|p| {
                        l.strip_prefix(p)
                            .and_then(|r| r.strip_prefix(pt))
                            .is_some_and(|r| r.starts_with(' '))
                    });
                    if codec_line {
                        body.push_str(l);
                        body.push_str("\r\n");
                    }
                }
                added_to_bundle.extend(sec.mid());
            }
            _ => {
                let formats = o.m_line().into_iter().skip(3).collect::<Vec<_>>().join(" ");
                body.push_str(&format!("m={} 0 {} {formats}\r\n", m[0], m[2]));
                for l in &sec.lines[1..] {
                    body.push_str(l);
                    body.push_str("\r\n");
                }
            }
        }
    }
    let mut out = String::with_capacity(body.len() + 512);
    for l in &a_session {
        match l.strip_prefix("a=group:BUNDLE") {
            Some(g) if !added_to_bundle.is_empty() => {
                // str0m's tagged (first) section stays first: it carries the candidates.
                let mut mids: Vec<&str> = g.split_whitespace().collect();
                mids.extend(added_to_bundle.iter().copied());
                out.push_str(&format!("a=group:BUNDLE {}\r\n", mids.join(" ")));
            }
            _ => {
                out.push_str(l);
                out.push_str("\r\n");
            }
        }
    }
    out.push_str(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/fixtures/sdp/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("SDP fixture")
    }

    fn section<'a>(sdp: &'a str, kind: &str) -> Vec<&'a str> {
        let (_, media) = sections(sdp);
        media
            .into_iter()
            .find(|m| m.lines[0].starts_with(&format!("m={kind} ")))
            .map(|m| m.lines)
            .unwrap_or_default()
    }

    #[test]
    fn video_in_the_bundle_is_answered_inactive_with_a_codec() {
        let offer = fixture("aiortc-audio-sendonly-video-recvonly.sdp");
        let a = answer(&offer, "127.0.0.1:5000".parse().unwrap(), Instant::now()).unwrap();
        assert!(a.client_sends && !a.client_receives);
        assert!(a.answer.contains("a=group:BUNDLE 0 1\r\n"), "{}", a.answer);
        let video = section(&a.answer, "video");
        assert_eq!(video[0], "m=video 9 UDP/TLS/RTP/SAVPF 97", "{}", a.answer);
        for want in [
            "a=inactive",
            "a=rtpmap:97 VP8/90000",
            "a=mid:1",
            "a=rtcp-mux",
            "a=setup:passive",
        ] {
            assert!(video.contains(&want), "{want} missing: {}", a.answer);
        }
        assert!(video.iter().any(|l| l.starts_with("a=ice-ufrag:")));
        assert!(!video.contains(&"a=sendonly"));
        // The audio section is untouched and still the tagged one, with the candidate.
        let audio = section(&a.answer, "audio");
        assert!(audio.contains(&"a=recvonly"));
        assert!(audio.iter().any(|l| l.starts_with("a=candidate:")));
        assert!(a.answer.ends_with("\r\n") && !a.answer.contains("\r\n\r\n"));
    }

    #[test]
    fn unbundled_video_stays_rejected_with_its_formats() {
        let offer = fixture("aiortc-audio-sendonly-video-recvonly.sdp")
            .replace("a=group:BUNDLE 0 1\r\n", "a=group:BUNDLE 0\r\n");
        let a = answer(&offer, "127.0.0.1:5000".parse().unwrap(), Instant::now()).unwrap();
        let video = section(&a.answer, "video");
        assert_eq!(video[0], "m=video 0 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102");
        assert!(!a.answer.contains("BUNDLE 0 1"));
    }

    #[test]
    fn audio_only_offer_is_unchanged() {
        let offer = fixture("aiortc-audio-sendonly-video-recvonly.sdp");
        let cut = offer.find("m=video").unwrap();
        let offer = offer[..cut].replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0");
        let now = Instant::now();
        let a = answer(&offer, "127.0.0.1:5000".parse().unwrap(), now).unwrap();
        assert_eq!(sections(&a.answer).1.len(), 1);
        assert!(a.answer.contains("a=group:BUNDLE 0\r\n"));
    }
}
