//! Fault injection, sans-IO: which messages to spoil and when to drop the
//! connection. Every decision is drawn from the device's own seeded RNG, so a
//! run with the same seed injects the same faults.

use rand::Rng;
use serde::Serialize;

use super::message::Fault;

/// The faults a fleet injects (all off by default).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Faults {
    /// Drop the connection (no close handshake) right after every N-th new
    /// telemetry message of a device.
    pub drop_every: Option<u64>,
    /// Chance per new telemetry message of dropping the connection after it.
    pub drop_probability: f64,
    /// Chance per telemetry message of sending a garbage message before it.
    pub garbage: f64,
    /// Same, for a message with a string field over the server's limit.
    pub oversize: f64,
    /// Same, for a message with a NaN field.
    pub nan: f64,
    /// Each device's clock is off by a random amount within ± this.
    pub clock_skew_ms: u64,
    /// Send this many messages back to back per tick (same average rate).
    pub burst: u32,
}

impl Faults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("--fault-drop-probability", self.drop_probability),
            ("--fault-garbage", self.garbage),
            ("--fault-oversize", self.oversize),
            ("--fault-nan", self.nan),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} is a probability: between 0 and 1, not {p}"));
            }
        }
        if self.drop_every == Some(0) {
            return Err("--fault-drop-every must be at least 1".into());
        }
        Ok(())
    }

    /// The faulty messages to send before the next telemetry message.
    pub fn spoil(&self, rng: &mut impl Rng) -> Vec<Fault> {
        let mut out = Vec::new();
        for (fault, p) in [
            (Fault::Garbage, self.garbage),
            (Fault::Oversize, self.oversize),
            (Fault::Nan, self.nan),
        ] {
            if p > 0.0 && rng.random::<f64>() < p {
                out.push(fault);
            }
        }
        out
    }

    /// Drop the connection after the `nth` new telemetry message (1-based,
    /// counted over the device's life)?
    pub fn drop_after(&self, nth: u64, rng: &mut impl Rng) -> bool {
        let every = self.drop_every.is_some_and(|n| nth.is_multiple_of(n));
        let random = self.drop_probability > 0.0 && rng.random::<f64>() < self.drop_probability;
        every || random
    }

    /// A device's clock skew in milliseconds.
    pub fn skew_ms(&self, rng: &mut impl Rng) -> i64 {
        let s = self.clock_skew_ms.min(i64::MAX as u64 / 2) as i64;
        if s == 0 { 0 } else { rng.random_range(-s..=s) }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn drop_every_n() {
        let f = Faults {
            drop_every: Some(3),
            ..Faults::default()
        };
        let mut rng = StdRng::seed_from_u64(0);
        let drops: Vec<u64> = (1..=10).filter(|&n| f.drop_after(n, &mut rng)).collect();
        assert_eq!(drops, vec![3, 6, 9]);
    }

    #[test]
    fn shares_are_roughly_honoured() {
        let f = Faults {
            garbage: 0.1,
            nan: 0.05,
            ..Faults::default()
        };
        let mut rng = StdRng::seed_from_u64(9);
        let all: Vec<Fault> = (0..20_000).flat_map(|_| f.spoil(&mut rng)).collect();
        let g = all.iter().filter(|f| **f == Fault::Garbage).count();
        let n = all.iter().filter(|f| **f == Fault::Nan).count();
        assert!((1800..2200).contains(&g), "{g}");
        assert!((800..1200).contains(&n), "{n}");
        assert!(!all.contains(&Fault::Oversize));
    }

    #[test]
    fn validation() {
        assert!(
            Faults {
                garbage: 1.5,
                ..Faults::default()
            }
            .validate()
            .unwrap_err()
            .contains("--fault-garbage")
        );
        assert!(
            Faults {
                drop_every: Some(0),
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
        assert!(Faults::default().validate().is_ok());
    }
}
