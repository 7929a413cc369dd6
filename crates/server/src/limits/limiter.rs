//! Checking one message against its device's limits, whichever way it came
//! in: a WebSocket session (inside its [`super::SessionGuard`]), a gRPC
//! stream, or an HTTP fallback request. Every [`DeviceLimiter`] of a device
//! spends the same buckets and feeds the same cardinality guard, so a device
//! cannot escape its rate by switching transport or opening more streams.
//!
//! What stays per limiter is the count of recent `rate_limited` refusals
//! that decides when abuse is persistent: a session or stream is closed for
//! its own abuse. An HTTP request's limiter lives for one message, so it
//! never closes anything; the request is refused with 429 instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Limits, Rates, Refusal};
use wsingest_proto::point::Point;

/// One device's handle on its limits (see the module docs).
pub struct DeviceLimiter {
    pub(super) limits: Arc<Limits>,
    pub(super) device: String,
    pub(super) rates: Rates,
    allowed_measurements: Option<Vec<String>>,
    new_series_per_minute: u32,
    /// Start of the current minute and `rate_limited` refusals within it.
    refused_window: (Instant, u32),
}

impl DeviceLimiter {
    pub(super) fn new(
        limits: Arc<Limits>,
        device: String,
        rates: Rates,
        allowed_measurements: Option<Vec<String>>,
        new_series_per_minute: u32,
        now: Instant,
    ) -> DeviceLimiter {
        DeviceLimiter {
            limits,
            device,
            rates,
            allowed_measurements,
            new_series_per_minute,
            refused_window: (now, 0),
        }
    }

    /// Check one decoded message against the device's limits; on success
    /// its rate tokens are spent and its series recorded. A refusal is
    /// counted in the security metrics; the caller sends the nack.
    pub fn check(&mut self, points: &[Point]) -> Result<(), Refusal> {
        let m = &self.limits.metrics;
        if let Some(allowed) = &self.allowed_measurements
            && let Some(p) = points.iter().find(|p| !allowed.contains(&p.measurement))
        {
            m.measurement_refused.inc();
            return Err(Refusal {
                error: "forbidden_measurement",
                detail: format!(
                    "measurement {:?} is not allowed for this device",
                    p.measurement
                ),
                close: None,
                retry_after: Duration::ZERO,
            });
        }
        let now = Instant::now();
        let mut devices = self.limits.devices.lock().expect("limits lock");
        let state = self
            .limits
            .state_mut(&mut devices, &self.device, self.rates, now);
        if state.sessions.is_empty() {
            // Used without a session (gRPC, HTTP): forget it two minutes
            // after its last message, not after its first.
            state.idle_since = Some(now);
        }
        let n = points.len() as f64;
        // Both refilled, so that `wait` below is exact.
        let messages_ok = state.messages.can_take(1.0, now);
        let points_ok = state.points.can_take(n, now);
        if !(messages_ok && points_ok) {
            let retry_after = state.messages.wait(1.0).max(state.points.wait(n));
            drop(devices);
            m.messages_rate_limited.inc();
            m.points_rate_limited.inc_by(points.len() as u64);
            let (start, count) = &mut self.refused_window;
            if now.saturating_duration_since(*start) >= Duration::from_secs(60) {
                *start = now;
                *count = 0;
            }
            *count += 1;
            let limit = self.limits.config.rate_limit_close_after;
            let close = (limit > 0 && *count > limit).then(|| {
                m.rate_limit_closes.inc();
                format!(
                    "rate limit exceeded persistently ({count} messages refused within a minute)"
                )
            });
            return Err(Refusal {
                error: "rate_limited",
                detail: "over this device's message or point rate; slow down and resend".into(),
                close,
                retry_after,
            });
        }
        if let Err(fresh) = state.series.admit(points, self.new_series_per_minute, now) {
            let retry_after = state.series.resets_in(now);
            drop(devices);
            m.series_refused.inc();
            return Err(Refusal {
                error: "too_many_series",
                detail: format!(
                    "this message adds {fresh} new series (measurement + tags); this device may add {} per minute",
                    self.new_series_per_minute
                ),
                close: None,
                retry_after,
            });
        }
        state.messages.take(1.0);
        state.points.take(n);
        Ok(())
    }
}
