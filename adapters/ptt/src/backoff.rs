//! Exponential reconnect backoff with jitter, so a fleet of clients does not
//! reconnect in lockstep when a server comes back.

use std::time::Duration;

use rand::Rng;

/// Reconnect delays: `initial · multiplier^attempt`, capped at `max`, then "equal jitter"
/// (a random point in the upper half of that value).
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Largest delay (before jitter).
    pub max: Duration,
    /// Growth factor per failed attempt.
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(4),
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0 = first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(32) as i32);
        let capped = base.min(self.max.as_secs_f64()).max(0.0);
        let jittered = capped / 2.0 + rand::rng().random_range(0.0..=capped / 2.0);
        Duration::from_secs_f64(jittered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        let b = Backoff::default();
        for attempt in 0..40 {
            let d = b.delay(attempt);
            let ceiling = (b.initial.as_secs_f64() * 2f64.powi(attempt.min(32) as i32))
                .min(b.max.as_secs_f64());
            assert!(
                d.as_secs_f64() <= ceiling + 1e-9,
                "attempt {attempt}: {d:?}"
            );
            assert!(
                d.as_secs_f64() >= ceiling / 2.0 - 1e-9,
                "attempt {attempt}: {d:?}"
            );
        }
        let spread: std::collections::HashSet<u128> =
            (0..20).map(|_| b.delay(5).as_micros()).collect();
        assert!(spread.len() > 1, "jitter must vary the delay");
    }
}
