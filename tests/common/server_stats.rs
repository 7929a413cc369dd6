//! What the server's own stats (`[observe]`, written to InfluxDB) hold so far:
//! for the tests that wait until every device and session shows up there
//! (tests/dashboards/, tests/dashboards_check.rs).

use wsingest_harness::Influxd;

/// How many devices, ended sessions and measurements have stats rows in `db`.
pub struct Seen {
    pub devices: usize,
    pub sessions: u64,
    pub measurements: usize,
}

pub async fn seen(influx: &Influxd, db: &str) -> Seen {
    let devices = influx
        .rows(
            db,
            "SELECT sum(points) FROM wsingest_device GROUP BY device",
        )
        .await
        .len();
    let sessions = influx.count(db, "wsingest_session", "messages").await;
    let measurements = influx
        .rows(
            db,
            "SELECT sum(points) FROM wsingest_measurement GROUP BY \"measurement\"",
        )
        .await
        .len();
    Seen {
        devices,
        sessions,
        measurements,
    }
}
