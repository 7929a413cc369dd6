//! HTTP fallback client, HTTP/1.1 (one request in flight, keep-alive) or
//! HTTP/2 (h2c prior knowledge, requests multiplexed), on one connection.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{Answer, Kind, Payload, Target, encode, parse_answer};
use crate::compare::CompareError;
use crate::compare::counted::{Counted, Counters};
use crate::compare::workload::Reading;

enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

pub struct HttpSender {
    conn: Conn,
    uri: http::Uri,
    host: String,
    payload: Payload,
    answers: mpsc::Sender<Answer>,
}

pub async fn connect(
    kind: Kind,
    target: &Target,
    device: &str,
    counters: &Arc<Counters>,
    answers: mpsc::Sender<Answer>,
) -> Result<HttpSender, CompareError> {
    let tcp = TcpStream::connect(target.server).await?;
    tcp.set_nodelay(true)?;
    let io = TokioIo::new(Counted::new(tcp, counters.clone()));
    let client = |e: hyper::Error| CompareError::Client(format!("HTTP handshake: {e}"));
    let conn = if kind == Kind::Http2 {
        let (send, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(client)?;
        tokio::spawn(conn);
        Conn::H2(send)
    } else {
        let (send, conn) = http1::handshake(io).await.map_err(client)?;
        tokio::spawn(conn);
        Conn::H1(send)
    };
    let uri = if kind == Kind::Http2 {
        format!("http://{}/v1/devices/{device}/points", target.server)
    } else {
        format!("/v1/devices/{device}/points")
    };
    Ok(HttpSender {
        conn,
        uri: uri
            .parse()
            .map_err(|e: http::uri::InvalidUri| CompareError::Client(e.to_string()))?,
        host: target.server.to_string(),
        payload: target.payload,
        answers,
    })
}

impl HttpSender {
    /// Waits until the connection can take a request (HTTP/1.1: the previous
    /// answer is in), then sends; the answer arrives on the channel.
    pub async fn send(&mut self, seq: u64, readings: &[Reading]) -> Result<(), CompareError> {
        let content_type = match self.payload {
            Payload::Json => "application/json",
            Payload::Cbor => "application/cbor",
        };
        let req = http::Request::post(self.uri.clone())
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(encode(self.payload, seq, readings))))
            .map_err(|e| CompareError::Client(e.to_string()))?;
        let failed = |e: hyper::Error| CompareError::Client(format!("HTTP request: {e}"));
        let response = match &mut self.conn {
            Conn::H1(s) => {
                s.ready().await.map_err(failed)?;
                s.send_request(req)
            }
            Conn::H2(s) => {
                s.ready().await.map_err(failed)?;
                // Boxed so both arms have one type.
                return spawn_answer(
                    Box::pin(s.send_request(req)),
                    self.payload,
                    self.answers.clone(),
                );
            }
        };
        spawn_answer(Box::pin(response), self.payload, self.answers.clone())
    }
}

type ResponseFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

fn spawn_answer(
    response: ResponseFuture,
    payload: Payload,
    answers: mpsc::Sender<Answer>,
) -> Result<(), CompareError> {
    tokio::spawn(async move {
        let Ok(resp) = response.await else { return };
        let Ok(body) = resp.into_body().collect().await else {
            return;
        };
        if let Some(a) = parse_answer(&body.to_bytes(), payload == Payload::Cbor) {
            let _ = answers.send(a).await;
        }
    });
    Ok(())
}
