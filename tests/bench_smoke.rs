//! `wsingest bench all --smoke` completes and reports every figure (the
//! numbers of a smoke run mean nothing; the full runs are in docs/performance.md).

#[test]
fn every_scenario_completes_and_prints_every_figure() {
    // A hung scenario fails the test (the bench and every process it
    // started killed) instead of hanging it.
    let out = wsingest_harness::output_within(
        "wsingest bench all --smoke",
        std::process::Command::new(env!("CARGO_BIN_EXE_wsingest"))
            .args(["bench", "all", "--smoke", "--json"])
            .env("RUST_BACKTRACE", "0"),
        std::time::Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "blackhole",
            "batch-cbor",
            "influx",
            "sessions",
            "latency",
            "spool",
            "bridge"
        ]
    );
    for r in reports.as_array().unwrap() {
        let figures = r["figures"].as_array().unwrap();
        assert!(figures.len() >= 4, "{r}");
        for f in figures {
            assert!(
                f["value"]
                    .as_f64()
                    .is_some_and(|v| v.is_finite() && v >= 0.0),
                "{} has no value: {f}",
                r["scenario"]
            );
        }
        assert!(r["goal_met"].is_boolean(), "{r}");
        // The summary's result and reference name figures of the report.
        let names: Vec<&str> = figures
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        let headline = r["headline"].as_array().unwrap();
        assert!(!headline.is_empty(), "{r}");
        for n in headline
            .iter()
            .chain(r["reference"].as_str().map(|_| &r["reference"]))
        {
            assert!(
                names.contains(&n.as_str().unwrap()),
                "{n} is not a figure of {r}"
            );
        }
    }
    let influx = &reports[2];
    assert_eq!(
        influx["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "nacked messages")
            .unwrap()["value"],
        0.0
    );
}
