//! The process's heap allocator. On Linux it is jemalloc, configured to give memory back after
//! a burst: a flood of sockets or events allocates tens of megabytes in glibc's per-thread
//! arenas, and the few allocations that outlive it (sessions, grown tables) stay scattered
//! across those arenas' pages, so glibc keeps ~12 MB resident for good even after
//! `malloc_trim` (measured in `tests/abuse.rs`; docs/security.md, "Memory after a flood").
//! jemalloc groups allocations by size class, and its background thread returns pages left
//! unused for [`DIRTY_DECAY_MS`] even when the process has gone quiet.
//! Elsewhere it is the system allocator. The `count-allocs` feature counts on top of either
//! ([`crate::alloc_count`]).

/// How long freed pages stay mapped before the background thread returns them (ms): long
/// enough that a steady load reuses them without a system call per socket, short enough that a
/// quiet process shrinks within seconds. Purging at once (0) slowed a 2,000-socket burst until
/// connections timed out.
pub const DIRTY_DECAY_MS: u32 = 1000;

/// The allocator underneath (before any counting).
#[cfg(target_os = "linux")]
pub type Base = tikv_jemallocator::Jemalloc;
/// The allocator underneath (before any counting).
#[cfg(not(target_os = "linux"))]
pub type Base = std::alloc::System;

/// An instance of [`Base`].
#[cfg(target_os = "linux")]
pub const BASE: Base = tikv_jemallocator::Jemalloc;
/// An instance of [`Base`].
#[cfg(not(target_os = "linux"))]
pub const BASE: Base = std::alloc::System;

/// jemalloc's options, read before `main` (its `malloc_conf`; `_RJEM_MALLOC_CONF` in the
/// environment overrides them). Muzzy pages are skipped: returned pages go straight back.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[cfg(not(feature = "count-allocs"))]
#[global_allocator]
static ALLOCATOR: Base = BASE;

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_options_name_the_decay() {
        let conf = std::str::from_utf8(super::MALLOC_CONF).unwrap();
        assert!(conf.ends_with('\0'));
        assert!(conf.contains(&format!("dirty_decay_ms:{}", super::DIRTY_DECAY_MS)));
    }
}
