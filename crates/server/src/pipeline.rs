//! The bounded path from sessions to the writer:
//! session → bounded queue → batcher (size/time) → N concurrent writes.
//!
//! Every message carries a [`Reply`]: a slot reserved in its session's own
//! bounded outcome channel. The writer answers through it without ever
//! waiting on a slow session, and a session cannot have more messages in
//! flight than its channel holds. When the queue is full, sessions wait to
//! enqueue and so stop reading their sockets (TCP backpressure).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::{Batch, Batcher};
use crate::sink::Sink;

pub use crate::entry::{Entry, OnAck, Outcome, Reply};

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub queue_capacity: usize,
    pub batch_points: usize,
    pub batch_bytes: usize,
    pub flush_interval: Duration,
    pub concurrency: usize,
}

/// The sessions' end of the pipeline.
#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<Entry>,
}

impl Pipeline {
    /// Enqueue a message, waiting while the queue is full. Fails only when the
    /// pipeline has stopped (the entry's reply is dropped with it).
    pub async fn send(&self, entry: Entry) -> Result<(), Entry> {
        self.tx.send(entry).await.map_err(|e| e.0)
    }

    /// Messages waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Start the batcher. It flushes at once when `shutdown` fires, and exits
/// after `drain` fires and the queue is empty, once every write finished.
pub fn start(
    config: PipelineConfig,
    sink: Arc<dyn Sink>,
    shutdown: CancellationToken,
    drain: CancellationToken,
) -> (Pipeline, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let task = tokio::spawn(run_batcher(config, sink, rx, shutdown, drain));
    (Pipeline { tx }, task)
}

async fn run_batcher(
    config: PipelineConfig,
    sink: Arc<dyn Sink>,
    mut rx: mpsc::Receiver<Entry>,
    shutdown: CancellationToken,
    drain: CancellationToken,
) {
    let writes = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut batcher = Batcher::new(config.batch_points, config.batch_bytes);
    let mut deadline: Option<Instant> = None;
    let mut closing = false;
    // One timer, moved when the deadline changes: a new `Sleep` per loop turn
    // registered and dropped a timer-wheel entry per message (~10 % of the
    // server's CPU on single-point messages).
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;

    let dispatch = |batch: Batch| {
        let sink = sink.clone();
        let slots = slots.clone();
        let writes = writes.clone();
        async move {
            if batch.is_empty() {
                return;
            }
            // Waiting here is the backpressure: the queue fills behind us.
            let permit = slots.acquire_owned().await.expect("semaphore never closed");
            writes.spawn(async move {
                sink.deliver(batch).await;
                drop(permit);
            });
        }
    };

    loop {
        if let Some(d) = deadline
            && armed != Some(d)
        {
            timer.as_mut().reset(d);
            armed = Some(d);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                dispatch(batcher.take()).await;
                deadline = None;
            }
            _ = drain.cancelled() => {
                while let Ok(entry) = rx.try_recv() {
                    if let Some(batch) = batcher.push(entry) {
                        dispatch(batch).await;
                    }
                }
                dispatch(batcher.take()).await;
                break;
            }
            _ = &mut timer, if deadline.is_some() => {
                dispatch(batcher.take()).await;
                deadline = None;
            }
            entry = rx.recv() => {
                let Some(entry) = entry else {
                    dispatch(batcher.take()).await;
                    break;
                };
                if batcher.is_empty() {
                    deadline = Some(Instant::now() + config.flush_interval);
                }
                if let Some(batch) = batcher.push(entry) {
                    dispatch(batch).await;
                    deadline = None;
                } else if closing {
                    // Shutting down: no point waiting for more.
                    dispatch(batcher.take()).await;
                    deadline = None;
                }
            }
        }
    }
    writes.close();
    writes.wait().await;
}

/// Sleep until `deadline`, or forever when there is none (a disabled
/// `select!` timer).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
