//! The bounded path from sessions to the writer:
//! session → bounded queue → batcher → N concurrent writes.
//!
//! Group commit: a batch is written as soon as one of the `concurrency`
//! write slots is free, with whatever arrived since the last write (up to
//! the size cap). A lone message waits for nothing but its own write; under
//! load the slots are busy and batches grow by themselves, so the write rate
//! follows the database's pace instead of a timer. While every slot is busy
//! a batch closes when it is full or `flush_interval` old; a closed batch is
//! written first at the next free slot while the next one gathers, and with
//! two closed batches the batcher stops taking messages (backpressure).
//!
//! Every message carries a [`Reply`]: a slot reserved in its session's own
//! bounded outcome channel. The writer answers through it without ever
//! waiting on a slow session, and a session cannot have more messages in
//! flight than its channel holds. When the queue is full, sessions wait to
//! enqueue and so stop reading their sockets (TCP backpressure).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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

    /// Enqueue a message if the queue has room now.
    // The entry comes back by value so the caller can wait with it (the slow
    // path); boxing the error would allocate on every full queue instead.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, entry: Entry) -> Result<(), mpsc::error::TrySendError<Entry>> {
        self.tx.try_send(entry)
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
    // A batch closed while every slot was busy (full, or `flush_interval`
    // old): the next free slot writes it, while the next batch gathers.
    let mut waiting: Option<Batch> = None;
    // When the open batch got its first message.
    let mut opened: Option<Instant> = None;
    let mut closing = false;
    // One timer, moved when the deadline changes: a new `Sleep` per loop turn
    // registered and dropped a timer-wheel entry per message (~10 % of the
    // server's CPU on single-point messages).
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;

    let write = |batch: Batch, permit: OwnedSemaphorePermit| {
        if batch.is_empty() {
            return;
        }
        let sink = sink.clone();
        writes.spawn(async move {
            sink.deliver(batch).await;
            drop(permit);
        });
    };

    loop {
        // Group commit: a free slot writes at once whatever is there, so a
        // lone message waits for nothing but its write, and under load the
        // batches grow by themselves while the slots are busy.
        if (waiting.is_some() || !batcher.is_empty())
            && let Ok(permit) = slots.clone().try_acquire_owned()
        {
            write(next_batch(&mut waiting, &mut batcher, &mut rx), permit);
            if batcher.is_empty() {
                opened = None;
            }
            continue;
        }
        let has_work = waiting.is_some() || !batcher.is_empty();
        let deadline = opened
            .filter(|_| waiting.is_none() && !closing)
            .map(|t| t + config.flush_interval);
        if let Some(d) = deadline
            && armed != Some(d)
        {
            timer.as_mut().reset(d);
            armed = Some(d);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !closing => {
                // Stop lingering: what is gathered goes at the next free slot.
                closing = true;
            }
            _ = drain.cancelled() => {
                if let Some(batch) = waiting.take() {
                    write(batch, acquire(&slots).await);
                }
                while let Ok(entry) = rx.try_recv() {
                    if let Some(batch) = batcher.push(entry) {
                        write(batch, acquire(&slots).await);
                    }
                }
                write(batcher.take(), acquire(&slots).await);
                break;
            }
            permit = slots.clone().acquire_owned(), if has_work => {
                let permit = permit.expect("semaphore never closed");
                write(next_batch(&mut waiting, &mut batcher, &mut rx), permit);
                if batcher.is_empty() {
                    opened = None;
                }
            }
            _ = &mut timer, if deadline.is_some() => {
                // Every slot stayed busy for `flush_interval`: close this
                // batch; it goes first when a slot frees.
                waiting = Some(batcher.take());
                opened = None;
            }
            entry = rx.recv() => {
                let Some(entry) = entry else {
                    if let Some(batch) = waiting.take() {
                        write(batch, acquire(&slots).await);
                    }
                    write(batcher.take(), acquire(&slots).await);
                    break;
                };
                if batcher.is_empty() {
                    opened = Some(Instant::now());
                }
                if let Some(full) = batcher.push(entry) {
                    opened = None;
                    if let Some(older) = waiting.take() {
                        // Two closed batches and no slot: waiting here is
                        // the backpressure (the queue fills behind us).
                        write(older, acquire(&slots).await);
                    }
                    waiting = Some(full);
                }
            }
        }
    }
    writes.close();
    writes.wait().await;
}

/// The batch a free slot writes: the closed one waiting, else the open one
/// with what is queued already added (up to its size cap).
fn next_batch(
    waiting: &mut Option<Batch>,
    batcher: &mut Batcher,
    rx: &mut mpsc::Receiver<Entry>,
) -> Batch {
    if let Some(batch) = waiting.take() {
        return batch;
    }
    while let Ok(entry) = rx.try_recv() {
        if let Some(full) = batcher.push(entry) {
            return full;
        }
    }
    batcher.take()
}

async fn acquire(slots: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    slots
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore never closed")
}

/// Sleep until `deadline`, or forever when there is none (a disabled
/// `select!` timer).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    /// A sink that records each batch's message count and holds every write
    /// until `release` gives it a permit.
    struct Gate {
        sizes: Mutex<Vec<usize>>,
        release: Semaphore,
    }

    impl Sink for Gate {
        fn deliver(&self, batch: Batch) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            self.sizes.lock().unwrap().push(batch.entries.len());
            Box::pin(async move {
                self.release.acquire().await.unwrap().forget();
                for e in batch.entries {
                    e.reply.ack();
                }
            })
        }

        fn ready(&self) -> bool {
            true
        }
    }

    fn config(concurrency: usize, flush: Duration) -> PipelineConfig {
        PipelineConfig {
            queue_capacity: 64,
            batch_points: 1000,
            batch_bytes: 1 << 20,
            flush_interval: flush,
            concurrency,
        }
    }

    async fn send(p: &Pipeline, tx: &mpsc::Sender<Outcome>, seq: u64) {
        let permit = tx.clone().try_reserve_owned().unwrap();
        let entry = Entry {
            lines: b"m v=1\n".to_vec(),
            points: 1,
            reply: Reply::new(Some(seq), permit),
        };
        p.send(entry).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_message_is_written_at_once_not_after_the_flush_interval() {
        let gate = Arc::new(Gate {
            sizes: Mutex::default(),
            release: Semaphore::new(100),
        });
        let (p, _task) = start(
            config(4, Duration::from_secs(3600)),
            gate.clone(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let started = Instant::now();
        send(&p, &tx, 1).await;
        assert_eq!(rx.recv().await, Some(Outcome::Acked { seq: Some(1) }));
        // Paused time jumps to the next timer when everything idles: had the
        // batch waited for the flush timer, an hour would have passed.
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn batches_grow_while_every_slot_is_busy() {
        let gate = Arc::new(Gate {
            sizes: Mutex::default(),
            release: Semaphore::new(0),
        });
        let (p, _task) = start(
            config(1, Duration::from_secs(3600)),
            gate.clone(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let (tx, mut rx) = mpsc::channel(16);
        send(&p, &tx, 1).await;
        tokio::task::yield_now().await;
        for seq in 2..=4 {
            send(&p, &tx, seq).await;
        }
        gate.release.add_permits(100);
        for _ in 0..4 {
            rx.recv().await.unwrap();
        }
        assert_eq!(*gate.sizes.lock().unwrap(), vec![1, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_waiting_for_a_slot_closes_after_the_flush_interval() {
        let gate = Arc::new(Gate {
            sizes: Mutex::default(),
            release: Semaphore::new(0),
        });
        let (p, _task) = start(
            config(1, Duration::from_millis(100)),
            gate.clone(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let (tx, mut rx) = mpsc::channel(16);
        send(&p, &tx, 1).await; // written at once, holds the only slot
        tokio::task::yield_now().await;
        send(&p, &tx, 2).await;
        tokio::time::sleep(Duration::from_millis(150)).await; // batch [2] closed
        send(&p, &tx, 3).await;
        send(&p, &tx, 4).await;
        gate.release.add_permits(100);
        for _ in 0..4 {
            rx.recv().await.unwrap();
        }
        assert_eq!(*gate.sizes.lock().unwrap(), vec![1, 1, 2]);
    }
}
