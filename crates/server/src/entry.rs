//! One message on its way to the database, and the way back to whoever sent
//! it: the line protocol of its points, and a [`Reply`] holding a slot in the
//! sender's own bounded outcome channel (so the writer answers without ever
//! waiting on a slow sender). A leaf: the pipeline, the batcher, the sinks and
//! the transports all use it.

use tokio::sync::mpsc;

/// What became of a message. 16 bytes: every session's outcome channel
/// allocates room for 32 of them up front, so the rare nack is boxed.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Durable in the database.
    Acked {
        seq: Option<u64>,
    },
    Nacked(Box<Nack>),
}

/// Why a message was not stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Nack {
    pub seq: Option<u64>,
    pub error: &'static str,
    pub detail: String,
}

impl Outcome {
    pub fn nacked(seq: Option<u64>, error: &'static str, detail: impl Into<String>) -> Outcome {
        Outcome::Nacked(Box::new(Nack {
            seq,
            error,
            detail: detail.into(),
        }))
    }
}

/// What to do once a message is durable instead of acking it at once: the
/// MQTT bridge publishes its points, and with `mqtt.required` acks only once
/// the broker has them. The pipeline knows no more of it than this.
pub trait OnAck: Send + std::fmt::Debug {
    /// The message is durable; answer through `permit` (now or later).
    fn acked(self: Box<Self>, seq: Option<u64>, permit: mpsc::OwnedPermit<Outcome>);
}

/// Who sent a message and what names a resend of it: for a sink that keeps
/// each device's messages apart and drops resends itself (queue mode
/// publishes to a subject per device with a message id, see
/// [`crate::queue::subject`]).
#[derive(Debug, Clone)]
pub struct Origin {
    pub device: std::sync::Arc<str>,
    /// The `seq` the device chose (not an ordinal the server numbered).
    pub seq: Option<u64>,
    pub stamp: Stamp,
}

/// What tells this message from another one with the same `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// The device gave every point a time: the first point's (ns). A resend
    /// carries the same times.
    Device(i64),
    /// The server stamped some points (they came without `ts`), so the times
    /// differ between copies, on another gateway too: the message's bytes
    /// (CRC-32 and length) name it instead.
    Bytes { crc: u32, len: u32 },
}

/// The way back to the session that sent a message.
#[derive(Debug)]
pub struct Reply {
    seq: Option<u64>,
    permit: mpsc::OwnedPermit<Outcome>,
    on_ack: Option<Box<dyn OnAck>>,
    origin: Option<Origin>,
}

impl Reply {
    pub fn new(seq: Option<u64>, permit: mpsc::OwnedPermit<Outcome>) -> Self {
        Reply {
            seq,
            permit,
            on_ack: None,
            origin: None,
        }
    }

    /// Say who sent the message (see [`Origin`]).
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// Run `hook` when the message is acked (it answers the device then).
    pub fn on_ack(mut self, hook: Box<dyn OnAck>) -> Self {
        self.on_ack = Some(hook);
        self
    }

    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    pub fn ack(self) {
        match self.on_ack {
            Some(hook) => hook.acked(self.seq, self.permit),
            None => {
                self.permit.send(Outcome::Acked { seq: self.seq });
            }
        }
    }

    pub fn nack(self, error: &'static str, detail: impl Into<String>) {
        self.permit.send(Outcome::nacked(self.seq, error, detail));
    }
}

#[cfg(test)]
#[test]
fn an_outcome_is_two_words() {
    assert_eq!(std::mem::size_of::<Outcome>(), 16);
}

/// One decoded message on its way to the database: its points as line
/// protocol, already validated.
#[derive(Debug)]
pub struct Entry {
    pub lines: Vec<u8>,
    pub points: u32,
    pub reply: Reply,
}
