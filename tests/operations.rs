//! What an operator meets on day one (issue 17): a missing database, a wrong
//! or unreachable InfluxDB, the dead-letter file and its CLI, and the
//! stumbles of a first run. Real influxd and real `wsingest` processes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use wsingest_harness::process::{WsingestProcess, wsingest_bin};
use wsingest_harness::security::TestRegistry;
use wsingest_harness::services::http;
use wsingest_harness::*;
use wsingest_server::config::{Config, SinkKind};

/// A config for a real `wsingest serve`: spool and dead-letter file in `dir`,
/// a short retry budget so outages show within a test.
fn config(dir: &Path, url: &str, db: &str) -> Config {
    let mut c = test_config(url, db);
    c.spool.dir = dir.join("spool");
    c.influx.dead_letter_path = Some(dir.join("dead-letter.jsonl"));
    c.influx.retry_initial_ms = 50;
    c.influx.retry_max_ms = 200;
    c.influx.retry_max_elapsed_ms = 500;
    c.observe.stats_interval_ms = 0;
    c
}

async fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({ "text": text })),
    )
}

async fn readyz(url: &str) -> (u16, String) {
    let r = http().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn missing_database_is_an_outage_never_dead_letters() {
    let influx = Influxd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = WsingestProcess::start(config(dir.path(), &influx.url, "nodb"), dir.path()).await;
    // The startup check already knows.
    let (status, body) = readyz(&server.http_url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("database \"nodb\" does not exist")
            && body.contains("CREATE DATABASE nodb")
            && body.contains("influx.create_database = true"),
        "{body}"
    );
    // Points are spooled and acked (durable), not refused.
    for seq in 1..=3 {
        let (status, reply) = post(
            &server.http_url("/v1/devices/d-1/points"),
            json!({"seq": seq, "ts": now_ms() + seq, "fields": {"x": 1.5}}),
        )
        .await;
        assert_eq!((status, &reply["ack"]), (200, &json!(seq)), "{reply}");
    }
    assert!(
        !dir.path().join("dead-letter.jsonl").exists()
            || std::fs::read_to_string(dir.path().join("dead-letter.jsonl"))
                .unwrap()
                .is_empty(),
        "nothing dead-lettered"
    );
    let log = server.log();
    assert_eq!(
        count(&log, "CREATE DATABASE nodb"),
        1,
        "one loud line:\n{log}"
    );
    assert_eq!(count(&log, "database refused a message"), 0, "{log}");
    // The operator creates it: the spool drains, readiness comes back.
    influx.create_db("nodb").await;
    eventually(30, "spooled points in InfluxDB", || async {
        (influx.count("nodb", "telemetry", "x").await == 3).then_some(())
    })
    .await;
    eventually(15, "/readyz 200", || async {
        let (s, b) = readyz(&server.http_url("/readyz")).await;
        (s == 200 && b.contains("InfluxDB takes writes")).then_some(())
    })
    .await;
    let log = server.log();
    assert_eq!(count(&log, "InfluxDB back after"), 1, "{log}");
}

#[tokio::test]
async fn create_database_at_startup() {
    let influx = Influxd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), &influx.url, "made_here");
    c.influx.create_database = true;
    let server = WsingestProcess::start(c, dir.path()).await;
    let (status, body) = readyz(&server.http_url("/readyz")).await;
    assert_eq!((status, body.trim()), (200, "ready: InfluxDB takes writes"));
    let (status, _) = post(
        &server.http_url("/v1/devices/d-1/points"),
        json!({"seq": 1, "fields": {"x": 2.0}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(influx.count("made_here", "telemetry", "x").await, 1);
}

#[tokio::test]
async fn outage_is_logged_as_two_state_changes_and_readyz_tells_why() {
    let mut influx = Influxd::start().await;
    influx.create_db("db").await;
    let dir = tempfile::tempdir().unwrap();
    let server = WsingestProcess::start(config(dir.path(), &influx.url, "db"), dir.path()).await;
    influx.stop();
    let base = now_ms();
    for seq in 1..=6u64 {
        let (status, reply) = post(
            &server.http_url("/v1/devices/d-1/points"),
            json!({"seq": seq, "ts": base + seq, "fields": {"x": seq}}),
        )
        .await;
        assert_eq!(status, 200, "acked from the spool: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = readyz(&server.http_url("/readyz")).await;
    assert_eq!(status, 200, "the spool has room: {body}");
    assert!(
        body.starts_with("ready: InfluxDB unavailable since") && body.contains("spool"),
        "{body}"
    );
    influx.restart().await;
    eventually(30, "spooled points in InfluxDB", || async {
        (influx.count("db", "telemetry", "x").await == 6).then_some(())
    })
    .await;
    let log = server.log();
    assert_eq!(count(&log, "InfluxDB unreachable since"), 1, "{log}");
    assert_eq!(count(&log, "InfluxDB back after"), 1, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("InfluxDB back after") && l.contains("points spooled")),
        "{log}"
    );
    for never in ["giving up", "write failed, retrying"] {
        assert_eq!(count(&log, never), 0, "{never}:\n{log}");
    }
    assert!(!log.contains('\u{1b}'), "no ANSI colour in a log file");
}

#[tokio::test]
async fn wrong_url_warns_at_startup_and_without_a_spool_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut c = config(dir.path(), &closed, "db");
    c.spool.enabled = false;
    let server = WsingestProcess::start(c, dir.path()).await;
    let (status, body) = readyz(&server.http_url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("InfluxDB unavailable since") && body.contains("spool is off"),
        "{body}"
    );
    let log = server.log();
    assert_eq!(count(&log, "InfluxDB unreachable since"), 1, "{log}");
    let (status, reply) = post(
        &server.http_url("/v1/devices/d-1/points"),
        json!({"seq": 1, "fields": {"x": 1}}),
    )
    .await;
    assert_eq!(
        (status, &reply["error"]),
        (503, &json!("storage_unavailable"))
    );
}

fn wsingest(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(wsingest_bin())
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "0")
        .env_remove("WSINGEST_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn deadletter_replay_after_the_operator_fixed_the_cause() {
    let influx = Influxd::start().await;
    influx.create_db("db").await;
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), &influx.url, "db");
    let cfg = dir.path().join("cli.toml");
    std::fs::write(&cfg, toml::to_string(&c).unwrap()).unwrap();
    let cfg = cfg.to_str().unwrap();
    let server = WsingestProcess::start(c, dir.path()).await;
    let points = server.http_url("/v1/devices/meter-7/points");
    let t = now_ms();
    let (status, _) = post(
        &points,
        json!({"seq": 1, "ts": t, "measurement": "m", "fields": {"v": 1.5}}),
    )
    .await;
    assert_eq!(status, 200);
    // A string where InfluxDB has floats: refused (400), dead-lettered.
    let (status, reply) = post(
        &points,
        json!({"seq": 2, "ts": t + 1, "measurement": "m", "tags": {"site": "roof"}, "fields": {"v": "high"}}),
    )
    .await;
    assert_eq!(
        (status, &reply["error"]),
        (422, &json!("rejected_by_database")),
        "{reply}"
    );

    let out = wsingest(&["deadletter", "list", "--config", cfg], dir.path());
    let listed = text(&out);
    assert!(out.status.success(), "{listed}");
    assert!(
        listed.contains("1 entries")
            && listed.contains("meter-7")
            && listed.contains("400")
            && listed.contains("field type conflict"),
        "{listed}"
    );
    let out = wsingest(&["deadletter", "show", "1", "--config", cfg], dir.path());
    assert!(
        text(&out).contains("m,device=meter-7,site=roof v=\"high\""),
        "{}",
        text(&out)
    );
    let out = wsingest(&["deadletter", "show", "2", "--config", cfg], dir.path());
    assert!(
        !out.status.success() && text(&out).contains("has no entry 2"),
        "{}",
        text(&out)
    );

    // Replay before the fix: refused again, kept, said so.
    let out = wsingest(&["deadletter", "replay", "--config", cfg], dir.path());
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("replayed 0")
            && said.contains("1 still refused")
            && said.contains("field type conflict"),
        "{said}"
    );
    let out = wsingest(&["deadletter", "list", "--config", cfg], dir.path());
    assert!(text(&out).contains("1 entries"), "{}", text(&out));

    // The fix: the measurement goes; replay stores the point and empties the file.
    influx.query("db", "DROP MEASUREMENT m").await;
    let out = wsingest(&["deadletter", "replay", "--config", cfg], dir.path());
    let said = text(&out);
    assert!(
        out.status.success() && said.contains("replayed 1 (1 points"),
        "{said}"
    );
    let rows = influx.rows("db", "SELECT v, site FROM m").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], json!("high"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap(),
        ""
    );
    let out = wsingest(&["deadletter", "list", "--config", cfg], dir.path());
    assert!(text(&out).contains("no dead letters"), "{}", text(&out));

    // Purge wants a confirmation.
    let (status, _) = post(
        &points,
        json!({"seq": 3, "ts": t + 2, "measurement": "m", "fields": {"v": 2.5}}),
    )
    .await;
    assert_eq!(status, 422, "now v is a string field");
    let out = wsingest(&["deadletter", "purge", "--config", cfg], dir.path());
    assert!(
        !out.status.success() && text(&out).contains("--yes"),
        "{}",
        text(&out)
    );
    let out = wsingest(
        &["deadletter", "purge", "--yes", "--config", cfg],
        dir.path(),
    );
    assert!(
        out.status.success() && text(&out).contains("purged 1"),
        "{}",
        text(&out)
    );
    drop(server);
}

#[tokio::test]
async fn config_check_runs_the_checks_serve_runs() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let bad_url = write("url.toml", "[influx]\nurl = \"htp:/127.0.0.1:8086\"\n");
    let out = wsingest(&["config", "check", "--config", &bad_url], dir.path());
    assert!(!out.status.success());
    assert!(
        text(&out).contains("influx.url") && text(&out).contains("htp"),
        "{}",
        text(&out)
    );
    let both = write("both.toml", "[influx]\ndb = \"a\"\n\nbucket = \"b\"\n");
    let out = wsingest(&["config", "check", "--config", &both], dir.path());
    assert!(!out.status.success());
    assert!(
        text(&out).contains("line 4") && text(&out).contains("influx.db and influx.bucket"),
        "{}",
        text(&out)
    );
    // Valid, InfluxDB unreachable: a warning, like serve's, and success.
    let closed = write(
        "closed.toml",
        &format!("[influx]\nurl = \"http://127.0.0.1:{}\"\n", free_port()),
    );
    let out = wsingest(&["config", "check", "--config", &closed], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: cannot reach InfluxDB"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn listen_takes_a_host_name_and_logs_have_no_colour_off_a_tty() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(wsingest_bin())
        .args(["serve", "--sink", "blackhole", "--listen"])
        .arg(format!("localhost:{port}"))
        .current_dir(dir.path())
        .env_remove("WSINGEST_CONFIG")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let up = eventually(20, "serve --listen localhost:PORT answers", || async {
        http().get(&url).send().await.ok().map(|r| r.status())
    })
    .await;
    assert_eq!(up, 200);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("listening"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI codes in a pipe: {log:?}");
}

// The server runs in this process while the test waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_from_anywhere_and_fails_loudly_when_nothing_is_sent() {
    let registry = TestRegistry::new();
    registry.add("someone", Default::default());
    let mut c = test_config("http://127.0.0.1:9", "db");
    c.server.sink = SinkKind::Blackhole;
    c.auth.allow_anonymous = false;
    c.auth.registry_path = Some(registry.path.clone());
    let server = TestServer::start(c).await;
    // Outside the repository: the profiles are built in.
    let elsewhere = tempfile::tempdir().unwrap();
    let url = server.ws_url("");
    let out = wsingest(
        &[
            "simulate",
            "-p",
            "weather_station",
            "-n",
            "2",
            "--rate",
            "20",
            "-d",
            "2s",
            "--drain-timeout",
            "1s",
            "--url",
            &url,
            "--quiet",
        ],
        elsewhere.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit non-zero: {}", text(&out));
    assert!(
        stderr.starts_with("error: nothing was sent")
            && stderr.contains("http_401")
            && stderr.contains("--tokens"),
        "the cause first: {stderr}"
    );
    let out = wsingest(&["simulate", "--list-profiles"], elsewhere.path());
    assert!(
        out.status.success() && text(&out).contains("weather_station"),
        "{}",
        text(&out)
    );
    let out = wsingest(
        &[
            "simulate",
            "-p",
            "weather_station",
            "--devices-dir",
            "/nonexistent",
            "--url",
            &url,
        ],
        elsewhere.path(),
    );
    assert!(
        !out.status.success() && text(&out).contains("--devices-dir"),
        "{}",
        text(&out)
    );
    server.stop().await;
}

#[tokio::test]
async fn http_stumbles_commands_to_unknown_devices_and_array_bodies() {
    let registry = TestRegistry::new();
    let token = registry.add("meter-7", Default::default());
    let mut c = test_config("http://127.0.0.1:9", "db");
    c.server.sink = SinkKind::Blackhole;
    c.auth.allow_anonymous = false;
    c.auth.registry_path = Some(registry.path.clone());
    c.observe.operator_token = Some(wsingest_server::config::Secret::new("op"));
    // Stored commands wait for their device: an unknown one would wait forever.
    c.commands.store = true;
    let server = TestServer::start(c).await;
    let cmd = |device: &str| {
        http()
            .post(server.http_url(&format!("/v1/devices/{device}/commands?wait=0")))
            .header("authorization", "Bearer op")
            .body(r#"{"name": "reboot"}"#)
            .send()
    };
    let r = cmd("meter-8").await.unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("unknown_device") && body.contains("wsingest device add meter-8"),
        "{body}"
    );
    assert_eq!(
        cmd("meter-7").await.unwrap().status(),
        202,
        "a registered device: pending"
    );

    let r = http()
        .post(server.http_url("/v1/devices/meter-7/points"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(r#"[{"seq": 1, "fields": {"x": 1}}]"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let body: serde_json::Value = r.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("one message per request") && detail.contains("application/senml+json"),
        "{detail}"
    );
    server.stop().await;
}

#[tokio::test]
async fn live_views_first_frame_has_rates_and_a_selected_device() {
    let mut c = test_config("http://127.0.0.1:9", "db");
    c.server.sink = SinkKind::Blackhole;
    let server = TestServer::start(c).await;
    let mut dev = connect(&server.ws_url("/v1/devices/busy-1"), None).await;
    let feeder = tokio::spawn(async move {
        for seq in 0.. {
            send_json(&mut dev, json!({"seq": seq, "fields": {"t": seq as f64}})).await;
            let _ = next_json(&mut dev).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut viewer = connect(&server.ws_url("/live/feed"), None).await;
    let first = next_json(&mut viewer).await;
    assert!(
        first["totals"]["messages_per_s"].as_f64().unwrap() > 0.0,
        "{first}"
    );
    assert!(
        first["devices"][0]["messages_per_s"].as_f64().unwrap() > 0.0,
        "{first}"
    );
    assert_eq!(first["selected"]["id"], json!("busy-1"), "{first}");
    assert!(first["selected"]["fields"]["t"].is_number(), "{first}");
    feeder.abort();
    server.stop().await;
}

#[test]
fn docker_and_readme_stumbles() {
    let compose = std::fs::read_to_string("docker-compose.yml").unwrap();
    let ws =
        &compose[compose.find("\n  wsingest:").unwrap()..compose.find("\n  grafana:").unwrap()];
    assert!(
        ws.contains("healthcheck:") && ws.contains("/readyz"),
        "{ws}"
    );
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    assert!(dockerfile.contains("ENV WSINGEST_CONFIG=/etc/wsingest/wsingest.toml"));
    assert!(
        dockerfile.contains("COPY devices ./devices"),
        "built-in profiles need devices/ in the build stage"
    );
    let readme = std::fs::read_to_string("README.md").unwrap();
    for gone in ["DESIGN.md", "WebSocket notes", "the notes'"] {
        assert!(
            !readme.contains(gone),
            "README mentions {gone:?}, which is not in the repo"
        );
    }
    assert!(Path::new("clients/python").is_dir());
    let py = &readme[readme.find("```python").unwrap()..];
    assert!(py.contains("token="), "the Python example uses a token");
}
