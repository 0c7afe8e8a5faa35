//! Gives memory freed after a burst back to the operating system, for what glibc's malloc
//! still serves: the C libraries' allocations, and everything where the process allocator
//! (`crate::allocator`, jemalloc on Linux) is not jemalloc. glibc keeps what a burst freed in
//! its arenas, so without this the process stays as big as its worst minute for good — and an
//! operator cannot tell a leak from a past flood. Every [`CHECK_EVERY`], when more than [`FREE_THRESHOLD`] lies free in
//! the arenas, `malloc_trim` returns the free pages; large blocks are mapped on their own
//! ([`MMAP_THRESHOLD`]).
//! The media hot paths do not allocate, so the arena locks a trim takes do not stall them; how
//! long each trim took is `pttbridge_process_heap_trim_seconds`. Other C libraries: nothing.

use std::time::Duration;

use tokio::sync::watch;

/// How often the free heap is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Free heap below this is left alone (trimming it gains nothing worth the walk).
pub const FREE_THRESHOLD: usize = 4 << 20;

/// Blocks of this size or more are mapped on their own and unmapped when freed. glibc raises
/// this threshold (up to 32 MiB) after the first large free, after which multi-megabyte
/// responses (`/api/state` of a big server, a flood's buffers) come from the arenas and leave
/// them fragmented; a fixed threshold keeps them out.
pub const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Starts the trimmer; it stops with `shutdown`.
pub fn spawn(mut shutdown: watch::Receiver<bool>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::fix_mmap_threshold();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let histogram = metrics::histogram!("pttbridge_process_heap_trim_seconds");
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            // Free chunks stay counted after a trim (only their pages go), so this trims every
            // period while a burst's leftovers lie about: a walk of the free lists, well under a
            // millisecond (see the histogram), and nothing to do for a quiet heap.
            let free = glibc::free_bytes();
            if free < FREE_THRESHOLD {
                continue;
            }
            let started = std::time::Instant::now();
            glibc::trim();
            histogram.record(started.elapsed().as_secs_f64());
            tracing::debug!(free, took = ?started.elapsed(), "heap trimmed");
        }
    });
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    drop(shutdown);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// Bytes in free chunks across the arenas.
    pub fn free_bytes() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics (glibc ≥ 2.33).
        unsafe { libc::mallinfo2() }.fordblks
    }

    /// Fixes the mmap threshold (see [`super::MMAP_THRESHOLD`]).
    pub fn fix_mmap_threshold() {
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, super::MMAP_THRESHOLD);
        }
    }

    /// Returns free pages at the top of the heap and inside every arena to the OS.
    pub fn trim() {
        // SAFETY: malloc_trim takes the arena locks itself and frees only unused pages.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
