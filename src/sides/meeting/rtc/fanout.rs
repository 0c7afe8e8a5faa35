//! One packet's fan-out spread over threads: a room with many listeners splits those it sends a
//! packet to into shards (contiguous runs), runs the first on its own thread and each other on
//! a scoped thread of its own, and goes on once all are done.
//!
//! Invariant: [`run`] returns only once every shard has run. So a shard may borrow the room's
//! state (each listener is in exactly one shard: disjoint `&mut`, checked by the compiler), a
//! listener's packets are written one after the other in the room's order (its RTP sequence
//! stays contiguous), and the room's latency histogram still ends at the last listener's send.
//! Proven by the tests below and by `peer_set::tests::sharded_listeners_decrypt_every_packet_in_order`.
//!
//! Scoped threads rather than a pool: no lifetime has to be hidden from the compiler, and a
//! thread costs ≈ 20 µs to start against the ≈ 1 ms a shard of 512 listeners takes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use metrics::Counter;
use tracing::warn;

/// Most shards one fan-out is split into, however many cores there are.
pub const MAX_SHARDS: usize = 16;

/// Counters of spread fan-outs, registered once.
struct Counters {
    by_room: Counter,
    by_helper: Counter,
    panicked: Counter,
    not_started: Counter,
}

fn counters() -> &'static Counters {
    static C: OnceLock<Counters> = OnceLock::new();
    C.get_or_init(|| Counters {
        by_room: metrics::counter!("pttbridge_meeting_fanout_shards_total", "by" => "room"),
        by_helper: metrics::counter!("pttbridge_meeting_fanout_shards_total", "by" => "helper"),
        panicked: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "fanout_shard_panic"),
        not_started: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "fanout_thread"),
    })
}

/// The shards a fan-out is split into on this machine: one per core, at most [`MAX_SHARDS`].
pub fn max_shards() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_SHARDS)
    })
}

/// Runs `run(i, shard)` for every shard, the first on this thread and each other on a scoped
/// thread; returns when all have run (see the module docs). A shard that panics is counted and
/// the others still run; one whose thread cannot start is counted and skipped (its listeners
/// miss this packet).
pub fn run<S: Send>(shards: impl IntoIterator<Item = S>, run: &(dyn Fn(usize, S) + Sync)) {
    let c = counters();
    let guarded = |i: usize, s: S| {
        if catch_unwind(AssertUnwindSafe(|| run(i, s))).is_err() {
            c.panicked.increment(1);
        }
    };
    std::thread::scope(|scope| {
        let mut shards = shards.into_iter().enumerate();
        let first = shards.next();
        for (i, s) in shards {
            let started = std::thread::Builder::new()
                .spawn_scoped(scope, move || guarded(i, s))
                .map(|_| c.by_helper.increment(1));
            if let Err(e) = started {
                c.not_started.increment(1);
                static WARN: logsafe::RateLimit = logsafe::RateLimit::warn("fan-out thread");
                if WARN.allow() {
                    warn!(error = %e, "fan-out shard thread not started; its listeners miss a packet");
                }
            }
        }
        if let Some((i, s)) = first {
            c.by_room.increment(1);
            guarded(i, s);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    /// Every shard runs exactly once with its own data, and `run` returns only after the last
    /// one (its effect is seen by the caller).
    #[test]
    fn each_shard_runs_once_before_run_returns() {
        for shards in [0usize, 1, 2, 7, 16] {
            let mut data: Vec<u32> = vec![0; shards * 3];
            for _ in 0..20 {
                run(data.chunks_mut(3), &|i, chunk: &mut [u32]| {
                    for x in chunk {
                        *x += 1 + i as u32;
                    }
                });
            }
            for (k, x) in data.iter().enumerate() {
                assert_eq!(*x, 20 * (1 + (k / 3) as u32), "{shards} shards: item {k}");
            }
        }
    }

    /// The shards run at once: shard 0 (on the room's thread) waits until shard 1 has run,
    /// which only another thread can do meanwhile.
    #[test]
    fn shards_run_in_parallel_with_the_room() {
        let room = std::thread::current().id();
        let other = (Mutex::new(None), Condvar::new());
        run(0..2, &|i, _| {
            let (ran_by, cv) = &other;
            if i == 1 {
                *ran_by.lock().unwrap() = Some(std::thread::current().id());
                cv.notify_all();
                return;
            }
            let mut g = ran_by.lock().unwrap();
            while g.is_none() {
                let (next, timeout) = cv.wait_timeout(g, Duration::from_secs(60)).unwrap();
                assert!(!timeout.timed_out(), "shard 1 did not run in 60 s");
                g = next;
            }
        });
        let ran_by = other.0.lock().unwrap().expect("shard 1 ran");
        assert_ne!(ran_by, room, "shard 1 ran on another thread");
    }

    /// A shard that panics is caught (on any thread) and the rest still run.
    #[test]
    fn a_panicking_shard_does_not_stop_the_others() {
        let hits: Vec<AtomicU32> = (0..8).map(|_| AtomicU32::new(0)).collect();
        run(0..8, &|i, _| {
            hits[i].fetch_add(1, Ordering::Relaxed);
            if i % 3 == 0 {
                panic!("shard {i}");
            }
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }
}
