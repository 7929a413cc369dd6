//! Waiting for a started service to be ready: poll a probe against a
//! deadline, and make sure that what answers is *our* process.
//!
//! A port picked by [`free_port`] is free when picked and may be taken
//! before the service binds it. Then the service dies or logs "address
//! already in use" while the other process answers the probe. Both end the
//! wait with [`StartError::PortTaken`]; a probe that succeeds is only
//! believed once /proc shows the listening socket in the service's process
//! group. [`retry_if_port_taken`] runs a start once more on new ports.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::child::{Service, stat_fields};
use crate::error::StartError;

/// How long a service may take to become ready.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// A free TCP port on 127.0.0.1 (bound, then released: see the module doc).
pub fn free_port() -> Result<u16, StartError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(StartError::io("bind 127.0.0.1:0"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(StartError::io("local_addr"))
}

/// What "ready" means for a service.
#[derive(Debug, Clone)]
pub enum Probe {
    /// 127.0.0.1:port accepts TCP connections.
    Tcp(u16),
    /// `GET path` on 127.0.0.1:port answers with a status below 500.
    Http { port: u16, path: String },
}

impl Probe {
    pub fn http(port: u16, path: &str) -> Probe {
        Probe::Http {
            port,
            path: path.to_string(),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Probe::Tcp(p) | Probe::Http { port: p, .. } => *p,
        }
    }

    fn describe(&self) -> String {
        match self {
            Probe::Tcp(p) => format!("listening on 127.0.0.1:{p}"),
            Probe::Http { port, path } => format!("answering http://127.0.0.1:{port}{path}"),
        }
    }

    async fn passes(&self) -> bool {
        let port = self.port();
        let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        else {
            return false;
        };
        let Probe::Http { path, .. } = self else {
            return true;
        };
        let exchange = async {
            let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.ok()?;
            // "HTTP/1.x NNN"
            std::str::from_utf8(&head[9..12]).ok()?.parse::<u16>().ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), exchange).await,
            Ok(Some(code)) if code < 500
        )
    }
}

/// Poll `probe` until it passes for `svc`'s own process, `svc` exits, its log
/// says its address is in use, or `within` passes.
pub async fn wait_ready(
    svc: &mut Service,
    probe: &Probe,
    within: Duration,
) -> Result<(), StartError> {
    let deadline = Instant::now() + within;
    let port = probe.port();
    let mut held_by_other = false;
    loop {
        if let Some(status) = svc.try_exit() {
            let log = svc.log_tail(20);
            return Err(if says_addr_in_use(&log) {
                port_taken(svc, port, log)
            } else {
                StartError::Exited {
                    name: svc.name().into(),
                    status,
                    log,
                }
            });
        }
        if says_addr_in_use(&svc.log()) {
            let log = svc.log_tail(20);
            svc.kill();
            return Err(port_taken(svc, port, log));
        }
        if probe.passes().await {
            match listener_in_group(port, svc.pid()) {
                Some(false) => held_by_other = true,
                _ => return Ok(()),
            }
        }
        if Instant::now() > deadline {
            let log = svc.log_tail(20);
            svc.kill();
            return Err(if held_by_other {
                port_taken(svc, port, log)
            } else {
                StartError::Timeout {
                    name: svc.name().into(),
                    what: probe.describe(),
                    secs: within.as_secs(),
                    log,
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Run `start` again (it picks new ports) if its first run found a port
/// taken: the inherent race of [`free_port`].
pub async fn retry_if_port_taken<T, F, Fut>(mut start: F) -> Result<T, StartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StartError>>,
{
    match start().await {
        Err(StartError::PortTaken { .. }) => start().await,
        other => other,
    }
}

fn port_taken(svc: &Service, port: u16, log: String) -> StartError {
    StartError::PortTaken {
        name: svc.name().into(),
        port,
        log,
    }
}

/// Whether a log says a bind failed (Go, Rust, C daemons word it alike).
pub fn says_addr_in_use(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    l.contains("address already in use") || l.contains("addrinuse")
}

/// Whether the socket listening on 127.0.0.1/0.0.0.0/[::]:`port` belongs to
/// a process of group `pgid`; `None` when /proc does not tell.
pub fn listener_in_group(port: u16, pgid: u32) -> Option<bool> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    let mut readable = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_fields(&stat)
            .get(2)
            .and_then(|g| g.parse::<u32>().ok())
            != Some(pgid)
        {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        readable = true;
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                && inodes.iter().any(|i| i == inode)
            {
                return Some(true);
            }
        }
    }
    readable.then_some(false)
}

/// Inodes of the TCP sockets in LISTEN state on `port`.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let p = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && p == Some(port) {
                out.push(inode.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn temp_log(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wsingest-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[tokio::test]
    async fn a_port_held_by_another_process_is_not_mistaken_for_ours() {
        // We hold the port; the "service" never binds it.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        let mut svc = Service::spawn(
            "sleeper",
            Command::new("sleep").arg("30"),
            &temp_log("sleeper.log"),
        )
        .unwrap();
        let e = wait_ready(&mut svc, &Probe::Tcp(port), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(e, StartError::PortTaken { port: p, .. } if p == port),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_logged_bind_failure_is_port_taken_and_retried() {
        let mut tries = 0;
        let e = retry_if_port_taken(|| {
            tries += 1;
            async {
                let mut svc = Service::spawn(
                    "binder",
                    Command::new("sh")
                        .args(["-c", "echo 'bind: Address already in use'; sleep 30"]),
                    &temp_log("binder.log"),
                )?;
                wait_ready(&mut svc, &Probe::Tcp(free_port()?), Duration::from_secs(10)).await
            }
        })
        .await
        .unwrap_err();
        assert_eq!(tries, 2);
        assert!(e.to_string().contains("taken by another process"), "{e}");
    }

    #[tokio::test]
    async fn an_exit_before_ready_carries_the_log() {
        let mut svc = Service::spawn(
            "failer",
            Command::new("sh").args(["-c", "echo bad config; exit 3"]),
            &temp_log("failer.log"),
        )
        .unwrap();
        let e = wait_ready(
            &mut svc,
            &Probe::Tcp(free_port().unwrap()),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, StartError::Exited { .. }), "{e}");
        assert!(e.to_string().contains("bad config"), "{e}");
    }

    #[tokio::test]
    async fn our_own_listener_is_ready() {
        let port = free_port().unwrap();
        let mut svc = Service::spawn(
            "python",
            Command::new("python3").args([
                "-c",
                &format!(
                    "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen()\ntime.sleep(30)"
                ),
            ]),
            &temp_log("python.log"),
        )
        .unwrap();
        wait_ready(&mut svc, &Probe::Tcp(port), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(listener_in_group(port, svc.pid()), Some(true));
    }
}
