//! The wire model borrowed from the message bytes: what [`super::Decoder`]
//! converts into points. JSON deserializes into it with serde (strings without
//! escapes are borrowed, not copied), CBOR is parsed into it by [`super::cbor`]'s
//! fast path, and the owned [`super::model::WireMessage`] (gRPC, error paths)
//! is viewed as it. Maps are kept as key-sorted vectors with unique keys (a
//! repeated key is refused, as the owned model does), which is what the
//! `BTreeMap`s of the owned model give, without an allocation per key.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::model::{WireField, WireMessage, WirePoint, WireTime, repeated_key};

/// Key-sorted `(key, value)` pairs with unique keys.
pub type Pairs<'a, V> = Vec<(Cow<'a, str>, V)>;

/// One message from a device (see [`WireMessage`] for the meaning).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsgRef<'a> {
    pub seq: Option<u64>,
    #[serde(borrow)]
    pub ts: Option<TimeRef<'a>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub measurement: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_pairs")]
    pub tags: Option<Pairs<'a, Cow<'a, str>>>,
    #[serde(borrow, default, deserialize_with = "opt_pairs")]
    pub fields: Option<Pairs<'a, FieldRef<'a>>>,
    #[serde(borrow)]
    pub points: Option<Vec<PointRef<'a>>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub cmd_result: Option<Cow<'a, str>>,
    pub ok: Option<bool>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub detail: Option<Cow<'a, str>>,
}

/// One point of a batch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointRef<'a> {
    #[serde(borrow)]
    pub ts: Option<TimeRef<'a>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub measurement: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_pairs")]
    pub tags: Option<Pairs<'a, Cow<'a, str>>>,
    #[serde(borrow, default, deserialize_with = "opt_pairs")]
    pub fields: Option<Pairs<'a, FieldRef<'a>>>,
}

/// A timestamp as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeRef<'a> {
    Millis(i128),
    FracMillis(f64),
    Rfc3339(Cow<'a, str>),
    Nanos(i128),
}

/// A field value as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldRef<'a> {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(Cow<'a, str>),
}

/// Sort by key; a key given twice is refused (returned): which value the
/// device meant is unknowable, and keeping one would drop the other silently.
pub fn normalize<'a, V>(pairs: &mut Pairs<'a, V>) -> Result<(), Cow<'a, str>> {
    if pairs.windows(2).all(|w| w[0].0 < w[1].0) {
        return Ok(()); // the usual case: already sorted, no repeats
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    match pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        Some(w) => Err(w[0].0.clone()),
        None => Ok(()),
    }
}

/// A string, borrowed when the deserializer can lend it.
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_string(V)
    }
}

fn opt_str<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<CowStr<'a>>::deserialize(d)?.map(|s| s.0))
}

/// A map deserialized into [`Pairs`].
struct PairsDe<'a, V>(Pairs<'a, V>);

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for PairsDe<'a, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<'a, V>(PhantomData<(&'a (), V)>);
        impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for Vis<'a, V> {
            type Value = PairsDe<'a, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some((k, v)) = map.next_entry::<CowStr<'a>, V>()? {
                    pairs.push((k.0, v));
                }
                normalize(&mut pairs).map_err(|k| repeated_key::<A::Error>(&k))?;
                Ok(PairsDe(pairs))
            }
        }
        d.deserialize_map(Vis(PhantomData))
    }
}

fn opt_pairs<'de: 'a, 'a, D: Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<Option<Pairs<'a, V>>, D::Error> {
    Ok(Option::<PairsDe<'a, V>>::deserialize(d)?.map(|p| p.0))
}

impl<'de: 'a, 'a> Deserialize<'de> for FieldRef<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldRef<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a boolean or a string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(FieldRef::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(FieldRef::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(FieldRef::UInt(v))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
                Ok(FieldRef::Float(v as f64))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
                Ok(FieldRef::Float(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(FieldRef::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FieldRef::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldRef::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(FieldRef::Str(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TimeRef<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TimeRef<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch milliseconds (a number) or an RFC 3339 string")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TimeRef::Millis(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(TimeRef::Millis(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(TimeRef::FracMillis(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TimeRef::Rfc3339(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TimeRef::Rfc3339(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(TimeRef::Rfc3339(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V)
    }
}

fn time_ref(t: &WireTime) -> TimeRef<'_> {
    match t {
        WireTime::Millis(v) => TimeRef::Millis(*v),
        WireTime::FracMillis(v) => TimeRef::FracMillis(*v),
        WireTime::Rfc3339(s) => TimeRef::Rfc3339(Cow::Borrowed(s)),
        WireTime::Nanos(ns) => TimeRef::Nanos(*ns),
    }
}

fn field_ref(v: &WireField) -> FieldRef<'_> {
    match v {
        WireField::Float(f) => FieldRef::Float(*f),
        WireField::Int(i) => FieldRef::Int(*i),
        WireField::UInt(u) => FieldRef::UInt(*u),
        WireField::Bool(b) => FieldRef::Bool(*b),
        WireField::Str(s) => FieldRef::Str(Cow::Borrowed(s)),
    }
}

fn borrow<'a>(s: &'a Option<String>) -> Option<Cow<'a, str>> {
    s.as_deref().map(Cow::Borrowed)
}

fn point_ref(p: &WirePoint) -> PointRef<'_> {
    PointRef {
        ts: p.ts.as_ref().map(time_ref),
        measurement: borrow(&p.measurement),
        tags: p.tags.as_ref().map(|t| {
            t.iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .collect()
        }),
        fields: p.fields.as_ref().map(|f| {
            f.iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), field_ref(v)))
                .collect()
        }),
    }
}

impl WireMessage {
    /// This message as the borrowed model (its maps are already sorted).
    pub fn as_ref(&self) -> MsgRef<'_> {
        MsgRef {
            seq: self.seq,
            ts: self.ts.as_ref().map(time_ref),
            measurement: borrow(&self.measurement),
            tags: self.tags.as_ref().map(|t| {
                t.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                    .collect()
            }),
            fields: self.fields.as_ref().map(|f| {
                f.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), field_ref(v)))
                    .collect()
            }),
            points: self
                .points
                .as_ref()
                .map(|l| l.iter().map(point_ref).collect()),
            cmd_result: borrow(&self.cmd_result),
            ok: self.ok,
            detail: borrow(&self.detail),
        }
    }
}
