//! The checks serde cannot make: ranges, references between fields,
//! reserved names, the device id alphabet.

use std::path::Path;

use super::parse::{line_at, line_of_key};
use super::{FieldSpec, Profile, ProfileError, Range, Scalar, Spike, TagSpec};

impl Profile {
    pub(super) fn check(&self, text: &str, path: &Path) -> Result<(), ProfileError> {
        let invalid = |key: &str, line: usize, detail: String| ProfileError::Invalid {
            path: path.into(),
            line,
            key: key.into(),
            detail,
        };
        let top = |key: &str, detail: String| invalid(key, line_of_key(text, key), detail);
        self.check_names()
            .map_err(|(key, detail)| top(key, detail))?;
        if !valid_id_part(&self.id_prefix) {
            return Err(top(
                "id_prefix",
                "use 1-100 characters from A-Z a-z 0-9 - _ . :".into(),
            ));
        }
        if !(self.interval_s.is_finite() && self.interval_s > 0.0 && self.interval_s <= 86_400.0) {
            return Err(top(
                "interval_s",
                "must be above 0 and at most 86400 seconds".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(top(
                "jitter",
                "must be in [0, 1): a share of the interval".into(),
            ));
        }
        if !(1..=10_000).contains(&self.points_per_message) {
            return Err(top(
                "points_per_message",
                "must be between 1 and 10000".into(),
            ));
        }
        if let Some(s) = self.sample_interval_ms
            && !(s.is_finite() && s >= 1.0)
        {
            return Err(top(
                "sample_interval_ms",
                "must be at least 1 ms (timestamps are milliseconds)".into(),
            ));
        }
        if let Some(d) = &self.duty_cycle {
            let (lo, hi) = d.sleep_s.bounds();
            if d.messages_per_wake == 0 {
                return Err(top("messages_per_wake", "must be at least 1".into()));
            }
            if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
                return Err(top(
                    "sleep_s",
                    "must be a number of seconds >= 0, or [low, high] with low <= high".into(),
                ));
            }
        }
        for (k, v) in &self.tags {
            if k == "device" {
                return Err(top(
                    "tags",
                    "`device` is set by the server from the session; use another name".into(),
                ));
            }
            let ok = match v {
                TagSpec::Fixed(s) => !s.is_empty(),
                TagSpec::OneOf(list) => !list.is_empty() && list.iter().all(|s| !s.is_empty()),
            };
            if !ok {
                return Err(top(
                    "tags",
                    format!("tag {k:?}: give a non-empty value or a non-empty list of values"),
                ));
            }
        }
        if let Some(p) = &self.path {
            let (lo, hi) = p.speed_kmh.bounds();
            if p.waypoints.len() < 2 {
                return Err(top(
                    "waypoints",
                    "a path needs at least two waypoints".into(),
                ));
            }
            if p.waypoints
                .iter()
                .any(|[lat, lon]| !(-90.0..=90.0).contains(lat) || !(-180.0..=180.0).contains(lon))
            {
                return Err(top(
                    "waypoints",
                    "each waypoint is [lat, lon] with lat in [-90, 90], lon in [-180, 180]".into(),
                ));
            }
            if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
                return Err(top(
                    "speed_kmh",
                    "must be >= 0, or [low, high] with low <= high".into(),
                ));
            }
            if !(p.speed_step.is_finite() && p.speed_step >= 0.0) {
                return Err(top("speed_step", "must be >= 0".into()));
            }
        }
        if self.fields.is_empty() {
            return Err(top("fields", "a profile needs at least one field".into()));
        }
        for (name, spec) in &self.fields {
            let key = format!("fields.{name}");
            let line = line_at(text, spec.span().start);
            self.check_field(spec.get_ref())
                .map_err(|detail| invalid(&key, line, detail))?;
        }
        Ok(())
    }

    /// Names and tag values must pass the server's own line-protocol checks,
    /// or every message of this profile would be nacked.
    fn check_names(&self) -> Result<(), (&'static str, String)> {
        use wsingest_proto::point::{FieldValue, Point};
        let limits = wsingest_proto::lineproto::Limits::default();
        let mut values: Vec<(&String, &String)> = Vec::new();
        for (k, v) in &self.tags {
            match v {
                TagSpec::Fixed(s) => values.push((k, s)),
                TagSpec::OneOf(list) => values.extend(list.iter().map(|s| (k, s))),
            }
        }
        let point = |measurement: &str,
                     tags: Vec<(String, String)>,
                     fields: Vec<(String, FieldValue)>| Point {
            measurement: measurement.into(),
            tags,
            fields,
            time_ns: 0,
            int_fields: false,
        };
        let one_field = || vec![("f".to_string(), FieldValue::Bool(true))];
        wsingest_proto::lineproto::check_point(
            &point(&self.measurement, vec![], one_field()),
            &limits,
        )
        .map_err(|e| ("measurement", e.to_string()))?;
        for (k, v) in values {
            wsingest_proto::lineproto::check_point(
                &point("m", vec![(k.clone(), v.clone())], one_field()),
                &limits,
            )
            .map_err(|e| ("tags", e.to_string()))?;
        }
        let fields = self
            .fields
            .keys()
            .map(|k| (k.clone(), FieldValue::Bool(true)))
            .collect();
        wsingest_proto::lineproto::check_point(&point("m", vec![], fields), &limits)
            .map_err(|e| ("fields", e.to_string()))?;
        Ok(())
    }

    fn check_field(&self, spec: &FieldSpec) -> Result<(), String> {
        let bounds = |min: f64, max: f64| {
            if min.is_finite() && max.is_finite() && min <= max {
                Ok(())
            } else {
                Err(format!("min ({min}) must be a number at most max ({max})"))
            }
        };
        let decimals = |d: Option<u32>| match d {
            Some(d) if d > 9 => Err("decimals must be at most 9".to_string()),
            _ => Ok(()),
        };
        let spike_ok = |s: &Option<Spike>| match s {
            Some(s) if !(0.0..=1.0).contains(&s.probability) => {
                Err("spike.probability must be in [0, 1]".to_string())
            }
            Some(s) if !finite_range(s.add) => {
                Err("spike.add must be a number or [low, high]".to_string())
            }
            _ => Ok(()),
        };
        match spec {
            FieldSpec::Constant { value } => match value {
                Scalar::Float(f) if !f.is_finite() => Err("value must be finite".into()),
                _ => Ok(()),
            },
            FieldSpec::RandomWalk {
                min,
                max,
                start,
                step,
                decimals: d,
                spike,
                ..
            } => {
                bounds(*min, *max)?;
                decimals(*d)?;
                spike_ok(spike)?;
                if !(step.is_finite() && *step >= 0.0) {
                    return Err("step must be >= 0".into());
                }
                if let Some(s) = start
                    && !within(*s, *min, *max)
                {
                    return Err("start must lie within [min, max]".into());
                }
                Ok(())
            }
            FieldSpec::Sine {
                min,
                max,
                period_s,
                peak_at_s,
                noise,
                decimals: d,
                spike,
                ..
            } => {
                bounds(*min, *max)?;
                decimals(*d)?;
                spike_ok(spike)?;
                if !(period_s.is_finite() && *period_s > 0.0) {
                    return Err("period_s must be above 0".into());
                }
                if !(peak_at_s.is_finite() && noise.is_finite() && *noise >= 0.0) {
                    return Err("peak_at_s must be a number and noise >= 0".into());
                }
                Ok(())
            }
            FieldSpec::Counter {
                start,
                per_second,
                of,
                scale,
                min,
                max,
                decimals: d,
                ..
            } => {
                decimals(*d)?;
                if !finite_range(*start) || !scale.is_finite() {
                    return Err("start and scale must be finite".into());
                }
                match (per_second, of) {
                    (Some(r), None) if finite_range(*r) => {}
                    (None, Some(other)) => match self.fields.get(other).map(|s| s.get_ref()) {
                        Some(
                            FieldSpec::RandomWalk { .. }
                            | FieldSpec::Sine { .. }
                            | FieldSpec::Path { .. },
                        ) => {}
                        Some(_) => {
                            return Err(format!(
                                "of = {other:?}: a counter integrates a random_walk, sine or path field"
                            ));
                        }
                        None => {
                            return Err(format!("of = {other:?}: no such field in this profile"));
                        }
                    },
                    _ => {
                        return Err(
                            "give either per_second (a number or [low, high]) or of (a field name)"
                                .into(),
                        );
                    }
                }
                let lo = min.unwrap_or(f64::NEG_INFINITY);
                let hi = max.unwrap_or(f64::INFINITY);
                if lo.is_nan() || hi.is_nan() || lo > hi {
                    return Err("min must be at most max".into());
                }
                if !within(*start, lo, hi) {
                    return Err("start must lie within [min, max]".into());
                }
                Ok(())
            }
            FieldSpec::Enum {
                values,
                weights,
                change_probability,
            } => {
                if values.is_empty() {
                    return Err("values must not be empty".into());
                }
                if values
                    .iter()
                    .any(|v| matches!(v, Scalar::Float(f) if !f.is_finite()))
                {
                    return Err("values must be finite".into());
                }
                if let Some(w) = weights
                    && (w.len() != values.len()
                        || w.iter().any(|x| !(x.is_finite() && *x >= 0.0))
                        || w.iter().sum::<f64>() <= 0.0)
                {
                    return Err("weights: one weight >= 0 per value, not all zero".into());
                }
                if !(0.0..=1.0).contains(change_probability) {
                    return Err("change_probability must be in [0, 1]".into());
                }
                Ok(())
            }
            FieldSpec::Path { decimals: d, .. } => {
                decimals(*d)?;
                if self.path.is_none() {
                    return Err("a path field needs a [path] section".into());
                }
                Ok(())
            }
        }
    }
}

fn finite_range(r: Range) -> bool {
    let (a, b) = r.bounds();
    a.is_finite() && b.is_finite() && a <= b
}

fn within(r: Range, min: f64, max: f64) -> bool {
    let (a, b) = r.bounds();
    finite_range(r) && a >= min && b <= max
}

/// The device id alphabet the server accepts (see `server::valid_device_id`).
fn valid_id_part(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}
