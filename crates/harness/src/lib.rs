//! wsingest-harness: real processes on free ports, for the tests and for
//! `wsingest bench` / `wsingest compare` alike.
//!
//! # Two layers
//!
//! **The core** (always built; dependencies: tokio, libc, thiserror) starts
//! and watches processes and returns [`StartError`]s, never panics:
//!
//! - [`child`]: [`Service`], a child in a process group of its own with its
//!   log file, killed with its whole group (`killpg`) on drop and when this
//!   process dies (`PR_SET_PDEATHSIG`); its RSS and CPU from /proc.
//! - [`ready`]: [`free_port`], [`wait_ready`] (poll a TCP or HTTP probe with a
//!   deadline, fail fast when the service exits or logs "address already in
//!   use", and believe a probe only when /proc shows the listener in the
//!   service's own process group), [`retry_if_port_taken`] (once more on new
//!   ports, for the free-port race).
//! - [`daemons`]: influxd, mosquitto and `wsingest serve`, configured the
//!   same for the tests and the benchmarks.
//! - [`nats`]: a `nats-server` cluster with JetStream (queue mode), whose
//!   nodes can be killed and restarted on the same ports and store.
//! - [`run`]: [`output_within`], a command run to completion under a
//!   deadline, killed with all its descendants when late.
//!
//! `wsingest-tools` (and so the release binary, for `wsingest bench`)
//! depends on the core only.
//!
//! **The `testing` feature** (enabled by the root package's
//! dev-dependency, so only the tests in tests/ build it) adds the test
//! conveniences on top of the core, panicking as test helpers do:
//! [`services`] (influxd with query helpers, VictoriaMetrics, mosquitto with
//! TLS, nginx), [`process`] (a `wsingest serve` child to kill -9), an
//! in-process [`TestServer`] and WebSocket helpers, [`eventually`], MQTT,
//! TLS and device clients, headless Chromium.

pub mod child;
pub mod daemons;
pub mod error;
pub mod nats;
pub mod ready;
pub mod run;

pub use child::{Service, cpu_secs_of_pid, find_binary, self_cpu_secs};
pub use error::StartError;
pub use nats::{NatsCluster, NatsNode};
pub use ready::{Probe, free_port as pick_free_port, retry_if_port_taken, wait_ready};
pub use run::{kill_tree, output_within};

#[cfg(feature = "testing")]
pub mod browser;
#[cfg(feature = "testing")]
pub mod devices;
#[cfg(feature = "testing")]
pub mod mqtt;
#[cfg(feature = "testing")]
pub mod process;
#[cfg(feature = "testing")]
pub mod security;
#[cfg(feature = "testing")]
pub mod services;
#[cfg(feature = "testing")]
mod testing;

#[cfg(feature = "testing")]
pub use mqtt::MqttProbe;
#[cfg(feature = "testing")]
pub use services::{Influxd, Mosquitto, Nginx, VictoriaMetrics, free_port};
#[cfg(feature = "testing")]
pub use testing::*;
