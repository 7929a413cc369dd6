//! End to end through real WebSocket clients, a real server and a real
//! influxd: what devices send is what InfluxDB stores.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wsingest_harness::*;

async fn setup(db: &str) -> (Influxd, TestServer) {
    let influx = Influxd::start().await;
    influx.create_db(db).await;
    let server = TestServer::start(test_config(&influx.url, db)).await;
    (influx, server)
}

#[tokio::test]
async fn json_point_is_acked_and_stored() {
    let (influx, server) = setup("t1").await;
    let mut ws = connect(&server.ws_url("/v1/devices/dev-1"), None).await;
    send_json(
        &mut ws,
        json!({"seq": 42, "ts": 1732492800123u64, "measurement": "weather",
               "tags": {"site": "roof"}, "fields": {"temp_c": 21.5, "ok": true, "fw": "1.2.0"}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 42}));
    let rows = influx
        .rows("t1", "SELECT temp_c, ok, fw, device, site FROM weather")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!(1732492800123000000u64),
            json!(21.5),
            json!(true),
            json!("1.2.0"),
            json!("dev-1"),
            json!("roof")
        ]]
    );
    server.stop().await;
}

#[tokio::test]
async fn cbor_point_batch_and_timestamps() {
    let (influx, server) = setup("t2").await;
    let mut ws = connect(&server.ws_url("/v1/devices/meter-7"), None).await;
    send_cbor(&mut ws, json!({"seq": 1, "ts": "2024-11-25T00:00:00.123456789Z", "measurement": "power", "fields": {"w": 230}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    send_json(
        &mut ws,
        json!({"seq": 2, "measurement": "power", "points": [
            {"ts": 1732492799000u64, "fields": {"w": 1}},
            {"ts": "2024-11-25T01:00:00+01:00", "fields": {"w": 2}},
            {"ts": 1732492802000u64, "tags": {"phase": "L2"}, "fields": {"w": 3}}
        ]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 2}));
    let rows = influx
        .rows("t2", "SELECT w, device, phase FROM power")
        .await;
    let times: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
    // 2024-11-25T01:00:00+01:00 is 00:00:00Z, before seq 1's point.
    assert_eq!(
        times,
        vec![
            1732492799000000000,
            1732492800000000000,
            1732492800123456789,
            1732492802000000000
        ]
    );
    assert_eq!(rows[1][1].as_f64(), Some(2.0));
    assert_eq!(rows[2][1].as_f64(), Some(230.0));
    assert_eq!(rows[3][3], json!("L2"));
    assert!(rows.iter().all(|r| r[2] == json!("meter-7")));
    server.stop().await;
}

#[tokio::test]
async fn subprotocols_select_the_encoding() {
    let (influx, server) = setup("t3").await;
    // CBOR subprotocol: replies are CBOR (binary) even to a binary message.
    let mut ws = connect(&server.ws_url("/v1/devices/c1"), Some("wsingest.v1.cbor")).await;
    send_cbor(&mut ws, json!({"seq": 5, "fields": {"x": 1.5}})).await;
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert!(
        matches!(reply, Message::Binary(_)),
        "cbor session replies in binary: {reply:?}"
    );
    // JSON subprotocol: a binary frame holding JSON is still JSON.
    let mut ws2 = connect(&server.ws_url("/v1/devices/j1"), Some("wsingest.v1.json")).await;
    ws2.send(Message::binary(
        json!({"seq": 6, "fields": {"x": 2.5}})
            .to_string()
            .into_bytes(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws2).await, json!({"ack": 6}));
    assert_eq!(influx.count("t3", "telemetry", "x").await, 2);
    server.stop().await;
}

#[tokio::test]
async fn hello_gets_a_nack_and_the_session_stays_open() {
    let (influx, server) = setup("t4").await;
    // The notes' Python example connects to / and sends plain text.
    let mut ws = connect(&server.ws_url("/"), None).await;
    ws.send(Message::text("Hello, WebSocket!")).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["nack"], json!(null));
    assert_eq!(reply["error"], json!("invalid_json"));
    assert!(
        reply["detail"].as_str().unwrap().contains("JSON"),
        "{reply}"
    );
    send_json(&mut ws, json!({"seq": 1, "fields": {"v": 1}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    let rows = influx.rows("t4", "SELECT v, device FROM telemetry").await;
    assert_eq!(rows[0][2], json!("anonymous-1"));
    server.stop().await;
}
