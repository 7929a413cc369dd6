//! Ack latency at fractions of the influx scenario's rate, and the
//! server's write counts from its `/metrics`.

use std::sync::Arc;
use std::time::Duration;

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
