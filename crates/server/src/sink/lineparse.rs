//! Reading line protocol back into points: the lines of the dead-letter
//! file, which [`wsingest_proto::lineproto::encode_point`] wrote, so that
//! `wsingest deadletter replay` can validate them again before re-sending.
//!
//! It reads what InfluxDB 1.x reads (measured rules in `lineproto`): in
//! names `\,`, `\ ` and `\=` are escapes and any other backslash is literal;
//! in string fields `\"` and `\\` are. A timestamp is required: a replayed
//! point without one would be stored at the replay time.

use wsingest_proto::point::{FieldValue, Point};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line protocol, byte {at}: {what}")]
pub struct LineError {
    pub at: usize,
    pub what: String,
}

fn err(at: usize, what: impl Into<String>) -> LineError {
    LineError {
        at,
        what: what.into(),
    }
}

/// Read a name up to one of `stops` (unescaped); returns it and the index
/// of the stop byte (or the end).
fn name(line: &[u8], mut i: usize, stops: &[u8]) -> (String, usize) {
    let mut out = Vec::new();
    while i < line.len() {
        let b = line[i];
        if b == b'\\' && i + 1 < line.len() && matches!(line[i + 1], b',' | b' ' | b'=') {
            out.push(line[i + 1]);
            i += 2;
            continue;
        }
        if stops.contains(&b) {
            break;
        }
        out.push(b);
        i += 1;
    }
    (String::from_utf8_lossy(&out).into_owned(), i)
}

/// Parse one line (without its newline).
pub fn parse_line(line: &str) -> Result<Point, LineError> {
    let b = line.as_bytes();
    let (measurement, mut i) = name(b, 0, b", ");
    if measurement.is_empty() {
        return Err(err(0, "no measurement"));
    }
    let mut tags = Vec::new();
    while i < b.len() && b[i] == b',' {
        let (k, j) = name(b, i + 1, b"=, ");
        if j >= b.len() || b[j] != b'=' {
            return Err(err(j, format!("tag {k:?} has no '='")));
        }
        let (v, j) = name(b, j + 1, b", ");
        tags.push((k, v));
        i = j;
    }
    if i >= b.len() || b[i] != b' ' {
        return Err(err(i, "no fields"));
    }
    i += 1;
    let mut fields = Vec::new();
    let mut int_fields = false;
    loop {
        let (k, j) = name(b, i, b"=, ");
        if j >= b.len() || b[j] != b'=' {
            return Err(err(j, format!("field {k:?} has no '='")));
        }
        i = j + 1;
        let value =
            if b.get(i) == Some(&b'"') {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(err(i, format!("field {k:?}: unterminated string"))),
                        Some(b'\\') if matches!(b.get(i + 1), Some(b'"' | b'\\')) => {
                            s.push(b[i + 1]);
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                FieldValue::Str(String::from_utf8_lossy(&s).into_owned())
            } else {
                let start = i;
                while i < b.len() && b[i] != b',' && b[i] != b' ' {
                    i += 1;
                }
                let text = &line[start..i];
                match text {
                    "t" | "T" | "true" | "True" | "TRUE" => FieldValue::Bool(true),
                    "f" | "F" | "false" | "False" | "FALSE" => FieldValue::Bool(false),
                    _ if text.ends_with('i') => {
                        int_fields = true;
                        FieldValue::Int(text[..text.len() - 1].parse().map_err(|_| {
                            err(start, format!("field {k:?}: {text:?} is not an integer"))
                        })?)
                    }
                    _ if text.ends_with('u') => {
                        int_fields = true;
                        FieldValue::UInt(text[..text.len() - 1].parse().map_err(|_| {
                            err(
                                start,
                                format!("field {k:?}: {text:?} is not an unsigned integer"),
                            )
                        })?)
                    }
                    _ => FieldValue::Float(text.parse().map_err(|_| {
                        err(start, format!("field {k:?}: {text:?} is not a number"))
                    })?),
                }
            };
        fields.push((k, value));
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b' ') => break,
            None => {
                return Err(err(
                    i,
                    "no timestamp (a replayed point would get the replay time)",
                ));
            }
            Some(_) => return Err(err(i, "unexpected byte after a field value")),
        }
    }
    let ts = line[i + 1..].trim_end();
    let time_ns = ts
        .parse::<i64>()
        .map_err(|_| err(i + 1, format!("timestamp {ts:?} is not an integer")))?;
    Ok(Point {
        measurement,
        tags,
        fields,
        time_ns,
        int_fields,
    })
}

/// Split the text of several lines into points, one result per line. A
/// newline inside a string field value (kept raw by the encoder) does not
/// end a line.
pub fn parse_lines(text: &str) -> Vec<(String, Result<Point, LineError>)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut parts = text.split('\n').peekable();
    while let Some(part) = parts.next() {
        if pending.is_empty() && part.trim().is_empty() {
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(part);
        let r = parse_line(&pending);
        if matches!(&r, Err(e) if e.what.contains("unterminated string")) && parts.peek().is_some()
        {
            continue;
        }
        out.push((std::mem::take(&mut pending), r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsingest_proto::lineproto::{Limits, check_point, encode_point};

    #[test]
    fn reads_back_what_the_encoder_writes() {
        let points = [
            Point {
                measurement: "we ath,er".into(),
                tags: vec![
                    ("de vice".into(), "a=b,c d".into()),
                    ("s".into(), r"back\slash".into()),
                ],
                fields: vec![
                    ("t c".into(), FieldValue::Str("say \"hi\"\\\nnext".into())),
                    ("n".into(), FieldValue::Float(21.5)),
                    ("b".into(), FieldValue::Bool(false)),
                ],
                time_ns: 1_700_000_000_000_000_000,
                int_fields: false,
            },
            Point {
                measurement: "m".into(),
                tags: vec![("device".into(), "d-1".into())],
                fields: vec![("i".into(), FieldValue::Int(-42))],
                time_ns: -5,
                int_fields: true,
            },
        ];
        for p in points {
            check_point(&p, &Limits::default()).unwrap();
            let mut out = Vec::new();
            encode_point(&p, &mut out);
            let line = String::from_utf8(out).unwrap();
            assert_eq!(
                parse_line(line.trim_end_matches('\n')).unwrap(),
                p,
                "{line}"
            );
        }
    }

    #[test]
    fn newlines_inside_strings_do_not_split() {
        let r = parse_lines("m s=\"a\nb\" 1\nm x=2 2\n");
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].1.as_ref().unwrap().fields[0].1,
            FieldValue::Str("a\nb".into())
        );
        assert_eq!(r[1].1.as_ref().unwrap().time_ns, 2);
    }

    #[test]
    fn refuses_what_is_not_a_point() {
        for bad in [
            "",
            "m",
            "m x=1",
            "m,t x=1 1",
            "m x=\"open 1",
            "m x=abc 1",
            "m x=1 soon",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
    }
}
