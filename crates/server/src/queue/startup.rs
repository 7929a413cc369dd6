//! Startup steps against JetStream (the points stream, the writers'
//! consumer, the cluster's KV buckets), tried again while the NATS cluster
//! is still forming. A cluster that just started answers "JetStream system
//! temporarily unavailable" or "no suitable peers for placement" until its
//! meta leader is elected and its peers are known; a gateway or writer
//! started beside it (a boot, a compose file, a test) waits for that within
//! `queue.startup_timeout_ms` instead of exiting. Errors that waiting cannot
//! mend (a stream that exists with another storage type, say) fail at once.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{Error as JsError, ErrorCode};
use wsingest_proto::backoff::Backoff;

/// One failed attempt: what JetStream said, and whether trying again later
/// can succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub transient: bool,
    pub detail: String,
}

impl Failure {
    pub fn new(transient: bool, detail: impl ToString) -> Self {
        Failure {
            transient,
            detail: detail.to_string(),
        }
    }

    pub fn permanent(detail: impl ToString) -> Self {
        Failure::new(false, detail)
    }

    pub fn transient(detail: impl ToString) -> Self {
        Failure::new(true, detail)
    }
}

/// JetStream's own "not now" answers while a cluster forms or elects.
pub fn transient_code(e: &JsError) -> bool {
    [
        ErrorCode::CLUSTER_NO_PEERS,
        ErrorCode::CLUSTER_NOT_ACTIVE,
        ErrorCode::CLUSTER_NOT_ASSIGNED,
        ErrorCode::CLUSTER_NOT_AVAILABLE,
        ErrorCode::CLUSTER_NOT_LEADER,
        ErrorCode::INSUFFICIENT_RESOURCES,
        ErrorCode::STREAM_OFFLINE,
    ]
    .contains(&e.error_code())
}

impl From<async_nats::jetstream::context::CreateStreamError> for Failure {
    fn from(e: async_nats::jetstream::context::CreateStreamError) -> Self {
        let transient = match e.kind() {
            CreateStreamErrorKind::JetStream(js) => transient_code(&js),
            CreateStreamErrorKind::TimedOut
            | CreateStreamErrorKind::JetStreamUnavailable
            | CreateStreamErrorKind::Response => true,
            _ => false,
        };
        Failure::new(transient, e)
    }
}

impl From<async_nats::jetstream::context::GetStreamError> for Failure {
    fn from(e: async_nats::jetstream::context::GetStreamError) -> Self {
        let transient = match e.kind() {
            GetStreamErrorKind::JetStream(js) => transient_code(&js),
            GetStreamErrorKind::Request => true,
            _ => false,
        };
        Failure::new(transient, e)
    }
}

impl From<async_nats::jetstream::stream::ConsumerError> for Failure {
    fn from(e: async_nats::jetstream::stream::ConsumerError) -> Self {
        let transient = match e.kind() {
            ConsumerErrorKind::JetStream(js) => transient_code(&js),
            ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => true,
            _ => false,
        };
        Failure::new(transient, e)
    }
}

/// Run `attempt` until it succeeds, fails for good, or `budget` has passed
/// since the first try; waits with the shared backoff (100 ms doubling to
/// 2 s, jittered, so gateways started together do not retry in lockstep)
/// between tries and logs each transient failure (naming `what`). The error
/// is the last attempt's.
pub async fn retry<T, F, Fut>(what: &str, budget: Duration, mut attempt: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut pause = backoff.next(None);
    let mut tries = 1u32;
    loop {
        match attempt().await {
            Ok(v) => {
                if tries > 1 {
                    tracing::info!(what, tries, "JetStream ready");
                }
                return Ok(v);
            }
            Err(f) if f.transient && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(
                    what,
                    attempt = tries,
                    error = %f.detail,
                    "JetStream not ready yet (a cluster still electing its leader?); trying again in {} ms",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = backoff.next(None);
                tries += 1;
            }
            Err(mut f) => {
                if f.transient {
                    f.detail = format!(
                        "{} (still failing after {tries} attempts in {} s: queue.startup_timeout_ms)",
                        f.detail,
                        budget.as_secs()
                    );
                }
                return Err(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let got = retry("x", Duration::from_secs(30), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(Failure::transient("temporarily unavailable")),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(got, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_return_at_once() {
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry("x", Duration::from_secs(30), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure::permanent("storage type cannot change"))
        })
        .await;
        assert_eq!(got, Err(Failure::permanent("storage type cannot change")));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_give_up_after_the_budget_and_say_so() {
        let start = tokio::time::Instant::now();
        let got: Result<(), _> = retry("x", Duration::from_secs(10), || async {
            Err(Failure::transient("no suitable peers"))
        })
        .await;
        let f = got.unwrap_err();
        assert!(
            f.detail
                .starts_with("no suitable peers (still failing after"),
            "{f:?}"
        );
        assert!(f.detail.contains("queue.startup_timeout_ms"), "{f:?}");
        let waited = start.elapsed();
        assert!(waited <= Duration::from_secs(10), "{waited:?}");
        assert!(waited >= Duration::from_secs(7), "{waited:?}");
    }
}
