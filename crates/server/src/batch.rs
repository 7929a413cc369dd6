//! The batcher: collects encoded lines from many sessions into InfluxDB write
//! requests, closed by size (points or bytes) or by the flush timer.
//!
//! Sans-IO: the timer lives in [`crate::pipeline`]; this type only decides
//! when a batch is full and remembers whose lines are in it, so that each
//! message can be acked (or nacked) once its batch is written.

use std::ops::Range;

use crate::entry::{Entry, Reply};

/// One message's lines inside a batch.
#[derive(Debug)]
pub struct BatchEntry {
    pub range: Range<usize>,
    pub points: u32,
    pub reply: Reply,
}

/// A write request body and the messages it carries. Messages are never
/// split across batches, so a message is acked as one.
#[derive(Debug, Default)]
pub struct Batch {
    pub body: Vec<u8>,
    pub entries: Vec<BatchEntry>,
    pub points: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

pub struct Batcher {
    max_points: usize,
    max_bytes: usize,
    current: Batch,
}

impl Batcher {
    pub fn new(max_points: usize, max_bytes: usize) -> Self {
        Batcher {
            max_points: max_points.max(1),
            max_bytes: max_bytes.max(1),
            current: Batch::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Add one message; returns the batch when this message filled it. A
    /// batch closes at the first message that reaches a limit, so one message
    /// larger than the limits travels alone.
    pub fn push(&mut self, entry: Entry) -> Option<Batch> {
        let start = self.current.body.len();
        self.current.body.extend_from_slice(&entry.lines);
        self.current.points += entry.points as usize;
        self.current.entries.push(BatchEntry {
            range: start..self.current.body.len(),
            points: entry.points,
            reply: entry.reply,
        });
        if self.current.points >= self.max_points || self.current.body.len() >= self.max_bytes {
            Some(self.take())
        } else {
            None
        }
    }

    /// Close the current batch (possibly empty).
    pub fn take(&mut self) -> Batch {
        let capacity = self.current.body.capacity();
        std::mem::replace(
            &mut self.current,
            Batch {
                body: Vec::with_capacity(capacity.min(self.max_bytes)),
                ..Batch::default()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Outcome, Reply};
    use tokio::sync::mpsc;

    fn entry(tx: &mpsc::Sender<Outcome>, line: &str, points: u32) -> Entry {
        let permit = tx.clone().try_reserve_owned().unwrap();
        Entry {
            lines: line.as_bytes().to_vec(),
            points,
            reply: Reply::new(None, permit),
        }
    }

    #[test]
    fn closes_on_points_and_keeps_messages_whole() {
        let (tx, _rx) = mpsc::channel(16);
        let mut b = Batcher::new(3, 1 << 20);
        assert!(b.push(entry(&tx, "a 1\n", 1)).is_none());
        let batch = b.push(entry(&tx, "b 1\nc 1\n", 2)).unwrap();
        assert_eq!(batch.points, 3);
        assert_eq!(batch.body, b"a 1\nb 1\nc 1\n");
        assert!(b.is_empty());
        let big = b.push(entry(&tx, "x\n", 10)).unwrap();
        assert_eq!(big.entries.len(), 1);
    }

    #[test]
    fn closes_on_bytes() {
        let (tx, _rx) = mpsc::channel(16);
        let mut b = Batcher::new(1000, 8);
        assert!(b.push(entry(&tx, "abc\n", 1)).is_none());
        assert!(b.push(entry(&tx, "defg\n", 1)).is_some());
    }
}
