//! Secrets at rest and in comparison: random tokens, salted SHA-256 digests (what the store
//! keeps instead of a secret), and comparisons that take the same time wherever the inputs
//! differ. The secrets here are machine-made or operator-set high-entropy strings, not user
//! passwords, so one salted SHA-256 is the right cost; a password KDF would only slow logins.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of a stored digest: `sha256$<salt hex>$<digest hex>`.
const SCHEME: &str = "sha256";

/// A fresh random token: 32 hex characters (128 bits).
pub fn token() -> String {
    hex(&rand::random::<[u8; 16]>())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The stored form of `secret`: a salted digest it can be checked against, never read back.
pub fn digest(secret: &str) -> String {
    let salt = hex(&rand::random::<[u8; 8]>());
    format!("{SCHEME}${salt}${}", salted(&salt, secret))
}

fn salted(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b"$");
    h.update(secret.as_bytes());
    hex(&h.finalize())
}

/// Whether `stored` is a digest made by [`digest`].
pub fn is_digest(stored: &str) -> bool {
    let mut parts = stored.split('$');
    parts.next() == Some(SCHEME) && parts.count() == 2
}

/// Whether `given` is the secret `stored` was made from (constant time in the digest).
pub fn verify(stored: &str, given: &str) -> bool {
    let mut parts = stored.splitn(3, '$');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(SCHEME), Some(salt), Some(want)) => same(want, &salted(salt, given)),
        _ => false,
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn same(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_verify_their_secret_only_and_differ_each_time() {
        let a = digest("s3cret-value");
        let b = digest("s3cret-value");
        assert_ne!(a, b, "salted");
        assert!(is_digest(&a) && !is_digest("s3cret-value"));
        assert!(verify(&a, "s3cret-value") && verify(&b, "s3cret-value"));
        assert!(!verify(&a, "s3cret-valuE") && !verify(&a, "") && !verify("plain", "plain"));
        assert!(!a.contains("s3cret"));
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()) && !same(&a, &b) && !same(&a, &a[..31]));
    }
}
