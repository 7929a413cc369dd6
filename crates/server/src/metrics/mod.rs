//! Prometheus metrics of one server instance, served at `GET /metrics`.
//!
//! One [`Metrics`] per server, shared as `Arc<Metrics>`: the handles are
//! plain fields (prometheus-client metrics are atomics behind an `Arc`), so
//! instrumenting a code path is one method call and no macro. Labels are
//! bounded sets only (close codes, error codes, status classes): per-device
//! numbers would explode a Prometheus server's cardinality, so they go to
//! InfluxDB instead (see [`crate::stats`]).
//!
//! Other parts of the service get small handles they can keep:
//! [`SpoolMetrics`] for the disk spool and [`BridgeMetrics`] for the MQTT
//! bridge, both `Clone` and cheap; [`WriterMetrics`] for a queue-mode
//! writer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

mod writer;
pub use writer::WriterMetrics;

/// A label set of one bounded label; values are `&'static str` so that no
/// caller can turn a device-controlled string into a new series.
pub type Label = [(&'static str, &'static str); 1];

type CounterFamily = Family<Label, Counter>;

/// `format` (a name from the config: presets and `[formats.*]`, so bounded)
/// and `outcome` (`ok` or a decoder error code).
/// The name is shared with the mapping, so counting allocates nothing.
type FormatLabels = ([(&'static str, Arc<str>); 1], Label);

/// One label of a label set (here: none of them, see `influxdb_up`).
type Label1 = (&'static str, &'static str);

/// Every metric of the service. Fields are public handles; use the methods
/// for the labelled ones so label names stay consistent.
pub struct Metrics {
    registry: Registry,
    /// The security layer's counters (refusals, limits), in this registry.
    pub security: crate::limits::metrics::Metrics,
    pub sessions_open: Gauge,
    pub sessions_opened: Counter,
    sessions_closed: CounterFamily,
    pub handshakes_refused: CounterFamily,
    pub messages: Counter,
    pub points: Counter,
    pub bytes: Counter,
    decode_errors: CounterFamily,
    formats: Family<FormatLabels, Counter>,
    nacks: CounterFamily,
    pub acks: Counter,
    pub rate_limited: Counter,
    pub queue_depth: Gauge,
    pub batch_points: Histogram,
    pub batch_bytes: Histogram,
    pub write_duration: Histogram,
    write_requests: CounterFamily,
    pub write_retries: Counter,
    pub points_written: Counter,
    pub dead_letters: Counter,
    pub stats_dropped: Counter,
    /// No label; the one series exists once an InfluxDB sink reported, so
    /// processes that do not write to InfluxDB (a queue gateway, blackhole)
    /// export none rather than a made-up value.
    influxdb_up: Family<[Label1; 0], Gauge>,
    spool: SpoolMetrics,
    bridge: BridgeMetrics,
    writer: WriterMetrics,
    /// Plain copies of a few counters for the stats writer and live view,
    /// which need totals without parsing the text format.
    totals: Totals,
}

/// Totals kept as plain atomics next to the labelled families, whose
/// per-label values are awkward to sum.
#[derive(Default)]
struct Totals {
    decode_errors: AtomicU64,
    nacks: AtomicU64,
    sessions_closed: AtomicU64,
}

/// The spool's metrics: its size now and how far replay has got.
#[derive(Clone, Default)]
pub struct SpoolMetrics {
    pub bytes: Gauge,
    /// `spool.max_bytes` (0: no spool), for alerts on how full it is.
    pub max_bytes: Gauge,
    pub records: Gauge,
    pub spooled_points: Counter,
    pub spooled_bytes: Counter,
    pub replayed_points: Counter,
    pub replayed_bytes: Counter,
    /// Bytes still to replay; 0 when the spool is drained.
    pub replay_pending_bytes: Gauge,
}

impl SpoolMetrics {
    /// The spool's current size on disk.
    pub fn set_size(&self, bytes: u64, records: u64) {
        self.bytes.set(bytes as i64);
        self.records.set(records as i64);
    }

    /// A batch went to the spool instead of InfluxDB.
    pub fn spooled(&self, points: u64, bytes: u64) {
        self.spooled_points.inc_by(points);
        self.spooled_bytes.inc_by(bytes);
    }

    /// A spooled batch reached InfluxDB; `pending_bytes` is what is left.
    pub fn replayed(&self, points: u64, bytes: u64, pending_bytes: u64) {
        self.replayed_points.inc_by(points);
        self.replayed_bytes.inc_by(bytes);
        self.replay_pending_bytes.set(pending_bytes as i64);
    }
}

/// The MQTT bridge's metrics.
#[derive(Clone, Default)]
pub struct BridgeMetrics {
    pub published: Counter,
    dropped: CounterFamily,
    dropped_total: Counter,
}

impl BridgeMetrics {
    /// A point (or message) was published to the broker.
    pub fn published(&self, n: u64) {
        self.published.inc_by(n);
    }

    /// Messages dropped, e.g. `"queue_full"`, `"disconnected"`.
    pub fn dropped(&self, reason: &'static str, n: u64) {
        self.dropped.get_or_create(&[("reason", reason)]).inc_by(n);
        self.dropped_total.inc_by(n);
    }

    pub fn published_total(&self) -> u64 {
        self.published.get()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.get()
    }
}

/// A snapshot of the totals, for [`crate::stats`] and the live view.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub sessions_open: i64,
    pub sessions_opened: u64,
    pub sessions_closed: u64,
    pub messages: u64,
    pub points: u64,
    pub bytes: u64,
    pub decode_errors: u64,
    pub nacks: u64,
    pub acks: u64,
    pub rate_limited: u64,
    pub queue_depth: i64,
    pub batches: u64,
    pub batch_points_sum: f64,
    pub writes: u64,
    pub write_seconds_sum: f64,
    pub write_retries: u64,
    pub points_written: u64,
    pub dead_letters: u64,
    pub spool_bytes: i64,
    pub spool_replay_pending_bytes: i64,
    pub spooled_points: u64,
    pub replayed_points: u64,
    pub bridge_published: u64,
    pub bridge_dropped: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("wsingest");
        let m = Metrics {
            sessions_open: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_closed: CounterFamily::default(),
            handshakes_refused: CounterFamily::default(),
            messages: Counter::default(),
            points: Counter::default(),
            bytes: Counter::default(),
            decode_errors: CounterFamily::default(),
            formats: Family::default(),
            influxdb_up: Family::default(),
            nacks: CounterFamily::default(),
            acks: Counter::default(),
            rate_limited: Counter::default(),
            queue_depth: Gauge::default(),
            // 1 .. ~1M points, and 256 B .. 64 MiB.
            batch_points: Histogram::new(exponential_buckets(1.0, 4.0, 11)),
            batch_bytes: Histogram::new(exponential_buckets(256.0, 4.0, 10)),
            // 1 ms .. ~33 s.
            write_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            write_requests: CounterFamily::default(),
            write_retries: Counter::default(),
            points_written: Counter::default(),
            dead_letters: Counter::default(),
            stats_dropped: Counter::default(),
            spool: SpoolMetrics::default(),
            bridge: BridgeMetrics::default(),
            writer: WriterMetrics::default(),
            totals: Totals::default(),
            registry: Registry::default(),
            security: crate::limits::metrics::Metrics::new(),
        };
        m.security.register(&mut r);
        r.register(
            "sessions_open",
            "Device sessions open now",
            m.sessions_open.clone(),
        );
        r.register(
            "sessions_opened",
            "Device sessions opened",
            m.sessions_opened.clone(),
        );
        r.register(
            "sessions_closed",
            "Device sessions closed, by the close code the server sent (device: the device closed it; dropped: the connection was lost without a close)",
            m.sessions_closed.clone(),
        );
        // Not `handshakes_refused`: that family, by reason, is the security
        // layer's (`limits::metrics`), and a family declared twice breaks
        // strict parsers (OpenMetrics "clashing name").
        r.register(
            "handshakes_refused_by_status",
            "WebSocket handshakes refused before the upgrade, by HTTP status",
            m.handshakes_refused.clone(),
        );
        r.register(
            "messages",
            "WebSocket data messages received from devices",
            m.messages.clone(),
        );
        r.register(
            "points",
            "Points decoded and queued for writing",
            m.points.clone(),
        );
        r.register_with_unit(
            "received",
            "Payload bytes of data messages received",
            Unit::Bytes,
            m.bytes.clone(),
        );
        r.register(
            "decode_errors",
            "Messages refused by the decoder, by error code",
            m.decode_errors.clone(),
        );
        r.register(
            "format_messages",
            "Messages in a device format (?format=, [[mqtt.subscribe]]), by format and outcome (ok or the error code)",
            m.formats.clone(),
        );
        r.register(
            "nacks",
            "Negative acknowledgements sent, by error code",
            m.nacks.clone(),
        );
        r.register("acks", "Messages acknowledged as durable", m.acks.clone());
        r.register(
            "rate_limited",
            "Messages refused by a rate limit",
            m.rate_limited.clone(),
        );
        r.register(
            "queue_depth",
            "Messages waiting in the pipeline queue",
            m.queue_depth.clone(),
        );
        r.register(
            "batch_points",
            "Points per InfluxDB write batch",
            m.batch_points.clone(),
        );
        r.register_with_unit(
            "batch",
            "Bytes per InfluxDB write batch",
            Unit::Bytes,
            m.batch_bytes.clone(),
        );
        r.register_with_unit(
            "write_duration",
            "Duration of each InfluxDB write request (every attempt)",
            Unit::Seconds,
            m.write_duration.clone(),
        );
        r.register(
            "write_requests",
            "InfluxDB write requests by outcome (2xx, 4xx, 5xx, error)",
            m.write_requests.clone(),
        );
        r.register(
            "write_retries",
            "InfluxDB write attempts that were retried",
            m.write_retries.clone(),
        );
        r.register(
            "points_written",
            "Points InfluxDB accepted",
            m.points_written.clone(),
        );
        r.register(
            "dead_letters",
            "Messages InfluxDB refused, sent to the dead-letter file",
            m.dead_letters.clone(),
        );
        r.register(
            "influxdb_up",
            "1 while InfluxDB takes this process's writes, 0 during an outage (failed writes or checks; /readyz says why)",
            m.influxdb_up.clone(),
        );
        r.register(
            "stats_dropped",
            "Stats samples (wsingest_device, wsingest_stats) skipped because the pipeline was full",
            m.stats_dropped.clone(),
        );
        let s = &m.spool;
        r.register_with_unit("spool", "Spool size on disk", Unit::Bytes, s.bytes.clone());
        r.register_with_unit(
            "spool_max",
            "The spool's bound (spool.max_bytes); 0 without a spool",
            Unit::Bytes,
            s.max_bytes.clone(),
        );
        r.register("spool_records", "Batches in the spool", s.records.clone());
        r.register(
            "spool_written_points",
            "Points written to the spool",
            s.spooled_points.clone(),
        );
        r.register_with_unit(
            "spool_written",
            "Bytes written to the spool",
            Unit::Bytes,
            s.spooled_bytes.clone(),
        );
        r.register(
            "spool_replayed_points",
            "Spooled points replayed into InfluxDB",
            s.replayed_points.clone(),
        );
        r.register_with_unit(
            "spool_replayed",
            "Spooled bytes replayed into InfluxDB",
            Unit::Bytes,
            s.replayed_bytes.clone(),
        );
        r.register_with_unit(
            "spool_replay_pending",
            "Spooled bytes still to replay",
            Unit::Bytes,
            s.replay_pending_bytes.clone(),
        );
        let b = &m.bridge;
        r.register(
            "bridge_published",
            "Messages published to the MQTT broker",
            b.published.clone(),
        );
        r.register(
            "bridge_dropped",
            "Bridge messages dropped, by reason",
            b.dropped.clone(),
        );
        m.writer.register(&mut r);
        Metrics { registry: r, ..m }
    }

    /// The queue-mode writer's handle.
    pub fn writer(&self) -> WriterMetrics {
        self.writer.clone()
    }

    /// The spool's handle.
    pub fn spool(&self) -> SpoolMetrics {
        self.spool.clone()
    }

    /// The MQTT bridge's handle.
    pub fn bridge(&self) -> BridgeMetrics {
        self.bridge.clone()
    }

    /// A session ended (`Some(code)`: the close code we sent); counted by
    /// code, and by the server's own closes.
    pub fn session_closed(&self, end: impl Into<SessionEnd>) {
        let end = end.into();
        if let SessionEnd::Server(code) = end {
            self.security.session_closed(Some(code));
        }
        self.sessions_closed
            .get_or_create(&[("code", close_code_label(end))])
            .inc();
        self.totals.sessions_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// The decoder refused a message (and a nack was sent for it).
    pub fn decode_error(&self, code: &'static str) {
        self.decode_errors.get_or_create(&[("reason", code)]).inc();
        self.totals.decode_errors.fetch_add(1, Ordering::Relaxed);
        self.nack(code);
    }

    /// A message in device format `format` was decoded (`outcome` "ok") or
    /// refused (`outcome`: the error code).
    pub fn format_message(&self, format: &Arc<str>, outcome: &'static str) {
        self.formats
            .get_or_create(&([("format", format.clone())], [("outcome", outcome)]))
            .inc();
    }

    /// Whether InfluxDB takes writes now (`wsingest_influxdb_up`).
    pub fn influxdb_up(&self, up: bool) {
        self.influxdb_up.get_or_create(&[]).set(i64::from(up));
    }

    /// A nack was sent for `code`.
    pub fn nack(&self, code: &'static str) {
        self.nacks.get_or_create(&[("reason", code)]).inc();
        self.totals.nacks.fetch_add(1, Ordering::Relaxed);
    }

    /// A handshake was refused with `status` before the upgrade.
    pub fn handshake_refused(&self, status: u16) {
        self.handshakes_refused
            .get_or_create(&[("status", status_label(status))])
            .inc();
    }

    /// One InfluxDB write attempt ended with `status` (`None`: no answer).
    pub fn write_request(&self, status: Option<u16>, seconds: f64) {
        let class = match status {
            Some(200..=299) => "2xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "error",
        };
        self.write_requests
            .get_or_create(&[("outcome", class)])
            .inc();
        self.write_duration.observe(seconds);
    }

    /// The value of a nack counter (for tests and the live view).
    pub fn nacks_for(&self, code: &'static str) -> u64 {
        self.nacks.get_or_create(&[("reason", code)]).get()
    }

    /// The value of a closed-sessions counter.
    pub fn sessions_closed_with(&self, end: impl Into<SessionEnd>) -> u64 {
        self.sessions_closed
            .get_or_create(&[("code", close_code_label(end))])
            .get()
    }

    pub fn snapshot(&self) -> Snapshot {
        let (batches, batch_points_sum) = histogram_count_sum(&self.batch_points);
        let (writes, write_seconds_sum) = histogram_count_sum(&self.write_duration);
        Snapshot {
            sessions_open: self.sessions_open.get(),
            sessions_opened: self.sessions_opened.get(),
            sessions_closed: self.totals.sessions_closed.load(Ordering::Relaxed),
            messages: self.messages.get(),
            points: self.points.get(),
            bytes: self.bytes.get(),
            decode_errors: self.totals.decode_errors.load(Ordering::Relaxed),
            nacks: self.totals.nacks.load(Ordering::Relaxed),
            acks: self.acks.get(),
            rate_limited: self.rate_limited.get(),
            queue_depth: self.queue_depth.get(),
            batches,
            batch_points_sum,
            writes,
            write_seconds_sum,
            write_retries: self.write_retries.get(),
            points_written: self.points_written.get(),
            dead_letters: self.dead_letters.get(),
            spool_bytes: self.spool.bytes.get(),
            spool_replay_pending_bytes: self.spool.replay_pending_bytes.get(),
            spooled_points: self.spool.spooled_points.get(),
            replayed_points: self.spool.replayed_points.get(),
            bridge_published: self.bridge.published.get(),
            bridge_dropped: self.bridge.dropped_total.get(),
        }
    }

    /// The Prometheus text format (0.0.4), which every scraper reads.
    pub fn encode_prometheus(&self) -> String {
        let mut out = String::with_capacity(8192);
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The OpenMetrics text format, for scrapers that ask for it.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::with_capacity(8192);
        text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Content types of the two encodings.
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Count and sum of a histogram, read back through its own encoder: the
/// crate keeps them private, and this runs once per stats interval only.
fn histogram_count_sum(h: &Histogram) -> (u64, f64) {
    let mut r = Registry::default();
    r.register("h", "", h.clone());
    let mut s = String::new();
    if prometheus_text::encode(&mut s, &r).is_err() {
        return (0, 0.0);
    }
    let mut count = 0;
    let mut sum = 0.0;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("h_count ") {
            count = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("h_sum ") {
            sum = v.trim().parse().unwrap_or(0.0);
        }
    }
    (count, sum)
}

/// How a session ended: the close code the server sent, or who else ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The server closed it with this code.
    Server(u16),
    /// The device sent a Close frame (answered with the closing handshake).
    Device,
    /// The connection was lost without a closing handshake.
    Dropped,
}

impl From<Option<u16>> for SessionEnd {
    fn from(code: Option<u16>) -> Self {
        code.map_or(SessionEnd::Dropped, SessionEnd::Server)
    }
}

/// How a session ended, as a label value: the codes we send, `device` or
/// `dropped` (a bounded set).
pub fn close_code_label(end: impl Into<SessionEnd>) -> &'static str {
    let code = match end.into() {
        SessionEnd::Device => return "device",
        SessionEnd::Dropped => return "dropped",
        SessionEnd::Server(c) => Some(c),
    };
    match code {
        None => "none",
        Some(1000) => "1000",
        Some(1001) => "1001",
        Some(1002) => "1002",
        Some(1007) => "1007",
        Some(1008) => "1008",
        Some(1009) => "1009",
        Some(1011) => "1011",
        Some(1013) => "1013",
        Some(_) => "other",
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        426 => "426",
        429 => "429",
        503 => "503",
        _ => "other",
    }
}

/// The value of one sample (`name{labels}`) in a text exposition; for tests.
pub fn find_sample(text: &str, sample: &str) -> Option<f64> {
    let mut buf = String::new();
    let _ = write!(buf, "{sample} ");
    text.lines()
        .find_map(|l| l.strip_prefix(buf.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests;
