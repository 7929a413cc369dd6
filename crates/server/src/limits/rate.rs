//! A token bucket: `rate` tokens per second, holding at most `burst`.
//!
//! A request larger than the whole burst (a 500-point batch against a
//! 200-point burst) is let through when the bucket is full and leaves it in
//! debt, so big batches are slowed down rather than refused forever.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate <= 0` means unlimited.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    pub fn unlimited(&self) -> bool {
        self.rate <= 0.0
    }

    /// Change the rate (a device's policy changed), keeping the level.
    pub fn set_rate(&mut self, rate: f64, burst: f64) {
        self.rate = rate;
        self.burst = burst.max(1.0);
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Whether `n` tokens are available now (without taking them).
    pub fn can_take(&mut self, n: f64, now: Instant) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill(now);
        self.tokens >= n.min(self.burst)
    }

    /// How long until `n` tokens are available, counted from the last
    /// [`TokenBucket::can_take`] (which refilled the bucket).
    pub fn wait(&self, n: f64) -> Duration {
        let short = n.min(self.burst) - self.tokens;
        if self.unlimited() || short <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(short / self.rate)
    }

    /// Take `n` tokens; call after [`TokenBucket::can_take`] said yes.
    pub fn take(&mut self, n: f64) {
        if !self.unlimited() {
            self.tokens -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_rate_up_to_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0, t0);
        let mut passed = 0;
        for _ in 0..100 {
            if b.can_take(1.0, t0) {
                b.take(1.0);
                passed += 1;
            }
        }
        assert_eq!(passed, 20, "the burst");
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.can_take(5.0, t1));
        assert!(!b.can_take(6.0, t1));
        assert_eq!(b.wait(5.0), Duration::ZERO);
        let left = b.wait(6.0).as_secs_f64();
        assert!((left - 0.1).abs() < 1e-9, "{left}");
        // A long pause refills only up to the burst.
        assert!(b.can_take(20.0, t0 + Duration::from_secs(100)));
    }

    #[test]
    fn oversized_request_passes_when_full_and_leaves_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 50.0, t0);
        assert!(b.can_take(500.0, t0));
        b.take(500.0);
        assert!(
            !b.can_take(1.0, t0 + Duration::from_secs(4)),
            "450 of debt takes 4.5 s to repay"
        );
        let left = b.wait(1.0).as_secs_f64();
        assert!((left - 0.51).abs() < 1e-9, "{left}");
        assert!(b.can_take(1.0, t0 + Duration::from_millis(4600)));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 0.0, t0);
        for _ in 0..1000 {
            assert!(b.can_take(1e9, t0));
            b.take(1e9);
        }
    }
}
