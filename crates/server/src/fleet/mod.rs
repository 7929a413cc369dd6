//! The fleet as this instance sees it: one [`DeviceStats`] per device that
//! has connected recently, the last errors, and the sessions that ended.
//!
//! Sessions update their device's entry with atomics (and one uncontended
//! mutex for the last point), so the hot path never takes the fleet-wide
//! lock: that is taken only when a session opens or closes, when an error is
//! recorded, and by readers ([`crate::stats`] every interval, the live view
//! every second). Memory is bounded: entries of devices without a session
//! are evicted after `retention`, or at once when the fleet is over
//! `max_devices`; the error ring and the closed-session queue have caps.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::{Metrics, SessionEnd};
use wsingest_proto::point::Point;

/// Errors kept for the live view.
const MAX_ERRORS: usize = 100;
/// Closed sessions kept until the stats writer takes them.
const MAX_CLOSED: usize = 10_000;
/// Error details are cut to this many characters.
const MAX_DETAIL: usize = 240;
/// Measurements counted by name; the names come from devices, so the rest
/// are counted under [`OTHER_MEASUREMENTS`].
const MAX_MEASUREMENTS: usize = 1000;
pub const OTHER_MEASUREMENTS: &str = "_other";

/// Counters of one device, updated by its sessions.
#[derive(Debug)]
pub struct DeviceStats {
    pub id: Arc<str>,
    messages: AtomicU64,
    points: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    acks: AtomicU64,
    sessions_open: AtomicI64,
    sessions_opened: AtomicU64,
    last_seen_ms: AtomicI64,
    last: Mutex<Option<Point>>,
}

/// A copy of a device's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeviceCounters {
    pub messages: u64,
    pub points: u64,
    pub bytes: u64,
    pub errors: u64,
    pub acks: u64,
    pub sessions_open: i64,
    pub sessions_opened: u64,
    /// Epoch milliseconds of the last message (or of the session opening).
    pub last_seen_ms: i64,
}

impl DeviceStats {
    fn new(id: Arc<str>) -> Self {
        DeviceStats {
            id,
            messages: AtomicU64::new(0),
            points: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            sessions_open: AtomicI64::new(0),
            sessions_opened: AtomicU64::new(0),
            last_seen_ms: AtomicI64::new(now_ms()),
            last: Mutex::new(None),
        }
    }

    pub fn counters(&self) -> DeviceCounters {
        DeviceCounters {
            messages: self.messages.load(Ordering::Relaxed),
            points: self.points.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            acks: self.acks.load(Ordering::Relaxed),
            sessions_open: self.sessions_open.load(Ordering::Relaxed),
            sessions_opened: self.sessions_opened.load(Ordering::Relaxed),
            last_seen_ms: self.last_seen_ms.load(Ordering::Relaxed),
        }
    }

    /// The measurement of the last point this device sent.
    pub fn last_measurement(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.measurement.clone())
    }

    /// The last point this device sent.
    pub fn last_point(&self) -> Option<Point> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Something that went wrong, for the live view.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorEvent {
    pub time_ms: i64,
    pub device: Arc<str>,
    pub code: &'static str,
    pub detail: String,
}

/// A session that ended, for the `wsingest_session` history in InfluxDB.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedSession {
    pub device: Arc<str>,
    pub opened_ms: i64,
    pub closed_ms: i64,
    pub close_code: SessionEnd,
    pub reason: String,
    pub messages: u64,
    pub points: u64,
}

pub struct Fleet {
    metrics: Arc<Metrics>,
    devices: Mutex<HashMap<Arc<str>, Arc<DeviceStats>>>,
    errors: Mutex<VecDeque<ErrorEvent>>,
    closed: Mutex<VecDeque<ClosedSession>>,
    closed_dropped: AtomicU64,
    measurements: Mutex<HashMap<Arc<str>, Arc<AtomicU64>>>,
    retention: Duration,
    max_devices: usize,
}

impl Fleet {
    pub fn new(metrics: Arc<Metrics>, retention: Duration, max_devices: usize) -> Self {
        Fleet {
            metrics,
            devices: Mutex::new(HashMap::new()),
            errors: Mutex::new(VecDeque::with_capacity(MAX_ERRORS)),
            closed: Mutex::new(VecDeque::new()),
            closed_dropped: AtomicU64::new(0),
            measurements: Mutex::new(HashMap::new()),
            retention,
            max_devices: max_devices.max(1),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A session of `device` starts; the guard records its end.
    pub fn open_session(self: &Arc<Self>, device: &str) -> SessionGuard {
        let stats = self.entry(device);
        stats.sessions_open.fetch_add(1, Ordering::Relaxed);
        stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
        stats.last_seen_ms.store(now_ms(), Ordering::Relaxed);
        self.metrics.sessions_opened.inc();
        self.metrics.sessions_open.inc();
        let start = stats.counters();
        let observer = SessionObserver {
            measurement: Arc::new(Mutex::new(None)),
            fleet: self.clone(),
            device: stats,
        };
        SessionGuard {
            observer,
            opened_ms: start.last_seen_ms,
            start,
            closed: false,
        }
    }

    /// An observer for `device` outside a WebSocket session (HTTP fallback,
    /// gRPC): counts its traffic without counting a session.
    pub fn observe(self: &Arc<Self>, device: &str) -> SessionObserver {
        SessionObserver {
            measurement: Arc::new(Mutex::new(None)),
            fleet: self.clone(),
            device: self.entry(device),
        }
    }

    fn entry(&self, device: &str) -> Arc<DeviceStats> {
        let mut devices = lock(&self.devices);
        if let Some(d) = devices.get(device) {
            return d.clone();
        }
        if devices.len() >= self.max_devices {
            evict(&mut devices, None);
        }
        let d = Arc::new(DeviceStats::new(Arc::from(device)));
        devices.insert(d.id.clone(), d.clone());
        d
    }

    /// Points received per measurement since start.
    pub fn measurement_points(&self) -> Vec<(Arc<str>, u64)> {
        lock(&self.measurements)
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }

    fn measurement_counter(&self, name: &str) -> NamedCounter {
        let mut m = lock(&self.measurements);
        if let Some((k, v)) = m.get_key_value(name) {
            return (k.clone(), v.clone());
        }
        let key: Arc<str> = if m.len() < MAX_MEASUREMENTS {
            Arc::from(name)
        } else {
            Arc::from(OTHER_MEASUREMENTS)
        };
        let counter = m.entry(key.clone()).or_default().clone();
        // The session caches by the name it saw, even when counted as `_other`.
        (Arc::from(name), counter)
    }

    /// Every tracked device, in no particular order.
    pub fn devices(&self) -> Vec<Arc<DeviceStats>> {
        lock(&self.devices).values().cloned().collect()
    }

    /// How many devices have a session open now.
    pub fn online(&self) -> usize {
        lock(&self.devices)
            .values()
            .filter(|d| d.sessions_open.load(Ordering::Relaxed) > 0)
            .count()
    }

    pub fn device(&self, id: &str) -> Option<Arc<DeviceStats>> {
        lock(&self.devices).get(id).cloned()
    }

    /// The most recent errors, newest last.
    pub fn recent_errors(&self) -> Vec<ErrorEvent> {
        lock(&self.errors).iter().cloned().collect()
    }

    /// Take the sessions that ended since the last call, and how many were
    /// dropped because nobody took them in time.
    pub fn take_closed(&self) -> (Vec<ClosedSession>, u64) {
        let taken = lock(&self.closed).drain(..).collect();
        (taken, self.closed_dropped.swap(0, Ordering::Relaxed))
    }

    /// Forget devices without a session whose last activity is older than the
    /// retention. Called by the stats writer after it wrote their last numbers.
    pub fn sweep(&self) {
        let cutoff = now_ms() - self.retention.as_millis() as i64;
        evict(&mut lock(&self.devices), Some(cutoff));
    }

    fn error(&self, device: &Arc<str>, code: &'static str, detail: &str) {
        let detail: String = detail.chars().take(MAX_DETAIL).collect();
        let mut errors = lock(&self.errors);
        if errors.len() >= MAX_ERRORS {
            errors.pop_front();
        }
        errors.push_back(ErrorEvent {
            time_ms: now_ms(),
            device: device.clone(),
            code,
            detail,
        });
    }
}

/// Drop entries without a session: those idle since before `cutoff`, or all
/// of them when `cutoff` is `None` (the fleet is full).
fn evict(devices: &mut HashMap<Arc<str>, Arc<DeviceStats>>, cutoff: Option<i64>) {
    devices.retain(|_, d| {
        d.sessions_open.load(Ordering::Relaxed) > 0
            || cutoff.is_some_and(|c| d.last_seen_ms.load(Ordering::Relaxed) >= c)
    });
}

/// A measurement's name and its points counter.
type NamedCounter = (Arc<str>, Arc<AtomicU64>);

/// A session's handle on its device's counters. Cheap to clone.
#[derive(Clone)]
pub struct SessionObserver {
    fleet: Arc<Fleet>,
    device: Arc<DeviceStats>,
    /// The counter of the measurement this session sent last: devices send
    /// one measurement, so the fleet-wide map is rarely locked.
    measurement: Arc<Mutex<Option<NamedCounter>>>,
}

impl SessionObserver {
    /// A data message of `bytes` arrived.
    pub fn message(&self, bytes: usize) {
        let m = &self.fleet.metrics;
        m.messages.inc();
        m.bytes.inc_by(bytes as u64);
        self.device.messages.fetch_add(1, Ordering::Relaxed);
        self.device.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.device.last_seen_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A message's points were queued; the last one is kept for the live view
    /// (taken by value: the vector is done with, so this costs no copy).
    pub fn points(&self, mut points: Vec<Point>) {
        self.count_points(&points);
        if let Some(p) = points.pop() {
            *self.device.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        }
    }

    /// [`Self::points`] for a vector the caller reuses: the last point is
    /// swapped with the one kept before, which takes its place in `points`.
    pub fn points_swapped(&self, points: &mut Vec<Point>) {
        self.count_points(points);
        if let Some(p) = points.last_mut() {
            let mut last = self.device.last.lock().unwrap_or_else(|e| e.into_inner());
            match &mut *last {
                Some(kept) => std::mem::swap(kept, p),
                None => *last = points.pop(),
            }
        }
    }

    /// [`Self::points`] for points that go on elsewhere (the MQTT bridge):
    /// only the last one is copied.
    pub fn points_seen(&self, points: &[Point]) {
        self.count_points(points);
        if let Some(p) = points.last() {
            *self.device.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
        }
    }

    fn count_points(&self, points: &[Point]) {
        let n = points.len() as u64;
        self.fleet.metrics.points.inc_by(n);
        self.device.points.fetch_add(n, Ordering::Relaxed);
        let mut cached = lock(&self.measurement);
        for p in points {
            match &*cached {
                Some((name, counter)) if **name == *p.measurement => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    let (name, counter) = self.fleet.measurement_counter(&p.measurement);
                    counter.fetch_add(1, Ordering::Relaxed);
                    *cached = Some((name, counter));
                }
            }
        }
    }

    /// The decoder refused a message; a nack with `code` was sent.
    pub fn decode_error(&self, code: &'static str, detail: &str) {
        self.fleet.metrics.decode_error(code);
        self.device.errors.fetch_add(1, Ordering::Relaxed);
        self.fleet.error(&self.device.id, code, detail);
    }

    /// A message was refused by a rate limit (a `rate_limited` nack).
    pub fn rate_limited(&self, detail: &str) {
        self.fleet.metrics.rate_limited.inc();
        self.nacked("rate_limited", detail);
    }

    /// A message was refused by a per-device limit ([`crate::limits`]):
    /// counted as rate-limited or as a plain nack, by its error code.
    pub fn limited(&self, code: &'static str, detail: &str) {
        match code {
            "rate_limited" => self.rate_limited(detail),
            _ => self.nacked(code, detail),
        }
    }

    /// A message was acknowledged as durable.
    pub fn acked(&self) {
        self.fleet.metrics.acks.inc();
        self.device.acks.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was nacked after decoding (by the writer, a limit, ...).
    pub fn nacked(&self, code: &'static str, detail: &str) {
        self.fleet.metrics.nack(code);
        self.device.errors.fetch_add(1, Ordering::Relaxed);
        self.fleet.error(&self.device.id, code, detail);
    }

    pub fn device(&self) -> &Arc<DeviceStats> {
        &self.device
    }
}

/// Marks a session open until [`SessionGuard::close`] or drop (a panicking
/// session task still counts as closed).
pub struct SessionGuard {
    observer: SessionObserver,
    opened_ms: i64,
    start: DeviceCounters,
    closed: bool,
}

impl SessionGuard {
    pub fn observer(&self) -> SessionObserver {
        self.observer.clone()
    }

    /// The session ended; `code` is the close code we sent (`None`: the
    /// device closed or the connection dropped).
    pub fn close(mut self, end: impl Into<SessionEnd>, reason: &str) {
        self.finish(end.into(), reason);
    }

    fn finish(&mut self, code: SessionEnd, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        let fleet = &self.observer.fleet;
        let device = &self.observer.device;
        device.sessions_open.fetch_sub(1, Ordering::Relaxed);
        fleet.metrics.sessions_open.dec();
        fleet.metrics.session_closed(code);
        if let SessionEnd::Server(c) = code
            && !matches!(c, 1000 | 1001)
        {
            fleet.error(
                &device.id,
                "session_closed",
                &format!("closed with {c}: {reason}"),
            );
        }
        let now = device.counters();
        let record = ClosedSession {
            device: device.id.clone(),
            opened_ms: self.opened_ms,
            closed_ms: now_ms(),
            close_code: code,
            reason: reason.chars().take(MAX_DETAIL).collect(),
            // Several sessions of one device at once share its counters; the
            // difference is then an upper bound, good enough for a history.
            messages: now.messages.saturating_sub(self.start.messages),
            points: now.points.saturating_sub(self.start.points),
        };
        let mut closed = lock(&fleet.closed);
        if closed.len() >= MAX_CLOSED {
            closed.pop_front();
            fleet.closed_dropped.fetch_add(1, Ordering::Relaxed);
        }
        closed.push_back(record);
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.finish(SessionEnd::Dropped, "session task ended");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub use wsingest_proto::clock::wall_ms as now_ms;

#[cfg(test)]
mod tests;
