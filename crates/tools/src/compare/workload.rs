//! The one workload every transport carries: deterministic readings (so two
//! transports store identical points), encoded the way each transport's
//! devices would send them.

use serde_json::json;

use wsingest_server::grpc::proto;

/// Timestamps start here (2024-11-25T00:00:00Z), one millisecond apart per
/// point, so every (device, seq, point) has its own time.
pub const BASE_MS: i64 = 1_732_492_800_000;
/// The measurement the workload writes.
pub const MEASUREMENT: &str = "compare";

/// One reading of a simulated sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub ts_ms: i64,
    pub temp_c: f64,
    pub humidity: f64,
    pub ok: bool,
}

/// The readings of message `seq` (from 1) with `points` points.
pub fn readings(seq: u64, points: usize) -> Vec<Reading> {
    (0..points)
        .map(|i| {
            let n = seq as i64 * points as i64 + i as i64;
            Reading {
                ts_ms: BASE_MS + n,
                temp_c: 15.0 + (n % 200) as f64 / 10.0,
                humidity: 40.0 + (n % 41) as f64 * 0.5,
                ok: n % 3 != 0,
            }
        })
        .collect()
}

fn fields(r: &Reading) -> serde_json::Value {
    json!({"temp_c": r.temp_c, "humidity": r.humidity, "ok": r.ok})
}

/// The message as a JSON value (the data model of JSON and CBOR alike).
pub fn value(seq: u64, readings: &[Reading]) -> serde_json::Value {
    match readings {
        [r] => json!({"seq": seq, "ts": r.ts_ms, "measurement": MEASUREMENT, "fields": fields(r)}),
        _ => json!({
            "seq": seq,
            "measurement": MEASUREMENT,
            "points": readings.iter().map(|r| json!({"ts": r.ts_ms, "fields": fields(r)})).collect::<Vec<_>>(),
        }),
    }
}

pub fn json(seq: u64, readings: &[Reading]) -> Vec<u8> {
    serde_json::to_vec(&value(seq, readings)).expect("workload serializes")
}

pub fn cbor(seq: u64, readings: &[Reading]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 48 * readings.len());
    ciborium::into_writer(&value(seq, readings), &mut out).expect("workload serializes");
    out
}

fn proto_fields(r: &Reading) -> std::collections::HashMap<String, proto::Value> {
    use proto::value::Kind;
    [
        ("temp_c", Kind::F(r.temp_c)),
        ("humidity", Kind::F(r.humidity)),
        ("ok", Kind::B(r.ok)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), proto::Value { kind: Some(v) }))
    .collect()
}

/// The message as gRPC protobuf telemetry.
pub fn grpc(seq: u64, readings: &[Reading]) -> proto::Uplink {
    let t = match readings {
        [r] => proto::Telemetry {
            seq: Some(seq),
            ts_ms: Some(r.ts_ms),
            measurement: MEASUREMENT.into(),
            fields: proto_fields(r),
            ..Default::default()
        },
        _ => proto::Telemetry {
            seq: Some(seq),
            measurement: MEASUREMENT.into(),
            points: readings
                .iter()
                .map(|r| proto::Point {
                    ts_ms: Some(r.ts_ms),
                    fields: proto_fields(r),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    };
    proto::Uplink {
        body: Some(proto::uplink::Body::Telemetry(t)),
    }
}
