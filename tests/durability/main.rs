//! Delivery guarantees against real processes: influxd stopped and restarted
//! mid-run, `wsingest serve` killed with SIGKILL under load, a corrupt spool,
//! a full spool. The rule every test checks: an acked point is in InfluxDB in
//! the end, once; nothing is dropped silently.
//!
//! [`faults`]: influxd outages and kill -9 under load; [`spool`]: the
//! spool's files, bounds and replay; [`acks`]: ack modes and resends.

mod acks;
mod faults;
#[path = "../common/meters.rs"]
mod meters;
mod spool;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wsingest_harness::devices::{DeviceReport, DeviceSpec, MakeMessage, run_device};
use wsingest_harness::process::WsingestProcess;
use wsingest_harness::services::http;
use wsingest_harness::*;
use wsingest_server::config::{AckMode, Config};

/// Bytes in the spool's segment files.
fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
        .unwrap_or(0)
}

/// A config whose writer notices an outage (and its end) quickly.
fn fault_config(influx_url: &str, db: &str, spool_dir: &Path) -> Config {
    let mut c = test_config(influx_url, db);
    c.spool.dir = spool_dir.to_path_buf();
    c.influx.batch_size = 200;
    c.influx.retry_initial_ms = 20;
    c.influx.retry_max_ms = 200;
    c.influx.retry_max_elapsed_ms = 500;
    c.influx.timeout_ms = 3_000;
    c
}

/// The values of field `n` stored for `device`, in time order.
async fn stored_n(influx: &Influxd, db: &str, device: &str) -> Vec<u64> {
    influx
        .rows(
            db,
            &format!("SELECT n FROM telemetry WHERE device = '{device}'"),
        )
        .await
        .iter()
        .map(|r| r[1].as_f64().unwrap() as u64)
        .collect()
}

/// Start `devices` devices; device `d` connects to `url(d)` and sends the
/// seqs `seqs(d)`, built by `make`.
fn fleet(
    url: impl Fn(u64) -> String,
    devices: u64,
    seqs: impl Fn(u64) -> Vec<u64>,
    make: MakeMessage,
    gap: Duration,
    stop: &CancellationToken,
    acks: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<DeviceReport>> {
    (0..devices)
        .map(|d| {
            tokio::spawn(run_device(DeviceSpec {
                url: url(d),
                seqs: seqs(d),
                make: make.clone(),
                gap,
                settle: Duration::from_secs(60),
                stop: stop.clone(),
                acks: acks.clone(),
            }))
        })
        .collect()
}

async fn join(handles: Vec<tokio::task::JoinHandle<DeviceReport>>) -> Vec<DeviceReport> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
