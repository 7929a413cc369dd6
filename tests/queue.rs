//! Queue mode against real processes: a 3-node NATS JetStream cluster, two
//! `wsingest serve --nats-url` gateways behind nginx, two `wsingest writer`
//! processes and influxd. The rule: a point acked to its device is in
//! InfluxDB in the end, exactly once, whatever fails in between (the stream
//! leader, a gateway, a writer, InfluxDB itself).

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use wsingest_harness::process::{WsingestProcess, wsingest_bin};
use wsingest_harness::*;
use wsingest_server::config::Config;
use wsingest_tools::simulate::Fleet;

#[path = "common/meters.rs"]
mod meters;
use meters::acked;

/// Wait until 200 more messages are acked: the fleet makes progress.
async fn more_acks(fleet: &Fleet, what: &str) {
    let from = acked(fleet);
    eventually(40, what, || async {
        (acked(fleet) > from + 200).then_some(())
    })
    .await
}

/// A gateway's (and writer's) config for `cluster`, quick to notice faults.
fn queue_config(influx: &Influxd, db: &str, cluster: &NatsCluster, replicas: usize) -> Config {
    let mut c = test_config(&influx.url, db);
    c.queue.nats_url = cluster.nodes.iter().map(NatsNode::url).collect();
    c.queue.replicas = replicas;
    c.queue.publish_timeout_ms = 10_000;
    c.queue.ack_wait_secs = 15;
    c.queue.nak_delay_ms = 200;
    c.influx.batch_size = 500;
    c.influx.timeout_ms = 3_000;
    c.influx.retry_max_ms = 500;
    c.influx.retry_max_elapsed_ms = 2_000;
    c.spool.enabled = false;
    c
}

/// Start the NATS cluster, or fail with how to install nats-server.
async fn nats(dir: &Path, n: usize) -> NatsCluster {
    NatsCluster::start(dir, n).await.unwrap_or_else(|e| {
        panic!("{e}\n(queue mode's tests need nats-server: apt-get install nats-server, or scripts/install.sh)")
    })
}

/// `wsingest writer --config <file>`; returns once it consumes.
async fn start_writer(config: &Config, dir: &Path, name: &str) -> Service {
    start_writer_with(config, dir, name, &[]).await
}

/// [`start_writer`] with more arguments.
async fn start_writer_with(config: &Config, dir: &Path, name: &str, args: &[&str]) -> Service {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    let mut cmd = std::process::Command::new(wsingest_bin());
    cmd.arg("writer")
        .arg("--config")
        .arg(&path)
        .args(args)
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .current_dir(dir);
    let mut svc = Service::spawn(name, &mut cmd, &dir.join(format!("{name}.log"))).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !svc.log().contains("writer: JetStream to InfluxDB") {
        assert!(
            svc.try_exit().is_none() && tokio::time::Instant::now() < deadline,
            "{name} did not start:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc
}

/// `wsingest serve ARGS --listen 127.0.0.1:PORT --config <dir>/<name>.toml`,
/// not waited for; the process and its port.
fn spawn_serve(config: &Config, dir: &Path, name: &str, args: &[&str]) -> (Service, u16) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    let port = free_port();
    let mut cmd = std::process::Command::new(wsingest_bin());
    cmd.arg("serve")
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .current_dir(dir);
    let log = dir.join(format!("{name}.log"));
    (Service::spawn(name, &mut cmd, &log).unwrap(), port)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child we started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

/// The issue's scenario. During a fleet run through nginx: the stream's
/// leader node is killed (-9), then a gateway (its devices reconnect
/// through nginx to the other and resend), then a writer, then influxd is
/// frozen (SIGSTOP) for 20 s while devices keep getting acks from
/// JetStream. Afterwards InfluxDB holds, per device, exactly the points the
/// device got acks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_point_lands_once_through_leader_gateway_writer_and_influxd_faults() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = nats(dir.path(), 3).await;
    let influx = Influxd::start().await;
    influx.create_db("q").await;
    let config = queue_config(&influx, "q", &cluster, 3);
    let mut a = WsingestProcess::start(config.clone(), dir.path()).await;
    let b = WsingestProcess::start(config.clone(), dir.path()).await;
    let mut w1 = start_writer(&config, dir.path(), "writer-1").await;
    let w2 = start_writer(&config, dir.path(), "writer-2").await;
    let port = free_port();
    let _nginx = Nginx::start(
        &Nginx::shipped_config(port, a.addr.port(), b.addr.port()),
        port,
    )
    .await;

    let fleet = meters::start(port, 10.0, 45, 19).await;
    more_acks(&fleet, "acks through both gateways").await;

    let leader = eventually(10, "the stream's leader", || {
        cluster.stream_leader("wsingest")
    })
    .await;
    cluster.kill(leader);
    more_acks(&fleet, "acks after the stream leader's kill -9").await;

    a.kill9();
    more_acks(&fleet, "acks after a gateway's kill -9").await;

    w1.kill();
    more_acks(&fleet, "acks after a writer's kill -9").await;

    let influx_pid = influx.pid().expect("influxd runs");
    signal(influx_pid, libc::SIGSTOP);
    let frozen = tokio::time::Instant::now();
    more_acks(
        &fleet,
        "acks while influxd is frozen (JetStream holds the points)",
    )
    .await;
    tokio::time::sleep_until(frozen + Duration::from_secs(20)).await;
    signal(influx_pid, libc::SIGCONT);

    let report = meters::finish(fleet).await;
    let t = &report.totals;
    assert_eq!(t.messages_unacked, 0, "{}", report.table());
    assert!(
        t.messages_resent > 0,
        "the gateway's kill left messages to resend\n{}",
        report.table()
    );
    let acked_points: std::collections::BTreeMap<String, u64> = report
        .per_device
        .iter()
        .map(|d| (d.id.clone(), d.counters.points_acked))
        .collect();
    assert_eq!(acked_points.len(), 20);
    eventually(
        90,
        "InfluxDB holding exactly the acked points of each device",
        || async {
            (influx.count_by("q", "meter", "power_w", "device").await == acked_points).then_some(())
        },
    )
    .await;
    assert!(
        w2.log().contains("writer: JetStream to InfluxDB"),
        "{}",
        w2.log()
    );
    eprintln!(
        "queue fault run: {} messages acked, {} resent, {:.0} s",
        t.messages_acked,
        t.messages_resent,
        started.elapsed().as_secs_f64()
    );
    let mut b = b;
    let _ = b.terminate();
}

/// NATS unreachable: a message gets `storage_unavailable` once the publish
/// budget is spent, `/readyz` is 503 and says why; once NATS is back, the
/// resend is acked and `/readyz` is 200 again. The same message sent again
/// (a resend after a lost ack) is acked and stored once: the stream drops
/// the copy by its `Nats-Msg-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nats_nacks_storage_unavailable_and_resends_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = nats(dir.path(), 1).await;
    let influx = Influxd::start().await;
    influx.create_db("u").await;
    let mut config = queue_config(&influx, "u", &cluster, 1);
    config.queue.publish_timeout_ms = 1_000;
    // Only the test's messages in the stream.
    config.observe.stats_interval_ms = 0;
    let gw = WsingestProcess::start(config.clone(), dir.path()).await;
    let _writer = start_writer(&config, dir.path(), "writer").await;
    let http = services::http();
    let post = |body: serde_json::Value| {
        let http = http.clone();
        let url = gw.http_url("/v1/devices/dev.1/points");
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let readyz = || async {
        let r = http.get(gw.http_url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let msg = |seq: u64| json!({"seq": seq, "ts": 1764600000000u64 + seq, "fields": {"n": seq}});
    assert_eq!(post(msg(1)).await["ack"], json!(1));
    assert_eq!(post(msg(1)).await["ack"], json!(1), "a resend is acked");
    assert_eq!(readyz().await.0, 200);

    cluster.kill(0);
    let (status, body) = eventually(10, "/readyz 503", || async {
        let r = readyz().await;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert!(body.contains("NATS"), "{body}");
    let answer = post(msg(2)).await;
    assert_eq!(answer["nack"], json!(2), "{answer}");
    assert_eq!(answer["error"], json!("storage_unavailable"), "{answer}");
    assert_eq!(status, 503);

    cluster.restart(0).await.unwrap();
    eventually(20, "/readyz 200 again", || async {
        (readyz().await.0 == 200).then_some(())
    })
    .await;
    let again = eventually(20, "the resend acked", || async {
        let a = post(msg(2)).await;
        (a["ack"] == json!(2)).then_some(a)
    })
    .await;
    assert_eq!(again["ack"], json!(2));
    eventually(30, "both points in InfluxDB, once each", || async {
        (influx.count("u", "telemetry", "n").await == 2).then_some(())
    })
    .await;
    // The stream stored two messages: the resends (seq 1 after its ack,
    // seq 2's publishes retried during the outage) were dropped as copies.
    assert_eq!(stream_last_seq(&cluster, "wsingest").await, 2);
    let mut gw = gw;
    let _ = gw.terminate();
}

/// The last sequence number stream `name` assigned, from a node's `/jsz`.
async fn stream_last_seq(cluster: &NatsCluster, name: &str) -> u64 {
    stream_state(cluster, name, "last_seq").await
}

/// Messages stream `name` holds (a work queue: not yet acked by a writer).
async fn stream_messages(cluster: &NatsCluster, name: &str) -> u64 {
    stream_state(cluster, name, "messages").await
}

/// A number of stream `name`'s `state` in a node's `/jsz`.
async fn stream_state(cluster: &NatsCluster, name: &str, key: &str) -> u64 {
    let url = format!(
        "http://127.0.0.1:{}/jsz?streams=true",
        cluster.nodes[0].http_port
    );
    let jsz: serde_json::Value = services::http()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
        .find(|s| s["name"] == json!(name))
        .and_then(|s| s["state"][key].as_u64())
        .unwrap_or_else(|| panic!("stream {name} in {jsz}"))
}

/// `wsingest bench queue --smoke` completes and reports both modes (its
/// numbers mean nothing; docs/scaling.md has a full run's).
#[test]
fn bench_queue_smoke_reports_both_modes() {
    let out = output_within(
        "wsingest bench queue --smoke",
        std::process::Command::new(env!("CARGO_BIN_EXE_wsingest"))
            .args(["bench", "queue", "--smoke", "--json"])
            .env("RUST_BACKTRACE", "0"),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let figures = reports[0]["figures"].as_array().unwrap();
    let value = |name: &str| {
        figures
            .iter()
            .find(|f| f["name"] == json!(name))
            .and_then(|f| f["value"].as_f64())
            .unwrap_or_else(|| panic!("no figure {name:?} in {reports}"))
    };
    for mode in ["direct", "queue"] {
        assert!(value(&format!("{mode}: end-to-end points/s (all in InfluxDB)")) > 0.0);
        assert_eq!(value(&format!("{mode}: nacked messages")), 0.0);
    }
    for process in [
        "wsingest gateway",
        "wsingest writer",
        "nats-server 1",
        "influxd",
        "load client",
    ] {
        assert!(value(&format!("queue: CPU per million points, {process}")) >= 0.0);
    }
}

/// The MQTT bridge and the per-device stats run on the gateway: a point is
/// bridged once JetStream acked it, and the `wsingest_device` points reach
/// InfluxDB through the stream and a writer (`serve --writer`: both in one
/// process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_and_device_stats_work_in_queue_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats(dir.path(), 1).await;
    let influx = Influxd::start().await;
    influx.create_db("b").await;
    let broker = Mosquitto::start().await;
    let mut probe = MqttProbe::connect(broker.port, &["telemetry/#"]).await;
    let mut config = queue_config(&influx, "b", &cluster, 1);
    config.mqtt.url = Some(broker.url());
    config.observe.stats_interval_ms = 200;
    config.observe.instance = "gw-1".into();
    let (mut both, port) = spawn_serve(&config, dir.path(), "both", &["--writer"]);
    wait_ready(
        &mut both,
        &Probe::http(port, "/readyz"),
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eventually(20, "the bridge connected", || async {
        let v: serde_json::Value = services::http()
            .get(format!("http://127.0.0.1:{port}/v1/mqtt"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["connected"] == json!(true)).then_some(())
    })
    .await;
    let mut ws = connect(&format!("ws://127.0.0.1:{port}/v1/devices/dev-q"), None).await;
    send_json(
        &mut ws,
        json!({"seq": 1, "ts": 1764600000000u64, "measurement": "weather", "fields": {"t": 1.5}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    let m = probe.next(10).await;
    assert_eq!(m.topic, "telemetry/dev-q/weather");
    assert_eq!(m.json()["fields"], json!({"t": 1.5}));
    // Polled by hand rather than with `eventually` so a failure says what
    // InfluxDB held and what the process logged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let points = influx.count("b", "weather", "t").await;
        let stats = influx
            .rows(
                "b",
                "SELECT sum(points) FROM wsingest_device WHERE device = 'dev-q' AND instance = 'gw-1'",
            )
            .await;
        let summed = stats.first().and_then(|r| r[1].as_f64());
        if points == 1 && summed == Some(1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 20 s InfluxDB holds {points} weather points and dev-q's stats sum to \
             {summed:?} (want 1 and 1); the process logged:\n{}",
            both.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        both.log().contains("writer: JetStream to InfluxDB"),
        "{}",
        both.log()
    );
}

/// What InfluxDB refuses (400: a field type conflict) goes to the writer's
/// dead-letter file and is acked to JetStream, so it does not hold up the
/// stream; the rest of the batch is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_points_are_dead_lettered_and_acked_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats(dir.path(), 1).await;
    let influx = Influxd::start().await;
    influx.create_db("r").await;
    let mut config = queue_config(&influx, "r", &cluster, 1);
    config.observe.stats_interval_ms = 0;
    let gw = WsingestProcess::start(config.clone(), dir.path()).await;
    let dead = dir.path().join("dead.jsonl");
    config.influx.dead_letter_path = Some(dead.clone());
    let _writer = start_writer(&config, dir.path(), "writer").await;
    let mut ws = connect(&gw.ws_url("/v1/devices/dev-r"), None).await;
    // `t` a float, then a string in the same series: InfluxDB refuses the second.
    for (seq, t) in [(1u64, json!(1.5)), (2, json!("warm")), (3, json!(2.5))] {
        send_json(
            &mut ws,
            json!({"seq": seq, "ts": 1764600000000u64 + seq, "measurement": "m", "fields": {"t": t}}),
        )
        .await;
        // Acked: JetStream has it (what InfluxDB makes of it comes later).
        assert_eq!(next_json(&mut ws).await, json!({"ack": seq}));
        if seq == 1 {
            // Writes run concurrently (group commit): the float must be
            // stored first, or the string could win the field's type and
            // the floats would be the refused points.
            eventually(30, "the first float written", || async {
                (influx.count("r", "m", "t").await == 1).then_some(())
            })
            .await;
        }
    }
    eventually(
        30,
        "the refused point dead-lettered, the others written",
        || async {
            let letters = std::fs::read_to_string(&dead).unwrap_or_default();
            (letters.contains("warm") && influx.count("r", "m", "t").await == 2).then_some(())
        },
    )
    .await;
    eventually(20, "the stream empty: every message acked", || async {
        (stream_messages(&cluster, "wsingest").await == 0).then_some(())
    })
    .await;
    let mut gw = gw;
    let _ = gw.terminate();
}

/// `wsingest writer --listen`: `/readyz` 200 while InfluxDB takes writes and
/// 503 with the reason while it is frozen (SIGSTOP), 200 again after, 503
/// once NATS is gone; `/metrics` counts the messages fetched and acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_serves_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = nats(dir.path(), 1).await;
    let influx = Influxd::start().await;
    influx.create_db("h").await;
    let mut config = queue_config(&influx, "h", &cluster, 1);
    config.observe.stats_interval_ms = 0;
    config.queue.writer_info_interval_ms = 200;
    config.influx.timeout_ms = 1_000;
    let gw = WsingestProcess::start(config.clone(), dir.path()).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let _writer = start_writer_with(&config, dir.path(), "writer", &["--listen", &listen]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("http://{listen}{path}"));
        async move {
            let r = http.get(url).send().await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        }
    };
    assert_eq!(get("/healthz").await.unwrap().0, 200);
    eventually(10, "/readyz 200", || async {
        get("/readyz").await.filter(|(s, _)| *s == 200)
    })
    .await;

    let mut ws = connect(&gw.ws_url("/v1/devices/dev-h"), None).await;
    for seq in 1..=5u64 {
        send_json(
            &mut ws,
            json!({"seq": seq, "ts": 1764600000000u64 + seq, "measurement": "m", "fields": {"t": 1.5}}),
        )
        .await;
        assert_eq!(next_json(&mut ws).await, json!({"ack": seq}));
    }
    let metric = |text: &str, name: &str| wsingest_server::metrics::find_sample(text, name);
    eventually(15, "5 messages fetched and acked on /metrics", || async {
        let (_, text) = get("/metrics").await?;
        let acked = metric(&text, "wsingest_writer_acked_total")?;
        let fetched = metric(&text, "wsingest_writer_fetched_total")?;
        let written = metric(&text, "wsingest_points_written_total")?;
        let pending = metric(&text, "wsingest_writer_consumer_pending")?;
        (acked >= 5.0 && fetched >= 5.0 && written >= 5.0 && pending == 0.0).then_some(())
    })
    .await;

    let pid = influx.pid().expect("influxd runs");
    signal(pid, libc::SIGSTOP);
    let (_, reason) = eventually(15, "/readyz 503 with influxd frozen", || async {
        get("/readyz").await.filter(|(s, _)| *s == 503)
    })
    .await;
    signal(pid, libc::SIGCONT);
    assert!(
        reason.contains("InfluxDB unavailable") && reason.contains("wait in the JetStream stream"),
        "{reason}"
    );
    eventually(15, "/readyz 200 once influxd runs again", || async {
        get("/readyz").await.filter(|(s, _)| *s == 200)
    })
    .await;

    // NATS gone: the writer cannot fetch.
    let mut gw = gw;
    let _ = gw.terminate();
    cluster.kill(0);
    let (_, reason) = eventually(10, "/readyz 503 with NATS down", || async {
        get("/readyz").await.filter(|(s, _)| *s == 503)
    })
    .await;
    assert!(
        reason.contains("NATS") || reason.contains("JetStream"),
        "{reason}"
    );
}

/// `wsingest config check` in queue mode: an unreachable InfluxDB is a
/// warning for the writers, not the direct mode's "serve would spool".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_in_queue_mode_says_influxdb_concerns_the_writers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats(dir.path(), 1).await;
    let out = std::process::Command::new(wsingest_bin())
        .args(["config", "check", "--nats-url"])
        .arg(cluster.nodes[0].url())
        .args(["--influx-url", &format!("http://127.0.0.1:{}", free_port())])
        .args(["--influx-db", "x"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning:") && err.contains("only writers") && !err.contains("spool"),
        "{err}"
    );
}

/// A gateway started while its NATS cluster has no quorum yet (a boot, a
/// compose file starting everything at once) waits for JetStream, logging
/// each attempt, instead of exiting; once the nodes are back it creates its
/// stream and buckets, reports ready and acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_waits_for_a_cluster_without_quorum_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = nats(dir.path(), 3).await;
    cluster.kill(1);
    cluster.kill(2);
    let mut config = test_config("http://127.0.0.1:9", "unused");
    config.queue.nats_url = cluster.nodes.iter().map(NatsNode::url).collect();
    config.queue.startup_timeout_ms = 90_000;
    config.spool.enabled = false;
    config.observe.stats_interval_ms = 0;
    let (mut gw, port) = spawn_serve(&config, dir.path(), "gw", &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !gw.log().contains("JetStream not ready yet") {
        assert!(
            gw.try_exit().is_none() && tokio::time::Instant::now() < deadline,
            "the gateway should wait for JetStream, logging its attempts; it logged:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.try_exit().is_none(), "{}", gw.log());
    cluster.restart(1).await.unwrap();
    cluster.restart(2).await.unwrap();
    wait_ready(
        &mut gw,
        &Probe::http(port, "/readyz"),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut ws = connect(&format!("ws://127.0.0.1:{port}/v1/devices/late"), None).await;
    send_json(
        &mut ws,
        json!({"seq": 1, "measurement": "m", "fields": {"v": 1.0}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    assert_eq!(stream_messages(&cluster, "wsingest").await, 1);
}
