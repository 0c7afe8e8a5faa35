//! Packets as `Bytes` without an allocation each: payloads are copied into a shared chunk and
//! handed out as slices of it. A chunk is freed when the last packet cut from it is dropped;
//! a new one is taken only when the current one is full, so a 4 KiB chunk serves ~40 Opus
//! packets of 20 ms speech.

use bytes::{Bytes, BytesMut};

/// Default chunk size: small enough to keep per-stream memory low, large enough that an
/// allocation is rare next to the packets it serves.
pub const DEFAULT_CHUNK: usize = 4096;

/// Cuts owned [`Bytes`] packets out of large chunks. See the module docs.
#[derive(Debug)]
pub struct PacketArena {
    buf: BytesMut,
    chunk: usize,
}

impl Default for PacketArena {
    fn default() -> Self {
        Self::new(DEFAULT_CHUNK)
    }
}

impl PacketArena {
    /// An arena that takes chunks of `chunk` bytes (or of a packet's size when it is larger).
    pub fn new(chunk: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            chunk: chunk.max(1),
        }
    }

    /// `data` as an owned packet. Allocates only when the current chunk has no room left.
    pub fn copy(&mut self, data: &[u8]) -> Bytes {
        if self.buf.capacity() - self.buf.len() < data.len() {
            // The old chunk lives on in the packets cut from it; this one starts fresh.
            self.buf = BytesMut::with_capacity(self.chunk.max(data.len()));
        }
        self.buf.extend_from_slice(data);
        self.buf.split().freeze()
    }

    /// Bytes held by the current chunk (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_share_a_chunk_until_it_is_full() {
        let mut a = PacketArena::new(1000);
        let p1 = a.copy(&[1; 400]);
        let p2 = a.copy(&[2; 400]);
        // Both slices of one allocation, back to back.
        assert_eq!(p1.as_ptr().wrapping_add(400), p2.as_ptr());
        let p3 = a.copy(&[3; 400]);
        assert_ne!(p2.as_ptr().wrapping_add(400), p3.as_ptr(), "a new chunk");
        assert_eq!(
            (&p1[..], &p2[..], &p3[..]),
            (&[1; 400][..], &[2; 400][..], &[3; 400][..])
        );
    }

    #[test]
    fn a_packet_larger_than_a_chunk_gets_its_own() {
        let mut a = PacketArena::new(16);
        let big = a.copy(&[7; 100]);
        assert_eq!(big.len(), 100);
        assert_eq!(a.copy(b"ab"), Bytes::from_static(b"ab"));
    }
}
