//! OCB2-AES128 for UDP voice, behaving like Mumble's `CryptStateOCB2`.
//!
//! # Keys and nonces
//!
//! The server's `CryptSetup` carries `key`, `client_nonce` and `server_nonce`. A client
//! encrypts with the client nonce and decrypts with the server nonce:
//! `set_key(key, client_nonce, server_nonce)`. Each side increments its 16-byte nonce
//! (little-endian counter) before every packet and sends only the low byte, so the
//! receiver reconstructs the rest and tolerates loss and reordering within a window.
//!
//! Resynchronisation, driven by the caller (the session owns the clocks):
//! - decryption has failed for a while → send an empty `CryptSetup`; the server answers
//!   with `server_nonce` → [`CryptState::set_decrypt_iv`] (counts a resync);
//! - the server sends an empty `CryptSetup` → answer with [`CryptState::encrypt_iv`] as
//!   `client_nonce`.
//!
//! # Packet layout
//!
//! `[nonce[0], tag[0], tag[1], tag[2], ciphertext…]`: 4 bytes more than the plaintext.
//! Only 24 bits of the tag are sent.
//!
//! # Receive window (as Mumble)
//!
//! - the next nonce byte: in order;
//! - up to 29 behind: a late packet (counted late, and no longer lost), decrypted with
//!   the older nonce without moving the current one;
//! - up to 127 ahead (128 when the low byte does not wrap): the skipped packets are
//!   counted lost;
//! - anything else, or a nonce whose (byte 0, byte 1) pair is already in the 256-entry
//!   history: rejected as a replay or out of window. After a jump of more than 128
//!   packets the receiver cannot follow on its own: that is what a resync is for.
//!
//! # XEX* countermeasure
//!
//! OCB2 is forgeable (Inoue et al., eprint 2019/311) when the second-to-last block is all
//! zero except its last byte. Like murmurd ≥ 1.3.1, [`CryptState::encrypt`] flips the
//! lowest bit of such a block (digital silence produces them, so refusing them is not an
//! option; the receiver sees byte 0 of that block as 1), and [`CryptState::decrypt`]
//! rejects a packet whose last block decrypts to the pattern a forgery needs.

use std::fmt;

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use bytes::BytesMut;

/// AES-128 key length.
pub const KEY_LEN: usize = 16;
/// Nonce (IV) length: one AES block.
pub const IV_LEN: usize = 16;
/// Bytes the packet header adds to the plaintext (nonce byte + 3 tag bytes).
pub const HEADER_LEN: usize = 4;

const BLOCK: usize = 16;

/// How far behind the newest packet a late one may be (exclusive), as in Mumble.
const LATE_WINDOW: i32 = 30;

/// Why a key could not be set or a packet was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// Key or nonce of the wrong length (they come straight from a `CryptSetup`).
    #[error("{what} must be 16 bytes, got {len}")]
    BadLength {
        /// `"key"`, `"encrypt nonce"` or `"decrypt nonce"`.
        what: &'static str,
        /// Length received.
        len: usize,
    },
    /// [`CryptState::decrypt`] before [`CryptState::set_key`].
    #[error("UDP crypto not keyed yet")]
    NotKeyed,
    /// Fewer bytes than the 4-byte header.
    #[error("encrypted packet of {0} bytes is shorter than its header")]
    TooShort(usize),
    /// This nonce was already accepted.
    #[error("replayed packet (nonce byte {0:#04x})")]
    Replay(u8),
    /// The nonce byte is neither the next one, late within the window, nor a small gap ahead.
    #[error("nonce byte {nonce:#04x} is out of the window around {expected:#04x}")]
    OutOfWindow {
        /// Low byte of the packet's nonce.
        nonce: u8,
        /// Low byte of the last in-order nonce.
        expected: u8,
    },
    /// Authentication failed: wrong key, corrupted, or nonces out of sync.
    #[error("authentication tag mismatch")]
    BadTag,
    /// Tag-valid, but shaped like the XEX* forgery of eprint 2019/311.
    #[error("packet rejected by the XEX* forgery check")]
    Forgery,
}

/// Counters of one receive direction, as reported in `Ping` and `UserStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CryptStats {
    /// Packets decrypted.
    pub good: u32,
    /// Packets decrypted that arrived after a later one.
    pub late: u32,
    /// Packets never seen (a late arrival takes itself back off this count).
    pub lost: u32,
    /// Times the decrypt nonce was reset by the server.
    pub resync: u32,
}

/// OCB2-AES128 state of one UDP association: key, both nonces, replay history, counters.
#[derive(Clone)]
pub struct CryptState {
    cipher: Aes128,
    keyed: bool,
    encrypt_iv: [u8; IV_LEN],
    decrypt_iv: [u8; IV_LEN],
    /// Byte 1 of the last nonce accepted for each value of byte 0.
    decrypt_history: [u8; 256],
    stats: CryptStats,
}

impl fmt::Debug for CryptState {
    // Never print the key or nonces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptState")
            .field("keyed", &self.keyed)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for CryptState {
    fn default() -> Self {
        Self::new()
    }
}

fn array16(what: &'static str, bytes: &[u8]) -> Result<[u8; 16], CryptError> {
    bytes.try_into().map_err(|_| CryptError::BadLength {
        what,
        len: bytes.len(),
    })
}

/// Adds one to the little-endian counter `bytes`, wrapping.
fn increment(bytes: &mut [u8]) {
    for b in bytes {
        *b = b.wrapping_add(1);
        if *b != 0 {
            break;
        }
    }
}

/// Subtracts one from the little-endian counter `bytes`, wrapping.
fn decrement(bytes: &mut [u8]) {
    for b in bytes {
        let was = *b;
        *b = was.wrapping_sub(1);
        if was != 0 {
            break;
        }
    }
}

impl CryptState {
    /// An unkeyed state. [`encrypt`](Self::encrypt) works (with an all-zero key, useless to
    /// anyone) so callers need no special case; [`decrypt`](Self::decrypt) refuses everything.
    pub fn new() -> Self {
        Self {
            cipher: Aes128::new(&[0u8; KEY_LEN].into()),
            keyed: false,
            encrypt_iv: [0; IV_LEN],
            decrypt_iv: [0; IV_LEN],
            decrypt_history: [0; 256],
            stats: CryptStats::default(),
        }
    }

    /// Installs the key and both nonces from a full `CryptSetup`.
    ///
    /// A client passes `client_nonce` as `encrypt_iv` and `server_nonce` as `decrypt_iv`.
    /// Nothing changes unless all three are 16 bytes. The counters keep running, as in Mumble.
    ///
    /// The replay history is cleared to a value that cannot match the nonces of the next
    /// 32 768 packets. Mumble starts it at zero instead, which rejects packets arriving
    /// after a loss while byte 1 of the nonce is 0 (1 session in 256); the peer cannot
    /// tell the difference, it only sees fewer drops.
    pub fn set_key(
        &mut self,
        key: &[u8],
        encrypt_iv: &[u8],
        decrypt_iv: &[u8],
    ) -> Result<(), CryptError> {
        let key = array16("key", key)?;
        let encrypt_iv = array16("encrypt nonce", encrypt_iv)?;
        let decrypt_iv = array16("decrypt nonce", decrypt_iv)?;
        self.cipher = Aes128::new(&key.into());
        self.encrypt_iv = encrypt_iv;
        self.decrypt_iv = decrypt_iv;
        self.decrypt_history = [decrypt_iv[1].wrapping_add(128); 256];
        self.keyed = true;
        Ok(())
    }

    /// Resynchronises the decrypt nonce from the `server_nonce` of a key-less `CryptSetup`,
    /// and counts a resync.
    pub fn set_decrypt_iv(&mut self, iv: &[u8]) -> Result<(), CryptError> {
        self.decrypt_iv = array16("decrypt nonce", iv)?;
        self.stats.resync = self.stats.resync.wrapping_add(1);
        Ok(())
    }

    /// Whether [`set_key`](Self::set_key) has succeeded.
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// Current encrypt nonce (the last one used), sent as `client_nonce` when the server asks.
    pub fn encrypt_iv(&self) -> [u8; IV_LEN] {
        self.encrypt_iv
    }

    /// Current decrypt nonce (the newest one accepted in order).
    pub fn decrypt_iv(&self) -> [u8; IV_LEN] {
        self.decrypt_iv
    }

    /// All receive counters.
    pub fn stats(&self) -> CryptStats {
        self.stats
    }

    /// Packets decrypted.
    pub fn good(&self) -> u32 {
        self.stats.good
    }

    /// Packets that arrived late (after a later one).
    pub fn late(&self) -> u32 {
        self.stats.late
    }

    /// Packets lost.
    pub fn lost(&self) -> u32 {
        self.stats.lost
    }

    /// Resyncs of the decrypt nonce.
    pub fn resync(&self) -> u32 {
        self.stats.resync
    }

    /// Encrypts one datagram: advances the encrypt nonce and appends
    /// `HEADER_LEN + plain.len()` bytes to `out`.
    pub fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + HEADER_LEN + plain.len(), 0);
        self.seal(plain, &mut out[start..]);
    }

    /// [`encrypt`](Self::encrypt) appending to a `BytesMut`, so the datagram can be split off
    /// as [`Bytes`](bytes::Bytes) without another copy or allocation.
    pub fn encrypt_into(&mut self, plain: &[u8], out: &mut BytesMut) {
        let start = out.len();
        out.resize(start + HEADER_LEN + plain.len(), 0);
        self.seal(plain, &mut out[start..]);
    }

    /// Authenticates and decrypts one datagram, appending the plaintext to `out`.
    ///
    /// On error `out` is left as it was, the nonce state is unchanged and no counter moves.
    pub fn decrypt(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), CryptError> {
        let start = out.len();
        out.resize(start + packet.len().saturating_sub(HEADER_LEN), 0);
        let result = self.open(packet, &mut out[start..]);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// [`decrypt`](Self::decrypt) appending to a `BytesMut`, so the plaintext can be split off
    /// as [`Bytes`](bytes::Bytes) (and the Opus payload sliced out of it) without another copy.
    pub fn decrypt_into(&mut self, packet: &[u8], out: &mut BytesMut) -> Result<(), CryptError> {
        let start = out.len();
        out.resize(start + packet.len().saturating_sub(HEADER_LEN), 0);
        let result = self.open(packet, &mut out[start..]);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Encrypts `plain` into `out`, which is exactly `HEADER_LEN + plain.len()` bytes.
    fn seal(&mut self, plain: &[u8], out: &mut [u8]) {
        increment(&mut self.encrypt_iv);
        let (head, body) = out.split_at_mut(HEADER_LEN);
        let (tag, _) = ocb_encrypt(&self.cipher, &self.encrypt_iv, plain, body, true);
        head[0] = self.encrypt_iv[0];
        head[1..].copy_from_slice(&tag[..3]);
    }

    /// Authenticates and decrypts `packet` into `out`, which is exactly
    /// `packet.len() - HEADER_LEN` bytes (empty when the packet is shorter than its header).
    /// On error the nonce state and counters are unchanged; `out` holds garbage.
    fn open(&mut self, packet: &[u8], out: &mut [u8]) -> Result<(), CryptError> {
        if !self.keyed {
            return Err(CryptError::NotKeyed);
        }
        let [nonce_byte, t0, t1, t2, body @ ..] = packet else {
            return Err(CryptError::TooShort(packet.len()));
        };
        let nonce_byte = *nonce_byte;
        let saved = self.decrypt_iv;
        let current = saved[0];
        let mut late = false;
        let mut lost: i32 = 0;
        // A late packet is decrypted with an older nonce; the current one stays.
        let mut restore = false;

        if current.wrapping_add(1) == nonce_byte {
            // In order. Carry into the upper bytes when the low byte wraps.
            self.decrypt_iv[0] = nonce_byte;
            if nonce_byte < current {
                increment(&mut self.decrypt_iv[1..]);
            }
        } else {
            let mut diff = i32::from(nonce_byte) - i32::from(current);
            if diff > 128 {
                diff -= 256;
            } else if diff < -128 {
                diff += 256;
            }
            let behind = diff > -LATE_WINDOW && diff < 0;
            if behind {
                late = true;
                lost = -1;
                self.decrypt_iv[0] = nonce_byte;
                if nonce_byte > current {
                    // Behind across a wrap (current 0x02, packet 0xFF): borrow.
                    decrement(&mut self.decrypt_iv[1..]);
                }
                restore = true;
            } else if diff > 0 {
                lost = if nonce_byte > current {
                    diff - 1
                } else {
                    256 - i32::from(current) + i32::from(nonce_byte) - 1
                };
                self.decrypt_iv[0] = nonce_byte;
                if nonce_byte < current {
                    increment(&mut self.decrypt_iv[1..]);
                }
            } else if diff == 0 {
                return Err(CryptError::Replay(nonce_byte));
            } else {
                return Err(CryptError::OutOfWindow {
                    nonce: nonce_byte,
                    expected: current,
                });
            }
            if self.decrypt_history[usize::from(self.decrypt_iv[0])] == self.decrypt_iv[1] {
                self.decrypt_iv = saved;
                return Err(CryptError::Replay(nonce_byte));
            }
        }

        let (tag, shape_ok) = ocb_decrypt(&self.cipher, &self.decrypt_iv, body, out);
        // Compare without an early exit (constant time over the 3 bytes).
        let tag_ok = ((tag[0] ^ t0) | (tag[1] ^ t1) | (tag[2] ^ t2)) == 0;
        if !tag_ok || !shape_ok {
            self.decrypt_iv = saved;
            return Err(if tag_ok {
                CryptError::Forgery
            } else {
                CryptError::BadTag
            });
        }
        self.decrypt_history[usize::from(self.decrypt_iv[0])] = self.decrypt_iv[1];
        if restore {
            self.decrypt_iv = saved;
        }
        self.stats.good = self.stats.good.wrapping_add(1);
        self.stats.late = self.stats.late.wrapping_add(u32::from(late));
        self.stats.lost = self.stats.lost.saturating_add_signed(lost);
        Ok(())
    }
}

fn aes_encrypt(cipher: &Aes128, block: u128) -> u128 {
    let mut b = block.to_be_bytes().into();
    cipher.encrypt_block(&mut b);
    u128::from_be_bytes(b.into())
}

fn aes_decrypt(cipher: &Aes128, block: u128) -> u128 {
    let mut b = block.to_be_bytes().into();
    cipher.decrypt_block(&mut b);
    u128::from_be_bytes(b.into())
}

/// Multiplication by x in GF(2^128), OCB's "times 2" (big-endian bit order).
fn times2(v: u128) -> u128 {
    (v << 1) ^ ((v >> 127) * 0x87)
}

/// OCB's "times 3".
fn times3(v: u128) -> u128 {
    v ^ times2(v)
}

/// A full 16-byte block as a big-endian integer.
fn load(block: &[u8]) -> u128 {
    let mut b = [0u8; BLOCK];
    b.copy_from_slice(block);
    u128::from_be_bytes(b)
}

/// Blocks handled by the main loop: all but the last (partial or full) block.
fn full_blocks(len: usize) -> usize {
    len.saturating_sub(1) / BLOCK
}

/// Bit 0 of byte 0 of a block, where the XEX* countermeasure flips the plaintext.
const XEX_FLIP: u128 = 1 << 120;

/// OCB2 encryption of `plain` into `out` (same length) under `nonce`; returns the full tag.
///
/// With `modify_on_xexstar` a critical second-to-last block is altered (as Mumble does);
/// without it the block is encrypted as is and `false` is returned (only tests want that).
fn ocb_encrypt(
    cipher: &Aes128,
    nonce: &[u8; IV_LEN],
    plain: &[u8],
    out: &mut [u8],
    modify_on_xexstar: bool,
) -> ([u8; BLOCK], bool) {
    let mut delta = aes_encrypt(cipher, u128::from_be_bytes(*nonce));
    let mut checksum = 0u128;
    let mut unmodified_critical_block = false;
    let full = full_blocks(plain.len());
    for (i, (p, c)) in plain
        .chunks_exact(BLOCK)
        .zip(out.chunks_exact_mut(BLOCK))
        .take(full)
        .enumerate()
    {
        let mut block = load(p);
        // The forgery needs the second-to-last block to look like an encoded length:
        // zero except its last byte.
        if i + 1 == full && p[..BLOCK - 1].iter().all(|b| *b == 0) {
            if modify_on_xexstar {
                block ^= XEX_FLIP;
            } else {
                unmodified_critical_block = true;
            }
        }
        delta = times2(delta);
        let encrypted = aes_encrypt(cipher, delta ^ block) ^ delta;
        c.copy_from_slice(&encrypted.to_be_bytes());
        checksum ^= block;
    }

    let rest = &plain[full * BLOCK..];
    let n = rest.len();
    delta = times2(delta);
    let pad = aes_encrypt(cipher, delta ^ (n as u128 * 8)).to_be_bytes();
    // The last block is padded with the pad's own tail before entering the checksum.
    let mut last = pad;
    last[..n].copy_from_slice(rest);
    checksum ^= u128::from_be_bytes(last);
    for ((o, p), k) in out[full * BLOCK..].iter_mut().zip(rest).zip(pad) {
        *o = p ^ k;
    }
    let tag = aes_encrypt(cipher, times3(delta) ^ checksum).to_be_bytes();
    (tag, !unmodified_critical_block)
}

/// OCB2 decryption of `encrypted` into `out` (same length); returns the full computed tag
/// (the caller compares it) and `false` if the last block has the XEX* forgery shape.
fn ocb_decrypt(
    cipher: &Aes128,
    nonce: &[u8; IV_LEN],
    encrypted: &[u8],
    out: &mut [u8],
) -> ([u8; BLOCK], bool) {
    let mut delta = aes_encrypt(cipher, u128::from_be_bytes(*nonce));
    let mut checksum = 0u128;
    let full = full_blocks(encrypted.len());
    for (c, p) in encrypted
        .chunks_exact(BLOCK)
        .zip(out.chunks_exact_mut(BLOCK))
        .take(full)
    {
        delta = times2(delta);
        let block = aes_decrypt(cipher, load(c) ^ delta) ^ delta;
        p.copy_from_slice(&block.to_be_bytes());
        checksum ^= block;
    }

    let rest = &encrypted[full * BLOCK..];
    let n = rest.len();
    delta = times2(delta);
    let pad = aes_encrypt(cipher, delta ^ (n as u128 * 8)).to_be_bytes();
    let mut last = [0u8; BLOCK];
    last[..n].copy_from_slice(rest);
    for (l, k) in last.iter_mut().zip(pad) {
        *l ^= k;
    }
    out[full * BLOCK..].copy_from_slice(&last[..n]);
    let last = u128::from_be_bytes(last);
    checksum ^= last;
    // A forgery makes the padded last block equal delta in all but the length byte;
    // comparing the whole padded block also catches short last blocks.
    let shape_ok = (last ^ delta) >> 8 != 0;
    let tag = aes_encrypt(cipher, times3(delta) ^ checksum).to_be_bytes();
    (tag, shape_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const NONCE2: [u8; 16] = [
        0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
        0x00,
    ];

    fn cipher() -> Aes128 {
        Aes128::new(&KEY.into())
    }

    /// OCB2-AES-128 vectors of draft-krovetz-ocb-00 (no header): key = nonce = 00..0f,
    /// plaintext 00 01 02 … of each length.
    #[test]
    fn known_answer_vectors() {
        let vectors = [
            ("", "", "BF3108130773AD5EC70EC69E7875A7B0"),
            (
                "0001020304050607",
                "C636B3A868F429BB",
                "A45F5FDEA5C088D1D7C8BE37CABC8C5C",
            ),
            (
                "000102030405060708090A0B0C0D0E0F",
                "52E48F5D19FE2D9869F0C4A4B3D2BE57",
                "F7EE49AE7AA5B5E6645DB6B3966136F9",
            ),
            (
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "F75D6BC8B4DC8D66B836A2B08B32A636CC579E145D323BEB",
                "A1A50F822819D6E0A216784AC24AC84C",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "F75D6BC8B4DC8D66B836A2B08B32A636CEC3C555037571709DA25E1BB0421A27",
                "09CA6C73F0B5C6C5FD587122D75F2AA3",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F2021222324252627",
                "F75D6BC8B4DC8D66B836A2B08B32A6369F1CD3C5228D79FD6C267F5F6AA7B231C7DFB9D59951AE9C",
                "9DB0CDF880F73E3E10D4EB3217766688",
            ),
        ];
        let c = cipher();
        for (plain, crypted, tag) in vectors {
            let (plain, crypted, tag) = (hex(plain), hex(crypted), hex(tag));
            let mut out = vec![0; plain.len()];
            let (t, ok) = ocb_encrypt(&c, &KEY, &plain, &mut out, true);
            assert!(ok);
            assert_eq!(out, crypted, "ciphertext of {} bytes", plain.len());
            assert_eq!(t.to_vec(), tag, "tag of {} bytes", plain.len());
            let mut back = vec![0; crypted.len()];
            let (t, ok) = ocb_decrypt(&c, &KEY, &crypted, &mut back);
            assert!(ok);
            assert_eq!(back, plain);
            assert_eq!(t.to_vec(), tag);
        }
    }

    #[test]
    fn times2_and_times3() {
        let v = u128::from_be_bytes(hex("80FFFFFFFFFFFFFFFFFFFFFFFFFFFFFE").try_into().unwrap());
        assert_eq!(
            times2(v).to_be_bytes().to_vec(),
            hex("01FFFFFFFFFFFFFFFFFFFFFFFFFFFF7B")
        );
        assert_eq!(
            times3(v).to_be_bytes().to_vec(),
            hex("81000000000000000000000000000085")
        );
    }

    /// Every length 0..128 round-trips with matching tags (Mumble's `authcrypt`).
    #[test]
    fn all_short_lengths_round_trip() {
        let c = cipher();
        for len in 0..128usize {
            let plain: Vec<u8> = (0..len).map(|i| (i + 1) as u8).collect();
            let mut enc = vec![0; len];
            let mut dec = vec![0; len];
            let (t1, ok1) = ocb_encrypt(&c, &NONCE2, &plain, &mut enc, true);
            let (t2, ok2) = ocb_decrypt(&c, &NONCE2, &enc, &mut dec);
            assert!(ok1 && ok2, "len {len}");
            assert_eq!(t1, t2, "len {len}");
            assert_eq!(dec, plain, "len {len}");
        }
    }

    /// The forgery of eprint 2019/311 section 4.1 works against plain OCB2, and is refused here.
    #[test]
    fn xexstar_forgery_is_detected() {
        let c = cipher();
        let mut src = [42u8; 32];
        src[..16].fill(0);
        src[15] = 128; // looks like the encoded length of a full block
        let mut enc = [0u8; 32];
        let (_, ok) = ocb_encrypt(&c, &NONCE2, &src, &mut enc, false);
        assert!(!ok, "the critical block is reported when not modified");

        // Forge a one-block message from the two-block one.
        let mut forged = [0u8; 16];
        forged.copy_from_slice(&enc[..16]);
        forged[15] ^= 128;
        let mut forged_tag = [0u8; 16];
        for i in 0..16 {
            forged_tag[i] = src[16 + i] ^ enc[16 + i];
        }
        let mut out = [0u8; 16];
        let (tag, shape_ok) = ocb_decrypt(&c, &NONCE2, &forged, &mut out);
        assert_eq!(tag, forged_tag, "without the check the forgery would pass");
        assert!(!shape_ok, "the check catches it");

        // With the countermeasure the message goes through, one bit changed.
        let (tag, ok) = ocb_encrypt(&c, &NONCE2, &src, &mut enc, true);
        assert!(ok);
        let mut back = [0u8; 32];
        let (tag2, ok) = ocb_decrypt(&c, &NONCE2, &enc, &mut back);
        assert!(ok);
        assert_eq!(tag, tag2);
        let mut expected = src;
        expected[0] ^= 1;
        assert_eq!(back, expected);
    }

    #[test]
    fn silence_blocks_are_modified_only_in_second_to_last_position() {
        let c = cipher();
        // 48 zero bytes: blocks 0, 1 full, block 2 last (full). Only block 1 is critical.
        let zeros = [0u8; 48];
        let mut enc = [0u8; 48];
        let mut back = [0u8; 48];
        ocb_encrypt(&c, &NONCE2, &zeros, &mut enc, true);
        assert!(ocb_decrypt(&c, &NONCE2, &enc, &mut back).1);
        let mut expected = [0u8; 48];
        expected[16] = 1;
        assert_eq!(back, expected);
    }

    fn pair() -> (CryptState, CryptState) {
        pair_with(std::array::from_fn(|i| (0x90 + i) as u8))
    }

    /// A client and a server sharing a key; `server_nonce` is the server's first encrypt nonce.
    fn pair_with(server_nonce: [u8; 16]) -> (CryptState, CryptState) {
        let key: [u8; 16] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let client_nonce = [0x33u8; 16];
        let mut client = CryptState::new();
        client.set_key(&key, &client_nonce, &server_nonce).unwrap();
        let mut server = CryptState::new();
        server.set_key(&key, &server_nonce, &client_nonce).unwrap();
        (client, server)
    }

    fn seal(cs: &mut CryptState, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        cs.encrypt(plain, &mut out);
        out
    }

    fn open(cs: &mut CryptState, packet: &[u8]) -> Result<Vec<u8>, CryptError> {
        let mut out = vec![0xEE]; // decrypt appends
        cs.decrypt(packet, &mut out)?;
        assert_eq!(out[0], 0xEE);
        Ok(out[1..].to_vec())
    }

    #[test]
    fn packet_layout() {
        let (mut client, _) = pair();
        let before = client.encrypt_iv();
        let packet = seal(&mut client, b"hello voice");
        assert_eq!(packet.len(), HEADER_LEN + 11);
        let mut expected_iv = before;
        increment(&mut expected_iv);
        assert_eq!(client.encrypt_iv(), expected_iv);
        assert_eq!(packet[0], expected_iv[0]);
        let mut body = vec![0; 11];
        let (tag, _) = ocb_encrypt(
            &client.cipher,
            &expected_iv,
            b"hello voice",
            &mut body,
            true,
        );
        assert_eq!(packet[1..4], tag[..3]);
        assert_eq!(packet[4..], body);
    }

    #[test]
    fn in_order_reordered_replayed_and_lost() {
        let (mut client, mut server) = pair();
        // Not all-zero: a zero first block of 20 bytes would get the XEX* bit flip.
        let packets: Vec<Vec<u8>> = (1..=10u8).map(|i| seal(&mut server, &[i; 20])).collect();

        assert_eq!(open(&mut client, &packets[0]).unwrap(), [1; 20]);
        assert_eq!(
            open(&mut client, &packets[0]),
            Err(CryptError::Replay(packets[0][0]))
        );
        // 1 and 2 swap places.
        open(&mut client, &packets[2]).unwrap();
        assert_eq!(
            client.stats(),
            CryptStats {
                good: 2,
                late: 0,
                lost: 1,
                resync: 0
            }
        );
        assert_eq!(open(&mut client, &packets[1]).unwrap(), [2; 20]);
        assert_eq!(
            client.stats(),
            CryptStats {
                good: 3,
                late: 1,
                lost: 0,
                resync: 0
            }
        );
        // The late packet did not move the nonce back: 3 is still in order.
        assert_eq!(client.decrypt_iv()[0], packets[2][0]);
        assert_eq!(
            open(&mut client, &packets[1]),
            Err(CryptError::Replay(packets[1][0]))
        );
        // 3..=5 lost, 6 arrives.
        open(&mut client, &packets[6]).unwrap();
        assert_eq!(client.lost(), 3);
        // A tampered packet changes nothing.
        let mut bad = packets[7].clone();
        bad[10] ^= 0x40;
        let before = client.decrypt_iv();
        assert_eq!(open(&mut client, &bad), Err(CryptError::BadTag));
        assert_eq!(client.decrypt_iv(), before);
        assert_eq!(client.good(), 4);
        open(&mut client, &packets[7]).unwrap();
        assert_eq!(client.good(), 5);
    }

    /// Mumble's `reverserecovery`: up to 29 behind is accepted, more is not.
    #[test]
    fn late_window_is_thirty() {
        // As in Mumble's test: 128 ahead is accepted only without a low-byte wrap.
        let (mut client, mut server) = pair_with([0x55; 16]);
        let packets: Vec<Vec<u8>> = (0..128).map(|_| seal(&mut server, b"abcdefghi")).collect();
        for i in 0..30 {
            assert!(open(&mut client, &packets[127 - i]).is_ok(), "{i}");
        }
        for i in 30..128 {
            assert!(open(&mut client, &packets[127 - i]).is_err(), "{i}");
        }
        for i in 0..30 {
            assert!(open(&mut client, &packets[127 - i]).is_err(), "replay {i}");
        }
        // Extensive replay test across many wraps of the low byte.
        let packets: Vec<Vec<u8>> = (0..512).map(|_| seal(&mut server, b"abcdefghi")).collect();
        for p in &packets {
            open(&mut client, p).unwrap();
        }
        for p in &packets {
            assert!(open(&mut client, p).is_err());
        }
    }

    /// Mumble's `ivrecovery`: loss, low-byte wrap-around, a jump too far, and resync.
    #[test]
    fn nonce_recovery_and_resync() {
        let (mut client, mut server) = pair();
        let p = seal(&mut server, b"abcdefghi");
        assert_eq!(open(&mut client, &p).unwrap(), b"abcdefghi");
        assert!(open(&mut client, &p).is_err());

        // 15 lost, then one through.
        let mut p = Vec::new();
        for _ in 0..16 {
            p = seal(&mut server, b"abcdefghi");
        }
        open(&mut client, &p).unwrap();
        assert_eq!(client.lost(), 15);

        // Many wraps of the low byte, 14 lost each time.
        for _ in 0..128 {
            let lost_before = client.lost();
            for _ in 0..15 {
                p = seal(&mut server, b"abcdefghi");
            }
            open(&mut client, &p).unwrap();
            assert_eq!(client.lost() - lost_before, 14);
        }
        assert_eq!(client.decrypt_iv(), server.encrypt_iv());

        // A jump of 257 cannot be followed.
        for _ in 0..257 {
            p = seal(&mut server, b"abcdefghi");
        }
        assert!(open(&mut client, &p).is_err());

        // Resync as the server's CryptSetup would.
        client.set_decrypt_iv(&server.encrypt_iv()).unwrap();
        assert_eq!(client.resync(), 1);
        p = seal(&mut server, b"abcdefghi");
        assert_eq!(open(&mut client, &p).unwrap(), b"abcdefghi");
    }

    #[test]
    fn late_packet_across_a_low_byte_wrap() {
        let key = [9u8; 16];
        let start = [0xFDu8, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut server = CryptState::new();
        server.set_key(&key, &start, &start).unwrap();
        let mut client = CryptState::new();
        client.set_key(&key, &start, &start).unwrap();
        // Nonces 0xFE, 0xFF, then 0x00/0x01 with byte 1 carried to 0x11.
        let packets: Vec<Vec<u8>> = (0..4).map(|i| seal(&mut server, &[i; 5])).collect();
        assert_eq!(packets[2][0], 0x00);
        open(&mut client, &packets[0]).unwrap();
        open(&mut client, &packets[3]).unwrap();
        assert_eq!(client.decrypt_iv()[..2], [0x01, 0x11]);
        assert_eq!(client.lost(), 2);
        assert_eq!(open(&mut client, &packets[1]).unwrap(), [1; 5]);
        assert_eq!(open(&mut client, &packets[2]).unwrap(), [2; 5]);
        assert_eq!(
            client.stats(),
            CryptStats {
                good: 4,
                late: 2,
                lost: 0,
                resync: 0
            }
        );
        assert_eq!(client.decrypt_iv()[..2], [0x01, 0x11]);
    }

    /// Byte 1 of the first nonce is 0: Mumble's zeroed history would call the first
    /// packet after a loss a replay.
    #[test]
    fn fresh_history_does_not_reject_after_loss() {
        let (mut client, mut server) =
            pair_with([0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        seal(&mut server, b"lost");
        let p = seal(&mut server, b"arrives");
        assert_eq!(open(&mut client, &p).unwrap(), b"arrives");
        assert_eq!(client.lost(), 1);
    }

    /// Mumble's `tamper`: every single-bit change of the packet is caught.
    #[test]
    fn every_bit_flip_is_rejected() {
        let mut cs = CryptState::new();
        cs.set_key(&KEY, &NONCE2, &NONCE2).unwrap();
        let msg = b"It was a funky funky town!\0";
        let mut packet = seal(&mut cs, msg);
        for bit in 0..packet.len() * 8 {
            packet[bit / 8] ^= 1 << (bit % 8);
            assert!(open(&mut cs, &packet).is_err(), "bit {bit}");
            packet[bit / 8] ^= 1 << (bit % 8);
        }
        assert_eq!(open(&mut cs, &packet).unwrap(), msg);
    }

    #[test]
    fn forged_datagram_is_rejected_even_with_a_valid_tag() {
        let (mut client, _) = pair();
        let mut nonce = client.decrypt_iv();
        increment(&mut nonce);
        let mut src = [0x42u8; 32];
        src[..16].fill(0);
        src[15] = 0x80;
        let mut enc = [0u8; 32];
        ocb_encrypt(&client.cipher, &nonce, &src, &mut enc, false);
        let mut datagram = vec![nonce[0], 0, 0, 0];
        datagram.extend_from_slice(&enc[..16]);
        datagram[4 + 15] ^= 0x80;
        for i in 0..3 {
            datagram[1 + i] = src[16 + i] ^ enc[16 + i];
        }
        let before = client.decrypt_iv();
        assert_eq!(open(&mut client, &datagram), Err(CryptError::Forgery));
        assert_eq!(client.decrypt_iv(), before);
        assert_eq!(client.good(), 0);
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        let mut cs = CryptState::new();
        let mut out = Vec::new();
        assert_eq!(
            cs.decrypt(&[1, 2, 3, 4, 5], &mut out),
            Err(CryptError::NotKeyed)
        );
        assert_eq!(
            cs.set_key(&[0; 15], &[0; 16], &[0; 16]),
            Err(CryptError::BadLength {
                what: "key",
                len: 15
            })
        );
        assert_eq!(
            cs.set_key(&[0; 16], &[0; 16], &[0; 17]),
            Err(CryptError::BadLength {
                what: "decrypt nonce",
                len: 17
            })
        );
        assert!(!cs.is_keyed());
        assert!(cs.set_decrypt_iv(&[0; 3]).is_err());
        assert_eq!(cs.resync(), 0);
        cs.set_key(&[0; 16], &[0; 16], &[0; 16]).unwrap();
        assert_eq!(
            cs.decrypt(&[1, 2, 3], &mut out),
            Err(CryptError::TooShort(3))
        );
        assert!(out.is_empty());
        // A 4-byte packet is an empty plaintext: valid only with the right tag.
        assert_eq!(cs.decrypt(&[1, 2, 3, 4], &mut out), Err(CryptError::BadTag));
        assert!(!format!("{cs:?}").contains("key:"));
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let (mut client, mut server) = pair();
        let p = seal(&mut server, b"");
        assert_eq!(p.len(), 4);
        assert_eq!(open(&mut client, &p).unwrap(), b"");
    }

    /// The `BytesMut` variants write the same bytes as the `Vec` ones, append after what is
    /// there, and leave `out` as it was on error.
    #[test]
    fn bytes_mut_variants_match_the_vec_ones() {
        let (mut client, mut server) = pair();
        let (mut client2, mut server2) = pair();
        for len in [0, 1, 15, 16, 17, 60, 100] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let sealed = seal(&mut server, &plain);
            let mut sealed2 = BytesMut::from(&b"head"[..]);
            server2.encrypt_into(&plain, &mut sealed2);
            assert_eq!(&sealed2[..4], b"head");
            assert_eq!(sealed2[4..], sealed[..], "{len} bytes");

            let mut out = BytesMut::from(&b"x"[..]);
            client2.decrypt_into(&sealed, &mut out).unwrap();
            assert_eq!(out[1..], open(&mut client, &sealed).unwrap()[..]);
            assert_eq!(client2.decrypt_iv(), client.decrypt_iv());
            // Replayed: refused, `out` untouched.
            assert_eq!(
                client2.decrypt_into(&sealed, &mut out),
                Err(CryptError::Replay(sealed[0]))
            );
            assert_eq!(out.len(), 1 + len);
        }
        let mut out = BytesMut::new();
        assert_eq!(
            client2.decrypt_into(&[1, 2, 3], &mut out),
            Err(CryptError::TooShort(3))
        );
        assert!(out.is_empty());
    }
}
