//! Queue mode: NATS JetStream as the replicated log between stateless
//! gateways and InfluxDB writers (docs/scaling.md).
//!
//! ```text
//! device --ws--> gateway (ingest, limits, dedupe, line protocol)
//!                   |  publish per message to <prefix>.points.<device>,
//!                   |  Nats-Msg-Id = device/seq/ts; ack the device on
//!                   |  JetStream's publish ack (a majority of replicas has it)
//!                   v
//!            JetStream stream (file storage, R3)
//!                   |  durable pull consumer shared by every writer
//!                   v
//!            writer (batch, InfluxDB with retries, dead letters)
//!                   |  ack JetStream after InfluxDB's 2xx (or the dead-letter
//!                   |  write); nak with a delay when InfluxDB is down
//!                   v
//!                InfluxDB
//! ```
//!
//! - [`config`]: the `[queue]` section.
//! - [`subject`]: subjects per device and message ids (sans-IO).
//! - [`connect`]: the NATS connection both sides open; [`stream`]: the
//!   stream and the writers' consumer, created or updated at startup;
//!   [`startup`]: those steps tried again while a new cluster elects.
//! - [`gateway`]: the sink publishing a gateway's batches ([`gateway::serve`]
//!   is `wsingest serve` in queue mode).
//! - [`writer`]: `wsingest writer`, from the stream to InfluxDB;
//!   [`writer_http`]: its HTTP port (`/readyz`, `/metrics`).
//!
//! The MQTT bridge and the per-device stats run on the gateway: the bridge
//! publishes a message's points when its device is acked (after JetStream's
//! ack), and the `wsingest_device`/`wsingest_stats` points go through the
//! stream like any other (subject `<prefix>.points._server`).

pub mod config;
pub mod gateway;
pub mod startup;
pub mod stream;
pub mod subject;
pub mod writer;
pub mod writer_http;

pub use config::QueueConfig;

use std::time::Duration;

/// What can go wrong talking to NATS; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "cannot reach any NATS server of queue.nats_url ({urls}): {detail}. Start nats-server with JetStream (nats-server -js), or fix queue.nats_url / --nats-url"
    )]
    Connect { urls: String, detail: String },
    #[error("queue mode needs queue.nats_url (or --nats-url nats://HOST:4222): none is set")]
    NoUrl,
    #[error(
        "JetStream stream {stream:?}: {detail}. Is JetStream enabled on every NATS node (-js, or `jetstream {{}}` in its config), and does the cluster have at least queue.replicas = {replicas} nodes?"
    )]
    Stream {
        stream: String,
        replicas: usize,
        detail: String,
    },
    #[error(
        "JetStream consumer {consumer:?} of stream {stream:?}: {detail}. Is the stream there (a gateway creates it at startup)?"
    )]
    Consumer {
        stream: String,
        consumer: String,
        detail: String,
    },
}

/// Connect to the NATS servers of `config`, failing (rather than retrying in
/// the background) when none answers within `connect_timeout_ms`: a gateway
/// that cannot publish should not start and report ready. Once connected, the
/// client reconnects by itself, to any server of the cluster it learnt of.
pub async fn connect(config: &QueueConfig) -> Result<async_nats::Client, QueueError> {
    if config.nats_url.is_empty() {
        return Err(QueueError::NoUrl);
    }
    let urls = config.nats_url.join(",");
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("wsingest-{}", std::process::id()))
        .connection_timeout(config.connect_timeout())
        // The default (unbounded growth of a reconnect delay up to 4 s) is
        // fine; cap it so a node's restart is noticed quickly.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(2000))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_string());
    }
    let connect = options.connect(config.nats_url.clone());
    // Each server gets the connection timeout; bound the whole list too.
    let overall = config.connect_timeout() * (config.nats_url.len() as u32 + 1);
    match tokio::time::timeout(overall, connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(QueueError::Connect {
            urls,
            detail: e.to_string(),
        }),
        Err(_) => Err(QueueError::Connect {
            urls,
            detail: format!("no answer within {} ms", overall.as_millis()),
        }),
    }
}
