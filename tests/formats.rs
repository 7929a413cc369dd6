//! Formats (mappings) end to end against a real influxd (and mosquitto):
//! each preset's vendor-shaped payload over WebSocket and HTTP is stored as
//! documented (measurement, tags, fields, time), unknown formats and
//! unusable payloads are refused with a reason, and `[[mqtt.subscribe]]`
//! stores QoS 1 messages exactly once, through an InfluxDB outage and a
//! kill -9 of wsingest before the points were durable.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wsingest_harness::process::WsingestProcess;
use wsingest_harness::*;
use wsingest_proto::format::presets::samples;
use wsingest_server::config::Config;
use wsingest_server::mqtt::subscribe::Subscription;

async fn post(server: &TestServer, path: &str, body: &str) -> (u16, Value) {
    let r = services::http()
        .post(server.http_url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Rows of `q` once there are `n` of them.
async fn rows_eventually(influx: &Influxd, db: &str, q: &str, n: usize) -> Vec<Vec<Value>> {
    eventually(20, q, || async {
        let rows = influx.rows(db, q).await;
        (rows.len() >= n).then_some(rows)
    })
    .await
}

#[tokio::test]
async fn presets_over_websocket_and_http_are_stored_as_documented() {
    let influx = Influxd::start().await;
    influx.create_db("fmt").await;
    let server = TestServer::start(test_config(&influx.url, "fmt")).await;

    // Shelly over its outbound WebSocket: no seq, so no acks; stored.
    let mut ws = connect(&server.ws_url("/v1/devices/shelly-1?format=shelly"), None).await;
    ws.send(Message::text(samples::SHELLY_NOTIFY_STATUS))
        .await
        .unwrap();
    ws.send(Message::text(samples::SHELLY_FULL_STATUS))
        .await
        .unwrap();
    let rows = rows_eventually(
        &influx,
        "fmt",
        "SELECT apower, aenergy_total, voltage FROM shelly WHERE device = 'shelly-1' AND component = 'switch:0'",
        1,
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![
            json!(1732543391520000000u64),
            json!(12.5),
            json!(1234.567),
            json!(231.4)
        ]]
    );
    let rows = rows_eventually(
        &influx,
        "fmt",
        "SELECT ssid, rssi FROM shelly WHERE component = 'wifi'",
        1,
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![
            json!(1732543400000000000u64),
            json!("Wohnung ü"),
            json!(-61)
        ]]
    );

    // Tasmota over HTTP: the answer comes once durable.
    let (status, body) = post(
        &server,
        "/v1/devices/plug-1/points?format=tasmota",
        samples::TASMOTA_SENSOR,
    )
    .await;
    assert_eq!(
        (status, body.clone()),
        (200, json!({"ack": null, "points": 1})),
        "{body}"
    );
    let rows = influx
        .rows("fmt", "SELECT \"BME280_Temperature\", \"ENERGY_Power\", \"ENERGY_TotalStartTime\" FROM tasmota WHERE device = 'plug-1'")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!(1732543391000000000u64),
            json!(21.3),
            json!(45),
            json!("2024-01-10T09:12:01")
        ]]
    );

    // OwnTracks HTTP mode.
    let (status, _) = post(
        &server,
        "/v1/devices/jane-phone/points?format=owntracks",
        samples::OWNTRACKS_LOCATION,
    )
    .await;
    assert_eq!(status, 200);
    let rows = influx
        .rows(
            "fmt",
            "SELECT lat, lon, batt, conn, tid FROM location WHERE device = 'jane-phone'",
        )
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!(1732543391000000000u64),
            json!(48.856826),
            json!(2.292713),
            json!(80),
            json!("w"),
            json!("JJ")
        ]]
    );

    // TTN v3 webhook.
    let (status, _) = post(
        &server,
        "/v1/devices/eui-70b3d57ed005d0d3/points?format=ttn",
        samples::TTN_UPLINK,
    )
    .await;
    assert_eq!(status, 200);
    let rows = influx
        .rows(
            "fmt",
            "SELECT temperature, battery_voltage, rssi, snr, label, application FROM lorawan",
        )
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!(1732543391123456789u64),
            json!(22.38),
            json!(3.61),
            json!(-87),
            json!(7.25),
            json!("nördlich"),
            json!("greenhouse")
        ]]
    );

    // flat, in CBOR over a WebSocket binary frame, with a seq path absent: stored.
    let mut flat = connect(&server.ws_url("/v1/devices/gen-1?format=flat"), None).await;
    send_cbor(
        &mut flat,
        json!({"ts": 1732543391, "env": {"t": 20.5, "h": [40, 41]}}),
    )
    .await;
    let rows = rows_eventually(
        &influx,
        "fmt",
        "SELECT env_t, env_h_1 FROM telemetry WHERE device = 'gen-1'",
        1,
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![json!(1732543391000000000u64), json!(20.5), json!(41)]]
    );
}

#[tokio::test]
async fn unknown_formats_and_unusable_payloads_are_refused_with_a_reason() {
    let influx = Influxd::start().await;
    influx.create_db("fmt2").await;
    let mut config = test_config(&influx.url, "fmt2");
    config.formats.insert(
        "mine".into(),
        toml::from_str(
            r#"seq = "n"
ts = { path = "meta.time", unit = "s", required = true }
measurement = "env"
tags = { room = "meta.room" }
fields = { exclude = ["meta.*"] }"#,
        )
        .unwrap(),
    );
    let server = TestServer::start(config).await;

    // Handshake and HTTP: 400 listing the known formats.
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.ws_url("/v1/devices/d1?format=bogus"),
    )
    .unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 400);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
            assert!(
                body.contains("flat, mine, owntracks, shelly, tasmota, ttn"),
                "{body}"
            );
        }
        other => panic!("expected a 400: {other:?}"),
    }
    let (status, body) = post(&server, "/v1/devices/d1/points?format=bogus", "{}").await;
    assert_eq!(status, 400);
    assert!(
        body.as_str().unwrap().contains("unknown format \"bogus\""),
        "{body}"
    );

    // A custom format with a seq path: acked and nacked by it over the WebSocket.
    let mut ws = connect(&server.ws_url("/v1/devices/d1?format=mine"), None).await;
    send_json(
        &mut ws,
        json!({"n": 1, "meta": {"time": 1732543391, "room": "lab"}, "t": 21.5}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    send_json(&mut ws, json!({"n": 2, "t": 21.5})).await;
    let nack = next_json(&mut ws).await;
    assert_eq!(
        (nack["nack"].clone(), nack["error"].clone()),
        (json!(2), json!("invalid_timestamp")),
        "{nack}"
    );
    assert!(
        nack["detail"].as_str().unwrap().contains("meta.time"),
        "{nack}"
    );
    send_json(
        &mut ws,
        json!({"n": 3, "meta": {"time": 1732543392}, "t": {"x": 1}, "t_x": 2}),
    )
    .await;
    let nack = next_json(&mut ws).await;
    assert_eq!(nack["error"], json!("invalid_message"), "{nack}");
    assert!(
        nack["detail"]
            .as_str()
            .unwrap()
            .contains("t_x and t.x both become field"),
        "{nack}"
    );
    let rows = influx.rows("fmt2", "SELECT t, room FROM env").await;
    assert_eq!(
        rows,
        vec![vec![
            json!(1732543391000000000u64),
            json!(21.5),
            json!("lab")
        ]]
    );

    // HTTP: 422 with the path; 400 for what is not JSON.
    let (status, body) = post(
        &server,
        "/v1/devices/d2/points?format=owntracks",
        r#"{"_type":"lwt","tst":1}"#,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"], json!("invalid_message"));
    assert!(body["detail"].as_str().unwrap().contains("_type"), "{body}");
    let (status, body) = post(&server, "/v1/devices/d2/points?format=flat", "{not json").await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_json"))
    );
    // Hostile: 30k keys (within the body limit), deep nesting.
    let many: serde_json::Map<String, Value> =
        (0..30_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let (status, body) = post(
        &server,
        "/v1/devices/d2/points?format=flat",
        &Value::Object(many).to_string(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let (status, _) = post(&server, "/v1/devices/d2/points?format=flat", &deep).await;
    assert_eq!(status, 422);

    // Counted by format and outcome, for a mixed fleet's operator.
    let text = wsingest_harness::security::metrics(&server).await;
    let count = |format: &str, outcome: &str| {
        let name =
            format!("wsingest_format_messages_total{{format=\"{format}\",outcome=\"{outcome}\"}}");
        wsingest_harness::security::metric(&text, &name)
    };
    assert_eq!(count("mine", "ok"), 1, "{text}");
    assert_eq!(count("mine", "invalid_timestamp"), 1, "{text}");
    assert_eq!(count("mine", "invalid_message"), 1, "{text}");
    assert_eq!(count("owntracks", "invalid_message"), 1, "{text}");
    assert_eq!(count("flat", "invalid_json"), 1, "{text}");
}

fn subscribed(influx: &Influxd, db: &str, broker: &Mosquitto, client_id: &str) -> Config {
    let mut c = test_config(&influx.url, db);
    c.mqtt.url = Some(broker.url());
    c.mqtt.client_id = Some(client_id.into());
    c.mqtt.reconnect_max_ms = 300;
    c.mqtt.subscribe = vec![Subscription {
        topic: "tele/{device}/SENSOR".into(),
        format: Some("tasmota".into()),
        device: None,
        qos: 1,
    }];
    c
}

/// Wait until the server's subscription takes messages (a QoS 1 message
/// published before it subscribed is not delivered to it).
async fn wait_subscribed(probe: &MqttProbe, influx: &Influxd, db: &str, device: &str) {
    let q = format!("SELECT count(\"ENERGY_Power\") FROM tasmota WHERE device = '{device}'");
    eventually(30, "the subscription takes messages", || async {
        probe
            .publish_json(&format!("tele/{device}/SENSOR"), tasmota(0))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        (!influx.rows(db, &q).await.is_empty()).then_some(())
    })
    .await;
}

fn tasmota(i: u64) -> Value {
    let secs = 1732543391 + i;
    let t = chrono_free_time(secs);
    json!({"Time": t, "ENERGY": {"Power": i, "Voltage": 230}, "TempUnit": "C"})
}

/// `secs` since the epoch as Tasmota's local time text (UTC here).
fn chrono_free_time(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // 2024-11-25 is day 20052.
    assert!((20052..20053).contains(&days), "samples stay on 2024-11-25");
    format!(
        "2024-11-25T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[tokio::test]
async fn mqtt_subscription_stores_each_message_once_and_publishes_nacks() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("wsingest_server=debug")
        .with_test_writer()
        .try_init();
    let influx = Influxd::start().await;
    influx.create_db("mq").await;
    let broker = Mosquitto::start().await;
    let mut probe = MqttProbe::connect(broker.port, &["wsingest/+/nack"]).await;
    let started = std::time::Instant::now();
    let server = TestServer::start(subscribed(&influx, "mq", &broker, "fmt-test-1")).await;
    wait_subscribed(&probe, &influx, "mq", "warmup").await;

    const N: u64 = 50;
    for i in 0..N {
        probe.publish_json("tele/dev-1/SENSOR", tasmota(i)).await;
    }
    let q = "SELECT count(\"ENERGY_Power\") FROM tasmota WHERE device = 'dev-1'";
    eventually(20, "all messages stored", || async {
        let rows = influx.rows("mq", q).await;
        (rows.first().and_then(|r| r[1].as_u64()) == Some(N)).then_some(())
    })
    .await;

    // Nacked: acknowledged, and the nack published.
    probe
        .publish_json(
            "tele/dev-2/SENSOR",
            json!({"Time": "yesterday", "X": {"A": 1}}),
        )
        .await;
    let m = probe.next(10).await;
    assert_eq!(m.topic, "wsingest/dev-2/nack");
    let nack = m.json();
    assert_eq!(nack["error"], json!("invalid_timestamp"), "{nack}");
    assert_eq!(nack["topic"], json!("tele/dev-2/SENSOR"));

    // Nothing more arrives: each message once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(influx.rows("mq", q).await[0][1], json!(N));
    eprintln!("mqtt ingest of {N} messages: {:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn mqtt_messages_survive_an_influx_outage_and_a_kill_9() {
    let mut influx = Influxd::start().await;
    influx.create_db("mq2").await;
    let broker = Mosquitto::start().await;
    let probe = MqttProbe::connect(broker.port, &[]).await;

    // 1. InfluxDB down, spool on: messages are spooled, then stored.
    let server = TestServer::start(subscribed(&influx, "mq2", &broker, "fmt-test-2")).await;
    wait_subscribed(&probe, &influx, "mq2", "warmup-2").await;
    influx.stop();
    for i in 0..10 {
        probe.publish_json("tele/dev-3/SENSOR", tasmota(i)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    influx.restart().await;
    let q = "SELECT count(\"ENERGY_Power\") FROM tasmota WHERE device = 'dev-3'";
    eventually(30, "spooled messages stored", || async {
        let rows = influx.rows("mq2", q).await;
        (rows.first().and_then(|r| r[1].as_u64()) == Some(10)).then_some(())
    })
    .await;
    server.stop().await;

    // 2. A real process with no spool, InfluxDB down: nothing is durable, so
    //    nothing is acknowledged; kill -9, then the broker delivers again.
    let dir = tempfile::tempdir().unwrap();
    let mut config = subscribed(&influx, "mq2", &broker, "fmt-test-3");
    config.spool.enabled = false;
    config.influx.retry_max_elapsed_ms = 500;
    let mut wsingest = WsingestProcess::start(config.clone(), dir.path()).await;
    wait_subscribed(&probe, &influx, "mq2", "warmup-3").await;
    influx.stop();
    for i in 0..10 {
        probe.publish_json("tele/dev-4/SENSOR", tasmota(i)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    wsingest.kill9();
    influx.restart().await;
    // Not stored before the kill: what follows is the broker's redelivery.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let q = "SELECT count(\"ENERGY_Power\") FROM tasmota WHERE device = 'dev-4'";
    assert!(
        influx.rows("mq2", q).await.is_empty(),
        "stored before the kill"
    );
    let port = wsingest.addr.port();
    let _wsingest = WsingestProcess::start_on(config, dir.path(), port).await;
    eventually(30, "redelivered messages stored", || async {
        let rows = influx.rows("mq2", q).await;
        (rows.first().and_then(|r| r[1].as_u64()) == Some(10)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_registry_entry_sets_the_format_of_its_device() {
    let influx = Influxd::start().await;
    influx.create_db("fmt3").await;
    let registry = wsingest_harness::security::TestRegistry::new();
    let token = registry.add(
        "plug-9",
        wsingest_server::auth::registry::DevicePolicy {
            format: Some("tasmota".into()),
            ..Default::default()
        },
    );
    let mut config = test_config(&influx.url, "fmt3");
    config.auth.allow_anonymous = false;
    config.auth.registry_path = Some(registry.path.clone());
    let server = TestServer::start(config).await;
    let r = services::http()
        .post(server.http_url("/v1/devices/plug-9/points"))
        .bearer_auth(&token)
        .body(samples::TASMOTA_STATE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let rows = influx
        .rows(
            "fmt3",
            "SELECT \"Wifi_RSSI\", \"POWER\" FROM tasmota WHERE device = 'plug-9'",
        )
        .await;
    assert_eq!(
        rows,
        vec![vec![json!(1732543391000000000u64), json!(80), json!("ON")]]
    );
}
