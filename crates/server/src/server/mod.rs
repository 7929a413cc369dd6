//! The server's wiring: config to running parts (pipeline, sink and spool,
//! ingest, bridge, auth and limits, observability), the accept loop and the
//! shutdown. [`run`] is the testable entry point: the binary binds, tests
//! bind `127.0.0.1:0`, both call it with a shutdown token.
//!
//! - [`routes`]: the HTTP routes and handlers, and who a request's device is.
//! - [`handshake`]: the WebSocket handshake and the session task.

mod handshake;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, AuthSettings, RegistryError};
use crate::commands;
use crate::config::{Config, SinkKind};
use crate::conn::Conn;
use crate::fleet::Fleet;
use crate::ingest::IngestContext;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::mqtt;
use crate::pipeline::{self, Pipeline, PipelineConfig};
use crate::sink::Sink;
use crate::sink::blackhole::Blackhole;
use crate::sink::deadletter::DeadLetter;
use crate::sink::influx::InfluxClient;
use crate::sink::writer::{InfluxSink, RetryConfig};
use wsingest_proto::decode::Decoder;

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
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
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
    if config.queue.enabled() {
        return crate::queue::gateway::serve(listener, config, shutdown).await;
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
        m.max_bytes
            .set(i64::try_from(config.spool.max_bytes).unwrap_or(i64::MAX));
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
    sink.spawn_checks(Duration::from_secs(5), shutdown.clone());
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
    if config.queue.enabled() {
        // serve in queue mode does not start without NATS.
        crate::queue::connect(&config.queue).await?;
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
        Err(e) if config.queue.enabled() => warnings.push(format!(
            "{e}: in queue mode only writers (wsingest writer, serve --writer) write to InfluxDB; they would start anyway and leave messages in the stream (/readyz 503) until it answers; gateways are not affected. Check influx.url"
        )),
        Err(e) => warnings.push(format!(
            "{e}: serve would start anyway and spool batches until InfluxDB answers; check influx.url"
        )),
    }
    if config.queue.enabled() {
        // Operator errors (401/404) stop the writers' writes, not the gateways'.
        for w in warnings.iter_mut().filter(|w| !w.contains("in queue mode")) {
            *w = format!("{w} (in queue mode this concerns the writers only)");
        }
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
    let pipeline_config = match config.queue.enabled() {
        true => crate::queue::gateway::pipeline_config(&config),
        false => PipelineConfig::from(&config),
    };
    let (pipeline, batcher) = pipeline::start(
        pipeline_config,
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
    if config.queue.enabled() {
        // Registry, session ownership, command routing: shared whenever
        // there is NATS, whether or not points go through it.
        let client = crate::queue::connect(&config.queue).await?;
        let kv_registry = config.auth.registry == crate::cluster::RegistrySource::NatsKv;
        let on_change = revalidate(&limits, &auth);
        crate::cluster::start(
            client,
            &config.cluster,
            &config.queue,
            kv_registry,
            &auth,
            &limits,
            &commands,
            &shutdown,
            on_change,
        )
        .await?;
    }
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
        // Zeroed and kept per connection, so it is most of an idle session's
        // memory; 1 KiB still reads ~15 single-point messages per syscall,
        // and a larger frame grows the buffer as it needs.
        .read_buffer_size(1024)
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
            routes::authorize(&auth_state, id, headers, &axum::http::Uri::from_static("/"))
        }),
        limits: state.limits.clone(),
        max_inflight: state.config.server.max_inflight_messages,
        max_message_bytes: state.config.server.max_message_bytes,
        close_timeout: Duration::from_secs(state.config.server.shutdown_timeout_secs),
    };
    let app = routes::router(state.clone(), grpc);
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
        let interval = Duration::from_millis(a.reload_interval_ms);
        crate::auth::reload::spawn(
            auth.clone(),
            path,
            interval,
            shutdown.clone(),
            revalidate(&limits, &auth),
        );
    }
    Ok((auth, limits))
}

/// After the registry changed (a file reload, a change in NATS KV): close
/// the sessions it no longer admits.
fn revalidate(
    limits: &Arc<Limits>,
    auth: &Arc<Auth>,
) -> impl Fn(&crate::auth::Registry) + Send + 'static {
    let (l, au) = (limits.clone(), auth.clone());
    move |registry| {
        l.revalidate(|device, token| match token {
            Some(t) => au.still_valid(device, t),
            // An anonymous session under an id that is now registered.
            None => registry.get(device).is_none(),
        })
    }
}
