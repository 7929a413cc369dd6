//! Scale-out: two wsingest instances behind a real nginx running the shipped
//! `config/nginx.conf`, sharing one influxd and one mosquitto. Devices spread
//! over both, every point lands once, and a command reaches its device
//! whichever instance holds it, by MQTT or by the HTTP API of either instance.

use std::collections::HashSet;

use serde_json::json;
use wsingest_harness::*;
use wsingest_server::config::Secret;

#[tokio::test]
async fn two_instances_behind_nginx_share_the_broker() {
    let influx = Influxd::start().await;
    influx.create_db("s1").await;
    let broker = Mosquitto::start().await;
    let mut config = test_config(&influx.url, "s1");
    config.mqtt.url = Some(broker.url());
    config.observe.operator_token = Some(Secret::new("op"));
    let a = TestServer::start(config.clone()).await;
    let b = TestServer::start(config).await;
    let port = free_port();
    let nginx = Nginx::start(
        &Nginx::shipped_config(port, a.addr.port(), b.addr.port()),
        port,
    )
    .await;
    for s in [&a, &b] {
        eventually(20, "both bridges connected", || async {
            let v: serde_json::Value = services::http()
                .get(s.http_url("/v1/mqtt"))
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
    let mut probe =
        MqttProbe::connect(broker.port, &["devices/+/commands/result", "telemetry/#"]).await;

    // Six devices through nginx, ten points each.
    const DEVICES: usize = 6;
    let mut devices = Vec::new();
    for d in 0..DEVICES {
        let mut ws = connect(&format!("ws://127.0.0.1:{port}/v1/devices/dev-{d}"), None).await;
        for n in 0..10u64 {
            send_json(
                &mut ws,
                json!({"seq": n, "ts": 1732492800000u64 + n, "fields": {"n": n}}),
            )
            .await;
            assert_eq!(next_json(&mut ws).await, json!({"ack": n}));
        }
        devices.push(ws);
    }
    assert_eq!(
        influx.count("s1", "telemetry", "n").await,
        60,
        "every point once"
    );
    // Each point bridged by one instance: all 60 arrive (polled with a
    // deadline), then a short settle window shows no second copy.
    let is_point = |m: &mqtt::Received| m.topic.starts_with("telemetry/");
    probe.until(20, 60, is_point).await;
    let late = probe.drain(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        late.iter().filter(|m| is_point(m)).count(),
        0,
        "each point bridged by one instance, not twice"
    );

    // A command published on MQTT reaches each device, wherever it is.
    for (d, ws) in devices.iter_mut().enumerate() {
        let cmd = json!({"cmd": format!("m-{d}"), "name": "ping"});
        probe
            .publish_json(&format!("devices/dev-{d}/commands"), cmd.clone())
            .await;
        assert_eq!(next_json(ws).await, cmd);
        send_json(ws, json!({"cmd_result": format!("m-{d}"), "ok": true})).await;
    }
    let mut results = HashSet::new();
    while results.len() < DEVICES {
        let m = probe.next(10).await;
        if m.topic.ends_with("/commands/result") {
            results.insert(m.json()["cmd"].as_str().unwrap().to_string());
        }
    }

    // The HTTP API of instance A reaches devices held by either instance
    // (those on B through the broker), and the answer comes back to A.
    let http = services::http();
    for (d, ws) in devices.iter_mut().enumerate() {
        let url = a.http_url(&format!("/v1/devices/dev-{d}/commands?wait=10"));
        let post = http
            .post(url)
            .bearer_auth("op")
            .json(&json!({"cmd": format!("h-{d}"), "name": "reboot"}))
            .send();
        let device = async {
            let cmd = next_json(ws).await;
            assert_eq!(cmd, json!({"cmd": format!("h-{d}"), "name": "reboot"}));
            send_json(ws, json!({"cmd_result": cmd["cmd"], "ok": true})).await;
        };
        let (r, ()) = tokio::join!(post, device);
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["status"],
            json!("done")
        );
    }

    // nginx logged which instance served each session: both did.
    drop(devices);
    let upstreams = eventually(10, "six sessions in the access log", || async {
        let log = nginx.access_log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("GET /v1/devices/"))
            .collect();
        (lines.len() == DEVICES).then(|| {
            lines
                .iter()
                .filter_map(|l| {
                    l.split("upstream=")
                        .nth(1)?
                        .split(' ')
                        .next()
                        .map(str::to_string)
                })
                .collect::<HashSet<_>>()
        })
    })
    .await;
    let expected: HashSet<String> = [a.addr.to_string(), b.addr.to_string()].into();
    assert_eq!(upstreams, expected, "sessions spread over both instances");
    a.stop().await;
    b.stop().await;
}
