//! Log lines for refused requests, summarised under a flood.
//!
//! Every refused handshake used to write an INFO line: a 5-second flood of
//! bad handshakes wrote 2253 of them, so an attacker could fill the disk
//! through the log. Now each reason logs its first [`DETAILED`] refusals of
//! an interval one by one (enough to debug a misconfigured device), counts
//! the rest, and one line per reason says how many were left out when the
//! interval ends. The metrics still count every refusal.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals of one reason logged one by one per interval.
pub const DETAILED: u32 = 5;
/// How often the summary of what was left out is written.
pub const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    /// reason -> refusals seen in this window.
    counts: BTreeMap<&'static str, u32>,
}

#[derive(Default)]
pub struct RefusalLog {
    window: Mutex<Window>,
}

impl RefusalLog {
    /// A request was refused for `reason`; `target` is already redacted.
    pub fn refused(&self, reason: &'static str, target: &str) {
        self.refused_at(Instant::now(), reason, target);
    }

    fn refused_at(&self, now: Instant, reason: &'static str, target: &str) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.is_some_and(|s| now.duration_since(s) >= INTERVAL) {
            summarise(&mut w);
        }
        w.started.get_or_insert(now);
        let n = w.counts.entry(reason).or_insert(0);
        *n += 1;
        let detailed = *n <= DETAILED;
        if detailed {
            tracing::info!(%target, reason, "request refused");
        }
        detailed
    }

    /// Write the summary of a finished interval (called by a timer, so the
    /// last flood is summarised even when nothing follows it).
    pub fn tick(&self) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.is_some_and(|s| s.elapsed() >= INTERVAL) {
            summarise(&mut w);
        }
    }
}

fn summarise(w: &mut Window) {
    for (reason, n) in std::mem::take(&mut w.counts) {
        if n > DETAILED {
            tracing::warn!(
                reason,
                refused = n,
                not_logged = n - DETAILED,
                seconds = INTERVAL.as_secs(),
                "many requests refused; only the first {DETAILED} were logged (see wsingest_handshakes_refused_total)"
            );
        }
    }
    w.started = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_refusals_of_a_reason_are_logged_per_interval() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let logged = (0..1000)
            .filter(|_| log.refused_at(t0, "bad_token", "/"))
            .count();
        assert_eq!(logged, DETAILED as usize);
        // Another reason has its own budget.
        assert!(log.refused_at(t0, "missing_token", "/"));
        // A new interval starts over.
        assert!(log.refused_at(t0 + INTERVAL, "bad_token", "/"));
    }
}
