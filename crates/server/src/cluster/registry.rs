//! The device registry in a JetStream KV bucket (`auth.registry =
//! "nats-kv"`), shared by every gateway.
//!
//! One key per device ([`super::keys`]), its value the same record the
//! registry file holds, as JSON: the SHA-256 of the token, never the token.
//! `wsingest device add|revoke|rotate --nats-url` change one key with
//! optimistic concurrency (create, or update at the revision read), so two
//! operators cannot lose each other's edits; that replaces the file's lock.
//!
//! A gateway loads the whole bucket before it serves (it has no registry
//! otherwise) and then follows it with a watch: each change is applied to
//! its copy, the copy is swapped into [`Auth`] once the watch has nothing
//! more ready, and `on_change` closes the sessions whose token stopped
//! working, through the same path as a file reload. When NATS is
//! unreachable the last copy stays in force (logged once), and the whole
//! bucket is read again when it is back, so no change made meanwhile is
//! missed.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::ClusterError;
use super::keys::{device_key, key_device};
use super::lag::{Lag, check_timer, head, refollow_backoff};
use crate::auth::registry::DeviceRecord;
use crate::auth::{Auth, DevicePolicy, Registry, RegistryError, Token};

/// How long the initial load may wait for the next entry.
const LOAD_STEP: Duration = Duration::from_secs(10);

/// A handle on the registry bucket.
#[derive(Clone)]
pub struct KvRegistry {
    store: kv::Store,
    bucket: String,
}

impl KvRegistry {
    /// Open the bucket, creating it (with `replicas`) when it does not exist
    /// (waiting up to `startup` for a forming cluster).
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
        startup: Duration,
    ) -> Result<KvRegistry, ClusterError> {
        let store = super::open_bucket(
            js,
            super::BucketSpec {
                name: bucket,
                description: "wsingest device registry (managed by `wsingest device`)",
                // A few past versions of each device, for audit.
                history: 5,
                max_age: Duration::ZERO,
                replicas,
                startup,
            },
        )
        .await?;
        Ok(KvRegistry {
            store,
            bucket: bucket.into(),
        })
    }

    fn kv_error(&self, key: &str, e: impl std::fmt::Display) -> ClusterError {
        ClusterError::Kv {
            bucket: self.bucket.clone(),
            key: key.into(),
            detail: e.to_string(),
        }
    }

    /// The record of `id` and its revision.
    async fn record(&self, id: &str) -> Result<(DeviceRecord, u64), ClusterError> {
        let key = device_key(id);
        let entry = self
            .store
            .entry(key.as_str())
            .await
            .map_err(|e| self.kv_error(&key, e))?
            .filter(|e| e.operation == kv::Operation::Put)
            .ok_or_else(|| RegistryError::NotFound(id.into()))?;
        let record = parse_record(&key, &entry.value).map_err(|detail| ClusterError::Record {
            bucket: self.bucket.clone(),
            detail,
        })?;
        Ok((record, entry.revision))
    }

    /// Register `id`; returns its token (shown once).
    pub async fn add(
        &self,
        id: &str,
        profile: Option<String>,
        policy: DevicePolicy,
    ) -> Result<Token, ClusterError> {
        let mut one = Registry::default();
        let token = one.add(id, profile, policy)?;
        let record = one.get(id).expect("just added").clone();
        let key = device_key(id);
        match self.store.create(key.as_str(), to_json(&record)).await {
            Ok(_) => Ok(token),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(RegistryError::Exists(id.into()).into())
            }
            Err(e) => Err(self.kv_error(&key, e)),
        }
    }

    /// Disable `id`: its token stops working on every gateway.
    pub async fn revoke(&self, id: &str) -> Result<(), ClusterError> {
        self.change(id, |one| one.revoke(id)).await.map(|_| ())
    }

    /// Give `id` a new token (returned, shown once) and enable it again.
    pub async fn rotate(&self, id: &str) -> Result<Token, ClusterError> {
        let mut token = None;
        self.change(id, |one| {
            token = Some(one.rotate(id)?);
            Ok(())
        })
        .await?;
        Ok(token.expect("set by the change"))
    }

    /// Read `id`, apply `f` to it, and write it back unless another command
    /// changed it in between (then [`ClusterError::Conflict`]).
    async fn change(
        &self,
        id: &str,
        f: impl FnOnce(&mut Registry) -> Result<(), RegistryError>,
    ) -> Result<u64, ClusterError> {
        let (record, revision) = self.record(id).await?;
        let mut one = Registry::default();
        one.upsert(record).map_err(|detail| ClusterError::Record {
            bucket: self.bucket.clone(),
            detail,
        })?;
        f(&mut one)?;
        let record = one.get(id).expect("still there");
        let key = device_key(id);
        match self
            .store
            .update(key.as_str(), to_json(record), revision)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(ClusterError::Conflict(id.into()))
            }
            Err(e) => Err(self.kv_error(&key, e)),
        }
    }

    /// The whole registry as it is now, and a watch that continues from it.
    pub async fn load(&self) -> Result<Loaded, ClusterError> {
        let bucket_err = |e: &dyn std::fmt::Display| ClusterError::Bucket {
            bucket: self.bucket.clone(),
            detail: e.to_string(),
        };
        let mut watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| bucket_err(&e))?;
        let status = self.store.status().await.map_err(|e| bucket_err(&e))?;
        let mut registry = Registry::default();
        let mut revision = status.info.state.last_sequence;
        if status.values() > 0 {
            revision = 0;
            loop {
                let entry = match tokio::time::timeout(LOAD_STEP, watch.next()).await {
                    Ok(Some(Ok(e))) => e,
                    Ok(Some(Err(e))) => return Err(bucket_err(&e)),
                    Ok(None) => return Err(bucket_err(&"the watch ended")),
                    Err(_) => return Err(bucket_err(&"no answer within 10 s")),
                };
                apply(&mut registry, &self.bucket, &entry);
                revision = revision.max(entry.revision);
                if entry.delta == 0 {
                    break;
                }
            }
        }
        Ok(Loaded {
            registry,
            revision,
            watch,
        })
    }
}

/// The registry as read from the bucket, and how to follow it.
pub struct Loaded {
    pub registry: Registry,
    /// The newest revision applied.
    pub revision: u64,
    pub watch: kv::Watch,
}

fn to_json(record: &DeviceRecord) -> bytes::Bytes {
    serde_json::to_vec(record)
        .expect("record serializes")
        .into()
}

fn parse_record(key: &str, value: &[u8]) -> Result<DeviceRecord, String> {
    let record: DeviceRecord =
        serde_json::from_slice(value).map_err(|e| format!("key {key:?}: {e}"))?;
    if key_device(key).as_deref() != Some(record.id.as_str()) {
        return Err(format!(
            "key {key:?} holds the record of device {:?}",
            record.id
        ));
    }
    Ok(record)
}

/// Apply one KV entry to `registry`. A record that does not parse is logged
/// and skipped: one bad key must not lock every device out.
pub fn apply(registry: &mut Registry, bucket: &str, entry: &kv::Entry) {
    let Some(id) = key_device(&entry.key) else {
        tracing::warn!(bucket, key = %entry.key, "ignoring a key that is not a device id written by wsingest");
        return;
    };
    match entry.operation {
        kv::Operation::Put => {
            if let Err(detail) =
                parse_record(&entry.key, &entry.value).and_then(|r| registry.upsert(r))
            {
                tracing::error!(bucket, device = %id, detail, "ignoring an invalid device record; fix it with `wsingest device rotate`");
            }
        }
        kv::Operation::Delete | kv::Operation::Purge => registry.remove(&id),
    }
}

/// Follow the bucket from `loaded` until `shutdown`: swap each new version
/// into `auth`, then call `on_change`.
///
/// The watch is not trusted alone: once a second the bucket's newest
/// revision is compared with the newest applied, and a watch that stays
/// behind for two checks (one that failed without saying so, as after a
/// lost JetStream quorum) is replaced by a fresh read of the whole bucket.
/// So a change reaches every gateway within about two seconds of NATS
/// answering again, even when the watch does not recover by itself.
pub fn spawn<F>(
    kv: KvRegistry,
    auth: Arc<Auth>,
    loaded: Loaded,
    shutdown: CancellationToken,
    on_change: F,
) where
    F: Fn(&Registry) + Send + 'static,
{
    tokio::spawn(async move {
        let Loaded {
            mut registry,
            mut revision,
            mut watch,
        } = loaded;
        let mut backoff = refollow_backoff();
        let mut check = check_timer();
        loop {
            // Follow until the watch fails or falls behind.
            let mut held = None;
            let mut lag = Lag::default();
            loop {
                let next = match held.take() {
                    Some(n) => n,
                    None => tokio::select! {
                        _ = shutdown.cancelled() => return,
                        n = watch.next() => n,
                        _ = check.tick() => {
                            if lag.fell_behind(head(&kv.store).await, revision) {
                                tracing::warn!(bucket = %kv.bucket, "the device registry watch fell behind the bucket; reading it again");
                                break;
                            }
                            continue;
                        }
                    },
                };
                let entry = match next {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => {
                        tracing::warn!(bucket = %kv.bucket, error = %e, "lost the device registry watch; keeping the registry as it is until NATS answers again");
                        break;
                    }
                    None => {
                        tracing::warn!(bucket = %kv.bucket, "the device registry watch ended; keeping the registry as it is until NATS answers again");
                        break;
                    }
                };
                apply(&mut registry, &kv.bucket, &entry);
                revision = revision.max(entry.revision);
                // A burst of changes (a bulk revoke) costs one swap.
                let mut more = 0;
                while let Some(n) = watch.next().now_or_never() {
                    match n {
                        Some(Ok(e)) => {
                            apply(&mut registry, &kv.bucket, &e);
                            revision = revision.max(e.revision);
                        }
                        // Swap in what came before it, then handle it.
                        failed => {
                            held = Some(failed);
                            break;
                        }
                    }
                    more += 1;
                }
                tracing::info!(bucket = %kv.bucket, changes = more + 1, devices = registry.len(), "device registry changed");
                auth.replace(registry.clone());
                on_change(&auth.registry());
                backoff.reset();
            }
            // Read it all again: deletions made meanwhile are only in the
            // absence of their keys.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next(None)) => {}
                }
                match kv.load().await {
                    Ok(l) => {
                        tracing::info!(bucket = %kv.bucket, devices = l.registry.len(), "device registry read again from NATS");
                        (registry, revision, watch) = (l.registry, l.revision, l.watch);
                        auth.replace(registry.clone());
                        on_change(&auth.registry());
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "device registry still unreachable"),
                }
            }
        }
    });
}
