//! `wsingest-device`: the device side of the wsingest protocol, on tokio.
//!
//! A device keeps one WebSocket to `ws://HOST:8765/v1/devices/{id}` (or
//! `wss://`, rustls: system roots plus `ClientConfig::ca_file`), sends
//! telemetry with a per-message `seq` and gets `{"ack": seq}` once the points
//! are durable (in InfluxDB or the server's fsynced spool). This crate keeps
//! the rules that make "never lose a point" true (docs/devices.md):
//!
//! - every message gets a `seq`; `ts` is stamped when the point is taken
//!   (never at resend, never the same millisecond twice) and the encoded
//!   bytes are kept until the ack;
//! - a bounded window of messages in flight, a bounded buffer of messages
//!   held (in memory, optionally also on disk so a restarted process resends
//!   what was never acked); when the buffer is full `send` waits and
//!   `try_send` fails;
//! - after a reconnect (exponential backoff with jitter) everything unacked
//!   goes out again, oldest first, with the same bytes;
//! - close 1013 and transient nacks (`storage_unavailable`, `rate_limited`,
//!   ...) back off and retry; 1008 or HTTP 401/403 stop the client with an
//!   [`AuthError`]; permanent nacks and 1009 (`too_large`) reach the caller
//!   with their reason ([`Failure`]);
//! - downlink commands go to a handler whose answer is sent as `cmd_result`.
//!
//! ```no_run
//! use std::time::Duration;
//! use wsingest_device::{Buffer, Client, ClientConfig, Encoding, Error, Point};
//!
//! # async fn demo() -> Result<(), Error> {
//! let mut config = ClientConfig::new("meter-7");
//! config.token = Some("wsi_...".into());
//! config.encoding = Encoding::Cbor;
//! config.buffer = Buffer::Disk("/var/lib/meter/wsingest".into());
//! let client = Client::connect("ws://127.0.0.1:8765", config).await?;
//! client.on_command(|cmd| match cmd.name.as_str() {
//!     "set_interval" => Ok(()),
//!     other => Err(format!("unknown command {other}")),
//! });
//! client.send(Point::new("power").tag("phase", "L1").field("watts", 230.5)).await?;
//! match client.flush(Duration::from_secs(60)).await {
//!     Ok(()) => {}
//!     Err(Error::DeliveryFailed(failures)) => {
//!         for f in failures {
//!             eprintln!("refused: seq {} {} ({})", f.seq, f.error, f.detail);
//!         }
//!     }
//!     Err(e) => return Err(e),
//! }
//! println!("{:?}", client.stats());
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! Layout: sans-IO and unit-tested alone: [`wire`] (encodings, downlink
//! parsing, command results), [`point`] (the telemetry message),
//! [`outbox`] (seq window, resend, answers: the rules), [`timing`] (backoff,
//! clock), [`disk`] (the on-disk buffer, the Python/Node clients' format).
//! With IO: [`connect`] (target, handshake, token, subprotocol), the
//! [`Client`] and its session task. `wsingest simulate` drives the same
//! outbox, wire and connect code for every simulated device.

pub mod client;
pub mod connect;
pub mod disk;
pub mod error;
pub mod outbox;
pub mod point;
mod session;
pub mod timing;
pub mod wire;

pub use client::{Buffer, Client, ClientConfig, Command, Stats};
pub use error::{AuthError, Error};
pub use outbox::{Failure, Outbox, OutboxConfig};
pub use point::{FieldValue, Point};
pub use wire::Encoding;
