//! A plain MQTT client for tests (rumqttc): subscribes, collects what the
//! broker delivers, publishes commands.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// One message received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Received {
    /// The payload as JSON (or CBOR converted to JSON).
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.payload) {
            Ok(v) => v,
            Err(_) => {
                let v: ciborium::Value =
                    ciborium::from_reader(&self.payload[..]).unwrap_or_else(|e| {
                        panic!("payload on {} is neither JSON nor CBOR: {e}", self.topic)
                    });
                serde_json::to_value(v).unwrap()
            }
        }
    }
}

pub struct MqttProbe {
    pub client: AsyncClient,
    rx: mpsc::Receiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttProbe {
    /// Connect to the broker on `port` and subscribe to `filters`; returns
    /// once the broker acknowledged the subscription.
    pub async fn connect(port: u16, filters: &[&str]) -> MqttProbe {
        let id = format!("probe-{:08x}", rand::random::<u32>());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
        }
        let (tx, rx) = mpsc::channel(100_000);
        let (ready_tx, mut ready_rx) = mpsc::channel(16);
        let expected = filters.len();
        let task = tokio::spawn(async move {
            let mut acked = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acked += 1;
                        if acked == expected {
                            let _ = ready_tx.send(()).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx
                            .send(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                            })
                            .await;
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        if expected > 0 {
            tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
                .await
                .expect("the broker acknowledges the probe's subscriptions within 10 s");
        }
        MqttProbe { client, rx, task }
    }

    /// The next message, or panic after `secs`.
    pub async fn next(&mut self, secs: u64) -> Received {
        tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no MQTT message within {secs} s"))
            .expect("probe running")
    }

    /// Every message until `n` of them match `wanted` (the others too, in
    /// order); panics after `secs` with how many matched.
    pub async fn until(
        &mut self,
        secs: u64,
        n: usize,
        wanted: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        let mut matched = 0;
        while matched < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    matched += usize::from(wanted(&m));
                    out.push(m);
                }
                Ok(None) => panic!("the MQTT probe stopped"),
                Err(_) => panic!("{matched} of {n} MQTT messages within {secs} s"),
            }
        }
        out
    }

    /// Messages received until none came for `wait` (for "and no more").
    pub async fn drain(&mut self, wait: Duration) -> Vec<Received> {
        let mut out = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(wait, self.rx.recv()).await {
            out.push(m);
        }
        out
    }

    /// Publish JSON with QoS 1.
    pub async fn publish_json(&self, topic: &str, v: serde_json::Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, v.to_string().into_bytes())
            .await
            .unwrap();
    }
}

impl Drop for MqttProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}
