#!/bin/bash
# PID 1 inside the test VM (started by initramfs-init; see run.sh and README.md).
# What both VM suites' guests share is in tests/vm-common/guest-lib.sh.
#
# The root is the host's / (read-only 9p) under a tmpfs overlay: writes (BlueZ's main.conf, the
# issuer's and the device's state under /tmp) stay in the VM. $LOGS is a writable share whose
# files the host keeps. The case's verdict goes to $LOGS/rc (0 = pass) and $LOGS/result.txt.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
. "$(dirname "$0")/../vm-common/guest-lib.sh"
CASE=$(kernel_arg bzcase) REPO=$(kernel_arg bzrepo) OUT=$(kernel_arg bzout) LOGS=$(kernel_arg bzlogs)
BIN=$OUT/bin
HERE=$REPO/tests/bluez-vm
ORIGIN=https://vod.example.com
LABEL=media-server
ISSUER_PORT=14000
DEVICE_PORT=8443
DEVICE_CREDENTIAL=$REPO/fixtures/devices/device-1
ISSUER_DIR=/tmp/issuer
DEVICE_DIR=/tmp/device
DEVICE_CONFIG=$DEVICE_DIR/device.toml
# Only the disconnect case shortens how long a pending key waits for its INSTALL, so that its
# expiry can be watched within the case.
PENDING_SECS=600
UA_PID= DEVICE_PID= ISSUER_PID= BTMON_PID= BTVIRT_PID= READV_PID=

finish() { # finish RC [RESULT LINE]
    local rc=$1
    [ -n "${2:-}" ] && echo "$2" >"$LOGS/result.txt"
    log "finished: rc=$rc ${2:-}"
    stop "$READV_PID"; stop "$UA_PID" KILL; stop "$DEVICE_PID"; stop "$ISSUER_PID"
    stop "$BTMON_PID" INT
    dmesg >"$LOGS/dmesg.log" 2>&1
    echo "$rc" >"$LOGS/rc"
    sync
    echo o >/proc/sysrq-trigger
    sleep 30
}

fail() { finish 1 "FAIL: $*"; }

count() { grep -cF -- "$2" "$1" 2>/dev/null; } # count FILE PATTERN

# --- the system ----------------------------------------------------------------------------
system_up bzvm
log "case $CASE: userspace up, kernel $(uname -r)"
warm "$BIN/localcert"
bluetooth_up

PRELOAD=
case $CASE in
provision | manage)
    # ATT MTU 517 on one plain ATT bearer. main.conf is written in the overlay: the host's file
    # is untouched.
    printf '[GATT]\nChannels = 1\n' >/etc/bluetooth/main.conf
    ;;
eatt)
    # BlueZ's default Channels = 3, so EATT between the two BlueZ peers, at the smallest MTU an
    # EATT channel takes (64): every message is then many fragments spread over the bearers,
    # which may reorder them (SPEC §3.2 puts them back; the case counts how many were held).
    printf '[GATT]\nExchangeMTU = 64\n' >/etc/bluetooth/main.conf
    ;;
mtu23 | disconnect)
    # The smallest ATT MTU, and one plain ATT bearer: EATT channels are L2CAP credit-based
    # channels whose MTU is at least 64, so with EATT on the MTU-23 worst case would not run.
    printf '[GATT]\nExchangeMTU = 23\nChannels = 1\n' >/etc/bluetooth/main.conf
    PRELOAD=$OUT/l2cap-mtu-shim.so
    ;;
esac
[ "$CASE" = disconnect ] && PENDING_SECS=20

mkdir -p /run/dbus && dbus-daemon --system --fork || fail "dbus-daemon"
LD_PRELOAD=$PRELOAD /usr/libexec/bluetooth/bluetoothd -n -d >"$LOGS/bluetoothd.log" 2>&1 &

start_btvirt "$LOGS/btvirt.log"
btmon -w "$LOGS/hci.btsnoop" >/dev/null 2>&1 &
BTMON_PID=$!
DEVICE_ADDR=$(btmgmt -i 0 info | awk '/addr/{print $2; exit}')
log "BlueZ up (btvirt attempt $BTVIRT_ATTEMPT): device side hci0 $DEVICE_ADDR, UA side hci1"

# --- the issuer, on loopback -----------------------------------------------------------------
mkdir -p "$ISSUER_DIR"
cd "$ISSUER_DIR" || fail "cd $ISSUER_DIR"
"$BIN/localcert" issuer init --listen "127.0.0.1:$ISSUER_PORT" \
    --manufacturer-root "$REPO/fixtures/manufacturer/root.pem" >"$LOGS/issuer-init.log" 2>&1 ||
    fail "issuer init: $(tail -n1 "$LOGS/issuer-init.log")"
# The EAB HMAC key stays in the VM's memory (not in the kept logs).
"$BIN/localcert" issuer rp add "$ORIGIN" >rp.txt 2>&1 || fail "issuer rp add: $(cat rp.txt)"
EAB_KID=$(awk '/EAB kid:/{print $3}' rp.txt)
EAB_KEY=$(awk '/EAB HMAC:/{print $3}' rp.txt)
[ -n "$EAB_KID" ] && [ -n "$EAB_KEY" ] || fail "no EAB key in: $(cat rp.txt)"
# The UA reads them from a file of mode 0600, never from its command line.
EAB_FILE="$ISSUER_DIR/eab.toml"
(umask 077 && printf 'kid = "%s"\nkey = "%s"\n' "$EAB_KID" "$EAB_KEY" >"$EAB_FILE") ||
    fail "cannot write $EAB_FILE"
# The manage case watches STAR renewals: the issuer checks for due ones every 2 s, not 60.
[ "$CASE" = manage ] && sed -i 's/^star_renew_check_secs = .*/star_renew_check_secs = 2/' issuer.toml
"$BIN/localcert" issuer serve >"$LOGS/issuer.log" 2>&1 &
ISSUER_PID=$!
wait_for "$LOGS/issuer.log" "ACME directory" 30 || fail "the issuer did not start"
cd /

# --- the device: the reference daemon on hci0 --------------------------------------------------
NAME=$(python3 "$HERE/name.py" "$LABEL" "$ORIGIN" "$DEVICE_CREDENTIAL/attestation.pem" \
    "$REPO/protocol/vectors/names.json") || fail "cannot derive the device's name"
device_config "$ISSUER_DIR/state/root.pem" 127.0.0.1
cat >>"$DEVICE_CONFIG" <<EOF
issuer_intermediates = "$ISSUER_DIR/state/intermediate.pem"
pending_lifetime_secs = $PENDING_SECS

[ble]
enabled = true
adapter = "hci0"
local_name = "localcert-vm"

[mdns]
enabled = true
interfaces = ["lo"]
EOF
# The manage case's STAR certificate is renewed from the issuer's star-certificate URL.
[ "$CASE" = manage ] && printf '\n[renewal]\ntls_roots = "%s"\n' "$ISSUER_DIR/state/tls.pem" >>"$DEVICE_CONFIG"
cp "$DEVICE_CONFIG" "$LOGS/device.toml"
start_device() { # start_device: the daemon (its log appended to), until HTTPS listens; DEVICE_PID
    local before now t=$SECONDS
    before=$(count "$LOGS/device.log" "HTTPS listening")
    LOCALCERT_LOG=info,localcert_device::engine=debug "$BIN/localcert-device" run --config "$DEVICE_CONFIG" >>"$LOGS/device.log" 2>&1 &
    DEVICE_PID=$!
    while now=$(count "$LOGS/device.log" "HTTPS listening"); [ "${now:-0}" -le "${before:-0}" ]; do
        [ $((SECONDS - t)) -lt 60 ] || fail "the device daemon did not start: $(tail -n2 "$LOGS/device.log")"
        sleep 0.2
    done
}
start_device
log "device daemon up, advertising on hci0; expected name $NAME"

# --- test-only helper: re-advertise hci0 (see tests/vm-common/guest-lib.sh) ---------------------
start_readvertise 0

# --- the UA on hci1 ------------------------------------------------------------------------------
start_ua() { # start_ua TAG [ARGS…]: `localcert ua provision [ARGS…]` in the background; UA_PID
    # The UA's debug lines say which notifications arrived out of order.
    LOCALCERT_LOG=warn,localcert_ua=debug "$BIN/localcert" ua provision --issuer "https://localhost:$ISSUER_PORT/acme/directory" \
        --origin "$ORIGIN" --eab-file "$EAB_FILE" --account-file "$ISSUER_DIR/ua-account.json" \
        --issuer-root "$ISSUER_DIR/state/root.pem" --acme-root "$ISSUER_DIR/state/tls.pem" \
        --device "$DEVICE_ADDR" --adapter hci1 --label "$LABEL" \
        --resolve "$NAME=127.0.0.1" --scan-seconds 6 --json "${@:2}" >"$LOGS/$1.json" 2>"$LOGS/$1.log" &
    UA_PID=$!
}

wait_ua() { # wait_ua SECONDS: the UA's exit status (124 after SECONDS)
    local t=$SECONDS
    while kill -0 "$UA_PID" 2>/dev/null; do
        [ $((SECONDS - t)) -lt "$1" ] || { stop "$UA_PID" KILL; UA_PID=; return 124; }
        sleep 0.2
    done
    wait "$UA_PID"
    local rc=$?
    UA_PID=
    return $rc
}

check_provisioned() { # check_provisioned TAG: the UA's JSON says the HTTPS check passed
    python3 - "$LOGS/$1.json" "$NAME" "$ORIGIN" <<'EOF' || return 1
import json, sys
path, name, origin = sys.argv[1:]
out = json.load(open(path))
response = out["response"]
assert out["name"] == name, f"name {out['name']} != {name}"
assert response["status"] == 200, f"HTTP {response['status']}"
assert response["access_control_allow_origin"] == origin, response
assert out["endpoint"].startswith("127.0.0.1:"), out["endpoint"]
EOF
}

device_status() { # device_status FILE: the daemon's `status --json`
    "$BIN/localcert-device" status --config "$DEVICE_CONFIG" --json >"$1" 2>&1
}

bindings() { # bindings FILE: "count name…" of a status JSON
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert not s["unusable"] and not s["leftovers_removed"], s; print(len(s["bindings"]), *[b["name"] for b in s["bindings"]])' "$1"
}


provision_once() { # provision_once TAG [ARGS…]: one provisioning that must succeed
    local t=$SECONDS rc
    start_ua "$@"
    wait_ua 150
    rc=$?
    UA_SECS=$((SECONDS - t))
    [ $rc = 0 ] || fail "localcert ua provision ($1) exited $rc after ${UA_SECS}s: $(grep -v '^ ' "$LOGS/$1.log" | tail -n1)"
    check_provisioned "$1" || fail "the UA's summary ($1.json) does not show a verified endpoint"
}

case $CASE in
provision | eatt | mtu23)
    provision_once ua
    device_status "$LOGS/status.json" || fail "localcert-device status failed"
    read -r n installed <<<"$(bindings "$LOGS/status.json")" || fail "bad status: $(cat "$LOGS/status.json")"
    [ "$n" = 1 ] && [ "$installed" = "$NAME" ] || fail "device status shows $n binding(s): $installed"
    mtu=$(mtu_of_session "$LOGS/device.log")
    [ -n "$mtu" ] || fail "no 'BLE session started' line in the device log"
    if [ "$CASE" = mtu23 ] && [ "$mtu" != 23 ]; then fail "the device saw ATT MTU $mtu, not 23"; fi
    stop "$BTMON_PID" INT
    BTMON_PID=
    att=$(python3 "$HERE/btsnoop_att.py" --summary "$LOGS/hci.btsnoop")
    echo "$att" >"$LOGS/att-summary.txt"
    if [ "$CASE" = eatt ]; then
        grep -q "'EATT'" <<<"$att" || fail "no EATT bearer was used: $att"
        held_up=$(grep -c "fragment arrived out of order" "$LOGS/device.log" || true)
        held_down=$(grep -c "notification arrived out of order" "$LOGS/ua.log" || true)
        att="$att; out of order and put back: $held_up writes, $held_down notifications"
    fi
    if [ "$CASE" = mtu23 ]; then
        largest=$(grep -oE 'largest value [0-9]+' <<<"$att" | grep -oE '[0-9]+' | sort -n | tail -n1)
        [ -n "$largest" ] && [ "$largest" -le 20 ] || fail "an ATT value over 20 bytes at MTU 23: $att"
    fi
    finish 0 "$NAME provisioned over BLE (device ATT MTU $mtu), HTTPS check passed; UA ${UA_SECS}s; $att"
    ;;
disconnect)
    start_ua ua-1
    # The device announces the pending name once it has answered ATTEST with its key and
    # CSR: the answer is then on its way in notifications of at most 20 bytes.
    wait_for "$LOGS/device.log" "announced over mDNS" 150 || fail "no ATTEST reached the device"
    stop "$UA_PID" KILL
    UA_PID=
    btmgmt -i 1 power off >/dev/null 2>&1 || fail "cannot power hci1 off"
    # Revision 2's ATTEST answer is 201 B (12 notifications at MTU 23), so the kill can land
    # after the UA has it whole; the device is then still between ATTEST and INSTALL, and the
    # fail-safe below is the same. The case says which of the two it saw.
    when="mid-ATTEST"
    grep -qF "5-9 ATTEST" "$LOGS/ua-1.log" && when="after the ATTEST answer, before INSTALL"
    log "central killed and its adapter powered off $when"
    wait_for "$LOGS/device.log" "BLE session ended" 30 || fail "the device did not end the BLE session"
    # Fail-safe: the pending key of the interrupted ATTEST expires and its name is withdrawn.
    wait_for "$LOGS/device.log" "withdrawn from mDNS" $((PENDING_SECS + 30)) ||
        fail "the interrupted ATTEST's pending name was not withdrawn"
    device_status "$LOGS/status-after-disconnect.json" || fail "localcert-device status failed"
    read -r n _ <<<"$(bindings "$LOGS/status-after-disconnect.json")" || fail "bad status"
    [ "$n" = 0 ] || fail "$n binding(s) on the device after the interrupted run"
    btmgmt -i 1 power on >/dev/null 2>&1 || fail "cannot power hci1 on"
    provision_once ua-2
    device_status "$LOGS/status.json" || fail "localcert-device status failed"
    read -r n installed <<<"$(bindings "$LOGS/status.json")" || fail "bad status"
    [ "$n" = 1 ] && [ "$installed" = "$NAME" ] || fail "device status shows $n binding(s): $installed"
    sessions=$(count "$LOGS/device.log" "BLE session started")
    [ "$(count "$LOGS/device.log" "binding installed")" = 1 ] || fail "not exactly one install"
    finish 0 "disconnect $when: session ended, pending key expired and withdrawn, 0 bindings; then $NAME provisioned (UA ${UA_SECS}s, $sessions BLE sessions), 1 binding"
    ;;
manage)
    # Management over BlueZ: provision with STAR; the issuer renews it and the device installs
    # the renewal; the origin cancels the delegation; the issuer renews it no more and the
    # device records the end; then list, remove, remove again, provision again.
    ua_manage() { # ua_manage TAG ARGS…: `localcert ua ARGS… --json` against the device on hci0
        timeout 90 "$BIN/localcert" ua "${@:2}" --device "$DEVICE_ADDR" --adapter hci1 \
            --scan-seconds 6 --json >"$LOGS/$1.json" 2>"$LOGS/$1.log" ||
            fail "localcert ua ${*:2} ($1) failed: $(grep -v '^ ' "$LOGS/$1.log" | tail -n1)"
    }
    listed() { # listed TAG: "count origin name star fingerprint" of a `ua list --json`
        python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["bindings"]; print(len(b), *[" ".join([x["origin"], x["name"], str(x["star"]), x["fingerprint"]]) for x in b])' "$LOGS/$1.json"
    }
    star_of() { # star_of TAG: "star_state fingerprint star_url" of the one binding `status` shows
        device_status "$LOGS/$1.json" || fail "localcert-device status ($1) failed"
        python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["bindings"]; assert len(b) == 1, b; print(b[0]["star_state"], b[0]["fingerprint"], b[0]["star_url"])' "$LOGS/$1.json"
    }
    star_renewals() { # how many STAR renewals the issuer's audit log records
        "$BIN/localcert" issuer audit --config "$ISSUER_DIR/issuer.toml" --limit 1000 >"$LOGS/audit.txt" 2>&1 ||
            fail "localcert issuer audit: $(tail -n1 "$LOGS/audit.txt")"
        count "$LOGS/audit.txt" "(STAR renewal)"
    }
    later() { # later HOURS: the VM's wall clock moves on; the issuer and the device follow it
        date -s "@$(($(date +%s) + $1 * 3600))" >/dev/null || fail "cannot set the clock"
        log "clock moved $1 h on: $(date -u)"
    }
    provision_once ua-1 --star
    ua_manage list-1 list
    read -r n origin name star fp1 <<<"$(listed list-1)" || fail "bad list: $(cat "$LOGS/list-1.json")"
    [ "$n" = 1 ] && [ "$origin" = "$ORIGIN" ] && [ "$name" = "$NAME" ] && [ "$star" = True ] ||
        fail "ua list after provisioning with STAR: $(listed list-1)"
    # The issuer's `star` profile gives a certificate a day: 17 h on, past half of it, the
    # issuer renews it. The device's renewal timer runs on the monotonic clock, so the daemon is
    # restarted (as after a reboot) and fetches at once; it installs the renewal.
    later 17
    wait_for "$LOGS/issuer.log" "STAR certificates renewed" 30 || fail "the issuer did not renew the STAR certificate"
    stop "$DEVICE_PID"; start_device
    wait_for "$LOGS/device.log" "STAR certificate renewed" 60 || fail "the device did not install the renewal"
    read -r state fp2 star_url <<<"$(star_of status-renewed)" || fail "bad status: $(cat "$LOGS/status-renewed.json")"
    [ "$state" = renewing ] && [ "$fp2" != "$fp1" ] || fail "status after the renewal: $state $fp2 (first $fp1)"
    [ "$(star_renewals)" = 1 ] || fail "not one STAR renewal in the issuer's audit log"
    # The origin cancels the delegation with its ACME account: the one the UA's provisioning
    # made, kept in the account file an origin's backend names in rp.toml.
    (umask 077 && printf '%s\n' "$EAB_KEY" >"$ISSUER_DIR/eab.key" &&
        printf 'origin = "%s"\nlisten = "127.0.0.1:0"\nplain_http = true\n[acme]\ndirectory = "https://localhost:%s/acme/directory"\ntls_root = "state/tls.pem"\neab_kid = "%s"\neab_key_file = "eab.key"\naccount_file = "ua-account.json"\n' \
            "$ORIGIN" "$ISSUER_PORT" "$EAB_KID" >"$ISSUER_DIR/rp.toml") || fail "cannot write rp.toml"
    "$BIN/localcert" rp cancel-star --config "$ISSUER_DIR/rp.toml" "$NAME" --json >"$LOGS/cancel.json" 2>"$LOGS/cancel.log" ||
        fail "localcert rp cancel-star: $(tail -n1 "$LOGS/cancel.log")"
    python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); assert c["name"] == sys.argv[2] and [x["star_certificate"] for x in c["canceled"]] == [sys.argv[3]], c' \
        "$LOGS/cancel.json" "$NAME" "$star_url" || fail "rp cancel-star: $(cat "$LOGS/cancel.json") (device follows $star_url)"
    [ "$(star_renewals)" = 1 ] && grep -qF "order-canceled" "$LOGS/audit.txt" ||
        fail "the issuer's audit log has no order-canceled: $(tail -n3 "$LOGS/audit.txt")"
    # 17 h on again, the renewed certificate is past half of its day: a live delegation would be
    # renewed at the issuer's next check (every 2 s). The cancelled one is not, and the device's
    # fetch finds it ended: it keeps serving the certificate it has.
    later 17
    sleep 4
    stop "$DEVICE_PID"; start_device
    wait_for "$LOGS/device.log" "STAR renewal stopped" 60 || fail "the device did not find the delegation ended"
    for _ in $(seq 25); do
        read -r state fp _ <<<"$(star_of status-ended)"
        [ "$state" = ended ] && break
        sleep 0.2
    done
    [ "$state" = ended ] && [ "$fp" = "$fp2" ] || fail "status after the cancel: $state $fp (renewed $fp2)"
    renewals=$(star_renewals)
    [ "$renewals" = 1 ] || fail "$renewals STAR renewals in the issuer's audit log after the cancel"
    ua_manage list-2 list
    read -r n _ _ star fp <<<"$(listed list-2)"
    [ "$n" = 1 ] && [ "$star" = False ] && [ "$fp" = "$fp2" ] || fail "ua list after the cancel: $(listed list-2)"
    ua_manage remove remove "$ORIGIN"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["removed"]; assert r["name"] == sys.argv[2] and r["origin"] == sys.argv[3], r' \
        "$LOGS/remove.json" "$NAME" "$ORIGIN" || fail "ua remove: $(cat "$LOGS/remove.json")"
    ua_manage list-3 list
    read -r n _ <<<"$(listed list-3)"
    [ "$n" = 0 ] || fail "ua list after remove: $(listed list-3)"
    device_status "$LOGS/status-removed.json" || fail "localcert-device status failed"
    read -r n _ <<<"$(bindings "$LOGS/status-removed.json")" || fail "bad status"
    [ "$n" = 0 ] || fail "$n binding(s) on the device after ua remove"
    # A second remove is the device's NOT_FOUND: exit 4, nothing changes.
    rc=0
    timeout 90 "$BIN/localcert" ua remove "$ORIGIN" --device "$DEVICE_ADDR" --adapter hci1 \
        --scan-seconds 6 >"$LOGS/remove-again.out" 2>&1 || rc=$?
    [ "$rc" = 4 ] || fail "a second ua remove exited $rc, not 4: $(tail -n1 "$LOGS/remove-again.out")"
    provision_once ua-2
    ua_manage list-4 list
    read -r n origin name star fp4 <<<"$(listed list-4)" || fail "bad list: $(cat "$LOGS/list-4.json")"
    [ "$n" = 1 ] && [ "$name" = "$NAME" ] && [ "$star" = False ] && [ "$fp4" != "$fp2" ] ||
        fail "ua list after provisioning again: $(listed list-4) (before: $fp2)"
    device_status "$LOGS/status.json" || fail "localcert-device status failed"
    read -r n installed <<<"$(bindings "$LOGS/status.json")" || fail "bad status"
    [ "$n" = 1 ] && [ "$installed" = "$NAME" ] || fail "device status shows $n binding(s): $installed"
    [ "$(count "$LOGS/device.log" "binding installed")" = 2 ] || fail "not exactly two installs"
    finish 0 "$NAME provisioned with STAR, renewed (issuer and device), cancelled by the origin: not renewed again, device status 'ended'; listed, removed (0 listed, status 0, a second remove NOT_FOUND), provisioned again with a new certificate, listed (1)"
    ;;
shell)
    log "shell: BlueZ (hci0, hci1), the issuer and the device daemon are up; 'exit' powers off"
    log "UA: 'start_ua TAG; wait_ua SECONDS' runs a provisioning (output in $LOGS/TAG.*)"
    export BIN ISSUER_PORT ORIGIN EAB_FILE ISSUER_DIR DEVICE_ADDR LABEL NAME LOGS
    export -f start_ua wait_ua stop
    setsid -c bash -l
    finish 0 "shell"
    ;;
esac
fail "unknown case $CASE"
