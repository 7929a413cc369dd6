//! One message into the pipeline, for the transports other than the WebSocket
//! session (HTTP fallback, gRPC): decode, validate, check the device's
//! limits, encode to line protocol, enqueue with a reply slot, and say what
//! happened.
//!
//! The WebSocket session has its own loop (`session.rs`); these transports
//! share this one so that the same payload gets the same ack or nack whichever
//! way it came in.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, SessionObserver};
use crate::limits::{DeviceLimiter, Refusal};
use crate::pipeline::{Entry, Outcome, Pipeline, Reply};
use wsingest_proto::clock::ServerClock;
use wsingest_proto::decode::{DecodeError, Decoder, Format, Message};

/// What the request-style transports need from the server.
#[derive(Clone)]
pub struct IngestContext {
    pub decoder: Arc<Decoder>,
    pub pipeline: Pipeline,
    /// How long to wait on a full pipeline before answering "overloaded".
    pub backpressure_timeout: Duration,
    pub shutdown: CancellationToken,
    /// The MQTT bridge, which gets the points once acked.
    pub uplink: Option<crate::mqtt::Uplink>,
    /// Where command results go.
    pub commands: Option<Arc<crate::commands::Router>>,
    /// Counts messages, points, errors and outcomes per device (metrics,
    /// stats, live view); `None` where nobody looks (compare's MQTT ingest).
    pub fleet: Option<Arc<Fleet>>,
}

/// How submitting one message ended.
#[derive(Debug)]
pub enum Submitted {
    /// In the pipeline: its outcome will come through the permit's channel.
    Queued { seq: Option<u64>, points: u32 },
    /// A command result: logged, nothing to write.
    CommandResult { seq: Option<u64> },
    /// Refused before the pipeline (the permit is released).
    Refused(DecodeError),
    /// Refused by a per-device limit (rate, series, measurement); the permit
    /// is released and the refusal already counted.
    Limited { seq: Option<u64>, refusal: Refusal },
    /// The pipeline stayed full past the backpressure timeout.
    Overloaded { seq: Option<u64> },
    /// The server is shutting down.
    ShuttingDown { seq: Option<u64> },
}

impl IngestContext {
    /// Decode `bytes` of `device` and enqueue its points with `permit` as the
    /// way back. `ordinal` numbers messages that carry no `seq` (SenML).
    /// `limiter` holds the device's limits (`None`: unlimited, for the
    /// benchmarks' own ingest).
    pub async fn submit(
        &self,
        bytes: &[u8],
        format: Format,
        device: &str,
        ordinal: Option<u64>,
        limiter: Option<&mut DeviceLimiter>,
        permit: mpsc::OwnedPermit<Outcome>,
    ) -> Submitted {
        let decoded = self
            .decoder
            .decode(bytes, format, device, ServerClock::global());
        self.submit_counted(decoded, device, ordinal, limiter, permit, bytes.len())
            .await
    }

    /// Enqueue an already decoded message (see [`IngestContext::submit`]).
    pub async fn submit_decoded(
        &self,
        decoded: Result<Message, DecodeError>,
        device: &str,
        ordinal: Option<u64>,
        limiter: Option<&mut DeviceLimiter>,
        permit: mpsc::OwnedPermit<Outcome>,
    ) -> Submitted {
        self.submit_counted(decoded, device, ordinal, limiter, permit, 0)
            .await
    }

    /// Count a message's outcome (ack or nack) for `device`; the transport
    /// calls this when the outcome arrives.
    pub fn outcome(&self, device: &str, outcome: &Outcome) {
        let Some(o) = self.observer(device) else {
            return;
        };
        match outcome {
            Outcome::Acked { .. } => o.acked(),
            Outcome::Nacked { error, detail, .. } => o.nacked(error, detail),
        }
    }

    fn observer(&self, device: &str) -> Option<SessionObserver> {
        self.fleet.as_ref().map(|f| f.observe(device))
    }

    async fn submit_counted(
        &self,
        decoded: Result<Message, DecodeError>,
        device: &str,
        ordinal: Option<u64>,
        limiter: Option<&mut DeviceLimiter>,
        permit: mpsc::OwnedPermit<Outcome>,
        bytes: usize,
    ) -> Submitted {
        let observer = self.observer(device);
        if let Some(o) = &observer {
            o.message(bytes);
        }
        let (seq, points) = match decoded {
            Ok(Message::Points { seq, points, .. }) => (seq.or(ordinal), points),
            Ok(Message::CommandResult {
                seq,
                cmd,
                ok,
                detail,
            }) => {
                tracing::info!(device, cmd, ok, detail, "command result");
                if let Some(router) = &self.commands {
                    router.local_result(device, &cmd, ok, detail);
                }
                return Submitted::CommandResult { seq };
            }
            Err(e) => {
                if let Some(o) = &observer {
                    o.decode_error(e.code(), &e.to_string());
                }
                return Submitted::Refused(e);
            }
        };
        if let Some(limiter) = limiter
            && let Err(refusal) = limiter.check(&points)
        {
            if let Some(o) = &observer {
                o.limited(refusal.error, &refusal.detail);
            }
            return Submitted::Limited { seq, refusal };
        }
        let mut lines = Vec::with_capacity(96 * points.len());
        for p in &points {
            wsingest_proto::lineproto::encode_point(p, &mut lines);
        }
        let n = points.len() as u32;
        if let Some(o) = &observer {
            o.points_seen(&points);
        }
        let entry = Entry {
            lines,
            points: n,
            reply: match &self.uplink {
                Some(uplink) => Reply::new(seq, permit).with_forward(uplink.forward(points)),
                None => Reply::new(seq, permit),
            },
        };
        tokio::select! {
            r = tokio::time::timeout(self.backpressure_timeout, self.pipeline.send(entry)) => match r {
                Ok(Ok(())) => Submitted::Queued { seq, points: n },
                Ok(Err(_)) => Submitted::ShuttingDown { seq },
                Err(_) => Submitted::Overloaded { seq },
            },
            _ = self.shutdown.cancelled() => Submitted::ShuttingDown { seq },
        }
    }
}
