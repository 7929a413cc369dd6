//! MQTT subscription ingest: `[[mqtt.subscribe]]` topics (Tasmota's
//! `tele/+/SENSOR`, OwnTracks' `owntracks/+/+`, ...) go through the same
//! ingest path as the WebSocket ([`crate::ingest`]: format, limits, dedupe,
//! pipeline), and a QoS 1 message is acknowledged to the broker (PUBACK,
//! rumqttc manual acks) only once its points are durable: InfluxDB answered
//! 2xx or the spool fsynced them. A crash before that leaves the message
//! unacknowledged in the broker's persistent session for our fixed client
//! id, and the broker delivers it again when we reconnect.
//!
//! - A message refused (mapping, validation, limits) is acknowledged anyway
//!   (delivering it again would not help), counted, logged and its nack
//!   published on `mqtt.ingest_error_topic`.
//! - `storage_unavailable` (the spool is full or off), a full pipeline:
//!   submitted again after a pause, not acknowledged meanwhile.
//! - At most `mqtt.ingest_inflight` messages wait for their outcome; the
//!   broker holds the rest (its own in-flight window for us).
//! - Broker unreachable: reconnect with backoff; the session resumes.
//! - Loop guard: a subscription may not match the bridge's own telemetry
//!   topic (checked at startup), so bridged points are never ingested again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::MqttError;
use super::config::MqttConfig;
use crate::auth::Identity;
use crate::ingest::{IngestContext, Submitted};
use crate::limits::Limits;
use crate::pipeline::Outcome;
use crate::setting::ConfigError;
use wsingest_proto::backoff::Backoff;
use wsingest_proto::decode::Format;
use wsingest_proto::format::{Formats, Mapping};

/// One `[[mqtt.subscribe]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Topic filter (`+` and `#` wildcards); `{device}` in place of a
    /// level is a `+` whose value is the device id.
    pub topic: String,
    /// The format of the payloads (a preset or `[formats.NAME]`); unset: the
    /// message model devices send over the WebSocket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The device id from the received topic: `{N}` is its level N (from
    /// 0), with text around it if wanted (`tasmota-{1}`). Unset: the
    /// `{device}` level of `topic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// 1: acknowledged once durable (redelivered after a crash); 0: at most once.
    #[serde(default = "one")]
    pub qos: u8,
}

fn one() -> u8 {
    1
}

/// Where a subscription's device id comes from.
#[derive(Debug, Clone)]
struct DeviceFrom {
    level: usize,
    prefix: String,
    suffix: String,
}

impl DeviceFrom {
    fn of(&self, topic: &str) -> Option<String> {
        let level = topic.split('/').nth(self.level).filter(|l| !l.is_empty())?;
        let id = format!("{}{level}{}", self.prefix, self.suffix);
        crate::auth::registry::valid_device_id(&id).then_some(id)
    }
}

/// A checked subscription.
#[derive(Debug, Clone)]
struct Route {
    filter: String,
    qos: QoS,
    device: DeviceFrom,
    mapping: Option<Arc<Mapping>>,
}

fn compile(
    i: usize,
    s: &Subscription,
    formats: &Formats,
    telemetry_filter: Option<&str>,
) -> Result<Route, String> {
    let levels: Vec<&str> = s.topic.split('/').collect();
    if s.topic.is_empty() {
        return Err(format!("[[mqtt.subscribe]] #{i}: topic is empty"));
    }
    for (n, l) in levels.iter().enumerate() {
        let wild = l.contains(['+', '#']);
        if wild && l.len() > 1 || (*l == "#" && n + 1 != levels.len()) {
            return Err(format!(
                "topic {:?}: `+` fills a whole level and `#` is the last one",
                s.topic
            ));
        }
    }
    let placeholder = levels.iter().position(|l| *l == "{device}");
    let filter = levels
        .iter()
        .map(|l| if *l == "{device}" { "+" } else { l })
        .collect::<Vec<_>>()
        .join("/");
    if filter.contains('{') {
        return Err(format!(
            "topic {:?}: the only placeholder is {{device}}, filling a whole level",
            s.topic
        ));
    }
    let device = match (&s.device, placeholder) {
        (Some(d), _) => {
            let (prefix, rest) = d.split_once('{').ok_or_else(|| {
                format!("device {d:?}: name the topic level, e.g. \"{{1}}\" for tele/<here>/SENSOR")
            })?;
            let (n, suffix) = rest
                .split_once('}')
                .ok_or_else(|| format!("device {d:?}: `{{` is not closed"))?;
            if suffix.contains('{') {
                return Err(format!("device {d:?}: one topic level only"));
            }
            let level: usize = n
                .parse()
                .map_err(|_| format!("device {d:?}: {{{n}}} is not a level number"))?;
            if level >= levels.len() || levels[level] == "#" {
                return Err(format!(
                    "device {d:?}: topic {:?} has no level {level} (levels count from 0)",
                    s.topic
                ));
            }
            DeviceFrom {
                level,
                prefix: prefix.into(),
                suffix: suffix.into(),
            }
        }
        (None, Some(level)) => DeviceFrom {
            level,
            prefix: String::new(),
            suffix: String::new(),
        },
        (None, None) => {
            return Err(format!(
                "topic {:?}: say where the device id is: {{device}} in place of a level, or device = \"{{N}}\"",
                s.topic
            ));
        }
    };
    let qos = match s.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => return Err(format!("qos {}: must be 0 or 1", s.qos)),
    };
    let mapping = match &s.format {
        None => None,
        Some(name) => Some(formats.lookup(name).map_err(|e| e.to_string())?),
    };
    if let Some(t) = telemetry_filter
        && (topic_matches(&t.replace('+', "x"), &filter)
            || topic_matches(&filter.replace(['+', '#'], "x"), t))
    {
        return Err(format!(
            "topic {:?} would take in the bridge's own points (mqtt.topic {t:?}); subscribe to other topics",
            s.topic
        ));
    }
    Ok(Route {
        filter,
        qos,
        device,
        mapping,
    })
}

/// MQTT topic matching (`+` one level, `#` the rest).
pub fn topic_matches(topic: &str, filter: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(l)) if f == l => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

impl MqttConfig {
    /// Check `[[mqtt.subscribe]]` against the known formats.
    pub fn validate_subscriptions(&self, formats: &Formats) -> Result<(), ConfigError> {
        if self.subscribe.is_empty() {
            return Ok(());
        }
        let invalid = |detail: String| ConfigError::Invalid {
            key: "mqtt.subscribe",
            detail,
        };
        if !self.enabled() {
            return Err(invalid(
                "needs mqtt.url (the broker to subscribe on)".into(),
            ));
        }
        if self.client_id.is_none() {
            return Err(invalid(
                "needs a fixed mqtt.client_id: the broker keeps unacknowledged messages for that id across restarts".into(),
            ));
        }
        if self.ingest_inflight == 0 {
            return Err(ConfigError::Invalid {
                key: "mqtt.ingest_inflight",
                detail: "must be at least 1".into(),
            });
        }
        let telemetry = self.topics()?.telemetry.filter();
        for (i, s) in self.subscribe.iter().enumerate() {
            compile(i, s, formats, Some(&telemetry)).map_err(invalid)?;
        }
        if !self.ingest_error_topic.is_empty() {
            super::topic::Template::parse(&self.ingest_error_topic, &[super::topic::Var::Device])
                .map_err(|detail| ConfigError::Invalid {
                key: "mqtt.ingest_error_topic",
                detail,
            })?;
        }
        Ok(())
    }
}

/// Counters of the subscription ingest.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub received: AtomicU64,
    pub acked: AtomicU64,
    pub nacked: AtomicU64,
    /// Messages whose topic gave no valid device id.
    pub unroutable: AtomicU64,
}

/// The running subscriber.
pub struct Subscriber {
    task: JoinHandle<()>,
    pub stats: Arc<IngestStats>,
}

impl Subscriber {
    /// Wait (up to `grace`) for the subscriber to stop after shutdown.
    pub async fn shutdown(self, grace: Duration) {
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

/// Start subscribing, when `[[mqtt.subscribe]]` has entries.
pub fn start(
    config: &MqttConfig,
    ctx: IngestContext,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
) -> Result<Option<Subscriber>, MqttError> {
    if config.subscribe.is_empty() {
        return Ok(None);
    }
    let formats = ctx.decoder.config().formats.clone();
    let routes = config
        .subscribe
        .iter()
        .enumerate()
        .map(|(i, s)| compile(i, s, &formats, None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|detail| {
            MqttError::Config(ConfigError::Invalid {
                key: "mqtt.subscribe",
                detail,
            })
        })?;
    let client_id = format!(
        "{}-ingest",
        config.client_id.as_deref().unwrap_or("wsingest")
    );
    let mut options = super::options::build(config, &client_id)?;
    options.set_manual_acks(true);
    options.set_clean_session(false);
    let error_topic = (!config.ingest_error_topic.is_empty()).then(|| {
        super::topic::Template::parse(&config.ingest_error_topic, &[super::topic::Var::Device])
            .expect("validated")
    });
    let stats = Arc::new(IngestStats::default());
    let run = Run {
        routes: Arc::new(routes),
        ctx,
        limits,
        error_topic,
        stats: stats.clone(),
        inflight: config.ingest_inflight,
        backoff: (
            Duration::from_millis(config.reconnect_initial_ms),
            Duration::from_millis(config.reconnect_max_ms),
        ),
    };
    let task = tokio::spawn(run.run(options, shutdown));
    Ok(Some(Subscriber { task, stats }))
}

struct Run {
    routes: Arc<Vec<Route>>,
    ctx: IngestContext,
    limits: Arc<Limits>,
    error_topic: Option<super::topic::Template>,
    stats: Arc<IngestStats>,
    inflight: usize,
    backoff: (Duration, Duration),
}

impl Run {
    async fn run(self, options: rumqttc::MqttOptions, shutdown: CancellationToken) {
        let (client, mut events) = AsyncClient::new(options, 1024);
        let slots = Arc::new(Semaphore::new(self.inflight));
        let mut waiting: VecDeque<Publish> = VecDeque::new();
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let this = Arc::new(self);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned(), if !waiting.is_empty() => {
                    let p = waiting.pop_front().expect("not empty");
                    let slot = slot.expect("never closed");
                    let (this, client) = (this.clone(), client.clone());
                    tokio::spawn(async move { this.handle(p, client).await; drop(slot) });
                }
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        tracing::info!(subscriptions = this.routes.len(), "MQTT ingest connected");
                        for r in this.routes.iter() {
                            if let Err(e) = client.subscribe(r.filter.clone(), r.qos).await {
                                tracing::warn!(error = %e, filter = r.filter, "MQTT ingest: subscribe failed");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        this.stats.received.fetch_add(1, Ordering::Relaxed);
                        match slots.clone().try_acquire_owned() {
                            Ok(slot) if waiting.is_empty() => {
                                let (this, client) = (this.clone(), client.clone());
                                tokio::spawn(async move { this.handle(p, client).await; drop(slot) });
                            }
                            // The broker bounds what it sends us unacked (QoS 1).
                            _ => waiting.push_back(p),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let delay = backoff.next(None);
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT ingest: broker connection failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                },
            }
        }
        // Unacknowledged messages stay with the broker for the next start.
        let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
    }

    /// One message: ingest, wait for its outcome, then PUBACK.
    async fn handle(&self, p: Publish, client: AsyncClient) {
        let topic = p.topic.clone();
        let Some((route, device)) = self
            .routes
            .iter()
            .filter(|r| topic_matches(&topic, &r.filter))
            .find_map(|r| r.device.of(&topic).map(|d| (r, d)))
        else {
            self.stats.unroutable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                topic,
                "MQTT ingest: no device id in the topic; message acknowledged and dropped"
            );
            self.nacked(
                &client,
                &p,
                "unknown",
                None,
                "invalid_message",
                "the topic gives no valid device id",
            )
            .await;
            return;
        };
        let who = Identity {
            device: device.clone(),
            token: None,
            policy: Default::default(),
        };
        let dev: Arc<str> = device.as_str().into();
        let mut pause = Backoff::new(Duration::from_millis(200), self.backoff.1);
        loop {
            let (tx, mut rx) = mpsc::channel::<Outcome>(1);
            let permit = tx.try_reserve_owned().expect("a fresh channel has room");
            let mut limiter = self.limits.limiter(&who);
            let format = if p
                .payload
                .first()
                .is_some_and(|b| *b == b'{' || *b == b'[' || b.is_ascii_whitespace())
            {
                Format::Json
            } else {
                Format::Cbor
            };
            let submitted = self
                .ctx
                .submit_as(
                    &p.payload,
                    format,
                    route.mapping.as_deref(),
                    &device,
                    None,
                    Some(&mut limiter),
                    permit,
                )
                .await;
            let retry = match submitted {
                Submitted::Queued { .. } => {
                    match rx.recv().await.inspect(|o| self.ctx.settled(&dev, o, true)) {
                        Some(Outcome::Acked { .. }) => {
                            self.ack(&client, &p).await;
                            return;
                        }
                        Some(Outcome::Nacked(n)) if n.error == "storage_unavailable" => n.detail,
                        Some(Outcome::Nacked(n)) => {
                            return self
                                .nacked(&client, &p, &device, n.seq, n.error, &n.detail)
                                .await;
                        }
                        None => return, // shutting down: the broker keeps it
                    }
                }
                Submitted::Resent { .. } | Submitted::CommandResult { .. } => {
                    self.ack(&client, &p).await;
                    return;
                }
                Submitted::Refused(e) => {
                    return self
                        .nacked(&client, &p, &device, e.seq(), e.code(), &e.to_string())
                        .await;
                }
                Submitted::Limited { seq, refusal } => {
                    return self
                        .nacked(&client, &p, &device, seq, refusal.error, &refusal.detail)
                        .await;
                }
                Submitted::Overloaded { .. } => "the pipeline is full".to_string(),
                Submitted::ShuttingDown { .. } => return,
            };
            tracing::debug!(
                topic,
                reason = retry,
                "MQTT ingest: not stored yet; submitting again"
            );
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause.next(None)) => {}
            }
        }
    }

    async fn ack(&self, client: &AsyncClient, p: &Publish) {
        self.stats.acked.fetch_add(1, Ordering::Relaxed);
        if p.qos != QoS::AtMostOnce
            && let Err(e) = client.ack(p).await
        {
            tracing::warn!(error = %e, "MQTT ingest: could not acknowledge; the broker will deliver it again");
        }
    }

    async fn nacked(
        &self,
        client: &AsyncClient,
        p: &Publish,
        device: &str,
        seq: Option<u64>,
        error: &str,
        detail: &str,
    ) {
        self.stats.nacked.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            topic = p.topic,
            device,
            error,
            detail,
            "MQTT ingest: message refused"
        );
        if let Some(t) = &self.error_topic {
            let body = serde_json::json!({
                "nack": seq, "error": error, "detail": detail, "topic": p.topic, "device": device,
            });
            let topic = t.render(device, "");
            if let Err(e) = client
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    serde_json::to_vec(&body).expect("serializes"),
                )
                .await
            {
                tracing::warn!(error = %e, "MQTT ingest: could not publish the nack");
            }
        }
        // Delivering it again would be refused again.
        if p.qos != QoS::AtMostOnce {
            let _ = client.ack(p).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(topic: &str, device: Option<&str>, format: Option<&str>) -> Subscription {
        Subscription {
            topic: topic.into(),
            format: format.map(Into::into),
            device: device.map(Into::into),
            qos: 1,
        }
    }

    #[test]
    fn routes_and_device_ids() {
        let f = Formats::default();
        let r = compile(
            0,
            &sub("tele/{device}/SENSOR", None, Some("tasmota")),
            &f,
            None,
        )
        .unwrap();
        assert_eq!(r.filter, "tele/+/SENSOR");
        assert_eq!(r.device.of("tele/plug-1/SENSOR").as_deref(), Some("plug-1"));
        let r = compile(0, &sub("owntracks/+/+", Some("ot-{1}-{2}"), None), &f, None);
        assert!(r.is_err(), "one level only");
        let r = compile(
            0,
            &sub("owntracks/+/+", Some("ot-{2}"), Some("owntracks")),
            &f,
            None,
        )
        .unwrap();
        assert_eq!(
            r.device.of("owntracks/jane/phone").as_deref(),
            Some("ot-phone")
        );
        let e = compile(0, &sub("tele/+/SENSOR", None, None), &f, None).unwrap_err();
        assert!(e.contains("say where the device id is"), "{e}");
        let e = compile(
            0,
            &sub("tele/+/SENSOR", Some("{1}"), Some("nope")),
            &f,
            None,
        )
        .unwrap_err();
        assert!(e.contains("unknown format"), "{e}");
        let e = compile(
            0,
            &sub("telemetry/+/#", Some("{1}"), None),
            &f,
            Some("telemetry/+/+"),
        )
        .unwrap_err();
        assert!(e.contains("bridge's own points"), "{e}");
        assert!(
            compile(
                0,
                &sub("tele/+/SENSOR", Some("{1}"), None),
                &f,
                Some("telemetry/+/+")
            )
            .is_ok()
        );
    }

    #[test]
    fn matching() {
        assert!(topic_matches("tele/a/SENSOR", "tele/+/SENSOR"));
        assert!(!topic_matches("tele/a/STATE", "tele/+/SENSOR"));
        assert!(topic_matches("a/b/c", "a/#"));
        assert!(!topic_matches("a/b", "a/b/c"));
    }
}
