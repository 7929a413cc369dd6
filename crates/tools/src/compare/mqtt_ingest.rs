//! wsingest's side of the MQTT row: a subscriber on `wsingest/+/up` that
//! feeds the same decoder and pipeline as the WebSocket, and publishes each
//! message's ack or nack on `wsingest/{device}/ack` once the points are
//! durable. So MQTT devices get the same end-to-end acks as the others, and
//! the comparison measures the same work plus the broker hop.
//!
//! `wsingest compare` runs it as its own process (hidden `--mqtt-ingest-child`)
//! so its CPU counts as server cost; the tests run it in-process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::CompareError;
use super::mqtt_codec::{self as codec, Packet};
use super::transports::Payload;
use wsingest_proto::decode::{Decoder, Format};
use wsingest_proto::protocol::Downlink;
use wsingest_server::config::{Config, SinkKind};
use wsingest_server::ingest::{IngestContext, Submitted};
use wsingest_server::pipeline::{self, Outcome, PipelineConfig};
use wsingest_server::sink::Sink;

/// Outcomes a device may have waiting before its messages wait to be read.
const DEVICE_INFLIGHT: usize = 4096;

/// The sink `config` selects, as `wsingest serve` would build it.
fn sink(config: &Config) -> Result<Arc<dyn Sink>, CompareError> {
    use wsingest_server::sink::deadletter::DeadLetter;
    use wsingest_server::sink::influx::InfluxClient;
    use wsingest_server::sink::writer::{InfluxSink, RetryConfig};
    if config.server.sink == SinkKind::Blackhole {
        return Ok(Arc::new(
            wsingest_server::sink::blackhole::Blackhole::default(),
        ));
    }
    let api = config
        .influx_api()
        .map_err(|e| CompareError::Client(e.to_string()))?;
    let i = &config.influx;
    let client = InfluxClient::new(&i.url, &api, Duration::from_millis(i.timeout_ms), i.gzip)
        .map_err(|e| CompareError::Client(e.to_string()))?;
    Ok(Arc::new(InfluxSink::new(
        client,
        DeadLetter::new(i.dead_letter_path.clone(), i.dead_letter_max_bytes),
        RetryConfig {
            initial_backoff: Duration::from_millis(i.retry_initial_ms),
            max_backoff: Duration::from_millis(i.retry_max_ms),
            max_elapsed: Duration::from_millis(i.retry_max_elapsed_ms),
        },
    )))
}

fn reply(d: &Downlink, payload: Payload) -> Vec<u8> {
    match payload {
        Payload::Json => serde_json::to_vec(d).expect("downlink serializes"),
        Payload::Cbor => d.to_cbor(),
    }
}

/// Subscribe on `broker` and ingest until `shutdown`.
pub async fn run(
    config: Config,
    broker: SocketAddr,
    payload: Payload,
    shutdown: CancellationToken,
) -> Result<(), CompareError> {
    let sink = sink(&config)?;
    let drain = CancellationToken::new();
    let (pipeline, batcher) = pipeline::start(
        PipelineConfig::from(&config),
        sink,
        shutdown.clone(),
        drain.clone(),
    );
    let ctx = IngestContext {
        decoder: Arc::new(Decoder::new(config.decoder_config())),
        pipeline,
        backpressure_timeout: Duration::from_millis(config.server.backpressure_timeout_ms),
        shutdown: shutdown.clone(),
        uplink: None,
        commands: None,
        fleet: None,
        dedupe: None,
    };
    let format = match payload {
        Payload::Json => Format::Json,
        Payload::Cbor => Format::Cbor,
    };

    let tcp = TcpStream::connect(broker).await?;
    tcp.set_nodelay(true)?;
    let (mut read, mut write) = tcp.into_split();
    let mut out = BytesMut::new();
    // Keep-alive off: this is a measurement's subscriber, not a long-lived client.
    codec::connect(&mut out, "wsingest-mqtt-ingest", 0);
    codec::subscribe(&mut out, 1, "wsingest/+/up", 0);
    write.write_all(&out).await?;

    // One writer for every ack: (device, reply body).
    let (acks_tx, mut acks_rx) = mpsc::channel::<(String, Vec<u8>)>(DEVICE_INFLIGHT);
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(4096);
        while let Some((device, body)) = acks_rx.recv().await {
            buf.clear();
            codec::publish(&mut buf, &format!("wsingest/{device}/ack"), 0, 0, &body);
            while let Ok((device, body)) = acks_rx.try_recv() {
                codec::publish(&mut buf, &format!("wsingest/{device}/ack"), 0, 0, &body);
            }
            if write.write_all(&buf).await.is_err() {
                break;
            }
        }
    });

    let mut devices: HashMap<String, mpsc::Sender<Outcome>> = HashMap::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let packet = match codec::decode(&mut buf)
            .map_err(|e| CompareError::Client(e.to_string()))?
        {
            Some(p) => p,
            None => {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    n = read.read_buf(&mut buf) => {
                        if n? == 0 {
                            return Err(CompareError::Client("broker closed the connection".into()));
                        }
                        continue;
                    }
                }
            }
        };
        let Packet::Publish {
            topic,
            payload: body,
            ..
        } = packet
        else {
            continue;
        };
        let Some(device) = topic
            .strip_prefix("wsingest/")
            .and_then(|t| t.strip_suffix("/up"))
        else {
            continue;
        };
        let otx = devices.entry(device.to_owned()).or_insert_with(|| {
            let (otx, mut orx) = mpsc::channel::<Outcome>(DEVICE_INFLIGHT);
            let acks = acks_tx.clone();
            let device = device.to_owned();
            tokio::spawn(async move {
                while let Some(o) = orx.recv().await {
                    let d = match o {
                        Outcome::Acked { seq: None } => continue,
                        Outcome::Acked { seq: Some(seq) } => Downlink::Ack { ack: seq },
                        Outcome::Nacked(n) => Downlink::nack(n.seq, n.error, n.detail),
                    };
                    if acks
                        .send((device.clone(), reply(&d, payload)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            otx
        });
        let Ok(permit) = otx.clone().reserve_owned().await else {
            continue;
        };
        // The comparison measures transports, not limits: no limiter.
        let nack = match ctx.submit(&body, format, device, None, None, permit).await {
            Submitted::Queued { .. } | Submitted::CommandResult { .. } => None,
            Submitted::Resent { seq, .. } => Some(Downlink::Ack { ack: seq }),
            Submitted::Refused(e) => Some(Downlink::nack(e.seq(), e.code(), e.to_string())),
            Submitted::Limited { seq, refusal } => {
                Some(Downlink::nack(seq, refusal.error, refusal.detail))
            }
            Submitted::Overloaded { seq } | Submitted::ShuttingDown { seq } => {
                Some(Downlink::nack(seq, "overloaded", "resend later"))
            }
        };
        if let Some(n) = nack {
            let _ = acks_tx.send((device.to_owned(), reply(&n, payload))).await;
        }
    }
    drop(devices);
    drop(acks_tx);
    drain.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), batcher).await;
    writer.abort();
    Ok(())
}
