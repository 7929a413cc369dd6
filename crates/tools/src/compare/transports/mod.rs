//! One client per transport, all with the same shape: [`connect`] a device,
//! [`Sender::send`] messages, read [`Answer`]s (acks and nacks) from a channel,
//! and count the bytes on the socket.

mod grpc;
mod http;
mod mqtt;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::CompareError;
use super::counted::Counters;
use super::workload::{self, Reading};

/// The transports compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// WebSocket, `wsingest.v1.json` text frames.
    WsJson,
    /// WebSocket, `wsingest.v1.cbor` binary frames.
    WsCbor,
    /// MQTT 3.1.1 through mosquitto to wsingest's subscriber, acks on a reply topic.
    Mqtt,
    /// HTTP/1.1 keep-alive, `POST /v1/devices/{id}/points`, one request at a time.
    Http1,
    /// HTTP/2 (h2c), the same POSTs multiplexed on one connection.
    Http2,
    /// gRPC bidirectional stream (h2c), protobuf telemetry.
    Grpc,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::WsJson,
        Kind::WsCbor,
        Kind::Mqtt,
        Kind::Http1,
        Kind::Http2,
        Kind::Grpc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::WsJson => "WebSocket JSON",
            Kind::WsCbor => "WebSocket CBOR",
            Kind::Mqtt => "MQTT",
            Kind::Http1 => "HTTP/1.1",
            Kind::Http2 => "HTTP/2",
            Kind::Grpc => "gRPC stream",
        }
    }

    /// The notes' "connection type", as this client uses it.
    pub fn connection(self) -> &'static str {
        match self {
            Kind::WsJson | Kind::WsCbor => "full-duplex, 1 TCP",
            Kind::Mqtt => "pub/sub via broker, 1 TCP",
            Kind::Http1 => "request/response, 1 in flight",
            Kind::Http2 => "request/response, multiplexed",
            Kind::Grpc => "bidirectional stream",
        }
    }
}

/// Payload encoding for MQTT and the HTTP fallback (WebSocket rows fix theirs,
/// gRPC uses protobuf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    Json,
    Cbor,
}

/// Where the clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The wsingest server (WebSocket, HTTP, gRPC).
    pub server: SocketAddr,
    /// The MQTT broker, for [`Kind::Mqtt`].
    pub broker: Option<SocketAddr>,
    pub payload: Payload,
    /// QoS of MQTT publishes (0 or 1).
    pub mqtt_qos: u8,
}

/// The server's answer to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub seq: u64,
    pub ok: bool,
}

/// The sending half of a connected device.
pub enum Sender {
    Ws(ws::WsSender),
    Mqtt(mqtt::MqttSender),
    Http(http::HttpSender),
    Grpc(grpc::GrpcSender),
}

impl Sender {
    /// Send message `seq` carrying `readings`; encoding is part of the client's work.
    pub async fn send(&mut self, seq: u64, readings: &[Reading]) -> Result<(), CompareError> {
        match self {
            Sender::Ws(s) => s.send(seq, readings).await,
            Sender::Mqtt(s) => s.send(seq, readings).await,
            Sender::Http(s) => s.send(seq, readings).await,
            Sender::Grpc(s) => s.send(seq, readings).await,
        }
    }
}

/// A connected device.
pub struct Conn {
    pub sender: Sender,
    pub answers: mpsc::Receiver<Answer>,
    pub counters: Arc<Counters>,
}

/// Connect `device` over `kind`; returns once the first message can be sent.
pub async fn connect(kind: Kind, target: &Target, device: &str) -> Result<Conn, CompareError> {
    let counters = Arc::new(Counters::default());
    // Deep enough that a reader never waits on the measuring loop.
    let (tx, answers) = mpsc::channel(4096);
    let sender = match kind {
        Kind::WsJson | Kind::WsCbor => {
            Sender::Ws(ws::connect(kind, target, device, &counters, tx).await?)
        }
        Kind::Mqtt => Sender::Mqtt(mqtt::connect(target, device, &counters, tx).await?),
        Kind::Http1 | Kind::Http2 => {
            Sender::Http(http::connect(kind, target, device, &counters, tx).await?)
        }
        Kind::Grpc => Sender::Grpc(grpc::connect(target, device, &counters, tx).await?),
    };
    Ok(Conn {
        sender,
        answers,
        counters,
    })
}

/// An answer from a reply body (`{"ack": n}` / `{"nack": n, ...}`), JSON or CBOR.
pub(crate) fn parse_answer(bytes: &[u8], binary: bool) -> Option<Answer> {
    let v: serde_json::Value = if binary {
        let c: ciborium::Value = ciborium::from_reader(bytes).ok()?;
        serde_json::to_value(c).ok()?
    } else {
        serde_json::from_slice(bytes).ok()?
    };
    if let Some(seq) = v.get("ack").and_then(|s| s.as_u64()) {
        return Some(Answer { seq, ok: true });
    }
    v.get("nack")
        .and_then(|s| s.as_u64())
        .map(|seq| Answer { seq, ok: false })
}

/// The body of a message in the MQTT/HTTP payload encoding.
pub(crate) fn encode(payload: Payload, seq: u64, readings: &[Reading]) -> Vec<u8> {
    match payload {
        Payload::Json => workload::json(seq, readings),
        Payload::Cbor => workload::cbor(seq, readings),
    }
}
