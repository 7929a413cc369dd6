//! Command routing between gateways over NATS (core subjects, no stream):
//! a command sent to any gateway's HTTP API reaches the device on the
//! gateway that holds it, and its statuses and result come back to the
//! caller's gateway, where `POST .../commands` waits on them as on one
//! instance.
//!
//! The router hands this relay what it would hand the MQTT bridge
//! ([`Outbound`]):
//! - a command for a device without a session here goes to the gateway the
//!   sessions bucket names (`<prefix>.commands.gw.<gateway>`), or, when no
//!   claim names another gateway, to every gateway
//!   (`<prefix>.commands.any`); a receiving gateway submits it to its
//!   router like a command from the broker (only the holder delivers it;
//!   with `commands.store`, the others keep it for the device's return);
//! - `delivered` notices and results go to every gateway
//!   (`<prefix>.commands.statuses`, `<prefix>.commands.results`); the one
//!   that tracks the command moves it on, the others ignore it.
//!
//! NATS core delivery is at most once: a command lost while NATS is down
//! stays `pending` at its caller and expires with its TTL, as one whose
//! broker message was lost does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::Client;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ClusterError;
use super::ownership::Ownership;
use crate::commands::{Command, Origin, Outbound, Router, Status};

/// The relay's queue from the router.
const QUEUE: usize = 1024;

/// The subjects of one deployment (`cluster.subject_prefix`).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Subjects {
        Subjects {
            prefix: prefix.into(),
        }
    }
    pub fn any(&self) -> String {
        format!("{}.commands.any", self.prefix)
    }
    pub fn gateway(&self, id: &str) -> String {
        format!("{}.commands.gw.{id}", self.prefix)
    }
    pub fn results(&self) -> String {
        format!("{}.commands.results", self.prefix)
    }
    pub fn statuses(&self) -> String {
        format!("{}.commands.statuses", self.prefix)
    }
}

/// A command between gateways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandNote {
    pub device: String,
    pub cmd: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
    /// Time left to live, so the receiver expires it when the caller does.
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultNote {
    pub device: String,
    pub cmd: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusNote {
    pub device: String,
    pub cmd: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl CommandNote {
    pub fn new(device: &str, c: &Command, now: Instant) -> CommandNote {
        CommandNote {
            device: device.into(),
            cmd: c.id.clone(),
            name: c.name.clone(),
            args: c.args.clone(),
            ttl_ms: c.expires_at.saturating_duration_since(now).as_millis() as u64,
        }
    }
}

/// Subscribe, start relaying until `shutdown`, and return the queue the
/// router sends to ([`Router::set_cluster`]).
pub async fn start(
    client: Client,
    ownership: Arc<Ownership>,
    router: Arc<Router>,
    subjects: Subjects,
    shutdown: CancellationToken,
) -> Result<mpsc::Sender<Outbound>, ClusterError> {
    let me = ownership.gateway().to_string();
    let mut subs = Vec::new();
    for s in [
        subjects.any(),
        subjects.gateway(&me),
        subjects.results(),
        subjects.statuses(),
    ] {
        subs.push(
            client
                .subscribe(s.clone())
                .await
                .map_err(|e| ClusterError::Subscribe {
                    subject: s,
                    detail: e.to_string(),
                })?,
        );
    }
    let mut incoming = futures_util::stream::select_all(subs);
    let (tx, rx) = mpsc::channel(QUEUE);
    let receiver = Receiver {
        router,
        subjects: subjects.clone(),
    };
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = incoming.next() => match m { Some(m) => m, None => return },
            };
            receiver.handle(&msg.subject, &msg.payload);
        }
    });
    let sender = Sender {
        client,
        ownership,
        subjects,
        failing: AtomicBool::new(false),
    };
    tokio::spawn(sender.run(rx, shutdown));
    Ok(tx)
}

/// What arrives from other gateways, handed to the router.
struct Receiver {
    router: Arc<Router>,
    subjects: Subjects,
}

impl Receiver {
    fn handle(&self, subject: &str, body: &[u8]) {
        if subject == self.subjects.results() {
            if let Ok(n) = serde_json::from_slice::<ResultNote>(body) {
                self.router.remote_result(&n.device, &n.cmd, n.ok, n.detail);
            }
        } else if subject == self.subjects.statuses() {
            if let Ok(n) = serde_json::from_slice::<StatusNote>(body) {
                self.router
                    .remote_status(&n.device, &n.cmd, n.status, n.detail);
            }
        } else {
            match serde_json::from_slice::<CommandNote>(body) {
                Ok(n) => {
                    if !crate::auth::valid_device_id(&n.device) {
                        return;
                    }
                    let ttl = Duration::from_millis(n.ttl_ms.max(1));
                    if let Err(e) = self.router.submit(
                        &n.device,
                        n.cmd.clone(),
                        n.name,
                        n.args,
                        Some(ttl),
                        Origin::Cluster,
                    ) {
                        self.router
                            .refuse_if_local(&n.device, Some(n.cmd), &e.to_string());
                    }
                }
                Err(e) => {
                    tracing::warn!(subject, error = %e, "ignored an invalid command from another gateway")
                }
            }
        }
    }
}

/// What the router hands over, published to the other gateways.
struct Sender {
    client: Client,
    ownership: Arc<Ownership>,
    subjects: Subjects,
    /// Set while publishing fails: logged once per outage.
    failing: AtomicBool,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Outbound>, stop: CancellationToken) {
        loop {
            let out = tokio::select! {
                _ = stop.cancelled() => return,
                o = rx.recv() => match o { Some(o) => o, None => return },
            };
            let (subject, body) = match out {
                Outbound::Command { device, command } => {
                    let note = CommandNote::new(&device, &command, Instant::now());
                    let subject = match self.ownership.owner_of(&device).await {
                        Some(o) if o.gateway != self.ownership.gateway() => {
                            self.subjects.gateway(&o.gateway)
                        }
                        _ => self.subjects.any(),
                    };
                    (subject, serde_json::to_vec(&note))
                }
                Outbound::Result {
                    device,
                    cmd,
                    ok,
                    detail,
                } => (
                    self.subjects.results(),
                    serde_json::to_vec(&ResultNote {
                        device,
                        cmd,
                        ok,
                        detail,
                    }),
                ),
                Outbound::Status {
                    device,
                    cmd,
                    status,
                    detail,
                } => (
                    self.subjects.statuses(),
                    serde_json::to_vec(&StatusNote {
                        device,
                        cmd,
                        status,
                        detail,
                    }),
                ),
            };
            let body = body.expect("notes serialize");
            match self.client.publish(subject, body.into()).await {
                Ok(()) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("relaying commands to other gateways again");
                    }
                }
                Err(e) => {
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "cannot relay commands to other gateways through NATS: commands for devices on other gateways stay pending until NATS answers");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_carry_the_time_left() {
        let now = Instant::now();
        let c = Command {
            id: "c-1".into(),
            name: "reboot".into(),
            args: Some(serde_json::json!({"in": 5})),
            expires_at: now + Duration::from_secs(30),
        };
        let n = CommandNote::new("d", &c, now);
        assert_eq!(n.ttl_ms, 30_000);
        let back: CommandNote = serde_json::from_slice(&serde_json::to_vec(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        let s = Subjects::new("wsingest");
        assert_eq!(s.gateway("gw-1"), "wsingest.commands.gw.gw-1");
        assert_ne!(s.any(), s.results());
    }
}
