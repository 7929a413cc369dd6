//! `wsingest compare`: one telemetry workload over every transport the notes
//! compare (WebSocket JSON and CBOR, MQTT, HTTP/1.1, HTTP/2, gRPC streaming)
//! against a local wsingest, measured the same way, printed as the notes'
//! table with numbers (see `docs/protocols.md`).
//!
//! Per transport, against a fresh server process (a `wsingest serve` child;
//! for MQTT, mosquitto plus wsingest's subscriber, [`mqtt_ingest`]):
//! 1. handshake: connect, send one message, wait for its ack (median of 5);
//! 2. idle: `idle` connections, each having sent one message, on the fresh
//!    server: its RSS growth per connection;
//! 3. paced: `devices` connections at `rate` messages/s each: ack latency and
//!    bytes on the wire per point (counted on the client's sockets);
//! 4. saturation: the same connections as fast as a window of unacked
//!    messages allows: msgs/s, points/s, CPU seconds of server and client.

pub mod counted;
pub mod mqtt_codec;
pub mod mqtt_ingest;
pub mod report;
pub mod transports;
pub mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::Semaphore;

use crate::bench::procs::{self, Proc};
use report::Row;
use transports::{Conn, Kind, Payload, Target};
use wsingest_server::config::SinkKind;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Setup(#[from] crate::bench::BenchError),
    #[error("{0}")]
    Client(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{transport}: {what}")]
    Measure {
        transport: &'static str,
        what: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Simulated devices, one connection each.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// Messages per second per device in the paced (latency) phase.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Points per message.
    #[arg(long, default_value_t = 1)]
    pub points_per_message: usize,
    /// Seconds of each measured phase (paced, then saturation).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unacked messages per device at saturation (HTTP/1.1 has one in flight by nature).
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Idle connections opened to measure server memory per connection.
    #[arg(long, default_value_t = 200)]
    pub idle: usize,
    /// Transports to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub transports: Vec<Kind>,
    /// Payload encoding of the MQTT and HTTP rows.
    #[arg(long, value_enum, default_value = "json")]
    pub payload: Payload,
    /// QoS of the MQTT publishes (0 or 1).
    #[arg(long, default_value_t = 1)]
    pub mqtt_qos: u8,
    /// Where the server puts points: `blackhole` measures the transports alone;
    /// `influx` starts a temporary influxd and writes (and acks) for real.
    #[arg(long, value_enum, default_value = "blackhole")]
    pub sink: SinkKind,
    /// The server's batch flush interval in milliseconds (bounds ack latency).
    #[arg(long, default_value_t = 5)]
    pub flush_interval: u64,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the table as Markdown; with a path (docs/protocols.md), replace
    /// the measured section of that file instead.
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    pub markdown: Option<String>,
    /// A short run (CI): every figure is produced, the numbers mean little.
    #[arg(long)]
    pub smoke: bool,
    /// Internal: run wsingest's MQTT subscriber against the broker on this port.
    #[arg(long, hide = true)]
    pub mqtt_ingest_child: Option<u16>,
    /// Internal: the config file of the MQTT subscriber child.
    #[arg(long, hide = true)]
    pub config: Option<PathBuf>,
}

impl CompareArgs {
    fn effective(&self) -> CompareArgs {
        let mut a = self.clone();
        if a.smoke {
            a.devices = a.devices.min(2);
            a.duration = a.duration.min(1.0);
            a.idle = a.idle.min(50);
            a.window = a.window.min(8);
        }
        if a.transports.is_empty() {
            a.transports = Kind::ALL.to_vec();
        }
        a.devices = a.devices.max(1);
        a.window = a.window.max(1);
        a
    }
}

/// Run the comparison and print it; returns the rows.
pub async fn run(args: CompareArgs) -> Result<Vec<Row>, CompareError> {
    wsingest_server::tls::install_crypto_provider();
    if let Some(port) = args.mqtt_ingest_child {
        let path = args
            .config
            .clone()
            .ok_or_else(|| CompareError::Client("--config is required".into()))?;
        let config = wsingest_server::config::Config::load(&path)
            .map_err(|e| CompareError::Client(e.to_string()))?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        wsingest_server::shutdown::on_signal(shutdown.clone());
        mqtt_ingest::run(
            config,
            SocketAddr::from(([127, 0, 0, 1], port)),
            args.payload,
            shutdown,
        )
        .await?;
        return Ok(vec![]);
    }
    let a = args.effective();
    let dir = std::env::temp_dir().join(format!("wsingest-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_all(&a, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let rows = result?;
    let report = report::Report::new(&a, rows);
    match a.markdown.as_deref() {
        Some("-") => println!("{}", report.markdown()),
        Some(path) => {
            report.update_doc(Path::new(path))?;
            eprintln!("updated {path}");
        }
        None if a.json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        ),
        None => println!("{}", report.table()),
    }
    Ok(report.rows)
}

async fn run_all(a: &CompareArgs, dir: &Path) -> Result<Vec<Row>, CompareError> {
    let influx = match a.sink {
        SinkKind::Influx => {
            let d = dir.join("influxd");
            std::fs::create_dir_all(&d)?;
            let (p, url) = procs::influxd(&d).await?;
            reqwest::Client::new()
                .post(format!("{url}/query?q=CREATE%20DATABASE%20compare"))
                .send()
                .await
                .map_err(|e| CompareError::Client(e.to_string()))?;
            Some((p, url))
        }
        SinkKind::Blackhole => None,
    };
    let mut rows = Vec::new();
    for (i, kind) in a.transports.iter().enumerate() {
        let d = dir.join(format!("{i}"));
        std::fs::create_dir_all(&d)?;
        eprintln!("measuring {} ...", kind.name());
        rows.push(measure(*kind, a, &d, influx.as_ref().map(|(_, u)| u.as_str())).await?);
    }
    Ok(rows)
}

/// The server side of one transport: processes whose CPU and memory count.
struct Servers {
    procs: Vec<Proc>,
    target: Target,
}

impl Servers {
    fn cpu_secs(&self) -> f64 {
        self.procs.iter().map(Proc::cpu_secs).sum()
    }

    fn rss_kib(&self) -> u64 {
        self.procs.iter().map(Proc::rss_kib).sum()
    }
}

fn serve_args(a: &CompareArgs, influx: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--allow-anonymous".into(),
        "--flush-interval".into(),
        a.flush_interval.to_string(),
    ];
    match influx {
        Some(url) => v.extend([
            "--influx-url".into(),
            url.into(),
            "--influx-db".into(),
            "compare".into(),
        ]),
        None => v.extend(["--sink".into(), "blackhole".into()]),
    }
    v
}

async fn start_servers(
    kind: Kind,
    a: &CompareArgs,
    dir: &Path,
    influx: Option<&str>,
) -> Result<Servers, CompareError> {
    let mut target = Target {
        server: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: None,
        payload: a.payload,
        mqtt_qos: a.mqtt_qos,
    };
    if kind != Kind::Mqtt {
        let (p, port) = procs::wsingest(dir, &serve_args(a, influx)).await?;
        target.server.set_port(port);
        return Ok(Servers {
            procs: vec![p],
            target,
        });
    }
    let (broker, port) = procs::mosquitto(dir).await?;
    target.broker = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    let mut config = wsingest_server::config::Config::default();
    config.influx.flush_interval_ms = a.flush_interval;
    config.influx.dead_letter_path = None;
    match influx {
        Some(url) => {
            config.influx.url = url.into();
            config.influx.db = Some("compare".into());
        }
        None => config.server.sink = SinkKind::Blackhole,
    }
    let config_path = dir.join("mqtt-ingest.toml");
    std::fs::write(
        &config_path,
        toml::to_string(&config).map_err(|e| CompareError::Client(e.to_string()))?,
    )?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args([
        "compare",
        "--mqtt-ingest-child",
        &port.to_string(),
        "--config",
    ])
    .arg(&config_path)
    .args([
        "--payload",
        if a.payload == Payload::Cbor {
            "cbor"
        } else {
            "json"
        },
    ])
    .env("RUST_LOG", "warn");
    let child = Proc::spawn("mqtt-ingest child", &mut cmd, &dir.join("mqtt-ingest.log"))
        .map_err(crate::bench::BenchError::from)?;
    let servers = Servers {
        procs: vec![broker, child],
        target,
    };
    // Ready when a probe message comes back acked (the subscription is live).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_error = String::new();
    loop {
        match probe(&servers.target).await {
            Ok(true) => return Ok(servers),
            Ok(false) => {}
            // The subscriber may not be connected yet: keep trying until the deadline.
            Err(e) => last_error = e.to_string(),
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("mqtt-ingest.log")).unwrap_or_default();
            return Err(CompareError::Client(format!(
                "wsingest's MQTT subscriber did not answer within 30 s ({last_error}):\n{log}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One MQTT message through broker and subscriber: was it acked?
async fn probe(target: &Target) -> Result<bool, CompareError> {
    let mut c = transports::connect(Kind::Mqtt, target, "probe").await?;
    c.sender.send(1, &workload::readings(1, 1)).await?;
    let answer = tokio::time::timeout(Duration::from_millis(500), c.answers.recv()).await;
    Ok(answer.is_ok_and(|a| a.is_some()))
}

/// What one phase of one device measured.
#[derive(Debug, Default)]
struct PhaseResult {
    acked: u64,
    nacked: u64,
    latencies_us: Vec<u64>,
    up: u64,
    down: u64,
    next_seq: u64,
}

/// One device for one phase: send for `duration` (paced or windowed), then
/// wait (bounded) for the outstanding answers.
async fn device_phase(
    mut conn: Conn,
    first_seq: u64,
    points: usize,
    rate: Option<f64>,
    window: usize,
    duration: Duration,
) -> Result<(Conn, PhaseResult), CompareError> {
    let (up0, down0) = (conn.counters.up(), conn.counters.down());
    let slots = Semaphore::new(window);
    let sent_at: Mutex<std::collections::HashMap<u64, Instant>> = Mutex::new(Default::default());
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let end = start + duration;
    let mut result = PhaseResult::default();
    let Conn {
        sender, answers, ..
    } = &mut conn;
    let sending = async {
        let mut seq = first_seq;
        let mut next = start;
        while Instant::now() < end {
            if let Some(r) = rate {
                tokio::time::sleep_until(next.into()).await;
                next += Duration::from_secs_f64(1.0 / r);
            }
            let Ok(permit) = tokio::time::timeout_at(end.into(), slots.acquire()).await else {
                break;
            };
            permit.expect("semaphore never closed").forget();
            if Instant::now() >= end {
                break;
            }
            let readings = workload::readings(seq, points);
            sent_at
                .lock()
                .expect("not poisoned")
                .insert(seq, Instant::now());
            sender.send(seq, &readings).await?;
            seq += 1;
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        Ok::<u64, CompareError>(seq)
    };
    let answering = async {
        let drain_deadline = end + Duration::from_secs(15);
        loop {
            let finished = done.load(std::sync::atomic::Ordering::Acquire);
            if finished && sent_at.lock().expect("not poisoned").is_empty() {
                break;
            }
            if Instant::now() > drain_deadline {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(20), answers.recv()).await {
                Ok(Some(a)) => {
                    if let Some(t) = sent_at.lock().expect("not poisoned").remove(&a.seq) {
                        result.latencies_us.push(t.elapsed().as_micros() as u64);
                        slots.add_permits(1);
                    }
                    if a.ok {
                        result.acked += 1;
                    } else {
                        result.nacked += 1;
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
    };
    let (next_seq, ()) = tokio::join!(sending, answering);
    result.next_seq = next_seq?;
    let missing = sent_at.lock().expect("not poisoned").len();
    if missing > 0 {
        return Err(CompareError::Client(format!(
            "{missing} messages got no answer within 15 s"
        )));
    }
    result.up = conn.counters.up() - up0;
    result.down = conn.counters.down() - down0;
    Ok((conn, result))
}

/// Run a phase on every connection at once; sums the results.
async fn phase(
    conns: Vec<Conn>,
    first_seq: u64,
    a: &CompareArgs,
    rate: Option<f64>,
    window: usize,
) -> Result<(Vec<Conn>, PhaseResult, Duration), CompareError> {
    let duration = Duration::from_secs_f64(a.duration);
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            tokio::spawn(device_phase(
                c,
                first_seq,
                a.points_per_message,
                rate,
                window,
                duration,
            ))
        })
        .collect();
    let mut conns = Vec::new();
    let mut total = PhaseResult {
        next_seq: first_seq,
        ..Default::default()
    };
    for t in tasks {
        let (c, r) = t.await.map_err(|e| CompareError::Client(e.to_string()))??;
        conns.push(c);
        total.acked += r.acked;
        total.nacked += r.nacked;
        total.up += r.up;
        total.down += r.down;
        total.latencies_us.extend(r.latencies_us);
        total.next_seq = total.next_seq.max(r.next_seq);
    }
    Ok((conns, total, start.elapsed()))
}

fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() - 1) as f64 * q).round() as usize;
    sorted_us[i] as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Connect, send one message, wait for its ack: (bytes both ways, ms).
async fn first_message(
    kind: Kind,
    target: &Target,
    device: &str,
    points: usize,
) -> Result<(f64, f64), CompareError> {
    let t0 = Instant::now();
    let mut c = transports::connect(kind, target, device).await?;
    c.sender.send(1, &workload::readings(1, points)).await?;
    match tokio::time::timeout(Duration::from_secs(10), c.answers.recv()).await {
        Ok(Some(a)) if a.ok => Ok((
            c.counters.total() as f64,
            t0.elapsed().as_secs_f64() * 1000.0,
        )),
        other => Err(CompareError::Client(format!(
            "first message not acked: {other:?}"
        ))),
    }
}

async fn measure(
    kind: Kind,
    a: &CompareArgs,
    dir: &Path,
    influx: Option<&str>,
) -> Result<Row, CompareError> {
    let fail = |what: String| CompareError::Measure {
        transport: kind.name(),
        what,
    };
    let servers = start_servers(kind, a, dir, influx).await?;
    let target = servers.target.clone();
    let p = a.points_per_message;

    let mut first = Vec::new();
    for i in 0..5 {
        first.push(first_message(kind, &target, &format!("hs-{i}"), p).await?);
    }
    let first_bytes = median(first.iter().map(|f| f.0).collect());
    let first_ms = median(first.iter().map(|f| f.1).collect());

    // Idle connections: each has sent one message (so HTTP keep-alive and
    // gRPC streams are really open), then nothing.
    let rss0 = servers.rss_kib();
    let mut idle = Vec::with_capacity(a.idle);
    for i in 0..a.idle {
        let mut c = transports::connect(kind, &target, &format!("idle-{i}")).await?;
        c.sender.send(1, &workload::readings(1, p)).await?;
        tokio::time::timeout(Duration::from_secs(10), c.answers.recv())
            .await
            .map_err(|_| fail("an idle connection's message was not answered".into()))?;
        idle.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = servers.rss_kib();
    drop(idle);

    let mut conns = Vec::with_capacity(a.devices);
    for d in 0..a.devices {
        conns.push(transports::connect(kind, &target, &format!("dev-{d}")).await?);
    }
    // Paced: latency and bytes; the window is wide enough never to hold a paced device back.
    let (conns, mut paced, _) = phase(conns, 1, a, Some(a.rate), 100_000).await?;
    if paced.acked == 0 || paced.nacked > 0 {
        return Err(fail(format!(
            "paced phase: {} acked, {} nacked",
            paced.acked, paced.nacked
        )));
    }
    paced.latencies_us.sort_unstable();
    let paced_points = (paced.acked * p as u64) as f64;
    let per_message = (paced.up + paced.down) as f64 / paced.acked as f64;

    let window = if kind == Kind::Http1 { 1 } else { a.window };
    let (cpu_s0, cpu_c0) = (servers.cpu_secs(), procs::self_cpu_secs());
    let (conns, sat, elapsed) = phase(conns, paced.next_seq, a, None, window).await?;
    let (cpu_s, cpu_c) = (servers.cpu_secs() - cpu_s0, procs::self_cpu_secs() - cpu_c0);
    if sat.acked == 0 || sat.nacked > 0 {
        return Err(fail(format!(
            "saturation phase: {} acked, {} nacked",
            sat.acked, sat.nacked
        )));
    }
    let sat_points = (sat.acked * p as u64) as f64;
    drop(conns);

    let million = 1_000_000.0;
    Ok(Row {
        transport: kind.name().into(),
        kind,
        connection: kind.connection().into(),
        handshake_bytes: (first_bytes - per_message).max(0.0),
        first_ack_ms: first_ms,
        up_bytes_per_point: paced.up as f64 / paced_points,
        down_bytes_per_point: paced.down as f64 / paced_points,
        latency_p50_ms: percentile_ms(&paced.latencies_us, 0.50),
        latency_p99_ms: percentile_ms(&paced.latencies_us, 0.99),
        msgs_per_sec: sat.acked as f64 / elapsed.as_secs_f64(),
        points_per_sec: sat_points / elapsed.as_secs_f64(),
        server_cpu_s_per_mpoints: cpu_s / sat_points * million,
        client_cpu_s_per_mpoints: cpu_c / sat_points * million,
        idle_kib_per_conn: rss1.saturating_sub(rss0) as f64 / a.idle.max(1) as f64,
    })
}
