//! Device profiles: the TOML files in `devices/` that describe a kind of
//! device (measurement, tags, fields and how each evolves, rate, duty cycle).
//!
//! Adding a device type needs no code: write a profile. The format is
//! documented in `docs/simulate.md`; [`Profile::parse`] checks everything
//! serde cannot (ranges, references between fields) so that a bad profile
//! fails at start with its file, line and key, never mid-run.
//!
//! Layout: [`spec`] the profile as written (serde types), `parse` reading
//! it with errors on the right line, `validate` the checks serde cannot
//! make, [`catalog`] the built-in profiles and what `--profile` names.

use std::path::PathBuf;

mod catalog;
mod parse;
mod spec;
mod validate;

pub use catalog::*;
pub use spec::*;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read device profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device profile {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("device profile {path}, line {line}: {key}: {detail}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        detail: String,
    },
    #[error("no device profile named {name:?} in {dir}: available: {available}")]
    Unknown {
        name: String,
        dir: PathBuf,
        available: String,
    },
    #[error(
        "no device profile named {name:?}: available: {available} (built in{dirs}; --devices-dir DIR adds or overrides profiles)"
    )]
    UnknownName {
        name: String,
        available: String,
        dirs: String,
    },
    #[error(
        "cannot read the profile directory {dir} given by --devices-dir: {source}; give a directory of .toml profiles, or leave --devices-dir out to use the built-in profiles"
    )]
    DevicesDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests;
