#!/usr/bin/env bash
# Install what wsingest needs on a fresh Debian/Ubuntu machine: the services
# its tests and demo start (influxd, VictoriaMetrics, mosquitto, nginx) and the tools
# the tests drive. Idempotent: installs only what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian package -> a file it installs (to tell whether it is present).
declare -A PACKAGES=(
  [influxdb]=/usr/bin/influxd
  # The `influx` shell: the demo prints what landed with it.
  [influxdb-client]=/usr/bin/influx
  [victoria-metrics]=/usr/bin/victoria-metrics
  [mosquitto]=/usr/sbin/mosquitto
  [mosquitto-clients]=/usr/bin/mosquitto_pub
  [curl]=/usr/bin/curl
  # The live view's browser test drives headless Chromium over DevTools.
  [chromium]=/usr/bin/chromium
  # The wss test runs the notes' Python client (websockets) against the server.
  [python3-websockets]=/usr/lib/python3/dist-packages/websockets/__init__.py
  [nginx]=/usr/sbin/nginx
)

missing=()
for pkg in "${!PACKAGES[@]}"; do
  [ -e "${PACKAGES[$pkg]}" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The packages start system services on machines with systemd; wsingest's
# tests and demo start their own instances on free ports, so stop those to
# keep the default ports free and the machine quiet.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for svc in influxdb mosquitto nginx; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install the Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 1
fi
echo "dependencies present: influxd $(influxd version 2>/dev/null | awk '{print $2}'), victoria-metrics, mosquitto, cargo $(cargo --version | awk '{print $2}')"
