//! gRPC client: one `Ingest/Session` stream per device over our h2 client.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use super::{Answer, Target};
use crate::compare::CompareError;
use crate::compare::counted::{Counted, Counters};
use crate::compare::workload::{self, Reading};
use wsingest_server::grpc::proto::{self, downlink};

pub struct GrpcSender {
    tx: mpsc::Sender<proto::Uplink>,
}

pub async fn connect(
    target: &Target,
    device: &str,
    counters: &Arc<Counters>,
    answers: mpsc::Sender<Answer>,
) -> Result<GrpcSender, CompareError> {
    let tcp = TcpStream::connect(target.server).await?;
    tcp.set_nodelay(true)?;
    let mut client = wsingest_server::grpc::client::connect(
        Counted::new(tcp, counters.clone()),
        &target.server.to_string(),
    )
    .await
    .map_err(|e| CompareError::Client(format!("HTTP/2 handshake: {e}")))?;
    let (tx, rx) = mpsc::channel(1024);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        wsingest_server::grpc::DEVICE_METADATA,
        device
            .parse()
            .map_err(|_| CompareError::Client(format!("bad device id {device}")))?,
    );
    let mut replies = client
        .session(req)
        .await
        .map_err(|s| CompareError::Client(format!("gRPC stream: {s}")))?
        .into_inner();
    tokio::spawn(async move {
        // The client is kept alive with the stream.
        let _client = client;
        while let Ok(Some(d)) = replies.message().await {
            let a = match d.body {
                Some(downlink::Body::Ack(a)) => Answer {
                    seq: a.seq,
                    ok: true,
                },
                Some(downlink::Body::Nack(n)) => Answer {
                    seq: n.seq.unwrap_or(0),
                    ok: false,
                },
                None => continue,
            };
            if answers.send(a).await.is_err() {
                break;
            }
        }
    });
    Ok(GrpcSender { tx })
}

impl GrpcSender {
    pub async fn send(&mut self, seq: u64, readings: &[Reading]) -> Result<(), CompareError> {
        self.tx
            .send(workload::grpc(seq, readings))
            .await
            .map_err(|_| CompareError::Client("gRPC stream closed".into()))
    }
}
