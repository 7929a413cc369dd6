//! The `[formats.NAME]` config model and the error of a format that cannot
//! be compiled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::path::PathError;

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
    pub(super) fn list(&self) -> Vec<&str> {
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
