//! Reading the spool back for replay: records in append order, from the
//! checkpoint on, never past the synced length of a segment; corruption met
//! on the way (bit rot since start) is reported, moved aside and skipped.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::record::{self, Decoded, HEADER_LEN};
use super::segment::{self, SEGMENT_HEADER_LEN};
use super::{OwnedRecord, Spool, SpoolError, io_err};

/// Where a [`Reader`] is.
#[derive(Debug, Clone, Copy)]
struct Pos {
    segment: u64,
    offset: u64,
    /// Everything in `segment` was read: go on with the next one.
    done: bool,
}

/// Reads records in order, from the checkpoint on. Sees only synced bytes.
pub struct Reader {
    spool: Arc<Spool>,
    pos: Option<Pos>,
    file: Option<File>,
}

impl Reader {
    pub(super) fn new(spool: Arc<Spool>) -> Self {
        Reader {
            spool,
            pos: None,
            file: None,
        }
    }

    /// The next record, or `None` when the reader is at the end (wait for
    /// [`Spool::appended`]). Blocking I/O.
    pub fn next_record(&mut self) -> Result<Option<OwnedRecord>, SpoolError> {
        loop {
            let (first_seq, path, len, has_next, checkpoint) = {
                let st = self.spool.lock();
                let idx = match self.pos {
                    None => (!st.segments.is_empty()).then_some(0),
                    Some(p) if p.done => st.segments.iter().position(|s| s.first_seq > p.segment),
                    Some(p) => st.segments.iter().position(|s| s.first_seq >= p.segment),
                };
                let Some(idx) = idx else { return Ok(None) };
                let s = &st.segments[idx];
                (
                    s.first_seq,
                    s.path.clone(),
                    s.len,
                    idx + 1 < st.segments.len(),
                    st.checkpoint,
                )
            };
            if self.pos.is_none_or(|p| p.segment != first_seq) {
                self.pos = Some(Pos {
                    segment: first_seq,
                    offset: SEGMENT_HEADER_LEN,
                    done: false,
                });
                self.file = None;
            }
            let pos = self.pos.as_mut().expect("set above");
            if pos.offset >= len {
                if has_next {
                    pos.done = true;
                    continue;
                }
                return Ok(None);
            }
            if self.file.is_none() {
                match File::open(&path) {
                    Ok(f) => self.file = Some(f),
                    // Deleted by a commit since we looked: look again.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
            let file = self.file.as_ref().expect("opened above");
            let avail = len - pos.offset;
            let mut header = [0u8; HEADER_LEN];
            let want = if avail >= HEADER_LEN as u64 {
                file.read_exact_at(&mut header, pos.offset)
                    .map_err(io_err(&path))?;
                HEADER_LEN as u64
                    + u64::from(u32::from_le_bytes(
                        header[4..8].try_into().expect("4 bytes"),
                    ))
            } else {
                avail
            };
            if header[..4] == record::MAGIC && want <= avail {
                let mut buf = vec![0u8; want as usize];
                file.read_exact_at(&mut buf, pos.offset)
                    .map_err(io_err(&path))?;
                if let Decoded::Record { record, len } = record::decode(&buf) {
                    pos.offset += len as u64;
                    if record.seq < checkpoint {
                        continue; // replayed before a restart
                    }
                    let seq = record.seq;
                    let messages = record.messages;
                    let body_start = buf.len() - record.body.len();
                    let body = Bytes::from(buf).slice(body_start..);
                    return Ok(Some(OwnedRecord {
                        seq,
                        messages,
                        body,
                    }));
                }
            }
            // Corruption inside synced bytes (bit rot since start): keep the
            // bad bytes aside and resynchronise on the next valid record.
            let mut rest = vec![0u8; avail as usize];
            file.read_exact_at(&mut rest, pos.offset)
                .map_err(io_err(&path))?;
            let skip = record::find_next(&rest, 1).unwrap_or(rest.len());
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("segment");
            let aside = segment::save_aside(&self.spool.dir, name, pos.offset, &rest[..skip]);
            tracing::error!(
                segment = %path.display(), offset = pos.offset, bytes = skip,
                moved_to = ?aside.as_ref().map(|p| p.display().to_string()),
                "corrupt spool data while replaying: skipped, the records in it are lost"
            );
            pos.offset += skip as u64;
        }
    }
}
