//! wsingest-proto: the wire protocol of wsingest, shared by the server, the
//! device SDK, the simulator and the fuzzers. No I/O, no async runtime.
//!
//! - [`decode`]: JSON, CBOR and SenML messages into validated [`point::Point`]s,
//!   or a [`decode::DecodeError`] that becomes a nack.
//! - [`protocol`]: subprotocol names and downlink messages (ack, nack, command).
//! - [`lineproto`]: InfluxDB line protocol validation and encoding.
//! - [`point`]: the point model every decoder produces and every sink consumes.
//! - [`backoff`]: the one backoff (exponential, jittered) of devices, writer and bridge.
//! - [`clock`]: a nanosecond of its own for every point the server stamps.

pub mod backoff;
pub mod clock;
pub mod decode;
pub mod format;
pub mod lineproto;
pub mod point;
pub mod protocol;
