//! One device session: reads WebSocket messages, decodes them, hands them to
//! [`crate::ingest`] (the one ingest path every transport shares) and sends
//! acks, nacks, commands and pings back.
//!
//! One task per session with one `select!` over the socket, the outcome
//! channel (acks from the writer), the device's commands, the ping/idle timer
//! and the shutdown token; each event has its own method on [`Session`].
//! Generic over the socket so tests can drive it with channels.
//!
//! Flow control: a session has at most `max_inflight` messages waiting for an
//! outcome; past that it stops reading. When the pipeline is full it waits to
//! enqueue (so it stops reading too) and, past `backpressure_timeout`, closes
//! with 1013 so the device retries later instead of hanging. The same
//! deadline applies when acks stop coming (InfluxDB down and the spool full):
//! a session stuck at `max_inflight` for that long is closed with 1013; its
//! device keeps the unacked messages and resends them.
//!
//! Acks follow the configured [`AckMode`]: after the writer's outcome
//! (`durable`), or as soon as the message is queued (`received`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;

use crate::commands::{Command, SessionCommands};
use crate::config::AckMode;
use crate::fleet::SessionObserver;
use crate::ingest::{Arrival, IngestContext, Submitted};
use crate::limits::SessionGuard;
use crate::metrics::SessionEnd;
use crate::pipeline::{Outcome, sleep_until};
use wsingest_proto::clock::ServerClock;
use wsingest_proto::decode::{Format, Message};
use wsingest_proto::point::Point;
use wsingest_proto::protocol::{Downlink, Encoding, Frame};

mod error;
use error::SessionError;

/// Timing and flow limits of a session.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    pub max_invalid: u32,
    pub max_inflight: usize,
    pub backpressure_timeout: Duration,
    /// How long to wait for outstanding acks once the session is closing.
    pub close_timeout: Duration,
    /// A send to the device that takes longer ends the session.
    pub send_timeout: Duration,
}

pub struct SessionContext {
    pub device: String,
    pub encoding: Encoding,
    /// The ingest path (decoder, limits' hooks, dedupe, bridge, pipeline).
    pub ingest: IngestContext,
    pub limits: SessionLimits,
    /// Counts for metrics, stats and the live view.
    pub observer: SessionObserver,
    /// Per-device limits, and the signal to close (token revoked, replaced).
    pub guard: SessionGuard,
    pub ack_mode: AckMode,
    /// This device's commands (`None`: the session gets none).
    pub commands: Option<SessionCommands>,
    /// The format (`?format=`) of the device's own JSON; `None`: the
    /// message model.
    pub mapping: Option<Arc<wsingest_proto::format::Mapping>>,
}

/// What a session did, for its closing log line and for tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SessionSummary {
    pub messages: u64,
    pub points: u64,
    pub acks: u64,
    pub nacks: u64,
    /// Resends acked again without being written again.
    pub deduped: u64,
    /// The close code we sent, if we closed the session.
    pub close_code: Option<u16>,
    /// The device ended the session with a Close frame (which was answered).
    pub device_closed: bool,
    pub close_reason: String,
}

impl SessionSummary {
    /// How the session ended, for metrics and the session history.
    pub fn end(&self) -> SessionEnd {
        match (self.close_code, self.device_closed) {
            (Some(code), _) => SessionEnd::Server(code),
            (None, true) => SessionEnd::Device,
            (None, false) => SessionEnd::Dropped,
        }
    }
}

/// What the session's `select!` picked.
enum Event {
    Close(SessionError),
    Outcome(Outcome),
    Command(Option<Command>),
    Tick,
    Frame(Option<Result<WsMessage, WsError>>),
}

/// The device stopped reading, or the connection is gone: end at once.
struct Gone(String);

/// A session's state between events.
struct Session {
    ctx: SessionContext,
    device: Arc<str>,
    summary: SessionSummary,
    out_tx: mpsc::Sender<Outcome>,
    inflight: usize,
    invalid_run: u32,
    last_seen: Instant,
    reply_format: Format,
    /// Why and until when the session is closing.
    closing: Option<(SessionError, Instant)>,
    /// Since when the session has been at `max_inflight`, not reading.
    blocked_since: Option<Instant>,
    /// This device's commands (`None`: none, or a newer session has them).
    commands: Option<SessionCommands>,
}

/// The session's task. Its state is set up here, outside the future: an
/// async fn keeps its arguments for its whole life, so the context would
/// be held twice (as the argument and inside [`Session`]) by every idle
/// session.
pub fn run<S>(
    ws: S,
    mut ctx: SessionContext,
    shutdown: CancellationToken,
) -> impl Future<Output = SessionSummary>
where
    S: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin,
{
    let kick = ctx.guard.kick().clone();
    let commands = ctx.commands.take();
    let (out_tx, out_rx) = mpsc::channel::<Outcome>(ctx.limits.max_inflight);
    let s = Session {
        device: ctx.device.as_str().into(),
        reply_format: ctx.encoding.format().unwrap_or(Format::Json),
        ctx,
        summary: SessionSummary::default(),
        out_tx,
        inflight: 0,
        invalid_run: 0,
        last_seen: Instant::now(),
        closing: None,
        blocked_since: None,
        commands,
    };
    drive(ws, s, out_rx, kick, shutdown)
}

/// The session's loop. An `async move` block rather than an `async fn`: an
/// async fn moves its arguments into locals, and the future then holds the
/// session's state twice (measured: 0.7 KiB more per session).
#[allow(clippy::manual_async_fn)]
fn drive<S>(
    mut ws: S,
    mut s: Session,
    mut out_rx: mpsc::Receiver<Outcome>,
    kick: crate::limits::Kick,
    shutdown: CancellationToken,
) -> impl Future<Output = SessionSummary>
where
    S: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin,
{
    async move {
        let (max_inflight, backpressure_timeout, ping_interval) = {
            let l = &s.ctx.limits;
            (l.max_inflight, l.backpressure_timeout, l.ping_interval)
        };
        let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let ended = loop {
            if s.closing.is_some() && s.inflight == 0 {
                break None;
            }
            if s.inflight < max_inflight {
                s.blocked_since = None;
            } else if s.blocked_since.is_none() {
                s.blocked_since = Some(Instant::now());
            }
            let blocked_deadline = s
                .blocked_since
                .filter(|_| s.closing.is_none())
                .map(|t| t + backpressure_timeout);
            // One timer (a `Sleep` is 136 bytes of every idle session's
            // future): the close deadline while closing, else the
            // backpressure deadline while blocked.
            let timer = s.closing.as_ref().map(|c| c.1).or(blocked_deadline);
            let open = s.closing.is_none();
            // The select! only picks the event; its handler runs after the
            // select's futures are gone, outside its arms.
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if open => Event::Close(SessionError::ShuttingDown),
                (code, reason) = kick.wait(), if open => Event::Close(SessionError::Policy { code, reason }),
                Some(outcome) = out_rx.recv() => Event::Outcome(outcome),
                cmd = next_command(&mut s.commands), if open => Event::Command(cmd),
                _ = sleep_until(timer), if timer.is_some() => {
                    if s.closing.is_some() {
                        tracing::warn!(inflight = s.inflight, "closing with messages still waiting for their ack");
                        break None;
                    }
                    tracing::warn!(inflight = s.inflight, "no acks for too long (storage full?); closing so the device retries later");
                    Event::Close(SessionError::Overloaded)
                }
                _ = ping.tick() => Event::Tick,
                frame = ws.next(), if open && s.inflight < max_inflight => Event::Frame(frame),
            };
            // Handlers boxed: their futures exist only while one runs, not in
            // every idle session's state (measured: 272 bytes less each).
            let step = match event {
                Event::Close(err) => s.close(err),
                Event::Outcome(outcome) => {
                    Box::pin(s.on_outcomes(&mut ws, outcome, &mut out_rx)).await
                }
                Event::Command(cmd) => Box::pin(s.on_command(&mut ws, cmd)).await,
                Event::Tick => Box::pin(s.on_tick(&mut ws)).await,
                Event::Frame(frame) => Box::pin(s.on_frame(&mut ws, frame)).await,
            };
            if let Err(Gone(reason)) = step {
                break Some(reason);
            }
        };
        if let Some(reason) = ended {
            s.summary.close_reason = reason;
            return s.summary;
        }

        let (err, _) = s.closing.expect("the loop only breaks when closing");
        let code = err.close_code();
        s.summary.close_code = Some(code.into());
        s.summary.close_reason = err.reason();
        let frame = CloseFrame {
            code,
            reason: err.reason().into(),
        };
        // Finish the closing handshake briefly; a device that never answers our
        // Close must not hold the task.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if ws.send(WsMessage::Close(Some(frame))).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
        .await;
        s.summary
    }
}

impl Session {
    /// Start closing with `err` (the first reason wins), once in-flight
    /// messages have their outcome or the close timeout passed.
    fn close(&mut self, err: SessionError) -> Result<(), Gone> {
        if self.closing.is_none() {
            let deadline = Instant::now() + self.ctx.limits.close_timeout;
            self.closing = Some((err, deadline));
        }
        Ok(())
    }

    async fn send<S>(&mut self, ws: &mut S, msgs: Vec<WsMessage>) -> Result<(), Gone>
    where
        S: Sink<WsMessage, Error = WsError> + Unpin,
    {
        send_all(ws, msgs, self.ctx.limits.send_timeout)
            .await
            .map_err(|()| Gone("device stopped reading".into()))
    }

    /// Outcomes from the writer: all that are ready, answered in one write.
    async fn on_outcomes<S>(
        &mut self,
        ws: &mut S,
        first: Outcome,
        out_rx: &mut mpsc::Receiver<Outcome>,
    ) -> Result<(), Gone>
    where
        S: Sink<WsMessage, Error = WsError> + Unpin,
    {
        let received_mode = self.ctx.ack_mode == AckMode::Received;
        let mut batch = vec![first];
        while let Ok(more) = out_rx.try_recv() {
            batch.push(more);
        }
        self.inflight -= batch.len();
        let mut msgs = Vec::with_capacity(batch.len());
        for outcome in batch {
            if matches!(outcome, Outcome::Acked { .. }) && received_mode {
                continue; // acked already, on receipt
            }
            self.ctx.ingest.settled(&self.device, &outcome, false);
            let d = match outcome {
                Outcome::Acked { seq: None } => {
                    self.ctx.observer.acked();
                    continue;
                }
                Outcome::Acked { seq: Some(seq) } => {
                    self.summary.acks += 1;
                    self.ctx.observer.acked();
                    Downlink::Ack { ack: seq }
                }
                Outcome::Nacked(n) => {
                    let crate::entry::Nack { seq, error, detail } = *n;
                    if received_mode {
                        tracing::warn!(
                            ?seq,
                            error,
                            "a message acked on receipt was not stored; nacking it late"
                        );
                    }
                    self.summary.nacks += 1;
                    self.ctx.observer.nacked(error, &detail);
                    Downlink::nack(seq, error, detail)
                }
            };
            msgs.push(ws_frame(d.encode(self.reply_format)));
        }
        if msgs.is_empty() {
            return Ok(());
        }
        self.send(ws, msgs).await
    }

    /// A command for the device (`None`: a newer session receives them now).
    async fn on_command<S>(&mut self, ws: &mut S, cmd: Option<Command>) -> Result<(), Gone>
    where
        S: Sink<WsMessage, Error = WsError> + Unpin,
    {
        let Some(cmd) = cmd else {
            self.commands = None;
            return Ok(());
        };
        let msg = ws_frame(cmd.downlink().encode(self.reply_format));
        if let Err(gone) = self.send(ws, vec![msg]).await {
            if let Some(c) = &self.commands {
                c.undelivered(cmd);
            }
            return Err(gone);
        }
        tracing::debug!(cmd = cmd.id, name = cmd.name, "command delivered");
        if let Some(c) = &self.commands {
            c.delivered(&cmd);
        }
        Ok(())
    }

    /// The ping timer: ping a live device, close an idle one.
    async fn on_tick<S>(&mut self, ws: &mut S) -> Result<(), Gone>
    where
        S: Sink<WsMessage, Error = WsError> + Unpin,
    {
        if self.last_seen.elapsed() >= self.ctx.limits.idle_timeout {
            return self.close(SessionError::Idle);
        }
        self.send(ws, vec![WsMessage::Ping(Default::default())])
            .await
    }

    /// A frame (or the end of the stream) from the device.
    async fn on_frame<S>(
        &mut self,
        ws: &mut S,
        frame: Option<Result<WsMessage, WsError>>,
    ) -> Result<(), Gone>
    where
        S: Sink<WsMessage, Error = WsError> + Unpin,
    {
        let frame = match frame {
            None => return Err(Gone("connection closed".into())),
            Some(Err(e)) => {
                return match SessionError::from_read(&e) {
                    Some(err) => self.close(err),
                    None => Err(Gone(e.to_string())),
                };
            }
            Some(Ok(f)) => f,
        };
        self.last_seen = Instant::now();
        let encoding = self.ctx.encoding;
        let (bytes, format) = match frame {
            WsMessage::Text(t) => (t.into(), encoding.format().unwrap_or(Format::Json)),
            WsMessage::Binary(b) => (b, encoding.format().unwrap_or(Format::Cbor)),
            WsMessage::Close(frame) => return Err(self.on_close(ws, frame).await),
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => return Ok(()),
        };
        if encoding == Encoding::ByFrame {
            self.reply_format = format;
        }
        self.summary.messages += 1;
        let decoded = match &self.ctx.mapping {
            Some(m) => self
                .ctx
                .ingest
                .decode_mapped(&bytes, format, m, &self.ctx.device),
            None => self.ctx.ingest.decoder.decode_reusing(
                &bytes,
                format,
                &self.ctx.device,
                ServerClock::global(),
                &mut spare_points(),
            ),
        };
        let reply = match decoded {
            Ok(Message::CommandResult {
                seq,
                cmd,
                ok,
                detail,
            }) => {
                self.ctx.observer.message(bytes.len());
                self.invalid_run = 0;
                tracing::info!(cmd, ok, detail, "command result");
                if let Some(c) = &self.commands {
                    c.result(&cmd, ok, detail);
                }
                seq.map(|seq| {
                    self.summary.acks += 1;
                    Downlink::Ack { ack: seq }
                })
            }
            decoded => self.submit(decoded, &bytes).await,
        };
        let Some(reply) = reply else {
            return Ok(());
        };
        self.send(ws, vec![ws_frame(reply.encode(self.reply_format))])
            .await?;
        if self.invalid_run >= self.ctx.limits.max_invalid {
            let reason = format!("{} invalid messages in a row", self.invalid_run);
            self.close(SessionError::Invalid(reason))?;
        }
        Ok(())
    }

    /// Telemetry (or what failed to decode) into the ingest path; the
    /// immediate answer, if any (the ack of a durable message comes later).
    async fn submit(
        &mut self,
        decoded: Result<Message, wsingest_proto::decode::DecodeError>,
        bytes: &[u8],
    ) -> Option<Downlink> {
        // SenML packs have no seq: the n-th message of the session is acked
        // (or nacked) as n, so devices can still match answers.
        let ordinal = self
            .ctx
            .encoding
            .numbers_messages()
            .then_some(self.summary.messages);
        let permit = self
            .out_tx
            .clone()
            .try_reserve_owned()
            .expect("inflight below channel capacity");
        self.inflight += 1;
        let arrival = Arrival {
            device: &self.device,
            decoded,
            raw: bytes,
            ordinal,
        };
        let submitted = self
            .ctx
            .ingest
            .submit_decoded(
                arrival,
                Some(self.ctx.guard.limiter_mut()),
                Some(&self.ctx.observer),
                permit,
            )
            .await;
        if !matches!(submitted, Submitted::Queued { .. }) {
            self.inflight -= 1; // the permit was dropped
        }
        match submitted {
            Submitted::Queued { seq, points, spare } => {
                self.invalid_run = 0;
                self.summary.points += u64::from(points);
                recycle_points(spare);
                if self.ctx.ack_mode != AckMode::Received {
                    return None;
                }
                self.ctx.observer.acked();
                let seq = seq?;
                self.ctx
                    .ingest
                    .settled(&self.device, &Outcome::Acked { seq: Some(seq) }, false);
                self.summary.acks += 1;
                Some(Downlink::Ack { ack: seq })
            }
            Submitted::Resent { seq, .. } => {
                self.invalid_run = 0;
                self.summary.acks += 1;
                self.summary.deduped += 1;
                Some(Downlink::Ack { ack: seq })
            }
            Submitted::Refused(e) => {
                self.invalid_run += 1;
                self.summary.nacks += 1;
                Some(Downlink::nack(e.seq().or(ordinal), e.code(), e.to_string()))
            }
            Submitted::Limited { seq, refusal } => {
                if let Some(reason) = refusal.close {
                    let _ = self.close(SessionError::Policy {
                        code: CloseCode::Policy.into(),
                        reason,
                    });
                }
                self.summary.nacks += 1;
                Some(Downlink::nack(seq, refusal.error, refusal.detail))
            }
            Submitted::Overloaded { .. } | Submitted::ShuttingDown { .. } => {
                let err = match submitted {
                    Submitted::Overloaded { .. } => SessionError::Overloaded,
                    _ => SessionError::ShuttingDown,
                };
                tracing::warn!(
                    reason = err.reason(),
                    "message not accepted; the device will resend it"
                );
                let _ = self.close(err);
                None
            }
            // Sessions route command results themselves (see `on_frame`).
            Submitted::CommandResult { seq } => seq.map(|seq| Downlink::Ack { ack: seq }),
        }
    }

    /// The device closed: answer its Close (RFC 6455 §5.5.1) and end.
    async fn on_close<S>(&mut self, ws: &mut S, frame: Option<CloseFrame>) -> Gone
    where
        S: Sink<WsMessage, Error = WsError> + Unpin,
    {
        // tungstenite queued the answer (the device's code, or 1002 for a
        // code a peer may not send); send it before the connection drops.
        let _ = tokio::time::timeout(self.ctx.limits.send_timeout, ws.flush()).await;
        self.summary.device_closed = true;
        Gone(match frame {
            Some(f) if f.reason.is_empty() => format!("closed by device ({})", u16::from(f.code)),
            Some(f) => format!("closed by device ({}: {})", u16::from(f.code), f.reason),
            None => "closed by device".to_owned(),
        })
    }
}

thread_local! {
    /// Points of decoded messages, given back for the next message decoded on
    /// this worker thread to fill (see `Decoder::decode_reusing`).
    static SPARE_POINTS: std::cell::Cell<Vec<Point>> = const { std::cell::Cell::new(Vec::new()) };
}

/// More spare points than this per thread are freed, not kept: what a
/// thread keeps stays bounded (names and tag values have length limits).
const MAX_SPARE_POINTS: usize = 256;

fn spare_points() -> Vec<Point> {
    SPARE_POINTS.with(|s| s.take())
}

fn recycle_points(points: Vec<Point>) {
    if !points.is_empty() && points.len() <= MAX_SPARE_POINTS {
        SPARE_POINTS.with(|s| s.set(points));
    }
}

/// An encoded downlink as the WebSocket frame it goes in.
fn ws_frame(f: Frame) -> WsMessage {
    match f {
        Frame::Text(t) => WsMessage::text(t),
        Frame::Binary(b) => WsMessage::binary(b),
    }
}

async fn send_all<S>(ws: &mut S, msgs: Vec<WsMessage>, timeout: Duration) -> Result<(), ()>
where
    S: Sink<WsMessage, Error = WsError> + Unpin,
{
    let send = async {
        for m in msgs {
            ws.feed(m).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The next command for this session, or never when it has none.
async fn next_command(commands: &mut Option<SessionCommands>) -> Option<Command> {
    match commands {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
