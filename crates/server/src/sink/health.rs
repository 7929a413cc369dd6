//! Whether InfluxDB takes writes, as a state with transitions: the outage
//! log lines and the `/readyz` answer come from here.
//!
//! An outage starts with the first failed write (or a failed startup or
//! periodic check) and ends with the next successful write. Each transition
//! is logged once: a WARN when writes start failing (`InfluxDB unreachable
//! since ...`), an ERROR naming the fix when InfluxDB refuses the writer
//! itself (401, 403, 404: credentials, permissions, database, write path),
//! an INFO when it is back (`InfluxDB back after N s, M points spooled`).
//! Single retries are logged at debug level only.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Why InfluxDB does not take writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// Connection refused or reset, timeouts: heals by itself.
    Unreachable(String),
    /// 5xx, 429, 408: heals by itself.
    Failing(String),
    /// 401, 403, 404: the operator must change something; `fix` says what.
    Misconfigured { status: u16, fix: String },
}

impl Cause {
    pub fn is_misconfigured(&self) -> bool {
        matches!(self, Cause::Misconfigured { .. })
    }

    fn same_kind(&self, other: &Cause) -> bool {
        match (self, other) {
            (Cause::Misconfigured { status: a, .. }, Cause::Misconfigured { status: b, .. }) => {
                a == b
            }
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }

    fn describe(&self) -> &str {
        match self {
            Cause::Unreachable(r) | Cause::Failing(r) => r,
            Cause::Misconfigured { fix, .. } => fix,
        }
    }
}

/// An outage in progress.
#[derive(Debug, Clone)]
pub struct Outage {
    pub since: SystemTime,
    started: Instant,
    pub cause: Cause,
    /// Points spooled since start when the outage began.
    spooled_at_start: u64,
    /// Found by a check rather than a write (a successful check ends it).
    from_check: bool,
}

impl Outage {
    /// `since` as RFC 3339, to the second.
    pub fn since_text(&self) -> String {
        chrono::DateTime::<chrono::Utc>::from(self.since)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// One line: what the instance can do now and why.
    pub reason: String,
}

pub struct Health {
    outage: Mutex<Option<Outage>>,
    spool: bool,
    retry_budget: Duration,
    /// What happens to batches without a spool, for the log lines.
    no_spool: &'static str,
}

/// Without a spool, in direct mode.
pub const NO_SPOOL: &str = "the spool is off (spool.enabled = false): messages are nacked storage_unavailable until it is back";

impl Health {
    /// `spool`: whether failed batches go to a spool (for the log lines).
    pub fn new(spool: bool, retry_budget: Duration) -> Self {
        Health {
            outage: Mutex::new(None),
            spool,
            retry_budget,
            no_spool: NO_SPOOL,
        }
    }

    /// Say `note` instead of [`NO_SPOOL`] (a queue-mode writer has none).
    pub fn with_no_spool_note(mut self, note: &'static str) -> Self {
        self.no_spool = note;
        self
    }

    pub fn outage(&self) -> Option<Outage> {
        self.lock().clone()
    }

    /// No outage in progress (what [`Self::outage`] says, without a copy).
    pub fn is_up(&self) -> bool {
        self.lock().is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Outage>> {
        self.outage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write (or a check, `from_check`) failed with `cause`.
    pub fn failed(&self, cause: Cause, spooled_now: u64, from_check: bool) {
        let mut g = self.lock();
        match g.as_mut() {
            Some(o) if o.cause.same_kind(&cause) => {
                tracing::debug!(reason = cause.describe(), "InfluxDB still unavailable");
                o.cause = cause;
                o.from_check &= from_check;
            }
            Some(o) => {
                o.cause = cause;
                o.from_check &= from_check;
                self.log_start(o, true);
            }
            None => {
                let o = g.insert(Outage {
                    since: SystemTime::now(),
                    started: Instant::now(),
                    cause,
                    spooled_at_start: spooled_now,
                    from_check,
                });
                self.log_start(o, false);
            }
        }
    }

    fn log_start(&self, o: &Outage, changed: bool) {
        let since = o.since_text();
        let then = match (self.spool, o.cause.is_misconfigured()) {
            (true, false) => format!(
                "each batch is retried for up to {} s, then spooled (acked from disk, replayed in order once InfluxDB is back)",
                self.retry_budget.as_secs_f64()
            ),
            (true, true) => {
                "batches are spooled (acked from disk) until it is fixed; /readyz answers 503"
                    .into()
            }
            (false, _) => self.no_spool.into(),
        };
        let now = if changed { ", now: " } else { ": " };
        match &o.cause {
            Cause::Unreachable(r) => {
                tracing::warn!("InfluxDB unreachable since {since}{now}{r}; {then}")
            }
            Cause::Failing(r) => tracing::warn!("InfluxDB failing since {since}{now}{r}; {then}"),
            Cause::Misconfigured { fix, .. } => {
                tracing::error!("InfluxDB refuses every write since {since}{now}{fix}; {then}")
            }
        }
    }

    /// A write succeeded: the outage, if any, is over.
    pub fn succeeded(&self, spooled_now: u64) {
        let mut g = self.lock();
        if let Some(o) = g.take() {
            Self::log_back(&o, spooled_now);
        }
    }

    fn log_back(o: &Outage, spooled_now: u64) {
        let spooled = spooled_now.saturating_sub(o.spooled_at_start);
        tracing::info!(
            "InfluxDB back after {} s, {spooled} points spooled meanwhile{}",
            o.elapsed().as_secs(),
            if spooled > 0 { " (replaying them)" } else { "" }
        );
    }

    /// A check passed. It ends an outage a check found, and one it
    /// disproves: an unreachable server now answers, or (`verified`: the 1.x
    /// check took the credentials and found the database) a 401 or 404.
    /// Failing writes (5xx) and 403s are ended only by a write.
    pub fn check_passed(&self, verified: bool, spooled_now: u64) {
        let mut g = self.lock();
        let end = match g.as_ref() {
            None => false,
            Some(o) if o.from_check => true,
            Some(o) => match &o.cause {
                Cause::Unreachable(_) => true,
                Cause::Failing(_) => false,
                Cause::Misconfigured { status, .. } => verified && *status != 403,
            },
        };
        if end && let Some(o) = g.take() {
            Self::log_back(&o, spooled_now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let h = Health::new(true, Duration::from_secs(10));
        assert!(h.outage().is_none());
        h.failed(Cause::Unreachable("refused".into()), 5, false);
        let o = h.outage().unwrap();
        h.failed(Cause::Unreachable("refused again".into()), 7, false);
        let o2 = h.outage().unwrap();
        assert_eq!(o.since, o2.since, "same outage");
        assert_eq!(o2.cause, Cause::Unreachable("refused again".into()));
        // A check that reaches the server ends an "unreachable" outage...
        h.check_passed(false, 9);
        assert!(h.outage().is_none());
        // ...but not failing writes, nor a 401 it did not verify.
        h.failed(Cause::Failing("503".into()), 9, false);
        h.check_passed(true, 9);
        assert!(h.outage().is_some());
        h.failed(
            Cause::Misconfigured {
                status: 401,
                fix: "set the password".into(),
            },
            9,
            false,
        );
        h.check_passed(false, 9);
        assert!(h.outage().unwrap().cause.is_misconfigured());
        h.check_passed(true, 9);
        assert!(h.outage().is_none());
        h.failed(
            Cause::Misconfigured {
                status: 403,
                fix: "grant".into(),
            },
            9,
            false,
        );
        h.check_passed(true, 9);
        assert!(h.outage().is_some());
        h.succeeded(12);
        assert!(h.outage().is_none());
    }
}
