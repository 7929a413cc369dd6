//! Profile parsing, checking and resolving.

use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
measurement = "m"
interval_s = 1

[fields.t]
kind = "random_walk"
min = 0
max = 10
step = 1
"#;

#[test]
fn defaults_come_from_the_file_name() {
    let p = Profile::parse(MINIMAL, Path::new("devices/cold_room.toml")).unwrap();
    assert_eq!(p.name, "cold_room");
    assert_eq!(p.id_prefix, "cold-room");
    assert_eq!(p.jitter, 0.1);
    assert_eq!(p.points_per_message, 1);
    assert_eq!(p.sample_interval_ms(), 1000.0);
}

#[test]
fn unknown_keys_name_the_line() {
    let text = MINIMAL.replace("step = 1", "step = 1\nstpe = 2");
    let e = Profile::parse(&text, Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    // The key's own line, not its table's header (line 5).
    assert!(e.contains("x.toml, line 10: stpe: unknown key"), "{e}");
}

#[test]
fn step_defaults_to_a_hundredth_of_the_range() {
    let text = MINIMAL.replace("step = 1\n", "");
    let p = Profile::parse(&text, Path::new("x.toml")).unwrap();
    match p.fields["t"].get_ref() {
        FieldSpec::RandomWalk { step, .. } => assert_eq!(*step, 0.1),
        _ => panic!(),
    }
}

#[test]
fn builtin_profiles_parse_and_a_missing_devices_dir_names_the_flag() {
    let all = catalog(None).unwrap();
    assert!(all.len() >= BUILTIN.len());
    for (name, _) in BUILTIN.iter() {
        Source::Builtin(name).load().unwrap();
    }
    let e = resolve_sources("weather_station", Some(Path::new("/nonexistent")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--devices-dir") && e.contains("/nonexistent"),
        "{e}"
    );
    let e = resolve_sources("nope", None).unwrap_err().to_string();
    assert!(
        e.contains("weather_station") && e.contains("--devices-dir"),
        "{e}"
    );
}

#[test]
fn semantic_errors_name_file_line_and_key() {
    let text = MINIMAL.replace("max = 10", "max = -1");
    let e = Profile::parse(&text, Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x.toml, line 5: fields.t: min (0) must be a number at most max (-1)"),
        "{e}"
    );
    let text = MINIMAL.replace("interval_s = 1", "interval_s = 0");
    let e = Profile::parse(&text, Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3: interval_s"), "{e}");
}

#[test]
fn counters_must_integrate_an_existing_field() {
    let text = format!("{MINIMAL}\n[fields.e]\nkind = \"counter\"\nof = \"nope\"\n");
    let e = Profile::parse(&text, Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fields.e") && e.contains("no such field"), "{e}");
    let text = format!("{MINIMAL}\n[fields.e]\nkind = \"counter\"\nof = \"t\"\nper_second = 1\n");
    assert!(Profile::parse(&text, Path::new("x.toml")).is_err());
}

#[test]
fn path_fields_need_a_path() {
    let text = format!("{MINIMAL}\n[fields.lat]\nkind = \"path\"\nof = \"lat\"\n");
    let e = Profile::parse(&text, Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[path]"), "{e}");
}

#[test]
fn the_device_tag_is_reserved() {
    let text = MINIMAL.replace(
        "interval_s = 1",
        "interval_s = 1\ntags = { device = \"x\" }",
    );
    assert!(
        Profile::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string()
            .contains("device")
    );
}

#[test]
fn the_documented_example_parses() {
    let doc = include_str!("../../../../../docs/simulate.md");
    let start = doc
        .find("```toml\n")
        .expect("docs/simulate.md has a TOML example")
        + 8;
    let end = start + doc[start..].find("```").unwrap();
    let p = Profile::parse(&doc[start..end], Path::new("coldroom.toml")).unwrap();
    assert_eq!((p.measurement.as_str(), p.fields.len()), ("coldroom", 2));
}

#[test]
fn resolve_names_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), MINIMAL).unwrap();
    std::fs::write(dir.path().join("b.toml"), MINIMAL).unwrap();
    assert_eq!(resolve("all", dir.path()).unwrap().len(), 2);
    assert_eq!(
        resolve("a", dir.path()).unwrap(),
        vec![dir.path().join("a.toml")]
    );
    assert_eq!(
        resolve("x/y.toml", dir.path()).unwrap(),
        vec![PathBuf::from("x/y.toml")]
    );
    let e = resolve("c", dir.path()).unwrap_err().to_string();
    assert!(e.contains("available: a, b"), "{e}");
}
