//! Limits on what one client may do. [`TokenBucket`]: requests (or audio) per second with a
//! burst allowance, per connection. [`FailureLimiter`], failed-login throttling: after [`FailureLimiter::max_failures`] failures for one key (an
//! account, an address) within the window, further attempts for that key are refused until
//! the window has passed since the last failure. Bounded memory: at most `capacity` keys are
//! tracked; when full, the stalest entry goes (an attacker spraying keys cannot grow it).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures of one key.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// Throttles repeated failures per key. See the module docs.
#[derive(Debug)]
pub struct FailureLimiter<K> {
    records: Mutex<HashMap<K, Record>>,
    max_failures: u32,
    window: Duration,
    capacity: usize,
}

impl<K: Eq + Hash + Clone> FailureLimiter<K> {
    /// `max_failures` within `window` lock a key out for `window` after its last failure.
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> Self {
        Self {
            records: Mutex::new(HashMap::new()),
            max_failures: max_failures.max(1),
            window,
            capacity: capacity.max(1),
        }
    }

    /// How many failures lock a key out.
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// `Some(wait)` when `key` is locked out now.
    pub fn check(&self, key: &K, now: Instant) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let r = records.get(key)?;
        let since = now.saturating_duration_since(r.last);
        (r.failures >= self.max_failures && since < self.window).then(|| self.window - since)
    }

    /// A failed attempt for `key`.
    pub fn failed(&self, key: K, now: Instant) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if !records.contains_key(&key) && records.len() >= self.capacity {
            let window = self.window;
            records.retain(|_, r| now.saturating_duration_since(r.last) < window);
            if records.len() >= self.capacity
                && let Some(stalest) = records
                    .iter()
                    .min_by_key(|(_, r)| r.last)
                    .map(|(k, _)| k.clone())
            {
                records.remove(&stalest);
            }
        }
        let r = records.entry(key).or_insert(Record {
            failures: 0,
            last: now,
        });
        if now.saturating_duration_since(r.last) >= self.window {
            r.failures = 0;
        }
        r.failures += 1;
        r.last = now;
    }

    /// A successful attempt: `key` starts over.
    pub fn succeeded(&self, key: &K) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A rate with a burst allowance: `take` succeeds while tokens remain, and tokens come back
/// at `rate` per second up to `burst`. One per connection, so no lock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// Full (`burst` tokens), refilling at `rate` per second.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
        }
    }

    /// Takes one token, if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_amount(now, 1.0)
    }

    /// Takes `amount` tokens (e.g. milliseconds of audio), if there are that many.
    pub fn take_amount(&mut self, now: Instant, amount: f64) -> bool {
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.burst);
        self.at = self.at.max(now);
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_max_failures_and_lets_go_after_the_window() {
        let l = FailureLimiter::new(3, Duration::from_secs(30), 100);
        let t = Instant::now();
        for i in 0..3 {
            assert!(l.check(&"alice", t).is_none(), "attempt {i}");
            l.failed("alice", t);
        }
        let wait = l.check(&"alice", t + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(20));
        assert!(l.check(&"bob", t).is_none(), "per key");
        assert!(l.check(&"alice", t + Duration::from_secs(31)).is_none());
        l.failed("bob", t);
        l.succeeded(&"bob");
        assert!(l.len() == 1);
    }

    #[test]
    fn memory_is_bounded_when_keys_are_sprayed() {
        let l = FailureLimiter::new(3, Duration::from_secs(30), 50);
        let t = Instant::now();
        for i in 0..10_000u32 {
            l.failed(i, t + Duration::from_millis(u64::from(i)));
        }
        assert!(l.len() <= 50);
    }

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1500, 1000);
        b.at = t0;
        assert!(b.take_amount(t0, 1000.0), "the burst");
        assert!(!b.take_amount(t0, 20.0), "nothing left");
        assert!(
            b.take_amount(t0 + Duration::from_millis(20), 20.0),
            "1.5 ms per ms refills a frame"
        );
        let mut r = TokenBucket::new(20, 40);
        r.at = t0;
        assert_eq!((0..100).filter(|_| r.take(t0)).count(), 40);
    }
}
