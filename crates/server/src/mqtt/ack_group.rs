//! The answer of a message sent with `mqtt.required = true`: acked once the
//! broker confirmed every one of its publishes, nacked at the first failure.
//! Shared by the publisher (`uplink`) and the connection (`link`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::Stats;
use crate::entry::Outcome;

/// The nack `error` when the broker did not take a `required` message.
pub const NACK_CODE: &str = "bridge_unavailable";

/// A device's pending ack under `mqtt.required`.
pub struct RequiredReply {
    pub(super) seq: Option<u64>,
    pub(super) permit: mpsc::OwnedPermit<Outcome>,
}

impl RequiredReply {
    pub(super) fn ack(self) {
        self.permit.send(Outcome::Acked { seq: self.seq });
    }

    pub(super) fn nack(self, detail: &str) {
        self.permit
            .send(Outcome::nacked(self.seq, NACK_CODE, detail.to_string()));
    }
}

/// The publishes of one `required` message: acked when all are confirmed,
/// nacked at the first failure.
pub struct AckGroup {
    remaining: AtomicUsize,
    reply: Mutex<Option<RequiredReply>>,
    stats: Arc<Stats>,
}

impl AckGroup {
    pub(super) fn new(n: usize, reply: RequiredReply, stats: Arc<Stats>) -> Arc<AckGroup> {
        Arc::new(AckGroup {
            remaining: AtomicUsize::new(n),
            reply: Mutex::new(Some(reply)),
            stats,
        })
    }

    fn take(&self) -> Option<RequiredReply> {
        self.reply.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn one_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(r) = self.take()
        {
            r.ack();
        }
    }

    pub fn fail(&self, detail: &str) {
        if let Some(r) = self.take() {
            self.stats.nacked.fetch_add(1, Ordering::Relaxed);
            r.nack(&format!("{detail}; resend later"));
        }
    }
}
