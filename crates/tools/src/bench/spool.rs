//! Scenario `spool`: what an InfluxDB outage costs. How fast the disk spool
//! takes batches (append + fsync before the ack), what one fsync costs, and
//! how fast replay drains the spool into a real influxd, next to influxd's
//! own bulk write rate (the path batches take when InfluxDB is up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::procs;
use super::scenarios::{TempDir, create_db, influx_bulk_rate, influx_workload};
use super::{BenchArgs, BenchError, Report};
use wsingest_server::sink::deadletter::DeadLetter;
use wsingest_server::sink::influx::{Api, InfluxClient};
use wsingest_server::sink::spool::{MessageMeta, Spool, SpoolConfig, replay};
use wsingest_server::sink::writer::{InfluxSink, RetryConfig};

/// Points per spool record: the default `influx.batch_size`.
const BATCH_POINTS: usize = 5000;
/// Points per device message in the workload.
const MESSAGE_POINTS: usize = 100;

/// A batch as the writer spools it: its body and message table.
struct SpoolBatch {
    meta: Vec<MessageMeta>,
    body: Bytes,
}

/// Cut line protocol into messages of `MESSAGE_POINTS` lines, grouped into
/// batches of `points_per_batch`.
fn batches(lines: &[u8], points_per_batch: usize) -> Vec<SpoolBatch> {
    let mut out = Vec::new();
    let (mut batch_start, mut msg_start, mut in_msg, mut in_batch) = (0, 0, 0, 0);
    let mut meta = Vec::new();
    for (i, b) in lines.iter().enumerate() {
        if *b != b'\n' {
            continue;
        }
        in_msg += 1;
        in_batch += 1;
        if in_msg == MESSAGE_POINTS || i + 1 == lines.len() {
            meta.push(MessageMeta {
                bytes: (i + 1 - msg_start) as u32,
                points: in_msg as u32,
            });
            msg_start = i + 1;
            in_msg = 0;
        }
        if (in_batch >= points_per_batch && in_msg == 0) || i + 1 == lines.len() {
            out.push(SpoolBatch {
                meta: std::mem::take(&mut meta),
                body: Bytes::copy_from_slice(&lines[batch_start..=i]),
            });
            batch_start = i + 1;
            in_batch = 0;
        }
    }
    out
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

/// Append every batch, fsync each; returns each append's latency and the total.
async fn append_all(
    spool: Arc<Spool>,
    batches: Arc<Vec<SpoolBatch>>,
) -> Result<(Vec<Duration>, Duration), BenchError> {
    tokio::task::spawn_blocking(move || {
        let mut lat = Vec::with_capacity(batches.len());
        let started = Instant::now();
        for b in batches.iter() {
            let t = Instant::now();
            spool.append(&b.meta, &b.body)?;
            lat.push(t.elapsed());
        }
        let total = started.elapsed();
        lat.sort_unstable();
        Ok((lat, total))
    })
    .await
    .map_err(|e| BenchError::Load(e.to_string()))?
}

/// Replay the whole spool into `db` with `slots` concurrent writes; points/s.
async fn replay_rate(
    url: &str,
    db: &str,
    spool: Arc<Spool>,
    slots: usize,
    points: u64,
) -> Result<f64, BenchError> {
    let api = Api::V1 {
        db: db.into(),
        rp: None,
        user: None,
        password: None,
    };
    let client = InfluxClient::new(url, &api, Duration::from_secs(30), false)
        .map_err(|e| BenchError::Start(e.to_string()))?;
    let stop = CancellationToken::new();
    let retry = RetryConfig {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        max_elapsed: Duration::from_secs(10),
    };
    let sink = Arc::new(
        InfluxSink::new(client, DeadLetter::new(None, 0), retry).with_spool(
            spool.clone(),
            4,
            0,
            stop.clone(),
        ),
    );
    let started = Instant::now();
    let task = tokio::spawn(replay::run(sink, spool.clone(), slots, stop.clone()));
    while spool.stats().pending_records > 0 {
        if started.elapsed() > Duration::from_secs(600) {
            return Err(BenchError::Load("replay did not finish in 10 min".into()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = points as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = task.await;
    Ok(rate)
}

/// Scenario `spool`.
pub async fn spool(args: &BenchArgs) -> Result<Report, BenchError> {
    let (devices, per_device) = if args.smoke { (2, 10) } else { (10, 200) };
    let dir = TempDir::new("spool")?;
    let influx_dir = dir.0.join("influxd");
    std::fs::create_dir_all(&influx_dir)?;
    let (_influxd, url) = procs::influxd(&influx_dir).await?;
    for db in ["reference", "replay"] {
        create_db(&url, db).await?;
    }
    let (_, lines) = influx_workload(devices, per_device);
    let points = (devices as u64) * per_device * MESSAGE_POINTS as u64;
    let big = Arc::new(batches(&lines, BATCH_POINTS));
    let small = Arc::new(batches(
        &lines[..lines.len().min(2_000_000)],
        MESSAGE_POINTS,
    ));
    let config = |name: &str| SpoolConfig {
        dir: dir.0.join(name),
        max_bytes: 64 << 30,
        ..SpoolConfig::default()
    };

    // fsync per 5000-point batch: what an outage costs each batch.
    let (spool, _) = Spool::open(&config("spool"))?;
    let spool = Arc::new(spool);
    let (lat, total) = append_all(spool.clone(), big.clone()).await?;
    let append_rate = points as f64 / total.as_secs_f64();
    let bytes = lines.len() as f64;
    // One fsync per 100-point record: the cost of the fsync itself.
    let (small_spool, _) = Spool::open(&config("small"))?;
    let (small_lat, small_total) = append_all(Arc::new(small_spool), small.clone()).await?;

    let reference = influx_bulk_rate(&url, "reference", &lines, 4).await?;
    let default_slots = SpoolConfig::default().replay_slots(4);
    let replay_default = replay_rate(&url, "replay", spool.clone(), default_slots, points).await?;
    // Again, with every write slot (replay_share = 1).
    append_all(spool.clone(), big.clone()).await?;
    let replay_all = replay_rate(&url, "replay", spool, 4, points).await?;

    let mut rep = Report::new(
        "spool",
        "InfluxDB outage: 5000-point batches appended to the disk spool (fsync each), then replayed into a real influxd",
        "spool append ≥ influxd's bulk write rate (an outage does not slow acks); replay at the default share ≥ 0.5× it",
    );
    rep.add("points", points as f64, "");
    rep.add(
        "spool append points/s (fsync per batch)",
        append_rate,
        "points/s",
    );
    rep.add(
        "spool append MB/s",
        bytes / total.as_secs_f64() / 1e6,
        "MB/s",
    );
    rep.add(
        "append+fsync p50 (5000 points)",
        percentile_ms(&lat, 0.5),
        "ms",
    );
    rep.add(
        "append+fsync p99 (5000 points)",
        percentile_ms(&lat, 0.99),
        "ms",
    );
    rep.add(
        "append+fsync p50 (100 points)",
        percentile_ms(&small_lat, 0.5),
        "ms",
    );
    rep.add(
        "appends/s (100 points, fsync each)",
        small.len() as f64 / small_total.as_secs_f64(),
        "appends/s",
    );
    rep.add("influxd bulk points/s (reference)", reference, "points/s");
    rep.add(
        &format!("replay points/s ({default_slots} of 4 slots, default share)"),
        replay_default,
        "points/s",
    );
    rep.add("replay points/s (4 of 4 slots)", replay_all, "points/s");
    rep.summarize(
        &[
            "spool append points/s (fsync per batch)",
            "replay points/s (4 of 4 slots)",
        ],
        Some("influxd bulk points/s (reference)"),
    );
    rep.ratio = Some(append_rate / reference);
    rep.goal_met = Some(append_rate >= reference && replay_default >= 0.5 * reference);
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_messages_whole() {
        let lines: Vec<u8> = (0..250)
            .flat_map(|i| format!("m v={i} {i}\n").into_bytes())
            .collect();
        let b = batches(&lines, 200);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].meta.iter().map(|m| m.points).sum::<u32>(), 200);
        assert_eq!(b[1].meta.iter().map(|m| m.points).sum::<u32>(), 50);
        let body: Vec<u8> = b.iter().flat_map(|x| x.body.to_vec()).collect();
        assert_eq!(body, lines);
        for x in &b {
            assert_eq!(
                x.meta.iter().map(|m| m.bytes as usize).sum::<usize>(),
                x.body.len()
            );
        }
    }
}
