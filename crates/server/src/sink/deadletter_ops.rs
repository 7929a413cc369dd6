//! `wsingest deadletter list|show|replay|purge`: the operator's way back
//! from the dead-letter file ([`super::deadletter`]).
//!
//! - `list`: one row per entry: number, time, devices, status, reason.
//! - `show N`: one entry in full, its points read back.
//! - `replay`: for each entry, read its points back and validate them again
//!   (the rules of `lineproto`, with the config's limits); send the valid
//!   ones to the InfluxDB of the config, one request per entry. Written:
//!   the entry leaves the file. Refused again (400 ...): it stays, with the
//!   new reason. InfluxDB unavailable or refusing the writer (connection,
//!   5xx, 401/403/404): replay stops there, the rest stays, and the error
//!   says why. The file is rewritten in place under the same lock the
//!   server takes to append, so a running server may keep adding entries.
//! - `purge`: empty the file; needs a confirmation (`--yes`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::influx::{ClientError, InfluxClient, WriteError};
use super::lineparse::parse_lines;
use super::retry::is_retryable;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(
        "no dead-letter file is configured: set influx.dead_letter_path in the config (or --dead-letter FILE)"
    )]
    NoPath,
    #[error("cannot read the dead-letter file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot rewrite the dead-letter file {path}: {source}; entries replayed so far are in InfluxDB and still in the file (replaying them again is harmless)"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has no entry {n}: it has {count} (see `wsingest deadletter list`)")]
    NoEntry {
        path: PathBuf,
        n: usize,
        count: usize,
    },
    #[error(
        "purge deletes all {count} entries of {path} for good: run it again with --yes to confirm"
    )]
    NotConfirmed { path: PathBuf, count: usize },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// One line of the file as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    time: String,
    status: u16,
    error: String,
    lines: String,
}

/// One entry of the file.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// 1-based, as `list` shows it and `show` takes it.
    pub number: usize,
    /// Line of the file.
    pub line: usize,
    pub time: String,
    pub status: u16,
    pub error: String,
    /// The refused line protocol.
    pub lines: String,
    /// `device` tags of its points.
    pub devices: Vec<String>,
    pub points: usize,
}

/// A line of the file that is not an entry (hand-edited, cut short): shown,
/// never deleted by replay.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub line: usize,
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Listing {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
    pub unreadable: Vec<Unreadable>,
}

enum Item {
    Entry(Entry, String),
    Bad(String),
}

fn path_of(config: &Config) -> Result<PathBuf, DeadLetterError> {
    config
        .influx
        .dead_letter_path
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or(DeadLetterError::NoPath)
}

fn parse_items(text: &str) -> (Vec<Item>, Vec<Unreadable>) {
    let mut items = Vec::new();
    let mut bad = Vec::new();
    let mut number = 0;
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Stored>(raw) {
            Ok(s) => {
                number += 1;
                let parsed = parse_lines(&s.lines);
                let mut devices: Vec<String> = parsed
                    .iter()
                    .filter_map(|(_, p)| p.as_ref().ok())
                    .filter_map(|p| p.tags.iter().find(|(k, _)| k == "device"))
                    .map(|(_, v)| v.clone())
                    .collect();
                devices.dedup();
                items.push(Item::Entry(
                    Entry {
                        number,
                        line: i + 1,
                        time: s.time,
                        status: s.status,
                        error: s.error,
                        points: parsed.len(),
                        lines: s.lines,
                        devices,
                    },
                    raw.to_string(),
                ));
            }
            Err(e) => {
                bad.push(Unreadable {
                    line: i + 1,
                    detail: e.to_string(),
                });
                items.push(Item::Bad(raw.to_string()));
            }
        }
    }
    (items, bad)
}

fn read(path: &Path) -> Result<String, DeadLetterError> {
    match std::fs::read(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(DeadLetterError::Read {
            path: path.into(),
            source,
        }),
    }
}

/// Every entry of the configured file (a missing file has none).
pub fn list(config: &Config) -> Result<Listing, DeadLetterError> {
    let path = path_of(config)?;
    let (items, unreadable) = parse_items(&read(&path)?);
    Ok(Listing {
        entries: items
            .into_iter()
            .filter_map(|i| match i {
                Item::Entry(e, _) => Some(e),
                Item::Bad(_) => None,
            })
            .collect(),
        unreadable,
        path,
    })
}

/// Entry `n` (1-based).
pub fn show(config: &Config, n: usize) -> Result<Entry, DeadLetterError> {
    let l = list(config)?;
    let count = l.entries.len();
    l.entries
        .into_iter()
        .find(|e| e.number == n)
        .ok_or(DeadLetterError::NoEntry {
            path: l.path,
            n,
            count,
        })
}

/// What `replay` did.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub path: PathBuf,
    pub entries: usize,
    pub replayed_entries: usize,
    pub replayed_points: usize,
    /// Entries kept: number (before replay) and why.
    pub still_refused: Vec<(usize, String)>,
    /// Why replay stopped before the end (InfluxDB unavailable or refusing
    /// the writer); the entries from there on are kept as they were.
    pub stopped: Option<String>,
    pub not_tried: usize,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} entries; replayed {} ({} points, now in InfluxDB and removed from the file); {} still refused (kept)",
            self.path.display(),
            self.entries,
            self.replayed_entries,
            self.replayed_points,
            self.still_refused.len()
        )?;
        for (n, why) in &self.still_refused {
            writeln!(f, "  entry {n}: {why}")?;
        }
        if let Some(why) = &self.stopped {
            writeln!(
                f,
                "stopped: {why}; {} entries not tried (kept). Fix it and run replay again.",
                self.not_tried
            )?;
        }
        Ok(())
    }
}

/// Validate each entry's points again and send them to the config's
/// InfluxDB; keep in the file what is refused again or not tried.
pub async fn replay(config: &Config) -> Result<ReplayReport, DeadLetterError> {
    let path = path_of(config)?;
    let before = read(&path)?;
    let (items, _) = parse_items(&before);
    let i = &config.influx;
    let client = InfluxClient::new(
        &i.url,
        &config.influx_api()?,
        Duration::from_millis(i.timeout_ms),
        i.gzip,
    )?;
    let limits = config.limits();
    let mut report = ReplayReport {
        path: path.clone(),
        ..Default::default()
    };
    let mut keep: Vec<String> = Vec::new();
    for item in items {
        let (entry, raw) = match item {
            Item::Bad(raw) => {
                keep.push(raw);
                continue;
            }
            Item::Entry(e, raw) => (e, raw),
        };
        report.entries += 1;
        if report.stopped.is_some() {
            report.not_tried += 1;
            keep.push(raw);
            continue;
        }
        let mut body = String::new();
        let mut invalid = None;
        let parsed = parse_lines(&entry.lines);
        for (k, (text, point)) in parsed.iter().enumerate() {
            let problem = match point {
                Err(e) => Some(e.to_string()),
                Ok(p) => wsingest_proto::lineproto::check_point(p, &limits)
                    .err()
                    .map(|e| e.to_string()),
            };
            if let Some(p) = problem {
                invalid = Some(format!("point {}: {p}", k + 1));
                break;
            }
            body.push_str(text);
            body.push('\n');
        }
        if parsed.is_empty() {
            invalid = Some("no points".into());
        }
        if let Some(why) = invalid {
            let why = format!("not valid any more, not sent: {why}");
            report.still_refused.push((entry.number, why.clone()));
            keep.push(restate(&entry, entry.status, &why));
            continue;
        }
        match write(&client, body).await {
            Ok(()) => {
                report.replayed_entries += 1;
                report.replayed_points += parsed.len();
            }
            Err(e) if is_retryable(e.status()) => {
                report.stopped = Some(match &e {
                    WriteError::Status {
                        status, message, ..
                    } if super::retry::is_operator_error(*status) => {
                        client.explain(*status, message)
                    }
                    _ => format!("InfluxDB is unavailable: {e}"),
                });
                report.not_tried += 1;
                keep.push(raw);
            }
            Err(WriteError::Status {
                status, message, ..
            }) => {
                report.still_refused.push((
                    entry.number,
                    format!("InfluxDB refused it again ({status}): {message}"),
                ));
                keep.push(restate(&entry, status, &message));
            }
            Err(e) => unreachable!("transport errors are retryable: {e}"),
        }
    }
    rewrite(&path, before.len() as u64, &keep)?;
    Ok(report)
}

/// One write with two quick retries for a blip; then the caller stops.
async fn write(client: &InfluxClient, body: String) -> Result<(), WriteError> {
    let body = Bytes::from(body);
    let mut last = None;
    for wait in [0, 200, 1000] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        match client.write(body.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if is_retryable(e.status()) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("three attempts failed"))
}

/// The entry's line with a new status and reason (its time is kept: when
/// the points were first refused).
fn restate(e: &Entry, status: u16, error: &str) -> String {
    serde_json::to_string(&Stored {
        time: e.time.clone(),
        status,
        error: error.to_string(),
        lines: e.lines.clone(),
    })
    .expect("entry serializes")
}

/// Replace the first `read_len` bytes of the file (what replay read) with
/// `keep`, keeping whatever the server appended since, under the lock the
/// server takes to append.
fn rewrite(path: &Path, read_len: u64, keep: &[String]) -> Result<(), DeadLetterError> {
    let werr = |source| DeadLetterError::Write {
        path: path.into(),
        source,
    };
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && keep.is_empty() => return Ok(()),
        Err(e) => return Err(werr(e)),
    };
    f.lock().map_err(werr)?;
    let mut all = Vec::new();
    f.read_to_end(&mut all).map_err(werr)?;
    let tail = all.get(read_len as usize..).unwrap_or_default();
    let mut out = Vec::with_capacity(keep.iter().map(|k| k.len() + 1).sum::<usize>() + tail.len());
    for k in keep {
        out.extend_from_slice(k.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(tail);
    write_in_place(&mut f, &out).map_err(werr)
}

fn write_in_place(f: &mut File, content: &[u8]) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(0))?;
    f.write_all(content)?;
    f.set_len(content.len() as u64)?;
    f.sync_all()
}

/// Empty the file; `yes` confirms. Returns how many entries were deleted.
pub fn purge(config: &Config, yes: bool) -> Result<usize, DeadLetterError> {
    let path = path_of(config)?;
    let count = list(config)?.entries.len();
    if !yes {
        return Err(DeadLetterError::NotConfirmed { path, count });
    }
    let werr = |source| DeadLetterError::Write {
        path: path.clone(),
        source,
    };
    match std::fs::OpenOptions::new().write(true).open(&path) {
        Ok(mut f) => {
            f.lock().map_err(werr)?;
            // Count again under the lock: what is deleted is what is said.
            let n = parse_items(&read(&path)?).0.len();
            write_in_place(&mut f, b"").map_err(werr)?;
            Ok(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(werr(e)),
    }
}

impl std::fmt::Display for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.entries.is_empty() && self.unreadable.is_empty() {
            return writeln!(f, "{}: no dead letters", self.path.display());
        }
        writeln!(
            f,
            "{}: {} entries ({} points)",
            self.path.display(),
            self.entries.len(),
            self.entries.iter().map(|e| e.points).sum::<usize>()
        )?;
        writeln!(
            f,
            "{:>4}  {:<25}  {:<20}  {:>6}  {:>6}  reason",
            "#", "time", "device", "status", "points"
        )?;
        for e in &self.entries {
            let mut reason: String = e.error.chars().take(100).collect();
            if reason.len() < e.error.len() {
                reason.push('…');
            }
            writeln!(
                f,
                "{:>4}  {:<25}  {:<20}  {:>6}  {:>6}  {}",
                e.number,
                e.time,
                e.devices.join(","),
                e.status,
                e.points,
                reason
            )?;
        }
        for u in &self.unreadable {
            writeln!(
                f,
                "line {}: not an entry ({}); left as it is",
                u.line, u.detail
            )?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "entry {} (line {} of the file)", self.number, self.line)?;
        writeln!(f, "time:    {}", self.time)?;
        writeln!(f, "devices: {}", self.devices.join(", "))?;
        writeln!(f, "status:  {}", self.status)?;
        writeln!(f, "reason:  {}", self.error)?;
        writeln!(f, "points:  {}", self.points)?;
        for l in self.lines.lines() {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, url: &str) -> Config {
        let mut c = Config::default();
        c.influx.url = url.into();
        c.influx.dead_letter_path = Some(dir.join("dl.jsonl"));
        c
    }

    #[tokio::test]
    async fn list_show_purge_and_a_stopped_replay_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "http://127.0.0.1:9");
        assert!(list(&c).unwrap().entries.is_empty());
        let dl =
            super::super::deadletter::DeadLetter::new(c.influx.dead_letter_path.clone(), 1 << 20);
        dl.record(
            400,
            "field type conflict",
            b"m,device=d-1 x=1 1\nm,device=d-1 x=2 2\n",
        )
        .await;
        dl.record(400, "other", b"m,device=d-2 y=\"a\" 3\n").await;
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("dl.jsonl"))
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        let l = list(&c).unwrap();
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries[0].devices, vec!["d-1"]);
        assert_eq!(l.entries[0].points, 2);
        assert_eq!(l.unreadable.len(), 1);
        assert!(l.to_string().contains("field type conflict"));
        assert_eq!(show(&c, 2).unwrap().devices, vec!["d-2"]);
        assert!(matches!(
            show(&c, 3),
            Err(DeadLetterError::NoEntry { count: 2, .. })
        ));
        // Nothing listens on port 9: replay stops, keeps every entry.
        let before = std::fs::read(dir.path().join("dl.jsonl")).unwrap();
        let r = replay(&c).await.unwrap();
        assert_eq!(r.replayed_entries, 0);
        assert!(r.stopped.as_deref().unwrap().contains("unavailable"), "{r}");
        assert_eq!(std::fs::read(dir.path().join("dl.jsonl")).unwrap(), before);
        assert!(matches!(
            purge(&c, false),
            Err(DeadLetterError::NotConfirmed { count: 2, .. })
        ));
        assert_eq!(purge(&c, true).unwrap(), 3);
        assert!(list(&c).unwrap().entries.is_empty());
    }

    #[test]
    fn no_path_says_which_key() {
        let mut c = Config::default();
        c.influx.dead_letter_path = None;
        let e = list(&c).unwrap_err().to_string();
        assert!(e.contains("influx.dead_letter_path"), "{e}");
    }
}
