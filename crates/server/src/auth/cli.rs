//! `wsingest device add|list|revoke|rotate`: manage the device registry.
//!
//! The registry file is `--registry PATH`, else `auth.registry_path` of the
//! config file (`--config`, default `config/wsingest.toml`). With
//! `--nats-url` (or `auth.registry = "nats-kv"` in the config) the registry
//! is the NATS KV bucket every gateway watches instead (see
//! [`crate::cluster::registry`]). A token is printed once, by `add` and
//! `rotate`, and never stored. A running server picks the change up by
//! itself (a file at once on SIGHUP).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::registry::{DevicePolicy, Registry, RegistryError, RegistryLock};
use crate::cluster::{ClusterError, RegistrySource, registry::KvRegistry};
use crate::config::{Config, ConfigError};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register a device and print its new token (shown only this once).
    Add {
        #[command(flatten)]
        file: RegistryArgs,
        /// Device id (1-128 of A-Z a-z 0-9 - _ . :).
        id: String,
        /// Policy profile from the config's [auth.profiles.NAME].
        #[arg(long)]
        profile: Option<String>,
        /// Measurements the device may write (repeat or comma-separate); default: any.
        #[arg(long = "allow-measurement", value_delimiter = ',')]
        allow_measurement: Vec<String>,
        /// Messages per second (token bucket) for this device.
        #[arg(long)]
        messages_per_sec: Option<f64>,
        /// Points per second for this device.
        #[arg(long)]
        points_per_sec: Option<f64>,
        /// Concurrent sessions for this device.
        #[arg(long)]
        max_sessions: Option<usize>,
        /// New series per minute for this device (cardinality guard).
        #[arg(long)]
        new_series_per_minute: Option<u32>,
        /// The format of the device's own JSON (a preset or [formats.NAME];
        /// see `wsingest formats list`), used when its URL names none.
        #[arg(long)]
        format: Option<String>,
        /// Print the result as JSON: {"id": ..., "token": ...}.
        #[arg(long)]
        json: bool,
    },
    /// List devices (never tokens).
    List {
        #[command(flatten)]
        file: RegistryArgs,
        /// One JSON object per device.
        #[arg(long)]
        json: bool,
    },
    /// Disable a device: its token stops working, its open sessions are closed with 1008.
    Revoke {
        #[command(flatten)]
        file: RegistryArgs,
        id: String,
    },
    /// Give a device a new token (printed once); the old one stops working and its sessions are closed.
    Rotate {
        #[command(flatten)]
        file: RegistryArgs,
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry file; default: auth.registry_path of the config.
    #[arg(long, env = "WSINGEST_REGISTRY")]
    pub registry: Option<PathBuf>,
    /// Config file (for auth.registry_path and [auth.profiles]).
    #[arg(long, short, env = "WSINGEST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use the registry in NATS KV on these servers (comma-separated
    /// nats://host:port) instead of a file; default: [queue] nats_url of
    /// the config when it sets auth.registry = "nats-kv".
    #[arg(long, env = "WSINGEST_NATS_URL")]
    pub nats_url: Vec<String>,
    /// The registry's KV bucket; default: cluster.registry_bucket of the
    /// config (wsingest_devices).
    #[arg(long)]
    pub bucket: Option<String>,
}

/// Where a command finds the registry.
enum Target {
    File(PathBuf),
    Kv(Box<KvRegistry>),
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceCliError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "no registry: pass --registry PATH (or set auth.registry_path in the config) for a file, \
         or --nats-url nats://HOST:4222 for the registry shared by gateways in NATS KV"
    )]
    NoRegistry,
    #[error("--registry is a file and --nats-url the NATS KV registry: pass one of them")]
    TwoRegistries,
    #[error(
        "the config sets auth.registry = \"nats-kv\" but no [queue] nats_url: pass --nats-url nats://HOST:4222"
    )]
    NoNatsUrl,
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    UnknownFormat(String),
    #[error("unknown profile {0:?}: define [auth.profiles.{0}] in the config first")]
    UnknownProfile(String),
}

impl RegistryArgs {
    async fn resolve(&self) -> Result<(Target, Option<Config>), DeviceCliError> {
        let config = match &self.config {
            Some(p) => Some(Config::load(p)?),
            None if std::path::Path::new(crate::config::DEFAULT_CONFIG).exists() => {
                Some(Config::load(crate::config::DEFAULT_CONFIG.as_ref())?)
            }
            None => None,
        };
        let kv_config = config
            .as_ref()
            .filter(|c| c.auth.registry == RegistrySource::NatsKv);
        if !self.nats_url.is_empty() || (kv_config.is_some() && self.registry.is_none()) {
            if self.registry.is_some() {
                return Err(DeviceCliError::TwoRegistries);
            }
            let urls = match (&self.nats_url, kv_config) {
                (u, _) if !u.is_empty() => {
                    crate::queue::config::split_urls(u.iter().map(String::as_str))
                }
                (_, Some(c)) if !c.queue.nats_url.is_empty() => c.queue.nats_url.clone(),
                _ => return Err(DeviceCliError::NoNatsUrl),
            };
            let (cluster, queue) = config
                .as_ref()
                .map(|c| (c.cluster.clone(), c.queue.clone()))
                .unwrap_or_default();
            let bucket = self.bucket.clone().unwrap_or(cluster.registry_bucket);
            let replicas = cluster.replicas.unwrap_or(queue.replicas);
            let kv = crate::cluster::cli::open(&urls, &bucket, replicas).await?;
            return Ok((Target::Kv(Box::new(kv)), config));
        }
        let path = self
            .registry
            .clone()
            .or_else(|| config.as_ref().and_then(|c| c.auth.registry_path.clone()))
            .ok_or(DeviceCliError::NoRegistry)?;
        Ok((Target::File(path), config))
    }
}

/// Run a device command; returns what to print on stdout.
pub async fn run(cmd: DeviceCommand) -> Result<String, DeviceCliError> {
    match cmd {
        DeviceCommand::Add {
            file,
            id,
            profile,
            allow_measurement,
            messages_per_sec,
            points_per_sec,
            max_sessions,
            new_series_per_minute,
            format,
            json,
        } => {
            let (target, config) = file.resolve().await?;
            if let Some(f) = &format {
                let formats = crate::formats::build(
                    &config
                        .as_ref()
                        .map(|c| c.formats.clone())
                        .unwrap_or_default(),
                )?;
                formats
                    .lookup(f)
                    .map_err(|e| DeviceCliError::UnknownFormat(e.to_string()))?;
            }
            if let (Some(p), Some(c)) = (&profile, &config)
                && !c.auth.profiles.contains_key(p)
            {
                return Err(DeviceCliError::UnknownProfile(p.clone()));
            }
            let policy = DevicePolicy {
                allowed_measurements: (!allow_measurement.is_empty()).then_some(allow_measurement),
                messages_per_sec,
                points_per_sec,
                max_sessions,
                new_series_per_minute,
                format,
            };
            let token = match target {
                Target::Kv(kv) => kv.add(&id, profile, policy).await?,
                Target::File(path) => {
                    let _lock = RegistryLock::acquire(&path)?;
                    let mut reg = Registry::load(&path)?;
                    let token = reg.add(&id, profile, policy)?;
                    reg.save(&path)?;
                    token
                }
            };
            Ok(token_output(&id, token.expose(), json, "added"))
        }
        DeviceCommand::List { file, json } => {
            let reg = match file.resolve().await?.0 {
                Target::Kv(kv) => kv.load().await?.registry,
                Target::File(path) => Registry::load(&path)?,
            };
            let mut out = String::new();
            if json {
                for d in reg.devices() {
                    let mut v = serde_json::to_value(d).expect("record serializes");
                    v.as_object_mut()
                        .expect("record is an object")
                        .remove("token_sha256");
                    out.push_str(&v.to_string());
                    out.push('\n');
                }
            } else {
                out.push_str(&format!(
                    "{:<32} {:<8} {:<12} {}\n",
                    "DEVICE", "ENABLED", "PROFILE", "CREATED"
                ));
                for d in reg.devices() {
                    out.push_str(&format!(
                        "{:<32} {:<8} {:<12} {}\n",
                        d.id,
                        if d.enabled { "yes" } else { "REVOKED" },
                        d.profile.as_deref().unwrap_or("-"),
                        d.created.as_deref().unwrap_or("-"),
                    ));
                }
            }
            Ok(out)
        }
        DeviceCommand::Revoke { file, id } => match file.resolve().await?.0 {
            Target::Kv(kv) => {
                kv.revoke(&id).await?;
                Ok(format!(
                    "revoked {id}; every gateway watching the registry closes its open sessions\n"
                ))
            }
            Target::File(path) => {
                let _lock = RegistryLock::acquire(&path)?;
                let mut reg = Registry::load(&path)?;
                reg.revoke(&id)?;
                reg.save(&path)?;
                Ok(format!(
                    "revoked {id}; its open sessions are closed when the server reloads the registry\n"
                ))
            }
        },
        DeviceCommand::Rotate { file, id, json } => {
            let token = match file.resolve().await?.0 {
                Target::Kv(kv) => kv.rotate(&id).await?,
                Target::File(path) => {
                    let _lock = RegistryLock::acquire(&path)?;
                    let mut reg = Registry::load(&path)?;
                    let token = reg.rotate(&id)?;
                    reg.save(&path)?;
                    token
                }
            };
            Ok(token_output(&id, token.expose(), json, "rotated"))
        }
    }
}

fn token_output(id: &str, token: &str, json: bool, what: &str) -> String {
    if json {
        format!("{}\n", serde_json::json!({"id": id, "token": token}))
    } else {
        format!(
            "{what} device {id}\ntoken: {token}\n\
             Store it on the device now: it is not kept and cannot be shown again.\n\
             Connect with `Authorization: Bearer <token>` (or ?token=<token>) to /v1/devices/{id}\n"
        )
    }
}
