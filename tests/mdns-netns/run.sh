#!/usr/bin/env bash
# mDNS across hosts: two network namespaces joined by a veth pair stand for two machines on a
# LAN. In the first, `localcert demo` provisions a device whose HTTPS listens on that side's veth
# address and announces its .local name with mDNS on that veth only. In the second, `localcert ua
# check` (no --resolve) finds the name with mdns-sd across the pair and completes the HTTPS check:
# chain to the issuer root, name, origin binding, CORS for exactly that origin.
#
# Usage (root): bash tests/mdns-netns/run.sh      scratch output and logs: tests/mdns-netns/out/
# Addresses exist only on the veth pair inside the namespaces (198.51.100.0/24, TEST-NET-2), so
# no packet can leave the machine. The veths keep the link-local IPv6 addresses the kernel gives
# them, as on a real LAN; MDNS_NETNS_IPV6=0 turns IPv6 off (see README.md).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$HERE/out
BIN=$REPO/target/release/localcert
ORIGIN=https://vod.example.test
DEVICE_IF=lc-device
DEVICE_ADDR=198.51.100.1
UA_IF=lc-ua
UA_ADDR=198.51.100.2

# ------------------------------------------------------------------ outside: build, then isolate
if [ "${1:-}" != --inside ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "FAIL mdns-netns: run as root (unshare, ip netns)" >&2
        exit 2
    fi
    missing=()
    for pkg in iproute2 util-linux; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "== apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    echo "== cargo build --release -p localcert"
    (cd "$REPO" && cargo build --release --locked -p localcert)
    rm -rf "$OUT"
    mkdir -p "$OUT"
    # A PID namespace (--kill-child): when this script ends, however it ends, every process it
    # started ends too, and with the last of them both network namespaces and the veth pair.
    set +e
    timeout 300 unshare --pid --fork --mount-proc --kill-child \
        bash "$HERE/run.sh" --inside 2>&1 | tee "$OUT/run.log"
    rc=${PIPESTATUS[0]}
    set -e
    [ "$rc" != 124 ] || echo "FAIL mdns-netns: timed out after 300 s"
    exit "$rc"
fi

# ------------------------------------------------------------------ inside the PID namespace
PIDS=()
DEMO_PID=
cleanup() {
    if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -INT "$DEMO_PID" 2>/dev/null || true      # the demo stops its servers on SIGINT
        for _ in $(seq 50); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DEMO_PID" 2>/dev/null || true
    fi
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
fail() {
    echo "FAIL mdns-netns: $*"
    echo "mdns-netns: 0 passed, 1 failed"
    exit 1
}
trap cleanup EXIT
trap 'exit 1' INT TERM
trap 'status=$?; fail "line $LINENO: \`$BASH_COMMAND\` exited $status"' ERR

# Two empty network namespaces, each held open by a sleeping process.
unshare --net sleep infinity &
DEVICE_NS=$!
PIDS+=($DEVICE_NS)
unshare --net sleep infinity &
UA_NS=$!
PIDS+=($UA_NS)
in_device() { nsenter --target "$DEVICE_NS" --net -- "$@"; }
in_ua() { nsenter --target "$UA_NS" --net -- "$@"; }
for _ in $(seq 50); do
    [ "$(readlink /proc/$DEVICE_NS/ns/net)" != "$(readlink /proc/$$/ns/net)" ] &&
        [ "$(readlink /proc/$UA_NS/ns/net)" != "$(readlink /proc/$$/ns/net)" ] && break
    sleep 0.1
done
[ "$(readlink /proc/$UA_NS/ns/net)" != "$(readlink /proc/$$/ns/net)" ] || fail "no network namespaces"

for ns in in_device in_ua; do
    $ns ip link set lo up
    if [ "${MDNS_NETNS_IPV6:-1}" != 1 ]; then
        # /proc/sys/net belongs to the namespace of the process that opens it
        $ns sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6'
    fi
done
# The pair is created inside the device's namespace with its peer put straight into the UA's:
# it never exists in the host's namespace.
in_device ip link add "$DEVICE_IF" type veth peer name "$UA_IF" netns "/proc/$UA_NS/ns/net"
in_device ip addr add "$DEVICE_ADDR/24" dev "$DEVICE_IF"
in_ua ip addr add "$UA_ADDR/24" dev "$UA_IF"
in_device ip link set "$DEVICE_IF" up
in_ua ip link set "$UA_IF" up
echo "== device side: $(in_device ip -brief address show dev "$DEVICE_IF" | tr -s ' ')"
echo "== UA side:     $(in_ua ip -brief address show dev "$UA_IF" | tr -s ' ')"

echo "== device side: localcert demo --device-addr $DEVICE_ADDR --mdns-interface $DEVICE_IF"
in_device "$BIN" demo --origin "$ORIGIN" --device-addr "$DEVICE_ADDR" --mdns-interface "$DEVICE_IF" \
    --state-dir "$OUT/state" --serve "$OUT/desc.json" >"$OUT/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 600); do
    [ -s "$OUT/desc.json" ] && break
    kill -0 "$DEMO_PID" 2>/dev/null || { sed 's/^/    /' "$OUT/demo.log"; fail "localcert demo exited before serving"; }
    sleep 0.1
done
[ -s "$OUT/desc.json" ] || { sed 's/^/    /' "$OUT/demo.log"; fail "localcert demo wrote no desc.json in 60 s"; }
sleep 0.2   # the file is written in one call; let it land completely
grep --no-group-separator -A1 -E '^\[ *[0-9.]+ s\] +(10|14) ' "$OUT/demo.log" | sed 's/^/    /' || true
# desc.json is flat JSON with string and number values; read a field without another tool.
field() { sed -nE "s/^ *\"$1\": *\"?([^\",]*)\"?,?$/\1/p" "$OUT/desc.json"; }
NAME=$(field name)
PORT=$(field https_port)
ROOT=$(field issuer_root)
[ -n "$NAME" ] && [ -n "$PORT" ] && [ -f "$ROOT" ] || { cat "$OUT/desc.json"; fail "desc.json lacks name, https_port or issuer_root"; }
URL="https://$NAME:$PORT/"

echo "== UA side: localcert ua check $URL --origin $ORIGIN (no --resolve: mDNS on $UA_IF)"
rc=0
in_ua "$BIN" ua check "$URL" --origin "$ORIGIN" --issuer-root "$ROOT" --json >"$OUT/check.json" 2>"$OUT/check.err" || rc=$?
sed 's/^/    /' "$OUT/check.json" "$OUT/check.err"
if [ $rc = 0 ] && grep -q '"ok": true' "$OUT/check.json" && grep -q "\"name\": \"$NAME\"" "$OUT/check.json" &&
    grep -q "\"access_control_allow_origin\": \"$ORIGIN\"" "$OUT/check.json"; then
    echo "PASS mdns-netns: $NAME resolved over mDNS from the other namespace; HTTPS check ok (chain, name, origin binding, CORS for $ORIGIN only)"
    echo "mdns-netns: 1 passed, 0 failed"
else
    echo "FAIL mdns-netns: ua check exited $rc (4 device, 5 issuer, 6 verification, 7 mDNS/BLE); see $OUT"
    echo "mdns-netns: 0 passed, 1 failed"
    exit 1
fi
