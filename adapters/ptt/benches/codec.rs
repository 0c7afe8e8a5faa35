//! Per-packet cost of the PTT codec layers, single-threaded (so the throughput criterion
//! prints is per core): control frames, voice packets in both formats, OCB2.
//!
//! `cargo bench -p ptt --bench codec` (add `-- --quick` for a fast run).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ptt::ocb2::CryptState;
use ptt::proto;
use ptt::voice_packet::{self, Direction, UdpPacket, VoiceFormat, VoicePacket};
use ptt::{ControlMessage, FrameDecoder};

/// A 20 ms Opus frame at ~24 kb/s: 60 bytes.
fn opus_payload() -> Bytes {
    (0..60u8)
        .map(|i| i.wrapping_mul(37) ^ 0x5A)
        .collect::<Vec<u8>>()
        .into()
}

fn voice(session: Option<u32>) -> UdpPacket {
    UdpPacket::Audio(VoicePacket {
        target_or_context: 0,
        session,
        sequence: 4242,
        payload: opus_payload(),
        terminator: false,
        position: None,
    })
}

fn control(c: &mut Criterion) {
    let user_state: ControlMessage = proto::UserState {
        session: Some(17),
        actor: Some(17),
        name: Some("dispatcher-07".into()),
        user_id: Some(1007),
        channel_id: Some(3),
        self_mute: Some(false),
        self_deaf: Some(false),
        hash: Some("0a1b2c3d4e5f60718293a4b5c6d7e8f901234567".into()),
        comment: Some("North sector, vehicle 12".into()),
        ..Default::default()
    }
    .into();
    let text: ControlMessage = proto::TextMessage {
        actor: Some(17),
        channel_id: vec![3],
        message: "Unit 12 on scene, requesting backup at the north gate".into(),
        ..Default::default()
    }
    .into();

    let mut g = c.benchmark_group("control");
    g.throughput(Throughput::Elements(1));
    for (name, msg) in [("UserState", &user_state), ("TextMessage", &text)] {
        let mut wire = BytesMut::new();
        msg.encode(&mut wire);
        let wire = wire.freeze();
        g.bench_function(format!("{name} decode+encode"), |b| {
            let mut dec = FrameDecoder::default();
            let mut out = BytesMut::with_capacity(256);
            b.iter(|| {
                dec.push(black_box(&wire));
                let frame = dec.next_frame().ok().flatten().expect("complete frame");
                let msg = ControlMessage::try_from(frame).expect("valid message");
                out.clear();
                msg.encode(&mut out);
                black_box(&out);
            })
        });
    }
    g.finish();
}

fn voice_packets(c: &mut Criterion) {
    let mut g = c.benchmark_group("voice");
    g.throughput(Throughput::Elements(1));
    for (fname, format) in [
        ("legacy", VoiceFormat::Legacy),
        ("protobuf", VoiceFormat::Protobuf),
    ] {
        // What a client receives from the server, then what it sends.
        let mut wire = BytesMut::new();
        voice_packet::encode(&voice(Some(17)), format, Direction::FromServer, &mut wire)
            .expect("encodable");
        let wire = wire.freeze();
        let outgoing = voice(None);

        g.bench_function(format!("{fname} decode"), |b| {
            b.iter(|| {
                voice_packet::decode(black_box(wire.clone()), format, Direction::FromServer)
                    .expect("valid")
            })
        });
        g.bench_function(format!("{fname} encode"), |b| {
            let mut out = BytesMut::with_capacity(128);
            b.iter(|| {
                out.clear();
                voice_packet::encode(black_box(&outgoing), format, Direction::ToServer, &mut out)
                    .expect("encodable");
                black_box(&out);
            })
        });
        g.bench_function(format!("{fname} decode+encode"), |b| {
            let mut out = BytesMut::with_capacity(128);
            b.iter(|| {
                let p =
                    voice_packet::decode(black_box(wire.clone()), format, Direction::FromServer)
                        .expect("valid");
                out.clear();
                voice_packet::encode(&p, format, Direction::FromServer, &mut out)
                    .expect("encodable");
                black_box(&out);
            })
        });
    }
    g.finish();
}

fn ocb2(c: &mut Criterion) {
    let key = [7u8; 16];
    let client_nonce = [0x11u8; 16];
    let server_nonce = [0x22u8; 16];
    let mut plain = BytesMut::new();
    voice_packet::encode(
        &voice(None),
        VoiceFormat::Legacy,
        Direction::ToServer,
        &mut plain,
    )
    .expect("encodable");
    let plain = plain.freeze();

    let mut g = c.benchmark_group("ocb2");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("encrypt {} B voice packet", plain.len()), |b| {
        let mut cs = CryptState::new();
        cs.set_key(&key, &client_nonce, &server_nonce)
            .expect("16 bytes");
        let mut out = Vec::with_capacity(128);
        b.iter(|| {
            out.clear();
            cs.encrypt(black_box(&plain), &mut out);
            black_box(&out);
        })
    });
    g.bench_function(format!("decrypt {} B voice packet", plain.len()), |b| {
        // Packets must be fresh and in order (replays are refused): a sender state makes
        // them outside the timed part.
        let mut server = CryptState::new();
        server
            .set_key(&key, &server_nonce, &client_nonce)
            .expect("16 bytes");
        let mut client = CryptState::new();
        client
            .set_key(&key, &client_nonce, &server_nonce)
            .expect("16 bytes");
        let mut out = Vec::with_capacity(128);
        b.iter_batched_ref(
            || {
                let mut sealed = Vec::with_capacity(128);
                server.encrypt(&plain, &mut sealed);
                sealed
            },
            |sealed| {
                out.clear();
                client
                    .decrypt(black_box(sealed), &mut out)
                    .expect("authentic");
                black_box(&out);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, control, voice_packets, ocb2);
criterion_main!(benches);
