//! CBOR decoding of device messages (ciborium), same data model as JSON.

use super::model::{SeqOnly, WireMessage};
use super::{DecodeError, depth};

/// Decode one message; arrays and maps nested deeper than `max_depth` are
/// refused (the message model needs 4 levels).
pub fn decode(bytes: &[u8], max_depth: usize) -> Result<WireMessage, DecodeError> {
    let limit = max_depth.max(1);
    let mut rest = bytes;
    match ciborium::de::from_reader_with_recursion_limit::<WireMessage, _>(&mut rest, limit) {
        Ok(_) if !rest.is_empty() => Err(DecodeError::Syntax {
            seq: None,
            format: "CBOR",
            detail: format!("{} bytes of trailing data after the message", rest.len()),
        }),
        Ok(m) => Ok(m),
        Err(e) => {
            let seq = ciborium::de::from_reader_with_recursion_limit::<SeqOnly, _>(bytes, limit)
                .ok()
                .and_then(|s| s.seq);
            // Well-formed CBOR of the wrong shape is a message error; anything
            // else is not CBOR at all.
            // The model refuses unknown keys and nested values before it
            // recurses, so depth shows up here, in the generic parse.
            let generic =
                ciborium::de::from_reader_with_recursion_limit::<ciborium::Value, _>(bytes, limit);
            if matches!(generic, Err(ciborium::de::Error::RecursionLimitExceeded)) {
                return Err(depth::too_deep(seq, max_depth));
            }
            let well_formed = generic.is_ok();
            Err(match e {
                ciborium::de::Error::Semantic(_, msg) if well_formed => {
                    DecodeError::Structure { seq, detail: msg }
                }
                ciborium::de::Error::Semantic(_, msg) => DecodeError::Syntax {
                    seq,
                    format: "CBOR",
                    detail: msg,
                },
                ciborium::de::Error::Syntax(offset) => DecodeError::Syntax {
                    seq,
                    format: "CBOR",
                    detail: format!("malformed CBOR at byte {offset}"),
                },
                ciborium::de::Error::Io(_) => DecodeError::Syntax {
                    seq,
                    format: "CBOR",
                    detail: "message ends in the middle of a CBOR item".into(),
                },
                ciborium::de::Error::RecursionLimitExceeded => depth::too_deep(seq, max_depth),
            })
        }
    }
}
