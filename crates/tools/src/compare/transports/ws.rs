//! WebSocket client (tokio-tungstenite on a counted socket).

use std::sync::Arc;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{Answer, Kind, Target, parse_answer};
use crate::compare::CompareError;
use crate::compare::counted::{Counted, Counters};
use crate::compare::workload::{self, Reading};

pub struct WsSender {
    sink: SplitSink<WebSocketStream<Counted<TcpStream>>, Message>,
    cbor: bool,
}

pub async fn connect(
    kind: Kind,
    target: &Target,
    device: &str,
    counters: &Arc<Counters>,
    answers: mpsc::Sender<Answer>,
) -> Result<WsSender, CompareError> {
    let cbor = kind == Kind::WsCbor;
    let tcp = TcpStream::connect(target.server).await?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{}/v1/devices/{device}", target.server);
    let mut req = url
        .into_client_request()
        .map_err(|e| CompareError::Client(e.to_string()))?;
    let proto = if cbor {
        "wsingest.v1.cbor"
    } else {
        "wsingest.v1.json"
    };
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        proto.parse().expect("valid header"),
    );
    let (ws, _) = tokio_tungstenite::client_async(req, Counted::new(tcp, counters.clone()))
        .await
        .map_err(|e| CompareError::Client(format!("WebSocket handshake: {e}")))?;
    let (sink, mut stream) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let answer = match &msg {
                Message::Text(t) => parse_answer(t.as_bytes(), false),
                Message::Binary(b) => parse_answer(b, true),
                _ => None,
            };
            if let Some(a) = answer
                && answers.send(a).await.is_err()
            {
                break;
            }
        }
    });
    Ok(WsSender { sink, cbor })
}

impl WsSender {
    pub async fn send(&mut self, seq: u64, readings: &[Reading]) -> Result<(), CompareError> {
        let msg = if self.cbor {
            Message::binary(workload::cbor(seq, readings))
        } else {
            Message::text(String::from_utf8(workload::json(seq, readings)).expect("JSON is UTF-8"))
        };
        self.sink
            .send(msg)
            .await
            .map_err(|e| CompareError::Client(e.to_string()))
    }
}
