//! The Grafana dashboards work: Grafana is not installable here, so this
//! test does what it would do. Realistic data (every device profile, six
//! hours of history, sent through a real server) goes into a real influxd
//! while the server writes its own stats; then every dashboard is checked
//! for the fields Grafana requires and every panel query, with `$timeFilter`,
//! `$__interval` and the template variables substituted as Grafana does, is
//! run against InfluxDB and must return data.
//!
//! [`fleet`]: the test fleet's data; [`grafana`]: Grafana's substitutions
//! (`$timeFilter`, `$__interval`, template variables).

mod fleet;
mod grafana;
#[path = "../common/server_stats.rs"]
mod server_stats;

use std::collections::{BTreeMap, HashSet};

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wsingest_harness::*;
use yaml_rust2::{Yaml, YamlLoader};

const DB: &str = "dash";
const HOURS: i64 = 6;

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .remove(0)
}

/// The provisioned datasource: its uid and type.
fn datasource() -> (String, String) {
    let y = yaml("grafana/provisioning/datasources/influxdb.yaml");
    assert_eq!(y["apiVersion"].as_i64(), Some(1));
    let ds = &y["datasources"][0];
    assert_eq!(ds["type"].as_str(), Some("influxdb"));
    assert_eq!(
        ds["jsonData"]["dbName"].as_str(),
        Some("wsingest"),
        "the database wsingest writes to by default"
    );
    assert_eq!(ds["access"].as_str(), Some("proxy"));
    (
        ds["uid"].as_str().unwrap().to_string(),
        ds["jsonData"]["timeInterval"].as_str().unwrap().to_string(),
    )
}

use fleet::*;
use grafana::*;

/// The fields Grafana requires, the datasource uids, ids and layout.
fn check_structure(file: &str, d: &Value, ds_uid: &str) {
    let uid = d["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: no uid"));
    assert!(
        !uid.is_empty() && uid.len() <= 40,
        "{file}: uid must be 1-40 characters"
    );
    assert!(
        d["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{file}: title"
    );
    assert!(
        d["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
        "{file}: schemaVersion >= 36"
    );
    assert!(
        d.get("id").is_none_or(Value::is_null),
        "{file}: provisioned dashboards carry no id"
    );
    assert!(
        d["time"]["from"].is_string() && d["time"]["to"] == json!("now"),
        "{file}: time range"
    );
    for v in d["templating"]["list"].as_array().unwrap() {
        assert_eq!(
            v["datasource"]["uid"],
            json!(ds_uid),
            "{file}: variable {} datasource",
            v["name"]
        );
        assert_eq!(v["type"], json!("query"), "{file}: variable {}", v["name"]);
        assert_eq!(
            v["regex"].as_str().unwrap_or(""),
            "",
            "{file}: regex filters are not validated here"
        );
    }
    let mut ids = HashSet::new();
    let panels = d["panels"].as_array().unwrap();
    assert!(!panels.is_empty(), "{file}: no panels");
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "{file}: duplicate panel id in {title}"
        );
        assert!(
            [
                "timeseries",
                "stat",
                "table",
                "geomap",
                "gauge",
                "bargauge",
                "barchart",
                "piechart",
                "text"
            ]
            .contains(&p["type"].as_str().unwrap()),
            "{file}: {title}: panel type"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_i64().unwrap(), g["w"].as_i64().unwrap());
        assert!(
            x >= 0 && w > 0 && x + w <= 24 && g["h"].as_i64().unwrap() > 0,
            "{file}: {title}: gridPos"
        );
        assert_eq!(
            p["datasource"]["type"],
            json!("influxdb"),
            "{file}: {title}"
        );
        assert_eq!(
            p["datasource"]["uid"],
            json!(ds_uid),
            "{file}: {title}: datasource uid"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{file}: {title}: no queries");
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"],
                json!(ds_uid),
                "{file}: {title}: target datasource uid"
            );
            assert_eq!(t["rawQuery"], json!(true), "{file}: {title}: raw InfluxQL");
            let q = t["query"].as_str().unwrap();
            // `$tag_x` aliases need `x` in GROUP BY.
            if let Some(alias) = t["alias"].as_str() {
                for tag in alias.split("$tag_").skip(1) {
                    let tag: String = tag
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    let group_by = q.rsplit("GROUP BY").next().unwrap();
                    assert!(
                        group_by.contains(&format!("\"{tag}\"")),
                        "{file}: {title}: alias $tag_{tag}"
                    );
                }
            }
        }
    }
}

/// Run `q`; it must succeed and return at least one non-null value.
async fn returns_data(influx: &Influxd, what: &str, q: &str) -> usize {
    let answer = influx.query(DB, q).await;
    let r = &answer["results"][0];
    assert!(
        r.get("error").is_none(),
        "{what}: InfluxDB refused\n  {q}\n  {answer}"
    );
    let series = r["series"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no data for\n  {q}"));
    let values: usize = series
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap())
        .map(|row| {
            row.as_array().unwrap()[1..]
                .iter()
                .filter(|v| !v.is_null())
                .count()
        })
        .sum();
    assert!(values > 0, "{what}: only nulls for\n  {q}\n  {answer}");
    values
}

#[tokio::test]
async fn every_panel_query_returns_data() {
    let (ds_uid, min_interval) = datasource();
    let provider = yaml("grafana/provisioning/dashboards/wsingest.yaml");
    assert_eq!(provider["providers"][0]["type"].as_str(), Some("file"));
    assert!(
        provider["providers"][0]["options"]["path"]
            .as_str()
            .is_some()
    );

    let influx = Influxd::start().await;
    influx.create_db(DB).await;
    let mut config = test_config(&influx.url, DB);
    config.observe.stats_interval_ms = 200;
    config.observe.instance = "validator".into();
    let server = TestServer::start(config).await;
    let mut devices = write_fleet(&server).await;
    // The server's own stats: every device's numbers and the ended sessions.
    eventually(30, "stats for every device and session", || async {
        let s = server_stats::seen(&influx, DB).await;
        (s.devices == devices && s.sessions == devices as u64 && s.measurements == PROFILES.len())
            .then_some(())
    })
    .await;
    // And a run of the real generator: one device of every profile for 3 s.
    let profiles = profiles().len();
    // Waited for without blocking this (single-threaded) runtime: the server
    // the generator talks to runs on it.
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsingest"))
        .args([
            "simulate",
            "--profile",
            "all",
            "--devices",
            "1",
            "--duration",
            "3s",
        ])
        .args(["--id-prefix", "sim-", "--url", &server.ws_url("")])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("wsingest simulate runs");
    assert!(status.success(), "the generator run failed: {status}");
    devices += profiles;
    eventually(30, "stats of the generator's devices", || async {
        (server_stats::seen(&influx, DB).await.devices == devices).then_some(())
    })
    .await;

    let mut files: Vec<_> = std::fs::read_dir("grafana/dashboards")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "dashboards: {files:?}");
    let mut uids = HashSet::new();
    let mut checked = 0;
    let mut report = Vec::new();
    let dashboards: Vec<(String, Value)> = files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect();
    for (file, d) in &dashboards {
        check_structure(file, d, &ds_uid);
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{file}: duplicate uid"
        );
    }
    for (file, d) in &dashboards {
        let range = relative_ms(d["time"]["from"].as_str().unwrap());
        let mut vars = Vars {
            // Grafana's rendering of a relative range ending now.
            time_filter: format!(
                "time >= now() - {}",
                &d["time"]["from"].as_str().unwrap()[4..]
            ),
            interval: grafana_interval(range, duration_ms(&min_interval)),
            values: BTreeMap::new(),
        };
        for v in d["templating"]["list"].as_array().unwrap() {
            let name = v["name"].as_str().unwrap().to_string();
            let q = vars.apply(v["query"].as_str().unwrap());
            let found = find_values(&influx.query(DB, &q).await);
            assert!(
                !found.is_empty(),
                "{file}: variable {name} has no values: {q}"
            );
            // Grafana's default selection: All (as a regex alternation) or the first value.
            let value = if v["includeAll"] == json!(true) {
                format!(
                    "({})",
                    found
                        .iter()
                        .map(|s| regex_escape(s))
                        .collect::<Vec<_>>()
                        .join("|")
                )
            } else {
                found[0].clone()
            };
            vars.values.insert(name, value);
        }
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let q = vars.apply(t["query"].as_str().unwrap());
                let what = format!("{file}: panel {:?} query {}", p["title"], t["refId"]);
                let n = returns_data(&influx, &what, &q).await;
                report.push(format!(
                    "{n:>6} values  {file}: {}",
                    p["title"].as_str().unwrap()
                ));
                checked += 1;
            }
        }
        // Data links point at dashboards that exist.
        let text = d.to_string();
        for link in text.split("/d/").skip(1) {
            let uid: String = link
                .chars()
                .take_while(|c| *c != '/' && *c != '?' && *c != '"')
                .collect();
            assert!(
                uids.contains(&uid),
                "{file}: link to unknown dashboard {uid}"
            );
        }
    }
    eprintln!(
        "{checked} panel queries returned data:\n{}",
        report.join("\n")
    );
    assert!(checked >= 40, "{checked} queries checked");
    server.stop().await;
}

/// Measurement, tag keys and field keys of every profile in devices/.
fn profiles() -> BTreeMap<String, (HashSet<String>, HashSet<String>)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("devices").expect("devices/ (issue 4's profiles)") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let t: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let keys = |k: &str| {
            t.get(k)
                .and_then(|v| v.as_table())
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default()
        };
        out.insert(
            t["measurement"].as_str().unwrap().to_string(),
            (keys("tags"), keys("fields")),
        );
    }
    out
}

#[test]
fn dashboards_and_test_fleet_use_the_profiles_names() {
    let profiles = profiles();
    // The test fleet sends what the profiles declare.
    for (measurement, _, tag, _) in PROFILES {
        let (tags, fields) = profiles
            .get(*measurement)
            .unwrap_or_else(|| panic!("no profile for {measurement}"));
        assert!(tags.contains(*tag), "{measurement}: tag {tag}");
        let mut energy = 0.0;
        let sample = point(measurement, 0, 0, 0, &mut energy);
        let sent: HashSet<String> = sample["fields"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            &sent, fields,
            "{measurement}: the test fleet's fields are the profile's"
        );
    }
    // Every identifier a dashboard query reads from a profile measurement is
    // one of its fields or tags (or the device tag, or an alias).
    for entry in std::fs::read_dir("grafana/dashboards").unwrap() {
        let path = entry.unwrap().path();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let q = t["query"].as_str().unwrap();
                let froms: Vec<&str> = q
                    .split("FROM \"")
                    .skip(1)
                    .map(|c| &c[..c.find('"').unwrap()])
                    .collect();
                for m in &froms {
                    assert!(
                        m.starts_with("wsingest_")
                            || *m == "$measurement"
                            || profiles.contains_key(*m),
                        "{}: measurement {m} is neither ours nor a profile's",
                        path.display()
                    );
                }
                let Some((tags, fields)) = froms.iter().find_map(|m| profiles.get(*m)) else {
                    continue;
                };
                let quoted: Vec<&str> = q.split('"').skip(1).step_by(2).collect();
                let aliases: HashSet<&str> = q
                    .split("AS \"")
                    .skip(1)
                    .map(|c| &c[..c.find('"').unwrap()])
                    .collect();
                for name in quoted {
                    assert!(
                        fields.contains(name)
                            || tags.contains(name)
                            || aliases.contains(name)
                            || froms.contains(&name)
                            || name == "device",
                        "{}: panel {}: {name:?} is not a field or tag of the profile",
                        path.display(),
                        p["title"]
                    );
                }
            }
        }
    }
}
