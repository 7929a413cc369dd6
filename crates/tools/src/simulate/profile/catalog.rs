//! The built-in profiles and what `--profile` names: a file, a name from
//! the catalog, or `all`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Profile, ProfileError};

/// The profiles in `devices/`, built into the binary: `wsingest simulate`
/// works from any directory (a `devices/` there, or `--devices-dir`, adds or
/// overrides profiles by name).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "battery_sensor",
        include_str!("../../../../../devices/battery_sensor.toml"),
    ),
    (
        "gps_tracker",
        include_str!("../../../../../devices/gps_tracker.toml"),
    ),
    (
        "smart_meter",
        include_str!("../../../../../devices/smart_meter.toml"),
    ),
    (
        "vibration_sensor",
        include_str!("../../../../../devices/vibration_sensor.toml"),
    ),
    (
        "weather_station",
        include_str!("../../../../../devices/weather_station.toml"),
    ),
];

/// Where a profile comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(PathBuf),
    Builtin(&'static str),
}

impl Source {
    pub fn load(&self) -> Result<Profile, ProfileError> {
        match self {
            Source::File(p) => Profile::load(p),
            Source::Builtin(name) => {
                let text = BUILTIN
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| *t)
                    .unwrap_or_default();
                Profile::parse(text, &PathBuf::from(format!("(built in) {name}.toml")))
            }
        }
    }
}

/// Every profile by name: the built-in ones, then the `.toml` files of
/// `dir` (`--devices-dir`, which must exist) or, without one, of `devices/`
/// when the working directory has it; a file overrides a built-in profile
/// of its name.
pub fn catalog(dir: Option<&Path>) -> Result<Vec<(String, Source)>, ProfileError> {
    let mut out: BTreeMap<String, Source> = BUILTIN
        .iter()
        .map(|(n, _)| (n.to_string(), Source::Builtin(n)))
        .collect();
    let files = match dir {
        Some(d) => list(d).map_err(|e| match e {
            ProfileError::Read { source, .. } => ProfileError::DevicesDir {
                dir: d.into(),
                source,
            },
            e => e,
        })?,
        None if Path::new("devices").is_dir() => list(Path::new("devices")).unwrap_or_default(),
        None => Vec::new(),
    };
    for f in files {
        if let Some(stem) = f.file_stem().and_then(|s| s.to_str()) {
            out.insert(stem.to_string(), Source::File(f));
        }
    }
    Ok(out.into_iter().collect())
}

/// What `--profile` names: a path to a `.toml` file, a name from
/// [`catalog`], or `all`.
pub fn resolve_sources(spec: &str, dir: Option<&Path>) -> Result<Vec<Source>, ProfileError> {
    let as_path = Path::new(spec);
    if spec.ends_with(".toml") || as_path.components().count() > 1 {
        return Ok(vec![Source::File(as_path.to_path_buf())]);
    }
    let all = catalog(dir)?;
    if spec == "all" {
        return Ok(all.into_iter().map(|(_, s)| s).collect());
    }
    if let Some((_, s)) = all.iter().find(|(n, _)| n == spec) {
        return Ok(vec![s.clone()]);
    }
    let dirs = match dir {
        Some(d) => format!(" and in {}", d.display()),
        None if Path::new("devices").is_dir() => " and in ./devices".into(),
        None => String::new(),
    };
    Err(ProfileError::UnknownName {
        name: spec.into(),
        available: all
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        dirs,
    })
}

/// Resolve what `--profile` names: a path to a `.toml` file, or a profile
/// name looked up in `dir` (`weather_station` → `dir/weather_station.toml`),
/// or `all` for every profile in `dir`.
pub fn resolve(spec: &str, dir: &Path) -> Result<Vec<PathBuf>, ProfileError> {
    let as_path = Path::new(spec);
    if spec.ends_with(".toml") || as_path.components().count() > 1 {
        return Ok(vec![as_path.to_path_buf()]);
    }
    let available = list(dir)?;
    if spec == "all" {
        return Ok(available);
    }
    let wanted = dir.join(format!("{spec}.toml"));
    if available.contains(&wanted) {
        return Ok(vec![wanted]);
    }
    let names: Vec<String> = available
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    Err(ProfileError::Unknown {
        name: spec.into(),
        dir: dir.into(),
        available: names.join(", "),
    })
}

/// The `.toml` files of `dir`, sorted.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, ProfileError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ProfileError::Read {
        path: dir.into(),
        source,
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    Ok(out)
}
