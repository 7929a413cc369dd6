//! Test devices that stream numbered messages and collect their acks, for
//! the load in fault tests (a crash or an outage in the middle of a run).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Builds the message with a given seq.
pub type MakeMessage = Arc<dyn Fn(u64) -> serde_json::Value + Send + Sync>;

/// What one device run saw.
#[derive(Debug, Default, Clone)]
pub struct DeviceReport {
    /// Seqs handed to the socket.
    pub sent: Vec<u64>,
    pub acked: BTreeSet<u64>,
    /// Nacks, as (seq, error).
    pub nacked: Vec<(Option<u64>, String)>,
    /// The close code the server sent, if it closed the session.
    pub close_code: Option<u16>,
}

/// How a device runs.
#[derive(Clone)]
pub struct DeviceSpec {
    pub url: String,
    /// The seqs to send, in order; `make` builds each message (on the fly,
    /// so a device can be told to send more than fits in memory).
    pub seqs: Vec<u64>,
    pub make: MakeMessage,
    /// Pause between two messages.
    pub gap: Duration,
    /// After sending, how long to wait for the remaining acks.
    pub settle: Duration,
    /// Stop sending early.
    pub stop: CancellationToken,
    /// Counts acks as they come, shared by a fleet (to watch progress).
    pub acks: Arc<AtomicU64>,
}

/// Connect, send every message (until the connection ends or `stop`), then
/// wait for outstanding acks; returns what happened. A refused connection is
/// an empty report.
pub async fn run_device(spec: DeviceSpec) -> DeviceReport {
    let mut report = DeviceReport::default();
    let Ok((ws, _)) = tokio_tungstenite::connect_async(spec.url.as_str()).await else {
        return report;
    };
    let (mut tx, mut rx) = ws.split();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let nacked = Arc::new(Mutex::new(Vec::new()));
    let closed = CancellationToken::new();
    let reader = {
        let (acked, nacked, closed, acks) = (
            acked.clone(),
            nacked.clone(),
            closed.clone(),
            spec.acks.clone(),
        );
        tokio::spawn(async move {
            let mut code = None;
            while let Some(Ok(msg)) = rx.next().await {
                let v: serde_json::Value = match msg {
                    Message::Text(t) => serde_json::from_str(&t).unwrap(),
                    Message::Close(c) => {
                        code = c.map(|c| u16::from(c.code));
                        break;
                    }
                    _ => continue,
                };
                if let Some(seq) = v["ack"].as_u64() {
                    acked.lock().unwrap().insert(seq);
                    acks.fetch_add(1, Ordering::Relaxed);
                } else if v.get("nack").is_some() {
                    let error = v["error"].as_str().unwrap_or("").to_string();
                    nacked.lock().unwrap().push((v["nack"].as_u64(), error));
                }
            }
            closed.cancel();
            code
        })
    };
    for &seq in &spec.seqs {
        let text = (spec.make)(seq).to_string();
        tokio::select! {
            biased;
            _ = spec.stop.cancelled() => break,
            _ = closed.cancelled() => break,
            r = tx.send(Message::text(text)) => {
                if r.is_err() {
                    break;
                }
                report.sent.push(seq);
            }
        }
        if !spec.gap.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(spec.gap) => {}
                _ = spec.stop.cancelled() => break,
                _ = closed.cancelled() => break,
            }
        }
    }
    let deadline = tokio::time::Instant::now() + spec.settle;
    while !closed.is_cancelled() && tokio::time::Instant::now() < deadline {
        if report
            .sent
            .iter()
            .all(|s| acked.lock().unwrap().contains(s))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tx.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), closed.cancelled()).await;
    reader.abort();
    report.close_code = reader.await.ok().flatten();
    report.acked = acked.lock().unwrap().clone();
    report.nacked = nacked.lock().unwrap().clone();
    report
}
