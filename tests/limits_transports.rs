//! Per-device limits across transports, against a real server and a real
//! influxd: the WebSocket session, the HTTP fallback and the gRPC stream of
//! one device spend the same rate and cardinality budget, so switching
//! transport buys nothing; each refusal reaches the client in its
//! transport's form and is counted in /metrics.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use wsingest_harness::security::*;
use wsingest_harness::services::http;
use wsingest_harness::*;
use wsingest_server::grpc::proto::{self, downlink, uplink, value};

type Replies = tonic::Streaming<proto::Downlink>;

/// A gRPC stream as `device`.
async fn grpc(
    server: &TestServer,
    device: &str,
) -> (tokio::sync::mpsc::Sender<proto::Uplink>, Replies) {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut c = wsingest_server::grpc::client::connect(tcp, &server.addr.to_string())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        wsingest_server::grpc::DEVICE_METADATA,
        device.parse().unwrap(),
    );
    let replies = c.session(req).await.expect("stream opens").into_inner();
    (tx, replies)
}

fn telemetry(
    seq: u64,
    measurement: &str,
    tags: &[(&str, &str)],
    s: Option<String>,
) -> proto::Uplink {
    let mut fields = HashMap::from([(
        "v".to_owned(),
        proto::Value {
            kind: Some(value::Kind::F(seq as f64)),
        },
    )]);
    if let Some(s) = s {
        fields.insert(
            "s".to_owned(),
            proto::Value {
                kind: Some(value::Kind::S(s)),
            },
        );
    }
    proto::Uplink {
        body: Some(uplink::Body::Telemetry(proto::Telemetry {
            seq: Some(seq),
            measurement: measurement.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields,
            ..Default::default()
        })),
    }
}

async fn next(replies: &mut Replies) -> downlink::Body {
    tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("a reply within 10 s")
        .expect("no stream error")
        .expect("stream open")
        .body
        .unwrap()
}

/// The nack's (seq, error), or a panic naming what came instead.
async fn grpc_nack(replies: &mut Replies) -> (Option<u64>, String) {
    match next(replies).await {
        downlink::Body::Nack(n) => (n.seq, n.error),
        other => panic!("expected a nack, got {other:?}"),
    }
}

/// POST one JSON message as `device`: status, Retry-After, body.
async fn post(
    server: &TestServer,
    device: &str,
    body: serde_json::Value,
) -> (u16, Option<u64>, serde_json::Value) {
    let r = http()
        .post(server.http_url(&format!("/v1/devices/{device}/points")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, r.json().await.unwrap())
}

fn msg(seq: u64, measurement: &str) -> serde_json::Value {
    json!({"seq": seq, "measurement": measurement, "fields": {"v": seq}})
}

#[tokio::test]
async fn rate_limit_is_one_budget_across_websocket_http_and_grpc() {
    let influx = Influxd::start().await;
    influx.create_db("lt1").await;
    let mut config = test_config(&influx.url, "lt1");
    // A burst of 5 messages, then one every 2 s: the steps below take far
    // less than 2 s between spending a burst and being refused.
    config.limits.messages_per_sec = 0.5;
    config.limits.burst_secs = 10.0;
    config.limits.rate_limit_close_after = 5;
    let server = TestServer::start(config).await;

    // Device A spends its burst over HTTP; its socket and its stream are
    // then refused too.
    for seq in 1..=5 {
        let (s, _, body) = post(&server, "dev-a", msg(seq, "a")).await;
        assert_eq!((s, body), (200, json!({"ack": seq, "points": 1})));
    }
    let mut ws = connect(&server.ws_url("/v1/devices/dev-a"), None).await;
    send_json(&mut ws, msg(6, "a")).await;
    let r = next_json(&mut ws).await;
    assert_eq!(
        (r["nack"].clone(), r["error"].clone()),
        (json!(6), json!("rate_limited")),
        "{r}"
    );
    let (tx_a, mut replies_a) = grpc(&server, "dev-a").await;
    tx_a.send(telemetry(7, "a", &[], None)).await.unwrap();
    assert_eq!(
        grpc_nack(&mut replies_a).await,
        (Some(7), "rate_limited".into())
    );

    // Device B spends its burst over gRPC; HTTP gets 429 with Retry-After
    // and the nack as body, and the WebSocket a nack.
    let (tx_b, mut replies_b) = grpc(&server, "dev-b").await;
    for seq in 1..=5 {
        tx_b.send(telemetry(seq, "b", &[], None)).await.unwrap();
        assert_eq!(
            next(&mut replies_b).await,
            downlink::Body::Ack(proto::Ack { seq })
        );
    }
    let (s, retry, body) = post(&server, "dev-b", msg(6, "b")).await;
    assert_eq!(s, 429, "{body}");
    assert!(
        matches!(retry, Some(1..=2)),
        "Retry-After is the refill time of one message: {retry:?}"
    );
    assert_eq!(
        (body["nack"].clone(), body["error"].clone()),
        (json!(6), json!("rate_limited")),
        "{body}"
    );
    let mut ws_b = connect(&server.ws_url("/v1/devices/dev-b"), None).await;
    send_json(&mut ws_b, msg(7, "b")).await;
    assert_eq!(next_json(&mut ws_b).await["error"], json!("rate_limited"));

    // Device C spends its burst on its socket; HTTP and gRPC are refused.
    let mut ws_c = connect(&server.ws_url("/v1/devices/dev-c"), None).await;
    for seq in 1..=5 {
        send_json(&mut ws_c, msg(seq, "c")).await;
        assert_eq!(next_json(&mut ws_c).await, json!({"ack": seq}));
    }
    let (s, _, body) = post(&server, "dev-c", msg(6, "c")).await;
    assert_eq!((s, body["error"].clone()), (429, json!("rate_limited")));
    let (tx_c, mut replies_c) = grpc(&server, "dev-c").await;
    tx_c.send(telemetry(7, "c", &[], None)).await.unwrap();
    assert_eq!(
        grpc_nack(&mut replies_c).await,
        (Some(7), "rate_limited".into())
    );

    // Another device is not touched by any of it, on any transport.
    let (s, _, _) = post(&server, "calm", msg(1, "calm")).await;
    assert_eq!(s, 200);

    // Persistent abuse on a gRPC stream: after 5 refusals in a minute the
    // 6th ends the stream with RESOURCE_EXHAUSTED (a WebSocket gets 1008).
    for seq in 100..110 {
        let _ = tx_c.send(telemetry(seq, "c", &[], None)).await;
    }
    // (C's bucket refills one message every 2 s, so one may pass meanwhile.)
    let (mut nacks, mut acks) = (0, 0);
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), replies_c.message())
            .await
            .expect("an answer within 10 s")
        {
            Ok(Some(d)) => match d.body.unwrap() {
                downlink::Body::Nack(n) if n.error == "rate_limited" => nacks += 1,
                downlink::Body::Ack(_) => acks += 1,
                other => panic!("{other:?}"),
            },
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // The stream's own count: its first refusal (seq 7) and five more.
    assert_eq!(nacks, 5);

    // After Retry-After the device gets through again.
    tokio::time::sleep(Duration::from_secs(retry.unwrap())).await;
    let (s, _, body) = post(&server, "dev-b", msg(8, "b")).await;
    assert_eq!((s, body), (200, json!({"ack": 8, "points": 1})));

    // Exactly the acked messages landed.
    assert_eq!(influx.count("lt1", "a", "v").await, 5);
    assert_eq!(influx.count("lt1", "b", "v").await, 6);
    assert_eq!(influx.count("lt1", "c", "v").await, 5 + acks);
    assert_eq!(influx.count("lt1", "calm", "v").await, 1);

    // Every refusal counted: 2 (A) + 2 (B) + 2 (C) + 5 (C's abuse) = 11, in
    // the per-reason nacks, the rate-limited counter and the security one.
    let m = metrics(&server).await;
    assert_eq!(metric(&m, "wsingest_rate_limited_total"), 11, "{m}");
    assert_eq!(
        metric(&m, "wsingest_nacks_total{reason=\"rate_limited\"}"),
        11,
        "{m}"
    );
    assert_eq!(
        metric(&m, "wsingest_messages_rate_limited_total"),
        11,
        "{m}"
    );
    assert_eq!(metric(&m, "wsingest_rate_limit_closes_total"), 1, "{m}");
    drop((ws, ws_b, ws_c, tx_a, tx_b));
    server.stop().await;
}

#[tokio::test]
async fn cardinality_and_content_limits_hold_on_http_and_grpc() {
    let influx = Influxd::start().await;
    influx.create_db("lt2").await;
    let mut config = test_config(&influx.url, "lt2");
    config.limits.new_series_per_minute = 3;
    config.decode.max_tags = 2;
    config.decode.max_string_bytes = 16;
    let server = TestServer::start(config).await;
    let series = |seq: u64, site: &str| json!({"seq": seq, "measurement": "m", "tags": {"site": site}, "fields": {"v": seq}});

    // Two new series on the socket, a third over HTTP: the budget is spent.
    let mut ws = connect(&server.ws_url("/v1/devices/meter"), None).await;
    for (seq, site) in [(1, "s1"), (2, "s2")] {
        send_json(&mut ws, series(seq, site)).await;
        assert_eq!(next_json(&mut ws).await, json!({"ack": seq}));
    }
    let (s, _, _) = post(&server, "meter", series(3, "s3")).await;
    assert_eq!(s, 200);
    // A fourth, over HTTP: 429 until the minute turns; over gRPC: a nack.
    let (s, retry, body) = post(&server, "meter", series(4, "s4")).await;
    assert_eq!(
        (s, body["error"].clone()),
        (429, json!("too_many_series")),
        "{body}"
    );
    assert!(matches!(retry, Some(1..=60)), "{retry:?}");
    let (tx, mut replies) = grpc(&server, "meter").await;
    tx.send(telemetry(5, "m", &[("site", "s5")], None))
        .await
        .unwrap();
    assert_eq!(
        grpc_nack(&mut replies).await,
        (Some(5), "too_many_series".into())
    );
    // Known series still pass on every transport.
    tx.send(telemetry(6, "m", &[("site", "s1")], None))
        .await
        .unwrap();
    assert_eq!(
        next(&mut replies).await,
        downlink::Body::Ack(proto::Ack { seq: 6 })
    );

    // Tags and string length: refused with a reason on HTTP and gRPC too.
    let (s, _, body) = post(
        &server,
        "meter",
        json!({"seq": 7, "measurement": "m", "tags": {"site": "s1", "a": "1", "b": "2"}, "fields": {"v": 1}}),
    )
    .await;
    assert_eq!(
        (s, body["error"].clone()),
        (422, json!("too_large")),
        "{body}"
    );
    let (s, _, body) = post(
        &server,
        "meter",
        json!({"seq": 8, "measurement": "m", "tags": {"site": "s1"}, "fields": {"s": "x".repeat(17)}}),
    )
    .await;
    assert_eq!(
        (s, body["error"].clone()),
        (422, json!("too_large")),
        "{body}"
    );
    tx.send(telemetry(9, "m", &[("site", "s1")], Some("x".repeat(17))))
        .await
        .unwrap();
    assert_eq!(grpc_nack(&mut replies).await, (Some(9), "too_large".into()));
    tx.send(telemetry(
        10,
        "m",
        &[("site", "s1"), ("a", "1"), ("b", "2")],
        None,
    ))
    .await
    .unwrap();
    assert_eq!(
        grpc_nack(&mut replies).await,
        (Some(10), "too_large".into())
    );

    // A message over `server.max_message_bytes` (1 MiB) ends its gRPC
    // stream with an error, where a WebSocket is closed with 1009.
    let (big_tx, mut big) = grpc(&server, "meter").await;
    big_tx
        .send(proto::Uplink {
            body: Some(uplink::Body::Payload(proto::Payload {
                encoding: proto::Encoding::Json as i32,
                data: vec![b' '; 1024 * 1024 + 1],
            })),
        })
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), big.message())
        .await
        .expect("an answer within 10 s");
    match end {
        Err(status) => assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}"),
        other => panic!("expected the stream to fail, got {other:?}"),
    }

    assert_eq!(influx.rows("lt2", "SHOW SERIES").await.len(), 3);
    let m = metrics(&server).await;
    assert_eq!(metric(&m, "wsingest_series_refused_total"), 2, "{m}");
    assert_eq!(
        metric(&m, "wsingest_nacks_total{reason=\"too_many_series\"}"),
        2,
        "{m}"
    );
    assert_eq!(metric(&m, "wsingest_rate_limited_total"), 0, "{m}");
    drop((ws, tx));
    server.stop().await;
}
