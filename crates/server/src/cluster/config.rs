//! `[cluster]` and `auth.registry`: the settings of the state gateways share
//! through NATS (see docs/cluster.md). The NATS servers themselves are
//! `[queue] nats_url`, the one NATS setting of a gateway: cluster features
//! are on whenever it is set.

use serde::{Deserialize, Serialize};

use crate::setting::ConfigError;

/// Where the device registry lives (`auth.registry`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum RegistrySource {
    /// `auth.registry_path`, a TOML file on this gateway's disk.
    #[default]
    #[serde(rename = "file")]
    File,
    /// The JetStream KV bucket `cluster.registry_bucket`, shared by every
    /// gateway of the NATS cluster in `[queue] nats_url`.
    #[serde(rename = "nats-kv")]
    NatsKv,
}

/// `[cluster]`: names in NATS, shared by every gateway of one deployment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This gateway's name in session ownership and command routing; unset:
    /// a random one per start (a restarted gateway holds no sessions, so it
    /// needs no stable name). Letters, digits, `-` and `_`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<String>,
    /// The KV bucket of the device registry (`auth.registry = "nats-kv"`).
    pub registry_bucket: String,
    /// The KV bucket of session ownership: device -> gateway and session.
    pub sessions_bucket: String,
    /// Replicas of both buckets when a gateway or `wsingest device` creates
    /// them (at most the number of NATS servers); unset: `queue.replicas`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    /// First token of the command routing subjects.
    pub subject_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            gateway_id: None,
            registry_bucket: "wsingest_devices".into(),
            sessions_bucket: "wsingest_sessions".into(),
            replicas: None,
            subject_prefix: "wsingest".into(),
        }
    }
}

/// Letters, digits, `-` and `_`: a valid NATS subject token and KV bucket name.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `[cluster]` and where `auth.registry` points, against the rest of `config`.
pub fn check(config: &crate::config::Config) -> Result<(), ConfigError> {
    config.cluster.validate()?;
    let invalid = |key, detail: &str| {
        Err(ConfigError::Invalid {
            key,
            detail: detail.into(),
        })
    };
    if config.auth.registry == RegistrySource::NatsKv {
        if config.queue.nats_url.is_empty() {
            return invalid(
                "auth.registry",
                "\"nats-kv\" keeps the registry in NATS: set [queue] nats_url (or --nats-url)",
            );
        }
        if config.auth.registry_path.is_some() {
            return invalid(
                "auth.registry_path",
                "is the registry file of auth.registry = \"file\"; with \"nats-kv\" remove it \
                 (copy devices over with `wsingest device add --nats-url`)",
            );
        }
    }
    Ok(())
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, detail: &str| {
            Err(ConfigError::Invalid {
                key,
                detail: detail.into(),
            })
        };
        if let Some(id) = &self.gateway_id
            && !valid_name(id)
        {
            return invalid(
                "cluster.gateway_id",
                "use 1-64 letters, digits, - or _ (or leave it unset for a random one)",
            );
        }
        for (key, v) in [
            ("cluster.registry_bucket", &self.registry_bucket),
            ("cluster.sessions_bucket", &self.sessions_bucket),
            ("cluster.subject_prefix", &self.subject_prefix),
        ] {
            if !valid_name(v) {
                return invalid(key, "use 1-64 letters, digits, - or _");
            }
        }
        if self.registry_bucket == self.sessions_bucket {
            return invalid(
                "cluster.sessions_bucket",
                "must differ from cluster.registry_bucket",
            );
        }
        if self.replicas.is_some_and(|r| !(1..=5).contains(&r)) {
            return invalid(
                "cluster.replicas",
                "JetStream keeps 1 to 5 replicas; use the number of NATS servers, at most 5",
            );
        }
        Ok(())
    }

    /// This start's gateway id: the configured one, else a random one.
    pub fn gateway_id(&self) -> String {
        self.gateway_id
            .clone()
            .unwrap_or_else(|| format!("gw-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(ClusterConfig::default().validate().is_ok());
        let bad = ClusterConfig {
            gateway_id: Some("a.b".into()),
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("gateway_id")
        );
        let same = ClusterConfig {
            sessions_bucket: "wsingest_devices".into(),
            ..Default::default()
        };
        assert!(same.validate().is_err());
        let id = ClusterConfig::default().gateway_id();
        assert!(id.starts_with("gw-") && valid_name(&id), "{id}");
    }

    #[test]
    fn a_kv_registry_needs_nats_and_no_file() {
        let mut c = crate::config::Config::default();
        c.auth.registry = RegistrySource::NatsKv;
        assert!(check(&c).unwrap_err().to_string().contains("nats_url"));
        c.queue.nats_url = vec!["nats://127.0.0.1:4222".into()];
        assert!(check(&c).is_ok());
        c.auth.registry_path = Some("devices.toml".into());
        assert!(check(&c).unwrap_err().to_string().contains("registry_path"));
    }

    #[test]
    fn registry_source_names() {
        #[derive(Deserialize)]
        struct A {
            registry: RegistrySource,
        }
        let a: A = toml::from_str("registry = \"nats-kv\"").unwrap();
        assert_eq!(a.registry, RegistrySource::NatsKv);
        let a: A = toml::from_str("registry = \"file\"").unwrap();
        assert_eq!(a.registry, RegistrySource::File);
        assert!(toml::from_str::<A>("registry = \"kv\"").is_err());
    }
}
