//! The server: accept loop, HTTP routes and the WebSocket handshake.
//!
//! [`run`] is the testable entry point: the binary binds, tests bind
//! `127.0.0.1:0`, both call it with a shutdown token. The handshake is done
//! here (not by axum's extractor) so that tokio-tungstenite's
//! `WebSocketConfig` is entirely ours: size limits checked before buffering,
//! small buffers so many idle sessions stay cheap.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::{Auth, AuthSettings, Identity, RegistryError};
use crate::commands;
use crate::config::{Config, SinkKind};
use crate::conn::{Conn, Peer};
use crate::fleet::Fleet;
use crate::http::{self, is_upgrade};
use crate::ingest::IngestContext;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::mqtt;
use crate::pipeline::{self, Pipeline, PipelineConfig};
use crate::session::{self, SessionContext, SessionLimits};
use crate::sink::Sink;
use crate::sink::blackhole::Blackhole;
use crate::sink::deadletter::DeadLetter;
use crate::sink::influx::InfluxClient;
use crate::sink::writer::{InfluxSink, RetryConfig};
use wsingest_proto::decode::Decoder;
use wsingest_proto::protocol::{self, Encoding};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Client(#[from] crate::sink::influx::ClientError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Spool(#[from] crate::sink::spool::SpoolError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
}

/// Shared by every request handler.
struct AppState {
    config: Config,
    pipeline: Pipeline,
    sink: Arc<dyn Sink>,
    sessions: TaskTracker,
    session_slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    auth: Arc<Auth>,
    limits: Arc<Limits>,
    ws_config: WebSocketConfig,
    /// Decode-and-enqueue for the HTTP fallback and gRPC.
    ingest: IngestContext,
    metrics: Arc<Metrics>,
    fleet: Arc<Fleet>,
    live: Arc<crate::live::Live>,
    commands: Arc<commands::Router>,
    bridge: Option<mqtt::Monitor>,
    /// Refused requests' log lines, summarised under a flood.
    refusal_log: Arc<crate::refusal_log::RefusalLog>,
}

/// Serve on `listener` until `shutdown` fires, then close sessions with 1001
/// after flushing their acks, and return once the pipeline is drained.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    config.validate()?;
    if config.server.sink == SinkKind::Blackhole {
        tracing::warn!("sink = blackhole: points are acked and discarded, nothing is stored");
        return serve(listener, config, Arc::new(Blackhole::default()), shutdown).await;
    }
    let api = config.influx_api()?;
    let i = &config.influx;
    let client = InfluxClient::new(&i.url, &api, Duration::from_millis(i.timeout_ms), i.gzip)?;
    tracing::info!(url = client.write_url(), "writing to InfluxDB");
    let mut sink = InfluxSink::new(
        client,
        DeadLetter::new(i.dead_letter_path.clone(), i.dead_letter_max_bytes),
        RetryConfig {
            initial_backoff: Duration::from_millis(i.retry_initial_ms),
            max_backoff: Duration::from_millis(i.retry_max_ms),
            max_elapsed: Duration::from_millis(i.retry_max_elapsed_ms),
        },
    );
    let spool = if config.spool.enabled {
        let spool = open_spool(&config.spool).await?;
        let room = (i.batch_bytes as u64).min(config.spool.max_bytes / 4);
        sink = sink.with_spool(spool.clone(), i.concurrency, room, shutdown.clone());
        Some(spool)
    } else {
        None
    };
    let metrics = Arc::new(Metrics::new());
    if let Some(spool) = &spool {
        // What a crash left behind shows at once, not after the first replay.
        let st = spool.stats();
        let m = metrics.spool();
        m.set_size(st.bytes, st.pending_records);
        m.replay_pending_bytes.set(st.bytes as i64);
    }
    let sink = Arc::new(sink.with_metrics(metrics.clone()));
    // Warn, never refuse: devices can still be served into the spool.
    sink.startup_check(i.create_database).await;
    let replay = spool.map(|spool| {
        let slots = config.spool.replay_slots(i.concurrency);
        tokio::spawn(crate::sink::spool::replay::run(
            sink.clone(),
            spool,
            slots,
            shutdown.clone(),
        ))
    });
    let probe_sink = sink.clone();
    let probe_stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = probe_stop.cancelled() => break,
            }
            let _ = probe_sink.check().await;
        }
    });
    let ack_mode = config.server.ack_mode;
    let served = serve_with_metrics(listener, config, sink.clone(), metrics, shutdown).await;
    if let Some(replay) = replay {
        let _ = replay.await;
    }
    let held = sink.held_points();
    if held > 0 {
        match ack_mode {
            crate::config::AckMode::Durable => tracing::warn!(
                points = held,
                "stopped with points neither in InfluxDB nor in the spool; they were not acked and devices will resend them"
            ),
            crate::config::AckMode::Received => {
                tracing::error!(
                    points = held,
                    "stopped with points acked on receipt but not stored: they are lost"
                )
            }
        }
    }
    served
}

/// What `wsingest config check` runs: every check [`run`] makes before it
/// serves, without binding or writing. Errors are what would stop `serve`;
/// the returned lines are warnings `serve` would log and start anyway
/// (InfluxDB unreachable, missing database, refused credentials).
pub async fn preflight(config: &Config) -> Result<Vec<String>, ServeError> {
    config.validate()?;
    Auth::new(AuthSettings {
        allow_anonymous: config.auth.allow_anonymous,
        registry_path: config.auth.registry_path.clone(),
        allowed_origins: config.auth.allowed_origins.clone(),
        profiles: config.auth.profiles.clone(),
    })?;
    crate::tls::acceptor(&config.tls)?;
    let mut warnings = Vec::new();
    if config.server.sink == SinkKind::Blackhole {
        warnings.push("sink = blackhole: points are acked and discarded, nothing is stored".into());
        return Ok(warnings);
    }
    let i = &config.influx;
    let api = config.influx_api()?;
    let client = InfluxClient::new(
        &i.url,
        &api,
        Duration::from_millis(i.timeout_ms.min(5000)),
        i.gzip,
    )?;
    match client.check().await {
        Ok(_) => {}
        Err(crate::sink::influx::WriteError::Status {
            status, message, ..
        }) if crate::sink::retry::is_operator_error(status) => {
            if status == 404 && i.create_database {
                // serve creates it at startup
            } else {
                warnings.push(client.explain(status, &message));
            }
        }
        Err(e) => warnings.push(format!(
            "{e}: serve would start anyway and spool batches until InfluxDB answers; check influx.url"
        )),
    }
    Ok(warnings)
}

/// Open the spool (recovery reads every segment: a blocking thread).
async fn open_spool(
    config: &crate::sink::spool::SpoolConfig,
) -> Result<Arc<crate::sink::spool::Spool>, ServeError> {
    let c = config.clone();
    let (spool, report) = tokio::task::spawn_blocking(move || crate::sink::spool::Spool::open(&c))
        .await
        .expect("opening the spool does not panic")?;
    tracing::info!(
        dir = %config.dir.display(),
        records = report.records,
        points = report.points,
        bytes = report.bytes,
        torn_bytes = report.torn_bytes,
        corrupt_bytes = report.corrupt_bytes,
        "spool opened"
    );
    Ok(Arc::new(spool))
}

/// [`run`] with any sink.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    sink: Arc<dyn Sink>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_with_metrics(listener, config, sink, Arc::new(Metrics::new()), shutdown).await
}

/// [`serve`] reporting into `metrics` (which the sink may share).
pub async fn serve_with_metrics(
    listener: TcpListener,
    config: Config,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    config.validate()?;
    let (auth, limits) = security(&config, &metrics, &shutdown)?;
    let tls = crate::tls::acceptor(&config.tls)?;
    let drain = CancellationToken::new();
    let (pipeline, batcher) = pipeline::start(
        PipelineConfig::from(&config),
        sink.clone(),
        shutdown.clone(),
        drain.clone(),
    );
    let (outbound_tx, outbound_rx) = match config.mqtt.enabled() {
        true => {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let commands = Arc::new(commands::Router::new(config.commands.clone(), outbound_tx));
    let bridge = match outbound_rx {
        Some(rx) => Some(mqtt::Bridge::start(
            &config.mqtt,
            commands.clone(),
            rx,
            metrics.bridge(),
        )?),
        None => None,
    };
    let sweeper = commands.clone();
    let sweep_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => sweeper.sweep(),
                _ = sweep_stop.cancelled() => break,
            }
        }
    });
    let s = &config.server;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4096)
        // Frames queue until the session flushes: a burst of acks goes out in
        // one write instead of one syscall (and one TCP segment) per ack. The
        // buffer grows only as far as a burst needs, so idle sessions stay small.
        .write_buffer_size(4096)
        .max_write_buffer_size(s.max_message_bytes.max(64 * 1024))
        .max_message_size(Some(s.max_message_bytes))
        .max_frame_size(Some(s.max_frame_bytes.min(s.max_message_bytes)));
    let decoder = Arc::new(Decoder::new(config.decoder_config()));
    let mut ingest = IngestContext {
        decoder: decoder.clone(),
        pipeline: pipeline.clone(),
        backpressure_timeout: Duration::from_millis(s.backpressure_timeout_ms),
        shutdown: shutdown.clone(),
        uplink: bridge.as_ref().map(|b| b.uplink()),
        commands: Some(commands.clone()),
        fleet: None,
        dedupe: (s.dedupe_window_secs > 0).then(|| {
            Arc::new(crate::dedupe::Dedupe::new(
                Duration::from_secs(s.dedupe_window_secs),
                s.dedupe_max_entries,
            ))
        }),
    };
    let o = &config.observe;
    let fleet = Arc::new(Fleet::new(
        metrics.clone(),
        Duration::from_secs(o.device_retention_secs),
        s.max_connections.saturating_mul(2),
    ));
    ingest.fleet = Some(fleet.clone());
    let stats_stop = CancellationToken::new();
    let stats = (o.stats_interval_ms > 0).then(|| {
        crate::stats::spawn(
            fleet.clone(),
            pipeline.clone(),
            Duration::from_millis(o.stats_interval_ms),
            crate::stats::instance_name(&o.instance),
            stats_stop.clone(),
        )
    });
    let live_access = match (&config.auth.allow_anonymous, &o.operator_token) {
        (true, _) => crate::live::Access::Open,
        (false, Some(token)) => crate::live::Access::Token(token.clone()),
        (false, None) => crate::live::Access::Closed,
    };
    let live = Arc::new(crate::live::Live::new(
        fleet.clone(),
        live_access,
        crate::stats::instance_name(&o.instance),
        o.live_max_devices,
        shutdown.clone(),
    ));
    let state = Arc::new(AppState {
        metrics,
        fleet,
        live,
        pipeline,
        ingest,
        sink,
        sessions: TaskTracker::new(),
        session_slots: Arc::new(Semaphore::new(s.max_connections)),
        shutdown: shutdown.clone(),
        auth,
        limits,
        ws_config,
        bridge: bridge.as_ref().map(|b| b.monitor()),
        commands,
        config,
        refusal_log: Default::default(),
    });
    {
        // Summarise the last flood even when nothing follows it.
        let (log, stop) = (state.refusal_log.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::refusal_log::INTERVAL / 2);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => log.tick(),
                }
            }
        });
    }
    let subscriber = mqtt::subscribe::start(
        &state.config.mqtt,
        state.ingest.clone(),
        state.limits.clone(),
        shutdown.clone(),
    )?;
    let auth_state = state.clone();
    let grpc = crate::grpc::GrpcIngest {
        ctx: state.ingest.clone(),
        authorize: Arc::new(move |headers: &HeaderMap| {
            let id = headers
                .get(crate::grpc::DEVICE_METADATA)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // gRPC has no query string: the token comes in `authorization`.
            authorize(&auth_state, id, headers, &axum::http::Uri::from_static("/"))
        }),
        limits: state.limits.clone(),
        max_inflight: state.config.server.max_inflight_messages,
        max_message_bytes: state.config.server.max_message_bytes,
        close_timeout: Duration::from_secs(state.config.server.shutdown_timeout_secs),
    };
    let app = router(state.clone(), grpc);
    let handshake_timeout = Duration::from_secs(state.config.server.handshake_timeout_secs);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let conn_slots = Arc::new(Semaphore::new(state.config.server.max_connections));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), "listening");
    }
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = conn_slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let conn = Conn {
            app: app.clone(),
            peer,
            watcher: connections.watcher(),
            deadline: tokio::time::Instant::now() + handshake_timeout,
            tls: tls.clone(),
            limits: state.limits.clone(),
        };
        tokio::spawn(async move {
            conn.run(stream).await;
            drop(permit);
        });
    }
    tracing::info!("shutting down: no new connections; flushing and closing sessions");
    drop(listener);
    let grace = Duration::from_secs(state.config.server.shutdown_timeout_secs);
    let _ = tokio::time::timeout(grace, connections.shutdown()).await;
    state.sessions.close();
    if tokio::time::timeout(grace + Duration::from_secs(3), state.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("sessions did not finish in time");
    }
    // A last stats sample, before the pipeline drains.
    stats_stop.cancel();
    if let Some(stats) = stats {
        let _ = tokio::time::timeout(Duration::from_secs(2), stats).await;
    }
    drain.cancel();
    if tokio::time::timeout(grace, batcher).await.is_err() {
        tracing::warn!(
            "pipeline did not drain in time; unacked messages will be resent by devices"
        );
    }
    if let Some(subscriber) = subscriber {
        subscriber.shutdown(grace).await;
    }
    if let Some(bridge) = bridge {
        bridge.shutdown(grace).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The device auth and limits of a server; the registry reloads itself.
fn security(
    config: &Config,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(Arc<Auth>, Arc<Limits>), ServeError> {
    let a = &config.auth;
    let auth = Arc::new(Auth::new(AuthSettings {
        allow_anonymous: a.allow_anonymous,
        registry_path: a.registry_path.clone(),
        allowed_origins: a.allowed_origins.clone(),
        profiles: a.profiles.clone(),
    })?);
    let limits = Limits::with_metrics(config.limits.clone(), metrics.security.clone());
    if let Some(path) = a.registry_path.clone() {
        let (l, au) = (limits.clone(), auth.clone());
        let interval = Duration::from_millis(a.reload_interval_ms);
        crate::auth::reload::spawn(
            auth.clone(),
            path,
            interval,
            shutdown.clone(),
            move |registry| {
                l.revalidate(|device, token| match token {
                    Some(t) => au.still_valid(device, t),
                    // An anonymous session under an id that is now registered.
                    None => registry.get(device).is_none(),
                })
            },
        );
    }
    Ok((auth, limits))
}

fn router(state: Arc<AppState>, grpc: crate::grpc::GrpcIngest) -> Router {
    // With a registry and no anonymous devices, only registered devices can
    // ever connect: a command to any other id is a typo, answered 404.
    let known: Option<commands::http::KnownDevice> = (state.config.auth.registry_path.is_some()
        && !state.config.auth.allow_anonymous)
        .then(|| {
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

async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.shutdown.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".into(),
        )
    } else {
        let r = state.sink.readiness();
        let status = match r.ready {
            true => StatusCode::OK,
            false => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, format!("{}\n", r.reason))
    }
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
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if openmetrics {
        (
            state.metrics.encode_openmetrics(),
            crate::metrics::OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (
            state.metrics.encode_prometheus(),
            crate::metrics::PROMETHEUS_CONTENT_TYPE,
        )
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
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
fn authorize(
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

async fn upgrade(
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
    let guard = match state.limits.admit(&who) {
        Ok(g) => g,
        Err(e) => return http::text(StatusCode::CONFLICT, &e.to_string()),
    };
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
    let mut ctx = ctx;
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
            let summary = session::run(ws, ctx, shutdown).await;
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
