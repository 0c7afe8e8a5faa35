//! The SRTP keys of a peer's DTLS handshake, copied out of str0m so the room can encrypt a
//! listener's audio itself ([`super::fast_tx`]).
//!
//! str0m 0.24 takes its DTLS from a pluggable provider and keeps the keys it derives to itself.
//! [`install`] puts a provider in place whose DTLS forwards everything to the built-in one and
//! copies the keying material and SRTP profile, the moment the handshake yields them, into the
//! [`KeySlot`] of the `Rtc` it belongs to. A slot is tied to its `Rtc` when the `Rtc` is built
//! ([`build`]): str0m creates the DTLS instance inside `RtcConfig::build`, on the calling thread,
//! so a thread-local hands the slot over. An `Rtc` built any other way has no slot and is not
//! captured.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use str0m::config::CryptoProvider;
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::{Rtc, RtcConfig};

/// What DTLS-SRTP (RFC 5764) gives one side: both directions' master keys and salts, the
/// profile, and whether this side was the DTLS client (which picks the half it sends with).
#[derive(Clone)]
pub struct SrtpKeys {
    /// `[client key, server key, client salt, server salt]`.
    pub material: Vec<u8>,
    /// The negotiated protection profile.
    pub profile: SrtpProfile,
    /// This side was the DTLS client ("active"): it sends with the client half.
    pub client: bool,
}

impl std::fmt::Debug for SrtpKeys {
    // Secrets never reach a log: only the shape.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("material", &format_args!("[{} bytes]", self.material.len()))
            .field("profile", &self.profile)
            .field("client", &self.client)
            .finish()
    }
}

/// Where one `Rtc`'s keys land once its handshake is done.
#[derive(Debug, Clone, Default)]
pub struct KeySlot(Arc<Mutex<Option<SrtpKeys>>>);

impl KeySlot {
    /// The keys, once (later calls give `None`).
    pub fn take(&self) -> Option<SrtpKeys> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn put(&self, keys: SrtpKeys) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(keys);
    }
}

thread_local! {
    /// The slot the next DTLS instance made on this thread reports to.
    static NEXT: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// Builds `config` into an `Rtc` whose SRTP keys will be copied to the returned slot (its
/// crypto provider becomes [`provider`], whatever the process default is).
pub fn build(config: RtcConfig, now: Instant) -> (Rtc, KeySlot) {
    static SHARED: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    let shared = SHARED.get_or_init(|| Arc::new(provider())).clone();
    let slot = KeySlot::default();
    NEXT.with(|n| *n.borrow_mut() = Some(slot.clone()));
    let rtc = config.set_crypto_provider(shared).build(now);
    // Taken by the DTLS instance; cleared anyway so it can never reach another `Rtc`.
    NEXT.with(|n| n.borrow_mut().take());
    (rtc, slot)
}

/// The built-in crypto provider with its DTLS wrapped to capture keys (see the module docs).
pub fn provider() -> CryptoProvider {
    static CAPTURE: Capturing = Capturing;
    CryptoProvider {
        dtls_provider: &CAPTURE,
        ..str0m::crypto::from_feature_flags()
    }
}

/// Installs [`provider`] as the process default (once; later calls do nothing).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| provider().install_process_default());
}

/// The provider whose DTLS instances capture keys; forwards to the built-in one.
#[derive(Debug)]
struct Capturing;

fn inner_provider() -> &'static dyn DtlsProvider {
    static INNER: std::sync::OnceLock<&'static dyn DtlsProvider> = std::sync::OnceLock::new();
    *INNER.get_or_init(|| str0m::crypto::from_feature_flags().dtls_provider)
}

impl DtlsProvider for Capturing {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        inner_provider().generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = inner_provider().new_dtls(cert, now, dtls_version, mtu)?;
        match NEXT.with(|n| n.borrow_mut().take()) {
            Some(slot) => Ok(Box::new(Capture { inner, slot })),
            None => Ok(inner),
        }
    }
}

/// One DTLS instance that copies its keys to `slot`.
#[derive(Debug)]
struct Capture {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
}

impl DtlsInstance for Capture {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active)
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(km, profile) = &out {
            self.slot.put(SrtpKeys {
                material: km.to_vec(),
                profile: *profile,
                client: self.inner.is_active(),
            });
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}
