//! InfluxDB line protocol: validation and encoding, written against what
//! InfluxDB 1.x/2.x really parse (measured on influxd 1.6.7, see
//! `docs/line-protocol.md`).
//!
//! Rules the encoder relies on:
//! - In measurements, tag keys, tag values and field keys a backslash is a
//!   literal character, except that `\ `, `\,` and `\=` are escapes. So a name
//!   ending in a backslash, or with a backslash right before a space, comma or
//!   `=`, cannot be carried: it is refused here, with a reason, instead of being
//!   refused by InfluxDB for the whole batch (or stored as something else).
//! - Control characters (newline above all) would split the line: refused.
//! - In string field values only `"` and `\` are escaped; newlines are kept
//!   inside the quotes, which InfluxDB stores as they are.
//! - NaN and ±inf have no line-protocol form: refused.
//!
//! [`check_point`] validates, [`encode_point`] appends one line to a buffer
//! without failing; the decoder always calls the first before the second.

use crate::point::{FieldValue, Point};

/// Size limits on what a point may carry, so that InfluxDB never refuses a
/// point for its size (its own limit on a series key is 64 KiB).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_name_bytes: usize,
    pub max_tag_value_bytes: usize,
    pub max_string_bytes: usize,
    pub max_tags: usize,
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_bytes: 256,
            max_tag_value_bytes: 1024,
            max_string_bytes: 64 * 1024,
            max_tags: 64,
            max_fields: 256,
        }
    }
}

/// Why a point cannot be written. `code()` is the machine-readable `error` of
/// the nack; `Display` is its human `detail`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PointError {
    #[error("{what} is empty: give it a non-empty name")]
    EmptyName { what: String },
    #[error("{what} is {len} bytes, longer than the limit of {max}")]
    TooLong {
        what: String,
        len: usize,
        max: usize,
    },
    #[error("{what} contains control character U+{ch:04X}; remove it")]
    ControlChar { what: String, ch: u32 },
    #[error(
        "{what} has a backslash {position}, which InfluxDB line protocol cannot carry; \
         remove it or replace it"
    )]
    Backslash {
        what: String,
        position: &'static str,
    },
    #[error("{what} starts with '#', which InfluxDB reads as a comment line")]
    Comment { what: String },
    #[error("{what} is the reserved name {name:?}; rename it")]
    Reserved { what: String, name: String },
    #[error("{what} is {value}, which InfluxDB cannot store; send a finite number")]
    NotFinite { what: String, value: String },
    #[error("a point needs at least one field; `fields` is empty or missing")]
    NoFields,
    #[error("{what}: {count} given, the limit is {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("tag `device` is set by the server from the session; remove it from the payload")]
    ReservedDeviceTag,
}

impl PointError {
    /// The nack `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            PointError::EmptyName { .. }
            | PointError::ControlChar { .. }
            | PointError::Backslash { .. }
            | PointError::Comment { .. }
            | PointError::Reserved { .. } => "invalid_name",
            PointError::TooLong { .. } | PointError::TooMany { .. } => "too_large",
            PointError::NotFinite { .. } => "invalid_field",
            PointError::NoFields => "empty_fields",
            PointError::ReservedDeviceTag => "reserved_tag",
        }
    }
}

/// What kind of name is being checked, for the rules and the error text.
#[derive(Clone, Copy)]
enum NameKind {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

fn check_name(
    kind: NameKind,
    s: &str,
    what: impl Fn() -> String,
    limits: &Limits,
) -> Result<(), PointError> {
    if s.is_empty() {
        return Err(PointError::EmptyName { what: what() });
    }
    let max = match kind {
        NameKind::TagValue => limits.max_tag_value_bytes,
        _ => limits.max_name_bytes,
    };
    if s.len() > max {
        return Err(PointError::TooLong {
            what: what(),
            len: s.len(),
            max,
        });
    }
    if let Some(ch) = s.chars().find(|c| c.is_control()) {
        return Err(PointError::ControlChar {
            what: what(),
            ch: ch as u32,
        });
    }
    let bytes = s.as_bytes();
    if bytes.last() == Some(&b'\\') {
        return Err(PointError::Backslash {
            what: what(),
            position: "at the end",
        });
    }
    if bytes
        .windows(2)
        .any(|w| w[0] == b'\\' && matches!(w[1], b' ' | b',' | b'='))
    {
        return Err(PointError::Backslash {
            what: what(),
            position: "right before a space, comma or '='",
        });
    }
    match kind {
        NameKind::Measurement if s.starts_with('#') => {
            return Err(PointError::Comment { what: what() });
        }
        NameKind::TagKey | NameKind::FieldKey
            if matches!(s, "time" | "_field" | "_measurement") =>
        {
            return Err(PointError::Reserved {
                what: what(),
                name: s.to_string(),
            });
        }
        _ => {}
    }
    Ok(())
}

/// Check one point against the rules above and `limits`.
pub fn check_point(p: &Point, limits: &Limits) -> Result<(), PointError> {
    check_name(
        NameKind::Measurement,
        &p.measurement,
        || "measurement".into(),
        limits,
    )?;
    if p.tags.len() > limits.max_tags {
        return Err(PointError::TooMany {
            what: "tags",
            count: p.tags.len(),
            max: limits.max_tags,
        });
    }
    for (k, v) in &p.tags {
        check_name(NameKind::TagKey, k, || format!("tag key {k:?}"), limits)?;
        check_name(NameKind::TagValue, v, || format!("tags.{k}"), limits)?;
    }
    if p.fields.is_empty() {
        return Err(PointError::NoFields);
    }
    if p.fields.len() > limits.max_fields {
        return Err(PointError::TooMany {
            what: "fields",
            count: p.fields.len(),
            max: limits.max_fields,
        });
    }
    for (k, v) in &p.fields {
        check_name(NameKind::FieldKey, k, || format!("field key {k:?}"), limits)?;
        match v {
            FieldValue::Float(f) if !f.is_finite() => {
                return Err(PointError::NotFinite {
                    what: format!("fields.{k}"),
                    value: f.to_string(),
                });
            }
            FieldValue::Str(s) if s.len() > limits.max_string_bytes => {
                return Err(PointError::TooLong {
                    what: format!("fields.{k}"),
                    len: s.len(),
                    max: limits.max_string_bytes,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Append `s` escaping the bytes in `special` with a backslash.
fn push_escaped(out: &mut Vec<u8>, s: &str, special: &[u8]) {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|b| special.contains(b)) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        if special.contains(&b) {
            out.push(b'\\');
        }
        out.push(b);
    }
}

const MEASUREMENT_SPECIAL: &[u8] = b", ";
const KEY_SPECIAL: &[u8] = b", =";
const STRING_SPECIAL: &[u8] = b"\"\\";

/// Append `p` as one line (with its trailing newline) to `out`, timestamp in
/// nanoseconds. `p` must have passed [`check_point`].
pub fn encode_point(p: &Point, out: &mut Vec<u8>) {
    push_escaped(out, &p.measurement, MEASUREMENT_SPECIAL);
    for (k, v) in &p.tags {
        out.push(b',');
        push_escaped(out, k, KEY_SPECIAL);
        out.push(b'=');
        push_escaped(out, v, KEY_SPECIAL);
    }
    let mut sep = b' ';
    for (k, v) in &p.fields {
        out.push(sep);
        sep = b',';
        push_escaped(out, k, KEY_SPECIAL);
        out.push(b'=');
        encode_value(v, p.int_fields, out);
    }
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(p.time_ns).as_bytes());
    out.push(b'\n');
}

fn encode_value(v: &FieldValue, int_fields: bool, out: &mut Vec<u8>) {
    match v {
        FieldValue::Float(f) => push_float(*f, out),
        FieldValue::Int(i) if int_fields => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
            out.push(b'i');
        }
        FieldValue::UInt(u) if int_fields && *u <= i64::MAX as u64 => {
            out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes());
            out.push(b'i');
        }
        FieldValue::Int(i) => push_float(*i as f64, out),
        FieldValue::UInt(u) => push_float(*u as f64, out),
        FieldValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        FieldValue::Str(s) => {
            out.push(b'"');
            push_escaped(out, s, STRING_SPECIAL);
            out.push(b'"');
        }
    }
}

/// Shortest float text that round-trips; ryu's `1e300` form is accepted by
/// InfluxDB's parser (Go's `strconv.ParseFloat`).
fn push_float(f: f64, out: &mut Vec<u8>) {
    out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(measurement: &str, tags: &[(&str, &str)], fields: Vec<(&str, FieldValue)>) -> Point {
        Point {
            measurement: measurement.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            time_ns: 1_700_000_000_000_000_000,
            int_fields: false,
        }
    }

    fn line(p: &Point) -> String {
        check_point(p, &Limits::default()).unwrap();
        let mut out = Vec::new();
        encode_point(p, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_what_line_protocol_needs() {
        let p = point(
            "we ath,er",
            &[("de vice", "a=b,c d"), ("s", r"back\slash")],
            vec![
                ("t c", FieldValue::Str("say \"hi\"\\".into())),
                ("n", FieldValue::Float(21.5)),
            ],
        );
        assert_eq!(
            line(&p),
            "we\\ ath\\,er,de\\ vice=a\\=b\\,c\\ d,s=back\\slash t\\ c=\"say \\\"hi\\\"\\\\\",n=21.5 1700000000000000000\n"
        );
    }

    #[test]
    fn integers_are_floats_unless_configured() {
        let mut p = point(
            "m",
            &[],
            vec![("i", FieldValue::Int(-3)), ("u", FieldValue::UInt(7))],
        );
        assert_eq!(line(&p), "m i=-3.0,u=7.0 1700000000000000000\n");
        p.int_fields = true;
        assert_eq!(line(&p), "m i=-3i,u=7i 1700000000000000000\n");
    }

    #[test]
    fn refuses_what_cannot_be_carried() {
        let l = Limits::default();
        let bad = [
            point("m", &[("t", "ends\\")], vec![("f", FieldValue::Bool(true))]),
            point("m", &[("t", "a\\ b")], vec![("f", FieldValue::Bool(true))]),
            point("m\n", &[], vec![("f", FieldValue::Bool(true))]),
            point("#m", &[], vec![("f", FieldValue::Bool(true))]),
            point("m", &[("t", "")], vec![("f", FieldValue::Bool(true))]),
            point("m", &[], vec![("time", FieldValue::Bool(true))]),
            point("m", &[], vec![("f", FieldValue::Float(f64::NAN))]),
            point("m", &[], vec![("f", FieldValue::Float(f64::INFINITY))]),
            point("m", &[], vec![]),
        ];
        for p in &bad {
            assert!(check_point(p, &l).is_err(), "{p:?} should be refused");
        }
        let e = check_point(&bad[6], &l).unwrap_err();
        assert_eq!(e.code(), "invalid_field");
        assert_eq!(
            e.to_string(),
            "fields.f is NaN, which InfluxDB cannot store; send a finite number"
        );
    }
}
