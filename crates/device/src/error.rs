//! The errors of the client, typed.

use std::path::PathBuf;
use std::time::Duration;

use crate::connect::TargetError;
use crate::outbox::Failure;

/// The server refused this device: HTTP 401/403 at the handshake, or the
/// session closed with 1008 (token revoked or rotated, policy). The client
/// stops for good; the disk buffer (if any) keeps what was unacked for a
/// process started later with a valid token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub message: String,
    /// The HTTP status of a refused handshake (401, 403).
    pub status: Option<u16>,
    /// The close code (1008).
    pub close_code: Option<u16>,
    /// The server's reason (response body or close reason).
    pub reason: String,
}

/// Everything the client's calls can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Messages refused for good since the last `flush` (returned by
    /// `flush` when no `on_failure` callback is set), each with its reason.
    #[error("{} message(s) refused by the server: {}", .0.len(), summary(.0))]
    DeliveryFailed(Vec<Failure>),
    /// `try_send` while the buffer is full: nothing was taken.
    #[error("{held} unacked messages held (max_buffered): nothing taken")]
    BufferFull { held: usize },
    /// The encoded message is over `max_message_bytes`: nothing was taken.
    #[error("message of {size} bytes is over max_message_bytes = {max}")]
    TooLarge { size: usize, max: usize },
    /// A point the server would refuse (no fields, NaN, ...): nothing taken.
    #[error("invalid point: {0}")]
    InvalidPoint(String),
    #[error("flush: {unacked} message(s) still unacked after {timeout:?}")]
    Timeout { unacked: usize, timeout: Duration },
    #[error("the client is closed")]
    Closed,
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("disk buffer {path}: {source}")]
    Disk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Target(#[from] TargetError),
}

fn summary(failures: &[Failure]) -> String {
    let mut s: Vec<String> = failures
        .iter()
        .take(5)
        .map(|f| format!("seq {}: {} ({})", f.seq, f.error, f.detail))
        .collect();
    if failures.len() > 5 {
        s.push(format!("and {} more", failures.len() - 5));
    }
    s.join(", ")
}
