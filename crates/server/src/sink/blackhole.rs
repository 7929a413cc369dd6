//! A sink that discards every batch after decode and acks it at once: for
//! benchmarks of the ingest path alone (`--sink blackhole`) and for users
//! testing devices without a database. Nothing it acks is stored.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Sink;
use crate::batch::Batch;

#[derive(Default)]
pub struct Blackhole {
    points: AtomicU64,
}

impl Blackhole {
    /// Points discarded so far.
    pub fn points(&self) -> u64 {
        self.points.load(Ordering::Relaxed)
    }
}

impl Sink for Blackhole {
    fn deliver(&self, batch: Batch) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.points
            .fetch_add(batch.points as u64, Ordering::Relaxed);
        for e in batch.entries {
            e.reply.ack();
        }
        Box::pin(std::future::ready(()))
    }

    fn ready(&self) -> bool {
        true
    }
}
