# Shell functions the scripts share; source it, don't run it.

# start_influxd DIR HTTP_PORT RPC_PORT: an influxd 1.x with its config, data
# and log (influxd.log) under DIR, listening on 127.0.0.1 only, in its own
# session (so a Ctrl-C to the script does not reach it first). Sets
# INFLUXD_PID; returns once /ping answers, or exits with the log's path.
start_influxd() {
  local dir=$1 http=$2 rpc=$3
  mkdir -p "$dir"
  cat > "$dir/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:${rpc}"
[meta]
  dir = "$dir/influxdb/meta"
[data]
  dir = "$dir/influxdb/data"
  wal-dir = "$dir/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:${http}"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
  setsid influxd -config "$dir/influxdb.conf" >"$dir/influxd.log" 2>&1 &
  INFLUXD_PID=$!
  local url="http://127.0.0.1:${http}"
  for _ in $(seq 1 100); do
    curl -sf "${url}/ping" >/dev/null && return 0
    sleep 0.1
  done
  echo "influxd did not start on ${url}; its log: $dir/influxd.log" >&2
  tail -n 20 "$dir/influxd.log" >&2 || true
  exit 1
}
