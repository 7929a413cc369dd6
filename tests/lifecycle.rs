//! Session lifecycle: limits, garbage, shutdown.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wsingest_harness::*;

async fn setup(
    db: &str,
    tweak: impl FnOnce(&mut wsingest_server::config::Config),
) -> (Influxd, TestServer) {
    let influx = Influxd::start().await;
    influx.create_db(db).await;
    let mut config = test_config(&influx.url, db);
    tweak(&mut config);
    let server = TestServer::start(config).await;
    (influx, server)
}

/// Read until the nack of `seq`, returning the acks that came before it.
async fn acks_until_nack(ws: &mut Ws, seq: u64) -> Vec<u64> {
    let mut acked = Vec::new();
    loop {
        let v = next_json(ws).await;
        if v["nack"] == json!(seq) {
            return acked;
        }
        acked.push(v["ack"].as_u64().expect("an ack or the nack"));
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn oversize_message_is_closed_with_1009_before_buffering() {
    let (_influx, server) = setup("l1", |c| c.server.max_message_bytes = 64 * 1024).await;
    let mut ws = connect(&server.ws_url("/v1/devices/big"), None).await;
    send_json(&mut ws, json!({"seq": 1, "fields": {"v": 1}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    // Announce a 64 MiB frame but send only its header and 1 MiB: a server that
    // buffered before checking would wait for (and allocate) the rest.
    let before = rss_kib();
    let stream = ws.get_mut();
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = stream else {
        panic!("plain tcp")
    };
    use tokio::io::AsyncWriteExt;
    let mut header = vec![0x82u8, 0xff]; // FIN + binary, masked, 64-bit length
    header.extend_from_slice(&(64u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]); // mask
    tcp.write_all(&header).await.unwrap();
    let _ = tcp.write_all(&vec![0u8; 1 << 20]).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "server memory grew by {grown} KiB for a refused 64 MiB frame"
    );
    server.stop().await;
}

#[tokio::test]
async fn fragmented_oversize_message_is_closed_with_1009() {
    let (_influx, server) = setup("l2", |c| {
        c.server.max_message_bytes = 8 * 1024;
        c.server.max_frame_bytes = 8 * 1024;
    })
    .await;
    let mut ws = connect(&server.ws_url("/v1/devices/big"), None).await;
    ws.send(Message::text(format!(
        "{{\"seq\": 1, \"fields\": {{\"s\": \"{}\"}}}}",
        "x".repeat(20_000)
    )))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009));
    server.stop().await;
}

#[tokio::test]
async fn only_garbage_is_closed_with_1007() {
    let (_influx, server) = setup("l3", |c| c.server.max_invalid_messages = 3).await;
    let mut ws = connect(&server.ws_url("/v1/devices/g"), None).await;
    for _ in 0..3 {
        ws.send(Message::text("garbage")).await.unwrap();
    }
    for _ in 0..3 {
        assert_eq!(next_json(&mut ws).await["error"], json!("invalid_json"));
    }
    assert_eq!(close_code(&mut ws).await, Some(1007));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_flushes_acks_then_closes_with_1001() {
    // Group commit writes at once, so some acks may come before the
    // shutdown; none may be missing after it.
    let (influx, server) = setup("l4", |c| c.influx.flush_interval_ms = 60_000).await;
    let mut ws = connect(&server.ws_url("/v1/devices/s"), None).await;
    for seq in 1..=50u64 {
        send_json(
            &mut ws,
            json!({"seq": seq, "ts": seq, "fields": {"v": seq}}),
        )
        .await;
    }
    // Make sure the server has read them all before shutting down.
    send_json(&mut ws, json!({"seq": 51})).await;
    let mut acked = acks_until_nack(&mut ws, 51).await;
    let stopping = tokio::spawn(server.stop());
    let code = loop {
        match tokio::time::timeout(
            Duration::from_secs(15),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                acked.push(v["ack"].as_u64().expect("an ack"));
            }
            Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    stopping.await.unwrap();
    acked.sort_unstable();
    assert_eq!(acked, (1..=50).collect::<Vec<_>>());
    assert_eq!(code, Some(1001));
    assert_eq!(influx.count("l4", "telemetry", "v").await, 50);
}

#[tokio::test]
async fn plain_get_and_bad_requests_get_http_errors() {
    let (_influx, server) = setup("l5", |_| {}).await;
    let http = wsingest_harness::services::http();
    let r = http
        .get(server.http_url("/v1/devices/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 426);
    assert_eq!(
        http.get(server.http_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(server.http_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.ws_url("/v1/devices/bad%20id"),
    )
    .unwrap();
    req.headers_mut().remove("Sec-WebSocket-Protocol");
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn anonymous_refused_unless_allowed() {
    let (_influx, server) = setup("l6", |c| c.auth.allow_anonymous = false).await;
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.ws_url("/v1/devices/x"),
    )
    .unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn full_pipeline_stops_reading_then_closes_with_1013() {
    // A database that accepts connections and never answers: writes hang.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", black_hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            held.push(s);
        }
    });
    let mut config = test_config(&url, "db");
    config.influx.timeout_ms = 60_000;
    config.influx.batch_size = 1;
    config.influx.concurrency = 1;
    config.influx.queue_capacity = 1;
    config.server.backpressure_timeout_ms = 500;
    config.server.shutdown_timeout_secs = 1;
    let server = TestServer::start(config).await;
    let mut ws = connect(&server.ws_url("/v1/devices/d"), None).await;
    for seq in 0..10u64 {
        send_json(&mut ws, json!({"seq": seq, "fields": {"v": 1}})).await;
    }
    // No ack (nothing was written), and the session is closed with 1013.
    let code = loop {
        match tokio::time::timeout(
            Duration::from_secs(15),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        .unwrap()
        {
            Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            Some(Ok(Message::Text(t))) => panic!("nothing was written, yet the server said {t}"),
            Some(Ok(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, Some(1013));
    server.stop().await;
}

#[tokio::test]
async fn sigterm_to_the_binary_flushes_acks_and_closes_with_1001() {
    let influx = Influxd::start().await;
    influx.create_db("l7").await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsingest"))
        .args([
            "serve",
            "--allow-anonymous",
            "--influx-db",
            "l7",
            "--flush-interval",
            "60000",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--influx-url",
            &influx.url,
        ])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/v1/devices/term");
    let mut ws = eventually(30, "the server to accept", || async {
        let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
        tokio_tungstenite::connect_async(req)
            .await
            .ok()
            .map(|(ws, _)| ws)
    })
    .await;
    for seq in 1..=20u64 {
        send_json(
            &mut ws,
            json!({"seq": seq, "ts": seq, "fields": {"v": seq}}),
        )
        .await;
    }
    send_json(&mut ws, json!({"seq": 21})).await; // nacked: proves the 20 were read
    let mut acked = acks_until_nack(&mut ws, 21).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = loop {
        match tokio::time::timeout(
            Duration::from_secs(15),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                acked.push(v["ack"].as_u64().expect("an ack"));
            }
            Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    acked.sort_unstable();
    assert_eq!(acked, (1..=20).collect::<Vec<_>>());
    assert_eq!(code, Some(1001));
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "graceful exit, got {exit}");
    assert_eq!(influx.count("l7", "telemetry", "v").await, 20);
}
