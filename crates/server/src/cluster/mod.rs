//! State gateways share through NATS, so that N gateways behind a load
//! balancer behave as one: the device registry, session ownership and
//! command routing (docs/cluster.md).
//!
//! - [`config`]: `[cluster]` (bucket names, gateway id) and `auth.registry`.
//! - [`keys`]: device ids as KV keys.
//! - [`lag`]: whether a KV watch keeps up with its bucket.
//! - [`registry`]: the registry in a JetStream KV bucket, loaded at startup
//!   and watched; changes close sessions through the file reload's path.
//! - [`ownership`]: one session per device across gateways, newest wins.
//! - [`commands`]: a command to any gateway reaches the device's gateway,
//!   its result comes back.
//! - [`cli`]: `wsingest device … --nats-url` on the KV registry.
//!
//! All of it is on when `[queue] nats_url` is set; the registry moves to KV
//! only with `auth.registry = "nats-kv"`. Each part takes a NATS client or
//! JetStream context, so tests and the CLI can drive it alone.

pub mod cli;
pub mod commands;
pub mod config;
pub mod keys;
mod lag;
pub mod ownership;
pub mod registry;

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use tokio_util::sync::CancellationToken;

pub use config::{ClusterConfig, RegistrySource};

use crate::auth::{Auth, Registry};
use crate::commands::Router;
use crate::limits::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "NATS KV bucket {bucket:?}: {detail}; check that nats-server runs with JetStream (-js) and has a quorum, \
         and that cluster.replicas is at most the number of NATS servers"
    )]
    Bucket { bucket: String, detail: String },
    #[error("NATS KV bucket {bucket:?}, key {key:?}: {detail}; retry once NATS answers")]
    Kv {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error("device registry in NATS KV bucket {bucket:?}: {detail}")]
    Record { bucket: String, detail: String },
    #[error("cannot subscribe to {subject}: {detail}; retry once NATS answers")]
    Subscribe { subject: String, detail: String },
    #[error(
        "device {0:?} was changed by another `wsingest device` command at the same moment; run the command again"
    )]
    Conflict(String),
    #[error(transparent)]
    Registry(#[from] crate::auth::RegistryError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}

/// What a bucket is: its name, history and age limit, and how long opening
/// it may wait for a forming cluster (`queue.startup_timeout_ms`).
pub(crate) struct BucketSpec<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub history: i64,
    /// Zero: entries never expire.
    pub max_age: std::time::Duration,
    pub replicas: usize,
    pub startup: std::time::Duration,
}

/// Open a KV bucket, creating it when it does not exist yet.
///
/// The bucket's stream is created here, with the settings KV buckets have
/// (`KV_<name>`, subjects `$KV.<name>.>`, rollups, direct get), rather than
/// with `create_key_value`: that first reads the account's JetStream info,
/// which async-nats 0.51 cannot parse from nats-server 2.9 (measured: "data
/// did not match any variant of untagged enum Response").
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    spec: BucketSpec<'_>,
) -> Result<kv::Store, ClusterError> {
    use crate::queue::startup::{Failure, retry};
    use std::sync::atomic::Ordering::Relaxed;
    // Atomic only to keep the future `Send`: the attempts run one at a time.
    let replicas = std::sync::atomic::AtomicUsize::new(spec.replicas.max(1));
    let what = format!("KV bucket {}", spec.name);
    retry(&what, spec.startup, || async {
        if let Ok(store) = js.get_key_value(spec.name).await {
            return Ok(store);
        }
        let created = loop {
            let created = js
                .create_stream(jetstream::stream::Config {
                    name: format!("KV_{}", spec.name),
                    description: Some(spec.description.into()),
                    subjects: vec![format!("$KV.{}.>", spec.name)],
                    max_messages_per_subject: spec.history.max(1),
                    max_age: spec.max_age,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas.load(Relaxed),
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    ..Default::default()
                })
                .await;
            match created {
                // A single NATS server (a development setup) cannot keep replicas.
                Err(e)
                    if replicas.load(Relaxed) > 1
                        && e.to_string().contains("non-clustered mode") =>
                {
                    tracing::warn!(
                        bucket = spec.name,
                        replicas = replicas.load(Relaxed),
                        "NATS runs without a cluster: creating the bucket with 1 replica"
                    );
                    replicas.store(1, Relaxed);
                }
                other => break other,
            }
        };
        match created {
            Ok(_) => js
                .get_key_value(spec.name)
                .await
                .map_err(Failure::transient),
            // Another gateway may have created it meanwhile.
            Err(e) => match js.get_key_value(spec.name).await {
                Ok(store) => Ok(store),
                Err(_) => Err(Failure::from(e)),
            },
        }
    })
    .await
    .map_err(|f| ClusterError::Bucket {
        bucket: spec.name.into(),
        detail: f.detail,
    })
}

/// What [`start`] started, for the server's logs and tests.
pub struct Cluster {
    pub gateway: String,
    pub ownership: Arc<ownership::Ownership>,
}

/// Start every shared part on `client` (buckets with `queue_replicas` unless
/// `cluster.replicas` says otherwise): the KV registry when `kv_registry`
/// (loaded before this returns, so the gateway never serves without it;
/// `on_registry_change` runs after each change, as after a file reload),
/// session ownership (hooked into `limits`), command routing (into
/// `router`). Everything stops with `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    client: async_nats::Client,
    config: &ClusterConfig,
    queue: &crate::queue::QueueConfig,
    kv_registry: bool,
    auth: &Arc<Auth>,
    limits: &Arc<Limits>,
    router: &Arc<Router>,
    shutdown: &CancellationToken,
    on_registry_change: impl Fn(&Registry) + Send + 'static,
) -> Result<Cluster, ClusterError> {
    let js = jetstream::new(client.clone());
    let gateway = config.gateway_id();
    let replicas = config.replicas.unwrap_or(queue.replicas);
    let startup = queue.startup_timeout();
    if kv_registry {
        let kv =
            registry::KvRegistry::open(&js, &config.registry_bucket, replicas, startup).await?;
        let loaded = kv.load().await?;
        tracing::info!(bucket = %config.registry_bucket, devices = loaded.registry.len(), "device registry loaded from NATS KV");
        auth.replace(loaded.registry.clone());
        registry::spawn(
            kv,
            auth.clone(),
            loaded,
            shutdown.clone(),
            on_registry_change,
        );
    }
    let ownership = ownership::Ownership::start(
        &js,
        &config.sessions_bucket,
        replicas,
        startup,
        &gateway,
        limits.metrics.sessions_replaced.clone(),
        shutdown.clone(),
    )
    .await?;
    limits.set_hook(Arc::new(ownership.clone()));
    let relay = commands::start(
        client,
        ownership.clone(),
        router.clone(),
        commands::Subjects::new(&config.subject_prefix),
        shutdown.clone(),
    )
    .await?;
    router.set_cluster(relay);
    tracing::info!(gateway = %gateway, "sharing session ownership and command routing through NATS");
    Ok(Cluster { gateway, ownership })
}
