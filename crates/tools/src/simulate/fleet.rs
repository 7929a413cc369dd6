//! The fleet runner: builds the devices of every profile, runs them as
//! tokio tasks until the duration (or message count) is reached, lets them
//! drain their unacknowledged messages, and gathers what they measured into
//! a [`Report`].
//!
//! [`Fleet::start`] + [`Fleet::finish`] is the library entry point the CLI,
//! the tests and the benchmarks share.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connect::{Target, TargetError, WireBytes};
use super::device::{self, DeviceResult, DeviceSpec, Kind, Shared};
use super::faults::Faults;
use super::message::Encoding;
use super::profile::Profile;
use super::report::{ProfileReport, Report, WireReport};
use super::state::Counters;
use super::stats::{self, CpuUsage, Latency, Live};
use super::tokens::Tokens;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Invalid(String),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub url: String,
    /// For `wss://`: CA certificates (PEM) to trust besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Each profile with its number of devices.
    pub profiles: Vec<(Profile, usize)>,
    pub encoding: Encoding,
    /// Messages per second per device, overriding the profiles' intervals.
    pub rate: Option<f64>,
    /// Points per message, overriding the profiles.
    pub batch: Option<usize>,
    /// Stop generating after this long (`None`: only on `messages` or stop).
    pub duration: Option<Duration>,
    /// Telemetry messages per device.
    pub messages: Option<u64>,
    /// Unacknowledged messages a device may have.
    pub window: usize,
    pub ack_timeout: Duration,
    /// After generating stops, how long devices may wait for their last acks.
    pub drain_timeout: Duration,
    /// Handshakes in progress at once.
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub faults: Faults,
    pub seed: u64,
    pub tokens: Option<Tokens>,
    /// Local addresses to connect from, round-robin over devices.
    pub source_addrs: Vec<IpAddr>,
    /// Prepended to every device id (several generators, distinct ids).
    pub id_prefix: String,
    /// Add the message seq to every point as an integer field of this name.
    pub seq_field: Option<String>,
    /// Keep every device's counters in the report.
    pub per_device: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            url: "ws://127.0.0.1:8765".into(),
            ca_file: None,
            profiles: Vec::new(),
            encoding: Encoding::Json,
            rate: None,
            batch: None,
            duration: Some(Duration::from_secs(60)),
            messages: None,
            window: 64,
            ack_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(15),
            connect_concurrency: 256,
            connect_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            faults: Faults::default(),
            seed: 0,
            tokens: None,
            source_addrs: Vec::new(),
            id_prefix: String::new(),
            seq_field: None,
            per_device: false,
        }
    }
}

impl FleetConfig {
    fn validate(&self) -> Result<(), FleetError> {
        let bad = |m: String| Err(FleetError::Invalid(m));
        if self.profiles.iter().all(|(_, n)| *n == 0) {
            return bad(
                "no devices to simulate: give at least one --profile and --devices above 0".into(),
            );
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0 && r <= 100_000.0)
        {
            return bad(format!(
                "--rate {r}: messages per second per device, above 0 and at most 100000"
            ));
        }
        if self.batch == Some(0) {
            return bad("--batch must be at least 1".into());
        }
        if self.duration.is_none() && self.messages.is_none() {
            return bad("give --duration or --messages (or both)".into());
        }
        if self.window == 0 || self.connect_concurrency == 0 {
            return bad("--window and --connect-concurrency must be at least 1".into());
        }
        self.faults.validate().map_err(FleetError::Invalid)?;
        if let Some(tokens) = &self.tokens {
            let ids = self.device_ids();
            let missing: Vec<&String> = ids
                .iter()
                .map(|(_, id)| id)
                .filter(|id| tokens.get(id).is_none())
                .collect();
            if let Some(first) = missing.first() {
                return bad(format!(
                    "the token file has no token for device {first} ({} of {} devices have none); \
                     register them (`wsingest device add <id>`) and list `<id> <token>` in the file",
                    missing.len(),
                    ids.len()
                ));
            }
        }
        Ok(())
    }

    /// `(profile index, device id)` of every device, in order.
    fn device_ids(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (pi, (p, n)) in self.profiles.iter().enumerate() {
            for i in 1..=*n {
                out.push((pi, format!("{}{}-{:04}", self.id_prefix, p.id_prefix, i)));
            }
        }
        out
    }
}

/// A running fleet.
pub struct Fleet {
    shared: Arc<Shared>,
    tasks: JoinSet<DeviceResult>,
    controller: tokio::task::JoinHandle<()>,
    stopped_at: Arc<Mutex<Option<Instant>>>,
    started: Instant,
    cpu_start: (Duration, Duration),
    config: FleetConfig,
    template: String,
    kinds: Vec<Arc<Kind>>,
}

impl Fleet {
    /// Check the config, resolve the target and start every device.
    pub async fn start(config: FleetConfig) -> Result<Fleet, FleetError> {
        config.validate()?;
        let target = Target::resolve_with_ca(&config.url, config.ca_file.as_deref()).await?;
        let template = target.url_for("{device}");
        let ids = config.device_ids();
        let kinds: Vec<Arc<Kind>> = config
            .profiles
            .iter()
            .map(|(p, _)| Arc::new(Kind::new(p.clone(), config.rate, config.batch)))
            .collect();
        let shared = Arc::new(Shared {
            target,
            encoding: config.encoding,
            window: config.window,
            ack_timeout: config.ack_timeout,
            connect_timeout: config.connect_timeout,
            backoff_base: config.backoff_base,
            backoff_max: config.backoff_max,
            faults: config.faults.clone(),
            messages_per_device: config.messages,
            seq_field: config.seq_field.as_deref().map(Arc::from),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            connect_slots: Arc::new(Semaphore::new(config.connect_concurrency)),
            live: Live::default(),
            latency: Latency::new(16),
            wire: Arc::new(WireBytes::default()),
        });
        let started = Instant::now();
        let cpu_start = stats::cpu_time();
        let mut tasks = JoinSet::new();
        for (index, (pi, id)) in ids.into_iter().enumerate() {
            let kind = kinds[pi].clone();
            let spec = DeviceSpec {
                index,
                token: config.tokens.as_ref().and_then(|t| t.get(&id)),
                source: (!config.source_addrs.is_empty())
                    .then(|| config.source_addrs[index % config.source_addrs.len()]),
                seed: device_seed(config.seed, &kind.profile.name, &id),
                id,
                kind,
            };
            tasks.spawn(device::run(spec, shared.clone()));
        }
        let quota = config.messages.map(|m| m * tasks.len() as u64);
        let stopped_at = Arc::new(Mutex::new(None));
        let controller = tokio::spawn(control(
            shared.clone(),
            config.duration,
            quota,
            config.drain_timeout,
            stopped_at.clone(),
        ));
        Ok(Fleet {
            shared,
            tasks,
            controller,
            stopped_at,
            started,
            cpu_start,
            config,
            template,
            kinds,
        })
    }

    /// Live counters, for a progress display.
    pub fn live(&self) -> &Live {
        &self.shared.live
    }

    pub fn devices(&self) -> usize {
        self.tasks.len()
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stop generating now; devices drain their unacknowledged messages.
    pub fn stop(&self) {
        self.shared.stop.cancel();
    }

    /// Stop waiting for acks: every device closes now.
    pub fn abort(&self) {
        self.shared.stop.cancel();
        self.shared.abort.cancel();
    }

    /// A token that stops generating when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.shared.stop.clone()
    }

    pub fn abort_token(&self) -> CancellationToken {
        self.shared.abort.clone()
    }

    /// [`Fleet::finish`], calling `tick(live, devices, started, stopping)`
    /// four times a second meanwhile (for a progress display).
    pub async fn finish_with(self, mut tick: impl FnMut(&Live, usize, Instant, bool)) -> Report {
        let shared = self.shared.clone();
        let (devices, started) = (self.devices(), self.started);
        let finish = self.finish();
        tokio::pin!(finish);
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                report = &mut finish => return report,
                _ = every.tick() => tick(&shared.live, devices, started, shared.stop.is_cancelled()),
            }
        }
    }

    /// Wait for every device to finish; the report of the run.
    pub async fn finish(mut self) -> Report {
        let mut results = Vec::with_capacity(self.tasks.len());
        while let Some(r) = self.tasks.join_next().await {
            match r {
                Ok(d) => results.push(d),
                Err(e) => tracing::error!(error = %e, "a simulated device task failed"),
            }
        }
        let elapsed = self.started.elapsed();
        let cpu = CpuUsage::between(self.cpu_start, stats::cpu_time(), elapsed);
        self.controller.abort();
        let stopped_at = *self.stopped_at.lock().unwrap_or_else(|e| e.into_inner());
        let generating = stopped_at
            .map_or(elapsed, |t| t.saturating_duration_since(self.started))
            .min(elapsed);
        let mut profiles: Vec<ProfileReport> = self
            .kinds
            .iter()
            .zip(&self.config.profiles)
            .map(|(k, (_, n))| ProfileReport {
                name: k.profile.name.clone(),
                measurement: k.profile.measurement.clone(),
                devices: *n,
                interval_s: k.interval.as_secs_f64(),
                points_per_message: k.points_per_message,
                counters: Counters::default(),
            })
            .collect();
        let mut totals = Counters::default();
        for r in &results {
            totals.add(&r.counters);
            if let Some(p) = profiles.iter_mut().find(|p| p.name == r.profile) {
                p.counters.add(&r.counters);
            }
        }
        results.sort_by(|a, b| a.id.cmp(&b.id));
        Report {
            target: self.template,
            encoding: self.config.encoding,
            seed: self.config.seed,
            devices: results.len(),
            generating_s: generating.as_secs_f64(),
            elapsed_s: elapsed.as_secs_f64(),
            totals,
            profiles,
            ack_latency: self.shared.latency.summary(),
            wire: WireReport {
                bytes_sent: self.shared.wire.sent.load(Ordering::Relaxed),
                bytes_received: self.shared.wire.received.load(Ordering::Relaxed),
            },
            cpu,
            faults: self.config.faults.clone(),
            per_device: if self.config.per_device {
                results
            } else {
                Vec::new()
            },
        }
    }
}

/// Stop generating after `duration`, once every device sent its `messages`,
/// or when stopped from outside; then abort after `drain`. Records when
/// generating stopped in `stopped_at`.
async fn control(
    shared: Arc<Shared>,
    duration: Option<Duration>,
    quota: Option<u64>,
    drain: Duration,
    stopped_at: Arc<Mutex<Option<Instant>>>,
) {
    let end = duration.map(|d| Instant::now() + d);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = shared.stop.cancelled() => break,
        }
        let all_sent = quota.is_some_and(|q| Live::get(&shared.live.messages_sent) >= q);
        if all_sent || end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
    }
    shared.stop.cancel();
    *stopped_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    tokio::select! {
        _ = tokio::time::sleep(drain) => shared.abort.cancel(),
        _ = shared.abort.cancelled() => {}
    }
}

/// A device's seed: from the run's seed and its identity, so adding devices
/// or profiles does not change what the others send.
fn device_seed(seed: u64, profile: &str, id: &str) -> u64 {
    // FNV-1a: stable across platforms and Rust versions, unlike `Hash`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in profile.bytes().chain([0]).chain(id.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
