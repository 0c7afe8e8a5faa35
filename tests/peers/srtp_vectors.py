"""SRTP test vectors from libsrtp (PyPI pylibsrtp, aiortc's SRTP) for the bridge's own SRTP
writer (src/sides/meeting/rtc/fast_tx.rs, test `matches_libsrtp`).

For each profile: a master key and salt made of counting bytes, and three RTP packets protected
in order by one libsrtp session: sequence 65534, 65535, then 0 (the rollover counter becomes
1), so the key derivation, the cipher, the tag and the rollover are all checked. Prints Rust
constants. Run: .venv/bin/python tests/peers/srtp_vectors.py
"""

from pylibsrtp import Policy, Session

PROFILES = [
    ("AES128_CM_SHA1_80", Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
    ("AEAD_AES_128_GCM", Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
    ("AEAD_AES_256_GCM", Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12),
]
SSRC = 0x1234ABCD
PT = 111
PAYLOAD = bytes(range(0x40, 0x40 + 37))


def rtp(seq: int, ts: int, marker: bool) -> bytes:
    return (
        bytes([0x80, (0x80 if marker else 0) | PT])
        + seq.to_bytes(2, "big")
        + ts.to_bytes(4, "big")
        + SSRC.to_bytes(4, "big")
        + PAYLOAD
    )


for name, profile, key_len, salt_len in PROFILES:
    key = bytes(range(1, 1 + key_len))
    salt = bytes(range(0xA0, 0xA0 + salt_len))
    policy = Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    session = Session(policy=policy)
    print(f'("{name}", [')
    for i, seq in enumerate([65534, 65535, 0]):
        packet = session.protect(rtp(seq, 960 * i, i == 0))
        print(f'    "{packet.hex()}",')
    print("]),")
