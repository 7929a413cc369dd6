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
use wsingest_proto::decode::{Decoder, DecoderConfig};

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
    let rx =
        futures_util::stream::unfold(
            in_rx,
            |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
        );
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
    let ingest = IngestContext {
        decoder: Arc::new(Decoder::new(DecoderConfig::default())),
        pipeline,
        backpressure_timeout: limits.backpressure_timeout,
        shutdown: shutdown.clone(),
        uplink: None,
        commands: None,
        fleet: Some(fleet.clone()),
        dedupe: None,
    };
    let ctx = SessionContext {
        observer: fleet.open_session("d").observer(),
        device: "d".into(),
        encoding: Encoding::ByFrame,
        ingest,
        limits,
        guard: crate::limits::SessionGuard::unlimited("d"),
        ack_mode,
        commands: None,
        mapping: None,
    };
    let fut = run(duplex, ctx, shutdown);
    // Every idle session holds this future: keep it small (1440 bytes in a
    // debug build when written; the async-fn argument copy and the inline
    // handlers once made it 2.6 KiB).
    let size = std::mem::size_of_val(&fut);
    assert!(size <= 1800, "the session future grew to {size} bytes");
    (in_tx, out_rx, tokio::spawn(fut))
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
