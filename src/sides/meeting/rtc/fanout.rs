//! One packet's fan-out spread over helper threads: a room with many listeners splits the
//! listeners it sends a packet to into shards (contiguous runs), and the room's own thread and
//! a small process-wide pool of helpers claim shards one at a time until none is left.
//!
//! Invariant: [`FanoutPool::run`] returns only once every shard has run and no helper holds
//! the job any more. So a shard may borrow the room's state (each listener is in exactly one
//! shard: disjoint `&mut`), a listener's packets are written one after the other in the
//! room's order (its RTP sequence stays contiguous), and the room's latency histogram still
//! ends at the last listener's send. Proven by the tests below and by
//! `peer_set::tests::sharded_listeners_decrypt_every_packet_in_order`.
//!
//! A helper that is busy with another room or not scheduled claims nothing, and the room runs
//! the shards itself: a slow helper delays the room by at most the one shard it has started,
//! never by the wait for it to wake. Nothing is allocated per packet: a job lives on the room's
//! stack, and the queue of jobs has a fixed capacity (when it is full, the room runs alone).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use metrics::Counter;
use tracing::warn;

/// Jobs waiting for helpers at once, over every room; with more, rooms run their shards alone.
const QUEUE: usize = 64;
/// Most helper threads, however many cores there are.
const MAX_HELPERS: usize = 15;

/// Helper threads that run fan-out shards. See the module docs.
pub struct FanoutPool {
    shared: Arc<Shared>,
    helpers: usize,
}

impl std::fmt::Debug for FanoutPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutPool")
            .field("helpers", &self.helpers)
            .finish_non_exhaustive()
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    by_room: Counter,
    by_helper: Counter,
    panicked: Counter,
}

struct Queue {
    jobs: Vec<JobRef>,
    stop: bool,
}

/// A job in the queue, its lifetime erased.
#[derive(Clone, Copy, PartialEq, Eq)]
struct JobRef(*const Job<'static>);

// SAFETY: a `JobRef` is only dereferenced while its owner waits in `FanoutPool::run` (it is in
// the queue, or counted in `active`), and everything a `Job` holds is `Sync`.
unsafe impl Send for JobRef {}

struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
    shards: usize,
    /// The next shard to claim.
    next: AtomicUsize,
    /// Helpers that may still take the job from the queue (changed under the queue's lock).
    seats: AtomicUsize,
    /// Helpers running it now.
    active: Mutex<usize>,
    idle: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A shard that panicked is counted; the counts behind the lock stay right.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FanoutPool {
    /// A pool of `helpers` threads (none: every shard runs on the caller's thread).
    pub fn new(helpers: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: Vec::with_capacity(QUEUE),
                stop: false,
            }),
            wake: Condvar::new(),
            by_room: metrics::counter!("pttbridge_meeting_fanout_shards_total", "by" => "room"),
            by_helper: metrics::counter!("pttbridge_meeting_fanout_shards_total", "by" => "helper"),
            panicked: metrics::counter!("pttbridge_meeting_errors_total", "kind" => "fanout_shard_panic"),
        });
        let mut started = 0;
        for i in 0..helpers {
            let s = Arc::clone(&shared);
            match std::thread::Builder::new()
                .name(format!("fanout-{i}"))
                .spawn(move || helper(&s))
            {
                Ok(_) => started += 1,
                Err(e) => warn!(error = %e, "fan-out helper thread not started"),
            }
        }
        Self {
            shared,
            helpers: started,
        }
    }

    /// The process's pool: one helper per core beyond the first (at most 15), started on
    /// first use.
    pub fn global() -> &'static FanoutPool {
        static POOL: OnceLock<FanoutPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            FanoutPool::new((cores - 1).min(MAX_HELPERS))
        })
    }

    /// Helper threads running.
    pub fn helpers(&self) -> usize {
        self.helpers
    }

    /// Runs `run(i)` for every shard `i` in `0..shards`, each exactly once, on this thread and
    /// on helpers that are free; returns when all have run (see the module docs). A shard that
    /// panics is counted and the others still run.
    pub fn run(&self, shards: usize, run: &(dyn Fn(usize) + Sync)) {
        let job = Job {
            run,
            shards,
            next: AtomicUsize::new(0),
            seats: AtomicUsize::new(self.helpers.min(shards.saturating_sub(1))),
            active: Mutex::new(0),
            idle: Condvar::new(),
        };
        let seats = job.seats.load(Ordering::Relaxed);
        let me = JobRef((&raw const job).cast::<Job<'static>>());
        let posted = seats > 0 && {
            let mut q = lock(&self.shared.queue);
            let room = q.jobs.len() < QUEUE && !q.stop;
            if room {
                q.jobs.push(me);
            }
            room
        };
        if posted {
            for _ in 0..seats {
                self.shared.wake.notify_one();
            }
        }
        // Withdraws the job and waits for the helpers in it, also if a shard of ours unwinds:
        // until then they may use what the shards borrow.
        struct Withdraw<'p, 'j> {
            shared: &'p Shared,
            job: &'j Job<'j>,
            me: JobRef,
            posted: bool,
        }
        impl Drop for Withdraw<'_, '_> {
            fn drop(&mut self) {
                if !self.posted {
                    return;
                }
                lock(&self.shared.queue).jobs.retain(|j| *j != self.me);
                let mut active = lock(&self.job.active);
                while *active > 0 {
                    active = self
                        .job
                        .idle
                        .wait(active)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
        let withdraw = Withdraw {
            shared: &self.shared,
            job: &job,
            me,
            posted,
        };
        let ran = claim(&job, &self.shared.panicked);
        self.shared.by_room.increment(ran);
        drop(withdraw);
    }
}

impl Drop for FanoutPool {
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_all();
    }
}

/// Runs shards of `job` until none is left; returns how many it ran.
fn claim(job: &Job<'_>, panicked: &Counter) -> u64 {
    let mut ran = 0;
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.shards {
            return ran;
        }
        if catch_unwind(AssertUnwindSafe(|| (job.run)(i))).is_err() {
            panicked.increment(1);
        }
        ran += 1;
    }
}

/// A helper thread: takes the oldest job with a seat left and claims its shards.
fn helper(shared: &Shared) {
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if q.stop {
                    return;
                }
                if let Some(&j) = q.jobs.first() {
                    // SAFETY: in the queue, so its owner is in `run` and has not withdrawn it.
                    let job = unsafe { &*j.0 };
                    *lock(&job.active) += 1;
                    if job.seats.fetch_sub(1, Ordering::Relaxed) == 1 {
                        q.jobs.remove(0);
                    }
                    break job;
                }
                q = shared.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
        };
        // `job` stays valid while we are counted in `active`: its owner waits for that.
        let ran = claim(job, &shared.panicked);
        shared.by_helper.increment(ran);
        let mut active = lock(&job.active);
        *active -= 1;
        if *active == 0 {
            job.idle.notify_all();
        }
        // The owner may return (and the job go) once this guard is dropped: nothing after.
        drop(active);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    /// Every shard runs exactly once, whether or not helpers take part, and `run` returns
    /// only after the last one (its effect is seen by the caller).
    #[test]
    fn each_shard_runs_once_before_run_returns() {
        for helpers in [0, 1, 3] {
            let pool = FanoutPool::new(helpers);
            for shards in [0, 1, 2, 7, 40] {
                let hits: Vec<AtomicU32> = (0..shards).map(|_| AtomicU32::new(0)).collect();
                for _ in 0..50 {
                    pool.run(shards, &|i| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    });
                }
                for (i, h) in hits.iter().enumerate() {
                    assert_eq!(
                        h.load(Ordering::Relaxed),
                        50,
                        "{helpers} helpers, {shards} shards: shard {i}"
                    );
                }
            }
        }
    }

    /// A helper takes shards while the room's thread is busy with one: shard 0 waits until
    /// another thread has run shard 1, which only a helper can do (the room's thread is in
    /// shard 0). A pool whose helpers never take part would fail here.
    #[test]
    fn a_helper_runs_shards_in_parallel_with_the_room() {
        let pool = FanoutPool::new(1);
        let room = std::thread::current().id();
        let other = (Mutex::new(None), Condvar::new());
        pool.run(2, &|i| {
            let (ran_by, cv) = &other;
            if i == 1 {
                *lock(ran_by) = Some(std::thread::current().id());
                cv.notify_all();
                return;
            }
            let mut g = lock(ran_by);
            while g.is_none() {
                let (next, timeout) = cv
                    .wait_timeout(g, Duration::from_secs(60))
                    .unwrap_or_else(PoisonError::into_inner);
                assert!(!timeout.timed_out(), "no helper took shard 1 in 60 s");
                g = next;
            }
        });
        let ran_by = lock(&other.0).expect("shard 1 ran");
        assert_ne!(ran_by, room, "shard 1 ran on a helper");
    }

    /// A shard that panics is caught (on a helper or the room's thread) and the rest still run.
    #[test]
    fn a_panicking_shard_does_not_stop_the_others() {
        let pool = FanoutPool::new(2);
        let hits: Vec<AtomicU32> = (0..8).map(|_| AtomicU32::new(0)).collect();
        pool.run(8, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
            if i % 3 == 0 {
                panic!("shard {i}");
            }
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        // The pool still works afterwards.
        let after = AtomicU32::new(0);
        pool.run(4, &|_| {
            after.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(after.load(Ordering::Relaxed), 4);
    }
}
