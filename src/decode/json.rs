//! JSON decoding of device messages (serde_json), with error paths such as
//! `fields.temp_c: invalid type: ...` so a nack names the offending key.

use super::DecodeError;
use super::model::{SeqOnly, WireMessage};

pub fn decode(bytes: &[u8]) -> Result<WireMessage, DecodeError> {
    // The fast path: tracking the key path costs on every value, so it is only
    // done again, for the error detail, when a message is refused.
    if let Ok(m) = serde_json::from_slice::<WireMessage>(bytes) {
        return Ok(m);
    }
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
