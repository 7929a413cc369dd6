//! MQTT 3.1.1 device client: publishes on `wsingest/{device}/up`, reads acks
//! from `wsingest/{device}/ack` (published by wsingest's subscriber once the
//! points are durable, see [`crate::compare::mqtt_ingest`]).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{Answer, Payload, Target, encode, parse_answer};
use crate::compare::CompareError;
use crate::compare::counted::{Counted, Counters};
use crate::compare::mqtt_codec::{self as codec, Packet};
use crate::compare::workload::Reading;

type Io = Counted<TcpStream>;

pub struct MqttSender {
    write: WriteHalf<Io>,
    topic: String,
    qos: u8,
    payload: Payload,
    pid: u16,
    buf: BytesMut,
}

/// Read packets until one matches `want`.
async fn expect(
    io: &mut Io,
    buf: &mut BytesMut,
    want: impl Fn(&Packet) -> bool,
) -> Result<Packet, CompareError> {
    loop {
        if let Some(p) = codec::decode(buf).map_err(|e| CompareError::Client(e.to_string()))? {
            if want(&p) {
                return Ok(p);
            }
            continue;
        }
        if io.read_buf(buf).await? == 0 {
            return Err(CompareError::Client("broker closed the connection".into()));
        }
    }
}

/// Connect, subscribe to the ack topic, and start the reader.
pub async fn connect(
    target: &Target,
    device: &str,
    counters: &Arc<Counters>,
    answers: mpsc::Sender<Answer>,
) -> Result<MqttSender, CompareError> {
    let broker = target
        .broker
        .ok_or_else(|| CompareError::Client("no MQTT broker".into()))?;
    let tcp = TcpStream::connect(broker).await?;
    tcp.set_nodelay(true)?;
    let mut io = Counted::new(tcp, counters.clone());
    let mut out = BytesMut::new();
    // Keep-alive off, so idle connections stay silent while they are measured.
    codec::connect(&mut out, device, 0);
    codec::subscribe(&mut out, 1, &format!("wsingest/{device}/ack"), 0);
    io.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    match expect(&mut io, &mut buf, |p| matches!(p, Packet::ConnAck { .. })).await? {
        Packet::ConnAck { code: 0 } => {}
        p => {
            return Err(CompareError::Client(format!(
                "broker refused the connection: {p:?}"
            )));
        }
    }
    expect(&mut io, &mut buf, |p| matches!(p, Packet::SubAck { .. })).await?;
    let (mut read, write): (ReadHalf<Io>, WriteHalf<Io>) = tokio::io::split(io);
    let binary = target.payload == Payload::Cbor;
    tokio::spawn(async move {
        loop {
            while let Ok(Some(p)) = codec::decode(&mut buf) {
                if let Packet::Publish { payload, .. } = p
                    && let Some(a) = parse_answer(&payload, binary)
                    && answers.send(a).await.is_err()
                {
                    return;
                }
            }
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    Ok(MqttSender {
        write,
        topic: format!("wsingest/{device}/up"),
        qos: target.mqtt_qos.min(1),
        payload: target.payload,
        pid: 0,
        buf: BytesMut::with_capacity(1024),
    })
}

impl MqttSender {
    pub async fn send(&mut self, seq: u64, readings: &[Reading]) -> Result<(), CompareError> {
        self.pid = self.pid.wrapping_add(1).max(1);
        self.buf.clear();
        codec::publish(
            &mut self.buf,
            &self.topic,
            self.qos,
            self.pid,
            &encode(self.payload, seq, readings),
        );
        self.write.write_all(&self.buf).await?;
        Ok(())
    }
}
