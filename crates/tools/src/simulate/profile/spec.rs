//! The profile as written in TOML: the serde types of a profile, its tags,
//! its path and each kind of field.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

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
pub(super) fn unset() -> f64 {
    f64::NAN
}

fn zero_range() -> Range {
    Range::One(0.0)
}

fn one_f() -> f64 {
    1.0
}

impl Profile {
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
