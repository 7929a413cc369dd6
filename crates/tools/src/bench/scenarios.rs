//! The benchmark scenarios. Each starts what it measures (a `wsingest serve`
//! child, influxd, mosquitto) in a temp dir and stops it afterwards.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::load::{self, LoadSpec};
use super::procs;
use super::{BenchArgs, BenchError, Report};
use wsingest_proto::point::{FieldValue, Point};

/// A temp dir removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> Result<Self, BenchError> {
        let dir =
            std::env::temp_dir().join(format!("wsingest-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn blackhole_args(flush_ms: u64) -> Vec<String> {
    let flush = flush_ms.to_string();
    [
        "--sink",
        "blackhole",
        "--allow-anonymous",
        "--batch-size",
        "1000",
        "--flush-interval",
        &flush,
    ]
    .map(String::from)
    .to_vec()
}

fn json_point(seq: u64) -> Message {
    Message::text(format!(
        r#"{{"seq":{seq},"measurement":"bench","fields":{{"v":{seq}.5}}}}"#
    ))
}

/// Scenario 1: single-point JSON messages from many devices into blackhole,
/// vs mosquitto QoS 0 carrying as many messages of the same size.
pub async fn blackhole(args: &BenchArgs) -> Result<Report, BenchError> {
    let (devices, per_device) = if args.smoke { (4, 500) } else { (50, 10_000) };
    let total = devices as u64 * per_device;
    let dir = TempDir::new("blackhole")?;
    let (server, port) = procs::wsingest(&dir.0, &blackhole_args(5)).await?;
    let cpu0 = server.cpu_secs();
    let client0 = procs::self_cpu_secs();
    let mut r = load::run(LoadSpec {
        url: format!("ws://127.0.0.1:{port}"),
        devices,
        messages_per_device: per_device,
        window: 256,
        rate_per_device: None,
        make: Arc::new(|_, seq| json_point(seq)),
        timeout: Duration::from_secs(300),
    })
    .await?;
    let server_cpu = server.cpu_secs() - cpu0;
    let client_cpu = procs::self_cpu_secs() - client0;
    drop(server);
    let payload_len = json_point(per_device / 2).len();
    let reference = mosquitto_rate(&dir, total, payload_len).await?;
    let ours = r.msgs_per_sec();
    let mut rep = Report::new(
        "blackhole",
        "single-point JSON messages, server discards after decode (acked)",
        "≥ 1.5× mosquitto QoS 0 msg/s",
    );
    rep.add("devices", devices as f64, "connections");
    rep.add("messages", total as f64, "");
    rep.add("wsingest msg/s", ours, "msg/s");
    rep.add("mosquitto QoS 0 msg/s (reference)", reference, "msg/s");
    rep.add("ack latency p50", r.percentile_ms(0.5), "ms");
    rep.add("ack latency p99", r.percentile_ms(0.99), "ms");
    rep.add(
        "server CPU per million msgs",
        server_cpu / total as f64 * 1e6,
        "s",
    );
    rep.add(
        "client CPU per million msgs",
        client_cpu / total as f64 * 1e6,
        "s",
    );
    rep.summarize(
        &["wsingest msg/s"],
        Some("mosquitto QoS 0 msg/s (reference)"),
    );
    rep.ratio = Some(ours / reference);
    rep.goal_met = Some(ours >= 1.5 * reference);
    Ok(rep)
}

/// mosquitto's own clients: one `mosquitto_pub -l` publisher, one
/// `mosquitto_sub -C` subscriber, QoS 0; messages per second delivered.
async fn mosquitto_rate(
    dir: &TempDir,
    messages: u64,
    payload_len: usize,
) -> Result<f64, BenchError> {
    let (_broker, port) = procs::mosquitto(&dir.0).await?;
    let (pub_bin, sub_bin) = procs::mosquitto_clients()?;
    let port_s = port.to_string();
    let mut sub = Command::new(sub_bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-t",
            "bench",
            "-q",
            "0",
            "-C",
            &messages.to_string(),
            "-W",
            "300",
        ])
        .stdout(Stdio::null())
        .spawn()?;
    // The subscriber has no ready signal: give it time to subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let line = "x".repeat(payload_len.max(1));
    let mut input = String::with_capacity((line.len() + 1) * messages as usize);
    for _ in 0..messages {
        input.push_str(&line);
        input.push('\n');
    }
    let started = Instant::now();
    let mut publisher = Command::new(pub_bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-t",
            "bench",
            "-q",
            "0",
            "-l",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut stdin = publisher.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let status = tokio::task::spawn_blocking(move || sub.wait())
        .await
        .map_err(|e| BenchError::Load(e.to_string()))??;
    let elapsed = started.elapsed();
    let _ = writer.join();
    let _ = publisher.kill();
    let _ = publisher.wait();
    if !status.success() {
        return Err(BenchError::Load(format!(
            "mosquitto_sub did not receive {messages} messages in time ({status})"
        )));
    }
    Ok(messages as f64 / elapsed.as_secs_f64())
}

/// A CBOR batch message whose `seq` is patched in place: the points are
/// encoded once, so the load generator spends its CPU on sending.
fn cbor_batch_template(points: usize) -> (Vec<u8>, Vec<u8>) {
    use ciborium::Value;
    let list: Vec<Value> = (0..points)
        .map(|i| {
            Value::Map(vec![
                (
                    "ts".into(),
                    Value::Integer((1_700_000_000_000i64 + i as i64).into()),
                ),
                (
                    "fields".into(),
                    Value::Map(vec![
                        ("x".into(), Value::Float(0.5 + i as f64)),
                        ("y".into(), Value::Float(-1.25)),
                        ("z".into(), Value::Float(9.81)),
                    ]),
                ),
            ])
        })
        .collect();
    let mut head = vec![0xa3]; // map of 3: seq, measurement, points
    head.extend_from_slice(&[0x63, b's', b'e', b'q', 0x1b]); // "seq": u64 (8 bytes follow)
    let mut tail = Vec::new();
    ciborium::into_writer(&Value::Text("measurement".into()), &mut tail).expect("encodes");
    ciborium::into_writer(&Value::Text("vibration".into()), &mut tail).expect("encodes");
    ciborium::into_writer(&Value::Text("points".into()), &mut tail).expect("encodes");
    ciborium::into_writer(&Value::Array(list), &mut tail).expect("encodes");
    (head, tail)
}

fn cbor_message(head: &[u8], tail: &[u8], seq: u64) -> Message {
    let mut b = Vec::with_capacity(head.len() + 8 + tail.len());
    b.extend_from_slice(head);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(tail);
    Message::Binary(Bytes::from(b))
}

/// Scenario 2: 100-point CBOR batches into blackhole.
pub async fn batch_cbor(args: &BenchArgs) -> Result<Report, BenchError> {
    let (devices, per_device) = if args.smoke { (2, 50) } else { (8, 2_500) };
    let points = 100u64;
    let dir = TempDir::new("batch-cbor")?;
    let (server, port) = procs::wsingest(&dir.0, &blackhole_args(5)).await?;
    let (head, tail) = cbor_batch_template(points as usize);
    let (head, tail) = (Arc::new(head), Arc::new(tail));
    let cpu0 = server.cpu_secs();
    let mut r = load::run(LoadSpec {
        url: format!("ws://127.0.0.1:{port}"),
        devices,
        messages_per_device: per_device,
        window: 64,
        rate_per_device: None,
        make: Arc::new(move |_, seq| cbor_message(&head, &tail, seq)),
        timeout: Duration::from_secs(300),
    })
    .await?;
    let server_cpu = server.cpu_secs() - cpu0;
    let total_points = devices as u64 * per_device * points;
    let pps = r.acked as f64 * points as f64 / r.elapsed.as_secs_f64();
    let mut rep = Report::new(
        "batch-cbor",
        "100-point CBOR batches, server discards after decode",
        "≥ 2,000,000 points/s on 2 cores",
    );
    rep.add("points", total_points as f64, "");
    rep.add("points/s", pps, "points/s");
    rep.add("messages/s", r.msgs_per_sec(), "msg/s");
    rep.add("ack latency p99", r.percentile_ms(0.99), "ms");
    rep.add(
        "server CPU per million points",
        server_cpu / total_points as f64 * 1e6,
        "s",
    );
    rep.summarize(&["points/s", "server CPU per million points"], None);
    rep.goal_met = Some(pps >= 2_000_000.0);
    Ok(rep)
}

/// The points of the influx scenario for one device: 100-point JSON batch
/// messages, and the same points as line protocol (as the server writes them).
pub(super) fn influx_workload(devices: usize, per_device: u64) -> (Vec<Vec<Message>>, Vec<u8>) {
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

pub(super) async fn create_db(url: &str, db: &str) -> Result<(), BenchError> {
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
pub(super) async fn influx_bulk_rate(
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

fn influx_args(url: &str, db: &str) -> Vec<String> {
    [
        "--allow-anonymous",
        "--influx-url",
        url,
        "--influx-db",
        db,
        "--batch-size",
        "5000",
        "--flush-interval",
        "100",
    ]
    .map(String::from)
    .to_vec()
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
    let reference = influx_bulk_rate(&url, "reference", &lines, 4).await?;
    let (server, port) = procs::wsingest(&dir.0, &influx_args(&url, "wsingest")).await?;
    let messages = Arc::new(messages);
    let cpu0 = (server.cpu_secs(), influxd.cpu_secs());
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
    rep.add("nacked messages", r.nacked as f64, "");
    rep.summarize(
        &["wsingest points/s"],
        Some("influxd bulk points/s (reference)"),
    );
    rep.ratio = Some(ours / reference);
    rep.goal_met = Some(r.nacked == 0 && ours >= 0.9 * reference);
    Ok(rep)
}

/// Scenario 4: many mostly idle sessions.
pub async fn sessions(args: &BenchArgs) -> Result<Report, BenchError> {
    let n = args
        .sessions
        .unwrap_or(if args.smoke { 200 } else { 10_000 });
    let dir = TempDir::new("sessions")?;
    let (server, port) = procs::wsingest(&dir.0, &blackhole_args(1000)).await?;
    let rss0 = server.rss_kib();
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("open");
        tasks.push(tokio::spawn(async move {
            let r = open_idle_session(port, i).await;
            drop(permit);
            r
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for t in tasks {
        conns.push(t.await.map_err(|e| BenchError::Load(e.to_string()))??);
    }
    let open_secs = started.elapsed().as_secs_f64();
    // Mostly idle: one message each, spread over the hold time.
    let hold = if args.smoke {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    };
    let spacing = hold / n.max(1) as u32;
    for (i, ws) in conns.iter_mut().enumerate() {
        use futures_util::SinkExt;
        ws.send(json_point(i as u64)).await?;
        if !spacing.is_zero() && i % 100 == 0 {
            tokio::time::sleep(spacing * 100).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = server.rss_kib();
    let per_session = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    drop(conns);
    let mut rep = Report::new(
        "sessions",
        "mostly idle sessions held open",
        "100k sessions at ≤ 10 KiB RSS each",
    );
    rep.add("sessions", n as f64, "");
    rep.add("server RSS per session", per_session, "KiB");
    rep.add("server RSS total", rss1 as f64 / 1024.0, "MiB");
    rep.add("handshakes/s", n as f64 / open_secs, "/s");
    rep.summarize(
        &["sessions", "server RSS per session", "handshakes/s"],
        None,
    );
    rep.goal_met = Some(n >= 100_000 && per_session <= 10.0);
    Ok(rep)
}

type ClientWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One client session from source address 127.0.0.(2 + i / 25000), so that
/// 100k sessions do not run out of one address's ephemeral ports.
async fn open_idle_session(port: u16, i: usize) -> Result<ClientWs, BenchError> {
    let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i / 25_000) as u8);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((src, 0).into())?;
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let url = format!("ws://127.0.0.1:{port}/v1/devices/idle-{i}");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// Scenario 5: ack latency at 10/50/90 % of the influx scenario's rate.
pub async fn latency(args: &BenchArgs, max_rate: Option<f64>) -> Result<Report, BenchError> {
    let max_rate = match max_rate {
        Some(r) => r,
        None => influx(args)
            .await?
            .figures
            .iter()
            .find(|f| f.name == "wsingest points/s")
            .map(|f| f.value)
            .unwrap_or(10_000.0),
    };
    let flush_ms = 100.0;
    let dir = TempDir::new("latency")?;
    let (_influxd, url) = procs::influxd(&dir.0).await?;
    create_db(&url, "wsingest").await?;
    let (_server, port) = procs::wsingest(&dir.0, &influx_args(&url, "wsingest")).await?;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let devices = 10usize;
    let secs = if args.smoke { 1.0 } else { 10.0 };
    let mut rep = Report::new(
        "latency",
        "ack latency of 100-point messages at a share of the influx scenario's rate",
        "p99 ≤ flush interval (100 ms) + 20 ms at 50 %",
    );
    rep.add("max rate (from influx scenario)", max_rate, "points/s");
    let mut met = None;
    for share in [0.1, 0.5, 0.9] {
        let msgs_per_sec = share * max_rate / 100.0;
        let per_device_rate = msgs_per_sec / devices as f64;
        let per_device = ((per_device_rate * secs).ceil() as u64).max(2);
        let (messages, _) = influx_workload(devices, per_device);
        let messages = Arc::new(messages);
        let writes0 = write_stats(&metrics_url).await?;
        let mut r = load::run(LoadSpec {
            url: format!("ws://127.0.0.1:{port}"),
            devices,
            messages_per_device: per_device,
            window: 10_000,
            rate_per_device: Some(per_device_rate),
            make: Arc::new(move |d, seq| messages[d][seq as usize].clone()),
            timeout: Duration::from_secs(120),
        })
        .await?;
        let pct = (share * 100.0) as u32;
        rep.add(&format!("p50 at {pct} %"), r.percentile_ms(0.5), "ms");
        rep.add(&format!("p99 at {pct} %"), r.percentile_ms(0.99), "ms");
        rep.add(&format!("p999 at {pct} %"), r.percentile_ms(0.999), "ms");
        // Where the time goes: the InfluxDB write, measured by the server.
        let writes = write_stats(&metrics_url).await?.since(&writes0);
        rep.add(
            &format!("mean InfluxDB write at {pct} %"),
            writes.mean_ms(),
            "ms",
        );
        rep.add(
            &format!("InfluxDB writes over 64 ms at {pct} %"),
            writes.over_64ms as f64,
            &format!("of {}", writes.count),
        );
        if pct == 50 {
            met = Some(r.percentile_ms(0.99) <= flush_ms + 20.0);
        }
    }
    rep.summarize(
        &["p50 at 50 %", "p99 at 50 %", "mean InfluxDB write at 50 %"],
        None,
    );
    rep.goal_met = met;
    Ok(rep)
}

/// The server's InfluxDB write counts, read from its `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct WriteStats {
    count: u64,
    seconds: f64,
    over_64ms: u64,
}

impl WriteStats {
    fn since(&self, before: &WriteStats) -> WriteStats {
        WriteStats {
            count: self.count.saturating_sub(before.count),
            seconds: self.seconds - before.seconds,
            over_64ms: self.over_64ms.saturating_sub(before.over_64ms),
        }
    }

    fn mean_ms(&self) -> f64 {
        self.seconds / self.count.max(1) as f64 * 1000.0
    }
}

async fn write_stats(metrics_url: &str) -> Result<WriteStats, BenchError> {
    let text = reqwest::get(metrics_url)
        .await?
        .error_for_status()?
        .text()
        .await?;
    let sample = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let count = sample("wsingest_write_duration_seconds_count");
    let within = sample("wsingest_write_duration_seconds_bucket{le=\"0.064\"}");
    Ok(WriteStats {
        count: count as u64,
        seconds: sample("wsingest_write_duration_seconds_sum"),
        over_64ms: (count - within).max(0.0) as u64,
    })
}
