#!/usr/bin/env bash
# Build the wsingest Debian package (.deb) with plain dpkg-deb: no cargo-deb,
# no debhelper. What goes in:
#
#   /usr/bin/wsingest                      the binary (stripped)
#   /etc/wsingest/wsingest.toml            conffile, production defaults (deploy/debian/wsingest.toml)
#   /lib/systemd/system/wsingest.service   hardened unit (deploy/systemd/)
#   /usr/share/wsingest/devices/           simulator profiles (devices/)
#   /usr/share/wsingest/grafana/           Grafana provisioning and dashboards (grafana/)
#   /usr/share/wsingest/prometheus/        scrape config, alert rules and their tests (deploy/prometheus/)
#   /usr/share/man/man1/wsingest.1.gz      man page (deploy/debian/wsingest.1)
#   /usr/share/doc/wsingest/               operations guide, README, full config reference, nginx example
#   DEBIAN/                                control, conffiles, md5sums, postinst/prerm/postrm (deploy/debian/)
#
# Usage: scripts/package.sh [--binary PATH] [--out DIR] [--fast] [--lintian]
#   --binary PATH  package this binary (say the one cargo built for the tests)
#                  instead of running `cargo build --release --locked`
#   --out DIR      where the .deb goes (default: target/debian, or under $CARGO_TARGET_DIR)
#   --fast         gzip -1 instead of xz (seconds instead of half a minute; tests use it)
#   --lintian      run lintian on the package; its errors fail the build
# The last line printed on stdout is the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

binary=""
out=""
fast=0
run_lintian=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) fast=1; shift ;;
    --lintian) run_lintian=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "package.sh: \`$1\` is missing: install the Debian package $2 (scripts/install.sh does)" >&2
    exit 1
  }
}
need dpkg-deb dpkg
need dpkg-shlibdeps dpkg-dev
need strip binutils
[ "$run_lintian" -eq 0 ] || need lintian lintian

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "$binary" ]; then
  cargo build --release --locked --bin wsingest >&2
  binary=$target_dir/release/wsingest
fi
[ -x "$binary" ] || { echo "package.sh: $binary is not an executable" >&2; exit 1; }
out=${out:-$target_dir/debian}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The version is the binary's own (`wsingest 0.1.0`): the package cannot claim
# another one than what it holds.
version=$("$binary" --version | awk '{print $2}')
[ -n "$version" ] || { echo "package.sh: cannot read the version from $binary --version" >&2; exit 1; }
arch=$(dpkg --print-architecture)
maintainer="wsingest maintainers <maintainers@users.noreply.b-seed-19e6f0ef.example>"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/pkg
umask 022

# Timestamps: the last commit's, so the same tree gives the same files.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/etc/wsingest" "$pkg/lib/systemd/system" \
  "$pkg/usr/share/wsingest" "$pkg/usr/share/doc/wsingest/examples"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  -o "$pkg/usr/bin/wsingest" "$binary"
chmod 0755 "$pkg/usr/bin/wsingest"
install -m 0644 deploy/debian/wsingest.toml "$pkg/etc/wsingest/wsingest.toml"
install -m 0644 deploy/systemd/wsingest.service "$pkg/lib/systemd/system/wsingest.service"
install -D -m 0644 deploy/debian/wsingest.1 "$pkg/usr/share/man/man1/wsingest.1"
gzip -9n "$pkg/usr/share/man/man1/wsingest.1"
cp -r devices "$pkg/usr/share/wsingest/devices"
cp -r grafana "$pkg/usr/share/wsingest/grafana"
install -d "$pkg/usr/share/wsingest/prometheus"
install -m 0644 deploy/prometheus/*.yml "$pkg/usr/share/wsingest/prometheus/"

doc=$pkg/usr/share/doc/wsingest
install -m 0644 deploy/debian/copyright "$doc/copyright"
install -m 0644 config/wsingest.toml "$doc/examples/wsingest.toml.example"
install -m 0644 config/nginx.conf "$doc/examples/nginx.conf"
install -m 0644 docs/operations.md "$doc/operations.md"
install -m 0644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"
# A native package's changelog: one entry for this build.
{
  echo "wsingest ($version) unstable; urgency=medium"
  echo
  echo "  * Built by scripts/package.sh from commit $commit."
  echo
  echo " -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} > "$doc/changelog"
gzip -9n "$doc/changelog"
find "$pkg" -type d -exec chmod 0755 {} +
find "$pkg/usr/share" "$pkg/etc" "$pkg/lib" -type f -exec chmod 0644 {} +

for script in postinst prerm postrm; do
  install -m 0755 "deploy/debian/$script" "$pkg/DEBIAN/$script"
done
echo /etc/wsingest/wsingest.toml > "$pkg/DEBIAN/conffiles"

# Shared-library dependencies, as dpkg-shlibdeps computes them for the binary.
mkdir -p "$stage/src/debian"
printf 'Source: wsingest\n\nPackage: wsingest\nArchitecture: any\n' > "$stage/src/debian/control"
shlibs=$(cd "$stage/src" && dpkg-shlibdeps -O -e "$pkg/usr/bin/wsingest" 2>/dev/null \
  | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies for the binary" >&2; exit 1; }

installed_size=$(du -sk --exclude=DEBIAN "$pkg" | awk '{print $1}')
cat > "$pkg/DEBIAN/control" <<EOF
Package: wsingest
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $shlibs, adduser
Suggests: influxdb, prometheus, nginx
Section: net
Priority: optional
Description: IoT telemetry ingestion over WebSockets into InfluxDB
 wsingest holds one WebSocket per device, decodes JSON, CBOR and SenML
 telemetry, validates it, batches it into InfluxDB (1.x or v2 write API) and
 acknowledges each message once it is durable: written, or fsynced in an
 on-disk spool that is replayed when InfluxDB is back. Devices authenticate
 with per-device tokens and receive commands on the same socket; an optional
 MQTT bridge publishes every point. Prometheus metrics, health and readiness
 endpoints, a live web view and Grafana dashboards are included.
 .
 This package runs it as the systemd service wsingest.service, configured in
 /etc/wsingest/wsingest.toml, with its spool in /var/lib/wsingest.
EOF

(cd "$pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles" "$pkg/DEBIAN/md5sums"
find "$pkg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb=$out/wsingest_${version}_${arch}.deb
if [ "$fast" -eq 1 ]; then
  compress=(-Zgzip -z1)
else
  compress=(-Zxz)
fi
dpkg-deb --root-owner-group "${compress[@]}" --build "$pkg" "$deb" >&2

if [ "$run_lintian" -eq 1 ]; then
  # Errors fail the build; warnings are printed.
  lintian --fail-on error --tag-display-limit 0 --display-info "$deb" >&2
fi
echo "$deb"
