//! The InfluxDB sink: writes a batch with retries, acks its messages on a 2xx,
//! isolates refused points when the database answers 400, and spools what the
//! database cannot take now.
//!
//! On a non-retryable refusal (400, 413, ...) the batch is split in halves and
//! each half written again, down to single messages: the rest of the batch is
//! written, and the refused message goes to the dead-letter file with the
//! server's reason while its device gets a nack. The decoder refuses what line
//! protocol cannot carry, so this is rare (a field type conflict, say).
//!
//! When the database stays unavailable past the retry budget (connection
//! refused, timeouts, 5xx/429), the messages go to the disk spool
//! ([`super::spool`]) and are acked once it has fsynced them; the sink is then
//! *degraded*: later batches skip the database and go straight to the spool,
//! until a write succeeds again (replay, [`super::spool::replay`], probes).
//! When the spool is full too, the batch waits in memory, unacked, and is
//! tried again (spool, or database once it is back): its concurrency slot
//! stays taken, so the pipeline queue fills and sessions stop reading (then
//! 1013). Nothing is acked that is not in InfluxDB or fsynced in the spool.
//!
//! Without a spool (`spool.enabled = false`) such messages are nacked
//! `storage_unavailable` so devices know to resend.
//!
//! 401, 403 and 404 (credentials, permissions, a missing database or bucket,
//! a wrong write path) are the writer's problem, not the points': they are
//! an outage like a down server (retried, spooled), never dead letters.
//! Outages are logged as state changes by [`super::health`], which also
//! answers `/readyz`.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Sink;
use super::deadletter::DeadLetter;
use super::health::{Health, Readiness};
use super::influx::{InfluxClient, WriteError};
use super::retry::{Backoff, is_retryable};
use super::spool::{MessageMeta, Spool, SpoolError};
use crate::batch::Batch;
use crate::metrics::Metrics;

mod checks;

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up on a batch (spool it, or nack it without a spool) after
    /// retrying this long.
    pub max_elapsed: Duration,
}

/// How long a write may still take once shutdown began, before its batch is
/// spooled instead (sessions wait `shutdown_timeout_secs` for their acks).
pub const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(2);

pub struct InfluxSink {
    client: InfluxClient,
    dead: DeadLetter,
    retry: RetryConfig,
    /// Whether InfluxDB takes writes: outage log lines and readiness.
    health: Health,
    /// InfluxDB could not take a write and none has succeeded since.
    degraded: AtomicBool,
    /// HTTP write slots, shared by live batches and replay.
    slots: Arc<Semaphore>,
    spool: Option<Arc<Spool>>,
    shutdown: CancellationToken,
    /// Points waiting in memory for room in the spool (or for InfluxDB).
    held_points: AtomicU64,
    spooled_points: AtomicU64,
    /// Room the spool must have to count as ready (one batch).
    ready_room: u64,
    metrics: Arc<Metrics>,
    /// Why nothing stores a batch while InfluxDB is down, without a spool
    /// (for `/readyz`).
    no_spool: Option<&'static str>,
}

/// How writing a body ended, after retries.
enum Final {
    Written,
    Refused { status: u16, message: String },
    Unavailable(String),
}

/// What became of one message of a batch or record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MsgResult {
    Written,
    /// Refused by the database; already in the dead-letter file.
    Refused(String),
    Unavailable(String),
}

/// How hard to try one body.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Attempts {
    /// Live batches: retry with backoff within `max_elapsed`.
    Budget,
    /// Replay: one attempt; the replayer does its own waiting.
    Once,
}

impl InfluxSink {
    pub fn new(client: InfluxClient, dead: DeadLetter, retry: RetryConfig) -> Self {
        InfluxSink {
            client,
            dead,
            health: Health::new(false, retry.max_elapsed),
            retry,
            degraded: AtomicBool::new(false),
            slots: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            spool: None,
            shutdown: CancellationToken::new(),
            held_points: AtomicU64::new(0),
            spooled_points: AtomicU64::new(0),
            ready_room: 0,
            metrics: Arc::new(Metrics::new()),
            no_spool: None,
        }
    }

    /// What the log lines and `/readyz` say about a sink without a spool
    /// while InfluxDB is down (`note`, e.g. a queue-mode writer's "messages
    /// wait in the stream") instead of "the spool is off".
    pub fn with_no_spool_note(mut self, note: &'static str) -> Self {
        self.health = Health::new(false, self.retry.max_elapsed).with_no_spool_note(note);
        self.no_spool = Some(note);
        self
    }

    /// Report writes, retries, batch sizes and the spool into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Spool what cannot be written. `write_slots` bounds concurrent writes
    /// (live and replay together); `shutdown` cuts retries short so that a
    /// stopping server spools at once; the spool counts as ready while it
    /// has `ready_room` bytes free (about one batch).
    pub fn with_spool(
        mut self,
        spool: Arc<Spool>,
        write_slots: usize,
        ready_room: u64,
        shutdown: CancellationToken,
    ) -> Self {
        self.spool = Some(spool);
        self.health = Health::new(true, self.retry.max_elapsed);
        self.ready_room = ready_room;
        self.slots = Arc::new(Semaphore::new(write_slots.max(1)));
        self.shutdown = shutdown;
        self
    }

    pub fn client(&self) -> &InfluxClient {
        &self.client
    }

    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    pub fn retry_config(&self) -> &RetryConfig {
        &self.retry
    }

    /// Whether InfluxDB failed the last write (live batches go to the spool).
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub(crate) fn set_degraded(&self) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "InfluxDB still unavailable after the retry budget: batches go straight to the spool until a write succeeds"
            );
        }
    }

    /// Points held in memory because the spool is full or failing.
    pub fn held_points(&self) -> u64 {
        self.held_points.load(Ordering::Relaxed)
    }

    /// Points spooled since start.
    pub fn spooled_points(&self) -> u64 {
        self.spooled_points.load(Ordering::Relaxed)
    }

    /// One write attempt in a write slot.
    async fn attempt(&self, body: Bytes) -> Result<(), WriteError> {
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        let started = Instant::now();
        let r = self.client.write(body).await;
        let status = match &r {
            Ok(()) => Some(204),
            Err(e) => e.status(),
        };
        self.metrics
            .write_request(status, started.elapsed().as_secs_f64());
        match &r {
            Ok(()) => {
                self.degraded.store(false, Ordering::Relaxed);
                self.health.succeeded(self.spooled_points());
            }
            Err(e) if is_retryable(e.status()) => {
                self.health
                    .failed(self.cause(e), self.spooled_points(), false)
            }
            Err(_) => {}
        }
        self.note_health();
        r
    }

    /// `wsingest_influxdb_up` after a write or a check.
    fn note_health(&self) {
        self.metrics.influxdb_up(self.health.is_up());
    }

    /// Whether a live batch should skip InfluxDB and go to the spool.
    fn spool_now(&self) -> bool {
        self.spool.is_some() && self.degraded()
    }

    /// Whether to stop retrying a batch and spool it: InfluxDB is known to
    /// be down, or the server is stopping (it does not wait out a backoff).
    fn stop_retrying(&self) -> bool {
        self.spool_now() || (self.spool.is_some() && self.shutdown.is_cancelled())
    }

    /// Resolves [`SHUTDOWN_WRITE_GRACE`] after shutdown began.
    async fn shutdown_grace_over(&self) {
        self.shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_WRITE_GRACE).await;
    }

    async fn write_with_retry(&self, body: Bytes, attempts: Attempts) -> Final {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        loop {
            let result = if self.spool.is_some() {
                // A stopping server does not wait long for a hanging
                // database: past the grace the batch goes to the spool (if the
                // write lands anyway, replay overwrites it with the same values).
                tokio::select! {
                    r = self.attempt(body.clone()) => r,
                    _ = self.shutdown_grace_over() => return Final::Unavailable("the server is shutting down".into()),
                }
            } else {
                self.attempt(body.clone()).await
            };
            let err = match result {
                Ok(()) => return Final::Written,
                Err(e) => e,
            };
            if !is_retryable(err.status()) {
                let WriteError::Status {
                    status, message, ..
                } = err
                else {
                    unreachable!("transport errors are retryable")
                };
                return Final::Refused { status, message };
            }
            if attempts == Attempts::Once || self.stop_retrying() {
                return Final::Unavailable(err.to_string());
            }
            let retry_after = match &err {
                WriteError::Status { retry_after, .. } => *retry_after,
                WriteError::Transport { .. } => None,
            };
            let wait = backoff.next(retry_after);
            if started.elapsed() + wait > self.retry.max_elapsed {
                if self.spool.is_some() {
                    tracing::debug!(error = %err, elapsed_ms = started.elapsed().as_millis() as u64, "retry budget spent: the batch goes to the spool");
                    self.set_degraded();
                } else {
                    tracing::warn!(error = %err, elapsed_ms = started.elapsed().as_millis() as u64, "retry budget spent and the spool is off: the batch is nacked storage_unavailable");
                }
                return Final::Unavailable(err.to_string());
            }
            tracing::debug!(error = %err, retry_in_ms = wait.as_millis() as u64, "write failed, retrying");
            self.metrics.write_retries.inc();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled(), if self.spool.is_some() => {}
            }
        }
    }

    /// Write the messages `which` (byte ranges of `all`), splitting on
    /// refusal down to single messages. Returns one result per entry of
    /// `which`; refused messages are already in the dead-letter file.
    pub(crate) async fn write_split(
        &self,
        all: &Bytes,
        ranges: &[Range<usize>],
        points: &[u32],
        which: &[usize],
        attempts: Attempts,
    ) -> Vec<MsgResult> {
        let n = which.len();
        let mut out: Vec<Option<MsgResult>> = vec![None; n];
        let mut stack: Vec<Range<usize>> = Vec::with_capacity(8);
        stack.push(0..n);
        let contiguous = which.windows(2).all(|w| w[1] == w[0] + 1)
            && which.first().is_some_and(|&f| ranges[f].start == 0)
            && which.last().is_some_and(|&l| ranges[l].end == all.len());
        while let Some(part) = stack.pop() {
            if part.is_empty() {
                continue;
            }
            let body = if part.len() == n && contiguous {
                all.clone()
            } else {
                let mut b = Vec::new();
                for &i in &which[part.clone()] {
                    b.extend_from_slice(&all[ranges[i].clone()]);
                }
                Bytes::from(b)
            };
            match self.write_with_retry(body, attempts).await {
                Final::Written => {
                    let n: u64 = which[part.clone()]
                        .iter()
                        .map(|&i| u64::from(points[i]))
                        .sum();
                    self.metrics.points_written.inc_by(n);
                    part.for_each(|i| out[i] = Some(MsgResult::Written));
                }
                Final::Unavailable(reason) => {
                    part.for_each(|i| out[i] = Some(MsgResult::Unavailable(reason.clone())))
                }
                Final::Refused { status, message } if part.len() == 1 => {
                    let range = ranges[which[part.start]].clone();
                    self.dead.record(status, &message, &all[range]).await;
                    self.metrics.dead_letters.inc();
                    tracing::warn!(status, error = %message, "database refused a message");
                    out[part.start] = Some(MsgResult::Refused(format!(
                        "InfluxDB refused the point(s) ({status}): {message}"
                    )));
                }
                Final::Refused { status, message } => {
                    tracing::info!(status, error = %message, messages = part.len(), "batch refused, splitting to isolate the refused points");
                    let mid = part.start + part.len() / 2;
                    stack.push(mid..part.end);
                    stack.push(part.start..mid);
                }
            }
        }
        out.into_iter()
            .map(|r| r.expect("every message is written, refused or unavailable"))
            .collect()
    }

    async fn deliver_batch(&self, mut batch: Batch) {
        let n = batch.entries.len();
        self.metrics.batch_points.observe(batch.points as f64);
        self.metrics.batch_bytes.observe(batch.body.len() as f64);
        let all = Bytes::from(std::mem::take(&mut batch.body));
        let ranges: Vec<Range<usize>> = batch.entries.iter().map(|e| e.range.clone()).collect();
        let points: Vec<u32> = batch.entries.iter().map(|e| e.points).collect();
        let every: Vec<usize> = (0..n).collect();
        let mut results = if self.spool_now() {
            vec![MsgResult::Unavailable("InfluxDB is unavailable".into()); n]
        } else {
            self.write_split(&all, &ranges, &points, &every, Attempts::Budget)
                .await
        };
        let unavailable: Vec<usize> = (0..n)
            .filter(|&i| matches!(results[i], MsgResult::Unavailable(_)))
            .collect();
        if !unavailable.is_empty()
            && let Some(spool) = &self.spool
        {
            self.spool_or_hold(spool, &all, &ranges, &points, unavailable, &mut results)
                .await;
        }
        for (entry, result) in batch.entries.into_iter().zip(results) {
            match result {
                MsgResult::Written => entry.reply.ack(),
                MsgResult::Refused(detail) => entry.reply.nack("rejected_by_database", detail),
                MsgResult::Unavailable(reason) => entry.reply.nack(
                    "storage_unavailable",
                    format!("the database is unavailable ({reason}); resend this message later"),
                ),
            }
        }
    }

    /// Put messages `which` into the spool (then they count as written:
    /// durable), waiting while it is full, or write them to InfluxDB if it
    /// comes back first. Returns only when each is written, spooled or
    /// refused, or can never be spooled (then it stays unavailable: nacked).
    async fn spool_or_hold(
        &self,
        spool: &Arc<Spool>,
        all: &Bytes,
        ranges: &[Range<usize>],
        points: &[u32],
        mut which: Vec<usize>,
        results: &mut [MsgResult],
    ) {
        let mut held: Option<u64> = None;
        loop {
            let freed = spool.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let meta: Vec<MessageMeta> = which
                .iter()
                .map(|&i| MessageMeta {
                    bytes: ranges[i].len() as u32,
                    points: points[i],
                })
                .collect();
            let body = if which.len() == ranges.len() {
                all.clone()
            } else {
                Bytes::from(
                    which
                        .iter()
                        .flat_map(|&i| all[ranges[i].clone()].iter().copied())
                        .collect::<Vec<u8>>(),
                )
            };
            let s = spool.clone();
            let appended = tokio::task::spawn_blocking(move || s.append(&meta, &body))
                .await
                .expect("append does not panic");
            let n_points: u64 = which.iter().map(|&i| u64::from(points[i])).sum();
            let error = match appended {
                Ok(_) => {
                    which.iter().for_each(|&i| results[i] = MsgResult::Written);
                    self.spooled_points.fetch_add(n_points, Ordering::Relaxed);
                    let m = self.metrics.spool();
                    m.spooled(
                        n_points,
                        which.iter().map(|&i| ranges[i].len() as u64).sum(),
                    );
                    let st = spool.stats();
                    m.set_size(st.bytes, st.pending_records);
                    m.replay_pending_bytes.set(st.bytes as i64);
                    break;
                }
                Err(e @ SpoolError::TooLarge { .. }) => {
                    tracing::error!(error = %e, "batch cannot be spooled; its messages are nacked");
                    which
                        .iter()
                        .for_each(|&i| results[i] = MsgResult::Unavailable(e.to_string()));
                    break;
                }
                Err(e) => e,
            };
            if held.is_none() {
                tracing::warn!(error = %error, points = n_points, "cannot spool a batch; holding it (unacked) until there is room or InfluxDB is back");
                self.held_points.fetch_add(n_points, Ordering::Relaxed);
                held = Some(n_points);
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if !self.degraded() {
                let again = self
                    .write_split(all, ranges, points, &which, Attempts::Budget)
                    .await;
                for (&i, r) in which.iter().zip(again) {
                    results[i] = r;
                }
                which.retain(|&i| matches!(results[i], MsgResult::Unavailable(_)));
                if which.is_empty() {
                    break;
                }
            }
        }
        if let Some(n) = held {
            self.held_points.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

impl Sink for InfluxSink {
    fn deliver(&self, batch: Batch) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.deliver_batch(batch))
    }

    /// See [`InfluxSink::readiness`].
    fn ready(&self) -> bool {
        self.readiness().ready
    }

    fn readiness(&self) -> Readiness {
        InfluxSink::readiness(self)
    }
}
