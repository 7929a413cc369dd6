#!/usr/bin/env bash
# Short fuzzing run of every target in fuzz/ (cargo-fuzz on the stable
# toolchain via RUSTC_BOOTSTRAP=1; no nightly needed).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in decode_json decode_cbor lineproto; do
  echo "== fuzzing $target for ${secs}s"
  cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb|ERROR|panicked|SUMMARY" || true
  if ls "fuzz/artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "crash found: fuzz/artifacts/$target/ (fix it and keep it as a regression test)" >&2
    exit 1
  fi
done
