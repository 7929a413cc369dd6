//! Points to the broker.
//!
//! A session puts its message's points in the message's reply
//! ([`Forward`]); when the writer acks the message (the points are durable),
//! [`Forward::acked`] hands them to the bridge queue without waiting:
//!
//! - default: the device is acked at once; if the queue has no room for the
//!   points (its capacity counts points), they are dropped and counted.
//! - `mqtt.required`: the device's ack waits until the broker PUBACKed every
//!   point of the message; a full queue, an unreachable broker or a lost
//!   connection nack it with `bridge_unavailable` instead.
//!
//! One publisher task encodes topics and payloads (off the sessions and the
//! writer) and feeds the connection ([`super::link`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ack_group::{AckGroup, RequiredReply};
use super::config::Topics;
use super::link::{Conn, Kind, Link, OutMessage};
use super::payload::{self, ResultMessage, StatusMessage};
use super::{PayloadFormat, RateLimited, Stats};
use crate::commands::Outbound;
use crate::pipeline::{Outcome, sleep_until};
use wsingest_proto::point::Point;

/// A message's points on their way to the broker.
pub struct Job {
    points: Vec<Point>,
    reply: Option<RequiredReply>,
    enqueued: Instant,
    _budget: OwnedSemaphorePermit,
}

/// The sessions' and writer's end of the bridge queue.
#[derive(Clone)]
pub struct Uplink {
    inner: Arc<UplinkInner>,
}

struct UplinkInner {
    tx: mpsc::Sender<Job>,
    budget: Arc<Semaphore>,
    stats: Arc<Stats>,
    required: bool,
    drop_log: RateLimited,
}

impl Uplink {
    pub(super) fn new(
        tx: mpsc::Sender<Job>,
        budget: Arc<Semaphore>,
        stats: Arc<Stats>,
        required: bool,
    ) -> Uplink {
        Uplink {
            inner: Arc::new(UplinkInner {
                tx,
                budget,
                stats,
                required,
                drop_log: RateLimited::new(Duration::from_secs(10)),
            }),
        }
    }

    /// Wrap a message's points for its reply.
    pub fn forward(&self, points: Vec<Point>) -> Forward {
        Forward {
            points,
            uplink: self.clone(),
        }
    }

    fn dropped(&self, n: usize, why: &str) {
        self.inner.stats.telemetry_dropped("queue_full", n as u64);
        if let Some(count) = self.inner.drop_log.hit(n as u64) {
            tracing::warn!(
                count,
                reason = why,
                "points not bridged to MQTT (counted in `dropped`)"
            );
        }
    }
}

/// Points that go to the broker once their message is acked.
pub struct Forward {
    points: Vec<Point>,
    uplink: Uplink,
}

impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Forward({} points)", self.points.len())
    }
}

impl crate::pipeline::OnAck for Forward {
    /// The message is durable: queue its points, and answer the device now
    /// (or, with `required`, once the broker confirmed them). Never waits.
    fn acked(self: Box<Self>, seq: Option<u64>, permit: mpsc::OwnedPermit<Outcome>) {
        let Forward { points, uplink } = *self;
        let u = &uplink.inner;
        let n = points.len();
        let budget = u32::try_from(n)
            .ok()
            .and_then(|n| u.budget.clone().try_acquire_many_owned(n).ok());
        let (reply, ack_now) = if u.required {
            (Some(RequiredReply { seq, permit }), None)
        } else {
            (None, Some(permit))
        };
        let result = match budget {
            Some(b) => {
                u.tx.try_send(Job {
                    points,
                    reply,
                    enqueued: Instant::now(),
                    _budget: b,
                })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => {
                        j.reply
                    }
                })
            }
            None => Err(reply),
        };
        if let Err(reply) = result {
            match reply {
                Some(r) => {
                    u.stats.nacked.fetch_add(1, Ordering::Relaxed);
                    uplink.dropped(n, "queue full");
                    r.nack("the MQTT bridge queue is full (the broker is slow or unreachable); resend later");
                }
                None => uplink.dropped(n, "queue full"),
            }
        }
        if let Some(permit) = ack_now {
            permit.send(Outcome::Acked { seq });
        }
    }
}

pub struct PublisherConfig {
    pub topics: Topics,
    pub format: PayloadFormat,
    pub qos: QoS,
    pub retain: bool,
    pub required_timeout: Duration,
    pub max_packet_bytes: usize,
}

/// Take jobs (control messages first) and publish them while connected;
/// when `stop` fires, publish what is queued and disconnect.
pub async fn run_publisher(
    config: PublisherConfig,
    link: Arc<Link>,
    mut jobs: mpsc::Receiver<Job>,
    mut control: mpsc::Receiver<Outbound>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut p = Publisher {
        config,
        conn: link.watch(),
        link,
        stats,
        stop: stop.clone(),
        control_log: RateLimited::new(Duration::from_secs(10)),
        drop_log: RateLimited::new(Duration::from_secs(10)),
    };
    let mut control_open = true;
    loop {
        tokio::select! {
            biased;
            c = control.recv(), if control_open => match c {
                Some(c) => p.control(c).await,
                None => control_open = false,
            },
            j = jobs.recv() => match j {
                Some(j) => p.job(j).await,
                None => break,
            },
            _ = stop.cancelled() => break,
        }
    }
    // Shutting down: the pipeline has drained, so what is queued is all
    // there will be. Publish it if we can, then say goodbye to the broker.
    jobs.close();
    control.close();
    while let Ok(c) = control.try_recv() {
        p.control(c).await;
    }
    while let Ok(j) = jobs.try_recv() {
        p.job(j).await;
    }
    while p.link.outstanding() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(conn) = p.conn.borrow().clone() {
        let _ = conn.client.try_disconnect();
    }
}

struct Publisher {
    config: PublisherConfig,
    link: Arc<Link>,
    conn: watch::Receiver<Option<Conn>>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    control_log: RateLimited,
    drop_log: RateLimited,
}

impl Publisher {
    /// The live connection, waiting for one until `deadline` (none: until
    /// the bridge stops; when stopping, not at all).
    async fn connection(&mut self, deadline: Option<Instant>) -> Option<Conn> {
        loop {
            if let Some(c) = self.conn.borrow_and_update().clone() {
                return Some(c);
            }
            if self.stop.is_cancelled() {
                return None;
            }
            tokio::select! {
                r = self.conn.changed() => r.ok()?,
                _ = sleep_until(deadline), if deadline.is_some() => return None,
                _ = self.stop.cancelled() => return None,
            }
        }
    }

    async fn job(&mut self, job: Job) {
        let Job {
            points,
            reply,
            enqueued,
            _budget,
        } = job;
        let n = points.len();
        let group = reply.map(|r| AckGroup::new(n, r, self.stats.clone()));
        let deadline = group
            .as_ref()
            .map(|_| enqueued + self.config.required_timeout);
        let Some(mut conn) = self.connection(deadline).await else {
            return self.not_sent(
                n,
                group.as_deref(),
                "unreachable",
                "the MQTT broker is unreachable",
            );
        };
        for (i, point) in points.iter().enumerate() {
            let device = point.tag("device").unwrap_or_default();
            let topic = self
                .config
                .topics
                .telemetry
                .render(device, &point.measurement);
            let body = payload::point(point, self.config.format);
            if body.len() + topic.len() + 8 > self.config.max_packet_bytes {
                self.not_sent(
                    1,
                    group.as_deref(),
                    "too_large",
                    "a point is larger than mqtt.max_packet_bytes",
                );
                continue;
            }
            let msg = OutMessage {
                kind: Kind::Telemetry,
                topic,
                qos: self.config.qos,
                retain: self.config.retain,
                payload: body,
                group: group.clone(),
            };
            let sent = self.link.publish(&conn, msg).await;
            if sent.is_err() {
                // The connection ended under us (this point was counted).
                // Carry on with the next one, unless the message is lost anyway.
                if group.is_some() {
                    return self.not_sent(
                        n - i - 1,
                        None,
                        "connection_lost",
                        "the connection to the MQTT broker ended",
                    );
                }
                match self.connection(None).await {
                    Some(c) => conn = c,
                    None => {
                        return self.not_sent(
                            n - i - 1,
                            None,
                            "unreachable",
                            "the MQTT broker is unreachable",
                        );
                    }
                }
            }
        }
    }

    /// `n` points were not published. `group`, if any, is nacked.
    fn not_sent(&self, n: usize, group: Option<&AckGroup>, reason: &'static str, why: &str) {
        if n == 0 {
            return;
        }
        self.stats.telemetry_dropped(reason, n as u64);
        if let Some(g) = group {
            g.fail(why);
        }
        if let Some(count) = self.drop_log.hit(n as u64) {
            tracing::warn!(
                count,
                reason = why,
                "points not bridged to MQTT (counted in `dropped`)"
            );
        }
    }

    async fn control(&mut self, msg: Outbound) {
        let t = &self.config.topics;
        let (topic, body) = match &msg {
            Outbound::Command { device, command } => (
                t.command.render(device, ""),
                payload::json(&command.message()),
            ),
            Outbound::Result {
                device,
                cmd,
                ok,
                detail,
            } => (
                t.result.render(device, ""),
                payload::json(&ResultMessage {
                    cmd: cmd.clone(),
                    ok: *ok,
                    detail: detail.clone(),
                }),
            ),
            Outbound::Status {
                device,
                cmd,
                status,
                detail,
            } => (
                t.status.render(device, ""),
                payload::json(&StatusMessage {
                    cmd: cmd.clone(),
                    status: *status,
                    detail: detail.clone(),
                }),
            ),
        };
        // Results matter more than telemetry, but a dead broker must not
        // hold them for ever: wait as long as a `required` message would.
        let deadline = Some(Instant::now() + self.config.required_timeout);
        let sent = match self.connection(deadline).await {
            Some(conn) => {
                let msg = OutMessage {
                    kind: Kind::Control,
                    topic: topic.clone(),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    payload: body,
                    group: None,
                };
                self.link.publish(&conn, msg).await.is_ok()
            }
            None => {
                self.stats.control_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        if !sent && let Some(count) = self.control_log.hit(1) {
            tracing::warn!(
                count,
                topic,
                "command result or status not published: the MQTT broker is unreachable"
            );
        }
    }
}
