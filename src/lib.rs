//! wsingest: IoT telemetry ingestion over WebSockets into InfluxDB.
//!
//! # Layout
//!
//! ```text
//! device --ws--> server (handshake) --> session --decode--> pipeline --> batch --> sink --> InfluxDB
//!                                          ^                                  |
//!                                          +------ acks / nacks <-------------+
//! ```
//!
//! - [`server`]: accept loop, HTTP routes, WebSocket handshake; [`server::run`]
//!   is the entry point the binary and the tests share.
//! - [`conn`]: one connection: TLS, hyper, the handshake deadline (slowloris).
//! - [`session`]: one device session (read, decode, enqueue, ack, ping, close).
//! - [`http_ingest`]: the HTTP fallback, `POST /v1/devices/{id}/points`;
//!   [`grpc`]: bidirectional streaming ingest (tonic codegen, our hyper);
//!   [`ingest`]: decode-and-enqueue shared by both.
//! - [`protocol`]: subprotocols and downlink messages (ack, nack, command).
//! - [`decode`]: JSON and CBOR messages into validated [`point::Point`]s.
//! - [`lineproto`]: InfluxDB line protocol validation and encoding.
//! - [`pipeline`]: bounded queue and batcher task; [`batch`]: the batcher's logic.
//! - [`sink`]: the InfluxDB writer, retries, dead-letter file, and the disk
//!   spool (`sink::spool`) for batches InfluxDB cannot take.
//! - [`dedupe`]: resent messages without `ts` are not written twice;
//!   [`clock`]: a nanosecond of its own for every point the server stamps.
//! - [`mqtt`]: the MQTT bridge (points out, commands in); [`commands`]: the
//!   device→session registry, command routing and the HTTP command API.
//! - [`config`] and [`cli`]: the TOML file and the flags over it.
//! - [`auth`]: device registry (hashed tokens), handshake auth, `wsingest device`.
//! - [`limits`]: per-device sessions, rate limits, cardinality guard, their metrics.
//! - [`shutdown`], [`tls`]: signals, rustls (ring) provider and the wss acceptor.
//! - [`bench`]: `wsingest bench`, performance scenarios with reference runs.
//! - [`compare`]: `wsingest compare`, one workload over WebSocket, MQTT,
//!   HTTP/1.1, HTTP/2 and gRPC, measured the same way.
//! - Observability: [`metrics`] (Prometheus, `GET /metrics`), [`fleet`]
//!   (per-device live counters), [`stats`] (`wsingest_device`/`wsingest_stats`
//!   written to InfluxDB), [`live`] (the live web view at `GET /live`).

pub mod auth;
pub mod batch;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod compare;
pub mod config;
pub mod conn;
pub mod decode;
pub mod dedupe;
pub mod fleet;
pub mod grpc;
pub mod http_ingest;
pub mod ingest;
pub mod limits;
pub mod lineproto;
pub mod live;
pub mod metrics;
pub mod mqtt;
pub mod pipeline;
pub mod point;
pub mod protocol;
pub mod refusal_log;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod simulate;
pub mod sink;
pub mod stats;
pub mod tls;
