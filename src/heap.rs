//! Gives memory freed after a burst back to the operating system. glibc keeps what a burst
//! freed (a flood of events, thousands of sockets that came and went) in its arenas, so without
//! this the process stays as big as its worst minute for good — and an operator cannot tell a
//! leak from a past flood. Every [`CHECK_EVERY`], when more than [`FREE_THRESHOLD`] lies free in
//! the arenas and that has changed since the last trim, `malloc_trim` returns the free pages.
//! The media hot paths do not allocate, so the arena locks a trim takes do not stall them; how
//! long each trim took is `pttbridge_process_heap_trim_seconds`. Other C libraries: nothing.

use std::time::Duration;

use tokio::sync::watch;

/// How often the free heap is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Free heap below this is left alone (trimming it gains nothing worth the walk).
pub const FREE_THRESHOLD: usize = 4 << 20;

/// Starts the trimmer; it stops with `shutdown`.
pub fn spawn(mut shutdown: watch::Receiver<bool>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let histogram = metrics::histogram!("pttbridge_process_heap_trim_seconds");
        let mut after_last = 0usize;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let free = glibc::free_bytes();
            // Free chunks stay counted after a trim (only their pages go): trim again only
            // when something was freed (or reused) since.
            if free < FREE_THRESHOLD || free.abs_diff(after_last) < FREE_THRESHOLD / 4 {
                continue;
            }
            let started = std::time::Instant::now();
            glibc::trim();
            histogram.record(started.elapsed().as_secs_f64());
            after_last = glibc::free_bytes();
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

    /// Returns free pages at the top of the heap and inside every arena to the OS.
    pub fn trim() {
        // SAFETY: malloc_trim takes the arena locks itself and frees only unused pages.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
