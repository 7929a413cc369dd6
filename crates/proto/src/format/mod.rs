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

mod apply;
mod compile;
mod config;
pub mod path;
pub mod presets;
#[cfg(test)]
mod tests;

pub use config::*;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::FixedOffset;
use serde_json::Value;

use crate::decode::model::WireField;
use path::Path;

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
    /// Shared: the server labels a metric with it per message.
    name: std::sync::Arc<str>,
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
