//! Commands to devices on their WebSocket: published on MQTT (real
//! mosquitto) or posted to the HTTP command API, delivered in the session's
//! encoding, answered with `cmd_result`, the answer published back.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wsingest_harness::*;
use wsingest_server::config::{Config, Secret};

async fn wait_connected(server: &TestServer) {
    eventually(20, "the bridge to connect", || async {
        let v: serde_json::Value = services::http()
            .get(server.http_url("/v1/mqtt"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["connected"] == json!(true)).then_some(())
    })
    .await;
}

/// Connect a device and make sure its session runs (and so is registered
/// for commands): one point, one ack.
async fn device(server: &TestServer, id: &str, subprotocol: Option<&str>) -> Ws {
    let mut ws = connect(&server.ws_url(&format!("/v1/devices/{id}")), subprotocol).await;
    let hello = json!({"seq": 1, "fields": {"up": true}});
    match subprotocol {
        Some("wsingest.v1.cbor") => send_cbor(&mut ws, hello).await,
        _ => send_json(&mut ws, hello).await,
    }
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    ws
}

/// Next message on `probe` for `topic`, as JSON.
async fn on(probe: &mut MqttProbe, topic: &str) -> serde_json::Value {
    loop {
        let m = probe.next(10).await;
        if m.topic == topic {
            return m.json();
        }
    }
}

async fn setup(db: &str, tweak: impl FnOnce(&mut Config)) -> (Influxd, Mosquitto, TestServer) {
    let influx = Influxd::start().await;
    influx.create_db(db).await;
    let broker = Mosquitto::start().await;
    let mut c = test_config(&influx.url, db);
    c.mqtt.url = Some(broker.url());
    tweak(&mut c);
    let server = TestServer::start(c).await;
    wait_connected(&server).await;
    (influx, broker, server)
}

#[tokio::test]
async fn mqtt_command_reaches_the_device_and_its_result_is_published() {
    let (_influx, broker, server) = setup("c1", |_| {}).await;
    let mut probe = MqttProbe::connect(
        broker.port,
        &["devices/+/commands/result", "devices/+/commands/status"],
    )
    .await;

    // A JSON session.
    let mut ws = device(&server, "dev-j", None).await;
    let cmd = json!({"cmd": "c-17", "name": "set_interval", "args": {"seconds": 5}});
    probe
        .publish_json("devices/dev-j/commands", cmd.clone())
        .await;
    assert_eq!(next_json(&mut ws).await, cmd);
    assert_eq!(
        on(&mut probe, "devices/dev-j/commands/status").await,
        json!({"cmd": "c-17", "status": "delivered"})
    );
    send_json(
        &mut ws,
        json!({"seq": 2, "cmd_result": "c-17", "ok": true, "detail": "interval now 5 s"}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"ack": 2}),
        "a cmd_result with seq is acked"
    );
    assert_eq!(
        on(&mut probe, "devices/dev-j/commands/result").await,
        json!({"cmd": "c-17", "ok": true, "detail": "interval now 5 s"})
    );

    // A CBOR session gets the command as CBOR, in a binary frame.
    let mut wc = device(&server, "dev-c", Some("wsingest.v1.cbor")).await;
    probe
        .publish_json(
            "devices/dev-c/commands",
            json!({"cmd": "c-18", "name": "reboot"}),
        )
        .await;
    let frame = tokio::time::timeout(Duration::from_secs(10), wc.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Binary(bytes) = frame else {
        panic!("expected a binary frame, got {frame:?}")
    };
    let v: ciborium::Value = ciborium::from_reader(&bytes[..]).unwrap();
    assert_eq!(
        serde_json::to_value(v).unwrap(),
        json!({"cmd": "c-18", "name": "reboot"})
    );
    send_cbor(
        &mut wc,
        json!({"cmd_result": "c-18", "ok": false, "detail": "busy"}),
    )
    .await;
    assert_eq!(
        on(&mut probe, "devices/dev-c/commands/result").await,
        json!({"cmd": "c-18", "ok": false, "detail": "busy"})
    );

    // An invalid command for a device held here is answered with a failure.
    probe
        .publish_json(
            "devices/dev-j/commands",
            json!({"cmd": "c-19", "nme": "typo"}),
        )
        .await;
    let r = on(&mut probe, "devices/dev-j/commands/result").await;
    assert_eq!(
        (r["cmd"].clone(), r["ok"].clone()),
        (json!("c-19"), json!(false)),
        "{r}"
    );
    assert!(
        r["detail"].as_str().unwrap().contains("invalid command"),
        "{r}"
    );

    // A command for a device that is not here is left to other instances:
    // nothing reaches the devices we hold.
    probe
        .publish_json(
            "devices/elsewhere/commands",
            json!({"cmd": "c-20", "name": "x"}),
        )
        .await;
    send_json(&mut ws, json!({"seq": 3, "fields": {"up": true}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 3}));
    server.stop().await;
}

#[tokio::test]
async fn stored_commands_are_delivered_when_the_device_connects() {
    let (_influx, broker, server) = setup("c2", |c| {
        c.commands.store = true;
        c.observe.operator_token = Some(Secret::new("op"));
    })
    .await;
    let probe = MqttProbe::connect(broker.port, &[]).await;
    probe
        .publish_json(
            "devices/late/commands",
            json!({"cmd": "a", "name": "first"}),
        )
        .await;
    probe
        .publish_json(
            "devices/late/commands",
            json!({"cmd": "b", "name": "second"}),
        )
        .await;
    // Wait until the router holds the second (so the first too: one
    // connection, in order), then connect the device.
    eventually(10, "the commands to reach the router", || async {
        let v: serde_json::Value = services::http()
            .get(server.http_url("/v1/devices/late/commands/b"))
            .bearer_auth("op")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["status"] == json!("pending")).then_some(())
    })
    .await;
    let mut ws = connect(&server.ws_url("/v1/devices/late"), None).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"cmd": "a", "name": "first"})
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({"cmd": "b", "name": "second"})
    );
    server.stop().await;
}

#[tokio::test]
async fn http_command_api_round_trip() {
    let influx = Influxd::start().await;
    influx.create_db("c3").await;
    let mut c = test_config(&influx.url, "c3");
    c.observe.operator_token = Some(Secret::new("op-secret"));
    let server = TestServer::start(c).await;
    let http = services::http();
    let post = |device: &str, wait: &str, token: &str, body: serde_json::Value| {
        http.post(server.http_url(&format!("/v1/devices/{device}/commands?wait={wait}")))
            .bearer_auth(token)
            .json(&body)
            .send()
    };

    let r = post("d1", "0", "wrong", json!({"name": "reboot"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post("d1", "0", "op-secret", json!({"name": "reboot"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no session, no bridge, no store");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        json!("device_not_connected")
    );
    let r = post("d1", "0", "op-secret", json!({"nme": "reboot"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let mut ws = device(&server, "d1", None).await;
    // The device answers whatever command it gets.
    let answering = tokio::spawn(async move {
        let cmd = next_json(&mut ws).await;
        send_json(
            &mut ws,
            json!({"cmd_result": cmd["cmd"], "ok": true, "detail": format!("did {}", cmd["name"])}),
        )
        .await;
        (ws, cmd)
    });
    let r = post(
        "d1",
        "10",
        "op-secret",
        json!({"name": "reboot", "args": {"delay_s": 1}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "answered within the wait");
    let v: serde_json::Value = r.json().await.unwrap();
    let (mut ws, seen) = answering.await.unwrap();
    let id = v["cmd"].as_str().unwrap().to_string();
    assert!(id.starts_with("c-"), "{v}");
    assert_eq!(
        seen,
        json!({"cmd": id, "name": "reboot", "args": {"delay_s": 1}})
    );
    assert_eq!(
        v,
        json!({"cmd": id, "device": "d1", "name": "reboot", "status": "done", "ok": true, "detail": "did \"reboot\""})
    );
    let r = http
        .get(server.http_url(&format!("/v1/devices/d1/commands/{id}")))
        .bearer_auth("op-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        json!("done")
    );

    // No wait: 202 with the id; the status moves on as the device acts.
    let r = post(
        "d1",
        "0",
        "op-secret",
        json!({"cmd": "mine-1", "name": "blink"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["cmd"],
        json!("mine-1")
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({"cmd": "mine-1", "name": "blink"})
    );
    let status = |id: &'static str| {
        let http = http.clone();
        let url = server.http_url(&format!("/v1/devices/d1/commands/{id}"));
        async move {
            let v: serde_json::Value = http
                .get(url)
                .bearer_auth("op-secret")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            Some(v["status"].as_str()?.to_string())
        }
    };
    eventually(10, "delivered", || async {
        (status("mine-1").await? == "delivered").then_some(())
    })
    .await;
    send_json(
        &mut ws,
        json!({"cmd_result": "mine-1", "ok": false, "detail": "no led"}),
    )
    .await;
    eventually(10, "failed", || async {
        (status("mine-1").await? == "failed").then_some(())
    })
    .await;

    // A device that never answers: the caller gets 202 `delivered` after the wait.
    let r = post("d1", "0.3", "op-secret", json!({"name": "slow"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        json!("delivered")
    );
    server.stop().await;
}

#[tokio::test]
async fn http_long_poll_device_gets_commands_and_answers_over_http() {
    let influx = Influxd::start().await;
    influx.create_db("c4").await;
    let mut c = test_config(&influx.url, "c4");
    c.observe.operator_token = Some(Secret::new("op"));
    c.commands.store = true;
    let server = TestServer::start(c).await;
    let http = services::http();
    let poll_url = server.http_url("/v1/devices/poller/commands?wait=10");

    // Nothing pending: an empty answer after the wait.
    let r = http
        .get(server.http_url("/v1/devices/poller/commands?wait=0.2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"commands": []})
    );

    // A command while the device is not polling is stored, and the device
    // answers through the HTTP points fallback; the operator waits for it.
    let post = http
        .post(server.http_url("/v1/devices/poller/commands?wait=10"))
        .bearer_auth("op")
        .json(&json!({"cmd": "p-1", "name": "set_interval", "args": {"seconds": 60}}))
        .send();
    let polling_device = async {
        let v: serde_json::Value = http
            .get(&poll_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            v,
            json!({"commands": [{"cmd": "p-1", "name": "set_interval", "args": {"seconds": 60}}]})
        );
        let r = http
            .post(server.http_url("/v1/devices/poller/points"))
            .header("content-type", "application/json")
            .body(json!({"cmd_result": "p-1", "ok": true}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    };
    let (r, ()) = tokio::join!(post, polling_device);
    let r = r.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        json!("done")
    );

    // A device with a WebSocket session gets its commands there, not by polling.
    let _ws = device(&server, "poller", None).await;
    let r = http.get(&poll_url).send().await.unwrap();
    assert_eq!(r.status(), 409);
    server.stop().await;
}
