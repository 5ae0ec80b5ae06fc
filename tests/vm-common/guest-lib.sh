# tests/vm-common/guest-lib.sh: what the guests of tests/bluez-vm and tests/webbluetooth-vm share,
# sourced by their guest.sh (PID 1 in the VM, started by tests/bluez-vm/initramfs-init).
#
# The guest sources it first thing (from beside its own path: $0), reads its settings from the
# kernel command line with kernel_arg, sets LOGS (the writable share the host keeps) and OUT (the
# suite's scratch directory: kernel/, bin/) and defines `fail MESSAGE` (its verdict; it powers
# the VM off) before calling the other functions.

kernel_arg() { # kernel_arg NAME: the value of NAME=… on the kernel command line (run.sh's)
    local a
    for a in $(cat /proc/cmdline); do
        case $a in "$1"=*) echo "${a#*=}" && return 0 ;; esac
    done
}

log() { echo "[guest $(cut -d' ' -f1 /proc/uptime)s] $*" | tee -a "$LOGS/guest.log"; }

stop() { # stop PID [SIGNAL]: signal a process we started and wait up to 5 s for it
    local pid=$1 sig=${2:-TERM} i
    [ -n "$pid" ] || return 0
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

. "$(dirname "${BASH_SOURCE[0]}")/wait.sh" # wait_for

plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; } # the daemon's log has colour codes even in a file

# The latest BLE session's ATT MTU, from the device daemon's log FILE.
mtu_of_session() { plain "$1" | grep -oE 'BLE session started.*mtu=[0-9]+' | tail -n1 | grep -oE '[0-9]+$'; }

system_up() { # system_up HOSTNAME: /run, /dev/pts, /dev/shm, the logs share, modules, loopback
    mount -t tmpfs tmpfs /run
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    mount -t tmpfs tmpfs /dev/shm
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 logs "$LOGS" || echo "WARN: logs share not mounted"
    ln -sfn "$OUT/kernel/lib/modules" /usr/lib/modules # modprobe and the kernel find Debian's modules
    hostname "$1"
    busybox ip link set lo up
    busybox ip link set lo multicast on # the daemon's mDNS, where on, is loopback-only here
}

# First-touch page faults over 9p are slow under software emulation: read the programs once.
warm() {
    local b
    for b in "$@"; do
        cat "$b" >/dev/null
        ldd "$b" 2>/dev/null | awk '/=> \//{print $3}' | xargs -r cat >/dev/null
    done
}

bluetooth_up() { # bluetooth_up [MODULE…]: the programs warmed, the kernel's modules loaded
    warm /usr/bin/btvirt /usr/bin/btmgmt /usr/bin/btmon /usr/libexec/bluetooth/bluetoothd \
        /usr/bin/dbus-daemon /usr/bin/busctl "$OUT/bin/localcert-device"
    # Loaded up front: on-demand loading over 9p can delay the first controller's HCI reset past
    # the kernel's 2 s timeout (dmesg: "hci0: Opcode 0x0c03 failed: -110").
    modprobe -a hci_vhci bnep af_alg algif_hash algif_skcipher cmac ecb ctr drbg jitterentropy_rng \
        ansi_cprng sha512_generic sha3_generic ecdh_generic "$@" || fail "modprobe"
}

# start_btvirt LOGFILE: `btvirt -l2 -L`, two LE-only controllers (hci0, hci1) in one process, so
# on one emulated air, once bluetoothd runs. Returns once both are up in the kernel and on D-Bus
# (BTVIRT_PID, BTVIRT_ATTEMPT set), or fails. Under load the kernel's set-up of a controller can
# time out (its HCI reset); that controller never comes up, so btvirt is restarted at once
# rather than after the 20 s wait, at most 3 attempts.
start_btvirt() {
    local resets t i ready=
    mgmt_count() { btmgmt info 2>/dev/null | grep -c 'Primary controller'; }
    dbus_count() { busctl --system tree org.bluez 2>/dev/null | grep -cE '/org/bluez/hci[01]$'; }
    for BTVIRT_ATTEMPT in 1 2 3; do
        resets=$(dmesg | grep -c 'Opcode 0x0c03 failed')
        chrt -f 50 btvirt -l2 -L >"$1" 2>&1 &
        BTVIRT_PID=$!
        t=$SECONDS
        while [ $((SECONDS - t)) -lt 20 ]; do
            [ "$(mgmt_count)" = 2 ] && [ "$(dbus_count)" = 2 ] && { ready=1; break; }
            [ "$(dmesg | grep -c 'Opcode 0x0c03 failed')" != "$resets" ] && sleep 1 && break
            sleep 0.3
        done
        [ -n "$ready" ] && return 0
        log "attempt $BTVIRT_ATTEMPT: controllers not ready (mgmt $(mgmt_count), D-Bus $(dbus_count))"
        stop "$BTVIRT_PID"
        for i in $(seq 50); do [ -e /sys/class/bluetooth/hci0 ] || [ -e /sys/class/bluetooth/hci1 ] || break; sleep 0.2; done
    done
    fail "the emulated controllers never came up"
}

# start_readvertise HCI: test-only. btvirt's emulated air sends an advertising report only at the
# moment advertising or scanning is switched on, and the kernel drops a report that arrives
# before its discovery runs (a race that CPU load loses); a real controller advertises all the
# time. The daemon has no test-only "re-advertise" setting, so this loop, outside it, switches
# the device adapter's advertising setting on and off every 2 s while it has no connection:
# switching it off makes the kernel re-enable the daemon's own advertisement, which the air then
# reports. Sets READV_PID.
start_readvertise() {
    local hci=$1
    while sleep 2; do
        btmgmt -i "$hci" con 2>/dev/null | grep -q 'type' && continue
        btmgmt -i "$hci" advertising on >/dev/null 2>&1
        btmgmt -i "$hci" advertising off >/dev/null 2>&1
    done &
    READV_PID=$!
}

# device_config ISSUER_ROOTS HTTPS_LISTEN: the top-level keys of the device daemon's config
# ($DEVICE_CONFIG) for the fixture device ($DEVICE_CREDENTIAL), product "Media Server", label
# $LABEL, HTTPS on $DEVICE_PORT, presence automatic; the caller appends its own keys and tables.
device_config() {
    mkdir -p "$DEVICE_DIR"
    cat >"$DEVICE_CONFIG" <<EOF
product = "Media Server"
device_label = "$LABEL"
store_dir = "$DEVICE_DIR/store"
attestation_key = "$DEVICE_CREDENTIAL/attestation.key.pem"
attestation_chain = "$DEVICE_CREDENTIAL/attestation.pem"
issuer_roots = "$1"
presence = "auto"
https_port = $DEVICE_PORT
https_listen = "$2"
EOF
}
