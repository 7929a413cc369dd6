//! Reading a profile: TOML into [`Profile`], defaults filled in, errors
//! pointing at the file, line and key.

use std::path::Path;

use super::{FieldSpec, Profile, ProfileError};

impl Profile {
    /// Read and check a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.into(),
            source,
        })?;
        Profile::parse(&text, path)
    }

    /// Parse and check TOML text; `path` names the file in errors and gives
    /// the default name.
    pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let mut p: Profile = toml::from_str(text).map_err(|e| unknown_key_line(text, path, &e))?;
        for (_, spec) in p.fields.iter_mut() {
            if let FieldSpec::RandomWalk { min, max, step, .. } = spec.get_mut()
                && step.is_nan()
            {
                *step = (*max - *min) / 100.0;
            }
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("device");
        if p.name.is_empty() {
            p.name = stem.to_string();
        }
        if p.id_prefix.is_empty() {
            p.id_prefix = p.name.replace('_', "-");
        }
        p.check(text, path)?;
        Ok(p)
    }
}

/// toml reports an unknown key inside a field's table (an internally
/// tagged enum) at the table's header; point at the key's own line.
fn unknown_key_line(text: &str, path: &Path, e: &toml::de::Error) -> ProfileError {
    let message = e.to_string();
    if let Some(rest) = message.split("unknown field `").nth(1)
        && let Some(key) = rest.split('`').next()
    {
        let start = e.span().map_or(0, |s| s.start);
        let from_line = line_at(text, start);
        // The first line at or after the reported table where the key is set.
        let line = text
            .lines()
            .enumerate()
            .skip(from_line - 1)
            .find(|(_, l)| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with('='))
            })
            .map(|(i, _)| i + 1);
        if let Some(line) = line {
            let expected = rest
                .split_once(", expected ")
                .map(|(_, x)| x.lines().next().unwrap_or("").trim().to_string());
            return ProfileError::Invalid {
                path: path.into(),
                line,
                key: key.into(),
                detail: match expected {
                    Some(x) => format!("unknown key; expected {x}"),
                    None => "unknown key".into(),
                },
            };
        }
    }
    ProfileError::Parse {
        path: path.into(),
        message,
    }
}

/// 1-based line of byte `offset`.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// 1-based line where `key = ...` is set, or 1 when it is not written (a
/// missing key's default is what failed).
pub(super) fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}
