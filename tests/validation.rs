//! Hostile names and values: stored exactly, or nacked with a reason, and
//! never able to make InfluxDB refuse someone else's points.

use serde_json::json;
use wsingest_harness::*;

async fn setup(db: &str) -> (Influxd, TestServer) {
    let influx = Influxd::start().await;
    influx.create_db(db).await;
    let server = TestServer::start(test_config(&influx.url, db)).await;
    (influx, server)
}

#[tokio::test]
async fn special_characters_are_stored_exactly() {
    let (influx, server) = setup("v1").await;
    let mut ws = connect(&server.ws_url("/v1/devices/d.1"), None).await;
    let tag = r#"a b,c=d "q" back\slash ünï €"#;
    let text = "line1\nline2 \"quoted\", a=b, tab\tend\\";
    send_json(
        &mut ws,
        json!({"seq": 1, "ts": 1000, "measurement": "m x,y", "tags": {"k ey,=": tag},
               "fields": {"s p,a=ce": text, "n": 1}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    let rows = influx
        .rows("v1", r#"SELECT "s p,a=ce", "k ey,=" FROM "m x,y""#)
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], json!(text));
    assert_eq!(rows[0][2], json!(tag));
    server.stop().await;
}

#[tokio::test]
async fn what_line_protocol_cannot_carry_is_nacked_and_others_still_written() {
    let (influx, server) = setup("v2").await;
    let mut bad = connect(&server.ws_url("/v1/devices/bad"), None).await;
    let mut good = connect(&server.ws_url("/v1/devices/good"), None).await;
    let cases = [
        (
            json!({"seq": 1, "tags": {"t": "ends with\\"}, "fields": {"v": 1}}),
            "invalid_name",
            "at the end",
        ),
        (
            json!({"seq": 2, "tags": {"t": "a\\ b"}, "fields": {"v": 1}}),
            "invalid_name",
            "before a space",
        ),
        (
            json!({"seq": 3, "measurement": "two\nlines", "fields": {"v": 1}}),
            "invalid_name",
            "U+000A",
        ),
        (
            json!({"seq": 4, "fields": {}}),
            "empty_fields",
            "at least one field",
        ),
        (
            json!({"seq": 5, "fields": {"v": [1, 2]}}),
            "invalid_message",
            "fields.v",
        ),
        (
            json!({"seq": 6, "measurement": "", "fields": {"v": 1}}),
            "invalid_name",
            "empty",
        ),
        (
            json!({"seq": 7, "fields": {"time": 1}}),
            "invalid_name",
            "reserved",
        ),
        (
            json!({"seq": 8, "tags": {"device": "spoof"}, "fields": {"v": 1}}),
            "reserved_tag",
            "session",
        ),
        (
            json!({"seq": 9, "ts": "not a time", "fields": {"v": 1}}),
            "invalid_timestamp",
            "RFC 3339",
        ),
    ];
    for (msg, code, detail) in cases {
        let seq = msg["seq"].clone();
        send_json(&mut bad, msg).await;
        let reply = next_json(&mut bad).await;
        assert_eq!(reply["nack"], seq, "{reply}");
        assert_eq!(reply["error"], json!(code), "{reply}");
        assert!(
            reply["detail"].as_str().unwrap().contains(detail),
            "{reply} should mention {detail}"
        );
    }
    // CBOR can carry NaN and infinity; JSON cannot even spell them.
    send_cbor(&mut bad, json!({"seq": 10, "fields": {"v": 1.0}})).await;
    assert_eq!(next_json(&mut bad).await, json!({"ack": 10}));
    let mut nan = Vec::new();
    ciborium::into_writer(
        &ciborium::Value::Map(vec![
            ("seq".into(), 11.into()),
            (
                "fields".into(),
                ciborium::Value::Map(vec![("v".into(), ciborium::Value::Float(f64::NAN))]),
            ),
        ]),
        &mut nan,
    )
    .unwrap();
    futures_util::SinkExt::send(
        &mut bad,
        tokio_tungstenite::tungstenite::Message::binary(nan),
    )
    .await
    .unwrap();
    let reply = next_json(&mut bad).await;
    assert_eq!(
        (reply["nack"].clone(), reply["error"].clone()),
        (json!(11), json!("invalid_field")),
        "{reply}"
    );
    futures_util::SinkExt::send(
        &mut bad,
        tokio_tungstenite::tungstenite::Message::binary(vec![0x1c, 0xff, 0x00]),
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut bad).await["error"], json!("invalid_cbor"));
    futures_util::SinkExt::send(
        &mut bad,
        tokio_tungstenite::tungstenite::Message::text("{\"seq\": 12, \"fields\": {\"v\": NaN}}"),
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut bad).await["error"], json!("invalid_json"));

    send_json(&mut good, json!({"seq": 1, "fields": {"v": 2}})).await;
    assert_eq!(next_json(&mut good).await, json!({"ack": 1}));
    let rows = influx.rows("v2", "SELECT v, device FROM telemetry").await;
    let devices: Vec<_> = rows
        .iter()
        .map(|r| r[2].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        devices,
        vec!["bad", "good"],
        "only the valid points are stored: {rows:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn field_type_conflict_goes_to_dead_letter_with_a_nack() {
    let influx = Influxd::start().await;
    influx.create_db("v3").await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let mut config = test_config(&influx.url, "v3");
    config.influx.dead_letter_path = Some(dead.clone());
    config.influx.flush_interval_ms = 300;
    let server = TestServer::start(config).await;
    let mut a = connect(&server.ws_url("/v1/devices/a"), None).await;
    send_json(&mut a, json!({"seq": 1, "fields": {"state": "on"}})).await;
    assert_eq!(next_json(&mut a).await, json!({"ack": 1}));
    // Now the same field as a number, in one batch with other devices' points.
    let mut b = connect(&server.ws_url("/v1/devices/b"), None).await;
    let mut c = connect(&server.ws_url("/v1/devices/c"), None).await;
    send_json(&mut c, json!({"seq": 7, "fields": {"state": "off"}})).await;
    send_json(&mut b, json!({"seq": 5, "fields": {"state": 1.5}})).await;
    send_json(&mut c, json!({"seq": 8, "fields": {"other": 3}})).await;
    let reply = next_json(&mut b).await;
    assert_eq!(reply["nack"], json!(5), "{reply}");
    assert_eq!(reply["error"], json!("rejected_by_database"));
    assert!(
        reply["detail"]
            .as_str()
            .unwrap()
            .contains("field type conflict"),
        "{reply}"
    );
    let mut acks = vec![next_json(&mut c).await, next_json(&mut c).await];
    acks.sort_by_key(|v| v["ack"].as_u64());
    assert_eq!(acks, vec![json!({"ack": 7}), json!({"ack": 8})]);
    let text = std::fs::read_to_string(&dead).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(records[0]["status"], json!(400));
    assert!(
        records[0]["lines"].as_str().unwrap().contains("device=b"),
        "{text}"
    );
    assert_eq!(influx.count("v3", "telemetry", "state").await, 2);
    assert_eq!(influx.count("v3", "telemetry", "other").await, 1);
    server.stop().await;
}
