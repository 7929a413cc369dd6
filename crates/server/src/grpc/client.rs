//! A gRPC client on one HTTP/2 connection of our own (hyper), for the tests
//! and `wsingest compare`: the caller owns the socket, so it can count the
//! bytes on it. Speaks h2c with prior knowledge, as gRPC does without TLS.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::proto::ingest_client::IngestClient;

/// One HTTP/2 connection as a tonic transport.
#[derive(Clone)]
pub struct H2Channel {
    send: SendRequest<tonic::body::Body>,
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for H2Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(req))
    }
}

/// Handshake HTTP/2 on `io` and return an `Ingest` client; `authority` is the
/// server's `host:port`.
pub async fn connect<S>(io: S, authority: &str) -> Result<IngestClient<H2Channel>, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "grpc client connection ended");
        }
    });
    let origin: http::Uri = format!("http://{authority}")
        .parse()
        .expect("host:port is a valid authority");
    Ok(IngestClient::with_origin(H2Channel { send }, origin))
}
