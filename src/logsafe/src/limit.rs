//! Warnings a peer can set off again and again, logged at most so many times per window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use tracing::Level;

/// Lines [`RateLimit::warn`] and [`RateLimit::debug`] let through per [`WINDOW`].
pub const PER_WINDOW: u32 = 10;
/// Their window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The target of the "… N more suppressed" lines.
pub const TARGET: &str = "pttbridge::suppressed";
/// How often windows that ended with lines held back are looked for.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One kind of log line a peer can trigger at will (a bad request, a bad frame, a garbage
/// datagram, a failed login): at most `max` of them are logged per fixed window (from the
/// first one); the rest are only counted, and one line at the same level — `<what>: … N more
/// suppressed` — says how many when the window has ended (within a second), or just before the
/// next line is logged. Metrics are not its business: count every occurrence as before.
///
/// One `static` per call site, shared by every connection, so a thousand connections get no
/// more lines than one, and memory stays fixed whatever peers send:
///
/// ```
/// use logsafe::{RateLimit, esc};
/// static BAD_REQUEST: RateLimit = RateLimit::warn("bad request");
/// # let e = "unknown method";
/// if BAD_REQUEST.allow() {
///     tracing::warn!(error = %esc(e), "bad request");
/// }
/// ```
pub struct RateLimit {
    what: &'static str,
    level: Level,
    max: u32,
    window: Duration,
    state: Mutex<Window>,
    /// In [`PENDING`] (once and for all).
    pending: AtomicBool,
}

struct Window {
    /// When it began; `None` before the first line (or after a flush).
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Window {
    const NONE: Window = Window {
        start: None,
        logged: 0,
        suppressed: 0,
    };
}

/// What [`RateLimit::check`] decided about one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// Log it.
    pub log: bool,
    /// The window before ended with this many not logged: say so first.
    pub suppressed: Option<u64>,
}

/// Limiters that have held lines back, for the flush thread.
static PENDING: Mutex<Vec<&'static RateLimit>> = Mutex::new(Vec::new());
static FLUSHER: Once = Once::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RateLimit {
    /// At most `max` lines per `window` of the kind `what` (which the summary names), logged
    /// at `level` (the summary's level too).
    pub const fn new(what: &'static str, level: Level, max: u32, window: Duration) -> Self {
        RateLimit {
            what,
            level,
            max,
            window,
            state: Mutex::new(Window::NONE),
            pending: AtomicBool::new(false),
        }
    }

    /// [`PER_WINDOW`] warnings per [`WINDOW`].
    pub const fn warn(what: &'static str) -> Self {
        Self::new(what, Level::WARN, PER_WINDOW, WINDOW)
    }

    /// [`PER_WINDOW`] info lines per [`WINDOW`].
    pub const fn info(what: &'static str) -> Self {
        Self::new(what, Level::INFO, PER_WINDOW, WINDOW)
    }

    /// [`PER_WINDOW`] debug lines per [`WINDOW`].
    pub const fn debug(what: &'static str) -> Self {
        Self::new(what, Level::DEBUG, PER_WINDOW, WINDOW)
    }

    /// Whether to log this occurrence now; the caller logs it. The summary of a window that
    /// ended with lines held back is logged first.
    pub fn allow(&'static self) -> bool {
        let c = self.check(Instant::now());
        if let Some(n) = c.suppressed {
            self.summary(n);
        }
        if !c.log {
            self.flush_later();
        }
        c.log
    }

    /// The decision for an occurrence at `now` (counted), without logging anything.
    pub fn check(&self, now: Instant) -> Check {
        let mut w = lock(&self.state);
        let mut suppressed = None;
        if w.start.is_none_or(|s| now.duration_since(s) >= self.window) {
            suppressed = (w.suppressed > 0).then_some(w.suppressed);
            *w = Window {
                start: Some(now),
                ..Window::NONE
            };
        }
        let log = w.logged < self.max;
        if log {
            w.logged += 1;
        } else {
            w.suppressed += 1;
        }
        Check { log, suppressed }
    }

    /// How many were held back in a window that has ended by `now` (taken: the next
    /// occurrence starts a new window), or `None`.
    pub fn flush(&self, now: Instant) -> Option<u64> {
        let mut w = lock(&self.state);
        let ended = w
            .start
            .is_some_and(|s| now.duration_since(s) >= self.window);
        if !ended || w.suppressed == 0 {
            return None;
        }
        let n = w.suppressed;
        *w = Window::NONE;
        Some(n)
    }

    /// The "… N more suppressed" line.
    fn summary(&self, n: u64) {
        let (what, max, window) = (self.what, self.max, self.window);
        macro_rules! say {
            ($level:expr) => {
                tracing::event!(
                    target: TARGET,
                    $level,
                    kind = what,
                    suppressed = n,
                    "{what}: … {n} more suppressed (at most {max} logged per {window:?})"
                )
            };
        }
        match self.level {
            Level::ERROR => say!(Level::ERROR),
            Level::WARN => say!(Level::WARN),
            Level::INFO => say!(Level::INFO),
            Level::DEBUG => say!(Level::DEBUG),
            _ => say!(Level::TRACE),
        }
    }

    /// Makes sure the summary comes when the window ends, even if no line follows: a thread
    /// (one per process, started the first time any limiter holds a line back) flushes every
    /// limiter that ever did, once a second.
    fn flush_later(&'static self) {
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&PENDING).push(self);
        FLUSHER.call_once(|| {
            // Without the thread the summary still comes, with the next line logged.
            let _ = std::thread::Builder::new()
                .name("log-limit".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(FLUSH_EVERY);
                        let now = Instant::now();
                        let limiters = lock(&PENDING).clone();
                        for l in limiters {
                            if let Some(n) = l.flush(now) {
                                l.summary(n);
                            }
                        }
                    }
                });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_burst_logs_max_then_counts_the_rest() {
        let l = RateLimit::new("bad frame", Level::WARN, 10, Duration::from_secs(10));
        let t0 = Instant::now();
        let logged = (0..1000).filter(|i| l.check(ms(t0, *i)).log).count();
        assert_eq!(logged, 10);
        assert_eq!(l.flush(ms(t0, 9_999)), None, "the window has not ended");
        assert_eq!(l.flush(ms(t0, 10_000)), Some(990));
        assert_eq!(l.flush(ms(t0, 20_000)), None, "said once");
        // A new window from the next occurrence on.
        let c = l.check(ms(t0, 30_000));
        assert_eq!(
            c,
            Check {
                log: true,
                suppressed: None
            }
        );
    }

    #[test]
    fn the_next_line_after_the_window_brings_the_summary() {
        let l = RateLimit::new("bad frame", Level::WARN, 2, Duration::from_secs(1));
        let t0 = Instant::now();
        let checks: Vec<Check> = [0, 1, 2, 3, 999, 1000, 1001, 1002, 2500]
            .iter()
            .map(|t| l.check(ms(t0, *t)))
            .collect();
        let logs: Vec<bool> = checks.iter().map(|c| c.log).collect();
        assert_eq!(
            logs,
            [true, true, false, false, false, true, true, false, true]
        );
        assert_eq!(
            checks[5].suppressed,
            Some(3),
            "t=1000: the first window held 3 back"
        );
        assert_eq!(
            checks[8].suppressed,
            Some(1),
            "t=2500: the second held 1 back"
        );
        assert!(
            checks
                .iter()
                .enumerate()
                .all(|(i, c)| c.suppressed.is_none() || i == 5 || i == 8)
        );
    }

    #[test]
    fn quiet_windows_say_nothing() {
        let l = RateLimit::warn("x");
        let t0 = Instant::now();
        for i in 0..PER_WINDOW {
            assert!(l.check(ms(t0, i as u64)).log);
        }
        assert_eq!(l.flush(ms(t0, 60_000)), None);
        assert_eq!(l.check(ms(t0, 60_000)).suppressed, None);
    }

    #[test]
    fn the_flush_thread_says_how_many_once_the_window_ends() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;
        use tracing::field::{Field, Visit};

        /// Counts the suppressed lines of every summary it sees.
        struct Summaries(Arc<AtomicU64>);
        impl tracing::Subscriber for Summaries {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, e: &tracing::Event<'_>) {
                struct N<'a>(&'a AtomicU64);
                impl Visit for N<'_> {
                    fn record_u64(&mut self, f: &Field, v: u64) {
                        if f.name() == "suppressed" {
                            self.0.fetch_add(v, Ordering::SeqCst);
                        }
                    }
                    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
                }
                if e.metadata().target() == TARGET {
                    e.record(&mut N(&self.0));
                }
            }
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        let seen = Arc::new(AtomicU64::new(0));
        // The flush thread logs through the global subscriber.
        tracing::subscriber::set_global_default(Summaries(seen.clone())).unwrap();
        static L: RateLimit = RateLimit::new("bad", Level::WARN, 3, Duration::from_millis(200));
        let logged = (0..50).filter(|_| L.allow()).count();
        assert_eq!(logged, 3);
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            seen.load(Ordering::SeqCst),
            47,
            "one summary of the 47 held back"
        );
    }
}
