//! Where batches go: the InfluxDB writer ([`writer::InfluxSink`]), with its
//! HTTP client ([`influx`]), retry policy ([`retry`]) and dead-letter file
//! ([`deadletter`]); the disk spool for batches it cannot write now
//! ([`spool`]); and [`blackhole::Blackhole`], which discards.

pub mod blackhole;
pub mod deadletter;
pub mod deadletter_ops;
pub mod health;
pub mod influx;
pub mod lineparse;
pub mod retry;
pub mod spool;
pub mod writer;

use std::future::Future;
use std::pin::Pin;

use crate::batch::Batch;

/// A destination for batches. `deliver` must answer every entry's reply
/// (ack or nack) or drop it (the device then resends after reconnecting).
pub trait Sink: Send + Sync + 'static {
    fn deliver(&self, batch: Batch) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// Whether the sink can take data now (for `/readyz`).
    fn ready(&self) -> bool;

    /// [`Self::ready`] with the reason, for `/readyz`'s body.
    fn readiness(&self) -> health::Readiness {
        let ready = self.ready();
        health::Readiness {
            ready,
            reason: if ready {
                "ready"
            } else {
                "not ready: the sink cannot take data"
            }
            .into(),
        }
    }
}
