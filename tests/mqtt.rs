//! The MQTT bridge against a real mosquitto and a real influxd: accepted
//! points appear on the broker (JSON and CBOR), a dead broker never stops
//! ingest (drops are counted), `required` makes the PUBACK part of the ack,
//! and the bridge resumes by itself when the broker is back.

use std::time::Duration;

use serde_json::json;
use wsingest_harness::*;
use wsingest_server::config::Config;
use wsingest_server::mqtt::PayloadFormat;

async fn bridge_stats(server: &TestServer) -> serde_json::Value {
    services::http()
        .get(server.http_url("/v1/mqtt"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_connected(server: &TestServer, connected: bool) {
    eventually(20, "the bridge's connection state", || async {
        (bridge_stats(server).await["connected"] == json!(connected)).then_some(())
    })
    .await;
}

fn bridged(influx: &Influxd, db: &str, broker: &Mosquitto) -> Config {
    let mut c = test_config(&influx.url, db);
    c.mqtt.url = Some(broker.url());
    c.mqtt.reconnect_max_ms = 300;
    c
}

#[tokio::test]
async fn points_arrive_on_the_broker_as_json_and_cbor() {
    let influx = Influxd::start().await;
    influx.create_db("m1").await;
    let broker = Mosquitto::start().await;
    let mut probe = MqttProbe::connect(broker.port, &["telemetry/#"]).await;

    // JSON payloads, QoS 0.
    let server = TestServer::start(bridged(&influx, "m1", &broker)).await;
    wait_connected(&server, true).await;
    let mut ws = connect(&server.ws_url("/v1/devices/dev-1"), None).await;
    send_json(
        &mut ws,
        json!({"seq": 1, "ts": 1732492800123u64, "measurement": "weather",
               "tags": {"site": "roof"}, "fields": {"temp_c": 21.5, "ok": true, "fw": "1.2.0", "n": 7}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    let m = probe.next(10).await;
    assert_eq!(m.topic, "telemetry/dev-1/weather");
    assert_eq!(m.payload[0], b'{', "JSON payload");
    assert_eq!(
        m.json(),
        json!({"device": "dev-1", "measurement": "weather", "ts": 1732492800123u64,
               "tags": {"site": "roof"}, "fields": {"temp_c": 21.5, "ok": true, "fw": "1.2.0", "n": 7}})
    );
    // A batch: one MQTT message per point, nanosecond time kept.
    send_json(
        &mut ws,
        json!({"seq": 2, "points": [
            {"measurement": "power", "ts": "2024-11-25T00:00:00.000000001Z", "fields": {"w": 1.5}},
            {"measurement": "power/phase+1", "ts": 1732492801000u64, "fields": {"w": 2.5}}
        ]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 2}));
    let (a, b) = (probe.next(10).await, probe.next(10).await);
    assert_eq!(a.topic, "telemetry/dev-1/power");
    assert_eq!(a.json()["ts"], json!("2024-11-25T00:00:00.000000001Z"));
    // `/` and `+` in a measurement cannot leave its topic level.
    assert_eq!(b.topic, "telemetry/dev-1/power_phase_1");
    assert_eq!(b.json()["measurement"], json!("power/phase+1"));
    assert_eq!(b.json()["ts"], json!(1732492801000u64));
    let stats = bridge_stats(&server).await;
    assert_eq!(
        (stats["published"].clone(), stats["dropped"].clone()),
        (json!(3), json!(0)),
        "{stats}"
    );
    assert_eq!(influx.count("m1", "power", "w").await, 1);
    server.stop().await;

    // CBOR payloads, QoS 1, custom topic.
    let mut c = bridged(&influx, "m1", &broker);
    c.mqtt.payload = PayloadFormat::Cbor;
    c.mqtt.qos = 1;
    c.mqtt.topic = "telemetry/site-a/{measurement}/{device}".into();
    let server = TestServer::start(c).await;
    wait_connected(&server, true).await;
    let mut ws = connect(
        &server.ws_url("/v1/devices/meter-7"),
        Some("wsingest.v1.cbor"),
    )
    .await;
    send_cbor(&mut ws, json!({"seq": 9, "ts": 1732492802000u64, "measurement": "energy", "fields": {"kwh": 12.25}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 9}));
    let m = probe.next(10).await;
    assert_eq!(m.topic, "telemetry/site-a/energy/meter-7");
    assert!(
        serde_json::from_slice::<serde_json::Value>(&m.payload).is_err(),
        "CBOR, not JSON"
    );
    assert_eq!(
        m.json(),
        json!({"device": "meter-7", "measurement": "energy", "ts": 1732492802000u64, "tags": {}, "fields": {"kwh": 12.25}})
    );
    eventually(10, "the PUBACK to be counted", || async {
        (bridge_stats(&server).await["published"] == json!(1)).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn broker_down_ingest_continues_drops_are_counted_and_the_bridge_resumes() {
    let influx = Influxd::start().await;
    influx.create_db("m2").await;
    let mut broker = Mosquitto::start().await;
    let mut probe = MqttProbe::connect(broker.port, &["telemetry/#"]).await;
    let mut c = bridged(&influx, "m2", &broker);
    c.mqtt.queue_capacity = 20;
    let server = TestServer::start(c).await;
    wait_connected(&server, true).await;
    let mut ws = connect(&server.ws_url("/v1/devices/d2"), None).await;
    let point = |n: u64| json!({"seq": n, "ts": 1732492800000u64 + n, "fields": {"n": n}});
    for n in 0..5 {
        send_json(&mut ws, point(n)).await;
        assert_eq!(next_json(&mut ws).await, json!({"ack": n}));
    }
    for _ in 0..5 {
        probe.next(10).await;
    }

    broker.stop();
    wait_connected(&server, false).await;
    // Ingest does not notice: every message is acked and stored.
    for n in 5..105 {
        send_json(&mut ws, point(n)).await;
        assert_eq!(next_json(&mut ws).await, json!({"ack": n}));
    }
    assert_eq!(influx.count("m2", "telemetry", "n").await, 105);
    // At most `queue_capacity` points wait for the broker; the rest are dropped and counted.
    let stats = bridge_stats(&server).await;
    let (dropped, queued) = (
        stats["dropped"].as_u64().unwrap(),
        stats["queued"].as_u64().unwrap(),
    );
    assert!(dropped >= 80, "{stats}");
    assert!(queued <= 20, "{stats}");
    assert_eq!(
        dropped + queued,
        100,
        "every point is queued or counted as dropped: {stats}"
    );
    // The same count in the Prometheus metrics, by reason.
    let metrics = wsingest_harness::security::metrics(&server).await;
    let in_metrics: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("wsingest_bridge_dropped_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(in_metrics, dropped, "{metrics}");
    assert!(
        metrics.contains("wsingest_bridge_dropped_total{reason=\"queue_full\"}"),
        "{metrics}"
    );

    broker.restart().await;
    let mut probe = MqttProbe::connect(broker.port, &["telemetry/#"]).await;
    wait_connected(&server, true).await;
    for n in 200..205 {
        send_json(&mut ws, point(n)).await;
        assert_eq!(next_json(&mut ws).await, json!({"ack": n}));
    }
    // The new points arrive (after whatever was still queued).
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let n = probe.next(10).await.json()["fields"]["n"].as_u64().unwrap();
        if n >= 200 {
            seen.push(n);
        }
    }
    assert_eq!(seen, vec![200, 201, 202, 203, 204]);
    let stats = bridge_stats(&server).await;
    assert!(stats["connects"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(
        stats["published"].as_u64().unwrap() + dropped,
        110,
        "{stats}"
    );
    server.stop().await;
}

#[tokio::test]
async fn required_bridge_acks_after_puback_and_nacks_when_the_broker_is_down() {
    let influx = Influxd::start().await;
    influx.create_db("m3").await;
    let mut broker = Mosquitto::start().await;
    let mut probe = MqttProbe::connect(broker.port, &["telemetry/#"]).await;
    let mut c = bridged(&influx, "m3", &broker);
    c.mqtt.qos = 1;
    c.mqtt.required = true;
    c.mqtt.required_timeout_ms = 1000;
    let server = TestServer::start(c).await;
    wait_connected(&server, true).await;
    let mut ws = connect(&server.ws_url("/v1/devices/d3"), None).await;
    send_json(
        &mut ws,
        json!({"seq": 1, "points": [{"ts": 1, "fields": {"v": 1}}, {"ts": 2, "fields": {"v": 2}}]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    // The ack came after the broker confirmed both points.
    assert_eq!(bridge_stats(&server).await["published"], json!(2));
    probe.next(10).await;
    probe.next(10).await;

    broker.stop();
    wait_connected(&server, false).await;
    send_json(
        &mut ws,
        json!({"seq": 2, "ts": 1732492800000u64, "fields": {"v": 3}}),
    )
    .await;
    let reply = tokio::time::timeout(Duration::from_secs(10), next_json(&mut ws))
        .await
        .unwrap();
    assert_eq!(reply["nack"], json!(2), "{reply}");
    assert_eq!(reply["error"], json!("bridge_unavailable"), "{reply}");
    assert!(
        reply["detail"].as_str().unwrap().contains("unreachable"),
        "{reply}"
    );
    assert_eq!(bridge_stats(&server).await["nacked"], json!(1));

    broker.restart().await;
    wait_connected(&server, true).await;
    // The device resends; with `ts` the second write is idempotent in InfluxDB.
    send_json(
        &mut ws,
        json!({"seq": 3, "ts": 1732492800000u64, "fields": {"v": 3}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 3}));
    assert_eq!(influx.count("m3", "telemetry", "v").await, 3);
    server.stop().await;
}

#[tokio::test]
async fn mqtts_with_a_private_ca() {
    let influx = Influxd::start().await;
    influx.create_db("m4").await;
    let mut broker = Mosquitto::start().await;
    let (tls_port, ca) = broker.add_tls_listener().await;
    let mut probe = MqttProbe::connect(broker.port, &["telemetry/#"]).await;
    let mut c = test_config(&influx.url, "m4");
    c.mqtt.url = Some(format!("mqtts://127.0.0.1:{tls_port}"));
    c.mqtt.ca_file = Some(ca);
    let server = TestServer::start(c).await;
    wait_connected(&server, true).await;
    let mut ws = connect(&server.ws_url("/v1/devices/tls-1"), None).await;
    send_json(&mut ws, json!({"seq": 1, "fields": {"v": 1.5}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    let m = probe.next(10).await;
    assert_eq!(m.topic, "telemetry/tls-1/telemetry");
    assert_eq!(m.json()["fields"], json!({"v": 1.5}));
    server.stop().await;
}

#[test]
fn bad_mqtt_settings_are_config_errors() {
    let parse = |t: &str| {
        Config::parse(t, std::path::Path::new("x.toml")).and_then(|c| c.validate().map(|_| c))
    };
    let e = parse("[mqtt]\nurl = \"http://broker\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mqtt.url") && e.contains("mqtt://"), "{e}");
    let e = parse("[mqtt]\nqos = 0\nrequired = true\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mqtt.required"), "{e}");
    let e = parse("[mqtt]\ntopic = \"telemetry/#\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mqtt.topic") && e.contains("wildcard"), "{e}");
    let e = parse("[mqtt]\ntopci = \"x\"\n").unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("topci"), "{e}");
    let e = parse("[mqtt]\nclean_session = false\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("client_id"), "{e}");
}

/// One ingest path: a message without `ts` resent after its ack is acked
/// again but written once and bridged once, whichever transport carried it
/// (WebSocket, HTTP fallback, gRPC).
#[tokio::test]
async fn a_resent_message_is_written_and_bridged_once_on_every_transport() {
    use wsingest_server::grpc::proto::downlink;

    let influx = Influxd::start().await;
    influx.create_db("r").await;
    let broker = Mosquitto::start().await;
    let mut probe = MqttProbe::connect(broker.port, &["telemetry/#"]).await;
    let server = TestServer::start(bridged(&influx, "r", &broker)).await;
    wait_connected(&server, true).await;
    let body = |v: i64| json!({"seq": 7, "measurement": "once", "fields": {"v": v}}).to_string();

    // WebSocket: send, ack, reconnect (the ack was "lost"), resend.
    for _ in 0..2 {
        let mut ws = connect(&server.ws_url("/v1/devices/r-ws"), None).await;
        send_json(&mut ws, serde_json::from_str(&body(1)).unwrap()).await;
        assert_eq!(next_json(&mut ws).await, json!({"ack": 7}));
    }
    // HTTP fallback: the same request twice.
    for _ in 0..2 {
        let r = services::http()
            .post(server.http_url("/v1/devices/r-http/points"))
            .header("content-type", "application/json")
            .body(body(2))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            json!({"ack": 7, "points": 1})
        );
    }
    // gRPC: the same payload on two streams.
    for _ in 0..2 {
        let payload: serde_json::Value = serde_json::from_str(&body(3)).unwrap();
        let d = grpc_json(&server, "r-grpc", &payload).await;
        assert!(
            matches!(d.body, Some(downlink::Body::Ack(ref a)) if a.seq == 7),
            "{d:?}"
        );
    }

    let rows = influx
        .rows("r", "SELECT v, device FROM once GROUP BY device")
        .await;
    let mut stored: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r[2].as_str().unwrap().to_owned(),
                r[1].as_f64().unwrap() as i64,
            )
        })
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        vec![
            ("r-grpc".to_owned(), 3),
            ("r-http".to_owned(), 2),
            ("r-ws".to_owned(), 1)
        ],
        "each message written once"
    );
    let bridged = probe.drain(Duration::from_secs(2)).await;
    let mut devices: Vec<String> = bridged
        .iter()
        .map(|m| m.json()["device"].as_str().unwrap().to_owned())
        .collect();
    devices.sort();
    assert_eq!(
        devices,
        ["r-grpc", "r-http", "r-ws"],
        "each message bridged once"
    );
    server.stop().await;
}
