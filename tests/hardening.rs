//! What a hostile-input probe found, one regression test each: acked points
//! that InfluxDB kept once (points without `ts`, on every transport and
//! message shape), the close handshake, tokens in logs, spool gauges after a
//! crash, repeated keys, log floods and slow request bodies. Real server,
//! real influxd, real clients.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wsingest_harness::process::WsingestProcess;
use wsingest_harness::security::{TestRegistry, metric};
use wsingest_harness::services::http;
use wsingest_harness::*;
use wsingest_server::auth::DevicePolicy;
use wsingest_server::grpc::proto::downlink;

async fn setup(db: &str) -> (Influxd, TestServer) {
    let influx = Influxd::start().await;
    influx.create_db(db).await;
    let server = TestServer::start(test_config(&influx.url, db)).await;
    (influx, server)
}

/// `SELECT count(field)` of `measurement`, 0 when there is none.
async fn count(influx: &Influxd, db: &str, measurement: &str, field: &str) -> u64 {
    influx.count(db, measurement, field).await
}

#[tokio::test]
async fn points_without_ts_are_all_stored_over_websocket() {
    let (influx, server) = setup("w").await;
    let mut ws = connect(&server.ws_url("/v1/devices/d-ws"), None).await;
    // A batch of ten points without ts: ten points, not one.
    let points: Vec<_> = (0..10).map(|i| json!({"fields": {"a": i}})).collect();
    send_json(
        &mut ws,
        json!({"seq": 1, "measurement": "m", "points": points}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    // Single points without ts, back to back (same receive millisecond).
    for seq in 2..=6 {
        send_json(
            &mut ws,
            json!({"seq": seq, "measurement": "m", "fields": {"a": 100 + seq}}),
        )
        .await;
    }
    // The same in CBOR.
    let cbor_points: Vec<_> = (0..4).map(|i| json!({"fields": {"a": 200 + i}})).collect();
    send_cbor(
        &mut ws,
        json!({"seq": 7, "measurement": "m", "points": cbor_points}),
    )
    .await;
    let mut acks = Vec::new();
    for _ in 2..=7 {
        acks.push(next_json(&mut ws).await["ack"].as_u64().unwrap());
    }
    acks.sort();
    assert_eq!(acks, vec![2, 3, 4, 5, 6, 7]);
    let rows = influx.rows("w", "SELECT a FROM m").await;
    let mut values: Vec<i64> = rows.iter().map(|r| r[1].as_f64().unwrap() as i64).collect();
    values.sort();
    let mut expected: Vec<i64> = (0..10).chain(102..=106).chain(200..204).collect();
    expected.sort();
    assert_eq!(values, expected, "every acked point is stored");
    let times: std::collections::HashSet<u64> =
        rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
    assert_eq!(times.len(), rows.len(), "each point has a time of its own");

    // One message-level ts for two points of one series and field: nacked
    // with the reason, nothing written.
    send_json(
        &mut ws,
        json!({"seq": 8, "ts": 1_732_492_800_000u64, "measurement": "shared",
               "points": [{"fields": {"a": 1}}, {"fields": {"a": 2}}]}),
    )
    .await;
    let nack = next_json(&mut ws).await;
    assert_eq!(
        (nack["nack"].clone(), nack["error"].clone()),
        (json!(8), json!("duplicate_point")),
        "{nack}"
    );
    assert!(
        nack["detail"].as_str().unwrap().contains("own ts"),
        "{nack}"
    );
    // ... while points of other series at one time are fine.
    send_json(
        &mut ws,
        json!({"seq": 9, "ts": 1_732_492_800_000u64, "measurement": "shared",
               "points": [{"tags": {"s": "1"}, "fields": {"a": 1}}, {"tags": {"s": "2"}, "fields": {"a": 2}}]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 9}));
    assert_eq!(count(&influx, "w", "shared", "a").await, 2);
    server.stop().await;
}

#[tokio::test]
async fn points_without_ts_are_all_stored_over_http_grpc_and_senml() {
    let (influx, server) = setup("h").await;
    // HTTP fallback: the probe's {"ack":5,"points":3} that stored 1.
    let r = http()
        .post(server.http_url("/v1/devices/d-http/points"))
        .header("content-type", "application/json")
        .body(
            json!({"seq": 5, "measurement": "hm", "points": [
            {"fields": {"a": 1}}, {"fields": {"a": 2}}, {"fields": {"a": 3}}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"ack": 5, "points": 3})
    );
    assert_eq!(count(&influx, "h", "hm", "a").await, 3);

    // gRPC with a JSON payload.
    let payload = json!({"seq": 1, "measurement": "gm", "points": [
        {"fields": {"a": 1}}, {"fields": {"a": 2}}, {"fields": {"a": 3}}, {"fields": {"a": 4}}]});
    let d = grpc_json(&server, "d-grpc", &payload).await;
    assert!(
        matches!(d.body, Some(downlink::Body::Ack(ref a)) if a.seq == 1),
        "{d:?}"
    );
    assert_eq!(count(&influx, "h", "gm", "a").await, 4);

    // SenML records of one name without `t`.
    let mut ws = connect(&server.ws_url("/v1/devices/d-senml"), Some("senml+json")).await;
    ws.send(Message::text(
        r#"[{"n":"temp","v":1},{"n":"temp","v":2},{"n":"temp","v":3}]"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    assert_eq!(count(&influx, "h", "senml", "v").await, 3);
    server.stop().await;
}

#[tokio::test]
async fn repeated_keys_in_tags_or_fields_are_nacked_in_json_and_cbor() {
    let (influx, server) = setup("k").await;
    let mut ws = connect(&server.ws_url("/v1/devices/d-keys"), None).await;
    ws.send(Message::text(
        r#"{"seq":1,"measurement":"k","fields":{"a":1,"a":2}}"#,
    ))
    .await
    .unwrap();
    let nack = next_json(&mut ws).await;
    assert_eq!(
        (nack["nack"].clone(), nack["error"].clone()),
        (json!(1), json!("invalid_message")),
        "{nack}"
    );
    assert!(
        nack["detail"]
            .as_str()
            .unwrap()
            .contains("\"a\" is given twice"),
        "{nack}"
    );
    ws.send(Message::text(
        r#"{"seq":2,"measurement":"k","tags":{"t":"x","t":"y"},"fields":{"a":1}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["error"], "invalid_message");
    // CBOR {"seq": 3, "fields": {"v": 1, "v": -2}}
    let cbor = vec![
        0xa2, 0x63, b's', b'e', b'q', 0x03, 0x66, b'f', b'i', b'e', b'l', b'd', b's', 0xa2, 0x61,
        b'v', 0x01, 0x61, b'v', 0x21,
    ];
    ws.send(Message::binary(cbor)).await.unwrap();
    let reply = match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => ciborium::from_reader::<serde_json::Value, _>(&b[..]).unwrap(),
        other => panic!("expected a CBOR nack, got {other:?}"),
    };
    assert_eq!(
        (reply["nack"].clone(), reply["error"].clone()),
        (json!(3), json!("invalid_message")),
        "{reply}"
    );
    assert_eq!(
        count(&influx, "k", "k", "a").await,
        0,
        "nothing of a refused message is written"
    );
    server.stop().await;
}

/// A raw WebSocket client: the handshake by hand, then frames as bytes, so
/// the test can send what a real client library refuses to (invalid codes).
async fn raw_session(server: &TestServer, device: &str) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /v1/devices/{device} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Send a masked Close frame with `code` and read the server's answer:
/// the close code it sent back, or `None` when the connection just ended.
async fn close_with(s: &mut TcpStream, code: u16) -> Option<u16> {
    let mask = [1u8, 2, 3, 4];
    let payload = code.to_be_bytes();
    let mut frame = vec![0x88, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server closes the TCP connection after its Close"
    );
    // Skip pings; find the close frame (opcode 8, unmasked, short payload).
    let mut i = 0;
    while i + 2 <= buf.len() {
        let (op, len) = (buf[i] & 0x0f, (buf[i + 1] & 0x7f) as usize);
        if op == 8 && len >= 2 {
            return Some(u16::from_be_bytes([buf[i + 2], buf[i + 3]]));
        }
        i += 2 + len;
    }
    None
}

#[tokio::test]
async fn the_close_handshake_is_answered_and_closes_are_counted_as_what_they_are() {
    let (_influx, server) = setup("c").await;
    // A library client: its close is answered, so it sees a clean close.
    let mut ws = connect(&server.ws_url("/v1/devices/d-close"), None).await;
    ws.close(None).await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(_))
            | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) = m
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(answered, "the server answered the Close");

    // Raw: a valid code is echoed; codes a peer may not send get 1002.
    let mut s = raw_session(&server, "d-raw").await;
    assert_eq!(close_with(&mut s, 1000).await, Some(1000));
    for bad in [999u16, 1005, 1006, 1015, 5000] {
        let mut s = raw_session(&server, "d-raw").await;
        assert_eq!(
            close_with(&mut s, bad).await,
            Some(1002),
            "close code {bad}"
        );
    }
    // An abrupt disconnect: no close, and not counted as a server close.
    let s = raw_session(&server, "d-drop").await;
    drop(s);
    let t = eventually(
        10,
        "7 device closes counted (1 library client, 6 raw)",
        || async {
            let t = wsingest_harness::services::get_text(&server.http_url("/metrics")).await;
            (metric(&t, "wsingest_sessions_closed_total{code=\"device\"}") == 7).then_some(t)
        },
    )
    .await;
    let t = eventually(10, "the dropped session counted", || async {
        let t2 = wsingest_harness::services::get_text(&server.http_url("/metrics")).await;
        (metric(&t2, "wsingest_sessions_closed_total{code=\"dropped\"}") == 1).then_some(t2)
    })
    .await
    .to_string()
        + &t;
    assert_eq!(
        metric(
            &t,
            "wsingest_sessions_closed_by_server_total{code=\"1002\"}"
        ),
        0,
        "{t}"
    );
    assert_eq!(
        metric(&t, "wsingest_sessions_closed_total{code=\"1002\"}"),
        0,
        "{t}"
    );
    server.stop().await;
}

#[tokio::test]
async fn tokens_never_reach_the_log_and_refusal_floods_are_summarised() {
    let influx = Influxd::start().await;
    influx.create_db("l").await;
    let reg = TestRegistry::new();
    let token = reg.add("meter-1", DevicePolicy::default());
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&influx.url, "l");
    config.auth.allow_anonymous = false;
    config.auth.registry_path = Some(reg.path.clone());
    let server = WsingestProcess::start(config, dir.path()).await;
    let hex = &token["wsi_".len()..];
    let targets = [
        format!("/v1/devices/meter-1?access_token={token}"),
        format!("/v1/devices/meter-1?TOKEN={token}"),
        format!("/v1/devices/meter-1?x=1;token={token}"),
        format!("/v1/devices/meter-1?token+={token}"),
        format!("/v1/devices/{token}"),
        format!("/v1/devices/meter-1?t={hex}"),
    ];
    for t in &targets {
        let r = wsingest_harness::security::try_connect(&server.ws_url(t), &[]).await;
        assert_eq!(wsingest_harness::security::refused_status(r), 401, "{t}");
    }
    // A flood of refused handshakes: counted, but only a few lines logged.
    const FLOOD: u64 = 300;
    for i in 0..FLOOD {
        let r = wsingest_harness::security::try_connect(
            &server.ws_url("/v1/devices/meter-1"),
            &[("authorization", &format!("Bearer wsi_wrong{i}"))],
        )
        .await;
        assert_eq!(wsingest_harness::security::refused_status(r), 401);
    }
    let t = wsingest_harness::services::get_text(&server.http_url("/metrics")).await;
    let refused: u64 = t
        .lines()
        .filter(|l| l.starts_with("wsingest_handshakes_refused_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(refused >= FLOOD, "every refusal is counted: {refused}\n{t}");
    let log = eventually(20, "the flood's summary line", || async {
        let log = server.log();
        log.contains("many requests refused").then_some(log)
    })
    .await;
    assert!(!log.contains(hex), "a token reached the log:\n{log}");
    let lines = log
        .lines()
        .filter(|l| l.contains("request refused"))
        .count();
    assert!(
        lines <= 12,
        "{lines} refusal lines for {} refusals:\n{log}",
        FLOOD + 6
    );
}

#[tokio::test]
async fn a_slow_request_body_gets_408_within_the_deadline() {
    let influx = Influxd::start().await;
    influx.create_db("s").await;
    let mut config = test_config(&influx.url, "s");
    config.server.handshake_timeout_secs = 1;
    let server = TestServer::start(config).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"POST /v1/devices/slow/points HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"fields\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server ends a trickling body instead of waiting forever"
    );
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await;
}

#[tokio::test]
async fn spool_gauges_show_what_a_crash_left_behind() {
    let mut influx = Influxd::start().await;
    influx.create_db("g").await;
    influx.stop();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&influx.url, "g");
    config.spool.dir = dir.path().join("spool");
    config.influx.retry_max_elapsed_ms = 200;
    config.influx.retry_initial_ms = 20;
    config.influx.retry_max_ms = 100;
    let mut first = WsingestProcess::start(config.clone(), dir.path()).await;
    let mut ws = connect(&first.ws_url("/v1/devices/g-1"), None).await;
    for seq in 1..=5u64 {
        send_json(
            &mut ws,
            json!({"seq": seq, "ts": 1_700_000_000_000u64 + seq, "fields": {"n": seq}}),
        )
        .await;
    }
    let mut acked = HashMap::new();
    for _ in 1..=5 {
        let a = next_json(&mut ws).await;
        acked.insert(a["ack"].as_u64().expect("acked from the spool"), ());
    }
    first.kill9();
    // influxd still down: nothing can be replayed, the gauges must say so.
    let second = WsingestProcess::start(config, dir.path()).await;
    let t = wsingest_harness::services::get_text(&second.http_url("/metrics")).await;
    assert!(metric(&t, "wsingest_spool_records") >= 1, "{t}");
    assert!(metric(&t, "wsingest_spool_bytes") > 0, "{t}");
    assert!(metric(&t, "wsingest_spool_replay_pending_bytes") > 0, "{t}");
}
