//! webrtc-rs 0.21 sender, used the way its `broadcast`/`reflect` examples use it: one
//! `PeerConnection` per listener (its own UDP socket and driver task: 0.21 has no single-port
//! mux yet), one `TrackLocalStaticRTP` per listener, and one task that writes each 20 ms frame to
//! every track. Media engine: Opus only; interceptors: RTCP sender/receiver reports only (no NACK,
//! no TWCC) — the same RTP/RTCP the str0m sender produces.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, SrtpProtectionProfile, configure_rtcp_reports,
};

use crate::proc_stat::{Window, cpu_seconds, rss_kib};
use crate::signal::Signal;
use crate::{Args, FRAME, PAYLOAD};

struct Handler {
    gathered: mpsc::Sender<()>,
    connected: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => {
                self.connected.fetch_add(1, Ordering::Relaxed);
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Disconnected => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Runs the webrtc-rs fan-out and prints the window's figures.
pub fn run(a: Args) {
    let mut b = if a.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(a.threads);
        b
    };
    let rt = b.enable_all().build().expect("runtime");
    let profile = match a.srtp.as_str() {
        "gcm128" => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        "gcm256" => SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
        "cm" => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        p => panic!("unknown --srtp {p}"),
    };
    rt.block_on(async move {
        let (sig, mut offers) = Signal::spawn(a.n);
        let rss0 = rss_kib();
        let t_setup = Instant::now();
        let connected = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (track_tx, mut track_rx) = mpsc::unbounded_channel::<(Arc<TrackLocalStaticRTP>, u32)>();

        // The one sending task: every 20 ms, the same frame to every track.
        let sender = {
            let (sent, stop) = (sent.clone(), stop.clone());
            tokio::spawn(async move {
                let payload = bytes::Bytes::from(
                    (0..PAYLOAD)
                        .map(|i| (i * 37 + 11) as u8)
                        .collect::<Vec<u8>>(),
                );
                let mut tracks = Vec::new();
                let mut tick = tokio::time::interval(FRAME);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let (mut seq, mut ts) = (0u16, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    while let Ok(t) = track_rx.try_recv() {
                        tracks.push(t);
                    }
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(960);
                    for (track, ssrc) in &tracks {
                        let pkt = rtp::Packet {
                            header: rtp::header::Header {
                                version: 2,
                                payload_type: 111,
                                sequence_number: seq,
                                timestamp: ts,
                                ssrc: *ssrc,
                                ..Default::default()
                            },
                            payload: payload.clone(),
                        };
                        if track.write_rtp(pkt).await.is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };

        let mut pcs: Vec<Box<dyn PeerConnection>> = Vec::with_capacity(a.n);
        for k in 0..a.n {
            let (i, sdp) = offers.recv().await.expect("listener process ended");
            let mut media = MediaEngine::default();
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: opus(),
                        payload_type: 111,
                    },
                    RtpCodecKind::Audio,
                )
                .expect("codec");
            let settings = SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .with_srtp_protection_profiles(vec![profile])
                .build();
            let (gtx, mut grx) = mpsc::channel(1);
            let pc = PeerConnectionBuilder::new()
                .with_media_engine(media)
                .with_setting_engine(settings)
                .with_interceptor_registry(configure_rtcp_reports(Registry::new()))
                .with_handler(Arc::new(Handler {
                    gathered: gtx,
                    connected: connected.clone(),
                    failed: failed.clone(),
                }))
                .with_udp_addrs(vec!["127.0.0.1:0"])
                .build()
                .await
                .expect("peer connection");
            let ssrc = 0x1000_0000 + k as u32;
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                format!("s{k}"),
                format!("a{k}"),
                "audio".into(),
                RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: opus(),
                    ..Default::default()
                }],
            )));
            pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .expect("add track");
            pc.set_remote_description(RTCSessionDescription::offer(sdp).expect("offer"))
                .await
                .expect("remote description");
            let answer = pc.create_answer(None).await.expect("answer");
            pc.set_local_description(answer)
                .await
                .expect("local description");
            let _ = tokio::time::timeout(Duration::from_secs(5), grx.recv()).await;
            let local = pc.local_description().await.expect("local description");
            sig.answer(i, &local.sdp).await;
            let _ = track_tx.send((track, ssrc));
            pcs.push(Box::new(pc));
        }

        let s0 = sig.wait_connected(a.n).await;
        let setup_secs = t_setup.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss1 = rss_kib();
        let s0 = sig.stat().await.max_connected(s0);
        let (c0, p0, t0) = (cpu_seconds(), sent.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(Duration::from_secs(a.seconds)).await;
        let (c1, p1, dt) = (
            cpu_seconds(),
            sent.load(Ordering::Relaxed),
            t0.elapsed().as_secs_f64(),
        );
        let s1 = sig.stat().await;
        stop.store(true, Ordering::Relaxed);
        let stack = match a.threads {
            0 => format!("webrtc-rs ({}, current-thread)", a.srtp),
            t => format!("webrtc-rs ({}, {t} threads)", a.srtp),
        };
        Window {
            stack,
            n: a.n,
            connected: s0.connected,
            setup_secs,
            secs: dt,
            cpu: c1 - c0,
            sent: p1 - p0,
            received: s1.received - s0.received,
            rss0,
            rss1,
            listener_cpu: (s1.cpu - s0.cpu) / dt,
        }
        .print();
        println!(
            "webrtc-rs: {} connected / {} failed or disconnected (sender's view)",
            connected.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
        let _ = sender.await;
        // Closing 1,000 connections takes long and measures nothing: exit.
        std::process::exit(0);
    });
}
