//! How to start the services both the tests and `wsingest bench`/`compare`
//! need: influxd 1.x, mosquitto and `wsingest serve`, each ready (or a
//! [`StartError`]) when the function returns.

use std::path::Path;
use std::process::Command;

use crate::child::{Service, find_binary};
use crate::error::StartError;
use crate::ready::{Probe, READY_WITHIN, free_port, retry_if_port_taken, wait_ready};

/// influxd's config: HTTP on `http`, its RPC (backup) listener on `rpc`,
/// data under `dir`, no limits on series, no background jobs.
pub fn influxd_config(dir: &Path, http: u16, rpc: u16) -> String {
    let d = dir.display();
    format!(
        r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  max-values-per-tag = 0
  max-series-per-database = 0
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"#
    )
}

/// Start influxd on the given ports with its data, config and log
/// (`influxd.log`, appended) in `dir`; ready when `/ping` answers. Used
/// again on the same ports and data to restart it.
pub async fn start_influxd(dir: &Path, http: u16, rpc: u16) -> Result<Service, StartError> {
    let bin = find_binary("influxd", "influxdb")?;
    let conf = dir.join("influxdb.conf");
    std::fs::write(&conf, influxd_config(dir, http, rpc))
        .map_err(StartError::io(format!("write {}", conf.display())))?;
    let mut svc = Service::spawn(
        "influxd",
        Command::new(bin).arg("-config").arg(&conf),
        &dir.join("influxd.log"),
    )?;
    wait_ready(&mut svc, &Probe::http(http, "/ping"), READY_WITHIN).await?;
    Ok(svc)
}

/// influxd on free ports in `dir`; returns it, its HTTP and RPC ports.
pub async fn influxd(dir: &Path) -> Result<(Service, u16, u16), StartError> {
    retry_if_port_taken(|| async {
        let (http, rpc) = (free_port()?, free_port()?);
        Ok((start_influxd(dir, http, rpc).await?, http, rpc))
    })
    .await
}

/// mosquitto's config: anonymous on `port`, no persistence, no queue
/// limits (so QoS 0 is not dropped while a subscriber catches up), and
/// TCP_NODELAY like every other server measured (Nagle adds ~40 ms per
/// round trip with delayed acks).
pub fn mosquitto_config(port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n\
         set_tcp_nodelay true\nlog_dest stderr\n"
    )
}

/// Start mosquitto with the config at `conf` (which listens on `port`),
/// appending to `log`; ready when the port accepts connections.
pub async fn start_mosquitto(conf: &Path, port: u16, log: &Path) -> Result<Service, StartError> {
    let bin = find_binary("mosquitto", "mosquitto")?;
    let mut svc = Service::spawn("mosquitto", Command::new(bin).arg("-c").arg(conf), log)?;
    wait_ready(&mut svc, &Probe::Tcp(port), READY_WITHIN).await?;
    Ok(svc)
}

/// mosquitto on a free port with [`mosquitto_config`] in `dir`.
pub async fn mosquitto(dir: &Path) -> Result<(Service, u16), StartError> {
    retry_if_port_taken(|| async {
        let port = free_port()?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, mosquitto_config(port))
            .map_err(StartError::io(format!("write {}", conf.display())))?;
        let svc = start_mosquitto(&conf, port, &dir.join("mosquitto.log")).await?;
        Ok((svc, port))
    })
    .await
}

/// `mosquitto_pub` and `mosquitto_sub`.
pub fn mosquitto_clients() -> Result<(std::path::PathBuf, std::path::PathBuf), StartError> {
    Ok((
        find_binary("mosquitto_pub", "mosquitto-clients")?,
        find_binary("mosquitto_sub", "mosquitto-clients")?,
    ))
}

/// A `wsingest serve` to start.
pub struct Serve<'a> {
    /// The wsingest binary.
    pub bin: &'a Path,
    /// Its `--config` file.
    pub config: &'a Path,
    /// Further arguments after `serve --config … --listen 127.0.0.1:<port>`.
    pub args: &'a [String],
    /// Its `RUST_LOG`.
    pub rust_log: &'a str,
    /// Its working directory; its log goes to `<dir>/<log_name>`.
    pub dir: &'a Path,
    pub log_name: &'a str,
}

impl Serve<'_> {
    /// Start it on `port`; ready when `/healthz` answers.
    pub async fn start_on(&self, port: u16) -> Result<Service, StartError> {
        let mut cmd = Command::new(self.bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(self.config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(self.args)
            .env("RUST_LOG", self.rust_log)
            .current_dir(self.dir);
        let mut svc = Service::spawn("wsingest serve", &mut cmd, &self.dir.join(self.log_name))?;
        wait_ready(&mut svc, &Probe::http(port, "/healthz"), READY_WITHIN).await?;
        Ok(svc)
    }

    /// Start it on a free port; returns it and the port.
    pub async fn start(&self) -> Result<(Service, u16), StartError> {
        retry_if_port_taken(|| async {
            let port = free_port()?;
            Ok((self.start_on(port).await?, port))
        })
        .await
    }
}
