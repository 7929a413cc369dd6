//! Observability end to end: `/metrics` counts what devices did, the stats
//! writer puts `wsingest_device`/`wsingest_stats`/`wsingest_session` into a
//! real influxd, and the live feed and page are served (and guarded).

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wsingest_harness::*;
use wsingest_server::config::Secret;
use wsingest_server::metrics::find_sample;

async fn metrics_text(server: &TestServer) -> String {
    let r = services::http()
        .get(server.http_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    r.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_sessions_messages_errors_and_writes() {
    let influx = Influxd::start().await;
    influx.create_db("m1").await;
    let server = TestServer::start(test_config(&influx.url, "m1")).await;
    let mut ws = connect(&server.ws_url("/v1/devices/m-1"), None).await;
    send_json(
        &mut ws,
        json!({"seq": 1, "measurement": "weather", "fields": {"temp_c": 20.5}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    send_json(
        &mut ws,
        json!({"seq": 2, "points": [{"fields": {"a": 1}}, {"fields": {"a": 2}}]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 2}));
    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(next_json(&mut ws).await["error"], json!("invalid_json"));
    send_json(
        &mut ws,
        json!({"seq": 3, "fields": {"x": "a\\"}, "tags": {"t": "bad\\"}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["nack"], json!(3));

    let t = metrics_text(&server).await;
    let v = |s: &str| find_sample(&t, s).unwrap_or_else(|| panic!("no sample {s} in\n{t}"));
    assert_eq!(v("wsingest_sessions_open"), 1.0);
    assert_eq!(v("wsingest_sessions_opened_total"), 1.0);
    assert_eq!(v("wsingest_messages_total"), 4.0);
    assert_eq!(v("wsingest_points_total"), 3.0);
    assert_eq!(v("wsingest_acks_total"), 2.0);
    assert_eq!(
        v("wsingest_decode_errors_total{reason=\"invalid_json\"}"),
        1.0
    );
    assert_eq!(v("wsingest_nacks_total{reason=\"invalid_json\"}"), 1.0);
    assert!(v("wsingest_received_bytes_total") > 50.0);
    assert_eq!(v("wsingest_points_written_total"), 3.0);
    assert!(v("wsingest_write_requests_total{outcome=\"2xx\"}") >= 1.0);
    assert!(v("wsingest_write_duration_seconds_count") >= 1.0);
    assert_eq!(v("wsingest_batch_points_sum"), 3.0);
    assert!(t.contains("# TYPE wsingest_batch_points histogram"));
    // Nothing per device in Prometheus.
    assert!(!t.contains("m-1"), "a device id leaked into a label:\n{t}");

    // A refused handshake and a closed session are counted too.
    let bad = tokio_tungstenite::connect_async(server.ws_url("/v1/devices/a%5Cb")).await;
    assert!(
        matches!(bad, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400)
    );
    ws.close(None).await.unwrap();
    let t = eventually(10, "the session to be counted closed", || async {
        let t = metrics_text(&server).await;
        (find_sample(&t, "wsingest_sessions_open") == Some(0.0)).then_some(t)
    })
    .await;
    assert_eq!(
        find_sample(&t, "wsingest_sessions_closed_total{code=\"device\"}"),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        find_sample(
            &t,
            "wsingest_handshakes_refused_by_status_total{status=\"400\"}"
        ),
        Some(1.0),
        "{t}"
    );

    // OpenMetrics on request.
    let r = services::http()
        .get(server.http_url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    // Every sample of the Prometheus text (security counters included) is
    // in the OpenMetrics text with the same value; one `# EOF`, at the end.
    let om = r.text().await.unwrap();
    assert!(
        om.ends_with("# EOF\n") && om.matches("# EOF").count() == 1,
        "{om}"
    );
    let samples = |text: &str| -> std::collections::BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let t = metrics_text(&server).await;
    let (plain, open) = (samples(&t), samples(&om));
    // (Histogram bucket bounds are formatted differently by the two
    // encoders; their _count and _sum are compared.)
    for (name, value) in plain.iter().filter(|(n, _)| !n.contains("_bucket{")) {
        // Gauges and counters may move between the two scrapes.
        assert!(
            open.contains_key(name),
            "{name} missing in OpenMetrics:\n{om}"
        );
        if name.starts_with("wsingest_handshakes_refused") {
            assert_eq!(&open[name], value, "{name}");
        }
    }
    assert!(
        om.contains("# TYPE wsingest_handshake_timeouts counter\n"),
        "OpenMetrics counter families have no _total: {om}"
    );
    server.stop().await;
}

#[tokio::test]
async fn stats_land_in_influxdb() {
    let influx = Influxd::start().await;
    influx.create_db("s1").await;
    let mut config = test_config(&influx.url, "s1");
    config.observe.stats_interval_ms = 200;
    config.observe.instance = "test-1".into();
    let server = TestServer::start(config).await;
    for (dev, n) in [("s-a", 3u64), ("s-b", 5)] {
        let mut ws = connect(&server.ws_url(&format!("/v1/devices/{dev}")), None).await;
        for seq in 1..=n {
            send_json(
                &mut ws,
                json!({"seq": seq, "measurement": "weather", "fields": {"temp_c": seq as f64}}),
            )
            .await;
            assert_eq!(next_json(&mut ws).await, json!({"ack": seq}));
        }
        ws.send(Message::text("{")).await.unwrap();
        next_json(&mut ws).await;
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }
    // Per device, the interval deltas add up to what it sent.
    for (dev, n) in [("s-a", 3u64), ("s-b", 5)] {
        let q = format!(
            "SELECT sum(points), sum(messages), sum(errors), sum(sessions_opened), max(last_seen_ms) \
             FROM wsingest_device WHERE device = '{dev}' AND instance = 'test-1'"
        );
        // The invalid message may fall into the next stats interval: wait
        // until every count is in (points, messages incl. the invalid one,
        // one error, one session).
        let row = eventually(
            20,
            "per-device stats: points n, messages n+1, errors 1, sessions 1",
            || async {
                let rows = influx.rows("s1", &q).await;
                rows.into_iter().next().filter(|r| {
                    r[1] == json!(n) && r[2] == json!(n + 1) && r[3] == json!(1) && r[4] == json!(1)
                })
            },
        )
        .await;
        assert!(
            row[5].as_i64().unwrap() > 1_700_000_000_000,
            "last_seen_ms: {row:?}"
        );
    }
    eventually(20, "service stats: points 8, acks 8, decode errors 2, sessions 2", || async {
        let rows = influx
            .rows("s1", "SELECT sum(points), sum(acks), sum(decode_errors), sum(sessions_opened) FROM wsingest_stats")
            .await;
        rows.into_iter().next().filter(|r| {
            r[1] == json!(8) && r[2] == json!(8) && r[3] == json!(2) && r[4] == json!(2)
        })
    })
    .await;
    let sessions = eventually(20, "session history", || async {
        let rows = influx
            .rows(
                "s1",
                "SELECT messages, points, device, code FROM wsingest_session",
            )
            .await;
        (rows.len() == 2).then_some(rows)
    })
    .await;
    assert!(
        sessions
            .iter()
            .any(|r| r[1] == json!(6) && r[2] == json!(5) && r[3] == json!("s-b")),
        "{sessions:?}"
    );
    assert!(
        sessions.iter().all(|r| r[4] == json!("device")),
        "devices closed: {sessions:?}"
    );
    server.stop().await;
}

async fn feed_update(ws: &mut Ws) -> serde_json::Value {
    next_json(ws).await
}

#[tokio::test]
async fn live_feed_shows_devices_and_is_guarded() {
    let influx = Influxd::start().await;
    influx.create_db("l1").await;
    let server = TestServer::start(test_config(&influx.url, "l1")).await;
    let page = services::http()
        .get(server.http_url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("wsingest live"));

    let mut dev = connect(&server.ws_url("/v1/devices/live-1"), None).await;
    send_json(&mut dev, json!({"seq": 1, "measurement": "weather", "tags": {"site": "roof"}, "fields": {"temp_c": 21.5}}))
        .await;
    assert_eq!(next_json(&mut dev).await, json!({"ack": 1}));
    dev.send(Message::text("garbage")).await.unwrap();
    next_json(&mut dev).await;

    let mut feed = connect(&server.ws_url("/live/feed"), None).await;
    feed.send(Message::text(json!({"select": "live-1"}).to_string()))
        .await
        .unwrap();
    // Updates come every second; the first one may predate the selection.
    let mut u = feed_update(&mut feed).await;
    for _ in 0..5 {
        if u["selected"]["id"] == json!("live-1") {
            break;
        }
        u = feed_update(&mut feed).await;
    }
    assert_eq!(u["totals"]["devices_online"], json!(1));
    let d = &u["devices"][0];
    assert_eq!(
        (d["id"].clone(), d["online"].clone()),
        (json!("live-1"), json!(true))
    );
    assert_eq!(d["fields"]["temp_c"], json!(21.5));
    assert_eq!(d["tags"]["site"], json!("roof"));
    assert_eq!(d["measurement"], json!("weather"));
    assert_eq!(u["errors"][0]["code"], json!("invalid_json"));
    assert_eq!(u["errors"][0]["device"], json!("live-1"));
    server.stop().await;

    // Devices must authenticate: the live view needs the operator token.
    let mut config = test_config(&influx.url, "l1");
    config.auth.allow_anonymous = false;
    let closed = TestServer::start(config.clone()).await;
    let r = services::http()
        .get(closed.http_url("/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    closed.stop().await;
    config.observe.operator_token = Some(Secret::new("op-secret"));
    let guarded = TestServer::start(config).await;
    let http = services::http();
    assert_eq!(
        http.get(guarded.http_url("/live"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(guarded.http_url("/live?token=wrong"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(guarded.http_url("/live?token=op-secret"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut feed = connect(&guarded.ws_url("/live/feed?token=op-secret"), None).await;
    assert!(feed_update(&mut feed).await["totals"].is_object());
    let refused = tokio_tungstenite::connect_async(guarded.ws_url("/live/feed")).await;
    assert!(refused.is_err(), "feed without token must be refused");
    guarded.stop().await;
}

#[tokio::test]
async fn http_fallback_is_counted_per_device() {
    let influx = Influxd::start().await;
    influx.create_db("h1").await;
    let server = TestServer::start(test_config(&influx.url, "h1")).await;
    let http = services::http();
    let post = |body: &'static str| {
        http.post(server.http_url("/v1/devices/h-1/points"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let ok = post(r#"{"seq": 1, "measurement": "weather", "fields": {"temp_c": 20.5}}"#)
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = post("{").await.unwrap();
    assert_eq!(bad.status(), 400);
    let t = metrics_text(&server).await;
    let v = |s: &str| find_sample(&t, s).unwrap_or_else(|| panic!("no sample {s} in\n{t}"));
    assert_eq!(v("wsingest_messages_total"), 2.0);
    assert_eq!(v("wsingest_points_total"), 1.0);
    assert_eq!(v("wsingest_acks_total"), 1.0);
    assert_eq!(
        v("wsingest_decode_errors_total{reason=\"invalid_json\"}"),
        1.0
    );
    assert_eq!(
        v("wsingest_sessions_opened_total"),
        0.0,
        "a request is not a session"
    );
    let mut feed = connect(&server.ws_url("/live/feed"), None).await;
    let u = feed_update(&mut feed).await;
    let d = &u["devices"][0];
    assert_eq!(d["id"], json!("h-1"));
    assert_eq!(
        (
            d["points"].clone(),
            d["errors"].clone(),
            d["online"].clone()
        ),
        (json!(1), json!(1), json!(false))
    );
    assert_eq!(d["fields"]["temp_c"], json!(20.5));
    server.stop().await;
}
