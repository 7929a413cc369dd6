//! The JetStream stream of points and the writers' durable consumer, as the
//! `[queue]` section describes them: created when missing, updated when the
//! config changed (what JetStream cannot change in place, such as the
//! storage type, is reported with the stream's name).

use async_nats::jetstream::{self, consumer, stream};

use super::{QueueConfig, QueueError, startup, subject};

/// The stream's configuration: file storage, `replicas` copies, one subject
/// per device under the prefix, work-queue retention (a message is deleted
/// once a writer acked it, so the stream holds only what InfluxDB does not
/// have yet), and `discard new`: when full, publishes are refused (devices
/// get `storage_unavailable`) rather than unwritten points dropped.
pub fn stream_config(config: &QueueConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        subjects: vec![subject::points_filter(&config.subject_prefix)],
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        duplicate_window: config.duplicate_window(),
        max_bytes: match config.max_bytes {
            0 => -1,
            n => i64::try_from(n).unwrap_or(i64::MAX),
        },
        description: Some("wsingest points, one subject per device".into()),
        ..Default::default()
    }
}

/// The writers' shared durable pull consumer: explicit acks, redelivery after
/// `ack_wait`, at most `max_ack_pending` messages out at once across writers,
/// never given up on (`max_deliver` unlimited: an outage of InfluxDB must not
/// drop points).
pub fn consumer_config(config: &QueueConfig) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(config.consumer.clone()),
        description: Some("wsingest writers".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait(),
        max_ack_pending: config.max_ack_pending,
        max_deliver: -1,
        filter_subject: subject::points_filter(&config.subject_prefix),
        ..Default::default()
    }
}

/// A JetStream context whose API requests and publish acks time out after a
/// quarter of `publish_timeout` (so a publish lost in a leader election is
/// tried again within the budget), with `max_pending_publishes` acks
/// outstanding at most (more publishes wait: backpressure, not an error).
pub fn context(client: async_nats::Client, config: &QueueConfig) -> jetstream::Context {
    let attempt = (config.publish_timeout() / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(3),
    );
    jetstream::ContextBuilder::new()
        .timeout(attempt)
        .max_ack_inflight(config.max_pending_publishes)
        .backpressure_on_inflight(true)
        .build(client)
}

/// Create the stream, or update it to the config (tried again while a
/// forming cluster answers "not ready": [`super::startup`]).
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &QueueConfig,
) -> Result<stream::Info, QueueError> {
    let what = format!("stream {}", config.stream);
    startup::retry(&what, config.startup_timeout(), || async {
        Ok(js.create_or_update_stream(stream_config(config)).await?)
    })
    .await
    .map_err(|f| QueueError::Stream {
        stream: config.stream.clone(),
        replicas: config.replicas,
        detail: f.detail,
    })
}

/// The writers' consumer, created (or updated) on the stream.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    config: &QueueConfig,
) -> Result<consumer::Consumer<consumer::pull::Config>, QueueError> {
    let what = format!("consumer {} of stream {}", config.consumer, config.stream);
    startup::retry(&what, config.startup_timeout(), || async {
        let stream = js.get_stream(&config.stream).await?;
        Ok(stream.create_consumer(consumer_config(config)).await?)
    })
    .await
    .map_err(|f| QueueError::Consumer {
        stream: config.stream.clone(),
        consumer: config.consumer.clone(),
        detail: f.detail,
    })
}
