//! Messages from the broker: commands for devices, and the results and
//! delivery notices other instances (or this one) published. All go to the
//! command router, which knows which devices have a session here.
//!
//! Called on the connection's task for each message: must not wait.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::config::Topics;
use super::payload::{self, CommandMessage, ResultMessage, StatusMessage};
use super::{RateLimited, Stats};
use crate::commands::{Origin, Router};

/// The id of a command message we could not read otherwise.
#[derive(serde::Deserialize)]
struct CmdOnly {
    cmd: Option<String>,
}

pub struct Downlink {
    topics: Topics,
    router: Arc<Router>,
    stats: Arc<Stats>,
    bad_log: RateLimited,
}

impl Downlink {
    pub fn new(topics: Topics, router: Arc<Router>, stats: Arc<Stats>) -> Downlink {
        Downlink {
            topics,
            router,
            stats,
            bad_log: RateLimited::new(Duration::from_secs(10)),
        }
    }

    pub fn handle(&self, topic: &str, body: &[u8]) {
        if let Some(device) = self.topics.command.match_device(topic) {
            self.stats.commands_received.fetch_add(1, Ordering::Relaxed);
            match payload::parse::<CommandMessage>(body) {
                Ok(m) => {
                    if let Err(e) = self.router.submit(
                        device,
                        m.cmd.clone(),
                        m.name,
                        m.args,
                        None,
                        Origin::Mqtt,
                    ) {
                        self.router
                            .refuse_if_local(device, Some(m.cmd), &e.to_string());
                    }
                }
                Err(e) => {
                    // Only the instance holding the device answers, so that N
                    // instances do not publish N refusals.
                    let cmd = payload::parse::<CmdOnly>(body).ok().and_then(|c| c.cmd);
                    self.router.refuse_if_local(
                        device,
                        cmd,
                        &format!("invalid command message: {e}"),
                    );
                    self.bad(topic, &e);
                }
            }
        } else if let Some(device) = self.topics.result.match_device(topic) {
            match payload::parse::<ResultMessage>(body) {
                Ok(m) => self.router.remote_result(device, &m.cmd, m.ok, m.detail),
                Err(e) => self.bad(topic, &e),
            }
        } else if let Some(device) = self.topics.status.match_device(topic) {
            match payload::parse::<StatusMessage>(body) {
                Ok(m) => self
                    .router
                    .remote_status(device, &m.cmd, m.status, m.detail),
                Err(e) => self.bad(topic, &e),
            }
        } else {
            tracing::debug!(topic, "message on a topic we did not subscribe to");
        }
    }

    fn bad(&self, topic: &str, error: &str) {
        if let Some(count) = self.bad_log.hit(1) {
            tracing::warn!(
                topic,
                error,
                count,
                "ignored an invalid message from the MQTT broker"
            );
        }
    }
}
