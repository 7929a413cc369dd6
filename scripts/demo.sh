#!/usr/bin/env bash
# Set up and run the demo: a local influxd, `wsingest serve` with
# config/demo.toml (anonymous devices allowed) on ws://127.0.0.1:8765, and
# instructions to connect. Ctrl-C stops everything.
# DEMO_SECONDS=N stops the demo by itself after N seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

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
  cat > "$DATA/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:18088"
[meta]
  dir = "$DATA/influxdb/meta"
[data]
  dir = "$DATA/influxdb/data"
  wal-dir = "$DATA/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:${INFLUX_PORT}"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
  influxd -config "$DATA/influxdb.conf" >"$DATA/influxd.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    curl -sf "${INFLUX_URL}/ping" >/dev/null && break
    sleep 0.1
  done
  curl -sf "${INFLUX_URL}/ping" >/dev/null || { echo "influxd did not start; see $DATA/influxd.log" >&2; exit 1; }
  echo "started influxd on ${INFLUX_URL} (data in $DATA/influxdb)"
fi
curl -sf -XPOST "${INFLUX_URL}/query" --data-urlencode "q=CREATE DATABASE wsingest" >/dev/null

target/release/wsingest serve --config config/demo.toml --influx-url "$INFLUX_URL" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:8765/healthz >/dev/null && break
  sleep 0.1
done

cat <<MSG

wsingest is listening on ws://127.0.0.1:8765 (anonymous devices allowed).

  Send a point (Python, pip install websockets):
    python3 -c 'import asyncio, websockets
async def main():
    async with websockets.connect("ws://127.0.0.1:8765/v1/devices/demo-1") as ws:
        await ws.send("{\"seq\": 1, \"measurement\": \"weather\", \"fields\": {\"temp_c\": 21.5}}")
        print(await ws.recv())
asyncio.run(main())'

  See it in InfluxDB:
    curl -G ${INFLUX_URL}/query --data-urlencode db=wsingest --data-urlencode 'q=SELECT * FROM weather'

  Health: curl http://127.0.0.1:8765/readyz      Stop: Ctrl-C
MSG

if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"
else
  wait "${pids[-1]}"
fi
