//! The bridge's own SRTP sender for one listener (sans-IO): an RTP packet built and encrypted
//! straight into the buffer it is sent from, so a room's fan-out sends the moment a packet
//! arrives instead of queueing it in str0m until the next tick, at a fraction of the cost.
//!
//! Keys come from the peer's DTLS handshake ([`super::srtp_keys`]); the SSRC, payload type and
//! clock are those of the send stream str0m negotiated (the SDP's `a=ssrc` names it), so the
//! listener cannot tell which of the two wrote a packet. Sequence numbers are the caller's; the
//! rollover counter (RFC 3711 §3.3.1) is kept here.
//!
//! Profiles: `AEAD_AES_128_GCM` and `AEAD_AES_256_GCM` (RFC 7714) and `AES_CM_128_HMAC_SHA1_80`
//! (RFC 3711), session keys derived from the master key and salt with the RFC 3711 §4.3 KDF on
//! the crypto provider's AES-ECB round. No header extensions are sent. Nothing is allocated per
//! packet (GCM in place, CTR into the output).
//!
//! GCM is ring's (already built for rustls): 150 ns per 100-byte packet against 240 ns for
//! RustCrypto's `aes-gcm` on the 2-core VM, and a 544-byte key against 992 (BENCHMARKS.md,
//! "Listeners on other machines").

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use str0m::config::CryptoProvider;
use str0m::crypto::SrtpProvider;
use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::{AeadAes128Gcm, Aes128CmSha1_80, Aes128CmSha1_80Cipher, Sha1HmacProvider};

use super::srtp_keys::SrtpKeys;

/// RTP header we write: version 2, no padding, extension or CSRC.
pub const HEADER_LEN: usize = 12;
/// Most bytes SRTP adds after the payload (a GCM tag; HMAC-SHA1-80 adds 10).
pub const MAX_TAG_LEN: usize = 16;

/// Why a writer cannot be made or a packet not written.
#[derive(Debug, thiserror::Error)]
pub enum FastTxError {
    /// The handshake's keying material does not have the profile's length.
    #[error("{got} bytes of keying material, {profile:?} needs {want}")]
    KeyLength {
        /// The negotiated profile.
        profile: SrtpProfile,
        /// Bytes received.
        got: usize,
        /// Bytes the profile needs.
        want: usize,
    },
    /// A profile this writer does not know (dimpl's list is open-ended).
    #[error("SRTP profile {0:?} not supported")]
    Profile(SrtpProfile),
    /// The packet does not fit the buffer.
    #[error("a {need}-byte SRTP packet does not fit a {have}-byte buffer")]
    TooBig {
        /// Bytes the packet needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// The cipher refused its key or the packet (does not happen with the lengths checked).
    #[error("SRTP encryption failed")]
    Encrypt,
}

// RFC 3711 §4.3.1 key derivation labels.
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;

/// The RTP session cipher of one direction.
enum Cipher {
    CmSha1 {
        enc: Box<dyn Aes128CmSha1_80Cipher>,
        auth: [u8; 20],
        salt: [u8; 14],
        hmac: &'static dyn Sha1HmacProvider,
    },
    /// `AEAD_AES_128_GCM` or `AEAD_AES_256_GCM`: the key says which. Boxed: the key schedule
    /// is large and a listener is mostly idle state.
    Gcm {
        key: Box<LessSafeKey>,
        salt: [u8; 12],
    },
}

/// What goes in each packet's header besides the sequence number and timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// The SSRC the SDP announced for the stream.
    pub ssrc: u32,
    /// The negotiated payload type.
    pub pt: u8,
    /// The codec's RTP clock in Hz (48,000 for Opus, 8,000 for G.711).
    pub clock_rate: u32,
}

/// One listener's SRTP sender. See the module docs.
pub struct SrtpTx {
    cipher: Cipher,
    stream: Stream,
    roc: u32,
    last_seq: Option<u16>,
}

impl std::fmt::Debug for SrtpTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpTx")
            .field("stream", &self.stream)
            .field("roc", &self.roc)
            .finish_non_exhaustive()
    }
}

impl SrtpTx {
    /// A sender for `stream` with the half of `keys` this side sends with.
    pub fn new(
        crypto: &CryptoProvider,
        keys: &SrtpKeys,
        stream: Stream,
    ) -> Result<Self, FastTxError> {
        let (key_len, salt_len) = master_lengths(keys.profile)?;
        let want = 2 * (key_len + salt_len);
        if keys.material.len() != want {
            return Err(FastTxError::KeyLength {
                profile: keys.profile,
                got: keys.material.len(),
                want,
            });
        }
        // [client key, server key, client salt, server salt] (RFC 5764 §4.2).
        let m = &keys.material;
        let (k, s) = if keys.client {
            (0, 2 * key_len)
        } else {
            (key_len, 2 * key_len + salt_len)
        };
        Self::from_master(
            crypto,
            keys.profile,
            &m[k..k + key_len],
            &m[s..s + salt_len],
            stream,
        )
    }

    /// A sender from a master key and salt of the lengths the profile says.
    pub fn from_master(
        crypto: &CryptoProvider,
        profile: SrtpProfile,
        key: &[u8],
        salt: &[u8],
        stream: Stream,
    ) -> Result<Self, FastTxError> {
        let (key_len, salt_len) = master_lengths(profile)?;
        if key.len() != key_len || salt.len() != salt_len {
            return Err(FastTxError::KeyLength {
                profile,
                got: key.len() + salt.len(),
                want: key_len + salt_len,
            });
        }
        let srtp = crypto.srtp_provider;
        let kdf = |label: u8, out: &mut [u8]| derive(srtp, key, salt, label, out);
        let cipher = match profile {
            SrtpProfile::AES128_CM_SHA1_80 => {
                let (mut k, mut auth, mut salt) = ([0; 16], [0; 20], [0; 14]);
                kdf(LABEL_RTP_KEY, &mut k);
                kdf(LABEL_RTP_AUTH, &mut auth);
                kdf(LABEL_RTP_SALT, &mut salt);
                Cipher::CmSha1 {
                    enc: srtp.aes_128_cm_sha1_80().create_cipher(k, true),
                    auth,
                    salt,
                    hmac: crypto.sha1_hmac_provider,
                }
            }
            SrtpProfile::AEAD_AES_128_GCM | SrtpProfile::AEAD_AES_256_GCM => {
                let algorithm = if profile == SrtpProfile::AEAD_AES_128_GCM {
                    &AES_128_GCM
                } else {
                    &AES_256_GCM
                };
                let (mut k, mut salt) = ([0; 32], [0; 12]);
                let k = &mut k[..key_len];
                kdf(LABEL_RTP_KEY, k);
                kdf(LABEL_RTP_SALT, &mut salt);
                Cipher::Gcm {
                    key: gcm_key(algorithm, k)?,
                    salt,
                }
            }
            other => return Err(FastTxError::Profile(other)),
        };
        Ok(Self::with_cipher(cipher, stream))
    }

    fn with_cipher(cipher: Cipher, stream: Stream) -> Self {
        Self {
            cipher,
            stream,
            roc: 0,
            last_seq: None,
        }
    }

    /// The stream it writes.
    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// Writes the SRTP packet of `payload` with sequence number `seq`, `marker`, and the
    /// timestamp `ts48` (a 48 kHz clock, extended past 32 bits so the rescaling to 8 kHz
    /// never jumps) into `out`; returns its length.
    pub fn write(
        &mut self,
        seq: u16,
        ts48: u64,
        marker: bool,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, FastTxError> {
        let body = HEADER_LEN + payload.len();
        let need = body + MAX_TAG_LEN;
        if out.len() < need {
            return Err(FastTxError::TooBig {
                need,
                have: out.len(),
            });
        }
        // RFC 3711 §3.3.1: the rollover counter counts wraps of the 16-bit sequence number.
        if let Some(last) = self.last_seq
            && seq < last
            && (seq.wrapping_sub(last) as i16) > 0
        {
            self.roc = self.roc.wrapping_add(1);
        }
        self.last_seq = Some(seq);
        let ts = (ts48 * u64::from(self.stream.clock_rate) / 48_000) as u32;
        let Stream { ssrc, pt, .. } = self.stream;
        out[0] = 0x80;
        out[1] = (u8::from(marker) << 7) | (pt & 0x7f);
        out[2..4].copy_from_slice(&seq.to_be_bytes());
        out[4..8].copy_from_slice(&ts.to_be_bytes());
        out[8..12].copy_from_slice(&ssrc.to_be_bytes());
        let (header, rest) = out.split_at_mut(HEADER_LEN);
        let index = (u64::from(self.roc) << 16) | u64::from(seq);
        match &mut self.cipher {
            Cipher::CmSha1 {
                enc,
                auth,
                salt,
                hmac,
            } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                enc.encrypt(&iv, payload, &mut rest[..payload.len()])
                    .map_err(|_| FastTxError::Encrypt)?;
                let tag = Aes128CmSha1_80::HMAC_TAG_LEN;
                Aes128CmSha1_80::rtp_hmac(
                    |k, p| hmac.sha1_hmac(k, p),
                    auth,
                    &mut out[..body + tag],
                    index,
                    body,
                );
                Ok(body + tag)
            }
            Cipher::Gcm { key, salt } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, self.roc, seq);
                seal(key, iv, header, rest, payload)
            }
        }
    }
}

/// RFC 7714 §5: the header is the associated data, the payload encrypted in place, the tag
/// after it. Returns the packet's length.
fn seal(
    key: &LessSafeKey,
    iv: [u8; 12],
    header: &[u8],
    rest: &mut [u8],
    payload: &[u8],
) -> Result<usize, FastTxError> {
    let n = payload.len();
    rest[..n].copy_from_slice(payload);
    // Each (key, sequence index) gives its own IV (RFC 7714 §8.1): never reused.
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(header),
            &mut rest[..n],
        )
        .map_err(|_| FastTxError::Encrypt)?;
    let tag = tag.as_ref();
    rest[n..n + tag.len()].copy_from_slice(tag);
    Ok(HEADER_LEN + n + tag.len())
}

/// A profile's master key and master salt lengths (RFC 3711, RFC 7714).
fn master_lengths(profile: SrtpProfile) -> Result<(usize, usize), FastTxError> {
    match profile {
        SrtpProfile::AES128_CM_SHA1_80 => Ok((16, 14)),
        SrtpProfile::AEAD_AES_128_GCM => Ok((16, 12)),
        SrtpProfile::AEAD_AES_256_GCM => Ok((32, 12)),
        other => Err(FastTxError::Profile(other)),
    }
}

/// An AES-GCM session key (`k` of the algorithm's length).
fn gcm_key(
    algorithm: &'static ring::aead::Algorithm,
    k: &[u8],
) -> Result<Box<LessSafeKey>, FastTxError> {
    let key = UnboundKey::new(algorithm, k).map_err(|_| FastTxError::Encrypt)?;
    Ok(Box::new(LessSafeKey::new(key)))
}

/// The RFC 3711 §4.3 key derivation (AES-CM PRF, key derivation rate 0): `out` filled with
/// the keystream of `salt` with `label` at byte 7, from the master `key` (16 or 32 bytes).
fn derive(srtp: &dyn SrtpProvider, key: &[u8], salt: &[u8], label: u8, out: &mut [u8]) {
    let mut input = [0u8; 16];
    input[..salt.len()].copy_from_slice(salt);
    input[7] ^= label;
    // The providers' ECB round writes up to two blocks.
    let mut block = [0u8; 32];
    for (round, chunk) in out.chunks_mut(16).enumerate() {
        input[14..].copy_from_slice(&(round as u16).to_be_bytes());
        if key.len() == 32 {
            srtp.srtp_aes_256_ecb_round(key, &input, &mut block);
        } else {
            srtp.srtp_aes_128_ecb_round(key, &input, &mut block);
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto() -> CryptoProvider {
        str0m::crypto::from_feature_flags()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 appendix B.3, on the provider's AES round.
    #[test]
    fn key_derivation_matches_rfc_3711() {
        let c = crypto();
        let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut k = [0; 16];
        derive(c.srtp_provider, &key, &salt, LABEL_RTP_KEY, &mut k);
        assert_eq!(k.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut s = [0; 14];
        derive(c.srtp_provider, &key, &salt, LABEL_RTP_SALT, &mut s);
        assert_eq!(s.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut a = [0; 20];
        derive(c.srtp_provider, &key, &salt, LABEL_RTP_AUTH, &mut a);
        assert_eq!(a.to_vec(), hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
    }

    /// The RTP packet of RFC 7714 §16.1 (sequence 0xf17b, ROC 0) under its session key and
    /// salt, for both key sizes (vectors of §16.1.1 and §17.1.1).
    #[test]
    fn gcm_matches_rfc_7714() {
        let header = hex("8040f17b8041f8d35501a0b2");
        let payload =
            hex("47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573");
        let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
        let stream = Stream {
            ssrc: 0x5501a0b2,
            pt: 0x40,
            clock_rate: 48_000,
        };
        let k128: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let k256: [u8; 32] =
            hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
                .try_into()
                .unwrap();
        let want128 = "f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce";
        let want256 = "32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13";
        for (algorithm, key, want) in [
            (&AES_128_GCM, &k128[..], want128),
            (&AES_256_GCM, &k256[..], want256),
        ] {
            let cipher = Cipher::Gcm {
                key: gcm_key(algorithm, key).unwrap(),
                salt,
            };
            let mut tx = SrtpTx::with_cipher(cipher, stream);
            let mut out = [0u8; 200];
            let n = tx
                .write(0xf17b, 0x8041f8d3, false, &payload, &mut out)
                .unwrap();
            assert_eq!(&out[..12], &header[..], "header");
            assert_eq!(out[12..n].to_vec(), hex(want), "ciphertext and tag");
        }
    }

    /// Packets protected by libsrtp (aiortc's SRTP, `tests/peers/srtp_vectors.py`): sequence
    /// 65534, 65535, 0 from one master key and salt per profile, so the key derivation, the
    /// cipher, the tag and the rollover counter each match the reference implementation.
    #[test]
    fn matches_libsrtp() {
        const VECTORS: [(SrtpProfile, usize, usize, [&str; 3]); 3] = [
            (
                SrtpProfile::AES128_CM_SHA1_80,
                16,
                14,
                [
                    "80effffe000000001234abcde6e9d63d57ec1ae0b3a99e3d4f54fb54af3a949a117c63f1a9a575abf2b3b7714b538f2a75f5a4774d2b7f81e5c8ac",
                    "806fffff000003c01234abcdf6dba161d4c4a7c3cf8ed5b97cc6f3bdeff57841e5d90424ff040c2e97e21deb1564b52ab70cb760c2d4f189eccb2d",
                    "806f0000000007801234abcd8fb4b3eea24f7be789caa7e936a5318356ef1c86352a7617671a54e736982f90555605e583b6948cf8d0bbccaaa2e3",
                ],
            ),
            (
                SrtpProfile::AEAD_AES_128_GCM,
                16,
                12,
                [
                    "80effffe000000001234abcd40a75c6cc42b1539675110020a370716e369a6d6e7f542594852f2f2c7d8f4df792f2075419d77400c98e28bedf8ea723181689c8a",
                    "806fffff000003c01234abcdca13810e9991404d483d09e9aca1cce30c538a587deab57c53f16a856e032ca584447672f35b5f3819a0bd4516fa1f35a49f3acf90",
                    "806f0000000007801234abcd2d43d44e5131bbfddfa45ebe56fe335e5677f522889f7944210bcbc7559e66a8cb7a031cff0563ad62ec75e1f767b518c1accf1dd8",
                ],
            ),
            (
                SrtpProfile::AEAD_AES_256_GCM,
                32,
                12,
                [
                    "80effffe000000001234abcd5cac00b03e9a30c3e7569cc7f05f6cb0672382871fd546c1c6f49fdc1172f3ae9c310fb641904b06efb71d002b7e1f9157d1a639f4",
                    "806fffff000003c01234abcd2f7e5078764ddc92b48345c31a205d5dde073b99cc140e97e6c934c9b8f5ded473c7153ba8137878d7a6caa37363f9481d8a32021d",
                    "806f0000000007801234abcddea16efebbfdb75d0062f12366963419d393c7092cc5f941b628fdac9da9596416ef3882b5f878b608dffaad0515358ef8d30713a2",
                ],
            ),
        ];
        let payload: Vec<u8> = (0x40..0x40 + 37).collect();
        let stream = Stream {
            ssrc: 0x1234_ABCD,
            pt: 111,
            clock_rate: 48_000,
        };
        for (profile, key_len, salt_len, packets) in VECTORS {
            let key: Vec<u8> = (1..=key_len as u8).collect();
            let salt: Vec<u8> = (0xA0..0xA0 + salt_len as u8).collect();
            let mut tx = SrtpTx::from_master(&crypto(), profile, &key, &salt, stream).unwrap();
            for (i, (seq, want)) in [65534u16, 65535, 0].into_iter().zip(packets).enumerate() {
                let mut out = [0u8; 200];
                let n = tx
                    .write(seq, 960 * i as u64, i == 0, &payload, &mut out)
                    .unwrap();
                assert_eq!(
                    out[..n].to_vec(),
                    hex(want),
                    "{profile:?}, sequence {seq} (packet {i})"
                );
            }
        }
    }

    /// The client sends with the first half of the keying material, the server with the
    /// second (RFC 5764 §4.2); G.711's 8 kHz clock is the 48 kHz one divided by six.
    #[test]
    fn each_side_takes_its_half_and_its_clock() {
        let c = crypto();
        let material: Vec<u8> = (0..56).collect();
        let stream = Stream {
            ssrc: 7,
            pt: 0,
            clock_rate: 8_000,
        };
        let packet = |client: bool| {
            let keys = SrtpKeys {
                material: material.clone(),
                profile: SrtpProfile::AEAD_AES_128_GCM,
                client,
            };
            let mut out = [0u8; 64];
            let n = SrtpTx::new(&c, &keys, stream)
                .unwrap()
                .write(1, 6 * 1000, false, &[1, 2, 3], &mut out)
                .unwrap();
            out[..n].to_vec()
        };
        let halves = |k: std::ops::Range<usize>, s: std::ops::Range<usize>| {
            let mut out = [0u8; 64];
            let n = SrtpTx::from_master(
                &c,
                SrtpProfile::AEAD_AES_128_GCM,
                &material[k],
                &material[s],
                stream,
            )
            .unwrap()
            .write(1, 6 * 1000, false, &[1, 2, 3], &mut out)
            .unwrap();
            out[..n].to_vec()
        };
        assert_eq!(packet(true), halves(0..16, 32..44));
        assert_eq!(packet(false), halves(16..32, 44..56));
        assert_ne!(packet(true), packet(false));
        assert_eq!(
            &packet(true)[4..8],
            &1000u32.to_be_bytes(),
            "8 kHz timestamp"
        );
        let short = SrtpKeys {
            material: vec![0; 10],
            profile: SrtpProfile::AEAD_AES_128_GCM,
            client: true,
        };
        assert!(matches!(
            SrtpTx::new(&c, &short, stream),
            Err(FastTxError::KeyLength { want: 56, .. })
        ));
        let mut small = [0u8; 20];
        let mut tx = SrtpTx::new(&c, &SrtpKeys { material, ..short }, stream).unwrap();
        assert!(matches!(
            tx.write(1, 0, false, &[0; 10], &mut small),
            Err(FastTxError::TooBig { need: 38, .. })
        ));
    }
}
