//! The dead-letter file: points the database refused (400, 413, ...: never
//! 401/403/404, which are outages), one JSON object per line with the
//! server's message, so an operator can see what was refused and why, fix
//! it and replay it (`wsingest deadletter`, [`super::deadletter_ops`]).
//!
//! Format, one line per refused message:
//! `{"time": RFC 3339, "status": 400, "error": "InfluxDB's message",
//! "lines": "the message's line protocol, newline-terminated"}`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::Mutex;

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    status: u16,
    error: &'a str,
    lines: &'a str,
}

pub struct DeadLetter {
    path: Option<PathBuf>,
    max_bytes: u64,
    /// One append at a time within the process.
    file: Mutex<()>,
}

impl DeadLetter {
    /// `path: None` keeps no file (refused points are still nacked and logged).
    pub fn new(path: Option<PathBuf>, max_bytes: u64) -> Self {
        DeadLetter {
            path,
            max_bytes,
            file: Mutex::new(()),
        }
    }

    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// Append one record; failures are logged, never fatal: the devices get
    /// their nacks either way. The file is opened for each record (dead
    /// letters are rare) and locked while written, so that `wsingest
    /// deadletter replay|purge` can rewrite it under the same lock while the
    /// server runs.
    pub async fn record(&self, status: u16, error: &str, lines: &[u8]) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let lines = String::from_utf8_lossy(lines).into_owned();
        let record = Record {
            time: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).to_rfc3339(),
            status,
            error,
            lines: &lines,
        };
        let mut text = serde_json::to_string(&record).expect("record serializes");
        text.push('\n');
        let _serial = self.file.lock().await;
        let max_bytes = self.max_bytes;
        let p = path.clone();
        let written =
            tokio::task::spawn_blocking(move || append_locked(&p, text.as_bytes(), max_bytes))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match written {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(path = %path.display(), max_bytes, status, error, "dead-letter file is full (influx.dead_letter_max_bytes); refused points only logged: {lines}")
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot write the dead-letter file; refused points are only logged");
                tracing::warn!(status, error, lines = %lines, "refused by the database");
            }
        }
    }
}

/// Append `text` under an exclusive lock unless the file would pass
/// `max_bytes`; `Ok(false)` when full.
fn append_locked(path: &Path, text: &[u8], max_bytes: u64) -> std::io::Result<bool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.lock()?;
    if f.metadata()?.len() + text.len() as u64 > max_bytes {
        return Ok(false);
    }
    f.write_all(text)?;
    Ok(true)
}
