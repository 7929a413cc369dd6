//! The `[mqtt]` section: broker, uplink topic and payload, queue, downlink
//! topics. Checked once at startup by [`MqttConfig::validate`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::topic::{Template, Var};
use crate::setting::{ConfigError, Secret};

/// Payload encoding of bridged points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    Json,
    Cbor,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker URL: `mqtt://host:1883` or `mqtts://host:8883` (user and
    /// password may be given in the URL). Unset: no bridge.
    pub url: Option<String>,
    /// MQTT client id. Unset: `wsingest-<random>`, so several instances can
    /// share a broker. Required with `clean_session = false`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// PEM file of CA certificates for mqtts://. Unset: the system's roots.
    pub ca_file: Option<PathBuf>,
    pub keep_alive_secs: u64,
    /// Off: the broker keeps our subscriptions and queues QoS 1 commands
    /// while we reconnect (needs a fixed `client_id`).
    pub clean_session: bool,
    /// Topic of each point; placeholders `{device}` and `{measurement}`.
    pub topic: String,
    /// Encoding of each point's payload: `json` or `cbor`.
    pub payload: PayloadFormat,
    /// QoS of bridged points: 0 or 1.
    pub qos: u8,
    pub retain: bool,
    /// Points waiting for the broker. When full, new points are dropped (and
    /// counted) rather than slowing ingest down.
    pub queue_capacity: usize,
    /// Make the broker's PUBACK part of a device's ack (needs `qos = 1`).
    /// When the broker is down, devices get `bridge_unavailable` nacks.
    pub required: bool,
    /// With `required`: how long a message may wait for the broker.
    pub required_timeout_ms: u64,
    /// QoS 1 publishes awaiting their PUBACK at once.
    pub inflight: u16,
    /// Largest MQTT packet sent or received; larger points are dropped.
    pub max_packet_bytes: usize,
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// Subscribe to commands (and command results and statuses of other
    /// instances).
    pub commands: bool,
    /// Commands for a device are published here, e.g. by an operator.
    pub command_topic: String,
    /// Devices' answers to commands are published here.
    pub result_topic: String,
    /// Delivery notices (`delivered`), so other instances can drop the
    /// command from their store and HTTP callers see the status.
    pub status_topic: String,
    /// Topics devices publish on that wsingest ingests (docs/formats.md).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<super::subscribe::Subscription>,
    /// Messages of `subscribe` waiting for their outcome at once.
    pub ingest_inflight: usize,
    /// Nacks of subscribed messages are published here (`{device}`); "": not published.
    pub ingest_error_topic: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            keep_alive_secs: 30,
            clean_session: true,
            topic: "telemetry/{device}/{measurement}".into(),
            payload: PayloadFormat::Json,
            qos: 0,
            retain: false,
            queue_capacity: 10_000,
            required: false,
            required_timeout_ms: 10_000,
            inflight: 100,
            max_packet_bytes: 1024 * 1024,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 10_000,
            commands: true,
            command_topic: "devices/{device}/commands".into(),
            result_topic: "devices/{device}/commands/result".into(),
            status_topic: "devices/{device}/commands/status".into(),
            subscribe: Vec::new(),
            ingest_inflight: 100,
            ingest_error_topic: "wsingest/{device}/nack".into(),
        }
    }
}

/// The checked topic templates.
#[derive(Debug, Clone)]
pub struct Topics {
    pub telemetry: Template,
    pub command: Template,
    pub result: Template,
    pub status: Template,
}

impl MqttConfig {
    pub fn enabled(&self) -> bool {
        self.url.as_deref().is_some_and(|u| !u.is_empty())
    }

    pub fn topics(&self) -> Result<Topics, ConfigError> {
        let t = |key: &'static str, s: &str, allowed: &[Var]| {
            Template::parse(s, allowed).map_err(|detail| ConfigError::Invalid { key, detail })
        };
        let device = &[Var::Device];
        let topics = Topics {
            telemetry: t("mqtt.topic", &self.topic, &[Var::Device, Var::Measurement])?,
            command: t("mqtt.command_topic", &self.command_topic, device)?,
            result: t("mqtt.result_topic", &self.result_topic, device)?,
            status: t("mqtt.status_topic", &self.status_topic, device)?,
        };
        for (key, tpl) in [
            ("mqtt.command_topic", &topics.command),
            ("mqtt.result_topic", &topics.result),
            ("mqtt.status_topic", &topics.status),
        ] {
            if !tpl.uses(Var::Device) {
                return Err(ConfigError::Invalid {
                    key,
                    detail: format!("{tpl} must contain {{device}}"),
                });
            }
            tpl.check_whole_levels()
                .map_err(|detail| ConfigError::Invalid { key, detail })?;
        }
        let filters = [
            topics.command.filter(),
            topics.result.filter(),
            topics.status.filter(),
        ];
        if filters[0] == filters[1] || filters[0] == filters[2] || filters[1] == filters[2] {
            return Err(ConfigError::Invalid {
                key: "mqtt.command_topic",
                detail: "command, result and status topics must differ".into(),
            });
        }
        Ok(topics)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, detail: &str| {
            Err(ConfigError::Invalid {
                key,
                detail: detail.into(),
            })
        };
        self.topics()?;
        if self.qos > 1 {
            return invalid("mqtt.qos", "must be 0 or 1");
        }
        if self.required && self.qos != 1 {
            return invalid(
                "mqtt.required",
                "needs mqtt.qos = 1: only QoS 1 publishes are acknowledged by the broker",
            );
        }
        if self.queue_capacity == 0 {
            return invalid("mqtt.queue_capacity", "must be at least 1");
        }
        if self.inflight == 0 {
            return invalid("mqtt.inflight", "must be at least 1");
        }
        if self.keep_alive_secs == 0 {
            return invalid("mqtt.keep_alive_secs", "must be at least 1");
        }
        if self.max_packet_bytes < 1024 {
            return invalid("mqtt.max_packet_bytes", "must be at least 1024");
        }
        if self.reconnect_initial_ms == 0 || self.reconnect_max_ms < self.reconnect_initial_ms {
            return invalid(
                "mqtt.reconnect_initial_ms",
                "must be at least 1 and at most mqtt.reconnect_max_ms",
            );
        }
        if !self.clean_session && self.client_id.is_none() {
            return invalid(
                "mqtt.clean_session",
                "a persistent session (false) needs a fixed mqtt.client_id",
            );
        }
        if let Some(url) = &self.url
            && !url.is_empty()
        {
            parse_url(url).map_err(|detail| ConfigError::Invalid {
                key: "mqtt.url",
                detail,
            })?;
        }
        Ok(())
    }

    pub fn required_timeout(&self) -> Duration {
        Duration::from_millis(self.required_timeout_ms)
    }
}

/// Where and how to reach the broker, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Parse `mqtt://[user[:password]@]host[:port]` (also `tcp://`, and
/// `mqtts://`/`ssl://` for TLS). Errors are messages for the config error.
pub fn parse_url(s: &str) -> Result<BrokerUrl, String> {
    let url = url::Url::parse(s)
        .map_err(|e| format!("{s:?} is not a URL ({e}); e.g. mqtt://127.0.0.1:1883"))?;
    let tls = match url.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            return Err(format!(
                "scheme {other:?} is not supported; use mqtt:// or mqtts://"
            ));
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{s:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(format!(
            "{s:?}: a broker URL has no path or query; set other options in [mqtt]"
        ));
    }
    let decode = |v: &str| {
        url::form_urlencoded::parse(format!("v={v}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let username = Some(url.username()).filter(|u| !u.is_empty()).map(decode);
    let password = url.password().map(decode);
    Ok(BrokerUrl {
        tls,
        host,
        port: url.port().unwrap_or(if tls { 8883 } else { 1883 }),
        username,
        password,
    })
}
