//! Stats written to InfluxDB every interval, next to the devices' data, so
//! Grafana can show per-device numbers that would be too many labels for
//! Prometheus:
//!
//! - `wsingest_device` (tags `device`, `instance`): per device that changed
//!   in the interval (and online devices every [`IDLE_DEVICE_EVERY`]), the interval's `messages`, `points`, `bytes`,
//!   `errors`, `acks`, `sessions_opened` (integers), their rates
//!   `messages_per_s`, `points_per_s`, `bytes_per_s` (floats), `sessions`
//!   open now, `online` (0/1) and `last_seen_ms` (epoch ms).
//! - `wsingest_stats` (tag `instance`): the service's totals for the interval
//!   and its gauges (see [`stats_point`]).
//!   The string field `measurement` names the device's last measurement (the
//!   Grafana "Device detail" dashboard charts that one).
//! - `wsingest_measurement` (tags `measurement`, `instance`): points received
//!   per measurement in the interval, `points` and `points_per_s`.
//! - `wsingest_session` (tags `device`, `instance`, `code`): one point per
//!   session that ended, with its duration, messages, points and reason.
//!
//! They travel through the same pipeline as device data (batching, retries,
//! spool) with their own outcome channel. A full pipeline skips a sample
//! (counted in `wsingest_stats_dropped_total`) rather than holding devices up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::fleet::{ClosedSession, DeviceCounters, DeviceStats, Fleet};
use crate::metrics::Snapshot;
use crate::pipeline::{Entry, Outcome, Pipeline, Reply};
use wsingest_proto::clock::wall_ns;
use wsingest_proto::point::{FieldValue, Point};

/// Measurement names, shared with the Grafana dashboards.
pub const DEVICE_MEASUREMENT: &str = "wsingest_device";
pub const STATS_MEASUREMENT: &str = "wsingest_stats";
pub const SESSION_MEASUREMENT: &str = "wsingest_session";
pub const MEASUREMENT_MEASUREMENT: &str = "wsingest_measurement";

/// An online device that sent nothing is written every this many intervals
/// (a heartbeat for "online" and "last seen"), not every interval: 100k idle
/// sessions would otherwise cost InfluxDB 10k points/s at the default 10 s.
pub const IDLE_DEVICE_EVERY: u32 = 6;

/// Samples waiting for their outcome at once.
const OUTSTANDING: usize = 8;

/// Start the writer; it writes a last sample when `stop` fires, then ends.
pub fn spawn(
    fleet: Arc<Fleet>,
    pipeline: Pipeline,
    interval: Duration,
    instance: String,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(fleet, pipeline, interval, instance, stop))
}

/// The `instance` tag: configured, else the host name, else `wsingest`.
pub fn instance_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    // The host name becomes a tag value: keep it to a safe alphabet.
    let clean: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    if clean.is_empty() {
        "wsingest".into()
    } else {
        clean
    }
}

async fn run(
    fleet: Arc<Fleet>,
    pipeline: Pipeline,
    interval: Duration,
    instance: String,
    stop: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<Outcome>(OUTSTANDING);
    let mut sampler = Sampler::new(instance, fleet.metrics().snapshot());
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        let last_round = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        while let Ok(outcome) = rx.try_recv() {
            if let Outcome::Nacked(n) = outcome {
                tracing::warn!(
                    error = n.error,
                    detail = n.detail,
                    "stats sample not written"
                );
            }
        }
        let elapsed = last.elapsed();
        last = Instant::now();
        let lines = sampler.sample(&fleet, elapsed, wall_ns());
        if !lines.is_empty() {
            let metrics = fleet.metrics();
            match tx.clone().try_reserve_owned() {
                Ok(permit) => {
                    let points = lines.iter().filter(|&&b| b == b'\n').count() as u32;
                    let entry = Entry {
                        lines,
                        points,
                        reply: Reply::new(None, permit),
                    };
                    let wait = interval.min(Duration::from_secs(1));
                    if !matches!(
                        tokio::time::timeout(wait, pipeline.send(entry)).await,
                        Ok(Ok(()))
                    ) {
                        metrics.stats_dropped.inc();
                    }
                }
                // Earlier samples are still on their way: the database is slow.
                Err(_) => {
                    metrics.stats_dropped.inc();
                }
            }
        }
        fleet.sweep();
        if last_round {
            break;
        }
    }
}

/// A device's counters at the last sample, and how many samples ago it was
/// last written.
struct PrevDevice {
    stats: Arc<DeviceStats>,
    counters: DeviceCounters,
    unwritten: u32,
}

/// Turns counters into points; remembers the previous values for deltas.
pub struct Sampler {
    instance: String,
    prev: Snapshot,
    prev_devices: HashMap<Arc<str>, PrevDevice>,
    prev_measurements: HashMap<Arc<str>, u64>,
    /// Session records written so far: their nanosecond offset.
    sessions_written: u64,
}

impl Sampler {
    pub fn new(instance: String, start: Snapshot) -> Self {
        Sampler {
            instance,
            prev: start,
            prev_devices: HashMap::new(),
            prev_measurements: HashMap::new(),
            sessions_written: 0,
        }
    }

    /// Line protocol for one interval of `elapsed` ending at `time_ns`.
    pub fn sample(&mut self, fleet: &Fleet, elapsed: Duration, time_ns: i64) -> Vec<u8> {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let mut out = Vec::with_capacity(4096);
        let mut devices = fleet.devices();
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        let mut next = HashMap::with_capacity(devices.len());
        let mut online = 0u64;
        for d in devices {
            let now = d.counters();
            // An entry evicted and created again starts from zero.
            let (before, unwritten) = match self.prev_devices.get(&d.id) {
                Some(p) if Arc::ptr_eq(&p.stats, &d) => (p.counters, p.unwritten),
                _ => (DeviceCounters::default(), 0),
            };
            if now.sessions_open > 0 {
                online += 1;
            }
            let delta = |a: u64, b: u64| a.saturating_sub(b);
            let messages = delta(now.messages, before.messages);
            // Written when any counter changed, and online devices at least
            // every IDLE_DEVICE_EVERY. Any counter, not only `messages`: a
            // message's points and ack are counted after the message itself
            // (its ack only once the sink has it), so a sample between them
            // leaves deltas that the next interval must write.
            let changed = now != before;
            let heartbeat = now.sessions_open > 0 && unwritten + 1 >= IDLE_DEVICE_EVERY;
            let write = changed || heartbeat;
            if write {
                let points = delta(now.points, before.points);
                let bytes = delta(now.bytes, before.bytes);
                let mut p = Point {
                    measurement: DEVICE_MEASUREMENT.into(),
                    tags: vec![
                        ("device".into(), d.id.to_string()),
                        ("instance".into(), self.instance.clone()),
                    ],
                    fields: vec![
                        int("acks", delta(now.acks, before.acks)),
                        int("bytes", bytes),
                        float("bytes_per_s", bytes as f64 / secs),
                        int("errors", delta(now.errors, before.errors)),
                        int("last_seen_ms", now.last_seen_ms.max(0) as u64),
                        int("messages", messages),
                        float("messages_per_s", messages as f64 / secs),
                        int("online", u64::from(now.sessions_open > 0)),
                        int("points", points),
                        float("points_per_s", points as f64 / secs),
                        int("sessions", now.sessions_open.max(0) as u64),
                        int(
                            "sessions_opened",
                            delta(now.sessions_opened, before.sessions_opened),
                        ),
                    ],
                    time_ns,
                    int_fields: true,
                };
                if let Some(m) = d.last_measurement() {
                    p.fields.push(("measurement".into(), FieldValue::Str(m)));
                }
                wsingest_proto::lineproto::encode_point(&p, &mut out);
            }
            let unwritten = if write { 0 } else { unwritten + 1 };
            next.insert(
                d.id.clone(),
                PrevDevice {
                    stats: d,
                    counters: now,
                    unwritten,
                },
            );
        }
        self.prev_devices = next;

        let mut measurements = fleet.measurement_points();
        measurements.sort();
        for (name, total) in &measurements {
            let before = self.prev_measurements.get(name).copied().unwrap_or(0);
            let points = total.saturating_sub(before);
            if points > 0 {
                let p = Point {
                    measurement: MEASUREMENT_MEASUREMENT.into(),
                    tags: vec![
                        ("instance".into(), self.instance.clone()),
                        ("measurement".into(), name.to_string()),
                    ],
                    fields: vec![
                        int("points", points),
                        float("points_per_s", points as f64 / secs),
                    ],
                    time_ns,
                    int_fields: true,
                };
                wsingest_proto::lineproto::encode_point(&p, &mut out);
            }
        }
        self.prev_measurements = measurements.into_iter().collect();

        let now = fleet.metrics().snapshot();
        let p = stats_point(&self.instance, &self.prev, &now, online, secs, time_ns);
        wsingest_proto::lineproto::encode_point(&p, &mut out);
        self.prev = now;

        let (closed, dropped) = fleet.take_closed();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "session history records dropped: too many sessions ended in one interval"
            );
        }
        for s in &closed {
            // Distinct timestamps so two sessions of a device ending in the same
            // millisecond do not overwrite each other, in one interval or two.
            let offset = (self.sessions_written % 1_000_000) as i64;
            self.sessions_written += 1;
            wsingest_proto::lineproto::encode_point(
                &session_point(&self.instance, s, offset),
                &mut out,
            );
        }
        out
    }
}

/// The `wsingest_stats` point: interval deltas of the counters, their rates,
/// and the gauges as they are now.
pub fn stats_point(
    instance: &str,
    a: &Snapshot,
    b: &Snapshot,
    online: u64,
    secs: f64,
    time_ns: i64,
) -> Point {
    let d = |x: u64, y: u64| y.saturating_sub(x);
    let batches = d(a.batches, b.batches);
    let writes = d(a.writes, b.writes);
    let mean = |sum: f64, n: u64| if n == 0 { 0.0 } else { sum / n as f64 };
    let messages = d(a.messages, b.messages);
    let points = d(a.points, b.points);
    let bytes = d(a.bytes, b.bytes);
    let written = d(a.points_written, b.points_written);
    let mut fields = vec![
        int("acks", d(a.acks, b.acks)),
        float(
            "batch_points_mean",
            mean(b.batch_points_sum - a.batch_points_sum, batches),
        ),
        int("batches", batches),
        int("bridge_dropped", d(a.bridge_dropped, b.bridge_dropped)),
        int(
            "bridge_published",
            d(a.bridge_published, b.bridge_published),
        ),
        int("bytes", bytes),
        float("bytes_per_s", bytes as f64 / secs),
        int("dead_letters", d(a.dead_letters, b.dead_letters)),
        int("decode_errors", d(a.decode_errors, b.decode_errors)),
        int("devices_online", online),
        int("messages", messages),
        float("messages_per_s", messages as f64 / secs),
        int("nacks", d(a.nacks, b.nacks)),
        int("points", points),
        float("points_per_s", points as f64 / secs),
        int("points_written", written),
        float("points_written_per_s", written as f64 / secs),
        int("queue_depth", b.queue_depth.max(0) as u64),
        int("rate_limited", d(a.rate_limited, b.rate_limited)),
        int("replayed_points", d(a.replayed_points, b.replayed_points)),
        int("sessions_closed", d(a.sessions_closed, b.sessions_closed)),
        int("sessions_open", b.sessions_open.max(0) as u64),
        int("sessions_opened", d(a.sessions_opened, b.sessions_opened)),
        int("spool_bytes", b.spool_bytes.max(0) as u64),
        int(
            "spool_replay_pending_bytes",
            b.spool_replay_pending_bytes.max(0) as u64,
        ),
        int("spooled_points", d(a.spooled_points, b.spooled_points)),
        float(
            "write_latency_ms_mean",
            1000.0 * mean(b.write_seconds_sum - a.write_seconds_sum, writes),
        ),
        int("write_retries", d(a.write_retries, b.write_retries)),
        int("writes", writes),
    ];
    if let Some(rss) = resident_bytes() {
        fields.push(int("rss_bytes", rss));
    }
    Point {
        measurement: STATS_MEASUREMENT.into(),
        tags: vec![("instance".into(), instance.to_string())],
        fields,
        time_ns,
        int_fields: true,
    }
}

fn session_point(instance: &str, s: &ClosedSession, offset_ns: i64) -> Point {
    let code = crate::metrics::close_code_label(s.close_code);
    let mut fields = vec![
        float(
            "duration_s",
            (s.closed_ms - s.opened_ms).max(0) as f64 / 1000.0,
        ),
        int("messages", s.messages),
        int("opened_ms", s.opened_ms.max(0) as u64),
        int("points", s.points),
    ];
    if !s.reason.is_empty() {
        // The reason can come from a device's own close frame: keep only what
        // line protocol carries as a string field.
        let reason: String = s.reason.chars().filter(|c| !c.is_control()).collect();
        fields.push(("reason".into(), FieldValue::Str(reason)));
    }
    Point {
        measurement: SESSION_MEASUREMENT.into(),
        tags: vec![
            ("code".into(), code.to_string()),
            ("device".into(), s.device.to_string()),
            ("instance".into(), instance.to_string()),
        ],
        fields,
        time_ns: s.closed_ms * 1_000_000 + offset_ns,
        int_fields: true,
    }
}

fn int(name: &str, v: u64) -> (String, FieldValue) {
    (name.to_string(), FieldValue::UInt(v))
}

fn float(name: &str, v: f64) -> (String, FieldValue) {
    (
        name.to_string(),
        FieldValue::Float(if v.is_finite() { v } else { 0.0 }),
    )
}

/// Resident memory of this process, from /proc (Linux only).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn deltas_rates_and_idle_devices() {
        let metrics = Arc::new(Metrics::new());
        let fleet = Arc::new(Fleet::new(metrics.clone(), Duration::from_secs(600), 100));
        let mut s = Sampler::new("i1".into(), metrics.snapshot());
        let g = fleet.open_session("dev-a");
        g.observer().message(100);
        g.observer().points(vec![]);
        fleet.open_session("dev-b").close(Some(1000), "bye");
        let text = String::from_utf8(s.sample(&fleet, Duration::from_secs(2), 1_000)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(
                "wsingest_device,device=dev-a,instance=i1 acks=0i,bytes=100i,bytes_per_s=50.0,"
            ),
            "{text}"
        );
        assert!(
            lines[0].contains("online=1i") && lines[0].contains("sessions=1i"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("wsingest_device,device=dev-b,") && lines[1].contains("online=0i"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("wsingest_stats,instance=i1 "),
            "{text}"
        );
        assert!(
            lines[2].contains("devices_online=1i") && lines[2].contains("sessions_opened=2i"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("wsingest_session,code=1000,device=dev-b,instance=i1 "),
            "{text}"
        );
        assert_eq!(lines.len(), 4);
        // Next intervals: both idle, so only the stats, until dev-a (online)
        // is due for its heartbeat; dev-b (offline) stays unwritten.
        for i in 1..IDLE_DEVICE_EVERY {
            let text = String::from_utf8(s.sample(&fleet, Duration::from_secs(2), 2_000)).unwrap();
            assert_eq!(text.lines().count(), 1, "interval {i}: {text}");
        }
        let text = String::from_utf8(s.sample(&fleet, Duration::from_secs(2), 2_000)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.starts_with("wsingest_device,device=dev-a,"), "{text}");
        assert!(
            text.contains("bytes=0i") && text.contains("sessions_opened=0i"),
            "{text}"
        );
        // A message makes it due at once.
        g.observer().message(1);
        let text = String::from_utf8(s.sample(&fleet, Duration::from_secs(2), 3_000)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        drop(g);
    }

    /// A sample taken between a message and its points and ack (which the
    /// session counts later, the ack once the sink has the points) loses
    /// nothing: the next interval writes the rest.
    #[test]
    fn counts_landing_after_a_sample_are_written_in_the_next() {
        let metrics = Arc::new(Metrics::new());
        let fleet = Arc::new(Fleet::new(metrics.clone(), Duration::from_secs(600), 100));
        let mut s = Sampler::new("i1".into(), metrics.snapshot());
        let g = fleet.open_session("dev-a");
        g.observer().message(10);
        let first = String::from_utf8(s.sample(&fleet, Duration::from_secs(1), 1_000)).unwrap();
        assert!(
            first.contains(" acks=0i,") && first.contains(",points=0i,"),
            "{first}"
        );
        let point = Point {
            measurement: "m".into(),
            tags: vec![],
            fields: vec![("v".into(), FieldValue::Float(1.0))],
            time_ns: 0,
            int_fields: false,
        };
        g.observer().points(vec![point.clone(), point]);
        g.observer().acked();
        let next = String::from_utf8(s.sample(&fleet, Duration::from_secs(1), 2_000)).unwrap();
        let device = next.lines().next().unwrap();
        assert!(
            device.starts_with("wsingest_device,device=dev-a,"),
            "{next}"
        );
        assert!(
            device.contains(" acks=1i,")
                && device.contains(",points=2i,")
                && device.contains(",messages=0i,"),
            "{next}"
        );
        drop(g);
    }
}
