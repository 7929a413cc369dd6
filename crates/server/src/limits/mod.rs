//! Per-device limits: concurrent sessions per device (replace or refuse),
//! message and point rate (token buckets), allowed measurements, new series
//! per minute; plus closing sessions whose token was revoked. Every refusal
//! is counted in [`metrics::Metrics`].
//!
//! State is per device and shared by every way the device sends: its
//! WebSocket sessions, its gRPC streams and its HTTP fallback requests all
//! check their messages through a [`DeviceLimiter`] on the same buckets, so
//! opening more sockets or switching transport buys no extra rate. A state
//! is dropped a couple of minutes after the device's last session ends or
//! its last message arrives, so memory follows the live fleet; past
//! [`EVICT_AT`] states, those of devices without a session go at once.
//!
//! Outcomes a device sees:
//! - too many sessions: the oldest is closed with 1008 (`replace`, default) or
//!   the handshake gets 409 (`refuse`);
//! - over its rate: nack `rate_limited`; refused more than
//!   `rate_limit_close_after` times in a minute: close 1008 (a gRPC stream
//!   ends with `RESOURCE_EXHAUSTED`; an HTTP request is answered 429 with
//!   `Retry-After` every time, there being no session to close);
//! - a measurement outside its allow-list: nack `forbidden_measurement`;
//! - too many new series this minute: nack `too_many_series`;
//! - token revoked or rotated: close 1008.

mod limiter;
pub mod metrics;
pub mod rate;
pub mod series;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::auth::{Identity, TokenHash};
use metrics::Metrics;
use rate::TokenBucket;
use series::SeriesGuard;
use wsingest_proto::point::Point;

pub use limiter::DeviceLimiter;

/// What to do when a device opens more sessions than it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionPolicy {
    /// Close the oldest session (1008) and admit the new one: a device whose
    /// old connection died silently (NAT timeout) gets back in at once.
    #[default]
    Replace,
    /// Refuse the new handshake with 409.
    Refuse,
}

/// `[limits]`: per-device limits (0 disables a rate or series limit). Device
/// registry entries and `[auth.profiles.*]` override them per device.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_sessions_per_device: usize,
    pub session_policy: SessionPolicy,
    pub messages_per_sec: f64,
    pub points_per_sec: f64,
    /// Bucket size, in seconds of rate.
    pub burst_secs: f64,
    /// Close a session (1008) after this many `rate_limited` nacks in one minute.
    pub rate_limit_close_after: u32,
    pub new_series_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_sessions_per_device: 1,
            session_policy: SessionPolicy::Replace,
            messages_per_sec: 1000.0,
            points_per_sec: 50_000.0,
            burst_secs: 2.0,
            rate_limit_close_after: 600,
            new_series_per_minute: 500,
        }
    }
}

/// Close codes used here.
pub const POLICY: u16 = 1008;

/// A request to close one session, with the code and reason to send.
#[derive(Debug, Clone, Default)]
pub struct Kick {
    token: CancellationToken,
    why: Arc<OnceLock<(u16, String)>>,
}

impl Kick {
    pub fn kick(&self, code: u16, reason: &str) {
        let _ = self.why.set((code, reason.to_string()));
        self.token.cancel();
    }

    /// Resolves once [`Kick::kick`] was called.
    pub async fn wait(&self) -> (u16, String) {
        self.token.cancelled().await;
        self.why
            .get()
            .cloned()
            .unwrap_or((POLICY, "closed by the server".into()))
    }
}

/// Told when a session that must be the device's only one opens and ends
/// (one session per device with `replace`), so that other gateways can
/// close theirs (see `crate::cluster::ownership`). Called outside the
/// limits' lock; must not block.
pub trait SessionHook: Send + Sync {
    /// May return what resolves once the other gateways can see the session
    /// ([`SessionGuard::announced`]).
    fn opened(
        &self,
        device: &str,
        session: u64,
        kick: &Kick,
    ) -> Option<tokio::sync::oneshot::Receiver<()>>;
    fn closed(&self, device: &str, session: u64);
}

/// Longest a handshake waits for its session to be announced to the other
/// gateways ([`SessionGuard::announced`]).
pub const ANNOUNCE_WAIT: Duration = Duration::from_millis(500);

/// A handshake refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("device {device:?} already has {open} open session(s), the most it may hold")]
    DeviceSessions { device: String, open: usize },
}

/// A message refused by a limit: the nack, and whether to close (1008).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub error: &'static str,
    pub detail: String,
    pub close: Option<String>,
    /// When a resend may pass (the bucket refilled, the series window
    /// turned); zero when waiting does not help (`forbidden_measurement`).
    pub retry_after: Duration,
}

struct Slot {
    id: u64,
    token: Option<TokenHash>,
    kick: Kick,
}

struct DeviceState {
    sessions: Vec<Slot>,
    messages: TokenBucket,
    points: TokenBucket,
    series: SeriesGuard,
    idle_since: Option<Instant>,
}

impl DeviceState {
    fn new(rates: Rates, now: Instant) -> DeviceState {
        DeviceState {
            sessions: Vec::new(),
            messages: TokenBucket::new(rates.messages, rates.messages * rates.burst_secs, now),
            points: TokenBucket::new(rates.points, rates.points * rates.burst_secs, now),
            series: SeriesGuard::new(now),
            idle_since: Some(now),
        }
    }

    /// Apply the rates of the device's current policy, keeping the levels.
    fn set_rates(&mut self, rates: Rates) {
        let b = rates.burst_secs;
        self.messages.set_rate(rates.messages, rates.messages * b);
        self.points.set_rate(rates.points, rates.points * b);
    }
}

/// A device's rates: its policy over `[limits]`.
#[derive(Debug, Clone, Copy)]
struct Rates {
    messages: f64,
    points: f64,
    burst_secs: f64,
}

/// Device states older than this after their last session or message are
/// forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// Device states held before those of devices without a session are
/// dropped at once (HTTP requests under ever new device ids must not grow
/// the map for two minutes). Doubles when the live sessions alone are more,
/// so the O(devices) pass stays rare.
pub const EVICT_AT: usize = 100_000;

/// The shared limit state of a server.
pub struct Limits {
    config: LimitsConfig,
    devices: Mutex<HashMap<String, DeviceState>>,
    /// Current eviction threshold (see [`EVICT_AT`]); changed under `devices`' lock.
    evict_at: AtomicUsize,
    last_sweep: Mutex<Instant>,
    next_id: AtomicU64,
    pub metrics: Metrics,
    hook: OnceLock<Arc<dyn SessionHook>>,
}

impl Limits {
    /// Limits counting into their own (unregistered) metrics, for tests.
    pub fn new(config: LimitsConfig) -> Arc<Limits> {
        Self::with_metrics(config, Metrics::new())
    }

    /// Limits counting into `metrics` (registered by [`crate::metrics`]).
    pub fn with_metrics(config: LimitsConfig, metrics: Metrics) -> Arc<Limits> {
        Arc::new(Limits {
            config,
            devices: Mutex::new(HashMap::new()),
            evict_at: AtomicUsize::new(EVICT_AT),
            last_sweep: Mutex::new(Instant::now()),
            next_id: AtomicU64::new(1),
            metrics,
            hook: OnceLock::new(),
        })
    }

    /// Tell `hook` about exclusive sessions from now on (set once).
    pub fn set_hook(&self, hook: Arc<dyn SessionHook>) {
        let _ = self.hook.set(hook);
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Register a session for `who`, applying the per-device session limit.
    pub fn admit(self: &Arc<Self>, who: &Identity) -> Result<SessionGuard, Refused> {
        let now = Instant::now();
        self.sweep(now);
        let c = &self.config;
        let max = who
            .policy
            .max_sessions
            .unwrap_or(c.max_sessions_per_device)
            .max(1);
        let limiter = self.limiter_unswept(who, now);
        let mut devices = self.devices.lock().expect("limits lock");
        let state = self.state_mut(&mut devices, &who.device, limiter.rates, now);
        if state.sessions.len() >= max {
            match c.session_policy {
                SessionPolicy::Refuse => {
                    self.metrics.handshake_refused("device_sessions");
                    return Err(Refused::DeviceSessions {
                        device: who.device.clone(),
                        open: state.sessions.len(),
                    });
                }
                SessionPolicy::Replace => {
                    let excess = state.sessions.len() + 1 - max;
                    for old in state.sessions.drain(..excess) {
                        old.kick
                            .kick(POLICY, "replaced by a newer session of this device");
                        self.metrics.sessions_replaced.inc();
                    }
                }
            }
        }
        state.idle_since = None;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kick = Kick::default();
        state.sessions.push(Slot {
            id,
            token: who.token,
            kick: kick.clone(),
        });
        drop(devices);
        // Devices allowed several sessions keep them per gateway.
        let exclusive = max == 1 && c.session_policy == SessionPolicy::Replace;
        let announced = match self.hook.get() {
            Some(hook) if exclusive => hook.opened(&who.device, id, &kick),
            _ => None,
        };
        Ok(SessionGuard {
            limiter,
            id,
            kick,
            announced,
        })
    }

    /// A handle to check messages of `who` that come without a session (a
    /// gRPC stream, an HTTP request) against the same per-device state as
    /// its sessions. It does not count as a session.
    pub fn limiter(self: &Arc<Self>, who: &Identity) -> DeviceLimiter {
        let now = Instant::now();
        self.sweep(now);
        self.limiter_unswept(who, now)
    }

    fn limiter_unswept(self: &Arc<Self>, who: &Identity, now: Instant) -> DeviceLimiter {
        let c = &self.config;
        let p = &who.policy;
        let rates = Rates {
            messages: p.messages_per_sec.unwrap_or(c.messages_per_sec),
            points: p.points_per_sec.unwrap_or(c.points_per_sec),
            burst_secs: c.burst_secs,
        };
        let mut devices = self.devices.lock().expect("limits lock");
        // The policy may have changed since the state was made (registry reload).
        self.state_mut(&mut devices, &who.device, rates, now)
            .set_rates(rates);
        drop(devices);
        DeviceLimiter::new(
            self.clone(),
            who.device.clone(),
            rates,
            p.allowed_measurements.clone(),
            p.new_series_per_minute.unwrap_or(c.new_series_per_minute),
            now,
        )
    }

    /// The state of `device`, made with `rates` when there is none (the
    /// device is new, or was forgotten while a limiter lived on).
    fn state_mut<'a>(
        &self,
        devices: &'a mut HashMap<String, DeviceState>,
        device: &str,
        rates: Rates,
        now: Instant,
    ) -> &'a mut DeviceState {
        if !devices.contains_key(device) {
            let at = self.evict_at.load(Ordering::Relaxed);
            if devices.len() >= at {
                devices.retain(|_, s| !s.sessions.is_empty());
                self.evict_at
                    .store(at.max(devices.len().saturating_mul(2)), Ordering::Relaxed);
            }
            devices.insert(device.to_owned(), DeviceState::new(rates, now));
        }
        devices.get_mut(device).expect("present or just inserted")
    }

    /// Close (1008) every session for which `valid(device, token)` is false:
    /// after a registry reload, those whose token was revoked or rotated.
    pub fn revalidate(&self, valid: impl Fn(&str, Option<&TokenHash>) -> bool) {
        let mut devices = self.devices.lock().expect("limits lock");
        for (device, state) in devices.iter_mut() {
            state.sessions.retain(|s| {
                if valid(device, s.token.as_ref()) {
                    return true;
                }
                tracing::info!(device = %device, "closing session: its token is no longer valid");
                s.kick.kick(POLICY, "device token revoked");
                self.metrics.sessions_revoked.inc();
                false
            });
        }
    }

    /// Open sessions of `device` (for tests and the live view).
    pub fn sessions_of(&self, device: &str) -> usize {
        self.devices
            .lock()
            .expect("limits lock")
            .get(device)
            .map_or(0, |s| s.sessions.len())
    }

    fn release(&self, device: &str, id: u64) {
        let mut devices = self.devices.lock().expect("limits lock");
        if let Some(state) = devices.get_mut(device) {
            state.sessions.retain(|s| s.id != id);
            if state.sessions.is_empty() {
                state.idle_since = Some(Instant::now());
            }
        }
        drop(devices);
        if let Some(hook) = self.hook.get() {
            hook.closed(device, id);
        }
    }

    /// Forget devices idle for a while; at most once a minute (O(devices)).
    fn sweep(&self, now: Instant) {
        {
            let mut last = self.last_sweep.lock().expect("limits lock");
            if now.saturating_duration_since(*last) < Duration::from_secs(60) {
                return;
            }
            *last = now;
        }
        self.devices.lock().expect("limits lock").retain(|_, s| {
            s.idle_since
                .is_none_or(|t| now.saturating_duration_since(t) < FORGET_AFTER)
        });
    }
}

/// One session's handle on the limits; dropping it releases the session.
pub struct SessionGuard {
    limiter: DeviceLimiter,
    id: u64,
    kick: Kick,
    announced: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl SessionGuard {
    /// A guard with no limits, for sessions driven by tests.
    pub fn unlimited(device: &str) -> SessionGuard {
        let limits = Limits::new(LimitsConfig {
            messages_per_sec: 0.0,
            points_per_sec: 0.0,
            new_series_per_minute: 0,
            max_sessions_per_device: usize::MAX,
            ..LimitsConfig::default()
        });
        let who = Identity {
            device: device.into(),
            token: None,
            policy: Default::default(),
        };
        limits.admit(&who).expect("no session limit")
    }

    /// Wait, at most `limit`, until the other gateways can see this session
    /// (its ownership claim landed). A handshake answered after that makes
    /// the device's next session, on whatever gateway, the newer one for
    /// every gateway. No wait without a cluster.
    pub async fn announced(&mut self, limit: Duration) {
        if let Some(rx) = self.announced.take() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }

    /// The signal to close this session (revoked token, replaced session).
    pub fn kick(&self) -> &Kick {
        &self.kick
    }

    /// Check one decoded message against the device's limits (see
    /// [`DeviceLimiter::check`]).
    pub fn check(&mut self, points: &[Point]) -> Result<(), Refusal> {
        self.limiter.check(points)
    }

    /// The device's limiter, for ingest paths that check through it.
    pub fn limiter_mut(&mut self) -> &mut DeviceLimiter {
        &mut self.limiter
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let l = &self.limiter;
        l.limits.release(&l.device, self.id);
    }
}

#[cfg(test)]
mod tests;
