//! wss end to end: a server with an rcgen certificate, clients trusting the
//! test CA (tokio-rustls with ring, and Python's `websockets` with `ssl`,
//! the notes' client pattern), data checked in a real influxd.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use wsingest_harness::security::*;
use wsingest_harness::*;
use wsingest_server::auth::DevicePolicy;

#[tokio::test]
async fn wss_with_device_tokens_end_to_end() {
    wsingest_server::tls::install_crypto_provider();
    let influx = Influxd::start().await;
    influx.create_db("tls1").await;
    let certs = TestCerts::generate();
    let reg = TestRegistry::new();
    let token = reg.add("secure-1", DevicePolicy::default());
    let mut config = test_config(&influx.url, "tls1");
    config.auth.allow_anonymous = true;
    config.auth.registry_path = Some(reg.path.clone());
    config.tls.cert = Some(certs.cert_path.clone());
    config.tls.key = Some(certs.key_path.clone());
    config.server.handshake_timeout_secs = 1;
    let server = TestServer::start(config).await;
    let port = server.addr.port();

    // The notes' pattern over TLS: connect to /, say hello, read the reply.
    let mut ws = connect_wss(
        &format!("wss://localhost:{port}/"),
        certs.client_config(),
        &[],
    )
    .await
    .unwrap();
    ws.send(Message::text("Hello, WebSocket!")).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    let reply: serde_json::Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(reply["error"], json!("invalid_json"), "{reply}");

    // A registered device with its token over wss: acked and stored.
    let auth = format!("Bearer {token}");
    let url = format!("wss://127.0.0.1:{port}/v1/devices/secure-1");
    let mut ws = connect_wss(&url, certs.client_config(), &[("authorization", &auth)])
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"seq": 1, "ts": 1000, "fields": {"t": 21.5}}).to_string(),
    ))
    .await
    .unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert_eq!(ack.to_text().unwrap(), r#"{"ack":1}"#);
    let rows = influx.rows("tls1", "SELECT t, device FROM telemetry").await;
    assert_eq!(
        rows,
        vec![vec![
            json!(1_000_000_000u64),
            json!(21.5),
            json!("secure-1")
        ]]
    );

    // Auth still applies over TLS.
    let err = connect_wss(&url, certs.client_config(), &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401"), "{err}");
    // A client that does not trust the CA fails the handshake.
    let untrusting = TestCerts::generate().client_config();
    assert!(connect_wss(&url, untrusting, &[]).await.is_err());
    // Plain ws to the TLS port gets nowhere.
    assert!(
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/"))
            .await
            .is_err()
    );
    // A TCP client that never starts its TLS handshake is cut off.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("closed by the server");
    assert!(matches!(n, Ok(0) | Err(_)));
    let m = metrics_tls(&server, &certs).await;
    assert!(
        metric(&m, "wsingest_tls_handshake_failures_total") >= 2,
        "{m}"
    );
    assert!(metric(&m, "wsingest_handshake_timeouts_total") >= 1, "{m}");
    server.stop().await;
}

/// The HTTP fallback over TLS: a client offering h2 gets HTTP/2 (ALPN), one
/// offering only HTTP/1.1 gets that; both are acked and stored. A WebSocket
/// client (ALPN http/1.1) still upgrades on the same port.
#[tokio::test]
async fn http_fallback_over_tls_negotiates_h2_and_http1() {
    wsingest_server::tls::install_crypto_provider();
    let influx = Influxd::start().await;
    influx.create_db("tls3").await;
    let certs = TestCerts::generate();
    let mut config = test_config(&influx.url, "tls3");
    config.tls.cert = Some(certs.cert_path.clone());
    config.tls.key = Some(certs.key_path.clone());
    let server = TestServer::start(config).await;
    let port = server.addr.port();
    let url = format!("https://localhost:{port}/v1/devices/h2-dev/points");
    let ca = reqwest::Certificate::from_pem(certs.ca_pem.as_bytes()).unwrap();
    let h2 = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .build()
        .unwrap();
    let h1 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .build()
        .unwrap();
    for (seq, client, version) in [
        (1, &h2, reqwest::Version::HTTP_2),
        (2, &h1, reqwest::Version::HTTP_11),
    ] {
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(json!({"seq": seq, "ts": seq * 1000, "fields": {"v": seq}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            json!({"ack": seq, "points": 1})
        );
    }
    let mut ws = connect_wss(
        &format!("wss://localhost:{port}/v1/devices/ws-dev"),
        certs.client_config(),
        &[],
    )
    .await
    .unwrap();
    ws.send(Message::text(
        json!({"seq": 3, "ts": 3000, "fields": {"v": 3}}).to_string(),
    ))
    .await
    .unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert_eq!(ack.to_text().unwrap(), r#"{"ack":3}"#);
    let rows = influx.rows("tls3", "SELECT v, device FROM telemetry").await;
    assert_eq!(
        rows,
        vec![
            vec![json!(1_000_000_000u64), json!(1), json!("h2-dev")],
            vec![json!(2_000_000_000u64), json!(2), json!("h2-dev")],
            vec![json!(3_000_000_000u64), json!(3), json!("ws-dev")],
        ]
    );
    server.stop().await;
}

/// GET /metrics over https with a bare TLS client (HTTP/1.1 by hand).
async fn metrics_tls(server: &TestServer, certs: &TestCerts) -> String {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(certs.client_config())
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn python_websockets_client_over_wss() {
    // Debian's python3, where python3-websockets installs.
    let python = std::path::PathBuf::from("/usr/bin/python3");
    assert!(
        python.exists(),
        "python3 is missing: `sudo apt-get install -y python3 python3-websockets`"
    );
    let check = std::process::Command::new(&python)
        .args(["-c", "import websockets"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "Python `websockets` is missing: `sudo apt-get install -y python3-websockets` (scripts/install.sh does it)"
    );
    let influx = Influxd::start().await;
    influx.create_db("tls2").await;
    let certs = TestCerts::generate();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &certs.ca_pem).unwrap();
    let mut config = test_config(&influx.url, "tls2");
    config.tls.cert = Some(certs.cert_path.clone());
    config.tls.key = Some(certs.key_path.clone());
    let server = TestServer::start(config).await;
    // The notes' example, with an SSL context trusting the test CA.
    let script = format!(
        r#"
import asyncio, json, ssl, websockets
async def hello():
    ctx = ssl.create_default_context(cafile="{ca}")
    async with websockets.connect("wss://localhost:{port}", ssl=ctx) as websocket:
        await websocket.send("Hello, WebSocket!")
        print(await websocket.recv())
        await websocket.send(json.dumps({{"seq": 1, "ts": 5000, "fields": {{"py": 1.5}}}}))
        print(await websocket.recv())
asyncio.run(hello())
"#,
        ca = ca.path().display(),
        port = server.addr.port()
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args(["-c", &script])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("invalid_json"), "{stdout}");
    assert_eq!(lines[1], r#"{"ack":1}"#);
    let rows = influx
        .rows("tls2", "SELECT py, device FROM telemetry")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!(5_000_000_000u64),
            json!(1.5),
            json!("anonymous-1")
        ]]
    );
    server.stop().await;
}

/// The Rust device client (`wsingest-device`) and `wsingest simulate` over
/// wss://, trusting the test CA from a PEM file (`ca_file`, `--ca-file`):
/// every point acked is stored. A client trusting another CA fails the TLS
/// handshake, counted as `tls`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_device_client_and_simulate_over_wss() {
    use wsingest_device::connect::{ConnectOptions, Target};
    use wsingest_device::{Client, ClientConfig, Encoding, Point};
    wsingest_server::tls::install_crypto_provider();
    let influx = Influxd::start().await;
    influx.create_db("tls3").await;
    let certs = TestCerts::generate();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let mut config = test_config(&influx.url, "tls3");
    config.auth.allow_anonymous = true;
    config.tls.cert = Some(certs.cert_path.clone());
    config.tls.key = Some(certs.key_path.clone());
    let server = TestServer::start(config).await;
    let url = format!("wss://localhost:{}", server.addr.port());

    let mut cc = ClientConfig::new("rust-wss");
    cc.ca_file = Some(ca.clone());
    let client = Client::connect(&url, cc).await.unwrap();
    for i in 0..20 {
        let p = Point::new("wss_rust")
            .field("v", i as f64)
            .ts(1_764_600_000_000 + i);
        client.send(p).await.unwrap();
    }
    client.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(client.stats().acked, 20, "{:?}", client.stats());
    client.close().await;
    assert_eq!(influx.count("tls3", "wss_rust", "v").await, 20);

    // Another CA: the server's certificate is refused.
    let other = TestCerts::generate();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.ca_pem).unwrap();
    let target = Target::resolve_with_ca(&url, Some(&other_ca))
        .await
        .unwrap();
    let opts = ConnectOptions {
        encoding: Encoding::Json,
        token: None,
        source: None,
        timeout: Duration::from_secs(10),
    };
    let err = wsingest_device::connect::connect(&target, "x", &opts, &Default::default())
        .await
        .err()
        .expect("a certificate from an untrusted CA is refused");
    assert_eq!(err.kind(), "tls", "{err}");

    // The simulator's command line over wss.
    let out = tokio::process::Command::new(wsingest_harness::process::wsingest_bin())
        .args(["simulate", "--url", &url, "--ca-file"])
        .arg(&ca)
        .args(["--profile", "smart_meter", "--devices", "2"])
        .args(["--messages", "3", "--seq-field", "n", "--json", "--quiet"])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let acked = report["totals"]["points_acked"].as_u64().unwrap();
    assert!(acked > 0, "{report}");
    assert_eq!(report["totals"]["points_unacked"], json!(0), "{report}");
    // Every point the simulator saw acked is stored (`n`: the message seq,
    // one per point).
    assert_eq!(influx.count("tls3", "meter", "n").await, acked, "{report}");
}
