//! A real `wsingest serve` process (the binary cargo built for these tests),
//! for what only a separate process can show: kill -9, SIGTERM, its RSS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wsingest_server::config::Config;

use crate::child::Service;
use crate::daemons::Serve;
use crate::ready::retry_if_port_taken;

pub struct WsingestProcess {
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    service: Service,
}

impl WsingestProcess {
    /// Write `config` (listening on a free port) to a file in `dir` and start
    /// `wsingest serve` on it; returns once `/healthz` answers.
    pub async fn start(config: Config, dir: &Path) -> WsingestProcess {
        retry_if_port_taken(|| Self::try_start_on(config.clone(), dir, None))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`WsingestProcess::start`] on `port` (say, the port of a process that
    /// was killed, so that its devices reconnect to the new one).
    pub async fn start_on(config: Config, dir: &Path, port: u16) -> WsingestProcess {
        Self::try_start_on(config, dir, Some(port))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_start_on(
        mut config: Config,
        dir: &Path,
        port: Option<u16>,
    ) -> Result<WsingestProcess, crate::StartError> {
        let port = match port {
            Some(p) => p,
            None => crate::ready::free_port()?,
        };
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], port));
        let config_path = dir.join(format!("wsingest-{port}.toml"));
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
        let log_name = format!("wsingest-{port}.log");
        let bin = wsingest_bin();
        let service = Serve {
            bin: &bin,
            config: &config_path,
            args: &[],
            rust_log: "info",
            dir,
            log_name: &log_name,
        }
        .start_on(port)
        .await?;
        Ok(WsingestProcess {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log_path: dir.join(log_name),
            service,
        })
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        assert!(self.service.is_running(), "wsingest serve is not running");
        self.service.pid()
    }

    /// SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
    pub fn kill9(&mut self) {
        self.service.kill();
    }

    /// SIGTERM, then wait (up to 60 s) for the graceful exit; returns whether
    /// it exited successfully.
    pub fn terminate(&mut self) -> bool {
        self.service
            .terminate(Duration::from_secs(60))
            .is_some_and(|s| s.success())
    }

    /// `VmRSS` and `VmHWM` (peak) from /proc, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        (self.service.rss_kib(), self.service.peak_rss_kib())
    }

    /// What this run logged so far.
    pub fn log(&self) -> String {
        self.service.log()
    }
}

/// The `wsingest` binary cargo built beside the running test or benchmark
/// (tests run from `target/<profile>/deps/`), or `$WSINGEST_BIN`.
pub fn wsingest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WSINGEST_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the running executable has a path");
    let mut dir = exe.parent().expect("an executable lives in a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps/ has a parent");
    }
    let bin = dir.join("wsingest");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build` (cargo test builds it for the tests in tests/)",
        bin.display()
    );
    bin
}
