//! What one live view update says: totals, the busiest devices with their
//! rates and last values, the selected device, and the recent errors.
//!
//! Sans-IO: a [`Snapshotter`] turns the fleet's counters into JSON and keeps
//! the previous counters of one viewer to compute rates.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::time::Instant;

use crate::fleet::{DeviceCounters, DeviceStats, Fleet};
use wsingest_proto::point::FieldValue;

#[derive(Debug, Serialize)]
pub struct Update {
    /// Server time, epoch milliseconds.
    pub t: i64,
    pub instance: String,
    pub totals: Totals,
    pub devices: Vec<DeviceRow>,
    /// The device the viewer selected (also when it is not among `devices`).
    pub selected: Option<DeviceRow>,
    pub errors: Vec<ErrorRow>,
}

#[derive(Debug, Serialize, Default)]
pub struct Totals {
    pub devices_online: u64,
    pub devices_tracked: u64,
    pub sessions_open: i64,
    pub messages_per_s: f64,
    pub points_per_s: f64,
    pub bytes_per_s: f64,
    pub messages: u64,
    pub points: u64,
    pub acks: u64,
    pub nacks: u64,
    pub decode_errors: u64,
    pub points_written: u64,
    pub queue_depth: i64,
}

#[derive(Debug, Serialize, Clone)]
pub struct DeviceRow {
    pub id: String,
    pub online: bool,
    pub sessions: i64,
    pub messages_per_s: f64,
    pub points_per_s: f64,
    pub messages: u64,
    pub points: u64,
    pub errors: u64,
    pub last_seen_ms: i64,
    /// The last point: its measurement, time (epoch ms), tags and fields.
    pub measurement: Option<String>,
    pub time_ms: Option<i64>,
    pub tags: HashMap<String, String>,
    pub fields: HashMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct ErrorRow {
    pub t: i64,
    pub device: String,
    pub code: &'static str,
    pub detail: String,
}

/// One viewer's state: previous counters, for rates.
pub struct Snapshotter {
    instance: String,
    max_devices: usize,
    prev: HashMap<Arc<str>, DeviceCounters>,
    prev_totals: (u64, u64, u64),
    prev_at: Option<Instant>,
}

impl Snapshotter {
    pub fn new(instance: String, max_devices: usize) -> Self {
        Snapshotter {
            instance,
            max_devices,
            prev: HashMap::new(),
            prev_totals: (0, 0, 0),
            prev_at: None,
        }
    }

    /// The update at `now` (a parameter so tests control the clock).
    pub fn update(&mut self, fleet: &Fleet, selected: Option<&str>, now: Instant) -> Update {
        let secs = self
            .prev_at
            .map(|t| now.duration_since(t).as_secs_f64())
            .unwrap_or(0.0);
        self.prev_at = Some(now);
        let rate = |a: u64, b: u64| {
            if secs > 0.0 {
                a.saturating_sub(b) as f64 / secs
            } else {
                0.0
            }
        };

        let devices = fleet.devices();
        let mut next = HashMap::with_capacity(devices.len());
        let mut rows: Vec<(DeviceCounters, f64, f64, Arc<DeviceStats>)> =
            Vec::with_capacity(devices.len());
        let mut online = 0;
        for d in devices {
            let c = d.counters();
            let before = self.prev.get(&d.id).copied().unwrap_or(c);
            if c.sessions_open > 0 {
                online += 1;
            }
            rows.push((
                c,
                rate(c.messages, before.messages),
                rate(c.points, before.points),
                d.clone(),
            ));
            next.insert(d.id.clone(), c);
        }
        self.prev = next;
        let tracked = rows.len() as u64;
        // Busiest first, then online, then by id so the table does not jump.
        rows.sort_by(|a, b| {
            b.2.total_cmp(&a.2)
                .then((b.0.sessions_open > 0).cmp(&(a.0.sessions_open > 0)))
                .then(a.3.id.cmp(&b.3.id))
        });
        // Until the viewer picks one, the busiest device is the selected
        // one, so the first frame already carries its chart's values.
        let selected_row = match selected {
            Some(id) => rows.iter().find(|r| &*r.3.id == id),
            None => rows.first(),
        }
        .map(|(c, m, p, d)| row(d, c, *m, *p));
        let device_rows = rows
            .iter()
            .take(self.max_devices)
            .map(|(c, m, p, d)| row(d, c, *m, *p))
            .collect();

        let s = fleet.metrics().snapshot();
        let (pm, pp, pb) = self.prev_totals;
        let totals = Totals {
            devices_online: online,
            devices_tracked: tracked,
            sessions_open: s.sessions_open,
            messages_per_s: rate(s.messages, pm),
            points_per_s: rate(s.points, pp),
            bytes_per_s: rate(s.bytes, pb),
            messages: s.messages,
            points: s.points,
            acks: s.acks,
            nacks: s.nacks,
            decode_errors: s.decode_errors,
            points_written: s.points_written,
            queue_depth: s.queue_depth,
        };
        self.prev_totals = (s.messages, s.points, s.bytes);
        let errors = fleet
            .recent_errors()
            .into_iter()
            .rev()
            .map(|e| ErrorRow {
                t: e.time_ms,
                device: e.device.to_string(),
                code: e.code,
                detail: e.detail,
            })
            .collect();
        Update {
            t: crate::fleet::now_ms(),
            instance: self.instance.clone(),
            totals,
            devices: device_rows,
            selected: selected_row,
            errors,
        }
    }
}

fn row(d: &DeviceStats, c: &DeviceCounters, messages_per_s: f64, points_per_s: f64) -> DeviceRow {
    let last = d.last_point();
    let (measurement, time_ms, tags, fields) = match last {
        Some(p) => (
            Some(p.measurement),
            Some(p.time_ns.div_euclid(1_000_000)),
            p.tags.into_iter().filter(|(k, _)| k != "device").collect(),
            p.fields
                .into_iter()
                .map(|(k, v)| (k, json_value(v)))
                .collect(),
        ),
        None => (None, None, HashMap::new(), HashMap::new()),
    };
    DeviceRow {
        id: d.id.to_string(),
        online: c.sessions_open > 0,
        sessions: c.sessions_open,
        messages_per_s,
        points_per_s,
        messages: c.messages,
        points: c.points,
        errors: c.errors,
        last_seen_ms: c.last_seen_ms,
        measurement,
        time_ms,
        tags,
        fields,
    }
}

fn json_value(v: FieldValue) -> serde_json::Value {
    match v {
        FieldValue::Float(f) => serde_json::Number::from_f64(f)
            .map(Into::into)
            .unwrap_or(serde_json::Value::Null),
        FieldValue::Int(i) => i.into(),
        FieldValue::UInt(u) => u.into(),
        FieldValue::Bool(b) => b.into(),
        FieldValue::Str(s) => s.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::time::Duration;
    use wsingest_proto::point::Point;

    #[test]
    fn rates_order_and_selection() {
        let t0 = Instant::now();
        let fleet = Arc::new(Fleet::new(
            Arc::new(Metrics::new()),
            Duration::from_secs(60),
            100,
        ));
        let (a, b) = (fleet.open_session("a"), fleet.open_session("b"));
        let mut s = Snapshotter::new("i".into(), 1);
        let first = s.update(&fleet, None, t0);
        assert_eq!(first.totals.devices_online, 2);
        assert_eq!(first.devices.len(), 1);
        for _ in 0..4 {
            b.observer().message(10);
        }
        b.observer().points(vec![Point {
            measurement: "weather".into(),
            tags: vec![
                ("device".into(), "b".into()),
                ("site".into(), "roof".into()),
            ],
            fields: vec![("temp_c".into(), FieldValue::Float(21.5))],
            time_ns: 1_500_000_000,
            int_fields: false,
        }]);
        let u = s.update(&fleet, Some("a"), t0 + Duration::from_secs(2));
        assert_eq!(u.devices[0].id, "b");
        assert_eq!(u.devices[0].messages_per_s, 2.0);
        assert_eq!(u.devices[0].fields["temp_c"], serde_json::json!(21.5));
        assert_eq!(
            u.devices[0].tags.get("site").map(String::as_str),
            Some("roof")
        );
        assert!(!u.devices[0].tags.contains_key("device"));
        assert_eq!(u.devices[0].time_ms, Some(1500));
        assert_eq!(u.selected.as_ref().unwrap().id, "a");
        assert_eq!(u.totals.messages_per_s, 2.0);
        drop((a, b));
    }
}
