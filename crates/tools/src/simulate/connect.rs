//! Opening a device's WebSocket: the SDK's ([`wsingest_device::connect`]):
//! the target resolved once for the fleet, a chosen source address per
//! device, the handshake with subprotocol and token, bytes counted.

pub use wsingest_device::connect::*;
