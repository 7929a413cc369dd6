//! The shipped config files parse, validate, and the commented default file
//! states the real defaults.

use std::path::Path;

use wsingest_server::config::Config;

#[test]
fn shipped_configs_are_valid() {
    for f in ["config/wsingest.toml", "config/demo.toml"] {
        let c = Config::load(Path::new(f)).unwrap_or_else(|e| panic!("{e}"));
        c.validate().unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

#[test]
fn default_file_states_the_defaults() {
    let file = Config::load(Path::new("config/wsingest.toml")).unwrap();
    let file = toml::to_string_pretty(&file).unwrap();
    assert_eq!(
        file,
        Config::default_toml(),
        "config/wsingest.toml drifted from Config::default()"
    );
}

#[test]
fn binary_reports_bad_config_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_mesage_bytes = 5\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsingest"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 3") && err.contains("max_mesage_bytes"),
        "{err}"
    );
}
