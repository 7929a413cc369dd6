//! A writer's HTTP port (`queue.writer_listen`, `wsingest writer --listen`):
//! `/healthz`, `/readyz` and `/metrics`, answered as `serve` answers them.
//!
//! - `/readyz` is 503 with the reason while the writer is shutting down,
//!   disconnected from NATS, unable to fetch from its consumer (a pull or
//!   the periodic consumer-info request failed), or while the InfluxDB
//!   sink is not ready ([`InfluxSink::readiness`], the same answer as
//!   `serve`'s): the messages then wait in the stream.
//! - `/metrics` is the registry of [`Metrics`], as on `serve`: the sink's
//!   write metrics and [`WriterMetrics`] (messages fetched, acked, nak'd for
//!   an outage, dead-lettered, and the consumer's pending and ack-pending
//!   counts, read every `queue.writer_info_interval_ms`).

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_nats::jetstream::consumer::{Consumer, pull};
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, WriterMetrics};
use crate::sink::health::Readiness;
use crate::sink::writer::InfluxSink;

/// What the routes read: the metrics, the sink, and whether NATS answers.
pub struct WriterState {
    pub metrics: Arc<Metrics>,
    pub writer: WriterMetrics,
    sink: Arc<InfluxSink>,
    client: async_nats::Client,
    consumer: String,
    /// Why fetching from the consumer fails, and since when; `None` once a
    /// fetch or a consumer-info request succeeded.
    failing: Mutex<Option<(SystemTime, String)>>,
    shutdown: CancellationToken,
}

impl WriterState {
    pub fn new(
        metrics: Arc<Metrics>,
        sink: Arc<InfluxSink>,
        client: async_nats::Client,
        consumer: &str,
        shutdown: CancellationToken,
    ) -> Self {
        WriterState {
            writer: metrics.writer(),
            metrics,
            sink,
            client,
            consumer: consumer.to_string(),
            failing: Mutex::new(None),
            shutdown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(SystemTime, String)>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetching (a pull, or the consumer's info) failed.
    pub fn fetch_failed(&self, error: impl Display) {
        let mut g = self.lock();
        let since = g.as_ref().map_or_else(SystemTime::now, |(t, _)| *t);
        *g = Some((since, error.to_string()));
    }

    /// A fetch succeeded: the consumer answers.
    pub fn fetch_ok(&self) {
        *self.lock() = None;
    }

    /// What `/readyz` answers (see the module doc).
    pub fn readiness(&self) -> Readiness {
        let not = |reason: String| Readiness {
            ready: false,
            reason,
        };
        if self.shutdown.is_cancelled() {
            return not("not ready: shutting down".into());
        }
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return not(
                "not ready: disconnected from NATS (queue.nats_url); messages wait in the stream"
                    .into(),
            );
        }
        if let Some((since, why)) = self.lock().clone() {
            let since = chrono::DateTime::<chrono::Utc>::from(since)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            return not(format!(
                "not ready: cannot fetch from JetStream consumer {:?} since {since}: {why}",
                self.consumer
            ));
        }
        self.sink.readiness()
    }
}

/// Read the consumer's info every `queue.writer_info_interval_ms` into the
/// gauges (and readiness) until `shutdown`.
pub async fn refresh_consumer_info(
    state: Arc<WriterState>,
    consumer: Consumer<pull::Config>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    loop {
        // A bound of its own: a request to an unreachable NATS can hang
        // until the client's request timeout.
        match tokio::time::timeout(
            every.max(std::time::Duration::from_secs(1)),
            consumer.get_info(),
        )
        .await
        {
            Ok(Ok(info)) => {
                let w = &state.writer;
                w.consumer_pending.set(info.num_pending as i64);
                w.consumer_ack_pending.set(info.num_ack_pending as i64);
                w.consumer_redelivered.set(info.num_redelivered as i64);
                state.fetch_ok();
            }
            Ok(Err(e)) => state.fetch_failed(format!("consumer info: {e}")),
            Err(_) => state.fetch_failed("consumer info: no answer"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => break,
        }
    }
}

/// Serve the three routes on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<WriterState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<WriterState>>| async move {
                crate::http::readiness(&s.readiness())
            }),
        )
        .route(
            "/metrics",
            get(
                |State(s): State<Arc<WriterState>>, headers: HeaderMap| async move {
                    crate::http::metrics(&s.metrics, &headers)
                },
            ),
        )
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
