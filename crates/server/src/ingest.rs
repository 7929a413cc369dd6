//! One message into the pipeline, the same way for every transport
//! (WebSocket session, HTTP fallback, gRPC): count it, check the device's
//! limits, recognise a resend (see [`crate::dedupe`]), encode its points to
//! line protocol, hand them to the bridge hook and enqueue them with a reply
//! slot, then say what happened. A transport only turns bytes into a
//! [`Arrival`] and the [`Submitted`] and [`Outcome`] back into its own
//! answers, so the same payload gets the same ack or nack, is written once
//! and bridged once, whichever way it came in.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dedupe::{Dedupe, Seen, message_hash};
use crate::fleet::{Fleet, SessionObserver};
use crate::limits::{DeviceLimiter, Refusal};
use crate::pipeline::{Entry, Outcome, Pipeline, Reply};
use wsingest_proto::clock::ServerClock;
use wsingest_proto::decode::{DecodeError, Decoder, Format, Message};
use wsingest_proto::format::Mapping;
use wsingest_proto::point::Point;

/// What every transport needs from the server to ingest.
#[derive(Clone)]
pub struct IngestContext {
    pub decoder: Arc<Decoder>,
    pub pipeline: Pipeline,
    /// How long to wait on a full pipeline before answering "overloaded".
    pub backpressure_timeout: Duration,
    pub shutdown: CancellationToken,
    /// The MQTT bridge, which gets the points once acked.
    pub uplink: Option<crate::mqtt::Uplink>,
    /// Where command results of request-style transports go.
    pub commands: Option<Arc<crate::commands::Router>>,
    /// Counts messages, points, errors and outcomes per device (metrics,
    /// stats, live view); `None` where nobody looks (compare's MQTT ingest).
    pub fleet: Option<Arc<Fleet>>,
    /// Resend dedupe shared by every transport (`None`: off).
    pub dedupe: Option<Arc<Dedupe>>,
}

/// One message as it arrived, decoded.
pub struct Arrival<'a> {
    pub device: &'a Arc<str>,
    pub decoded: Result<Message, DecodeError>,
    /// The message as received: its hash tells a resend from a new message
    /// with the same `seq`.
    pub raw: &'a [u8],
    /// Numbers messages that carry no `seq` (SenML packs), for their acks.
    pub ordinal: Option<u64>,
}

/// How submitting one message ended.
#[derive(Debug)]
pub enum Submitted {
    /// In the pipeline: its outcome will come through the permit's channel.
    /// `spare` holds emptied points to reuse for decoding (see
    /// `Decoder::decode_reusing`), when nobody else needed them.
    Queued {
        seq: Option<u64>,
        points: u32,
        spare: Vec<Point>,
    },
    /// A resend of a message already acked: ack it again; nothing is written
    /// or bridged again.
    Resent { seq: u64, points: u32 },
    /// A command result (of a request-style transport): routed, nothing to write.
    CommandResult { seq: Option<u64> },
    /// Refused before the pipeline (counted).
    Refused(DecodeError),
    /// Refused by a per-device limit (rate, series, measurement); counted.
    Limited { seq: Option<u64>, refusal: Refusal },
    /// The pipeline stayed full past the backpressure timeout.
    Overloaded { seq: Option<u64> },
    /// The server is shutting down.
    ShuttingDown { seq: Option<u64> },
}

impl IngestContext {
    /// Decode `bytes` of `device` and submit them (request-style transports).
    pub async fn submit(
        &self,
        bytes: &[u8],
        format: Format,
        device: &str,
        ordinal: Option<u64>,
        limiter: Option<&mut DeviceLimiter>,
        permit: mpsc::OwnedPermit<Outcome>,
    ) -> Submitted {
        self.submit_as(bytes, format, None, device, ordinal, limiter, permit)
            .await
    }

    /// [`Self::submit`] of a device's own document, mapped with `mapping`
    /// (see [`wsingest_proto::format`]) when given.
    #[allow(clippy::too_many_arguments)]
    pub async fn submit_as(
        &self,
        bytes: &[u8],
        format: Format,
        mapping: Option<&Mapping>,
        device: &str,
        ordinal: Option<u64>,
        limiter: Option<&mut DeviceLimiter>,
        permit: mpsc::OwnedPermit<Outcome>,
    ) -> Submitted {
        let clock = ServerClock::global();
        let decoded = match mapping {
            Some(m) => self.decode_mapped(bytes, format, m, device),
            None => self.decoder.decode(bytes, format, device, clock),
        };
        let device: Arc<str> = device.into();
        let arrival = Arrival {
            device: &device,
            decoded,
            raw: bytes,
            ordinal,
        };
        self.submit_decoded(arrival, limiter, None, permit).await
    }

    /// Decode a device's own document with `mapping`, counted by format and
    /// outcome (`wsingest_format_messages_total`).
    pub fn decode_mapped(
        &self,
        bytes: &[u8],
        format: Format,
        mapping: &Mapping,
        device: &str,
    ) -> Result<Message, DecodeError> {
        let decoded =
            self.decoder
                .decode_mapped(bytes, format, mapping, device, ServerClock::global());
        if let Some(f) = &self.fleet {
            let outcome = match &decoded {
                Ok(_) => "ok",
                Err(e) => e.code(),
            };
            f.metrics().format_message(mapping.shared_name(), outcome);
        }
        decoded
    }

    /// Submit a decoded message with `permit` as the way back for its
    /// outcome. `limiter` holds the device's limits (`None`: unlimited, for
    /// the benchmarks' own ingest); `observer` counts for the device (a
    /// session's own; `None`: the fleet's entry for it).
    pub async fn submit_decoded(
        &self,
        arrival: Arrival<'_>,
        limiter: Option<&mut DeviceLimiter>,
        observer: Option<&SessionObserver>,
        permit: mpsc::OwnedPermit<Outcome>,
    ) -> Submitted {
        let own;
        let observer = match observer {
            Some(o) => Some(o),
            None => {
                own = self.fleet.as_ref().map(|f| f.observe(arrival.device));
                own.as_ref()
            }
        };
        if let Some(o) = observer {
            o.message(arrival.raw.len());
        }
        let device = arrival.device;
        let (sent_seq, mut points, stamped) = match arrival.decoded {
            Ok(Message::Points {
                seq,
                points,
                stamped,
            }) => (seq, points, stamped),
            Ok(Message::CommandResult {
                seq,
                cmd,
                ok,
                detail,
            }) => {
                tracing::info!(device = &**device, cmd, ok, detail, "command result");
                if let Some(router) = &self.commands {
                    router.local_result(device, &cmd, ok, detail);
                }
                return Submitted::CommandResult { seq };
            }
            Err(e) => {
                tracing::debug!(error = e.code(), detail = %e, "message refused");
                if let Some(o) = observer {
                    o.decode_error(e.code(), &e.to_string());
                }
                return Submitted::Refused(e);
            }
        };
        let seq = sent_seq.or(arrival.ordinal);
        if let Some(limiter) = limiter
            && let Err(refusal) = limiter.check(&points)
        {
            if let Some(o) = observer {
                o.limited(refusal.error, &refusal.detail);
            }
            return Submitted::Limited { seq, refusal };
        }
        // Only a seq the device chose identifies a resend (an ordinal
        // restarts with every session), and only points the server stamped
        // would be stored twice (a point with `ts` overwrites itself).
        if let (Some(d), Some(s)) = (&self.dedupe, sent_seq)
            && !stamped.is_empty()
        {
            match d.check(device, s, message_hash(arrival.raw), stamped.start) {
                Seen::New => {}
                Seen::Acked => {
                    if let Some(o) = observer {
                        o.acked();
                    }
                    return Submitted::Resent {
                        seq: s,
                        points: points.len() as u32,
                    };
                }
                Seen::InFlight { ts_ns } => {
                    // The first copy's stamps, point for point, so InfluxDB
                    // overwrites instead of adding points.
                    for p in points.iter_mut().filter(|p| stamped.contains(&p.time_ns)) {
                        p.time_ns = p.time_ns - stamped.start + ts_ns;
                    }
                }
            }
        }
        let mut lines = Vec::with_capacity(arrival.raw.len() + 64 * points.len());
        for p in &points {
            wsingest_proto::lineproto::encode_point(p, &mut lines);
        }
        let count = points.len() as u32;
        let origin = crate::entry::Origin {
            device: device.clone(),
            seq: sent_seq,
            stamp: match (sent_seq, stamped.is_empty()) {
                (Some(_), false) => crate::entry::Stamp::Bytes {
                    crc: crc32fast::hash(arrival.raw),
                    len: arrival.raw.len() as u32,
                },
                _ => crate::entry::Stamp::Device(points.first().map_or(0, |p| p.time_ns)),
            },
        };
        let mut spare = Vec::new();
        let reply = match &self.uplink {
            Some(uplink) => {
                if let Some(o) = observer {
                    o.points_seen(&points);
                }
                Reply::new(seq, permit).on_ack(Box::new(uplink.forward(points)))
            }
            None => {
                if let Some(o) = observer {
                    o.points_swapped(&mut points);
                }
                spare = points;
                Reply::new(seq, permit)
            }
        };
        let entry = Entry {
            lines,
            points: count,
            reply: reply.with_origin(origin),
        };
        if self.shutdown.is_cancelled() {
            return Submitted::ShuttingDown { seq };
        }
        // The queue has room nearly always: no timer, no shutdown waiter,
        // and the waiting below (boxed) takes no room in every session's
        // future.
        let entry = match self.pipeline.try_send(entry) {
            Ok(()) => {
                return Submitted::Queued {
                    seq,
                    points: count,
                    spare,
                };
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Submitted::ShuttingDown { seq },
            Err(mpsc::error::TrySendError::Full(entry)) => entry,
        };
        let wait = Box::pin(async move {
            tokio::select! {
                r = tokio::time::timeout(self.backpressure_timeout, self.pipeline.send(entry)) => match r {
                    Ok(Ok(())) => Submitted::Queued { seq, points: count, spare },
                    Ok(Err(_)) => Submitted::ShuttingDown { seq },
                    Err(_) => Submitted::Overloaded { seq },
                },
                _ = self.shutdown.cancelled() => Submitted::ShuttingDown { seq },
            }
        });
        wait.await
    }

    /// A message's outcome arrived (or, acked on receipt, was promised):
    /// remember acked resends, forget nacked ones so a resend is written.
    /// `count`: also count it for the device (request-style transports; a
    /// session counts through its own observer).
    pub fn settled(&self, device: &Arc<str>, outcome: &Outcome, count: bool) {
        match outcome {
            Outcome::Acked { seq } => {
                if let (Some(d), Some(seq)) = (&self.dedupe, seq) {
                    d.acked(device, *seq);
                }
            }
            Outcome::Nacked(n) => {
                if let (Some(d), Some(seq)) = (&self.dedupe, n.seq) {
                    d.forget(device, seq);
                }
            }
        }
        if !count {
            return;
        }
        if let Some(o) = self.fleet.as_ref().map(|f| f.observe(device)) {
            match outcome {
                Outcome::Acked { .. } => o.acked(),
                Outcome::Nacked(n) => o.nacked(n.error, &n.detail),
            }
        }
    }
}
