//! The Rust device client (crates/device, `wsingest-device`) against a real
//! server and a real influxd: faults, permanent nacks, a revoked token, the
//! disk buffer across a client restart, client-stamped timestamps across a
//! server kill. The client runs as a child process: the crate's example
//! `driver` (crates/device/examples/driver.rs, the same arguments and output
//! as tests/clients/driver.py), built once by this test with the cargo that
//! runs it.

#[path = "clients/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Build the example (a no-op when it is fresh) and return its path: next
/// to this test's own binary's directory, where cargo puts examples.
fn driver_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .current_dir(harness::repo())
            .args([
                "build",
                "--quiet",
                "-p",
                "wsingest-device",
                "--example",
                "driver",
            ])
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build --example driver failed");
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/clients_rust-<hash> -> target/<profile>/examples/driver
        let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
        let bin = profile_dir.join("examples").join("driver");
        assert!(bin.is_file(), "no driver at {}", bin.display());
        bin
    })
    .clone()
}

fn driver(args: &[String]) -> Command {
    let mut cmd = Command::new(driver_bin());
    cmd.args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_loses_nothing_through_influx_pause_1013_and_server_kill() {
    driver_bin();
    harness::scenario_faults("rust", &driver, "cbor").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_json_loses_nothing_through_the_same_faults() {
    driver_bin();
    harness::scenario_faults("rust-json", &driver, "json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_reports_permanent_nacks_with_their_reason() {
    driver_bin();
    harness::scenario_nacks("rust", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_stops_with_an_auth_error_when_its_token_is_revoked() {
    driver_bin();
    harness::scenario_revoked("rust", &driver, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_disk_buffer_survives_a_client_restart() {
    driver_bin();
    harness::scenario_disk_buffer("rust", &driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_auto_ts_is_kept_on_resend_across_a_server_kill() {
    driver_bin();
    harness::scenario_auto_ts("rust", &driver).await;
}
