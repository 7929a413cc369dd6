//! Whether a KV watch keeps up with its bucket. A watch can stop delivering
//! without an error (seen after a lost JetStream quorum), so the registry
//! and ownership followers compare, once a second, the newest revision they
//! applied with the bucket's newest, and follow the bucket again once the
//! watch was behind at two checks in a row.

use std::time::Duration;

use async_nats::jetstream::kv;

/// How often a follower checks that its watch keeps up with the bucket.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A follower's check timer: every [`CHECK_EVERY`], late ticks not bunched.
pub(super) fn check_timer() -> tokio::time::Interval {
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check
}

/// A follower's wait before following its bucket again after a failure.
pub(super) fn refollow_backoff() -> wsingest_proto::backoff::Backoff {
    wsingest_proto::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
}

/// The bucket's newest revision, if NATS answers within a second.
pub(super) async fn head(store: &kv::Store) -> Option<u64> {
    let status = tokio::time::timeout(Duration::from_secs(1), store.status())
        .await
        .ok()?
        .ok()?;
    Some(status.info.state.last_sequence)
}

/// Consecutive checks at which the watch was behind its bucket.
#[derive(Debug, Default)]
pub(super) struct Lag {
    behind: u32,
}

impl Lag {
    /// Record one check of the bucket's `head` (None: NATS did not answer,
    /// which proves nothing either way) against the newest revision `seen`
    /// through the watch. True once the watch was behind at two checks.
    pub(super) fn fell_behind(&mut self, head: Option<u64>, seen: u64) -> bool {
        match head {
            Some(head) if head > seen => self.behind += 1,
            Some(_) => self.behind = 0,
            None => {}
        }
        self.behind >= 2
    }
}

#[cfg(test)]
mod tests {
    use super::Lag;

    #[test]
    fn two_checks_behind_in_a_row_make_a_lag() {
        let mut lag = Lag::default();
        assert!(!lag.fell_behind(Some(5), 4));
        assert!(
            !lag.fell_behind(None, 4),
            "an unanswered check proves nothing"
        );
        assert!(lag.fell_behind(Some(6), 4));
    }

    #[test]
    fn a_caught_up_check_starts_over() {
        let mut lag = Lag::default();
        assert!(!lag.fell_behind(Some(5), 4));
        assert!(!lag.fell_behind(Some(5), 5));
        assert!(!lag.fell_behind(Some(6), 5));
    }
}
