//! Registry hot reload: the server re-reads the registry file when it changes
//! (checked every `auth.reload_interval_ms`) and at once on SIGHUP, then runs
//! `on_reload` (which closes sessions whose token is no longer valid).
//!
//! Change detection compares the file's inode, size and mtime: the device
//! commands replace the file by rename, so every write gets a new inode even
//! within one mtime tick. Polling (rather than inotify) needs no extra
//! dependency, works on every filesystem, and costs one `stat` per interval.
//! A registry that fails to parse is logged and ignored: the server keeps the
//! last good one rather than locking every device out over a typo.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Auth, Registry};

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    let mtime_ns = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    Some(Fingerprint {
        ino,
        len: m.len(),
        mtime_ns,
    })
}

/// Watch `path` until `shutdown`; after each successful reload, call `on_reload`.
pub fn spawn<F>(
    auth: Arc<Auth>,
    path: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
    on_reload: F,
) where
    F: Fn(&Registry) + Send + 'static,
{
    tokio::spawn(async move {
        let mut hup = hangup();
        let mut seen = fingerprint(&path);
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => false,
                _ = recv(&mut hup) => true,
            };
            let now = fingerprint(&path);
            if !forced && now == seen {
                continue;
            }
            seen = now;
            match Registry::load(&path) {
                Ok(registry) => {
                    tracing::info!(devices = registry.len(), path = %path.display(), sighup = forced, "device registry reloaded");
                    auth.replace(registry);
                    on_reload(&auth.registry());
                }
                Err(e) => {
                    tracing::error!(error = %e, "device registry not reloaded; keeping the previous one")
                }
            }
        }
    });
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    None
}

async fn recv(h: &mut Hangup) {
    #[cfg(unix)]
    if let Some(s) = h
        && s.recv().await.is_some()
    {
        return;
    }
    let _ = h;
    std::future::pending::<()>().await
}
