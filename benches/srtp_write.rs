//! CPU per SRTP packet of the room's own sender (`rtc::fast_tx`), as a room's fan-out spends it:
//! one 100-byte Opus payload written to N listeners in a row, each with its own keys, for each
//! profile a listener may negotiate. Prints nanoseconds per packet (median of the rounds).
//!
//! Run: `cargo bench --bench srtp_write [-- N]` (N listeners, default 1,000).

use std::hint::black_box;
use std::time::{Duration, Instant};

use pttbridge::sides::meeting::rtc::fast_tx::{HEADER_LEN, MAX_TAG_LEN, SrtpTx, Stream};
use str0m::crypto::dtls::SrtpProfile;

const PAYLOAD: usize = 100;
const ROUNDS: usize = 200;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let crypto = str0m::crypto::from_feature_flags();
    let stream = Stream {
        ssrc: 0x1234_5678,
        pt: 111,
        clock_rate: 48_000,
    };
    let payload = [0x5au8; PAYLOAD];
    println!("SRTP write, {PAYLOAD}-byte payload, {n} listeners each with its own keys");
    for (profile, key_len, salt_len) in [
        (SrtpProfile::AEAD_AES_256_GCM, 32, 12),
        (SrtpProfile::AEAD_AES_128_GCM, 16, 12),
        (SrtpProfile::AES128_CM_SHA1_80, 16, 14),
    ] {
        let mut senders: Vec<SrtpTx> = (0..n)
            .map(|i| {
                let key: Vec<u8> = (0..key_len).map(|k| (i + k) as u8).collect();
                let salt: Vec<u8> = (0..salt_len).map(|k| (i * 7 + k) as u8).collect();
                SrtpTx::from_master(&crypto, profile, &key, &salt, stream).expect("a sender")
            })
            .collect();
        let mut out = [0u8; HEADER_LEN + PAYLOAD + MAX_TAG_LEN];
        let mut rounds: Vec<Duration> = (0..ROUNDS)
            .map(|r| {
                let t = Instant::now();
                for tx in &mut senders {
                    let len = tx
                        .write(r as u16, 960 * r as u64, false, &payload, &mut out)
                        .expect("written");
                    black_box(&out[..len]);
                }
                t.elapsed()
            })
            .collect();
        rounds.sort();
        let median = rounds[ROUNDS / 2];
        println!(
            "{profile:?}: {:.0} ns per packet",
            median.as_nanos() as f64 / n as f64
        );
    }
}
