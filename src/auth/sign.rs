//! RTCPeer signs (spec 6.1–6.2): what `GET /app/getSign` hands an app that proved its secret,
//! and `dockingLogin` takes back. A sign names its app and its expiry, sealed with
//! HMAC-SHA256 under the bridge's key, and is good for one login within its lifetime: a sign
//! seen in a log, a proxy or a browser cannot be replayed, forged for another app, or kept.
//! Issuing keeps nothing (the seal is the proof), so asking for signs costs the bridge no
//! memory; only a used sign's nonce is kept, until the sign would have expired anyway.
//!
//! Form: `<app id, hex>.<expiry, Unix ms>.<nonce, hex>.<HMAC, hex>`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::secret::hex;

/// Most used signs remembered (each until its expiry); beyond it logins are refused until some
/// expire.
const MAX_USED: usize = 100_000;

/// Why a sign was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Not a sign this bridge issued (malformed, or the seal does not match).
    #[error("not a valid sign: get one from /app/getSign")]
    Invalid,
    /// Past its lifetime.
    #[error("the sign has expired: get a new one from /app/getSign")]
    Expired,
    /// Already used for a login.
    #[error("the sign was already used: get a new one from /app/getSign")]
    Used,
    /// Too many signs used within one lifetime.
    #[error("too many logins at once; try again shortly")]
    Busy,
}

/// Random bytes in a sign, so that no two are alike.
const NONCE: usize = 12;

/// Issues and redeems signs. See the module docs.
#[derive(Debug)]
pub struct Signer {
    key: [u8; 32],
    ttl: Duration,
    /// Nonces of signs already used → their expiry (Unix ms).
    used: Mutex<HashMap<[u8; NONCE], u64>>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Signer {
    /// A signer with a fresh random key; signs live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            key: rand::random(),
            ttl,
            used: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, payload: &str) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(payload.as_bytes());
        hex(&m.finalize().into_bytes())
    }

    /// A sign for `app_id`, valid from `now` for the signer's lifetime.
    pub fn issue(&self, app_id: &str, now: SystemTime) -> String {
        let now_ms = unix_ms(now);
        let expiry = now_ms + self.ttl.as_millis() as u64;
        let nonce = hex(&rand::random::<[u8; NONCE]>());
        let payload = format!("{}.{expiry}.{nonce}", hex(app_id.as_bytes()));
        let mac = self.mac(&payload);
        format!("{payload}.{mac}")
    }

    /// Checks `sign` at `now` and uses it up: the app it was issued to.
    pub fn redeem(&self, sign: &str, now: SystemTime) -> Result<String, SignError> {
        let mut parts = sign.rsplitn(2, '.');
        let (Some(mac), Some(payload)) = (parts.next(), parts.next()) else {
            return Err(SignError::Invalid);
        };
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(payload.as_bytes());
        let given = unhex(mac).ok_or(SignError::Invalid)?;
        m.verify_slice(&given).map_err(|_| SignError::Invalid)?;
        let mut fields = payload.split('.');
        let (Some(app), Some(expiry), Some(nonce), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(SignError::Invalid);
        };
        let app = unhex(app)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(SignError::Invalid)?;
        let expiry: u64 = expiry.parse().map_err(|_| SignError::Invalid)?;
        let nonce: [u8; NONCE] = unhex(nonce)
            .and_then(|b| b.try_into().ok())
            .ok_or(SignError::Invalid)?;
        let now_ms = unix_ms(now);
        if now_ms >= expiry {
            return Err(SignError::Expired);
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.contains_key(&nonce) {
            return Err(SignError::Used);
        }
        if used.len() >= MAX_USED {
            used.retain(|_, exp| *exp > now_ms);
            if used.len() >= MAX_USED {
                return Err(SignError::Busy);
            }
        }
        used.insert(nonce, expiry);
        Ok(app)
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_names_its_app_and_is_good_once_within_its_lifetime() {
        let s = Signer::new(Duration::from_secs(300));
        let now = SystemTime::now();
        let sign = s.issue("app.one", now);
        assert_eq!(s.redeem(&sign, now).as_deref(), Ok("app.one"));
        assert_eq!(s.redeem(&sign, now), Err(SignError::Used), "single use");
        let late = s.issue("app.one", now);
        assert_eq!(
            s.redeem(&late, now + Duration::from_secs(301)),
            Err(SignError::Expired)
        );
    }

    #[test]
    fn forged_and_foreign_signs_are_refused() {
        let s = Signer::new(Duration::from_secs(300));
        let other = Signer::new(Duration::from_secs(300));
        let now = SystemTime::now();
        let sign = s.issue("a", now);
        // Another app's name with the same seal, another bridge's sign, garbage.
        let forged = sign.replacen(&hex(b"a"), &hex(b"b"), 1);
        assert_eq!(s.redeem(&forged, now), Err(SignError::Invalid));
        assert_eq!(
            s.redeem(&other.issue("a", now), now),
            Err(SignError::Invalid)
        );
        for junk in ["", "...", "zz.1.2.3", "00.1.2", &"a".repeat(10_000)] {
            assert_eq!(s.redeem(junk, now), Err(SignError::Invalid), "{junk:.20}");
        }
    }
}
