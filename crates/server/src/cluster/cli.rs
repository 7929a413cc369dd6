//! The NATS side of `wsingest device add|list|revoke|rotate`: with
//! `--nats-url` (or `auth.registry = "nats-kv"` in the config) the commands
//! change the registry bucket instead of the file. A gateway watching the
//! bucket applies the change within a second; nothing needs a reload.

use std::time::Duration;

use super::ClusterError;
use super::registry::KvRegistry;

/// How long the command waits for NATS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The registry bucket `bucket` on the NATS servers `urls`.
pub async fn open(
    urls: &[String],
    bucket: &str,
    replicas: usize,
) -> Result<KvRegistry, ClusterError> {
    let client = connect(urls).await?;
    let js = async_nats::jetstream::new(client);
    KvRegistry::open(&js, bucket, replicas).await
}

/// Connect to the first of `urls` that answers.
pub async fn connect(urls: &[String]) -> Result<async_nats::Client, ClusterError> {
    let joined = urls.join(",");
    let err = |detail: String| ClusterError::Connect {
        url: joined.clone(),
        detail,
    };
    let addrs = urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{e} (e.g. nats://127.0.0.1:4222)")))?;
    if addrs.is_empty() {
        return Err(err("no URL given".into()));
    }
    async_nats::ConnectOptions::new()
        .name("wsingest-device")
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(addrs)
        .await
        .map_err(|e| err(e.to_string()))
}
