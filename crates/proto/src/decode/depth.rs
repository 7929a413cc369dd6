//! Nesting-depth limit. JSON is scanned before parsing (one pass, no
//! allocation), so a message like `[[[[…]]]]` is refused with a clear nack
//! without the parser (or the fallback that looks for `seq`) walking it.
//! CBOR gets the same limit through ciborium's recursion limit.

use super::DecodeError;
use crate::lineproto::PointError;

/// The nack for a message nested deeper than `max`.
pub fn too_deep(seq: Option<u64>, max: usize) -> DecodeError {
    DecodeError::Point {
        seq,
        prefix: String::new(),
        source: PointError::TooMany {
            what: "nesting levels of arrays and maps",
            count: max + 1,
            max,
        },
    }
}

/// Refuse JSON whose arrays/objects nest deeper than `max`. Brackets inside
/// strings do not count. Malformed JSON is left to the parser.
pub fn check_json(bytes: &[u8], max: usize) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(too_deep(None, max));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, DecoderConfig, Format};

    fn nested(depth: usize) -> String {
        // {"seq":1,"fields":{"x":1},"tags":{...}} padded with nested arrays in
        // an unknown key, which the model would refuse anyway.
        format!(
            "{{\"seq\":1,\"zz\":{}1{}}}",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    }

    #[test]
    fn json_depth_counts_outside_strings_only() {
        assert!(check_json(nested(8).as_bytes(), 8).is_ok());
        assert!(check_json(nested(9).as_bytes(), 8).is_err());
        assert!(check_json(br#"{"a":"[[[[[[[[[[[[\"[[[[[["}"#, 2).is_ok());
        assert!(
            check_json(b"]]]]{}", 1).is_ok(),
            "stray closers do not underflow"
        );
    }

    #[test]
    fn deep_messages_get_a_too_large_nack_in_both_formats() {
        let d = Decoder::new(DecoderConfig {
            max_depth: 8,
            ..Default::default()
        });
        let e = d
            .decode(
                nested(100_000).as_bytes(),
                Format::Json,
                "d",
                &crate::clock::ServerClock::frozen_at(0),
            )
            .unwrap_err();
        assert_eq!(e.code(), "too_large");
        assert!(e.to_string().contains("nesting"), "{e}");

        // CBOR: 100 000 nested one-element arrays inside the message map.
        let mut cbor = vec![0xa2, 0x63, b's', b'e', b'q', 0x01, 0x62, b'z', b'z'];
        cbor.extend(std::iter::repeat_n(0x81u8, 100_000));
        cbor.push(0x01);
        let e = d
            .decode(
                &cbor,
                Format::Cbor,
                "d",
                &crate::clock::ServerClock::frozen_at(0),
            )
            .unwrap_err();
        assert_eq!(e.code(), "too_large", "{e}");

        // The deepest real message (batch → point → fields) passes at the limit 4.
        let d4 = Decoder::new(DecoderConfig {
            max_depth: 4,
            ..Default::default()
        });
        let msg =
            serde_json::json!({"seq": 1, "points": [{"tags": {"a": "b"}, "fields": {"x": 1}}]});
        assert!(
            d4.decode(
                msg.to_string().as_bytes(),
                Format::Json,
                "d",
                &crate::clock::ServerClock::frozen_at(0)
            )
            .is_ok()
        );
        let mut buf = Vec::new();
        ciborium::into_writer(&msg, &mut buf).unwrap();
        assert!(
            d4.decode(
                &buf,
                Format::Cbor,
                "d",
                &crate::clock::ServerClock::frozen_at(0)
            )
            .is_ok(),
            "{:?}",
            d4.decode(
                &buf,
                Format::Cbor,
                "d",
                &crate::clock::ServerClock::frozen_at(0)
            )
        );
    }
}
