//! `/metrics` in both exposition formats, against a real server and influxd:
//! after a rate-limited refusal, a refused handshake and a handshake timeout, the Prometheus text
//! (0.0.4) and OpenMetrics (what Prometheus asks for first) carry the same
//! metric families and samples, and each parses strictly: every family is
//! declared once, before its samples, which are contiguous and named by the
//! family plus a suffix its type allows; one `# EOF`, at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use wsingest_harness::*;

/// OpenMetrics as Prometheus 2.x/3.x asks for it by default.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,\
     application/openmetrics-text;version=0.0.1;q=0.4,\
     text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

async fn scrape(server: &TestServer, accept: Option<&str>) -> (String, String) {
    let mut req = services::http().get(server.http_url("/metrics"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, r.text().await.unwrap())
}

/// One exposition, checked and taken apart: family -> (type, samples as
/// `name{labels}` -> value).
type Families = BTreeMap<String, (String, BTreeMap<String, f64>)>;

/// The suffixes a sample name may add to its family's name, by type and
/// format (OpenMetrics 1.0 §"Metric types"; in 0.0.4 a counter's family is
/// named like its samples).
fn suffixes(kind: &str, openmetrics: bool) -> &'static [&'static str] {
    match (kind, openmetrics) {
        ("counter", true) => &["_total", "_created"],
        ("histogram", _) => &["_bucket", "_count", "_sum", "_created"],
        ("summary", _) => &["", "_count", "_sum", "_created"],
        ("info", true) => &["_info"],
        ("gaugehistogram", true) => &["_bucket", "_gcount", "_gsum"],
        _ => &[""],
    }
}

fn valid_name(n: &str) -> bool {
    let mut cs = n.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y"}` (or nothing): label names valid and unique, values
/// escaped only with `\\`, `\"`, `\n`. Returns the rest of the line.
fn labels<'a>(line: &'a str, rest: &'a str) -> &'a str {
    let Some(mut s) = rest.strip_prefix('{') else {
        return rest;
    };
    let mut seen = BTreeSet::new();
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return after;
        }
        let (name, after) = s
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label: {line}"));
        assert!(
            valid_name(name) && !name.contains(':'),
            "label name {name:?}: {line}"
        );
        assert!(seen.insert(name), "label {name} twice: {line}");
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => {
                    let (_, e) = chars.next().unwrap_or_else(|| panic!("escape: {line}"));
                    assert!(matches!(e, '\\' | '"' | 'n'), "escape \\{e}: {line}");
                }
                Some((i, '"')) => break i,
                Some(_) => {}
                None => panic!("unterminated label value: {line}"),
            }
        };
        s = &after[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn parse_strict(text: &str, openmetrics: bool) -> Families {
    let mut families = Families::new();
    // The family whose metadata or samples came last; a family may not
    // come back after another one started.
    let mut current: Option<String> = None;
    let mut closed = BTreeSet::new();
    let body = if openmetrics {
        assert_eq!(text.matches("# EOF").count(), 1, "one # EOF:\n{text}");
        text.strip_suffix("# EOF\n")
            .unwrap_or_else(|| panic!("# EOF is the last line:\n{text}"))
    } else {
        assert!(!text.contains("# EOF"), "no # EOF in 0.0.4:\n{text}");
        text
    };
    let mut enter = |family: &str, current: &mut Option<String>| {
        if current.as_deref() != Some(family) {
            if let Some(prev) = current.take() {
                closed.insert(prev);
            }
            assert!(
                !closed.contains(family),
                "family {family} declared or sampled in two places"
            );
            *current = Some(family.to_owned());
        }
    };
    for line in body.lines() {
        assert!(
            !line.is_empty() || !openmetrics,
            "blank line in OpenMetrics"
        );
        if line.is_empty() {
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(valid_name(name), "metadata name: {line}");
            enter(name, &mut current);
            let entry = families
                .entry(name.to_owned())
                .or_insert_with(|| ("unknown".into(), BTreeMap::new()));
            assert!(entry.1.is_empty(), "metadata after samples: {line}");
            match kw {
                "TYPE" => {
                    let kind = parts.next().unwrap_or("");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "unknown",
                            "untyped",
                            "info",
                            "stateset",
                            "gaugehistogram"
                        ]
                        .contains(&kind),
                        "type: {line}"
                    );
                    assert!(
                        !(openmetrics && kind == "counter" && name.ends_with("_total")),
                        "an OpenMetrics counter family has no _total: {line}"
                    );
                    entry.0 = kind.to_owned();
                }
                "HELP" => {
                    if openmetrics {
                        let help = parts.next().unwrap_or("");
                        let unescaped = help.replace("\\\\", "").replace("\\n", "");
                        assert!(!unescaped.contains('\\'), "help escape: {line}");
                    }
                }
                "UNIT" => assert!(
                    name.ends_with(&format!("_{}", parts.next().unwrap_or("?"))),
                    "unit suffix: {line}"
                ),
                _ => assert!(!openmetrics, "unknown metadata: {line}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "comment: {line}");
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let rest = labels(line, &line[name_end..]);
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("value: {line}"));
        assert!(
            !value.contains(' '),
            "no timestamps or exemplars expected: {line}"
        );
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("value: {line}")),
        };
        let family = current
            .clone()
            .unwrap_or_else(|| panic!("sample before any metadata: {line}"));
        let (kind, samples) = families.get_mut(&family).unwrap();
        let suffix = name
            .strip_prefix(family.as_str())
            .unwrap_or_else(|| panic!("sample {name} outside its family {family}"));
        assert!(
            suffixes(kind, openmetrics).contains(&suffix),
            "{name} in a {kind} family {family}"
        );
        if kind == "counter" {
            assert!(v >= 0.0, "negative counter: {line}");
        }
        let key = line[..line.len() - value.len() - 1].to_owned();
        assert!(samples.insert(key, v).is_none(), "sample twice: {line}");
    }
    families
}

/// The family name as OpenMetrics has it (a 0.0.4 counter keeps `_total`).
fn om_family(name: &str, kind: &str) -> String {
    match kind {
        "counter" => name.strip_suffix("_total").unwrap_or(name).to_owned(),
        _ => name.to_owned(),
    }
}

#[tokio::test]
async fn both_formats_carry_the_same_families_and_parse_strictly() {
    let influx = Influxd::start().await;
    influx.create_db("mf").await;
    let mut config = test_config(&influx.url, "mf");
    config.server.handshake_timeout_secs = 1;
    config.limits.messages_per_sec = 1.0;
    config.limits.burst_secs = 1.0;
    let server = TestServer::start(config).await;

    // A rate-limited refusal: the burst is one message.
    let mut ws = connect(&server.ws_url("/v1/devices/mf-1"), None).await;
    send_json(&mut ws, json!({"seq": 1, "fields": {"v": 1.0}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    send_json(&mut ws, json!({"seq": 2, "fields": {"v": 2.0}})).await;
    assert_eq!(next_json(&mut ws).await["error"], "rate_limited");
    // A refused handshake (counted by HTTP status and by reason).
    let bad = tokio_tungstenite::connect_async(server.ws_url("/v1/devices/a%5Cb")).await;
    assert!(
        matches!(bad, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400)
    );
    // A handshake timeout: a connection that never sends a request.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .expect("the idle connection is closed within 10 s")
        {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }

    let (ct, plain) = scrape(&server, None).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let (ct, om) = scrape(&server, Some(PROMETHEUS_ACCEPT)).await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    if let Ok(dir) = std::env::var("WSINGEST_METRICS_DUMP") {
        std::fs::write(format!("{dir}/metrics.txt"), &plain).unwrap();
        std::fs::write(format!("{dir}/metrics.om"), &om).unwrap();
    }
    let p = parse_strict(&plain, false);
    let o = parse_strict(&om, true);

    // The same families with the same types, in both.
    let plain_families: BTreeMap<String, String> = p
        .iter()
        .map(|(n, (k, _))| (om_family(n, k), k.clone()))
        .collect();
    let om_families: BTreeMap<String, String> =
        o.iter().map(|(n, (k, _))| (n.clone(), k.clone())).collect();
    assert_eq!(plain_families, om_families);
    // The same samples (histogram bucket bounds are formatted differently
    // by the two encoders: `le="10.0"` and `le="10"`, so buckets are
    // compared by count).
    let samples = |f: &Families| -> BTreeSet<String> {
        f.values()
            .flat_map(|(_, s)| s.keys())
            .filter(|k| !k.contains("_bucket{"))
            .cloned()
            .collect()
    };
    assert_eq!(samples(&p), samples(&o));
    let buckets = |f: &Families| f.values().flat_map(|(_, s)| s.keys()).count();
    assert_eq!(buckets(&p), buckets(&o));

    // What happened is in both, security counters included.
    for (f, text) in [(&p, &plain), (&o, &om)] {
        let v = |family: &str, sample: &str| {
            f.get(family)
                .or_else(|| f.get(&format!("{family}_total")))
                .and_then(|(_, s)| s.get(sample))
                .copied()
                .unwrap_or_else(|| panic!("{sample} missing:\n{text}"))
        };
        assert_eq!(
            v("wsingest_rate_limited", "wsingest_rate_limited_total"),
            1.0
        );
        assert_eq!(
            v(
                "wsingest_messages_rate_limited",
                "wsingest_messages_rate_limited_total"
            ),
            1.0
        );
        assert!(
            v(
                "wsingest_handshake_timeouts",
                "wsingest_handshake_timeouts_total"
            ) >= 1.0
        );
        v(
            "wsingest_tls_handshake_failures",
            "wsingest_tls_handshake_failures_total",
        );
        v(
            "wsingest_sessions_revoked",
            "wsingest_sessions_revoked_total",
        );
    }
    server.stop().await;
}
