//! Retry policy for database writes, in one place: timeouts, connection
//! errors, 408, 429 and 5xx are retried with exponential backoff and full
//! jitter, honouring `Retry-After`. So are 401, 403 and 404: wrong
//! credentials, a missing database or bucket, a wrong write path are the
//! operator's to fix, not something wrong with the points, so they are an
//! outage (retried, then spooled), never dead letters. Any other status
//! (400, 413, ...) is final: the points are refused (poison).

use std::time::Duration;

/// Whether a failed attempt is worth repeating.
pub fn is_retryable(status: Option<u16>) -> bool {
    match status {
        None => true, // connection refused, reset, timeout
        Some(s) => s == 408 || s == 429 || (500..=599).contains(&s) || is_operator_error(s),
    }
}

/// Statuses that say the writer is misconfigured (credentials, permissions,
/// database/bucket or write path), not that the points are bad: they do not
/// heal by themselves, so they are logged with the fix and make `/readyz` 503.
pub fn is_operator_error(status: u16) -> bool {
    matches!(status, 401 | 403 | 404)
}

pub use wsingest_proto::backoff::Backoff;

/// Parse a `Retry-After` header given in seconds (the HTTP-date form is rare
/// from databases and is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(is_retryable(None));
        for s in [408, 429, 500, 502, 503, 504, 401, 403, 404] {
            assert!(is_retryable(Some(s)), "{s}");
        }
        for s in [400, 413, 422] {
            assert!(!is_retryable(Some(s)), "{s}");
            assert!(!is_operator_error(s), "{s}");
        }
        for s in [401, 403, 404] {
            assert!(is_operator_error(s), "{s}");
        }
    }

    #[test]
    fn retry_after_header() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
