#!/usr/bin/env bash
# Set up and run every check and test: what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot build gains nothing from incremental caches (GBs on disk); set it to 1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

scripts/install.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
