//! CBOR decoding of device messages (ciborium), same data model as JSON.

use super::DecodeError;
use super::model::{SeqOnly, WireMessage};

/// Nesting deeper than this is refused; the message model needs 4 levels.
const RECURSION_LIMIT: usize = 16;

pub fn decode(bytes: &[u8]) -> Result<WireMessage, DecodeError> {
    let mut rest = bytes;
    match ciborium::de::from_reader_with_recursion_limit::<WireMessage, _>(
        &mut rest,
        RECURSION_LIMIT,
    ) {
        Ok(_) if !rest.is_empty() => Err(DecodeError::Syntax {
            seq: None,
            format: "CBOR",
            detail: format!("{} bytes of trailing data after the message", rest.len()),
        }),
        Ok(m) => Ok(m),
        Err(e) => {
            let seq = ciborium::de::from_reader_with_recursion_limit::<SeqOnly, _>(
                bytes,
                RECURSION_LIMIT,
            )
            .ok()
            .and_then(|s| s.seq);
            // Well-formed CBOR of the wrong shape is a message error; anything
            // else is not CBOR at all.
            let well_formed = ciborium::de::from_reader_with_recursion_limit::<ciborium::Value, _>(
                bytes,
                RECURSION_LIMIT,
            )
            .is_ok();
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
                ciborium::de::Error::RecursionLimitExceeded => DecodeError::Syntax {
                    seq,
                    format: "CBOR",
                    detail: format!("nested deeper than {RECURSION_LIMIT} levels"),
                },
            })
        }
    }
}
