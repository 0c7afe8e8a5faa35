//! A fake PTT server over real TLS that misbehaves: garbage protobuf, unknown message
//! types, garbage and non-Opus voice, truncated frames, a 2^31 length. The client must
//! skip what it can (reporting a counted fault), close what it cannot, and never panic.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use prost::Message;
use ptt::client::{self, ClientConfig, ClientEvent};
use ptt::proto;
use ptt::session::{ErrorKind, Event, SessionConfig};
use ptt::tls::{ServerTrust, fingerprint};
use ptt::{ControlMessage, MessageType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel)
}

fn tls() -> (TlsAcceptor, [u8; 32]) {
    let cert =
        CertificateDer::from_pem_file(fixture("certs/murmur-cert.pem")).expect("test certificate");
    let key = PrivateKeyDer::from_pem_file(fixture("certs/murmur-key.pem")).expect("test key");
    let pin = fingerprint(&cert);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), pin)
}

fn frame(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u16(kind);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.to_vec()
}

fn msg(m: impl Into<ControlMessage>) -> Vec<u8> {
    let mut out = BytesMut::new();
    m.into().encode(&mut out);
    out.to_vec()
}

/// A server state that lets the client sync: root channel, the client's user, ServerSync.
fn valid_sync() -> Vec<u8> {
    let mut out = msg(proto::Version {
        version_v1: Some(0x0001_0304),
        release: Some("hostile".into()),
        ..Default::default()
    });
    out.extend(msg(proto::ChannelState {
        channel_id: Some(0),
        name: Some("Root".into()),
        ..Default::default()
    }));
    out.extend(msg(proto::UserState {
        session: Some(7),
        name: Some("victim".into()),
        channel_id: Some(0),
        ..Default::default()
    }));
    out.extend(msg(proto::ServerSync {
        session: Some(7),
        welcome_text: Some("welcome".into()),
        ..Default::default()
    }));
    out
}

/// Serves one connection: drains the client's hello, writes `script`, then keeps the
/// connection open for `hold` (so only the client's own decision can close it).
async fn serve_once(script: Vec<u8>, hold: Duration) -> (u16, [u8; 32]) {
    let (acceptor, pin) = tls();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = acceptor.accept(tcp).await.unwrap();
        let mut hello = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut hello)).await;
        stream.write_all(&script).await.unwrap();
        stream.flush().await.unwrap();
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(hold, async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    });
    (port, pin)
}

/// Runs a non-reconnecting client against the port and returns everything it reported.
async fn client_events(port: u16, pin: [u8; 32], limit: Duration) -> Vec<ClientEvent> {
    let session = SessionConfig {
        username: "victim".into(),
        udp: false,
        ..SessionConfig::default()
    };
    let mut config = ClientConfig::new("127.0.0.1", port, ServerTrust::Pinned(pin), session);
    config.reconnect = false;
    let (_handle, mut rx) = client::spawn(config);
    let mut events = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(ev) = rx.recv().await {
            let stop = ev == ClientEvent::Stopped;
            events.push(ev);
            if stop {
                break;
            }
        }
    })
    .await;
    events
}

fn faults(events: &[ClientEvent]) -> Vec<ErrorKind> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Session(Event::Fault { kind, .. }) => Some(*kind),
            _ => None,
        })
        .collect()
}

fn disconnect_reason(events: &[ClientEvent]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        ClientEvent::Disconnected { reason, .. } => Some(reason.as_str()),
        _ => None,
    })
}

fn synced(events: &[ClientEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, ClientEvent::Session(Event::Synced { .. })))
}

#[tokio::test]
async fn garbage_messages_are_skipped_and_the_session_carries_on() {
    let mut script = Vec::new();
    script.extend(frame(999, b"who knows"));
    script.extend(frame(
        MessageType::ChannelState as u16,
        &[0xff, 0xff, 0xff, 0xff],
    ));
    // A UserState whose required fields are missing in a different way: session absent.
    script.extend(msg(proto::UserState {
        name: Some("ghost".into()),
        ..Default::default()
    }));
    // Garbage voice, then a CELT-alpha voice packet (type 0) that must be counted and dropped.
    script.extend(frame(MessageType::UdpTunnel as u16, &[0x80]));
    script.extend(frame(
        MessageType::UdpTunnel as u16,
        &[0x00, 0x05, 0x01, 0x03, 1, 2, 3],
    ));
    script.extend(frame(MessageType::UdpTunnel as u16, &[]));
    script.extend(valid_sync());
    // After sync: a text message proves the stream is still in step.
    script.extend(msg(proto::TextMessage {
        actor: Some(7),
        channel_id: vec![0],
        message: "still here".into(),
        ..Default::default()
    }));
    let (port, pin) = serve_once(script, Duration::from_secs(2)).await;
    let events = client_events(port, pin, Duration::from_millis(1500)).await;

    let kinds = faults(&events);
    for want in [
        ErrorKind::UnknownMessage,
        ErrorKind::BadProtobuf,
        ErrorKind::BadVoice,
        ErrorKind::OtherCodec,
    ] {
        assert!(kinds.contains(&want), "missing fault {want:?} in {kinds:?}");
    }
    assert!(
        synced(&events),
        "client must sync after skipping garbage: {events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, ClientEvent::Session(Event::Text { message, .. }) if message == "still here")),
        "messages after the garbage still arrive: {events:#?}"
    );
    assert_eq!(
        disconnect_reason(&events),
        None,
        "garbage must not cost the connection"
    );
}

#[tokio::test]
async fn a_two_gigabyte_length_closes_the_connection_with_a_reason() {
    let mut script = valid_sync();
    let mut header = BytesMut::new();
    header.put_u16(MessageType::TextMessage as u16);
    header.put_u32(1 << 31);
    script.extend_from_slice(&header);
    script.extend_from_slice(&[0u8; 64]);
    let (port, pin) = serve_once(script, Duration::from_secs(5)).await;
    let started = std::time::Instant::now();
    let events = client_events(port, pin, Duration::from_secs(4)).await;
    assert!(synced(&events));
    let reason = disconnect_reason(&events).expect("client must close");
    assert!(
        reason.contains("2147483648"),
        "reason names the length: {reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed promptly, not by a timeout"
    );
    assert_eq!(events.last(), Some(&ClientEvent::Stopped));
}

#[tokio::test]
async fn a_truncated_frame_then_close_is_a_clean_disconnect() {
    let mut script = valid_sync();
    let mut header = BytesMut::new();
    header.put_u16(MessageType::TextMessage as u16);
    header.put_u32(100);
    script.extend_from_slice(&header);
    script.extend_from_slice(&[1u8; 10]);
    let (port, pin) = serve_once(script, Duration::from_millis(100)).await;
    let events = client_events(port, pin, Duration::from_secs(4)).await;
    assert!(synced(&events));
    let reason = disconnect_reason(&events).expect("client must notice the close");
    assert!(reason.contains("closed"), "{reason}");
}

#[tokio::test]
async fn random_bytes_never_panic_the_client() {
    // A deterministic pseudo-random stream (xorshift) of plausible-looking frames.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut script = valid_sync();
    for _ in 0..500 {
        let kind = (next() % 30) as u16;
        let len = (next() % 64) as usize;
        let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        script.extend(frame(kind, &payload));
    }
    let (port, pin) = serve_once(script, Duration::from_secs(2)).await;
    let events = client_events(port, pin, Duration::from_millis(1500)).await;
    assert!(synced(&events));
    assert!(!faults(&events).is_empty(), "garbage is reported");
}

#[tokio::test]
async fn a_wrong_certificate_is_refused_with_both_fingerprints() {
    let (port, _) = serve_once(valid_sync(), Duration::from_secs(2)).await;
    let events = client_events(port, [0xab; 32], Duration::from_secs(4)).await;
    let reason = disconnect_reason(&events).expect("must refuse");
    assert!(
        reason.contains("does not match the pinned ab:ab"),
        "{reason}"
    );
    assert!(!synced(&events));
}

// The client encodes what it sends with the same types; make sure a decoded
// `Authenticate` from it would carry what murmurd needs (Opus on).
#[test]
fn hello_announces_opus_and_version() {
    let mut s = ptt::session::Session::new(SessionConfig::default(), std::time::Instant::now());
    let mut wire = Vec::new();
    while let Some(ptt::session::Transmit::Tcp(b)) = s.poll_transmit() {
        wire.extend_from_slice(&b);
    }
    let mut dec = ptt::FrameDecoder::default();
    dec.push(&wire);
    let v = ControlMessage::try_from(dec.next_frame().unwrap().unwrap()).unwrap();
    let a = ControlMessage::try_from(dec.next_frame().unwrap().unwrap()).unwrap();
    match (v, a) {
        (ControlMessage::Version(v), ControlMessage::Authenticate(a)) => {
            assert_eq!(v.version_v1, Some(0x0001_0500));
            assert_eq!(a.opus, Some(true));
            assert_eq!(
                proto::Authenticate::decode(&a.encode_to_vec()[..])
                    .unwrap()
                    .username
                    .as_deref(),
                Some("pttbridge")
            );
        }
        other => panic!("unexpected hello {other:?}"),
    }
}
