//! The generators of each field kind (random walk, sine, counter, enum,
//! path) and how one advances between two samples.

use std::f64::consts::TAU;

use rand::Rng;

use super::Value;
use super::path::PathState;
use crate::simulate::profile::{OnLimit, PathValue, Range, Spike};

/// How a number is written: rounded to `decimals`, or as an integer.
#[derive(Debug, Clone, Copy)]
pub(super) struct NumFormat {
    pub(super) decimals: Option<u32>,
    pub(super) integer: bool,
}

impl NumFormat {
    pub(super) fn value(self, v: f64, min: f64, max: f64) -> Value {
        let v = match self.decimals {
            Some(d) => {
                let k = 10f64.powi(d as i32);
                (v * k).round() / k
            }
            None => v,
        };
        let v = v.clamp(min, max);
        if self.integer {
            Value::Int(v.round() as i64)
        } else {
            Value::Float(v)
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Gen {
    Constant(Value),
    Walk {
        min: f64,
        max: f64,
        step: f64,
        value: f64,
        spike: Option<Spike>,
        fmt: NumFormat,
    },
    Sine {
        min: f64,
        max: f64,
        period_s: f64,
        peak_at_s: f64,
        noise: f64,
        spike: Option<Spike>,
        fmt: NumFormat,
    },
    Counter {
        value: f64,
        start: f64,
        /// Per second (this device's rate, drawn once), or by integration.
        rate: CounterRate,
        min: f64,
        max: f64,
        on_limit: OnLimit,
        fmt: NumFormat,
    },
    Enum {
        values: Vec<Value>,
        /// Cumulative weights, last = total.
        cumulative: Vec<f64>,
        change_probability: f64,
        current: usize,
    },
    Path {
        of: PathValue,
        decimals: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy)]
pub(super) enum CounterRate {
    PerSecond(f64),
    /// Index of the integrated field, and the factor.
    Integral(usize, f64),
}

/// Advance one generator; returns its raw numeric value (0 for non-numbers)
/// and the value to send.
pub(super) fn step(
    g: &mut Gen,
    t_ms: i64,
    dt: f64,
    path: Option<&PathState>,
    raw: &[f64],
    rng: &mut impl Rng,
) -> (f64, Value) {
    match g {
        Gen::Constant(v) => (v.as_f64().unwrap_or(0.0), v.clone()),
        Gen::Walk {
            min,
            max,
            step,
            value,
            spike,
            fmt,
        } => {
            let mut v = *value + gaussian(rng) * *step * dt.sqrt();
            // Reflect at the bounds so values do not pile up on them.
            if v > *max {
                v = 2.0 * *max - v;
            }
            if v < *min {
                v = 2.0 * *min - v;
            }
            *value = v.clamp(*min, *max);
            let out = with_spike(*value, *spike, rng);
            (out, fmt.value(out, *min, *max))
        }
        Gen::Sine {
            min,
            max,
            period_s,
            peak_at_s,
            noise,
            spike,
            fmt,
        } => {
            let t = t_ms as f64 / 1000.0 - *peak_at_s;
            let phase = t.rem_euclid(*period_s) / *period_s;
            let mid = (*min + *max) / 2.0;
            let amp = (*max - *min) / 2.0;
            let v = mid + amp * (TAU * phase).cos() + *noise * gaussian(rng);
            let v = with_spike(v.clamp(*min, *max), *spike, rng);
            (v, fmt.value(v, *min, *max))
        }
        Gen::Counter {
            value,
            start,
            rate,
            min,
            max,
            on_limit,
            fmt,
        } => {
            let delta = match rate {
                CounterRate::PerSecond(r) => *r * dt,
                CounterRate::Integral(of, scale) => raw[*of] * *scale * dt,
            };
            let mut v = *value + delta;
            if v > *max || v < *min {
                v = match on_limit {
                    OnLimit::Clamp => v.clamp(*min, *max),
                    OnLimit::Reset => *start,
                    OnLimit::Wrap if v > *max => *min + (v - *max),
                    OnLimit::Wrap => *max - (*min - v),
                }
                .clamp(*min, *max);
            }
            *value = v;
            (v, fmt.value(v, *min, *max))
        }
        Gen::Enum {
            values,
            cumulative,
            change_probability,
            current,
        } => {
            if rng.random::<f64>() < *change_probability {
                *current = pick(cumulative, rng);
            }
            (0.0, values[*current].clone())
        }
        Gen::Path { of, decimals } => {
            let p = path.expect("checked by Profile::parse");
            let v = match of {
                PathValue::Lat => p.position().0,
                PathValue::Lon => p.position().1,
                PathValue::Speed => p.speed,
                PathValue::Heading => p.heading(),
            };
            let fmt = NumFormat {
                decimals: *decimals,
                integer: false,
            };
            (v, fmt.value(v, f64::MIN, f64::MAX))
        }
    }
}

fn with_spike(v: f64, spike: Option<Spike>, rng: &mut impl Rng) -> f64 {
    match spike {
        Some(s) if rng.random::<f64>() < s.probability => v + draw(s.add, rng),
        _ => v,
    }
}

/// A value drawn uniformly from a range (or the number itself).
pub fn draw(r: Range, rng: &mut impl Rng) -> f64 {
    let (lo, hi) = r.bounds();
    if hi > lo {
        lo + (hi - lo) * rng.random::<f64>()
    } else {
        lo
    }
}

/// Index drawn by cumulative weights.
pub(super) fn pick(cumulative: &[f64], rng: &mut impl Rng) -> usize {
    let total = *cumulative.last().expect("enum has values");
    let x = rng.random::<f64>() * total;
    cumulative
        .iter()
        .position(|&c| x < c)
        .unwrap_or(cumulative.len() - 1)
}

/// A standard normal sample (Box-Muller).
pub(super) fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}
