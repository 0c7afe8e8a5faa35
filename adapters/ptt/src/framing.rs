//! Control-channel framing: `u16 type | u32 length | payload`, big endian.
//!
//! The decoder is sans-IO: feed it whatever bytes arrived and pull complete frames.
//! A length above the limit desynchronises the stream for good, so it is a fatal
//! error for the connection (the caller closes it); everything else is per frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the frame header (type + length).
pub const HEADER_LEN: usize = 6;

/// Largest payload accepted by default. murmurd refuses frames above 0x7fffff bytes too.
pub const DEFAULT_MAX_PAYLOAD: usize = 0x7f_ffff;

/// Receive buffers are allocated this size at a time. Frame payloads are slices of them, so
/// one chunk holds ~200 tunnelled voice frames and the allocation per frame is amortised
/// away, while a frame someone keeps holds at most this much memory alive.
const CHUNK: usize = 16 * 1024;

/// One undecoded control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Message type number (see [`crate::MessageType`]).
    pub kind: u16,
    /// The payload: protobuf for every type except `UDPTunnel`, which carries a raw voice packet.
    pub payload: Bytes,
}

/// A framing violation; the stream cannot be resynchronised after it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The header announced more bytes than the limit allows.
    #[error("frame of type {kind} announces {len} bytes, limit is {max}")]
    TooLarge {
        /// Message type number from the header.
        kind: u16,
        /// Announced payload length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
}

/// Incremental decoder of control frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_payload: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl FrameDecoder {
    /// A decoder that rejects payloads longer than `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(4096),
            max_payload,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        // Reuses the buffer in place once every frame cut from it has been dropped; while some
        // are held, moves the partial frame to a new chunk rather than leaving the size of the
        // next buffer to `BytesMut`'s growth policy.
        if !self.buf.try_reclaim(data.len()) {
            let mut fresh = BytesMut::with_capacity(CHUNK.max(self.buf.len() + data.len()));
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = u16::from_be_bytes([self.buf[0], self.buf[1]]);
        let len = u32::from_be_bytes([self.buf[2], self.buf[3], self.buf[4], self.buf[5]]) as usize;
        if len > self.max_payload {
            return Err(FrameError::TooLarge {
                kind,
                len: len as u64,
                max: self.max_payload,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            // Reserve now so a large frame arriving in small reads is not copied repeatedly.
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(RawFrame { kind, payload }))
    }
}

/// Appends one frame to `out`.
pub fn encode_frame(kind: u16, payload: &[u8], out: &mut BytesMut) {
    out.reserve(HEADER_LEN + payload.len());
    out.put_u16(kind);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut wire = BytesMut::new();
        encode_frame(3, b"hello", &mut wire);
        encode_frame(11, b"", &mut wire);
        let mut dec = FrameDecoder::default();
        for byte in wire.iter() {
            dec.push(&[*byte]);
        }
        assert_eq!(
            dec.next_frame().unwrap(),
            Some(RawFrame {
                kind: 3,
                payload: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(
            dec.next_frame().unwrap(),
            Some(RawFrame {
                kind: 11,
                payload: Bytes::new()
            })
        );
        assert_eq!(dec.next_frame().unwrap(), None);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn truncated_frame_waits_for_more() {
        let mut dec = FrameDecoder::default();
        dec.push(&[0, 7, 0, 0, 0, 10, 1, 2, 3]);
        assert_eq!(dec.next_frame().unwrap(), None);
        dec.push(&[0; 7]);
        assert_eq!(dec.next_frame().unwrap().unwrap().payload.len(), 10);
    }

    #[test]
    fn oversized_length_is_rejected_without_allocating() {
        let mut dec = FrameDecoder::default();
        dec.push(&[0, 1, 0x80, 0, 0, 0]);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                kind: 1,
                len: 1 << 31,
                max: DEFAULT_MAX_PAYLOAD
            })
        );
        assert!(dec.buf.capacity() < 1 << 20);
    }

    /// Frames stay intact while held, across chunk boundaries and frames split between pushes.
    #[test]
    fn held_frames_survive_new_chunks() {
        let mut wire = BytesMut::new();
        for i in 0..1000u32 {
            encode_frame(1, &[i as u8; 70], &mut wire);
        }
        let mut dec = FrameDecoder::default();
        let mut held = Vec::new();
        for piece in wire.chunks(333) {
            dec.push(piece);
            while let Some(frame) = dec.next_frame().unwrap() {
                held.push(frame.payload);
            }
        }
        assert_eq!(held.len(), 1000);
        for (i, p) in held.iter().enumerate() {
            assert_eq!(p[..], [i as u8; 70]);
        }
    }
}
