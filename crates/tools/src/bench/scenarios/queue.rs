//! Queue mode beside direct mode, in one run on the same influxd: the influx
//! scenario's 100-point batches through `wsingest serve` straight into
//! influxd, then through a gateway → a 3-node JetStream cluster (R3, file
//! storage) → `wsingest writer` → influxd. For each: the ack rate the devices
//! see, the end-to-end rate (until every point is queryable in InfluxDB),
//! and the CPU per million points of every process (wsingest, each
//! nats-server, influxd, the load client). Then the same with single-point
//! messages, where NATS's cost is per message.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;

use crate::bench::load::{self, LoadResult, LoadSpec};
use crate::bench::procs::{self, Proc, self_cpu_secs};
use crate::bench::{BenchArgs, BenchError, Report};
use wsingest_harness::NatsCluster;

use super::*;

/// CPU seconds of each process, read before and after a run.
struct Cpu(Vec<(String, f64)>);

impl Cpu {
    fn read(procs: &[(&str, &Proc)]) -> Cpu {
        let mut v: Vec<(String, f64)> = procs
            .iter()
            .map(|(n, p)| (n.to_string(), p.cpu_secs()))
            .collect();
        v.push(("load client".into(), self_cpu_secs()));
        Cpu(v)
    }

    fn since(&self, before: &Cpu) -> Vec<(String, f64)> {
        self.0
            .iter()
            .zip(&before.0)
            .map(|((n, a), (_, b))| (n.clone(), a - b))
            .collect()
    }
}

/// Points in `db` (`bench` measurement, field `v`).
async fn stored(url: &str, db: &str) -> Result<u64, BenchError> {
    let mut u = reqwest::Url::parse(&format!("{url}/query"))
        .map_err(|e| BenchError::Http(e.to_string()))?;
    u.query_pairs_mut()
        .append_pair("db", db)
        .append_pair("q", "SELECT count(v) FROM bench");
    let body = reqwest::Client::new().get(u).send().await?.text().await?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| BenchError::Http(format!("{e}: {body}")))?;
    Ok(v["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0))
}

/// Wait until `db` holds `points`; returns when that was.
async fn until_stored(url: &str, db: &str, points: u64) -> Result<Instant, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if stored(url, db).await? >= points {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Load(format!(
                "{db}: {} of {points} points in InfluxDB after 10 minutes",
                stored(url, db).await?
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drive(
    port: u16,
    devices: usize,
    per_device: u64,
    messages: &Arc<Vec<Vec<Message>>>,
) -> Result<LoadResult, BenchError> {
    let messages = messages.clone();
    load::run(LoadSpec {
        url: format!("ws://127.0.0.1:{port}"),
        devices,
        messages_per_device: per_device,
        window: 200,
        rate_per_device: None,
        make: Arc::new(move |d, seq| messages[d][seq as usize].clone()),
        timeout: Duration::from_secs(600),
    })
    .await
}

/// Single-point JSON messages with `ts` (distinct per device and seq).
fn single_points(devices: usize, per_device: u64) -> Vec<Vec<Message>> {
    (0..devices)
        .map(|_| {
            (0..per_device)
                .map(|seq| {
                    let ts = 1_800_000_000_000u64 + seq;
                    Message::text(format!(
                        r#"{{"seq":{seq},"ts":{ts},"measurement":"bench","fields":{{"v":{seq}.5}}}}"#
                    ))
                })
                .collect()
        })
        .collect()
}

/// `wsingest writer` with `config`; returns once it consumes.
async fn writer(dir: &Path, config: &Path) -> Result<Proc, BenchError> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("writer")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .current_dir(dir);
    let mut p = Proc::spawn("wsingest writer", &mut cmd, &dir.join("writer.log"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.log().contains("writer: JetStream to InfluxDB") {
        if p.try_exit().is_some() || Instant::now() > deadline {
            return Err(BenchError::Start(format!(
                "wsingest writer did not start: {}",
                p.log_tail(20)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(p)
}

/// One mode's figures into `rep`.
fn add_mode(
    rep: &mut Report,
    mode: &str,
    points: u64,
    r: &mut LoadResult,
    end_to_end: Duration,
    cpu: &[(String, f64)],
) {
    rep.add(
        &format!("{mode}: acked points/s"),
        points as f64 / r.elapsed.as_secs_f64(),
        "points/s",
    );
    rep.add(
        &format!("{mode}: end-to-end points/s (all in InfluxDB)"),
        points as f64 / end_to_end.as_secs_f64(),
        "points/s",
    );
    rep.add(
        &format!("{mode}: ack latency p50"),
        r.percentile_ms(0.5),
        "ms",
    );
    rep.add(
        &format!("{mode}: ack latency p99"),
        r.percentile_ms(0.99),
        "ms",
    );
    let mut total = 0.0;
    for (name, secs) in cpu {
        total += secs;
        rep.add(
            &format!("{mode}: CPU per million points, {name}"),
            secs / points as f64 * 1e6,
            "s",
        );
    }
    rep.add(
        &format!("{mode}: CPU per million points, all processes"),
        total / points as f64 * 1e6,
        "s",
    );
    rep.add(&format!("{mode}: nacked messages"), r.nacked as f64, "");
}

/// The `queue` scenario (see the module doc).
pub async fn queue(args: &BenchArgs) -> Result<Report, BenchError> {
    // 2 M points: a few seconds per mode, long enough for the writer's
    // steady state to show in the end-to-end rate.
    let (devices, per_device) = if args.smoke { (4, 20) } else { (20, 1000) };
    let points = devices as u64 * per_device * 100;
    // Then single-point messages, the usual device message: what NATS costs
    // per message rather than per point.
    let single_per_device = if args.smoke { 20 } else { 5000 };
    let singles_total = devices as u64 * single_per_device;
    let dir = TempDir::new("queue")?;
    let (influxd, url) = procs::influxd(&dir.0).await?;
    create_db(&url, "direct").await?;
    create_db(&url, "queue").await?;
    let (messages, _lines) = influx_workload(devices, per_device);
    let messages = Arc::new(messages);
    let mut rep = Report::new(
        "queue",
        "100-point JSON batches: direct (serve → influxd) vs queue mode (gateway → JetStream R3 → writer → influxd), same run",
        "queue mode's end-to-end rate ≥ 0.5× direct mode's (it adds a replicated, fsynced log)",
    );

    // Direct mode.
    let (server, port) = procs::wsingest(&dir.0, &influx_args(&url, "direct")).await?;
    let before = Cpu::read(&[("wsingest serve", &server), ("influxd", &influxd)]);
    let started = Instant::now();
    let mut direct = drive(port, devices, per_device, &messages).await?;
    let direct_done = until_stored(&url, "direct", points).await? - started;
    let direct_cpu =
        Cpu::read(&[("wsingest serve", &server), ("influxd", &influxd)]).since(&before);
    add_mode(
        &mut rep,
        "direct",
        points,
        &mut direct,
        direct_done,
        &direct_cpu,
    );
    let singles = Arc::new(single_points(devices, single_per_device));
    let before = Cpu::read(&[("wsingest serve", &server), ("influxd", &influxd)]);
    let started = Instant::now();
    let mut r = drive(port, devices, single_per_device, &singles).await?;
    let done = until_stored(&url, "direct", points + singles_total).await? - started;
    let cpu = Cpu::read(&[("wsingest serve", &server), ("influxd", &influxd)]).since(&before);
    drop(server);
    add_mode(
        &mut rep,
        "direct, 1-point messages",
        singles_total,
        &mut r,
        done,
        &cpu,
    );

    // Queue mode.
    let nats_dir = dir.0.join("nats");
    let cluster = NatsCluster::start(&nats_dir, 3).await?;
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.url()))
        .collect();
    let queue_toml = format!("[queue]\nnats_url = [{}]\nreplicas = 3\n", urls.join(", "));
    let (gateway, port) =
        procs::wsingest_with_config(&dir.0, &queue_toml, &influx_args(&url, "queue")).await?;
    let writer_config = dir.0.join("bench-writer.toml");
    std::fs::write(
        &writer_config,
        format!(
            "{queue_toml}\n[influx]\nurl = {url:?}\ndb = \"queue\"\nbatch_size = 5000\nflush_interval_ms = 100\n"
        ),
    )?;
    let writer = writer(&dir.0, &writer_config).await?;
    let nats: Vec<&Proc> = (0..3).filter_map(|i| cluster.service(i)).collect();
    let names = ["nats-server 1", "nats-server 2", "nats-server 3"];
    let mut list: Vec<(&str, &Proc)> = vec![
        ("wsingest gateway", &gateway),
        ("wsingest writer", &writer),
        ("influxd", &influxd),
    ];
    list.extend(names.iter().copied().zip(nats.iter().copied()));
    let before = Cpu::read(&list);
    let started = Instant::now();
    let mut queued = drive(port, devices, per_device, &messages).await?;
    let queue_done = until_stored(&url, "queue", points).await? - started;
    let queue_cpu = Cpu::read(&list).since(&before);
    add_mode(
        &mut rep,
        "queue",
        points,
        &mut queued,
        queue_done,
        &queue_cpu,
    );
    let before = Cpu::read(&list);
    let started = Instant::now();
    let mut r = drive(port, devices, single_per_device, &singles).await?;
    let done = until_stored(&url, "queue", points + singles_total).await? - started;
    let cpu = Cpu::read(&list).since(&before);
    add_mode(
        &mut rep,
        "queue, 1-point messages",
        singles_total,
        &mut r,
        done,
        &cpu,
    );

    let direct_rate = points as f64 / direct_done.as_secs_f64();
    let queue_rate = points as f64 / queue_done.as_secs_f64();
    rep.add("points per mode", points as f64, "");
    rep.summarize(
        &["queue: end-to-end points/s (all in InfluxDB)"],
        Some("direct: end-to-end points/s (all in InfluxDB)"),
    );
    rep.ratio = Some(queue_rate / direct_rate);
    rep.goal_met =
        Some(direct.nacked == 0 && queued.nacked == 0 && queue_rate >= 0.5 * direct_rate);
    Ok(rep)
}
