//! Decoding device messages into validated points.
//!
//! Sans-IO: [`Decoder::decode`] takes the bytes of one WebSocket message and
//! returns either a [`Message`] whose points are ready for line protocol, or a
//! [`DecodeError`] that becomes a nack (`code()` is its `error`, `Display` its
//! `detail`). The `device` tag always comes from the session.

pub mod cbor;
pub mod depth;
pub mod json;
pub mod model;
pub mod senml;

use std::collections::{BTreeMap, HashSet};

use crate::lineproto::{self, Limits, PointError};
use crate::point::{FieldValue, Point};
use model::{WireField, WireMessage, WirePoint, WireTime};

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

    /// Decode one message of `device`; `now_ns` stamps points sent without `ts`.
    pub fn decode(
        &self,
        bytes: &[u8],
        format: Format,
        device: &str,
        now_ns: i64,
    ) -> Result<Message, DecodeError> {
        let max_depth = self.config.max_depth;
        if matches!(format, Format::Json | Format::SenmlJson) {
            depth::check_json(bytes, max_depth)?;
        }
        let wire = match format {
            Format::Json => json::decode(bytes)?,
            Format::Cbor => cbor::decode(bytes, max_depth)?,
            Format::SenmlJson => return self.senml(senml::parse_json(bytes)?, device, now_ns),
            Format::SenmlCbor => return self.senml(senml::parse_cbor(bytes)?, device, now_ns),
        };
        self.convert(wire, device, now_ns)
    }

    /// A SenML pack: one point per resolved record (see [`senml`]). Packs carry
    /// no `seq`; sessions number them (see `session.rs`).
    fn senml(
        &self,
        records: Vec<senml::Record>,
        device: &str,
        now_ns: i64,
    ) -> Result<Message, DecodeError> {
        let too_many = |count| DecodeError::Point {
            seq: None,
            prefix: String::new(),
            source: PointError::TooMany {
                what: "records in one pack",
                count,
                max: self.config.max_points_per_message,
            },
        };
        if records.len() > self.config.max_points_per_message {
            return Err(too_many(records.len()));
        }
        let resolved = senml::resolve(records, now_ns)?;
        if resolved.is_empty() {
            return Err(DecodeError::InvalidMessage {
                seq: None,
                detail: "the pack has no record with a value: send at least one".into(),
            });
        }
        let mut points = Vec::with_capacity(resolved.len());
        for r in resolved {
            let mut fields = Vec::with_capacity(2);
            match &r.value {
                Some(senml::Value::Number(v)) => {
                    fields.push(("v".to_owned(), FieldValue::Float(*v)))
                }
                Some(senml::Value::Str(s)) => {
                    fields.push(("vs".to_owned(), FieldValue::Str(s.clone())))
                }
                Some(senml::Value::Bool(b)) => fields.push(("vb".to_owned(), FieldValue::Bool(*b))),
                Some(senml::Value::Data(d)) => {
                    fields.push(("vd".to_owned(), FieldValue::Str(d.clone())))
                }
                None => {}
            }
            if let Some(s) = r.sum {
                fields.push(("s".to_owned(), FieldValue::Float(s)));
            }
            let point = Point {
                measurement: self.config.senml_measurement.clone(),
                tags: senml::tags(&r, device),
                fields,
                time_ns: r.time_ns,
                int_fields: false,
            };
            lineproto::check_point(&point, &self.config.limits).map_err(|source| {
                DecodeError::Point {
                    seq: None,
                    prefix: format!("records[{}]: ", r.record),
                    source,
                }
            })?;
            points.push(point);
        }
        Ok(Message::Points { seq: None, points })
    }

    /// Decode a message already in the wire model (gRPC's protobuf telemetry
    /// is converted to it), with the same checks as JSON and CBOR.
    pub fn decode_wire(
        &self,
        wire: WireMessage,
        device: &str,
        now_ns: i64,
    ) -> Result<Message, DecodeError> {
        self.convert(wire, device, now_ns)
    }

    fn convert(
        &self,
        mut m: WireMessage,
        device: &str,
        now_ns: i64,
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
                cmd,
                ok: m.ok.unwrap_or(true),
                detail: m.detail,
            });
        }
        if m.ok.is_some() || m.detail.is_some() {
            return Err(invalid(
                "`ok` and `detail` belong to a cmd_result message".into(),
            ));
        }
        let base_time = m.ts.as_ref().map(|t| to_ns(t, "ts", seq)).transpose()?;
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
                let mut points = Vec::with_capacity(list.len());
                for (i, p) in list.into_iter().enumerate() {
                    points.push(self.point(p, &m, base_time, device, now_ns, seq, Some(i))?);
                }
                points
            }
            None => {
                let p = WirePoint {
                    ts: None,
                    measurement: None,
                    tags: None,
                    fields: m.fields.take(),
                };
                vec![self.point(p, &m, base_time, device, now_ns, seq, None)?]
            }
        };
        Ok(Message::Points { seq, points })
    }

    #[allow(clippy::too_many_arguments)]
    fn point(
        &self,
        p: WirePoint,
        base: &WireMessage,
        base_time: Option<i64>,
        device: &str,
        now_ns: i64,
        seq: Option<u64>,
        index: Option<usize>,
    ) -> Result<Point, DecodeError> {
        let prefix = index.map(|i| format!("points[{i}]: ")).unwrap_or_default();
        let time_ns = match &p.ts {
            Some(t) => to_ns(t, &format!("{prefix}ts"), seq)?,
            None => base_time.unwrap_or(now_ns),
        };
        let measurement = p
            .measurement
            .or_else(|| base.measurement.clone())
            .unwrap_or_else(|| self.config.default_measurement.clone());
        let tags = merge_tags(base.tags.as_ref(), p.tags);
        let point_err = |source| DecodeError::Point {
            seq,
            prefix: prefix.clone(),
            source,
        };
        if tags.contains_key("device") {
            return Err(point_err(PointError::ReservedDeviceTag));
        }
        let mut tag_list: Vec<(String, String)> = Vec::with_capacity(tags.len() + 1);
        let mut device_placed = false;
        for (k, v) in tags {
            if !device_placed && k.as_str() > "device" {
                tag_list.push(("device".into(), device.into()));
                device_placed = true;
            }
            tag_list.push((k, v));
        }
        if !device_placed {
            tag_list.push(("device".into(), device.into()));
        }
        let fields = p
            .fields
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    WireField::Float(f) => FieldValue::Float(f),
                    WireField::Int(i) => FieldValue::Int(i),
                    WireField::UInt(u) => FieldValue::UInt(u),
                    WireField::Bool(b) => FieldValue::Bool(b),
                    WireField::Str(s) => FieldValue::Str(s),
                };
                (k, v)
            })
            .collect();
        let int_fields =
            self.config.int_fields || self.config.int_field_measurements.contains(&measurement);
        let point = Point {
            measurement,
            tags: tag_list,
            fields,
            time_ns,
            int_fields,
        };
        lineproto::check_point(&point, &self.config.limits).map_err(point_err)?;
        Ok(point)
    }
}

fn merge_tags(
    base: Option<&BTreeMap<String, String>>,
    own: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    match (base, own) {
        (None, None) => BTreeMap::new(),
        (None, Some(own)) => own,
        (Some(base), None) => base.clone(),
        (Some(base), Some(mut own)) => {
            for (k, v) in base {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
            own
        }
    }
}

/// Convert a wire timestamp to nanoseconds, within InfluxDB's range.
fn to_ns(t: &WireTime, what: &str, seq: Option<u64>) -> Result<i64, DecodeError> {
    let err = |detail: String| DecodeError::InvalidTime {
        seq,
        detail: format!("{what}: {detail}"),
    };
    let ns: i128 = match t {
        WireTime::Millis(ms) => ms.saturating_mul(1_000_000),
        WireTime::FracMillis(ms) if ms.is_finite() => (ms * 1_000_000.0).round() as i128,
        WireTime::FracMillis(ms) => {
            return Err(err(format!("{ms} is not a time; send epoch milliseconds")));
        }
        WireTime::Rfc3339(s) => chrono::DateTime::parse_from_rfc3339(s)
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
