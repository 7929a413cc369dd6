//! Field generators: how each field of a simulated device evolves over time.
//!
//! Sans-IO and deterministic: a [`DeviceModel`] is built from a profile and a
//! seeded RNG, and [`DeviceModel::sample`] produces the values at a given
//! timestamp. Time-based kinds (random walk, sine, counter, path) depend on
//! the time between samples, not on how often they are asked, so a device
//! sending every 10 ms and one sending every minute drift alike.
//!
//! Layout: this file has the values and the [`DeviceModel`]; `kinds` the
//! generators of each field kind and how one advances; `path` a vehicle
//! moving along its route.

use std::sync::Arc;

use rand::Rng;
use serde::Serialize;

use super::profile::{FieldSpec, Profile, Range, Scalar};

mod kinds;
mod path;

pub use kinds::draw;
use kinds::{CounterRate, Gen, NumFormat, pick, step};
use path::PathState;

/// One field value as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(Arc<str>),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl From<&Scalar> for Value {
    fn from(s: &Scalar) -> Self {
        match s {
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::Int(*i),
            Scalar::Float(f) => Value::Float(*f),
            Scalar::Str(s) => Value::Str(s.as_str().into()),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Float(f) => s.serialize_f64(*f),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Str(v) => s.serialize_str(v),
        }
    }
}

/// The evolving state of one device's fields.
#[derive(Debug, Clone)]
pub struct DeviceModel {
    gens: Vec<Gen>,
    path: Option<PathState>,
    last_ms: Option<i64>,
    /// The unformatted numeric value of each field at the last sample, for
    /// counters that integrate another field.
    raw: Vec<f64>,
    values: Vec<Value>,
}

impl DeviceModel {
    /// A device of `profile` with its own starting values drawn from `rng`.
    pub fn new(profile: &Profile, rng: &mut impl Rng) -> DeviceModel {
        let names: Vec<&str> = profile.field_names().collect();
        let gens: Vec<Gen> = profile
            .fields
            .values()
            .map(|spec| match spec.get_ref() {
                FieldSpec::Constant { value } => Gen::Constant(value.into()),
                FieldSpec::RandomWalk {
                    min,
                    max,
                    start,
                    step,
                    decimals,
                    integer,
                    spike,
                } => Gen::Walk {
                    min: *min,
                    max: *max,
                    step: *step,
                    value: draw(start.unwrap_or(Range::Two([*min, *max])), rng),
                    spike: *spike,
                    fmt: NumFormat {
                        decimals: *decimals,
                        integer: *integer,
                    },
                },
                FieldSpec::Sine {
                    min,
                    max,
                    period_s,
                    peak_at_s,
                    noise,
                    decimals,
                    integer,
                    spike,
                } => Gen::Sine {
                    min: *min,
                    max: *max,
                    period_s: *period_s,
                    peak_at_s: *peak_at_s,
                    noise: *noise,
                    spike: *spike,
                    fmt: NumFormat {
                        decimals: *decimals,
                        integer: *integer,
                    },
                },
                FieldSpec::Counter {
                    start,
                    per_second,
                    of,
                    scale,
                    min,
                    max,
                    on_limit,
                    decimals,
                    integer,
                } => {
                    let start = draw(*start, rng);
                    let rate = match (per_second, of) {
                        (Some(r), _) => CounterRate::PerSecond(draw(*r, rng)),
                        (None, Some(of)) => CounterRate::Integral(
                            names
                                .iter()
                                .position(|n| n == of)
                                .expect("checked by Profile::parse"),
                            *scale,
                        ),
                        (None, None) => CounterRate::PerSecond(0.0),
                    };
                    Gen::Counter {
                        value: start,
                        start,
                        rate,
                        min: min.unwrap_or(f64::MIN),
                        max: max.unwrap_or(f64::MAX),
                        on_limit: *on_limit,
                        fmt: NumFormat {
                            decimals: *decimals,
                            integer: *integer,
                        },
                    }
                }
                FieldSpec::Enum {
                    values,
                    weights,
                    change_probability,
                } => {
                    let mut total = 0.0;
                    let cumulative: Vec<f64> = (0..values.len())
                        .map(|i| {
                            total += weights.as_ref().map_or(1.0, |w| w[i]);
                            total
                        })
                        .collect();
                    let mut g = Gen::Enum {
                        values: values.iter().map(Value::from).collect(),
                        cumulative,
                        change_probability: *change_probability,
                        current: 0,
                    };
                    if let Gen::Enum {
                        cumulative,
                        current,
                        ..
                    } = &mut g
                    {
                        *current = pick(cumulative, rng);
                    }
                    g
                }
                FieldSpec::Path { of, decimals } => Gen::Path {
                    of: *of,
                    decimals: *decimals,
                },
            })
            .collect();
        let n = gens.len();
        DeviceModel {
            gens,
            path: profile.path.as_ref().map(|p| PathState::new(p, rng)),
            last_ms: None,
            raw: vec![0.0; n],
            values: Vec::with_capacity(n),
        }
    }

    /// The values at `t_ms` (epoch milliseconds), in the profile's field
    /// order. Times should not go backwards; if they do, no time passes.
    pub fn sample(&mut self, t_ms: i64, rng: &mut impl Rng) -> &[Value] {
        let dt = self
            .last_ms
            .map_or(0.0, |last| (t_ms - last).max(0) as f64 / 1000.0);
        self.last_ms = Some(t_ms);
        if let Some(p) = &mut self.path {
            p.advance(dt, rng);
        }
        self.values.clear();
        // Counters that integrate another field go second, once it has its
        // new value.
        let mut out: Vec<Option<Value>> = vec![None; self.gens.len()];
        for pass in 0..2 {
            for (i, g) in self.gens.iter_mut().enumerate() {
                let integral = matches!(
                    g,
                    Gen::Counter {
                        rate: CounterRate::Integral(..),
                        ..
                    }
                );
                if integral != (pass == 1) {
                    continue;
                }
                let (raw, v) = step(g, t_ms, dt, self.path.as_ref(), &self.raw, rng);
                self.raw[i] = raw;
                out[i] = Some(v);
            }
        }
        self.values.extend(
            out.into_iter()
                .map(|v| v.expect("every field produced a value")),
        );
        &self.values
    }
}

#[cfg(test)]
mod tests;
