//! External processes a benchmark runs against: a `wsingest serve` child,
//! influxd and mosquitto on free ports in temp dirs, and their resource use
//! read from /proc. Every child is killed when its handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process killed on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Own an already spawned child (killed on drop like the others).
    pub fn from_child(child: Child) -> Proc {
        Proc { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// CPU seconds (user + system) used so far.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs_of(&format!("/proc/{}/stat", self.pid()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of this process (the load generator).
pub fn self_cpu_secs() -> f64 {
    cpu_secs_of("/proc/self/stat")
}

fn cpu_secs_of(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Field 14 is index 11 after the state field (index 0 is field 3).
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    100.0 // USER_HZ on Linux
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn find_binary(name: &str, package: &str) -> Result<PathBuf, BenchError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| BenchError::Missing {
            name: name.into(),
            package: package.into(),
        })
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Proc, BenchError> {
    let log = std::fs::File::create(log)?;
    let child = cmd
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?;
    Ok(Proc { child })
}

/// Wait until `proc` accepts TCP connections on `port`; if it exits first,
/// the error carries the end of its log.
pub async fn wait_port(
    proc: &mut Proc,
    port: u16,
    what: &str,
    log: &Path,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = text
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(BenchError::Start(format!(
                "{what} exited ({status}) before listening:\n{tail}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BenchError::Start(format!(
        "{what} did not listen on port {port} within 30 s"
    )))
}

/// influxd 1.x with its data in `dir`; returns the process and its URL.
pub async fn influxd(dir: &Path) -> Result<(Proc, String), BenchError> {
    let bin = find_binary("influxd", "influxdb")?;
    let (port, rpc) = (free_port()?, free_port()?);
    let d = dir.display();
    let conf = format!(
        "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n\
         [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
         max-series-per-database = 0\n  max-values-per-tag = 0\n\
         [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  max-body-size = 0\n\
         [monitor]\n  store-enabled = false\n"
    );
    let conf_path = dir.join("influxdb.conf");
    std::fs::write(&conf_path, conf)?;
    let log = dir.join("influxd.log");
    let mut p = spawn(Command::new(bin).arg("-config").arg(&conf_path), &log)?;
    wait_port(&mut p, port, "influxd", &log).await?;
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{url}/ping")).send().await.is_err() {
        if Instant::now() > deadline {
            return Err(BenchError::Start("influxd did not answer /ping".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((p, url))
}

/// mosquitto on a free port, anonymous, no queue limits (so QoS 0 is not
/// dropped by the broker while the subscriber catches up), and TCP_NODELAY
/// like every other server measured (its default, Nagle on, adds ~40 ms
/// per round trip with delayed acks).
pub async fn mosquitto(dir: &Path) -> Result<(Proc, u16), BenchError> {
    let bin = find_binary("mosquitto", "mosquitto")?;
    let port = free_port()?;
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_queued_bytes 0\npersistence false\nset_tcp_nodelay true\n"
    );
    let conf_path = dir.join("mosquitto.conf");
    std::fs::write(&conf_path, conf)?;
    let log = dir.join("mosquitto.log");
    let mut p = spawn(Command::new(bin).arg("-c").arg(&conf_path), &log)?;
    wait_port(&mut p, port, "mosquitto", &log).await?;
    Ok((p, port))
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
    let port = free_port()?;
    // Benchmarks measure the ingest path: per-device rate limits (1000 msg/s
    // by default) would measure the limiter instead.
    let config = dir.join("bench-wsingest.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmessages_per_sec = 0.0\npoints_per_sec = 0.0\nnew_series_per_minute = 0\n\n{extra_toml}"
        ),
    )?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        // WSINGEST_BENCH_SERVER_LOG sets the server's RUST_LOG (its log is
        // in the bench's temp dir), for looking into a failed run.
        .env(
            "RUST_LOG",
            std::env::var("WSINGEST_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .current_dir(dir);
    let log = dir.join("wsingest.log");
    let mut p = spawn(&mut cmd, &log)?;
    wait_port(&mut p, port, "wsingest serve", &log).await?;
    Ok((p, port))
}

pub fn mosquitto_clients() -> Result<(PathBuf, PathBuf), BenchError> {
    Ok((
        find_binary("mosquitto_pub", "mosquitto-clients")?,
        find_binary("mosquitto_sub", "mosquitto-clients")?,
    ))
}
