//! End to end into influxd, acked, against influxd's own bulk write rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::load::{self, LoadSpec};
use crate::bench::procs;
use crate::bench::{BenchArgs, BenchError, Report};
use wsingest_proto::point::{FieldValue, Point};

use super::*;

/// The points of the influx scenario for one device: 100-point JSON batch
/// messages, and the same points as line protocol (as the server writes them).
pub(in crate::bench) fn influx_workload(
    devices: usize,
    per_device: u64,
) -> (Vec<Vec<Message>>, Vec<u8>) {
    let mut messages = Vec::with_capacity(devices);
    let mut lines = Vec::new();
    for d in 0..devices {
        let device = format!("bench-{d}");
        let mut list = Vec::with_capacity(per_device as usize);
        for seq in 0..per_device {
            let mut s = format!(
                r#"{{"seq":{seq},"measurement":"bench","tags":{{"site":"lab"}},"points":["#
            );
            for i in 0..100u64 {
                let ts = 1_700_000_000_000u64 + seq * 100 + i;
                let v = (seq * 100 + i) as f64 * 0.25;
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&format!(r#"{{"ts":{ts},"fields":{{"v":{v:?},"n":{i}}}}}"#));
                wsingest_proto::lineproto::encode_point(
                    &Point {
                        measurement: "bench".into(),
                        tags: vec![
                            ("device".into(), device.clone()),
                            ("site".into(), "lab".into()),
                        ],
                        fields: vec![
                            ("n".into(), FieldValue::UInt(i)),
                            ("v".into(), FieldValue::Float(v)),
                        ],
                        time_ns: ts as i64 * 1_000_000,
                        int_fields: false,
                    },
                    &mut lines,
                );
            }
            s.push_str("]}");
            list.push(Message::text(s));
        }
        messages.push(list);
    }
    (messages, lines)
}

pub(in crate::bench) async fn create_db(url: &str, db: &str) -> Result<(), BenchError> {
    let mut u = reqwest::Url::parse(&format!("{url}/query"))
        .map_err(|e| BenchError::Http(e.to_string()))?;
    u.query_pairs_mut()
        .append_pair("q", &format!("CREATE DATABASE {db}"));
    reqwest::Client::new()
        .post(u)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// influxd's own bulk rate: pre-encoded line protocol in 5000-point batches
/// over `concurrency` connections. Points per second.
pub(in crate::bench) async fn influx_bulk_rate(
    url: &str,
    db: &str,
    lines: &[u8],
    concurrency: usize,
) -> Result<f64, BenchError> {
    let mut bodies = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, b) in lines.iter().enumerate() {
        if *b == b'\n' {
            count += 1;
            if count == 5000 {
                bodies.push(Bytes::copy_from_slice(&lines[start..=i]));
                start = i + 1;
                count = 0;
            }
        }
    }
    if start < lines.len() {
        bodies.push(Bytes::copy_from_slice(&lines[start..]));
    }
    let points = lines.iter().filter(|b| **b == b'\n').count();
    let client = reqwest::Client::new();
    let write = format!("{url}/write?db={db}&precision=n");
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, write, queue) = (client.clone(), write.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().expect("not poisoned").pop() else {
                    return Ok(());
                };
                client
                    .post(&write)
                    .body(body)
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Load(e.to_string()))?
            .map_err(|e: reqwest::Error| BenchError::Http(e.to_string()))?;
    }
    Ok(points as f64 / started.elapsed().as_secs_f64())
}

/// Scenario 3: end to end into influxd, acked, vs influxd's bulk write rate.
pub async fn influx(args: &BenchArgs) -> Result<Report, BenchError> {
    let (devices, per_device) = if args.smoke { (4, 20) } else { (10, 500) };
    let dir = TempDir::new("influx")?;
    let (influxd, url) = procs::influxd(&dir.0).await?;
    create_db(&url, "reference").await?;
    create_db(&url, "wsingest").await?;
    let (messages, lines) = influx_workload(devices, per_device);
    let total_points = devices as u64 * per_device * 100;
    let influxd_cpu0 = influxd.cpu_secs();
    let reference = influx_bulk_rate(&url, "reference", &lines, 4).await?;
    let influxd_bulk_cpu = influxd.cpu_secs() - influxd_cpu0;
    let (server, port) = procs::wsingest(&dir.0, &influx_args(&url, "wsingest")).await?;
    let messages = Arc::new(messages);
    let cpu0 = (
        server.cpu_secs(),
        influxd.cpu_secs(),
        procs::self_cpu_secs(),
    );
    let mut r = load::run(LoadSpec {
        url: format!("ws://127.0.0.1:{port}"),
        devices,
        messages_per_device: per_device,
        window: 200,
        rate_per_device: None,
        make: Arc::new(move |d, seq| messages[d][seq as usize].clone()),
        timeout: Duration::from_secs(600),
    })
    .await?;
    let server_cpu = server.cpu_secs() - cpu0.0;
    let influxd_cpu = influxd.cpu_secs() - cpu0.1;
    let client_cpu = procs::self_cpu_secs() - cpu0.2;
    let ours = r.acked as f64 * 100.0 / r.elapsed.as_secs_f64();
    let mut rep = Report::new(
        "influx",
        "100-point JSON batches end to end into a real influxd 1.x, acked",
        "≥ 0.9× influxd's own bulk write rate (same points, 5000-point batches, 4 connections)",
    );
    rep.add("points", total_points as f64, "");
    rep.add("wsingest points/s", ours, "points/s");
    rep.add("influxd bulk points/s (reference)", reference, "points/s");
    rep.add("ack latency p50", r.percentile_ms(0.5), "ms");
    rep.add("ack latency p99", r.percentile_ms(0.99), "ms");
    rep.add(
        "wsingest CPU per million points",
        server_cpu / total_points as f64 * 1e6,
        "s",
    );
    rep.add(
        "influxd CPU per million points",
        influxd_cpu / total_points as f64 * 1e6,
        "s",
    );
    rep.add(
        "influxd CPU per million points, bulk reference",
        influxd_bulk_cpu / total_points as f64 * 1e6,
        "s",
    );
    rep.add(
        "load client CPU per million points",
        client_cpu / total_points as f64 * 1e6,
        "s",
    );
    rep.add("nacked messages", r.nacked as f64, "");
    rep.summarize(
        &["wsingest points/s"],
        Some("influxd bulk points/s (reference)"),
    );
    rep.ratio = Some(ours / reference);
    rep.goal_met = Some(r.nacked == 0 && ours >= 0.9 * reference);
    Ok(rep)
}
