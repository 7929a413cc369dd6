#!/usr/bin/env bash
# Install what wsingest needs on a fresh Debian/Ubuntu machine: the services
# its tests and demo start (influxd, VictoriaMetrics, mosquitto, nginx, nats-server) and the tools
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
  # --- packaging and monitoring (tests/packaging/, tests/prometheus.rs) ---
  # The .deb is built with dpkg-deb (dpkg) by scripts/package.sh; dpkg-shlibdeps
  # computes its Depends; strip shrinks the binary.
  [dpkg-dev]=/usr/bin/dpkg-shlibdeps
  [binutils]=/usr/bin/strip
  [lintian]=/usr/bin/lintian
  # systemd-analyze verifies the unit (no running systemd needed).
  [systemd]=/usr/bin/systemd-analyze
  # The installed server runs under strace: its system calls are checked
  # against the unit's SystemCallFilter.
  [strace]=/usr/bin/strace
  # prometheus and promtool run the shipped scrape config and alert rules.
  [prometheus]=/usr/bin/promtool
  # --- end packaging and monitoring ---
  # Queue mode (docs/scaling.md): JetStream between gateways and writers;
  # tests/queue*.rs start a 3-node cluster on loopback ports.
  [nats-server]=/usr/sbin/nats-server
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
  for svc in influxdb mosquitto nginx prometheus nats-server; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

# --- device clients (issue 15): tests/clients_*.rs -----------------------
# Python client: a venv under target/ with the client and its dependencies
# (websockets, cbor2) from PyPI; the tests run the source in clients/python.
# JavaScript client: node + npm, then `npm ci` from the committed lock file.
# C client: a C compiler and libwebsockets for the Linux example.
client_pkgs=()
command -v cc >/dev/null 2>&1 || client_pkgs+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || client_pkgs+=(make)
command -v pkg-config >/dev/null 2>&1 || client_pkgs+=(pkg-config)
[ -e /usr/include/libwebsockets.h ] || client_pkgs+=(libwebsockets-dev)
command -v node >/dev/null 2>&1 || client_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || client_pkgs+=(npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || client_pkgs+=(python3-venv)
if [ "${#client_pkgs[@]}" -gt 0 ]; then
  echo "installing Debian packages for the device clients: ${client_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${client_pkgs[@]}" >/dev/null
fi
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${WSINGEST_CLIENTS_VENV:-$REPO/target/clients-venv}"
if ! "$VENV/bin/python" -c 'import websockets, cbor2, wsingest_client' >/dev/null 2>&1; then
  echo "creating the Python client's venv in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$REPO/clients/python"
fi
if [ ! -e "$REPO/clients/js/node_modules/ws/package.json" ] \
   || [ "$REPO/clients/js/package-lock.json" -nt "$REPO/clients/js/node_modules/.package-lock.json" ]; then
  echo "installing the JavaScript client's dependencies (npm ci)"
  (cd "$REPO/clients/js" && npm ci --no-audit --no-fund --loglevel=error)
fi
# --- end device clients ---------------------------------------------------

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install the Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 1
fi
echo "dependencies present: influxd $(influxd version 2>/dev/null | awk '{print $2}'), victoria-metrics, mosquitto, cargo $(cargo --version | awk '{print $2}')"
