//! The Python device client (clients/python) against a real server and a
//! real influxd: faults, permanent nacks, a revoked token, the disk buffer
//! across a client restart, and the command-line tool. The client runs as a
//! child process (tests/clients/driver.py) in the venv scripts/install.sh
//! makes (target/clients-venv, or $WSINGEST_CLIENTS_VENV).

mod common;
#[path = "clients/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;

use harness::{Driver, Stack, TS0, assert_all_acked, assert_faults_seen, closes, repo};

/// The venv's python, checked to import the client's dependencies.
fn python() -> PathBuf {
    let venv = std::env::var_os("WSINGEST_CLIENTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/clients-venv"));
    let py = venv.join("bin/python");
    let ok = py.is_file()
        && Command::new(&py)
            .args(["-c", "import websockets, cbor2"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python client's venv is missing at {}: run scripts/install.sh, or \
         `apt-get install python3-venv && python3 -m venv target/clients-venv && \
         target/clients-venv/bin/pip install ./clients/python`",
        venv.display()
    );
    py
}

/// `python driver.py ARGS` with the client's source (not an installed copy)
/// first on the path.
fn driver_cmd(args: &[String]) -> Command {
    let mut cmd = Command::new(python());
    cmd.env("PYTHONPATH", repo().join("clients/python/src"))
        .env("PYTHONUNBUFFERED", "1")
        .arg(repo().join("tests/clients/driver.py"))
        .args(args);
    cmd
}

fn args(stack: &Stack, device: &str, token: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--url".into(),
        stack.base_url(),
        "--device".into(),
        device.into(),
        "--token".into(),
        token.into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_loses_nothing_through_influx_pause_1013_and_server_kill() {
    let mut stack = Stack::start(|_| {}).await;
    let token = stack.add_device("py-faults");
    const N: u64 = 1200;
    let a = args(
        &stack,
        "py-faults",
        &token,
        &[
            "--count",
            "1200",
            "--rate",
            "60",
            "--pad",
            "150",
            "--encoding",
            "cbor",
        ],
    );
    let mut d = Driver::spawn("python", driver_cmd(&a), stack.dir.path());
    let r = harness::faults_run(&mut stack, &mut d, N).await;
    assert_faults_seen(&stack, &r, N);
    let all: Vec<i64> = (0..N as i64).collect();
    stack.check_exactly("py-faults", &all, 150, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_reports_permanent_nacks_with_their_reason() {
    let stack = Stack::start(|c| c.server.max_message_bytes = 4096).await;
    let token = stack.add_device("py-nacks");
    let a = args(
        &stack,
        "py-nacks",
        &token,
        &["--count", "20", "--mode", "nacks"],
    );
    let mut d = Driver::spawn("python", driver_cmd(&a), stack.dir.path());
    let r = d.result(60).await;
    assert_eq!(r["result"], "failed", "{r}");
    let mut reasons: Vec<(u64, String)> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(!f["detail"].as_str().unwrap().is_empty(), "{f}");
            (
                f["seq"].as_u64().unwrap(),
                f["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    reasons.sort();
    // seq = index + 1.
    assert_eq!(
        reasons,
        vec![
            (4, "reserved_tag".to_string()),
            (6, "rejected_by_database".to_string()),
            (8, "too_large".to_string()),
        ],
        "{r}"
    );
    let s = &r["stats"];
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["acked"].as_u64(),
            s["nacked"].as_u64()
        ),
        (Some(20), Some(17), Some(3)),
        "{s}"
    );
    assert_eq!(closes(&r, "1009"), 1, "{s}");
    let good: Vec<i64> = (0..20).filter(|i| ![3, 5, 7].contains(i)).collect();
    stack.check_exactly("py-nacks", &good, 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_stops_with_an_auth_error_when_its_token_is_revoked() {
    let stack = Stack::start(|_| {}).await;
    let token = stack.add_device("py-revoked");
    let a = args(
        &stack,
        "py-revoked",
        &token,
        &["--mode", "forever", "--rate", "50"],
    );
    let mut d = Driver::spawn("python", driver_cmd(&a), stack.dir.path());
    d.wait_for("progress", 30, 30).await;
    stack.registry.revoke("py-revoked");
    let r = d.result(20).await;
    assert_eq!(r["result"], "auth_error", "{r}");
    assert_eq!(r["close_code"], 1008, "{r}");
    assert!(r["stats"]["acked"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["stats"]["reconnects"], 0, "stopped, no reconnect: {r}");

    // A client started with the revoked token: 401 at the handshake.
    let a = args(&stack, "py-revoked", &token, &["--count", "5"]);
    let mut d = Driver::spawn("python-again", driver_cmd(&a), stack.dir.path());
    let r = d.result(20).await;
    assert_eq!(r["result"], "auth_error", "{r}");
    assert_eq!(r["status"], 401, "{r}");
    assert_eq!(r["stats"]["connects"], 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_disk_buffer_survives_a_client_restart() {
    let mut stack = Stack::start(|_| {}).await;
    let token = stack.add_device("py-disk");
    let buf = stack.dir.path().join("py-buffer");
    let buf_s = buf.to_string_lossy().to_string();
    // 50 points acked.
    let a = args(
        &stack,
        "py-disk",
        &token,
        &["--count", "50", "--buffer-dir", &buf_s],
    );
    let r = Driver::spawn("python-1", driver_cmd(&a), stack.dir.path())
        .result(60)
        .await;
    assert_all_acked(&r, 50);
    // The server gone: 50 more taken into the disk buffer, then kill -9.
    stack.kill_server();
    let a = args(
        &stack,
        "py-disk",
        &token,
        &[
            "--first",
            "50",
            "--count",
            "50",
            "--buffer-dir",
            &buf_s,
            "--mode",
            "hold",
        ],
    );
    let mut d = Driver::spawn("python-2", driver_cmd(&a), stack.dir.path());
    let held = d.wait_for("held", 50, 30).await;
    assert_eq!(held["stats"]["acked"], 0, "{held}");
    d.kill9();
    // Back up; a new process on the same buffer sends 50 more and flushes.
    stack.restart_server().await;
    let a = args(
        &stack,
        "py-disk",
        &token,
        &["--first", "100", "--count", "50", "--buffer-dir", &buf_s],
    );
    let r = Driver::spawn("python-3", driver_cmd(&a), stack.dir.path())
        .result(60)
        .await;
    assert_eq!(r["result"], "ok", "{r}");
    let s = &r["stats"];
    assert_eq!(s["restored"], 50, "{s}");
    assert_eq!(s["resent"], 50, "{s}");
    assert_eq!(s["acked"], 100, "the restored 50 and the new 50: {s}");
    assert_eq!(s["buffered"], 0, "{s}");
    let all: Vec<i64> = (0..150).collect();
    stack.check_exactly("py-disk", &all, 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_command_line_tool_sends_points_and_auto_ts_is_kept_on_resend() {
    let mut stack = Stack::start(|_| {}).await;
    let token = stack.add_device("py-cli");
    // --help works without a server.
    let help = Command::new(python())
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .args(["-m", "wsingest_client", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--field"));
    let out = Command::new(python())
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .args([
            "-m",
            "wsingest_client",
            &stack.base_url(),
            "--device",
            "py-cli",
        ])
        .args(["--token", &token, "--measurement", "cli", "--tag", "k=v"])
        .args([
            "--field", "n={i}", "--field", "ok=true", "--count", "25", "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["acked"], 25, "{stats}");
    assert_eq!(
        stack.influx.count(harness::DB, "cli", "n").await,
        25,
        "the tool's points are stored"
    );

    // Stamped by the client (no ts given) across a server kill: the resend
    // keeps the stamp, so nothing is stored twice (the server's dedupe
    // window does not survive its restart; the stamp does).
    let a = args(
        &stack,
        "py-auto",
        &stack.add_device("py-auto"),
        &["--count", "300", "--rate", "100", "--auto-ts"],
    );
    let mut d = Driver::spawn("python-auto", driver_cmd(&a), stack.dir.path());
    d.wait_for("progress", 150, 30).await;
    stack.restart_server().await;
    let r = d.result(60).await;
    assert_all_acked(&r, 300);
    assert!(r["stats"]["reconnects"].as_u64().unwrap() >= 1, "{r}");
    let all: Vec<i64> = (0..300).collect();
    stack.check_exactly("py-auto", &all, 0, true).await;
    let _ = TS0;
}
