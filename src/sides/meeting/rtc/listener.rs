//! What a connected listener ("play" peer) still needs once its audio goes through the room's
//! own SRTP writer ([`super::fast_tx`]): ICE consent both ways (RFC 7675) and liveness, in a few
//! hundred bytes instead of str0m's ≈ 70 KiB `Rtc` (sans-IO, explicit time).
//!
//! - **Answers** STUN Binding requests for our ufrag (`USERNAME` = `<local>:<remote>`, verified
//!   with the local ICE password, as str0m checks them) from any address with a success response
//!   carrying XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT. Browsers and aiortc check
//!   consent every ≈ 5 s and give up after ≈ 30 s without answers. A verified request with
//!   USE-CANDIDATE from a new address moves the peer there (the controlling side nominated it).
//! - **Asks**: a Binding request of our own every [`CHECK_INTERVAL`] to the peer's address (what
//!   str0m did, `rtc::sdp`'s STUN timers), so a live peer answers something every second
//!   whatever its own check interval, and [`ListenerSession::dead`] keeps `peer_set`'s
//!   [`CONSENT_TIMEOUT`].
//! - **Dead** when nothing came from the peer for that long, or on a DTLS alert (a record of
//!   content type 21: after the handshake the only alert a peer sends is its close_notify or a
//!   fatal one). SRTCP from the peer (receiver reports, NACK) is a sign of life and needs no
//!   answer for audio; a BYE inside it is encrypted, so it is not looked for. No RTCP sender
//!   reports are sent (docs/rtcpeer.md).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::IceCreds;
use str0m::crypto::Sha1HmacProvider;
use str0m::ice::{StunMessage, TransId};

/// A connected peer we have heard nothing from (no STUN answer to our once-a-second consent
/// checks, no RTP, no RTCP) for this long has lost consent (RFC 7675): it is gone. str0m alone
/// would wait ≥ 15 s, as it counts the client's own recent checks as signs of life. Used by
/// `peer_set` for str0m peers too (defined here so this leaf does not import it).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(4);
/// How often the session sends its own consent check (str0m's maximum STUN RTO in `rtc::sdp`).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest STUN message the session writes (a reply is 64–76 bytes, a check under 100 with
/// ufrags of the 256 characters RFC 8839 allows at most).
pub const MAX_STUN_LEN: usize = 640;
/// PRIORITY of our checks: a host candidate's (RFC 8445 §5.1.2.1, type preference 126).
const HOST_PRIORITY: u32 = (126 << 24) | (65_535 << 8) | 255;
/// RFC 7983: first byte of a DTLS record; content type 21 is an alert.
const DTLS_ALERT: u8 = 21;

/// What one datagram from the peer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A verified Binding request: send the `usize` bytes written to `out` back to the sender.
    Answer(usize),
    /// Something else from the peer (a STUN answer to our check, SRTCP, RTP): a sign of life.
    Alive,
    /// A DTLS alert: the peer closed the connection.
    Closed,
    /// Not for this session (a STUN request that does not verify, or a datagram from an
    /// address the peer never proved): ignored, not counted as life.
    Rejected,
}

/// One listener's ICE consent and liveness. See the module docs.
pub struct ListenerSession {
    local_ufrag: Box<str>,
    local_pwd: Box<str>,
    remote_ufrag: Box<str>,
    remote_pwd: Box<str>,
    /// `<remote ufrag>:<local ufrag>`: the USERNAME of our checks.
    check_user: Box<str>,
    remote: SocketAddr,
    tie_breaker: u64,
    heard: Instant,
    next_check: Instant,
    closed: bool,
    hmac: &'static dyn Sha1HmacProvider,
}

impl std::fmt::Debug for ListenerSession {
    // The ICE passwords never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSession")
            .field("remote", &self.remote)
            .field("heard", &self.heard)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl ListenerSession {
    /// A session for the peer at `remote`, heard from at `now`, with our ICE credentials and
    /// the peer's (its offer's `a=ice-ufrag`/`a=ice-pwd`); `hmac` is the crypto provider's.
    pub fn new(
        local: &IceCreds,
        remote_creds: &IceCreds,
        remote: SocketAddr,
        hmac: &'static dyn Sha1HmacProvider,
        now: Instant,
    ) -> Self {
        Self {
            local_ufrag: local.ufrag.as_str().into(),
            local_pwd: local.pass.as_str().into(),
            remote_ufrag: remote_creds.ufrag.as_str().into(),
            remote_pwd: remote_creds.pass.as_str().into(),
            check_user: format!("{}:{}", remote_creds.ufrag, local.ufrag).into(),
            remote,
            tie_breaker: rand::random(),
            heard: now,
            next_check: now,
            closed: false,
            hmac,
        }
    }

    /// Where the peer's audio goes: the address it last nominated (or the one it connected on).
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// When the peer was last heard from.
    pub fn heard(&self) -> Instant {
        self.heard
    }

    /// Whether `data` is a Binding request for this session that verifies: what lets a new
    /// address in.
    pub fn accepts(&self, data: &[u8]) -> bool {
        self.request(data).is_some()
    }

    /// The parsed request if `data` is a Binding request with our ufrag pair and integrity.
    fn request<'a>(&self, data: &'a [u8]) -> Option<StunMessage<'a>> {
        if data.first().is_none_or(|b| *b > 3) {
            return None;
        }
        let msg = StunMessage::parse(data).ok()?;
        if !msg.is_binding_request() {
            return None;
        }
        let (local, remote) = msg.split_username()?;
        if local != &*self.local_ufrag || remote != &*self.remote_ufrag {
            return None;
        }
        msg.verify(self.local_pwd.as_bytes(), |k, p| self.hmac.sha1_hmac(k, p))
            .then_some(msg)
    }

    /// One datagram from `from` at `now`; a STUN answer is written into `out` (at least
    /// [`MAX_STUN_LEN`] bytes).
    pub fn receive(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
        out: &mut [u8],
    ) -> Received {
        let Some(first) = data.first() else {
            return Received::Rejected;
        };
        if *first <= 3 {
            if let Some(req) = self.request(data) {
                if from != self.remote && req.use_candidate() {
                    self.remote = from;
                }
                self.heard = now;
                let reply = StunMessage::binding_reply(req.trans_id(), from);
                return match reply.to_bytes(Some(self.local_pwd.as_bytes()), out, |k, p| {
                    self.hmac.sha1_hmac(k, p)
                }) {
                    Ok(n) => Received::Answer(n),
                    // Only a too small `out`; the check still counted as life.
                    Err(_) => Received::Alive,
                };
            }
            // Our checks' answers: from the peer's address, nothing else to do with them.
            if from == self.remote {
                self.heard = now;
                return Received::Alive;
            }
            return Received::Rejected;
        }
        if from != self.remote {
            return Received::Rejected;
        }
        self.heard = now;
        if *first == DTLS_ALERT {
            self.closed = true;
            return Received::Closed;
        }
        Received::Alive
    }

    /// Our consent check if one is due at `now`: written into `out` (at least
    /// [`MAX_STUN_LEN`] bytes), to be sent to the returned address.
    pub fn poll_check(&mut self, now: Instant, out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if now < self.next_check || self.closed {
            return None;
        }
        self.next_check = now + CHECK_INTERVAL;
        let msg = StunMessage::binding_request(
            &self.check_user,
            TransId::new(),
            false,
            self.tie_breaker,
            HOST_PRIORITY,
            false,
        );
        let n = msg
            .to_bytes(Some(self.remote_pwd.as_bytes()), out, |k, p| {
                self.hmac.sha1_hmac(k, p)
            })
            .ok()?;
        Some((self.remote, n))
    }

    /// When [`ListenerSession::poll_check`] has something next.
    pub fn next_check(&self) -> Instant {
        self.next_check
    }

    /// Whether the peer is gone at `now`: closed, or silent for [`CONSENT_TIMEOUT`].
    pub fn dead(&self, now: Instant) -> bool {
        self.closed || now.saturating_duration_since(self.heard) > CONSENT_TIMEOUT
    }
}

/// The ICE credentials in an SDP (`a=ice-ufrag`, `a=ice-pwd`; the first of each: a bundle
/// has one set).
pub fn sdp_ice_creds(sdp: &str) -> Option<IceCreds> {
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Some(IceCreds {
        ufrag: attr("a=ice-ufrag:")?,
        pass: attr("a=ice-pwd:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac() -> &'static dyn Sha1HmacProvider {
        str0m::crypto::from_feature_flags().sha1_hmac_provider
    }

    fn creds(u: &str, p: &str) -> IceCreds {
        IceCreds {
            ufrag: u.into(),
            pass: p.into(),
        }
    }

    const PEER: &str = "127.0.0.1:6000";

    fn session(now: Instant) -> ListenerSession {
        ListenerSession::new(
            &creds("room", "room-password-0123456789"),
            &creds("peer", "peer-password-0123456789"),
            PEER.parse().unwrap(),
            hmac(),
            now,
        )
    }

    /// A Binding request the peer would send (str0m's encoder, as the peer's stack).
    fn request(user: &str, pwd: &str, use_candidate: bool) -> (TransId, Vec<u8>) {
        let id = TransId::new();
        let msg = StunMessage::binding_request(user, id, true, 7, 1234, use_candidate);
        let mut buf = vec![0u8; 512];
        let n = msg
            .to_bytes(Some(pwd.as_bytes()), &mut buf, |k, p| {
                hmac().sha1_hmac(k, p)
            })
            .unwrap();
        buf.truncate(n);
        (id, buf)
    }

    /// The answer parses as a success for the same transaction, maps the sender's address and
    /// verifies with the room's password (str0m's parser and check: what the peer's ICE does);
    /// a wrong password, a wrong ufrag and garbage get nothing.
    #[test]
    fn answers_verified_binding_requests_only() {
        let now = Instant::now();
        let mut s = session(now);
        let from: SocketAddr = PEER.parse().unwrap();
        let (id, req) = request("room:peer", "room-password-0123456789", false);
        let mut out = [0u8; MAX_STUN_LEN];
        let Received::Answer(n) = s.receive(from, &req, now, &mut out) else {
            panic!("no answer");
        };
        let reply = StunMessage::parse(&out[..n]).expect("a STUN message");
        assert!(reply.is_successful_binding_response());
        assert_eq!(reply.trans_id(), id);
        assert_eq!(reply.mapped_address(), Some(from));
        assert!(reply.verify(b"room-password-0123456789", |k, p| hmac().sha1_hmac(k, p)));
        assert!(!reply.verify(b"peer-password-0123456789", |k, p| hmac().sha1_hmac(k, p)));

        let other: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        for bad in [
            request("room:peer", "wrong", false).1,
            request("room:other", "room-password-0123456789", false).1,
            request("other:peer", "room-password-0123456789", false).1,
            vec![0, 1, 0, 0],
            vec![],
        ] {
            assert!(!s.accepts(&bad));
            assert_eq!(s.receive(other, &bad, now, &mut out), Received::Rejected);
        }
        assert!(s.accepts(&req));
    }

    /// A verified request from a new address moves the audio there only with USE-CANDIDATE;
    /// datagrams other than verified requests from an address the peer never proved are not
    /// life and cannot close the session.
    #[test]
    fn follows_the_nominated_address() {
        let now = Instant::now();
        let mut s = session(now);
        let mut out = [0u8; MAX_STUN_LEN];
        let new: SocketAddr = "127.0.0.1:6001".parse().unwrap();
        let (_, plain) = request("room:peer", "room-password-0123456789", false);
        assert!(matches!(
            s.receive(new, &plain, now, &mut out),
            Received::Answer(_)
        ));
        assert_eq!(
            s.remote(),
            PEER.parse().unwrap(),
            "a check is not a nomination"
        );
        assert_eq!(
            s.receive(new, &[21, 0xfe, 0xfd], now, &mut out),
            Received::Rejected
        );
        assert!(!s.dead(now));
        let (_, nominate) = request("room:peer", "room-password-0123456789", true);
        assert!(matches!(
            s.receive(new, &nominate, now, &mut out),
            Received::Answer(_)
        ));
        assert_eq!(s.remote(), new);
    }

    /// Silent for [`CONSENT_TIMEOUT`] is dead; any datagram from the peer (SRTCP here, an
    /// answer to our check) keeps it alive; a DTLS alert from the peer kills it at once.
    #[test]
    fn dead_after_silence_or_a_close_alert() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let from: SocketAddr = PEER.parse().unwrap();
        let mut out = [0u8; MAX_STUN_LEN];
        let mut now = t0;
        for _ in 0..20 {
            now += Duration::from_secs(2);
            // An SRTCP receiver report's first bytes (version 2, RR).
            assert_eq!(
                s.receive(from, &[0x81, 201, 0, 7], now, &mut out),
                Received::Alive
            );
            assert!(!s.dead(now));
        }
        assert!(!s.dead(now + CONSENT_TIMEOUT));
        assert!(s.dead(now + CONSENT_TIMEOUT + Duration::from_millis(1)));

        let mut s = session(t0);
        // A DTLS 1.2 alert record header: type 21, version 254.253.
        assert_eq!(
            s.receive(from, &[21, 0xfe, 0xfd, 0, 1], t0, &mut out),
            Received::Closed
        );
        assert!(s.dead(t0));
        assert!(
            s.poll_check(t0, &mut out).is_none(),
            "no checks once closed"
        );
    }

    /// Our checks: one per [`CHECK_INTERVAL`], to the peer's address, a Binding request with
    /// USERNAME `<remote>:<local>` that verifies with the peer's password (what its ICE agent
    /// checks before answering).
    #[test]
    fn checks_the_peer_once_a_second() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let mut out = [0u8; MAX_STUN_LEN];
        let (to, n) = s.poll_check(t0, &mut out).expect("a check at once");
        assert_eq!(to, PEER.parse().unwrap());
        let msg = StunMessage::parse(&out[..n]).unwrap();
        assert!(msg.is_binding_request());
        assert_eq!(msg.split_username(), Some(("peer", "room")));
        assert!(msg.verify(b"peer-password-0123456789", |k, p| hmac().sha1_hmac(k, p)));
        assert!(msg.ice_controlled().is_some());
        assert!(
            s.poll_check(t0 + Duration::from_millis(999), &mut out)
                .is_none()
        );
        assert!(s.poll_check(t0 + CHECK_INTERVAL, &mut out).is_some());
    }

    #[test]
    fn ice_credentials_of_an_sdp() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:AbCd\r\na=ice-pwd:secret-secret-secret12\r\na=ice-ufrag:other\r\n";
        let c = sdp_ice_creds(sdp).unwrap();
        assert_eq!(
            (c.ufrag.as_str(), c.pass.as_str()),
            ("AbCd", "secret-secret-secret12")
        );
        assert!(sdp_ice_creds("v=0\r\na=ice-ufrag:x\r\n").is_none());
    }
}
