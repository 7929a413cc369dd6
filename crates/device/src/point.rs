//! A point as the caller builds it, and the telemetry message it becomes on
//! the wire: `{"seq", "ts", "measurement", "tags", "fields"}` for one point,
//! `{"seq", "points": [{...}, ...]}` for a batch (one seq, one ack).

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::error::Error;
use crate::wire::{Encoding, Frame};

/// A field value: InfluxDB stores numbers, booleans and strings.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Float(v) => s.serialize_f64(*v),
            FieldValue::Int(v) => s.serialize_i64(*v),
            FieldValue::Bool(v) => s.serialize_bool(*v),
            FieldValue::Str(v) => s.serialize_str(v),
        }
    }
}

macro_rules! from {
    ($($t:ty => $v:ident ($conv:expr)),* $(,)?) => {$(
        impl From<$t> for FieldValue {
            fn from(x: $t) -> FieldValue { FieldValue::$v($conv(x)) }
        }
    )*};
}
from!(
    f64 => Float(|x| x), f32 => Float(f64::from), i64 => Int(|x| x), i32 => Int(i64::from),
    u32 => Int(i64::from), bool => Bool(|x| x), String => Str(|x| x), &str => Str(String::from),
);

/// One point: a measurement, tags, fields and a timestamp. Without `ts` the
/// client stamps the time the point is taken by [`crate::Client::send`]
/// (never a repeated millisecond), and keeps that stamp on every resend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Point {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    /// Epoch milliseconds.
    pub ts: Option<i64>,
}

impl Point {
    pub fn new(measurement: impl Into<String>) -> Point {
        Point {
            measurement: measurement.into(),
            ..Point::default()
        }
    }

    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Point {
        self.tags.push((key.into(), value.into()));
        self
    }

    pub fn field(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Point {
        self.fields.push((key.into(), value.into()));
        self
    }

    /// The timestamp in epoch milliseconds.
    pub fn ts(mut self, epoch_ms: i64) -> Point {
        self.ts = Some(epoch_ms);
        self
    }

    /// What the server would refuse for good anyway, refused before it is
    /// taken: no fields, NaN or infinite numbers.
    pub fn check(&self) -> Result<(), Error> {
        if self.fields.is_empty() {
            return Err(Error::InvalidPoint(
                "a point needs at least one field".into(),
            ));
        }
        for (k, v) in &self.fields {
            if let FieldValue::Float(f) = v
                && !f.is_finite()
            {
                return Err(Error::InvalidPoint(format!(
                    "fields.{k} is {f}: InfluxDB stores finite numbers only"
                )));
            }
        }
        Ok(())
    }
}

struct Pairs<'a, V>(&'a [(String, V)]);

impl<V: Serialize> Serialize for Pairs<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A point's keys, without `seq` (a member of a batch).
struct Body<'a>(&'a Point);

impl Body<'_> {
    fn entries<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        let p = self.0;
        if let Some(ts) = p.ts {
            m.serialize_entry("ts", &ts)?;
        }
        m.serialize_entry("measurement", &p.measurement)?;
        if !p.tags.is_empty() {
            m.serialize_entry("tags", &Pairs(&p.tags))?;
        }
        m.serialize_entry("fields", &Pairs(&p.fields))
    }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        self.entries(&mut m)?;
        m.end()
    }
}

struct Message<'a> {
    seq: u64,
    points: &'a [Point],
}

impl Serialize for Message<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("seq", &self.seq)?;
        if let [one] = self.points {
            Body(one).entries(&mut m)?;
        } else {
            let points: Vec<Body> = self.points.iter().map(Body).collect();
            m.serialize_entry("points", &points)?;
        }
        m.end()
    }
}

/// The telemetry message carrying `points` (stamped already) as `seq`.
pub fn encode(encoding: Encoding, seq: u64, points: &[Point]) -> Result<Frame, Error> {
    if encoding.numbers_messages() {
        return Err(Error::Config(
            "the client speaks json or cbor (SenML packs are the simulator's)".into(),
        ));
    }
    encoding
        .frame(&Message { seq, points })
        .map_err(Error::InvalidPoint)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wsingest_proto::decode::{Decoder, DecoderConfig, Format, Message as Decoded};

    use super::*;

    fn weather() -> Point {
        Point::new("weather")
            .tag("site", "roof")
            .field("temp_c", 21.5)
            .field("ok", true)
            .field("fw", "1.2.0")
            .field("n", 3)
            .ts(1732492800123)
    }

    #[test]
    fn one_point_is_the_design_shape() {
        let f = encode(Encoding::Json, 42, &[weather()]).unwrap();
        let v: serde_json::Value = serde_json::from_str(f.to_text().unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"seq": 42, "ts": 1732492800123u64, "measurement": "weather",
                   "tags": {"site": "roof"},
                   "fields": {"temp_c": 21.5, "ok": true, "fw": "1.2.0", "n": 3}})
        );
    }

    #[test]
    fn the_server_decoder_accepts_single_and_batch() {
        for (enc, format) in [
            (Encoding::Json, Format::Json),
            (Encoding::Cbor, Format::Cbor),
        ] {
            let two = [weather(), weather().ts(1732492800124)];
            for points in [&two[..1], &two[..]] {
                let f = encode(enc, 7, points).unwrap();
                let bytes = match &f {
                    Frame::Text(t) => t.as_bytes().to_vec(),
                    Frame::Binary(b) => b.to_vec(),
                    _ => unreachable!(),
                };
                let clock = wsingest_proto::clock::ServerClock::frozen_at(0);
                let m = Decoder::new(DecoderConfig::default())
                    .decode(&bytes, format, "d", &clock)
                    .unwrap();
                let Decoded::Points {
                    seq, points: got, ..
                } = m
                else {
                    panic!("{m:?}")
                };
                assert_eq!((seq, got.len()), (Some(7), points.len()));
                assert_eq!(got[0].time_ns, 1_732_492_800_123_000_000);
                assert_eq!(got[0].tag("site"), Some("roof"));
            }
        }
    }

    #[test]
    fn points_the_server_would_refuse_are_refused_first() {
        assert!(Point::new("m").check().is_err());
        assert!(Point::new("m").field("x", f64::NAN).check().is_err());
        assert!(Point::new("m").field("x", 1.0).check().is_ok());
        assert!(encode(Encoding::SenmlJson, 1, &[weather()]).is_err());
    }
}
