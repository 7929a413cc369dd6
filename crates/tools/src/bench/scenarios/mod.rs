//! The benchmark scenarios. Each starts what it measures (a `wsingest serve`
//! child, influxd, mosquitto) in a temp dir and stops it afterwards.
//!
//! Layout: `throughput` (blackhole JSON vs mosquitto, CBOR batches),
//! `influx` (end to end into influxd vs its bulk rate), `sessions` (many
//! idle sessions), `latency` (ack latency under load); here what they share.

use std::path::PathBuf;

use tokio_tungstenite::tungstenite::Message;

use super::BenchError;

mod influx;
mod latency;
mod queue;
mod sessions;
mod throughput;

pub(super) use influx::{create_db, influx, influx_bulk_rate, influx_workload};
pub(super) use latency::latency;
pub(super) use queue::queue;
pub(super) use sessions::sessions;
pub(super) use throughput::{batch_cbor, blackhole};

/// A temp dir removed on drop.
pub(in crate::bench) struct TempDir(pub(in crate::bench) PathBuf);

impl TempDir {
    pub(in crate::bench) fn new(name: &str) -> Result<Self, BenchError> {
        let dir =
            std::env::temp_dir().join(format!("wsingest-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(in crate::bench) fn blackhole_args(flush_ms: u64) -> Vec<String> {
    let flush = flush_ms.to_string();
    [
        "--sink",
        "blackhole",
        "--allow-anonymous",
        "--batch-size",
        "1000",
        "--flush-interval",
        &flush,
    ]
    .map(String::from)
    .to_vec()
}

fn json_point(seq: u64) -> Message {
    Message::text(format!(
        r#"{{"seq":{seq},"measurement":"bench","fields":{{"v":{seq}.5}}}}"#
    ))
}

fn influx_args(url: &str, db: &str) -> Vec<String> {
    [
        "--allow-anonymous",
        "--influx-url",
        url,
        "--influx-db",
        db,
        "--batch-size",
        "5000",
        "--flush-interval",
        "100",
    ]
    .map(String::from)
    .to_vec()
}
