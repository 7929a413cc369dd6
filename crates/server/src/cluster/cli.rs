//! The NATS side of `wsingest device add|list|revoke|rotate`: with
//! `--nats-url` (or `auth.registry = "nats-kv"` in the config) the commands
//! change the registry bucket instead of the file. A gateway watching the
//! bucket applies the change within a second; nothing needs a reload.

use super::ClusterError;
use super::registry::KvRegistry;
use crate::queue::QueueConfig;

/// The registry bucket `bucket` on the NATS servers `urls`.
pub async fn open(
    urls: &[String],
    bucket: &str,
    replicas: usize,
) -> Result<KvRegistry, ClusterError> {
    let config = QueueConfig {
        nats_url: urls.to_vec(),
        ..QueueConfig::default()
    };
    let client = crate::queue::connect(&config).await?;
    let js = async_nats::jetstream::new(client);
    KvRegistry::open(&js, bucket, replicas, config.startup_timeout()).await
}
