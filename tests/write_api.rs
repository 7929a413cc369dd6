//! The v2 write API against a real VictoriaMetrics, and the exact requests
//! (path, query, auth, precision, body, retries) against an in-test HTTP server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use wsingest_harness::*;
use wsingest_server::config::Secret;

#[tokio::test]
async fn v2_api_writes_into_victoria_metrics() {
    let vm = VictoriaMetrics::start().await;
    let mut config = test_config(&vm.url, "unused");
    config.influx.db = None;
    config.influx.org = Some("acme".into());
    config.influx.bucket = Some("iot".into());
    config.influx.token = Some(Secret::new("secret-token"));
    let server = TestServer::start(config).await;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut ws = connect(&server.ws_url("/v1/devices/vm-1"), Some("wsingest.v1.json")).await;
    send_json(
        &mut ws,
        json!({"seq": 1, "measurement": "weather", "tags": {"site": "roof"},
               "points": [{"ts": now_ms - 1000, "fields": {"temp_c": 20.5}}, {"ts": now_ms, "fields": {"temp_c": 21.5, "ok": true}}]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    let series = eventually(30, "points in VictoriaMetrics", || async {
        let s = vm.export("weather_temp_c").await;
        (s.first().map(|x| x["values"].as_array().unwrap().len()) == Some(2)).then_some(s)
    })
    .await;
    assert_eq!(series.len(), 1);
    let s = &series[0];
    assert_eq!(s["metric"]["device"], json!("vm-1"));
    assert_eq!(s["metric"]["site"], json!("roof"));
    assert_eq!(s["values"], json!([20.5, 21.5]));
    assert_eq!(s["timestamps"], json!([now_ms - 1000, now_ms]));
    server.stop().await;
}

/// A recorded request: path, query, headers, body.
type Request = (String, Option<String>, HeaderMap, String);
/// A scripted answer: status and optional Retry-After.
type Answer = (u16, Option<&'static str>);

#[derive(Clone, Default)]
struct Recorded {
    requests: Arc<Mutex<Vec<Request>>>,
    /// Statuses to answer, in order; then 204.
    script: Arc<Mutex<Vec<Answer>>>,
}

async fn record(
    State(r): State<Recorded>,
    uri: axum::http::Uri,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap, String) {
    if uri.path() == "/ping" {
        // readiness probes: answered, not recorded
        return (StatusCode::NO_CONTENT, HeaderMap::new(), String::new());
    }
    if uri.path() == "/query" {
        // the startup check's SHOW DATABASES: answered, not recorded
        let dbs = r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["db"],["db one"]]}]}]}"#;
        return (StatusCode::OK, HeaderMap::new(), dbs.into());
    }
    r.requests
        .lock()
        .unwrap()
        .push((uri.path().to_string(), q, headers, body));
    let next = {
        let mut s = r.script.lock().unwrap();
        if s.is_empty() {
            None
        } else {
            Some(s.remove(0))
        }
    };
    let mut h = HeaderMap::new();
    match next {
        Some((status, retry_after)) => {
            if let Some(ra) = retry_after {
                h.insert("retry-after", ra.parse().unwrap());
            }
            (
                StatusCode::from_u16(status).unwrap(),
                h,
                "{\"error\":\"scripted\"}".into(),
            )
        }
        None => (StatusCode::NO_CONTENT, h, String::new()),
    }
}

async fn recorder(script: Vec<Answer>) -> (String, Recorded) {
    let rec = Recorded::default();
    *rec.script.lock().unwrap() = script;
    let app = axum::Router::new().fallback(record).with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rec)
}

#[tokio::test]
async fn v2_request_shape() {
    let (url, rec) = recorder(vec![]).await;
    let mut config = test_config(&url, "unused");
    config.influx.db = None;
    config.influx.org = Some("my org".into());
    config.influx.bucket = Some("b/1".into());
    config.influx.token = Some(Secret::new("T0k3n"));
    let server = TestServer::start(config).await;
    let mut ws = connect(&server.ws_url("/v1/devices/d"), None).await;
    send_json(
        &mut ws,
        json!({"seq": 9, "ts": 1500, "measurement": "m", "fields": {"x": 1}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 9}));
    let reqs = rec.requests.lock().unwrap().clone();
    let (path, query, headers, body) = &reqs[0];
    assert_eq!(path, "/api/v2/write");
    assert_eq!(
        query.as_deref(),
        Some("org=my+org&bucket=b%2F1&precision=ns")
    );
    assert_eq!(headers["authorization"], "Token T0k3n");
    assert_eq!(body, "m,device=d x=1.0 1500000000\n");
    server.stop().await;
}

#[tokio::test]
async fn v1_request_shape_and_retry_after() {
    // 503 with Retry-After: 1, then 429, then success: one ack, three requests.
    let (url, rec) = recorder(vec![(503, Some("1")), (429, Some("0"))]).await;
    let mut config = test_config(&url, "db one");
    config.influx.rp = Some("week".into());
    config.influx.user = Some("u".into());
    config.influx.password = Some(Secret::new("p"));
    config.influx.retry_max_elapsed_ms = 10_000;
    let server = TestServer::start(config).await;
    let mut ws = connect(&server.ws_url("/v1/devices/d"), None).await;
    let started = std::time::Instant::now();
    send_json(&mut ws, json!({"seq": 1, "ts": 2, "fields": {"x": true}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was not honoured"
    );
    let reqs = rec.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3);
    let (path, query, headers, body) = &reqs[2];
    assert_eq!(path, "/write");
    assert_eq!(query.as_deref(), Some("db=db+one&rp=week&precision=n"));
    assert_eq!(headers["authorization"], "Basic dTpw");
    assert_eq!(body, "telemetry,device=d x=true 2000000\n");
    server.stop().await;
}

#[tokio::test]
async fn unavailable_database_is_nacked_after_the_retry_budget() {
    let (url, rec) = recorder((0..100).map(|_| (500, None)).collect()).await;
    let mut config = test_config(&url, "db");
    config.influx.retry_initial_ms = 10;
    config.influx.retry_max_elapsed_ms = 300;
    // Without a spool; with one, the batch is spooled and acked instead
    // (tests/durability/).
    config.spool.enabled = false;
    let server = TestServer::start(config).await;
    let mut ws = connect(&server.ws_url("/v1/devices/d"), None).await;
    send_json(&mut ws, json!({"seq": 1, "fields": {"x": 1}})).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["nack"], json!(1));
    assert_eq!(reply["error"], json!("storage_unavailable"), "{reply}");
    assert!(rec.requests.lock().unwrap().len() > 1, "it retried");
    server.stop().await;
}
