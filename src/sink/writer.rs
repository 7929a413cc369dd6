//! The InfluxDB sink: writes a batch with retries, acks its messages on a 2xx,
//! and isolates refused points when the database answers 400.
//!
//! On a non-retryable refusal (400, 413, ...) the batch is split in halves and
//! each half written again, down to single messages: the rest of the batch is
//! written, and the refused message goes to the dead-letter file with the
//! server's reason while its device gets a nack. The decoder refuses what line
//! protocol cannot carry, so this is rare (a field type conflict, say).
//!
//! When the database stays unreachable past the retry budget, the messages
//! are nacked `storage_unavailable` so devices know to resend; nothing is
//! acked that is not written.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::Sink;
use super::deadletter::DeadLetter;
use super::influx::{InfluxClient, WriteError};
use super::retry::{Backoff, is_retryable};
use crate::batch::Batch;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up on a batch after retrying this long.
    pub max_elapsed: Duration,
}

pub struct InfluxSink {
    client: InfluxClient,
    dead: DeadLetter,
    retry: RetryConfig,
    reachable: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// How writing a body ended, after retries.
enum Final {
    Written,
    Refused { status: u16, message: String },
    Unavailable(String),
}

impl InfluxSink {
    pub fn new(client: InfluxClient, dead: DeadLetter, retry: RetryConfig) -> Self {
        InfluxSink {
            client,
            dead,
            retry,
            reachable: Arc::new(AtomicBool::new(true)),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Report writes, retries and batch sizes into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn client(&self) -> &InfluxClient {
        &self.client
    }

    /// Ping the server until it answers, then keep `reachable` fresh while
    /// idle, so `/readyz` tells the truth before the first write.
    pub async fn probe(&self) {
        let ok = self.client.ping().await;
        self.reachable.store(ok, Ordering::Relaxed);
    }

    async fn write_with_retry(&self, body: Bytes) -> Final {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        loop {
            let attempt = Instant::now();
            let result = self.client.write(body.clone()).await;
            let status = match &result {
                Ok(()) => Some(204),
                Err(e) => e.status(),
            };
            self.metrics
                .write_request(status, attempt.elapsed().as_secs_f64());
            let err = match result {
                Ok(()) => {
                    self.reachable.store(true, Ordering::Relaxed);
                    return Final::Written;
                }
                Err(e) => e,
            };
            if !is_retryable(err.status()) {
                self.reachable.store(true, Ordering::Relaxed);
                let WriteError::Status {
                    status, message, ..
                } = err
                else {
                    unreachable!("transport errors are retryable")
                };
                return Final::Refused { status, message };
            }
            if err.status().is_none() {
                self.reachable.store(false, Ordering::Relaxed);
            }
            let retry_after = match &err {
                WriteError::Status { retry_after, .. } => *retry_after,
                WriteError::Transport { .. } => None,
            };
            let wait = backoff.next(retry_after);
            if started.elapsed() + wait > self.retry.max_elapsed {
                tracing::error!(error = %err, elapsed_ms = started.elapsed().as_millis() as u64, "giving up on a batch");
                return Final::Unavailable(err.to_string());
            }
            tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "write failed, retrying");
            self.metrics.write_retries.inc();
            tokio::time::sleep(wait).await;
        }
    }

    async fn deliver_batch(&self, mut batch: Batch) {
        let n = batch.entries.len();
        self.metrics.batch_points.observe(batch.points as f64);
        self.metrics.batch_bytes.observe(batch.body.len() as f64);
        let all = Bytes::from(std::mem::take(&mut batch.body));
        let mut outcomes: Vec<Option<Result<(), (String, &'static str)>>> =
            (0..n).map(|_| None).collect();
        // Ranges of entries still to write; a refused range is split in two.
        let mut stack: Vec<Range<usize>> = Vec::with_capacity(16);
        stack.push(0..n);
        while let Some(range) = stack.pop() {
            let body = if range.len() == n {
                all.clone()
            } else {
                let mut part = Vec::new();
                for e in &batch.entries[range.clone()] {
                    part.extend_from_slice(&all[e.range.clone()]);
                }
                Bytes::from(part)
            };
            match self.write_with_retry(body).await {
                Final::Written => {
                    let points: u64 = batch.entries[range.clone()]
                        .iter()
                        .map(|e| u64::from(e.points))
                        .sum();
                    self.metrics.points_written.inc_by(points);
                    range.for_each(|i| outcomes[i] = Some(Ok(())));
                }
                Final::Unavailable(reason) => {
                    let detail = format!(
                        "the database is unavailable ({reason}); resend this message later"
                    );
                    range.for_each(|i| {
                        outcomes[i] = Some(Err((detail.clone(), "storage_unavailable")))
                    });
                }
                Final::Refused { status, message } if range.len() == 1 => {
                    let i = range.start;
                    let e = &batch.entries[i];
                    self.dead
                        .record(status, &message, &all[e.range.clone()])
                        .await;
                    self.metrics.dead_letters.inc();
                    tracing::warn!(status, error = %message, points = e.points, "database refused a message");
                    let detail = format!("InfluxDB refused the point(s) ({status}): {message}");
                    outcomes[i] = Some(Err((detail, "rejected_by_database")));
                }
                Final::Refused { status, message } => {
                    tracing::info!(status, error = %message, messages = range.len(), "batch refused, splitting to isolate the refused points");
                    let mid = range.start + range.len() / 2;
                    stack.push(mid..range.end);
                    stack.push(range.start..mid);
                }
            }
        }
        for (entry, outcome) in batch.entries.into_iter().zip(outcomes) {
            match outcome {
                Some(Ok(())) => entry.reply.ack(),
                Some(Err((detail, code))) => entry.reply.nack(code, detail),
                None => unreachable!("every entry is written, refused or unavailable"),
            }
        }
    }
}

impl Sink for InfluxSink {
    fn deliver(&self, batch: Batch) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.deliver_batch(batch))
    }

    fn ready(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }
}
