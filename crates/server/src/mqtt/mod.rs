//! The MQTT bridge (rumqttc): accepted points flow on to a broker, and
//! commands published on the broker reach device sessions.
//!
//! ```text
//! writer acks a message --Forward--> uplink queue (bounded, in points) --> publisher --+
//!                                                                                      v
//! router (results, statuses, HTTP commands) --> control queue --> publisher --> link (rumqttc) <--> broker
//!                                                                                      |
//!                               router <-- downlink (commands, results, statuses) <----+
//! ```
//!
//! - [`uplink`]: the hook in a message's reply ([`Forward`]), the bounded
//!   queue and the publisher task. Ingest never waits on the broker: a full
//!   queue drops points, counted and logged at most every 10 s; with
//!   `mqtt.required` the device's ack waits for the broker's PUBACK instead.
//! - [`link`]: one rumqttc connection per epoch, reconnect with backoff, and
//!   which publish each PUBACK confirms.
//! - [`downlink`]: incoming commands, results and statuses, handed to the
//!   [`crate::commands`] router.
//! - [`subscribe`]: `[[mqtt.subscribe]]`, ingest of devices' MQTT topics,
//!   acknowledged to the broker once durable.
//! - [`topic`]: topic templates; [`config`]: `[mqtt]`; [`options`]: URL and TLS.

mod ack_group;
pub mod config;
pub mod downlink;
pub mod link;
pub mod options;
pub mod payload;
pub mod subscribe;
pub mod topic;
pub mod uplink;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::commands::{Outbound, Router};
use crate::metrics::BridgeMetrics;
pub use config::{MqttConfig, PayloadFormat};
pub use uplink::{Forward, Uplink};

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.url: {0}")]
    Url(String),
    #[error("mqtt TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Config(#[from] crate::setting::ConfigError),
    #[error("cannot start the MQTT bridge's thread: {0}")]
    Thread(std::io::Error),
}

/// Counters of the bridge, for `/v1/mqtt`; the telemetry ones also go to
/// the Prometheus metrics (`bridge_published`, `bridge_dropped{reason}`).
#[derive(Default)]
pub struct Stats {
    metrics: BridgeMetrics,
    pub connected: AtomicBool,
    /// Points the broker took (QoS 0: written to it; QoS 1: PUBACKed).
    pub published: AtomicU64,
    /// Points not bridged: queue full, broker unreachable, connection lost
    /// before the broker confirmed them, or too large for a packet.
    pub dropped: AtomicU64,
    /// Messages nacked because the broker did not confirm them (`required`).
    pub nacked: AtomicU64,
    /// Command results and statuses published / lost.
    pub control_published: AtomicU64,
    pub control_dropped: AtomicU64,
    /// Commands received from the broker.
    pub commands_received: AtomicU64,
    pub connects: AtomicU64,
}

impl Stats {
    pub fn new(metrics: BridgeMetrics) -> Stats {
        Stats {
            metrics,
            ..Stats::default()
        }
    }

    fn telemetry_published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
        self.metrics.published(n);
    }

    /// `reason`: `queue_full`, `unreachable`, `connection_lost`, `too_large`.
    fn telemetry_dropped(&self, reason: &'static str, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.metrics.dropped(reason, n);
    }
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsView {
    pub connected: bool,
    pub published: u64,
    pub dropped: u64,
    pub nacked: u64,
    pub queued: u64,
    pub control_published: u64,
    pub control_dropped: u64,
    pub commands_received: u64,
    pub connects: u64,
}

/// The running bridge.
pub struct Bridge {
    uplink: Uplink,
    stats: Arc<Stats>,
    budget: Arc<Semaphore>,
    capacity: usize,
    stop: CancellationToken,
    publisher: tokio::task::JoinHandle<()>,
    poller: tokio::task::JoinHandle<()>,
    finished: CancellationToken,
    _thread: BridgeThread,
}

/// The bridge's own runtime: one worker thread (`wsingest-mqtt`) for the
/// publisher and the rumqttc event loop. On the server's runtime they were
/// two tasks among thousands of session tasks, and since group commit wakes
/// sessions far more often the publisher fell behind (13–15k points/s into
/// mosquitto at saturation instead of 46k; the rest dropped). A thread of
/// its own gets a fair share of the CPU from the OS scheduler instead.
struct BridgeThread(Option<tokio::runtime::Runtime>);

/// The runtime for [`BridgeThread`].
fn bridge_runtime() -> Result<tokio::runtime::Runtime, MqttError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("wsingest-mqtt")
        .enable_all()
        .build()
        .map_err(MqttError::Thread)
}

impl Drop for BridgeThread {
    /// Without blocking: the bridge is dropped on the server's runtime.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Bridge {
    /// Start the bridge: connect (in the background, retrying), subscribe
    /// to the command topics, and publish what `outbound` and the uplink
    /// bring. Fails only on bad settings, never because the broker is down.
    pub fn start(
        config: &MqttConfig,
        router: Arc<Router>,
        outbound: mpsc::Receiver<Outbound>,
        metrics: BridgeMetrics,
    ) -> Result<Bridge, MqttError> {
        config.validate()?;
        crate::tls::install_crypto_provider();
        let topics = config.topics()?;
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(options::random_client_id);
        let opts = options::build(config, &client_id)?;
        let stats = Arc::new(Stats::new(metrics));
        let capacity = config.queue_capacity;
        let budget = Arc::new(Semaphore::new(capacity));
        let (jobs_tx, jobs_rx) = mpsc::channel(capacity);
        let uplink = Uplink::new(jobs_tx, budget.clone(), stats.clone(), config.required);
        let link = Arc::new(link::Link::new(stats.clone(), config.required_timeout()));
        let stop = CancellationToken::new();
        let finished = CancellationToken::new();
        let subscriptions = if config.commands {
            vec![
                topics.command.filter(),
                topics.result.filter(),
                topics.status.filter(),
            ]
        } else {
            vec![]
        };
        let downlink = downlink::Downlink::new(topics.clone(), router, stats.clone());
        tracing::info!(
            url = config.url.as_deref().unwrap_or_default(),
            client_id,
            topic = %topics.telemetry,
            qos = config.qos,
            required = config.required,
            "MQTT bridge starting"
        );
        let runtime = bridge_runtime()?;
        let poller = runtime.spawn(link::run(
            link.clone(),
            opts,
            subscriptions,
            downlink,
            link::Backoff::new(
                Duration::from_millis(config.reconnect_initial_ms),
                Duration::from_millis(config.reconnect_max_ms),
            ),
            finished.clone(),
        ));
        let publisher = runtime.spawn(uplink::run_publisher(
            uplink::PublisherConfig {
                topics,
                format: config.payload,
                qos: if config.qos == 1 {
                    rumqttc::QoS::AtLeastOnce
                } else {
                    rumqttc::QoS::AtMostOnce
                },
                retain: config.retain,
                required_timeout: config.required_timeout(),
                max_packet_bytes: config.max_packet_bytes,
            },
            link,
            jobs_rx,
            outbound,
            stats.clone(),
            stop.clone(),
        ));
        Ok(Bridge {
            uplink,
            stats,
            budget,
            capacity,
            stop,
            publisher,
            poller,
            finished,
            _thread: BridgeThread(Some(runtime)),
        })
    }

    /// The handle sessions put in their messages' replies.
    pub fn uplink(&self) -> Uplink {
        self.uplink.clone()
    }

    /// A handle on the bridge's counters.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            stats: self.stats.clone(),
            budget: self.budget.clone(),
            capacity: self.capacity,
        }
    }

    /// Publish what is queued (for at most `grace`), then disconnect.
    pub async fn shutdown(self, grace: Duration) {
        let monitor = self.monitor();
        self.stop.cancel();
        if tokio::time::timeout(grace, self.publisher).await.is_err() {
            tracing::warn!("MQTT bridge: queue not flushed in time");
        }
        self.finished.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.poller).await;
        let s = monitor.view();
        tracing::info!(
            published = s.published,
            dropped = s.dropped,
            "MQTT bridge stopped"
        );
    }
}

/// Reads the bridge's counters.
#[derive(Clone)]
pub struct Monitor {
    stats: Arc<Stats>,
    budget: Arc<Semaphore>,
    capacity: usize,
}

impl Monitor {
    pub fn view(&self) -> StatsView {
        let queued = self
            .capacity
            .saturating_sub(self.budget.available_permits()) as u64;
        stats_view(&self.stats, queued)
    }
}

fn stats_view(s: &Stats, queued: u64) -> StatsView {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    StatsView {
        connected: s.connected.load(Ordering::Relaxed),
        published: l(&s.published),
        dropped: l(&s.dropped),
        nacked: l(&s.nacked),
        queued,
        control_published: l(&s.control_published),
        control_dropped: l(&s.control_dropped),
        commands_received: l(&s.commands_received),
        connects: l(&s.connects),
    }
}

/// A log line at most every `every`, saying how many events it stands for,
/// so that a broker outage under load does not flood the log.
#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    last: std::sync::Mutex<Option<tokio::time::Instant>>,
    pending: AtomicU64,
}

impl RateLimited {
    pub fn new(every: Duration) -> Self {
        RateLimited {
            every,
            last: std::sync::Mutex::new(None),
            pending: AtomicU64::new(0),
        }
    }

    /// Record `n` events; returns the count to log when a line is due.
    pub fn hit(&self, n: u64) -> Option<u64> {
        self.pending.fetch_add(n, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            return None;
        }
        *last = Some(now);
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_sums_what_it_skipped() {
        let r = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(r.hit(3), Some(3));
        assert_eq!(r.hit(1), None);
        assert_eq!(r.hit(2), None);
        // As if the interval had passed.
        *r.last.lock().unwrap() = None;
        assert_eq!(r.hit(1), Some(4));
    }
}
