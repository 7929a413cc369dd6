//! Ack latency: a lone device with the default config against influxd's own
//! single-point writes (group commit: nothing but the write should be in
//! the way), then at fractions of the influx scenario's rate, with the
//! server's write counts from its `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::load::{self, LoadSpec};
use crate::bench::procs;
use crate::bench::{BenchArgs, BenchError, Report};

use super::*;

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
    let mut rep = Report::new(
        "latency",
        "ack latency of a lone device (default config), then of 100-point messages at a share of the influx scenario's rate",
        "a lone device's ack p99 ≤ influxd's own single-write p99 + 20 ms",
    );
    let (lone, single_write) = lone_device(args, &mut rep).await?;
    let dir = TempDir::new("latency")?;
    let (_influxd, url) = procs::influxd(&dir.0).await?;
    create_db(&url, "wsingest").await?;
    let (_server, port) = procs::wsingest(&dir.0, &influx_args(&url, "wsingest")).await?;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let devices = 10usize;
    let secs = if args.smoke { 1.0 } else { 10.0 };
    rep.add("max rate (from influx scenario)", max_rate, "points/s");
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
    }
    rep.summarize(
        &["lone device ack p99", "p99 at 50 %"],
        Some("influxd single-write p99 (reference)"),
    );
    rep.goal_met = Some(lone <= single_write + 20.0);
    Ok(rep)
}

/// One device, one single-point message at a time (50 per second), into a
/// server with the default batching config; and the same number of
/// single-point writes straight into influxd, one at a time. Returns both
/// p99s in milliseconds.
async fn lone_device(args: &BenchArgs, rep: &mut Report) -> Result<(f64, f64), BenchError> {
    let n: u64 = if args.smoke { 20 } else { 500 };
    let rate = 50.0;
    let dir = TempDir::new("lone")?;
    let (influxd, url) = procs::influxd(&dir.0).await?;
    create_db(&url, "reference").await?;
    create_db(&url, "wsingest").await?;
    let http = reqwest::Client::new();
    let write = format!("{url}/write?db=reference&precision=ms");
    let mut direct = Vec::with_capacity(n as usize);
    let influxd_cpu0 = influxd.cpu_secs();
    for i in 0..n {
        let body = format!("bench,device=ref v={i}.5 {}\n", 1_700_000_000_000 + i);
        let t = Instant::now();
        http.post(&write)
            .body(body)
            .send()
            .await?
            .error_for_status()?;
        direct.push(t.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
    }
    let influxd_direct_cpu = influxd.cpu_secs() - influxd_cpu0;
    let server_args: Vec<String> = [
        "--allow-anonymous",
        "--influx-url",
        &url,
        "--influx-db",
        "wsingest",
    ]
    .map(String::from)
    .to_vec();
    let (server, port) = procs::wsingest(&dir.0, &server_args).await?;
    let cpu0 = (server.cpu_secs(), influxd.cpu_secs());
    let mut r = load::run(LoadSpec {
        url: format!("ws://127.0.0.1:{port}"),
        devices: 1,
        messages_per_device: n,
        window: 1,
        rate_per_device: Some(rate),
        make: Arc::new(|_, seq| json_point(seq)),
        timeout: Duration::from_secs(120),
    })
    .await?;
    let server_cpu = server.cpu_secs() - cpu0.0;
    let influxd_cpu = influxd.cpu_secs() - cpu0.1;
    let mut direct = load::LoadResult {
        latencies_us: direct,
        ..Default::default()
    };
    let lone = r.percentile_ms(0.99);
    let single = direct.percentile_ms(0.99);
    let per_msg_ms = |cpu: f64| cpu / n as f64 * 1000.0;
    rep.add("lone device ack p50", r.percentile_ms(0.5), "ms");
    rep.add("lone device ack p99", lone, "ms");
    rep.add(
        "influxd single-write p50 (reference)",
        direct.percentile_ms(0.5),
        "ms",
    );
    rep.add("influxd single-write p99 (reference)", single, "ms");
    rep.add(
        "lone device: wsingest CPU per message",
        per_msg_ms(server_cpu),
        "ms",
    );
    rep.add(
        "lone device: influxd CPU per message",
        per_msg_ms(influxd_cpu),
        "ms",
    );
    rep.add(
        "influxd CPU per single write (reference)",
        per_msg_ms(influxd_direct_cpu),
        "ms",
    );
    Ok((lone, single))
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
