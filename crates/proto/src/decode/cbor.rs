//! CBOR decoding of device messages (ciborium), same data model as JSON.

use std::borrow::Cow;

use super::borrowed::{FieldRef, MsgRef, Pairs, PointRef, TimeRef, normalize};
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

/// The fast path: a direct parse of the usual message shape into the borrowed
/// model, without ciborium (whose reader-based decoder was ~half of the
/// server's CPU on CBOR batches) and without a `String` per key. It accepts a
/// subset of what the serde path accepts (definite lengths, text keys, no CBOR
/// tags, no null, no half floats, no bignums, no command results) and gives
/// the same result for it; for anything else it returns `None` and the serde
/// path decides, so errors and rarer encodings behave exactly as before.
pub fn decode_fast(bytes: &[u8]) -> Option<MsgRef<'_>> {
    let mut r = Reader { b: bytes, at: 0 };
    let m = r.message()?;
    (r.at == bytes.len()).then_some(m)
}

/// An IEEE 754 half float, exactly (as ciborium's `half` conversion).
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    match exp {
        0 => sign * mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + mantissa / 1024.0) * 2f64.powi(exp - 15),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

/// A CBOR data item head: major type and argument.
#[derive(Clone, Copy)]
struct Head {
    major: u8,
    info: u8,
    arg: u64,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.b.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn head(&mut self) -> Option<Head> {
        let first = self.byte()?;
        let (major, info) = (first >> 5, first & 0x1f);
        let arg = match info {
            0..=23 => info as u64,
            24 => self.byte()? as u64,
            25 => u16::from_be_bytes(self.take(2)?.try_into().ok()?) as u64,
            26 => u32::from_be_bytes(self.take(4)?.try_into().ok()?) as u64,
            27 => u64::from_be_bytes(self.take(8)?.try_into().ok()?),
            _ => return None, // indefinite lengths and reserved values
        };
        Some(Head { major, info, arg })
    }

    fn text(&mut self) -> Option<&'a str> {
        let h = self.head()?;
        if h.major != 3 {
            return None;
        }
        std::str::from_utf8(self.take(usize::try_from(h.arg).ok()?)?).ok()
    }

    /// A map's or array's length; `None` for anything else.
    fn len(&mut self, major: u8) -> Option<usize> {
        let h = self.head()?;
        if h.major != major {
            return None;
        }
        let n = usize::try_from(h.arg).ok()?;
        // Every entry takes at least one byte: refuses absurd lengths before
        // reserving for them.
        (n <= self.b.len() - self.at).then_some(n)
    }

    fn float(h: Head) -> Option<f64> {
        match h.info {
            // Encoders (ciborium among them) use the shortest exact width.
            25 => Some(f16_to_f64(h.arg as u16)),
            26 => Some(f32::from_bits(h.arg as u32) as f64),
            27 => Some(f64::from_bits(h.arg)),
            _ => None, // simple values: the serde path
        }
    }

    fn field(&mut self) -> Option<FieldRef<'a>> {
        let h = self.head()?;
        match h.major {
            0 => Some(FieldRef::UInt(h.arg)),
            1 => Some(FieldRef::Int(-1 - i64::try_from(h.arg).ok()?)),
            3 => Some(FieldRef::Str(Cow::Borrowed(
                std::str::from_utf8(self.take(usize::try_from(h.arg).ok()?)?).ok()?,
            ))),
            7 if h.info == 20 => Some(FieldRef::Bool(false)),
            7 if h.info == 21 => Some(FieldRef::Bool(true)),
            7 => Self::float(h).map(FieldRef::Float),
            _ => None,
        }
    }

    fn time(&mut self) -> Option<TimeRef<'a>> {
        let h = self.head()?;
        match h.major {
            0 => Some(TimeRef::Millis(h.arg.into())),
            1 => Some(TimeRef::Millis((-1 - i64::try_from(h.arg).ok()?).into())),
            3 => Some(TimeRef::Rfc3339(Cow::Borrowed(
                std::str::from_utf8(self.take(usize::try_from(h.arg).ok()?)?).ok()?,
            ))),
            7 => Self::float(h).map(TimeRef::FracMillis),
            _ => None,
        }
    }

    fn tags(&mut self) -> Option<Pairs<'a, Cow<'a, str>>> {
        let n = self.len(5)?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.text()?;
            pairs.push((Cow::Borrowed(k), Cow::Borrowed(self.text()?)));
        }
        // A repeated key is refused by the slow path, which says so.
        normalize(&mut pairs).ok()?;
        Some(pairs)
    }

    fn fields(&mut self) -> Option<Pairs<'a, FieldRef<'a>>> {
        let n = self.len(5)?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.text()?;
            pairs.push((Cow::Borrowed(k), self.field()?));
        }
        normalize(&mut pairs).ok()?;
        Some(pairs)
    }

    fn point(&mut self) -> Option<PointRef<'a>> {
        let n = self.len(5)?;
        let mut p = PointRef::default();
        let mut seen = 0u8;
        for _ in 0..n {
            // A repeated key is an error for the serde model: leave it to it.
            let bit = match self.text()? {
                "ts" => {
                    p.ts = Some(self.time()?);
                    1
                }
                "measurement" => {
                    p.measurement = Some(Cow::Borrowed(self.text()?));
                    2
                }
                "tags" => {
                    p.tags = Some(self.tags()?);
                    4
                }
                "fields" => {
                    p.fields = Some(self.fields()?);
                    8
                }
                _ => return None,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
        }
        Some(p)
    }

    fn message(&mut self) -> Option<MsgRef<'a>> {
        let n = self.len(5)?;
        let mut m = MsgRef::default();
        let mut seen = 0u8;
        for _ in 0..n {
            let bit = match self.text()? {
                "seq" => {
                    let h = self.head()?;
                    if h.major != 0 {
                        return None;
                    }
                    m.seq = Some(h.arg);
                    1
                }
                "ts" => {
                    m.ts = Some(self.time()?);
                    2
                }
                "measurement" => {
                    m.measurement = Some(Cow::Borrowed(self.text()?));
                    4
                }
                "tags" => {
                    m.tags = Some(self.tags()?);
                    8
                }
                "fields" => {
                    m.fields = Some(self.fields()?);
                    16
                }
                "points" => {
                    let n = self.len(4)?;
                    let mut list = Vec::with_capacity(n);
                    for _ in 0..n {
                        list.push(self.point()?);
                    }
                    m.points = Some(list);
                    32
                }
                _ => return None, // cmd_result, ok, detail, unknown keys
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
        }
        Some(m)
    }
}
