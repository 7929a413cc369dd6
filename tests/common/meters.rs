//! A fleet of simulated smart meters for the fault tests (tests/queue.rs,
//! tests/durability/): `wsingest simulate`'s devices, every device's
//! counters kept, quick to reconnect after a fault.

use std::path::Path;
use std::time::Duration;

use wsingest_tools::simulate::profile::Profile;
use wsingest_tools::simulate::report::Report;
use wsingest_tools::simulate::stats::Live;
use wsingest_tools::simulate::{Fleet, FleetConfig};

/// 20 meters sending `rate` messages/s each for `secs` to ws://127.0.0.1:`port`,
/// waiting up to 60 s for their last acks.
pub async fn start(port: u16, rate: f64, secs: u64, seed: u64) -> Fleet {
    let meter =
        Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("devices/smart_meter.toml"))
            .unwrap();
    Fleet::start(FleetConfig {
        url: format!("ws://127.0.0.1:{port}"),
        profiles: vec![(meter, 20)],
        rate: Some(rate),
        duration: Some(Duration::from_secs(secs)),
        drain_timeout: Duration::from_secs(60),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        seed,
        per_device: true,
        ..FleetConfig::default()
    })
    .await
    .unwrap()
}

/// Messages acked so far across the fleet.
pub fn acked(fleet: &Fleet) -> u64 {
    Live::get(&fleet.live().messages_acked)
}

/// Wait (up to 120 s) for the fleet's last acks; its report, checked to be
/// consistent (every device's counters add up).
pub async fn finish(fleet: Fleet) -> Report {
    let report = tokio::time::timeout(Duration::from_secs(120), fleet.finish())
        .await
        .expect("the fleet finishes");
    assert!(
        report.inconsistencies().is_empty(),
        "{:?}\n{}",
        report.inconsistencies(),
        report.table()
    );
    report
}
