//! The optional on-disk buffer, in the Python and Node clients' format (a
//! directory written by one can be resumed by another): every message the
//! client takes is appended to `buffer.log` before `send` returns and marked
//! done once answered, so a process started later on the same directory
//! resends, with the same seq, ts and bytes, every message never answered.
//!
//! ```text
//! record = magic b"WSB1" | body length u32 LE | crc32(body) u32 LE | body
//! body   = kind u8 | seq u64 LE | rest
//!   kind 1 "message": rest = points u32 LE | binary u8 | frame bytes
//!   kind 2 "done":    rest empty (acked, or refused for good)
//!   kind 3 "next":    rest empty; the next seq to use (after a compaction)
//! ```
//!
//! Appends are single writes on an `O_APPEND` file: a crash or `kill -9` of
//! the process loses nothing the kernel has; with `fsync` each append is
//! also flushed to the device (survives power loss, one disk flush per
//! message). A torn last record is cut off on load. The log is compacted
//! (rewritten with only the pending messages, atomically by rename) when it
//! holds mostly done records. `LOCK` (flock) keeps a second process out.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::wire::Frame;

const MAGIC: &[u8; 4] = b"WSB1";
const HEADER: usize = 12;
const BODY: usize = 9;
const KIND_MESSAGE: u8 = 1;
const KIND_DONE: u8 = 2;
const KIND_NEXT: u8 = 3;
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// A message read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub seq: u64,
    pub frame: Frame,
    pub points: u32,
}

/// An append-only log of unanswered messages in a directory.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    path: PathBuf,
    fsync: bool,
    _lock: File,
    file: File,
    bytes: u64,
    live_bytes: u64,
    live_sizes: HashMap<u64, u64>,
}

fn record(kind: u8, seq: u64, rest: &[&[u8]]) -> Vec<u8> {
    let len = BODY + rest.iter().map(|r| r.len()).sum::<usize>();
    let mut body = Vec::with_capacity(HEADER + len);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&(len as u32).to_le_bytes());
    body.extend_from_slice(&[0; 4]);
    body.push(kind);
    body.extend_from_slice(&seq.to_le_bytes());
    for r in rest {
        body.extend_from_slice(r);
    }
    let crc = crc32fast::hash(&body[HEADER..]);
    body[8..12].copy_from_slice(&crc.to_le_bytes());
    body
}

fn message_record(seq: u64, frame: &Frame, points: u32) -> Vec<u8> {
    let (binary, raw): (u8, &[u8]) = match frame {
        Frame::Binary(b) => (1, b),
        Frame::Text(t) => (0, t.as_bytes()),
        _ => (1, &[]),
    };
    record(KIND_MESSAGE, seq, &[&points.to_le_bytes(), &[binary], raw])
}

impl DiskBuffer {
    /// Open (or create) the buffer in `dir`: the pending messages in seq
    /// order and the next seq to use.
    pub fn open(dir: &Path, fsync: bool) -> io::Result<(DiskBuffer, Vec<Stored>, u64)> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))?;
        // SAFETY: flock(2) on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("in use by another process ({e})"),
            ));
        }
        let path = dir.join("buffer.log");
        let mut data = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut data)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (pending, sizes, next_seq, good) = parse(&data);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if (good as usize) < data.len() {
            // A torn or corrupt tail, never acknowledged as taken: cut it off.
            file.set_len(good)?;
        }
        let buf = DiskBuffer {
            dir: dir.to_path_buf(),
            path,
            fsync,
            _lock: lock,
            file,
            bytes: good,
            live_bytes: sizes.values().sum(),
            live_sizes: sizes,
        };
        let mut stored: Vec<Stored> = pending.into_values().collect();
        stored.sort_by_key(|s| s.seq);
        Ok((buf, stored, next_seq))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, rec: &[u8]) -> io::Result<()> {
        self.file.write_all(rec)?;
        self.bytes += rec.len() as u64;
        if self.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Take `seq` (before `send` returns).
    pub fn append(&mut self, seq: u64, frame: &Frame, points: u32) -> io::Result<()> {
        let rec = message_record(seq, frame, points);
        self.write(&rec)?;
        self.live_sizes.insert(seq, rec.len() as u64);
        self.live_bytes += rec.len() as u64;
        Ok(())
    }

    /// `seq` was answered. `pending` (the messages still unanswered) and
    /// `next_seq` are written out when the log is compacted.
    pub fn done<'a>(
        &mut self,
        seq: u64,
        pending: impl Iterator<Item = (u64, &'a Frame, u32)>,
        next_seq: u64,
    ) -> io::Result<()> {
        self.write(&record(KIND_DONE, seq, &[]))?;
        self.live_bytes -= self.live_sizes.remove(&seq).unwrap_or(0);
        if self.bytes > COMPACT_MIN_BYTES && self.bytes > 4 * self.live_bytes {
            self.compact(pending, next_seq)?;
        }
        Ok(())
    }

    fn compact<'a>(
        &mut self,
        pending: impl Iterator<Item = (u64, &'a Frame, u32)>,
        next_seq: u64,
    ) -> io::Result<()> {
        let mut data = record(KIND_NEXT, next_seq, &[]);
        let mut sizes = HashMap::new();
        for (seq, frame, points) in pending {
            let rec = message_record(seq, frame, points);
            sizes.insert(seq, rec.len() as u64);
            data.extend_from_slice(&rec);
        }
        let tmp = self.path.with_extension("log.tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.bytes = data.len() as u64;
        self.live_bytes = sizes.values().sum();
        self.live_sizes = sizes;
        Ok(())
    }
}

type Parsed = (HashMap<u64, Stored>, HashMap<u64, u64>, u64, u64);

/// Read records up to the first torn or corrupt one.
fn parse(data: &[u8]) -> Parsed {
    let mut pending = HashMap::new();
    let mut sizes = HashMap::new();
    let mut next_seq = 1u64;
    let mut pos = 0usize;
    while pos + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[pos + 8..pos + 12].try_into().unwrap());
        let end = pos + HEADER + len;
        if &data[pos..pos + 4] != MAGIC || end > data.len() || len < BODY {
            break;
        }
        let body = &data[pos + HEADER..end];
        if crc32fast::hash(body) != crc {
            break;
        }
        let kind = body[0];
        let seq = u64::from_le_bytes(body[1..9].try_into().unwrap());
        match kind {
            KIND_MESSAGE if body.len() >= BODY + 5 => {
                let points = u32::from_le_bytes(body[9..13].try_into().unwrap());
                let raw = &body[14..];
                let frame = if body[13] == 1 {
                    Frame::binary(raw.to_vec())
                } else {
                    match String::from_utf8(raw.to_vec()) {
                        Ok(t) => Frame::text(t),
                        Err(_) => break,
                    }
                };
                pending.insert(seq, Stored { seq, frame, points });
                sizes.insert(seq, (end - pos) as u64);
                next_seq = next_seq.max(seq + 1);
            }
            KIND_DONE => {
                pending.remove(&seq);
                sizes.remove(&seq);
                next_seq = next_seq.max(seq + 1);
            }
            KIND_NEXT => next_seq = next_seq.max(seq),
            _ => break,
        }
        pos = end;
    }
    (pending, sizes, next_seq, pos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_messages_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut b, stored, next) = DiskBuffer::open(dir.path(), false).unwrap();
            assert_eq!((stored.len(), next), (0, 1));
            b.append(1, &Frame::text("m1"), 1).unwrap();
            b.append(2, &Frame::binary(vec![0xa1, 0, 1]), 3).unwrap();
            b.append(3, &Frame::text("m3"), 1).unwrap();
            b.done(1, std::iter::empty(), 4).unwrap();
            // A second process is kept out while this one holds it.
            assert!(DiskBuffer::open(dir.path(), false).is_err());
        }
        // A torn record at the end (a crash mid-append).
        let log = dir.path().join("buffer.log");
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&message_record(4, &Frame::text("m4"), 1)[..10])
            .unwrap();
        let (_b, stored, next) = DiskBuffer::open(dir.path(), false).unwrap();
        assert_eq!(
            stored,
            vec![
                Stored {
                    seq: 2,
                    frame: Frame::binary(vec![0xa1, 0, 1]),
                    points: 3
                },
                Stored {
                    seq: 3,
                    frame: Frame::text("m3"),
                    points: 1
                },
            ]
        );
        assert_eq!(next, 4);
        assert_eq!(
            std::fs::metadata(&log).unwrap().len(),
            3 * (12 + 14) + 2 + 3 + 2 + (12 + 9),
            "the torn tail is cut off"
        );
    }

    #[test]
    fn the_record_layout_is_the_python_clients() {
        // buffer.log written by clients/python for (seq 5, "hi", 1 point),
        // then done(5): struct.pack("<4sII", b"WSB1", len, crc32(body)) + body.
        let rec = message_record(5, &Frame::text("hi"), 1);
        assert_eq!(&rec[..4], b"WSB1");
        assert_eq!(u32::from_le_bytes(rec[4..8].try_into().unwrap()), 9 + 5 + 2);
        assert_eq!(&rec[12..21], &[1, 5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&rec[21..], &[1, 0, 0, 0, 0, b'h', b'i']);
        assert_eq!(
            u32::from_le_bytes(rec[8..12].try_into().unwrap()),
            crc32fast::hash(&rec[12..])
        );
    }

    #[test]
    fn compaction_keeps_only_the_pending() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _, _) = DiskBuffer::open(dir.path(), false).unwrap();
        let big = Frame::text("x".repeat(10_000));
        for seq in 1..=200 {
            b.append(seq, &big, 1).unwrap();
        }
        for seq in 1..200 {
            let keep = [(200u64, &big, 1u32)];
            b.done(seq, keep.into_iter(), 201).unwrap();
        }
        assert!(std::fs::metadata(b.path()).unwrap().len() < 100_000);
        drop(b);
        let (_b, stored, next) = DiskBuffer::open(dir.path(), false).unwrap();
        assert_eq!((stored.len(), stored[0].seq, next), (1, 200, 201));
    }
}
