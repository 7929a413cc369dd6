//! The built-in formats, as TOML a user can copy into `[formats.NAME]` and
//! edit (`wsingest formats show NAME`). Each is built from the vendor's
//! published payload shapes; `tests.rs` runs them on such payloads.

use super::{FormatConfig, FormatError};

/// Name and TOML of each preset.
pub const PRESETS: &[(&str, &str)] = &[
    ("flat", include_str!("presets/flat.toml")),
    ("owntracks", include_str!("presets/owntracks.toml")),
    ("shelly", include_str!("presets/shelly.toml")),
    ("tasmota", include_str!("presets/tasmota.toml")),
    ("ttn", include_str!("presets/ttn.toml")),
];

/// The TOML of preset `name`.
pub fn toml_of(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The config of preset `name`.
pub fn config(name: &str) -> Result<FormatConfig, FormatError> {
    let text = toml_of(name).ok_or_else(|| FormatError::Preset {
        name: name.into(),
        detail: "no such preset".into(),
    })?;
    toml::from_str(text).map_err(|e| FormatError::Preset {
        name: name.into(),
        detail: e.to_string(),
    })
}
