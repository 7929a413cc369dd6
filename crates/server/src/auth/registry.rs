//! The device registry: a TOML file of devices, each with the SHA-256 of its
//! token and optional policy (profile, allowed measurements, rate limits).
//!
//! ```toml
//! [[device]]
//! id = "dev-1"
//! token_sha256 = "9f86d081…"   # 64 hex digits; the token itself is never stored
//! enabled = true
//! created = "2025-01-01T00:00:00Z"
//! profile = "sensor"            # optional: [auth.profiles.sensor] in the config
//! allowed_measurements = ["weather"]   # optional
//! messages_per_sec = 5.0        # optional, overrides the profile and [limits]
//! ```
//!
//! Writers (the `wsingest device` commands) take a lock file and replace the
//! file atomically (write, fsync, rename), so the server, which reloads it
//! while running, never reads half a file.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::token::{self, Token, TokenHash};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read device registry {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device registry {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write device registry {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "device registry {path} is locked by another `wsingest device` command \
         (if none is running, remove {lock})"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("device {0:?} is already registered (use `wsingest device rotate` for a new token)")]
    Exists(String),
    #[error("no device {0:?} in the registry")]
    NotFound(String),
    #[error("invalid device id {0:?}: use 1-128 characters from A-Z a-z 0-9 - _ . :")]
    InvalidId(String),
}

/// A device id becomes the `device` tag and a URL path segment: keep it to a
/// safe alphabet.
pub fn valid_device_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// One registered device as stored in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    pub id: String,
    pub token_sha256: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(flatten)]
    pub policy: DevicePolicy,
}

fn yes() -> bool {
    true
}

/// Per-device policy. Every key is optional: unset keys come from the
/// device's profile, then from `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePolicy {
    /// Measurements this device may write; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_measurements: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_series_per_minute: Option<u32>,
    /// The format of the device's own JSON when its URL names none
    /// (`?format=`; docs/formats.md); absent: the message model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl DevicePolicy {
    /// `self`, with unset keys taken from `base`.
    pub fn or(&self, base: &DevicePolicy) -> DevicePolicy {
        DevicePolicy {
            allowed_measurements: self
                .allowed_measurements
                .clone()
                .or_else(|| base.allowed_measurements.clone()),
            messages_per_sec: self.messages_per_sec.or(base.messages_per_sec),
            points_per_sec: self.points_per_sec.or(base.points_per_sec),
            max_sessions: self.max_sessions.or(base.max_sessions),
            new_series_per_minute: self.new_series_per_minute.or(base.new_series_per_minute),
            format: self.format.clone().or_else(|| base.format.clone()),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    device: Vec<DeviceRecord>,
}

/// A loaded registry, indexed by device id and by token hash.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    devices: BTreeMap<String, (DeviceRecord, TokenHash)>,
    by_hash: HashMap<TokenHash, String>,
}

impl Registry {
    /// Read `path`; a missing file is an empty registry (nothing added yet).
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Registry::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(source) => Err(RegistryError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    /// Parse TOML text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Registry, RegistryError> {
        let parse_err = |message: String| RegistryError::Parse {
            path: path.into(),
            message,
        };
        let file: RegistryFile = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let mut reg = Registry::default();
        for (i, d) in file.device.into_iter().enumerate() {
            let at = format!("device #{} ({:?})", i + 1, d.id);
            if !valid_device_id(&d.id) {
                return Err(parse_err(format!(
                    "{at}: invalid id: use 1-128 characters from A-Z a-z 0-9 - _ . :"
                )));
            }
            let hash = TokenHash::from_hex(&d.token_sha256)
                .ok_or_else(|| parse_err(format!("{at}: token_sha256 is not 64 hex digits")))?;
            if reg.devices.contains_key(&d.id) {
                return Err(parse_err(format!("{at}: id listed twice")));
            }
            if let Some(other) = reg.by_hash.insert(hash, d.id.clone()) {
                return Err(parse_err(format!(
                    "{at}: same token hash as device {other:?}"
                )));
            }
            reg.devices.insert(d.id.clone(), (d, hash));
        }
        Ok(reg)
    }

    pub fn to_toml(&self) -> String {
        let file = RegistryFile {
            device: self.devices.values().map(|(d, _)| d.clone()).collect(),
        };
        let body = toml::to_string_pretty(&file).expect("registry serializes");
        format!(
            "# wsingest device registry: managed by `wsingest device add|list|revoke|rotate`.\n\
             # Tokens are stored as SHA-256 hashes only. The server reloads this file when it changes.\n\n{body}"
        )
    }

    pub fn get(&self, id: &str) -> Option<&DeviceRecord> {
        self.devices.get(id).map(|(d, _)| d)
    }

    pub fn devices(&self) -> impl Iterator<Item = &DeviceRecord> {
        self.devices.values().map(|(d, _)| d)
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The enabled device whose token hashes to `hash`.
    ///
    /// The map lookup is not constant-time, which is harmless: its timing can
    /// only tell an attacker about the hash of their own guess. The final
    /// comparison against the stored hash is constant-time anyway.
    pub fn find(&self, hash: &TokenHash) -> Option<&DeviceRecord> {
        let id = self.by_hash.get(hash)?;
        let (record, stored) = self.devices.get(id)?;
        (stored.ct_eq(hash) && record.enabled).then_some(record)
    }

    /// Whether `hash` is still the valid token of enabled device `id`.
    pub fn is_valid(&self, id: &str, hash: &TokenHash) -> bool {
        self.devices
            .get(id)
            .is_some_and(|(d, stored)| d.enabled && stored.ct_eq(hash))
    }

    /// Register `id` with a new token; returns the token (shown once).
    pub fn add(
        &mut self,
        id: &str,
        profile: Option<String>,
        policy: DevicePolicy,
    ) -> Result<Token, RegistryError> {
        if !valid_device_id(id) {
            return Err(RegistryError::InvalidId(id.into()));
        }
        if self.devices.contains_key(id) {
            return Err(RegistryError::Exists(id.into()));
        }
        let token = token::generate();
        let hash = token.hash();
        let record = DeviceRecord {
            id: id.into(),
            token_sha256: hash.to_hex(),
            enabled: true,
            created: Some(now_rfc3339()),
            rotated: None,
            revoked: None,
            profile,
            policy,
        };
        self.by_hash.insert(hash, id.into());
        self.devices.insert(id.into(), (record, hash));
        Ok(token)
    }

    /// Disable `id`: its token stops working and its sessions are closed.
    pub fn revoke(&mut self, id: &str) -> Result<(), RegistryError> {
        let (d, _) = self
            .devices
            .get_mut(id)
            .ok_or_else(|| RegistryError::NotFound(id.into()))?;
        d.enabled = false;
        d.revoked = Some(now_rfc3339());
        Ok(())
    }

    /// Give `id` a new token (and enable it again). The old token stops
    /// working at once; sessions opened with it are closed.
    pub fn rotate(&mut self, id: &str) -> Result<Token, RegistryError> {
        let (d, old) = self
            .devices
            .get_mut(id)
            .ok_or_else(|| RegistryError::NotFound(id.into()))?;
        let token = token::generate();
        let hash = token.hash();
        self.by_hash.remove(old);
        *old = hash;
        d.token_sha256 = hash.to_hex();
        d.enabled = true;
        d.revoked = None;
        d.rotated = Some(now_rfc3339());
        self.by_hash.insert(hash, id.into());
        Ok(token)
    }

    /// Put `record` in place of the record of the same id, if any: for a
    /// registry kept elsewhere (the NATS KV bucket), which hands over whole
    /// records one at a time. Refused, leaving the registry as it was, for
    /// an invalid id or hash, or a hash another device already has.
    pub fn upsert(&mut self, record: DeviceRecord) -> Result<(), String> {
        if !valid_device_id(&record.id) {
            return Err(format!("invalid device id {:?}", record.id));
        }
        let hash = TokenHash::from_hex(&record.token_sha256)
            .ok_or_else(|| format!("device {:?}: token_sha256 is not 64 hex digits", record.id))?;
        if let Some(other) = self.by_hash.get(&hash).filter(|o| **o != record.id) {
            return Err(format!(
                "device {:?}: same token hash as device {other:?}",
                record.id
            ));
        }
        self.remove(&record.id);
        self.by_hash.insert(hash, record.id.clone());
        self.devices.insert(record.id.clone(), (record, hash));
        Ok(())
    }

    /// Forget `id` (its token stops working); no-op when absent.
    pub fn remove(&mut self, id: &str) {
        if let Some((_, hash)) = self.devices.remove(id) {
            self.by_hash.remove(&hash);
        }
    }

    /// Write to `path` atomically: a temp file beside it, fsync, rename.
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        let werr = |source| RegistryError::Write {
            path: path.into(),
            source,
        };
        let tmp = sibling(path, ".tmp");
        let mut f = std::fs::File::create(&tmp).map_err(werr)?;
        f.write_all(self.to_toml().as_bytes()).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(werr)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Exclusive access to the registry file for one `wsingest device` command:
/// a `<file>.lock` created with O_EXCL, removed on drop.
pub struct RegistryLock {
    lock: PathBuf,
}

impl RegistryLock {
    pub fn acquire(path: &Path) -> Result<RegistryLock, RegistryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| RegistryError::Write {
                path: path.into(),
                source,
            })?;
        }
        let lock = sibling(path, ".lock");
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => Ok(RegistryLock { lock }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(RegistryError::Locked {
                path: path.into(),
                lock,
            }),
            Err(source) => Err(RegistryError::Write {
                path: path.into(),
                source,
            }),
        }
    }
}

impl Drop for RegistryLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn now_rfc3339() -> String {
    let secs = wsingest_proto::clock::wall_ms() / 1000;
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_find_revoke_rotate() {
        let mut r = Registry::default();
        let t1 = r
            .add("a", Some("sensor".into()), DevicePolicy::default())
            .unwrap();
        let t2 = r
            .add(
                "b",
                None,
                DevicePolicy {
                    messages_per_sec: Some(2.0),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(matches!(
            r.add("a", None, DevicePolicy::default()),
            Err(RegistryError::Exists(_))
        ));
        assert!(matches!(
            r.add("a/b", None, DevicePolicy::default()),
            Err(RegistryError::InvalidId(_))
        ));
        assert_eq!(r.find(&t1.hash()).unwrap().id, "a");
        assert_eq!(r.find(&t2.hash()).unwrap().id, "b");
        assert!(r.is_valid("a", &t1.hash()));
        assert!(!r.is_valid("b", &t1.hash()));
        r.revoke("a").unwrap();
        assert!(r.find(&t1.hash()).is_none());
        assert!(!r.is_valid("a", &t1.hash()));
        let t3 = r.rotate("a").unwrap();
        assert!(r.find(&t1.hash()).is_none(), "the old token stays dead");
        assert_eq!(r.find(&t3.hash()).unwrap().id, "a");
        assert!(matches!(r.revoke("zz"), Err(RegistryError::NotFound(_))));
    }

    #[test]
    fn upsert_replaces_whole_records() {
        let mut r = Registry::default();
        let t1 = r.add("a", None, DevicePolicy::default()).unwrap();
        let mut other = Registry::default();
        let t2 = other.add("a", None, DevicePolicy::default()).unwrap();
        // A rotation elsewhere: the old hash must stop working here.
        r.upsert(other.get("a").unwrap().clone()).unwrap();
        assert!(r.find(&t1.hash()).is_none());
        assert_eq!(r.find(&t2.hash()).unwrap().id, "a");
        let mut clash = other.get("a").unwrap().clone();
        clash.id = "b".into();
        assert!(r.upsert(clash).unwrap_err().contains("same token hash"));
        assert!(r.get("b").is_none(), "a refused record changes nothing");
        r.remove("a");
        assert!(r.find(&t2.hash()).is_none() && r.is_empty());
    }

    #[test]
    fn file_round_trip_stores_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/devices.toml");
        let _lock = RegistryLock::acquire(&path).unwrap();
        assert!(matches!(
            RegistryLock::acquire(&path),
            Err(RegistryError::Locked { .. })
        ));
        let mut r = Registry::load(&path).unwrap();
        assert!(r.is_empty());
        let policy = DevicePolicy {
            allowed_measurements: Some(vec!["w".into()]),
            ..Default::default()
        };
        let t = r.add("dev-1", Some("p".into()), policy.clone()).unwrap();
        r.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(t.expose()), "{text}");
        assert!(!text.contains(&t.expose()[4..]), "{text}");
        let back = Registry::load(&path).unwrap();
        assert_eq!(back.get("dev-1").unwrap().policy, policy);
        assert_eq!(back.find(&t.hash()).unwrap().id, "dev-1");
    }

    #[test]
    fn parse_errors_name_the_file_and_device() {
        let p = Path::new("reg.toml");
        let e = Registry::parse("[[device]]\nid = \"a\"\ntoken_sha256 = \"xyz\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("reg.toml") && e.contains("\"a\"") && e.contains("token_sha256"),
            "{e}"
        );
        let h = "0".repeat(64);
        let twice = format!(
            "[[device]]\nid = \"a\"\ntoken_sha256 = \"{h}\"\n[[device]]\nid = \"a\"\ntoken_sha256 = \"{h}\"\n"
        );
        assert!(
            Registry::parse(&twice, p)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let e = Registry::parse("[[device]]\nid = \"a\"\ntoken = \"x\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("token"), "{e}");
    }
}
