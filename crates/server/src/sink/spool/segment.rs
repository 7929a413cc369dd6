//! Segment files and the checkpoint file: naming, creation with the fsyncs
//! that make a new file durable, and recovery of a segment found on start.
//!
//! A segment is `<first seq, 20 digits>.seg`: an 8-byte header
//! ([`SEGMENT_MAGIC`]) then records ([`super::record`]). The name is the seq
//! of the first record written to it, so names sort in record order and stay
//! unique across restarts.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Scan};

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WSSPOOL1";
pub const SEGMENT_HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;
/// Where bad bytes found on start (or while replaying) are moved.
pub const CORRUPT_DIR: &str = "corrupt";
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_MAGIC: [u8; 4] = *b"WSCK";

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// The segments in `dir`, oldest first. Files that are not segments are
/// left alone.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if stem.len() == 20
            && let Ok(seq) = stem.parse::<u64>()
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// fsync a directory, so that files created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create a new, empty segment and make it durable: the header is synced,
/// then the directory, so a record acked in this file cannot lose its file.
pub fn create(dir: &Path, first_seq: u64) -> io::Result<File> {
    let path = segment_path(dir, first_seq);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    f.write_all(&SEGMENT_MAGIC)?;
    f.sync_data()?;
    sync_dir(dir)?;
    Ok(f)
}

/// What a segment held when the spool opened, after recovery.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// File length after recovery: header plus valid records only.
    pub len: u64,
    pub records: u64,
    pub points: u64,
    pub last_seq: Option<u64>,
    /// Bytes moved to the corrupt directory, and into how many files.
    pub corrupt_bytes: u64,
    pub corrupt_regions: u64,
    /// Bytes of a torn last write dropped from the end (a crash during an
    /// append that was never acknowledged).
    pub torn_bytes: u64,
    /// The file was not a segment at all and was moved aside whole.
    pub moved_aside: bool,
}

/// Check a segment found on start and leave it holding valid records only.
///
/// - A torn write at the end of the `last` segment (a crash during an append,
///   which was never acked) is cut off; its bytes are kept in `corrupt/`.
/// - Corrupt regions anywhere else are copied to `corrupt/`, reported, and
///   the segment is rewritten without them (a temp file renamed over it).
/// - A file without the segment header is moved to `corrupt/` whole, except
///   a `last` file shorter than a header (a crash while creating it), which
///   is simply removed.
pub fn recover(dir: &Path, path: &Path, last: bool) -> io::Result<Recovered> {
    let buf = fs::read(path)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment")
        .to_string();
    let mut r = Recovered::default();
    if buf.len() < SEGMENT_MAGIC.len() || buf[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        let torn_header =
            last && buf.len() < SEGMENT_MAGIC.len() && SEGMENT_MAGIC.starts_with(&buf);
        if torn_header {
            r.torn_bytes = buf.len() as u64;
        } else {
            save_aside(dir, &name, 0, &buf)?;
            r.corrupt_bytes = buf.len() as u64;
            r.corrupt_regions = 1;
            r.moved_aside = true;
        }
        fs::remove_file(path)?;
        sync_dir(dir)?;
        return Ok(r);
    }
    let Scan {
        records,
        corrupt,
        tail,
        tail_torn,
    } = record::scan(&buf, SEGMENT_MAGIC.len());
    r.records = records.len() as u64;
    r.points = records.iter().map(|x| x.3).sum();
    r.last_seq = records.last().map(|x| x.2);
    for range in &corrupt {
        save_aside(dir, &name, range.start as u64, &buf[range.clone()])?;
        r.corrupt_bytes += range.len() as u64;
        r.corrupt_regions += 1;
    }
    if !tail.is_empty() {
        save_aside(dir, &name, tail.start as u64, &buf[tail.clone()])?;
        if last && tail_torn {
            r.torn_bytes = tail.len() as u64;
        } else {
            r.corrupt_bytes += tail.len() as u64;
            r.corrupt_regions += 1;
        }
    }
    if corrupt.is_empty() {
        if !tail.is_empty() {
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(tail.start as u64)?;
            f.sync_all()?;
        }
        r.len = tail.start as u64;
        return Ok(r);
    }
    // Rewrite with the valid records only, atomically.
    let mut clean = Vec::with_capacity(buf.len());
    clean.extend_from_slice(&SEGMENT_MAGIC);
    for &(off, len, _, _) in &records {
        clean.extend_from_slice(&buf[off..off + len]);
    }
    let tmp = path.with_extension("seg.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&clean)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)?;
    r.len = clean.len() as u64;
    Ok(r)
}

/// Keep bad bytes for an operator to inspect, instead of deleting them.
pub fn save_aside(dir: &Path, segment: &str, offset: u64, bytes: &[u8]) -> io::Result<PathBuf> {
    let cdir = dir.join(CORRUPT_DIR);
    fs::create_dir_all(&cdir)?;
    // Never overwrite earlier evidence (a seq can be reused after a torn write).
    let mut n = 0;
    let (path, mut f) = loop {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!(".{n}")
        };
        let path = cdir.join(format!("{segment}.{offset}{suffix}.bad"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => break (path, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    };
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(path)
}

/// The replay checkpoint: the seq of the first record not yet replayed,
/// with a checksum. Written in place (16 bytes, one sector); a torn or
/// missing checkpoint reads as 0, which replays everything present again:
/// safe, because a replayed record is idempotent in InfluxDB.
pub struct Checkpoint {
    file: File,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> io::Result<(Checkpoint, u64)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(CHECKPOINT))?;
        let mut buf = [0u8; 16];
        let value = match file.read_exact_at(&mut buf, 0) {
            Ok(()) => decode_checkpoint(&buf).unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        Ok((Checkpoint { file }, value))
    }

    /// Record `next`; durable only after [`Checkpoint::sync`] (not needed
    /// for correctness, see the type's doc).
    pub fn store(&self, next: u64) -> io::Result<()> {
        self.file.write_all_at(&encode_checkpoint(next), 0)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn encode_checkpoint(next: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&CHECKPOINT_MAGIC);
    b[4..12].copy_from_slice(&next.to_le_bytes());
    let crc = crc32fast::hash(&b[..12]);
    b[12..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_checkpoint(b: &[u8; 16]) -> Option<u64> {
    let crc = u32::from_le_bytes(b[12..].try_into().ok()?);
    (b[..4] == CHECKPOINT_MAGIC && crc32fast::hash(&b[..12]) == crc)
        .then(|| u64::from_le_bytes(b[4..12].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::spool::record::{MessageMeta, encode};

    fn rec(seq: u64, body: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            seq,
            &[MessageMeta {
                bytes: body.len() as u32,
                points: 1,
            }],
            body.as_bytes(),
            &mut out,
        );
        out
    }

    #[test]
    fn checkpoint_round_trips_and_a_torn_one_reads_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (c, v) = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(v, 0);
        c.store(42).unwrap();
        drop(c);
        assert_eq!(Checkpoint::open(dir.path()).unwrap().1, 42);
        let p = dir.path().join(CHECKPOINT);
        let mut b = fs::read(&p).unwrap();
        b[5] ^= 1;
        fs::write(&p, b).unwrap();
        assert_eq!(Checkpoint::open(dir.path()).unwrap().1, 0);
    }

    #[test]
    fn torn_tail_of_last_segment_is_cut_and_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let (a, b) = (rec(1, "a f=1 1\n"), rec(2, "b f=1 1\n"));
        let mut bytes = [&SEGMENT_MAGIC[..], &a, &b[..b.len() - 3]].concat();
        fs::write(&path, &bytes).unwrap();
        let r = recover(dir.path(), &path, true).unwrap();
        assert_eq!(
            (r.records, r.last_seq, r.torn_bytes, r.corrupt_bytes),
            (1, Some(1), b.len() as u64 - 3, 0)
        );
        bytes.truncate(8 + a.len());
        assert_eq!(fs::read(&path).unwrap(), bytes);
        assert_eq!(
            fs::read_dir(dir.path().join(CORRUPT_DIR)).unwrap().count(),
            1
        );
    }

    #[test]
    fn corrupt_middle_record_is_moved_aside_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let (a, b, c) = (
            rec(1, "a f=1 1\n"),
            rec(2, "b f=1 1\n"),
            rec(3, "c f=1 1\n"),
        );
        let mut bytes = [&SEGMENT_MAGIC[..], &a, &b, &c].concat();
        bytes[8 + a.len() + 14] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let r = recover(dir.path(), &path, false).unwrap();
        assert_eq!(
            (r.records, r.corrupt_regions, r.corrupt_bytes),
            (2, 1, b.len() as u64)
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            [&SEGMENT_MAGIC[..], &a, &c].concat()
        );
        let aside = fs::read_dir(dir.path().join(CORRUPT_DIR))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(fs::read(aside.path()).unwrap().len(), b.len());
    }

    #[test]
    fn not_a_segment_is_moved_aside_and_a_torn_header_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        fs::write(&path, b"hello, this is not a spool segment").unwrap();
        let r = recover(dir.path(), &path, false).unwrap();
        assert!(r.moved_aside && !path.exists());
        fs::write(&path, &SEGMENT_MAGIC[..3]).unwrap();
        let r = recover(dir.path(), &path, true).unwrap();
        assert!(!r.moved_aside && r.torn_bytes == 3 && !path.exists());
    }
}
