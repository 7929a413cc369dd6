//! Spool tests: targeted recovery cases, then a property-based model test
//! (in the spirit of Vector's disk_v2 model tests): random sequences of
//! appends, reads, commits, restarts and crashes mid-append, checked against
//! a plain `VecDeque`.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::sync::Arc;

use proptest::prelude::*;

use super::segment::{CORRUPT_DIR, SEGMENT_HEADER_LEN};
use super::*;

fn config(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes,
        ..SpoolConfig::default()
    }
}

fn open(c: &SpoolConfig) -> (Arc<Spool>, OpenReport) {
    let (s, r) = Spool::open(c).unwrap();
    (Arc::new(s), r)
}

fn body(i: u64, len: usize) -> Vec<u8> {
    let mut b = format!("m,device=d{i} f={i} {i}\n").into_bytes();
    b.resize(len.max(b.len()), b'x');
    b
}

fn append(s: &Spool, b: &[u8]) -> Result<u64, SpoolError> {
    s.append(
        &[MessageMeta {
            bytes: b.len() as u32,
            points: 1,
        }],
        b,
    )
}

fn read_all(r: &mut Reader) -> Vec<OwnedRecord> {
    std::iter::from_fn(|| r.next_record().unwrap()).collect()
}

#[test]
fn append_read_commit_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), 1 << 20, 4096);
    let (s, report) = open(&c);
    assert_eq!(report, OpenReport::default());
    for i in 0..10 {
        assert_eq!(append(&s, &body(i, 700)).unwrap(), i);
    }
    assert!(
        s.stats().segments > 1,
        "700-byte records rotate 4 KiB segments"
    );
    let mut r = s.reader();
    let got = read_all(&mut r);
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(&got[3].body[..], &body(3, 700)[..]);
    s.commit(3).unwrap();
    let segments_before = s.stats().segments;
    drop(r);
    drop(s);
    let (s, report) = open(&c);
    assert_eq!(report.checkpoint, 4);
    assert!(report.segments <= segments_before);
    let got = read_all(&mut s.reader());
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (4..10).collect::<Vec<_>>()
    );
    // Appends after a restart continue the sequence, in a new segment.
    assert_eq!(append(&s, b"x f=1 1\n").unwrap(), 10);
}

#[test]
fn draining_deletes_every_segment_and_full_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), 16 * 1024, 4096);
    let (s, _) = open(&c);
    let mut n = 0;
    let err = loop {
        match append(&s, &body(n, 1000)) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(s.stats().bytes <= 16 * 1024);
    assert!(!s.has_room(1000));
    let mut r = s.reader();
    let got = read_all(&mut r);
    assert_eq!(got.len() as u64, n);
    s.commit(n - 1).unwrap();
    assert_eq!(s.stats().segments, 0);
    assert_eq!(s.stats().bytes, 0);
    assert_eq!(
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg"))
            .count(),
        0
    );
    // The reader follows into the segment started after the drain.
    assert_eq!(append(&s, b"y f=1 1\n").unwrap(), n);
    assert_eq!(r.next_record().unwrap().unwrap().seq, n);
    let too_big = vec![b'z'; 20 * 1024];
    assert!(matches!(
        append(&s, &too_big),
        Err(SpoolError::TooLarge { .. })
    ));
}

#[test]
fn a_second_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), 1 << 20, 1 << 16);
    let (_s, _) = open(&c);
    assert!(matches!(Spool::open(&c), Err(SpoolError::Locked { .. })));
}

#[test]
fn torn_tail_and_flipped_bytes_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), 1 << 20, 1 << 16);
    let (s, _) = open(&c);
    for i in 0..5 {
        append(&s, &body(i, 100)).unwrap();
    }
    drop(s);
    let seg = segment::list(dir.path()).unwrap()[0].1.clone();
    let mut bytes = fs::read(&seg).unwrap();
    let rec = record::encoded_len(1, 100);
    // Flip a byte inside record 2, and leave half a record at the end.
    bytes[SEGMENT_HEADER_LEN as usize + 2 * rec + 40] ^= 0x10;
    let mut torn = Vec::new();
    record::encode(
        5,
        &[MessageMeta {
            bytes: 100,
            points: 1,
        }],
        &body(5, 100),
        &mut torn,
    );
    bytes.extend_from_slice(&torn[..rec / 2]);
    fs::write(&seg, bytes).unwrap();
    let (s, report) = open(&c);
    assert_eq!(report.records, 4);
    assert_eq!(report.corrupt_regions, 1);
    assert_eq!(report.corrupt_bytes, rec as u64);
    assert_eq!(report.torn_bytes, (rec / 2) as u64);
    let got = read_all(&mut s.reader());
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![0, 1, 3, 4]
    );
    assert_eq!(
        fs::read_dir(dir.path().join(CORRUPT_DIR)).unwrap().count(),
        2
    );
    // The torn record's seq is free again: it was never acked.
    assert_eq!(append(&s, b"z f=1 1\n").unwrap(), 5);
}

#[test]
fn corruption_found_while_replaying_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), 1 << 20, 1 << 16);
    let (s, _) = open(&c);
    for i in 0..3 {
        append(&s, &body(i, 64)).unwrap();
    }
    let seg = segment::list(dir.path()).unwrap()[0].1.clone();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    let at = SEGMENT_HEADER_LEN + record::encoded_len(1, 64) as u64 + 30;
    f.write_all_at(b"\xff", at).unwrap();
    let got = read_all(&mut s.reader());
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(
        fs::read_dir(dir.path().join(CORRUPT_DIR)).unwrap().count(),
        1
    );
}

#[test]
fn a_file_that_is_not_a_segment_does_not_block_start() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), 1 << 20, 1 << 16);
    fs::write(
        segment::segment_path(dir.path(), 3),
        b"garbage garbage garbage",
    )
    .unwrap();
    fs::write(dir.path().join("notes.txt"), b"left alone").unwrap();
    let (s, report) = open(&c);
    assert_eq!(report.corrupt_regions, 1);
    assert!(dir.path().join("notes.txt").exists());
    assert!(!segment::segment_path(dir.path(), 3).exists());
    assert_eq!(append(&s, b"a f=1 1\n").unwrap(), 0);
    assert_eq!(read_all(&mut s.reader()).len(), 1);
}

/// What the model test does.
#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Read,
    Commit,
    /// Drop the spool (a clean stop or kill -9: the page cache survives).
    Restart,
    /// kill -9 during an append: part of a record reaches the file.
    CrashMidAppend(prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..1500).prop_map(Op::Append),
        5 => Just(Op::Read),
        4 => Just(Op::Commit),
        1 => Just(Op::Restart),
        1 => any::<prop::sample::Index>().prop_map(Op::CrashMidAppend),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn model(ops in prop::collection::vec(op(), 1..120)) {
        // The model checks logic, not the disk: on tmpfs (when there is one)
        // fsync costs nothing and the test runs in a second, not half a minute.
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm").unwrap(),
            false => tempfile::tempdir().unwrap(),
        };
        let max_bytes = 24 * 1024;
        let c = config(dir.path(), max_bytes, 4096);
        let (mut s, _) = open(&c);
        let mut reader = s.reader();
        // Model: acked records not yet committed, oldest first, and how many
        // of them the reader has handed out.
        let mut pending: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut read = 0usize;
        let mut next_body = 0u64;
        for op in ops {
            match op {
                Op::Append(len) => {
                    let b = body(next_body, len);
                    next_body += 1;
                    match append(&s, &b) {
                        Ok(seq) => {
                            if let Some((last, _)) = pending.back() {
                                prop_assert!(seq > *last);
                            }
                            pending.push_back((seq, b));
                        }
                        Err(SpoolError::Full { used, needed, .. }) => {
                            prop_assert!(used + needed > max_bytes);
                        }
                        Err(e) => prop_assert!(false, "append failed: {e}"),
                    }
                }
                Op::Read => {
                    let got = reader.next_record().unwrap();
                    match pending.get(read) {
                        Some((seq, b)) => {
                            let got = got.expect("an acked record is readable");
                            prop_assert_eq!(got.seq, *seq);
                            prop_assert_eq!(&got.body[..], &b[..]);
                            read += 1;
                        }
                        None => prop_assert!(got.is_none(), "read a record never acked"),
                    }
                }
                Op::Commit => {
                    if read > 0 {
                        let (seq, _) = pending.pop_front().unwrap();
                        s.commit(seq).unwrap();
                        read -= 1;
                    }
                }
                Op::Restart | Op::CrashMidAppend(_) => {
                    if let Op::CrashMidAppend(cut) = op {
                        let mut rec = Vec::new();
                        let b = body(999_999, 200);
                        record::encode(u64::MAX / 2, &[MessageMeta { bytes: b.len() as u32, points: 1 }], &b, &mut rec);
                        let cut = cut.index(rec.len());
                        if let Some((_, last)) = segment::list(dir.path()).unwrap().last() {
                            let mut f = fs::OpenOptions::new().append(true).open(last).unwrap();
                            f.write_all(&rec[..cut]).unwrap();
                        }
                    }
                    drop(reader);
                    drop(s);
                    let (s2, report) = open(&c);
                    prop_assert_eq!(report.corrupt_bytes, 0);
                    s = s2;
                    reader = s.reader();
                    read = 0; // uncommitted records are read again
                }
            }
            let st = s.stats();
            prop_assert!(st.bytes <= max_bytes, "{} > {}", st.bytes, max_bytes);
            // Every segment but the active one holds an uncommitted record.
            prop_assert!(st.segments <= pending.len() + 1);
            let on_disk: u64 = segment::list(dir.path()).unwrap().iter().map(|(_, p)| fs::metadata(p).unwrap().len()).sum();
            prop_assert_eq!(on_disk, st.bytes);
        }
        // Everything still pending is read back, in order, after a restart.
        drop(reader);
        drop(s);
        let (s, _) = open(&c);
        let got: Vec<u64> = read_all(&mut s.reader()).iter().map(|r| r.seq).collect();
        let want: Vec<u64> = pending.iter().map(|(seq, _)| *seq).collect();
        prop_assert_eq!(got, want);
    }
}
