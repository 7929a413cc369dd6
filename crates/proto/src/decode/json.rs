//! JSON decoding of device messages (serde_json), with error paths such as
//! `fields.temp_c: invalid type: ...` so a nack names the offending key.

use super::DecodeError;
use super::borrowed::MsgRef;
use super::model::{SeqOnly, WireMessage};

/// The fast path: the borrowed model, strings without escapes not copied.
/// `None` when the message is refused; [`decode`] then says why.
pub fn decode_fast(bytes: &[u8]) -> Option<MsgRef<'_>> {
    serde_json::from_slice(bytes).ok()
}

/// The slow path, for a message [`decode_fast`] refused: tracking the key
/// path costs on every value, so it is only done for the error detail.
pub fn decode(bytes: &[u8]) -> Result<WireMessage, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = serde_path_to_error::deserialize::<_, WireMessage>(&mut de)
        .map_err(|e| {
            let path = e.path().to_string();
            (path, e.into_inner())
        })
        .and_then(|m| de.end().map(|()| m).map_err(|e| (String::new(), e)));
    result.map_err(|(path, inner)| {
        // The first value only, so trailing garbage does not hide the seq.
        let seq = serde_json::Deserializer::from_slice(bytes)
            .into_iter::<SeqOnly>()
            .next()
            .and_then(Result::ok)
            .and_then(|s| s.seq);
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let detail = if path.is_empty() || path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        if syntax {
            DecodeError::Syntax {
                seq,
                format: "JSON",
                detail,
            }
        } else {
            DecodeError::Structure { seq, detail }
        }
    })
}
