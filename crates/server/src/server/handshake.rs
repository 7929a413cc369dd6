//! The WebSocket handshake, done here rather than by axum's extractor so
//! that tokio-tungstenite's `WebSocketConfig` is entirely ours (size limits
//! checked before buffering, small buffers so idle sessions stay cheap), and
//! the session task it spawns.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::Instrument;

use super::AppState;
use super::routes::authorize;
use crate::conn::Peer;
use crate::http;
use crate::session::{self, SessionContext, SessionLimits};
use wsingest_proto::protocol::{self, Encoding};

pub(super) async fn upgrade(
    state: Arc<AppState>,
    path_device: Option<String>,
    req: Request<Body>,
) -> Response<Body> {
    let metrics = state.metrics.clone();
    let resp = upgrade_device(state, path_device, req).await;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        metrics.handshake_refused(resp.status().as_u16());
    }
    resp
}

async fn upgrade_device(
    state: Arc<AppState>,
    path_device: Option<String>,
    mut req: Request<Body>,
) -> Response<Body> {
    let headers = req.headers();
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return http::text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use Sec-WebSocket-Version: 13",
        );
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return http::text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key header");
    };
    let accept = derive_accept_key(key.as_bytes());
    let who = match authorize(&state, path_device, headers, req.uri()) {
        Ok(who) => who,
        Err((status, msg)) => return http::text(status, &msg),
    };
    let device = who.device.clone();
    let default = who.policy.format.as_deref();
    let mapping = match crate::formats::select(&state.ingest.decoder, req.uri(), default) {
        Ok(m) => m,
        Err((status, msg)) => return http::text(status, &msg),
    };
    let Ok(slot) = state.session_slots.clone().try_acquire_owned() else {
        state.limits.metrics.handshake_refused("server_full");
        return http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sessions on this server; retry later",
        );
    };
    let mut guard = match state.limits.admit(&who) {
        Ok(g) => g,
        Err(e) => return http::text(StatusCode::CONFLICT, &e.to_string()),
    };
    // With gateways sharing ownership: the 101 goes out once they can see
    // this session, so a reconnect elsewhere is always the newer one.
    guard.announced(crate::limits::ANNOUNCE_WAIT).await;
    let chosen = protocol::negotiate(
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let s = &state.config.server;
    let session_stats = state.fleet.open_session(&device);
    let ctx = SessionContext {
        observer: session_stats.observer(),
        device: device.clone(),
        encoding: chosen.map(|(_, e)| e).unwrap_or(Encoding::ByFrame),
        ingest: state.ingest.clone(),
        commands: None,
        limits: SessionLimits {
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            ping_interval: Duration::from_secs(s.ping_interval_secs),
            max_invalid: s.max_invalid_messages,
            max_inflight: s.max_inflight_messages,
            backpressure_timeout: Duration::from_millis(s.backpressure_timeout_ms),
            close_timeout: Duration::from_secs(s.shutdown_timeout_secs),
            send_timeout: Duration::from_secs(s.idle_timeout_secs.max(10)),
        },
        guard,
        ack_mode: s.ack_mode,
        mapping,
    };
    let span = tracing::info_span!("session", peer = ?peer, device = %device);
    let ws_config = state.ws_config;
    let shutdown = state.shutdown.clone();
    let router = state.commands.clone();
    // Boxed: the task keeps what it captures for the session's whole life,
    // and the context moves into the session's own state.
    let mut ctx = Box::new(ctx);
    state.sessions.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(ws_config),
            )
            .await;
            ctx.commands = Some(router.register(&ctx.device));
            tracing::info!(encoding = ?ctx.encoding, "session opened");
            let summary = session::run(ws, *ctx, shutdown).await;
            tracing::info!(
                messages = summary.messages,
                points = summary.points,
                acks = summary.acks,
                nacks = summary.nacks,
                close_code = summary.close_code,
                reason = %summary.close_reason,
                "session closed"
            );
            session_stats.close(summary.end(), &summary.close_reason);
            drop(slot);
        }
        .instrument(span),
    );
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some((name, _)) = chosen {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, name);
    }
    resp.body(Body::empty()).expect("valid response")
}
