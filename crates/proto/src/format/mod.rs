//! Formats: mappings from a device's own JSON (or CBOR) to the message model.
//!
//! A device that cannot be changed sends its own document, e.g. Tasmota's
//! `{"Time": "...", "BME280": {"Temperature": 21.3}}`. A [`Mapping`] (compiled
//! from a [`FormatConfig`], the `[formats.NAME]` config section, or one of the
//! built-in [`presets`]) picks the measurement, time, tags and fields out of
//! it and yields the same [`WireMessage`] a native device would send, which
//! [`crate::decode::Decoder::decode_mapped`] then validates like any other
//! message: every nack, limit, server-stamped time and duplicate check holds.
//!
//! Sans-IO: no config files, no logging; errors are [`FormatError`] (a config
//! that cannot be compiled) and [`DecodeError`] (a message the mapping cannot
//! use: `invalid_message` / `invalid_timestamp` naming the path).

pub mod path;
pub mod presets;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{FixedOffset, NaiveDateTime, TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decode::DecodeError;
use crate::decode::model::{WireField, WireMessage, WirePoint, WireTime};
use path::{Path, PathError, Seg, glob_match, render};

/// `[formats.NAME]`: how one kind of foreign payload becomes points.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// What the format is for (shown by `wsingest formats list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Path of the message's `seq` (a number): the message is acked with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<String>,
    /// Only messages whose path holds this text are taken, e.g.
    /// `{ "_type" = "location" }`; others are nacked (`invalid_message`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub require: BTreeMap<String, String>,
    /// One point per element: `readings[*]` (an array of objects) or
    /// `params.*` (every member of an object whose value is an object;
    /// `$key` is the member's name). Other paths are then relative to the
    /// element; `$.a.b` is from the message root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// A constant name, or `{ path = "type", default = "env" }`. Unset: the
    /// server's `decode.default_measurement`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<MeasurementSpec>,
    /// The point's time. Unset, or its path absent in a message: the
    /// server stamps the time of arrival (distinct per point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<TsSpec>,
    /// Tag name -> path (numbers and booleans become text; absent: no tag).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub fields: FieldsSpec,
}

/// A measurement: constant or from a path.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum MeasurementSpec {
    Name(String),
    Path(MeasurementPath),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementPath {
    pub path: String,
    /// When the path is absent. Unset: such a message is nacked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// One path, or several tried in order (the first present wins).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TsSpec {
    pub path: OneOrMany,
    /// `s`, `ms`, `us`, `ns` (numbers, or numbers in strings), `rfc3339`, or
    /// `auto` (numbers by magnitude, strings as RFC 3339). Default `auto`.
    #[serde(default)]
    pub unit: TimeUnit,
    /// A strftime pattern for text times, e.g. `%Y-%m-%dT%H:%M:%S` (an RFC
    /// 3339 time is still accepted). Times without an offset are in `tz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Offset of times without one: `UTC` (default) or e.g. `+01:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// A message without the time is nacked instead of server-stamped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    S,
    Ms,
    Us,
    Ns,
    Rfc3339,
    #[default]
    Auto,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldsSpec {
    /// Path of the object whose values are the fields. Unset: the element
    /// (the whole message without `split`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Nested objects become `a_b_c`, arrays of values `a_0`, `a_1`. Off:
    /// only the object's own numbers, strings and booleans.
    pub flatten: bool,
    pub separator: String,
    /// Globs (`*`, `?`) on the value's path (`meta.time`, `list[0]`) or its
    /// field name (`meta_time`): a value is a field when it matches one of
    /// `include` and none of `exclude`. Values used for the time, the
    /// measurement, `seq` or a tag are never fields too.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// More fields: name -> path (anywhere in the message; absent: no field).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl Default for FieldsSpec {
    fn default() -> Self {
        FieldsSpec {
            from: None,
            flatten: true,
            separator: "_".into(),
            include: vec!["*".into()],
            exclude: Vec::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// A format that cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    #[error("formats.{format}.{key}: {source}")]
    Path {
        format: String,
        key: String,
        source: PathError,
    },
    #[error("formats.{format}.{key}: {detail}")]
    Invalid {
        format: String,
        key: String,
        detail: String,
    },
    #[error("built-in format {name}: {detail} (a bug: please report it)")]
    Preset { name: String, detail: String },
}

#[derive(Debug, Clone)]
enum Measurement {
    Default,
    Name(String),
    Path(Path, Option<String>),
}

#[derive(Debug, Clone)]
struct Ts {
    paths: Vec<Path>,
    unit: TimeUnit,
    format: Option<String>,
    tz: FixedOffset,
    required: bool,
}

/// A compiled format.
#[derive(Debug, Clone)]
pub struct Mapping {
    name: String,
    description: String,
    seq: Option<Path>,
    require: Vec<(Path, String)>,
    /// The container a split iterates (the path without its last `[*]`/`*`).
    split: Option<Path>,
    measurement: Measurement,
    ts: Option<Ts>,
    tags: Vec<(String, Path)>,
    from: Option<Path>,
    flatten: bool,
    separator: String,
    include: Vec<String>,
    exclude: Vec<String>,
    extra: Vec<(String, Path)>,
    /// Rendered paths (relative to `from`) that hold the time, tags, ...
    consumed: Vec<String>,
}

/// Where a path is evaluated.
struct Scope<'a> {
    root: &'a Value,
    elem: &'a Value,
    key: Option<&'a str>,
}

impl Scope<'_> {
    fn get(&self, p: &Path) -> Option<Cow<'_, Value>> {
        if p.member_name {
            return self.key.map(|k| Cow::Owned(Value::String(k.to_owned())));
        }
        let base = if p.root { self.root } else { self.elem };
        p.get(base).map(Cow::Borrowed)
    }
}

impl Mapping {
    /// Compile `config` as format `name`.
    pub fn compile(name: &str, config: &FormatConfig) -> Result<Mapping, FormatError> {
        let path = |key: &str, s: &str| {
            let p = Path::parse(s).map_err(|source| FormatError::Path {
                format: name.to_owned(),
                key: key.to_owned(),
                source,
            })?;
            if p.has_each() {
                return Err(invalid(
                    name,
                    key,
                    format!("{s:?}: only `split` may use [*] or *"),
                ));
            }
            Ok(p)
        };
        let split = match &config.split {
            None => None,
            Some(s) => {
                let mut p = Path::parse(s).map_err(|source| FormatError::Path {
                    format: name.to_owned(),
                    key: "split".into(),
                    source,
                })?;
                let each = p.segs.iter().filter(|s| **s == Seg::Each).count();
                if each != 1 || p.segs.last() != Some(&Seg::Each) || p.member_name {
                    return Err(invalid(
                        name,
                        "split",
                        format!(
                            "{s:?} must end in [*] (array) or .* (object), once: e.g. readings[*]"
                        ),
                    ));
                }
                p.segs.pop();
                p.root = false; // shown as written; evaluated from the root
                Some(p)
            }
        };
        let seq = config.seq.as_deref().map(|s| path("seq", s)).transpose()?;
        let require = config
            .require
            .iter()
            .map(|(p, v)| Ok((path("require", p)?, v.clone())))
            .collect::<Result<Vec<_>, FormatError>>()?;
        let measurement = match &config.measurement {
            None => Measurement::Default,
            Some(MeasurementSpec::Name(n)) if n.is_empty() => {
                return Err(invalid(name, "measurement", "is empty".into()));
            }
            Some(MeasurementSpec::Name(n)) => Measurement::Name(n.clone()),
            Some(MeasurementSpec::Path(m)) => {
                Measurement::Path(path("measurement.path", &m.path)?, m.default.clone())
            }
        };
        let ts = match &config.ts {
            None => None,
            Some(t) => {
                let paths = t
                    .path
                    .list()
                    .into_iter()
                    .map(|p| path("ts.path", p))
                    .collect::<Result<Vec<_>, _>>()?;
                if paths.is_empty() {
                    return Err(invalid(name, "ts.path", "names no path".into()));
                }
                let tz = match t.tz.as_deref() {
                    None => FixedOffset::east_opt(0).expect("valid"),
                    Some(tz) => parse_offset(tz).ok_or_else(|| {
                        invalid(
                            name,
                            "ts.tz",
                            format!("{tz:?} is not UTC or an offset such as +01:00"),
                        )
                    })?,
                };
                if let Some(f) = &t.format {
                    if t.unit != TimeUnit::Auto && t.unit != TimeUnit::Rfc3339 {
                        return Err(invalid(
                            name,
                            "ts.format",
                            "is for text times: leave ts.unit out".into(),
                        ));
                    }
                    let mut items = chrono::format::StrftimeItems::new(f);
                    if items.any(|i| matches!(i, chrono::format::Item::Error)) {
                        return Err(invalid(
                            name,
                            "ts.format",
                            format!("{f:?} is not a strftime pattern"),
                        ));
                    }
                }
                Some(Ts {
                    paths,
                    unit: t.unit,
                    format: t.format.clone(),
                    tz,
                    required: t.required,
                })
            }
        };
        let tags = config
            .tags
            .iter()
            .map(|(k, p)| Ok((k.clone(), path(&format!("tags.{k}"), p)?)))
            .collect::<Result<Vec<_>, FormatError>>()?;
        let f = &config.fields;
        let from = f
            .from
            .as_deref()
            .map(|s| path("fields.from", s))
            .transpose()?;
        let extra = f
            .extra
            .iter()
            .map(|(k, p)| Ok((k.clone(), path(&format!("fields.extra.{k}"), p)?)))
            .collect::<Result<Vec<_>, FormatError>>()?;
        if f.separator.is_empty() && f.flatten {
            return Err(invalid(
                name,
                "fields.separator",
                "is empty: use e.g. \"_\"".into(),
            ));
        }
        // The values that are the time, tags, ... are not fields as well.
        let root_of_fields = from.clone().unwrap_or(Path {
            root: false,
            member_name: false,
            segs: Vec::new(),
        });
        let mut used: Vec<&Path> = tags.iter().map(|(_, p)| p).collect();
        used.extend(seq.iter());
        used.extend(require.iter().map(|(p, _)| p));
        used.extend(ts.iter().flat_map(|t| t.paths.iter()));
        if let Measurement::Path(p, _) = &measurement {
            used.push(p);
        }
        let consumed = used
            .into_iter()
            .filter_map(|p| p.strip(&root_of_fields))
            .map(|segs| {
                let mut s = String::new();
                render(segs, &mut s);
                s
            })
            .collect();
        Ok(Mapping {
            name: name.to_owned(),
            description: config.description.clone().unwrap_or_default(),
            seq,
            require,
            split,
            measurement,
            ts,
            tags,
            from,
            flatten: f.flatten,
            separator: f.separator.clone(),
            include: f.include.clone(),
            exclude: f.exclude.clone(),
            extra,
            consumed,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether messages of this format carry a `seq` (and so get acks).
    pub fn has_seq(&self) -> bool {
        self.seq.is_some()
    }

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

#[derive(Default)]
struct Fields {
    map: BTreeMap<String, WireField>,
    /// Field name -> the path it came from (for collisions).
    origin: BTreeMap<String, String>,
}

/// `d` (digits, one optional `.`, an optional sign) times `factor`, exactly;
/// `None` for other notations (exponents), which take the float path.
fn exact_decimal(d: &str, factor: i128) -> Option<i128> {
    let (neg, d) = match d.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, d),
    };
    let (whole, frac) = d.split_once('.').unwrap_or((d, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut ns = whole.parse::<i128>().ok()?.checked_mul(factor)?;
    let mut scale = factor;
    for b in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break; // finer than a nanosecond
        }
        ns += i128::from(b - b'0') * scale;
    }
    Some(if neg { -ns } else { ns })
}

fn invalid(format: &str, key: &str, detail: String) -> FormatError {
    FormatError::Invalid {
        format: format.to_owned(),
        key: key.to_owned(),
        detail,
    }
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value for a message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The formats a server knows: the presets, then `[formats.*]` (a
/// section with a preset's name replaces the preset).
#[derive(Debug, Clone)]
pub struct Formats {
    map: BTreeMap<String, Arc<Mapping>>,
}

impl Default for Formats {
    fn default() -> Self {
        Formats::build(&BTreeMap::new()).expect("the presets compile")
    }
}

impl Formats {
    pub fn build(custom: &BTreeMap<String, FormatConfig>) -> Result<Formats, FormatError> {
        let mut map = BTreeMap::new();
        for (name, _) in presets::PRESETS {
            let config = presets::config(name)?;
            map.insert(name.to_string(), Arc::new(Mapping::compile(name, &config)?));
        }
        for (name, config) in custom {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    name,
                    "",
                    "a format name is letters, digits, `_` and `-`".into(),
                ));
            }
            map.insert(name.clone(), Arc::new(Mapping::compile(name, config)?));
        }
        Ok(Formats { map })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Mapping>> {
        self.map.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// `name`'s mapping, or an error that lists the known formats.
    pub fn lookup(&self, name: &str) -> Result<Arc<Mapping>, UnknownFormat> {
        self.get(name).cloned().ok_or_else(|| UnknownFormat {
            name: name.to_owned(),
            known: self.names().collect::<Vec<_>>().join(", "),
        })
    }
}

/// A format name nobody defined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown format {name:?}: use one of {known}, or define it in a [formats.{name}] config section"
)]
pub struct UnknownFormat {
    pub name: String,
    pub known: String,
}

/// CBOR in the JSON value model: integer keys become text, byte strings
/// base64, tags their content. `None` for keys that are neither.
pub fn cbor_to_json(v: ciborium::Value) -> Result<Value, String> {
    use ciborium::Value as C;
    Ok(match v {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => {
            let i = i128::from(i);
            match (i64::try_from(i), u64::try_from(i)) {
                (Ok(x), _) => x.into(),
                (_, Ok(x)) => x.into(),
                _ => serde_json::Number::from_f64(i as f64).map_or(Value::Null, Value::Number),
            }
        }
        C::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        C::Text(s) => Value::String(s),
        C::Bytes(b) => Value::String(data_encoding::BASE64.encode(&b)),
        C::Tag(_, inner) => cbor_to_json(*inner)?,
        C::Array(a) => Value::Array(a.into_iter().map(cbor_to_json).collect::<Result<_, _>>()?),
        C::Map(m) => {
            let mut out = serde_json::Map::with_capacity(m.len());
            for (k, v) in m {
                let key = match k {
                    C::Text(s) => s,
                    C::Integer(i) => i128::from(i).to_string(),
                    other => {
                        return Err(format!("a map key is {other:?}; keys are text or integers"));
                    }
                };
                if out.contains_key(&key) {
                    return Err(format!("key {key:?} is given twice"));
                }
                out.insert(key, cbor_to_json(v)?);
            }
            Value::Object(out)
        }
        _ => return Err("a CBOR value of a kind JSON does not have".into()),
    })
}
