use super::*;

fn dec() -> Decoder {
    Decoder::new(DecoderConfig::default())
}

fn json(s: &str) -> Result<Message, DecodeError> {
    dec().decode(
        s.as_bytes(),
        Format::Json,
        "dev-1",
        &crate::clock::ServerClock::frozen_at(5),
    )
}

#[test]
fn single_point_with_defaults() {
    let m = json(r#"{"seq": 42, "ts": 1732492800123, "tags": {"site": "roof"}, "fields": {"temp_c": 21.5, "ok": true, "fw": "1.2.0", "n": 3}}"#).unwrap();
    let Message::Points { seq, points, .. } = m else {
        panic!()
    };
    assert_eq!(seq, Some(42));
    let p = &points[0];
    assert_eq!(p.measurement, "telemetry");
    assert_eq!(p.time_ns, 1_732_492_800_123_000_000);
    assert_eq!(
        p.tags,
        vec![
            ("device".into(), "dev-1".into()),
            ("site".into(), "roof".into())
        ]
    );
    assert_eq!(p.fields.len(), 4);
    assert!(p.fields.contains(&("n".into(), FieldValue::UInt(3))));
}

#[test]
fn batch_inherits_message_defaults() {
    let m = json(r#"{"seq": 1, "measurement": "w", "tags": {"a": "1"}, "points": [
        {"fields": {"x": 1}}, {"ts": "2024-11-25T00:00:00.000000001Z", "measurement": "v", "tags": {"b": "2"}, "fields": {"y": 2}}]}"#)
    .unwrap();
    let Message::Points { points, .. } = m else {
        panic!()
    };
    assert_eq!(points[0].measurement, "w");
    assert_eq!(points[0].time_ns, 5);
    assert_eq!(points[1].measurement, "v");
    assert_eq!(points[1].time_ns, 1_732_492_800_000_000_001);
    assert_eq!(points[1].tag("a"), Some("1"));
    assert_eq!(points[1].tag("b"), Some("2"));
    assert_eq!(points[1].tag("device"), Some("dev-1"));
}

#[test]
fn cbor_is_the_same_model() {
    let value = ciborium::Value::Map(vec![
        (
            ciborium::Value::Text("seq".into()),
            ciborium::Value::Integer(7.into()),
        ),
        (
            ciborium::Value::Text("fields".into()),
            ciborium::Value::Map(vec![(
                ciborium::Value::Text("t".into()),
                ciborium::Value::Float(1.5),
            )]),
        ),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&value, &mut bytes).unwrap();
    let m = dec()
        .decode(
            &bytes,
            Format::Cbor,
            "d",
            &crate::clock::ServerClock::frozen_at(1),
        )
        .unwrap();
    let Message::Points { seq, points, .. } = m else {
        panic!()
    };
    assert_eq!(seq, Some(7));
    assert_eq!(points[0].fields, vec![("t".into(), FieldValue::Float(1.5))]);
}

#[test]
fn refusals_have_codes_and_seq() {
    let cases = [
        ("Hello, WebSocket!", "invalid_json", None),
        (r#"{"seq": 3, "fields": {}}"#, "empty_fields", Some(3)),
        (r#"{"seq": 4}"#, "empty_fields", Some(4)),
        (
            r#"{"seq": 5, "fields": {"t": {"nested": 1}}}"#,
            "invalid_message",
            Some(5),
        ),
        (
            r#"{"seq": 6, "fields": {"t": 1}, "feilds": 2}"#,
            "invalid_message",
            Some(6),
        ),
        (
            r#"{"seq": 7, "ts": "yesterday", "fields": {"t": 1}}"#,
            "invalid_timestamp",
            Some(7),
        ),
        (
            r#"{"seq": 8, "tags": {"device": "other"}, "fields": {"t": 1}}"#,
            "reserved_tag",
            Some(8),
        ),
        (
            r#"{"seq": 9, "measurement": "a\nb", "fields": {"t": 1}}"#,
            "invalid_name",
            Some(9),
        ),
        (
            r#"{"seq": 10, "ts": 99999999999999999, "fields": {"t": 1}}"#,
            "invalid_timestamp",
            Some(10),
        ),
        (r#"{"seq": 11, "points": []}"#, "invalid_message", Some(11)),
        (
            r#"{"seq": 12, "fields": {"t": 1}} trailing"#,
            "invalid_json",
            Some(12),
        ),
    ];
    for (input, code, seq) in cases {
        let e = json(input).unwrap_err();
        assert_eq!(e.code(), code, "{input}: {e}");
        assert_eq!(e.seq(), seq, "{input}");
        assert!(!e.to_string().is_empty());
    }
    let e = json(r#"{"seq": 5, "fields": {"t": {"nested": 1}}}"#).unwrap_err();
    assert!(e.to_string().starts_with("fields.t:"), "{e}");
}

#[test]
fn cbor_garbage_is_refused() {
    let e = dec()
        .decode(
            &[0xff, 0x00, 0x13],
            Format::Cbor,
            "d",
            &crate::clock::ServerClock::frozen_at(1),
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid_cbor");
    let e = dec()
        .decode(
            b"Hello",
            Format::Cbor,
            "d",
            &crate::clock::ServerClock::frozen_at(1),
        )
        .unwrap_err();
    assert!(
        matches!(e.code(), "invalid_cbor" | "invalid_message"),
        "{e:?}"
    );
}

#[test]
fn command_result() {
    let m = json(r#"{"cmd_result": "c-17", "ok": false, "detail": "busy"}"#).unwrap();
    assert_eq!(
        m,
        Message::CommandResult {
            seq: None,
            cmd: "c-17".into(),
            ok: false,
            detail: Some("busy".into())
        }
    );
}

/// Repeated keys are refused with the key named, in tags, fields and the
/// message itself, in both formats (keeping one value would drop the other).
#[test]
fn repeated_keys_are_refused() {
    let d = dec();
    let clock = crate::clock::ServerClock::frozen_at(5);
    for msg in [
        r#"{"seq":1,"tags":{"b":"1","a":"x","b":"2"},"fields":{"v":1}}"#,
        r#"{"seq":1,"fields":{"v":1,"u":true,"v":2.5}}"#,
        r#"{"seq":1,"points":[{"fields":{"w":1,"w":2}}]}"#,
        r#"{"seq":1,"points":[{"tags":{"t":"a","t":"b"},"fields":{"w":1}}]}"#,
    ] {
        let e = d
            .decode(msg.as_bytes(), Format::Json, "dev", &clock)
            .unwrap_err();
        assert_eq!((e.code(), e.seq()), ("invalid_message", Some(1)), "{msg}");
        assert!(e.to_string().contains("given twice"), "{msg}: {e}");
    }
    // CBOR {"fields": {"v": 1, "v": -2}} then the same with "seq" twice.
    let cbor = [
        0xa1, 0x66, b'f', b'i', b'e', b'l', b'd', b's', 0xa2, 0x61, b'v', 0x01, 0x61, b'v', 0x21,
    ];
    let e = d.decode(&cbor, Format::Cbor, "dev", &clock).unwrap_err();
    assert_eq!(e.code(), "invalid_message");
    assert!(e.to_string().contains(r#"key "v" is given twice"#), "{e}");
    let twice = [
        0xa2, 0x63, b's', b'e', b'q', 0x01, 0x63, b's', b'e', b'q', 0x02,
    ];
    assert_eq!(
        d.decode(&twice, Format::Cbor, "dev", &clock)
            .unwrap_err()
            .code(),
        "invalid_message"
    );
    let e = json(r#"{"seq":1,"seq":2,"fields":{"v":1}}"#).unwrap_err();
    assert_eq!(e.code(), "invalid_message");
}

/// Points without a time of their own each get a nanosecond of the server's
/// clock, so InfluxDB keeps every one of them; points that share a time the
/// device gave, in one series with one field, are refused (issue: acked
/// points that InfluxDB kept once).
#[test]
fn points_without_ts_get_distinct_times_and_collisions_are_refused() {
    let d = dec();
    let clock = crate::clock::ServerClock::frozen_at(100);
    let batch = r#"{"seq":1,"measurement":"m","points":[{"fields":{"a":0}},{"ts":7,"fields":{"a":1}},{"fields":{"a":2}}]}"#;
    let Message::Points {
        points, stamped, ..
    } = d
        .decode(batch.as_bytes(), Format::Json, "dev", &clock)
        .unwrap()
    else {
        panic!()
    };
    let times: Vec<i64> = points.iter().map(|p| p.time_ns).collect();
    assert_eq!(times, vec![100, 7_000_000, 101]);
    assert_eq!(stamped, 100..102);
    // The next message continues after the last stamp.
    let Message::Points {
        points, stamped, ..
    } = d
        .decode(br#"{"fields":{"a":3}}"#, Format::Json, "dev", &clock)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((points[0].time_ns, stamped), (102, 102..103));
    // One message-level ts for two points of one series and field: refused.
    let shared =
        r#"{"seq":4,"ts":1000,"measurement":"m","points":[{"fields":{"a":0}},{"fields":{"a":1}}]}"#;
    let e = d
        .decode(shared.as_bytes(), Format::Json, "dev", &clock)
        .unwrap_err();
    assert_eq!((e.code(), e.seq()), ("duplicate_point", Some(4)));
    assert!(
        e.to_string().contains("points[1]") && e.to_string().contains("points[0]"),
        "{e}"
    );
    // ... but fine for points of different series or different fields.
    for ok in [
        r#"{"ts":1000,"points":[{"tags":{"s":"1"},"fields":{"a":0}},{"tags":{"s":"2"},"fields":{"a":1}}]}"#,
        r#"{"ts":1000,"points":[{"fields":{"a":0}},{"fields":{"b":1}}]}"#,
    ] {
        assert!(
            d.decode(ok.as_bytes(), Format::Json, "dev", &clock).is_ok(),
            "{ok}"
        );
    }
    // SenML records of one name without `t`: distinct times too.
    let pack = br#"[{"n":"temp","v":1},{"n":"temp","v":2},{"n":"temp","v":3,"t":1.7e9}]"#;
    let Message::Points { points, .. } = d.decode(pack, Format::SenmlJson, "dev", &clock).unwrap()
    else {
        panic!()
    };
    assert_ne!(points[0].time_ns, points[1].time_ns);
    let same = br#"[{"n":"temp","v":1,"t":1.7e9},{"n":"temp","v":2,"t":1.7e9}]"#;
    let e = d
        .decode(same, Format::SenmlJson, "dev", &clock)
        .unwrap_err();
    assert_eq!(e.code(), "duplicate_point");
    assert!(e.to_string().starts_with("records[1]"), "{e}");
}

/// Half floats (what encoders pick for values like 0.5) decode exactly.
#[test]
fn cbor_half_floats() {
    let d = dec();
    for (bits, want) in [
        (0x3800u16, 0.5),
        (0xbd00, -1.25),
        (0x7bff, 65504.0),
        (0x0001, 5.960464477539063e-8),
        (0x8000, -0.0),
    ] {
        let [hi, lo] = bits.to_be_bytes();
        let cbor = [
            0xa1, 0x66, b'f', b'i', b'e', b'l', b'd', b's', 0xa1, 0x61, b'v', 0xf9, hi, lo,
        ];
        let Message::Points { points, .. } = d
            .decode(
                &cbor,
                Format::Cbor,
                "dev",
                &crate::clock::ServerClock::frozen_at(5),
            )
            .unwrap()
        else {
            panic!()
        };
        match points[0].fields[0].1 {
            FieldValue::Float(f) => assert_eq!(f.to_bits(), f64::to_bits(want), "{bits:#x}"),
            ref other => panic!("{other:?}"),
        }
    }
}

/// Points filled in place of a bigger message's points are exactly the
/// points a fresh decode gives.
#[test]
fn reused_points_are_overwritten_entirely() {
    let d = Decoder::new(DecoderConfig {
        int_field_measurements: ["big".to_string()].into(),
        ..Default::default()
    });
    let big = br#"{"seq":1,"measurement":"big","tags":{"a":"1","b":"2","z":"3"},
        "points":[{"ts":1,"fields":{"i":1,"s":"text","x":1.5}},{"ts":2,"fields":{"i":2}},{"ts":3,"fields":{"i":3}}]}"#;
    let small = br#"{"seq":2,"fields":{"v":2.5}}"#;
    let Ok(Message::Points { mut points, .. }) = d.decode(
        big,
        Format::Json,
        "dev-a",
        &crate::clock::ServerClock::frozen_at(7),
    ) else {
        panic!()
    };
    let reused = d.decode_reusing(
        small,
        Format::Json,
        "dev-b",
        &crate::clock::ServerClock::frozen_at(9),
        &mut points,
    );
    assert_eq!(
        reused,
        d.decode(
            small,
            Format::Json,
            "dev-b",
            &crate::clock::ServerClock::frozen_at(9)
        )
    );
    let Ok(Message::Points { points: p, .. }) = &reused else {
        panic!()
    };
    assert_eq!(p[0].time_ns, 9);
    assert!(!p[0].int_fields);
}
