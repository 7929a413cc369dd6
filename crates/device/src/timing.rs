//! Timing rules, sans-IO: the reconnect [`Backoff`] (exponential with
//! jitter) and the device [`Clock`] whose stamps never repeat a millisecond
//! (two points of one series in the same millisecond would overwrite each
//! other in InfluxDB).

pub use wsingest_proto::backoff::Backoff;

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
pub use wsingest_proto::clock::wall_ms as now_ms;

#[cfg(test)]
mod tests {
    use super::*;

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
