#!/usr/bin/env bash
# The device daemon's footprint: the stripped size of a binary, and its resident memory while
# it runs idle (HTTPS listening, mDNS on loopback, no BLE: no bluetoothd needed; the fixture
# device's credential; an empty store).
#
# Usage: bash crates/device/footprint.sh [BINARY]
#   BINARY defaults to target/device/localcert-device, built by
#   cargo build --profile device -p localcert-device --features bluez
# Prints: size_bytes, size_mib, rss_kib (VmRSS of /proc/PID/status after 3 s idle), threads.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$REPO/target/device/localcert-device}
WORK=$(mktemp -d /tmp/localcert-footprint.XXXXXX)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PID=

strip -o "$WORK/localcert-device" "$BIN"
size=$(stat -c %s "$WORK/localcert-device")
echo "binary: $BIN"
echo "size_bytes: $size"
awk -v s="$size" 'BEGIN { printf "size_mib: %.2f\n", s / 1048576 }'

FIX=$REPO/fixtures/devices/device-1
mkdir -p "$WORK/store"
cp "$FIX/attestation.key.pem" "$FIX/attestation.pem" "$WORK/"
cp "$REPO/fixtures/manufacturer/root.pem" "$WORK/issuer-root.pem"
cat >"$WORK/device.toml" <<EOF
product = "Media Server"
store_dir = "$WORK/store"
attestation_key = "$WORK/attestation.key.pem"
attestation_chain = "$WORK/attestation.pem"
issuer_roots = "$WORK/issuer-root.pem"
presence = "deny"
https_port = $(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
https_listen = "127.0.0.1"
[ble]
enabled = false
[mdns]
interfaces = ["lo"]
EOF
"$WORK/localcert-device" run --config "$WORK/device.toml" >"$WORK/log" 2>&1 &
PID=$!
sleep 3
grep -q "HTTPS listening" "$WORK/log" || { cat "$WORK/log"; exit 1; }
kill -0 "$PID" || { cat "$WORK/log"; exit 1; }
echo "rss_kib: $(awk '/^VmRSS/ { print $2 }' "/proc/$PID/status")"
echo "threads: $(awk '/^Threads/ { print $2 }' "/proc/$PID/status")"
if [ -n "${FOOTPRINT_DETAIL:-}" ]; then grep -E "^(Rss|Pss_Anon|Pss_File|Anonymous)" "/proc/$PID/smaps_rollup"; awk '$6 != "" && /^[0-9a-f]/ { name=$6 } /^Rss:/ { rss[name]+=$2 } END { for (n in rss) if (rss[n] > 100) print rss[n], n }' "/proc/$PID/smaps" | sort -rn | head -12; fi
