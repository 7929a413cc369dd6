//! A real `wsingest serve` process (the binary cargo built for these tests),
//! for what only a separate process can show: kill -9, SIGTERM, its RSS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use wsingest_server::config::Config;

use super::services::{free_port, wait_http};

pub struct WsingestProcess {
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl WsingestProcess {
    /// Write `config` (listening on a free port) to a file in `dir` and start
    /// `wsingest serve` on it; returns once `/healthz` answers.
    pub async fn start(config: Config, dir: &Path) -> WsingestProcess {
        Self::start_on(config, dir, free_port()).await
    }

    /// [`WsingestProcess::start`] on `port` (say, the port of a process that
    /// was killed, so that its devices reconnect to the new one).
    pub async fn start_on(mut config: Config, dir: &Path, port: u16) -> WsingestProcess {
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], port));
        let config_path = dir.join(format!("wsingest-{port}.toml"));
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
        let log_path = dir.join(format!("wsingest-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(wsingest_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("wsingest starts");
        let url = format!("http://127.0.0.1:{port}/healthz");
        wait_http(&url, "wsingest serve", &mut child, &log_path).await;
        WsingestProcess {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log_path,
            child: Some(child),
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the graceful exit; returns whether it
    /// exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM failed");
        c.wait().unwrap().success()
    }

    /// `VmRSS` and `VmHWM` (peak) from /proc, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for WsingestProcess {
    fn drop(&mut self) {
        self.kill9();
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
