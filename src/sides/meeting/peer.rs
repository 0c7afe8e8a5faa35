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
pub fn answer(offer: &str, local: SocketAddr, now: Instant) -> Result<Answered, OfferError> {
    let offer = SdpOffer::from_sdp_string(offer).map_err(|e| OfferError::Parse(e.to_string()))?;
    let mut rtc = new_rtc(now);
    let cand = Candidate::host(local, "udp").map_err(|e| OfferError::Rejected(e.to_string()))?;
    rtc.add_local_candidate(cand);
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| OfferError::Rejected(e.to_string()))?;
    let text = answer.to_sdp_string();
    // Find the audio m-line and its direction as the client sees it.
    let mut found = None;
    while let Ok(out) = rtc.poll_output() {
        match out {
            str0m::Output::Event(str0m::Event::MediaAdded(m)) if m.kind == MediaKind::Audio => {
                if found.is_none() {
                    found = Some((m.mid, m.direction));
                }
            }
            str0m::Output::Timeout(_) => break,
            _ => {}
        }
    }
    let Some((mid, dir)) = found else {
        return Err(OfferError::NoAudio("none"));
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
