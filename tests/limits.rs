//! Hostile input against a real server and a real influxd: every limit gives
//! its client-visible outcome (nack, close code, HTTP status) and its metric,
//! memory stays bounded, and an honest device's data keeps landing.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use wsingest_harness::security::*;
use wsingest_harness::*;
use wsingest_server::auth::DevicePolicy;

/// An honest device sending one point every 20 ms until told to stop;
/// `acked` counts its acks as they come, and the task returns the total.
fn honest_device(
    url: String,
    stop: tokio_util::sync::CancellationToken,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let mut ws = connect(&url, None).await;
        let mut seq = 0u64;
        while !stop.is_cancelled() {
            seq += 1;
            send_json(
                &mut ws,
                json!({"seq": seq, "measurement": "honest", "fields": {"v": seq}}),
            )
            .await;
            assert_eq!(
                next_json(&mut ws).await,
                json!({"ack": seq}),
                "honest device acked"
            );
            acked.fetch_add(1, Ordering::SeqCst);
            // Its rate, not a wait for something.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked.load(Ordering::SeqCst)
    })
}

/// Send raw bytes on the TCP stream under a WebSocket (a hand-made frame).
async fn send_raw(ws: &mut Ws, bytes: &[u8]) {
    match ws.get_mut() {
        MaybeTlsStream::Plain(s) => s.write_all(bytes).await.unwrap(),
        _ => unreachable!("plain ws"),
    }
}

/// The close code of the first frame the server sends, read raw.
async fn raw_close_code(ws: &mut Ws) -> u16 {
    let MaybeTlsStream::Plain(s) = ws.get_mut() else {
        unreachable!()
    };
    let mut head = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("the server answers at once, without waiting for the body")
        .unwrap();
    assert_eq!(head[0], 0x88, "a close frame");
    u16::from_be_bytes([head[2], head[3]])
}

#[tokio::test]
async fn hostile_payloads_get_their_outcome_and_memory_stays_bounded() {
    let influx = Influxd::start().await;
    influx.create_db("lim1").await;
    let server = TestServer::start(test_config(&influx.url, "lim1")).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let honest_acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let honest = honest_device(
        server.ws_url("/v1/devices/honest"),
        stop.clone(),
        honest_acked.clone(),
    );
    // The honest device is sending before the attack starts, however slow
    // the machine (its data landing is what the test checks).
    eventually(10, "the honest device's first ack", || async {
        (honest_acked.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let rss_before = rss_bytes();

    // Frames declaring 1 GiB: closed with 1009 before any of it is buffered.
    for i in 0..50 {
        let mut ws = connect(&server.ws_url(&format!("/v1/devices/big-{i}")), None).await;
        // FIN + binary, masked, 64-bit length 2^30, mask key, 4 bytes of body.
        let mut frame = vec![0x82, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4];
        frame.extend_from_slice(b"abcd");
        send_raw(&mut ws, &frame).await;
        assert_eq!(raw_close_code(&mut ws).await, 1009);
    }
    // A message just over the limit (1 MiB) sent for real: 1009 as well.
    let mut ws = connect(&server.ws_url("/v1/devices/big-real"), None).await;
    let _ = ws.send(Message::binary(vec![0u8; 1024 * 1024 + 1])).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));

    let mut ws = connect(&server.ws_url("/v1/devices/hostile"), None).await;
    // Deep nesting, JSON and CBOR: a `too_large` nack, the session stays.
    let deep = format!(
        "{{\"seq\":1,\"fields\":{{\"x\":{}1{}}}}}",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    ws.send(Message::text(deep)).await.unwrap();
    let r = next_json(&mut ws).await;
    assert_eq!(
        (r["nack"].clone(), r["error"].clone()),
        (json!(null), json!("too_large")),
        "{r}"
    );
    let mut cbor = vec![
        0xa2, 0x63, b's', b'e', b'q', 0x02, 0x66, b'f', b'i', b'e', b'l', b'd', b's',
    ];
    cbor.extend(std::iter::repeat_n(0x81u8, 50_000));
    cbor.push(0x01);
    ws.send(Message::binary(cbor)).await.unwrap();
    let r = next_json(&mut ws).await;
    assert_eq!(r["error"], json!("too_large"), "{r}");
    // Truncated CBOR and CBOR declaring huge lengths: `invalid_cbor`, fast.
    let mut point = Vec::new();
    ciborium::into_writer(
        &json!({"seq": 3, "fields": {"x": 1.5, "s": "hello"}}),
        &mut point,
    )
    .unwrap();
    let huge: Vec<Vec<u8>> = vec![
        point[..point.len() - 3].to_vec(),
        vec![0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x5b, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3],
        vec![0x9b, 0x10, 0, 0, 0, 0, 0, 0, 0, 1],
        // {"seq": 4, "fields": {"x": <text of 2^40 bytes>}}
        [
            &[
                0xa2, 0x63, b's', b'e', b'q', 0x04, 0x66, b'f', b'i', b'e', b'l', b'd', b's', 0xa1,
                0x61, b'x',
            ][..],
            &[0x7b, 0, 0, 1, 0, 0, 0, 0, 0, b'a', b'b'][..],
        ]
        .concat(),
    ];
    for bytes in huge {
        ws.send(Message::binary(bytes)).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), next_json(&mut ws))
            .await
            .expect("nacked fast");
        assert_eq!(r["error"], json!("invalid_cbor"), "{r}");
    }
    // Invalid UTF-8 in a text frame: 1007.
    ws.send(Message::Frame(Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1007));

    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024 * 1024,
        "RSS grew by {} MiB",
        grown / (1024 * 1024)
    );
    stop.cancel();
    let acked = honest.await.unwrap();
    assert!(acked > 0);
    assert_eq!(
        influx.count("lim1", "honest", "v").await,
        acked,
        "the honest device's data all landed"
    );
    eventually(10, "close codes counted", || async {
        let m = metrics(&server).await;
        (metric(
            &m,
            "wsingest_sessions_closed_by_server_total{code=\"1009\"}",
        ) >= 51
            && metric(
                &m,
                "wsingest_sessions_closed_by_server_total{code=\"1007\"}",
            ) >= 1)
            .then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn slowloris_connections_are_closed_while_honest_devices_connect() {
    let influx = Influxd::start().await;
    influx.create_db("lim2").await;
    let mut config = test_config(&influx.url, "lim2");
    config.server.handshake_timeout_secs = 1;
    let server = TestServer::start(config).await;
    let mut attackers = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            // Half a request, never finished.
            s.write_all(b"GET /v1/devices/slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                .await
                .unwrap();
        }
        attackers.push(s);
    }
    let mut ws = connect(&server.ws_url("/v1/devices/honest"), None).await;
    send_json(&mut ws, json!({"seq": 1, "fields": {"v": 1}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    // Every attacker is cut off soon after the timeout (EOF or reset).
    let started = std::time::Instant::now();
    for mut s in attackers {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("closed by the server")
            {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // a 408 response before the close is fine
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The honest session is still there.
    send_json(&mut ws, json!({"seq": 2, "fields": {"v": 2}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 2}));
    let m = metrics(&server).await;
    assert!(
        metric(&m, "wsingest_handshake_timeouts_total") >= 500,
        "{m}"
    );
    server.stop().await;
}

#[tokio::test]
async fn rate_limits_nack_then_close_and_spare_other_devices() {
    let influx = Influxd::start().await;
    influx.create_db("lim3").await;
    let mut config = test_config(&influx.url, "lim3");
    config.limits.messages_per_sec = 5.0;
    config.limits.burst_secs = 1.0;
    config.limits.rate_limit_close_after = 100;
    let server = TestServer::start(config).await;
    let stop = tokio_util::sync::CancellationToken::new();

    // Device B: 4 messages a second, within its limit, all the time.
    let url_b = server.ws_url("/v1/devices/calm");
    let calm = tokio::spawn(async move {
        let mut ws = connect(&url_b, None).await;
        for seq in 1..=8u64 {
            send_json(
                &mut ws,
                json!({"seq": seq, "measurement": "calm", "fields": {"v": seq}}),
            )
            .await;
            assert_eq!(
                next_json(&mut ws).await,
                json!({"ack": seq}),
                "the calm device is never limited"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });

    // Device A: 10x its limit (50 messages, one every 20 ms of the clock:
    // a late send is not followed by a catch-up burst nor stretches the rest).
    let connected = std::time::Instant::now();
    let mut ws = connect(&server.ws_url("/v1/devices/noisy"), None).await;
    let (mut acks, mut nacks) = (0u64, 0u64);
    let start = tokio::time::Instant::now();
    for seq in 1..=50u64 {
        tokio::time::sleep_until(start + Duration::from_millis(20) * (seq as u32 - 1)).await;
        send_json(
            &mut ws,
            json!({"seq": seq, "measurement": "noisy", "fields": {"v": seq}}),
        )
        .await;
    }
    while acks + nacks < 50 {
        let r = next_json(&mut ws).await;
        if r.get("ack").is_some() {
            acks += 1;
        } else {
            assert_eq!(r["error"], json!("rate_limited"), "{r}");
            nacks += 1;
        }
    }
    // The server saw these messages within `window` (from before the
    // session opened to the last answer): it may admit the burst (5) plus
    // 5 a second of that window, however slow this machine was.
    let window = connected.elapsed().as_secs_f64();
    let most = 5 + (5.0 * window).ceil() as u64 + 1;
    assert!(
        (5..=most).contains(&acks),
        "burst + rate over {window:.2} s acked: {acks} (at most {most})"
    );
    assert_eq!(acks + nacks, 50);
    assert!(nacks >= 50 - most, "{nacks}");
    calm.await.unwrap();
    assert_eq!(
        influx.count("lim3", "noisy", "v").await,
        acks,
        "exactly the acked messages landed"
    );
    assert_eq!(influx.count("lim3", "calm", "v").await, 8);

    // Persistent abuse: past 100 refusals in a minute, closed with 1008.
    for seq in 100..300u64 {
        if ws
            .send(Message::text(
                json!({"seq": seq, "fields": {"v": 1}}).to_string(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, Some(1008));
    let m = metrics(&server).await;
    assert!(
        metric(&m, "wsingest_messages_rate_limited_total") >= 100,
        "{m}"
    );
    assert_eq!(metric(&m, "wsingest_rate_limit_closes_total"), 1, "{m}");
    stop.cancel();
    server.stop().await;
}

#[tokio::test]
async fn sessions_per_device_replace_or_refuse_and_total_cap() {
    let influx = Influxd::start().await;
    influx.create_db("lim4").await;
    // Default: one session per device, the newest replaces the oldest.
    let mut config = test_config(&influx.url, "lim4");
    config.server.max_connections = 3;
    let server = TestServer::start(config.clone()).await;
    let mut first = connect(&server.ws_url("/v1/devices/twin"), None).await;
    let mut second = connect(&server.ws_url("/v1/devices/twin"), None).await;
    assert_eq!(close_code(&mut first).await, Some(1008));
    send_json(&mut second, json!({"seq": 1, "fields": {"v": 1}})).await;
    assert_eq!(next_json(&mut second).await, json!({"ack": 1}));
    // Server-wide cap: 503 with Retry-After once every session slot is taken.
    // The replaced session frees its slot once its closing handshake ends.
    drop(first);
    let _a = eventually(10, "a slot for other-1", || async {
        try_connect(&server.ws_url("/v1/devices/other-1"), &[])
            .await
            .ok()
    })
    .await;
    let _b = eventually(10, "a slot for other-2", || async {
        try_connect(&server.ws_url("/v1/devices/other-2"), &[])
            .await
            .ok()
    })
    .await;
    let full = eventually(10, "the server-wide cap", || async {
        try_connect(&server.ws_url("/v1/devices/other-3"), &[])
            .await
            .err()
    })
    .await;
    match full {
        tokio_tungstenite::tungstenite::Error::Http(r) => {
            assert_eq!(r.status(), 503);
            assert!(r.headers().get("retry-after").is_some());
        }
        e => panic!("{e}"),
    }
    let m = metrics(&server).await;
    assert_eq!(metric(&m, "wsingest_sessions_replaced_total"), 1, "{m}");
    assert!(
        metric(
            &m,
            "wsingest_handshakes_refused_total{reason=\"server_full\"}"
        ) >= 1,
        "{m}"
    );
    server.stop().await;

    // `refuse`: the second session of a device gets 409.
    config.server.max_connections = 100;
    config.limits.session_policy = wsingest_server::limits::SessionPolicy::Refuse;
    let server = TestServer::start(config).await;
    let mut first = connect(&server.ws_url("/v1/devices/twin"), None).await;
    assert_eq!(
        refused_status(try_connect(&server.ws_url("/v1/devices/twin"), &[]).await),
        409
    );
    send_json(&mut first, json!({"seq": 1, "fields": {"v": 1}})).await;
    assert_eq!(
        next_json(&mut first).await,
        json!({"ack": 1}),
        "the first session is untouched"
    );
    server.stop().await;
}

#[tokio::test]
async fn cardinality_guard_and_allowed_measurements() {
    let influx = Influxd::start().await;
    influx.create_db("lim5").await;
    let reg = TestRegistry::new();
    let token = reg.add(
        "meter",
        DevicePolicy {
            new_series_per_minute: Some(3),
            allowed_measurements: Some(vec!["power".into(), "energy".into()]),
            ..Default::default()
        },
    );
    let mut config = test_config(&influx.url, "lim5");
    config.auth.registry_path = Some(reg.path.clone());
    let server = TestServer::start(config).await;
    let mut ws = connect_bearer(&server.ws_url("/v1/devices/meter"), &token).await;
    for (seq, phase) in [(1, "L1"), (2, "L2"), (3, "L3")] {
        send_json(&mut ws, json!({"seq": seq, "measurement": "power", "tags": {"phase": phase}, "fields": {"w": 1}})).await;
        assert_eq!(next_json(&mut ws).await, json!({"ack": seq}));
    }
    send_json(
        &mut ws,
        json!({"seq": 4, "measurement": "power", "tags": {"phase": "L4"}, "fields": {"w": 1}}),
    )
    .await;
    let r = next_json(&mut ws).await;
    assert_eq!(
        (r["nack"].clone(), r["error"].clone()),
        (json!(4), json!("too_many_series")),
        "{r}"
    );
    // Known series still pass.
    send_json(&mut ws, json!({"seq": 5, "ts": 1, "measurement": "power", "tags": {"phase": "L1"}, "fields": {"w": 2}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 5}));
    send_json(
        &mut ws,
        json!({"seq": 6, "measurement": "secrets", "fields": {"w": 1}}),
    )
    .await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["error"], json!("forbidden_measurement"), "{r}");
    let series = influx.rows("lim5", "SHOW SERIES").await;
    assert_eq!(series.len(), 3, "{series:?}");
    let m = metrics(&server).await;
    assert_eq!(metric(&m, "wsingest_series_refused_total"), 1, "{m}");
    assert_eq!(metric(&m, "wsingest_measurement_refused_total"), 1, "{m}");
    server.stop().await;
}

#[tokio::test]
async fn line_protocol_injection_is_stored_verbatim_or_refused() {
    let influx = Influxd::start().await;
    influx.create_db("lim6").await;
    let server = TestServer::start(test_config(&influx.url, "lim6")).await;
    let mut ws = connect(&server.ws_url("/v1/devices/inj"), None).await;
    let attempts = [
        "a\nevil,device=x v=1 1",
        "a,device=x",
        "a=b",
        "a b",
        "a\\",
        "a\\ b",
        "a\\,b",
        "a\\=b",
        "\\\\",
        "x\" v=1\nevil v=2",
        "a\rb",
        "#comment",
        "a\u{2028}b",
    ];
    let mut stored = Vec::new();
    for (i, s) in attempts.iter().enumerate() {
        let seq = i as u64 + 1;
        send_json(
            &mut ws,
            json!({"seq": seq, "ts": seq, "measurement": "inj", "tags": {"t": s}, "fields": {"s": s, "i": seq}}),
        )
        .await;
        let r = next_json(&mut ws).await;
        if r == json!({"ack": seq}) {
            stored.push((seq, *s));
        } else {
            assert!(
                r["detail"].as_str().unwrap().contains("tags.t"),
                "refused for the tag, with a reason: {r}"
            );
        }
        // The same string in a field alone is always storable.
        let seq2 = 1000 + seq;
        send_json(
            &mut ws,
            json!({"seq": seq2, "ts": seq2, "measurement": "inj", "fields": {"s": s, "i": seq2}}),
        )
        .await;
        assert_eq!(
            next_json(&mut ws).await,
            json!({"ack": seq2}),
            "field string {s:?}"
        );
    }
    // Exactly the strings line protocol can carry are stored; the rest
    // (newlines, CR, backslash at the end or before a special) are refused.
    let stored_strings: Vec<&str> = stored.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        stored_strings,
        ["a,device=x", "a=b", "a b", "#comment", "a\u{2028}b"],
        "{stored:?}"
    );
    let measurements = influx.rows("lim6", "SHOW MEASUREMENTS").await;
    assert_eq!(
        measurements,
        vec![vec![json!("inj")]],
        "no point split into another measurement"
    );
    let rows = influx.rows("lim6", "SELECT s, t, i FROM inj").await;
    assert_eq!(
        rows.len(),
        stored.len() + attempts.len(),
        "one row per acked message, no extra lines"
    );
    for r in &rows {
        let i = r[3].as_f64().unwrap() as u64;
        let sent = attempts[(if i > 1000 { i - 1000 } else { i }) as usize - 1];
        assert_eq!(r[1], json!(sent), "field string stored exactly");
        if i < 1000 {
            assert_eq!(r[2], json!(sent), "tag stored exactly");
        }
    }
    server.stop().await;
}
