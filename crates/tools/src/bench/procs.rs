//! External processes a benchmark runs against: a `wsingest serve` child,
//! influxd and mosquitto, started by the one process harness
//! (`wsingest-harness`'s core: free ports with a retry when one is taken,
//! readiness polled with a deadline, process groups killed on drop, RSS and
//! CPU from /proc). What is the benchmarks' own is here: the server's
//! config and log level.

use std::path::{Path, PathBuf};

use wsingest_harness::daemons::{self, Serve};
pub use wsingest_harness::{Service as Proc, cpu_secs_of_pid, self_cpu_secs};

use super::BenchError;

/// influxd 1.x with its data in `dir`; returns the process and its URL.
pub async fn influxd(dir: &Path) -> Result<(Proc, String), BenchError> {
    let (p, port, _rpc) = daemons::influxd(dir).await?;
    Ok((p, format!("http://127.0.0.1:{port}")))
}

/// mosquitto on a free port (see [`daemons::mosquitto_config`]).
pub async fn mosquitto(dir: &Path) -> Result<(Proc, u16), BenchError> {
    Ok(daemons::mosquitto(dir).await?)
}

/// `wsingest serve` (this very binary) with `args`, listening on a free port.
pub async fn wsingest(dir: &Path, args: &[String]) -> Result<(Proc, u16), BenchError> {
    wsingest_with_config(dir, "", args).await
}

/// [`wsingest`] with `extra_toml` added to the benchmark's config file
/// (`serve` takes one `--config`, so scenarios must not pass their own).
pub async fn wsingest_with_config(
    dir: &Path,
    extra_toml: &str,
    args: &[String],
) -> Result<(Proc, u16), BenchError> {
    let exe = std::env::current_exe()?;
    // Benchmarks measure the ingest path: per-device rate limits (1000 msg/s
    // by default) would measure the limiter instead.
    let config = dir.join("bench-wsingest.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmessages_per_sec = 0.0\npoints_per_sec = 0.0\nnew_series_per_minute = 0\n\n{extra_toml}"
        ),
    )?;
    // WSINGEST_BENCH_SERVER_LOG sets the server's RUST_LOG (its log is in
    // the bench's temp dir), for looking into a failed run.
    let rust_log = std::env::var("WSINGEST_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into());
    let serve = Serve {
        bin: &exe,
        config: &config,
        args,
        rust_log: &rust_log,
        dir,
        log_name: "wsingest.log",
    };
    Ok(serve.start().await?)
}

pub fn mosquitto_clients() -> Result<(PathBuf, PathBuf), BenchError> {
    Ok(daemons::mosquitto_clients()?)
}
