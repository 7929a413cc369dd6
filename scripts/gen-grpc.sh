#!/usr/bin/env bash
# Regenerate the gRPC code in crates/server/src/grpc/gen/ from proto/ (no protoc needed).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cargo run --quiet --manifest-path scripts/grpc-gen/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}/grpc-gen" -- "$root"
rustfmt --edition 2024 crates/server/src/grpc/gen/*.rs
echo "regenerated crates/server/src/grpc/gen/"
