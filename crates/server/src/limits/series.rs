//! Cardinality guard: how many series (measurement + tag set) a device may
//! create per minute. One device inventing a new tag value per message would
//! otherwise grow InfluxDB's index without bound for every other device.
//!
//! Memory is bounded: the set of known series keeps at most `4 × limit`
//! (at least 64) 64-bit hashes per device; when full it is cleared, after
//! which old series count as new once more. A hash collision can only let a
//! new series pass as known, never refuse a known one.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use wsingest_proto::point::Point;

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct SeriesGuard {
    known: HashSet<u64>,
    window_start: Instant,
    new_in_window: u32,
}

impl SeriesGuard {
    pub fn new(now: Instant) -> SeriesGuard {
        SeriesGuard {
            known: HashSet::new(),
            window_start: now,
            new_in_window: 0,
        }
    }

    /// Admit the series of `points` under `limit` new series per minute
    /// (0: unlimited). All or nothing: when refused, nothing is recorded.
    /// `Err` carries the number of new series the message would add.
    pub fn admit(&mut self, points: &[Point], limit: u32, now: Instant) -> Result<(), u32> {
        if limit == 0 {
            return Ok(());
        }
        if now.saturating_duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.new_in_window = 0;
        }
        let mut fresh: Vec<u64> = Vec::new();
        for p in points {
            let h = series_hash(p);
            if !self.known.contains(&h) && !fresh.contains(&h) {
                fresh.push(h);
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        if self.new_in_window.saturating_add(fresh.len() as u32) > limit {
            return Err(fresh.len() as u32);
        }
        let cap = (limit as usize).saturating_mul(4).max(64);
        if self.known.len() + fresh.len() > cap {
            self.known.clear();
        }
        self.new_in_window += fresh.len() as u32;
        self.known.extend(fresh);
        Ok(())
    }
}

impl SeriesGuard {
    /// How long until the quota of new series is fresh again.
    pub fn resets_in(&self, now: Instant) -> Duration {
        WINDOW.saturating_sub(now.saturating_duration_since(self.window_start))
    }
}

/// A series is its measurement and its (sorted) tag set.
fn series_hash(p: &Point) -> u64 {
    let mut h = DefaultHasher::new();
    p.measurement.hash(&mut h);
    p.tags.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsingest_proto::point::FieldValue;

    fn point(tag: &str) -> Point {
        Point {
            measurement: "m".into(),
            tags: vec![("t".into(), tag.into())],
            fields: vec![("f".into(), FieldValue::Float(1.0))],
            time_ns: 0,
            int_fields: false,
        }
    }

    #[test]
    fn new_series_are_counted_per_minute_and_known_ones_are_free() {
        let t0 = Instant::now();
        let mut g = SeriesGuard::new(t0);
        for i in 0..3 {
            g.admit(&[point(&i.to_string())], 3, t0).unwrap();
        }
        assert_eq!(g.admit(&[point("new")], 3, t0), Err(1));
        // Known series still pass, as often as they like.
        for _ in 0..100 {
            g.admit(&[point("0"), point("2")], 3, t0).unwrap();
        }
        // All or nothing: a message with 2 new series when none is left.
        assert_eq!(
            g.admit(&[point("a"), point("b"), point("1")], 3, t0),
            Err(2)
        );
        assert_eq!(
            g.resets_in(t0 + Duration::from_secs(45)),
            Duration::from_secs(15)
        );
        // The next minute has a fresh quota.
        g.admit(&[point("a"), point("b")], 3, t0 + WINDOW).unwrap();
    }

    #[test]
    fn memory_stays_bounded() {
        let mut t = Instant::now();
        let mut g = SeriesGuard::new(t);
        for i in 0..10_000 {
            if i % 10 == 0 {
                t += WINDOW;
            }
            g.admit(&[point(&i.to_string())], 10, t).unwrap();
            assert!(g.known.len() <= 64);
        }
    }
}
