#!/usr/bin/env bash
# Short fuzzing run of every target in fuzz/ (cargo-fuzz on the stable
# toolchain via RUSTC_BOOTSTRAP=1; no nightly needed).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60, all)
# Builds into $CARGO_TARGET_DIR/fuzz when CARGO_TARGET_DIR is set, else
# fuzz/target. Prints executions and peak RSS per target; exits non-zero on
# a build failure or a crash (the input is kept in fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode_json decode_cbor lineproto)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# Fuzz the dependency versions the server is built and tested with: start
# the fuzz crate's lock file from the workspace's (cargo adds libfuzzer-sys).
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
target_dir=()
[ -n "${CARGO_TARGET_DIR:-}" ] && target_dir=(--target-dir "$CARGO_TARGET_DIR/fuzz")
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=0
for target in "${targets[@]}"; do
  echo "== building $target"
  cargo fuzz build "${target_dir[@]}" "$target"
  echo "== fuzzing $target for ${secs}s"
  log="$logs/$target.log"
  # libFuzzer exits 0 when the time is up without a crash.
  if cargo fuzz run "${target_dir[@]}" "$target" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
  fi
  execs=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$log" || echo "?")
  rss=$(grep -oP 'stat::peak_rss_mb:\s*\K\d+' "$log" || echo "?")
  echo "$target: $status, executions $execs, peak RSS ${rss} MB"
  if [ "$status" = FAILED ]; then
    grep -E "ERROR|panicked|SUMMARY|Test unit written|error(\[|:)" "$log" | head -20 >&2 || tail -30 "$log" >&2
    echo "fix it and keep the input as a regression test (see docs/security.md)" >&2
  fi
done
exit "$failed"
