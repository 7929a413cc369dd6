//! Which format (mapping, see [`wsingest_proto::format`]) a connection's
//! messages are in: `?format=NAME` on the WebSocket URL or the HTTP points
//! URL; MQTT subscriptions name theirs in `[[mqtt.subscribe]]`. The formats
//! themselves (presets and `[formats.*]`) live in the decoder's config.

use std::sync::Arc;

use axum::http::{StatusCode, Uri};
use wsingest_proto::decode::Decoder;
use wsingest_proto::format::Mapping;

/// The query parameter that selects a format.
pub const QUERY_KEY: &str = "format";

/// The format `uri` asks for, else `device_default` (the device's registry
/// entry or profile): `None` for the native message model, an error (400
/// with the known formats) for a name nobody defined.
pub fn select(
    decoder: &Decoder,
    uri: &Uri,
    device_default: Option<&str>,
) -> Result<Option<Arc<Mapping>>, (StatusCode, String)> {
    let asked = uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == QUERY_KEY)
            .map(|(_, v)| v.into_owned())
    });
    let Some(name) = asked.or_else(|| device_default.map(str::to_owned)) else {
        return Ok(None);
    };
    if name.is_empty() || name == "native" {
        return Ok(None);
    }
    decoder
        .config()
        .formats
        .lookup(&name)
        .map(Some)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

/// Build the formats of `config` (presets and `[formats.*]`).
pub fn build(
    config: &std::collections::BTreeMap<String, wsingest_proto::format::FormatConfig>,
) -> Result<wsingest_proto::format::Formats, crate::setting::ConfigError> {
    wsingest_proto::format::Formats::build(config).map_err(|e| {
        crate::setting::ConfigError::Invalid {
            key: "formats",
            detail: e.to_string(),
        }
    })
}

/// `wsingest formats list`: name and description of every format.
pub fn list(config: &crate::config::Config) -> Result<String, crate::setting::ConfigError> {
    let formats = build(&config.formats)?;
    let mut out = String::new();
    for name in formats.names() {
        let m = formats.get(name).expect("listed");
        let origin = match config.formats.contains_key(name) {
            true => "config",
            false => "built-in",
        };
        out.push_str(&format!("{name:<12} {origin:<9} {}\n", m.description()));
    }
    Ok(out)
}

/// `wsingest formats show NAME`: the format as TOML for a `[formats.NAME]`.
pub fn show(config: &crate::config::Config, name: &str) -> Result<String, FormatsCliError> {
    if let Some(c) = config.formats.get(name) {
        let text = toml::to_string_pretty(c).map_err(|e| FormatsCliError::Render(e.to_string()))?;
        return Ok(format!("[formats.{name}]\n{text}"));
    }
    match wsingest_proto::format::presets::toml_of(name) {
        Some(text) => {
            // The preset's own tables ([fields]) go under the section.
            let body: String = text
                .lines()
                .map(|l| match l.strip_prefix('[') {
                    Some(rest) if !l.starts_with("[[") => format!("[formats.{name}.{rest}\n"),
                    _ => format!("{l}\n"),
                })
                .collect();
            Ok(format!(
                "# built in; a [formats.{name}] in the config replaces it\n[formats.{name}]\n{body}"
            ))
        }
        None => Err(FormatsCliError::Unknown(
            build(&config.formats)?
                .lookup(name)
                .expect_err("not a preset nor in the config"),
        )),
    }
}

/// Why `wsingest formats show` failed.
#[derive(Debug, thiserror::Error)]
pub enum FormatsCliError {
    #[error(transparent)]
    Unknown(#[from] wsingest_proto::format::UnknownFormat),
    #[error(transparent)]
    Config(#[from] crate::setting::ConfigError),
    #[error("cannot print the format as TOML: {0}")]
    Render(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsingest_proto::decode::DecoderConfig;

    #[test]
    fn query_selects_or_lists() {
        let d = Decoder::new(DecoderConfig::default());
        let uri: Uri = "/v1/devices/a?token=x&format=tasmota".parse().unwrap();
        assert_eq!(
            select(&d, &uri, Some("ttn")).unwrap().unwrap().name(),
            "tasmota"
        );
        let uri: Uri = "/v1/devices/a".parse().unwrap();
        assert!(select(&d, &uri, None).unwrap().is_none());
        assert_eq!(
            select(&d, &uri, Some("ttn")).unwrap().unwrap().name(),
            "ttn"
        );
        let uri: Uri = "/v1/devices/a?format=native".parse().unwrap();
        assert!(select(&d, &uri, Some("ttn")).unwrap().is_none());
        let uri: Uri = "/v1/devices/a?format=bogus".parse().unwrap();
        let (status, msg) = select(&d, &uri, None).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            msg.contains("flat, owntracks, shelly, tasmota, ttn"),
            "{msg}"
        );
    }

    /// What `show` prints parses back as the same format.
    #[test]
    fn shown_presets_parse_back() {
        let config = crate::config::Config::default();
        for (name, _) in wsingest_proto::format::presets::PRESETS {
            let text = show(&config, name).unwrap();
            let parsed = crate::config::Config::parse(&text, std::path::Path::new("x")).unwrap();
            assert_eq!(
                parsed.formats[*name],
                wsingest_proto::format::presets::config(name).unwrap(),
                "{text}"
            );
        }
        assert!(list(&config).unwrap().contains("tasmota"));
        assert!(show(&config, "nope").is_err());
    }
}
