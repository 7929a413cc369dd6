//! wsingest-server: the ingest service. Devices' frames, requests and streams
//! become points in InfluxDB, acked once durable.
//!
//! # Layout
//!
//! ```text
//! device --ws/http/grpc--> transport --> ingest --> pipeline --> batch --> sink --> InfluxDB
//!                              ^                                             |  +--> spool
//!                              +------------- acks / nacks <-----------------+
//! ```
//!
//! The message model, codecs and line protocol are `wsingest_proto`'s; this
//! crate adds everything with I/O.
//!
//! - [`server`]: app wiring, accept loop, HTTP routes, WebSocket handshake;
//!   [`server::run`] is the entry point the binary and the tests share.
//! - [`conn`]: one connection: TLS, hyper, the handshake deadline (slowloris).
//! - Transports: [`session`] (one WebSocket device session), [`http_ingest`]
//!   (`POST /v1/devices/{id}/points`), [`grpc`] (bidirectional streaming);
//!   [`ingest`]: decode-and-enqueue shared by them.
//! - [`pipeline`]: bounded queue and batcher task; [`batch`]: the batcher's logic;
//!   [`entry`]: one message in the pipeline and its way back ([`entry::Reply`]).
//! - [`sink`]: the InfluxDB writer, retries, dead-letter file, and the disk
//!   spool (`sink::spool`) for batches InfluxDB cannot take.
//! - [`queue`]: queue mode, NATS JetStream between gateways and writers.
//! - [`dedupe`]: resent messages without `ts` are not written twice.
//! - [`mqtt`]: the MQTT bridge (points out, commands in); [`commands`]: the
//!   device→session registry, command routing and the HTTP command API.
//! - [`config`]: the TOML file, assembled from the sections that live with
//!   their modules; [`setting`]: what the sections share (errors, secrets).
//! - [`auth`]: device registry (hashed tokens), handshake auth, `wsingest device`.
//! - [`limits`]: per-device sessions, rate limits, cardinality guard, their metrics.
//! - [`cluster`]: what gateways share through NATS: the registry in KV,
//!   session ownership across gateways, command routing between them.
//! - [`shutdown`], [`tls`]: signals, rustls (ring) provider and the wss acceptor.
//! - Observability: [`metrics`] (Prometheus, `GET /metrics`), [`fleet`]
//!   (per-device live counters), [`stats`] (`wsingest_device`/`wsingest_stats`
//!   written to InfluxDB), [`live`] (the live web view at `GET /live`),
//!   [`refusal_log`] (refused requests' log lines, summarised under a flood).

pub mod auth;
pub mod batch;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod conn;
pub mod dedupe;
pub mod entry;
pub mod fleet;
pub mod formats;
pub mod grpc;
pub mod http;
pub mod http_ingest;
pub mod ingest;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod mqtt;
pub mod pipeline;
pub mod queue;
pub mod refusal_log;
pub mod server;
pub mod session;
pub mod setting;
pub mod shutdown;
pub mod sink;
pub mod stats;
pub mod tls;
