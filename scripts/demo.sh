#!/usr/bin/env bash
# Set up and run the demo: a local influxd, `wsingest serve` with
# config/demo.toml (anonymous devices allowed) on ws://127.0.0.1:8765, a
# simulated fleet of every profile in devices/ for about a minute, then what
# landed in InfluxDB and where to look next. Ctrl-C stops everything.
# DEMO_SECONDS=N stops the demo by itself N seconds after the fleet run;
# DEMO_FLEET=30s sets the fleet run's length, DEMO_DEVICES=N devices per profile.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

scripts/install.sh
echo "building wsingest (release)..."
cargo build --release --locked --quiet

DATA="$PWD/data/demo"
INFLUX_PORT="${INFLUX_PORT:-8086}"
INFLUX_URL="http://127.0.0.1:${INFLUX_PORT}"
mkdir -p "$DATA"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if curl -sf "${INFLUX_URL}/ping" >/dev/null; then
  echo "using the InfluxDB already answering on ${INFLUX_URL}"
else
  start_influxd "$DATA" "$INFLUX_PORT" 18088
  pids+=("$INFLUXD_PID")
  echo "started influxd on ${INFLUX_URL} (data in $DATA/influxdb)"
fi
curl -sf -XPOST "${INFLUX_URL}/query" --data-urlencode "q=CREATE DATABASE wsingest" >/dev/null

# Its own session: Ctrl-C reaches the fleet (which drains its acks first);
# the server is stopped by the cleanup with SIGTERM.
# Its log goes to a file so the demo's output stays readable.
setsid target/release/wsingest serve --config config/demo.toml --influx-url "$INFLUX_URL" \
  >"$DATA/wsingest.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:8765/healthz >/dev/null && break
  sleep 0.1
done
if ! curl -sf http://127.0.0.1:8765/healthz >/dev/null; then
  echo "wsingest serve did not start (is port 8765 taken?); its log, $DATA/wsingest.log:" >&2
  tail -n 20 "$DATA/wsingest.log" >&2
  exit 1
fi
echo "started wsingest serve on ws://127.0.0.1:8765 (log: $DATA/wsingest.log)"

DEMO_FLEET="${DEMO_FLEET:-60s}"
DEMO_DEVICES="${DEMO_DEVICES:-4}"
echo
echo "simulating ${DEMO_DEVICES} devices of each profile in devices/ for ${DEMO_FLEET} (Ctrl-C stops it all)..."
target/release/wsingest simulate --url ws://127.0.0.1:8765 --profile all \
  --devices "$DEMO_DEVICES" --duration "$DEMO_FLEET" || echo "the fleet run failed (see above)" >&2

# What landed, straight from InfluxDB.
INFLUX=(influx -host 127.0.0.1 -port "$INFLUX_PORT" -database wsingest)
measurements=()
for m in $("${INFLUX[@]}" -format csv -execute 'SHOW MEASUREMENTS' | tail -n +2 | cut -d, -f2); do
  case "$m" in wsingest_*) ;; *) measurements+=("$m") ;; esac
done
echo
echo "What landed in InfluxDB (database wsingest):"
printf '  %-14s %10s\n' measurement points
for m in "${measurements[@]}"; do
  field=$("${INFLUX[@]}" -format csv -execute "SHOW FIELD KEYS FROM \"$m\"" | sed -n 2p | cut -d, -f2)
  n=$("${INFLUX[@]}" -format csv -execute "SELECT count(\"$field\") FROM \"$m\"" | sed -n 2p | cut -d, -f3)
  printf '  %-14s %10s\n' "$m" "${n:-0}"
done
for m in "${measurements[@]}"; do
  echo
  "${INFLUX[@]}" -format column -precision rfc3339 -execute "SELECT * FROM \"$m\" ORDER BY time DESC LIMIT 3"
done

# A small fleet keeps sending, so there is something to watch.
setsid target/release/wsingest simulate --url ws://127.0.0.1:8765 --profile all --devices 1 \
  --duration 24h --quiet --id-prefix live- >"$DATA/fleet.log" 2>&1 &
pids+=($!)

cat <<MSG

Your data arrived. Where to look next (a small fleet keeps sending meanwhile):

  Live view:   http://127.0.0.1:8765/live          Metrics: http://127.0.0.1:8765/metrics
  InfluxDB:    influx -port ${INFLUX_PORT} -database wsingest -execute 'SELECT * FROM weather ORDER BY time DESC LIMIT 5'
  More fleets: target/release/wsingest simulate --help     (profiles: devices/*.toml, docs/simulate.md)
  Grafana:     docker compose up --build   (with Docker: InfluxDB, wsingest, Grafana on
               http://localhost:3000 with the dashboards in grafana/, Mosquitto, a fleet)

  Send points yourself with the device client (docs/devices.md; add --token
  from "wsingest device add" when anonymous devices are off):
    pip install ./clients/python
    python3 -m wsingest_client ws://127.0.0.1:8765 --device demo-1 --measurement weather --field temp_c=21.5 --count 5 --interval 1

  MQTT bridge: add --mqtt-url mqtt://127.0.0.1:1883 to the serve command, then
               mosquitto_sub -t 'telemetry/#' -v        (docs/mqtt.md)
  Server log:  ${DATA}/wsingest.log
  Health: curl http://127.0.0.1:8765/readyz      Stop: Ctrl-C
MSG

if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"
else
  wait "${pids[-2]}"
fi
