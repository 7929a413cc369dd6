#!/usr/bin/env bash
# Regenerate docs/img/dashboards/*.png from a real fleet's data: a throwaway
# influxd, `wsingest serve` (stats every 2 s), `wsingest simulate` with every
# profile in devices/ (plus one flaky device per profile that sends some
# garbage and drops its connection now and then), then
# `wsingest dashboards check` and `wsingest dashboards render` over the fleet's
# time range, while the fleet still runs. Nothing of the demo's data/ is touched.
#
# FLEET=150s (seconds) sets how long the fleet runs before the drawing, DEVICES=N devices per profile,
# OUT=DIR where the images go, WSINGEST_BIN=PATH a binary to use instead of
# building the release one; INFLUX_PORT, WS_PORT the ports (18086, 18765).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

[ -n "${SKIP_INSTALL:-}" ] || scripts/install.sh
if [ -z "${WSINGEST_BIN:-}" ]; then
  echo "building wsingest (release)..."
  cargo build --release --locked --quiet
  WSINGEST_BIN="${CARGO_TARGET_DIR:-target}/release/wsingest"
fi
FLEET="${FLEET:-150s}"
DEVICES="${DEVICES:-3}"
OUT="${OUT:-docs/img/dashboards}"
INFLUX_PORT="${INFLUX_PORT:-18086}"
WS_PORT="${WS_PORT:-18765}"
INFLUX_URL="http://127.0.0.1:${INFLUX_PORT}"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_influxd "$work" "$INFLUX_PORT" "$((INFLUX_PORT + 2))"
pids+=("$INFLUXD_PID")
curl -sf -XPOST "${INFLUX_URL}/query" --data-urlencode "q=CREATE DATABASE wsingest" >/dev/null

cat > "$work/wsingest.toml" <<CONF
[server]
listen = "127.0.0.1:${WS_PORT}"
[auth]
allow_anonymous = true
[influx]
url = "${INFLUX_URL}"
db = "wsingest"
flush_interval_ms = 200
dead_letter_path = "$work/dead-letter.jsonl"
[spool]
dir = "$work/spool"
[observe]
stats_interval_ms = 2000
instance = "demo"
CONF
"$WSINGEST_BIN" serve --config "$work/wsingest.toml" >"$work/wsingest.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:${WS_PORT}/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:${WS_PORT}/healthz" >/dev/null || { tail -n 20 "$work/wsingest.log" >&2; exit 1; }

echo "fleet: ${DEVICES} devices of every profile, and a flaky one of each, for ${FLEET}..."
start=$(date +%s)
# Both fleets keep running while the dashboards are drawn, so "now" has
# devices online; the cleanup stops them.
"$WSINGEST_BIN" simulate --url "ws://127.0.0.1:${WS_PORT}" --profile all --devices "$DEVICES" \
  --duration 1h --quiet >"$work/fleet.log" 2>&1 &
pids+=($!)
"$WSINGEST_BIN" simulate --url "ws://127.0.0.1:${WS_PORT}" --profile all --devices 1 \
  --duration 1h --id-prefix flaky- --fault-garbage 0.03 --fault-drop-every 40 --quiet \
  >"$work/flaky.log" 2>&1 &
pids+=($!)
sleep "${FLEET%s}"
elapsed=$(( $(date +%s) - start + 10 ))

range="${elapsed}s"
echo "checking the dashboards over the last ${range}..."
"$WSINGEST_BIN" dashboards check --influx-url "$INFLUX_URL" --influx-db wsingest --range "$range" \
  | tee "$work/check.txt" || true
mkdir -p "$OUT"
"$WSINGEST_BIN" dashboards render --influx-url "$INFLUX_URL" --influx-db wsingest --range "$range" --out "$OUT"
echo "wrote $OUT ($(du -sh "$OUT" | cut -f1))"
