//! One str0m peer with an Opus send track on a real UDP socket; prints the SDP offer. The build of
//! this crate is what `cargo build --release` costs for the bridge's WebRTC stack on its own.

use std::time::Instant;

use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

fn main() {
    str0m::crypto::from_feature_flags().install_process_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        let local = socket.local_addr().expect("local addr");
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, _pending) = api.apply().expect("offer");
        println!("{}", offer.to_sdp_string());
    });
}
