//! The WebSocket load driver of the benchmarks: `devices` connections, each
//! sending pre-built messages with `seq`, keeping at most `window` unacked,
//! optionally paced, recording the ack latency of every message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::BenchError;

/// How each device's messages are made: `(device index, seq) -> message`.
pub type MakeMessage = Arc<dyn Fn(usize, u64) -> Message + Send + Sync>;

#[derive(Clone)]
pub struct LoadSpec {
    pub url: String,
    pub devices: usize,
    pub messages_per_device: u64,
    pub window: usize,
    /// Messages per second per device; `None`: as fast as acks allow.
    pub rate_per_device: Option<f64>,
    pub make: MakeMessage,
    pub timeout: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub elapsed: Duration,
    pub acked: u64,
    pub nacked: u64,
    /// Ack latencies in microseconds, unsorted.
    pub latencies_us: Vec<u64>,
    pub bytes_sent: u64,
}

impl LoadResult {
    pub fn msgs_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile in milliseconds (`q` in 0..=1).
    pub fn percentile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Run the load; fails if a device cannot connect or not everything was
/// answered within `timeout`.
pub async fn run(spec: LoadSpec) -> Result<LoadResult, BenchError> {
    let mut conns = Vec::with_capacity(spec.devices);
    for d in 0..spec.devices {
        let url = format!("{}/v1/devices/bench-{d}", spec.url);
        let req = url
            .as_str()
            .into_client_request()
            .map_err(|e| BenchError::Load(e.to_string()))?;
        // TCP_NODELAY, as devices should and the server does: with Nagle on, a
        // message waits for the ACK of the previous one, which the server may
        // delay ~40 ms while it has nothing to send (acks come per batch).
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
            .await
            .map_err(|e| BenchError::Load(format!("connect {url}: {e}")))?;
        conns.push(ws);
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(spec.devices);
    for (d, ws) in conns.into_iter().enumerate() {
        let spec = spec.clone();
        tasks.push(tokio::spawn(
            async move { device(d, ws, spec, start).await },
        ));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        let r = tokio::time::timeout(spec.timeout, t)
            .await
            .map_err(|_| {
                BenchError::Load(format!(
                    "not all messages answered within {:?}",
                    spec.timeout
                ))
            })?
            .map_err(|e| BenchError::Load(e.to_string()))??;
        total.acked += r.acked;
        total.nacked += r.nacked;
        total.bytes_sent += r.bytes_sent;
        total.latencies_us.extend(r.latencies_us);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

async fn device(
    d: usize,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    spec: LoadSpec,
    start: Instant,
) -> Result<LoadResult, BenchError> {
    let (mut tx, mut rx) = ws.split();
    let n = spec.messages_per_device;
    let window = Arc::new(Semaphore::new(spec.window));
    let sent_at: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..n)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
    );
    let sender = {
        let window = window.clone();
        let sent_at = sent_at.clone();
        let make = spec.make.clone();
        let rate = spec.rate_per_device;
        tokio::spawn(async move {
            let mut bytes = 0u64;
            for seq in 0..n {
                window.acquire().await.expect("open").forget();
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(seq as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let msg = make(d, seq);
                bytes += msg.len() as u64;
                sent_at[seq as usize].store(
                    start.elapsed().as_micros() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                // Feed without flushing while more are ready: fewer syscalls.
                if window.available_permits() > 0 && rate.is_none() && seq + 1 < n {
                    tx.feed(msg).await?;
                } else {
                    tx.send(msg).await?;
                }
            }
            tx.flush().await?;
            Ok::<_, tokio_tungstenite::tungstenite::Error>((tx, bytes))
        })
    };
    let mut result = LoadResult::default();
    while result.acked + result.nacked < n {
        let msg = match rx.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(BenchError::Load(format!("device {d}: {e}"))),
            None => {
                return Err(BenchError::Load(format!(
                    "device {d}: connection closed early"
                )));
            }
        };
        let v: serde_json::Value = match msg {
            Message::Text(t) => serde_json::from_str(&t).unwrap_or_default(),
            Message::Binary(b) => ciborium::from_reader::<ciborium::Value, _>(&b[..])
                .ok()
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or_default(),
            Message::Close(c) => {
                return Err(BenchError::Load(format!(
                    "device {d}: closed by server: {c:?}"
                )));
            }
            _ => continue,
        };
        let seq = if let Some(seq) = v["ack"].as_u64() {
            result.acked += 1;
            seq
        } else if let Some(seq) = v["nack"].as_u64() {
            result.nacked += 1;
            seq
        } else {
            continue;
        };
        if let Some(at) = sent_at.get(seq as usize) {
            let now = start.elapsed().as_micros() as u64;
            result
                .latencies_us
                .push(now.saturating_sub(at.load(std::sync::atomic::Ordering::Relaxed)));
        }
        window.add_permits(1);
    }
    let (mut tx, bytes) = sender
        .await
        .map_err(|e| BenchError::Load(e.to_string()))?
        .map_err(|e| BenchError::Load(e.to_string()))?;
    result.bytes_sent = bytes;
    let _ = tx.close().await;
    Ok(result)
}
