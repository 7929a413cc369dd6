//! Payloads on the broker.
//!
//! A bridged point uses the device message model (JSON or CBOR), plus the
//! device id, which devices never send:
//!
//! ```json
//! {"device": "dev-1", "measurement": "weather", "ts": 1732492800123,
//!  "tags": {"site": "roof"}, "fields": {"temp_c": 21.5, "ok": true, "fw": "1.2.0"}}
//! ```
//!
//! `ts` is epoch milliseconds when the time is a whole millisecond, else an
//! RFC 3339 string with nanoseconds, so no precision is lost. Integers stay
//! integers (the `int_fields` setting is about InfluxDB only).

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::PayloadFormat;
use wsingest_proto::point::{FieldValue, Point};

struct PointPayload<'a>(&'a Point);

impl Serialize for PointPayload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("device", p.tag("device").unwrap_or_default())?;
        m.serialize_entry("measurement", &p.measurement)?;
        if p.time_ns % 1_000_000 == 0 {
            m.serialize_entry("ts", &(p.time_ns / 1_000_000))?;
        } else {
            let t = chrono::DateTime::from_timestamp_nanos(p.time_ns);
            m.serialize_entry("ts", &t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))?;
        }
        m.serialize_entry("tags", &Tags(&p.tags))?;
        m.serialize_entry("fields", &Fields(&p.fields))?;
        m.end()
    }
}

struct Tags<'a>(&'a [(String, String)]);

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0.iter().filter(|(k, _)| k != "device") {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

struct Fields<'a>(&'a [(String, FieldValue)]);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match v {
                FieldValue::Float(f) => m.serialize_entry(k, f)?,
                FieldValue::Int(i) => m.serialize_entry(k, i)?,
                FieldValue::UInt(u) => m.serialize_entry(k, u)?,
                FieldValue::Bool(b) => m.serialize_entry(k, b)?,
                FieldValue::Str(t) => m.serialize_entry(k, t)?,
            }
        }
        m.end()
    }
}

/// Encode a point for the broker.
pub fn point(p: &Point, format: PayloadFormat) -> Vec<u8> {
    encode(&PointPayload(p), format)
}

fn encode<T: Serialize>(v: &T, format: PayloadFormat) -> Vec<u8> {
    match format {
        // Serializing our own types to memory cannot fail (floats are finite:
        // the decoder refuses NaN and inf).
        PayloadFormat::Json => serde_json::to_vec(v).expect("payload serializes"),
        PayloadFormat::Cbor => {
            let mut out = Vec::with_capacity(128);
            ciborium::into_writer(v, &mut out).expect("payload serializes");
            out
        }
    }
}

pub use crate::commands::CommandMessage;

/// A device's answer, as published on `devices/{device}/commands/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    pub cmd: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A delivery notice on `devices/{device}/commands/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusMessage {
    pub cmd: String,
    pub status: crate::commands::Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Control messages are JSON: they are few, and operators read them with
/// `mosquitto_sub`.
pub fn json<T: Serialize>(v: &T) -> Vec<u8> {
    encode(v, PayloadFormat::Json)
}

/// Parse a JSON or CBOR message from the broker (JSON when it starts with
/// `{`, as any JSON object does after optional whitespace).
pub fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        ciborium::de::from_reader_with_recursion_limit(bytes, 64)
            .map_err(|e| format!("neither JSON nor CBOR: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn point(time_ns: i64) -> Point {
        Point {
            measurement: "weather".into(),
            tags: vec![
                ("device".into(), "dev-1".into()),
                ("site".into(), "roof".into()),
            ],
            fields: vec![
                ("fw".into(), FieldValue::Str("1.2.0".into())),
                ("n".into(), FieldValue::Int(-3)),
                ("ok".into(), FieldValue::Bool(true)),
                ("temp_c".into(), FieldValue::Float(21.5)),
            ],
            time_ns,
            int_fields: false,
        }
    }

    #[test]
    fn json_payload_follows_the_device_model() {
        let v: serde_json::Value = serde_json::from_slice(&super::point(
            &point(1732492800123000000),
            PayloadFormat::Json,
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"device": "dev-1", "measurement": "weather", "ts": 1732492800123u64,
                   "tags": {"site": "roof"}, "fields": {"fw": "1.2.0", "n": -3, "ok": true, "temp_c": 21.5}})
        );
        let v: serde_json::Value = serde_json::from_slice(&super::point(
            &point(1732492800123456789),
            PayloadFormat::Json,
        ))
        .unwrap();
        assert_eq!(v["ts"], json!("2024-11-25T00:00:00.123456789Z"));
    }

    #[test]
    fn cbor_payload_is_the_same_model() {
        let bytes = super::point(&point(1732492800123000000), PayloadFormat::Cbor);
        let v: ciborium::Value = ciborium::from_reader(&bytes[..]).unwrap();
        let v = serde_json::to_value(v).unwrap();
        assert_eq!(v["fields"]["n"], json!(-3));
        assert_eq!(v["ts"], json!(1732492800123u64));
        assert_eq!(v["tags"], json!({"site": "roof"}));
    }

    #[test]
    fn parse_accepts_json_and_cbor() {
        let c: CommandMessage = parse(br#" {"cmd": "c-1", "name": "reboot"}"#).unwrap();
        assert_eq!(c.args, None);
        let mut cbor = Vec::new();
        ciborium::into_writer(
            &json!({"cmd": "c-2", "name": "set", "args": {"s": 5}}),
            &mut cbor,
        )
        .unwrap();
        let c: CommandMessage = parse(&cbor).unwrap();
        assert_eq!(c.args, Some(json!({"s": 5})));
        assert!(
            parse::<CommandMessage>(b"{\"name\": \"x\"}")
                .unwrap_err()
                .contains("cmd")
        );
        assert!(parse::<CommandMessage>(b"reboot").is_err());
    }
}
