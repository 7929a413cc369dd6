//! Property tests: no input makes a decoder panic, and every point a decoder
//! accepts encodes to exactly one line of line protocol.

use proptest::prelude::*;

use super::{Decoder, DecoderConfig, Format, Message};

fn formats() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::Json),
        Just(Format::Cbor),
        Just(Format::SenmlJson),
        Just(Format::SenmlCbor)
    ]
}

/// JSON-like values, a few levels deep, with hostile strings.
fn value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        "[a-z\\\\ ,=\"\n#\u{0}-\u{1f}é]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("seq".to_string()),
                    Just("ts".into()),
                    Just("measurement".into()),
                    Just("tags".into()),
                    Just("fields".into()),
                    Just("points".into()),
                    "[a-z ,=\\\\]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Message-shaped values, mostly valid, so that the fast paths run and most
/// decode (with a share of hostile names and values that are refused).
fn message() -> impl Strategy<Value = serde_json::Value> {
    let name = prop_oneof![
        8 => "[a-z]{1,3}",
        1 => Just("device".to_string()),
        1 => "[a-z ,=\\\\é]{0,4}",
    ];
    let float = prop_oneof![
        4 => -1e6f64..1e6,
        1 => prop_oneof![Just(0.5), Just(-1.25), Just(65504.0), Just(1e-7), Just(-0.0)],
        1 => any::<f64>(),
    ];
    let field = prop_oneof![
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        float.prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        "[a-z\\\\\"\n]{0,6}".prop_map(serde_json::Value::from),
    ];
    let ts = prop_oneof![
        4 => (0i64..4_000_000_000_000).prop_map(serde_json::Value::from),
        1 => any::<i64>().prop_map(serde_json::Value::from),
        1 => (-1e15f64..1e15).prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::from("2024-11-25T00:00:00.5Z")),
        1 => Just(serde_json::Value::from("yesterday")),
    ];
    let tag_value = prop_oneof![4 => "[a-z]{1,3}", 1 => "[a-z\\\\]{0,3}"];
    let tags = prop::collection::btree_map(name.clone(), tag_value, 0..3);
    let fields = prop::collection::btree_map(name.clone(), field, 1..4);
    let point = (
        prop::option::of(ts),
        prop::option::of(name),
        prop::option::of(tags),
        prop::option::weighted(0.9, fields),
    )
        .prop_map(|(ts, m, tags, fields)| {
            let mut o = serde_json::Map::new();
            ts.map(|v| o.insert("ts".into(), v));
            m.map(|v| o.insert("measurement".into(), v.into()));
            tags.map(|v| o.insert("tags".into(), serde_json::json!(v)));
            fields.map(|v| o.insert("fields".into(), serde_json::json!(v)));
            o
        });
    (
        prop::option::of(any::<u64>()),
        point.clone(),
        prop::option::weighted(0.5, prop::collection::vec(point, 0..4)),
    )
        .prop_map(|(seq, mut o, points)| {
            seq.map(|s| o.insert("seq".into(), s.into()));
            if let Some(p) = points {
                // A batch carries its fields inside `points`.
                o.remove("fields");
                o.insert(
                    "points".into(),
                    p.into_iter().map(serde_json::Value::Object).collect(),
                );
            }
            serde_json::Value::Object(o)
        })
}

/// The serde paths alone (the decoder before its fast paths): the owned
/// model, converted the same way.
fn slow(d: &Decoder, bytes: &[u8], format: Format) -> Result<Message, super::DecodeError> {
    let wire = match format {
        Format::Json => {
            super::depth::check_json(bytes, d.config().max_depth)?;
            super::json::decode(bytes)?
        }
        _ => super::cbor::decode(bytes, d.config().max_depth)?,
    };
    d.decode_wire(wire, "dev", &crate::clock::ServerClock::frozen_at(7))
}

fn check_lines(m: &Message) {
    if let Message::Points { points, .. } = m {
        for p in points {
            let mut out = Vec::new();
            crate::lineproto::encode_point(p, &mut out);
            assert_eq!(out.last(), Some(&b'\n'));
            // A newline inside is legal only within a quoted string field.
            let body = &out[..out.len() - 1];
            let mut in_string = false;
            let mut escaped = false;
            for &b in body {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if in_string => escaped = true,
                    b'"' => in_string = !in_string,
                    b'\n' | b'\r' => assert!(
                        in_string,
                        "line split outside a string: {:?}",
                        String::from_utf8_lossy(&out)
                    ),
                    _ => {}
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), format in formats()) {
        let d = Decoder::new(DecoderConfig::default());
        if let Ok(m) = d.decode(&bytes, format, "dev", &crate::clock::ServerClock::frozen_at(0)) {
            check_lines(&m);
        }
    }

    #[test]
    fn structured_messages_decode_or_nack(v in value(), cbor in any::<bool>()) {
        let d = Decoder::new(DecoderConfig::default());
        let (bytes, format) = if cbor {
            let mut b = Vec::new();
            ciborium::into_writer(&v, &mut b).unwrap();
            (b, Format::Cbor)
        } else {
            (v.to_string().into_bytes(), Format::Json)
        };
        match d.decode(&bytes, format, "dev", &crate::clock::ServerClock::frozen_at(0)) {
            Ok(m) => check_lines(&m),
            Err(e) => prop_assert!(!e.code().is_empty() && !e.to_string().is_empty()),
        }
    }

    #[test]
    fn fast_paths_give_what_the_serde_paths_give(
        v in prop_oneof![message(), message(), value()],
        cbor in any::<bool>(),
    ) {
        let d = Decoder::new(DecoderConfig::default());
        let (bytes, format) = if cbor {
            let mut b = Vec::new();
            ciborium::into_writer(&v, &mut b).unwrap();
            (b, Format::Cbor)
        } else {
            (v.to_string().into_bytes(), Format::Json)
        };
        prop_assert_eq!(d.decode(&bytes, format, "dev", &crate::clock::ServerClock::frozen_at(7)), slow(&d, &bytes, format));
    }

    #[test]
    fn reused_points_decode_as_fresh_ones(a in message(), b in message(), cbor in any::<bool>()) {
        let d = Decoder::new(DecoderConfig {
            int_field_measurements: ["a".to_string()].into(),
            ..Default::default()
        });
        let encode = |v: &serde_json::Value| if cbor {
            let mut b = Vec::new();
            ciborium::into_writer(v, &mut b).unwrap();
            (b, Format::Cbor)
        } else {
            (v.to_string().into_bytes(), Format::Json)
        };
        let (a, fa) = encode(&a);
        let (b, fb) = encode(&b);
        // The spare points of message a, and a few more, filled with b.
        let mut spare = match d.decode(&a, fa, "dev-a", &crate::clock::ServerClock::frozen_at(1)) {
            Ok(Message::Points { points, .. }) => points,
            _ => vec![],
        };
        spare.extend(spare.clone());
        let reused = d.decode_reusing(&b, fb, "dev-b", &crate::clock::ServerClock::frozen_at(2), &mut spare);
        prop_assert_eq!(reused, d.decode(&b, fb, "dev-b", &crate::clock::ServerClock::frozen_at(2)));
    }

    #[test]
    fn truncations_of_a_valid_cbor_message_never_panic(cut in 0usize..64) {
        let msg = serde_json::json!({"seq": 1, "ts": 5, "measurement": "m", "tags": {"a": "b"},
            "points": [{"fields": {"x": 1.5, "s": "str"}}]});
        let mut b = Vec::new();
        ciborium::into_writer(&msg, &mut b).unwrap();
        let d = Decoder::new(DecoderConfig::default());
        let cut = cut.min(b.len());
        let r = d.decode(&b[..cut], Format::Cbor, "dev", &crate::clock::ServerClock::frozen_at(0));
        prop_assert_eq!(r.is_ok(), cut == b.len());
    }
}
