//! What can go wrong when starting a service, with enough of its log to act on.

use std::process::ExitStatus;

/// Why a service did not start (or a command did not finish).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "`{name}` is not installed: run `sudo apt-get install -y {package}` or scripts/install.sh"
    )]
    Missing { name: String, package: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Another process holds a port we picked (the free-port race), or the
    /// service could not bind it.
    #[error("{name}: port {port} is taken by another process; the end of its log:\n{log}")]
    PortTaken {
        name: String,
        port: u16,
        log: String,
    },
    #[error("{name} exited ({status}) before it was ready; the end of its log:\n{log}")]
    Exited {
        name: String,
        status: ExitStatus,
        log: String,
    },
    #[error("{name} was not ready ({what}) within {secs} s; the end of its log:\n{log}")]
    Timeout {
        name: String,
        what: String,
        secs: u64,
        log: String,
    },
    #[error(
        "{name} did not finish within {secs} s and was killed; the end of its stderr:\n{stderr}"
    )]
    Late {
        name: String,
        secs: u64,
        stderr: String,
    },
}

impl StartError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
        let what = what.into();
        move |source| StartError::Io { what, source }
    }
}
