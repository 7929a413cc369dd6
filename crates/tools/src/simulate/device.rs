//! One simulated device's life: connect, resend what is unacknowledged, send
//! telemetry on schedule while the window has room, read acks, nacks and
//! commands, and on any loss reconnect with backoff. Battery devices
//! (`duty_cycle`) disconnect after each burst and sleep.
//!
//! The protocol decisions live in the sans-IO [`Protocol`], [`Schedule`],
//! [`Clock`] and [`Faults`]; this module only moves frames and waits.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::connect::{self, ConnectOptions, DeviceSocket, Target, WireBytes};
use super::faults::Faults;
use super::fields::{self, DeviceModel};
use super::message::{self, Encoding, Sample, Shape};
use super::profile::Profile;
use super::state::{Counters, Effect, Event, Protocol};
use super::stats::{Latency, Live};
use super::timing::{self, Backoff, Clock, Schedule};

/// A profile as the fleet runs it (rate and batch size after overrides).
#[derive(Debug)]
pub struct Kind {
    pub profile: Profile,
    pub interval: Duration,
    pub points_per_message: usize,
    pub sample_interval_ms: f64,
    pub measurement: Arc<str>,
    pub names: Arc<[Arc<str>]>,
}

impl Kind {
    /// `rate`: messages per second per device, overriding the profile's
    /// interval; `batch`: points per message.
    pub fn new(profile: Profile, rate: Option<f64>, batch: Option<usize>) -> Kind {
        let interval = match rate {
            Some(r) => Duration::from_secs_f64(1.0 / r),
            None => Duration::from_secs_f64(profile.interval_s),
        };
        let points_per_message = batch.unwrap_or(profile.points_per_message).max(1);
        let sample_interval_ms = match (batch, rate) {
            (None, None) => profile.sample_interval_ms(),
            _ => (interval.as_secs_f64() * 1000.0 / points_per_message as f64).max(1.0),
        };
        Kind {
            measurement: profile.measurement.as_str().into(),
            names: profile.field_names().map(Arc::from).collect(),
            profile,
            interval,
            points_per_message,
            sample_interval_ms,
        }
    }
}

/// What every device of a run shares.
pub struct Shared {
    pub target: Target,
    pub encoding: Encoding,
    pub window: usize,
    pub ack_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub faults: Faults,
    /// Telemetry messages per device, then stop (else: until `stop`).
    pub messages_per_device: Option<u64>,
    pub seq_field: Option<Arc<str>>,
    /// Stop generating; drain what is unacknowledged.
    pub stop: CancellationToken,
    /// Stop waiting for acks: close now.
    pub abort: CancellationToken,
    pub connect_slots: Arc<Semaphore>,
    pub live: Live,
    pub latency: Latency,
    pub wire: Arc<WireBytes>,
}

/// One device to simulate.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub index: usize,
    pub id: String,
    pub kind: Arc<Kind>,
    pub token: Option<Arc<str>>,
    pub source: Option<IpAddr>,
    pub seed: u64,
}

/// What one device did.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceResult {
    pub id: String,
    pub profile: String,
    #[serde(flatten)]
    pub counters: Counters,
}

/// How a connection ended.
#[derive(Debug)]
enum End {
    /// Nothing more to send and everything answered (or the run aborted).
    Done,
    /// Lost: reconnect after a backoff.
    Lost,
    /// Duty cycle: asleep for this long.
    Sleep(Duration),
    /// A `reboot` command: offline for this long.
    Reboot(Duration),
}

/// Longest a send may block before the connection counts as lost.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

struct Device<'a> {
    spec: DeviceSpec,
    shared: &'a Shared,
    proto: Protocol,
    model: DeviceModel,
    shape: Shape,
    schedule: Schedule,
    clock: Clock,
    backoff: Backoff,
    connect: ConnectOptions,
    /// Separate streams, so fault injection does not change the values.
    values_rng: StdRng,
    timing_rng: StdRng,
    fault_rng: StdRng,
    /// New telemetry messages over the device's life, and in this wake.
    sent_total: u64,
    sent_this_wake: u32,
}

pub async fn run(spec: DeviceSpec, shared: Arc<Shared>) -> DeviceResult {
    let mut device = Device::new(spec, &shared);
    device.life().await;
    device.proto.finish();
    Live::add(&shared.live.devices_done, 1);
    DeviceResult {
        id: device.spec.id,
        profile: device.spec.kind.profile.name.clone(),
        counters: device.proto.counters,
    }
}

/// Per-device RNG streams derived from the run's seed (splitmix64).
fn stream(seed: u64, n: u64) -> StdRng {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

impl<'a> Device<'a> {
    fn new(spec: DeviceSpec, shared: &'a Shared) -> Device<'a> {
        let mut values_rng = stream(spec.seed, 1);
        let mut timing_rng = stream(spec.seed, 2);
        let mut fault_rng = stream(spec.seed, 3);
        let kind = spec.kind.clone();
        let model = DeviceModel::new(&kind.profile, &mut values_rng);
        let tags: Vec<(String, String)> = kind
            .profile
            .tags
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    super::profile::TagSpec::Fixed(s) => s.clone(),
                    super::profile::TagSpec::OneOf(list) => {
                        list[values_rng.random_range(0..list.len())].clone()
                    }
                };
                (k.clone(), v)
            })
            .collect();
        let shape = Shape {
            measurement: kind.measurement.clone(),
            tags: tags.into(),
            names: kind.names.clone(),
            seq_field: shared.seq_field.clone(),
        };
        let clock = Clock::new(shared.faults.skew_ms(&mut fault_rng));
        let schedule = Schedule::new(
            kind.interval,
            kind.profile.jitter,
            shared.faults.burst,
            Instant::now(),
        );
        let _ = &mut timing_rng;
        Device {
            connect: ConnectOptions {
                encoding: shared.encoding,
                token: spec.token.clone(),
                source: spec.source,
                timeout: shared.connect_timeout,
            },
            spec,
            shared,
            proto: Protocol::new(shared.encoding, shared.window),
            model,
            shape,
            schedule,
            clock,
            backoff: Backoff::new(shared.backoff_base, shared.backoff_max),
            values_rng,
            timing_rng,
            fault_rng,
            sent_total: 0,
            sent_this_wake: 0,
        }
    }

    fn done_generating(&self) -> bool {
        self.shared.stop.is_cancelled()
            || self
                .shared
                .messages_per_device
                .is_some_and(|n| self.sent_total >= n)
    }

    /// Wait `d` unless the run aborts (`false`), or unless the run is over
    /// and nothing waits for an ack.
    async fn pause(&self, d: Duration) -> bool {
        let idle_stop = async {
            if self.proto.is_idle() {
                self.shared.stop.cancelled().await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.shared.abort.cancelled() => false,
            _ = idle_stop => false,
        }
    }

    async fn life(&mut self) {
        // Devices of a fleet do not all start in the same millisecond.
        let stagger = self
            .schedule
            .interval()
            .mul_f64(self.timing_rng.random::<f64>())
            .min(Duration::from_secs(5));
        if !self.pause(stagger).await {
            return;
        }
        self.schedule = Schedule::new(
            self.schedule.interval(),
            self.spec.kind.profile.jitter,
            self.schedule.burst(),
            Instant::now(),
        );
        let mut lost = false;
        loop {
            if (self.done_generating() && self.proto.is_idle()) || self.shared.abort.is_cancelled()
            {
                return;
            }
            let attempt = {
                let permit = tokio::select! {
                    p = self.shared.connect_slots.acquire() => p.expect("connect semaphore never closed"),
                    _ = self.shared.abort.cancelled() => return,
                };
                let r = connect::connect(
                    &self.shared.target,
                    &self.spec.id,
                    &self.connect,
                    &self.shared.wire,
                )
                .await;
                drop(permit);
                r
            };
            let ws = match attempt {
                Ok(ws) => ws,
                Err(e) => {
                    tracing::debug!(device = %self.spec.id, error = %e, "connect failed");
                    *self
                        .proto
                        .counters
                        .connect_errors
                        .entry(e.kind())
                        .or_default() += 1;
                    Live::add(&self.shared.live.connect_errors, 1);
                    let d = self.backoff.next_delay(&mut self.timing_rng);
                    if !self.pause(d).await {
                        return;
                    }
                    continue;
                }
            };
            self.proto.counters.sessions += 1;
            if lost {
                self.proto.counters.reconnects += 1;
                Live::add(&self.shared.live.reconnects, 1);
            }
            self.shared
                .live
                .connected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let end = self.session(ws).await;
            self.shared
                .live
                .connected
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.proto.connection_lost();
            lost = matches!(end, End::Lost);
            let wait = match end {
                End::Done => return,
                End::Lost => self.backoff.next_delay(&mut self.timing_rng),
                End::Sleep(d) | End::Reboot(d) => d,
            };
            if !self.pause(wait).await {
                return;
            }
            if !lost {
                // Woken up (or rebooted): a fresh burst, starting now.
                self.sent_this_wake = 0;
                self.schedule = Schedule::new(
                    self.schedule.interval(),
                    self.spec.kind.profile.jitter,
                    self.schedule.burst(),
                    Instant::now(),
                );
            }
        }
    }

    async fn session(&mut self, mut ws: DeviceSocket) -> End {
        let again = self.proto.resend(Instant::now());
        if !again.is_empty() {
            Live::add(&self.shared.live.resent, again.len() as u64);
            if send(&mut ws, again).await.is_err() {
                return End::Lost;
            }
        }
        let duty = self.spec.kind.profile.duty_cycle.clone();
        let mut stalled = false;
        loop {
            let generating = !self.done_generating();
            let wake_open = duty
                .as_ref()
                .is_none_or(|d| self.sent_this_wake < d.messages_per_wake);
            if self.proto.is_idle() && (!generating || !wake_open) {
                close(&mut ws, "done").await;
                return match (&duty, generating) {
                    (Some(d), true) => End::Sleep(Duration::from_secs_f64(fields::draw(
                        d.sleep_s,
                        &mut self.timing_rng,
                    ))),
                    _ => End::Done,
                };
            }
            let due = generating && wake_open;
            let can_send = due && self.proto.has_room();
            if due && !can_send && !stalled && Instant::now() >= self.schedule.next() {
                stalled = true;
                self.proto.counters.window_stalls += 1;
            }
            let ack_deadline = self
                .proto
                .oldest_sent()
                .map(|t| t + self.shared.ack_timeout);
            let stop = self.shared.stop.clone();
            tokio::select! {
                biased;
                _ = self.shared.abort.cancelled() => {
                    close(&mut ws, "run aborted").await;
                    return End::Done;
                }
                // Wakes the loop so it notices the run is over.
                _ = stop.cancelled(), if generating => {}
                frame = ws.next() => {
                    let frame = match frame {
                        None => return End::Lost,
                        Some(Err(e)) => {
                            tracing::debug!(device = %self.spec.id, error = %e, "connection lost");
                            return End::Lost;
                        }
                        Some(Ok(Frame::Close(c))) => {
                            let code = c.map(|c| u16::from(c.code)).unwrap_or(1005);
                            *self.proto.counters.server_closes.entry(code).or_default() += 1;
                            // Let tungstenite send its answer to the close.
                            let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
                            return End::Lost;
                        }
                        Some(Ok(f)) => f,
                    };
                    match self.proto.receive(&frame, Instant::now()) {
                        Event::Acked { points, latency } => {
                            self.backoff.reset();
                            Live::add(&self.shared.live.messages_acked, 1);
                            Live::add(&self.shared.live.points_acked, points as u64);
                            self.shared.latency.record(self.spec.index, latency);
                        }
                        Event::Nacked { .. } => {
                            self.backoff.reset();
                            Live::add(&self.shared.live.nacked, 1);
                        }
                        Event::Command { reply, effect } => {
                            if send(&mut ws, reply.into_iter().collect()).await.is_err() {
                                return End::Lost;
                            }
                            match effect {
                                Effect::None => {}
                                Effect::SetInterval(d) => self.schedule.set_interval(d, Instant::now(), &mut self.timing_rng),
                                Effect::Reboot(d) => {
                                    close(&mut ws, "rebooting").await;
                                    return End::Reboot(d);
                                }
                            }
                        }
                        Event::None | Event::Unexpected => {}
                    }
                }
                _ = tokio::time::sleep_until(self.schedule.next()), if can_send => {
                    stalled = false;
                    match self.tick(&mut ws).await {
                        Tick::Sent => {}
                        Tick::Lost => return End::Lost,
                        Tick::Dropped => {
                            self.proto.counters.drops_injected += 1;
                            // Dropped without a close handshake, like a lost network.
                            return End::Lost;
                        }
                    }
                }
                _ = sleep_until(ack_deadline), if ack_deadline.is_some() => {
                    tracing::debug!(device = %self.spec.id, "no ack in time; reconnecting");
                    self.proto.counters.ack_timeouts += 1;
                    return End::Lost;
                }
            }
        }
    }

    /// Send what is due now: a message (or a burst of them), with any
    /// injected faulty messages before each.
    async fn tick(&mut self, ws: &mut DeviceSocket) -> Tick {
        let kind = self.spec.kind.clone();
        let now = Instant::now();
        let per_wake = kind
            .profile
            .duty_cycle
            .as_ref()
            .map(|d| d.messages_per_wake);
        let mut frames = Vec::new();
        let mut dropped = false;
        for _ in 0..self.schedule.burst() {
            if !self.proto.has_room()
                || self.done_generating()
                || per_wake.is_some_and(|n| self.sent_this_wake >= n)
            {
                break;
            }
            let now_ms = timing::now_ms();
            for fault in self.shared.faults.spoil(&mut self.fault_rng) {
                frames.push(message::faulty(
                    self.proto.encoding(),
                    fault,
                    &self.shape,
                    now_ms,
                    self.fault_rng.random(),
                ));
                self.proto.sent_faulty(fault);
            }
            let samples: Vec<Sample> = self
                .clock
                .stamps(now_ms, kind.points_per_message, kind.sample_interval_ms)
                .into_iter()
                .map(|ts_ms| Sample {
                    ts_ms,
                    values: self.model.sample(ts_ms, &mut self.values_rng).to_vec(),
                })
                .collect();
            let seq = self.proto.take_seq();
            let (frame, points) =
                message::telemetry(self.proto.encoding(), &self.shape, Some(seq), &samples);
            self.proto.sent(seq, frame.clone(), points, now);
            frames.push(frame);
            Live::add(&self.shared.live.messages_sent, 1);
            Live::add(&self.shared.live.points_sent, points as u64);
            self.sent_total += 1;
            self.sent_this_wake += 1;
            if self
                .shared
                .faults
                .drop_after(self.sent_total, &mut self.fault_rng)
            {
                dropped = true;
                break;
            }
        }
        self.schedule.advance(now, &mut self.timing_rng);
        if send(ws, frames).await.is_err() {
            return Tick::Lost;
        }
        if dropped { Tick::Dropped } else { Tick::Sent }
    }
}

enum Tick {
    Sent,
    Lost,
    Dropped,
}

async fn send(ws: &mut DeviceSocket, frames: Vec<Frame>) -> Result<(), ()> {
    let all = async {
        for f in frames {
            ws.feed(f).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(SEND_TIMEOUT, all).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Close normally and wait briefly for the server's answer.
async fn close(ws: &mut DeviceSocket, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if ws.send(Frame::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
