//! Why the server ends a session, and the one map from that to a WebSocket
//! close code and reason.

use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Why the server ends a session: the one place that picks a close code.
#[derive(Debug, Clone)]
pub(super) enum SessionError {
    /// The server is shutting down (1001).
    ShuttingDown,
    /// Pipeline full or no acks for too long (1013).
    Overloaded,
    /// A frame the protocol does not allow (1002).
    Protocol(String),
    /// Too many invalid messages in a row, or a text frame that is not UTF-8 (1007).
    Invalid(String),
    /// A message over the size limit (1009).
    TooBig(String),
    /// Token revoked, session replaced, rate-limit abuse (1008 or the kick's code).
    Policy { code: u16, reason: String },
    /// Nothing from the device for the idle timeout (1000).
    Idle,
}

impl SessionError {
    pub(super) fn close_code(&self) -> CloseCode {
        match self {
            SessionError::ShuttingDown => CloseCode::Away,
            SessionError::Overloaded => CloseCode::Again,
            SessionError::Protocol(_) => CloseCode::Protocol,
            SessionError::Invalid(_) => CloseCode::Invalid,
            SessionError::TooBig(_) => CloseCode::Size,
            SessionError::Policy { code, .. } => CloseCode::from(*code),
            SessionError::Idle => CloseCode::Normal,
        }
    }

    pub(super) fn reason(&self) -> String {
        match self {
            SessionError::ShuttingDown => "server shutting down".into(),
            SessionError::Overloaded => "server overloaded, try again later".into(),
            SessionError::Idle => "idle timeout".into(),
            SessionError::Protocol(r)
            | SessionError::Invalid(r)
            | SessionError::TooBig(r)
            | SessionError::Policy { reason: r, .. } => r.clone(),
        }
    }

    /// The close we answer a read error with; `None` when the connection is
    /// gone and nothing can be sent.
    pub(super) fn from_read(e: &WsError) -> Option<SessionError> {
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                Some(SessionError::TooBig(format!(
                    "message of {size} bytes is over the limit of {max_size}"
                )))
            }
            WsError::Capacity(c) => Some(SessionError::TooBig(c.to_string())),
            WsError::Utf8(_) => Some(SessionError::Invalid(
                "text frame is not valid UTF-8".into(),
            )),
            // The connection is gone: nothing to answer, and not our close.
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
            WsError::Protocol(p) => Some(SessionError::Protocol(p.to_string())),
            _ => None,
        }
    }
}
