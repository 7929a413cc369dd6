//! A vehicle moving along a route of waypoints at a random-walk speed, for
//! `path` fields.

use rand::Rng;

use super::kinds::{draw, gaussian};
use crate::simulate::profile::PathSpec;

const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// A vehicle moving along a route at a random-walk speed.
#[derive(Debug, Clone)]
pub(super) struct PathState {
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
    pub(super) speed: f64,
    speed_min: f64,
    speed_max: f64,
    speed_step: f64,
}

impl PathState {
    pub(super) fn new(spec: &PathSpec, rng: &mut impl Rng) -> PathState {
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

    pub(super) fn advance(&mut self, dt: f64, rng: &mut impl Rng) {
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
    pub(super) fn leg(&self) -> (usize, f64) {
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

    pub(super) fn ends(&self, leg: usize) -> ((f64, f64), (f64, f64)) {
        let a = self.points[leg];
        let b = self.points[(leg + 1) % self.points.len()];
        (a, b)
    }

    pub(super) fn position(&self) -> (f64, f64) {
        let (i, f) = self.leg();
        let (a, b) = self.ends(i);
        (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f)
    }

    /// Compass heading in degrees, `[0, 360)`.
    pub(super) fn heading(&self) -> f64 {
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
