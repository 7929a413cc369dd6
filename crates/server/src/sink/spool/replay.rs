//! Replay: drains the spool into InfluxDB, in order, alongside live traffic.
//!
//! One task per server. It reads records in append order and writes up to
//! `slots` of them at once (the `spool.replay_share` of `influx.concurrency`;
//! live batches take the other write slots, so replay never crowds them
//! out). Results are taken in read order, so the checkpoint only ever moves
//! over a prefix of replayed records (invariant 2 of [`super`]).
//!
//! A record InfluxDB cannot take yet is tried again, with backoff capped at
//! [`MAX_PROBE_INTERVAL`]: while the database is down, these attempts are
//! what notices it is back (then the sink stops being degraded and live
//! batches go to InfluxDB again). A record InfluxDB refuses (400) is split
//! down to the refused messages, which go to the dead-letter file, exactly as
//! for live batches; the rest is written. Replay runs until the spool is
//! empty, then waits for the next append; a new process finds the spool on
//! start and drains it the same way.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{OwnedRecord, Reader, Spool};
use crate::sink::retry::Backoff;
use crate::sink::writer::{Attempts, InfluxSink, MsgResult};

/// Longest wait between two attempts at a record while InfluxDB is down.
/// An attempt against a down server costs a refused connection, so trying
/// often is cheap, and it bounds how long recovery takes to notice.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Run replay until `shutdown`. Records in flight when it fires are not
/// committed: the next start replays them again (idempotent).
pub async fn run(
    sink: Arc<InfluxSink>,
    spool: Arc<Spool>,
    slots: usize,
    shutdown: CancellationToken,
) {
    let slots = slots.max(1);
    let mut reader = Some(spool.reader());
    let mut inflight = FuturesOrdered::new();
    let mut at_end = false;
    let mut drain = Drain::default();
    loop {
        while !at_end && inflight.len() < slots {
            match next_record(&mut reader).await {
                Ok(Some(rec)) => {
                    drain.start(&spool, &rec);
                    let sink = sink.clone();
                    let stop = shutdown.clone();
                    inflight.push_back(async move { replay_record(&sink, rec, &stop).await });
                }
                Ok(None) => at_end = true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            done = inflight.next(), if !inflight.is_empty() => {
                let Some(Some((seq, points, bytes, waited))) = done else { break };
                let s = spool.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || s.commit(seq)).await.expect("commit does not panic") {
                    tracing::error!(error = %e, "cannot record replay progress; the record may be replayed again");
                }
                let st = spool.stats();
                let m = sink.metrics().spool();
                m.replayed(points, bytes, st.bytes);
                m.set_size(st.bytes, st.pending_records);
                drain.replayed(points, waited);
                if at_end && inflight.is_empty() {
                    drain.finish();
                }
            }
            _ = spool.appended() => at_end = false,
        }
    }
    if let Err(e) = spool.sync() {
        tracing::warn!(error = %e, "cannot sync the spool checkpoint");
    }
}

async fn next_record(
    reader: &mut Option<Reader>,
) -> Result<Option<OwnedRecord>, super::SpoolError> {
    let mut r = reader.take().expect("reader is put back after each read");
    let (r, next) = tokio::task::spawn_blocking(move || {
        let next = r.next_record();
        (r, next)
    })
    .await
    .expect("reading does not panic");
    *reader = Some(r);
    next
}

/// Write one record until every message is in InfluxDB or dead-lettered:
/// its seq, points, body bytes, and whether it had to wait for InfluxDB.
/// `None` when shut down first.
async fn replay_record(
    sink: &InfluxSink,
    rec: OwnedRecord,
    shutdown: &CancellationToken,
) -> Option<(u64, u64, u64, bool)> {
    let mut ranges: Vec<Range<usize>> = Vec::with_capacity(rec.messages.len());
    let mut at = 0;
    for m in &rec.messages {
        ranges.push(at..at + m.bytes as usize);
        at += m.bytes as usize;
    }
    let points: Vec<u32> = rec.messages.iter().map(|m| m.points).collect();
    let mut pending: Vec<usize> = (0..ranges.len()).collect();
    let retry = sink.retry_config();
    let mut backoff = Backoff::new(
        retry.initial_backoff,
        retry.max_backoff.min(MAX_PROBE_INTERVAL),
    );
    let mut reported = false;
    loop {
        let results = tokio::select! {
            r = sink.write_split(&rec.body, &ranges, &points, &pending, Attempts::Once) => r,
            _ = shutdown.cancelled() => return None,
        };
        let mut still = Vec::new();
        let mut reason = None;
        for (&i, r) in pending.iter().zip(results) {
            if let MsgResult::Unavailable(why) = r {
                still.push(i);
                reason = Some(why);
            }
        }
        if still.is_empty() {
            return Some((rec.seq, rec.points(), rec.body.len() as u64, reported));
        }
        pending = still;
        sink.set_degraded();
        if !reported {
            tracing::debug!(seq = rec.seq, reason = ?reason, "replay waits for InfluxDB");
            reported = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next(None)) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Progress of one drain, for the log lines that say how fast it went.
#[derive(Default)]
struct Drain {
    started: Option<Instant>,
    records: u64,
    points: u64,
}

impl Drain {
    fn start(&mut self, spool: &Spool, rec: &OwnedRecord) {
        if self.started.is_none() {
            let st = spool.stats();
            tracing::info!(
                from_seq = rec.seq,
                pending_records = st.pending_records,
                bytes = st.bytes,
                "replaying the spool"
            );
            self.started = Some(Instant::now());
        }
    }

    /// A record is in InfluxDB. One that waited for InfluxDB to come back
    /// restarts the clock: the rate is of replay, not of the outage.
    fn replayed(&mut self, points: u64, waited: bool) {
        if waited {
            self.started = Some(Instant::now());
            self.records = 0;
            self.points = 0;
            return;
        }
        self.records += 1;
        self.points += points;
    }

    fn finish(&mut self) {
        if let Some(t) = self.started.take() {
            let secs = t.elapsed().as_secs_f64();
            tracing::info!(
                records = self.records,
                points = self.points,
                secs = format!("{secs:.2}"),
                points_per_sec = (self.points as f64 / secs.max(1e-6)) as u64,
                "spool drained"
            );
        }
        self.records = 0;
        self.points = 0;
    }
}
