//! gRPC streaming ingest end to end: protobuf telemetry and raw payloads in,
//! acks and nacks out once InfluxDB has the points.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use wsingest_harness::*;
use wsingest_server::grpc::proto::{self, downlink, uplink, value};
use wsingest_server::limits::SessionPolicy;

fn value_f(f: f64) -> proto::Value {
    proto::Value {
        kind: Some(value::Kind::F(f)),
    }
}

fn telemetry(seq: u64, ts_ms: i64, fields: &[(&str, proto::Value)]) -> proto::Uplink {
    proto::Uplink {
        body: Some(uplink::Body::Telemetry(proto::Telemetry {
            seq: Some(seq),
            ts_ms: Some(ts_ms),
            measurement: "grpc".into(),
            tags: HashMap::from([("site".to_owned(), "lab".to_owned())]),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            points: vec![],
        })),
    }
}

async fn client(
    server: &TestServer,
    device: Option<&str>,
) -> (
    tokio::sync::mpsc::Sender<proto::Uplink>,
    tonic::Streaming<proto::Downlink>,
) {
    open(server, device, None).await.expect("stream opens")
}

/// A stream for `device` (the `device-id` metadata), with
/// `Authorization: Bearer <token>` when given; `Err` when the server
/// refuses to open it.
async fn open(
    server: &TestServer,
    device: Option<&str>,
    token: Option<&str>,
) -> Result<
    (
        tokio::sync::mpsc::Sender<proto::Uplink>,
        tonic::Streaming<proto::Downlink>,
    ),
    tonic::Status,
> {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut c = wsingest_server::grpc::client::connect(tcp, &server.addr.to_string())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    let md = req.metadata_mut();
    if let Some(d) = device {
        md.insert(wsingest_server::grpc::DEVICE_METADATA, d.parse().unwrap());
    }
    if let Some(t) = token {
        md.insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    Ok((tx, c.session(req).await?.into_inner()))
}

async fn next(replies: &mut tonic::Streaming<proto::Downlink>) -> downlink::Body {
    tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("a reply within 10 s")
        .expect("no stream error")
        .expect("stream open")
        .body
        .unwrap()
}

#[tokio::test]
async fn grpc_stream_acks_once_stored() {
    let influx = Influxd::start().await;
    influx.create_db("g").await;
    let server = TestServer::start(test_config(&influx.url, "g")).await;
    let (tx, mut replies) = client(&server, Some("gw-1")).await;

    tx.send(telemetry(
        1,
        1732492800000,
        &[
            ("t", value_f(21.5)),
            (
                "ok",
                proto::Value {
                    kind: Some(value::Kind::B(true)),
                },
            ),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 1 })
    );

    // A batch, acked as one.
    let batch = proto::Uplink {
        body: Some(uplink::Body::Telemetry(proto::Telemetry {
            seq: Some(2),
            measurement: "grpc".into(),
            points: (1..=3)
                .map(|i| proto::Point {
                    ts_ms: Some(1732492800000 + i * 1000),
                    fields: HashMap::from([("t".to_owned(), value_f(i as f64))]),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
    };
    tx.send(batch).await.unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 2 })
    );

    // A WebSocket-style payload, and SenML numbered by its ordinal (4th message).
    let payload = |encoding: proto::Encoding, data: &[u8]| proto::Uplink {
        body: Some(uplink::Body::Payload(proto::Payload {
            encoding: encoding as i32,
            data: data.to_vec(),
        })),
    };
    tx.send(payload(
        proto::Encoding::Json,
        br#"{"seq": 3, "ts": 1732492900000, "measurement": "grpc", "fields": {"t": 9}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 3 })
    );
    tx.send(payload(
        proto::Encoding::SenmlJson,
        br#"[{"n":"x","v":1,"bt":1732492900}]"#,
    ))
    .await
    .unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 4 })
    );

    // Refused: nacked with the decoder's reason.
    tx.send(telemetry(5, 1732492800000, &[("t", value_f(f64::NAN))]))
        .await
        .unwrap();
    match next(&mut replies).await {
        downlink::Body::Nack(n) => assert_eq!(
            (n.seq, n.error.as_str()),
            (Some(5), "invalid_field"),
            "{n:?}"
        ),
        other => panic!("expected a nack, got {other:?}"),
    }
    tx.send(telemetry(
        6,
        1732492800000,
        &[("t", proto::Value { kind: None })],
    ))
    .await
    .unwrap();
    match next(&mut replies).await {
        downlink::Body::Nack(n) => assert_eq!(
            (n.seq, n.error.as_str()),
            (Some(6), "invalid_message"),
            "{n:?}"
        ),
        other => panic!("expected a nack, got {other:?}"),
    }

    let rows = influx
        .rows("g", "SELECT t, ok, device, site FROM grpc")
        .await;
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(
        rows[0][1..],
        [json!(21.5), json!(true), json!("gw-1"), json!("lab")]
    );
    assert_eq!(influx.count("g", "senml", "v").await, 1);

    // Half-close: the server ends the stream cleanly.
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
    server.stop().await;
}

#[tokio::test]
async fn grpc_needs_the_same_auth_as_websockets() {
    let mut config = test_config("http://127.0.0.1:9", "x");
    config.auth.allow_anonymous = false;
    let server = TestServer::start(config).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut c = wsingest_server::grpc::client::connect(tcp, &server.addr.to_string())
        .await
        .unwrap();
    let (_tx, rx) = tokio::sync::mpsc::channel::<proto::Uplink>(1);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        wsingest_server::grpc::DEVICE_METADATA,
        "d1".parse().unwrap(),
    );
    let status = c.session(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    server.stop().await;
}

/// influxd with database `db`, a device registry (reloaded every 100 ms) and
/// a server that admits registered devices only, with `policy` for a
/// device's second session.
async fn registry_server(
    db: &str,
    policy: SessionPolicy,
) -> (
    Influxd,
    wsingest_harness::security::TestRegistry,
    TestServer,
) {
    let influx = Influxd::start().await;
    influx.create_db(db).await;
    let reg = wsingest_harness::security::TestRegistry::new();
    let mut config = test_config(&influx.url, db);
    config.auth.allow_anonymous = false;
    config.auth.registry_path = Some(reg.path.clone());
    config.auth.reload_interval_ms = 100;
    config.limits.session_policy = policy;
    let server = TestServer::start(config).await;
    (influx, reg, server)
}

/// Read until the stream ends; the status it ended with.
async fn ended(replies: &mut tonic::Streaming<proto::Downlink>) -> tonic::Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("the stream ends within 5 s")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => return status,
        }
    }
}

/// A gRPC stream is a session of its device, like a WebSocket: a revoked
/// token ends it (PERMISSION_DENIED) within seconds, and a newer session of
/// the device, over either transport, replaces it (`max_sessions_per_device`
/// = 1, policy replace).
#[tokio::test]
async fn grpc_streams_are_sessions_revocation_and_replacement_end_them() {
    use wsingest_server::auth::DevicePolicy;

    let (influx, reg, server) = registry_server("g_auth", SessionPolicy::Replace).await;
    let t = reg.add("dev-g", DevicePolicy::default());
    let (tx, mut replies) = eventually(10, "registry reload", || async {
        open(&server, Some("dev-g"), Some(&t)).await.ok()
    })
    .await;
    tx.send(telemetry(1, 1_000, &[("v", value_f(1.0))]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 1 })
    );

    let revoked_at = std::time::Instant::now();
    reg.revoke("dev-g");
    let status = ended(&mut replies).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    assert!(revoked_at.elapsed() < Duration::from_secs(5));
    let refused = open(&server, Some("dev-g"), Some(&t)).await.err().unwrap();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // A WebSocket session of the device replaces its gRPC stream, and a
    // second gRPC stream replaces that WebSocket.
    let t2 = reg.rotate("dev-g");
    let (tx, mut replies) = eventually(10, "rotated token accepted", || async {
        open(&server, Some("dev-g"), Some(&t2)).await.ok()
    })
    .await;
    tx.send(telemetry(2, 2_000, &[("v", value_f(2.0))]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 2 })
    );
    let url = server.ws_url("/v1/devices/dev-g");
    let mut ws = wsingest_harness::security::try_connect(
        &url,
        &[("authorization", &format!("Bearer {t2}"))],
    )
    .await
    .unwrap();
    let status = ended(&mut replies).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("replaced"), "{status:?}");
    let (_tx, _replies) = open(&server, Some("dev-g"), Some(&t2)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(influx.count("g_auth", "grpc", "v").await, 2);
    server.stop().await;
}

/// With `session_policy = "refuse"` the one session slot of a device is
/// shared by both transports: while a gRPC stream holds it a WebSocket gets
/// 409 and a second stream RESOURCE_EXHAUSTED, and while a WebSocket holds
/// it a stream is refused; rotating the token ends the open stream
/// (PERMISSION_DENIED) within seconds and frees the slot. Every refusal and
/// the revocation are counted in /metrics.
#[tokio::test]
async fn grpc_and_websocket_share_the_refuse_policy_and_rotation_ends_a_stream() {
    use wsingest_harness::security::{
        connect_bearer, metric, metrics, refused_status, try_connect,
    };
    use wsingest_server::auth::DevicePolicy;

    let (influx, reg, server) = registry_server("g_refuse", SessionPolicy::Refuse).await;
    let t = reg.add("dev-r", DevicePolicy::default());
    let (tx, mut replies) = eventually(10, "registry reload", || async {
        open(&server, Some("dev-r"), Some(&t)).await.ok()
    })
    .await;
    tx.send(telemetry(1, 1_000, &[("v", value_f(1.0))]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 1 })
    );

    // The stream holds the slot: both transports are refused, the stream
    // goes on.
    let url = server.ws_url("/v1/devices/dev-r");
    let bearer = format!("Bearer {t}");
    assert_eq!(
        refused_status(try_connect(&url, &[("authorization", &bearer)]).await),
        409
    );
    let refused = open(&server, Some("dev-r"), Some(&t)).await.err().unwrap();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    tx.send(telemetry(2, 2_000, &[("v", value_f(2.0))]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 2 })
    );

    // Rotation ends the open stream and frees its slot.
    let rotated_at = std::time::Instant::now();
    let t2 = reg.rotate("dev-r");
    let status = ended(&mut replies).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    assert!(rotated_at.elapsed() < Duration::from_secs(5));
    let old = open(&server, Some("dev-r"), Some(&t)).await.err().unwrap();
    assert_eq!(old.code(), tonic::Code::Unauthenticated, "{old:?}");

    // A WebSocket takes the slot; a stream is refused until it closes.
    let mut ws = connect_bearer(&url, &t2).await;
    let refused = open(&server, Some("dev-r"), Some(&t2)).await.err().unwrap();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    send_json(
        &mut ws,
        json!({"seq": 3, "measurement": "grpc", "fields": {"v": 3.0}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 3}));
    futures_util::SinkExt::close(&mut ws).await.unwrap();
    let (tx, mut replies) = eventually(10, "the WebSocket's slot freed", || async {
        open(&server, Some("dev-r"), Some(&t2)).await.ok()
    })
    .await;
    tx.send(telemetry(4, 4_000, &[("v", value_f(4.0))]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 4 })
    );

    let m = metrics(&server).await;
    assert_eq!(
        metric(
            &m,
            "wsingest_handshakes_refused_total{reason=\"device_sessions\"}"
        ),
        3,
        "{m}"
    );
    assert_eq!(metric(&m, "wsingest_sessions_revoked_total"), 1, "{m}");
    assert_eq!(metric(&m, "wsingest_sessions_replaced_total"), 0, "{m}");
    assert_eq!(influx.count("g_refuse", "grpc", "v").await, 4);
    server.stop().await;
}
