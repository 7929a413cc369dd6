//! The dead-letter file: points the database refused (HTTP 4xx other than
//! retryable ones), one JSON object per line with the server's message, so an
//! operator can see what was refused and why, fix it and replay it.

use std::path::PathBuf;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
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
    file: Mutex<Option<tokio::fs::File>>,
}

impl DeadLetter {
    /// `path: None` keeps no file (refused points are still nacked and logged).
    pub fn new(path: Option<PathBuf>, max_bytes: u64) -> Self {
        DeadLetter {
            path,
            max_bytes,
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// Append one record; failures are logged, never fatal: the devices get
    /// their nacks either way.
    pub async fn record(&self, status: u16, error: &str, lines: &[u8]) {
        let Some(path) = &self.path else { return };
        let lines = String::from_utf8_lossy(lines);
        let record = Record {
            time: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).to_rfc3339(),
            status,
            error,
            lines: &lines,
        };
        let mut text = serde_json::to_string(&record).expect("record serializes");
        text.push('\n');
        let mut guard = self.file.lock().await;
        if guard.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = tokio::fs::create_dir_all(dir).await;
            }
            match tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
            {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot open dead-letter file; refused points are only logged");
                    tracing::warn!(status, error, lines = %lines, "refused by the database");
                    return;
                }
            }
        }
        let file = guard.as_mut().expect("opened above");
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if size + text.len() as u64 > self.max_bytes {
            tracing::warn!(path = %path.display(), max_bytes = self.max_bytes, status, error, "dead-letter file is full; refused points only logged");
            return;
        }
        if let Err(e) = file.write_all(text.as_bytes()).await {
            tracing::error!(path = %path.display(), error = %e, "cannot write dead-letter file");
        }
    }
}
