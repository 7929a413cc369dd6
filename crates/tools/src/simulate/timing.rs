//! Timing of a simulated device, sans-IO: when to send next (interval with
//! jitter, bursts). The reconnect backoff (exponential with jitter) and the
//! device's clock (skew, strictly increasing millisecond timestamps so no two
//! points of a device overwrite each other) are the SDK's
//! ([`wsingest_device::timing`]).

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
pub use wsingest_device::timing::{Backoff, Clock, now_ms};

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

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

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
