//! The Python device client (clients/python) against a real server and a
//! real influxd: faults, permanent nacks, a revoked token, the disk buffer
//! across a client restart, and the command-line tool. The client runs as a
//! child process (tests/clients/driver.py) in the venv scripts/install.sh
//! makes (target/clients-venv, or $WSINGEST_CLIENTS_VENV).

#[path = "clients/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;

use harness::{Stack, repo};

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

/// `python -m ARGS` with the client's source (not an installed copy) first
/// on the path.
fn python_cmd() -> Command {
    let mut cmd = Command::new(python());
    cmd.env("PYTHONPATH", repo().join("clients/python/src"))
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

fn driver(args: &[String]) -> Command {
    let mut cmd = python_cmd();
    cmd.arg(repo().join("tests/clients/driver.py")).args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_loses_nothing_through_influx_pause_1013_and_server_kill() {
    harness::scenario_faults("python", &driver, "cbor").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_reports_permanent_nacks_with_their_reason() {
    harness::scenario_nacks("python", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_stops_with_an_auth_error_when_its_token_is_revoked() {
    harness::scenario_revoked("python", &driver, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_disk_buffer_survives_a_client_restart() {
    harness::scenario_disk_buffer("python", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_auto_ts_is_kept_on_resend_across_a_server_kill() {
    harness::scenario_auto_ts("python", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_command_line_tool_sends_points() {
    let stack = Stack::start(|_| {}).await;
    let token = stack.add_device("py-cli").await;
    let help = python_cmd()
        .args(["-m", "wsingest_client", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--field"));
    let out = python_cmd()
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
    assert_eq!(stack.influx.count(harness::DB, "cli", "n").await, 25);
    // A wrong token: exit status 3, the reason on stderr.
    let out = python_cmd()
        .args([
            "-m",
            "wsingest_client",
            &stack.base_url(),
            "--device",
            "py-cli",
        ])
        .args(["--token", "wsi_wrong", "--field", "n=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
