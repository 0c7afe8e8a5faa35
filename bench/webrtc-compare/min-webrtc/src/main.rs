//! One webrtc-rs 0.21 PeerConnection with an Opus `TrackLocalStaticRTP`; prints the SDP offer. The
//! build of this crate is what `cargo build --release` costs for the design card's WebRTC stack.

use std::sync::Arc;

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, Registry,
    configure_rtcp_reports,
};

struct Quiet;

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Quiet {}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let opus = RTCRtpCodec {
            mime_type: "audio/opus".to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        };
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus.clone(),
                    payload_type: 111,
                },
                RtpCodecKind::Audio,
            )
            .expect("codec");
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(configure_rtcp_reports(Registry::new()))
            .with_handler(Arc::new(Quiet))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .expect("peer connection");
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "min".into(),
            "audio".into(),
            "audio".into(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(0x1234_5678),
                    ..Default::default()
                },
                codec: opus,
                ..Default::default()
            }],
        )));
        pc.add_track(track as Arc<dyn TrackLocal>)
            .await
            .expect("track");
        let offer = pc.create_offer(None).await.expect("offer");
        println!("{}", offer.sdp);
        let _ = pc.close().await;
    });
}
