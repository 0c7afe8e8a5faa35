//! The threads the meeting rooms run on: each a single-threaded tokio runtime of its own. A
//! room is placed on the thread with the fewest rooms when it opens and stays there; its
//! UDP socket and timers belong to that thread's runtime.
//!
//! Why not the bridge's shared runtime: a room is one task (an actor) and never uses a second
//! worker, but a multi-threaded runtime wakes an idle worker to look for work whenever the
//! busy one has some. On a VM each such wake-up is an inter-processor interrupt and a VM exit;
//! at 1,000 listeners on two cores that churn was about a quarter of the bridge's CPU
//! (BENCHMARKS.md, "Rooms on threads of their own"). A big room's fan-out is still spread
//! over the cores, by [`super::rtc::fanout`].
//!
//! The threads end when the [`RoomThreads`] is dropped, taking any room still on them along;
//! the switchboard that holds them lives as long as any of its rooms, so in the bridge they
//! end with the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The rooms' threads (see the module docs).
pub struct RoomThreads {
    threads: Vec<RoomThread>,
}

struct RoomThread {
    handle: Handle,
    /// Rooms on this thread now.
    rooms: Arc<AtomicUsize>,
    /// Dropped with the [`RoomThreads`]: the thread's runtime then ends.
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for RoomThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomThreads")
            .field("rooms", &self.rooms())
            .finish()
    }
}

/// Where a room runs: its thread's runtime, and its place in that thread's count of rooms
/// (given back when this is dropped, i.e. when the room's task ends).
pub struct Placement {
    /// The runtime of the room's thread.
    pub handle: Handle,
    /// Counts the room on its thread while alive.
    pub seat: Seat,
}

/// One room counted on its thread; dropping it frees the place.
pub struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RoomThreads {
    /// Starts `n` threads (0: one per core the process may use).
    pub fn start(n: usize) -> std::io::Result<Self> {
        let n = match n {
            0 => std::thread::available_parallelism().map_or(1, |c| c.get()),
            n => n,
        };
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("room-{i}"))
                .spawn(move || {
                    // Runs the rooms spawned onto `handle` until the sender is dropped.
                    let _ = rt.block_on(stopped);
                })?;
            threads.push(RoomThread {
                handle,
                rooms: Arc::new(AtomicUsize::new(0)),
                _stop: stop,
            });
        }
        Ok(Self { threads })
    }

    /// The thread with the fewest rooms (the first of equals), with the new room counted on it.
    pub fn place(&self) -> Placement {
        let t = self
            .threads
            .iter()
            .min_by_key(|t| t.rooms.load(Ordering::Relaxed))
            .expect("at least one room thread");
        t.rooms.fetch_add(1, Ordering::Relaxed);
        Placement {
            handle: t.handle.clone(),
            seat: Seat(t.rooms.clone()),
        }
    }

    /// Rooms on each thread now.
    pub fn rooms(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|t| t.rooms.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_go_to_the_emptiest_thread_and_leave_with_their_seat() {
        let threads = RoomThreads::start(2).unwrap();
        let a = threads.place();
        let b = threads.place();
        assert_eq!(threads.rooms(), vec![1, 1]);
        drop(a);
        assert_eq!(threads.rooms(), vec![0, 1]);
        let c = threads.place();
        assert_eq!(
            threads.rooms(),
            vec![1, 1],
            "the freed thread is taken first"
        );
        drop((b, c));
        assert_eq!(threads.rooms(), vec![0, 0]);
    }

    #[test]
    fn a_room_runs_on_its_own_thread_with_its_own_timers_and_sockets() {
        let threads = RoomThreads::start(1).unwrap();
        let place = threads.place();
        let (tx, rx) = std::sync::mpsc::channel();
        let _seat = place.seat;
        place.handle.spawn(async move {
            // A socket and a timer of the room thread's runtime, used there.
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            s.send_to(b"x", s.local_addr().unwrap()).await.unwrap();
            let mut buf = [0u8; 4];
            let n = s.recv(&mut buf).await.unwrap();
            tx.send((std::thread::current().name().map(str::to_owned), n))
                .unwrap();
        });
        let (name, n) = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the room thread ran the task");
        assert_eq!(name.as_deref(), Some("room-0"));
        assert_eq!(n, 1);
    }

    #[test]
    fn dropping_the_threads_ends_their_rooms() {
        let threads = RoomThreads::start(1).unwrap();
        let place = threads.place();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        place.handle.spawn(async move {
            // Never finishes: only the runtime's end drops it (and with it `tx`).
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(threads);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
