//! Packet buffers cut from large chunks, so the voice path allocates per chunk, not per
//! packet, while every packet is still an owned [`Bytes`] its holder can keep.

use bytes::{Bytes, BytesMut};

/// Hands out packets as [`Bytes`] slices of a few large allocations.
///
/// Write a packet into [`Arena::buf`], cut it off with [`Arena::take`]. A chunk is reused in
/// place once every packet cut from it has been dropped; while some are still held (an event
/// queue, a jitter buffer), the next packet that does not fit starts a new chunk, and the old
/// one is freed with its last packet. A held packet therefore keeps at most one chunk alive.
#[derive(Debug)]
pub(crate) struct Arena {
    buf: BytesMut,
    chunk: usize,
}

impl Arena {
    /// An arena allocating `chunk` bytes at a time (more for a larger packet). Nothing is
    /// allocated before the first packet.
    pub(crate) fn new(chunk: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            chunk,
        }
    }

    /// An empty buffer to append the next packet to, with room for `len` bytes.
    pub(crate) fn buf(&mut self, len: usize) -> &mut BytesMut {
        // Left-overs of a packet that was abandoned (an encode or decrypt error) are dropped.
        self.buf.clear();
        if !self.buf.try_reclaim(len) {
            self.buf = BytesMut::with_capacity(self.chunk.max(len));
        }
        &mut self.buf
    }

    /// What was appended since [`Arena::buf`], as an owned packet.
    pub(crate) fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_reused_once_its_packets_are_dropped() {
        let mut arena = Arena::new(64);
        arena.buf(10).extend_from_slice(b"first");
        let first = arena.take();
        let start = first.as_ptr();
        drop(first);
        for _ in 0..100 {
            arena.buf(40).extend_from_slice(&[1; 40]);
            let p = arena.take();
            // Two 40-byte packets do not fit in 64 bytes: each one that does not fit after the
            // last goes back to the start of the same chunk instead of a new one.
            let offset = (p.as_ptr() as usize).wrapping_sub(start as usize);
            assert!(offset + p.len() <= 64, "offset {offset}");
        }
    }

    #[test]
    fn held_packets_keep_their_bytes_when_a_new_chunk_starts() {
        let mut arena = Arena::new(64);
        let held: Vec<Bytes> = (0..10u8)
            .map(|i| {
                arena.buf(20).extend_from_slice(&[i; 20]);
                arena.take()
            })
            .collect();
        for (i, p) in held.iter().enumerate() {
            assert_eq!(p[..], [i as u8; 20]);
        }
        // Three 20-byte packets fit in a 64-byte chunk.
        assert_eq!(held[1].as_ptr(), held[0].as_ptr().wrapping_add(20));
        assert_ne!(held[3].as_ptr(), held[2].as_ptr().wrapping_add(20));
    }

    #[test]
    fn a_packet_larger_than_a_chunk_gets_its_own_buffer() {
        let mut arena = Arena::new(16);
        arena.buf(100).extend_from_slice(&[9; 100]);
        assert_eq!(arena.take()[..], [9; 100]);
    }

    #[test]
    fn abandoned_bytes_are_not_part_of_the_next_packet() {
        let mut arena = Arena::new(64);
        arena.buf(10).extend_from_slice(b"junk");
        arena.buf(10).extend_from_slice(b"good");
        assert_eq!(&arena.take()[..], b"good");
    }
}
