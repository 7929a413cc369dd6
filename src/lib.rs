//! The `wsingest` command line (the binary is `src/main.rs`): what each
//! subcommand takes. The service itself is `wsingest_server`, the protocol
//! `wsingest_proto`, the simulator and benchmarks `wsingest_tools`; see
//! ARCHITECTURE.md.

pub mod cli;
