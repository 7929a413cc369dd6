//! `wsingest writer`: takes points from the JetStream stream and writes them
//! to InfluxDB. Any number of writers share one durable pull consumer, so
//! each message goes to one of them (a work queue), and a writer that dies
//! leaves its unacked messages to the others after `queue.ack_wait_secs`.
//!
//! Each JetStream message (one device message's line protocol) becomes a
//! pipeline entry, and the pipeline, batcher and [`InfluxSink`] of direct
//! mode do the rest (batches by size and time, retries with backoff, 400s
//! split down to the refused message and dead-lettered), with the spool
//! off: the stream is the durable buffer. An entry's outcome settles its
//! JetStream message:
//!
//! | outcome | JetStream |
//! |---|---|
//! | acked (InfluxDB 2xx) | ack: the stream deletes it |
//! | `rejected_by_database` (400: in the dead-letter file) | ack |
//! | `storage_unavailable` (retry budget spent) | nak with a delay (doubling per delivery): delivered again later |
//!
//! So while InfluxDB is down the stream grows, not the writer's memory: a
//! writer holds at most `queue.max_ack_pending` messages (across writers) and
//! at most `influx.queue_capacity` of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::writer_http::{self, WriterState};
use super::{QueueError, stream};
use crate::config::Config;
use crate::metrics::WriterMetrics;
use crate::pipeline::{self, Entry, Outcome, PipelineConfig, Reply};
use crate::sink::deadletter::DeadLetter;
use crate::sink::influx::InfluxClient;
use crate::sink::writer::{InfluxSink, RetryConfig};

/// Messages handed to the pipeline and not yet settled, by local id.
type InFlight = Arc<Mutex<HashMap<u64, jetstream::Message>>>;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Client(#[from] crate::sink::influx::ClientError),
    #[error("cannot listen on {addr} (queue.writer_listen, --listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Run a writer until `shutdown` fires; then stop pulling, let the batches
/// in flight finish (their messages are acked or naked) and return.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), WriterError> {
    config.validate()?;
    let q = &config.queue;
    // Bind first: a taken port fails the start before anything is pulled.
    let listener = match q.writer_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| WriterError::Listen { addr, source })?,
        ),
        None => None,
    };
    let client = super::connect(q).await?;
    let js = stream::context(client.clone(), q);
    stream::ensure_stream(&js, q).await?;
    let consumer = stream::ensure_consumer(&js, q).await?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let sink = Arc::new(influx_sink(&config)?.with_metrics(metrics.clone()));
    sink.startup_check(config.influx.create_database).await;
    let state = Arc::new(WriterState::new(
        metrics,
        sink.clone(),
        client,
        &q.consumer,
        shutdown.clone(),
    ));
    let counters = state.writer.clone();
    tokio::spawn(writer_http::refresh_consumer_info(
        state.clone(),
        consumer.clone(),
        q.writer_info_interval(),
        shutdown.clone(),
    ));
    // InfluxDB's state for /readyz while no messages flow, as `serve` checks it.
    sink.spawn_checks(Duration::from_secs(5), shutdown.clone());
    match listener {
        Some(listener) => {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "writer: /healthz, /readyz and /metrics");
            }
            let (state, stop) = (state.clone(), shutdown.clone());
            tokio::spawn(async move {
                if let Err(e) = writer_http::serve(listener, state, stop).await {
                    tracing::error!(error = %e, "writer HTTP port failed");
                }
            });
        }
        None => tracing::info!(
            "writer: no HTTP port (set queue.writer_listen or --listen for /readyz and /metrics)"
        ),
    }
    tracing::info!(
        stream = q.stream,
        consumer = q.consumer,
        influx = sink.client().write_url(),
        "writer: JetStream to InfluxDB"
    );

    let hold = Duration::from_millis(
        config.influx.timeout_ms
            + config.influx.retry_max_elapsed_ms
            + config.influx.flush_interval_ms,
    );
    if q.ack_wait() <= hold {
        // Messages would be given to another writer while this one still
        // retries them: written twice (harmless) and more load on InfluxDB
        // when it is least able to take it.
        tracing::warn!(
            ack_wait_secs = q.ack_wait_secs,
            hold_ms = hold.as_millis() as u64,
            "queue.ack_wait_secs is not above influx.timeout_ms + influx.retry_max_elapsed_ms + influx.flush_interval_ms: raise it"
        );
    }
    let drain = CancellationToken::new();
    let (pipe, batcher) = pipeline::start(
        PipelineConfig::from(&config),
        sink.clone(),
        shutdown.clone(),
        drain.clone(),
    );
    // One outcome slot per message in flight: taking a slot waits while the
    // writer holds `queue_capacity` messages (a second bound, next to the
    // consumer's max_ack_pending).
    let (tx, rx) = mpsc::channel::<Outcome>(config.influx.queue_capacity.max(1));
    let inflight: InFlight = Default::default();
    let settler = tokio::spawn(settle(
        rx,
        inflight.clone(),
        q.nak_delay(),
        counters.clone(),
    ));

    let batch = config.influx.batch_size.clamp(1, 10_000);
    let mut next_id: u64 = 0;
    'pull: while !shutdown.is_cancelled() {
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull from JetStream; retrying");
                state.fetch_failed(format!("pull: {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.cancelled() => break 'pull,
            };
            let message = match next {
                Some(Ok(m)) => {
                    counters.fetched.inc();
                    state.fetch_ok();
                    m
                }
                Some(Err(e)) => {
                    // Missed heartbeats, a consumer leader change: the stream
                    // carries on, or ends and is opened again.
                    tracing::debug!(error = %e, "pull stream error");
                    continue;
                }
                None => break,
            };
            let permit = tokio::select! {
                p = tx.clone().reserve_owned() => p.expect("the settler runs until we drop tx"),
                _ = shutdown.cancelled() => break 'pull,
            };
            next_id += 1;
            let lines = message.payload.to_vec();
            let points = lines.iter().filter(|&&b| b == b'\n').count().max(1) as u32;
            inflight
                .lock()
                .expect("not poisoned")
                .insert(next_id, message);
            let entry = Entry {
                lines,
                points,
                reply: Reply::new(Some(next_id), permit),
            };
            if pipe.send(entry).await.is_err() {
                break 'pull;
            }
        }
    }
    tracing::info!("writer stopping: finishing the batches in flight");
    drain.cancel();
    let grace = Duration::from_secs(config.server.shutdown_timeout_secs);
    let _ = tokio::time::timeout(grace, batcher).await;
    drop(pipe);
    drop(tx);
    let _ = tokio::time::timeout(grace, settler).await;
    let left = inflight.lock().expect("not poisoned").len();
    if left > 0 {
        tracing::warn!(
            messages = left,
            "stopped with messages not written; JetStream delivers them again after queue.ack_wait_secs"
        );
    }
    Ok(())
}

/// The InfluxDB sink of direct mode, without a spool.
fn influx_sink(config: &Config) -> Result<InfluxSink, WriterError> {
    let i = &config.influx;
    let api = config.influx_api()?;
    let client = InfluxClient::new(&i.url, &api, Duration::from_millis(i.timeout_ms), i.gzip)?;
    Ok(InfluxSink::new(
        client,
        DeadLetter::new(i.dead_letter_path.clone(), i.dead_letter_max_bytes),
        RetryConfig {
            initial_backoff: Duration::from_millis(i.retry_initial_ms),
            max_backoff: Duration::from_millis(i.retry_max_ms),
            max_elapsed: Duration::from_millis(i.retry_max_elapsed_ms),
        },
    )
    .with_no_spool_note(
        "messages are nak'd and wait in the JetStream stream (a writer has no spool) until it is back",
    ))
}

/// Settle each message as its outcome arrives (see the module doc).
async fn settle(
    mut rx: mpsc::Receiver<Outcome>,
    inflight: InFlight,
    nak_delay: Duration,
    counters: WriterMetrics,
) {
    while let Some(outcome) = rx.recv().await {
        let (seq, error) = match &outcome {
            Outcome::Acked { seq } => (seq, None),
            Outcome::Nacked(nack) => (&nack.seq, Some(nack.error)),
        };
        let Some(message) = seq.and_then(|id| inflight.lock().expect("not poisoned").remove(&id))
        else {
            continue;
        };
        let (kind, counter) = match error {
            None => (AckKind::Ack, &counters.acked),
            Some("rejected_by_database") => (AckKind::Ack, &counters.dead_lettered),
            Some(_) => {
                let delivered = message.info().map_or(1, |i| i.delivered.max(1));
                let delay = nak_backoff(nak_delay, delivered);
                (AckKind::Nak(Some(delay)), &counters.naks)
            }
        };
        counter.inc();
        if let Err(e) = message.ack_with(kind).await {
            // Not settled: JetStream delivers it again after ack_wait, and
            // InfluxDB overwrites the same points.
            tracing::debug!(error = %e, "ack to JetStream failed");
        }
    }
}

/// The delay before delivery `delivered + 1`: `base` doubling per delivery,
/// at most 16 × `base`.
pub fn nak_backoff(base: Duration, delivered: i64) -> Duration {
    let doublings = (delivered.max(1) - 1).min(4) as u32;
    base * 2u32.pow(doublings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delays_double_up_to_sixteen_times() {
        let b = Duration::from_millis(100);
        assert_eq!(nak_backoff(b, 1), b);
        assert_eq!(nak_backoff(b, 2), b * 2);
        assert_eq!(nak_backoff(b, 5), b * 16);
        assert_eq!(nak_backoff(b, 50), b * 16);
        assert_eq!(nak_backoff(b, 0), b);
    }
}
