//! `wsingest simulate`: a fleet of simulated devices streaming telemetry to a
//! wsingest server, as real devices would: own session and token, `seq`
//! numbers, a window of unacknowledged messages resent after a reconnect
//! (with their original timestamps, so InfluxDB's overwrite makes resends
//! idempotent), reconnects with exponential backoff and jitter, answers to
//! commands, and optional fault injection. Also the load generator of the
//! benchmarks and fault tests, so it counts honestly and reports its own CPU.
//!
//! Sans-IO parts, unit-tested alone:
//! - [`profile`]: device profiles, the TOML files in `devices/`.
//! - [`fields`]: how field values evolve (random walk, sine, counter, enum, path).
//! - [`message`]: telemetry, faulty messages and command results on the wire;
//!   parsing acks, nacks and commands.
//! - [`state`]: a device's seq numbers, unacked window, resends, commands.
//! - [`timing`]: send schedule, reconnect backoff, the device clock.
//! - [`faults`]: what to spoil and when to drop the connection.
//! - [`tokens`]: the device id → token file.
//!
//! With IO:
//! - [`connect`]: TCP (from chosen source addresses) + WebSocket handshake.
//! - [`device`]: one device's session loop.
//! - [`fleet`]: runs all devices, gathers the [`report::Report`].
//! - [`stats`]: live counters, ack latency histogram, CPU time.
//! - [`cli`]: flags, progress bar, summary.

pub mod cli;
pub mod connect;
pub mod device;
pub mod faults;
pub mod fields;
pub mod fleet;
pub mod message;
pub mod profile;
pub mod report;
pub mod state;
pub mod stats;
pub mod timing;
pub mod tokens;

pub use fleet::{Fleet, FleetConfig};
pub use report::Report;

/// Why `wsingest simulate` could not run (or its numbers do not add up).
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error(transparent)]
    Tokens(#[from] tokens::TokenError),
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
    #[error("{0}")]
    Invalid(String),
    #[error("the run's numbers do not add up: {0}")]
    Inconsistent(String),
    #[error("{0}")]
    NothingSent(String),
}
