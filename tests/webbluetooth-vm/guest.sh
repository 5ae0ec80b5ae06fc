#!/bin/bash
# PID 1 inside the test VM (started by tests/bluez-vm/initramfs-init; see run.sh and README.md).
#
# The root is the host's / (read-only 9p) under a tmpfs overlay; $LOGS is a writable share the
# host keeps. The VM holds only the Bluetooth side: dbus-daemon (also on TCP for the host's
# Chromium), bluetoothd, `btvirt -l2 -L` (hci0 and hci1 on one emulated air) and the device
# daemon `localcert-device run` on hci1 (Chromium's BlueZ backend takes the first adapter, hci0).
# Then the guest touches $LOGS/ready and answers the host's requests (files in $LOGS/req/) until
# the host asks it to stop.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
for a in $(cat /proc/cmdline); do
    case $a in
    wvmtu=*) MTU=${a#wvmtu=} ;;
    wvrepo=*) REPO=${a#wvrepo=} ;;
    wvout=*) OUT=${a#wvout=} ;;
    wvlogs=*) LOGS=${a#wvlogs=} ;;
    wvport=*) DEVICE_PORT=${a#wvport=} ;;
    wvroots=*) ISSUER_ROOTS=${a#wvroots=} ;;
    wvlabel=*) LABEL=${a#wvlabel=} ;;
    wvwait=*) HOST_SECS=${a#wvwait=} ;;
    esac
done
BIN=$OUT/bin
DEVICE_CREDENTIAL=$REPO/fixtures/devices/device-1
DEVICE_DIR=/tmp/device
DEVICE_CONFIG=$DEVICE_DIR/device.toml
DEVICE_PID= BTMON_PID= READV_PID= MONITOR_PID=

log() { echo "[guest $(cut -d' ' -f1 /proc/uptime)s] $*" | tee -a "$LOGS/guest.log"; }

stop() { # stop PID [SIGNAL]: signal a process we started and wait up to 5 s for it
    local pid=$1 sig=${2:-TERM} i
    [ -n "$pid" ] || return 0
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# The chatty logs (bluetoothd -d, dbus-monitor, btmon, the device) are written to tmpfs and
# copied to the share: every write to 9p is a slow VM exit under software emulation, and a
# bluetoothd stalled on its debug log is what lets BlueZ's "Connected" race happen (README).
L=/run/wvlogs
snapshot() { cp -a "$L"/. "$LOGS"/ 2>/dev/null; }

finish() { # finish RC MESSAGE
    log "finished: rc=$1 $2"
    echo "$2" >"$LOGS/result.txt"
    stop "$READV_PID"; stop "$DEVICE_PID"; stop "$BTMON_PID" INT; stop "$MONITOR_PID"
    dmesg >"$L/dmesg.log" 2>&1
    snapshot
    echo "$1" >"$LOGS/rc"
    sync
    echo o >/proc/sysrq-trigger
    sleep 30
}
fail() { finish 1 "FAIL: $*"; }

wait_for() { # wait_for FILE PATTERN SECONDS: until FILE contains PATTERN (fixed string)
    local t=$SECONDS
    while [ $((SECONDS - t)) -lt "$3" ]; do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm "$L"
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 logs "$LOGS" || echo "WARN: logs share not mounted"
ln -sfn "$OUT/kernel/lib/modules" /usr/lib/modules # modprobe finds Debian's modules
hostname wbvm
busybox ip link set lo up
log "MTU $MTU: userspace up, kernel $(uname -r), $(nproc) CPUs"

# First-touch page faults over 9p are slow under software emulation: read the programs once.
warm() {
    local b
    for b in "$@"; do
        cat "$b" >/dev/null
        ldd "$b" 2>/dev/null | awk '/=> \//{print $3}' | xargs -r cat >/dev/null
    done
}
warm /usr/bin/btvirt /usr/bin/btmgmt /usr/bin/btmon /usr/libexec/bluetooth/bluetoothd \
    /usr/bin/dbus-daemon /usr/bin/busctl "$BIN/localcert-device"
# Loaded up front: on-demand loading over 9p can delay the first controller's HCI reset past
# the kernel's 2 s timeout (dmesg: "hci0: Opcode 0x0c03 failed: -110").
modprobe -a hci_vhci bnep af_alg algif_hash algif_skcipher cmac ecb ctr drbg jitterentropy_rng \
    ansi_cprng sha512_generic sha3_generic ecdh_generic virtio_net || fail "modprobe"
# QEMU's user network (restrict=on: nothing leaves it); the host forwards its 127.0.0.1 ports
# for the system bus and the device's HTTPS port to this address.
busybox ip link set eth0 up && busybox ip addr add 10.0.2.15/24 dev eth0 || fail "eth0"

PRELOAD=
case $MTU in
517)
    # BlueZ's defaults: EATT, several ATT bearers that may reorder fragments (SPEC §3.2 puts
    # them back). The empty main.conf only replaces the host's file in the overlay.
    : >/etc/bluetooth/main.conf
    ;;
23)
    # ExchangeMTU = 23 needs the shim (bluetoothd 5.66 applies it to its BR/EDR socket too, where
    # the kernel refuses an MTU under 48) and Channels = 1: EATT channels have an MTU of at least
    # 64, so with EATT the MTU-23 worst case would not run (the framing itself no longer needs
    # one bearer).
    printf '[GATT]\nExchangeMTU = 23\nChannels = 1\n' >/etc/bluetooth/main.conf
    PRELOAD=$OUT/l2cap-mtu-shim.so
    ;;
*) fail "unknown MTU $MTU" ;;
esac

# The system bus, also on TCP with ANONYMOUS auth and an allow-all policy, so that the host's
# Chromium can use this bluetoothd. Only in this throwaway VM, reachable from the host's
# 127.0.0.1 (inside the test's network namespace) only.
mkdir -p /run/dbus
cat >/run/dbus/system-tcp.conf <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <listen>tcp:host=10.0.2.15,bind=0.0.0.0,port=5555,family=ipv4</listen>
  <auth>EXTERNAL</auth>
  <auth>ANONYMOUS</auth>
  <allow_anonymous/>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file=/run/dbus/system-tcp.conf --fork || fail "dbus-daemon"
# Every system-bus message: the best record of what Chromium asked BlueZ.
stdbuf -oL dbus-monitor --system >"$L/dbus-monitor.log" 2>&1 &
MONITOR_PID=$!
# Real-time priority: a starved bluetoothd handles the kernel's "Device Connected" event after the
# ATT socket's connect callback and then never emits Device1.Connected (README, trap 1).
LD_PRELOAD=$PRELOAD chrt -f 40 /usr/libexec/bluetooth/bluetoothd -n -d >"$L/bluetoothd.log" 2>&1 &

mgmt_count() { btmgmt info 2>/dev/null | grep -c 'Primary controller'; }
dbus_count() { busctl --system tree org.bluez 2>/dev/null | grep -cE '/org/bluez/hci[01]$'; }
ready=
for attempt in 1 2 3; do
    resets=$(dmesg | grep -c 'Opcode 0x0c03 failed')
    chrt -f 50 btvirt -l2 -L >"$L/btvirt.log" 2>&1 &
    BTVIRT_PID=$!
    t=$SECONDS
    while [ $((SECONDS - t)) -lt 20 ]; do
        [ "$(mgmt_count)" = 2 ] && [ "$(dbus_count)" = 2 ] && { ready=1; break; }
        # A controller whose HCI reset timed out never comes up: restart at once.
        [ "$(dmesg | grep -c 'Opcode 0x0c03 failed')" != "$resets" ] && sleep 1 && break
        sleep 0.3
    done
    [ -n "$ready" ] && break
    log "attempt $attempt: controllers not ready (mgmt $(mgmt_count), D-Bus $(dbus_count))"
    stop "$BTVIRT_PID"
    for i in $(seq 50); do [ -e /sys/class/bluetooth/hci0 ] || [ -e /sys/class/bluetooth/hci1 ] || break; sleep 0.2; done
done
[ -n "$ready" ] || fail "the emulated controllers never came up"
btmgmt -i 0 power on >/dev/null 2>&1
btmon -w "$L/hci.btsnoop" >/dev/null 2>&1 &
BTMON_PID=$!
log "BlueZ up (btvirt attempt $attempt): hci0 $(btmgmt -i 0 info | awk '/addr/{print $2; exit}') (Chromium), hci1 $(btmgmt -i 1 info | awk '/addr/{print $2; exit}') (device); main.conf: $(tr '\n' ' ' </etc/bluetooth/main.conf)"

# --- the device daemon on hci1 ---------------------------------------------------------------
mkdir -p "$DEVICE_DIR"
cat >"$DEVICE_CONFIG" <<EOF
product = "Media Server"
device_label = "$LABEL"
store_dir = "$DEVICE_DIR/store"
attestation_key = "$DEVICE_CREDENTIAL/attestation.key.pem"
attestation_chain = "$DEVICE_CREDENTIAL/attestation.pem"
issuer_roots = "$ISSUER_ROOTS"
presence = "auto"
https_port = $DEVICE_PORT
https_listen = "0.0.0.0"

[ble]
enabled = true
adapter = "hci1"
local_name = "localcert-vm"

[mdns]
enabled = false
EOF
cp "$DEVICE_CONFIG" "$LOGS/device.toml"
LOCALCERT_LOG=info,localcert_device::engine=debug "$BIN/localcert-device" run --config "$DEVICE_CONFIG" >"$L/device.log" 2>&1 &
DEVICE_PID=$!
wait_for "$L/device.log" "HTTPS listening" 120 || fail "the device daemon did not start: $(tail -n2 "$L/device.log")"
wait_for "$L/device.log" "advertising" 60 || fail "the device daemon does not advertise: $(tail -n2 "$L/device.log")"
log "device daemon up, advertising on hci1, HTTPS on port $DEVICE_PORT"

# Test-only (as in tests/bluez-vm): btvirt's air reports an advertisement only when advertising
# or scanning is switched on. Toggle hci1's advertising setting every 2 s while hci1 has no
# connection, so that a scan started later (Chromium's) sees the device, and so does its Connect.
readvertise() {
    while sleep 2; do
        btmgmt -i 1 con 2>/dev/null | grep -q 'type' && continue
        btmgmt -i 1 advertising on >/dev/null 2>&1
        btmgmt -i 1 advertising off >/dev/null 2>&1
    done
}
readvertise &
READV_PID=$!

# --- the host's requests -----------------------------------------------------------------------
# The host writes $LOGS/req/TAG.cmd (one word); the guest answers in TAG.out and then TAG.done.
#   status  the device's `status --json` (bindings), and the logs copied to the share
#   mtu     the ATT MTU of the device's latest BLE session, from its log
#   stop    power off
plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; } # the daemon's log has colour codes even in a file
mkdir -p "$LOGS/req"
touch "$LOGS/ready"
log "ready: serving the host's Chromium over the TCP system bus"
t=$SECONDS
while [ $((SECONDS - t)) -lt "${HOST_SECS:-900}" ]; do
    for req in "$LOGS"/req/*.cmd; do
        [ -e "$req" ] || continue
        tag=${req%.cmd}
        cmd=$(cat "$req")
        rm -f "$req"
        case $cmd in
        status) "$BIN/localcert-device" status --config "$DEVICE_CONFIG" --json >"$tag.out" 2>&1; snapshot ;;
        mtu) plain "$L/device.log" | grep -oE 'BLE session started.*mtu=[0-9]+' | tail -n1 | grep -oE '[0-9]+$' >"$tag.out" ;;
        stop) touch "$tag.done"; finish 0 "stopped by the host" ;;
        *) echo "unknown request $cmd" >"$tag.out" ;;
        esac
        touch "$tag.done"
    done
    kill -0 "$DEVICE_PID" 2>/dev/null || fail "the device daemon exited: $(tail -n2 "$L/device.log")"
    sleep 0.3
done
fail "the host sent no stop request within ${HOST_SECS:-900} s"
