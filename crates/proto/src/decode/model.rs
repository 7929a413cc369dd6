//! The wire model of a device message, shared by the JSON and CBOR decoders
//! (CBOR carries the same data model as JSON).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// One message from a device: a point, a batch of points, or a command result.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireMessage {
    pub seq: Option<u64>,
    pub ts: Option<WireTime>,
    pub measurement: Option<String>,
    #[serde(default, deserialize_with = "unique_map")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "unique_map")]
    pub fields: Option<BTreeMap<String, WireField>>,
    pub points: Option<Vec<WirePoint>>,
    pub cmd_result: Option<String>,
    pub ok: Option<bool>,
    pub detail: Option<String>,
}

/// One point of a batch. Missing `ts`, `measurement` and `tags` are taken from
/// the enclosing message.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePoint {
    pub ts: Option<WireTime>,
    pub measurement: Option<String>,
    #[serde(default, deserialize_with = "unique_map")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "unique_map")]
    pub fields: Option<BTreeMap<String, WireField>>,
}

/// A timestamp as sent: epoch milliseconds (integer or float) or RFC 3339.
#[derive(Debug, Clone, PartialEq)]
pub enum WireTime {
    Millis(i128),
    FracMillis(f64),
    Rfc3339(String),
    /// Epoch nanoseconds (formats convert their units to it).
    Nanos(i128),
}

/// A field value as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum WireField {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

impl<'de> Deserialize<'de> for WireField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WireField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a boolean or a string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<WireField, E> {
                Ok(WireField::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<WireField, E> {
                Ok(WireField::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<WireField, E> {
                Ok(WireField::UInt(v))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<WireField, E> {
                // CBOR bignums: keep them as floats rather than refusing them.
                Ok(WireField::Float(v as f64))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<WireField, E> {
                Ok(WireField::Float(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<WireField, E> {
                Ok(WireField::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<WireField, E> {
                Ok(WireField::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<WireField, E> {
                Ok(WireField::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for WireTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WireTime;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch milliseconds (a number) or an RFC 3339 string")
            }
            fn visit_i64<E>(self, v: i64) -> Result<WireTime, E> {
                Ok(WireTime::Millis(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<WireTime, E> {
                Ok(WireTime::Millis(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<WireTime, E> {
                Ok(WireTime::FracMillis(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<WireTime, E> {
                Ok(WireTime::Rfc3339(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<WireTime, E> {
                Ok(WireTime::Rfc3339(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The error for a key given twice in `tags` or `fields`.
pub fn repeated_key<E: de::Error>(key: &str) -> E {
    E::custom(format!(
        "key {key:?} is given twice; send each tag and field once"
    ))
}

/// A map whose keys must be unique (`BTreeMap` alone keeps the last value).
fn unique_map<'de, D, V>(d: D) -> Result<Option<BTreeMap<String, V>>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(BTreeMap<String, V>);
    impl<'de, V: Deserialize<'de>> Deserialize<'de> for Unique<V> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Vis<V>(std::marker::PhantomData<V>);
            impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
                type Value = Unique<V>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out = BTreeMap::new();
                    while let Some((k, v)) = map.next_entry::<String, V>()? {
                        if out.contains_key(&k) {
                            return Err(repeated_key(&k));
                        }
                        out.insert(k, v);
                    }
                    Ok(Unique(out))
                }
            }
            d.deserialize_map(Vis(std::marker::PhantomData))
        }
    }
    Ok(Option::<Unique<V>>::deserialize(d)?.map(|u| u.0))
}

/// Fallback parse to find the `seq` of a message that failed to decode, so
/// its nack can name it.
#[derive(Debug, Deserialize)]
pub struct SeqOnly {
    pub seq: Option<u64>,
}
