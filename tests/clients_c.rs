//! The C device client core (clients/c): its unit tests (ring buffer,
//! resend order, JSON escaping, parser) and the Linux example on
//! libwebsockets against a real server and a real influxd: faults,
//! permanent nacks, a revoked token, client-stamped timestamps, and strings
//! that need escaping stored exactly. Built with the Makefile into
//! target/clients-c.

#[path = "clients/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use harness::{Driver, Stack, repo};
use wsingest_harness::services::require_binary;

/// `make` the core, its tests and the example once per test process.
fn build() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require_binary("cc", "gcc");
        require_binary("make", "make");
        require_binary("pkg-config", "pkg-config");
        assert!(
            std::path::Path::new("/usr/include/libwebsockets.h").is_file(),
            "libwebsockets is not installed: `sudo apt-get install -y libwebsockets-dev` \
             or run scripts/install.sh"
        );
        let dir = repo().join("target/clients-c");
        let out = Command::new("make")
            .arg("-C")
            .arg(repo().join("clients/c"))
            .arg(format!("BUILD={}", dir.display()))
            .arg("all")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn driver(args: &[String]) -> Command {
    let mut cmd = Command::new(build().join("lws_send"));
    cmd.args(args);
    cmd
}

#[test]
fn c_core_unit_tests_pass() {
    let out = Command::new(build().join("test_core")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_client_loses_nothing_through_influx_pause_1013_and_server_kill() {
    build();
    harness::scenario_faults("c", &driver, "json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_client_reports_permanent_nacks_with_their_reason() {
    build();
    harness::scenario_nacks("c", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_client_stops_with_an_auth_error_when_its_token_is_revoked() {
    build();
    harness::scenario_revoked("c", &driver, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_auto_ts_is_kept_on_resend_across_a_server_kill() {
    build();
    harness::scenario_auto_ts("c", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_escaped_strings_are_stored_exactly() {
    build();
    let stack = Stack::start(|_| {}).await;
    let token = stack.add_device("c-escape").await;
    let args: Vec<String> = [
        "--url",
        &stack.base_url(),
        "--device",
        "c-escape",
        "--token",
        &token,
        "--count",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = Driver::spawn("c-escape", driver(&args), stack.dir.path())
        .result(60)
        .await;
    harness::assert_all_acked(&r, 20);
    let all: Vec<i64> = (0..20).collect();
    stack.check_exactly("c-escape", &all, 0, false).await;
    let rows = stack
        .influx
        .rows(
            harness::DB,
            "SELECT h FROM clients WHERE device = 'c-escape' LIMIT 1",
        )
        .await;
    assert_eq!(rows[0][1], "quote\" back\\slash café ✓ {}");
}
