#!/usr/bin/env bash
# tests/webbluetooth-vm/run.sh: the browser is the UA. Headless Chromium on the host runs the
# example page of https://vod.example.test (served by `localcert rp serve`), which provisions the
# device daemon `localcert-device run` over Web Bluetooth -> BlueZ in a QEMU VM, against the
# real issuer (`localcert issuer serve`), then fetch()es the device over HTTPS. See README.md.
#
# Usage:  tests/webbluetooth-vm/run.sh [setup] [build] [CASE...]   (default: setup build a b c d)
#         a  provision at ATT MTU 517, then fetch() the device     c  the user cancels the chooser
#         b  the same at ATT MTU 23                                d  another origin is refused
# Env:    LOCALCERT_WBVM_OUT (scratch, default tests/webbluetooth-vm/out), SKIP_APT=1, ACCEL,
#         MEM (MiB, 2048), SMP (2), VM_TIMEOUT (s per VM, 600)
# Needs:  root, Debian 12, the Rust toolchain, a C compiler. Everything after the build runs in a
#         fresh network namespace (loopback only) and PID namespace.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${LOCALCERT_WBVM_OUT:-$HERE/out}
export DEBIAN_FRONTEND=noninteractive
say() { printf '=== [%(%H:%M:%S)T] %s\n' -1 "$*"; }
. "$REPO/tests/vm-common/qemu.sh"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

ORIGIN=https://vod.example.test
EVIL=https://evil.example.test
LABEL=media-server
BACKEND=/localcert
ISSUER_PORT=14000
DBUS_PORT=15555
DEVICE_PORT=8443
CDP_PORT=9222
# Every name the test uses goes to loopback, anything else fails to resolve.
RESOLVER_RULES="MAP vod.example.test 127.0.0.1, MAP evil.example.test 127.0.0.1, MAP *.local 127.0.0.1, MAP * ~NOTFOUND"

# ------------------------------------------------------------------ outside: install and build
if [ "${1:-}" != --inside-netns ]; then
    [ "$(id -u)" = 0 ] || { echo "FAIL webbluetooth-vm: run as root (apt-get, unshare, QEMU)" >&2; exit 2; }
    steps=("$@")
    [ ${#steps[@]} -gt 0 ] || steps=(setup build a b c d)
    cases=()
    for step in "${steps[@]}"; do
        case $step in
        setup)
            # The VM's kernel, initramfs and bluetoothd shim come from tests/bluez-vm's setup, the
            # same apt packages too; this suite adds the browser's.
            LOCALCERT_BZVM_OUT=$OUT bash "$REPO/tests/bluez-vm/run.sh" setup
            missing=()
            for pkg in chromium libnss3-tools openssl; do
                dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
            done
            command -v npm >/dev/null || missing+=(nodejs npm)
            if ((${#missing[@]})); then
                say "apt-get install ${missing[*]}"
                apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
            fi
            say "npm ci (playwright-core only; Debian's chromium is the browser)"
            (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
            # The page loads the built package (/dist/, `prepare` runs tsc) and cborg beside it.
            say "npm ci in web/ (builds web/dist)"
            (cd "$REPO/web" && npm ci --no-audit --no-fund --loglevel=error)
            ;;
        build)
            # localcert (issuer, rp serve) and localcert-device with BlueZ, copied to $OUT/bin.
            LOCALCERT_BZVM_OUT=$OUT bash "$REPO/tests/bluez-vm/run.sh" build
            ;;
        a | b | c | d) cases+=("$step") ;;
        *) echo "unknown step $step (setup build a b c d)" >&2; exit 2 ;;
        esac
    done
    ((${#cases[@]})) || exit 0
    for f in "$OUT/bin/localcert" "$OUT/bin/localcert-device" "$OUT/initramfs.cpio.gz" "$HERE/node_modules/playwright-core" \
        "$REPO/web/dist/index.js" "$REPO/web/node_modules/cborg/cborg.js"; do
        [ -e "$f" ] || { echo "FAIL webbluetooth-vm: no $f (run the setup and build steps)" >&2; exit 2; }
    done
    grep -q 'GATT service registered' "$OUT/bin/localcert-device" ||
        { echo "FAIL webbluetooth-vm: $OUT/bin/localcert-device lacks the bluez feature" >&2; exit 2; }
    rm -rf "$OUT/run" "$OUT/cases" "$OUT/vm-"*
    mkdir -p "$OUT/run" "$OUT/cases"
    say "$(/usr/bin/chromium --version 2>/dev/null), playwright-core $(node -p "require('$HERE/node_modules/playwright-core/package.json').version")"
    # --kill-child: if this script dies, every process of the PID namespace (QEMU, the issuer,
    # the backend, Chromium) dies with it.
    set +e
    timeout 1500 unshare --net --pid --fork --mount-proc --kill-child \
        bash "$HERE/run.sh" --inside-netns "${cases[@]}" 2>&1 | tee "$OUT/run.log"
    rc=${PIPESTATUS[0]}
    set -e
    [ "$rc" != 124 ] || echo "FAIL webbluetooth-vm: timed out after 1500 s"
    [ "$rc" = 0 ] || echo "webbluetooth-vm FAILED (logs in $OUT)"
    exit "$rc"
fi

# ------------------------------------------------------------------ inside: loopback only
# Errors are handled one by one from here (setup_fail, or a FAIL line per case).
set +e
shift
CASES=("$@")
BIN=$OUT/bin
RUN=$OUT/run
PIDS=()
QEMU_PID=
cleanup() {
    local pid
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM
setup_fail() {
    echo "FAIL webbluetooth-vm-setup: $*"
    echo "webbluetooth-vm: 0 passed, ${#CASES[@]} failed"
    exit 1
}
. "$REPO/tests/vm-common/wait.sh"
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ip link set lo up

# --- the origins' TLS certificate: a throwaway CA constrained to the two test origins ----------
pki=$RUN/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$pki/origins-ca.key" -out "$pki/origins-ca.pem" -subj "/CN=localcert webbluetooth-vm origins CA" \
    -addext "basicConstraints=critical,CA:true,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "nameConstraints=critical,permitted;DNS:vod.example.test,permitted;DNS:evil.example.test" \
    2>/dev/null || setup_fail "openssl: origins CA"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/origins.key" \
    -subj "/CN=vod.example.test" -out "$pki/origins.csr" 2>/dev/null || setup_fail "openssl: origins key"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:vod.example.test,DNS:evil.example.test" >"$pki/origins.ext"
openssl x509 -req -sha256 -days 2 -in "$pki/origins.csr" -CA "$pki/origins-ca.pem" -CAkey "$pki/origins-ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$pki/origins.ext" -out "$pki/origins.crt" 2>/dev/null ||
    setup_fail "openssl: origins leaf"
cat "$pki/origins.crt" "$pki/origins-ca.pem" >"$pki/origins.chain.pem"
chmod 600 "$pki"/*.key

# --- the issuer on the host ---------------------------------------------------------------------
ISSUER_DIR=$RUN/issuer
mkdir -p "$ISSUER_DIR"
(cd "$ISSUER_DIR" && "$BIN/localcert" issuer init --listen "127.0.0.1:$ISSUER_PORT" \
    --manufacturer-root "$REPO/fixtures/manufacturer/root.pem") >"$RUN/issuer-init.log" 2>&1 ||
    setup_fail "issuer init: $(tail -n1 "$RUN/issuer-init.log")"
ISSUER_DB=$(awk '/^database:/{print $2}' "$RUN/issuer-init.log")
case $ISSUER_DB in /*) ;; *) ISSUER_DB=$ISSUER_DIR/${ISSUER_DB:-state/issuer.sqlite} ;; esac
ISSUER_ROOT=$ISSUER_DIR/state/root.pem
ACME_TLS_ROOT=$ISSUER_DIR/state/tls.pem
[ -s "$ISSUER_ROOT" ] && [ -s "$ACME_TLS_ROOT" ] && [ -e "$ISSUER_DB" ] || setup_fail "issuer init left no root, TLS cert or database"
(cd "$ISSUER_DIR" && exec "$BIN/localcert" issuer serve) >"$RUN/issuer.log" 2>&1 &
PIDS+=($!)
wait_for "$RUN/issuer.log" "ACME directory" 30 || setup_fail "the issuer did not start: $(tail -n2 "$RUN/issuer.log")"

rp_toml() { # rp.toml of `localcert rp serve` (crates/rp/README.md)
    cat <<EOF
origin = "$ORIGIN"
listen = "127.0.0.1:443"
static_dir = "$REPO/web"
base_path = "$BACKEND"

[tls]
cert = "$pki/origins.chain.pem"
key = "$pki/origins.key"

[acme]
directory = "https://localhost:$ISSUER_PORT/acme/directory"
tls_root = "$ACME_TLS_ROOT"
eab_kid = "$EAB_KID"
eab_key = "$EAB_KEY"

[[users]]
token = "$SESSION_TOKEN"
handle = "webbluetooth-vm-user"
EOF
}

# --- the RP backend on the host: https://vod.example.test (and the same server as evil) -------
SESSION_TOKEN=$(openssl rand -hex 16)
{
    # The EAB credentials go from `rp add`'s output straight into rp.toml (0600), never argv.
    umask 077
    (cd "$ISSUER_DIR" && "$BIN/localcert" issuer rp add "$ORIGIN") >"$RUN/rp-add.txt" 2>&1 ||
        setup_fail "issuer rp add: $(grep -v HMAC "$RUN/rp-add.txt")"
    EAB_KID=$(awk '/EAB kid:/{print $3}' "$RUN/rp-add.txt")
    EAB_KEY=$(awk '/EAB HMAC:/{print $3}' "$RUN/rp-add.txt")
    rm -f "$RUN/rp-add.txt"
    [ -n "$EAB_KID" ] && [ -n "$EAB_KEY" ] || setup_fail "issuer rp add printed no EAB credentials"
    rp_toml >"$RUN/rp.toml"
    unset EAB_KEY
    umask 022
    "$BIN/localcert" rp serve --config "$RUN/rp.toml" >"$RUN/rp.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 150); do port_open 443 && break; sleep 0.2; done
    port_open 443 || setup_fail "localcert rp serve did not listen on 443: $(tail -n3 "$RUN/rp.log")"
}

# --- trust: a fresh NSS db in a throwaway HOME (Chromium on Linux reads $HOME/.pki/nssdb) -------
export HOME=$RUN/home
mkdir -p "$HOME/.pki/nssdb"
{ certutil -d "sql:$HOME/.pki/nssdb" -N --empty-password &&
    certutil -d "sql:$HOME/.pki/nssdb" -A -t "C,," -n "localcert issuer root" -i "$ISSUER_ROOT" &&
    certutil -d "sql:$HOME/.pki/nssdb" -A -t "C,," -n "webbluetooth-vm origins CA" -i "$pki/origins-ca.pem"; } ||
    setup_fail "certutil: the NSS db"
NAME=$(python3 "$REPO/tests/bluez-vm/name.py" "$LABEL" "$ORIGIN" "$REPO/fixtures/devices/device-1/attestation.pem" \
    "$REPO/protocol/vectors/names.json") || setup_fail "cannot derive the device's name"
say "issuer, backend and NSS db ready; the device will be $NAME:$DEVICE_PORT"

# --- the VM ---------------------------------------------------------------------------------------
VMLOGS=
ask() { # ask WORD: a request to the guest (see guest.sh); prints the path of its answer
    # A unique tag: ask runs in command substitutions, so a counter here would not survive.
    local tag=$VMLOGS/req/${EPOCHREALTIME/./}-$BASHPID t=$SECONDS
    echo "$1" >"$tag.tmp" && mv "$tag.tmp" "$tag.cmd"
    while [ ! -e "$tag.done" ] && [ $((SECONDS - t)) -lt 60 ]; do sleep 0.2; done
    echo "$tag.out"
}

boot() { # boot MTU: starts the VM, returns once the guest is ready (or 1)
    local mtu=$1 t=$SECONDS
    VMLOGS=$OUT/vm-$mtu
    rm -rf "$VMLOGS" && mkdir -p "$VMLOGS"
    local append="wvmtu=$mtu wvrepo=$REPO wvout=$OUT wvlogs=$VMLOGS wvport=$DEVICE_PORT"
    append+=" wvroots=$ISSUER_ROOT wvlabel=$LABEL wvwait=${VM_TIMEOUT:-600}"
    vm_command "$OUT" "$VMLOGS" "$HERE/guest.sh" "$append" \
        -nic "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:$DBUS_PORT-10.0.2.15:5555,hostfwd=tcp:127.0.0.1:$DEVICE_PORT-10.0.2.15:$DEVICE_PORT"
    "${VM_COMMAND[@]}" </dev/null >"$VMLOGS/console.log" 2>&1 &
    QEMU_PID=$!
    while [ ! -e "$VMLOGS/ready" ]; do
        kill -0 "$QEMU_PID" 2>/dev/null && [ $((SECONDS - t)) -lt 300 ] || return 1
        sleep 0.5
    done
    say "VM (ATT MTU $mtu) ready in $((SECONDS - t)) s: $(grep -h 'BlueZ up' "$VMLOGS/guest.log" | cut -c1-90)"
}

halt() { # halt: asks the guest to power off, then makes sure QEMU is gone
    local t=$SECONDS
    [ -n "$QEMU_PID" ] || return 0
    kill -0 "$QEMU_PID" 2>/dev/null && ask stop >/dev/null
    while kill -0 "$QEMU_PID" 2>/dev/null && [ $((SECONDS - t)) -lt 30 ]; do sleep 0.5; done
    kill "$QEMU_PID" 2>/dev/null
    wait "$QEMU_PID" 2>/dev/null
    QEMU_PID=
    unix_lines "$VMLOGS/console.log"
}

snapshot() { # snapshot CASEDIR WHEN: the device's bindings and the issuer's orders
    cp "$(ask status)" "$1/status-$2.json"
    python3 "$HERE/check.py" orders "$ISSUER_DB" >"$1/orders-$2.json"
    wc -l <"$VMLOGS/device.log" >"$1/device-lines-$2" 2>/dev/null || echo 0 >"$1/device-lines-$2"
    wc -l <"$RUN/rp.log" >"$1/rp-lines-$2" 2>/dev/null || echo 0 >"$1/rp-lines-$2"
}

since() { # since FILE LINES-FILE: the lines of FILE after the count in LINES-FILE
    tail -n "+$(($(cat "$2") + 1))" "$1" 2>/dev/null
}

discovery_log() { # the guest's view of the scan, for a failed case or one that needed a rescan
    echo "----- bluetoothd: discovery and advertising (last 12 lines)"
    grep -E 'adapter\.c:.*(discover|found)|advertising\.c' "$VMLOGS/bluetoothd.log" 2>/dev/null | tail -n 12
    echo "----- D-Bus: Chromium's discovery calls (last 8)"
    grep -E 'member=(StartDiscovery|StopDiscovery|SetDiscoveryFilter)' "$VMLOGS/dbus-monitor.log" 2>/dev/null | tail -n 8
}

run_case() { # run_case CASE: one PASS|FAIL line (also added to $summary)
    local case=$1 dir=$OUT/cases/$1 t=$SECONDS url chooser=select button=#provision rc verdict line serve=
    mkdir -p "$dir"
    # attempts=5: the package reconnects when BlueZ drops the link right after connect() (README,
    # trap 1); its reconnects 1 s apart can come before the dropped link is down on a loaded host.
    case $case in
    a | b) url="$ORIGIN/example/?attempts=5" ;;
    c) url="$ORIGIN/example/?attempts=5"; chooser=cancel ;;
    d) url="$EVIL/hostile/"; serve=$HERE/hostile.html ;;
    esac
    snapshot "$dir" before
    local launches=0 restarts=
    while :; do
        launches=$((launches + 1))
        wc -l <"$VMLOGS/dbus-monitor.log" >"$dir/dbus-lines-before" 2>/dev/null || echo 0 >"$dir/dbus-lines-before"
        DBUS_SYSTEM_BUS_ADDRESS="tcp:host=127.0.0.1,port=$DBUS_PORT" NODE_PATH=$HERE/node_modules \
            URL=$url SERVE_PAGE=$serve LOGS=$dir CHOOSER=$chooser BUTTON=$button BACKEND=$BACKEND CDP_PORT=$CDP_PORT \
            SESSION_TOKEN=$SESSION_TOKEN COOKIE_HOSTS=vod.example.test,evil.example.test \
            RESOLVER_RULES="$RESOLVER_RULES" timeout 300 node "$HERE/driver.js" >"$dir/driver.log" 2>&1
        rc=$?
        snapshot "$dir" after
        # A Chromium whose BlueZ backend took hci1, the device's own adapter, scans where the
        # device cannot be seen (README, traps): nothing reached the device, so the case starts
        # once more with a fresh Chromium, as a user would restart the browser; the case line
        # says so. Nothing else is retried.
        if [ "$launches" = 1 ] && since "$VMLOGS/dbus-monitor.log" "$dir/dbus-lines-before" |
            grep -q 'path=/org/bluez/hci1; interface=org.bluez.Adapter1; member=StartDiscovery'; then
            say "case $case: Chromium scanned on hci1, the device's adapter: once more with a fresh Chromium"
            mv "$dir/driver.log" "$dir/driver-1.log"
            restarts="; chromium restarts=1 (it had taken hci1)"
            continue
        fi
        break
    done
    since "$VMLOGS/device.log" "$dir/device-lines-before" >"$dir/device.log"
    since "$RUN/rp.log" "$dir/rp-lines-before" >"$dir/rp.log"
    cp "$(ask mtu)" "$dir/mtu.txt"
    # The VM's capture so far (the snapshot above copied it): ATT or EATT bearers, the device's
    # writes and notifications; and the fragments the device put back in order in this case.
    python3 "$REPO/tests/bluez-vm/btsnoop_att.py" --device hci1 --summary "$VMLOGS/hci.btsnoop" >"$dir/att-summary.txt" 2>&1
    grep -c "fragment arrived out of order" "$dir/device.log" >"$dir/reordered.txt"
    if [ $rc = 0 ]; then
        verdict=$(python3 "$HERE/check.py" "$case" "$dir" "$ORIGIN" "$NAME" "$DEVICE_PORT") || rc=1
    else
        verdict="driver rc=$rc: $(grep -E 'driver error|did not finish' "$dir/driver.log" | head -n2 | tr '\n' ' ')"
    fi
    if [ $rc = 0 ]; then
        line="PASS $case $((SECONDS - t)) s  $verdict$restarts"
    else
        line="FAIL $case $((SECONDS - t)) s  $verdict$restarts"
        echo "----- case $case failed: logs kept in $dir and $VMLOGS"
        for f in driver.log device.log rp.log; do
            [ -s "$dir/$f" ] && { echo "----- $f (last 30 lines)"; tail -n 30 "$dir/$f"; }
        done
    fi
    if [ $rc != 0 ] || grep -q 'chooser rescans=' <<<"$verdict"; then discovery_log; fi
    echo "$line"
    summary+=("$line")
    return $rc
}

summary=()
failed=0
group() { # group MTU CASE...: one VM for these cases
    local mtu=$1 line case
    shift
    (($#)) || return 0
    if ! boot "$mtu"; then
        halt
        for case in "$@"; do
            line="FAIL $case 0 s  the VM (ATT MTU $mtu) did not get ready: $(tail -n2 "$VMLOGS/guest.log" 2>/dev/null | tr '\n' ' ')"
            echo "$line"; summary+=("$line"); failed=1
        done
        echo "----- console (last 40 lines)"; tail -n 40 "$VMLOGS/console.log"
        return
    fi
    for case in "$@"; do run_case "$case" || failed=1; done
    halt
}

T0=$SECONDS
want() { local c; for c in "${CASES[@]}"; do [ "$c" = "$1" ] && return 0; done; return 1; }
# One VM per ATT MTU: (c) and (d) first, so that (a) finds the device unprovisioned after them.
g517=() g23=()
for c in c d a; do want $c && g517+=($c); done
want b && g23+=(b)
group 517 "${g517[@]}"
group 23 "${g23[@]}"
say "webbluetooth-vm summary ($((SECONDS - T0)) s in the namespace)"
printf '%s\n' "${summary[@]}"
passed=$(printf '%s\n' "${summary[@]}" | grep -c '^PASS' || true)
echo "webbluetooth-vm: $passed passed, $((${#summary[@]} - passed)) failed"
exit "$failed"
