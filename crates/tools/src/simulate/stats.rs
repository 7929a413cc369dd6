//! Fleet-wide live numbers (for the progress bar), the ack latency
//! histogram, and the process's own CPU time, so benchmark readers can tell
//! the generator's cost from the server's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters every device bumps as it goes; read by the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    pub connected: AtomicI64,
    pub messages_sent: AtomicU64,
    pub points_sent: AtomicU64,
    pub messages_acked: AtomicU64,
    pub points_acked: AtomicU64,
    pub nacked: AtomicU64,
    pub resent: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub devices_done: AtomicU64,
}

impl Live {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Ack latency in microseconds (1 µs to 1 h, 3 significant digits), in
/// shards so thousands of devices do not queue on one lock.
pub struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

const MAX_LATENCY_US: u64 = 3_600_000_000;

impl Latency {
    pub fn new(shards: usize) -> Latency {
        let h = || {
            Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            )
        };
        Latency {
            shards: (0..shards.max(1)).map(|_| h()).collect(),
        }
    }

    pub fn record(&self, shard: usize, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let mut h = self.shards[shard % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        h.saturating_record(us);
    }

    /// Percentiles over every recorded ack; `None` when there were none.
    pub fn summary(&self) -> Option<LatencySummary> {
        let mut all = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("valid histogram bounds");
        for s in &self.shards {
            let h = s.lock().unwrap_or_else(|e| e.into_inner());
            all.add(&*h).expect("same bounds");
        }
        if all.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            count: all.len(),
            p50_ms: ms(all.value_at_quantile(0.50)),
            p95_ms: ms(all.value_at_quantile(0.95)),
            p99_ms: ms(all.value_at_quantile(0.99)),
            max_ms: ms(all.max()),
            mean_ms: all.mean() / 1000.0,
        })
    }
}

/// Ack latency: from sending a message (or resending it) to its ack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// CPU time this process has used so far (user, system).
pub fn cpu_time() -> (Duration, Duration) {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv =
        |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32).saturating_mul(1000));
    (tv(u.ru_utime), tv(u.ru_stime))
}

/// The generator's own CPU cost over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuUsage {
    pub user_s: f64,
    pub system_s: f64,
    /// CPU seconds per wall second: 1.0 is one core busy.
    pub cores_used: f64,
    /// Share of all the machine's cores.
    pub machine_share: f64,
}

impl CpuUsage {
    pub fn between(
        start: (Duration, Duration),
        end: (Duration, Duration),
        wall: Duration,
    ) -> CpuUsage {
        let user = end.0.saturating_sub(start.0).as_secs_f64();
        let system = end.1.saturating_sub(start.1).as_secs_f64();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let used = if wall.is_zero() {
            0.0
        } else {
            (user + system) / wall.as_secs_f64()
        };
        CpuUsage {
            user_s: user,
            system_s: system,
            cores_used: used,
            machine_share: used / cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles() {
        let l = Latency::new(4);
        for i in 1..=100u64 {
            l.record(i as usize, Duration::from_millis(i));
        }
        let s = l.summary().unwrap();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert!(Latency::new(2).summary().is_none());
    }

    #[test]
    fn cpu_time_moves() {
        let start = cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let end = cpu_time();
        assert!(end.0 + end.1 > start.0 + start.1);
    }
}
