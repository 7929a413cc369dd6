//! What a simulated device puts on the wire and how it reads the server's
//! answers: telemetry messages (one point or a batch), deliberately faulty
//! messages, command results, and the parsing of acks, nacks and commands.
//! Sans-IO: frames in, frames out.

use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::fields::Value;

/// The payload encoding a simulated device speaks, offered as the
/// session's subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Json,
    Cbor,
    /// SenML (RFC 8428) packs in JSON: one record per field and sample.
    #[value(name = "senml+json", alias = "senml-json")]
    #[serde(rename = "senml+json")]
    SenmlJson,
    /// SenML packs in CBOR, with RFC 8428's integer labels.
    #[value(name = "senml+cbor", alias = "senml-cbor")]
    #[serde(rename = "senml+cbor")]
    SenmlCbor,
}

impl Encoding {
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => "wsingest.v1.json",
            Encoding::Cbor => "wsingest.v1.cbor",
            Encoding::SenmlJson => "senml+json",
            Encoding::SenmlCbor => "senml+cbor",
        }
    }

    fn is_cbor(self) -> bool {
        matches!(self, Encoding::Cbor | Encoding::SenmlCbor)
    }

    /// SenML packs carry no `seq`: the server acks the n-th data frame of a
    /// session as n, and the device maps that back to its own seq.
    pub fn numbers_messages(self) -> bool {
        matches!(self, Encoding::SenmlJson | Encoding::SenmlCbor)
    }

    /// Serialize `v` into one frame: JSON as text, CBOR as binary.
    pub fn frame<T: Serialize>(self, v: &T) -> Frame {
        if self.is_cbor() {
            let mut out = Vec::with_capacity(256);
            ciborium::into_writer(v, &mut out).expect("simulated messages serialize");
            Frame::binary(out)
        } else {
            Frame::text(serde_json::to_string(v).expect("simulated messages serialize"))
        }
    }
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
    let frame = if let [one] = samples {
        encoding.frame(&Single {
            seq,
            ts: one.ts_ms,
            measurement: &shape.measurement,
            tags,
            fields: fields(names, one, extra),
        })
    } else {
        let points: Vec<BatchPoint> = samples
            .iter()
            .map(|s| BatchPoint {
                ts: s.ts_ms,
                fields: fields(names, s, extra),
            })
            .collect();
        encoding.frame(&Batch {
            seq,
            measurement: &shape.measurement,
            tags,
            points,
        })
    };
    (frame, samples.len() as u32)
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
    (encoding.frame(&records), count)
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

/// `{"cmd_result": id, "ok": ok, "detail": ...}`; `None` on SenML sessions,
/// where every frame must be a pack (the command is applied, not answered).
pub fn command_result(
    encoding: Encoding,
    id: &str,
    ok: bool,
    detail: Option<&str>,
) -> Option<Frame> {
    if encoding.numbers_messages() {
        return None;
    }
    #[derive(Serialize)]
    struct CmdResult<'a> {
        cmd_result: &'a str,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<&'a str>,
    }
    Some(encoding.frame(&CmdResult {
        cmd_result: id,
        ok,
        detail,
    }))
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Downlink {
    Ack(u64),
    /// `seq` is `None` for a message whose seq the server could not read (or
    /// that had none).
    Nack {
        seq: Option<u64>,
        error: String,
        detail: String,
    },
    Command {
        id: String,
        name: String,
        args: serde_json::Value,
    },
}

#[derive(Deserialize)]
struct Wire {
    ack: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    nack: Option<Option<u64>>,
    #[serde(default)]
    error: String,
    #[serde(default)]
    detail: String,
    cmd: Option<serde_json::Value>,
    name: Option<String>,
    #[serde(default)]
    args: serde_json::Value,
}

/// Tells `"nack": null` (present) from no `nack` key (absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// Parse a data frame from the server; `None` for control frames.
/// The WebSocket frame a server's encoded downlink arrives in (tests).
#[cfg(test)]
pub(crate) fn ws(f: wsingest_proto::protocol::Frame) -> Frame {
    match f {
        wsingest_proto::protocol::Frame::Text(t) => Frame::text(t),
        wsingest_proto::protocol::Frame::Binary(b) => Frame::binary(b),
    }
}

pub fn parse_downlink(frame: &Frame) -> Option<Result<Downlink, String>> {
    let wire: Result<Wire, String> = match frame {
        Frame::Text(t) => serde_json::from_str(t).map_err(|e| e.to_string()),
        Frame::Binary(b) => ciborium::from_reader(&b[..]).map_err(|e| e.to_string()),
        _ => return None,
    };
    Some(wire.and_then(|w| match (w.ack, w.nack, w.cmd) {
        (Some(seq), None, None) => Ok(Downlink::Ack(seq)),
        (None, Some(seq), None) => Ok(Downlink::Nack {
            seq,
            error: w.error,
            detail: w.detail,
        }),
        (None, None, Some(id)) => {
            let id = match id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            Ok(Downlink::Command {
                id,
                name: w.name.unwrap_or_default(),
                args: w.args,
            })
        }
        _ => Err("neither an ack, a nack nor a command".to_string()),
    }))
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

    #[test]
    fn downlinks_parse_in_both_encodings() {
        use wsingest_proto::protocol::Downlink as Server;
        for format in [Format::Json, Format::Cbor] {
            let parse = |d: Server| parse_downlink(&ws(d.encode(format))).unwrap().unwrap();
            assert_eq!(parse(Server::Ack { ack: 5 }), Downlink::Ack(5));
            assert_eq!(
                parse(Server::nack(None, "invalid_json", "x")),
                Downlink::Nack {
                    seq: None,
                    error: "invalid_json".into(),
                    detail: "x".into()
                }
            );
            assert_eq!(
                parse(Server::nack(Some(3), "too_large", "y")),
                Downlink::Nack {
                    seq: Some(3),
                    error: "too_large".into(),
                    detail: "y".into()
                }
            );
            let cmd = Server::Command {
                cmd: "c-17".into(),
                name: "set_interval".into(),
                args: Some(json!({"seconds": 5})),
            };
            assert_eq!(
                parse(cmd),
                Downlink::Command {
                    id: "c-17".into(),
                    name: "set_interval".into(),
                    args: json!({"seconds": 5})
                }
            );
        }
        assert!(parse_downlink(&Frame::text("{}")).unwrap().is_err());
        assert!(parse_downlink(&Frame::Ping(Default::default())).is_none());
    }

    #[test]
    fn command_results_decode_on_the_server() {
        for enc in [Encoding::Json, Encoding::Cbor] {
            let f = command_result(enc, "c-17", false, Some("unknown command")).unwrap();
            let m = decode(&f).unwrap();
            assert_eq!(
                m,
                Message::CommandResult {
                    seq: None,
                    cmd: "c-17".into(),
                    ok: false,
                    detail: Some("unknown command".into())
                }
            );
        }
    }
}
