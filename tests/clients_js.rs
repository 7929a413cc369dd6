//! The JavaScript device client (clients/js) in Node against a real server
//! and a real influxd: faults, permanent nacks, a revoked token, the disk
//! buffer across a client restart; and its unit tests (`node --test`). The
//! client runs as a child process (tests/clients/driver.mjs) with `ws`
//! installed by `npm ci` in clients/js (scripts/install.sh does it).

#[path = "clients/harness.rs"]
mod harness;

use std::process::Command;

use harness::repo;
use wsingest_harness::services::require_binary;

/// `node`, with clients/js/node_modules installed.
fn node() -> Command {
    let node = require_binary("node", "nodejs");
    assert!(
        repo()
            .join("clients/js/node_modules/ws/package.json")
            .is_file(),
        "clients/js/node_modules is missing: run scripts/install.sh, or \
         `apt-get install nodejs npm && (cd clients/js && npm ci)`"
    );
    Command::new(node)
}

fn driver(args: &[String]) -> Command {
    let mut cmd = node();
    cmd.arg(repo().join("tests/clients/driver.mjs")).args(args);
    cmd
}

#[test]
fn js_unit_tests_pass() {
    let out = node()
        .current_dir(repo().join("clients/js"))
        .args(["--test", "test/"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("# fail 0"),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_loses_nothing_through_influx_pause_1013_and_server_kill() {
    harness::scenario_faults("node", &driver, "json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_reports_permanent_nacks_with_their_reason() {
    harness::scenario_nacks("node", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_stops_with_an_auth_error_when_its_token_is_revoked() {
    harness::scenario_revoked("node", &driver, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_disk_buffer_survives_a_client_restart() {
    harness::scenario_disk_buffer("node", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_auto_ts_is_kept_on_resend_across_a_server_kill() {
    harness::scenario_auto_ts("node", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cbor_client_stores_exactly_what_it_sent() {
    // The client's own CBOR encoder through the server's decoder: values
    // and timestamps as sent.
    let stack = harness::Stack::start(|_| {}).await;
    let token = stack.add_device("node-cbor").await;
    let args: Vec<String> = [
        "--url",
        &stack.base_url(),
        "--device",
        "node-cbor",
        "--token",
        &token,
        "--count",
        "200",
        "--encoding",
        "cbor",
        "--pad",
        "30",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = harness::Driver::spawn("node-cbor", driver(&args), stack.dir.path())
        .result(60)
        .await;
    harness::assert_all_acked(&r, 200);
    let all: Vec<i64> = (0..200).collect();
    stack.check_exactly("node-cbor", &all, 30, false).await;
}
