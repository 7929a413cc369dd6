//! Arbitrary points through validation: every point `check_point` accepts
//! encodes to exactly one line, whose measurement and tag section contain no
//! unescaped separators beyond the ones the encoder wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsingest::lineproto::{Limits, check_point, encode_point};
use wsingest::point::{FieldValue, Point};

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
    // Outside string fields, a line never contains a raw newline.
    let (mut in_string, mut escaped) = (false, false);
    for &b in &out[..out.len() - 1] {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'\n' | b'\r' => assert!(in_string, "line split: {:?}", String::from_utf8_lossy(&out)),
            _ => {}
        }
    }
    assert_eq!(out.last(), Some(&b'\n'));
});
