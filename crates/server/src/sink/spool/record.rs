//! The spool's record codec, sans-IO: bytes in, records out, no files.
//!
//! ```text
//! record  := magic[4] | len: u32 LE | crc: u32 LE | payload[len]
//! crc     := CRC-32 (IEEE) of (len as 4 LE bytes || payload)
//! payload := seq: u64 LE | count: u32 LE | count × (bytes: u32 LE, points: u32 LE) | body
//! ```
//!
//! `seq` numbers records across the whole spool (it survives rotation and
//! restarts, so the replay checkpoint can name a record). The message table
//! keeps the boundaries of the messages whose lines make up `body`, so that a
//! replayed batch InfluxDB refuses can be split down to the refused message,
//! exactly as a live batch is.
//!
//! The CRC covers the length, so a flipped length is caught like a flipped
//! payload byte. The magic lets a reader find the next record after a corrupt
//! one without trusting the corrupt length; it starts with 0xF5, a byte that
//! never occurs in UTF-8, so line-protocol text cannot contain it.

/// Marks the start of every record.
pub const MAGIC: [u8; 4] = [0xF5, b'W', b'S', b'R'];
/// magic + len + crc.
pub const HEADER_LEN: usize = 12;
/// seq + count.
const PAYLOAD_FIXED: usize = 12;
/// Per message: bytes + points.
const MESSAGE_META: usize = 8;
/// No record is larger than this; a larger length is corruption, not a
/// reason to allocate.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// One message's share of a record's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageMeta {
    pub bytes: u32,
    pub points: u32,
}

/// A decoded record, borrowing its body from the buffer it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub messages: Vec<MessageMeta>,
    pub body: &'a [u8],
}

impl RecordRef<'_> {
    pub fn points(&self) -> u64 {
        self.messages.iter().map(|m| u64::from(m.points)).sum()
    }
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record of `len` bytes (header included).
    Record { record: RecordRef<'a>, len: usize },
    /// The buffer ends inside a record whose header looks valid: a torn
    /// write when this is the end of the file, corruption otherwise.
    Incomplete,
    /// Not a valid record.
    Corrupt(Corruption),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    BadMagic,
    BadLength,
    BadChecksum,
    BadMessageTable,
}

/// Size of the encoded record for `messages` and a body of `body_len` bytes.
pub fn encoded_len(messages: usize, body_len: usize) -> usize {
    HEADER_LEN + PAYLOAD_FIXED + messages * MESSAGE_META + body_len
}

/// Append one record to `out`. The caller guarantees that the message table
/// describes `body` (its byte counts sum to `body.len()`).
pub fn encode(seq: u64, messages: &[MessageMeta], body: &[u8], out: &mut Vec<u8>) {
    debug_assert_eq!(
        messages.iter().map(|m| m.bytes as usize).sum::<usize>(),
        body.len()
    );
    let payload_len = PAYLOAD_FIXED + messages.len() * MESSAGE_META + body.len();
    assert!(
        payload_len <= MAX_PAYLOAD,
        "record of {payload_len} bytes is over the limit"
    );
    let start = out.len();
    out.reserve(HEADER_LEN + payload_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for m in messages {
        out.extend_from_slice(&m.bytes.to_le_bytes());
        out.extend_from_slice(&m.points.to_le_bytes());
    }
    out.extend_from_slice(body);
    let crc = checksum(&out[start + 4..start + 8], &out[start + HEADER_LEN..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Decode the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_LEN {
        // A prefix of the magic at the very end is a torn header.
        let n = buf.len().min(4);
        return if buf[..n] == MAGIC[..n] {
            Decoded::Incomplete
        } else {
            Decoded::Corrupt(Corruption::BadMagic)
        };
    }
    if buf[..4] != MAGIC {
        return Decoded::Corrupt(Corruption::BadMagic);
    }
    let len = u32_at(buf, 4) as usize;
    if !(PAYLOAD_FIXED..=MAX_PAYLOAD).contains(&len) {
        return Decoded::Corrupt(Corruption::BadLength);
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Decoded::Incomplete;
    };
    if checksum(&buf[4..8], payload) != u32_at(buf, 8) {
        return Decoded::Corrupt(Corruption::BadChecksum);
    }
    match parse_payload(payload) {
        Some(record) => Decoded::Record {
            record,
            len: HEADER_LEN + len,
        },
        // A valid checksum over an invalid table: written by a buggy
        // version, or a checksum collision. Either way not replayable.
        None => Decoded::Corrupt(Corruption::BadMessageTable),
    }
}

fn parse_payload(p: &[u8]) -> Option<RecordRef<'_>> {
    let seq = u64::from_le_bytes(p[..8].try_into().ok()?);
    let count = u32_at(p, 8) as usize;
    let table_end = count
        .checked_mul(MESSAGE_META)?
        .checked_add(PAYLOAD_FIXED)?;
    let table = p.get(PAYLOAD_FIXED..table_end)?;
    let messages: Vec<MessageMeta> = table
        .chunks_exact(MESSAGE_META)
        .map(|c| MessageMeta {
            bytes: u32_at(c, 0),
            points: u32_at(c, 4),
        })
        .collect();
    let body = &p[table_end..];
    let sum: u64 = messages.iter().map(|m| u64::from(m.bytes)).sum();
    (sum == body.len() as u64).then_some(RecordRef {
        seq,
        messages,
        body,
    })
}

/// The offset of the first valid record at or after `from`, if any. Used to
/// step over a corrupt region without trusting anything inside it.
pub fn find_next(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + HEADER_LEN <= buf.len() {
        let rel = buf[at..].windows(4).position(|w| w == MAGIC)?;
        at += rel;
        if let Decoded::Record { .. } = decode(&buf[at..]) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// The valid records and bad regions of a buffer, in order: what recovery
/// needs to know about a segment's bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// `(offset, len, seq, points)` of each valid record.
    pub records: Vec<(usize, usize, u64, u64)>,
    /// Corrupt regions followed by a valid record: `offset..end`.
    pub corrupt: Vec<std::ops::Range<usize>>,
    /// Bytes after the last valid record that hold no valid record (a torn
    /// write, or corruption up to the end): `offset..buf.len()`, maybe empty.
    pub tail: std::ops::Range<usize>,
    /// Whether the tail is a plausible torn write (a valid-looking header
    /// whose record runs past the end) rather than garbage.
    pub tail_torn: bool,
}

/// Walk `buf` from `from`, classifying every byte.
pub fn scan(buf: &[u8], from: usize) -> Scan {
    let mut s = Scan::default();
    let mut at = from;
    while at < buf.len() {
        match decode(&buf[at..]) {
            Decoded::Record { record, len } => {
                s.records.push((at, len, record.seq, record.points()));
                at += len;
            }
            bad => match find_next(buf, at + 1) {
                Some(next) => {
                    s.corrupt.push(at..next);
                    at = next;
                }
                None => {
                    s.tail_torn = bad == Decoded::Incomplete;
                    s.tail = at..buf.len();
                    return s;
                }
            },
        }
    }
    s.tail = buf.len()..buf.len();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(seq: u64, msgs: &[&str]) -> Vec<u8> {
        let meta: Vec<MessageMeta> = msgs
            .iter()
            .map(|m| MessageMeta {
                bytes: m.len() as u32,
                points: 1,
            })
            .collect();
        let body: Vec<u8> = msgs.concat().into_bytes();
        let mut out = Vec::new();
        encode(seq, &meta, &body, &mut out);
        out
    }

    #[test]
    fn round_trip() {
        let r = record(7, &["a f=1 1\n", "b f=2 2\nc f=3 3\n"]);
        assert_eq!(r.len(), encoded_len(2, 24));
        let Decoded::Record { record, len } = decode(&r) else {
            panic!()
        };
        assert_eq!(len, r.len());
        assert_eq!(record.seq, 7);
        assert_eq!(
            record.messages,
            vec![
                MessageMeta {
                    bytes: 8,
                    points: 1
                },
                MessageMeta {
                    bytes: 16,
                    points: 1
                }
            ]
        );
        assert_eq!(record.body, b"a f=1 1\nb f=2 2\nc f=3 3\n");
    }

    #[test]
    fn every_torn_prefix_is_incomplete_and_every_flip_is_caught() {
        let r = record(1, &["m f=1 1\n", "n s=\"x\" 2\n"]);
        for cut in 0..r.len() {
            assert_eq!(decode(&r[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        for i in 0..r.len() {
            for bit in 0..8 {
                let mut bad = r.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    matches!(decode(&bad), Decoded::Corrupt(_) | Decoded::Incomplete),
                    "flip of bit {bit} at {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn scan_steps_over_corruption_and_reports_the_tail() {
        let a = record(1, &["a f=1 1\n"]);
        let b = record(2, &["b f=1 1\n"]);
        let c = record(3, &["c f=1 1\n"]);
        let mut buf = [a.clone(), b.clone(), c.clone()].concat();
        buf[a.len() + HEADER_LEN + 3] ^= 0xFF; // inside b's payload
        buf.extend_from_slice(&c[..c.len() / 2]); // a torn fourth record
        let s = scan(&buf, 0);
        assert_eq!(
            s.records.iter().map(|r| r.2).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(s.corrupt, vec![a.len()..a.len() + b.len()]);
        assert_eq!(s.tail, a.len() + b.len() + c.len()..buf.len());
        assert!(s.tail_torn);
        // Garbage at the end is a tail too, but not a torn write.
        let mut g = a.clone();
        g.extend_from_slice(b"garbage!garbage!");
        let s = scan(&g, 0);
        assert_eq!(s.tail, a.len()..g.len());
        assert!(!s.tail_torn);
    }

    #[test]
    fn corrupt_length_does_not_allocate_or_hide_later_records() {
        let a = record(1, &["a f=1 1\n"]);
        let b = record(2, &["b f=1 1\n"]);
        let mut buf = [a.clone(), b.clone()].concat();
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&buf), Decoded::Corrupt(Corruption::BadLength));
        buf[4..8].copy_from_slice(&1000u32.to_le_bytes()); // runs past the end
        assert_eq!(decode(&buf), Decoded::Incomplete);
        let s = scan(&buf, 0);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.records[0].2, 2);
        assert_eq!(s.corrupt, vec![0..a.len()]);
    }

    proptest! {
        #[test]
        fn prop_round_trip(seq: u64, msgs in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..64), any::<u32>()), 0..8)) {
            let meta: Vec<MessageMeta> = msgs.iter().map(|(b, p)| MessageMeta { bytes: b.len() as u32, points: *p }).collect();
            let body: Vec<u8> = msgs.iter().flat_map(|(b, _)| b.clone()).collect();
            let mut out = vec![0xAA; 3]; // encoding appends
            encode(seq, &meta, &body, &mut out);
            let Decoded::Record { record, len } = decode(&out[3..]) else { panic!("not decoded") };
            prop_assert_eq!(len, out.len() - 3);
            prop_assert_eq!(record.seq, seq);
            prop_assert_eq!(record.messages, meta);
            prop_assert_eq!(record.body, &body[..]);
        }

        #[test]
        fn prop_scan_never_returns_garbage(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
            noise in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let mut buf = Vec::new();
            let mut originals = Vec::new();
            for (i, b) in bodies.iter().enumerate() {
                let meta = [MessageMeta { bytes: b.len() as u32, points: 1 }];
                let start = buf.len();
                encode(i as u64, &meta, b, &mut buf);
                originals.push(buf[start..].to_vec());
            }
            for (at, x) in &noise {
                let i = at.index(buf.len());
                buf[i] ^= x | 1;
            }
            // Every record the scan returns is byte-for-byte one we wrote.
            let s = scan(&buf, 0);
            for (off, len, seq, _) in s.records {
                prop_assert_eq!(&buf[off..off + len], &originals[seq as usize][..]);
            }
        }
    }
}
