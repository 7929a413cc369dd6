//! One device session: reads WebSocket messages, decodes them, hands their
//! points to the pipeline and sends acks, nacks and pings back.
//!
//! One task per session with one `select!` over the socket, the outcome
//! channel (acks from the writer), the ping/idle timer and the shutdown
//! token. Generic over the socket so tests can drive it with channels.
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
//! (`durable`), or as soon as the message is queued (`received`). Resent
//! messages go through the [`Dedupe`] window.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message as WsMessage,
    error::{CapacityError, ProtocolError},
};
use tokio_util::sync::CancellationToken;

use crate::commands::{Command, SessionCommands};
use crate::config::AckMode;
use crate::dedupe::{Dedupe, Seen, message_hash};
use crate::fleet::SessionObserver;
use crate::limits::SessionGuard;
use crate::metrics::SessionEnd;
use crate::mqtt::Uplink;
use crate::pipeline::{Entry, Outcome, Pipeline, Reply, sleep_until};
use wsingest_proto::clock::ServerClock;
use wsingest_proto::decode::{Decoder, Format, Message};
use wsingest_proto::protocol::{Downlink, Encoding, Frame};

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
    pub decoder: Arc<Decoder>,
    pub pipeline: Pipeline,
    pub limits: SessionLimits,
    /// Counts for metrics, stats and the live view.
    pub observer: SessionObserver,
    /// Per-device limits, and the signal to close (token revoked, replaced).
    pub guard: SessionGuard,
    pub ack_mode: AckMode,
    /// Resend dedupe shared by every session (`None`: off).
    pub dedupe: Option<Arc<Dedupe>>,
    /// This device's commands (`None`: the session gets none).
    pub commands: Option<SessionCommands>,
    /// The MQTT bridge, which gets the points once acked (`None`: no bridge).
    pub uplink: Option<Uplink>,
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

/// Why the server ends a session.
#[derive(Debug, Clone)]
struct Closing {
    code: CloseCode,
    reason: String,
    deadline: Instant,
}

pub async fn run<S>(
    mut ws: S,
    mut ctx: SessionContext,
    shutdown: CancellationToken,
) -> SessionSummary
where
    S: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin,
{
    let limits = ctx.limits.clone();
    let kick = ctx.guard.kick().clone();
    let mut commands = ctx.commands.take();
    let (out_tx, mut out_rx) = mpsc::channel::<Outcome>(limits.max_inflight);
    let mut summary = SessionSummary::default();
    let mut inflight = 0usize;
    let mut invalid_run = 0u32;
    let mut last_seen = Instant::now();
    let mut reply_format = ctx.encoding.format().unwrap_or(Format::Json);
    let mut ping =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut closing: Option<Closing> = None;
    let received_mode = ctx.ack_mode == AckMode::Received;
    let device: Arc<str> = ctx.device.as_str().into();
    // Since when the session has been at `max_inflight`, not reading.
    let mut blocked_since: Option<Instant> = None;
    let close_after = |code: CloseCode, reason: &str| Closing {
        code,
        reason: reason.to_string(),
        deadline: Instant::now() + limits.close_timeout,
    };

    loop {
        if closing.is_some() && inflight == 0 {
            break;
        }
        if inflight < limits.max_inflight {
            blocked_since = None;
        } else if blocked_since.is_none() {
            blocked_since = Some(Instant::now());
        }
        let blocked_deadline = blocked_since
            .filter(|_| closing.is_none())
            .map(|t| t + limits.backpressure_timeout);
        let deadline = closing.as_ref().map(|c| c.deadline);
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if closing.is_none() => {
                closing = Some(close_after(CloseCode::Away, "server shutting down"));
            }
            (code, reason) = kick.wait(), if closing.is_none() => {
                closing = Some(close_after(CloseCode::from(code), &reason));
            }
            Some(outcome) = out_rx.recv() => {
                let mut batch = vec![outcome];
                while let Ok(more) = out_rx.try_recv() {
                    batch.push(more);
                }
                inflight -= batch.len();
                let mut msgs = Vec::with_capacity(batch.len());
                for outcome in batch {
                    let d = match outcome {
                        // Acked already, on receipt.
                        Outcome::Acked { .. } if received_mode => continue,
                        Outcome::Acked { seq: None } => {
                            ctx.observer.acked();
                            continue;
                        }
                        Outcome::Acked { seq: Some(seq) } => {
                            if let Some(d) = &ctx.dedupe {
                                d.acked(&device, seq);
                            }
                            summary.acks += 1;
                            ctx.observer.acked();
                            Downlink::Ack { ack: seq }
                        }
                        Outcome::Nacked { seq, error, detail } => {
                            if let (Some(d), Some(seq)) = (&ctx.dedupe, seq) {
                                d.forget(&device, seq);
                            }
                            if received_mode {
                                tracing::warn!(?seq, error, "a message acked on receipt was not stored; nacking it late");
                            }
                            summary.nacks += 1;
                            ctx.observer.nacked(error, &detail);
                            Downlink::nack(seq, error, detail)
                        }
                    };
                    msgs.push(ws_frame(d.encode(reply_format)));
                }
                if !msgs.is_empty() && send_all(&mut ws, msgs, limits.send_timeout).await.is_err() {
                    return ended(summary, "device stopped reading");
                }
            }
            cmd = next_command(&mut commands), if closing.is_none() => {
                let Some(cmd) = cmd else {
                    // A newer session of this device receives its commands now.
                    commands = None;
                    continue;
                };
                let msg = ws_frame(cmd.downlink().encode(reply_format));
                if send_all(&mut ws, vec![msg], limits.send_timeout).await.is_err() {
                    if let Some(c) = &commands {
                        c.undelivered(cmd);
                    }
                    return ended(summary, "device stopped reading");
                }
                tracing::debug!(cmd = cmd.id, name = cmd.name, "command delivered");
                if let Some(c) = &commands {
                    c.delivered(&cmd);
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                tracing::warn!(inflight, "closing with messages still waiting for their ack");
                break;
            }
            _ = sleep_until(blocked_deadline), if blocked_deadline.is_some() => {
                tracing::warn!(inflight, "no acks for too long (storage full?); closing so the device retries later");
                closing = Some(close_after(CloseCode::Again, "server overloaded, try again later"));
            }
            _ = ping.tick() => {
                if last_seen.elapsed() >= limits.idle_timeout {
                    if closing.is_none() {
                        closing = Some(close_after(CloseCode::Normal, "idle timeout"));
                    }
                } else if send_all(&mut ws, vec![WsMessage::Ping(Default::default())], limits.send_timeout).await.is_err() {
                    return ended(summary, "device stopped reading");
                }
            }
            frame = ws.next(), if closing.is_none() && inflight < limits.max_inflight => {
                let frame = match frame {
                    None => return ended(summary, "connection closed"),
                    Some(Err(e)) => match read_error(&e) {
                        Some((code, reason)) => {
                            closing = Some(close_after(code, &reason));
                            continue;
                        }
                        None => return ended(summary, &e.to_string()),
                    },
                    Some(Ok(f)) => f,
                };
                last_seen = Instant::now();
                let (bytes, format) = match frame {
                    WsMessage::Text(t) => (t.into(), ctx.encoding.format().unwrap_or(Format::Json)),
                    WsMessage::Binary(b) => (b, ctx.encoding.format().unwrap_or(Format::Cbor)),
                    WsMessage::Close(frame) => {
                        // tungstenite queued the answer (the device's code, or
                        // 1002 for a code a peer may not send); send it
                        // (RFC 6455 §5.5.1) before the connection is dropped.
                        let _ = tokio::time::timeout(limits.send_timeout, ws.flush()).await;
                        summary.device_closed = true;
                        let reason = match frame {
                            Some(f) => format!("closed by device ({}{}{})", u16::from(f.code), if f.reason.is_empty() { "" } else { ": " }, f.reason),
                            None => "closed by device".to_owned(),
                        };
                        return ended(summary, &reason);
                    }
                    WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
                };
                if ctx.encoding == Encoding::ByFrame {
                    reply_format = format;
                }
                summary.messages += 1;
                ctx.observer.message(bytes.len());
                let decoded = ctx.decoder.decode_reusing(&bytes, format, &ctx.device, ServerClock::global(), &mut spare_points());
                // SenML packs have no seq: the n-th message of the session is
                // acked (or nacked) as n, so devices can still match answers.
                let ordinal = ctx.encoding.numbers_messages().then_some(summary.messages);
                let reply = match decoded {
                    Ok(Message::Points { seq: sent_seq, mut points, stamped }) => 'points: {
                        let seq = sent_seq.or(ordinal);
                        if let Err(refused) = ctx.guard.check(&points) {
                            if let Some(reason) = refused.close {
                                closing = Some(close_after(CloseCode::Policy, &reason));
                            }
                            summary.nacks += 1;
                            ctx.observer.limited(refused.error, &refused.detail);
                            break 'points Some(Downlink::nack(seq, refused.error, refused.detail));
                        }
                        invalid_run = 0;
                        // Only a seq the device chose identifies a resend (an
                        // ordinal restarts with every session). A point
                        // without `ts` was stamped just now, from `stamped`.
                        if let (Some(d), Some(s)) = (&ctx.dedupe, sent_seq)
                            && !stamped.is_empty()
                        {
                            match d.check(&device, s, message_hash(&bytes), stamped.start) {
                                Seen::New => {}
                                Seen::Acked => {
                                    summary.acks += 1;
                                    summary.deduped += 1;
                                    ctx.observer.acked();
                                    break 'points Some(Downlink::Ack { ack: s });
                                }
                                Seen::InFlight { ts_ns } => {
                                    // The first copy's stamps, point for point.
                                    points.iter_mut().filter(|p| stamped.contains(&p.time_ns)).for_each(|p| p.time_ns = p.time_ns - stamped.start + ts_ns);
                                }
                            }
                        }
                        let mut lines = Vec::with_capacity(bytes.len() + 64 * points.len());
                        for p in &points {
                            wsingest_proto::lineproto::encode_point(p, &mut lines);
                        }
                        let count = points.len();
                        summary.points += count as u64;
                        let permit = out_tx.clone().try_reserve_owned().expect("inflight below channel capacity");
                        inflight += 1;
                        let reply = match &ctx.uplink {
                            Some(uplink) => {
                                ctx.observer.points_seen(&points);
                                Reply::new(seq, permit).with_forward(uplink.forward(points))
                            }
                            None => {
                                ctx.observer.points_swapped(&mut points);
                                recycle_points(points);
                                Reply::new(seq, permit)
                            }
                        };
                        let entry = Entry { lines, points: count as u32, reply };
                        match enqueue(&ctx.pipeline, entry, limits.backpressure_timeout, &shutdown).await {
                            Ok(()) if received_mode => {
                                ctx.observer.acked();
                                seq.map(|s| {
                                    if let Some(d) = &ctx.dedupe {
                                        d.acked(&device, s);
                                    }
                                    summary.acks += 1;
                                    Downlink::Ack { ack: s }
                                })
                            }
                            Ok(()) => None,
                            Err(code) => {
                                inflight -= 1; // the entry and its permit were dropped
                                let reason = match code {
                                    CloseCode::Again => "server overloaded, try again later",
                                    _ => "server shutting down",
                                };
                                tracing::warn!(reason, "message not accepted; the device will resend it");
                                closing = Some(close_after(code, reason));
                                None
                            }
                        }
                    }
                    Ok(Message::CommandResult { seq, cmd, ok, detail }) => {
                        invalid_run = 0;
                        tracing::info!(cmd, ok, detail, "command result");
                        if let Some(c) = &commands {
                            c.result(&cmd, ok, detail);
                        }
                        if let Some(seq) = seq {
                            summary.acks += 1;
                            let ack = ws_frame(Downlink::Ack { ack: seq }.encode(reply_format));
                            if send_all(&mut ws, vec![ack], limits.send_timeout).await.is_err() {
                                return ended(summary, "device stopped reading");
                            }
                        }
                        None
                    }
                    Err(e) => {
                        invalid_run += 1;
                        summary.nacks += 1;
                        tracing::debug!(error = e.code(), detail = %e, "message refused");
                        let detail = e.to_string();
                        ctx.observer.decode_error(e.code(), &detail);
                        Some(Downlink::nack(e.seq().or(ordinal), e.code(), detail))
                    }
                };
                if let Some(reply) = reply {
                    if send_all(&mut ws, vec![ws_frame(reply.encode(reply_format))], limits.send_timeout).await.is_err() {
                        return ended(summary, "device stopped reading");
                    }
                    if invalid_run >= limits.max_invalid {
                        closing = Some(close_after(
                            CloseCode::Invalid,
                            &format!("{invalid_run} invalid messages in a row"),
                        ));
                    }
                }
            }
        }
    }

    let closing = closing.expect("the loop only breaks when closing");
    summary.close_code = Some(closing.code.into());
    summary.close_reason = closing.reason.clone();
    let frame = CloseFrame {
        code: closing.code,
        reason: closing.reason.into(),
    };
    // Finish the closing handshake briefly; a device that never answers our
    // Close must not hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if ws.send(WsMessage::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    summary
}

thread_local! {
    /// Points of decoded messages, given back for the next message decoded on
    /// this worker thread to fill (see [`Decoder::decode_reusing`]).
    static SPARE_POINTS: std::cell::Cell<Vec<wsingest_proto::point::Point>> =
        const { std::cell::Cell::new(Vec::new()) };
}

/// More spare points than this per thread are freed, not kept: what a
/// thread keeps stays bounded (names and tag values have length limits).
const MAX_SPARE_POINTS: usize = 256;

fn spare_points() -> Vec<wsingest_proto::point::Point> {
    SPARE_POINTS.with(|s| s.take())
}

fn recycle_points(points: Vec<wsingest_proto::point::Point>) {
    if points.len() <= MAX_SPARE_POINTS {
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

/// Map a read error to the close we answer it with; `None` when the
/// connection is gone and nothing can be sent.
fn read_error(e: &WsError) -> Option<(CloseCode, String)> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => Some((
            CloseCode::Size,
            format!("message of {size} bytes is over the limit of {max_size}"),
        )),
        WsError::Capacity(c) => Some((CloseCode::Size, c.to_string())),
        WsError::Utf8(_) => Some((CloseCode::Invalid, "text frame is not valid UTF-8".into())),
        // The connection is gone: nothing to answer, and not our close.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(p) => Some((CloseCode::Protocol, p.to_string())),
        _ => None,
    }
}

async fn enqueue(
    pipeline: &Pipeline,
    entry: Entry,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<(), CloseCode> {
    tokio::select! {
        r = tokio::time::timeout(wait, pipeline.send(entry)) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(CloseCode::Away),
            Err(_) => Err(CloseCode::Again),
        },
        _ = shutdown.cancelled() => Err(CloseCode::Away),
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

fn ended(mut summary: SessionSummary, reason: &str) -> SessionSummary {
    summary.close_reason = reason.to_string();
    summary
}

/// The next command for this session, or never when it has none.
async fn next_command(commands: &mut Option<SessionCommands>) -> Option<Command> {
    match commands {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The session driven through channels instead of a socket, with tokio's
    //! paused clock for the timer logic.
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_util::stream::BoxStream;
    use tokio::sync::mpsc as tmpsc;
    use tokio_util::sync::PollSender;

    use super::*;
    use crate::pipeline::{self, PipelineConfig};
    use crate::sink::blackhole::Blackhole;
    use wsingest_proto::decode::DecoderConfig;

    /// A fake socket: frames in from a channel, frames out to a channel.
    struct Duplex {
        rx: BoxStream<'static, Result<WsMessage, WsError>>,
        tx: PollSender<WsMessage>,
    }

    impl Stream for Duplex {
        type Item = Result<WsMessage, WsError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.rx.as_mut().poll_next(cx)
        }
    }

    impl Sink<WsMessage> for Duplex {
        type Error = WsError;
        fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            self.tx
                .poll_reserve(cx)
                .map_err(|_| WsError::ConnectionClosed)
        }
        fn start_send(mut self: Pin<&mut Self>, item: WsMessage) -> Result<(), WsError> {
            self.tx
                .send_item(item)
                .map_err(|_| WsError::ConnectionClosed)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            self.tx.close();
            Poll::Ready(Ok(()))
        }
    }

    fn limits() -> SessionLimits {
        SessionLimits {
            idle_timeout: Duration::from_secs(120),
            ping_interval: Duration::from_secs(30),
            max_invalid: 3,
            max_inflight: 8,
            backpressure_timeout: Duration::from_secs(1),
            close_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(10),
        }
    }

    /// Start a session over channels; returns (device → server, server → device, task).
    fn start(
        limits: SessionLimits,
    ) -> (
        tmpsc::Sender<Result<WsMessage, WsError>>,
        tmpsc::Receiver<WsMessage>,
        tokio::task::JoinHandle<SessionSummary>,
    ) {
        start_with(limits, Arc::new(Blackhole::default()), AckMode::Durable)
    }

    /// A sink that never answers: InfluxDB down and the spool full.
    struct Stuck;

    impl crate::sink::Sink for Stuck {
        fn deliver(
            &self,
            batch: crate::batch::Batch,
        ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
            Box::pin(async move {
                let _held = batch;
                std::future::pending::<()>().await
            })
        }

        fn ready(&self) -> bool {
            false
        }
    }

    fn start_with(
        limits: SessionLimits,
        sink: Arc<dyn crate::sink::Sink>,
        ack_mode: AckMode,
    ) -> (
        tmpsc::Sender<Result<WsMessage, WsError>>,
        tmpsc::Receiver<WsMessage>,
        tokio::task::JoinHandle<SessionSummary>,
    ) {
        let (in_tx, in_rx) = tmpsc::channel(16);
        let (out_tx, out_rx) = tmpsc::channel(16);
        let rx = futures_util::stream::unfold(in_rx, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        let duplex = Duplex {
            rx: Box::pin(rx),
            tx: PollSender::new(out_tx),
        };
        let shutdown = CancellationToken::new();
        let (pipeline, _batcher) = pipeline::start(
            PipelineConfig {
                queue_capacity: 16,
                batch_points: 1,
                batch_bytes: 1 << 20,
                flush_interval: Duration::from_millis(10),
                concurrency: 1,
            },
            sink,
            shutdown.clone(),
            CancellationToken::new(),
        );
        let fleet = Arc::new(crate::fleet::Fleet::new(
            Arc::new(crate::metrics::Metrics::new()),
            Duration::from_secs(60),
            100,
        ));
        let ctx = SessionContext {
            observer: fleet.open_session("d").observer(),
            device: "d".into(),
            encoding: Encoding::ByFrame,
            decoder: Arc::new(Decoder::new(DecoderConfig::default())),
            pipeline,
            limits,
            guard: crate::limits::SessionGuard::unlimited("d"),
            ack_mode,
            dedupe: None,
            commands: None,
            uplink: None,
        };
        (in_tx, out_rx, tokio::spawn(run(duplex, ctx, shutdown)))
    }

    async fn text(rx: &mut tmpsc::Receiver<WsMessage>) -> String {
        loop {
            match rx.recv().await.expect("a frame") {
                WsMessage::Text(t) => return t.to_string(),
                WsMessage::Ping(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_acks_for_the_backpressure_timeout_closes_with_1013() {
        let mut l = limits();
        l.max_inflight = 3;
        let (tx, mut rx, task) = start_with(l, Arc::new(Stuck), AckMode::Durable);
        for seq in 1..=5 {
            // The last two stay unread in the socket: the session stopped reading.
            let _ = tx
                .send(Ok(WsMessage::text(format!(
                    r#"{{"seq": {seq}, "fields": {{"v": 1}}}}"#
                ))))
                .await;
        }
        let summary = task.await.unwrap();
        assert_eq!(summary.close_code, Some(1013));
        assert_eq!((summary.messages, summary.acks, summary.nacks), (3, 0, 0));
        match rx.recv().await {
            Some(WsMessage::Close(Some(f))) => assert_eq!(u16::from(f.code), 1013),
            other => panic!("expected the close, not {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn received_mode_acks_before_the_sink_answers() {
        let (tx, mut rx, task) = start_with(limits(), Arc::new(Stuck), AckMode::Received);
        tx.send(Ok(WsMessage::text(r#"{"seq": 9, "fields": {"v": 1}}"#)))
            .await
            .unwrap();
        assert_eq!(text(&mut rx).await, r#"{"ack":9}"#);
        drop(tx);
        assert_eq!(task.await.unwrap().acks, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn acks_then_idle_timeout_closes_with_1000() {
        let (tx, mut rx, task) = start(limits());
        tx.send(Ok(WsMessage::text(r#"{"seq": 1, "fields": {"v": 1}}"#)))
            .await
            .unwrap();
        assert_eq!(text(&mut rx).await, r#"{"ack":1}"#);
        // Silence: pings go out every 30 s, the session closes after 120 s.
        let summary = task.await.unwrap();
        assert_eq!(summary.close_code, Some(1000));
        assert_eq!(summary.close_reason, "idle timeout");
        let mut pings = 0;
        while let Ok(m) = rx.try_recv() {
            match m {
                WsMessage::Ping(_) => pings += 1,
                WsMessage::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(pings, 3, "pings at 30, 60 and 90 s");
    }

    #[tokio::test(start_paused = true)]
    async fn pongs_keep_a_session_alive() {
        let (tx, mut rx, task) = start(limits());
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            tx.send(Ok(WsMessage::Pong(Default::default())))
                .await
                .unwrap();
        }
        assert!(!task.is_finished(), "a device answering pings is not idle");
        drop(tx);
        let summary = task.await.unwrap();
        assert_eq!(summary.close_code, None, "the device went away");
        while rx.try_recv().is_ok() {}
    }

    #[tokio::test]
    async fn garbage_is_nacked_then_closed_with_1007() {
        let (tx, mut rx, task) = start(limits());
        for _ in 0..3 {
            tx.send(Ok(WsMessage::text("Hello, WebSocket!")))
                .await
                .unwrap();
            let nack: serde_json::Value = serde_json::from_str(&text(&mut rx).await).unwrap();
            assert_eq!(nack["error"], "invalid_json");
        }
        let summary = task.await.unwrap();
        assert_eq!(summary.close_code, Some(1007));
        assert_eq!(summary.nacks, 3);
    }
}
