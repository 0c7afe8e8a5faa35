//! Heap allocations counted process-wide, for the load tools (cargo feature `count-allocs`,
//! off by default): every allocation and reallocation through the global allocator, exported
//! as `pttbridge_process_allocations_total`, and the bytes live on the heap,
//! `pttbridge_process_heap_live_bytes` (what the process holds, apart from what the allocator
//! keeps for reuse). With the feature on, each allocation costs two relaxed atomic adds.

/// Allocations so far, when the feature is on.
pub fn allocations() -> Option<u64> {
    #[cfg(feature = "count-allocs")]
    {
        Some(counting::COUNT.load(std::sync::atomic::Ordering::Relaxed))
    }
    #[cfg(not(feature = "count-allocs"))]
    {
        None
    }
}

/// Bytes allocated and not yet freed, when the feature is on.
pub fn live_bytes() -> Option<i64> {
    #[cfg(feature = "count-allocs")]
    {
        Some(counting::LIVE.load(std::sync::atomic::Ordering::Relaxed))
    }
    #[cfg(not(feature = "count-allocs"))]
    {
        None
    }
}

#[cfg(feature = "count-allocs")]
mod counting {
    use std::alloc::{GlobalAlloc, Layout};

    use crate::allocator::BASE;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    pub static COUNT: AtomicU64 = AtomicU64::new(0);
    pub static LIVE: AtomicI64 = AtomicI64::new(0);

    struct Counting;

    // SAFETY: every call is forwarded unchanged to the process's allocator (`crate::allocator`); only a counter is
    // added beside it.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            COUNT.fetch_add(1, Ordering::Relaxed);
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
            // SAFETY: same contract as the caller's.
            unsafe { BASE.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            COUNT.fetch_add(1, Ordering::Relaxed);
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
            // SAFETY: same contract as the caller's.
            unsafe { BASE.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            COUNT.fetch_add(1, Ordering::Relaxed);
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            // SAFETY: same contract as the caller's.
            unsafe { BASE.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
            // SAFETY: same contract as the caller's.
            unsafe { BASE.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;
}
