//! Field generators: how each field of a simulated device evolves over time.
//!
//! Sans-IO and deterministic: a [`DeviceModel`] is built from a profile and a
//! seeded RNG, and [`DeviceModel::sample`] produces the values at a given
//! timestamp. Time-based kinds (random walk, sine, counter, path) depend on
//! the time between samples, not on how often they are asked, so a device
//! sending every 10 ms and one sending every minute drift alike.

use std::f64::consts::TAU;
use std::sync::Arc;

use rand::Rng;
use serde::Serialize;

use super::profile::{FieldSpec, OnLimit, PathSpec, PathValue, Profile, Range, Scalar, Spike};

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

/// How a number is written: rounded to `decimals`, or as an integer.
#[derive(Debug, Clone, Copy)]
struct NumFormat {
    decimals: Option<u32>,
    integer: bool,
}

impl NumFormat {
    fn value(self, v: f64, min: f64, max: f64) -> Value {
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
enum Gen {
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
enum CounterRate {
    PerSecond(f64),
    /// Index of the integrated field, and the factor.
    Integral(usize, f64),
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

/// Advance one generator; returns its raw numeric value (0 for non-numbers)
/// and the value to send.
fn step(
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
fn pick(cumulative: &[f64], rng: &mut impl Rng) -> usize {
    let total = *cumulative.last().expect("enum has values");
    let x = rng.random::<f64>() * total;
    cumulative
        .iter()
        .position(|&c| x < c)
        .unwrap_or(cumulative.len() - 1)
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// A vehicle moving along a route at a random-walk speed.
#[derive(Debug, Clone)]
struct PathState {
    points: Vec<(f64, f64)>,
    /// Distance from the start to each point; one more than `points` on a
    /// closed route (the way back to the first point).
    cumulative: Vec<f64>,
    total: f64,
    closed: bool,
    /// Distance travelled along the route, in `[0, total]`.
    at: f64,
    /// +1 forwards, -1 backwards (open routes turn around at their ends).
    direction: f64,
    speed: f64,
    speed_min: f64,
    speed_max: f64,
    speed_step: f64,
}

impl PathState {
    fn new(spec: &PathSpec, rng: &mut impl Rng) -> PathState {
        let points: Vec<(f64, f64)> = spec.waypoints.iter().map(|[a, b]| (*a, *b)).collect();
        let mut cumulative = vec![0.0];
        let mut legs: Vec<((f64, f64), (f64, f64))> =
            points.windows(2).map(|w| (w[0], w[1])).collect();
        if spec.closed {
            legs.push((points[points.len() - 1], points[0]));
        }
        for (a, b) in legs {
            let d = cumulative.last().unwrap() + distance_m(a, b);
            cumulative.push(d);
        }
        let total = *cumulative.last().unwrap();
        let (speed_min, speed_max) = spec.speed_kmh.bounds();
        PathState {
            points,
            cumulative,
            total,
            closed: spec.closed,
            at: total * rng.random::<f64>(),
            direction: 1.0,
            speed: draw(spec.speed_kmh, rng),
            speed_min,
            speed_max,
            speed_step: spec.speed_step,
        }
    }

    fn advance(&mut self, dt: f64, rng: &mut impl Rng) {
        let s = self.speed + gaussian(rng) * self.speed_step * dt.sqrt();
        self.speed = s.clamp(self.speed_min, self.speed_max);
        if self.total <= 0.0 {
            return;
        }
        let mut at = self.at + self.direction * self.speed / 3.6 * dt;
        if self.closed {
            at = at.rem_euclid(self.total);
        } else {
            // Bounce between the ends; a long dt may bounce more than once.
            let period = 2.0 * self.total;
            let m = at.rem_euclid(period);
            let forwards = m <= self.total;
            at = if forwards { m } else { period - m };
            let moving_forwards =
                (self.direction > 0.0) == forwards || at == 0.0 || at == self.total;
            if !moving_forwards {
                self.direction = -self.direction;
            }
        }
        self.at = at.clamp(0.0, self.total);
    }

    /// The leg we are on and how far along it (0..1).
    fn leg(&self) -> (usize, f64) {
        let i = match self.cumulative.iter().position(|&c| c > self.at) {
            Some(0) | None => self.cumulative.len() - 2,
            Some(i) => i - 1,
        };
        let len = self.cumulative[i + 1] - self.cumulative[i];
        let f = if len > 0.0 {
            ((self.at - self.cumulative[i]) / len).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (i, f)
    }

    fn ends(&self, leg: usize) -> ((f64, f64), (f64, f64)) {
        let a = self.points[leg];
        let b = self.points[(leg + 1) % self.points.len()];
        (a, b)
    }

    fn position(&self) -> (f64, f64) {
        let (i, f) = self.leg();
        let (a, b) = self.ends(i);
        (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f)
    }

    /// Compass heading in degrees, `[0, 360)`.
    fn heading(&self) -> f64 {
        let (i, _) = self.leg();
        let (a, b) = self.ends(i);
        let (a, b) = if self.direction > 0.0 { (a, b) } else { (b, a) };
        let dy = b.0 - a.0;
        let dx = (b.1 - a.1) * ((a.0 + b.0) / 2.0).to_radians().cos();
        let h = dx.atan2(dy).to_degrees().rem_euclid(360.0);
        if h >= 360.0 { 0.0 } else { h }
    }
}

/// Equirectangular distance: plenty for routes of a few kilometres.
fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let lat = ((a.0 + b.0) / 2.0).to_radians();
    let dy = (b.0 - a.0).to_radians();
    let dx = (b.1 - a.1).to_radians() * lat.cos();
    (dx * dx + dy * dy).sqrt() * EARTH_RADIUS_M
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn profile(text: &str) -> Profile {
        Profile::parse(text, Path::new("t.toml")).unwrap()
    }

    /// What a shipped profile declares about each field, checked against
    /// what its generators produce.
    fn check_declared(
        p: &Profile,
        values: &[Value],
        previous: Option<&[Value]>,
    ) -> Result<(), String> {
        for (i, (name, spec)) in p.fields.iter().enumerate() {
            let v = &values[i];
            let num = v.as_f64();
            let bad = |what: &str| Err(format!("{}: field {name} = {v:?} {what}", p.name));
            match spec.get_ref() {
                FieldSpec::Constant { value } if Value::from(value) != *v => {
                    return bad("is not the constant");
                }
                FieldSpec::RandomWalk {
                    min, max, integer, ..
                }
                | FieldSpec::Sine {
                    min, max, integer, ..
                } => {
                    let x = num.unwrap();
                    if !(x >= *min && x <= *max) {
                        return bad("is outside [min, max]");
                    }
                    if *integer != matches!(v, Value::Int(_)) {
                        return bad("has the wrong type");
                    }
                }
                FieldSpec::Counter {
                    min,
                    max,
                    per_second,
                    of,
                    ..
                } => {
                    let x = num.unwrap();
                    if x < min.unwrap_or(f64::MIN) || x > max.unwrap_or(f64::MAX) {
                        return bad("is outside [min, max]");
                    }
                    // A counter that only grows (energy) never goes back.
                    let grows = match (per_second, of) {
                        (Some(r), _) => r.bounds().0 >= 0.0 && max.is_none(),
                        (None, Some(_)) => max.is_none(),
                        _ => false,
                    };
                    if grows
                        && let Some(prev) = previous
                        && x < prev[i].as_f64().unwrap()
                    {
                        return bad("went backwards");
                    }
                }
                FieldSpec::Enum {
                    values: allowed, ..
                } if !allowed.iter().any(|a| Value::from(a) == *v) => {
                    return bad("is not one of the values");
                }
                FieldSpec::Path { of, .. } => {
                    let path = p.path.as_ref().unwrap();
                    let x = num.unwrap();
                    let (lats, lons): (Vec<f64>, Vec<f64>) =
                        path.waypoints.iter().map(|[a, b]| (*a, *b)).unzip();
                    let within = |xs: &[f64]| {
                        let lo = xs.iter().cloned().fold(f64::MAX, f64::min) - 1e-6;
                        let hi = xs.iter().cloned().fold(f64::MIN, f64::max) + 1e-6;
                        x >= lo && x <= hi
                    };
                    let ok = match of {
                        PathValue::Lat => within(&lats),
                        PathValue::Lon => within(&lons),
                        PathValue::Speed => {
                            let (lo, hi) = path.speed_kmh.bounds();
                            x >= lo && x <= hi
                        }
                        PathValue::Heading => (0.0..360.0).contains(&x),
                    };
                    if !ok {
                        return bad("is off the path's range");
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn shipped() -> Vec<Profile> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices");
        super::super::profile::list(&dir)
            .unwrap()
            .iter()
            .map(|p| Profile::load(p).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    #[test]
    fn every_shipped_profile_parses() {
        let names: Vec<String> = shipped().into_iter().map(|p| p.name).collect();
        for want in [
            "weather_station",
            "smart_meter",
            "gps_tracker",
            "vibration_sensor",
            "battery_sensor",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "devices/{want}.toml is missing: {names:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Each shipped profile produces values within its declared ranges,
        /// whatever the seed and the spacing of samples.
        #[test]
        fn shipped_profiles_stay_in_their_ranges(
            seed in any::<u64>(),
            start in 1_600_000_000_000i64..1_900_000_000_000,
            steps in proptest::collection::vec(0i64..120_000, 1..200),
        ) {
            for p in shipped() {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut model = DeviceModel::new(&p, &mut rng);
                let mut t = start;
                let mut previous: Option<Vec<Value>> = None;
                for dt in &steps {
                    t += dt;
                    let values = model.sample(t, &mut rng).to_vec();
                    prop_assert_eq!(values.len(), p.fields.len());
                    if let Err(e) = check_declared(&p, &values, previous.as_deref()) {
                        return Err(TestCaseError::fail(e));
                    }
                    previous = Some(values);
                }
            }
        }
    }

    #[test]
    fn same_seed_same_values() {
        for p in shipped() {
            let run = |seed| {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut m = DeviceModel::new(&p, &mut rng);
                (0..50)
                    .map(|i| m.sample(1_700_000_000_000 + i * 1000, &mut rng).to_vec())
                    .collect::<Vec<_>>()
            };
            assert_eq!(run(7), run(7), "{}", p.name);
            assert_ne!(run(7), run(8), "{}", p.name);
        }
    }

    #[test]
    fn sine_peaks_where_declared() {
        let p = profile(
            "measurement = \"m\"\ninterval_s = 1\n[fields.t]\nkind = \"sine\"\nmin = 10\nmax = 20\nperiod_s = 86400\npeak_at_s = 54000\n",
        );
        let mut rng = StdRng::seed_from_u64(1);
        let mut m = DeviceModel::new(&p, &mut rng);
        let day = 1_700_006_400_000i64; // a UTC midnight
        assert_eq!(m.sample(day + 54_000_000, &mut rng)[0], Value::Float(20.0));
        assert_eq!(
            m.sample(day + 54_000_000 + 43_200_000, &mut rng)[0],
            Value::Float(10.0)
        );
    }

    #[test]
    fn energy_counter_integrates_power() {
        let p = profile(
            "measurement = \"m\"\ninterval_s = 1\n\
             [fields.p]\nkind = \"random_walk\"\nmin = 3600\nmax = 3600\nstep = 0\n\
             [fields.e]\nkind = \"counter\"\nof = \"p\"\nscale = 0.000277777777777778\n",
        );
        let mut rng = StdRng::seed_from_u64(1);
        let mut m = DeviceModel::new(&p, &mut rng);
        m.sample(0, &mut rng);
        // 3600 W for 10 s is 10 Wh.
        let e = m.sample(10_000, &mut rng)[0].as_f64().unwrap();
        assert!((e - 10.0).abs() < 1e-9, "{e}");
    }

    #[test]
    fn battery_resets_when_drained() {
        let p = profile(
            "measurement = \"m\"\ninterval_s = 1\n\
             [fields.b]\nkind = \"counter\"\nstart = 100\nper_second = -1\nmin = 0\nmax = 100\non_limit = \"reset\"\n",
        );
        let mut rng = StdRng::seed_from_u64(1);
        let mut m = DeviceModel::new(&p, &mut rng);
        m.sample(0, &mut rng);
        assert_eq!(m.sample(60_000, &mut rng)[0], Value::Float(40.0));
        assert_eq!(m.sample(120_000, &mut rng)[0], Value::Float(100.0));
    }

    #[test]
    fn a_vehicle_moves_along_its_route() {
        let p = profile(
            "measurement = \"m\"\ninterval_s = 1\n\
             [path]\nwaypoints = [[0.0, 0.0], [0.0, 0.01]]\nspeed_kmh = 36\nloop = false\n\
             [fields.lat]\nkind = \"path\"\nof = \"lat\"\n\
             [fields.lon]\nkind = \"path\"\nof = \"lon\"\n\
             [fields.h]\nkind = \"path\"\nof = \"heading\"\n",
        );
        let mut rng = StdRng::seed_from_u64(3);
        let mut m = DeviceModel::new(&p, &mut rng);
        // Fields are sorted: h, lat, lon.
        let first = m.sample(0, &mut rng).to_vec();
        let next = m.sample(1_000, &mut rng).to_vec();
        let moved = (next[2].as_f64().unwrap() - first[2].as_f64().unwrap()).abs();
        // 36 km/h = 10 m/s; 0.01° of longitude at the equator is ~1112 m.
        assert!(
            (moved - 10.0 / 111_195.0).abs() < 1e-6,
            "moved {moved}° instead of 10 m"
        );
        let h = next[0].as_f64().unwrap();
        assert!(h == 90.0 || h == 270.0, "east or west: {h}");
        assert_eq!(next[1], Value::Float(0.0));
    }
}
