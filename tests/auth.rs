//! Device auth at the handshake against a real server and influxd: tokens
//! bound to devices, 401/403 before the upgrade, revocation and rotation
//! closing live sessions with 1008, the Origin allow-list.

use std::time::Duration;

use serde_json::json;
use wsingest_harness::security::*;
use wsingest_harness::*;
use wsingest_server::auth::DevicePolicy;

async fn setup(db: &str, anonymous: bool) -> (Influxd, TestRegistry, TestServer) {
    let influx = Influxd::start().await;
    influx.create_db(db).await;
    let reg = TestRegistry::new();
    let mut config = test_config(&influx.url, db);
    config.auth.allow_anonymous = anonymous;
    config.auth.registry_path = Some(reg.path.clone());
    config.auth.reload_interval_ms = 100;
    config.auth.allowed_origins = vec!["https://app.example.com".into()];
    let server = TestServer::start(config).await;
    (influx, reg, server)
}

#[tokio::test]
async fn tokens_are_bound_to_their_device() {
    let (influx, reg, server) = setup("auth1", false).await;
    let ta = reg.add("dev-a", DevicePolicy::default());
    let tb = reg.add("dev-b", DevicePolicy::default());
    // The registry was written after the server started: hot reload.
    let url_a = server.ws_url("/v1/devices/dev-a");
    let mut ws = eventually(10, "the new registry to be loaded", || async {
        try_connect(&url_a, &[("authorization", &format!("Bearer {ta}"))])
            .await
            .ok()
    })
    .await;
    send_json(&mut ws, json!({"seq": 1, "fields": {"v": 1}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));

    // Missing, wrong and malformed tokens: 401 before any upgrade.
    assert_eq!(refused_status(try_connect(&url_a, &[]).await), 401);
    let wrong = "wsi_".to_string() + &"0".repeat(64);
    assert_eq!(
        refused_status(try_connect(&url_a, &[("authorization", &format!("Bearer {wrong}"))]).await),
        401
    );
    assert_eq!(
        refused_status(try_connect(&url_a, &[("authorization", "Basic YTpi")]).await),
        401
    );
    assert_eq!(
        refused_status(try_connect(&format!("{url_a}?token={wrong}"), &[]).await),
        401
    );
    // A's token on B's path: 403, and the body says why without the token.
    let r = try_connect(
        &server.ws_url("/v1/devices/dev-b"),
        &[("authorization", &format!("Bearer {ta}"))],
    )
    .await;
    let body = refused_body(r);
    assert!(body.contains("another device"), "{body}");
    assert!(!body.contains(&ta), "{body}");
    assert_eq!(
        refused_status(
            try_connect(
                &server.ws_url("/v1/devices/dev-b"),
                &[("authorization", &format!("Bearer {ta}"))]
            )
            .await
        ),
        403
    );
    // ?token= (browsers), and `/` takes the device id from the token.
    let mut wb = try_connect(&server.ws_url(&format!("/?token={tb}")), &[])
        .await
        .unwrap();
    send_json(&mut wb, json!({"seq": 7, "fields": {"v": 2}})).await;
    assert_eq!(next_json(&mut wb).await, json!({"ack": 7}));
    // Payload cannot pick its device: the tag is the session's.
    send_json(
        &mut wb,
        json!({"seq": 8, "tags": {"device": "dev-a"}, "fields": {"v": 3}}),
    )
    .await;
    assert_eq!(next_json(&mut wb).await["error"], json!("reserved_tag"));
    let rows = influx
        .rows("auth1", "SELECT v, device FROM telemetry")
        .await;
    let mut got: Vec<(f64, String)> = rows
        .iter()
        .map(|r| (r[1].as_f64().unwrap(), r[2].as_str().unwrap().to_string()))
        .collect();
    got.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(
        got,
        vec![(1.0, "dev-a".to_string()), (2.0, "dev-b".to_string())]
    );

    // Browsers: an Origin outside the allow-list is 403; inside, fine.
    let hdrs = [
        ("authorization", format!("Bearer {ta}")),
        ("origin", "https://evil.example.net".into()),
    ];
    let h: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(refused_status(try_connect(&url_a, &h).await), 403);
    let ok = try_connect(
        &format!("{url_a}?token={ta}"),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert!(ok.is_ok(), "allowed origin");

    let m = metrics(&server).await;
    assert!(
        metric(
            &m,
            "wsingest_handshakes_refused_total{reason=\"missing_token\"}"
        ) >= 1,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "wsingest_handshakes_refused_total{reason=\"invalid_token\"}"
        ) >= 2,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "wsingest_handshakes_refused_total{reason=\"wrong_device\"}"
        ) >= 2,
        "{m}"
    );
    assert!(
        metric(&m, "wsingest_handshakes_refused_total{reason=\"origin\"}") >= 1,
        "{m}"
    );
    server.stop().await;
}

#[tokio::test]
async fn revocation_and_rotation_close_live_sessions_with_1008() {
    let (influx, reg, server) = setup("auth2", false).await;
    let t = reg.add("dev-r", DevicePolicy::default());
    let url = server.ws_url("/v1/devices/dev-r");
    let mut ws = eventually(10, "registry reload", || async {
        try_connect(&url, &[("authorization", &format!("Bearer {t}"))])
            .await
            .ok()
    })
    .await;
    send_json(&mut ws, json!({"seq": 1, "fields": {"v": 1}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));

    let revoked_at = std::time::Instant::now();
    reg.revoke("dev-r");
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert!(
        revoked_at.elapsed() < Duration::from_secs(5),
        "closed within seconds: {:?}",
        revoked_at.elapsed()
    );
    assert_eq!(
        refused_status(try_connect(&url, &[("authorization", &format!("Bearer {t}"))]).await),
        401
    );

    // Rotation re-enables with a new token; the old one stays dead and a
    // session opened with the new token survives the next reload.
    let t2 = reg.rotate("dev-r");
    let mut ws2 = eventually(10, "rotated token accepted", || async {
        try_connect(&url, &[("authorization", &format!("Bearer {t2}"))])
            .await
            .ok()
    })
    .await;
    assert_eq!(
        refused_status(try_connect(&url, &[("authorization", &format!("Bearer {t}"))]).await),
        401
    );
    let t3 = reg.rotate("dev-r");
    assert_eq!(
        close_code(&mut ws2).await,
        Some(1008),
        "rotation closes sessions of the old token"
    );
    let mut ws3 = eventually(10, "second rotation", || async {
        try_connect(&url, &[("authorization", &format!("Bearer {t3}"))])
            .await
            .ok()
    })
    .await;
    send_json(&mut ws3, json!({"seq": 2, "fields": {"v": 2}})).await;
    assert_eq!(next_json(&mut ws3).await, json!({"ack": 2}));
    assert_eq!(influx.count("auth2", "telemetry", "v").await, 2);
    let m = metrics(&server).await;
    assert!(metric(&m, "wsingest_sessions_revoked_total") >= 2, "{m}");
    // Counted when the session task ends, after its closing handshake.
    eventually(10, "closes counted", || async {
        let m = metrics(&server).await;
        (metric(
            &m,
            "wsingest_sessions_closed_by_server_total{code=\"1008\"}",
        ) >= 2)
            .then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn anonymous_only_when_configured_and_not_as_a_registered_device() {
    let (_influx, reg, server) = setup("auth3", true).await;
    let t = reg.add("dev-x", DevicePolicy::default());
    let url = server.ws_url("/v1/devices/dev-x");
    eventually(10, "registry reload", || async {
        try_connect(&url, &[("authorization", &format!("Bearer {t}"))])
            .await
            .ok()
    })
    .await;
    // Unregistered ids and `/` are open to anonymous clients here...
    let mut ws = try_connect(&server.ws_url("/v1/devices/free-1"), &[])
        .await
        .unwrap();
    send_json(&mut ws, json!({"seq": 1, "fields": {"v": 1}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    assert!(try_connect(&server.ws_url("/"), &[]).await.is_ok());
    // ...but not a registered device's id, and a bad token is never downgraded.
    assert_eq!(refused_status(try_connect(&url, &[]).await), 401);
    assert_eq!(
        refused_status(try_connect(&server.ws_url("/v1/devices/free-2?token=wsi_nope"), &[]).await),
        401
    );
    server.stop().await;
}
