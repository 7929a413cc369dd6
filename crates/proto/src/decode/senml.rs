//! SenML (RFC 8428) packs, in JSON (`senml+json`) and CBOR (`senml+cbor`),
//! into points.
//!
//! A pack is an array of records. Base fields (`bn`, `bt`, `bu`, `bv`, `bs`,
//! `bver`) apply to the record that carries them and every later one until
//! overridden; each record is then *resolved* (RFC 8428 §4.6): name = base
//! name + name, time = base time + time (a result below 2^28 s is relative
//! to now), unit = unit or base unit, value = base value + value, sum = base
//! sum + sum. Times are seconds as floats; they are kept to the microsecond,
//! which is all a float of epoch seconds can carry today.
//!
//! Each resolved record becomes one point (see `docs/senml.md`):
//! measurement `decode.senml_measurement` (default `senml`), tags `device`
//! (from the session, as always), `name` (the resolved name) and `unit` when
//! there is one, and one field per value kind under its SenML label: `v`
//! (float), `vs` (string), `vb` (boolean), `vd` (data, base64url text) and
//! `s` (sum). The unit is a tag rather than a field because RFC 8428's own
//! examples send records with the same name and time that differ only in
//! their unit (`%RH`, `lon`, `lat`): as a field they would overwrite each
//! other in InfluxDB.
//!
//! Unknown labels are ignored, except those ending in `_`, which RFC 8428
//! says a receiver must understand: such a pack is refused, as is a pack of a
//! version above 10.

use std::collections::BTreeMap;

use super::DecodeError;
use super::Message;
use crate::clock::ServerClock;
use crate::lineproto::{self, PointError};
use crate::point::{FieldValue, Point};

/// One SenML record as sent (CBOR and JSON share it).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Record {
    pub bn: Option<String>,
    pub bt: Option<f64>,
    pub bu: Option<String>,
    pub bv: Option<f64>,
    pub bs: Option<f64>,
    pub bver: Option<i64>,
    pub n: Option<String>,
    pub u: Option<String>,
    pub v: Option<f64>,
    pub vs: Option<String>,
    pub vb: Option<bool>,
    /// Data value, as base64url text (CBOR byte strings are converted).
    pub vd: Option<String>,
    pub s: Option<f64>,
    pub t: Option<f64>,
}

/// A record's value, one of four kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Str(String),
    Bool(bool),
    /// base64url text.
    Data(String),
}

/// A record after base-field resolution (RFC 8428 §4.6).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Index of the record in its pack, for error messages.
    pub record: usize,
    pub name: String,
    pub unit: Option<String>,
    pub value: Option<Value>,
    pub sum: Option<f64>,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: i64,
}

/// The SenML version we implement; packs declaring a later one are refused.
const VERSION: i64 = 10;
/// Resolved times below this many seconds are relative to now (§4.5.3).
const RELATIVE_LIMIT: f64 = 268_435_456.0;
/// CBOR nesting limit: a pack is an array of maps of scalars.
const RECURSION_LIMIT: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Label {
    Bver,
    Bn,
    Bt,
    Bu,
    Bv,
    Bs,
    N,
    U,
    V,
    Vs,
    Vb,
    S,
    T,
    Ut,
    Vd,
}

impl Label {
    fn from_name(s: &str) -> Option<Label> {
        Some(match s {
            "bver" => Label::Bver,
            "bn" => Label::Bn,
            "bt" => Label::Bt,
            "bu" => Label::Bu,
            "bv" => Label::Bv,
            "bs" => Label::Bs,
            "n" => Label::N,
            "u" => Label::U,
            "v" => Label::V,
            "vs" => Label::Vs,
            "vb" => Label::Vb,
            "s" => Label::S,
            "t" => Label::T,
            "ut" => Label::Ut,
            "vd" => Label::Vd,
            _ => return None,
        })
    }

    /// CBOR labels (RFC 8428 §6, table 4).
    fn from_cbor(i: i128) -> Option<Label> {
        Some(match i {
            -1 => Label::Bver,
            -2 => Label::Bn,
            -3 => Label::Bt,
            -4 => Label::Bu,
            -5 => Label::Bv,
            -6 => Label::Bs,
            0 => Label::N,
            1 => Label::U,
            2 => Label::V,
            3 => Label::Vs,
            4 => Label::Vb,
            5 => Label::S,
            6 => Label::T,
            7 => Label::Ut,
            8 => Label::Vd,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Label::Bver => "bver",
            Label::Bn => "bn",
            Label::Bt => "bt",
            Label::Bu => "bu",
            Label::Bv => "bv",
            Label::Bs => "bs",
            Label::N => "n",
            Label::U => "u",
            Label::V => "v",
            Label::Vs => "vs",
            Label::Vb => "vb",
            Label::S => "s",
            Label::T => "t",
            Label::Ut => "ut",
            Label::Vd => "vd",
        }
    }
}

/// A scalar as either encoding carries it.
enum Scalar<'a> {
    Str(&'a str),
    Num(f64),
    Int(i128),
    Bool(bool),
    Bytes(&'a [u8]),
    Other,
}

fn structure(detail: String) -> DecodeError {
    DecodeError::Structure { seq: None, detail }
}

fn invalid(detail: String) -> DecodeError {
    DecodeError::InvalidMessage { seq: None, detail }
}

fn set(rec: &mut Record, index: usize, label: Label, value: Scalar<'_>) -> Result<(), DecodeError> {
    let want = |what: &str| {
        structure(format!(
            "records[{index}].{}: expected {what}",
            label.name()
        ))
    };
    let text = |v: Scalar<'_>| match v {
        Scalar::Str(s) => Ok(s.to_owned()),
        _ => Err(want("a string")),
    };
    let number = |v: Scalar<'_>| match v {
        Scalar::Num(f) => Ok(f),
        Scalar::Int(i) => Ok(i as f64),
        _ => Err(want("a number")),
    };
    match label {
        Label::Bver => {
            rec.bver = Some(match value {
                Scalar::Int(i) => i64::try_from(i).map_err(|_| want("a small integer"))?,
                _ => return Err(want("an integer")),
            })
        }
        Label::Bn => rec.bn = Some(text(value)?),
        Label::Bt => rec.bt = Some(number(value)?),
        Label::Bu => rec.bu = Some(text(value)?),
        Label::Bv => rec.bv = Some(number(value)?),
        Label::Bs => rec.bs = Some(number(value)?),
        Label::N => rec.n = Some(text(value)?),
        Label::U => rec.u = Some(text(value)?),
        Label::V => rec.v = Some(number(value)?),
        Label::Vs => rec.vs = Some(text(value)?),
        Label::Vb => {
            rec.vb = Some(match value {
                Scalar::Bool(b) => b,
                _ => return Err(want("a boolean")),
            })
        }
        Label::S => rec.s = Some(number(value)?),
        Label::T => rec.t = Some(number(value)?),
        // Update time is advice to the reader on when to expect the next value.
        Label::Ut => {
            number(value)?;
        }
        Label::Vd => {
            rec.vd = Some(match value {
                // JSON carries base64url text; check it so InfluxDB stores what decodes.
                Scalar::Str(s) => {
                    let trimmed = s.trim_end_matches('=');
                    data_encoding::BASE64URL_NOPAD
                        .decode(trimmed.as_bytes())
                        .map_err(|e| want(&format!("base64url data ({e})")))?;
                    trimmed.to_owned()
                }
                Scalar::Bytes(b) => data_encoding::BASE64URL_NOPAD.encode(b),
                _ => return Err(want("data")),
            })
        }
    }
    Ok(())
}

fn unknown(index: usize, key: &str) -> Result<(), DecodeError> {
    if key.ends_with('_') {
        return Err(invalid(format!(
            "records[{index}]: field {key:?} must be understood (RFC 8428 §4.4) and this server does not know it"
        )));
    }
    Ok(())
}

/// Parse a SenML JSON pack.
pub fn parse_json(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let detail = format!("{e} (SenML JSON is an array of records)");
        match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                DecodeError::Syntax {
                    seq: None,
                    format: "JSON",
                    detail,
                }
            }
            _ => structure(detail),
        }
    })?;
    let serde_json::Value::Array(list) = value else {
        return Err(structure("a SenML pack is a JSON array of records".into()));
    };
    let mut records = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let serde_json::Value::Object(map) = item else {
            return Err(structure(format!(
                "records[{i}]: a record is a JSON object"
            )));
        };
        let mut rec = Record::default();
        for (key, v) in map {
            let Some(label) = Label::from_name(key) else {
                unknown(i, key)?;
                continue;
            };
            let scalar = match v {
                serde_json::Value::String(s) => Scalar::Str(s),
                serde_json::Value::Bool(b) => Scalar::Bool(*b),
                serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => Scalar::Int(i.into()),
                    (None, Some(u), _) => Scalar::Int(u.into()),
                    (None, None, Some(f)) => Scalar::Num(f),
                    _ => Scalar::Other,
                },
                _ => Scalar::Other,
            };
            set(&mut rec, i, label, scalar)?;
        }
        records.push(rec);
    }
    Ok(records)
}

/// Parse a SenML CBOR pack (integer labels; text labels are accepted too).
pub fn parse_cbor(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
    use ciborium::Value as C;
    let mut rest = bytes;
    let value: C = ciborium::de::from_reader_with_recursion_limit(&mut rest, RECURSION_LIMIT)
        .map_err(|e| DecodeError::Syntax {
            seq: None,
            format: "CBOR",
            detail: format!("not a SenML CBOR pack: {e}"),
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::Syntax {
            seq: None,
            format: "CBOR",
            detail: format!("{} bytes of trailing data after the pack", rest.len()),
        });
    }
    let C::Array(list) = value else {
        return Err(structure("a SenML pack is a CBOR array of records".into()));
    };
    let mut records = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let C::Map(map) = item else {
            return Err(structure(format!("records[{i}]: a record is a CBOR map")));
        };
        let mut rec = Record::default();
        for (key, v) in map {
            let label = match key {
                C::Integer(k) => match Label::from_cbor(i128::from(*k)) {
                    Some(l) => l,
                    // Unregistered integer labels cannot end in `_`: ignore.
                    None => continue,
                },
                C::Text(k) => match Label::from_name(k) {
                    Some(l) => l,
                    None => {
                        unknown(i, k)?;
                        continue;
                    }
                },
                _ => {
                    return Err(structure(format!(
                        "records[{i}]: labels are integers or text"
                    )));
                }
            };
            let scalar = match v {
                C::Text(s) => Scalar::Str(s),
                C::Bool(b) => Scalar::Bool(*b),
                C::Integer(n) => Scalar::Int(i128::from(*n)),
                C::Float(f) => Scalar::Num(*f),
                C::Bytes(b) => Scalar::Bytes(b),
                _ => Scalar::Other,
            };
            set(&mut rec, i, label, scalar)?;
        }
        records.push(rec);
    }
    Ok(records)
}

/// Whether `name` is a valid resolved SenML name (§4.5.1).
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-:./_".contains(&b))
}

/// Resolve base fields into self-contained records (RFC 8428 §4.6). Records
/// carrying only base fields set context and yield nothing. Relative times
/// count from `now_ns` plus the record's index (one nanosecond each).
pub fn resolve(records: Vec<Record>, now_ns: i64) -> Result<Vec<Resolved>, DecodeError> {
    let mut base_name = String::new();
    let mut base_time = 0.0f64;
    let mut base_unit: Option<String> = None;
    let mut base_value = 0.0f64;
    let mut base_sum = 0.0f64;
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        if let Some(ver) = r.bver
            && ver > VERSION
        {
            return Err(invalid(format!(
                "records[{i}].bver: SenML version {ver} is newer than the version {VERSION} this server implements"
            )));
        }
        if let Some(bn) = r.bn {
            base_name = bn;
        }
        if let Some(bt) = r.bt {
            base_time = bt;
        }
        if r.bu.is_some() {
            base_unit = r.bu;
        }
        if let Some(bv) = r.bv {
            base_value = bv;
        }
        if let Some(bs) = r.bs {
            base_sum = bs;
        }
        let kinds = [
            r.v.is_some(),
            r.vs.is_some(),
            r.vb.is_some(),
            r.vd.is_some(),
        ];
        let value_kinds = kinds.iter().filter(|k| **k).count();
        if value_kinds > 1 {
            return Err(invalid(format!(
                "records[{i}]: a record carries one of v, vs, vb, vd, not several"
            )));
        }
        if value_kinds == 0 && r.s.is_none() {
            if r.n.is_some() || r.u.is_some() || r.t.is_some() {
                return Err(invalid(format!(
                    "records[{i}]: the record has no value: give v, vs, vb, vd or s"
                )));
            }
            continue;
        }
        let name = match &r.n {
            Some(n) => format!("{base_name}{n}"),
            None => base_name.clone(),
        };
        if !valid_name(&name) {
            return Err(invalid(format!(
                "records[{i}]: resolved name {name:?} is not a SenML name (letters, digits, - : . / _, \
                 starting with a letter or digit)"
            )));
        }
        let time = base_time + r.t.unwrap_or(0.0);
        // A record relative to now (or without `t`) is one nanosecond later
        // than the one before: records of one name sent without times would
        // otherwise be one point in InfluxDB. The caller reserved the range.
        let time_ns = to_ns(time, now_ns.saturating_add(i as i64)).ok_or_else(|| DecodeError::InvalidTime {
            seq: None,
            detail: format!(
                "records[{i}]: time {time} s is outside the years 1677-2262 that InfluxDB can store"
            ),
        })?;
        let value = if let Some(v) = r.v {
            Some(Value::Number(base_value + v))
        } else if let Some(s) = r.vs {
            Some(Value::Str(s))
        } else if let Some(b) = r.vb {
            Some(Value::Bool(b))
        } else {
            r.vd.map(Value::Data)
        };
        out.push(Resolved {
            record: i,
            name,
            unit: r.u.or_else(|| base_unit.clone()).filter(|u| !u.is_empty()),
            value,
            sum: r.s.map(|s| base_sum + s),
            time_ns,
        });
    }
    Ok(out)
}

/// Seconds (absolute, or relative to now below 2^28) to epoch nanoseconds.
fn to_ns(seconds: f64, now_ns: i64) -> Option<i64> {
    if !seconds.is_finite() {
        return None;
    }
    let ns: i128 = if seconds.abs() < RELATIVE_LIMIT {
        i128::from(now_ns).saturating_add((seconds * 1e9).round() as i128)
    } else {
        // A float of epoch seconds is exact to about 0.2 us today: round to 1 us.
        ((seconds * 1e6).round() as i128).saturating_mul(1000)
    };
    (super::MIN_TIME_NS..=super::MAX_TIME_NS)
        .contains(&ns)
        .then_some(ns as i64)
}

/// Tags of a resolved record besides `device`, in InfluxDB's order.
pub(super) fn tags(r: &Resolved, device: &str) -> Vec<(String, String)> {
    let mut tags = BTreeMap::new();
    tags.insert("device", device.to_owned());
    tags.insert("name", r.name.clone());
    if let Some(u) = &r.unit {
        tags.insert("unit", u.clone());
    }
    tags.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A pack into points: one per resolved record (a `v`, `vs`, `vb` or `vd`
/// field and `s`), tagged with its name and unit, then checked like any point.
impl super::Decoder {
    /// A SenML pack: one point per resolved record (see [`senml`]). Packs carry
    /// no `seq`; sessions number them (see `session.rs`).
    pub(super) fn senml(
        &self,
        records: Vec<Record>,
        device: &str,
        clock: &ServerClock,
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
        // Records without a time of their own each get a nanosecond more
        // (see `senml::resolve`): reserve one per record.
        let now_ns = clock.reserve(records.len());
        let resolved = resolve(records, now_ns)?;
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
                Some(Value::Number(v)) => fields.push(("v".to_owned(), FieldValue::Float(*v))),
                Some(Value::Str(s)) => fields.push(("vs".to_owned(), FieldValue::Str(s.clone()))),
                Some(Value::Bool(b)) => fields.push(("vb".to_owned(), FieldValue::Bool(*b))),
                Some(Value::Data(d)) => fields.push(("vd".to_owned(), FieldValue::Str(d.clone()))),
                None => {}
            }
            if let Some(s) = r.sum {
                fields.push(("s".to_owned(), FieldValue::Float(s)));
            }
            let point = Point {
                measurement: self.config.senml_measurement.clone(),
                tags: tags(&r, device),
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
        super::duplicates::check(&points, None, "records")?;
        Ok(Message::Points {
            seq: None,
            points,
            stamped: 0..0,
        })
    }
}

#[cfg(test)]
mod tests;
