//! RFC 8428's own examples (§5.1, §6), decoded and resolved.

use super::*;
use crate::decode::{Decoder, DecoderConfig, Format, Message};
use crate::point::FieldValue;

const NOW_NS: i64 = 1_700_000_000_000_000_000;

fn resolve_json(text: &str) -> Vec<Resolved> {
    resolve(parse_json(text.as_bytes()).unwrap(), NOW_NS).unwrap()
}

fn num(r: &Resolved) -> f64 {
    match r.value {
        Some(Value::Number(v)) => v,
        ref other => panic!("not a number: {other:?}"),
    }
}

/// RFC 8428 §5.1.1.
#[test]
fn single_datapoint() {
    let r = resolve_json(r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#);
    assert_eq!(
        r,
        vec![Resolved {
            record: 0,
            name: "urn:dev:ow:10e2073a01080063".into(),
            unit: Some("Cel".into()),
            value: Some(Value::Number(23.1)),
            sum: None,
            // No time at all: "now".
            time_ns: NOW_NS,
        }]
    );
}

/// RFC 8428 §5.1.2, first pack: base name prefixes every name.
#[test]
fn multiple_datapoints_base_name() {
    let r = resolve_json(
        r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
            {"n":"current","u":"A","v":1.2}]"#,
    );
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.name.as_str(), r.unit.as_deref(), num(r)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("urn:dev:ow:10e2073a01080063:voltage", Some("V"), 120.1),
            ("urn:dev:ow:10e2073a01080063:current", Some("A"), 1.2),
        ]
    );
}

const RELATIVE_TIMES: &str = r#"[
     {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
      "bu":"A","bver":5,
      "n":"voltage","u":"V","v":120.1},
     {"n":"current","t":-5,"v":1.2},
     {"n":"current","t":-4,"v":1.3},
     {"n":"current","t":-3,"v":1.4},
     {"n":"current","t":-2,"v":1.5},
     {"n":"current","t":-1,"v":1.6},
     {"n":"current","v":1.7}
   ]"#;

/// The same pack in CBOR as printed in RFC 8428 §6.
const RELATIVE_TIMES_CBOR: &[u8] = &[
    0x87, 0xa7, 0x21, 0x78, 0x1b, 0x75, 0x72, 0x6e, 0x3a, 0x64, 0x65, 0x76, 0x3a, 0x6f, 0x77, 0x3a,
    0x31, 0x30, 0x65, 0x32, 0x30, 0x37, 0x33, 0x61, 0x30, 0x31, 0x30, 0x38, 0x30, 0x30, 0x36, 0x3a,
    0x22, 0xfb, 0x41, 0xd3, 0x03, 0xa1, 0x5b, 0x00, 0x10, 0x62, 0x23, 0x61, 0x41, 0x20, 0x05, 0x00,
    0x67, 0x76, 0x6f, 0x6c, 0x74, 0x61, 0x67, 0x65, 0x01, 0x61, 0x56, 0x02, 0xfb, 0x40, 0x5e, 0x06,
    0x66, 0x66, 0x66, 0x66, 0x66, 0xa3, 0x00, 0x67, 0x63, 0x75, 0x72, 0x72, 0x65, 0x6e, 0x74, 0x06,
    0x24, 0x02, 0xfb, 0x3f, 0xf3, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0xa3, 0x00, 0x67, 0x63, 0x75,
    0x72, 0x72, 0x65, 0x6e, 0x74, 0x06, 0x23, 0x02, 0xfb, 0x3f, 0xf4, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc,
    0xcd, 0xa3, 0x00, 0x67, 0x63, 0x75, 0x72, 0x72, 0x65, 0x6e, 0x74, 0x06, 0x22, 0x02, 0xfb, 0x3f,
    0xf6, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0xa3, 0x00, 0x67, 0x63, 0x75, 0x72, 0x72, 0x65, 0x6e,
    0x74, 0x06, 0x21, 0x02, 0xf9, 0x3e, 0x00, 0xa3, 0x00, 0x67, 0x63, 0x75, 0x72, 0x72, 0x65, 0x6e,
    0x74, 0x06, 0x20, 0x02, 0xfb, 0x3f, 0xf9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a, 0xa3, 0x00, 0x67,
    0x63, 0x75, 0x72, 0x72, 0x65, 0x6e, 0x74, 0x06, 0x00, 0x02, 0xfb, 0x3f, 0xfb, 0x33, 0x33, 0x33,
    0x33, 0x33, 0x33,
];

/// RFC 8428 §5.1.2, second pack: base time, base unit, negative times.
#[test]
fn base_time_and_unit_resolve() {
    let r = resolve_json(RELATIVE_TIMES);
    assert_eq!(r.len(), 7);
    assert_eq!(r[0].name, "urn:dev:ow:10e2073a0108006:voltage");
    assert_eq!(r[0].unit.as_deref(), Some("V"));
    assert_eq!(r[0].time_ns, 1_276_020_076_001_000_000);
    let current: Vec<_> = r[1..].iter().map(|r| (r.time_ns, num(r))).collect();
    assert_eq!(
        current,
        vec![
            (1_276_020_071_001_000_000, 1.2),
            (1_276_020_072_001_000_000, 1.3),
            (1_276_020_073_001_000_000, 1.4),
            (1_276_020_074_001_000_000, 1.5),
            (1_276_020_075_001_000_000, 1.6),
            (1_276_020_076_001_000_000, 1.7),
        ]
    );
    assert!(
        r[1..]
            .iter()
            .all(|r| r.name == "urn:dev:ow:10e2073a0108006:current"
                && r.unit.as_deref() == Some("A"))
    );
}

/// RFC 8428 §6: the CBOR bytes of the same pack decode to the same records
/// (one value, 1.5, is a half-precision float there; the last record spells
/// out `t: 0`, which the JSON leaves implicit).
#[test]
fn rfc_cbor_bytes_match_json() {
    let cbor = parse_cbor(RELATIVE_TIMES_CBOR).unwrap();
    let json = parse_json(RELATIVE_TIMES.as_bytes()).unwrap();
    assert_eq!(cbor[..6], json[..6]);
    assert_eq!(cbor[6].t, Some(0.0));
    assert_eq!(
        resolve(cbor, NOW_NS).unwrap(),
        resolve(json, NOW_NS).unwrap()
    );
}

/// RFC 8428 §5.1.3: same name and time, told apart by their unit.
#[test]
fn multiple_measurements_differ_by_unit() {
    let r = resolve_json(
        r#"[
     {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
      "bu":"%RH","v":20},
     {"u":"lon","v":24.30621},
     {"u":"lat","v":60.07965},
     {"t":60,"v":20.3},
     {"u":"lon","t":60,"v":24.30622},
     {"u":"lat","t":60,"v":60.07965},
     {"t":120,"v":20.7},
     {"u":"lon","t":120,"v":24.30623},
     {"u":"lat","t":120,"v":60.07966},
     {"u":"%EL","t":150,"v":98},
     {"t":180,"v":21.2},
     {"u":"lon","t":180,"v":24.30628},
     {"u":"lat","t":180,"v":60.07967}
   ]"#,
    );
    assert_eq!(r.len(), 13);
    assert!(r.iter().all(|r| r.name == "urn:dev:ow:10e2073a01080063"));
    let s = 1_000_000_000i64;
    let t0 = 1_320_067_464 * s;
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.unit.clone().unwrap(), (r.time_ns - t0) / s, num(r)))
        .collect();
    let want = [
        ("%RH", 0, 20.0),
        ("lon", 0, 24.30621),
        ("lat", 0, 60.07965),
        ("%RH", 60, 20.3),
        ("lon", 60, 24.30622),
        ("lat", 60, 60.07965),
        ("%RH", 120, 20.7),
        ("lon", 120, 24.30623),
        ("lat", 120, 60.07966),
        ("%EL", 150, 98.0),
        ("%RH", 180, 21.2),
        ("lon", 180, 24.30628),
        ("lat", 180, 60.07967),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(u, t, v)| (u.to_string(), *t, *v))
        .collect();
    assert_eq!(got, want);
    // Distinct series in InfluxDB: (name, unit, time) never repeats.
    let mut keys: Vec<_> = r.iter().map(|r| (r.unit.clone(), r.time_ns)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 13);
}

/// RFC 8428 §5.1.5: string, boolean and data values.
#[test]
fn multiple_data_types() {
    let r = resolve_json(
        r#"[
     {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
     {"n":"label","vs":"Machine Room"},
     {"n":"open","vb":false},
     {"n":"nfc-reader","vd":"aGkgCg"}
   ]"#,
    );
    let values: Vec<_> = r
        .iter()
        .map(|r| (r.name.rsplit(':').next().unwrap(), r.value.clone().unwrap()))
        .collect();
    assert_eq!(
        values,
        vec![
            ("temp", Value::Number(23.1)),
            ("label", Value::Str("Machine Room".into())),
            ("open", Value::Bool(false)),
            ("nfc-reader", Value::Data("aGkgCg".into())),
        ]
    );
    // Units do not carry over: only `bu` would.
    assert_eq!(r[1].unit, None);
}

#[test]
fn base_value_sum_and_relative_time() {
    let r = resolve_json(
        r#"[{"bn":"m","bv":100,"bs":1000,"v":1.5,"t":-2},{"n":"x","s":5},{"n":"y","v":-1}]"#,
    );
    assert_eq!(num(&r[0]), 101.5);
    assert_eq!(r[0].time_ns, NOW_NS - 2_000_000_000);
    assert_eq!(r[1].sum, Some(1005.0));
    assert_eq!(r[1].value, None);
    assert_eq!(num(&r[2]), 99.0);
}

#[test]
fn refusals() {
    let cases = [
        (r#"{"n":"a","v":1}"#, "invalid_message", "array"),
        (r#"[1]"#, "invalid_message", "object"),
        (r#"[{"n":"a","v":"x"}]"#, "invalid_message", "records[0].v"),
        (
            r#"[{"bver":11,"n":"a","v":1}]"#,
            "invalid_message",
            "version 11",
        ),
        (
            r#"[{"n":"a","v":1,"freq_":2}]"#,
            "invalid_message",
            "must be understood",
        ),
        (
            r#"[{"n":"_a","v":1}]"#,
            "invalid_message",
            "not a SenML name",
        ),
        (
            r#"[{"n":"a b","v":1}]"#,
            "invalid_message",
            "not a SenML name",
        ),
        (r#"[{"n":"a"}]"#, "invalid_message", "no value"),
        (
            r#"[{"n":"a","v":1,"vs":"x"}]"#,
            "invalid_message",
            "not several",
        ),
        (r#"[{"n":"a","vd":"***"}]"#, "invalid_message", "base64url"),
        (
            r#"[{"n":"a","v":1,"t":1e300}]"#,
            "invalid_timestamp",
            "outside",
        ),
        (
            r#"[{"bn":"a"}]"#,
            "invalid_message",
            "no record with a value",
        ),
        (r#"[]"#, "invalid_message", "no record with a value"),
        ("[{", "invalid_json", "SenML"),
    ];
    let d = Decoder::new(DecoderConfig::default());
    for (input, code, needle) in cases {
        let e = d
            .decode(
                input.as_bytes(),
                Format::SenmlJson,
                "dev",
                &crate::clock::ServerClock::frozen_at(NOW_NS),
            )
            .unwrap_err();
        assert_eq!(e.code(), code, "{input}: {e}");
        assert!(e.to_string().contains(needle), "{input}: {e}");
    }
    let e = d
        .decode(
            &[0x87, 0xa7, 0x21],
            Format::SenmlCbor,
            "dev",
            &crate::clock::ServerClock::frozen_at(NOW_NS),
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid_cbor");
}

#[test]
fn unknown_labels_are_ignored() {
    let r = resolve_json(r#"[{"n":"a","v":1,"ut":60,"extra":{"nested":true}}]"#);
    assert_eq!(r.len(), 1);
}

#[test]
fn decoder_maps_records_to_points() {
    let d = Decoder::new(DecoderConfig::default());
    let Message::Points { seq, points, .. } = d
        .decode(
            RELATIVE_TIMES_CBOR,
            Format::SenmlCbor,
            "meter-1",
            &crate::clock::ServerClock::frozen_at(NOW_NS),
        )
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(seq, None);
    assert_eq!(points.len(), 7);
    let p = &points[1];
    assert_eq!(p.measurement, "senml");
    assert_eq!(
        p.tags,
        vec![
            ("device".into(), "meter-1".into()),
            ("name".into(), "urn:dev:ow:10e2073a0108006:current".into()),
            ("unit".into(), "A".into()),
        ]
    );
    assert_eq!(p.fields, vec![("v".into(), FieldValue::Float(1.2))]);
    assert_eq!(p.time_ns, 1_276_020_071_001_000_000);
    let Message::Points { points, .. } = d
        .decode(
            br#"[{"n":"s","vs":"hi","s":3},{"n":"b","vb":true},{"n":"d","vd":"aGkgCg"}]"#,
            Format::SenmlJson,
            "x",
            &crate::clock::ServerClock::frozen_at(NOW_NS),
        )
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        points[0].fields,
        vec![
            ("vs".into(), FieldValue::Str("hi".into())),
            ("s".into(), FieldValue::Float(3.0))
        ]
    );
    assert_eq!(
        points[1].fields,
        vec![("vb".into(), FieldValue::Bool(true))]
    );
    assert_eq!(
        points[2].fields,
        vec![("vd".into(), FieldValue::Str("aGkgCg".into()))]
    );
    assert_eq!(points[0].tags.len(), 2, "no unit, no unit tag");
}
