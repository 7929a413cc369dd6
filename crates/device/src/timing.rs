//! Timing rules, sans-IO: the reconnect [`Backoff`] (exponential with
//! jitter) and the device [`Clock`] whose stamps never repeat a millisecond
//! (two points of one series in the same millisecond would overwrite each
//! other in InfluxDB).

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter between reconnect attempts: the n-th wait
/// is drawn from `[d/2, d]` with `d = min(max, base * 2^n)`, so a fleet that
/// lost its server does not come back in lockstep, yet waits do grow.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let factor = 2f64.powi(self.attempt.min(30) as i32);
        let d = (self.base.as_secs_f64() * factor).min(self.max.as_secs_f64());
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_secs_f64(d * rng.random_range(0.5..=1.0))
    }

    /// The connection worked (it got an answer): start over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// A device's clock: real time plus a skew, never repeating a millisecond.
#[derive(Debug, Clone)]
pub struct Clock {
    skew_ms: i64,
    last_ms: i64,
}

impl Clock {
    pub fn new(skew_ms: i64) -> Clock {
        Clock {
            skew_ms,
            last_ms: i64::MIN,
        }
    }

    /// Timestamps for `n` samples taken `spacing_ms` apart and ending at
    /// `now_ms`, strictly increasing and after every earlier one.
    pub fn stamps(&mut self, now_ms: i64, n: usize, spacing_ms: f64) -> Vec<i64> {
        (0..n)
            .map(|i| {
                let back = ((n - 1 - i) as f64 * spacing_ms).round() as i64;
                self.stamp_at(now_ms - back)
            })
            .collect()
    }

    /// One stamp for a sample taken at `ms`: after every earlier one.
    pub fn stamp_at(&mut self, ms: i64) -> i64 {
        let t = (ms + self.skew_ms).max(self.last_ms.saturating_add(1));
        self.last_ms = t;
        t
    }

    /// A stamp for now.
    pub fn stamp(&mut self) -> i64 {
        self.stamp_at(now_ms())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<Duration> = (0..8).map(|_| b.next_delay(&mut rng)).collect();
        for (n, w) in waits.iter().enumerate() {
            let d = (100.0 * 2f64.powi(n as i32)).min(2000.0);
            let ms = w.as_secs_f64() * 1000.0;
            assert!(ms >= d / 2.0 - 1e-6 && ms <= d + 1e-6, "{n}: {w:?}");
        }
        assert_eq!(b.attempt(), 8);
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }

    #[test]
    fn clock_never_repeats_a_millisecond() {
        let mut c = Clock::new(0);
        assert_eq!(c.stamps(1000, 3, 10.0), vec![980, 990, 1000]);
        // The next batch overlaps the previous one in time: pushed after it.
        assert_eq!(c.stamps(1001, 3, 10.0), vec![1001, 1002, 1003]);
        assert_eq!(c.stamp_at(500), 1004);
        let mut skewed = Clock::new(-60_000);
        assert_eq!(skewed.stamps(100_000, 1, 0.0), vec![40_000]);
    }
}
