//! Points of one message that InfluxDB would store as one.
//!
//! InfluxDB keeps one value per (measurement, tag set, field, time): of two
//! points that share all four, the second overwrites the first, and both
//! would have been acked. Points the server stamps never collide (see
//! [`crate::clock`]); points that share a time the device gave (a batch with
//! one message-level `ts`, or the same `ts` twice) are refused with a reason
//! instead. Points of one series and time with different fields are merged
//! into one row by InfluxDB, losing nothing, so they pass.

use std::collections::HashMap;

use super::DecodeError;
use crate::point::Point;

/// Refuse `points` when two of them share series, time and a field.
/// `what` names the list in the detail (`points`, `records`).
pub(super) fn check(points: &[Point], seq: Option<u64>, what: &str) -> Result<(), DecodeError> {
    if points.len() < 2 {
        return Ok(());
    }
    let mut times: Vec<i64> = points.iter().map(|p| p.time_ns).collect();
    times.sort_unstable();
    if times.windows(2).all(|w| w[0] != w[1]) {
        return Ok(()); // the usual case: every point has a time of its own
    }
    // (time, measurement, tags, field) -> first point with it.
    type Key<'a> = (i64, &'a str, &'a [(String, String)], &'a str);
    let mut seen: HashMap<Key<'_>, usize> = HashMap::new();
    for (i, p) in points.iter().enumerate() {
        for (field, _) in &p.fields {
            let key = (
                p.time_ns,
                p.measurement.as_str(),
                p.tags.as_slice(),
                field.as_str(),
            );
            if let Some(first) = seen.insert(key, i) {
                return Err(DecodeError::DuplicatePoint {
                    seq,
                    detail: format!(
                        "{what}[{i}] has the same measurement, tags and time as {what}[{first}] \
                         and also sets field {field:?}: InfluxDB keeps one value per series, \
                         field and time, so one of them would be lost; give each point its own ts"
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::FieldValue;

    fn point(time_ns: i64, tag: &str, field: &str) -> Point {
        Point {
            measurement: "m".into(),
            tags: vec![("device".into(), "d".into()), ("t".into(), tag.into())],
            fields: vec![(field.into(), FieldValue::Float(1.0))],
            time_ns,
            int_fields: false,
        }
    }

    #[test]
    fn distinct_times_pass() {
        assert!(check(&[point(1, "a", "x"), point(2, "a", "x")], None, "points").is_ok());
    }

    #[test]
    fn same_time_other_series_or_other_field_pass() {
        assert!(check(&[point(1, "a", "x"), point(1, "b", "x")], None, "points").is_ok());
        assert!(check(&[point(1, "a", "x"), point(1, "a", "y")], None, "points").is_ok());
    }

    #[test]
    fn same_series_time_and_field_is_refused_naming_both() {
        let e = check(
            &[point(1, "a", "x"), point(2, "a", "x"), point(1, "a", "x")],
            Some(7),
            "points",
        )
        .unwrap_err();
        assert_eq!(e.code(), "duplicate_point");
        assert_eq!(e.seq(), Some(7));
        let detail = e.to_string();
        assert!(detail.starts_with("points[2] has the same"), "{detail}");
        assert!(detail.contains("points[0]"), "{detail}");
    }
}
