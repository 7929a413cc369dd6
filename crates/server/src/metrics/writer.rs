//! The writer's metrics (queue mode, `wsingest writer`): what it fetched
//! from the JetStream consumer and how each message was settled, and the
//! consumer's backlog.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A queue-mode writer's counters (`wsingest_writer_*`), set by
/// `queue::writer`. Registered in every [`super::Metrics`], like the spool's
/// and the bridge's: a gateway exports them as zeros.
#[derive(Clone, Default)]
pub struct WriterMetrics {
    pub fetched: Counter,
    pub acked: Counter,
    pub naks: Counter,
    pub dead_lettered: Counter,
    pub consumer_pending: Gauge,
    pub consumer_ack_pending: Gauge,
    pub consumer_redelivered: Gauge,
}

impl WriterMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "writer_fetched",
            "JetStream messages this writer fetched from the consumer",
            self.fetched.clone(),
        );
        r.register(
            "writer_acked",
            "JetStream messages acked after InfluxDB's 2xx",
            self.acked.clone(),
        );
        r.register(
            "writer_naks",
            "JetStream messages nak'd (delivered again later) because InfluxDB was unavailable",
            self.naks.clone(),
        );
        r.register(
            "writer_dead_lettered",
            "JetStream messages InfluxDB refused, written to the dead-letter file and acked",
            self.dead_lettered.clone(),
        );
        r.register(
            "writer_consumer_pending",
            "Messages in the stream not yet delivered to any writer (the consumer's backlog)",
            self.consumer_pending.clone(),
        );
        r.register(
            "writer_consumer_ack_pending",
            "Messages delivered to writers and not yet acked",
            self.consumer_ack_pending.clone(),
        );
        r.register(
            "writer_consumer_redelivered",
            "Messages delivered more than once and not yet acked",
            self.consumer_redelivered.clone(),
        );
    }
}
