//! `wsingest dashboards check` and `wsingest dashboards render`, run as a
//! user runs them, against a real influxd holding what a real `wsingest
//! serve` wrote for a short real simulated fleet (`wsingest simulate`, every
//! profile): the generic dashboards return data for every panel; a broken
//! query makes `check` fail and name the panel; an empty panel fails
//! `--require-data`; `render` draws one image per dashboard at its size.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use wsingest_harness::process::{WsingestProcess, wsingest_bin};
use wsingest_harness::*;
use wsingest_tools::dashboards::{model, render};

#[path = "common/server_stats.rs"]
mod server_stats;

const DB: &str = "dashcheck";
const GENERIC: [&str; 3] = ["fleet-overview", "device-detail", "service"];

fn wsingest(args: &[&str]) -> Output {
    Command::new(wsingest_bin())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("wsingest runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A copy of grafana/dashboards/`name`.json in `dir` with `from` replaced by `to`.
fn broken_copy(dir: &Path, name: &str, from: &str, to: &str) {
    let original = std::fs::read_to_string(format!("grafana/dashboards/{name}.json")).unwrap();
    assert!(original.contains(from), "{name} has {from}");
    std::fs::write(
        dir.join(format!("{name}.json")),
        original.replacen(from, to, 1),
    )
    .unwrap();
}

#[tokio::test]
async fn check_and_render_against_a_real_fleet() {
    let influx = Influxd::start().await;
    influx.create_db(DB).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = test_config(&influx.url, DB);
    config.observe.stats_interval_ms = 200;
    config.observe.instance = "check".into();
    config.spool.dir = tmp.path().join("spool");
    let server = WsingestProcess::start(config, tmp.path()).await;

    // The real generator, bounded: two devices of every profile for 3 s.
    let sim = wsingest(&[
        "simulate",
        "--url",
        &server.ws_url(""),
        "--profile",
        "all",
        "--devices",
        "2",
        "--duration",
        "3s",
        "--quiet",
    ]);
    assert!(sim.status.success(), "simulate: {}", text(&sim));
    let devices = 10;
    eventually(
        20,
        "the server's stats of every device and session",
        || async {
            let s = server_stats::seen(&influx, DB).await;
            (s.devices == devices && s.sessions >= devices as u64 && s.measurements == 5)
                .then_some(())
        },
    )
    .await;
    let influx_args = [
        "--influx-url",
        &influx.url,
        "--influx-db",
        DB,
        "--range",
        "5m",
    ];

    // The generic dashboards: every panel has data.
    let mut args = vec!["dashboards", "check", "--require-data", "--json"];
    args.extend(influx_args);
    for g in GENERIC {
        args.extend(["--only", g]);
    }
    let out = wsingest(&args);
    assert!(out.status.success(), "check --require-data: {}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["errors"], 0);
    let dashboards = report["dashboards"].as_array().unwrap();
    assert_eq!(dashboards.len(), GENERIC.len());
    let mut panels = 0;
    for d in dashboards {
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(p["has_data"], true, "{}: {}", d["title"], p["title"]);
            panels += 1;
        }
        assert!(
            d["time_filter"] == "time >= now() - 5m and time <= now()",
            "{}",
            d["time_filter"]
        );
    }
    assert!(panels >= 30, "{panels} panels");
    // The device variable selected a device (the first, as Grafana does);
    // its measurements (All) became a regex source.
    let detail = dashboards
        .iter()
        .find(|d| d["uid"] == "wsingest-device")
        .unwrap();
    assert_eq!(
        detail["variables"]["device"]["values"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(detail["variables"]["measurement"]["all"], true);
    let fields = detail["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == 6)
        .unwrap();
    let q = fields["targets"][0]["query"].as_str().unwrap();
    assert!(
        q.contains("FROM /^") && !q.contains("$measurement") && !q.contains("$device"),
        "{q}"
    );

    // Every dashboard: no query fails (the table, as a user reads it).
    let mut args = vec!["dashboards", "check"];
    args.extend(influx_args);
    let out = wsingest(&args);
    assert!(out.status.success(), "check: {}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.starts_with("DASHBOARD"), "{table}");
    assert!(
        table.contains("7 dashboards") && table.contains(" 0 failed"),
        "{table}"
    );
    eprintln!("{table}");

    // A broken query fails and names its panel; an empty panel fails
    // --require-data only.
    let broken = tempfile::tempdir().unwrap();
    // (The files hold the queries as JSON strings: quotes escaped.)
    broken_copy(
        broken.path(),
        "service",
        r#"mean(\"bytes_per_s\")"#,
        r#"meen(\"bytes_per_s\")"#,
    );
    broken_copy(
        broken.path(),
        "fleet-overview",
        r#"FROM \"wsingest_measurement\""#,
        r#"FROM \"no_such_measurement\""#,
    );
    let dir = broken.path().to_str().unwrap();
    let mut args = vec!["dashboards", "check", "--dir", dir, "--only", "service"];
    args.extend(influx_args);
    let out = wsingest(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    let line = t
        .lines()
        .find(|l| l.contains("meen"))
        .unwrap_or_else(|| panic!("the error is shown: {t}"));
    assert!(line.contains("Bytes in"), "the panel is named: {line}");
    let mut args = vec![
        "dashboards",
        "check",
        "--dir",
        dir,
        "--only",
        "fleet-overview",
    ];
    args.extend(influx_args);
    assert!(wsingest(&args).status.success());
    args.push("--require-data");
    let out = wsingest(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.lines()
            .any(|l| l.contains("Points/s per measurement") && l.contains("NO DATA")),
        "{t}"
    );

    // render: one PNG per dashboard, of the size its grid gives.
    let img = tmp.path().join("img");
    let mut args = vec!["dashboards", "render", "--out", img.to_str().unwrap()];
    args.extend(influx_args);
    let out = wsingest(&args);
    assert!(out.status.success(), "render: {}", text(&out));
    let dashboards = model::load_dir(Path::new("grafana/dashboards")).unwrap();
    assert_eq!(dashboards.len(), 7);
    for d in &dashboards {
        let path = img.join(format!("{}.png", d.stem()));
        let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            render::png::dimensions(&png),
            Some(render::canvas_size(d)),
            "{}",
            path.display()
        );
        // Drawn panels with text and lines, not an empty canvas (~2 KB).
        assert!(
            png.len() > 20_000,
            "{}: {} bytes",
            path.display(),
            png.len()
        );
    }
    assert_eq!(std::fs::read_dir(&img).unwrap().count(), dashboards.len());
    drop(server);
}
