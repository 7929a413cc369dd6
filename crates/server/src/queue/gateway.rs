//! The gateway's sink in queue mode: each message of a batch is published to
//! JetStream (`<prefix>.points.<device>`, `Nats-Msg-Id` naming a resend), all
//! of them at once, and its device is acked only once JetStream acked the
//! publish: the stream's replicas, not this process, hold the point from
//! then on. So there is no local spool in this mode.
//!
//! A publish that fails (no NATS server, a stream leader election, a full
//! stream) is tried again, with the same id, until `queue.publish_timeout_ms`
//! after the batch started; then the message is nacked
//! `storage_unavailable` (the devices resend later), the same answer direct
//! mode gives when InfluxDB is down and the spool is off. While a batch is
//! being retried its pipeline slot stays taken, so a longer outage fills the
//! queue and sessions are closed with 1013 after
//! `server.backpressure_timeout_ms`, as with a full spool. A resend of a
//! message JetStream had stored after all is dropped by the stream's
//! duplicate window, and acked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures_util::future::join_all;
use tokio::time::Instant;

use super::{QueueConfig, subject};
use crate::batch::Batch;
use crate::sink::Sink;
use crate::sink::health::Readiness;
use wsingest_proto::backoff::Backoff;

/// Publishes batches to the stream; see the module doc.
pub struct QueueSink {
    js: jetstream::Context,
    client: async_nats::Client,
    prefix: String,
    stream: String,
    publish_timeout: Duration,
    /// Why the last publish failed, and since when; `None` after a success.
    failing: Mutex<Option<(std::time::SystemTime, String)>>,
}

/// One message to publish.
struct Pending {
    subject: String,
    msg_id: Option<String>,
    payload: Bytes,
}

impl QueueSink {
    pub fn new(client: async_nats::Client, config: &QueueConfig) -> Self {
        QueueSink {
            js: super::stream::context(client.clone(), config),
            client,
            prefix: config.subject_prefix.clone(),
            stream: config.stream.clone(),
            publish_timeout: config.publish_timeout(),
            failing: Mutex::new(None),
        }
    }

    fn publish_of(&self, body: &Bytes, e: &crate::batch::BatchEntry) -> Pending {
        let origin = e.reply.origin();
        Pending {
            subject: subject::points_subject(&self.prefix, origin.map(|o| &*o.device)),
            msg_id: origin.and_then(|o| o.seq.map(|seq| subject::msg_id(&o.device, seq, o.stamp))),
            payload: body.slice(e.range.clone()),
        }
    }

    /// One attempt at every message of `which`: publish all, then await
    /// every ack. Returns the error of each message (`None`: stored).
    async fn attempt(&self, pending: &[Pending], which: &[usize]) -> Vec<Option<String>> {
        let mut acks = Vec::with_capacity(which.len());
        for &i in which {
            let p = &pending[i];
            let mut publish = PublishMessage::build().payload(p.payload.clone());
            if let Some(id) = &p.msg_id {
                publish = publish.message_id(id.as_str());
            }
            acks.push(self.js.send_publish(p.subject.clone(), publish).await);
        }
        join_all(acks.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => ack.await.err().map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            }
        }))
        .await
    }

    async fn deliver_batch(&self, batch: Batch) {
        let started = Instant::now();
        let body = Bytes::from(batch.body);
        let pending: Vec<Pending> = batch
            .entries
            .iter()
            .map(|e| self.publish_of(&body, e))
            .collect();
        let mut errors: Vec<Option<String>> = vec![None; pending.len()];
        let mut which: Vec<usize> = (0..pending.len()).collect();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let results = self.attempt(&pending, &which).await;
            for (&i, r) in which.iter().zip(results) {
                errors[i] = r;
            }
            which.retain(|&i| errors[i].is_some());
            let Some(&first) = which.first() else {
                self.set_failing(None);
                break;
            };
            let reason = errors[first].clone().unwrap_or_default();
            self.set_failing(Some(&reason));
            let wait = backoff.next(None);
            if started.elapsed() + wait > self.publish_timeout {
                tracing::warn!(
                    error = reason,
                    messages = which.len(),
                    "JetStream did not take these messages within queue.publish_timeout_ms: nacked storage_unavailable"
                );
                break;
            }
            tracing::debug!(
                error = reason,
                messages = which.len(),
                retry_in_ms = wait.as_millis() as u64,
                "publish failed, retrying"
            );
            tokio::time::sleep(wait).await;
        }
        for (entry, error) in batch.entries.into_iter().zip(errors) {
            match error {
                None => entry.reply.ack(),
                Some(reason) => entry.reply.nack(
                    "storage_unavailable",
                    format!("the queue (NATS JetStream) is unavailable ({reason}); resend this message later"),
                ),
            }
        }
    }

    /// While publishes fail, ask the stream's leader for the stream's info
    /// every second: once it answers, the gateway is ready again (without
    /// it, a gateway taken out of the balancer would wait for a publish
    /// that never comes). A publish that still fails marks it again.
    pub async fn probe(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
            if self.failing.lock().expect("not poisoned").is_none() {
                continue;
            }
            if let Ok(mut stream) = self.js.get_stream(&self.stream).await
                && stream.info().await.is_ok()
            {
                self.set_failing(None);
            }
        }
    }

    fn set_failing(&self, reason: Option<&str>) {
        let mut f = self.failing.lock().expect("not poisoned");
        match (reason, f.is_some()) {
            (None, true) => {
                tracing::info!("JetStream takes publishes again");
                *f = None;
            }
            (Some(r), false) => {
                tracing::warn!(error = r, "JetStream publishes failing");
                *f = Some((std::time::SystemTime::now(), r.to_string()));
            }
            _ => {}
        }
    }
}

impl Sink for QueueSink {
    fn deliver(&self, batch: Batch) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.deliver_batch(batch))
    }

    fn ready(&self) -> bool {
        self.readiness().ready
    }

    /// Not ready while the NATS connection is down or publishes fail: a load
    /// balancer should send devices to a gateway that can ack them.
    fn readiness(&self) -> Readiness {
        use async_nats::connection::State;
        if self.client.connection_state() != State::Connected {
            return Readiness {
                ready: false,
                reason: format!(
                    "not ready: disconnected from NATS (reconnecting); messages are nacked storage_unavailable after {} ms",
                    self.publish_timeout.as_millis()
                ),
            };
        }
        if let Some((since, reason)) = &*self.failing.lock().expect("not poisoned") {
            let since = chrono::DateTime::<chrono::Utc>::from(*since).to_rfc3339();
            return Readiness {
                ready: false,
                reason: format!(
                    "not ready: JetStream stream {:?} refuses publishes since {since}: {reason}",
                    self.stream
                ),
            };
        }
        Readiness {
            ready: true,
            reason: format!(
                "ready: publishing to JetStream stream {:?} (queue mode)",
                self.stream
            ),
        }
    }
}

/// `wsingest serve` in queue mode: connect to NATS, create or update the
/// stream, and serve with a [`QueueSink`] (no spool, no InfluxDB writes).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: crate::config::Config,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), crate::server::ServeError> {
    let q = &config.queue;
    let client = super::connect(q).await?;
    let info = super::stream::ensure_stream(&super::stream::context(client.clone(), q), q).await?;
    tracing::info!(
        stream = q.stream,
        replicas = info.config.num_replicas,
        messages = info.state.messages,
        subjects = super::subject::points_filter(&q.subject_prefix),
        "queue mode: publishing points to JetStream"
    );
    let sink = std::sync::Arc::new(QueueSink::new(client, q));
    let (probe, stop) = (sink.clone(), shutdown.clone());
    tokio::spawn(async move { probe.probe(stop).await });
    crate::server::serve(listener, config, sink, shutdown).await
}

/// The gateway's pipeline: batches group publishes (awaited together), and a
/// message waits at most `queue.linger_ms` for others.
pub fn pipeline_config(config: &crate::config::Config) -> crate::pipeline::PipelineConfig {
    let mut p = crate::pipeline::PipelineConfig::from(config);
    p.flush_interval = config.queue.linger();
    p
}
