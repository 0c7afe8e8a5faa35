//! One WebRTC peer connection (str0m, sans-IO): audio only, Opus first (PCMU/PCMA accepted),
//! ICE host candidates on the room's UDP port, DTLS-SRTP, bundle. Video m-lines in an offer are
//! answered as rejected (port 0), which is how SDP declines a stream.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::{Candidate, Rtc, RtcConfig};

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

/// Installs the crypto provider once per process.
pub fn init_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// A configured `Rtc` for audio.
pub fn new_rtc(now: Instant) -> Rtc {
    init_crypto();
    RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_pcmu(true, false)
        .enable_pcma(true, false)
        .set_rtcp_report_interval_audio(std::time::Duration::from_secs(1))
        .build(now)
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
}

/// Accepts `offer` with a host candidate at `local`.
pub fn answer(offer_text: &str, local: SocketAddr, now: Instant) -> Result<Answered, OfferError> {
    let offer =
        SdpOffer::from_sdp_string(offer_text).map_err(|e| OfferError::Parse(e.to_string()))?;
    let mut rtc = new_rtc(now);
    let cand = Candidate::host(local, "udp").map_err(|e| OfferError::Rejected(e.to_string()))?;
    rtc.add_local_candidate(cand);
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| OfferError::Rejected(e.to_string()))?;
    let text = fill_rejected_formats(&answer.to_sdp_string(), offer_text);
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

/// str0m answers a declined m-line with port 0 and no formats; RFC 3264 (6) still wants the
/// format list, and some stacks (aiortc) refuse the answer without it: copy the offer's.
fn fill_rejected_formats(answer: &str, offer: &str) -> String {
    let offer_formats: Vec<&str> = offer
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("m="))
        .map(|m| m.splitn(4, ' ').nth(3).unwrap_or(""))
        .collect();
    let mut index = 0;
    let mut out = String::with_capacity(answer.len() + 16);
    for line in answer.split_inclusive("\r\n") {
        let body = line.trim_end_matches("\r\n");
        if let Some(m) = body.strip_prefix("m=") {
            let parts: Vec<&str> = m.splitn(4, ' ').collect();
            let empty = parts.get(3).is_none_or(|f| f.trim().is_empty());
            if parts.len() >= 3
                && parts[1] == "0"
                && empty
                && let Some(f) = offer_formats.get(index).filter(|f| !f.trim().is_empty())
            {
                out.push_str(&format!("m={} 0 {} {}\r\n", parts[0], parts[2], f.trim()));
                index += 1;
                continue;
            }
            index += 1;
        }
        out.push_str(line);
    }
    out
}
