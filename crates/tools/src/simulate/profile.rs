//! Device profiles: the TOML files in `devices/` that describe a kind of
//! device (measurement, tags, fields and how each evolves, rate, duty cycle).
//!
//! Adding a device type needs no code: write a profile. The format is
//! documented in `docs/simulate.md`; [`Profile::parse`] checks everything
//! serde cannot (ranges, references between fields) so that a bad profile
//! fails at start with its file, line and key, never mid-run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read device profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device profile {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("device profile {path}, line {line}: {key}: {detail}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        detail: String,
    },
    #[error("no device profile named {name:?} in {dir}: available: {available}")]
    Unknown {
        name: String,
        dir: PathBuf,
        available: String,
    },
    #[error(
        "no device profile named {name:?}: available: {available} (built in{dirs}; --devices-dir DIR adds or overrides profiles)"
    )]
    UnknownName {
        name: String,
        available: String,
        dirs: String,
    },
    #[error(
        "cannot read the profile directory {dir} given by --devices-dir: {source}; give a directory of .toml profiles, or leave --devices-dir out to use the built-in profiles"
    )]
    DevicesDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The profiles in `devices/`, built into the binary: `wsingest simulate`
/// works from any directory (a `devices/` there, or `--devices-dir`, adds or
/// overrides profiles by name).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "battery_sensor",
        include_str!("../../../../devices/battery_sensor.toml"),
    ),
    (
        "gps_tracker",
        include_str!("../../../../devices/gps_tracker.toml"),
    ),
    (
        "smart_meter",
        include_str!("../../../../devices/smart_meter.toml"),
    ),
    (
        "vibration_sensor",
        include_str!("../../../../devices/vibration_sensor.toml"),
    ),
    (
        "weather_station",
        include_str!("../../../../devices/weather_station.toml"),
    ),
];

/// Where a profile comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(PathBuf),
    Builtin(&'static str),
}

impl Source {
    pub fn load(&self) -> Result<Profile, ProfileError> {
        match self {
            Source::File(p) => Profile::load(p),
            Source::Builtin(name) => {
                let text = BUILTIN
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| *t)
                    .unwrap_or_default();
                Profile::parse(text, &PathBuf::from(format!("(built in) {name}.toml")))
            }
        }
    }
}

/// Every profile by name: the built-in ones, then the `.toml` files of
/// `dir` (`--devices-dir`, which must exist) or, without one, of `devices/`
/// when the working directory has it; a file overrides a built-in profile
/// of its name.
pub fn catalog(dir: Option<&Path>) -> Result<Vec<(String, Source)>, ProfileError> {
    let mut out: BTreeMap<String, Source> = BUILTIN
        .iter()
        .map(|(n, _)| (n.to_string(), Source::Builtin(n)))
        .collect();
    let files = match dir {
        Some(d) => list(d).map_err(|e| match e {
            ProfileError::Read { source, .. } => ProfileError::DevicesDir {
                dir: d.into(),
                source,
            },
            e => e,
        })?,
        None if Path::new("devices").is_dir() => list(Path::new("devices")).unwrap_or_default(),
        None => Vec::new(),
    };
    for f in files {
        if let Some(stem) = f.file_stem().and_then(|s| s.to_str()) {
            out.insert(stem.to_string(), Source::File(f));
        }
    }
    Ok(out.into_iter().collect())
}

/// What `--profile` names: a path to a `.toml` file, a name from
/// [`catalog`], or `all`.
pub fn resolve_sources(spec: &str, dir: Option<&Path>) -> Result<Vec<Source>, ProfileError> {
    let as_path = Path::new(spec);
    if spec.ends_with(".toml") || as_path.components().count() > 1 {
        return Ok(vec![Source::File(as_path.to_path_buf())]);
    }
    let all = catalog(dir)?;
    if spec == "all" {
        return Ok(all.into_iter().map(|(_, s)| s).collect());
    }
    if let Some((_, s)) = all.iter().find(|(n, _)| n == spec) {
        return Ok(vec![s.clone()]);
    }
    let dirs = match dir {
        Some(d) => format!(" and in {}", d.display()),
        None if Path::new("devices").is_dir() => " and in ./devices".into(),
        None => String::new(),
    };
    Err(ProfileError::UnknownName {
        name: spec.into(),
        available: all
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        dirs,
    })
}

/// A device profile as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Defaults to the file name without `.toml`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub measurement: String,
    /// Device ids are `<id_prefix>-<n>`; defaults to the name with `_` → `-`.
    #[serde(default)]
    pub id_prefix: String,
    /// Seconds between two messages of one device.
    pub interval_s: f64,
    /// Random share of the interval added or removed each time (0.1 = ±10 %).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Points per message (more than one: a batch message).
    #[serde(default = "one")]
    pub points_per_message: usize,
    /// Spacing of the points of a batch; defaults to `interval_s / points_per_message`.
    #[serde(default)]
    pub sample_interval_ms: Option<f64>,
    /// Devices that sleep between bursts; absent: always connected.
    #[serde(default)]
    pub duty_cycle: Option<DutyCycle>,
    /// Tags of every point: a string, or a list from which each device picks one.
    #[serde(default)]
    pub tags: BTreeMap<String, TagSpec>,
    /// A route for `kind = "path"` fields.
    #[serde(default)]
    pub path: Option<PathSpec>,
    pub fields: BTreeMap<String, Spanned<FieldSpec>>,
}

fn default_jitter() -> f64 {
    0.1
}

fn one() -> usize {
    1
}

/// Connect, send `messages_per_wake` messages, wait for their acks,
/// disconnect, sleep; repeat.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DutyCycle {
    pub messages_per_wake: u32,
    pub sleep_s: Range,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TagSpec {
    Fixed(String),
    OneOf(Vec<String>),
}

/// A route of waypoints `[lat, lon]` that `path` fields follow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    pub waypoints: Vec<[f64; 2]>,
    /// Speed range in km/h; the speed is a random walk inside it.
    pub speed_kmh: Range,
    /// Typical change of the speed over one second, in km/h.
    #[serde(default = "default_speed_step")]
    pub speed_step: f64,
    /// `true`: after the last waypoint go back to the first; `false`: turn around.
    #[serde(default = "yes", rename = "loop")]
    pub closed: bool,
}

fn default_speed_step() -> f64 {
    2.0
}

fn yes() -> bool {
    true
}

/// A number, or a `[low, high]` range from which each device draws one.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Range {
    One(f64),
    Two([f64; 2]),
}

impl Range {
    pub fn bounds(self) -> (f64, f64) {
        match self {
            Range::One(v) => (v, v),
            Range::Two([a, b]) => (a, b),
        }
    }
}

/// A field value written as is (`constant`, `enum`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// A short, occasional addition to a numeric field (a load spike, a gust).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spike {
    /// Chance per sample.
    pub probability: f64,
    pub add: Range,
}

/// What a counter does when it reaches `min` or `max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// Stay at the limit.
    #[default]
    Clamp,
    /// Jump to the other limit (a register rolling over).
    Wrap,
    /// Go back to the start value (a battery recharged).
    Reset,
}

/// What a `path` field reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathValue {
    Lat,
    Lon,
    Speed,
    Heading,
}

/// How one field evolves.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FieldSpec {
    /// The same value every time.
    Constant { value: Scalar },
    /// Brownian motion inside `[min, max]`, reflected at the bounds.
    RandomWalk {
        min: f64,
        max: f64,
        /// Initial value (or range); default: anywhere in `[min, max]`.
        start: Option<Range>,
        /// Typical change over one second (the change over `dt` seconds has
        /// standard deviation `step * sqrt(dt)`, whatever the rate).
        /// Default: 1 % of `max - min`.
        #[serde(default = "unset")]
        step: f64,
        #[serde(default)]
        decimals: Option<u32>,
        #[serde(default)]
        integer: bool,
        #[serde(default)]
        spike: Option<Spike>,
    },
    /// A daily (or any period) cycle between `min` and `max`, plus noise.
    Sine {
        min: f64,
        max: f64,
        /// Period in seconds (86400: a day).
        period_s: f64,
        /// Seconds after the start of the period (UTC midnight for a day)
        /// where the maximum falls.
        #[serde(default)]
        peak_at_s: f64,
        /// Standard deviation of Gaussian noise per sample.
        #[serde(default)]
        noise: f64,
        #[serde(default)]
        decimals: Option<u32>,
        #[serde(default)]
        integer: bool,
        #[serde(default)]
        spike: Option<Spike>,
    },
    /// A counter: by `per_second`, or by the integral of field `of` times
    /// `scale` (energy from power).
    Counter {
        #[serde(default = "zero_range")]
        start: Range,
        per_second: Option<Range>,
        of: Option<String>,
        #[serde(default = "one_f")]
        scale: f64,
        min: Option<f64>,
        max: Option<f64>,
        #[serde(default)]
        on_limit: OnLimit,
        #[serde(default)]
        decimals: Option<u32>,
        #[serde(default)]
        integer: bool,
    },
    /// One of `values`, changing with `change_probability` per sample.
    Enum {
        values: Vec<Scalar>,
        weights: Option<Vec<f64>>,
        #[serde(default = "one_f")]
        change_probability: f64,
    },
    /// Position, speed or heading along the profile's `[path]`.
    Path {
        of: PathValue,
        #[serde(default)]
        decimals: Option<u32>,
    },
}

/// Marks a `step` not given (filled in by [`Profile::parse`]).
fn unset() -> f64 {
    f64::NAN
}

/// toml reports an unknown key inside a field's table (an internally
/// tagged enum) at the table's header; point at the key's own line.
fn unknown_key_line(text: &str, path: &Path, e: &toml::de::Error) -> ProfileError {
    let message = e.to_string();
    if let Some(rest) = message.split("unknown field `").nth(1)
        && let Some(key) = rest.split('`').next()
    {
        let start = e.span().map_or(0, |s| s.start);
        let from_line = line_at(text, start);
        // The first line at or after the reported table where the key is set.
        let line = text
            .lines()
            .enumerate()
            .skip(from_line - 1)
            .find(|(_, l)| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with('='))
            })
            .map(|(i, _)| i + 1);
        if let Some(line) = line {
            let expected = rest
                .split_once(", expected ")
                .map(|(_, x)| x.lines().next().unwrap_or("").trim().to_string());
            return ProfileError::Invalid {
                path: path.into(),
                line,
                key: key.into(),
                detail: match expected {
                    Some(x) => format!("unknown key; expected {x}"),
                    None => "unknown key".into(),
                },
            };
        }
    }
    ProfileError::Parse {
        path: path.into(),
        message,
    }
}

fn zero_range() -> Range {
    Range::One(0.0)
}

fn one_f() -> f64 {
    1.0
}

impl Profile {
    /// Read and check a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.into(),
            source,
        })?;
        Profile::parse(&text, path)
    }

    /// Parse and check TOML text; `path` names the file in errors and gives
    /// the default name.
    pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let mut p: Profile = toml::from_str(text).map_err(|e| unknown_key_line(text, path, &e))?;
        for (_, spec) in p.fields.iter_mut() {
            if let FieldSpec::RandomWalk { min, max, step, .. } = spec.get_mut()
                && step.is_nan()
            {
                *step = (*max - *min) / 100.0;
            }
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("device");
        if p.name.is_empty() {
            p.name = stem.to_string();
        }
        if p.id_prefix.is_empty() {
            p.id_prefix = p.name.replace('_', "-");
        }
        p.check(text, path)?;
        Ok(p)
    }

    fn check(&self, text: &str, path: &Path) -> Result<(), ProfileError> {
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

    /// The field names, in the order values are produced (sorted).
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// Spacing of the points in a batch message, in milliseconds.
    pub fn sample_interval_ms(&self) -> f64 {
        self.sample_interval_ms
            .unwrap_or(self.interval_s * 1000.0 / self.points_per_message as f64)
            .max(1.0)
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

/// 1-based line of byte `offset`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// 1-based line where `key = ...` is set, or 1 when it is not written (a
/// missing key's default is what failed).
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// Resolve what `--profile` names: a path to a `.toml` file, or a profile
/// name looked up in `dir` (`weather_station` → `dir/weather_station.toml`),
/// or `all` for every profile in `dir`.
pub fn resolve(spec: &str, dir: &Path) -> Result<Vec<PathBuf>, ProfileError> {
    let as_path = Path::new(spec);
    if spec.ends_with(".toml") || as_path.components().count() > 1 {
        return Ok(vec![as_path.to_path_buf()]);
    }
    let available = list(dir)?;
    if spec == "all" {
        return Ok(available);
    }
    let wanted = dir.join(format!("{spec}.toml"));
    if available.contains(&wanted) {
        return Ok(vec![wanted]);
    }
    let names: Vec<String> = available
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    Err(ProfileError::Unknown {
        name: spec.into(),
        dir: dir.into(),
        available: names.join(", "),
    })
}

/// The `.toml` files of `dir`, sorted.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, ProfileError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ProfileError::Read {
        path: dir.into(),
        source,
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
measurement = "m"
interval_s = 1

[fields.t]
kind = "random_walk"
min = 0
max = 10
step = 1
"#;

    #[test]
    fn defaults_come_from_the_file_name() {
        let p = Profile::parse(MINIMAL, Path::new("devices/cold_room.toml")).unwrap();
        assert_eq!(p.name, "cold_room");
        assert_eq!(p.id_prefix, "cold-room");
        assert_eq!(p.jitter, 0.1);
        assert_eq!(p.points_per_message, 1);
        assert_eq!(p.sample_interval_ms(), 1000.0);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let text = MINIMAL.replace("step = 1", "step = 1\nstpe = 2");
        let e = Profile::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        // The key's own line, not its table's header (line 5).
        assert!(e.contains("x.toml, line 10: stpe: unknown key"), "{e}");
    }

    #[test]
    fn step_defaults_to_a_hundredth_of_the_range() {
        let text = MINIMAL.replace("step = 1\n", "");
        let p = Profile::parse(&text, Path::new("x.toml")).unwrap();
        match p.fields["t"].get_ref() {
            FieldSpec::RandomWalk { step, .. } => assert_eq!(*step, 0.1),
            _ => panic!(),
        }
    }

    #[test]
    fn builtin_profiles_parse_and_a_missing_devices_dir_names_the_flag() {
        let all = catalog(None).unwrap();
        assert!(all.len() >= BUILTIN.len());
        for (name, _) in BUILTIN.iter() {
            Source::Builtin(name).load().unwrap();
        }
        let e = resolve_sources("weather_station", Some(Path::new("/nonexistent")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--devices-dir") && e.contains("/nonexistent"),
            "{e}"
        );
        let e = resolve_sources("nope", None).unwrap_err().to_string();
        assert!(
            e.contains("weather_station") && e.contains("--devices-dir"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_name_file_line_and_key() {
        let text = MINIMAL.replace("max = 10", "max = -1");
        let e = Profile::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.toml, line 5: fields.t: min (0) must be a number at most max (-1)"),
            "{e}"
        );
        let text = MINIMAL.replace("interval_s = 1", "interval_s = 0");
        let e = Profile::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3: interval_s"), "{e}");
    }

    #[test]
    fn counters_must_integrate_an_existing_field() {
        let text = format!("{MINIMAL}\n[fields.e]\nkind = \"counter\"\nof = \"nope\"\n");
        let e = Profile::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fields.e") && e.contains("no such field"), "{e}");
        let text =
            format!("{MINIMAL}\n[fields.e]\nkind = \"counter\"\nof = \"t\"\nper_second = 1\n");
        assert!(Profile::parse(&text, Path::new("x.toml")).is_err());
    }

    #[test]
    fn path_fields_need_a_path() {
        let text = format!("{MINIMAL}\n[fields.lat]\nkind = \"path\"\nof = \"lat\"\n");
        let e = Profile::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[path]"), "{e}");
    }

    #[test]
    fn the_device_tag_is_reserved() {
        let text = MINIMAL.replace(
            "interval_s = 1",
            "interval_s = 1\ntags = { device = \"x\" }",
        );
        assert!(
            Profile::parse(&text, Path::new("x.toml"))
                .unwrap_err()
                .to_string()
                .contains("device")
        );
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../../../docs/simulate.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/simulate.md has a TOML example")
            + 8;
        let end = start + doc[start..].find("```").unwrap();
        let p = Profile::parse(&doc[start..end], Path::new("coldroom.toml")).unwrap();
        assert_eq!((p.measurement.as_str(), p.fields.len()), ("coldroom", 2));
    }

    #[test]
    fn resolve_names_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), MINIMAL).unwrap();
        std::fs::write(dir.path().join("b.toml"), MINIMAL).unwrap();
        assert_eq!(resolve("all", dir.path()).unwrap().len(), 2);
        assert_eq!(
            resolve("a", dir.path()).unwrap(),
            vec![dir.path().join("a.toml")]
        );
        assert_eq!(
            resolve("x/y.toml", dir.path()).unwrap(),
            vec![PathBuf::from("x/y.toml")]
        );
        let e = resolve("c", dir.path()).unwrap_err().to_string();
        assert!(e.contains("available: a, b"), "{e}");
    }
}
