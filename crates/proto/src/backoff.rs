//! The one backoff of wsingest: exponential with jitter, capped. Devices wait
//! with it before reconnecting (and after a transient nack), the server's
//! writer before retrying InfluxDB, the MQTT bridge before reconnecting to
//! its broker. The n-th wait is drawn from `[d/2, d]` with
//! `d = min(max, base * 2^n)`: a fleet (or a set of writers) that lost its
//! peer does not come back in lockstep, yet waits do grow.

use std::time::Duration;

use rand::Rng;

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

    /// The wait before the next attempt, jitter drawn from `rng`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let factor = 2f64.powi(self.attempt.min(30) as i32);
        let d = (self.base.as_secs_f64() * factor).min(self.max.as_secs_f64());
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_secs_f64(d * rng.random_range(0.5..=1.0))
    }

    /// The wait before the next attempt; a peer's `Retry-After` wins, capped
    /// at `max` so a confused server cannot park a client for hours.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let own = self.next_delay(&mut rand::rng());
        retry_after.map_or(own, |d| d.min(self.max))
    }

    /// The peer answered: start over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn grows_to_its_cap_with_jitter_and_starts_over() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for n in 0..8 {
            let ms = b.next_delay(&mut rng).as_secs_f64() * 1000.0;
            let d = (100.0 * 2f64.powi(n)).min(2000.0);
            assert!(ms >= d / 2.0 - 1e-6 && ms <= d + 1e-6, "{n}: {ms}");
        }
        assert_eq!(b.attempt(), 8);
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(b.next(Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(
            b.next(Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
        assert!(b.next(None) <= Duration::from_secs(2));
    }
}
