//! The HTTP fallback, `POST /v1/devices/{id}/points`, over HTTP/1.1 and h2c:
//! same payloads as the WebSocket, answered once durable, with a status that
//! tells the client what to do.

use serde_json::json;
use wsingest_harness::services::http;
use wsingest_harness::*;

fn cbor(v: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

#[tokio::test]
async fn posts_are_acked_once_stored_over_http1_and_h2c() {
    let mut influx = Influxd::start().await;
    influx.create_db("h").await;
    let mut config = test_config(&influx.url, "h");
    config.server.max_message_bytes = 4096;
    // Without a spool, so that "storage down" below is answered with a nack
    // (tests/durability/ covers the spool).
    config.spool.enabled = false;
    let server = TestServer::start(config).await;
    let url = server.http_url("/v1/devices/pump-1/points");
    let h1 = http();
    let h2 = {
        wsingest_server::tls::install_crypto_provider();
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap()
    };

    // HTTP/1.1, JSON.
    let r = h1
        .post(&url)
        .header("content-type", "application/json")
        .body(json!({"seq": 7, "ts": 1732492800000u64, "fields": {"rpm": 1200}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"ack": 7, "points": 1})
    );

    // h2c (prior knowledge), CBOR batch: the answer is CBOR.
    let batch = json!({"seq": 8, "measurement": "pump", "points": [
        {"ts": 1732492801000u64, "fields": {"rpm": 1300}},
        {"ts": 1732492802000u64, "fields": {"rpm": 1400}}]});
    let r = h2
        .post(&url)
        .header("content-type", "application/cbor")
        .body(cbor(&batch))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/cbor");
    let v: ciborium::Value = ciborium::from_reader(&r.bytes().await.unwrap()[..]).unwrap();
    assert_eq!(
        serde_json::to_value(v).unwrap(),
        json!({"ack": 8, "points": 2})
    );

    // SenML: no seq, so `ack` is null.
    let r = h2
        .post(&url)
        .header("content-type", "application/senml+json; charset=utf-8")
        .body(r#"[{"bn":"pump-1:","bt":1732492803,"n":"pressure","u":"Pa","v":101325}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"ack": null, "points": 1})
    );

    let rows = influx
        .rows("h", "SELECT rpm, device FROM telemetry, pump")
        .await;
    let rpm: Vec<f64> = rows.iter().map(|r| r[1].as_f64().unwrap()).collect();
    assert_eq!(rpm.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r[2] == json!("pump-1")));
    assert_eq!(influx.count("h", "senml", "v").await, 1);

    // Refusals: status and nack say why.
    let post = |ct: &'static str, body: Vec<u8>| {
        let h1 = h1.clone();
        let url = url.clone();
        async move {
            let r = h1
                .post(&url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    let (s, body) = post("application/json", b"Hello".to_vec()).await;
    assert_eq!(s, 400);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"],
        "invalid_json"
    );
    let (s, body) = post("application/json", br#"{"seq": 9, "fields": {}}"#.to_vec()).await;
    assert_eq!(s, 422);
    let nack: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (nack["nack"].clone(), nack["error"].clone()),
        (json!(9), json!("empty_fields"))
    );
    let (s, body) = post("text/plain", b"{}".to_vec()).await;
    assert_eq!(s, 415);
    assert!(body.contains("application/senml+cbor"), "{body}");
    let (s, _) = post("application/json", vec![b' '; 5000]).await;
    assert_eq!(s, 413);
    let r = h1.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // Storage down past the retry budget: 503 with Retry-After, a nack to resend.
    influx.stop();
    let r = h1
        .post(&url)
        .header("content-type", "application/json")
        .body(json!({"seq": 10, "fields": {"rpm": 1}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let nack: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (nack["nack"].clone(), nack["error"].clone()),
        (json!(10), json!("storage_unavailable"))
    );
    server.stop().await;
}

#[tokio::test]
async fn posts_need_the_same_auth_as_websockets() {
    let mut config = test_config("http://127.0.0.1:9", "x");
    config.auth.allow_anonymous = false;
    let server = TestServer::start(config).await;
    let r = http()
        .post(server.http_url("/v1/devices/d1/points"))
        .header("content-type", "application/json")
        .body(r#"{"seq":1,"fields":{"x":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .post(server.http_url("/v1/devices/bad%20id/points"))
        .header("content-type", "application/json")
        .body(r#"{"seq":1,"fields":{"x":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}
