//! Configuration: a TOML file (`config/wsingest.toml` by default), then
//! `WSINGEST_*` environment variables and command-line flags on top (see
//! [`crate::cli`]). Unknown keys are errors; every error names the file, the
//! line and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default config file, used when present and no `--config` is given.
pub const DEFAULT_CONFIG: &str = "config/wsingest.toml";

pub use crate::setting::{ConfigError, Secret};

impl From<&Config> for crate::pipeline::PipelineConfig {
    fn from(c: &Config) -> Self {
        crate::pipeline::PipelineConfig {
            queue_capacity: c.influx.queue_capacity,
            batch_points: c.influx.batch_size,
            batch_bytes: c.influx.batch_bytes,
            flush_interval: c.flush_interval(),
            concurrency: c.influx.concurrency,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub decode: DecodeConfig,
    /// Per-measurement settings, e.g. `[measurements.meter] int_fields = true`.
    pub measurements: BTreeMap<String, MeasurementConfig>,
    pub influx: InfluxConfig,
    pub observe: ObserveConfig,
    pub limits: crate::limits::LimitsConfig,
    pub tls: crate::tls::TlsConfig,
    /// The disk spool for batches InfluxDB cannot take (see docs/durability.md).
    pub spool: crate::sink::spool::SpoolConfig,
    pub mqtt: crate::mqtt::MqttConfig,
    pub commands: crate::commands::CommandsConfig,
    pub cluster: crate::cluster::ClusterConfig,
    /// Formats (mappings) of devices' own JSON, `[formats.NAME]`, selected
    /// with `?format=NAME` or by an MQTT subscription (docs/formats.md).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub formats: BTreeMap<String, wsingest_proto::format::FormatConfig>,
    pub queue: crate::queue::QueueConfig,
}

/// Where accepted points go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// InfluxDB (the `[influx]` section).
    #[default]
    Influx,
    /// Discard after decode and ack at once: for benchmarks and device tests.
    Blackhole,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where points go: `influx` or `blackhole` (discard, for benchmarks).
    pub sink: SinkKind,
    /// Largest WebSocket message accepted; bigger ones close the session with
    /// 1009 before they are buffered.
    pub max_message_bytes: usize,
    /// Largest single WebSocket frame accepted.
    pub max_frame_bytes: usize,
    /// Close a session that sent nothing (not even a pong) for this long.
    pub idle_timeout_secs: u64,
    /// Send a ping this often, to keep NAT mappings and detect dead peers.
    pub ping_interval_secs: u64,
    /// Close a connection that has not finished its handshake in this time;
    /// also the deadline for an HTTP fallback request body.
    pub handshake_timeout_secs: u64,
    /// Close with 1007 after this many invalid messages in a row.
    pub max_invalid_messages: u32,
    /// Messages a session may have waiting for their ack.
    pub max_inflight_messages: usize,
    /// How long a session may wait on a full pipeline before it is closed
    /// with 1013 (try again later).
    pub backpressure_timeout_ms: u64,
    /// Upper bound on connections (WebSocket and HTTP) held at once.
    pub max_connections: usize,
    /// How long shutdown waits for acks before closing sessions anyway.
    pub shutdown_timeout_secs: u64,
    /// When a message is acked: `durable` (in InfluxDB or fsynced in the
    /// spool) or `received` (once accepted into the pipeline: lower latency,
    /// but a crash loses what was acked and not yet written).
    pub ack_mode: AckMode,
    /// A message resent with the same `seq` and bytes within this window,
    /// whose points carry no `ts`, is not written twice (0: off).
    pub dedupe_window_secs: u64,
    /// Upper bound on the (device, seq) pairs remembered for that.
    pub dedupe_max_entries: usize,
}

/// When devices get their ack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After InfluxDB answered 2xx, or the spool fsynced the batch.
    #[default]
    Durable,
    /// As soon as the message is decoded and queued.
    Received,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8765)),
            sink: SinkKind::Influx,
            max_message_bytes: 1024 * 1024,
            max_frame_bytes: 1024 * 1024,
            idle_timeout_secs: 120,
            ping_interval_secs: 30,
            handshake_timeout_secs: 10,
            max_invalid_messages: 20,
            max_inflight_messages: 1000,
            backpressure_timeout_ms: 10_000,
            max_connections: 200_000,
            shutdown_timeout_secs: 10,
            ack_mode: AckMode::Durable,
            dedupe_window_secs: 300,
            dedupe_max_entries: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Let clients without a token in; their device id is the path's, or
    /// `anonymous-<n>` on `/`. Off by default; on in the demo config.
    pub allow_anonymous: bool,
    /// Where the registry is: "file" (`registry_path`) or "nats-kv" (shared by gateways).
    pub registry: crate::cluster::RegistrySource,
    /// The device registry file (see `wsingest device`). Unset: no devices.
    pub registry_path: Option<PathBuf>,
    /// How often the server checks the registry file for changes.
    pub reload_interval_ms: u64,
    /// Browser origins allowed to connect (e.g. "https://app.example.com");
    /// empty: no check. Requests without `Origin` (devices) always pass.
    pub allowed_origins: Vec<String>,
    /// Named per-device policies, referenced by a registry entry's `profile`.
    pub profiles: BTreeMap<String, crate::auth::DevicePolicy>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: false,
            registry: Default::default(),
            registry_path: None,
            reload_interval_ms: 1000,
            allowed_origins: Vec::new(),
            profiles: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Measurement of points that do not name one.
    pub default_measurement: String,
    /// Measurement of points decoded from SenML (RFC 8428) records.
    pub senml_measurement: String,
    /// Write integers as InfluxDB integers for all measurements. Off: they are
    /// floats, so devices sending `21` and `21.5` do not conflict.
    pub int_fields: bool,
    pub max_points_per_message: usize,
    pub max_tags: usize,
    pub max_fields: usize,
    pub max_name_bytes: usize,
    pub max_tag_value_bytes: usize,
    pub max_string_bytes: usize,
    /// Deepest nesting of JSON/CBOR arrays and maps in a message (the message
    /// model needs 4).
    pub max_depth: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        let l = wsingest_proto::lineproto::Limits::default();
        DecodeConfig {
            default_measurement: "telemetry".into(),
            senml_measurement: "senml".into(),
            int_fields: false,
            max_points_per_message: 10_000,
            max_tags: l.max_tags,
            max_fields: l.max_fields,
            max_name_bytes: l.max_name_bytes,
            max_tag_value_bytes: l.max_tag_value_bytes,
            max_string_bytes: l.max_string_bytes,
            max_depth: 8,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasurementConfig {
    pub int_fields: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    pub url: String,
    /// 1.x API: database, retention policy, user, password.
    pub db: Option<String>,
    pub rp: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// v2 API (InfluxDB 2.x/3.x, 1.8+, VictoriaMetrics): org, bucket, token.
    pub org: Option<String>,
    pub bucket: Option<String>,
    pub token: Option<Secret>,
    /// Create the database (`CREATE DATABASE`, 1.x API) at startup. Off: a
    /// missing database is reported (log, `/readyz` 503) and batches are
    /// spooled until it exists.
    pub create_database: bool,
    /// Points per write request.
    pub batch_size: usize,
    /// Bytes per write request.
    pub batch_bytes: usize,
    /// Batches are written as soon as a write slot is free (group commit);
    /// while every slot is busy, a batch closes when full or this old and
    /// waits for the next free slot while the next one gathers.
    pub flush_interval_ms: u64,
    /// Write requests in flight at once.
    pub concurrency: usize,
    /// Messages queued between sessions and the batcher.
    pub queue_capacity: usize,
    pub gzip: bool,
    pub timeout_ms: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Stop retrying a batch after this long: it goes to the spool (or, with
    /// the spool off, is nacked `storage_unavailable`).
    pub retry_max_elapsed_ms: u64,
    /// Points InfluxDB refused, with its reason (JSON lines). Empty: none.
    pub dead_letter_path: Option<PathBuf>,
    pub dead_letter_max_bytes: u64,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            url: "http://127.0.0.1:8086".into(),
            db: Some("wsingest".into()),
            rp: None,
            user: None,
            password: None,
            org: None,
            bucket: None,
            token: None,
            create_database: false,
            batch_size: 5000,
            batch_bytes: 4 * 1024 * 1024,
            flush_interval_ms: 1000,
            concurrency: 4,
            queue_capacity: 10_000,
            gzip: false,
            timeout_ms: 10_000,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            retry_max_elapsed_ms: 10_000,
            dead_letter_path: Some(PathBuf::from("data/dead-letter.jsonl")),
            dead_letter_max_bytes: 100 * 1024 * 1024,
        }
    }
}

/// Metrics, stats written to InfluxDB and the live view (`[observe]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveConfig {
    /// Write `wsingest_device`, `wsingest_stats` and `wsingest_session` points
    /// this often, in milliseconds. 0: never.
    pub stats_interval_ms: u64,
    /// The `instance` tag of those points. Empty: the host name.
    pub instance: String,
    /// Forget a device's live numbers this long after its last session ended.
    pub device_retention_secs: u64,
    /// Serve the live view at `/live` (and `/` without upgrade).
    pub live: bool,
    /// Token the live view asks for (`?token=`) when anonymous devices are not
    /// allowed. Without one, the live view is only served with anonymous on.
    /// Also the bearer token of the HTTP command API, which is off without it.
    pub operator_token: Option<Secret>,
    /// Devices listed in one live view update (the busiest first).
    pub live_max_devices: usize,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            stats_interval_ms: 10_000,
            instance: String::new(),
            device_retention_secs: 600,
            live: true,
            operator_token: None,
            live_max_devices: 200,
        }
    }
}

impl Config {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse TOML text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        // Both APIs in one file is ambiguous (the bucket would win, with
        // whatever org): refuse it, naming the line. (`db` has a default, so
        // only the file can tell.)
        if config.influx.db.is_some()
            && config.influx.bucket.is_some()
            && let Ok(doc) = toml::de::DeTable::parse(text)
        {
            let influx = doc
                .get_ref()
                .iter()
                .find(|(k, _)| k.get_ref() == "influx")
                .and_then(|(_, t)| t.get_ref().as_table());
            let key = |name: &str| influx.and_then(|t| t.iter().find(|(k, _)| k.get_ref() == name));
            if key("db").is_some()
                && let Some((bucket, _)) = key("bucket")
            {
                let at = bucket.span().start.min(text.len());
                let line = text[..at].matches('\n').count() + 1;
                return Err(ConfigError::Parse {
                    path: path.into(),
                    message: format!(
                        "line {line}: influx.db and influx.bucket are both set: db selects the InfluxDB 1.x API (/write), bucket the v2 API (/api/v2/write, with org and token); keep one"
                    ),
                });
            }
        }
        Ok(config)
    }

    /// The configuration with every default, as TOML.
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).expect("default config serializes")
    }

    /// Check what serde cannot: which InfluxDB API, value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, detail: &str| {
            Err(ConfigError::Invalid {
                key,
                detail: detail.into(),
            })
        };
        self.influx_api()?;
        crate::cluster::config::check(self)?;
        if let Err(e) = crate::sink::influx::check_url(&self.influx.url) {
            return Err(ConfigError::Invalid {
                key: "influx.url",
                detail: e.to_string(),
            });
        }
        if self.influx.bucket.is_some() && self.influx.create_database {
            return invalid(
                "influx.create_database",
                "creates a 1.x database (influx.db); with influx.bucket create the bucket with the influx CLI and set create_database = false",
            );
        }
        if self.influx.batch_size == 0 {
            return invalid("influx.batch_size", "must be at least 1");
        }
        if self.influx.concurrency == 0 {
            return invalid("influx.concurrency", "must be at least 1");
        }
        if self.influx.flush_interval_ms == 0 {
            return invalid("influx.flush_interval_ms", "must be at least 1");
        }
        if self.server.max_message_bytes < 64 {
            return invalid("server.max_message_bytes", "must be at least 64");
        }
        if self.server.max_inflight_messages == 0 {
            return invalid("server.max_inflight_messages", "must be at least 1");
        }
        if self.server.ping_interval_secs == 0 || self.server.idle_timeout_secs == 0 {
            return invalid(
                "server.ping_interval_secs",
                "ping interval and idle timeout must be at least 1 s",
            );
        }
        if self.decode.max_depth < 4 {
            return invalid(
                "decode.max_depth",
                "must be at least 4 (a batch nests 4 levels)",
            );
        }
        if self.auth.reload_interval_ms == 0 {
            return invalid("auth.reload_interval_ms", "must be at least 1");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return invalid("tls.cert", "set both tls.cert and tls.key, or neither");
        }
        let l = &self.limits;
        if l.burst_secs <= 0.0
            || l.burst_secs.is_nan()
            || l.messages_per_sec < 0.0
            || l.points_per_sec < 0.0
        {
            return invalid(
                "limits",
                "rates must be >= 0 (0: unlimited) and burst_secs > 0",
            );
        }
        let sp = &self.spool;
        if sp.enabled {
            if sp.dir.as_os_str().is_empty() {
                return invalid(
                    "spool.dir",
                    "must name a directory (or set spool.enabled = false)",
                );
            }
            if sp.max_bytes < 64 * 1024 {
                return invalid("spool.max_bytes", "must be at least 65536");
            }
            if !(sp.replay_share > 0.0 && sp.replay_share <= 1.0) {
                return invalid("spool.replay_share", "must be in (0, 1]");
            }
        }
        self.mqtt.validate()?;
        self.commands.validate()?;
        self.queue.validate()?;
        let formats = crate::formats::build(&self.formats)?;
        self.mqtt.validate_subscriptions(&formats)?;
        for (name, p) in &self.auth.profiles {
            if let Some(f) = &p.format
                && let Err(e) = formats.lookup(f)
            {
                return Err(ConfigError::Invalid {
                    key: "auth.profiles",
                    detail: format!("[auth.profiles.{name}] format: {e}"),
                });
            }
        }
        for (key, measurement) in [
            (
                "decode.default_measurement",
                &self.decode.default_measurement,
            ),
            ("decode.senml_measurement", &self.decode.senml_measurement),
        ] {
            if let Err(e) = wsingest_proto::lineproto::check_point(
                &wsingest_proto::point::Point {
                    measurement: measurement.clone(),
                    tags: vec![],
                    fields: vec![("f".into(), wsingest_proto::point::FieldValue::Bool(true))],
                    time_ns: 0,
                    int_fields: false,
                },
                &self.limits(),
            ) {
                return Err(ConfigError::Invalid {
                    key,
                    detail: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The InfluxDB write API these settings select: v2 when a bucket is
    /// given, 1.x when a database is.
    pub fn influx_api(&self) -> Result<crate::sink::influx::Api, ConfigError> {
        use crate::sink::influx::Api;
        let i = &self.influx;
        match (&i.bucket, &i.db) {
            (Some(bucket), _) => Ok(Api::V2 {
                org: i.org.clone().unwrap_or_default(),
                bucket: bucket.clone(),
                token: i.token.clone(),
            }),
            (None, Some(db)) if !db.is_empty() => Ok(Api::V1 {
                db: db.clone(),
                rp: i.rp.clone(),
                user: i.user.clone(),
                password: i.password.clone(),
            }),
            _ => Err(ConfigError::Invalid {
                key: "influx.db",
                detail: "set influx.db (InfluxDB 1.x API) or influx.bucket (v2 API)".into(),
            }),
        }
    }

    pub fn limits(&self) -> wsingest_proto::lineproto::Limits {
        let d = &self.decode;
        wsingest_proto::lineproto::Limits {
            max_name_bytes: d.max_name_bytes,
            max_tag_value_bytes: d.max_tag_value_bytes,
            max_string_bytes: d.max_string_bytes,
            max_tags: d.max_tags,
            max_fields: d.max_fields,
        }
    }

    pub fn decoder_config(&self) -> wsingest_proto::decode::DecoderConfig {
        wsingest_proto::decode::DecoderConfig {
            default_measurement: self.decode.default_measurement.clone(),
            senml_measurement: self.decode.senml_measurement.clone(),
            int_fields: self.decode.int_fields,
            int_field_measurements: self
                .measurements
                .iter()
                .filter(|(_, m)| m.int_fields)
                .map(|(name, _)| name.clone())
                .collect(),
            max_points_per_message: self.decode.max_points_per_message,
            max_depth: self.decode.max_depth,
            limits: self.limits(),
            // Checked by `validate`; an unchecked config gets the presets.
            formats: std::sync::Arc::new(crate::formats::build(&self.formats).unwrap_or_default()),
        }
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.influx.flush_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_line_and_key() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n\n[influx]\nbatch_sise = 10\n";
        let e = Config::parse(text, Path::new("x/bad.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x/bad.toml"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("batch_sise"), "{e}");
        let e = Config::parse("[server]\nlisten = 5\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("listen"), "{e}");
    }

    #[test]
    fn default_round_trips_and_secrets_are_redacted() {
        let c = Config::parse(&Config::default_toml(), Path::new("d")).unwrap();
        c.validate().unwrap();
        let mut c = Config::default();
        c.influx.password = Some(Secret::new("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn api_selection() {
        let mut c = Config::default();
        assert!(matches!(
            c.influx_api().unwrap(),
            crate::sink::influx::Api::V1 { .. }
        ));
        c.influx.bucket = Some("b".into());
        assert!(matches!(
            c.influx_api().unwrap(),
            crate::sink::influx::Api::V2 { .. }
        ));
        c.influx.bucket = None;
        c.influx.db = None;
        assert!(c.validate().is_err());
    }
}
