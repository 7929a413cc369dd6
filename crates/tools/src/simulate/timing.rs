//! Timing of a simulated device, sans-IO: when to send next (interval with
//! jitter, bursts), how long to wait before reconnecting (exponential
//! backoff with jitter), and the device's clock (skew, strictly increasing
//! millisecond timestamps so no two points of a device overwrite each other).

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// When the next message is due.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    jitter: f64,
    /// Messages sent back to back per tick; the interval between ticks is
    /// stretched by as much, so the average rate stays the same.
    burst: u32,
    next: Instant,
}

impl Schedule {
    pub fn new(interval: Duration, jitter: f64, burst: u32, first: Instant) -> Schedule {
        Schedule {
            interval,
            jitter,
            burst: burst.max(1),
            next: first,
        }
    }

    pub fn next(&self) -> Instant {
        self.next
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// A `set_interval` command: takes effect from now.
    pub fn set_interval(&mut self, interval: Duration, now: Instant, rng: &mut impl Rng) {
        self.interval = interval;
        self.next = now + self.jittered(rng);
    }

    /// A tick was sent at `now`: plan the next one. A device that fell behind
    /// (its window was full) catches up by at most one tick, not in a flood.
    pub fn advance(&mut self, now: Instant, rng: &mut impl Rng) {
        let step = self.jittered(rng);
        self.next += step;
        if self.next + step < now {
            self.next = now;
        }
    }

    fn jittered(&self, rng: &mut impl Rng) -> Duration {
        let base = self.interval.as_secs_f64() * self.burst as f64;
        let j = if self.jitter > 0.0 {
            rng.random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        Duration::from_secs_f64((base * (1.0 + j)).max(0.000_1))
    }
}

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

/// A device's clock: real time plus its skew, never repeating a millisecond.
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
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let back = ((n - 1 - i) as f64 * spacing_ms).round() as i64;
            let t = (now_ms + self.skew_ms - back).max(self.last_ms.saturating_add(1));
            self.last_ms = t;
            out.push(t);
        }
        out
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
            assert!(
                w.as_secs_f64() * 1000.0 >= d / 2.0 - 1e-6 && w.as_secs_f64() * 1000.0 <= d + 1e-6,
                "{n}: {w:?}"
            );
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }

    #[test]
    fn clock_never_repeats_a_millisecond() {
        let mut c = Clock::new(0);
        assert_eq!(c.stamps(1000, 3, 10.0), vec![980, 990, 1000]);
        // The next batch overlaps the previous one in time: pushed after it.
        assert_eq!(c.stamps(1001, 3, 10.0), vec![1001, 1002, 1003]);
        let mut skewed = Clock::new(-60_000);
        assert_eq!(skewed.stamps(100_000, 1, 0.0), vec![40_000]);
    }

    #[test]
    fn schedule_keeps_the_rate_and_catches_up_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(1), 0.0, 1, t0);
        s.advance(t0, &mut rng);
        assert_eq!(s.next(), t0 + Duration::from_secs(1));
        // Stalled for 10 s: the next tick is now, not ten ticks in a row.
        let late = t0 + Duration::from_secs(11);
        s.advance(late, &mut rng);
        assert_eq!(s.next(), late);
        s.set_interval(Duration::from_millis(200), late, &mut rng);
        assert_eq!(s.next(), late + Duration::from_millis(200));
        let mut b = Schedule::new(Duration::from_secs(1), 0.0, 5, t0);
        b.advance(t0, &mut rng);
        assert_eq!(b.next(), t0 + Duration::from_secs(5));
    }
}
