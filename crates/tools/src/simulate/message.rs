//! What a simulated device puts on the wire: telemetry messages (one point or
//! a batch, or SenML packs) of its profile's shape, and deliberately faulty
//! messages. Sans-IO. The encodings, command results and the parsing of acks,
//! nacks and commands are the SDK's ([`wsingest_device::wire`]).

use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
pub use wsingest_device::wire::{Downlink, Encoding, Frame, command_result, parse_downlink};

use super::fields::Value;

/// Serialize `v` into one frame of the session's encoding.
fn frame<T: Serialize>(encoding: Encoding, v: &T) -> Frame {
    encoding.frame(v).expect("simulated messages serialize")
}

/// What every message of a device shares.
#[derive(Debug, Clone)]
pub struct Shape {
    pub measurement: Arc<str>,
    pub tags: Arc<[(String, String)]>,
    pub names: Arc<[Arc<str>]>,
    /// Adds the message's `seq` as an integer field of this name to every
    /// point, so a test can count distinct messages in InfluxDB.
    pub seq_field: Option<Arc<str>>,
}

/// One sampled point: epoch milliseconds and values in `Shape::names` order.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ts_ms: i64,
    pub values: Vec<Value>,
}

/// A telemetry message and the number of points it carries:
/// `{"seq", "ts", "measurement", "tags", "fields"}`, or
/// `{"seq", "measurement", "tags", "points": [{"ts", "fields"}]}` for more
/// than one sample. In SenML, a pack of one record per field and sample.
pub fn telemetry(
    encoding: Encoding,
    shape: &Shape,
    seq: Option<u64>,
    samples: &[Sample],
) -> (Frame, u32) {
    if encoding.numbers_messages() {
        return senml_pack(encoding, shape, seq, samples);
    }
    let tags = Tags(&shape.tags);
    let extra = match (&shape.seq_field, seq) {
        (Some(name), Some(seq)) => Some((&**name, seq)),
        _ => None,
    };
    fn fields<'a>(
        names: &'a [Arc<str>],
        s: &'a Sample,
        extra: Option<(&'a str, u64)>,
    ) -> Fields<'a> {
        Fields {
            names,
            values: &s.values,
            extra,
        }
    }
    let names = &shape.names[..];
    let out = if let [one] = samples {
        frame(
            encoding,
            &Single {
                seq,
                ts: one.ts_ms,
                measurement: &shape.measurement,
                tags,
                fields: fields(names, one, extra),
            },
        )
    } else {
        let points: Vec<BatchPoint> = samples
            .iter()
            .map(|s| BatchPoint {
                ts: s.ts_ms,
                fields: fields(names, s, extra),
            })
            .collect();
        frame(
            encoding,
            &Batch {
                seq,
                measurement: &shape.measurement,
                tags,
                points,
            },
        )
    };
    (out, samples.len() as u32)
}

/// A SenML pack: the base name is the measurement (`weather:`), so each
/// record's name is `<measurement>:<field>`; the base time is the first
/// sample's, later samples are relative to it. SenML has no tags: the
/// server adds `device` (and `name`, `unit`), the profile's tags are not sent.
fn senml_pack(
    encoding: Encoding,
    shape: &Shape,
    seq: Option<u64>,
    samples: &[Sample],
) -> (Frame, u32) {
    let base_ms = samples.first().map_or(0, |s| s.ts_ms);
    let base_name = format!("{}:", shape.measurement);
    let seq_value = seq.map(|s| Value::Int(s as i64));
    let mut records = Vec::with_capacity(samples.len() * (shape.names.len() + 1));
    for s in samples {
        let named = shape.names.iter().map(|n| &**n).zip(&s.values);
        let extra = shape.seq_field.as_deref().zip(seq_value.as_ref());
        for (name, value) in named.chain(extra) {
            let first = records.is_empty();
            records.push(SenmlRecord {
                cbor: encoding.is_cbor(),
                base_name: first.then_some(&*base_name),
                base_time_s: first.then_some(base_ms as f64 / 1000.0),
                name,
                time_s: (s.ts_ms != base_ms).then(|| (s.ts_ms - base_ms) as f64 / 1000.0),
                value,
            });
        }
    }
    let count = records.len() as u32;
    (frame(encoding, &records), count)
}

/// One SenML record, with RFC 8428's text labels in JSON and its integer
/// labels in CBOR (§6: bn = -2, bt = -3, n = 0, v = 2, vs = 3, vb = 4, t = 6).
struct SenmlRecord<'a> {
    cbor: bool,
    base_name: Option<&'a str>,
    base_time_s: Option<f64>,
    name: &'a str,
    time_s: Option<f64>,
    value: &'a Value,
}

impl Serialize for SenmlRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn entry<M: SerializeMap, V: Serialize + ?Sized>(
            m: &mut M,
            cbor: bool,
            (text, int): (&str, i8),
            v: &V,
        ) -> Result<(), M::Error> {
            if cbor {
                m.serialize_entry(&int, v)
            } else {
                m.serialize_entry(text, v)
            }
        }
        let c = self.cbor;
        let len = 2
            + self.base_name.is_some() as usize
            + self.base_time_s.is_some() as usize
            + self.time_s.is_some() as usize;
        let mut m = s.serialize_map(Some(len))?;
        if let Some(bn) = self.base_name {
            entry(&mut m, c, ("bn", -2), bn)?;
        }
        if let Some(bt) = self.base_time_s {
            entry(&mut m, c, ("bt", -3), &bt)?;
        }
        entry(&mut m, c, ("n", 0), self.name)?;
        if let Some(t) = self.time_s {
            entry(&mut m, c, ("t", 6), &t)?;
        }
        match self.value {
            Value::Float(v) => entry(&mut m, c, ("v", 2), v)?,
            Value::Int(v) => entry(&mut m, c, ("v", 2), &(*v as f64))?,
            Value::Str(v) => entry(&mut m, c, ("vs", 3), &**v)?,
            Value::Bool(v) => entry(&mut m, c, ("vb", 4), v)?,
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Single<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    ts: i64,
    measurement: &'a str,
    #[serde(skip_serializing_if = "Tags::is_empty")]
    tags: Tags<'a>,
    fields: Fields<'a>,
}

#[derive(Serialize)]
struct Batch<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    measurement: &'a str,
    #[serde(skip_serializing_if = "Tags::is_empty")]
    tags: Tags<'a>,
    points: Vec<BatchPoint<'a>>,
}

#[derive(Serialize)]
struct BatchPoint<'a> {
    ts: i64,
    fields: Fields<'a>,
}

struct Tags<'a>(&'a [(String, String)]);

impl Tags<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

struct Fields<'a> {
    names: &'a [Arc<str>],
    values: &'a [Value],
    extra: Option<(&'a str, u64)>,
}

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.names.len() + self.extra.is_some() as usize))?;
        for (k, v) in self.names.iter().zip(self.values) {
            m.serialize_entry(&**k, v)?;
        }
        if let Some((k, v)) = self.extra {
            m.serialize_entry(k, &v)?;
        }
        m.end()
    }
}

/// A message the server must refuse with a nack. Faulty messages carry no
/// `seq`: the server answers each with a nack whose `nack` is null, which is
/// how the device tells them from its telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Bytes that are not JSON (or not CBOR).
    Garbage,
    /// A string field above the server's 64 KiB limit.
    Oversize,
    /// A NaN field (not even valid JSON; a float NaN in CBOR).
    Nan,
}

/// Bigger than the server's default `decode.max_string_bytes` (64 KiB).
pub const OVERSIZE_BYTES: usize = 70 * 1024;

pub fn faulty(encoding: Encoding, fault: Fault, shape: &Shape, ts_ms: i64, noise: u64) -> Frame {
    // A message with the single field `name` (no tags, no seq).
    let one = |name: &str, value: Value| {
        let s = Shape {
            measurement: shape.measurement.clone(),
            tags: Arc::new([]),
            names: Arc::new([name.into()]),
            seq_field: None,
        };
        let sample = Sample {
            ts_ms,
            values: vec![value],
        };
        telemetry(encoding, &s, None, &[sample]).0
    };
    match (fault, encoding.is_cbor()) {
        (Fault::Garbage, false) => Frame::text(format!("garbage {noise:016x} <- not JSON")),
        (Fault::Garbage, true) => {
            // 0xff is a stray "break" code: never valid CBOR at the start.
            let mut b = vec![0xff];
            b.extend_from_slice(&noise.to_le_bytes());
            Frame::binary(b)
        }
        (Fault::Nan, false) if encoding.numbers_messages() => Frame::text(format!(
            r#"[{{"bn":"{}:","bt":{},"n":"value","v":NaN}}]"#,
            shape.measurement,
            ts_ms as f64 / 1000.0
        )),
        (Fault::Nan, false) => Frame::text(format!(
            r#"{{"ts":{ts_ms},"measurement":"{}","fields":{{"value":NaN}}}}"#,
            shape.measurement
        )),
        (Fault::Nan, true) => one("value", Value::Float(f64::NAN)),
        (Fault::Oversize, _) => one("blob", Value::Str("x".repeat(OVERSIZE_BYTES).into())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use wsingest_proto::decode::{Decoder, DecoderConfig, Format, Message};

    fn shape() -> Shape {
        Shape {
            measurement: "weather".into(),
            tags: vec![("site".to_string(), "roof".to_string())].into(),
            names: vec!["ok".into(), "temp_c".into()].into(),
            seq_field: None,
        }
    }

    fn sample(ts_ms: i64, t: f64) -> Sample {
        Sample {
            ts_ms,
            values: vec![Value::Bool(true), Value::Float(t)],
        }
    }

    fn decode(f: &Frame) -> Result<Message, wsingest_proto::decode::DecodeError> {
        let format = match f {
            Frame::Text(_) => Format::Json,
            _ => Format::Cbor,
        };
        decode_as(format, f)
    }

    fn decode_as(
        format: Format,
        f: &Frame,
    ) -> Result<Message, wsingest_proto::decode::DecodeError> {
        let bytes = match f {
            Frame::Text(t) => t.as_bytes().to_vec(),
            Frame::Binary(b) => b.to_vec(),
            _ => unreachable!(),
        };
        Decoder::new(DecoderConfig::default()).decode(
            &bytes,
            format,
            "dev-1",
            &wsingest_proto::clock::ServerClock::frozen_at(0),
        )
    }

    const SENML: [(Encoding, Format); 2] = [
        (Encoding::SenmlJson, Format::SenmlJson),
        (Encoding::SenmlCbor, Format::SenmlCbor),
    ];

    #[test]
    fn single_point_json_is_the_design_shape() {
        let (f, points) = telemetry(
            Encoding::Json,
            &shape(),
            Some(42),
            &[sample(1732492800123, 21.5)],
        );
        assert_eq!(points, 1);
        let v: serde_json::Value = serde_json::from_str(f.to_text().unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"seq": 42, "ts": 1732492800123u64, "measurement": "weather",
                   "tags": {"site": "roof"}, "fields": {"ok": true, "temp_c": 21.5}})
        );
    }

    #[test]
    fn the_server_decoder_accepts_what_we_send() {
        let mut s = shape();
        s.seq_field = Some("sim_seq".into());
        for enc in [Encoding::Json, Encoding::Cbor] {
            let (f, n) = telemetry(
                enc,
                &s,
                Some(7),
                &[sample(1000, 1.0), sample(1010, 2.0), sample(1020, 3.0)],
            );
            assert_eq!(n, 3);
            let Ok(Message::Points { seq, points, .. }) = decode(&f) else {
                panic!("{enc:?}: {:?}", decode(&f))
            };
            assert_eq!(seq, Some(7));
            assert_eq!(points.len(), 3);
            assert_eq!(points[1].time_ns, 1_010_000_000);
            assert_eq!(points[2].tag("site"), Some("roof"));
            assert!(
                points[0]
                    .fields
                    .iter()
                    .any(|(k, v)| k == "sim_seq" && v.to_string() == "7")
            );
        }
    }

    #[test]
    fn senml_packs_name_each_field_and_keep_every_timestamp() {
        let mut s = shape();
        s.seq_field = Some("sim_seq".into());
        let samples = [
            sample(1_732_492_800_123, 1.0),
            sample(1_732_492_800_173, 2.5),
        ];
        for (enc, format) in SENML {
            let (f, n) = telemetry(enc, &s, Some(7), &samples);
            // ok, temp_c and sim_seq per sample.
            assert_eq!(n, 6, "{enc:?}");
            assert_eq!(matches!(f, Frame::Binary(_)), enc == Encoding::SenmlCbor);
            let Ok(Message::Points { seq, points, .. }) = decode_as(format, &f) else {
                panic!("{enc:?}: {:?}", decode_as(format, &f))
            };
            assert_eq!((seq, points.len()), (None, 6), "{enc:?}");
            let got: Vec<(Option<&str>, i64, String)> = points
                .iter()
                .map(|p| (p.tag("name"), p.time_ns, p.fields[0].1.to_string()))
                .collect();
            let t0 = 1_732_492_800_123_000_000;
            let t1 = 1_732_492_800_173_000_000;
            let want = [
                (Some("weather:ok"), t0, "true"),
                (Some("weather:temp_c"), t0, "1"),
                (Some("weather:sim_seq"), t0, "7"),
                (Some("weather:ok"), t1, "true"),
                (Some("weather:temp_c"), t1, "2.5"),
                (Some("weather:sim_seq"), t1, "7"),
            ];
            let want: Vec<(Option<&str>, i64, String)> = want
                .iter()
                .map(|(n, t, v)| (*n, *t, v.to_string()))
                .collect();
            assert_eq!(got, want, "{enc:?}");
        }
    }

    #[test]
    fn senml_faults_are_refused_and_commands_not_answered() {
        for (enc, format) in SENML {
            let garbage = if enc == Encoding::SenmlJson {
                "invalid_json"
            } else {
                "invalid_cbor"
            };
            let nan = if enc == Encoding::SenmlJson {
                "invalid_json"
            } else {
                "invalid_field"
            };
            for (fault, code) in [
                (Fault::Garbage, garbage),
                (Fault::Nan, nan),
                (Fault::Oversize, "too_large"),
            ] {
                let f = faulty(enc, fault, &shape(), 1000, 7);
                let e = decode_as(format, &f).unwrap_err();
                assert_eq!(e.code(), code, "{enc:?} {fault:?}: {e}");
            }
            assert_eq!(command_result(enc, "c-1", true, None), None);
        }
    }

    #[test]
    fn faulty_messages_are_refused_without_a_seq() {
        for enc in [Encoding::Json, Encoding::Cbor] {
            for (fault, code) in [
                (
                    Fault::Garbage,
                    if enc == Encoding::Json {
                        "invalid_json"
                    } else {
                        "invalid_cbor"
                    },
                ),
                (
                    Fault::Nan,
                    if enc == Encoding::Json {
                        "invalid_json"
                    } else {
                        "invalid_field"
                    },
                ),
                (Fault::Oversize, "too_large"),
            ] {
                let e = decode(&faulty(enc, fault, &shape(), 1000, 0xdead_beef)).unwrap_err();
                assert_eq!((e.code(), e.seq()), (code, None), "{enc:?} {fault:?}: {e}");
            }
        }
    }
}
