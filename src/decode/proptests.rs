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
        if let Ok(m) = d.decode(&bytes, format, "dev", 0) {
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
        match d.decode(&bytes, format, "dev", 0) {
            Ok(m) => check_lines(&m),
            Err(e) => prop_assert!(!e.code().is_empty() && !e.to_string().is_empty()),
        }
    }

    #[test]
    fn truncations_of_a_valid_cbor_message_never_panic(cut in 0usize..64) {
        let msg = serde_json::json!({"seq": 1, "ts": 5, "measurement": "m", "tags": {"a": "b"},
            "points": [{"fields": {"x": 1.5, "s": "str"}}]});
        let mut b = Vec::new();
        ciborium::into_writer(&msg, &mut b).unwrap();
        let d = Decoder::new(DecoderConfig::default());
        let cut = cut.min(b.len());
        let r = d.decode(&b[..cut], Format::Cbor, "dev", 0);
        prop_assert_eq!(r.is_ok(), cut == b.len());
    }
}
