//! Arbitrary points through validation: every point `check_point` accepts
//! encodes to exactly one line, which a strict parser (following what
//! InfluxDB 1.x really parses, see docs/line-protocol.md) splits back into the
//! same measurement, tags and fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsingest_proto::lineproto::{Limits, check_point, encode_point};
use wsingest_proto::point::{FieldValue, Point};

fuzz_target!(|input: (String, Vec<(String, String)>, Vec<(String, String)>, f64)| {
    let (measurement, tags, strings, float) = input;
    let mut tags = tags;
    tags.sort();
    tags.dedup_by(|a, b| a.0 == b.0);
    let mut fields: Vec<(String, FieldValue)> =
        strings.into_iter().map(|(k, v)| (k, FieldValue::Str(v))).collect();
    fields.push(("f".into(), FieldValue::Float(float)));
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields.dedup_by(|a, b| a.0 == b.0);
    let p = Point { measurement, tags, fields, time_ns: 1, int_fields: false };
    if check_point(&p, &Limits::default()).is_err() {
        return;
    }
    let mut out = Vec::new();
    encode_point(&p, &mut out);
    let line = std::str::from_utf8(&out).expect("the encoder writes UTF-8");
    let parsed = parse(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(parsed.0, p.measurement, "measurement of {line:?}");
    assert_eq!(parsed.1, p.tags, "tags of {line:?}");
    assert_eq!(parsed.2.len(), p.fields.len(), "fields of {line:?}");
    for ((k, v), (pk, pv)) in parsed.2.iter().zip(&p.fields) {
        assert_eq!(k, pk, "field key of {line:?}");
        match pv {
            FieldValue::Str(s) => assert_eq!(v, &format!("\"{s}\""), "field {k} of {line:?}"),
            FieldValue::Float(f) => {
                assert_eq!(v.parse::<f64>().ok(), Some(*f), "field {k} of {line:?}")
            }
            _ => unreachable!("only strings and floats are generated"),
        }
    }
    assert_eq!(parsed.3, "1", "timestamp of {line:?}");
});

type Parsed = (String, Vec<(String, String)>, Vec<(String, String)>, String);

/// Parse one line the way InfluxDB 1.x does: in names a backslash escapes
/// only the separators of its section (elsewhere it is literal); in string
/// fields `\"` and `\\` are escapes and raw newlines are content. String
/// values come back with their quotes, unescaped.
fn parse(line: &str) -> Result<Parsed, String> {
    let mut c = line.chars().peekable();
    let mut name = |stops: &[char], escapes: &[char]| -> (String, Option<char>) {
        let mut s = String::new();
        while let Some(ch) = c.next() {
            if ch == '\\' {
                match c.peek() {
                    Some(&n) if escapes.contains(&n) => {
                        s.push(n);
                        c.next();
                    }
                    _ => s.push('\\'),
                }
            } else if stops.contains(&ch) {
                return (s, Some(ch));
            } else if ch == '\n' {
                return (s, Some('\n'));
            } else {
                s.push(ch);
            }
        }
        (s, None)
    };
    let (measurement, mut stop) = name(&[',', ' '], &[',', ' ']);
    let mut tags = Vec::new();
    while stop == Some(',') {
        let (k, s) = name(&['='], &[',', ' ', '=']);
        if s != Some('=') {
            return Err(format!("tag key {k:?} not followed by '='"));
        }
        let (v, s) = name(&[',', ' '], &[',', ' ', '=']);
        tags.push((k, v));
        stop = s;
    }
    if stop != Some(' ') {
        return Err("no field section".into());
    }
    drop(name);
    let rest: String = c.collect();
    let mut fields = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let mut key = String::new();
        loop {
            match chars.next() {
                Some('\\') if matches!(chars.peek(), Some(',' | ' ' | '=')) => {
                    key.push(chars.next().unwrap())
                }
                Some('=') => break,
                Some(ch @ (' ' | ',' | '\n')) => return Err(format!("field key ended by {ch:?}")),
                Some(ch) => key.push(ch),
                None => return Err("line ends in a field key".into()),
            }
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            value.push(chars.next().unwrap());
            loop {
                match chars.next() {
                    Some('\\') if matches!(chars.peek(), Some('"' | '\\')) => {
                        value.push(chars.next().unwrap())
                    }
                    Some('"') => break,
                    Some(ch) => value.push(ch),
                    None => return Err("unterminated string".into()),
                }
            }
            value.push('"');
        } else {
            while let Some(&ch) = chars.peek() {
                if matches!(ch, ',' | ' ' | '\n') {
                    break;
                }
                value.push(ch);
                chars.next();
            }
        }
        fields.push((key, value));
        match chars.next() {
            Some(',') => continue,
            Some(' ') => break,
            other => return Err(format!("field followed by {other:?}")),
        }
    }
    let ts: String = chars.by_ref().take_while(|&ch| ch != '\n').collect();
    if chars.next().is_some() {
        return Err("more than one line".into());
    }
    if !line.ends_with('\n') {
        return Err("no newline at the end".into());
    }
    Ok((measurement, tags, fields, ts))
}
