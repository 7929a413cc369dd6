//! The point model every decoder produces and every sink consumes.
//!
//! A point is already validated when it exists outside the decoder: its names
//! and values are known to be representable in InfluxDB line protocol (see
//! [`crate::lineproto`]), and its `device` tag was set from the session.

use std::fmt;

/// One field value. Integers are kept apart from floats so that a measurement
/// configured with `int_fields = true` can write them as InfluxDB integers.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Float(v) => write!(f, "{v}"),
            FieldValue::Int(v) => write!(f, "{v}"),
            FieldValue::UInt(v) => write!(f, "{v}"),
            FieldValue::Bool(v) => write!(f, "{v}"),
            FieldValue::Str(v) => write!(f, "{v:?}"),
        }
    }
}

/// A telemetry point. Tags are sorted by key (InfluxDB's own order, which
/// spares it a sort per line) and include `device`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Write integer fields as InfluxDB integers (`42i`) rather than floats.
    pub int_fields: bool,
}

impl Point {
    /// The value of tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
