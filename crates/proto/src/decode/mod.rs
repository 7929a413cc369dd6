//! Decoding device messages into validated points.
//!
//! Sans-IO: [`Decoder::decode`] takes the bytes of one WebSocket message and
//! returns either a [`Message`] whose points are ready for line protocol, or a
//! [`DecodeError`] that becomes a nack (`code()` is its `error`, `Display` its
//! `detail`). The `device` tag always comes from the session.

pub mod borrowed;
pub mod cbor;
pub mod depth;
mod duplicates;
pub mod json;
pub mod model;
pub mod senml;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;

use crate::clock::ServerClock;
use crate::lineproto::{self, Limits, PointError};
use crate::point::{FieldValue, Point};
use borrowed::{FieldRef, MsgRef, PointRef, TimeRef};
use model::WireMessage;

/// The nesting the message model needs (message, `points`, point, `fields`):
/// CBOR's fast path applies only when the depth limit allows all of it.
const MODEL_DEPTH: usize = 4;

/// The payload encoding of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Cbor,
    /// A SenML (RFC 8428) pack in JSON.
    SenmlJson,
    /// A SenML (RFC 8428) pack in CBOR.
    SenmlCbor,
}

impl Format {
    /// Whether replies in this format are binary (CBOR) rather than text (JSON).
    pub fn is_binary(self) -> bool {
        matches!(self, Format::Cbor | Format::SenmlCbor)
    }
}

/// A decoded device message.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// Telemetry: one or more points, acknowledged as one when `seq` is set.
    Points {
        seq: Option<u64>,
        points: Vec<Point>,
        /// The nanoseconds the server stamped on points sent without a time,
        /// one each (see [`crate::clock`]); empty when every point had one.
        stamped: std::ops::Range<i64>,
    },
    /// A device's answer to a command.
    CommandResult {
        seq: Option<u64>,
        cmd: String,
        ok: bool,
        detail: Option<String>,
    },
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid {format}: {detail}")]
    Syntax {
        seq: Option<u64>,
        format: &'static str,
        detail: String,
    },
    #[error("{detail}")]
    Structure { seq: Option<u64>, detail: String },
    #[error("{detail}")]
    InvalidTime { seq: Option<u64>, detail: String },
    #[error("{detail}")]
    InvalidMessage { seq: Option<u64>, detail: String },
    /// Two points InfluxDB would store as one (same series, time and field).
    #[error("{detail}")]
    DuplicatePoint { seq: Option<u64>, detail: String },
    #[error("{prefix}{source}")]
    Point {
        seq: Option<u64>,
        prefix: String,
        source: PointError,
    },
}

impl DecodeError {
    /// The nack `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Syntax { format: "JSON", .. } => "invalid_json",
            DecodeError::Syntax { .. } => "invalid_cbor",
            DecodeError::Structure { .. } => "invalid_message",
            DecodeError::InvalidTime { .. } => "invalid_timestamp",
            DecodeError::InvalidMessage { .. } => "invalid_message",
            DecodeError::DuplicatePoint { .. } => "duplicate_point",
            DecodeError::Point { source, .. } => source.code(),
        }
    }

    /// The `seq` of the refused message, when it could be read.
    pub fn seq(&self) -> Option<u64> {
        match self {
            DecodeError::Syntax { seq, .. }
            | DecodeError::Structure { seq, .. }
            | DecodeError::InvalidTime { seq, .. }
            | DecodeError::InvalidMessage { seq, .. }
            | DecodeError::DuplicatePoint { seq, .. }
            | DecodeError::Point { seq, .. } => *seq,
        }
    }
}

/// Decoder settings, from the `[decode]` and `[measurements.*]` config.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub default_measurement: String,
    /// Measurement of points decoded from SenML records.
    pub senml_measurement: String,
    /// Write integers as InfluxDB integers for every measurement.
    pub int_fields: bool,
    /// Measurements whose integers are written as InfluxDB integers.
    pub int_field_measurements: HashSet<String>,
    pub max_points_per_message: usize,
    /// Deepest nesting of arrays and maps accepted (checked before parsing).
    pub max_depth: usize,
    pub limits: Limits,
    /// The formats (mappings) messages may be sent in: the presets and
    /// `[formats.*]` (see [`crate::format`]).
    pub formats: std::sync::Arc<crate::format::Formats>,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            default_measurement: "telemetry".into(),
            senml_measurement: "senml".into(),
            int_fields: false,
            int_field_measurements: HashSet::new(),
            max_points_per_message: 10_000,
            max_depth: 8,
            limits: Limits::default(),
            formats: Default::default(),
        }
    }
}

/// InfluxDB's representable time range, in nanoseconds.
pub(crate) const MIN_TIME_NS: i128 = -9_223_372_036_854_775_806;
pub(crate) const MAX_TIME_NS: i128 = 9_223_372_036_854_775_806;

#[derive(Debug, Clone)]
pub struct Decoder {
    config: DecoderConfig,
}

impl Decoder {
    pub fn new(config: DecoderConfig) -> Self {
        Decoder { config }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Decode one message of `device`; `clock` stamps points sent without `ts`.
    pub fn decode(
        &self,
        bytes: &[u8],
        format: Format,
        device: &str,
        clock: &ServerClock,
    ) -> Result<Message, DecodeError> {
        self.decode_reusing(bytes, format, device, clock, &mut Vec::new())
    }

    /// [`Self::decode`], filling the points of `spare` (points of earlier
    /// messages, given back once done with) in place of allocating new ones:
    /// a point owns a `String` per name, and allocating them was a third of
    /// the server's CPU on CBOR batches. Every part of a reused point is
    /// overwritten. `spare` is taken for the returned points.
    pub fn decode_reusing(
        &self,
        bytes: &[u8],
        format: Format,
        device: &str,
        clock: &ServerClock,
        spare: &mut Vec<Point>,
    ) -> Result<Message, DecodeError> {
        let max_depth = self.config.max_depth;
        if matches!(format, Format::Json | Format::SenmlJson) {
            depth::check_json(bytes, max_depth)?;
        }
        // Holds the owned message of the slow paths, which the borrowed model views.
        let owned: WireMessage;
        let wire = match format {
            Format::Json => match json::decode_fast(bytes) {
                Some(m) => m,
                None => {
                    owned = json::decode(bytes)?;
                    owned.as_ref()
                }
            },
            Format::Cbor => match (max_depth >= MODEL_DEPTH)
                .then(|| cbor::decode_fast(bytes))
                .flatten()
            {
                Some(m) => m,
                None => {
                    owned = cbor::decode(bytes, max_depth)?;
                    owned.as_ref()
                }
            },
            Format::SenmlJson => return self.senml(senml::parse_json(bytes)?, device, clock),
            Format::SenmlCbor => return self.senml(senml::parse_cbor(bytes)?, device, clock),
        };
        self.convert(wire, device, clock, spare)
    }

    /// Decode a device's own JSON (or CBOR) document with `mapping`: parsed
    /// into the JSON value model, mapped to the message model, then checked
    /// like any other message (see [`crate::format`]).
    pub fn decode_mapped(
        &self,
        bytes: &[u8],
        format: Format,
        mapping: &crate::format::Mapping,
        device: &str,
        clock: &ServerClock,
    ) -> Result<Message, DecodeError> {
        let max_depth = self.config.max_depth;
        let value = if format.is_binary() {
            let mut rest = bytes;
            let v = ciborium::de::from_reader_with_recursion_limit::<ciborium::Value, _>(
                &mut rest,
                max_depth.max(1),
            )
            .map_err(|e| match e {
                ciborium::de::Error::RecursionLimitExceeded => depth::too_deep(None, max_depth),
                e => DecodeError::Syntax {
                    seq: None,
                    format: "CBOR",
                    detail: e.to_string(),
                },
            })?;
            if !rest.is_empty() {
                return Err(DecodeError::Syntax {
                    seq: None,
                    format: "CBOR",
                    detail: format!("{} bytes of trailing data after the message", rest.len()),
                });
            }
            crate::format::cbor_to_json(v).map_err(|detail| DecodeError::Structure {
                seq: None,
                detail: format!("format {}: {detail}", mapping.name()),
            })?
        } else {
            depth::check_json(bytes, max_depth)?;
            serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| DecodeError::Syntax {
                seq: None,
                format: "JSON",
                detail: e.to_string(),
            })?
        };
        let wire = mapping.apply(&value)?;
        self.decode_wire(wire, device, clock)
    }

    /// Decode a message already in the wire model (gRPC's protobuf telemetry
    /// is converted to it), with the same checks as JSON and CBOR.
    pub fn decode_wire(
        &self,
        wire: WireMessage,
        device: &str,
        clock: &ServerClock,
    ) -> Result<Message, DecodeError> {
        self.convert(wire.as_ref(), device, clock, &mut Vec::new())
    }

    fn convert(
        &self,
        mut m: MsgRef<'_>,
        device: &str,
        clock: &ServerClock,
        spare: &mut Vec<Point>,
    ) -> Result<Message, DecodeError> {
        let seq = m.seq;
        let invalid = |detail: String| DecodeError::InvalidMessage { seq, detail };
        if let Some(cmd) = m.cmd_result.take() {
            if m.fields.is_some() || m.points.is_some() {
                return Err(invalid(
                    "a message is either telemetry or a cmd_result, not both".into(),
                ));
            }
            return Ok(Message::CommandResult {
                seq,
                cmd: cmd.into_owned(),
                ok: m.ok.unwrap_or(true),
                detail: m.detail.map(Cow::into_owned),
            });
        }
        if m.ok.is_some() || m.detail.is_some() {
            return Err(invalid(
                "`ok` and `detail` belong to a cmd_result message".into(),
            ));
        }
        let base_time =
            m.ts.as_ref()
                .map(|t| to_ns(t, || "ts".into(), seq))
                .transpose()?;
        let mut stamped = 0..0;
        let points = match m.points.take() {
            Some(list) => {
                if m.fields.is_some() {
                    return Err(invalid(
                        "a batch carries its fields inside `points`, not at the top level".into(),
                    ));
                }
                if list.is_empty() {
                    return Err(invalid("`points` is empty: send at least one point".into()));
                }
                if list.len() > self.config.max_points_per_message {
                    return Err(DecodeError::Point {
                        seq,
                        prefix: String::new(),
                        source: PointError::TooMany {
                            what: "points in one message",
                            count: list.len(),
                            max: self.config.max_points_per_message,
                        },
                    });
                }
                let unstamped = match base_time {
                    Some(_) => 0,
                    None => list.iter().filter(|p| p.ts.is_none()).count(),
                };
                if unstamped > 0 {
                    let first = clock.reserve(unstamped);
                    stamped = first..first + unstamped as i64;
                }
                let mut next_stamp = stamped.start;
                let mut points = std::mem::take(spare);
                points.truncate(list.len());
                for (i, p) in list.into_iter().enumerate() {
                    if i == points.len() {
                        points.push(empty_point());
                    }
                    let slot = &mut points[i];
                    let time = match (&p.ts, base_time) {
                        (Some(_), _) => 0, // unused: the point has its own
                        (None, Some(t)) => t,
                        (None, None) => {
                            next_stamp += 1;
                            next_stamp - 1
                        }
                    };
                    self.point(p, &m, time, device, seq, Some(i), slot)?;
                }
                duplicates::check(&points, seq, "points")?;
                points
            }
            None => {
                let p = PointRef {
                    ts: None,
                    measurement: None,
                    tags: None,
                    fields: m.fields.take(),
                };
                let time = base_time.unwrap_or_else(|| {
                    let t = clock.reserve(1);
                    stamped = t..t + 1;
                    t
                });
                let mut points = std::mem::take(spare);
                points.truncate(1);
                if points.is_empty() {
                    points.push(empty_point());
                }
                self.point(p, &m, time, device, seq, None, &mut points[0])?;
                points
            }
        };
        Ok(Message::Points {
            seq,
            points,
            stamped,
        })
    }

    /// Fill `slot` from `p`; `time` is the point's time when it has no `ts`
    /// of its own (the message's, or the server's stamp).
    #[allow(clippy::too_many_arguments)]
    fn point(
        &self,
        p: PointRef<'_>,
        base: &MsgRef<'_>,
        time: i64,
        device: &str,
        seq: Option<u64>,
        index: Option<usize>,
        slot: &mut Point,
    ) -> Result<(), DecodeError> {
        let prefix = || index.map(|i| format!("points[{i}]: ")).unwrap_or_default();
        let time_ns = match &p.ts {
            Some(t) => to_ns(t, || format!("{}ts", prefix()), seq)?,
            None => time,
        };
        let measurement = p
            .measurement
            .as_deref()
            .or(base.measurement.as_deref())
            .unwrap_or(&self.config.default_measurement);
        let point_err = |source| DecodeError::Point {
            seq,
            prefix: prefix(),
            source,
        };
        // The point's own tags over the message's, both key-sorted and
        // unique; `device` goes in its sorted place.
        let own = p.tags.as_deref().unwrap_or_default();
        let inherited = base.tags.as_deref().unwrap_or_default();
        let tag_list = &mut slot.tags;
        // A new point is sized exactly (a pushed-to vector starts at 4): the
        // live view keeps each device's last point for as long as it lives.
        tag_list.reserve_exact((own.len() + inherited.len() + 1).saturating_sub(tag_list.len()));
        let mut n = 0;
        let mut put = |k: &str, v: &str| {
            match tag_list.get_mut(n) {
                Some((key, value)) => {
                    set(key, k);
                    set(value, v);
                }
                None => tag_list.push((k.to_owned(), v.to_owned())),
            }
            n += 1;
        };
        let (mut i, mut j) = (0, 0);
        let mut device_placed = false;
        loop {
            let (k, v) = match (own.get(i), inherited.get(j)) {
                (Some(a), Some(b)) => match a.0.cmp(&b.0) {
                    Ordering::Less => {
                        i += 1;
                        a
                    }
                    Ordering::Greater => {
                        j += 1;
                        b
                    }
                    Ordering::Equal => {
                        i += 1;
                        j += 1;
                        a
                    }
                },
                (Some(a), None) => {
                    i += 1;
                    a
                }
                (None, Some(b)) => {
                    j += 1;
                    b
                }
                (None, None) => break,
            };
            if k == "device" {
                return Err(point_err(PointError::ReservedDeviceTag));
            }
            if !device_placed && &**k > "device" {
                put("device", device);
                device_placed = true;
            }
            put(k, v);
        }
        if !device_placed {
            put("device", device);
        }
        slot.tags.truncate(n);
        let fields = p.fields.unwrap_or_default();
        slot.fields.truncate(fields.len());
        slot.fields.reserve_exact(fields.len() - slot.fields.len());
        for (n, (k, v)) in fields.into_iter().enumerate() {
            let v = match v {
                FieldRef::Float(f) => FieldValue::Float(f),
                FieldRef::Int(i) => FieldValue::Int(i),
                FieldRef::UInt(u) => FieldValue::UInt(u),
                FieldRef::Bool(b) => FieldValue::Bool(b),
                FieldRef::Str(s) => FieldValue::Str(s.into_owned()),
            };
            match slot.fields.get_mut(n) {
                Some((key, value)) => {
                    set(key, &k);
                    *value = v;
                }
                None => slot.fields.push((k.into_owned(), v)),
            }
        }
        set(&mut slot.measurement, measurement);
        slot.int_fields =
            self.config.int_fields || self.config.int_field_measurements.contains(measurement);
        slot.time_ns = time_ns;
        lineproto::check_point(slot, &self.config.limits).map_err(point_err)?;
        Ok(())
    }
}

/// A point to fill (see [`Decoder::decode_reusing`]).
fn empty_point() -> Point {
    Point {
        measurement: String::new(),
        tags: Vec::new(),
        fields: Vec::new(),
        time_ns: 0,
        int_fields: false,
    }
}

/// Overwrite `s` with `with`, keeping its allocation.
fn set(s: &mut String, with: &str) {
    s.clear();
    s.push_str(with);
}

/// Convert a wire timestamp to nanoseconds, within InfluxDB's range. `what`
/// names it in the error (built only then: one allocation less per point).
fn to_ns(t: &TimeRef<'_>, what: impl Fn() -> String, seq: Option<u64>) -> Result<i64, DecodeError> {
    let err = |detail: String| DecodeError::InvalidTime {
        seq,
        detail: format!("{}: {detail}", what()),
    };
    let ns: i128 = match t {
        TimeRef::Millis(ms) => ms.saturating_mul(1_000_000),
        TimeRef::Nanos(ns) => *ns,
        TimeRef::FracMillis(ms) if ms.is_finite() => (ms * 1_000_000.0).round() as i128,
        TimeRef::FracMillis(ms) => {
            return Err(err(format!("{ms} is not a time; send epoch milliseconds")));
        }
        TimeRef::Rfc3339(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| {
                err(format!(
                    "{s:?} is not RFC 3339 ({e}); e.g. \"2024-11-25T00:00:00.123Z\""
                ))
            })?
            .timestamp_nanos_opt()
            .map(i128::from)
            .ok_or_else(|| {
                err(format!(
                    "{s:?} is outside the years 1677-2262 that InfluxDB can store"
                ))
            })?,
    };
    if !(MIN_TIME_NS..=MAX_TIME_NS).contains(&ns) {
        return Err(err(
            "outside the years 1677-2262 that InfluxDB can store; ts is in epoch milliseconds"
                .into(),
        ));
    }
    Ok(ns as i64)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
