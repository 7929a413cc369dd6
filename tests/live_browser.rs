//! The live view in a real headless Chromium: while simulated devices stream
//! through a real server into a real influxd, the page lists them, charts the
//! selected device's fields as they change, follows a click to another
//! device, and shows errors. Saves a screenshot as a test artifact
//! (`$CARGO_TARGET_TMPDIR/live-view.png`, or `$WSINGEST_SCREENSHOT` if set).

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use wsingest_harness::browser::Browser;
use wsingest_harness::*;

/// One simulated device: a value per field that moves every `period`.
fn device(
    url: String,
    measurement: &'static str,
    tags: serde_json::Value,
    fields: &'static [(&'static str, f64, f64)],
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut ws = connect(&url, None).await;
        let mut seq = 0u64;
        while !stop.is_cancelled() {
            seq += 1;
            let t = seq as f64;
            let f: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(name, base, amp)| {
                    (
                        name.to_string(),
                        json!(base + amp * (t / 3.0).sin() + 0.01 * t),
                    )
                })
                .collect();
            send_json(
                &mut ws,
                json!({"seq": seq, "measurement": measurement, "tags": tags, "fields": f}),
            )
            .await;
            next_json(&mut ws).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _ = ws.close(None).await;
    });
}

/// Points charted so far (the page counts them in `#chart[data-samples]`).
async fn samples(b: &mut Browser) -> u64 {
    b.eval("Number(document.getElementById('chart').dataset.samples)")
        .await
        .as_u64()
        .unwrap()
}

const ROWS: &str = "document.querySelectorAll('#devices tbody tr').length";

#[tokio::test]
async fn live_view_lists_devices_and_charts_the_selected_one() {
    let influx = Influxd::start().await;
    influx.create_db("lv").await;
    let server = TestServer::start(test_config(&influx.url, "lv")).await;
    let stop = CancellationToken::new();
    device(
        server.ws_url("/v1/devices/weather-01"),
        "weather",
        json!({"site": "roof"}),
        &[
            ("temp_c", 21.0, 2.0),
            ("humidity_pct", 55.0, 5.0),
            ("pressure_hpa", 1013.0, 1.5),
        ],
        stop.clone(),
    );
    device(
        server.ws_url("/v1/devices/meter-01"),
        "meter",
        json!({"phase": "L1"}),
        &[
            ("power_w", 800.0, 300.0),
            ("voltage_v", 230.0, 2.0),
            ("energy_kwh", 1520.0, 0.0),
        ],
        stop.clone(),
    );
    device(
        server.ws_url("/v1/devices/tracker-01"),
        "tracker",
        json!({"fleet": "vans"}),
        &[
            ("lat", 52.52, 0.01),
            ("lon", 13.40, 0.01),
            ("speed_kmh", 40.0, 20.0),
        ],
        stop.clone(),
    );

    let mut b = Browser::open(&server.http_url("/live"), 1400, 900).await;
    b.wait_for(20, "three device rows", &format!("{ROWS} >= 3"))
        .await;
    let ids = b.eval("[...document.querySelectorAll('#devices tbody tr')].map(r => r.dataset.device).sort().join(',')").await;
    assert_eq!(ids, json!("meter-01,tracker-01,weather-01"));
    let online = b
        .eval("document.getElementById('t-online').textContent")
        .await;
    assert_eq!(online, json!("3"));

    // The first device is selected by itself; its chart grows with new points.
    let first = b
        .wait_for(
            10,
            "a selected device with a chart",
            "document.getElementById('chart').dataset.device",
        )
        .await;
    let before = samples(&mut b).await;
    b.wait_for(
        15,
        "the chart to take three more samples",
        &format!(
            "Number(document.getElementById('chart').dataset.samples) >= {}",
            before + 3
        ),
    )
    .await;
    let fields = b
        .eval("[...document.querySelectorAll('#chart .chart')].map(c => c.dataset.field).join(',')")
        .await;
    assert!(
        !fields.as_str().unwrap().is_empty(),
        "charted fields for {first}: {fields}"
    );

    // A click selects another device: the chart follows with that device's fields.
    b.eval("document.querySelector('tr[data-device=\"meter-01\"]').click()")
        .await;
    b.wait_for(10, "meter-01 charted", "document.getElementById('chart').dataset.device === 'meter-01' && !!document.querySelector('#chart .chart[data-field=\"power_w\"]')").await;
    let meter_before = samples(&mut b).await;
    b.wait_for(
        15,
        "meter-01's chart to update",
        &format!(
            "Number(document.getElementById('chart').dataset.samples) >= {}",
            meter_before + 2
        ),
    )
    .await;
    let heading = b
        .eval("document.getElementById('sel-name').textContent")
        .await;
    assert_eq!(heading, json!("meter-01"));
    let values = b
        .eval("document.querySelector('tr[data-device=\"meter-01\"] td.vals').textContent")
        .await;
    assert!(
        values.as_str().unwrap().starts_with("meter: energy_kwh="),
        "{values}"
    );

    // Errors show up in the list.
    let mut bad = connect(&server.ws_url("/v1/devices/broken-01"), None).await;
    bad.send(Message::text("{\"fields\": ")).await.unwrap();
    next_json(&mut bad).await;
    b.wait_for(
        10,
        "the error in the list",
        "document.getElementById('errors').textContent.includes('invalid_json')",
    )
    .await;
    b.wait_for(10, "four device rows", &format!("{ROWS} >= 4"))
        .await;

    let path = std::env::var_os("WSINGEST_SCREENSHOT")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-view.png"));
    b.screenshot(&path).await;
    eprintln!("screenshot of the live view: {}", path.display());
    stop.cancel();
    drop(b);
    server.stop().await;
}
