//! Throughput into the blackhole sink: single-point JSON messages against
//! mosquitto carrying as many, and 100-point CBOR batches.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::load::{self, LoadSpec};
use crate::bench::procs;
use crate::bench::{BenchArgs, BenchError, Report};

use super::*;

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
    let mosq = mosquitto_rate(&dir, total, payload_len).await?;
    let reference = mosq.msgs_per_sec;
    let ours = r.msgs_per_sec();
    let per_million = |cpu: f64| cpu / total as f64 * 1e6;
    let cpu_ratio = server_cpu / mosq.broker_cpu.max(1e-9);
    let mut rep = Report::new(
        "blackhole",
        "single-point JSON messages, server discards after decode (acked)",
        "≥ 1.5× mosquitto QoS 0 msg/s, and server CPU per message ≤ 0.5× mosquitto's",
    );
    rep.add("devices", devices as f64, "connections");
    rep.add("messages", total as f64, "");
    rep.add("wsingest msg/s", ours, "msg/s");
    rep.add("mosquitto QoS 0 msg/s (reference)", reference, "msg/s");
    rep.add("ack latency p50", r.percentile_ms(0.5), "ms");
    rep.add("ack latency p99", r.percentile_ms(0.99), "ms");
    rep.add("server CPU per million msgs", per_million(server_cpu), "s");
    rep.add(
        "load client CPU per million msgs",
        per_million(client_cpu),
        "s",
    );
    rep.add(
        "mosquitto CPU per million msgs (reference)",
        per_million(mosq.broker_cpu),
        "s",
    );
    rep.add(
        "mosquitto_pub + mosquitto_sub CPU per million msgs",
        per_million(mosq.clients_cpu),
        "s",
    );
    rep.add("server CPU per msg / mosquitto's", cpu_ratio, "×");
    rep.summarize(
        &["wsingest msg/s", "server CPU per msg / mosquitto's"],
        Some("mosquitto QoS 0 msg/s (reference)"),
    );
    rep.ratio = Some(ours / reference);
    rep.goal_met = Some(ours >= 1.5 * reference && cpu_ratio <= 0.5);
    Ok(rep)
}

/// What the mosquitto reference run measured.
struct Mosquitto {
    msgs_per_sec: f64,
    /// CPU seconds of the broker during the run.
    broker_cpu: f64,
    /// CPU seconds of `mosquitto_pub` and `mosquitto_sub` together.
    clients_cpu: f64,
}

/// Wait for `child` to exit; its CPU seconds are read while it is a zombie,
/// before it is reaped.
async fn wait_with_cpu(
    mut child: std::process::Child,
) -> Result<(std::process::ExitStatus, f64), BenchError> {
    let pid = child.id();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if stat.is_empty() || state == Some("Z") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = procs::cpu_secs_of_pid(pid);
    Ok((child.wait()?, cpu))
}

/// mosquitto's own clients: one `mosquitto_pub -l` publisher, one
/// `mosquitto_sub -C` subscriber, QoS 0; messages per second delivered.
async fn mosquitto_rate(
    dir: &TempDir,
    messages: u64,
    payload_len: usize,
) -> Result<Mosquitto, BenchError> {
    let (broker, port) = procs::mosquitto(&dir.0).await?;
    let (pub_bin, sub_bin) = procs::mosquitto_clients()?;
    let port_s = port.to_string();
    let sub = Command::new(sub_bin)
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
    let broker_cpu0 = broker.cpu_secs();
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
    let (status, sub_cpu) = wait_with_cpu(sub).await?;
    let elapsed = started.elapsed();
    let broker_cpu = broker.cpu_secs() - broker_cpu0;
    let _ = writer.join();
    let pub_cpu = procs::cpu_secs_of_pid(publisher.id());
    let _ = publisher.kill();
    let _ = publisher.wait();
    if !status.success() {
        return Err(BenchError::Load(format!(
            "mosquitto_sub did not receive {messages} messages in time ({status})"
        )));
    }
    Ok(Mosquitto {
        msgs_per_sec: messages as f64 / elapsed.as_secs_f64(),
        broker_cpu,
        clients_cpu: pub_cpu + sub_cpu,
    })
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
    let client0 = procs::self_cpu_secs();
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
    let client_cpu = procs::self_cpu_secs() - client0;
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
    rep.add(
        "load client CPU per million points",
        client_cpu / total_points as f64 * 1e6,
        "s",
    );
    rep.summarize(&["points/s", "server CPU per million points"], None);
    rep.goal_met = Some(pps >= 2_000_000.0);
    Ok(rep)
}
