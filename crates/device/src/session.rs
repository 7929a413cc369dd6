//! The client's background task: connect with backoff, run a session
//! (resend what is unanswered, send what the [`crate::Outbox`] allows, read
//! answers, answer commands), and decide from how it ended what comes next:
//! 1008 or HTTP 401/403 stop the client with an auth error, 1009 fails the
//! largest message, everything else (1013, 1006, 1011, ...) reconnects
//! after a backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::client::{Command, Shared, report_failure};
use crate::connect::{self, ConnectOptions, DeviceSocket};
use crate::error::AuthError;
use crate::outbox::Answer;
use crate::timing::Backoff;
use crate::wire::{Frame, command_result};

/// Longest a send may block before the connection counts as lost.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run(shared: Arc<Shared>) {
    let c = &shared.config;
    let mut backoff = Backoff::new(c.backoff_base, c.backoff_max);
    let mut rng = StdRng::from_os_rng();
    let opts = ConnectOptions {
        encoding: c.encoding,
        token: c.token.as_deref().map(Arc::from),
        source: None,
        timeout: c.connect_timeout,
    };
    let mut lost = false;
    loop {
        if shared.lock().closed {
            return;
        }
        let mut closed = shared.closed.subscribe();
        let attempt = tokio::select! {
            r = connect::connect(&shared.target, &c.device, &opts, &shared.wire) => r,
            _ = until_closed(&mut closed) => return,
        };
        let ws = match attempt {
            Ok(ws) => ws,
            Err(e) if e.is_auth() => {
                let (status, reason) = match &e {
                    connect::ConnectError::Http { status, body, .. } => (*status, body.clone()),
                    _ => unreachable!("is_auth"),
                };
                stop(
                    &shared,
                    AuthError {
                        message: format!(
                            "the server refused the device's token: HTTP {status} {reason}"
                        )
                        .trim()
                        .into(),
                        status: Some(status),
                        close_code: None,
                        reason,
                    },
                );
                return;
            }
            Err(e) => {
                tracing::debug!(device = %c.device, error = %e, "connect failed");
                let retry_after = match &e {
                    connect::ConnectError::Http {
                        retry_after: Some(s),
                        ..
                    } => Duration::from_secs(*s),
                    _ => Duration::ZERO,
                };
                *shared
                    .lock()
                    .stats
                    .connect_errors
                    .entry(e.kind())
                    .or_default() += 1;
                if !pause(&shared, backoff.next_delay(&mut rng).max(retry_after)).await {
                    return;
                }
                continue;
            }
        };
        {
            let mut st = shared.lock();
            st.stats.connects += 1;
            if lost {
                st.stats.reconnects += 1;
            }
        }
        lost = true;
        let (code, reason) = session(&shared, ws, &mut backoff, &mut rng).await;
        if shared.lock().closed {
            return;
        }
        match code {
            1008 => {
                stop(
                    &shared,
                    AuthError {
                        message: format!("the server closed the session with 1008: {reason}"),
                        status: None,
                        close_code: Some(1008),
                        reason,
                    },
                );
                return;
            }
            1009 => {
                let f = {
                    let mut st = shared.lock();
                    let f = st.outbox.fail_largest(&reason);
                    if let Some(f) = &f {
                        let size = crate::wire::frame_len(&f.frame);
                        st.max_message_bytes =
                            st.max_message_bytes.min(size.saturating_sub(1).max(1));
                    }
                    f
                };
                if let Some(f) = f {
                    report_failure(&shared, f);
                    shared.changed.notify_waiters();
                }
            }
            _ => {}
        }
        if !pause(&shared, backoff.next_delay(&mut rng)).await {
            return;
        }
    }
}

fn stop(shared: &Shared, e: AuthError) {
    tracing::warn!(device = %shared.config.device, error = %e, "stopped");
    shared.lock().fatal = Some(e);
    shared.changed.notify_waiters();
}

/// Wait `d`; `false` if the client was closed meanwhile.
async fn pause(shared: &Shared, d: Duration) -> bool {
    let mut closed = shared.closed.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = until_closed(&mut closed) => false,
    }
}

/// One connection, until it ends: (close code, reason); 1006 when it was
/// lost without a close frame.
async fn session(
    shared: &Shared,
    mut ws: DeviceSocket,
    backoff: &mut Backoff,
    rng: &mut StdRng,
) -> (u16, String) {
    shared.lock().outbox.session_started();
    let mut replies: Vec<Frame> = Vec::new();
    let mut closed = shared.closed.subscribe();
    loop {
        // What may go out now: command results, then messages in seq order.
        let (frames, held_back, ack_deadline) = {
            let mut st = shared.lock();
            let now = Instant::now();
            let mut frames = std::mem::take(&mut replies);
            while let Some(out) = st.outbox.pop_sendable(now) {
                frames.push(out.frame);
            }
            (
                frames,
                st.outbox.held_back_until(now),
                st.outbox.ack_deadline(shared.config.ack_timeout),
            )
        };
        if !frames.is_empty() && send(&mut ws, frames).await.is_err() {
            return (1006, "send failed".into());
        }
        tokio::select! {
            biased;
            _ = until_closed(&mut closed) => {
                close(&mut ws).await;
                return (1000, "client closing".into());
            }
            frame = ws.next() => {
                let frame = match frame {
                    None => return (1006, String::new()),
                    Some(Err(e)) => return (1006, e.to_string()),
                    Some(Ok(Frame::Close(c))) => {
                        let (code, reason) = c
                            .map(|c| (u16::from(c.code), c.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        *shared.lock().stats.closes.entry(code.to_string()).or_default() += 1;
                        // Let tungstenite answer the close.
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
                        return (code, reason);
                    }
                    Some(Ok(f)) => f,
                };
                if let Some(reply) = handle(shared, &frame, backoff, rng) {
                    replies.push(reply);
                }
            }
            _ = shared.wake.notified() => {}
            _ = sleep_until(held_back), if held_back.is_some() => {}
            _ = sleep_until(ack_deadline), if ack_deadline.is_some() => {
                tracing::debug!(device = %shared.config.device, "no ack in time; reconnecting");
                *shared.lock().stats.closes.entry("ack_timeout".into()).or_default() += 1;
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(CloseFrame {
                    code: CloseCode::from(4000),
                    reason: "no ack in time".into(),
                }))).await;
                return (4000, "no ack in time".into());
            }
        }
    }
}

/// A frame from the server; returns a command result to send.
fn handle(
    shared: &Shared,
    frame: &Frame,
    backoff: &mut Backoff,
    rng: &mut StdRng,
) -> Option<Frame> {
    let answer = {
        let mut st = shared.lock();
        let a = st.outbox.receive(frame, Instant::now(), rng);
        if let Answer::Acked { seq, .. } = &a {
            st.answered(*seq);
        }
        a
    };
    match answer {
        Answer::Acked { .. } => {
            backoff.reset();
            shared.changed.notify_waiters();
            None
        }
        Answer::Failed(f) => {
            report_failure(shared, f);
            shared.changed.notify_waiters();
            None
        }
        Answer::Command { id, name, args } => {
            let cmd = Command { id, name, args };
            let handler = {
                let mut st = shared.lock();
                st.stats.commands += 1;
                st.on_command.clone()
            };
            let result = match handler {
                Some(h) => h(&cmd),
                None => Err("this device has no command handler".into()),
            };
            let detail = result.as_ref().err().map(String::as_str);
            command_result(shared.config.encoding, &cmd.id, result.is_ok(), detail)
        }
        Answer::Invalid(e) => {
            tracing::debug!(device = %shared.config.device, error = %e, "unreadable downlink");
            None
        }
        Answer::Retrying { .. }
        | Answer::NackWithoutSeq { .. }
        | Answer::Unexpected
        | Answer::None => None,
    }
}

async fn send(ws: &mut DeviceSocket, frames: Vec<Frame>) -> Result<(), ()> {
    let all = async {
        for f in frames {
            ws.feed(f).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(SEND_TIMEOUT, all).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close(ws: &mut DeviceSocket) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "client closing".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if ws.send(Frame::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

async fn until_closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
