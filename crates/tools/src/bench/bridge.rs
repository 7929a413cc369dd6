//! Scenario `bridge`: what the MQTT bridge costs ingest, and how fast it
//! carries points into a real mosquitto.
//!
//! The same load (single-point JSON messages, acked, `--sink blackhole`) is
//! run three times against a fresh `wsingest serve`: without the bridge, with
//! the bridge at QoS 0 and at QoS 1. The bridge never slows ingest by design
//! (its queue drops instead), so the figures to read are the ingest rate with
//! and without it, the points the broker took per second (from `/v1/mqtt`,
//! counted until the queue is empty) and how many the bridge had to drop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;

use super::load::{self, LoadSpec};
use super::procs;
use super::{BenchArgs, BenchError, Report};

fn point(seq: u64) -> Message {
    Message::text(format!(
        r#"{{"seq":{seq},"measurement":"bench","fields":{{"v":{seq}.5}}}}"#
    ))
}

struct Run {
    ingest_per_sec: f64,
    server_cpu: f64,
    client_cpu: f64,
    broker_cpu: f64,
    published: u64,
    dropped: u64,
    bridge_per_sec: f64,
}

async fn one_run(
    dir: &std::path::Path,
    broker: &procs::Proc,
    mqtt: Option<(u16, u8)>,
    devices: usize,
    per_device: u64,
) -> Result<Run, BenchError> {
    let mut config = String::from("[influx]\nbatch_size = 1000\nflush_interval_ms = 5\n");
    if let Some((port, qos)) = mqtt {
        config.push_str(&format!(
            "\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nqos = {qos}\n"
        ));
    }
    let args: Vec<String> = ["--sink", "blackhole", "--allow-anonymous"]
        .into_iter()
        .map(String::from)
        .collect();
    let (server, port) = procs::wsingest_with_config(dir, &config, &args).await?;
    let http = reqwest::Client::new();
    let stats_url = format!("http://127.0.0.1:{port}/v1/mqtt");
    let stats = || async {
        let body = http.get(&stats_url).send().await?.bytes().await?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|e| BenchError::Http(e.to_string()))
    };
    if mqtt.is_some() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats().await?["connected"] != serde_json::json!(true) {
            if Instant::now() > deadline {
                return Err(BenchError::Start(
                    "the bridge did not connect to mosquitto".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let cpu0 = (server.cpu_secs(), procs::self_cpu_secs(), broker.cpu_secs());
    let started = Instant::now();
    let r = load::run(LoadSpec {
        url: format!("ws://127.0.0.1:{port}"),
        devices,
        messages_per_device: per_device,
        window: 256,
        rate_per_device: None,
        make: Arc::new(|_, seq| point(seq)),
        timeout: Duration::from_secs(300),
    })
    .await?;
    let (mut published, mut dropped, mut bridge_secs) = (0, 0, 0.0);
    if mqtt.is_some() {
        // The bridge may still be draining its queue (and awaiting PUBACKs)
        // when the acks are in: wait until every point is accounted for.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = stats().await?;
            published = v["published"].as_u64().unwrap_or(0);
            dropped = v["dropped"].as_u64().unwrap_or(0);
            bridge_secs = started.elapsed().as_secs_f64();
            if published + dropped >= devices as u64 * per_device {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("wsingest.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                return Err(BenchError::Load(format!(
                    "the bridge accounted for {published} published + {dropped} dropped points only \
                     (of {}); bridge stats: {v}; server log (last lines, newest first):\n{}",
                    devices as u64 * per_device,
                    tail.join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let server_cpu = server.cpu_secs() - cpu0.0;
    Ok(Run {
        ingest_per_sec: r.msgs_per_sec(),
        server_cpu,
        client_cpu: procs::self_cpu_secs() - cpu0.1,
        broker_cpu: broker.cpu_secs() - cpu0.2,
        published,
        dropped,
        bridge_per_sec: published as f64 / bridge_secs.max(1e-9),
    })
}

pub async fn bridge(args: &BenchArgs) -> Result<Report, BenchError> {
    let (devices, per_device) = if args.smoke { (4, 500) } else { (50, 4_000) };
    let total = devices as u64 * per_device;
    let dir = std::env::temp_dir().join(format!("wsingest-bench-{}-bridge", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = async {
        let (broker, broker_port) = procs::mosquitto(&dir).await?;
        let base = one_run(&dir, &broker, None, devices, per_device).await?;
        let q0 = one_run(&dir, &broker, Some((broker_port, 0)), devices, per_device).await?;
        let q1 = one_run(&dir, &broker, Some((broker_port, 1)), devices, per_device).await?;
        Ok::<_, BenchError>((base, q0, q1))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let (base, q0, q1) = result?;
    let mut rep = Report::new(
        "bridge",
        "single-point JSON messages into blackhole, without and with the MQTT bridge to mosquitto",
        "the bridge costs ingest < 30% of its rate",
    );
    rep.add("messages per run", total as f64, "");
    rep.add(
        "ingest msg/s without bridge (reference)",
        base.ingest_per_sec,
        "msg/s",
    );
    for (name, r) in [("QoS 0", &q0), ("QoS 1", &q1)] {
        rep.add(
            &format!("ingest msg/s with bridge {name}"),
            r.ingest_per_sec,
            "msg/s",
        );
        rep.add(
            &format!("bridge {name}: points into mosquitto per s"),
            r.bridge_per_sec,
            "msg/s",
        );
        rep.add(
            &format!("bridge {name}: published"),
            r.published as f64,
            "points",
        );
        rep.add(
            &format!("bridge {name}: dropped (queue full)"),
            r.dropped as f64,
            "points",
        );
        rep.add(
            &format!("server CPU per million msgs, bridge {name}"),
            r.server_cpu / total as f64 * 1e6,
            "s",
        );
        rep.add(
            &format!("load client CPU per million msgs, bridge {name}"),
            r.client_cpu / total as f64 * 1e6,
            "s",
        );
        rep.add(
            &format!("mosquitto CPU per million points published, bridge {name}"),
            r.broker_cpu / r.published.max(1) as f64 * 1e6,
            "s",
        );
    }
    rep.add(
        "server CPU per million msgs, no bridge",
        base.server_cpu / total as f64 * 1e6,
        "s",
    );
    rep.add(
        "load client CPU per million msgs, no bridge",
        base.client_cpu / total as f64 * 1e6,
        "s",
    );
    rep.summarize(
        &[
            "ingest msg/s with bridge QoS 0",
            "ingest msg/s with bridge QoS 1",
        ],
        Some("ingest msg/s without bridge (reference)"),
    );
    let ratio = q0.ingest_per_sec / base.ingest_per_sec;
    rep.ratio = Some(ratio);
    rep.goal_met = Some(ratio >= 0.7);
    Ok(rep)
}
