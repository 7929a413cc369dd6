//! The HTTP routes and their handlers: health and readiness, metrics, the
//! live view, the HTTP fallback and command long-poll, and the one rule for
//! who a request's device is ([`authorize`]). WebSocket upgrades go on to
//! [`super::handshake`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::AppState;
use super::handshake::upgrade;
use crate::auth::Identity;
use crate::commands;
use crate::http::{self, is_upgrade};

pub(super) fn router(state: Arc<AppState>, grpc: crate::grpc::GrpcIngest) -> Router {
    // With a registry and no anonymous devices, only registered devices can
    // ever connect: a command to any other id is a typo, answered 404.
    let registry = state.config.auth.registry_path.is_some()
        || state.config.auth.registry == crate::cluster::RegistrySource::NatsKv;
    let known: Option<commands::http::KnownDevice> =
        (registry && !state.config.auth.allow_anonymous).then(|| {
            let auth = state.auth.clone();
            Arc::new(move |id: &str| auth.registry().get(id).is_some_and(|d| d.revoked.is_none()))
                as commands::http::KnownDevice
        });
    let command_api = commands::http::routes(
        state.commands.clone(),
        state.config.observe.operator_token.clone(),
        known,
    );
    Router::new()
        .route("/", get(root))
        .route("/v1/devices/{device_id}", get(device))
        .route("/v1/devices/{device_id}/points", post(http_points))
        .route_service("/wsingest.v1.Ingest/{*method}", grpc.into_service())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/live", get(live_page))
        .route("/live/feed", get(|State(s): State<Arc<AppState>>, req: Request<Body>| async move { s.live.feed(req) }))
        .route("/v1/mqtt", get(mqtt_stats))
        .route("/v1/devices/{device_id}/commands", get(poll_commands))
        .with_state(state)
        .merge(command_api)
}

/// The MQTT bridge's counters (404 without a bridge).
async fn mqtt_stats(State(state): State<Arc<AppState>>) -> Response<Body> {
    match &state.bridge {
        Some(b) => axum::Json(b.view()).into_response(),
        None => http::text(
            StatusCode::NOT_FOUND,
            "no MQTT bridge: set mqtt.url or --mqtt-url",
        ),
    }
}

async fn ready(State(state): State<Arc<AppState>>) -> Response<Body> {
    if state.shutdown.is_cancelled() {
        return http::readiness(&crate::sink::health::Readiness {
            ready: false,
            reason: "not ready: shutting down".into(),
        });
    }
    http::readiness(&state.sink.readiness())
}

async fn live_page(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response<Body> {
    if !state.config.observe.live {
        return http::text(
            StatusCode::NOT_FOUND,
            "the live view is off (observe.live = false)",
        );
    }
    state.live.page(&req)
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    state
        .metrics
        .queue_depth
        .set(state.pipeline.queued() as i64);
    http::metrics(&state.metrics, &headers)
}

async fn root(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response<Body> {
    if !is_upgrade(req.headers()) && state.config.observe.live {
        return state.live.page(&req);
    }
    if !is_upgrade(req.headers()) {
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "wsingest: IoT telemetry over WebSockets.\n\
             Connect a WebSocket to /v1/devices/{device_id} (or / with a device token)\n\
             and send {\"seq\": 1, \"fields\": {\"temp_c\": 21.5}}.\n",
        )
            .into_response();
    }
    upgrade(state, None, req).await
}

async fn device(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response<Body> {
    if !is_upgrade(req.headers()) {
        return http::text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint is a WebSocket: send a WebSocket upgrade request",
        );
    }
    upgrade(state, Some(id), req).await
}

/// Who is this request's device? The one rule for every transport (WebSocket
/// handshake, HTTP fallback, gRPC), see [`crate::auth`]: an error status and
/// message when the request is not allowed in. Refusals are counted and
/// logged with the request target redacted (tokens never reach the logs).
pub(super) fn authorize(
    state: &AppState,
    path_device: Option<String>,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<Identity, (StatusCode, String)> {
    state
        .auth
        .authenticate(path_device.as_deref(), headers, uri)
        .map_err(|denied| {
            state.limits.metrics.handshake_refused(denied.reason());
            let target = crate::auth::token::redact(uri);
            state.refusal_log.refused(denied.reason(), &target);
            (denied.status(), denied.to_string())
        })
}

/// `GET /v1/devices/{device_id}/commands`: long-poll for commands (see
/// [`commands::http::poll`]), authenticated like the device's other requests.
async fn poll_commands(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<commands::http::WaitQuery>,
    req: Request<Body>,
) -> Response<Body> {
    let device = match authorize(&state, Some(id), req.headers(), req.uri()) {
        Ok(who) => who.device,
        Err((status, msg)) => return http::text(status, &msg),
    };
    commands::http::poll(&state.commands, &device, q.wait).await
}

/// `POST /v1/devices/{device_id}/points`: the HTTP fallback (see [`crate::http_ingest`]).
async fn http_points(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let who = match authorize(&state, Some(id), &parts.headers, &parts.uri) {
        Ok(who) => who,
        Err((status, msg)) => return http::text(status, &msg),
    };
    let default = who.policy.format.as_deref();
    let mapping = match crate::formats::select(&state.ingest.decoder, &parts.uri, default) {
        Ok(m) => m,
        Err((status, msg)) => return http::text(status, &msg),
    };
    let limiter = state.limits.limiter(&who);
    let max = state.config.server.max_message_bytes;
    crate::http_ingest::post_points(
        &state.ingest,
        &who.device,
        limiter,
        &parts.headers,
        body,
        max,
        Duration::from_secs(state.config.server.handshake_timeout_secs),
        mapping,
    )
    .await
}
