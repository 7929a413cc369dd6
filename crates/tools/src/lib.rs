//! wsingest-tools: the commands that drive a server from outside, as devices
//! and operators would.
//!
//! - [`simulate`]: `wsingest simulate`, fleets of simulated devices.
//! - [`bench`]: `wsingest bench`, performance scenarios with reference runs.
//! - [`dashboards`]: `wsingest dashboards check|render`, the Grafana
//!   dashboards' queries run and drawn without Grafana.
//! - [`compare`]: `wsingest compare`, one workload over WebSocket, MQTT,
//!   HTTP/1.1, HTTP/2 and gRPC, measured the same way.

pub mod bench;
pub mod compare;
pub mod dashboards;
pub mod simulate;
