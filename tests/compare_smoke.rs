//! `wsingest compare --smoke` completes and produces every row and column
//! with plausible values (the numbers of a smoke run mean little; the
//! measured table is in docs/protocols.md).

#[test]
fn compare_smoke_prints_every_transport_and_figure() {
    // A hung transport fails the test (compare and every process it started
    // killed) instead of hanging it.
    let out = wsingest_harness::output_within(
        "wsingest compare --smoke",
        std::process::Command::new(env!("CARGO_BIN_EXE_wsingest"))
            .args(["compare", "--smoke", "--json"])
            .env("RUST_BACKTRACE", "0"),
        std::time::Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["ws-json", "ws-cbor", "mqtt", "http1", "http2", "grpc"]
    );
    let f = |r: &serde_json::Value, k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {r}"))
    };
    for r in rows {
        for k in [
            "first_ack_ms",
            "up_bytes_per_point",
            "down_bytes_per_point",
            "latency_p50_ms",
            "latency_p99_ms",
            "msgs_per_sec",
            "points_per_sec",
            "server_cpu_s_per_mpoints",
            "client_cpu_s_per_mpoints",
        ] {
            assert!(f(r, k) > 0.0, "{k} is not positive: {r}");
        }
        assert!(f(r, "latency_p50_ms") <= f(r, "latency_p99_ms"), "{r}");
        assert!(
            f(r, "handshake_bytes") >= 0.0 && f(r, "idle_kib_per_conn") >= 0.0,
            "{r}"
        );
        // One point per message in the smoke workload.
        assert_eq!(f(r, "msgs_per_sec"), f(r, "points_per_sec"), "{r}");
    }
    let row = |k: &str| rows.iter().find(|r| r["kind"] == k).unwrap();
    // CBOR is smaller than JSON on the wire; a WebSocket upgrade costs bytes,
    // an HTTP/1.1 request does not (its headers are paid on every message).
    assert!(f(row("ws-cbor"), "up_bytes_per_point") < f(row("ws-json"), "up_bytes_per_point"));
    assert!(f(row("ws-json"), "handshake_bytes") > 100.0);
    assert!(f(row("http1"), "up_bytes_per_point") > f(row("ws-json"), "up_bytes_per_point"));
    // The text table and Markdown render the same rows.
    let md = wsingest_harness::output_within(
        "wsingest compare --smoke --markdown",
        std::process::Command::new(env!("CARGO_BIN_EXE_wsingest")).args([
            "compare",
            "--smoke",
            "--transports",
            "ws-cbor",
            "--markdown",
        ]),
        std::time::Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        md.status.success(),
        "{}",
        String::from_utf8_lossy(&md.stderr)
    );
    let text = String::from_utf8(md.stdout).unwrap();
    assert!(text.contains("| WebSocket CBOR | full-duplex"), "{text}");
}
