//! Field generators: shipped profiles, determinism, each kind.

use std::path::Path;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::simulate::profile::PathValue;

fn profile(text: &str) -> Profile {
    Profile::parse(text, Path::new("t.toml")).unwrap()
}

/// What a shipped profile declares about each field, checked against
/// what its generators produce.
fn check_declared(p: &Profile, values: &[Value], previous: Option<&[Value]>) -> Result<(), String> {
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
