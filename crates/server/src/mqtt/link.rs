//! The connection to the broker, one rumqttc client and event loop per
//! connection ("epoch"), and the bookkeeping that tells which of our
//! publishes the broker confirmed.
//!
//! rumqttc reports `Outgoing::Publish(pkid)` when it writes a publish and
//! `Incoming::PubAck(pkid)` when the broker confirms one, but not which of
//! our requests a pkid belongs to. Within one event loop, requests are taken
//! from its channel in the order we sent them, and only the publisher task
//! sends publishes, so a FIFO of what we sent matches the `Outgoing::Publish`
//! events one for one (rumqttc emits the acked publish's `PubAck` before a
//! collided publish's `Publish`, so pkid reuse stays in order too).
//!
//! A new event loop per connection keeps that exact: when a connection
//! fails, everything sent on it and not confirmed is counted as dropped
//! (and `required` messages are nacked), the event loop is dropped with its
//! channel, and the next connection starts with an empty FIFO. rumqttc would
//! otherwise replay its pending requests in an order we cannot follow. The
//! cost: with a persistent session, QoS 1 publishes unconfirmed at the
//! moment of a disconnect are counted as dropped instead of resent.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ack_group::AckGroup;
use super::downlink::Downlink;
use super::{RateLimited, Stats};

/// What one publish counts towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Telemetry,
    Control,
}

struct Pending {
    kind: Kind,
    qos: QoS,
    group: Option<Arc<AckGroup>>,
    sent_at: Instant,
}

#[derive(Default)]
struct EpochState {
    epoch: u64,
    fifo: VecDeque<Pending>,
    by_pkid: HashMap<u16, Pending>,
}

/// A live connection, as the publisher sees it.
#[derive(Clone)]
pub struct Conn {
    pub client: AsyncClient,
    pub epoch: u64,
    abort: CancellationToken,
}

/// One publish to send.
pub struct OutMessage {
    pub kind: Kind,
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub payload: Vec<u8>,
    /// The `required` message it belongs to.
    pub group: Option<Arc<AckGroup>>,
}

/// The publish went nowhere: its connection ended first (already counted).
#[derive(Debug)]
pub struct Lost;

pub struct Link {
    state: Mutex<EpochState>,
    conn: watch::Sender<Option<Conn>>,
    stats: Arc<Stats>,
    stall_timeout: Duration,
    lost_log: RateLimited,
}

impl Link {
    pub fn new(stats: Arc<Stats>, stall_timeout: Duration) -> Link {
        Link {
            state: Mutex::new(EpochState::default()),
            conn: watch::channel(None).0,
            stats,
            stall_timeout,
            lost_log: RateLimited::new(Duration::from_secs(10)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, EpochState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follow the connection: `Some` while connected.
    pub fn watch(&self) -> watch::Receiver<Option<Conn>> {
        self.conn.subscribe()
    }

    /// The broker accepted the connection. `send_replace`, not `send`: the
    /// latter drops the value when nobody watches yet, and a publisher that
    /// subscribes a moment later would wait for a connection forever.
    fn connected(&self, conn: Conn) {
        self.conn.send_replace(Some(conn));
    }

    /// Number of publishes sent and not yet confirmed.
    pub fn outstanding(&self) -> usize {
        let s = self.state();
        s.fifo.len() + s.by_pkid.len()
    }

    /// Send one publish on `conn`. Waits while rumqttc's request channel is
    /// full; fails when the connection ended.
    pub async fn publish(&self, conn: &Conn, msg: OutMessage) -> Result<(), Lost> {
        let OutMessage {
            kind,
            topic,
            qos,
            retain,
            payload,
            group,
        } = msg;
        {
            let mut s = self.state();
            if s.epoch != conn.epoch {
                drop(s);
                self.count_lost(kind, 1, group.as_deref());
                return Err(Lost);
            }
            s.fifo.push_back(Pending {
                kind,
                qos,
                group,
                sent_at: Instant::now(),
            });
        }
        // Topics come from checked templates, so rumqttc's only refusal is a
        // closed channel: the event loop is gone and its epoch's end already
        // counted this publish. Should it refuse one anyway while the epoch
        // lives, the FIFO would be out of step: end the connection.
        if conn
            .client
            .publish(topic, qos, retain, payload)
            .await
            .is_err()
        {
            if self.state().epoch == conn.epoch {
                tracing::error!("MQTT publish refused by the client; reconnecting");
                conn.abort.cancel();
            }
            return Err(Lost);
        }
        Ok(())
    }

    fn begin_epoch(&self) -> u64 {
        let mut s = self.state();
        s.epoch += 1;
        s.epoch
    }

    /// The connection of `epoch` is over: nothing unconfirmed will be.
    fn end_epoch(&self, epoch: u64, reason: &str) {
        let lost: Vec<Pending> = {
            let mut s = self.state();
            if s.epoch != epoch {
                return;
            }
            s.epoch += 1;
            let mut lost: Vec<Pending> = s.fifo.drain(..).collect();
            lost.extend(s.by_pkid.drain().map(|(_, p)| p));
            lost
        };
        self.conn.send_replace(None);
        self.stats.connected.store(false, Ordering::Relaxed);
        for p in &lost {
            self.count_lost(p.kind, 1, None);
            if let Some(g) = &p.group {
                g.fail(&format!("the connection to the MQTT broker ended before it confirmed the points ({reason})"));
            }
        }
    }

    fn count_lost(&self, kind: Kind, n: u64, group: Option<&AckGroup>) {
        match kind {
            Kind::Telemetry => self.stats.telemetry_dropped("connection_lost", n),
            Kind::Control => {
                self.stats.control_dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
        if let Some(g) = group {
            g.fail("the connection to the MQTT broker ended before the points were sent");
        }
        if let Some(count) = self.lost_log.hit(n) {
            tracing::warn!(
                count,
                "MQTT messages lost with their connection to the broker"
            );
        }
    }

    fn confirmed(&self, p: Pending) {
        match p.kind {
            Kind::Telemetry => self.stats.telemetry_published(1),
            Kind::Control => {
                self.stats.control_published.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(g) = p.group {
            g.one_done();
        }
    }

    /// rumqttc wrote a publish. `false` when the FIFO does not match (a bug
    /// or an unexpected rumqttc behaviour): the caller then reconnects.
    fn written(&self, epoch: u64, pkid: u16) -> bool {
        let mut s = self.state();
        if s.epoch != epoch {
            return true;
        }
        let Some(front) = s.fifo.pop_front() else {
            return false;
        };
        match (pkid, front.qos) {
            (0, QoS::AtMostOnce) => {
                drop(s);
                self.confirmed(front);
                true
            }
            (pkid, QoS::AtLeastOnce) if pkid != 0 => s.by_pkid.insert(pkid, front).is_none(),
            _ => false,
        }
    }

    fn puback(&self, epoch: u64, pkid: u16) {
        let p = {
            let mut s = self.state();
            if s.epoch != epoch {
                return;
            }
            s.by_pkid.remove(&pkid)
        };
        match p {
            Some(p) => self.confirmed(p),
            None => tracing::debug!(pkid, "PUBACK for a publish we do not track"),
        }
    }

    /// Resolves when a publish of `epoch` has waited longer than the stall
    /// timeout: the broker stopped confirming and the connection is dropped.
    async fn stalled(&self, epoch: u64) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let s = self.state();
            if s.epoch != epoch {
                continue;
            }
            let oldest = s
                .fifo
                .front()
                .map(|p| p.sent_at)
                .into_iter()
                .chain(s.by_pkid.values().map(|p| p.sent_at))
                .min();
            if oldest.is_some_and(|t| t.elapsed() > self.stall_timeout) {
                return;
            }
        }
    }
}

pub use wsingest_proto::backoff::Backoff;

/// Keep a connection to the broker until `finished`: connect, subscribe,
/// drive the event loop, hand incoming messages to `downlink`, and on any
/// error start a new epoch after a backoff.
pub async fn run(
    link: Arc<Link>,
    options: MqttOptions,
    subscriptions: Vec<String>,
    downlink: Downlink,
    mut backoff: Backoff,
    finished: CancellationToken,
) {
    let fail_log = RateLimited::new(Duration::from_secs(10));
    loop {
        let (client, mut eventloop) = AsyncClient::new(options.clone(), 64);
        eventloop.network_options.set_connection_timeout(5);
        let epoch = link.begin_epoch();
        let abort = CancellationToken::new();
        let reason = drive(
            &link,
            epoch,
            &client,
            &mut eventloop,
            &subscriptions,
            &downlink,
            &abort,
            &mut backoff,
            &finished,
        )
        .await;
        link.end_epoch(epoch, &reason);
        drop(eventloop);
        if finished.is_cancelled() {
            return;
        }
        let delay = backoff.next(None);
        if let Some(failures) = fail_log.hit(1) {
            tracing::warn!(error = %reason, failures, retry_in_ms = delay.as_millis() as u64, "MQTT broker connection failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = finished.cancelled() => return,
        }
    }
}

/// One epoch; returns why it ended.
#[allow(clippy::too_many_arguments)]
async fn drive(
    link: &Link,
    epoch: u64,
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    subscriptions: &[String],
    downlink: &Downlink,
    abort: &CancellationToken,
    backoff: &mut Backoff,
    finished: &CancellationToken,
) -> String {
    loop {
        // Only branches that end the epoch may cancel `poll`: rumqttc's event
        // loop is not cancel safe, and it is dropped right after.
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = abort.cancelled() => return "reconnecting after a client error".into(),
            _ = link.stalled(epoch) => return "the broker stopped confirming publishes".into(),
            _ = finished.cancelled() => return "bridge stopped".into(),
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                if !subscriptions.is_empty() {
                    let filters = subscriptions
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        return format!("cannot subscribe: {e}");
                    }
                }
                let n = link.stats.connects.fetch_add(1, Ordering::Relaxed);
                link.stats.connected.store(true, Ordering::Relaxed);
                tracing::info!(
                    session_present = ack.session_present,
                    reconnect = n > 0,
                    "connected to the MQTT broker"
                );
                link.connected(Conn {
                    client: client.clone(),
                    epoch,
                    abort: abort.clone(),
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => downlink.handle(&p.topic, &p.payload),
            Ok(Event::Incoming(Packet::PubAck(a))) => link.puback(epoch, a.pkid),
            Ok(Event::Incoming(Packet::SubAck(s))) => {
                if s.return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    tracing::error!(filters = ?subscriptions, "the broker refused our command subscriptions");
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if !link.written(epoch, pkid) {
                    return "publish bookkeeping out of step with the client".into();
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return "disconnected".into(),
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The publisher may subscribe after the event loop saw the ConnAck (it
    /// runs in its own task): it must still find the connection, and then
    /// see it end.
    #[tokio::test]
    async fn a_late_watcher_sees_the_connection_and_its_end() {
        let link = Link::new(Arc::new(Stats::default()), Duration::from_secs(5));
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 8);
        let epoch = link.begin_epoch();
        link.connected(Conn {
            client,
            epoch,
            abort: CancellationToken::new(),
        });
        let mut w = link.watch();
        assert_eq!(w.borrow_and_update().as_ref().map(|c| c.epoch), Some(epoch));
        link.end_epoch(epoch, "test");
        w.changed().await.unwrap();
        assert!(w.borrow().is_none());
    }
}
