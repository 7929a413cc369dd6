//! Property test against the real influxd: random measurement, tag and field
//! strings full of line-protocol specials are either stored exactly (read back
//! with InfluxQL) or nacked with a reason; never a split line, never a refused
//! batch. Cases come from proptest with a fixed seed, so a failure names a
//! reproducible case.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use wsingest_harness::*;

const CASES: usize = 500;

fn nasty_string(min: usize, max: usize) -> impl Strategy<Value = String> {
    // Specials line protocol must escape, mostly; now and then something it
    // cannot carry at all (control characters, backslash before a special).
    let carried: Vec<&'static str> = vec![
        "a", "b", "Z", "0", " ", ",", "=", "\"", "'", "\\", "#", "é", "€", "😀", "_", "-", ".",
        "/", "{", "}", "\\\\", "\u{2028}",
    ];
    let risky: Vec<&'static str> = vec!["\n", "\t", "\r", "\u{7f}", "time", "\\ ", "\\,", "\\="];
    let token = prop_oneof![12 => prop::sample::select(carried), 1 => prop::sample::select(risky)];
    prop::collection::vec(token, min..max).prop_map(|parts| parts.concat())
}

#[derive(Debug, Clone)]
struct Case {
    measurement: String,
    tag_key: String,
    tag_value: String,
    field_key: String,
    text: String,
}

fn cases() -> Vec<Case> {
    let strategy = (
        nasty_string(1, 6),
        nasty_string(1, 5),
        nasty_string(1, 8),
        nasty_string(1, 5),
        nasty_string(0, 12),
    )
        .prop_map(|(measurement, tag_key, tag_value, field_key, text)| Case {
            measurement,
            tag_key,
            tag_value,
            field_key,
            text,
        });
    let mut runner = TestRunner::new_with_rng(
        PtConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    (0..CASES)
        .map(|i| {
            let mut c = strategy.new_tree(&mut runner).unwrap().current();
            // One series per case, and no tag key equal to a field key: in
            // `SELECT *` InfluxDB renames such columns (`k_1`), which is not
            // what this test is about.
            c.measurement.push_str(&format!("~{i}"));
            if c.tag_key == c.field_key || c.tag_key == "id" {
                c.tag_key.push_str("~t");
            }
            if c.field_key == "id" {
                c.field_key.push_str("~f");
            }
            c
        })
        .collect()
}

#[tokio::test]
async fn random_names_are_stored_exactly_or_nacked() {
    let influx = Influxd::start().await;
    influx.create_db("prop").await;
    let mut config = test_config(&influx.url, "prop");
    config.server.max_invalid_messages = u32::MAX;
    let server = TestServer::start(config).await;
    let mut ws = connect(&server.ws_url("/v1/devices/prop"), None).await;
    let cases = cases();
    for (i, c) in cases.iter().enumerate() {
        // `id` ties a stored row back to its case; ts keeps rows apart.
        send_json(
            &mut ws,
            json!({"seq": i, "ts": 1_000 + i as u64, "measurement": c.measurement,
                   "tags": {c.tag_key.clone(): c.tag_value}, "fields": {c.field_key.clone(): c.text, "id": i}}),
        )
        .await;
    }
    let mut acked = HashMap::new();
    let mut nacked = 0;
    for _ in 0..cases.len() {
        let reply = next_json(&mut ws).await;
        if let Some(seq) = reply["ack"].as_u64() {
            acked.insert(seq as usize, ());
        } else {
            let seq = reply["nack"].as_u64().expect("ack or nack with a seq") as usize;
            let code = reply["error"].as_str().unwrap();
            assert!(
                matches!(code, "invalid_name" | "too_large" | "invalid_message"),
                "case {seq} {:?} nacked with {reply}",
                cases[seq]
            );
            assert!(!reply["detail"].as_str().unwrap().is_empty());
            nacked += 1;
        }
    }
    assert!(
        acked.len() > CASES / 10 && nacked > 0,
        "a useful mix: {} acked, {nacked} nacked",
        acked.len()
    );

    // Read back every series: SELECT * FROM /.*/ names measurements and columns.
    let v = influx.query("prop", "SELECT * FROM /.*/").await;
    let mut found = 0;
    for series in v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = series["name"].as_str().unwrap();
        let columns: Vec<&str> = series["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let col = |k: &str| columns.iter().position(|c| *c == k);
        for row in series["values"].as_array().unwrap() {
            let id = row[col("id").expect("id column")].as_f64().expect("id") as usize;
            let c = &cases[id];
            assert!(
                acked.contains_key(&id),
                "case {id} stored but not acked: {c:?}"
            );
            assert_eq!(name, c.measurement, "case {id}: measurement");
            // Across measurements a tag key may also be a field key elsewhere:
            // InfluxDB then names the second column `key_1`. The row's value
            // is in exactly one of them.
            let own = [&c.tag_key, &c.field_key, "device", "id"];
            let value_of = |key: &str| -> Vec<Value> {
                columns
                    .iter()
                    .enumerate()
                    .filter(|(_, col)| {
                        **col == key
                            || (col
                                .strip_prefix(key)
                                .and_then(|r| r.strip_prefix('_'))
                                .is_some_and(|n| n.parse::<u32>().is_ok())
                                && !own.contains(col))
                    })
                    .map(|(i, _)| row[i].clone())
                    .filter(|v| !v.is_null())
                    .collect()
            };
            assert_eq!(
                value_of(&c.tag_key),
                vec![Value::from(c.tag_value.clone())],
                "case {id}: tag of {c:?}"
            );
            assert_eq!(
                value_of(&c.field_key),
                vec![Value::from(c.text.clone())],
                "case {id}: string field of {c:?}"
            );
            found += 1;
        }
    }
    assert_eq!(found, acked.len(), "every acked case is stored, once");
    server.stop().await;
}
