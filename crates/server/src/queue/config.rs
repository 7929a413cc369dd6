//! The `[queue]` section: the NATS servers, the JetStream stream the
//! gateways publish points to, and the durable consumer the writers share.
//! Queue mode is on when `nats_url` names at least one server. Checked once
//! at startup by [`QueueConfig::validate`].

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::setting::{ConfigError, Secret};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// NATS servers, e.g. `["nats://a:4222", "nats://b:4222"]`, or one string
    /// `"nats://a:4222,nats://b:4222"`. Empty: queue mode is off (points go
    /// to InfluxDB directly). The client learns the rest of the cluster from
    /// the first server it reaches.
    #[serde(deserialize_with = "url_list")]
    pub nats_url: Vec<String>,
    /// Token for the NATS servers (`authorization { token }`). Unset: none,
    /// or user and password given in the URL.
    pub token: Option<Secret>,
    /// The JetStream stream of points (created or updated at startup).
    pub stream: String,
    /// Copies of each message across the NATS cluster: 1, 3 or 5. An ack to
    /// a device means a majority of them has the message.
    pub replicas: usize,
    /// First subject tokens: points of device D go to `<prefix>.points.<D>`,
    /// so JetStream keeps each device's messages in order.
    pub subject_prefix: String,
    /// A message published again with the same id (device, seq, ts) within
    /// this window is dropped by the stream: a device's resend after a lost
    /// ack is stored once.
    pub duplicate_window_secs: u64,
    /// Upper bound on the stream's size on each NATS node's disk. When full,
    /// publishes are refused (devices get `storage_unavailable`), never is
    /// an unwritten message dropped. 0: no bound but the disk.
    pub max_bytes: u64,
    /// How long a publish may wait for JetStream's ack, retries included,
    /// before its device gets `storage_unavailable`. Covers a stream leader
    /// election (a few seconds).
    pub publish_timeout_ms: u64,
    /// Publishes awaiting JetStream's ack at once, per gateway.
    pub max_pending_publishes: usize,
    /// Longest a message waits for others to be published with (the
    /// gateway's batches: `influx.batch_size` points, `influx.concurrency`
    /// batches in flight). Replaces `influx.flush_interval_ms` on a gateway.
    pub linger_ms: u64,
    /// Deadline to reach a NATS server at startup (and per reconnect attempt).
    pub connect_timeout_ms: u64,
    /// How long startup keeps trying to create or open the stream, the
    /// writers' consumer and the cluster's KV buckets while JetStream
    /// answers "not ready" (a cluster that just started elects its leader
    /// first). Each attempt is logged; then the process exits with the
    /// last error.
    pub startup_timeout_ms: u64,
    /// Durable consumer name the writers share (a work queue: each message
    /// goes to one writer).
    pub consumer: String,
    /// A message a writer took and neither acked nor nacked in this time is
    /// given to another writer: longer than a write with its retries
    /// (`influx.timeout_ms`, `influx.retry_max_elapsed_ms`) plus a flush.
    pub ack_wait_secs: u64,
    /// Messages handed out to writers and not yet acked, across all writers:
    /// the bound on what writers hold in memory.
    pub max_ack_pending: i64,
    /// Delay before a message InfluxDB could not take is delivered again
    /// (doubling per attempt up to 16×).
    pub nak_delay_ms: u64,
    /// Where a writer (`wsingest writer`, or the writer of `serve --writer`)
    /// serves `/healthz`, `/readyz` and `/metrics`, e.g. `"127.0.0.1:9466"`
    /// (`writer --listen`). Unset: no HTTP port (several writers on one
    /// host would fight over a default one).
    pub writer_listen: Option<std::net::SocketAddr>,
    /// How often a writer asks JetStream for its consumer's info (pending
    /// and ack-pending counts on `/metrics`, NATS reachability on `/readyz`).
    pub writer_info_interval_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            nats_url: Vec::new(),
            token: None,
            stream: "wsingest".into(),
            replicas: 3,
            subject_prefix: "wsingest".into(),
            duplicate_window_secs: 120,
            max_bytes: 0,
            publish_timeout_ms: 10_000,
            max_pending_publishes: 4096,
            linger_ms: 5,
            connect_timeout_ms: 5000,
            startup_timeout_ms: 30_000,
            consumer: "writers".into(),
            ack_wait_secs: 60,
            max_ack_pending: 20_000,
            nak_delay_ms: 1000,
            writer_listen: None,
            writer_info_interval_ms: 5000,
        }
    }
}

/// `nats_url` as a list or one comma-separated string; entries are split at
/// commas either way, trimmed, and empty ones dropped.
fn url_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let raw = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    Ok(split_urls(raw.iter().map(String::as_str)))
}

/// Split `a,b` entries into single URLs (also used for `--nats-url`).
pub fn split_urls<'a>(entries: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    entries
        .into_iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl QueueConfig {
    /// Queue mode: points go through JetStream instead of straight to InfluxDB.
    pub fn enabled(&self) -> bool {
        !self.nats_url.is_empty()
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs(self.duplicate_window_secs)
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs)
    }

    pub fn nak_delay(&self) -> Duration {
        Duration::from_millis(self.nak_delay_ms)
    }

    pub fn writer_info_interval(&self) -> Duration {
        Duration::from_millis(self.writer_info_interval_ms)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, detail: String| Err(ConfigError::Invalid { key, detail });
        for url in &self.nats_url {
            if let Err(e) = url.parse::<async_nats::ServerAddr>() {
                return invalid(
                    "queue.nats_url",
                    format!("{url:?}: {e} (e.g. nats://127.0.0.1:4222)"),
                );
            }
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            return invalid(
                "queue.replicas",
                format!(
                    "{}: must be 1, 3 or 5 (an odd count, at most the NATS cluster's size)",
                    self.replicas
                ),
            );
        }
        if let Err(detail) = check_name(&self.stream) {
            return invalid("queue.stream", detail);
        }
        if let Err(detail) = check_name(&self.consumer) {
            return invalid("queue.consumer", detail);
        }
        if let Err(detail) = super::subject::check_prefix(&self.subject_prefix) {
            return invalid("queue.subject_prefix", detail);
        }
        if self.duplicate_window_secs == 0 {
            return invalid(
                "queue.duplicate_window_secs",
                "must be at least 1: resends after a lost ack would be stored twice".into(),
            );
        }
        if self.publish_timeout_ms < 100 {
            return invalid("queue.publish_timeout_ms", "must be at least 100".into());
        }
        if self.linger_ms == 0 {
            return invalid("queue.linger_ms", "must be at least 1".into());
        }
        if self.connect_timeout_ms == 0 {
            return invalid("queue.connect_timeout_ms", "must be at least 1".into());
        }
        if self.max_pending_publishes == 0 {
            return invalid("queue.max_pending_publishes", "must be at least 1".into());
        }
        if self.ack_wait_secs == 0 {
            return invalid("queue.ack_wait_secs", "must be at least 1".into());
        }
        if self.max_ack_pending < 1 {
            return invalid("queue.max_ack_pending", "must be at least 1".into());
        }
        if self.nak_delay_ms == 0 {
            return invalid("queue.nak_delay_ms", "must be at least 1".into());
        }
        if self.writer_info_interval_ms < 100 {
            return invalid(
                "queue.writer_info_interval_ms",
                "must be at least 100".into(),
            );
        }
        Ok(())
    }
}

/// Stream and consumer names: JetStream refuses spaces, `.`, `*`, `>`, path
/// separators and control characters in them.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, ' ' | '.' | '*' | '>' | '/' | '\\') || c.is_control())
    {
        return Err(format!(
            "{name:?}: {c:?} is not allowed (letters, digits, '-' and '_')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> QueueConfig {
        #[derive(Deserialize)]
        struct Wrap {
            queue: QueueConfig,
        }
        toml::from_str::<Wrap>(toml).unwrap().queue
    }

    #[test]
    fn urls_as_a_list_or_one_comma_separated_string() {
        let a = parse("[queue]\nnats_url = \"nats://a:4222, nats://b:4222,\"\n");
        assert_eq!(a.nats_url, ["nats://a:4222", "nats://b:4222"]);
        let b = parse("[queue]\nnats_url = [\"nats://a:4222\", \"nats://b:4222,nats://c\"]\n");
        assert_eq!(b.nats_url, ["nats://a:4222", "nats://b:4222", "nats://c"]);
        assert!(a.enabled() && !QueueConfig::default().enabled());
        a.validate().unwrap();
        QueueConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_settings_name_the_key_and_the_fix() {
        let err = |f: fn(&mut QueueConfig)| {
            let mut c = QueueConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        let e = err(|c| c.nats_url = vec!["http://a:4222".into()]);
        assert!(e.contains("queue.nats_url") && e.contains("nats://"), "{e}");
        let e = err(|c| c.replicas = 2);
        assert!(
            e.contains("queue.replicas") && e.contains("1, 3 or 5"),
            "{e}"
        );
        let e = err(|c| c.stream = "a.b".into());
        assert!(e.contains("queue.stream"), "{e}");
        let e = err(|c| c.subject_prefix = "a.*".into());
        assert!(e.contains("queue.subject_prefix"), "{e}");
        let e = err(|c| c.duplicate_window_secs = 0);
        assert!(e.contains("stored twice"), "{e}");
        let e = err(|c| c.max_ack_pending = 0);
        assert!(e.contains("queue.max_ack_pending"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Wrap {
            queue: QueueConfig,
        }
        let e = toml::from_str::<Wrap>("[queue]\nreplica = 3\n").unwrap_err();
        assert!(e.to_string().contains("replica"), "{e}");
    }
}
