//! A session's end of the [`Router`]: the commands for its device, and the
//! way back for deliveries and results.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Command, Router, queue};

/// A session's end of the router: its command queue and registration.
/// Dropping it unregisters the session and reroutes what it did not write.
pub struct SessionCommands {
    pub(super) rx: queue::Receiver,
    pub(super) router: Arc<Router>,
    pub(super) device: String,
    pub(super) id: u64,
}

impl SessionCommands {
    /// The next command for the device; `None` once a newer session of the
    /// device took over.
    pub async fn recv(&mut self) -> Option<Command> {
        loop {
            let cmd = self.rx.recv().await?;
            if cmd.expires_at > Instant::now() {
                return Some(*cmd);
            }
        }
    }

    /// A command already waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Command> {
        while let Some(cmd) = self.rx.try_recv() {
            if cmd.expires_at > Instant::now() {
                return Some(*cmd);
            }
        }
        None
    }

    /// The command was written to the device.
    pub fn delivered(&self, cmd: &Command) {
        self.router.delivered(&self.device, cmd);
    }

    /// The command could not be written (the session is ending).
    pub fn undelivered(&self, cmd: Command) {
        self.router.reroute(&self.device, cmd);
    }

    /// The device answered a command.
    pub fn result(&self, cmd: &str, ok: bool, detail: Option<String>) {
        self.router.local_result(&self.device, cmd, ok, detail);
    }
}

impl Drop for SessionCommands {
    fn drop(&mut self) {
        self.rx.close();
        let mut leftover = Vec::new();
        while let Some(cmd) = self.rx.try_recv() {
            leftover.push(*cmd);
        }
        self.router.unregister(&self.device, self.id, leftover);
    }
}
