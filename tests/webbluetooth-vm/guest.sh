#!/bin/bash
# PID 1 inside the test VM (started by tests/bluez-vm/initramfs-init; see run.sh and README.md).
#
# The root is the host's / (read-only 9p) under a tmpfs overlay; $LOGS is a writable share the
# host keeps. The VM holds only the Bluetooth side: dbus-daemon (also on TCP for the host's
# Chromium), bluetoothd, `btvirt -l2 -L` (hci0 and hci1 on one emulated air) and the device
# daemon `localcert-device run` on hci1 (Chromium's BlueZ backend takes the first adapter, hci0).
# Then the guest touches $LOGS/ready and answers the host's requests (files in $LOGS/req/) until
# the host asks it to stop. What both VM suites' guests share is in tests/vm-common/guest-lib.sh.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
. "$(dirname "$0")/../vm-common/guest-lib.sh"
MTU=$(kernel_arg wvmtu) REPO=$(kernel_arg wvrepo) OUT=$(kernel_arg wvout) LOGS=$(kernel_arg wvlogs)
DEVICE_PORT=$(kernel_arg wvport) ISSUER_ROOTS=$(kernel_arg wvroots) LABEL=$(kernel_arg wvlabel)
HOST_SECS=$(kernel_arg wvwait)
BIN=$OUT/bin
DEVICE_CREDENTIAL=$REPO/fixtures/devices/device-1
DEVICE_DIR=/tmp/device
DEVICE_CONFIG=$DEVICE_DIR/device.toml
DEVICE_PID= BTMON_PID= READV_PID= MONITOR_PID=

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

system_up wbvm
mkdir -p "$L" # on the tmpfs system_up mounts at /run
log "MTU $MTU: userspace up, kernel $(uname -r), $(nproc) CPUs"
bluetooth_up virtio_net
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

start_btvirt "$L/btvirt.log"
btmgmt -i 0 power on >/dev/null 2>&1
btmon -w "$L/hci.btsnoop" >/dev/null 2>&1 &
BTMON_PID=$!
log "BlueZ up (btvirt attempt $BTVIRT_ATTEMPT): hci0 $(btmgmt -i 0 info | awk '/addr/{print $2; exit}') (Chromium), hci1 $(btmgmt -i 1 info | awk '/addr/{print $2; exit}') (device); main.conf: $(tr '\n' ' ' </etc/bluetooth/main.conf)"

# --- the device daemon on hci1 ---------------------------------------------------------------
device_config "$ISSUER_ROOTS" 0.0.0.0
cat >>"$DEVICE_CONFIG" <<EOF

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

# Test-only: re-advertise hci1 (see tests/vm-common/guest-lib.sh), so that a scan started later
# (Chromium's) sees the device, and so does its Connect.
start_readvertise 1

# --- the host's requests -----------------------------------------------------------------------
# The host writes $LOGS/req/TAG.cmd (one word); the guest answers in TAG.out and then TAG.done.
#   status  the device's `status --json` (bindings), and the logs copied to the share
#   mtu     the ATT MTU of the device's latest BLE session, from its log
#   stop    power off
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
        mtu) mtu_of_session "$L/device.log" >"$tag.out" ;;
        stop) touch "$tag.done"; finish 0 "stopped by the host" ;;
        *) echo "unknown request $cmd" >"$tag.out" ;;
        esac
        touch "$tag.done"
    done
    kill -0 "$DEVICE_PID" 2>/dev/null || fail "the device daemon exited: $(tail -n2 "$L/device.log")"
    sleep 0.3
done
fail "the host sent no stop request within ${HOST_SECS:-900} s"
