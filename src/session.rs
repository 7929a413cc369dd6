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
//! with 1013 so the device retries later instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message as WsMessage, error::CapacityError,
};
use tokio_util::sync::CancellationToken;

use crate::decode::{Decoder, Format, Message};
use crate::fleet::SessionObserver;
use crate::pipeline::{Entry, Outcome, Pipeline, Reply};
use crate::protocol::{Downlink, Encoding};

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
}

/// What a session did, for its closing log line and for tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SessionSummary {
    pub messages: u64,
    pub points: u64,
    pub acks: u64,
    pub nacks: u64,
    /// The close code we sent, if we closed the session.
    pub close_code: Option<u16>,
    pub close_reason: String,
}

/// Why the server ends a session.
#[derive(Debug, Clone)]
struct Closing {
    code: CloseCode,
    reason: String,
    deadline: Instant,
}

pub async fn run<S>(mut ws: S, ctx: SessionContext, shutdown: CancellationToken) -> SessionSummary
where
    S: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin,
{
    let limits = ctx.limits.clone();
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
    let close_after = |code: CloseCode, reason: &str| Closing {
        code,
        reason: reason.to_string(),
        deadline: Instant::now() + limits.close_timeout,
    };

    loop {
        if closing.is_some() && inflight == 0 {
            break;
        }
        let deadline = closing.as_ref().map(|c| c.deadline);
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if closing.is_none() => {
                closing = Some(close_after(CloseCode::Away, "server shutting down"));
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
                        Outcome::Acked { seq: None } => {
                            ctx.observer.acked();
                            continue;
                        }
                        Outcome::Acked { seq: Some(seq) } => {
                            summary.acks += 1;
                            ctx.observer.acked();
                            Downlink::Ack { ack: seq }
                        }
                        Outcome::Nacked { seq, error, detail } => {
                            summary.nacks += 1;
                            ctx.observer.nacked(error, &detail);
                            Downlink::nack(seq, error, detail)
                        }
                    };
                    msgs.push(d.encode(reply_format));
                }
                if !msgs.is_empty() && send_all(&mut ws, msgs, limits.send_timeout).await.is_err() {
                    return ended(summary, "device stopped reading");
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                tracing::warn!(inflight, "closing with messages still waiting for their ack");
                break;
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
                    WsMessage::Close(_) => return ended(summary, "closed by device"),
                    WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
                };
                if ctx.encoding == Encoding::ByFrame {
                    reply_format = format;
                }
                summary.messages += 1;
                ctx.observer.message(bytes.len());
                let now_ns = now_ns();
                let decoded = ctx.decoder.decode(&bytes, format, &ctx.device, now_ns);
                // SenML packs have no seq: the n-th message of the session is
                // acked (or nacked) as n, so devices can still match answers.
                let ordinal = ctx.encoding.numbers_messages().then_some(summary.messages);
                let nack = match decoded {
                    Ok(Message::Points { seq, points }) => {
                        let seq = seq.or(ordinal);
                        invalid_run = 0;
                        let mut lines = Vec::with_capacity(bytes.len() + 64 * points.len());
                        for p in &points {
                            crate::lineproto::encode_point(p, &mut lines);
                        }
                        summary.points += points.len() as u64;
                        let n_points = points.len() as u32;
                        ctx.observer.points(points);
                        let permit = out_tx.clone().try_reserve_owned().expect("inflight below channel capacity");
                        inflight += 1;
                        let entry = Entry { lines, points: n_points, reply: Reply::new(seq, permit) };
                        match enqueue(&ctx.pipeline, entry, limits.backpressure_timeout, &shutdown).await {
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
                    Ok(Message::CommandResult { cmd, ok, detail, .. }) => {
                        invalid_run = 0;
                        tracing::info!(cmd, ok, detail, "command result");
                        None
                    }
                    Err(e) => {
                        invalid_run += 1;
                        tracing::debug!(error = e.code(), detail = %e, "message refused");
                        let detail = e.to_string();
                        ctx.observer.decode_error(e.code(), &detail);
                        Some(Downlink::nack(e.seq().or(ordinal), e.code(), detail))
                    }
                };
                if let Some(nack) = nack {
                    summary.nacks += 1;
                    if send_all(&mut ws, vec![nack.encode(reply_format)], limits.send_timeout).await.is_err() {
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
