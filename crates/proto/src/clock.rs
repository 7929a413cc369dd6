//! Server timestamps for points sent without a time of their own.
//!
//! InfluxDB keeps one value per (measurement, tag set, field, time): two
//! points of a device stamped with the same receive time overwrite each
//! other, although both were acked. So every point the server stamps gets a
//! nanosecond of its own: the receive time, or one past the last stamp when
//! that is later. The clock is process-wide, so stamps are distinct and
//! increasing per device across its messages, sessions and transports; it
//! costs one atomic operation per message that needs stamps. At any
//! sustained rate below 10^9 stamped points per second the stamps stay at
//! the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};

/// Hands out distinct, increasing nanosecond timestamps.
#[derive(Debug)]
pub struct ServerClock {
    last: AtomicI64,
    /// Tests: ignore the wall clock, stamp upwards from the start value.
    frozen: bool,
}

static GLOBAL: ServerClock = ServerClock::new();

impl ServerClock {
    pub const fn new() -> Self {
        ServerClock {
            last: AtomicI64::new(i64::MIN),
            frozen: false,
        }
    }

    /// The process's clock, shared by every transport.
    pub fn global() -> &'static ServerClock {
        &GLOBAL
    }

    /// A clock for tests whose first stamp is `start_ns` whatever the time.
    pub fn frozen_at(start_ns: i64) -> Self {
        ServerClock {
            last: AtomicI64::new(start_ns.saturating_sub(1)),
            frozen: true,
        }
    }

    /// The wall clock (or the frozen start), for times relative to now.
    pub fn now(&self) -> i64 {
        if self.frozen {
            self.last.load(Ordering::Relaxed).saturating_add(1)
        } else {
            wall_ns()
        }
    }

    /// Reserve `n` consecutive nanoseconds; returns the first. Never earlier
    /// than now, never overlapping an earlier reservation.
    pub fn reserve(&self, n: usize) -> i64 {
        let n = n.max(1) as i64;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let floor = if self.frozen { i64::MIN } else { wall_ns() };
            let first = floor.max(last.saturating_add(1));
            match self.last.compare_exchange_weak(
                last,
                first.saturating_add(n - 1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return first,
                Err(seen) => last = seen,
            }
        }
    }
}

impl Default for ServerClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    wall_ns() / 1_000_000
}

/// Now, in nanoseconds since the Unix epoch.
pub fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_overlap_and_follow_the_wall_clock() {
        let c = ServerClock::new();
        let before = wall_ns();
        let a = c.reserve(1000);
        let b = c.reserve(1);
        let d = c.reserve(5);
        assert!(a >= before);
        assert!(b >= a + 1000, "{a} {b}");
        assert!(d > b);
    }

    #[test]
    fn concurrent_reservations_are_distinct() {
        let c = std::sync::Arc::new(ServerClock::frozen_at(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).map(|_| c.reserve(3)).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<i64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        assert!(all.windows(2).all(|w| w[1] - w[0] >= 3));
        assert_eq!(all[0], 0);
    }
}
