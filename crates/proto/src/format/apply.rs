//! Applying a [`Mapping`] to one document: the points it yields, or a nack
//! naming the path that could not be used.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{FixedOffset, NaiveDateTime, TimeZone};
use serde_json::Value;

use super::path::{Seg, glob_match, render};
use super::*;
use crate::decode::DecodeError;
use crate::decode::model::{WireField, WireMessage, WirePoint, WireTime};

impl Mapping {
    fn refuse(&self, seq: Option<u64>, detail: String) -> DecodeError {
        DecodeError::InvalidMessage {
            seq,
            detail: format!("format {}: {detail}", self.name),
        }
    }

    /// The message model of `root`, ready for the decoder's checks.
    pub fn apply(&self, root: &Value) -> Result<WireMessage, DecodeError> {
        if !root.is_object() {
            return Err(self.refuse(
                None,
                format!("the message is {}, not a JSON object", kind(root)),
            ));
        }
        let top = Scope {
            root,
            elem: root,
            key: None,
        };
        let seq = match &self.seq {
            None => None,
            Some(p) => match top.get(p).as_deref() {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
                Some(Value::String(s)) if s.parse::<u64>().is_ok() => s.parse().ok(),
                Some(other) => {
                    return Err(self.refuse(
                        None,
                        format!("{p}: {} is not a seq (a whole number from 0)", short(other)),
                    ));
                }
            },
        };
        for (p, want) in &self.require {
            match top.get(p).as_deref() {
                Some(Value::String(s)) if s == want => {}
                got => {
                    let got = got.map(short).unwrap_or_else(|| "absent".into());
                    return Err(self.refuse(
                        seq,
                        format!(
                            "{p} is {got}; this format takes only messages with {p} = {want:?}"
                        ),
                    ));
                }
            }
        }
        let mut elements: Vec<(Scope<'_>, String)> = Vec::new();
        match &self.split {
            None => elements.push((top, String::new())),
            Some(p) => match p.get(root) {
                Some(Value::Array(list)) => {
                    for (i, e) in list.iter().enumerate() {
                        if !e.is_object() {
                            return Err(self.refuse(
                                seq,
                                format!("{p}[{i}] is {}; split takes arrays of objects", kind(e)),
                            ));
                        }
                        elements.push((
                            Scope {
                                root,
                                elem: e,
                                key: None,
                            },
                            format!("{p}[{i}]: "),
                        ));
                    }
                }
                Some(Value::Object(m)) => {
                    for (k, e) in m.iter().filter(|(_, e)| e.is_object()) {
                        elements.push((
                            Scope {
                                root,
                                elem: e,
                                key: Some(k),
                            },
                            format!("{k}: "),
                        ));
                    }
                }
                Some(other) => {
                    return Err(self.refuse(
                        seq,
                        format!("split: {p} is {}, not an array or object", kind(other)),
                    ));
                }
                None => {
                    return Err(self.refuse(seq, format!("split: {p} is absent from the message")));
                }
            },
        }
        let split = self.split.is_some();
        let mut points = Vec::with_capacity(elements.len());
        for (scope, at) in &elements {
            let p = self.point(scope, seq, at)?;
            match p.fields.as_ref().is_some_and(|f| !f.is_empty()) {
                true => points.push(p),
                // An element with nothing to store (e.g. Shelly's `ble: {}`).
                false if split => {}
                false => {
                    return Err(self.refuse(
                        seq,
                        "no value of the message is a field of this format (check fields.from, include and exclude)"
                            .into(),
                    ));
                }
            }
        }
        if points.is_empty() {
            let what = self
                .split
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default();
            return Err(self.refuse(
                seq,
                format!("split {what}: no element has a field to store"),
            ));
        }
        Ok(WireMessage {
            seq,
            points: Some(points),
            ..WireMessage::default()
        })
    }

    fn point(&self, s: &Scope<'_>, seq: Option<u64>, at: &str) -> Result<WirePoint, DecodeError> {
        let measurement = match &self.measurement {
            Measurement::Default => None,
            Measurement::Name(n) => Some(n.clone()),
            Measurement::Path(p, default) => match s.get(p).as_deref() {
                Some(Value::String(v)) => Some(v.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                None | Some(Value::Null) => match default {
                    Some(d) => Some(d.clone()),
                    None => {
                        return Err(self.refuse(
                            seq,
                            format!("{at}measurement: {p} is absent (or set measurement.default)"),
                        ));
                    }
                },
                Some(other) => {
                    return Err(self.refuse(
                        seq,
                        format!("{at}measurement: {p} is {}, not text", kind(other)),
                    ));
                }
            },
        };
        let ts = match &self.ts {
            None => None,
            Some(t) => self.time(t, s, seq, at)?,
        };
        let mut tags = BTreeMap::new();
        for (name, p) in &self.tags {
            let v = match s.get(p).as_deref() {
                None | Some(Value::Null) => continue,
                Some(Value::String(v)) => v.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(other) => {
                    return Err(self.refuse(
                        seq,
                        format!("{at}tags.{name}: {p} is {}, not a value", kind(other)),
                    ));
                }
            };
            if !v.is_empty() {
                tags.insert(name.clone(), v);
            }
        }
        let mut fields = Fields::default();
        let base = match &self.from {
            None => Some(Cow::Borrowed(s.elem)),
            Some(p) => s.get(p),
        };
        match base.as_deref() {
            None | Some(Value::Null) => {}
            Some(v @ Value::Object(_)) => {
                let mut segs = Vec::new();
                let mut name = String::new();
                self.walk(v, &mut segs, &mut name, 0, &mut fields, true)
                    .map_err(|d| self.refuse(seq, format!("{at}{d}")))?;
            }
            Some(other) => {
                let p = self
                    .from
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                return Err(self.refuse(
                    seq,
                    format!("{at}fields.from: {p} is {}, not an object", kind(other)),
                ));
            }
        }
        for (name, p) in &self.extra {
            if let Some(v) = s.get(p) {
                let mut segs = Vec::new();
                let mut n = name.clone();
                self.walk(&v, &mut segs, &mut n, 0, &mut fields, false)
                    .map_err(|d| self.refuse(seq, format!("{at}fields.extra.{name}: {d}")))?;
            }
        }
        Ok(WirePoint {
            ts,
            measurement,
            tags: (!tags.is_empty()).then_some(tags),
            fields: Some(fields.map),
        })
    }

    /// Fields of `v` (at `segs`, named `name`); `filter`: apply include,
    /// exclude and the consumed paths (not to `extra`).
    fn walk(
        &self,
        v: &Value,
        segs: &mut Vec<Seg>,
        name: &mut String,
        depth: usize,
        out: &mut Fields,
        filter: bool,
    ) -> Result<(), String> {
        let scalar = match v {
            Value::Null => return Ok(()),
            Value::Bool(b) => WireField::Bool(*b),
            Value::String(s) => WireField::Str(s.clone()),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => WireField::Int(i),
                (None, Some(u), _) => WireField::UInt(u),
                (_, _, Some(f)) => WireField::Float(f),
                _ => return Err(format!("{n} is not a number InfluxDB can store")),
            },
            Value::Object(_) | Value::Array(_) if depth > 0 && !self.flatten => return Ok(()),
            Value::Object(m) => {
                for (k, child) in m {
                    let len = name.len();
                    if !name.is_empty() {
                        name.push_str(&self.separator);
                    }
                    name.push_str(k);
                    segs.push(Seg::Key(k.clone()));
                    self.walk(child, segs, name, depth + 1, out, filter)?;
                    segs.pop();
                    name.truncate(len);
                }
                return Ok(());
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let len = name.len();
                    if !name.is_empty() {
                        name.push_str(&self.separator);
                    }
                    name.push_str(&i.to_string());
                    segs.push(Seg::Index(i));
                    self.walk(child, segs, name, depth + 1, out, filter)?;
                    segs.pop();
                    name.truncate(len);
                }
                return Ok(());
            }
        };
        let mut dotted = String::new();
        render(segs, &mut dotted);
        if filter {
            if self.consumed.contains(&dotted) {
                return Ok(());
            }
            let hit = |g: &String| glob_match(g, &dotted) || glob_match(g, name);
            if !self.include.iter().any(hit) || self.exclude.iter().any(hit) {
                return Ok(());
            }
        }
        if name.is_empty() {
            return Err("a value has no name to be a field under".into());
        }
        if let Some(first) = out.origin.get(name.as_str()) {
            return Err(format!(
                "{dotted} and {first} both become field {name:?}: exclude one, or change fields.separator"
            ));
        }
        out.origin.insert(name.clone(), dotted);
        out.map.insert(name.clone(), scalar);
        Ok(())
    }

    fn time(
        &self,
        t: &Ts,
        s: &Scope<'_>,
        seq: Option<u64>,
        at: &str,
    ) -> Result<Option<WireTime>, DecodeError> {
        let found = t.paths.iter().find_map(|p| match s.get(p) {
            None => None,
            Some(v) if v.is_null() => None,
            Some(v) => Some((p, v)),
        });
        let Some((p, v)) = found else {
            if t.required {
                let names: Vec<String> = t.paths.iter().map(|p| p.to_string()).collect();
                return Err(DecodeError::InvalidTime {
                    seq,
                    detail: format!(
                        "format {}: {at}the time ({}) is absent",
                        self.name,
                        names.join(" or ")
                    ),
                });
            }
            return Ok(None);
        };
        let err = |d: String| DecodeError::InvalidTime {
            seq,
            detail: format!("format {}: {at}{p}: {d}", self.name),
        };
        let number = |n: f64,
                      int: Option<i128>,
                      decimal: Option<&str>,
                      unit: TimeUnit|
         -> Result<i128, DecodeError> {
            let unit = match unit {
                TimeUnit::Auto => match n.abs() {
                    a if a < 1e11 => TimeUnit::S,
                    a if a < 1e14 => TimeUnit::Ms,
                    a if a < 1e17 => TimeUnit::Us,
                    _ => TimeUnit::Ns,
                },
                u => u,
            };
            let factor: i128 = match unit {
                TimeUnit::S => 1_000_000_000,
                TimeUnit::Ms => 1_000_000,
                TimeUnit::Us => 1_000,
                TimeUnit::Ns => 1,
                _ => {
                    return Err(err(format!(
                        "{n} is a number, but ts.unit says a text time"
                    )));
                }
            };
            match (int, decimal) {
                (Some(i), _) => Ok(i.saturating_mul(factor)),
                // Exact for decimals such as Shelly's 1732543391.52 seconds.
                (None, Some(d)) if let Some(ns) = exact_decimal(d, factor) => Ok(ns),
                (None, _) if n.is_finite() => Ok((n * factor as f64).round() as i128),
                (None, _) => Err(err(format!("{n} is not a time"))),
            }
        };
        let ns = match v.as_ref() {
            Value::Number(n) => {
                let int = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
                let text = n.to_string();
                number(n.as_f64().unwrap_or(f64::NAN), int, Some(&text), t.unit)?
            }
            Value::String(text) => match t.unit {
                TimeUnit::S | TimeUnit::Ms | TimeUnit::Us | TimeUnit::Ns => {
                    let int = text.trim().parse::<i128>().ok();
                    let f = text.trim().parse::<f64>().map_err(|_| {
                        err(format!("{text:?} is not a number of {:?}", t.unit).to_lowercase())
                    })?;
                    number(f, int, Some(text.trim()), t.unit)?
                }
                TimeUnit::Rfc3339 | TimeUnit::Auto => self.text_time(t, text).map_err(err)?,
            },
            other => return Err(err(format!("{} is not a time", kind(other)))),
        };
        Ok(Some(WireTime::Nanos(ns)))
    }

    fn text_time(&self, t: &Ts, text: &str) -> Result<i128, String> {
        let ns = |d: chrono::DateTime<FixedOffset>| {
            d.timestamp_nanos_opt().map(i128::from).ok_or_else(|| {
                format!("{text:?} is outside the years 1677-2262 that InfluxDB can store")
            })
        };
        if let Some(f) = &t.format {
            if let Ok(naive) = NaiveDateTime::parse_from_str(text, f) {
                let d =
                    t.tz.from_local_datetime(&naive)
                        .single()
                        .ok_or_else(|| format!("{text:?} is not a time in {}", t.tz))?;
                return ns(d);
            }
            if let Ok(d) = chrono::DateTime::parse_from_str(text, f) {
                return ns(d);
            }
        }
        match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(d) => ns(d),
            Err(e) => Err(match &t.format {
                Some(f) => format!("{text:?} matches neither {f:?} nor RFC 3339 ({e})"),
                None => {
                    format!("{text:?} is not RFC 3339 ({e}); e.g. \"2024-11-25T00:00:00.123Z\"")
                }
            }),
        }
    }
}
