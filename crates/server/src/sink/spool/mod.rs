//! The crash-safe disk spool: where a batch goes when InfluxDB cannot take
//! it, so that its devices can be acked anyway, and from where it is
//! replayed, in order, once InfluxDB answers again.
//!
//! # Design
//!
//! A small append-only log in one directory (`spool.dir`), not an embedded
//! database: the access pattern is strictly FIFO (append at the tail, replay
//! from the head, delete whole files), which a log does in a few hundred
//! lines whose every fsync is visible here.
//!
//! ```text
//! spool.dir/
//!   LOCK                          flock: one wsingest process per spool
//!   checkpoint                    seq of the first record not yet replayed (+ CRC)
//!   00000000000000000001.seg      segment: header, then records
//!   00000000000000000731.seg      named after the seq of its first record
//!   corrupt/<segment>.<offset>.bad  bad bytes found on start, kept for inspection
//! ```
//!
//! **Record** ([`record`]): `magic | len | crc32(len, payload) | payload`,
//! payload = `seq | message table | line-protocol body`. One record is one
//! batch (or the part of it InfluxDB could not take), with the boundaries of
//! its messages so a refused replay can be split down to the refused message.
//!
//! **Segments** ([`segment`]): appended to until `segment_bytes`, then a new
//! one is started. Only the newest segment of the running process is ever
//! written; every segment found on start is sealed.
//!
//! # Invariants
//!
//! 1. **Fsync before ack.** [`Spool::append`] returns only after the record's
//!    bytes are written and `fdatasync`ed, and, for a record in a new
//!    segment, after the segment's header and its directory entry were
//!    synced too. Only then does the sink ack the messages.
//! 2. **FIFO, nothing skipped.** Records get consecutive `seq`s in append
//!    order. The reader returns them in that order; the checkpoint only moves
//!    forward, to just past a record whose every predecessor is replayed. A
//!    record at or after the checkpoint is never deleted.
//! 3. **At least once.** A record may be replayed twice (a crash between the
//!    InfluxDB write and the checkpoint, or a lost checkpoint). Every line
//!    carries its explicit timestamp (points sent without `ts` were stamped
//!    on receipt, before batching), so a second write overwrites the same
//!    point with the same values: no duplicate point in InfluxDB.
//! 4. **Bounded.** The sum of segment file sizes never exceeds `max_bytes`.
//!    When an append would pass it, the append fails with [`SpoolError::Full`]
//!    and the batch stays in memory, unacked (see [`super::writer`]).
//! 5. **Space comes back.** A segment is deleted once all its records are
//!    replayed; a fully drained spool holds no segment at all.
//! 6. **`next_seq >= checkpoint`**, always (also after every record was
//!    deleted), so a new record can never be mistaken for a replayed one.
//!
//! # Recovery on start ([`Spool::open`])
//!
//! - Take the directory lock (a second process on the same spool is refused:
//!   two writers would interleave records).
//! - Read the checkpoint; if it is missing or its CRC fails, use 0 (replay
//!   everything present again: safe by invariant 3).
//! - Scan every segment: valid records are kept; a **torn tail** of the last
//!   segment (a crash during an append, which therefore was never acked) is
//!   cut off; **corrupt regions** (flipped bytes) anywhere are copied to
//!   `corrupt/`, reported at error level, and the segment is rewritten
//!   without them; the scan resynchronises on the next record's magic so one
//!   bad record does not hide the ones after it. Start never fails because of
//!   bad data, only because of I/O errors or the lock.
//! - Segments whose records are all before the checkpoint are deleted.
//! - New appends go to a new segment.
//!
//! Corruption found later, while replaying (bit rot), is handled the same
//! way by the [`Reader`]: reported, moved aside, skipped.
//!
//! # Failure while appending
//!
//! A failed write or fsync (disk full, I/O error) truncates the segment back
//! to its last synced length and seals it; the next append starts a new
//! segment. Because a failed `fsync` may have dropped dirty pages, nothing in
//! the failed range is ever trusted or acked; the batch stays unacked in
//! memory and is tried again.

mod reader;
pub mod record;
pub mod replay;
pub mod segment;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use reader::Reader;
pub use record::MessageMeta;
use segment::{Checkpoint, SEGMENT_HEADER_LEN};

/// The `[spool]` section of the config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Spool batches InfluxDB cannot take. Off: such batches are nacked
    /// `storage_unavailable` after the retry budget, as without a spool.
    pub enabled: bool,
    /// Directory of the spool (created if missing). One process per spool.
    pub dir: PathBuf,
    /// Upper bound on the spool's size on disk. When full, batches wait in
    /// memory unacked; when memory is full too, sessions get 1013.
    pub max_bytes: u64,
    /// Size at which a new segment file is started (capped at a quarter of
    /// `max_bytes` so that replayed space comes back in small steps).
    pub segment_bytes: u64,
    /// Share of the InfluxDB write slots (`influx.concurrency`) replay may
    /// use while live traffic flows, in (0, 1]. At least one slot.
    pub replay_share: f64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            enabled: true,
            dir: PathBuf::from("data/spool"),
            max_bytes: 1024 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            replay_share: 0.5,
        }
    }
}

impl SpoolConfig {
    /// The segment size actually used.
    pub fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.min(self.max_bytes / 4).max(4096)
    }

    /// Write slots replay may hold out of `concurrency`.
    pub fn replay_slots(&self, concurrency: usize) -> usize {
        ((concurrency as f64 * self.replay_share).round() as usize).clamp(1, concurrency.max(1))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {dir} is in use by another wsingest process (it holds {dir}/LOCK)")]
    Locked { dir: PathBuf },
    #[error("spool I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool is full: {used} of {max} bytes used, a record of {needed} bytes does not fit")]
    Full { used: u64, max: u64, needed: u64 },
    #[error(
        "a batch of {bytes} bytes can never fit in a spool of {max} bytes (raise spool.max_bytes)"
    )]
    TooLarge { bytes: u64, max: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`Spool::open`] found, for the start-up log line and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub records: u64,
    pub points: u64,
    pub bytes: u64,
    pub checkpoint: u64,
    pub torn_bytes: u64,
    pub corrupt_bytes: u64,
    pub corrupt_regions: u64,
}

/// A record read back for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub seq: u64,
    pub messages: Vec<MessageMeta>,
    pub body: Bytes,
}

impl OwnedRecord {
    pub fn points(&self) -> u64 {
        self.messages.iter().map(|m| u64::from(m.points)).sum()
    }
}

/// A snapshot of the spool's state, for `/readyz`, metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolStats {
    pub bytes: u64,
    pub max_bytes: u64,
    pub segments: usize,
    /// Records appended and not yet replayed.
    pub pending_records: u64,
    /// Whether the last append failed with an I/O error.
    pub failing: bool,
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// Synced length: the reader never reads past it.
    len: u64,
    last_seq: Option<u64>,
}

struct State {
    segments: VecDeque<Segment>,
    /// Open for appending on `segments.back()`; `None`: the next append
    /// starts a new segment.
    active: Option<File>,
    next_seq: u64,
    checkpoint: u64,
    ckpt: Checkpoint,
    bytes: u64,
    failing: bool,
    buf: Vec<u8>,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    appended: tokio::sync::Notify,
    freed: tokio::sync::Notify,
    gauges: Gauges,
    _lock: File,
}

/// Lock-free copies of a few [`State`] figures.
#[derive(Default)]
struct Gauges {
    bytes: AtomicU64,
    segments: AtomicU64,
    pending: AtomicU64,
    failing: AtomicBool,
}

impl Spool {
    /// Open (or create) the spool in `config.dir`, recovering what a previous
    /// process left (see the module doc).
    pub fn open(config: &SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { dir }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let (ckpt, checkpoint) = Checkpoint::open(&dir).map_err(io_err(&dir))?;
        let found = segment::list(&dir).map_err(io_err(&dir))?;
        let mut report = OpenReport {
            checkpoint,
            ..OpenReport::default()
        };
        let mut segments = VecDeque::new();
        let mut next_seq = checkpoint;
        let n = found.len();
        for (i, (first_seq, path)) in found.into_iter().enumerate() {
            let r = segment::recover(&dir, &path, i + 1 == n).map_err(io_err(&path))?;
            report.torn_bytes += r.torn_bytes;
            report.corrupt_bytes += r.corrupt_bytes;
            report.corrupt_regions += r.corrupt_regions;
            if r.corrupt_bytes > 0 {
                tracing::error!(
                    segment = %path.display(), bytes = r.corrupt_bytes, regions = r.corrupt_regions,
                    moved_to = %dir.join(segment::CORRUPT_DIR).display(),
                    "corrupt spool data: the records in it cannot be replayed; moved aside"
                );
            }
            if r.torn_bytes > 0 {
                tracing::warn!(segment = %path.display(), bytes = r.torn_bytes, "dropped the torn end of the spool (a write cut by a crash, never acked)");
            }
            if r.moved_aside || !path.exists() {
                continue;
            }
            next_seq = next_seq.max(first_seq);
            if let Some(last) = r.last_seq {
                next_seq = next_seq.max(last + 1);
            }
            if r.last_seq.is_none_or(|last| last < checkpoint) {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            report.segments += 1;
            report.records += r.records;
            report.points += r.points;
            report.bytes += r.len;
            segments.push_back(Segment {
                first_seq,
                path,
                len: r.len,
                last_seq: r.last_seq,
            });
        }
        let spool = Spool {
            max_bytes: config.max_bytes,
            segment_bytes: config.effective_segment_bytes(),
            state: Mutex::new(State {
                segments,
                active: None,
                next_seq,
                checkpoint,
                ckpt,
                bytes: report.bytes,
                failing: false,
                buf: Vec::new(),
            }),
            appended: tokio::sync::Notify::new(),
            gauges: Gauges::default(),
            freed: tokio::sync::Notify::new(),
            _lock: lock,
            dir,
        };
        spool.publish(&spool.lock());
        Ok((spool, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as
        // the files (every step is ordered so); keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append one record and fsync it (blocking I/O: call from a blocking
    /// thread). Returns its seq. On `Ok` the record is durable.
    pub fn append(&self, messages: &[MessageMeta], body: &[u8]) -> Result<u64, SpoolError> {
        let rec_len = record::encoded_len(messages.len(), body.len()) as u64;
        if rec_len + SEGMENT_HEADER_LEN > self.max_bytes || rec_len > record::MAX_PAYLOAD as u64 {
            return Err(SpoolError::TooLarge {
                bytes: rec_len,
                max: self.max_bytes,
            });
        }
        let mut guard = self.lock();
        let result = self.append_locked(&mut guard, rec_len, messages, body);
        self.publish(&guard);
        drop(guard);
        if result.is_ok() {
            self.appended.notify_one();
        }
        result
    }

    fn append_locked(
        &self,
        st: &mut State,
        rec_len: u64,
        messages: &[MessageMeta],
        body: &[u8],
    ) -> Result<u64, SpoolError> {
        let need_new = match (&st.active, st.segments.back()) {
            (Some(_), Some(back)) => {
                back.last_seq.is_some() && back.len + rec_len > self.segment_bytes
            }
            _ => true,
        };
        let extra = if need_new { SEGMENT_HEADER_LEN } else { 0 };
        if st.bytes + extra + rec_len > self.max_bytes {
            return Err(SpoolError::Full {
                used: st.bytes,
                max: self.max_bytes,
                needed: rec_len + extra,
            });
        }
        if need_new {
            self.start_segment(st)?;
        }
        let seq = st.next_seq;
        st.buf.clear();
        record::encode(seq, messages, body, &mut st.buf);
        let back = st.segments.back_mut().expect("a segment was just ensured");
        let file = st.active.as_ref().expect("active segment");
        let offset = back.len;
        if let Err(e) = file
            .write_all_at(&st.buf, offset)
            .and_then(|()| file.sync_data())
        {
            // Nothing past `offset` is trusted: cut it, seal the segment.
            let _ = file.set_len(offset);
            st.active = None;
            st.failing = true;
            return Err(io_err(&back.path)(e));
        }
        back.len += rec_len;
        back.last_seq = Some(seq);
        st.bytes += rec_len;
        st.next_seq += 1;
        st.failing = false;
        if st.buf.capacity() > 8 * 1024 * 1024 {
            st.buf = Vec::new(); // do not keep a huge buffer for ever
        }
        Ok(seq)
    }

    /// Copy the figures [`Spool::stats`] and [`Spool::has_room`] read, so
    /// that those never wait on the lock (held across an fsync).
    fn publish(&self, st: &State) {
        let g = &self.gauges;
        g.bytes.store(st.bytes, Ordering::Relaxed);
        g.segments
            .store(st.segments.len() as u64, Ordering::Relaxed);
        g.pending
            .store(st.next_seq - st.checkpoint, Ordering::Relaxed);
        g.failing.store(st.failing, Ordering::Relaxed);
    }

    fn start_segment(&self, st: &mut State) -> Result<(), SpoolError> {
        st.active = None;
        // A sealed segment without records (its first write failed) would
        // collide with the new one's name: remove it.
        if let Some(back) = st.segments.back()
            && back.last_seq.is_none()
        {
            let back = st.segments.pop_back().expect("just checked");
            let _ = fs::remove_file(&back.path);
            st.bytes -= back.len;
        }
        let path = segment::segment_path(&self.dir, st.next_seq);
        match segment::create(&self.dir, st.next_seq) {
            Ok(f) => {
                st.segments.push_back(Segment {
                    first_seq: st.next_seq,
                    path,
                    len: SEGMENT_HEADER_LEN,
                    last_seq: None,
                });
                st.bytes += SEGMENT_HEADER_LEN;
                st.active = Some(f);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                st.failing = true;
                Err(io_err(&path)(e))
            }
        }
    }

    /// Record that every record up to and including `seq` is in InfluxDB;
    /// delete the segments that holds nothing else. Blocking I/O.
    pub fn commit(&self, seq: u64) -> Result<(), SpoolError> {
        let mut guard = self.lock();
        let result = self.commit_locked(&mut guard, seq);
        self.publish(&guard);
        drop(guard);
        if result? {
            self.freed.notify_waiters();
        }
        Ok(())
    }

    /// Returns whether space was freed.
    fn commit_locked(&self, st: &mut State, seq: u64) -> Result<bool, SpoolError> {
        if seq < st.checkpoint {
            return Ok(false);
        }
        st.checkpoint = seq + 1;
        debug_assert!(
            st.checkpoint <= st.next_seq,
            "committed a record never appended"
        );
        st.ckpt.store(st.checkpoint).map_err(io_err(&self.dir))?;
        let mut freed = false;
        while let Some(front) = st.segments.front() {
            if front.last_seq.is_some_and(|last| last >= st.checkpoint) {
                break;
            }
            if st.segments.len() == 1 && st.active.is_some() {
                if front.last_seq.is_none() {
                    break; // a fresh active segment: keep it
                }
                st.active = None; // drained: give the space back
            }
            let front = st.segments.pop_front().expect("front exists");
            fs::remove_file(&front.path).map_err(io_err(&front.path))?;
            st.bytes -= front.len;
            freed = true;
        }
        Ok(freed)
    }

    /// Sync the checkpoint (on shutdown; not needed for correctness).
    pub fn sync(&self) -> Result<(), SpoolError> {
        self.lock().ckpt.sync().map_err(io_err(&self.dir))
    }

    /// Never waits for an append in progress.
    pub fn stats(&self) -> SpoolStats {
        let g = &self.gauges;
        SpoolStats {
            bytes: g.bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
            segments: g.segments.load(Ordering::Relaxed) as usize,
            pending_records: g.pending.load(Ordering::Relaxed),
            failing: g.failing.load(Ordering::Relaxed),
        }
    }

    /// Whether an append of `bytes` would fit now (for `/readyz`).
    pub fn has_room(&self, bytes: u64) -> bool {
        let st = self.stats();
        !st.failing && st.bytes + bytes + SEGMENT_HEADER_LEN <= self.max_bytes
    }

    /// Resolves after the next append (or at once if one happened since the
    /// last call). One waiter: the replayer.
    pub async fn appended(&self) {
        self.appended.notified().await
    }

    /// Resolves when space is freed by replay.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// A reader from the oldest record not yet replayed.
    pub fn reader(self: &Arc<Self>) -> Reader {
        Reader::new(self.clone())
    }
}

#[cfg(test)]
mod tests;
