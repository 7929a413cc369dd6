//! One accepted connection: optional TLS, then hyper (HTTP/1.1 with
//! upgrades, or h2c), all of it under the handshake deadline.
//!
//! A client must complete its TLS handshake and its first request within
//! `server.handshake_timeout_secs` of the accept, or the connection is
//! dropped: one that never finishes (slowloris) cannot hold a connection
//! slot. hyper's own header timeout is kept for later requests on a
//! keep-alive connection, but it does not cover the auto builder's HTTP
//! version detection, nor TLS, hence this deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::limits::Limits;

/// The peer address of a connection, for logs (a request extension).
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

pub struct Conn {
    pub app: Router,
    pub peer: SocketAddr,
    pub watcher: Watcher,
    pub deadline: Instant,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub limits: Arc<Limits>,
}

impl Conn {
    /// Serve `stream` until the connection ends (or is upgraded).
    pub async fn run(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = self.tls.clone() else {
            return self.serve(stream).await;
        };
        match tokio::time::timeout_at(self.deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.serve(tls).await,
            Ok(Err(e)) => {
                self.limits.metrics.tls_handshake_failures.inc();
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                self.limits.metrics.tls_handshake_failures.inc();
                self.limits.metrics.handshake_timeouts.inc();
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
            }
        }
    }

    async fn serve<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let started = Arc::new(AtomicBool::new(false));
        let seen = started.clone();
        let inner = TowerToHyperService::new(self.app.layer(axum::Extension(Peer(self.peer))));
        let service = hyper::service::service_fn(move |req| {
            seen.store(true, Ordering::Relaxed);
            hyper::service::Service::call(&inner, req)
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let timeout = self.deadline.saturating_duration_since(Instant::now());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout.max(Duration::from_millis(1)));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let mut conn = std::pin::pin!(self.watcher.watch(conn));
        let peer = self.peer;
        let result = tokio::select! {
            r = &mut conn => r,
            _ = tokio::time::sleep_until(self.deadline), if !started.load(Ordering::Relaxed) => {
                if !started.load(Ordering::Relaxed) {
                    self.limits.metrics.handshake_timeouts.inc();
                    tracing::debug!(%peer, "no complete request within the handshake timeout; closing");
                    return;
                }
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
