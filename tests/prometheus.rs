//! The shipped Prometheus files (deploy/prometheus/), for real:
//!
//! - `promtool check config`, `check rules` and `test rules` (the rules' unit
//!   tests in wsingest-alerts.test.yml) pass;
//! - a real Prometheus (Debian's `prometheus`, 2.42) runs the shipped scrape
//!   config and rules (scrape and evaluation every second, the rules' `for:`
//!   durations shortened — nothing else changed) against a real `wsingest
//!   serve` writing to a real influxd: the wsingest series arrive, the rule
//!   group loads and evaluates without error, every metric name the rules
//!   mention is one wsingest exports, and when influxd is stopped and devices
//!   keep sending, `WsingestInfluxDBDown` reaches state firing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use wsingest_harness::process::WsingestProcess;
use wsingest_harness::services::{free_port, http, require_binary};
use wsingest_harness::{Influxd, eventually, test_config};

const CONFIG: &str = "deploy/prometheus/prometheus.yml";
const RULES: &str = "deploy/prometheus/wsingest-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/wsingest-alerts.test.yml";

fn promtool(args: &[&str]) -> String {
    let bin = require_binary("promtool", "prometheus");
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_config_rules_and_rule_tests() {
    let config = promtool(&["check", "config", CONFIG]);
    assert!(config.contains("SUCCESS"), "{config}");
    let rules = promtool(&["check", "rules", RULES]);
    assert!(rules.contains("SUCCESS"), "{rules}");
    let tests = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tests.contains("SUCCESS"), "{tests}");
    // Every alert has a unit test case.
    let rules_text = std::fs::read_to_string(RULES).unwrap();
    let tests_text = std::fs::read_to_string(RULE_TESTS).unwrap();
    for alert in alert_names(&rules_text) {
        assert!(
            tests_text.contains(&format!("alertname: {alert}")),
            "{alert} has no case in {RULE_TESTS}"
        );
    }
}

fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|s| s.trim().to_string())
        .collect()
}

/// Every `wsingest_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("wsingest_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// A copy of `text` with every `for:` duration set to `to`; panics if there
/// is none.
fn shorten_for(text: &str, to: &str) -> String {
    let mut n = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => {
                n += 1;
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}for: {to}")
            }
            None => l.to_string(),
        })
        .collect();
    assert!(n > 0, "no `for:` in the rules");
    out.join("\n") + "\n"
}

/// Replace `from` (which must occur exactly once) with `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{CONFIG} should contain {from:?} exactly once"
    );
    text.replace(from, to)
}

/// A real Prometheus in a temp dir, killed on drop.
struct Prometheus {
    url: String,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Run the shipped config and rules against `target`, scraping and
    /// evaluating every second.
    async fn start(target: SocketAddr) -> Prometheus {
        let bin = require_binary("prometheus", "prometheus");
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(CONFIG).unwrap();
        let mut config = replace_once(&shipped, "scrape_interval: 15s", "scrape_interval: 1s");
        config = replace_once(
            &config,
            "evaluation_interval: 15s",
            "evaluation_interval: 1s",
        );
        config = replace_once(&config, "\"127.0.0.1:8765\"", &format!("\"{target}\""));
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let rules = std::fs::read_to_string(RULES).unwrap();
        std::fs::write(
            dir.path().join("wsingest-alerts.yml"),
            shorten_for(&rules, "1s"),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("prometheus starts");
        let mut p = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            log,
            child,
            _dir: dir,
        };
        let client = http();
        let ready = format!("{}/-/ready", p.url);
        for _ in 0..600 {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited with {status}; its log:\n{}", p.log());
            }
            if let Ok(r) = client.get(&ready).send().await
                && r.status() == 200
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("prometheus not ready within 30 s; its log:\n{}", p.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET an API path; its `data`.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let mut url = url::Url::parse(&format!("{}{path}", self.url)).unwrap();
        url.query_pairs_mut().extend_pairs(query);
        let r = http().get(url).send().await.expect("prometheus answers");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
        v["data"].clone()
    }

    /// An instant query's first value, if any.
    async fn value(&self, query: &str) -> Option<f64> {
        let data = self.api("/api/v1/query", &[("query", query)]).await;
        data["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One point through the HTTP fallback; returns the answer's status.
async fn send_point(server: &WsingestProcess, device: &str, seq: u64) -> u16 {
    let body = json!({"seq": seq, "measurement": "prom", "fields": {"v": seq as f64}});
    http()
        .post(server.http_url(&format!("/v1/devices/{device}/points")))
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn real_prometheus_scrapes_wsingest_and_fires_influxdb_down() {
    let mut influx = Influxd::start().await;
    influx.create_db("prom").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&influx.url, "prom");
    config.spool.dir = dir.path().join("spool");
    config.observe.stats_interval_ms = 1000;
    // A bridge to a broker that is not there, with room for one message: its
    // drops are counted, so wsingest_bridge_dropped_total exists.
    config.mqtt.url = Some(format!("mqtt://127.0.0.1:{}", free_port()));
    config.mqtt.queue_capacity = 1;
    let server = WsingestProcess::start(config, dir.path()).await;
    let prom = Prometheus::start(server.addr).await;
    let p = &prom;

    // Scraped: the target is up and wsingest's series are there.
    let up = format!("up{{job=\"wsingest\",instance=\"{}\"}}", server.addr);
    let up = &up;
    eventually(
        20,
        "Prometheus to scrape wsingest (up == 1)",
        || async move { (p.value(up).await == Some(1.0)).then_some(()) },
    )
    .await;
    for seq in 1..=5 {
        assert_eq!(send_point(&server, "prom-1", seq).await, 200);
    }
    eventually(20, "the points to show in Prometheus", || async move {
        p.value("wsingest_points_written_total")
            .await
            .filter(|v| *v >= 5.0)
    })
    .await;
    let names = prom.api("/api/v1/label/__name__/values", &[]).await;
    let names: BTreeSet<String> = names
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|n| n.starts_with("wsingest_"))
        .map(str::to_string)
        .collect();
    for want in [
        "wsingest_sessions_open",
        "wsingest_points_total",
        "wsingest_points_written_total",
        "wsingest_write_requests_total",
        "wsingest_write_duration_seconds_bucket",
        "wsingest_spool_bytes",
        "wsingest_spool_max_bytes",
        "wsingest_handshakes_refused_total",
    ] {
        assert!(names.contains(want), "Prometheus has no {want}: {names:?}");
    }

    // The rule group is loaded and evaluates without error.
    let rules_text = std::fs::read_to_string(RULES).unwrap();
    let shipped_alerts = alert_names(&rules_text);
    let shipped = &shipped_alerts;
    eventually(20, "every rule evaluated without error", || async move {
        let data = p.api("/api/v1/rules", &[]).await;
        let rules = data["groups"][0]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let loaded: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
        assert_eq!(&loaded, shipped, "loaded rules");
        rules
            .iter()
            .all(|r| r["health"] == "ok" && r["lastError"].as_str().unwrap_or("").is_empty())
            .then_some(())
    })
    .await;
    let firing = prom.api("/api/v1/alerts", &[]).await;
    assert!(
        !firing.to_string().contains("WsingestInfluxDBDown"),
        "InfluxDB down before it is: {firing}"
    );

    let up = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("wsingest_influxdb_up "))
            .map(str::to_string)
    };
    let before = wsingest_harness::services::get_text(&server.http_url("/metrics")).await;
    assert_eq!(up(&before).as_deref(), Some("1"), "{before}");

    // InfluxDB goes away; devices keep sending (acked from the spool).
    influx.stop();
    for seq in 6..=8 {
        assert_eq!(send_point(&server, "prom-1", seq).await, 200);
    }
    let alert = eventually(30, "WsingestInfluxDBDown firing", || async move {
        let data = p.api("/api/v1/alerts", &[]).await;
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == "WsingestInfluxDBDown" && a["state"] == "firing")
            .cloned()
    })
    .await;
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["instance"], server.addr.to_string());
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains(&server.addr.to_string()),
        "{alert}"
    );

    // Every metric the rules (and their annotations) name is one wsingest
    // exports; labelled families appear once counted, which by now they are.
    let metrics = wsingest_harness::services::get_text(&server.http_url("/metrics")).await;
    assert_eq!(up(&metrics).as_deref(), Some("0"), "{metrics}");
    let exported: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    for name in metric_names(&rules_text) {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            exported.contains(&name) || exported.contains(family),
            "{RULES} uses {name}, which wsingest does not export; it does: {exported:?}"
        );
    }
    eprintln!(
        "prometheus: {} wsingest series names, {} rules healthy, InfluxDBDown firing",
        names.len(),
        shipped_alerts.len()
    );
}
