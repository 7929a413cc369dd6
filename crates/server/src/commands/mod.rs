//! Commands to devices: the registry of device sessions on this instance and
//! the router that brings a command (from MQTT or the HTTP API) to the
//! session holding the device.
//!
//! - Each session registers a small command queue ([`Router::register`],
//!   [`queue`]: nothing allocated until a command comes);
//!   a newer session of the same device replaces the older one's.
//! - A command for a device with a session here goes down its channel; the
//!   session writes it in the device's encoding and reports `delivered`,
//!   and later the device's `cmd_result` (`done` or `failed`).
//! - A device with no session here: another instance behind the load
//!   balancer may hold it. HTTP commands are then published on the broker,
//!   which brings them to every instance. With `commands.store`, the last
//!   undelivered commands per device are kept (bounded, with a TTL) and
//!   delivered when the device connects; `delivered` notices on the broker
//!   make the other instances drop their copy.
//! - Statuses (`pending`, `delivered`, `done`, `failed`, `expired`) of recent
//!   commands are kept in a bounded [`tracker`], for the HTTP API.
//!
//! Nothing here waits on a device or the broker: channels are bounded and
//! used with `try_send`.

pub mod http;
mod queue;
mod session;
pub mod store;
pub mod tracker;

pub use session::SessionCommands;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use store::{Store, Stored};
use tracker::{Tracker, View};
use wsingest_proto::protocol::Downlink;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Keep undelivered commands and deliver them when the device connects.
    pub store: bool,
    /// Commands kept per device (the oldest goes first).
    pub store_per_device: usize,
    /// Devices with stored commands.
    pub store_max_devices: usize,
    /// A command not delivered within this time expires.
    pub ttl_secs: u64,
    /// How long `POST .../commands` waits for the device's answer by default
    /// (`?wait=` overrides it, up to 60 s).
    pub http_wait_secs: u64,
    /// Commands whose status can be asked for.
    pub track_max: usize,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            store: false,
            store_per_device: 16,
            store_max_devices: 100_000,
            ttl_secs: 300,
            http_wait_secs: 10,
            track_max: 10_000,
        }
    }
}

impl CommandsConfig {
    pub fn validate(&self) -> Result<(), crate::setting::ConfigError> {
        let invalid = |key, detail: &str| {
            Err(crate::setting::ConfigError::Invalid {
                key,
                detail: detail.into(),
            })
        };
        if self.store_per_device == 0 || self.store_per_device > 1000 {
            return invalid("commands.store_per_device", "must be between 1 and 1000");
        }
        if self.ttl_secs == 0 {
            return invalid("commands.ttl_secs", "must be at least 1");
        }
        if self.http_wait_secs > MAX_WAIT.as_secs() {
            return invalid("commands.http_wait_secs", "must be at most 60");
        }
        Ok(())
    }
}

/// Longest an HTTP caller may wait for a command's result.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Where a command is in its life. Only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Delivered,
    Done,
    Failed,
    Expired,
}

impl Status {
    fn rank(self) -> u8 {
        match self {
            Status::Pending => 0,
            Status::Delivered => 1,
            Status::Done | Status::Failed | Status::Expired => 2,
        }
    }

    /// `done`, `failed` or `expired`: nothing more will happen.
    pub fn is_final(self) -> bool {
        self.rank() == 2
    }
}

/// Where a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Mqtt,
    Http,
    /// Relayed by another gateway over NATS (`crate::cluster::commands`).
    Cluster,
}

/// A command as JSON: published on `devices/{device}/commands`, and listed
/// by the HTTP command API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandMessage {
    pub cmd: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
}

/// A command on its way to a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub name: String,
    pub args: Option<serde_json::Value>,
    pub expires_at: Instant,
}

impl Command {
    pub fn message(&self) -> CommandMessage {
        CommandMessage {
            cmd: self.id.clone(),
            name: self.name.clone(),
            args: self.args.clone(),
        }
    }

    /// The message the device receives.
    pub fn downlink(&self) -> Downlink {
        Downlink::Command {
            cmd: self.id.clone(),
            name: self.name.clone(),
            args: self.args.clone(),
        }
    }
}

/// What the router asks the MQTT bridge to publish.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// An HTTP command for a device that is not here: let the broker bring
    /// it to the instance that holds the device.
    Command { device: String, command: Command },
    Result {
        device: String,
        cmd: String,
        ok: bool,
        detail: Option<String>,
    },
    Status {
        device: String,
        cmd: String,
        status: Status,
        detail: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "device {0:?} has no session on this instance, and there is no MQTT bridge to reach other instances \
         nor a command store (commands.store) to keep the command until it connects"
    )]
    NotConnected(String),
    #[error("the command store is full; retry later")]
    StoreFull,
}

/// Commands a session may hold before the router stores or refuses more.
const SESSION_QUEUE: usize = 32;

struct Slot {
    id: u64,
    tx: queue::Sender,
}

struct Inner {
    sessions: HashMap<String, Slot>,
    store: Store,
    tracker: Tracker,
}

pub struct Router {
    config: CommandsConfig,
    inner: Mutex<Inner>,
    outbound: Option<mpsc::Sender<Outbound>>,
    /// The NATS relay between gateways, when there is one: it takes HTTP
    /// commands for devices not here (instead of the broker), and results
    /// and statuses (as well as the broker).
    cluster: OnceLock<mpsc::Sender<Outbound>>,
    next_session: AtomicU64,
}

impl Router {
    /// `outbound`: the MQTT bridge's control queue, if there is a bridge.
    pub fn new(config: CommandsConfig, outbound: Option<mpsc::Sender<Outbound>>) -> Router {
        let inner = Inner {
            sessions: HashMap::new(),
            store: Store::new(config.store_per_device, config.store_max_devices),
            tracker: Tracker::new(config.track_max),
        };
        Router {
            config,
            inner: Mutex::new(inner),
            outbound,
            cluster: OnceLock::new(),
            next_session: AtomicU64::new(1),
        }
    }

    /// Route through the NATS relay between gateways from now on (set once).
    pub fn set_cluster(&self, relay: mpsc::Sender<Outbound>) {
        let _ = self.cluster.set(relay);
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn has_bridge(&self) -> bool {
        self.outbound.is_some()
    }

    pub fn default_wait(&self) -> Duration {
        Duration::from_secs(self.config.http_wait_secs)
    }

    /// Devices with a session here.
    pub fn sessions(&self) -> usize {
        self.inner().sessions.len()
    }

    /// Register a device session; stored commands are queued to it at once.
    pub fn register(self: &Arc<Self>, device: &str) -> SessionCommands {
        let capacity = SESSION_QUEUE.max(self.config.store_per_device);
        let (tx, rx) = queue::queue(capacity);
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner();
        for cmd in inner.store.take(device, Instant::now()) {
            // Capacity covers the store's bound per device.
            let _ = tx.try_send(Box::new(cmd));
        }
        if inner
            .sessions
            .insert(device.to_string(), Slot { id, tx })
            .is_some()
        {
            tracing::info!(
                device,
                "a newer session of this device now receives its commands"
            );
        }
        SessionCommands {
            rx,
            router: self.clone(),
            device: device.to_string(),
            id,
        }
    }

    /// Register a long-poll (HTTP) receiver for `device`, unless a session
    /// already receives its commands (which must not lose them to a poll).
    pub fn register_poll(self: &Arc<Self>, device: &str) -> Option<SessionCommands> {
        if self.inner().sessions.contains_key(device) {
            return None;
        }
        Some(self.register(device))
    }

    fn unregister(&self, device: &str, id: u64, leftover: Vec<Command>) {
        {
            let mut inner = self.inner();
            if inner.sessions.get(device).is_some_and(|s| s.id == id) {
                inner.sessions.remove(device);
            }
        }
        for cmd in leftover {
            self.reroute(device, cmd);
        }
    }

    /// A command the session did not write: to a newer session, here or
    /// (through the NATS relay) on another gateway, the store, or failed.
    fn reroute(&self, device: &str, cmd: Command) {
        let mut inner = self.inner();
        let cmd = match inner.sessions.get(device) {
            Some(s) => match s.tx.try_send(Box::new(cmd)) {
                Ok(()) => return,
                Err(cmd) => *cmd,
            },
            None => cmd,
        };
        // A session closed because the device connected to another gateway
        // still held the command: follow the device there.
        let cmd = match self.cluster.get() {
            Some(relay) => match relay.try_send(Outbound::Command {
                device: device.to_string(),
                command: cmd,
            }) {
                Ok(()) => return,
                Err(e) => match e.into_inner() {
                    Outbound::Command { command, .. } => command,
                    _ => unreachable!("sent a command"),
                },
            },
            None => cmd,
        };
        let id = cmd.id.clone();
        if self.config.store && self.store(&mut inner, device, cmd) {
            return;
        }
        inner.tracker.update(
            device,
            &id,
            Status::Failed,
            None,
            Some("the device disconnected before delivery".into()),
        );
    }

    /// Store `cmd`; false when there was no room.
    fn store(&self, inner: &mut Inner, device: &str, cmd: Command) -> bool {
        match inner.store.push(device, cmd) {
            Stored::Kept | Stored::Duplicate => true,
            Stored::Replaced(old) => {
                let detail = Some("replaced in the store by newer commands".into());
                inner
                    .tracker
                    .update(device, &old, Status::Expired, None, detail);
                true
            }
            Stored::Full => false,
        }
    }

    /// Route a command to `device`. Returns its view (normally `pending`).
    pub fn submit(
        &self,
        device: &str,
        id: String,
        name: String,
        args: Option<serde_json::Value>,
        ttl: Option<Duration>,
        origin: Origin,
    ) -> Result<View, SubmitError> {
        check_text("cmd", &id)?;
        check_text("name", &name)?;
        let ttl = ttl.unwrap_or(Duration::from_secs(self.config.ttl_secs));
        let cmd = Command {
            id: id.clone(),
            name: name.clone(),
            args,
            expires_at: Instant::now() + ttl,
        };
        let mut inner = self.inner();
        match inner.tracker.get(device, &id) {
            // Already handled (a QoS 1 duplicate, or our own HTTP command
            // coming back from the broker after delivery).
            Some(v) if v.status != Status::Pending => return Ok(v),
            Some(_) => {}
            None => inner.tracker.insert(device, &id, &name, cmd.expires_at),
        }
        let view = |inner: &Inner| inner.tracker.get(device, &id).expect("tracked above");
        let cmd = match inner.sessions.get(device) {
            Some(s) => match s.tx.try_send(Box::new(cmd)) {
                Ok(()) => return Ok(view(&inner)),
                Err(cmd) => *cmd,
            },
            None => cmd,
        };
        let mut kept = false;
        // Another gateway may hold the device: the NATS relay finds it; the
        // broker is the way when there is no relay.
        if origin == Origin::Http
            && let Some(out) = self.cluster.get().or(self.outbound.as_ref())
        {
            kept = out
                .try_send(Outbound::Command {
                    device: device.to_string(),
                    command: cmd.clone(),
                })
                .is_ok();
        }
        if self.config.store {
            kept |= self.store(&mut inner, device, cmd);
        }
        match (kept, origin) {
            (true, _) => Ok(view(&inner)),
            // Not ours: another instance may hold the device. Its `delivered`
            // notice will move the status on.
            (false, Origin::Mqtt | Origin::Cluster) => Ok(view(&inner)),
            (false, Origin::Http) => {
                inner.tracker.remove(device, &id);
                if self.config.store {
                    Err(SubmitError::StoreFull)
                } else {
                    Err(SubmitError::NotConnected(device.to_string()))
                }
            }
        }
    }

    /// An invalid command for `device`: answered (as a failed result) only
    /// by the instance holding the device.
    pub fn refuse_if_local(&self, device: &str, cmd: Option<String>, detail: &str) {
        if !self.inner().sessions.contains_key(device) {
            return;
        }
        tracing::info!(device, cmd, detail, "refused a command");
        self.publish(Outbound::Result {
            device: device.to_string(),
            cmd: cmd.unwrap_or_default(),
            ok: false,
            detail: Some(detail.to_string()),
        });
    }

    fn delivered(&self, device: &str, cmd: &Command) {
        self.inner()
            .tracker
            .update(device, &cmd.id, Status::Delivered, None, None);
        self.publish(Outbound::Status {
            device: device.to_string(),
            cmd: cmd.id.clone(),
            status: Status::Delivered,
            detail: None,
        });
    }

    /// A device answered a command on its session here.
    pub fn local_result(&self, device: &str, cmd: &str, ok: bool, detail: Option<String>) {
        self.record_result(device, cmd, ok, detail.clone());
        self.publish(Outbound::Result {
            device: device.to_string(),
            cmd: cmd.to_string(),
            ok,
            detail,
        });
    }

    /// A result seen on the broker (from any instance, this one included).
    pub fn remote_result(&self, device: &str, cmd: &str, ok: bool, detail: Option<String>) {
        self.record_result(device, cmd, ok, detail);
    }

    fn record_result(&self, device: &str, cmd: &str, ok: bool, detail: Option<String>) {
        let mut inner = self.inner();
        inner.store.remove(device, cmd);
        let status = if ok { Status::Done } else { Status::Failed };
        inner.tracker.update(device, cmd, status, Some(ok), detail);
    }

    /// A status notice seen on the broker.
    pub fn remote_status(&self, device: &str, cmd: &str, status: Status, detail: Option<String>) {
        let mut inner = self.inner();
        if status != Status::Pending {
            inner.store.remove(device, cmd);
        }
        inner.tracker.update(device, cmd, status, None, detail);
    }

    pub fn status(&self, device: &str, cmd: &str) -> Option<View> {
        self.inner().tracker.get(device, cmd)
    }

    /// The command's view once final, or as it is after `wait`.
    pub async fn wait(&self, device: &str, cmd: &str, wait: Duration) -> Option<View> {
        let mut rx = self.inner().tracker.subscribe(device, cmd)?;
        let deadline = Instant::now() + wait;
        loop {
            let v = rx.borrow_and_update().clone();
            if v.status.is_final() {
                return Some(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                // Timed out, or forgotten by the tracker: report what we saw.
                _ => return Some(rx.borrow().clone()),
            }
        }
    }

    /// Expire old commands; call every second or so.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut inner = self.inner();
        inner.store.expire(now);
        for (device, cmd) in inner.tracker.expire(now) {
            tracing::info!(device, cmd, "command expired undelivered");
        }
    }

    fn publish(&self, msg: Outbound) {
        if let Some(relay) = self.cluster.get()
            && relay.try_send(msg.clone()).is_err()
        {
            tracing::warn!(
                "NATS command relay queue full: a command result or status was not relayed to the other gateways"
            );
        }
        if let Some(out) = &self.outbound
            && out.try_send(msg).is_err()
        {
            tracing::warn!("MQTT control queue full: a command result or status was not published");
        }
    }
}

fn check_text(what: &str, s: &str) -> Result<(), SubmitError> {
    if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
        return Err(SubmitError::Invalid(format!(
            "`{what}` must be 1 to 128 characters without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
