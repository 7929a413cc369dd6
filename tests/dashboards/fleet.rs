//! The test fleet: six hours of minute readings of every device profile,
//! deterministic, sent through the server.

use super::*;

/// A deterministic wobble in [-1, 1] (no RNG needed for "realistic").
pub(super) fn wobble(i: i64, k: f64) -> f64 {
    ((i as f64) * 0.37 * k).sin() * 0.6 + ((i as f64) * 0.11 + k).cos() * 0.4
}

pub(super) const WIND: [&str; 8] = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];

/// One point of a device of `profile` at minute `i` (time `ts` in ms).
pub(super) fn point(profile: &str, dev: usize, i: i64, ts: i64, energy: &mut f64) -> Value {
    let h = ((ts / 1000) % 86_400) as f64 / 3600.0;
    let day = (std::f64::consts::PI * 2.0 * (h - 9.0) / 24.0).sin();
    let d = dev as f64;
    match profile {
        "weather" => json!({"ts": ts, "fields": {
            "temp_c": 14.0 + 10.0 * day + wobble(i, d),
            "humidity_pct": 65.0 - 25.0 * day + 3.0 * wobble(i, d + 1.0),
            "pressure_hpa": 1012.0 + 4.0 * wobble(i / 30, d),
            "wind_ms": 4.0 + 3.0 * wobble(i, d + 2.0).abs(),
            "wind_dir": WIND[((i / 20) as usize + dev) % 8]}}),
        "meter" => {
            let power = 400.0 + 300.0 * wobble(i, d).abs() + if i % 47 == 0 { 2500.0 } else { 0.0 };
            *energy += power * 60.0 / 3600.0;
            json!({"ts": ts, "fields": {
                "power_w": power, "energy_wh": *energy, "voltage_v": 230.0 + 3.0 * wobble(i, d + 3.0),
                "frequency_hz": 50.0 + 0.05 * wobble(i, d + 4.0), "relay_closed": true}})
        }
        "vehicle" => {
            let a = (i as f64) / 40.0 + d;
            json!({"ts": ts, "fields": {
                "lat": 52.51 + 0.01 * a.sin(), "lon": 13.40 + 0.02 * a.cos(),
                "speed_kmh": 30.0 + 25.0 * wobble(i, d), "heading_deg": ((i * 7) % 360) as f64,
                "battery_pct": 100.0 - (i as f64) * 0.1 - 5.0 * d, "ignition": i % 50 != 0}})
        }
        "vibration" => json!({"ts": ts, "fields": {
            "ax_g": 0.8 * wobble(i, d), "ay_g": 0.8 * wobble(i, d + 1.5), "az_g": 1.0 + 0.3 * wobble(i, d + 2.5),
            "rms_g": 0.3 + 0.1 * wobble(i, d).abs()}}),
        "soil" => json!({"ts": ts, "fields": {
            "moisture_pct": 30.0 + 5.0 * wobble(i / 10, d), "soil_temp_c": 12.0 + 4.0 * day,
            "battery_v": 3.55 - 0.0002 * i as f64, "rssi_dbm": -90.0 + 8.0 * wobble(i, d)}}),
        _ => unreachable!(),
    }
}

/// Profiles as devices/*.toml define them: measurement, device id prefix, tags.
pub(super) const PROFILES: &[(&str, &str, &str, &[&str])] = &[
    ("weather", "weather", "site", &["roof", "harbour", "farm"]),
    ("meter", "meter", "phase", &["L1", "L2", "L3"]),
    ("vehicle", "van", "fleet", &["north", "south", "east"]),
    ("vibration", "vib", "machine", &["pump-a", "pump-b", "fan"]),
    (
        "soil",
        "soil",
        "field",
        &["orchard", "greenhouse", "north-field"],
    ),
];

pub(super) const TARIFFS: [&str; 3] = ["standard", "night", "dynamic"];

/// Six hours of minute readings per device, an hour per message, through
/// the server; then a few live messages and one bad one.
pub(super) async fn write_fleet(server: &TestServer) -> usize {
    let now_ms = wsingest_server::fleet::now_ms();
    let start = now_ms - HOURS * 3_600_000;
    let mut devices = 0;
    for (measurement, prefix, tag, values) in PROFILES {
        for (dev, value) in values.iter().enumerate() {
            let id = format!("{prefix}-{:04}", dev + 1);
            let mut tags = json!({ *tag: value });
            match *measurement {
                "weather" => tags["model"] = json!("WS-2000"),
                "meter" => tags["tariff"] = json!(TARIFFS[dev]),
                "vehicle" => tags["vehicle_type"] = json!("van"),
                _ => {}
            }
            let mut ws = connect(
                &server.ws_url(&format!("/v1/devices/{id}")),
                Some("wsingest.v1.json"),
            )
            .await;
            let mut energy = 1_000_000.0 * (dev + 1) as f64;
            let minutes = HOURS * 60;
            for (seq, hour) in (0..minutes).step_by(60).enumerate() {
                let points: Vec<Value> = (hour..(hour + 60).min(minutes))
                    .map(|i| point(measurement, dev, i, start + i * 60_000, &mut energy))
                    .collect();
                let msg =
                    json!({"seq": seq, "measurement": measurement, "tags": tags, "points": points});
                send_json(&mut ws, msg).await;
                assert_eq!(next_json(&mut ws).await, json!({"ack": seq}), "{id}");
            }
            if *measurement == "vibration" {
                // The vibration profile's shape: a 100-point batch at 100 Hz.
                let points: Vec<Value> = (0..100)
                    .map(|k| point(measurement, dev, k, now_ms - 2_000 + k * 10, &mut energy))
                    .collect();
                send_json(
                    &mut ws,
                    json!({"seq": 100, "measurement": measurement, "tags": tags, "points": points}),
                )
                .await;
                assert_eq!(next_json(&mut ws).await, json!({"ack": 100}));
            }
            if dev == 0 {
                ws.send(Message::text("{\"fields\": {\"temp_c\": NaN}}"))
                    .await
                    .unwrap();
                next_json(&mut ws).await;
            }
            ws.close(None).await.unwrap();
            devices += 1;
        }
    }
    devices
}
